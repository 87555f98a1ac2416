//! Property tests: the topic trie against a naive matcher, and whole-topology routing
//! against a naive model of RabbitMQ's `rabbit_exchange:route/3`.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::message::{FieldTable, FieldValue};

/// RabbitMQ's word split: no words for `""`, otherwise every `.` separates two words.
fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

/// The obvious recursive definition of topic matching.
fn reference_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|i| reference_match(rest, &key[i..])),
        Some((&"*", rest)) => !key.is_empty() && reference_match(rest, &key[1..]),
        Some((w, rest)) => key.first() == Some(w) && reference_match(rest, &key[1..]),
    }
}

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(select(vec!["a", "b", "", "*", "#"]), 0..6).prop_map(|w| w.join("."))
}

fn key() -> impl Strategy<Value = String> {
    // Keys may contain literal `*` and `#` words too.
    prop::collection::vec(select(vec!["a", "b", "", "a", "b", "*", "#"]), 0..7)
        .prop_map(|w| w.join("."))
}

fn trie_matches(trie: &TopicTrie, key: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    trie.for_each_match(key, &mut |d| {
        out.insert(d.name().to_owned());
    });
    out
}

fn reference_matches(patterns: &[(String, bool)], key: &str) -> BTreeSet<String> {
    patterns
        .iter()
        .enumerate()
        .filter(|(_, (p, live))| *live && reference_match(&words(p), &words(key)))
        .map(|(i, _)| format!("q{i}"))
        .collect()
}

/// Failures are reported with their minimal input; no regression file is written
/// (it would land outside this module's directory).
/// `PROPTEST_CASES` still overrides the case count, for longer runs.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn topic_trie_agrees_with_the_reference_matcher(
        patterns in prop::collection::vec(pattern(), 1..12),
        removals in prop::collection::vec(any::<bool>(), 12),
        keys in prop::collection::vec(key(), 1..10),
    ) {
        let mut trie = TopicTrie::new();
        let mut live: Vec<(String, bool)> = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            trie.insert(p, Destination::Queue(format!("q{i}")));
            live.push((p.clone(), true));
        }
        for k in &keys {
            prop_assert_eq!(trie_matches(&trie, k), reference_matches(&live, k), "key {:?}", k);
        }
        for (i, remove) in removals.iter().enumerate().take(patterns.len()) {
            if *remove {
                let dest = Destination::Queue(format!("q{i}"));
                prop_assert!(trie.remove(&patterns[i], &dest));
                live[i].1 = false;
            }
        }
        for k in &keys {
            prop_assert_eq!(trie_matches(&trie, k), reference_matches(&live, k), "key {:?} after removals", k);
        }
        if live.iter().all(|(_, l)| !l) {
            prop_assert!(trie.is_empty());
        }
    }
}

// ----- whole-topology model -----------------------------------------------------

const EXCHANGES: [&str; 5] = ["e0", "e1", "e2", "e3", "e4"];
const QUEUES: [&str; 4] = ["q0", "q1", "q2", "q3"];

/// The four AMQP types (`x-partition-hash` has tests of its own in `partition.rs`).
fn kind() -> impl Strategy<Value = ExchangeKind> {
    select(ExchangeKind::ALL[..4].to_vec())
}

/// Exchange declarations: a kind and maybe an alternate (another exchange, the
/// default exchange, or one that does not exist).
fn exchange_defs() -> impl Strategy<Value = Vec<ExchangeDef>> {
    prop::collection::vec(
        (
            kind(),
            prop::option::of(select(vec!["e0", "e1", "e2", "e3", "e4", "", "missing"])),
        ),
        EXCHANGES.len(),
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .zip(EXCHANGES)
            .map(|((kind, ae), name)| {
                let def = ExchangeDef::new(name, kind);
                match ae {
                    Some(ae) => def.with_alternate_exchange(ae),
                    None => def,
                }
            })
            .collect()
    })
}

fn header_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        Just(FieldValue::string("a")),
        Just(FieldValue::string("b")),
        Just(FieldValue::I32(1)),
        Just(FieldValue::I64(1)),
        Just(FieldValue::Void),
    ]
}

fn header_table() -> impl Strategy<Value = FieldTable> {
    prop::collection::btree_map(
        select(vec!["h1", "h2", "x-h"]).prop_map(str::to_owned),
        header_value(),
        0..3,
    )
}

fn binding_arguments() -> impl Strategy<Value = FieldTable> {
    (
        header_table(),
        prop::option::of(select(vec!["all", "any", "all-with-x", "any-with-x"])),
    )
        .prop_map(|(mut args, mode)| {
            if let Some(mode) = mode {
                args.insert("x-match".to_owned(), FieldValue::string(mode));
            }
            args
        })
}

fn binding() -> impl Strategy<Value = Binding> {
    (
        select(EXCHANGES.to_vec()),
        prop_oneof![
            select(QUEUES.to_vec()).prop_map(|q| Destination::Queue(q.to_owned())),
            select(EXCHANGES.to_vec()).prop_map(|e| Destination::Exchange(e.to_owned())),
        ],
        pattern(),
        binding_arguments(),
    )
        .prop_map(|(source, destination, key, arguments)| Binding {
            source: source.to_owned(),
            destination,
            routing_key: key,
            arguments,
        })
}

fn build(defs: &[ExchangeDef], bindings: &[Binding]) -> Topology {
    let mut t = Topology::new("/");
    for q in QUEUES {
        t = t.declare_queue_name(q).topology.unwrap_or(t);
    }
    for def in defs {
        t = t
            .declare_exchange(def.clone())
            .expect("declare")
            .topology
            .unwrap_or(t);
    }
    for b in bindings {
        t = t.bind(b.clone()).expect("bind").topology.unwrap_or(t);
    }
    t
}

/// RabbitMQ's routing, written the slow and obvious way over a list of bindings.
fn model_route(
    defs: &[ExchangeDef],
    bindings: &[Binding],
    queues: &BTreeSet<&str>,
    exchange: &str,
    key: &str,
    headers: Option<&FieldTable>,
) -> Vec<String> {
    let def_of = |name: &str| -> Option<ExchangeDef> {
        if name.is_empty() {
            return Some(ExchangeDef::new("", ExchangeKind::Direct));
        }
        defs.iter().find(|d| d.name == name).cloned()
    };
    let mut seen = BTreeSet::from([exchange.to_owned()]);
    let mut work = vec![exchange.to_owned()];
    let mut out = BTreeSet::new();
    while let Some(x) = work.pop() {
        let Some(def) = def_of(&x) else { continue };
        let mut dests: Vec<Destination> = if x.is_empty() {
            if queues.contains(key) {
                vec![Destination::Queue(key.to_owned())]
            } else {
                vec![]
            }
        } else {
            bindings
                .iter()
                .filter(|b| b.source == x)
                .filter(|b| match def.kind {
                    ExchangeKind::Direct => b.routing_key == key,
                    ExchangeKind::Fanout => true,
                    ExchangeKind::Topic => reference_match(&words(&b.routing_key), &words(key)),
                    ExchangeKind::Headers => HeadersPattern::parse(&b.arguments)
                        .expect("valid")
                        .matches(headers),
                    ExchangeKind::PartitionHash | ExchangeKind::DelayedMessage => {
                        unreachable!("not generated")
                    }
                })
                .map(|b| b.destination.clone())
                .collect()
        };
        if dests.is_empty() {
            if let Some(ae) = def.alternate_exchange() {
                dests.push(Destination::Exchange(ae.to_owned()));
            }
        }
        for d in dests {
            match d {
                Destination::Queue(q) => {
                    if queues.contains(q.as_str()) {
                        out.insert(q);
                    }
                }
                Destination::Exchange(e) => {
                    if def_of(&e).is_some() && seen.insert(e.clone()) {
                        work.push(e);
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

fn routed(t: &Topology, exchange: &str, key: &str, headers: Option<&FieldTable>) -> Vec<String> {
    t.route(exchange, key, headers)
        .expect("exchange exists")
        .iter()
        .map(|q| q.to_string())
        .collect()
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn topology_routing_agrees_with_the_model(
        defs in exchange_defs(),
        bindings in prop::collection::vec(binding(), 0..16),
        probes in prop::collection::vec((select(vec!["e0", "e1", "e2", "e3", "e4", ""]), key(), prop::option::of(header_table())), 1..8),
    ) {
        let t = build(&defs, &bindings);
        let queues: BTreeSet<&str> = QUEUES.into_iter().collect();
        for (exchange, key, headers) in &probes {
            let got = routed(&t, exchange, key, headers.as_ref());
            // Sorted and without duplicates.
            prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "{:?}", got);
            let want = model_route(&defs, &bindings, &queues, exchange, key, headers.as_ref());
            prop_assert_eq!(got, want, "exchange {:?} key {:?}", exchange, key);
        }
    }

    #[test]
    fn routing_does_not_depend_on_binding_order(
        defs in exchange_defs(),
        (bindings, shuffled) in prop::collection::vec(binding(), 0..16)
            .prop_flat_map(|b| (Just(b.clone()), Just(b).prop_shuffle())),
        probes in prop::collection::vec((select(EXCHANGES.to_vec()), key(), prop::option::of(header_table())), 1..8),
    ) {
        let a = build(&defs, &bindings);
        let b = build(&defs, &shuffled);
        prop_assert_eq!(a.bindings(), b.bindings());
        for (exchange, key, headers) in &probes {
            prop_assert_eq!(
                a.route(exchange, key, headers.as_ref()).unwrap(),
                b.route(exchange, key, headers.as_ref()).unwrap()
            );
        }
    }

    #[test]
    fn removing_queues_and_unbinding_matches_the_model(
        defs in exchange_defs(),
        bindings in prop::collection::vec(binding(), 0..16),
        unbind in prop::collection::vec(any::<bool>(), 16),
        removed_queue in select(QUEUES.to_vec()),
        probes in prop::collection::vec((select(EXCHANGES.to_vec()), key(), prop::option::of(header_table())), 1..8),
    ) {
        let mut t = build(&defs, &bindings);
        let mut kept: Vec<Binding> = Vec::new();
        for (b, drop) in bindings.iter().zip(unbind.iter().chain(std::iter::repeat(&false))) {
            if *drop {
                t = t.unbind(b).expect("unbind").topology.unwrap_or(t);
            } else {
                kept.push(b.clone());
            }
        }
        // Bindings dropped above may have had duplicates that were kept: identical
        // bindings are one binding, so unbinding one removes them all.
        let dropped: Vec<&Binding> = bindings.iter().zip(unbind.iter()).filter(|(_, d)| **d).map(|(b, _)| b).collect();
        kept.retain(|b| !dropped.contains(&b));
        t = t.remove_queue(removed_queue).topology.unwrap_or(t);
        // A deleted queue's bindings go with it (which matters for alternates: an
        // exchange left without matching bindings uses its alternate).
        kept.retain(|b| b.destination != Destination::Queue(removed_queue.to_owned()));
        let queues: BTreeSet<&str> = QUEUES.into_iter().filter(|q| *q != removed_queue).collect();
        for (exchange, key, headers) in &probes {
            let got = routed(&t, exchange, key, headers.as_ref());
            let want = model_route(&defs, &kept, &queues, exchange, key, headers.as_ref());
            prop_assert_eq!(got, want, "exchange {:?} key {:?}", exchange, key);
        }
        prop_assert!(t.bindings().iter().all(|b| b.destination != Destination::Queue(removed_queue.to_owned())));
    }
}
