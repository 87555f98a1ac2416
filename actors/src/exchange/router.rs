//! One exchange's routing table: its bindings, indexed for its exchange type.
//!
//! A router is a plain value. The topology shares each one behind an `Arc` and, when
//! a binding changes, clones it, applies the change and swaps the clone in: readers of
//! an older snapshot keep the router they started with. A clone costs time in the
//! number of the exchange's bindings; binding changes are rare next to routing.

use std::collections::{HashMap, HashSet};

use super::binding::{Binding, Destination};
use super::dests::Dests;
use super::error::InvalidBinding;
use super::headers::HeadersPattern;
use super::kind::ExchangeKind;
use super::partition::{partition_order, Partitions};
use super::topic::TopicTrie;
use crate::message::FieldTable;

#[derive(Clone, Debug)]
enum Index {
    /// Routing key to the destinations bound under it.
    Direct(HashMap<String, Dests>),
    /// Every destination.
    Fanout(Dests),
    Topic(TopicTrie),
    /// One entry per binding, tried in turn (RabbitMQ, too, tries every binding).
    Headers(Vec<(HeadersPattern, Binding)>),
    /// Partition number to the destinations bound under it.
    Partitions(Partitions),
}

/// The bindings of one exchange (as source) and the index that routes with them.
///
/// The router does not know its exchange's name: it takes bindings as given, and the
/// topology only hands it bindings whose source is that exchange.
#[derive(Clone, Debug)]
pub struct Router {
    kind: ExchangeKind,
    bindings: HashSet<Binding>,
    /// How many bindings lead to each destination.
    per_destination: HashMap<Destination, usize>,
    index: Index,
}

impl Router {
    /// A router without bindings.
    pub fn new(kind: ExchangeKind) -> Self {
        let index = match kind {
            ExchangeKind::Direct => Index::Direct(HashMap::new()),
            ExchangeKind::Fanout => Index::Fanout(Dests::default()),
            ExchangeKind::Topic => Index::Topic(TopicTrie::new()),
            ExchangeKind::Headers => Index::Headers(Vec::new()),
            ExchangeKind::PartitionHash => Index::Partitions(Partitions::default()),
            // Delayed exchanges route as their `x-delayed-type` (the topology builds
            // their routers with `ExchangeDef::routing_kind`); direct stands in.
            ExchangeKind::DelayedMessage => Index::Direct(HashMap::new()),
        };
        Router {
            kind,
            bindings: HashSet::new(),
            per_destination: HashMap::new(),
            index,
        }
    }

    /// A router with `bindings` (duplicates count once).
    pub fn from_bindings(
        kind: ExchangeKind,
        bindings: impl IntoIterator<Item = Binding>,
    ) -> Result<Self, InvalidBinding> {
        let mut router = Router::new(kind);
        for b in bindings {
            router.insert(b)?;
        }
        Ok(router)
    }

    /// The type of the exchange it routes for.
    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Checks that an exchange of `kind` accepts `binding` (RabbitMQ's
    /// `validate_binding`): a key that fits an AMQP short string, and for headers
    /// exchanges a valid `x-match`.
    pub fn check(kind: ExchangeKind, binding: &Binding) -> Result<(), InvalidBinding> {
        binding.check_key()?;
        match kind {
            ExchangeKind::Headers => {
                HeadersPattern::parse(&binding.arguments)?;
            }
            ExchangeKind::PartitionHash => {
                partition_order(&binding.arguments)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Adds a binding. `Ok(false)` if it was already there (binding is idempotent).
    pub fn insert(&mut self, binding: Binding) -> Result<bool, InvalidBinding> {
        binding.check_key()?;
        if self.bindings.contains(&binding) {
            return Ok(false);
        }
        let dest = binding.destination.clone();
        match &mut self.index {
            Index::Direct(map) => map
                .entry(binding.routing_key.clone())
                .or_default()
                .add(dest.clone()),
            Index::Fanout(all) => all.add(dest.clone()),
            Index::Topic(trie) => trie.insert(&binding.routing_key, dest.clone()),
            // Parsing is the only step that can fail, and nothing has changed yet.
            Index::Headers(entries) => {
                entries.push((HeadersPattern::parse(&binding.arguments)?, binding.clone()))
            }
            Index::Partitions(partitions) => {
                partitions.add(partition_order(&binding.arguments)?, dest.clone())
            }
        }
        *self.per_destination.entry(dest).or_insert(0) += 1;
        self.bindings.insert(binding);
        Ok(true)
    }

    /// Removes a binding; false if it was not there.
    pub fn remove(&mut self, binding: &Binding) -> bool {
        if !self.bindings.remove(binding) {
            return false;
        }
        let dest = &binding.destination;
        match &mut self.index {
            Index::Direct(map) => {
                if let Some(dests) = map.get_mut(binding.routing_key.as_str()) {
                    dests.remove(dest);
                    if dests.is_empty() {
                        map.remove(binding.routing_key.as_str());
                    }
                }
            }
            Index::Fanout(all) => {
                all.remove(dest);
            }
            Index::Topic(trie) => {
                trie.remove(&binding.routing_key, dest);
            }
            Index::Headers(entries) => {
                if let Some(i) = entries.iter().position(|(_, b)| b == binding) {
                    entries.swap_remove(i);
                }
            }
            Index::Partitions(partitions) => {
                if let Ok(order) = partition_order(&binding.arguments) {
                    partitions.remove(order, dest);
                }
            }
        }
        if let Some(n) = self.per_destination.get_mut(dest) {
            *n -= 1;
            if *n == 0 {
                self.per_destination.remove(dest);
            }
        }
        true
    }

    /// Removes every binding to `dest` (its queue or exchange is being deleted) and
    /// returns them.
    pub fn remove_destination(&mut self, dest: &Destination) -> Vec<Binding> {
        if !self.has_destination(dest) {
            return Vec::new();
        }
        let doomed: Vec<Binding> = self
            .bindings
            .iter()
            .filter(|b| b.destination == *dest)
            .cloned()
            .collect();
        for b in &doomed {
            self.remove(b);
        }
        doomed
    }

    /// Whether it holds exactly this binding (arguments included).
    pub fn contains(&self, binding: &Binding) -> bool {
        self.bindings.contains(binding)
    }

    /// Whether some binding leads to `dest`.
    pub fn has_destination(&self, dest: &Destination) -> bool {
        self.per_destination.contains_key(dest)
    }

    /// The distinct destinations of this exchange's bindings.
    pub fn destinations(&self) -> impl Iterator<Item = &Destination> {
        self.per_destination.keys()
    }

    /// The number of bindings.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether the exchange is the source of no binding.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// The bindings, in no particular order.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter()
    }

    /// Appends to `out` each destination a message with `routing_key` and `headers`
    /// reaches through this exchange's own bindings (not following exchange
    /// destinations: that is the topology's job), each once, in no particular order.
    /// What `out` held before is left alone.
    pub fn route<'a>(
        &'a self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<&'a Destination>,
    ) {
        let start = out.len();
        self.for_each_match(routing_key, headers, |d| out.push(d));
        if matches!(self.index, Index::Topic(_) | Index::Headers(_)) {
            // Several patterns (or header bindings) can lead to one destination; direct
            // and fanout store each destination once per key already.
            out[start..].sort_unstable();
            let mut kept = start;
            for i in start..out.len() {
                if kept == start || out[i] != out[kept - 1] {
                    out[kept] = out[i];
                    kept += 1;
                }
            }
            out.truncate(kept);
        }
    }

    /// Calls `f` for each destination a matching binding leads to. A destination may
    /// be reported more than once (bound under several matching patterns); whether `f`
    /// is called at all tells whether any binding matched.
    pub fn for_each_match<'a>(
        &'a self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        mut f: impl FnMut(&'a Destination),
    ) {
        match &self.index {
            Index::Direct(map) => {
                if let Some(dests) = map.get(routing_key) {
                    dests.iter().for_each(f);
                }
            }
            Index::Fanout(all) => all.iter().for_each(f),
            Index::Topic(trie) => trie.for_each_match(routing_key, &mut f),
            Index::Headers(entries) => {
                for (pattern, binding) in entries {
                    if pattern.matches(headers) {
                        f(&binding.destination);
                    }
                }
            }
            Index::Partitions(partitions) => partitions.route(routing_key).for_each(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FieldValue;

    fn routed(router: &Router, key: &str, headers: Option<&FieldTable>) -> Vec<String> {
        let mut out = Vec::new();
        router.route(key, headers, &mut out);
        out.iter().map(|d| d.to_string()).collect()
    }

    fn qb(queue: &str, key: &str) -> Binding {
        Binding::queue("x", queue, key)
    }

    #[test]
    fn direct_matches_the_exact_key() {
        let router = Router::from_bindings(
            ExchangeKind::Direct,
            [
                qb("q1", "red"),
                qb("q2", "red"),
                qb("q3", "green"),
                qb("q4", ""),
            ],
        )
        .unwrap();
        let mut red = routed(&router, "red", None);
        red.sort();
        assert_eq!(red, ["queue 'q1'", "queue 'q2'"]);
        assert_eq!(routed(&router, "green", None), ["queue 'q3'"]);
        assert_eq!(routed(&router, "", None), ["queue 'q4'"]);
        assert!(routed(&router, "Red", None).is_empty());
        assert!(routed(&router, "red.x", None).is_empty());
    }

    #[test]
    fn fanout_matches_everything() {
        let router = Router::from_bindings(
            ExchangeKind::Fanout,
            [
                qb("q1", "a"),
                qb("q2", "b"),
                Binding::exchange("x", "e", ""),
            ],
        )
        .unwrap();
        let mut all = routed(&router, "whatever", None);
        all.sort();
        assert_eq!(all, ["exchange 'e'", "queue 'q1'", "queue 'q2'"]);
    }

    #[test]
    fn a_destination_reached_by_several_bindings_appears_once() {
        let args = |n: i32| FieldTable::from([("n".to_owned(), FieldValue::I32(n))]);
        // (The four AMQP types: an x-partition-hash binding needs a partition number.)
        for kind in &ExchangeKind::ALL[..4] {
            let kind = *kind;
            let router = Router::from_bindings(
                kind,
                [
                    qb("q", "a.b").with_arguments(args(1)),
                    qb("q", "a.b").with_arguments(args(2)),
                    qb("q", "a.*"),
                    qb("q", "#"),
                ],
            )
            .unwrap();
            let headers = FieldTable::from([("n".to_owned(), FieldValue::I32(1))]);
            assert_eq!(
                routed(&router, "a.b", Some(&headers)),
                ["queue 'q'"],
                "{kind}"
            );
        }
    }

    #[test]
    fn route_leaves_earlier_output_alone() {
        let router =
            Router::from_bindings(ExchangeKind::Topic, [qb("a", "#"), qb("b", "k")]).unwrap();
        let other = Destination::Queue("zzz".into());
        let mut out = vec![&other, &other];
        router.route("k", None, &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(out[..2], [&other, &other]);
    }

    #[test]
    fn insert_is_idempotent_and_remove_exact() {
        let mut router = Router::new(ExchangeKind::Direct);
        assert_eq!(router.insert(qb("q", "k")), Ok(true));
        assert_eq!(router.insert(qb("q", "k")), Ok(false));
        let with_args = qb("q", "k").with_arguments(FieldTable::from([(
            "a".to_owned(),
            FieldValue::string("b"),
        )]));
        assert_eq!(router.insert(with_args.clone()), Ok(true));
        assert_eq!(router.len(), 2);
        assert!(router.remove(&qb("q", "k")));
        // The other binding still routes.
        assert_eq!(routed(&router, "k", None), ["queue 'q'"]);
        assert!(!router.remove(&qb("q", "k")));
        assert!(router.remove(&with_args));
        assert!(routed(&router, "k", None).is_empty());
        assert!(router.is_empty());
        assert!(!router.has_destination(&Destination::Queue("q".into())));
    }

    #[test]
    fn remove_destination_drops_all_its_bindings() {
        // (The four AMQP types: an x-partition-hash binding needs a partition number.)
        for kind in &ExchangeKind::ALL[..4] {
            let kind = *kind;
            let mut router = Router::from_bindings(
                kind,
                [
                    qb("q", "a"),
                    qb("q", "b"),
                    qb("r", "a"),
                    Binding::exchange("x", "q", "a"),
                ],
            )
            .unwrap();
            let mut removed = router.remove_destination(&Destination::Queue("q".into()));
            removed.sort();
            assert_eq!(removed, [qb("q", "a"), qb("q", "b")], "{kind}");
            assert_eq!(router.len(), 2);
            assert!(router.has_destination(&Destination::Exchange("q".into())));
            assert!(!router.has_destination(&Destination::Queue("q".into())));
            let mut left = routed(&router, "a", None);
            left.sort();
            assert_eq!(left, ["exchange 'q'", "queue 'r'"], "{kind}");
        }
    }

    #[test]
    fn headers_routing_uses_each_bindings_arguments() {
        let arg = |pairs: &[(&str, &str)]| -> FieldTable {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), FieldValue::string(*v)))
                .collect()
        };
        let router = Router::from_bindings(
            ExchangeKind::Headers,
            [
                qb("pdf", "").with_arguments(arg(&[("format", "pdf")])),
                qb("any", "").with_arguments(arg(&[
                    ("x-match", "any"),
                    ("format", "zip"),
                    ("type", "log"),
                ])),
                qb("all", "").with_arguments(arg(&[])),
            ],
        )
        .unwrap();
        let h = arg(&[("format", "pdf"), ("type", "log")]);
        let mut got = routed(&router, "ignored", Some(&h));
        got.sort();
        assert_eq!(got, ["queue 'all'", "queue 'any'", "queue 'pdf'"]);
        assert_eq!(routed(&router, "", None), ["queue 'all'"]);
    }

    #[test]
    fn invalid_bindings_are_refused() {
        let mut headers = Router::new(ExchangeKind::Headers);
        let bad = qb("q", "").with_arguments(FieldTable::from([(
            "x-match".to_owned(),
            FieldValue::string("most"),
        )]));
        assert!(matches!(
            headers.insert(bad.clone()),
            Err(InvalidBinding::XMatchValue { .. })
        ));
        assert!(headers.is_empty());
        // Other types do not interpret x-match.
        assert_eq!(Router::new(ExchangeKind::Topic).insert(bad), Ok(true));
        let long = qb("q", &"a.".repeat(200));
        assert!(matches!(
            Router::new(ExchangeKind::Topic).insert(long),
            Err(InvalidBinding::KeyTooLong { .. })
        ));
    }

    #[test]
    fn a_partition_hash_exchange_needs_partition_numbers_and_routes_by_key_hash() {
        use crate::exchange::partition::PARTITION_ORDER_ARG;
        let order =
            |n: i64| FieldTable::from([(PARTITION_ORDER_ARG.to_owned(), FieldValue::I64(n))]);
        let kind = ExchangeKind::PartitionHash;
        assert!(matches!(
            Router::check(kind, &qb("p0", "0")),
            Err(InvalidBinding::PartitionOrder { .. })
        ));
        assert!(Router::check(kind, &qb("p0", "0").with_arguments(order(-1))).is_err());
        let router = Router::from_bindings(
            kind,
            (0..3).map(|i| qb(&format!("clicks-{i}"), &i.to_string()).with_arguments(order(i))),
        )
        .unwrap();
        // Kafka puts "abc" on partition 0 of 3 and "a-little-bit-long-string" on 2.
        assert_eq!(routed(&router, "abc", None), ["queue 'clicks-0'"]);
        assert_eq!(
            routed(&router, "a-little-bit-long-string", None),
            ["queue 'clicks-2'"]
        );
    }
}
