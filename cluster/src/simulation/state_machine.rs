//! The replicated state machine: a model of the cluster's metadata.
//!
//! A command is a small struct with the (origin, id) of the real `Proposal`, so that a
//! client can hand the same command to Raft again after a term change; the state
//! machine applies an entry the way the real replica does, through the same
//! [`Recent`] filter (an entry proposed twice is applied once). It keeps the ordered
//! list of the commands it applied (with their log indices), a map they change, and a
//! chain hash over the list (the checks compare prefixes with it). Its image (a
//! snapshot's data) is all of that; the filter is rebuilt from the list.

use std::collections::BTreeMap;

use raft::prelude::Entry;

use super::rng::Fnv;
use crate::replica::proposals::{Recent, NONCE_BIT};
use crate::replica::{SnapshotData, SNAPSHOT_FORMAT};

/// What a command does to the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Put { key: u8, value: u32 },
    Delete { key: u8 },
}

/// A client command, as a log entry carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Command {
    /// The index of the node whose client asked (it answers the client).
    pub(super) origin: u64,
    /// The proposal's nonce (with [`NONCE_BIT`], as the real replica's).
    pub(super) id: u64,
    pub(super) op: Op,
}

const COMMAND_LEN: usize = 22;

impl Command {
    pub(super) fn new(origin: u64, nonce: u64, op: Op) -> Command {
        Command {
            origin,
            id: nonce | NONCE_BIT,
            op,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(COMMAND_LEN);
        out.extend_from_slice(&self.origin.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        match self.op {
            Op::Put { key, value } => {
                out.extend_from_slice(&[1, key]);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Op::Delete { key } => {
                out.extend_from_slice(&[2, key]);
                out.extend_from_slice(&0u32.to_le_bytes());
            }
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Command> {
        if bytes.len() != COMMAND_LEN {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let value = u32::from_le_bytes(bytes[18..22].try_into().unwrap());
        let op = match bytes[16] {
            1 => Op::Put {
                key: bytes[17],
                value,
            },
            2 => Op::Delete { key: bytes[17] },
            _ => return None,
        };
        Some(Command {
            origin: u64_at(0),
            id: u64_at(8),
            op,
        })
    }

    /// The origin as the dedupe filter knows it (a node name).
    fn origin_name(&self) -> String {
        format!("n{}", self.origin)
    }
}

/// What applying one entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Applied {
    /// An empty entry (a new leader's) or one that is not a command.
    Nothing,
    /// A command applied.
    Command(Command),
    /// A command already applied from an earlier entry: skipped.
    Duplicate(Command),
}

/// The state machine of one node (lost in a crash; rebuilt from the snapshot and the
/// log).
#[derive(Default)]
pub(super) struct StateMachine {
    applied_index: u64,
    applied_term: u64,
    /// The commands applied, with their log indices, in order.
    log: Vec<(u64, Command)>,
    /// `chain[k]`: the hash of `log[..=k]`.
    chain: Vec<u64>,
    map: BTreeMap<u8, u32>,
    /// Key -> the index of the entry that put its value: the state needs those
    /// entries (as a mirrored queue needs the entries that hold its messages).
    puts: BTreeMap<u8, u64>,
    recent: Recent,
}

impl StateMachine {
    pub(super) fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub(super) fn applied_term(&self) -> u64 {
        self.applied_term
    }

    pub(super) fn chain(&self) -> &[u64] {
        &self.chain
    }

    pub(super) fn commands(&self) -> &[(u64, Command)] {
        &self.log
    }

    pub(super) fn map(&self) -> &BTreeMap<u8, u32> {
        &self.map
    }

    /// Key -> the index of the entry that put its value.
    pub(super) fn puts(&self) -> &BTreeMap<u8, u64> {
        &self.puts
    }

    /// The first entry the state needs besides a snapshot (`Machine::needed_from`).
    pub(super) fn needed_from(&self) -> Option<u64> {
        self.puts.values().min().copied()
    }

    /// Whether the command `(origin, id)` was applied here.
    pub(super) fn has(&self, origin: u64, id: u64) -> bool {
        self.log
            .iter()
            .any(|(_, c)| c.origin == origin && c.id == id)
    }

    /// Applies the next committed entry. `dedupe` off is the test-only damage of
    /// `Sabotage::ApplyDuplicates`.
    pub(super) fn apply(&mut self, entry: &Entry, dedupe: bool) -> Applied {
        assert_eq!(
            entry.index,
            self.applied_index + 1,
            "entries are applied in order"
        );
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        let Some(command) = Command::decode(&entry.data) else {
            return Applied::Nothing;
        };
        let first = self
            .recent
            .first_time(&command.origin_name(), command.id, entry.index);
        if !first && dedupe {
            return Applied::Duplicate(command);
        }
        self.push(entry.index, command);
        Applied::Command(command)
    }

    fn push(&mut self, index: u64, command: Command) {
        match command.op {
            Op::Put { key, value } => {
                self.map.insert(key, value);
                self.puts.insert(key, index);
            }
            Op::Delete { key } => {
                self.map.remove(&key);
                self.puts.remove(&key);
            }
        }
        let prev = self.chain.last().copied().unwrap_or(0);
        let mut h = Fnv::default();
        h.u64(prev).u64(index).bytes(&command.encode());
        self.chain.push(h.finish());
        self.log.push((index, command));
    }

    /// The image a snapshot carries.
    pub(super) fn image(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.applied_index.to_le_bytes());
        out.extend_from_slice(&self.applied_term.to_le_bytes());
        for (index, command) in &self.log {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&command.encode());
        }
        out
    }

    /// A snapshot's data: the image and the dedupe filter's export, as the real
    /// snapshot carries them ([`SnapshotData`]).
    pub(super) fn snapshot_data(&self) -> Vec<u8> {
        SnapshotData {
            format: SNAPSHOT_FORMAT,
            names: Default::default(),
            base_voters: Vec::new(),
            recent: self.recent.export(),
            state: self.image(),
            log: Vec::new(),
        }
        .encode()
        .expect("a snapshot encodes")
    }

    /// The state machine a snapshot's data describes: the image's commands and map,
    /// the filter imported from the snapshot (`Recent::import`).
    pub(super) fn from_snapshot(data: &[u8]) -> Option<StateMachine> {
        let data = SnapshotData::decode(data).ok()?;
        let mut sm = StateMachine::restore(&data.state)?;
        sm.recent = Recent::import(data.recent);
        Some(sm)
    }

    /// The state machine an image describes (its map and filter rebuilt by replaying
    /// its commands); `None` if the bytes are not an image.
    pub(super) fn restore(image: &[u8]) -> Option<StateMachine> {
        if image.len() < 16 || !(image.len() - 16).is_multiple_of(8 + COMMAND_LEN) {
            return None;
        }
        let mut sm = StateMachine::default();
        for chunk in image[16..].chunks(8 + COMMAND_LEN) {
            let index = u64::from_le_bytes(chunk[..8].try_into().unwrap());
            let command = Command::decode(&chunk[8..])?;
            sm.recent
                .first_time(&command.origin_name(), command.id, index);
            sm.push(index, command);
        }
        sm.applied_index = u64::from_le_bytes(image[..8].try_into().unwrap());
        sm.applied_term = u64::from_le_bytes(image[8..16].try_into().unwrap());
        Some(sm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, command: &Command) -> Entry {
        Entry {
            index,
            term: 1,
            data: command.encode().into(),
            ..Entry::default()
        }
    }

    #[test]
    fn a_command_in_the_log_twice_is_applied_once_also_after_a_restore() {
        let c = Command::new(1, 42, Op::Put { key: 3, value: 7 });
        let d = Command::new(2, 43, Op::Delete { key: 3 });
        assert_eq!(Command::decode(&c.encode()), Some(c));
        let mut sm = StateMachine::default();
        assert_eq!(sm.apply(&entry(1, &c), true), Applied::Command(c));
        assert_eq!(
            sm.apply(
                &Entry {
                    index: 2,
                    ..Entry::default()
                },
                true
            ),
            Applied::Nothing
        );
        let mut restored = StateMachine::from_snapshot(&sm.snapshot_data()).unwrap();
        assert_eq!(restored.applied_index(), 2);
        assert_eq!(restored.chain(), sm.chain());
        assert_eq!(restored.apply(&entry(3, &c), true), Applied::Duplicate(c));
        assert_eq!(restored.apply(&entry(4, &d), true), Applied::Command(d));
        assert!(restored.map().is_empty());
        assert!(restored.has(1, c.id) && restored.has(2, d.id));
    }
}
