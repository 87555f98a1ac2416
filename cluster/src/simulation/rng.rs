//! The run's only source of randomness: one generator seeded from the run's seed, and
//! the stable hash the trace and the checks use.
//!
//! raft-rs draws its election timeouts from `rand::thread_rng`, which no seed reaches;
//! the nodes overwrite them with [`timeout_for`] (see `node.rs`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The seeded generator of one run.
pub(super) struct SimRng(StdRng);

impl SimRng {
    pub(super) fn new(seed: u64) -> SimRng {
        SimRng(StdRng::seed_from_u64(seed))
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub(super) fn below(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            self.0.random_range(lo..hi)
        }
    }

    /// An index into a collection of `len` items (`len` > 0).
    pub(super) fn pick(&mut self, len: usize) -> usize {
        self.0.random_range(0..len)
    }

    /// True with probability `p`.
    pub(super) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.0.random_bool(p.min(1.0))
    }

    /// A uniform number in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        self.0.random::<f64>()
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0.random::<u64>()
    }
}

/// FNV-1a, 64 bits: stable across runs, builds and platforms (the std hasher is not
/// promised to be).
#[derive(Clone, Copy)]
pub(super) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub(super) fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    pub(super) fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub(super) fn finish(&self) -> u64 {
        self.0
    }
}

/// The hash of `bytes` alone.
pub(super) fn hash_bytes(bytes: &[u8]) -> u64 {
    Fnv::default().bytes(bytes).finish()
}

/// A node's election timeout, in ticks, in `min..max`: a function of the run's salt for
/// that node and of what raft-rs resets the timeout on (term, role, leader), so that
/// the same seed always elects the same way.
pub(super) fn timeout_for(salt: u64, key: [u64; 3], min: usize, max: usize) -> usize {
    let mut h = Fnv::default();
    h.u64(salt);
    for k in key {
        h.u64(k);
    }
    let span = (max - min).max(1) as u64;
    min + (h.finish() % span) as usize
}
