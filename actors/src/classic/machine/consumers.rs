//! The queue's consumers: registration (tags per channel, exclusive use, single
//! active consumer) and the rotation that picks who gets the next message.
//!
//! The rotation holds exactly the consumers that may receive now: eligible (the
//! active one under single-active-consumer, everyone otherwise) with free prefetch
//! credit. It is grouped by consumer priority (`x-priority`, highest first) and
//! round-robin within a group: the picked consumer goes to the back of its group if
//! it still has credit. A consumer without credit leaves the rotation and comes back
//! when an ack or a return frees credit, so picking never scans blocked consumers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::queue::{ConsumerSummary, WRITE_WINDOW_BYTES};

use super::command::{ChannelId, ConsumerTag};
use super::fasthash::IntMap;

/// The queue's own number for a consumer, in registration order, never reused.
pub(crate) type ConsumerId = u64;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Consumer {
    pub channel: ChannelId,
    pub tag: ConsumerTag,
    /// 0 is unlimited.
    pub prefetch: u32,
    pub no_ack: bool,
    pub exclusive: bool,
    pub priority: i32,
    /// Messages delivered to it and not yet settled.
    pub unacked: u32,
    in_rotation: bool,
}

impl Consumer {
    pub fn has_credit(&self) -> bool {
        self.prefetch == 0 || self.unacked < self.prefetch
    }
}

/// Why a consumer could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    TagInUse,
    ExclusiveUse,
}

/// (Serialized whole, rotation order included, in a core's image: who gets the next
/// message must come out the same on a replica restored from it.)
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Consumers {
    by_id: BTreeMap<ConsumerId, Consumer>,
    by_channel: IntMap<ChannelId, HashMap<ConsumerTag, ConsumerId>>,
    rotation: BTreeMap<Reverse<i32>, VecDeque<ConsumerId>>,
    single_active: bool,
    active: Option<ConsumerId>,
    exclusive: usize,
    next_id: ConsumerId,
    /// The write windows of consumers whose channel reports what it wrote
    /// (see [`window_next`](Self::window_next)). Local to the node that runs the
    /// queue: not in an image, and a replicated queue sets none.
    #[serde(skip)]
    windows: IntMap<ConsumerId, Window>,
    /// Windows for the next consumer registered under a (channel, tag), set just
    /// before it is, so that its first deliveries count too.
    #[serde(skip)]
    next_windows: HashMap<(ChannelId, ConsumerTag), u32>,
}

/// A consumer's write window: deliveries sent to its channel and not yet
/// written towards the client, at most `limit` of them and at most
/// [`WRITE_WINDOW_BYTES`] of their bodies (one at least, however large).
#[derive(Clone, Debug, Default)]
struct Window {
    limit: u32,
    /// Body sizes of the deliveries in flight, oldest first: the channel reports
    /// them written in the order they were sent.
    in_flight: VecDeque<u32>,
    /// Their sum.
    bytes: u64,
}

impl Consumers {
    pub fn new(single_active: bool) -> Self {
        Consumers {
            single_active,
            ..Consumers::default()
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every consumer, oldest first, as `inspect` shows them.
    pub fn summaries(&self) -> Vec<ConsumerSummary> {
        self.by_id
            .iter()
            .map(|(&id, c)| ConsumerSummary {
                tag: c.tag.to_string(),
                channel: c.channel,
                prefetch: c.prefetch,
                unacked: c.unacked,
                no_ack: c.no_ack,
                exclusive: c.exclusive,
                active: !self.single_active || self.active == Some(id),
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The channels with a consumer.
    pub fn channels(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.by_channel.keys().copied()
    }

    pub fn get(&self, id: ConsumerId) -> Option<&Consumer> {
        self.by_id.get(&id)
    }

    pub fn find(&self, channel: ChannelId, tag: &str) -> Option<ConsumerId> {
        self.by_channel.get(&channel)?.get(tag).copied()
    }

    /// The consumers of a channel, in registration order.
    pub fn on_channel(&self, channel: ChannelId) -> Vec<ConsumerId> {
        let mut ids: Vec<ConsumerId> = self
            .by_channel
            .get(&channel)
            .map(|tags| tags.values().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Whether some consumer may receive a message now (tests).
    #[cfg(test)]
    pub fn has_demand(&self) -> bool {
        !self.rotation.is_empty()
    }

    /// Checks that a consumer could be registered, without registering it.
    pub fn check(&self, channel: ChannelId, tag: &str, exclusive: bool) -> Result<(), Refusal> {
        if self.find(channel, tag).is_some() {
            return Err(Refusal::TagInUse);
        }
        if self.exclusive > 0 || (exclusive && !self.by_id.is_empty()) {
            return Err(Refusal::ExclusiveUse);
        }
        Ok(())
    }

    /// Registers a consumer (after [`check`](Self::check)). Returns its id and whether
    /// it became the single active consumer.
    pub fn add(
        &mut self,
        channel: ChannelId,
        tag: ConsumerTag,
        prefetch: u32,
        no_ack: bool,
        exclusive: bool,
        priority: i32,
    ) -> (ConsumerId, bool) {
        let id = self.next_id;
        self.next_id += 1;
        self.by_channel
            .entry(channel)
            .or_default()
            .insert(tag.clone(), id);
        if let Some(limit) = self.next_windows.remove(&(channel, tag.clone())) {
            self.windows.insert(
                id,
                Window {
                    limit,
                    ..Window::default()
                },
            );
        }
        self.by_id.insert(
            id,
            Consumer {
                channel,
                tag,
                prefetch,
                no_ack,
                exclusive,
                priority,
                unacked: 0,
                in_rotation: false,
            },
        );
        if exclusive {
            self.exclusive += 1;
        }
        let became_active = self.single_active && self.active.is_none();
        if became_active {
            self.active = Some(id);
        }
        self.enter_rotation(id);
        (id, became_active)
    }

    /// Removes a consumer. Returns it and, under single-active-consumer, the consumer
    /// that became active in its place.
    pub fn remove(&mut self, id: ConsumerId) -> Option<(Consumer, Option<ConsumerId>)> {
        let consumer = self.by_id.remove(&id)?;
        self.windows.remove(&id);
        if let Some(tags) = self.by_channel.get_mut(&consumer.channel) {
            tags.remove(&consumer.tag);
            if tags.is_empty() {
                self.by_channel.remove(&consumer.channel);
            }
        }
        if consumer.exclusive {
            self.exclusive -= 1;
        }
        if consumer.in_rotation {
            let key = Reverse(consumer.priority);
            if let Some(group) = self.rotation.get_mut(&key) {
                group.retain(|&c| c != id);
                if group.is_empty() {
                    self.rotation.remove(&key);
                }
            }
        }
        let mut successor = None;
        if self.active == Some(id) {
            self.active = self.by_id.keys().next().copied();
            if let Some(next) = self.active {
                self.enter_rotation(next);
                successor = Some(next);
            }
        }
        Some((consumer, successor))
    }

    /// Takes the next consumer to deliver to out of the rotation. The caller
    /// delivers, then calls [`delivered`](Self::delivered).
    pub fn pick(&mut self) -> Option<ConsumerId> {
        let mut group = self.rotation.first_entry()?;
        let id = group.get_mut().pop_front();
        if group.get().is_empty() {
            group.remove();
        }
        let id = id?;
        if let Some(c) = self.by_id.get_mut(&id) {
            c.in_rotation = false;
        }
        Some(id)
    }

    /// After a delivery of a body of `size` bytes to a picked consumer: back to
    /// the rotation if it has credit.
    pub fn delivered(&mut self, id: ConsumerId, size: u64) {
        if let Some(w) = self.windows.get_mut(&id) {
            let size = u32::try_from(size).unwrap_or(u32::MAX);
            w.in_flight.push_back(size);
            w.bytes += u64::from(size);
        }
        self.enter_rotation(id);
    }

    /// The next consumer registered as `tag` on `channel` gets a write window: it is
    /// sent at most `limit` deliveries its channel has not reported written
    /// ([`written`](Self::written)). For consumers that nothing else holds back
    /// (no-ack, or no prefetch): without it a client that reads slowly has the
    /// whole queue sent to its connection. Set before the consumer is registered, so
    /// that what it is sent at once counts too.
    pub fn window_next(&mut self, channel: ChannelId, tag: ConsumerTag, limit: u32) {
        if limit > 0 {
            self.next_windows.insert((channel, tag), limit);
        }
    }

    /// A consumer was refused: a window set for it goes.
    pub fn forget_window(&mut self, channel: ChannelId, tag: &ConsumerTag) {
        self.next_windows.remove(&(channel, tag.clone()));
    }

    /// The consumer's channel wrote `count` of its deliveries towards the client:
    /// the window opens by as many.
    pub fn written(&mut self, id: ConsumerId, count: u32) {
        if let Some(w) = self.windows.get_mut(&id) {
            let count = (count as usize).min(w.in_flight.len());
            for size in w.in_flight.drain(..count) {
                w.bytes -= u64::from(size);
            }
            self.enter_rotation(id);
        }
    }

    /// Whether the consumer's write window (if it has one) has room: fewer
    /// deliveries in flight than its limit, and fewer bytes than
    /// [`WRITE_WINDOW_BYTES`], or nothing in flight at all.
    fn window_open(&self, id: ConsumerId) -> bool {
        self.windows.get(&id).is_none_or(|w| {
            w.in_flight.is_empty()
                || (w.in_flight.len() < w.limit as usize && w.bytes < WRITE_WINDOW_BYTES)
        })
    }

    /// A message delivered to the consumer is now unacked.
    pub fn charge(&mut self, id: ConsumerId) {
        if let Some(c) = self.by_id.get_mut(&id) {
            c.unacked = c.unacked.saturating_add(1);
        }
    }

    /// A message of the consumer was settled or returned: frees its credit.
    pub fn release(&mut self, id: ConsumerId) {
        if let Some(c) = self.by_id.get_mut(&id) {
            c.unacked = c.unacked.saturating_sub(1);
            self.enter_rotation(id);
        }
    }

    fn eligible(&self, id: ConsumerId) -> bool {
        !self.single_active || self.active == Some(id)
    }

    fn enter_rotation(&mut self, id: ConsumerId) {
        let eligible = self.eligible(id) && self.window_open(id);
        let Some(c) = self.by_id.get_mut(&id) else {
            return;
        };
        if c.in_rotation || !eligible || !c.has_credit() {
            return;
        }
        c.in_rotation = true;
        self.rotation
            .entry(Reverse(c.priority))
            .or_default()
            .push_back(id);
    }

    /// Checks the rotation against its definition (tests).
    #[cfg(test)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (Reverse(p), group) in &self.rotation {
            if group.is_empty() {
                return Err("empty rotation group".into());
            }
            for &id in group {
                let c = self.by_id.get(&id).ok_or("removed consumer in rotation")?;
                if c.priority != *p || !seen.insert(id) || !c.in_rotation {
                    return Err(format!("consumer {id} misplaced in rotation"));
                }
            }
        }
        for (&id, c) in &self.by_id {
            let should = self.eligible(id) && c.has_credit() && self.window_open(id);
            if should != seen.contains(&id) {
                return Err(format!(
                    "consumer {id}: in rotation {} but should be {should}",
                    !should
                ));
            }
            if c.prefetch > 0 && c.unacked > c.prefetch {
                return Err(format!("consumer {id} exceeds its prefetch"));
            }
        }
        if self.single_active && self.active != self.by_id.keys().next().copied() {
            return Err("the active consumer is not the oldest".into());
        }
        Ok(())
    }

    /// Consumers' unacked counts (tests).
    #[cfg(test)]
    pub fn unacked_counts(&self) -> BTreeMap<ConsumerId, u32> {
        self.by_id.iter().map(|(&id, c)| (id, c.unacked)).collect()
    }
}
