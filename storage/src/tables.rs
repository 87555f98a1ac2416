//! The tables of a Warren data file: names, key and value types, and why each
//! exists.
//!
//! Keys of per-queue (and per-partition, per-group) records are `(u64, u64)`
//! tuples. redb orders tuples element by element and `u64` numerically, so all
//! records of queue `q` sit together between `(q, 0)` and `(q, u64::MAX)` in
//! `seq` order: reading or deleting one queue is one range scan.
//!
//! Renaming a table or changing its key or value type changes the file format:
//! bump [`FILE_FORMAT_VERSION`] and teach [`crate::open`] to migrate.

use redb::TableDefinition;

/// Version of the file layout (the set of tables and their key/value types).
///
/// Distinct from [`crate::codec::FORMAT_VERSION`], which versions the encoding of
/// each value: the layout and the value encoding evolve independently.
///
/// Version 2 added the journal (`journal.rs`): a version 2 file may have durable
/// writes in its journal that a build without one would not see, so older builds
/// must refuse it. Version 3 added runs (`runs.rs`): a value of `partition.log`
/// may hold several chunks, which a build before it would read as one damaged
/// chunk. Files of versions 1 and 2 open as they are (their chunks are values of
/// their own, which version 3 reads as before) and become version 3.
pub const FILE_FORMAT_VERSION: u64 = 3;

/// `format`: facts about the file itself, keyed by name.
pub(crate) const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("format");

/// Key in [`FORMAT`]: the [`FILE_FORMAT_VERSION`] the file was written with.
pub(crate) const FORMAT_VERSION_KEY: &str = "format_version";

/// Key in [`FORMAT`]: the next id [`crate::Store::allocate_id`] hands out. Never
/// decreases; written in the same transaction as any write made after an id was
/// handed out, so an id that reached the file is never handed out again.
pub(crate) const NEXT_ID_KEY: &str = "next_id";

/// Key in [`FORMAT`]: the journal's epoch whose records the file does not hold
/// yet (absent: 0). The durable commit that empties the journal advances it, and
/// so does opening the file after reading the journal (`journal.rs`).
pub(crate) const JOURNAL_EPOCH_KEY: &str = "journal_epoch";

/// Key in [`FORMAT`]: a random number drawn when the file first got a journal and
/// mixed into every journal record's CRC, so that bytes a publisher chose (a
/// message body left in a journal file from an older epoch) can never pass for a
/// record of this store.
pub(crate) const JOURNAL_KEY_KEY: &str = "journal_key";

/// `queue.index`: `(queue, seq) -> index record`. Small records (delivery count,
/// expiry, size, ...) read at recovery for every message, so a restart never reads
/// message bodies.
pub(crate) const QUEUE_INDEX: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("queue.index");

/// `queue.body`: `(queue, seq) -> full encoded message`. Read only when a message
/// is delivered from beyond the queue's in-memory window.
pub(crate) const QUEUE_BODY: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("queue.body");

/// `partition.log`: `(partition, first offset) -> chunk`: the append-only log of a
/// stream's partition, one record per appended chunk (a batch of messages), keyed
/// by the offset of its first message. The chunk holding offset `o` is the last
/// key at or before `(partition, o)`.
pub(crate) const PARTITION_LOG: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("partition.log");

/// `partition.time`: `(partition, interval start in ms) -> first offset`: the
/// timestamp index of a partition's log, one entry per interval (a second) in which
/// a chunk began, naming the interval's first chunk, so where to start reading for
/// a time is one seek. (An entry per chunk dirtied one more B-tree leaf per
/// partition in every commit: half the cost of appends to 1 000 partitions.)
pub(crate) const PARTITION_TIME: TableDefinition<(u64, u64), u64> =
    TableDefinition::new("partition.time");

/// `partition.keys`: `(partition, key hash, offset) -> ()`: the key index of a
/// partition's log (RocketMQ's index): the offsets of the messages published with a
/// key, found by the key's hash in one range scan (the caller checks the keys).
pub(crate) const PARTITION_KEYS: TableDefinition<(u64, u64, u64), ()> =
    TableDefinition::new("partition.keys");

/// `consumer.offsets`: `"PARTITION\0GROUP" -> offset`: where each consumer group of
/// a partition goes on from (the partition's id as 16 hex digits, so one
/// partition's groups sort together; see [`offset_key`]).
pub(crate) const CONSUMER_OFFSETS: TableDefinition<&str, u64> =
    TableDefinition::new("consumer.offsets");

/// `replication.log`: `(raft group, log index) -> entry`: the Raft logs of the
/// cluster's metadata (group 0) and, later, of mirrored queues. Index 0 of a
/// group holds its hard state (term, vote, commit) and its members.
pub(crate) const REPLICATION_LOG: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("replication.log");

/// `replication.snapshot`: `raft group -> snapshot`: the latest snapshot of each
/// Raft group, which stands for the log entries compacted behind it.
pub(crate) const REPLICATION_SNAPSHOT: TableDefinition<u64, &[u8]> =
    TableDefinition::new("replication.snapshot");

/// `delayed.messages`: `(exchange, due ms, seq) -> encoded message`: the messages an
/// `x-delayed-message` exchange holds until they are due, keyed by the exchange's
/// vhost and name (`"VHOST\0NAME"`), then by due time (milliseconds since the Unix
/// epoch): the next ones due are the first keys of the exchange's range, so nothing
/// but the store holds them, however many wait.
pub(crate) const DELAYED: TableDefinition<(&str, u64, u64), &[u8]> =
    TableDefinition::new("delayed.messages");

/// The key range of every delayed message of `exchange`.
pub(crate) fn delayed_range(exchange: &str) -> std::ops::RangeInclusive<(&str, u64, u64)> {
    (exchange, 0, 0)..=(exchange, u64::MAX, u64::MAX)
}

/// The metadata tables, one per kind of broker object, each `string key ->
/// encoded value`. The caller builds the key (e.g. `"/\u{0}orders"` for queue
/// `orders` in vhost `/`), so that related keys sort together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MetaTable {
    /// Virtual hosts.
    Vhosts,
    /// Exchanges, keyed by vhost and name.
    Exchanges,
    /// Queues, keyed by vhost and name.
    Queues,
    /// Bindings between exchanges and queues or exchanges.
    Bindings,
    /// Users and their credentials, as stored before credentials had schemes (read
    /// at start; a changed user moves to [`MetaTable::UserRecords`]).
    Users,
    /// Per-user, per-vhost permissions.
    Permissions,
    /// Policies.
    Policies,
    /// Users with their credential's hashing scheme (Warren's, RabbitMQ's SHA-256 or
    /// SHA-512), so that definitions exported by RabbitMQ import with their passwords.
    UserRecords,
}

impl MetaTable {
    /// Every metadata table, in a fixed order.
    pub const ALL: [MetaTable; 8] = [
        MetaTable::Vhosts,
        MetaTable::Exchanges,
        MetaTable::Queues,
        MetaTable::Bindings,
        MetaTable::Users,
        MetaTable::Permissions,
        MetaTable::Policies,
        MetaTable::UserRecords,
    ];

    /// The redb table name, as it appears in the file.
    pub const fn table_name(self) -> &'static str {
        match self {
            MetaTable::Vhosts => "meta.vhosts",
            MetaTable::Exchanges => "meta.exchanges",
            MetaTable::Queues => "meta.queues",
            MetaTable::Bindings => "meta.bindings",
            MetaTable::Users => "meta.users",
            MetaTable::Permissions => "meta.permissions",
            MetaTable::Policies => "meta.policies",
            MetaTable::UserRecords => "meta.user_records",
        }
    }

    /// Position in [`MetaTable::ALL`], for per-table slots in arrays.
    pub(crate) const fn slot(self) -> usize {
        match self {
            MetaTable::Vhosts => 0,
            MetaTable::Exchanges => 1,
            MetaTable::Queues => 2,
            MetaTable::Bindings => 3,
            MetaTable::Users => 4,
            MetaTable::Permissions => 5,
            MetaTable::Policies => 6,
            MetaTable::UserRecords => 7,
        }
    }

    pub(crate) const fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.table_name())
    }
}

/// The key of consumer group `group`'s offset in partition `partition`.
pub(crate) fn offset_key(partition: u64, group: &str) -> String {
    format!("{partition:016x}\u{0}{group}")
}

/// The key range of every consumer group's offset in `partition`.
pub(crate) fn offset_range(partition: u64) -> (String, String) {
    (
        format!("{partition:016x}\u{0}"),
        format!("{partition:016x}\u{1}"),
    )
}

/// The key range holding every record of one queue (or partition, or group).
pub(crate) fn owner_range(owner: u64) -> std::ops::RangeInclusive<(u64, u64)> {
    (owner, 0)..=(owner, u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_positions_in_all() {
        for (position, table) in MetaTable::ALL.iter().enumerate() {
            assert_eq!(table.slot(), position, "{table:?}");
        }
    }

    #[test]
    fn table_names_are_distinct() {
        let mut names: Vec<&str> = MetaTable::ALL.iter().map(|t| t.table_name()).collect();
        names.extend(["format", "queue.index", "queue.body", "partition.log"]);
        names.push("partition.time");
        names.push("partition.keys");
        names.extend([
            "consumer.offsets",
            "replication.log",
            "replication.snapshot",
            "delayed.messages",
        ]);
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
