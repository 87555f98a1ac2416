//! Raft messages on their way out: every group's messages of one handling, gathered
//! per peer node and sent when the handling ends, as few casts as
//! [`transport::casts`] allows (one, unless they exceed its size limit). A node pair
//! carries all its groups' messages over its one session this way: a thousand
//! groups' heartbeats to a peer are one cast, not a thousand.

use std::collections::BTreeMap;

use raft::prelude::Message;

use super::transport::{self, Cast, Quiet, RaftBatch};
use super::{replica_of, ReplicaMsg};
use crate::raft_group::GroupId;

/// Messages waiting for the end of the handling, and what was sent so far.
#[derive(Default)]
pub(super) struct Outbox {
    /// By peer node: (group, protobuf-encoded message), in the order sent.
    by_peer: BTreeMap<String, Vec<(GroupId, Vec<u8>)>>,
    /// By peer node: groups whose followers there may stop ticking.
    quiet: BTreeMap<String, Vec<Quiet>>,
    /// Numbers big messages (see [`transport::Part`]).
    big_seq: u64,
    /// Raft messages sent since the replica started.
    pub messages: u64,
    /// Casts that carried them.
    pub casts: u64,
}

impl Outbox {
    /// Takes `group`'s messages, addressed by Raft id (`names` names the nodes).
    pub fn add(&mut self, group: GroupId, names: &BTreeMap<u64, String>, messages: Vec<Message>) {
        for m in messages {
            let Some(name) = names.get(&m.to) else {
                tracing::debug!(group, to = m.to, "a raft message to nobody known");
                continue;
            };
            match protobuf::Message::write_to_bytes(&m) {
                Ok(bytes) => match self.by_peer.get_mut(name.as_str()) {
                    Some(batch) => batch.push((group, bytes)),
                    None => {
                        self.by_peer.insert(name.clone(), vec![(group, bytes)]);
                    }
                },
                Err(e) => tracing::warn!(group, "a raft message did not encode: {e}"),
            }
        }
    }

    /// Tells the follower on node `to` that the group is settled.
    pub fn quiet(&mut self, to: &str, word: Quiet) {
        match self.quiet.get_mut(to) {
            Some(words) => words.push(word),
            None => {
                self.quiet.insert(to.to_string(), vec![word]);
            }
        }
    }

    /// Sends what was gathered, from the replica `sender` in its `incarnation`.
    pub fn flush(&mut self, sender: &str, incarnation: u64) {
        let mut quiet = std::mem::take(&mut self.quiet);
        for name in quiet.keys() {
            self.by_peer.entry(name.clone()).or_default();
        }
        for (name, batch) in std::mem::take(&mut self.by_peer) {
            let mut words = quiet.remove(&name).unwrap_or_default();
            let Some(peer) = replica_of(&name) else {
                continue;
            };
            self.messages += batch.len() as u64;
            let mut casts = transport::casts(batch, (incarnation, sender), &mut self.big_seq);
            if casts.is_empty() {
                casts.push(Cast::Batch(Vec::new()));
            }
            for cast in casts {
                self.casts += 1;
                let _ = match cast {
                    // The words ride with the first batch (after the messages in it).
                    Cast::Batch(messages) => peer.cast(ReplicaMsg::Raft(
                        RaftBatch {
                            sender: sender.to_string(),
                            messages,
                            quiet: std::mem::take(&mut words),
                        }
                        .into(),
                    )),
                    Cast::Part(p) => peer.cast(ReplicaMsg::RaftPart(p.into())),
                };
            }
            if !words.is_empty() {
                // Only parts went: the words go on their own.
                self.casts += 1;
                let _ = peer.cast(ReplicaMsg::Raft(
                    RaftBatch {
                        sender: sender.to_string(),
                        messages: Vec::new(),
                        quiet: words,
                    }
                    .into(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use tokio::sync::mpsc;

    use super::*;
    use crate::replica::replica_group;

    /// Stands for a peer's replica: hands every batch it gets to the test.
    struct Peer(mpsc::UnboundedSender<RaftBatch>);

    impl Actor for Peer {
        type Msg = ReplicaMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            myself: ActorRef<ReplicaMsg>,
            _: (),
        ) -> Result<(), ActorProcessingErr> {
            ractor::pg::join(replica_group("outbox-peer"), vec![myself.get_cell()]);
            Ok(())
        }

        async fn handle(
            &self,
            _: ActorRef<ReplicaMsg>,
            message: ReplicaMsg,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            if let ReplicaMsg::Raft(batch) = message {
                let _ = self.0.send(batch.into_result().unwrap());
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_messages_of_all_groups_to_a_peer_leave_in_one_cast() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (peer, _) = Actor::spawn(None, Peer(tx), ()).await.unwrap();
        let names = BTreeMap::from([(5, "outbox-peer".to_string()), (6, "nobody".to_string())]);
        let heartbeat = |to| Message {
            msg_type: raft::prelude::MessageType::MsgHeartbeat,
            to,
            ..Message::default()
        };
        let mut outbox = Outbox::default();
        for group in 1..=50 {
            outbox.add(group, &names, vec![heartbeat(5), heartbeat(6)]);
        }
        let word = Quiet {
            group: 7,
            term: 2,
            leader: 1,
            index: 9,
        };
        outbox.quiet("outbox-peer", word);
        outbox.flush("outbox-me", 1);
        let batch = rx.recv().await.unwrap();
        assert_eq!(batch.sender, "outbox-me");
        assert_eq!(
            batch.messages.len(),
            50,
            "every group's message to the peer"
        );
        assert_eq!(batch.quiet, vec![word]);
        assert_eq!((outbox.messages, outbox.casts), (50, 1));
        // A word alone still goes.
        outbox.quiet("outbox-peer", word);
        outbox.flush("outbox-me", 1);
        let batch = rx.recv().await.unwrap();
        assert!(batch.messages.is_empty());
        assert_eq!(batch.quiet, vec![word]);
        peer.stop(None);
    }
}
