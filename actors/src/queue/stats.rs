//! What listings and the debug shell show of a queue, whatever its type.

use serde::{Deserialize, Serialize};

use crate::delivery::ChannelId;

/// A snapshot of a queue's counters, for management and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Messages ready for delivery (what `queue.declare-ok` reports).
    pub ready: u64,
    /// Messages delivered and not yet acked.
    pub unacked: u64,
    /// Registered consumers.
    pub consumers: u64,
    /// Body bytes of ready messages.
    pub ready_bytes: u64,
    /// Body bytes of unacked messages.
    pub unacked_bytes: u64,
    /// Body bytes of ready and unacked messages.
    pub bytes_total: u64,
    /// Body bytes held in memory by the queue.
    pub bytes_in_memory: u64,
    /// Bodies held in memory by the queue.
    pub messages_in_memory: u64,
    /// Messages whose body is only in storage (ready, unacked or dead-lettering).
    pub paged_out: u64,
    /// Bodies asked of storage and not yet arrived.
    pub loading: u64,
    /// Messages waiting for their body before being dead-lettered.
    pub dead_lettering: u64,
    /// Messages whose write is not yet confirmed by storage.
    pub writing: u64,
    /// Publisher confirms waiting for a write.
    pub pending_confirms: u64,
    /// Messages storage reported missing when their body was loaded.
    pub lost: u64,
}

/// A consumer as the debug shell's `inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerSummary {
    /// The consumer tag.
    pub tag: String,
    /// The channel its deliveries go to.
    pub channel: ChannelId,
    /// 0 is unlimited.
    pub prefetch: u32,
    /// Delivered and not yet settled; its credit is `prefetch - unacked`.
    pub unacked: u32,
    /// Deliveries are settled as they go out.
    pub no_ack: bool,
    /// It has the queue to itself (other consumers are refused).
    pub exclusive: bool,
    /// Receives messages (false for the waiting ones under single-active-consumer).
    pub active: bool,
}

/// A stream's partition: what its log holds, and its consumer groups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The oldest offset it keeps.
    pub first: u64,
    /// The offset its next message gets.
    pub end: u64,
    /// Bytes of its log.
    pub bytes: u64,
    /// Its consumer groups.
    pub groups: Vec<GroupStatus>,
}

/// A consumer group of a stream's partition: where it is and how far behind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group's name.
    pub group: String,
    /// For a broadcast group: the member whose offset this is.
    pub member: Option<String>,
    /// The offset the group goes on from.
    pub committed: u64,
    /// The offset the partition's next message gets.
    pub end: u64,
    /// Its members on this partition now.
    pub members: u32,
    /// The consumer tag of the member that is sent messages, if any.
    pub active: Option<String>,
}

impl GroupStatus {
    /// Messages the group has not processed yet.
    pub fn lag(&self) -> u64 {
        self.end.saturating_sub(self.committed)
    }
}

/// A queue's counters with how often its actor restarted, as its home node reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// The counters as of the queue's last step.
    pub stats: QueueStats,
    /// How often the queue's actor was restarted by its supervisor.
    pub restarts: u64,
    /// A replicated queue's group, as its Raft leader reports it (none for other
    /// types, or when no node that answered leads the group).
    pub replication: Option<Replication>,
    /// The node that serves a replicated queue, as the node that answered knows it.
    pub serving: Option<String>,
}

/// A replicated queue's Raft group, as its leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// The node that leads the group in Raft.
    pub leader: String,
    /// The current term.
    pub term: u64,
    /// The leader's commit index.
    pub committed: u64,
    /// Each member of the group, by node name.
    pub members: Vec<ReplicaProgress>,
    /// The leader's log: the first entry it keeps (those before are compacted;
    /// it keeps every entry a message in the queue is stored in)...
    pub log_first: u64,
    /// ... its last entry...
    pub log_last: u64,
    /// ... and the index of its latest snapshot (0: none yet).
    pub snapshot: u64,
}

/// One member of a replicated queue's group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaProgress {
    /// Its node.
    pub node: String,
    /// The last log index the leader knows it holds.
    pub matched: u64,
    /// A voter; else a learner that is still catching up to become one.
    pub voter: bool,
}

impl Replication {
    /// Whether member `node` holds everything the group committed.
    pub fn in_sync(&self, node: &str) -> bool {
        self.members
            .iter()
            .any(|m| m.node == node && m.voter && m.matched >= self.committed)
    }
}
