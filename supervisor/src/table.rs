//! [`ChildTable`]: a supervisor's children in start order, with O(1)
//! (amortised) lookup by name and by the `ActorId` of the current instance,
//! O(1) (amortised) removal, and in-order iteration; plus stopping them all.
//!
//! A `one_for_one` supervisor of queues can have 100 000+ children that
//! hibernate and wake all the time, so nothing here scans the table except
//! what has to visit every child anyway (listing, snapshots, `stop_all`,
//! compaction).
//!
//! Rows are `Vec<Option<ChildEntry>>`: removing one leaves a tombstone, so
//! no row moves and no index shifts; once more than half the rows are
//! tombstones they are squeezed out (order kept) and both indexes are
//! remapped. A row's *position* (its index in `rows`) is therefore stable
//! until the next removal; callers hold positions only within one operation
//! that removes nothing, and use them as "start order" for the strategies
//! (positions of tombstones are skipped).

use std::collections::HashMap;

use ractor::{ActorCell, ActorId};

use crate::children::{stop_child, ChildEntry};
use crate::snapshot::ChildStatus;

/// The child table of one supervisor. See the module documentation.
#[derive(Default)]
pub(crate) struct ChildTable {
    /// Rows in start order; `None` is a tombstone.
    rows: Vec<Option<ChildEntry>>,
    /// Name → position, for every row.
    by_name: HashMap<String, usize>,
    /// `ActorId` of the current instance → position, for every row with a
    /// cell.
    by_id: HashMap<ActorId, usize>,
    /// Number of `None` rows.
    tombstones: usize,
}

impl ChildTable {
    /// An empty table with room for `capacity` children.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            rows: Vec::with_capacity(capacity),
            by_name: HashMap::with_capacity(capacity),
            by_id: HashMap::with_capacity(capacity),
            tombstones: 0,
        }
    }

    /// Number of children (tombstones not counted).
    pub(crate) fn len(&self) -> usize {
        self.rows.len() - self.tombstones
    }

    /// Number of positions, tombstones included: the `len` to give
    /// [`Strategy::affected`](crate::Strategy::affected).
    pub(crate) fn slots(&self) -> usize {
        self.rows.len()
    }

    /// Appends `entry` at the end of the start order and returns its
    /// position. A row of the same name is removed first (replaced), so
    /// that names stay unique; callers check beforehand whether replacing
    /// it is allowed.
    pub(crate) fn push(&mut self, entry: ChildEntry) -> usize {
        if let Some(old) = self.position(&entry.spec.name) {
            self.remove(old);
        }
        let idx = self.rows.len();
        self.by_name.insert(entry.spec.name.clone(), idx);
        if let Some(cell) = &entry.cell {
            self.by_id.insert(cell.get_id(), idx);
        }
        self.rows.push(Some(entry));
        idx
    }

    /// Removes the row at `idx` (leaving a tombstone; may compact, which
    /// changes positions).
    pub(crate) fn remove(&mut self, idx: usize) -> Option<ChildEntry> {
        let entry = self.rows.get_mut(idx)?.take()?;
        self.by_name.remove(&entry.spec.name);
        if let Some(cell) = &entry.cell {
            self.by_id.remove(&cell.get_id());
        }
        self.tombstones += 1;
        if self.tombstones * 2 > self.rows.len() {
            self.compact();
        }
        Some(entry)
    }

    /// Squeezes out the tombstones, keeping the order, and remaps both
    /// indexes. O(n), done once at least n/2 removals happened since the
    /// last one, so O(1) amortised per removal.
    fn compact(&mut self) {
        let mut new_position = vec![usize::MAX; self.rows.len()];
        let mut next = 0;
        for (old, row) in self.rows.iter().enumerate() {
            if row.is_some() {
                new_position[old] = next;
                next += 1;
            }
        }
        self.rows.retain(Option::is_some);
        for idx in self.by_name.values_mut().chain(self.by_id.values_mut()) {
            *idx = new_position[*idx];
        }
        self.tombstones = 0;
    }

    /// Position of the child called `name`.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Position of the child whose current instance is `id`; `None` for
    /// former instances (replaced, woken over, or removed).
    pub(crate) fn position_of(&self, id: ActorId) -> Option<usize> {
        let idx = *self.by_id.get(&id)?;
        // Defensive: an index is only trusted if the row agrees.
        self.get(idx)?
            .cell
            .as_ref()
            .is_some_and(|cell| cell.get_id() == id)
            .then_some(idx)
    }

    /// The row at `idx`, `None` for a tombstone or out of range.
    pub(crate) fn get(&self, idx: usize) -> Option<&ChildEntry> {
        self.rows.get(idx)?.as_ref()
    }

    /// The row at `idx` for changing its status and bookkeeping. Not for
    /// its `cell` (use [`ChildTable::set_cell`] / [`ChildTable::take_cell`])
    /// nor its name: both are indexed.
    pub(crate) fn get_mut(&mut self, idx: usize) -> Option<&mut ChildEntry> {
        self.rows.get_mut(idx)?.as_mut()
    }

    /// Records `cell` as the current instance of the row at `idx` and
    /// returns the one it replaces (whose exit will then be ignored).
    /// Does nothing for a tombstone.
    pub(crate) fn set_cell(&mut self, idx: usize, cell: ActorCell) -> Option<ActorCell> {
        let entry = self.rows.get_mut(idx)?.as_mut()?;
        self.by_id.insert(cell.get_id(), idx);
        let old = entry.cell.replace(cell);
        if let Some(old) = &old {
            self.by_id.remove(&old.get_id());
        }
        old
    }

    /// Clears the current instance of the row at `idx` and returns it.
    pub(crate) fn take_cell(&mut self, idx: usize) -> Option<ActorCell> {
        let cell = self.rows.get_mut(idx)?.as_mut()?.cell.take()?;
        self.by_id.remove(&cell.get_id());
        Some(cell)
    }

    /// The children in start order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &ChildEntry> {
        self.rows.iter().flatten()
    }

    /// Stops every child in reverse start order, waiting for each, and marks
    /// them stopped. Used for supervisor shutdown and when giving up.
    /// Hibernated children have nothing to stop and stay `Hibernated`
    /// (as do `Stopped` / `Failed` ones: only live statuses change).
    pub(crate) async fn stop_all(&mut self, reason: &str) {
        for idx in (0..self.rows.len()).rev() {
            if let Some(cell) = self.take_cell(idx) {
                let grace = self.get(idx).map(|e| e.spec.shutdown).unwrap_or_default();
                stop_child(&cell, reason, grace).await;
            }
            let Some(entry) = self.get_mut(idx) else {
                continue;
            };
            entry.started_at = None;
            entry.for_sibling = false;
            if matches!(
                entry.status,
                ChildStatus::Starting | ChildStatus::Running | ChildStatus::Restarting
            ) {
                entry.status = ChildStatus::Stopped;
            }
        }
    }

    /// Checks that both indexes agree with the rows (tests only).
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        let mut names = 0;
        let mut ids = 0;
        for (idx, row) in self.rows.iter().enumerate() {
            let Some(entry) = row else { continue };
            names += 1;
            assert_eq!(self.by_name.get(&entry.spec.name), Some(&idx));
            if let Some(cell) = &entry.cell {
                ids += 1;
                assert_eq!(self.by_id.get(&cell.get_id()), Some(&idx));
            }
        }
        assert_eq!(names, self.by_name.len(), "stale names in the index");
        assert_eq!(ids, self.by_id.len(), "stale ids in the index");
        assert_eq!(
            self.rows.iter().filter(|r| r.is_none()).count(),
            self.tombstones
        );
        assert!(self.tombstones * 2 <= self.rows.len());
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr, ActorRef};

    use super::*;
    use crate::child_spec::ChildSpec;
    use crate::restart::Restart;

    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<()>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    fn spec(name: &str) -> ChildSpec {
        ChildSpec::new(name, "test", Restart::Permanent, |_sup| async {
            Err(ractor::SpawnErr::StartupFailed(
                "not started in unit tests".into(),
            ))
        })
    }

    async fn cell() -> ActorCell {
        let (actor, _join) = Actor::spawn(None, Idle, ()).await.expect("spawn");
        actor.get_cell()
    }

    fn names(table: &ChildTable) -> Vec<String> {
        table.iter().map(|e| e.spec.name.clone()).collect()
    }

    #[tokio::test]
    async fn push_lookup_remove_compact_and_iterate_in_order() {
        let mut table = ChildTable::default();
        let mut cells = Vec::new();
        for i in 0..10 {
            let c = cell().await;
            let idx = table.push(ChildEntry::running(spec(&format!("c{i}")), c.clone()));
            assert_eq!(idx, i);
            cells.push(c);
        }
        table.assert_consistent();
        assert_eq!((table.len(), table.slots()), (10, 10));
        assert_eq!(table.position("c3"), Some(3));
        assert_eq!(table.position_of(cells[7].get_id()), Some(7));
        assert_eq!(table.position("nope"), None);

        // Removing up to half leaves tombstones: positions do not move.
        for i in [1, 2, 4, 6, 8] {
            let removed = table.remove(i).expect("row present");
            assert_eq!(removed.spec.name, format!("c{i}"));
        }
        assert!(table.remove(1).is_none(), "already a tombstone");
        table.assert_consistent();
        assert_eq!((table.len(), table.slots()), (5, 10));
        assert_eq!(table.position("c9"), Some(9));
        assert_eq!(table.position("c2"), None);
        assert_eq!(table.position_of(cells[2].get_id()), None);
        assert!(table.get(2).is_none());
        assert_eq!(names(&table), ["c0", "c3", "c5", "c7", "c9"]);
        let reversed: Vec<_> = table.iter().rev().map(|e| e.spec.name.clone()).collect();
        assert_eq!(reversed, ["c9", "c7", "c5", "c3", "c0"]);

        // One more: more than half are tombstones, so the table compacts.
        table.remove(3);
        table.assert_consistent();
        assert_eq!((table.len(), table.slots()), (4, 4));
        assert_eq!(names(&table), ["c0", "c5", "c7", "c9"]);
        for (pos, i) in [0, 5, 7, 9].into_iter().enumerate() {
            assert_eq!(table.position(&format!("c{i}")), Some(pos));
            assert_eq!(table.position_of(cells[i].get_id()), Some(pos));
        }

        // Appending after compaction, and replacing by name.
        let idx = table.push(ChildEntry::hibernated(spec("h")));
        assert_eq!(idx, 4);
        assert_eq!(table.position_of(cells[2].get_id()), None);
        let idx = table.push(ChildEntry::hibernated(spec("c5")));
        table.assert_consistent();
        assert_eq!(names(&table), ["c0", "c7", "c9", "h", "c5"]);
        assert_eq!(table.position("c5"), Some(idx));
        assert_eq!(table.position_of(cells[5].get_id()), None, "replaced");

        for c in cells {
            c.stop(None);
        }
    }

    #[tokio::test]
    async fn cells_are_indexed_as_they_change() {
        let mut table = ChildTable::default();
        let (a, b) = (cell().await, cell().await);
        let idx = table.push(ChildEntry::hibernated(spec("x")));
        assert_eq!(table.position_of(a.get_id()), None);

        assert!(table.set_cell(idx, a.clone()).is_none());
        assert_eq!(table.position_of(a.get_id()), Some(idx));
        let old = table.set_cell(idx, b.clone()).expect("a was there");
        assert_eq!(old.get_id(), a.get_id());
        assert_eq!(table.position_of(a.get_id()), None, "former instance");
        assert_eq!(table.position_of(b.get_id()), Some(idx));
        table.assert_consistent();

        assert_eq!(table.take_cell(idx).map(|c| c.get_id()), Some(b.get_id()));
        assert_eq!(table.position_of(b.get_id()), None);
        assert!(table.take_cell(idx).is_none());
        table.assert_consistent();

        table.set_cell(idx, a.clone());
        table.stop_all("test over").await;
        table.assert_consistent();
        assert_eq!(a.get_status(), ractor::ActorStatus::Stopped);
        let entry = table.get(idx).expect("row stays");
        assert!(entry.cell.is_none());
        assert_eq!(entry.status, ChildStatus::Hibernated, "status untouched");
        b.stop(None);
    }

    #[test]
    fn many_removals_stay_consistent() {
        let mut table = ChildTable::with_capacity(1000);
        for i in 0..1000 {
            table.push(ChildEntry::hibernated(spec(&format!("q{i}"))));
        }
        // Remove every other one, by name, then the rest from the back.
        for i in (0..1000).step_by(2) {
            let idx = table.position(&format!("q{i}")).expect("present");
            table.remove(idx);
            table.assert_consistent();
        }
        assert_eq!(table.len(), 500);
        let expected: Vec<_> = (1..1000).step_by(2).map(|i| format!("q{i}")).collect();
        assert_eq!(names(&table), expected);
        for i in (1..1000).step_by(2).rev() {
            let idx = table.position(&format!("q{i}")).expect("present");
            table.remove(idx);
        }
        table.assert_consistent();
        assert_eq!((table.len(), table.slots()), (0, 0));
    }
}
