//! One vhost's exchanges, bindings and queue names, as an immutable snapshot.
//!
//! Publishers route against a snapshot without locks or mailbox hops (DESIGN §3). A
//! change (declare, delete, bind, unbind, a queue appearing or going) never touches a
//! snapshot: it returns a [`Change`] holding the next one, which the single writer
//! swaps in (see [`super::snapshot::SharedTopology`]). Snapshots share everything
//! that did not change: the exchange map holds `Arc`ed entries, each with an `Arc`ed
//! router, so a binding change clones the map of pointers and one router, and a queue
//! declaration clones only the set of queue names.
//!
//! Routing follows RabbitMQ's `rabbit_exchange:route/3`:
//! - The default exchange routes to the queue named by the routing key, if it exists.
//! - Each exchange reached routes with its own bindings; exchange destinations are
//!   followed, each exchange at most once per message (so cycles end), and queue
//!   destinations are collected.
//! - An exchange whose bindings matched nothing at all (no queue and no exchange)
//!   passes the message to its alternate exchange, if that exists; the alternate is
//!   just one more exchange to visit, so alternate-exchange cycles end the same way.
//!   An exchange that matched only an exchange which in turn routed nowhere does *not*
//!   use its alternate (that downstream exchange's own alternate applies).
//! - The result is the set of queues, deduplicated and sorted by name, so it does not
//!   depend on the order bindings were made in.
//!
//! Mutations follow RabbitMQ's checks and their order; each documents its errors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::binding::{Binding, Destination};
use super::definition::{predeclared_exchanges, ExchangeDef, DEFAULT_EXCHANGE, RESERVED_PREFIX};
use super::error::{RouteError, TopologyError};
use super::kind::ExchangeKind;
use super::router::Router;
use crate::message::FieldTable;

/// An exchange in a snapshot: its declaration and its routing table.
#[derive(Clone, Debug)]
pub struct ExchangeEntry {
    def: ExchangeDef,
    router: Arc<Router>,
}

impl ExchangeEntry {
    /// The exchange's declaration.
    pub fn def(&self) -> &ExchangeDef {
        &self.def
    }

    /// The exchange's bindings (as source), indexed for routing.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }
}

/// The queues a message reaches: each once, sorted by name; and the delayed exchanges
/// that hold it until its delay is over (see [`super::delay`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteResult {
    queues: Vec<Arc<str>>,
    delayed: Vec<Arc<str>>,
    delay: u64,
}

impl RouteResult {
    /// The `x-delayed-message` exchanges the message reached with a positive
    /// `x-delay`: each holds it for [`RouteResult::delay`] ms, then routes it on.
    pub fn delayed(&self) -> &[Arc<str>] {
        &self.delayed
    }

    /// The message's delay in milliseconds, when [`RouteResult::delayed`] is not empty.
    pub fn delay(&self) -> u64 {
        self.delay
    }

    /// The queues, sorted by name.
    pub fn queues(&self) -> &[Arc<str>] {
        &self.queues
    }

    /// The queues, sorted by name, owned.
    pub fn into_queues(self) -> Vec<Arc<str>> {
        self.queues
    }

    /// Routes to `queue` alone (a direct reply, whose address is not in the topology).
    pub fn only(&mut self, queue: Arc<str>) {
        self.queues.clear();
        self.delayed.clear();
        self.queues.push(queue);
    }

    /// How many queues the message reaches.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// No queue and no delayed exchange: the message is unroutable (returned if
    /// `mandatory`).
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.delayed.is_empty()
    }

    /// Whether the message reaches `queue`.
    pub fn contains(&self, queue: &str) -> bool {
        self.queues
            .binary_search_by(|q| q.as_ref().cmp(queue))
            .is_ok()
    }

    /// The queues, sorted by name.
    pub fn iter(&self) -> std::slice::Iter<'_, Arc<str>> {
        self.queues.iter()
    }
}

impl IntoIterator for RouteResult {
    type Item = Arc<str>;
    type IntoIter = std::vec::IntoIter<Arc<str>>;

    fn into_iter(self) -> Self::IntoIter {
        self.queues.into_iter()
    }
}

impl<'a> IntoIterator for &'a RouteResult {
    type Item = &'a Arc<str>;
    type IntoIter = std::slice::Iter<'a, Arc<str>>;

    fn into_iter(self) -> Self::IntoIter {
        self.queues.iter()
    }
}

/// What a mutation did. The caller stores `topology` (when there is one) as the
/// current snapshot and persists the rest (durable definitions, say).
#[derive(Debug)]
#[must_use = "a Change holds the next snapshot; dropping it loses the mutation"]
pub struct Change {
    /// The next snapshot, or `None` when nothing changed (an equivalent redeclaration,
    /// a binding that already exists, unbinding one that does not, ...): keep the
    /// current one.
    pub topology: Option<Topology>,
    /// The exchange this mutation created.
    pub declared_exchange: Option<ExchangeDef>,
    /// Exchanges deleted: the one asked for and, after it, auto-delete exchanges that
    /// lost their last binding as a result.
    pub deleted_exchanges: Vec<ExchangeDef>,
    /// Bindings this mutation created (`bind` of a new binding adds one).
    pub added_bindings: Vec<Binding>,
    /// Bindings removed, including those that went with a deleted queue or exchange.
    pub removed_bindings: Vec<Binding>,
}

impl Change {
    fn unchanged() -> Self {
        Change {
            topology: None,
            declared_exchange: None,
            deleted_exchanges: Vec::new(),
            added_bindings: Vec::new(),
            removed_bindings: Vec::new(),
        }
    }

    /// Whether the mutation changed nothing.
    pub fn is_unchanged(&self) -> bool {
        self.topology.is_none()
    }
}

/// A topology rebuilt from stored definitions, and the bindings it could not take.
#[derive(Debug)]
pub struct Restored {
    /// The vhost as rebuilt, without the refused bindings.
    pub topology: Topology,
    /// Stored bindings refused, with why (their source or destination is gone, say).
    pub rejected: Vec<(Binding, TopologyError)>,
}

/// One vhost's exchanges (with their bindings) and the names of its queues.
#[derive(Clone, Debug)]
pub struct Topology {
    vhost: Arc<str>,
    exchanges: Arc<HashMap<String, Arc<ExchangeEntry>>>,
    /// The queues' names, as a persistent map: a snapshot with one more queue shares
    /// all but a few nodes with the one before (copying a set of 100 000 names per
    /// declaration made declaring slower the more queues there were).
    queues: imbl::HashMap<Arc<str>, ()>,
}

impl Topology {
    /// A new vhost: the predeclared exchanges, no queues, no bindings.
    pub fn new(vhost: &str) -> Self {
        let exchanges = predeclared_exchanges()
            .into_iter()
            .map(|def| {
                let router = Arc::new(Router::new(def.routing_kind()));
                (def.name.clone(), Arc::new(ExchangeEntry { def, router }))
            })
            .collect();
        Topology {
            vhost: vhost.into(),
            exchanges: Arc::new(exchanges),
            queues: imbl::HashMap::new(),
        }
    }

    /// Rebuilds a vhost from stored definitions in one pass (binding one by one would
    /// copy the exchange map per binding). The predeclared exchanges are always there;
    /// stored copies of them and stored exchanges named `""` are ignored. Names are not
    /// checked against the reserved prefix: they were accepted when declared. Bindings
    /// are checked as [`Topology::bind`] checks them; refused ones are returned.
    pub fn restore(
        vhost: &str,
        exchanges: impl IntoIterator<Item = ExchangeDef>,
        queues: impl IntoIterator<Item = String>,
        bindings: impl IntoIterator<Item = Binding>,
    ) -> Restored {
        let mut topology = Topology::new(vhost);
        let mut routers: HashMap<String, Router> = HashMap::new();
        {
            let map = Arc::make_mut(&mut topology.exchanges);
            for def in exchanges {
                if !def.is_default() && !map.contains_key(&def.name) {
                    let router = Arc::new(Router::new(def.routing_kind()));
                    map.insert(def.name.clone(), Arc::new(ExchangeEntry { def, router }));
                }
            }
            for (name, entry) in map.iter() {
                routers.insert(name.clone(), Router::new(entry.def.routing_kind()));
            }
        }
        topology
            .queues
            .extend(queues.into_iter().map(|q| (Arc::from(q), ())));
        let mut rejected = Vec::new();
        for b in bindings {
            if let Err(e) = topology.check_bind(&b) {
                rejected.push((b, e));
                continue;
            }
            // check_bind found the source, and every exchange has a router.
            if let Some(router) = routers.get_mut(&b.source) {
                if let Err(e) = router.insert(b.clone()) {
                    rejected.push((b, e.into()));
                }
            }
        }
        let map = Arc::make_mut(&mut topology.exchanges);
        for (name, router) in routers {
            if let Some(entry) = map.get_mut(&name) {
                *entry = Arc::new(ExchangeEntry {
                    def: entry.def.clone(),
                    router: Arc::new(router),
                });
            }
        }
        Restored { topology, rejected }
    }

    /// The name of the vhost it describes.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    // ----- reading -------------------------------------------------------------

    /// The declaration of exchange `name`, the predeclared ones included.
    pub fn exchange(&self, name: &str) -> Option<&ExchangeDef> {
        self.exchanges.get(name).map(|e| &e.def)
    }

    /// An exchange with its router (for an exchange actor that publishes its own).
    pub fn entry(&self, name: &str) -> Option<&Arc<ExchangeEntry>> {
        self.exchanges.get(name)
    }

    /// Every exchange, sorted by name (the default exchange first).
    pub fn exchanges(&self) -> Vec<&ExchangeDef> {
        let mut defs: Vec<&ExchangeDef> = self.exchanges.values().map(|e| &e.def).collect();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        defs
    }

    /// Whether the vhost has a queue named `name`.
    pub fn has_queue(&self, name: &str) -> bool {
        self.queues.contains_key(name)
    }

    /// Every queue name, sorted.
    pub fn queue_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.queues.keys().map(|q| q.as_ref()).collect();
        names.sort_unstable();
        names
    }

    /// Every binding, as RabbitMQ lists them: first the default exchange's implicit
    /// binding to each queue (key = queue name), then the declared ones, sorted.
    pub fn bindings(&self) -> Vec<Binding> {
        let mut implicit: Vec<Binding> = self
            .queue_names()
            .into_iter()
            .map(|q| Binding::queue(DEFAULT_EXCHANGE, q, q))
            .collect();
        let mut explicit: Vec<Binding> = self
            .exchanges
            .values()
            .flat_map(|e| e.router.bindings().cloned())
            .collect();
        explicit.sort();
        implicit.append(&mut explicit);
        implicit
    }

    /// The bindings with `source` as their source, sorted (the implicit ones for the
    /// default exchange).
    pub fn bindings_from(&self, source: &str) -> Vec<Binding> {
        if source == DEFAULT_EXCHANGE {
            return self
                .queue_names()
                .into_iter()
                .map(|q| Binding::queue(DEFAULT_EXCHANGE, q, q))
                .collect();
        }
        let mut found: Vec<Binding> = match self.exchanges.get(source) {
            Some(e) => e.router.bindings().cloned().collect(),
            None => Vec::new(),
        };
        found.sort();
        found
    }

    /// The bindings leading to `destination`, sorted (a queue's implicit one first).
    pub fn bindings_to(&self, destination: &Destination) -> Vec<Binding> {
        let mut found: Vec<Binding> = self
            .exchanges
            .values()
            .filter(|e| e.router.has_destination(destination))
            .flat_map(|e| {
                e.router
                    .bindings()
                    .filter(|b| b.destination == *destination)
                    .cloned()
            })
            .collect();
        found.sort();
        if let Destination::Queue(q) = destination {
            if self.has_queue(q) {
                found.insert(0, Binding::queue(DEFAULT_EXCHANGE, q.as_str(), q.as_str()));
            }
        }
        found
    }

    // ----- routing -------------------------------------------------------------

    /// The queues a message published to `exchange` with `routing_key` and `headers`
    /// reaches (see the module documentation). Does not refuse internal exchanges:
    /// dead-lettering and alternate exchanges may use those; publishers go through
    /// [`Topology::route_publish`].
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Result<RouteResult, RouteError> {
        let mut result = RouteResult::default();
        self.route_into(exchange, routing_key, headers, &mut result)?;
        Ok(result)
    }

    /// [`Topology::route`] into a caller's buffer, so that a publisher routing many
    /// messages allocates for its results once. `result` is overwritten.
    pub fn route_into(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        result: &mut RouteResult,
    ) -> Result<(), RouteError> {
        let entry = self.lookup(exchange)?;
        self.route_entry(entry, routing_key, headers, result);
        Ok(())
    }

    /// What a client's publish does: like [`Topology::route`], but an internal exchange
    /// refuses it (403), as RabbitMQ's `basic.publish` does.
    pub fn route_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        result: &mut RouteResult,
    ) -> Result<(), RouteError> {
        let entry = self.lookup(exchange)?;
        if entry.def.internal {
            return Err(RouteError::InternalExchange {
                name: exchange.to_owned(),
                vhost: self.vhost.to_string(),
            });
        }
        self.route_entry(entry, routing_key, headers, result);
        Ok(())
    }

    fn lookup(&self, exchange: &str) -> Result<&ExchangeEntry, RouteError> {
        self.exchanges
            .get(exchange)
            .map(|e| &**e)
            .ok_or_else(|| RouteError::ExchangeNotFound {
                name: exchange.to_owned(),
                vhost: self.vhost.to_string(),
            })
    }

    fn route_entry<'a>(
        &'a self,
        start: &'a ExchangeEntry,
        routing_key: &str,
        headers: Option<&FieldTable>,
        result: &mut RouteResult,
    ) {
        let RouteResult {
            queues: out,
            delayed,
            delay,
        } = result;
        out.clear();
        delayed.clear();
        // A delayed exchange holds a message with a positive `x-delay` instead of
        // routing it; read once, when the first delayed exchange is reached.
        let mut wait: Option<Option<u64>> = None;
        // Exchanges still to route through, and every exchange ever queued (the start
        // one aside): each exchange routes at most once, which is what ends cycles.
        // Neither allocates unless an exchange destination or alternate is followed.
        let mut pending: Vec<&'a ExchangeEntry> = Vec::new();
        let mut seen: HashSet<&'a str> = HashSet::new();
        let mut follow = |name: &str, pending: &mut Vec<&'a ExchangeEntry>| {
            if name == start.def.name {
                return;
            }
            if let Some((key, entry)) = self.exchanges.get_key_value(name) {
                if seen.insert(key.as_str()) {
                    pending.push(entry);
                }
            }
        };
        let mut current = Some(start);
        while let Some(x) = current {
            let mut matched = false;
            let holds = x.def.kind == ExchangeKind::DelayedMessage
                && wait
                    .get_or_insert_with(|| super::delay::delay_of(headers))
                    .is_some();
            if holds {
                // Held: counts as routed, so its alternate exchange is not used.
                matched = true;
                *delay = wait.flatten().unwrap_or_default();
                if let Some((name, _)) = self.exchanges.get_key_value(x.def.name.as_str()) {
                    delayed.push(Arc::from(name.as_str()));
                }
            } else if x.def.is_default() {
                if let Some((q, ())) = self.queues.get_key_value(routing_key) {
                    matched = true;
                    out.push(q.clone());
                }
            } else {
                x.router.for_each_match(routing_key, headers, |d| {
                    matched = true;
                    match d {
                        Destination::Queue(q) => {
                            // Bindings to deleted queues are removed with them; a
                            // missing queue is skipped all the same.
                            if let Some((q, ())) = self.queues.get_key_value(q.as_str()) {
                                out.push(q.clone());
                            }
                        }
                        Destination::Exchange(e) => follow(e, &mut pending),
                    }
                });
            }
            if !matched {
                if let Some(ae) = x.def.alternate_exchange() {
                    follow(ae, &mut pending);
                }
            }
            current = pending.pop();
        }
        out.sort_unstable();
        out.dedup();
        delayed.sort_unstable();
        delayed.dedup();
    }

    // ----- mutations -----------------------------------------------------------

    /// Declares an exchange, or checks a redeclaration.
    ///
    /// Errors, in RabbitMQ's order: the default exchange `""` (403); an existing
    /// exchange the declaration is not equivalent to (406, see
    /// [`ExchangeDef::check_equivalent`]); creating a name under `amq.` (403; an
    /// equivalent redeclaration of an existing `amq.*` exchange is fine); an
    /// `alternate-exchange` argument that is not a string (406). The alternate exchange
    /// need not exist.
    pub fn declare_exchange(&self, def: ExchangeDef) -> Result<Change, TopologyError> {
        if def.is_default() {
            return Err(TopologyError::DefaultExchange);
        }
        if let Some(existing) = self.exchanges.get(&def.name) {
            existing
                .def
                .check_equivalent(&def)
                .map_err(|detail| TopologyError::Inequivalent {
                    vhost: self.vhost.to_string(),
                    detail,
                })?;
            return Ok(Change::unchanged());
        }
        if def.name.starts_with(RESERVED_PREFIX) {
            return Err(TopologyError::ReservedName { name: def.name });
        }
        if let Err((arg, type_name)) = def.check_arguments() {
            return Err(TopologyError::InvalidArgType {
                exchange: def.name,
                vhost: self.vhost.to_string(),
                arg: arg.to_owned(),
                type_name,
            });
        }
        if def.kind == ExchangeKind::DelayedMessage && super::delay::delayed_type(&def).is_none() {
            return Err(TopologyError::InvalidDelayedType);
        }
        let mut draft = Draft::new(self);
        let router = Arc::new(Router::new(def.routing_kind()));
        draft.exchanges().insert(
            def.name.clone(),
            Arc::new(ExchangeEntry {
                def: def.clone(),
                router,
            }),
        );
        draft.change.declared_exchange = Some(def);
        Ok(draft.finish())
    }

    /// Deletes an exchange with its bindings as source and as destination; exchanges
    /// that are auto-delete and lose their last binding that way go too.
    ///
    /// Errors: the default exchange (403); any `amq.*` name (403, checked before
    /// existence, as RabbitMQ does); `if_unused` while the exchange is the source of
    /// bindings (406). Deleting an exchange that does not exist succeeds and changes
    /// nothing.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<Change, TopologyError> {
        if name == DEFAULT_EXCHANGE {
            return Err(TopologyError::DefaultExchange);
        }
        if name.starts_with(RESERVED_PREFIX) {
            return Err(TopologyError::SystemExchange {
                name: name.to_owned(),
                vhost: self.vhost.to_string(),
            });
        }
        let Some(entry) = self.exchanges.get(name) else {
            return Ok(Change::unchanged());
        };
        if if_unused && !entry.router.is_empty() {
            return Err(TopologyError::InUse {
                name: name.to_owned(),
                vhost: self.vhost.to_string(),
            });
        }
        let mut draft = Draft::new(self);
        let mut candidates = Vec::new();
        draft.delete_exchange(name, &mut candidates);
        draft.auto_delete(candidates);
        Ok(draft.finish())
    }

    /// Records that queue `name` exists (so the default exchange and bindings can
    /// reach it). Declaring a known queue changes nothing.
    pub fn declare_queue_name(&self, name: &str) -> Change {
        if self.has_queue(name) {
            return Change::unchanged();
        }
        let mut draft = Draft::new(self);
        draft.queues().insert(Arc::from(name), ());
        draft.finish()
    }

    /// Forgets queue `name` and removes every binding to it; auto-delete exchanges
    /// left without bindings are deleted. Removing an unknown queue changes nothing.
    pub fn remove_queue(&self, name: &str) -> Change {
        if !self.has_queue(name) {
            return Change::unchanged();
        }
        let mut draft = Draft::new(self);
        draft.queues().remove(name);
        let mut candidates = Vec::new();
        draft.remove_bindings_to(&Destination::Queue(name.to_owned()), &mut candidates);
        draft.auto_delete(candidates);
        draft.finish()
    }

    /// Adds a binding; an identical existing binding (same source, destination, key
    /// and arguments) makes this a no-op.
    ///
    /// Errors, in RabbitMQ's order: source or destination is the default exchange
    /// (403); the source exchange does not exist (404), then the destination (404);
    /// the source's type refuses the binding (406: a headers binding with an invalid
    /// `x-match`, or a key longer than 255 bytes).
    pub fn bind(&self, binding: Binding) -> Result<Change, TopologyError> {
        self.check_bind(&binding)?;
        let Some(entry) = self.exchanges.get(&binding.source) else {
            // check_bind found it; a snapshot does not change underneath.
            return Ok(Change::unchanged());
        };
        if entry.router.contains(&binding) {
            return Ok(Change::unchanged());
        }
        let mut router = (*entry.router).clone();
        router.insert(binding.clone())?;
        let mut draft = Draft::new(self);
        draft.set_router(&binding.source, router);
        draft.change.added_bindings.push(binding);
        Ok(draft.finish())
    }

    /// The checks of [`Topology::bind`], without binding.
    pub fn check_bind(&self, binding: &Binding) -> Result<(), TopologyError> {
        check_not_default(binding)?;
        let Some(source) = self.exchanges.get(&binding.source) else {
            return Err(TopologyError::ExchangeNotFound {
                name: binding.source.clone(),
                vhost: self.vhost.to_string(),
            });
        };
        match &binding.destination {
            Destination::Queue(q) if !self.has_queue(q) => {
                return Err(TopologyError::QueueNotFound {
                    name: q.clone(),
                    vhost: self.vhost.to_string(),
                })
            }
            Destination::Exchange(e) if !self.exchanges.contains_key(e) => {
                return Err(TopologyError::ExchangeNotFound {
                    name: e.clone(),
                    vhost: self.vhost.to_string(),
                })
            }
            _ => {}
        }
        Router::check(source.def.routing_kind(), binding)?;
        Ok(())
    }

    /// Removes a binding. If the source is auto-delete and this was its last binding,
    /// it is deleted too.
    ///
    /// Errors: source or destination is the default exchange (403). As in RabbitMQ
    /// 3.10, unbinding succeeds without change when the binding, its source or its
    /// destination does not exist.
    pub fn unbind(&self, binding: &Binding) -> Result<Change, TopologyError> {
        check_not_default(binding)?;
        let Some(entry) = self.exchanges.get(&binding.source) else {
            return Ok(Change::unchanged());
        };
        if !entry.router.contains(binding) {
            return Ok(Change::unchanged());
        }
        let mut router = (*entry.router).clone();
        router.remove(binding);
        let mut draft = Draft::new(self);
        draft.set_router(&binding.source, router);
        draft.change.removed_bindings.push(binding.clone());
        draft.auto_delete(vec![binding.source.clone()]);
        Ok(draft.finish())
    }
}

/// RabbitMQ's `check_not_default_exchange` on both ends of a binding.
fn check_not_default(binding: &Binding) -> Result<(), TopologyError> {
    let dest_is_default =
        matches!(&binding.destination, Destination::Exchange(e) if e == DEFAULT_EXCHANGE);
    if binding.source == DEFAULT_EXCHANGE || dest_is_default {
        return Err(TopologyError::DefaultExchange);
    }
    Ok(())
}

/// A topology being changed, and the record of what changed.
struct Draft {
    topology: Topology,
    change: Change,
    dirty: bool,
}

impl Draft {
    fn new(from: &Topology) -> Self {
        Draft {
            topology: from.clone(),
            change: Change::unchanged(),
            dirty: false,
        }
    }

    /// The exchange map, copied on first write (the old snapshot keeps its own).
    fn exchanges(&mut self) -> &mut HashMap<String, Arc<ExchangeEntry>> {
        self.dirty = true;
        Arc::make_mut(&mut self.topology.exchanges)
    }

    fn queues(&mut self) -> &mut imbl::HashMap<Arc<str>, ()> {
        self.dirty = true;
        &mut self.topology.queues
    }

    fn set_router(&mut self, name: &str, router: Router) {
        if let Some(entry) = self.exchanges().get_mut(name) {
            *entry = Arc::new(ExchangeEntry {
                def: entry.def.clone(),
                router: Arc::new(router),
            });
        }
    }

    /// Removes every binding to `dest`; their sources become auto-delete candidates.
    fn remove_bindings_to(&mut self, dest: &Destination, candidates: &mut Vec<String>) {
        let mut sources: Vec<String> = self
            .topology
            .exchanges
            .values()
            .filter(|e| e.router.has_destination(dest))
            .map(|e| e.def.name.clone())
            .collect();
        // Sorted so that the change record does not depend on hash order.
        sources.sort_unstable();
        for source in sources {
            let Some(entry) = self.topology.exchanges.get(&source) else {
                continue;
            };
            let mut router = (*entry.router).clone();
            let mut removed = router.remove_destination(dest);
            removed.sort();
            self.set_router(&source, router);
            self.change.removed_bindings.append(&mut removed);
            candidates.push(source);
        }
    }

    /// Deletes exchange `name` and its bindings both ways.
    fn delete_exchange(&mut self, name: &str, candidates: &mut Vec<String>) {
        let Some(entry) = self.exchanges().remove(name) else {
            return;
        };
        let mut own: Vec<Binding> = entry.router.bindings().cloned().collect();
        own.sort();
        self.change.removed_bindings.append(&mut own);
        self.remove_bindings_to(&Destination::Exchange(name.to_owned()), candidates);
        self.change.deleted_exchanges.push(entry.def.clone());
    }

    /// Deletes each candidate that is auto-delete and has no binding left as a source,
    /// and whatever that in turn leaves bindingless. A worklist rather than recursion:
    /// a long chain of auto-delete exchanges must not exhaust the stack.
    fn auto_delete(&mut self, mut candidates: Vec<String>) {
        while let Some(name) = candidates.pop() {
            let doomed = self
                .topology
                .exchanges
                .get(&name)
                .is_some_and(|e| e.def.auto_delete && e.router.is_empty());
            if doomed {
                self.delete_exchange(&name, &mut candidates);
            }
        }
    }

    fn finish(mut self) -> Change {
        if self.dirty {
            self.change.topology = Some(self.topology);
        }
        self.change
    }
}
