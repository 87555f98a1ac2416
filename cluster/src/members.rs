//! The member list as one node sees it: a pure state machine, no actors, no I/O.
//!
//! Every member is known by its name (a restarted node keeps its name, so it keeps its
//! place), its cluster address and its role. What this node has heard from each one
//! decides its health:
//!
//! - **up**: a hello arrived within [`Timing::suspect_after`];
//! - **suspect**: silent for longer than that, but its session is still open (a hung
//!   or partitioned node looks like this: ractor_cluster never times a peer out);
//! - **down**: silent for [`Timing::down_after`], or its session closed.
//!
//! The table also says whom to dial and when: every member that is not up, and every
//! seed address no up member answers on, each with its own exponential backoff, so a
//! cluster whose nodes restart in any order finds itself again.
//!
//! The clock is passed in (`now`), so the tests drive time by hand.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a node keeps of the cluster's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Keeps the metadata in its redb and votes in the metadata log.
    Disk,
    /// Keeps the metadata in memory only and takes it from a disk node when it starts.
    Ram,
}

impl Role {
    /// `disk` or `ram`, as `warren cluster status` shows it and `--role` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Disk => "disk",
            Role::Ram => "ram",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s.to_ascii_lowercase().as_str() {
            "disk" => Ok(Role::Disk),
            "ram" => Ok(Role::Ram),
            _ => Err(format!("role '{s}' is not valid: give 'disk' or 'ram'")),
        }
    }
}

/// How a member is doing, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// A hello arrived within [`Timing::suspect_after`].
    Up,
    /// Silent for longer than that, but its session is still open.
    Suspect,
    /// Silent for [`Timing::down_after`], its session closed, or never heard from.
    Down,
}

impl Health {
    /// `up`, `suspect` or `down`, as `warren cluster status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Suspect => "suspect",
            Health::Down => "down",
        }
    }
}

/// A member as nodes tell each other about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddress {
    /// The node's name, which it keeps across restarts.
    pub name: String,
    /// Its cluster address (`IP:PORT`).
    pub address: String,
    /// Whether it keeps the metadata on disk or in memory.
    pub role: Role,
}

/// One member in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name, address and role, as last heard.
    pub id: MemberAddress,
    /// How it is doing, as this node sees it.
    pub health: Health,
    /// Whether a session to it is open (a hello arrived since the last one closed).
    pub connected: bool,
    last_heard: Option<Instant>,
}

/// Heartbeat timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How often a node says hello to every member.
    pub heartbeat: Duration,
    /// Silence after which a member is suspect.
    pub suspect_after: Duration,
    /// Silence after which a member is down.
    pub down_after: Duration,
    /// First wait before redialling; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest wait between two dials of one address.
    pub max_backoff: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(500),
            suspect_after: Duration::from_millis(2_000),
            down_after: Duration::from_millis(5_000),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// A change of a member's health, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The member's name.
    pub name: String,
    /// Its health before; `None` the first time this node hears from it.
    pub from: Option<Health>,
    /// Its health now.
    pub to: Health,
}

/// When to dial an address next.
#[derive(Clone, Debug)]
struct Backoff {
    next: Instant,
    wait: Duration,
}

/// The member list of one node.
#[derive(Debug)]
pub struct MemberTable {
    me: MemberAddress,
    timing: Timing,
    seeds: Vec<String>,
    members: BTreeMap<String, Member>,
    dials: BTreeMap<String, Backoff>,
    /// Members removed by a leave or a forget: second-hand news of them is ignored
    /// (a peer that has not heard of the removal yet still lists them).
    removed: std::collections::BTreeSet<String>,
}

impl MemberTable {
    /// The table of node `me`, knowing no member yet; `seeds` are addresses to dial
    /// while no live member answers on them (`me`'s own address is dropped).
    pub fn new(me: MemberAddress, seeds: Vec<String>, timing: Timing) -> MemberTable {
        let seeds = seeds.into_iter().filter(|s| *s != me.address).collect();
        MemberTable {
            me,
            timing,
            seeds,
            members: BTreeMap::new(),
            dials: BTreeMap::new(),
            removed: Default::default(),
        }
    }

    /// This node's own entry.
    pub fn me(&self) -> &MemberAddress {
        &self.me
    }

    /// The other members, by name.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The member called `name` (never this node).
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.get(name)
    }

    /// Everyone this node knows, itself included, for a hello.
    pub fn known(&self) -> Vec<MemberAddress> {
        std::iter::once(self.me.clone())
            .chain(self.members.values().map(|m| m.id.clone()))
            .collect()
    }

    /// A hello from `from`, with the members it knows.
    pub fn heard(
        &mut self,
        from: MemberAddress,
        known: &[MemberAddress],
        now: Instant,
    ) -> Vec<Transition> {
        let mut changes = Vec::new();
        if from.name == self.me.name {
            return changes;
        }
        self.dials.remove(&from.address);
        // A removed member that says hello itself has come back.
        self.removed.remove(&from.name);
        let member = self
            .members
            .entry(from.name.clone())
            .or_insert_with(|| Member {
                id: from.clone(),
                health: Health::Down,
                connected: false,
                last_heard: None,
            });
        let was = member.last_heard.map(|_| member.health);
        member.id = from;
        member.connected = true;
        member.last_heard = Some(now);
        if was != Some(Health::Up) {
            member.health = Health::Up;
            changes.push(Transition {
                name: member.id.name.clone(),
                from: was,
                to: Health::Up,
            });
        }
        for other in known {
            if other.name != self.me.name
                && !self.members.contains_key(&other.name)
                && !self.removed.contains(&other.name)
            {
                self.members.insert(
                    other.name.clone(),
                    Member {
                        id: other.clone(),
                        health: Health::Down,
                        connected: false,
                        last_heard: None,
                    },
                );
                // A member learned second hand is dialled at once.
                self.dials.remove(&other.address);
            }
        }
        changes
    }

    /// The last session to member `name` closed: it is down.
    pub fn session_closed(&mut self, name: &str, now: Instant) -> Vec<Transition> {
        let mut changes = Vec::new();
        if let Some(m) = self.members.get_mut(name) {
            if m.connected {
                m.connected = false;
                if m.health != Health::Down {
                    changes.push(Transition {
                        name: m.id.name.clone(),
                        from: Some(m.health),
                        to: Health::Down,
                    });
                    m.health = Health::Down;
                }
                // Redial soon, not at once: the peer is probably restarting.
                self.dials.insert(
                    m.id.address.clone(),
                    Backoff {
                        next: now + self.timing.min_backoff,
                        wait: self.timing.min_backoff,
                    },
                );
            }
        }
        changes
    }

    /// Health by silence; returns what changed.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let mut changes = Vec::new();
        for m in self.members.values_mut() {
            let Some(heard) = m.last_heard else { continue };
            let silent = now.saturating_duration_since(heard);
            let health = if !m.connected || silent >= self.timing.down_after {
                Health::Down
            } else if silent >= self.timing.suspect_after {
                Health::Suspect
            } else {
                Health::Up
            };
            if health != m.health {
                changes.push(Transition {
                    name: m.id.name.clone(),
                    from: Some(m.health),
                    to: health,
                });
                m.health = health;
            }
        }
        changes
    }

    /// Members that went silent for `down_after` while their session stayed open:
    /// the caller closes those sessions, so that a redial can start afresh.
    pub fn stale_sessions(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.health == Health::Down && m.connected)
            .map(|m| m.id.name.clone())
            .collect()
    }

    /// The addresses to dial now (members not up, and seeds no up member answers
    /// on); each one's next attempt moves back by its backoff.
    pub fn due_dials(&mut self, now: Instant) -> Vec<String> {
        let up: Vec<&str> = self
            .members
            .values()
            .filter(|m| m.health != Health::Down)
            .map(|m| m.id.address.as_str())
            .collect();
        let mut wanted: Vec<String> = self
            .members
            .values()
            .filter(|m| m.health == Health::Down)
            .map(|m| m.id.address.clone())
            .chain(self.seeds.iter().cloned())
            .filter(|a| !up.contains(&a.as_str()) && *a != self.me.address)
            .collect();
        wanted.sort();
        wanted.dedup();
        let timing = self.timing;
        let mut due = Vec::new();
        for address in wanted {
            let backoff = self.dials.entry(address.clone()).or_insert(Backoff {
                next: now,
                wait: timing.min_backoff,
            });
            if backoff.next <= now {
                due.push(address);
                backoff.next = now + backoff.wait;
                backoff.wait = (backoff.wait * 2).min(timing.max_backoff);
            }
        }
        due
    }

    /// Removes a member (it left, or an operator forgot it).
    pub fn remove(&mut self, name: &str) -> Option<Member> {
        self.removed.insert(name.to_string());
        let removed = self.members.remove(name);
        if let Some(m) = &removed {
            self.dials.remove(&m.id.address);
            self.seeds.retain(|s| *s != m.id.address);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(name: &str, port: u16, role: Role) -> MemberAddress {
        MemberAddress {
            name: name.into(),
            address: format!("127.0.0.1:{port}"),
            role,
        }
    }

    fn table() -> MemberTable {
        MemberTable::new(
            addr("a", 1, Role::Disk),
            vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            Timing::default(),
        )
    }

    #[test]
    fn seeds_are_dialled_with_backoff_until_someone_answers_there() {
        let mut t = table();
        let t0 = Instant::now();
        // Our own address is never a seed.
        assert_eq!(t.due_dials(t0), vec!["127.0.0.1:2".to_string()]);
        assert!(t.due_dials(t0 + Duration::from_millis(100)).is_empty());
        assert_eq!(t.due_dials(t0 + Duration::from_millis(200)).len(), 1);
        // The second wait is twice the first.
        assert!(t.due_dials(t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(t.due_dials(t0 + Duration::from_millis(600)).len(), 1);
        // The seed answers: no more dials.
        t.heard(
            addr("b", 2, Role::Disk),
            &[],
            t0 + Duration::from_millis(700),
        );
        assert!(t.due_dials(t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn members_learned_from_a_hello_are_dialled() {
        let mut t = table();
        let t0 = Instant::now();
        let changes = t.heard(
            addr("b", 2, Role::Disk),
            &[
                addr("b", 2, Role::Disk),
                addr("c", 3, Role::Ram),
                addr("a", 1, Role::Disk),
            ],
            t0,
        );
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].to, Health::Up);
        assert_eq!(t.due_dials(t0), vec!["127.0.0.1:3".to_string()]);
        assert_eq!(t.known().len(), 3);
        assert_eq!(t.get("b").unwrap().health, Health::Up);
        assert_eq!(t.get("c").unwrap().health, Health::Down);
    }

    #[test]
    fn silence_makes_suspect_then_down_and_a_hello_brings_it_back() {
        let mut t = table();
        let t0 = Instant::now();
        t.heard(addr("b", 2, Role::Disk), &[], t0);
        assert!(t.tick(t0 + Duration::from_millis(1_000)).is_empty());
        let c = t.tick(t0 + Duration::from_millis(2_500));
        assert_eq!(c[0].to, Health::Suspect);
        let c = t.tick(t0 + Duration::from_millis(5_000));
        assert_eq!(c[0].to, Health::Down);
        // Its session is still open: the caller must close it.
        assert_eq!(t.stale_sessions(), vec!["b".to_string()]);
        let c = t.heard(addr("b", 2, Role::Disk), &[], t0 + Duration::from_secs(6));
        assert_eq!(c[0].from, Some(Health::Down));
        assert_eq!(t.get("b").unwrap().health, Health::Up);
        assert!(t.stale_sessions().is_empty());
    }

    #[test]
    fn a_closed_session_is_down_at_once_and_redialled_after_a_pause() {
        let mut t = table();
        let t0 = Instant::now();
        t.heard(addr("b", 2, Role::Disk), &[], t0);
        t.session_closed("x", t0);
        assert_eq!(t.get("b").unwrap().health, Health::Up);
        let c = t.session_closed("b", t0);
        assert_eq!(c[0].to, Health::Down);
        assert!(t.due_dials(t0).is_empty());
        assert_eq!(
            t.due_dials(t0 + Duration::from_millis(200)),
            vec!["127.0.0.1:2".to_string()]
        );
        // Backoff grows to its cap and stays there.
        let mut now = t0 + Duration::from_millis(200);
        for _ in 0..20 {
            now += Duration::from_secs(5);
            assert_eq!(t.due_dials(now).len(), 1);
        }
    }

    #[test]
    fn removed_members_are_not_dialled() {
        let mut t = table();
        let t0 = Instant::now();
        t.heard(addr("b", 2, Role::Disk), &[], t0);
        t.session_closed("b", t0);
        assert!(t.remove("b").is_some());
        assert!(t.due_dials(t0 + Duration::from_secs(10)).is_empty());
        assert!(t.get("b").is_none());
        // A peer that still lists it does not bring it back; its own hello does.
        t.heard(addr("c", 3, Role::Disk), &[addr("b", 2, Role::Disk)], t0);
        assert!(t.get("b").is_none());
        t.heard(addr("b", 2, Role::Disk), &[], t0);
        assert_eq!(t.get("b").unwrap().health, Health::Up);
    }
}
