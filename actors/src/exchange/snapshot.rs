//! The current topology of a vhost, readable without locks.
//!
//! Publishers [`load`](SharedTopology::load) the current snapshot and route against
//! it; whoever changes the topology calls [`update`](SharedTopology::update) with one
//! of the pure [`Topology`] mutations. Updates are compare-and-swap: if two writers
//! race, the loser's mutation is re-run against the winner's snapshot, so no change is
//! lost even without a single writer (the mutations are pure, so re-running is safe).

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::error::TopologyError;
use super::topology::{Change, Topology};

/// A vhost's current [`Topology`].
#[derive(Debug)]
pub struct SharedTopology {
    current: ArcSwap<Topology>,
}

impl SharedTopology {
    /// Starts from `topology` (the vhost's recovered or initial one).
    pub fn new(topology: Topology) -> Self {
        SharedTopology {
            current: ArcSwap::from_pointee(topology),
        }
    }

    /// The current snapshot, cheaply (no reference count traffic in the common case).
    /// Hold it for one routing decision, not across awaits: a held guard keeps that
    /// snapshot alive.
    pub fn load(&self) -> Guard<Arc<Topology>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, to keep.
    pub fn load_full(&self) -> Arc<Topology> {
        self.current.load_full()
    }

    /// Applies a mutation to the current snapshot and publishes the result. Returns
    /// the mutation's [`Change`] (its `topology` is what was published, or `None` if
    /// nothing changed and nothing was published).
    pub fn update<F>(&self, mutation: F) -> Result<Change, TopologyError>
    where
        F: Fn(&Topology) -> Result<Change, TopologyError>,
    {
        loop {
            let current = self.current.load_full();
            let change = mutation(&current)?;
            let Some(next) = &change.topology else {
                return Ok(change);
            };
            let previous = self
                .current
                .compare_and_swap(&current, Arc::new(next.clone()));
            if Arc::ptr_eq(&previous, &current) {
                return Ok(change);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Binding, ExchangeDef, ExchangeKind};

    #[test]
    fn updates_publish_new_snapshots_and_old_ones_stay_intact() {
        let shared = SharedTopology::new(Topology::new("/"));
        let before = shared.load_full();
        let change = shared
            .update(|t| Ok(t.declare_queue_name("q")))
            .expect("declare queue");
        assert!(!change.is_unchanged());
        let bound = shared
            .update(|t| t.bind(Binding::queue("amq.direct", "q", "k")))
            .expect("bind");
        assert_eq!(bound.added_bindings.len(), 1);
        assert!(before.route("amq.direct", "k", None).unwrap().is_empty());
        let now = shared.load();
        assert_eq!(
            now.route("amq.direct", "k", None).unwrap().queues(),
            [Arc::from("q")]
        );
    }

    #[test]
    fn unchanged_mutations_publish_nothing() {
        let shared = SharedTopology::new(Topology::new("/"));
        let before = shared.load_full();
        let change = shared
            .update(|t| {
                t.declare_exchange(ExchangeDef::new("amq.topic", ExchangeKind::Topic).durable())
            })
            .expect("equivalent redeclare");
        assert!(change.is_unchanged());
        assert!(Arc::ptr_eq(&before, &shared.load_full()));
    }

    #[test]
    fn errors_leave_the_snapshot_alone() {
        let shared = SharedTopology::new(Topology::new("/"));
        let before = shared.load_full();
        let err = shared
            .update(|t| t.bind(Binding::queue("amq.direct", "missing", "k")))
            .unwrap_err();
        assert_eq!(err.reply_code(), crate::error::code::NOT_FOUND);
        assert!(Arc::ptr_eq(&before, &shared.load_full()));
    }

    #[test]
    fn racing_writers_lose_no_change() {
        let shared = Arc::new(SharedTopology::new(Topology::new("/")));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let name = format!("q-{w}-{i}");
                        let change = shared
                            .update(|t| Ok(t.declare_queue_name(&name)))
                            .expect("declare");
                        assert!(!change.is_unchanged());
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer thread");
        }
        assert_eq!(shared.load().queue_names().len(), 200);
    }
}
