//! The replicated core as a function of its ops: replaying a run's ops gives the same
//! core (determinism), and a log written by this machine version replays on this
//! Warren and on every later one (the golden log under `golden/`).
//!
//! The golden log is a fixed scenario encoded as `(MACHINE_VERSION, [(op, time)])`
//! with the storage codec. Its bytes and the core it replays to are checked in; a
//! change that alters either fails here. An intended change of the ops' encoding or
//! meaning bumps [`MACHINE_VERSION`], keeps replaying the old golden log (a new golden
//! file is added beside it), and regenerates with `WARREN_BLESS=1 cargo test -p
//! warren-actors golden`.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use crate::message::{FieldValue, Message, SharedMessage, PERSISTENT};

use super::core::{Core, CoreImage};
use super::*;

/// A log as a replica would receive it: the version that wrote it, and its ops.
type Log = (u32, Vec<(Op, u64)>);

const T0: u64 = 1_700_000_000_000;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/classic/machine/golden")
}

fn config() -> QueueConfig {
    let args = [
        ("x-max-priority", FieldValue::U8(3)),
        ("x-dead-letter-exchange", FieldValue::string("dlx")),
        ("x-delivery-limit", FieldValue::I64(2)),
        ("x-max-length", FieldValue::I64(20)),
    ];
    QueueConfig::from_declare(
        "golden",
        "/",
        true,
        false,
        false,
        &args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    )
    .unwrap()
}

fn message(body: &str, priority: u8, ttl: Option<u64>) -> SharedMessage {
    let mut m = Message::new("ex", "rk", Bytes::from(body.to_owned()));
    m.properties.delivery_mode = Some(PERSISTENT);
    m.properties.priority = Some(priority);
    m.properties.expiration = ttl.map(|t| t.to_string());
    Arc::new(m)
}

/// A scenario touching every op: priorities, a TTL, two consumers, acks, a requeue
/// past the delivery limit (dead-lettered), a get, a channel closing, a purge.
fn scenario() -> Vec<(Op, u64)> {
    let consume = |channel, tag: &str, prefetch| Op::Consume {
        tag: tag.into(),
        channel,
        prefetch,
        no_ack: false,
        exclusive: false,
        priority: 0,
    };
    let mut ops = Vec::new();
    for i in 0..8u8 {
        let ttl = (i == 5).then_some(50);
        ops.push((
            Op::Enqueue {
                message: message(&format!("m{i}"), i % 4, ttl),
            },
            T0 + u64::from(i),
        ));
    }
    ops.extend([
        (consume(1, "a", 2), T0 + 10),
        (consume(2, "b", 1), T0 + 11),
        (
            Op::Ack {
                channel: 1,
                seqs: vec![4],
            },
            T0 + 12,
        ),
        (
            Op::Reject {
                channel: 2,
                seqs: vec![3],
                requeue: true,
            },
            T0 + 13,
        ),
        (Op::Tick, T0 + 100),
        (
            Op::ChannelDown {
                channel: 2,
                unsent: vec![],
            },
            T0 + 101,
        ),
        (
            Op::Get {
                channel: 3,
                no_ack: true,
            },
            T0 + 102,
        ),
        (Op::Sent { seqs: vec![3] }, T0 + 102),
        (
            Op::Cancel {
                channel: 1,
                tag: "a".into(),
                unsent: vec![],
            },
            T0 + 103,
        ),
        (Op::DeadLettered { seqs: vec![6] }, T0 + 104),
        (Op::Purge, T0 + 105),
        (Op::Touch, T0 + 106),
    ]);
    ops
}

fn encode(log: &Log) -> Vec<u8> {
    warren_storage::codec::encode(log).unwrap()
}

fn decode(bytes: &[u8]) -> Log {
    warren_storage::codec::decode(bytes).unwrap()
}

fn replay((version, ops): Log) -> Result<Core, String> {
    Core::replay(config(), T0, version, ops)
}

#[test]
fn the_golden_log_of_version_1_replays_to_its_core() {
    // (Written by version 1; version 2 only added an op, so the scenario encodes the
    // same.)
    let log: Log = (1, scenario());
    let bytes = encode(&log);
    let core = replay(log).unwrap();
    core.check_invariants().unwrap();
    let fingerprint = core.fingerprint();
    let (log_path, core_path) = (
        golden_dir().join("v1.log"),
        golden_dir().join("v1.core.txt"),
    );
    if std::env::var_os("WARREN_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&log_path, &bytes).unwrap();
        std::fs::write(&core_path, &fingerprint).unwrap();
    }
    let golden = std::fs::read(&log_path).expect("the golden log (WARREN_BLESS=1 writes it)");
    assert_eq!(
        bytes, golden,
        "the ops' encoding changed: bump MACHINE_VERSION and keep replaying v1.log"
    );
    let replayed = replay(decode(&golden)).unwrap();
    let expected = std::fs::read_to_string(&core_path).unwrap();
    assert_eq!(
        replayed.fingerprint(),
        expected.trim_end(),
        "the v1 log replays to another core: the ops' meaning changed"
    );
}

#[test]
fn a_log_from_a_newer_machine_is_refused() {
    let e = replay((MACHINE_VERSION + 1, scenario())).unwrap_err();
    assert!(
        e.contains(&format!("machine version {}", MACHINE_VERSION + 1)),
        "{e}"
    );
}

#[test]
fn the_scenario_means_what_it_says() {
    let core = replay((MACHINE_VERSION, scenario())).unwrap();
    let t = core.tally();
    // 8 in, priorities 0..3: consumer a takes seqs 4 and 8, b seq 3; a acks 4 and
    // takes 7; b's requeue of 3 and its channel closing return it twice; seq 6
    // expires, is dead-lettered and held by its targets; the get takes 3 without ack;
    // the purge takes 1, 2 and 5. Left: 7 and 8, out to channel 1.
    assert_eq!((t.ready, t.unacked, t.dead_lettering), (0, 2, 0));
    assert!(core.ready_order().is_empty());
    for seq in [7, 8] {
        assert!(core.record(seq).is_some(), "{seq} is still out");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(256), failure_persistence: None, ..ProptestConfig::default() })]

    /// Determinism: every op a random run applied to its core, replayed twice into new
    /// cores, gives the run's core both times; and so does its log once encoded and
    /// decoded.
    #[test]
    fn the_replicated_core_is_a_function_of_its_ops(
        config in super::proptests::queue_config(),
        ops in prop::collection::vec(super::proptests::op(), 0..150),
    ) {
        let mut sim = super::proptests::Sim::new(config.clone());
        for op in ops {
            sim.run(op)?;
        }
        let journal = sim.q.journal.clone();
        let declared = super::proptests::START;
        let once = Core::replay(config.clone(), declared, MACHINE_VERSION, journal.clone())
            .map_err(TestCaseError::fail)?;
        let twice = Core::replay(config.clone(), declared, MACHINE_VERSION, journal.clone())
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(once.fingerprint(), sim.q.core().fingerprint());
        prop_assert_eq!(once.fingerprint(), twice.fingerprint());
        let log: Log = (MACHINE_VERSION, journal);
        let (version, ops) = decode(&encode(&log));
        let decoded = Core::replay(config, declared, version, ops).map_err(TestCaseError::fail)?;
        prop_assert_eq!(decoded.fingerprint(), sim.q.core().fingerprint());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(256), failure_persistence: None, ..ProptestConfig::default() })]

    /// Snapshots: a core rebuilt from the image of a run's core at any point (through
    /// the codec, as a snapshot travels), then fed the rest of the run's ops, ends as
    /// the run's core: the same records, consumers, rotation and ready order, so every
    /// decision after the snapshot is the one a replica with the whole log makes.
    #[test]
    fn a_core_restored_from_its_image_goes_on_as_the_original(
        config in super::proptests::queue_config(),
        ops in prop::collection::vec(super::proptests::op(), 0..150),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut sim = super::proptests::Sim::new(config.clone());
        for op in ops {
            sim.run(op)?;
        }
        let journal = sim.q.journal.clone();
        let at = cut.index(journal.len() + 1);
        let declared = super::proptests::START;
        let before = Core::replay(config.clone(), declared, MACHINE_VERSION, journal[..at].to_vec())
            .map_err(TestCaseError::fail)?;
        let bytes = warren_storage::codec::encode(&before.image()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let image: CoreImage = warren_storage::codec::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut restored = Core::from_image(config, image).map_err(TestCaseError::fail)?;
        prop_assert_eq!(restored.fingerprint(), before.fingerprint());
        let mut out = Vec::new();
        for (op, now) in journal[at..].iter().cloned() {
            let _ = restored.apply(op, now, &mut out);
            out.clear();
        }
        prop_assert_eq!(restored.fingerprint(), sim.q.core().fingerprint());
        restored.check_invariants().map_err(TestCaseError::fail)?;
    }
}
