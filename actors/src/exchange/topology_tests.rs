//! Topology: declarations, bindings, routing across exchanges, alternate exchanges.

use std::sync::Arc;

use super::*;
use crate::error::{code, BrokerError};
use crate::message::{FieldTable, FieldValue};

/// The snapshot a successful mutation produced (the same one if nothing changed).
fn next(t: &Topology, change: Result<Change, TopologyError>) -> Topology {
    match change {
        Ok(c) => c.topology.unwrap_or_else(|| t.clone()),
        Err(e) => panic!("mutation refused: {e}"),
    }
}

fn with_queues(names: &[&str]) -> Topology {
    let mut t = Topology::new("/");
    for q in names {
        t = next(&t, Ok(t.declare_queue_name(q)));
    }
    t
}

fn declare(t: &Topology, name: &str, kind: ExchangeKind) -> Topology {
    next(t, t.declare_exchange(ExchangeDef::new(name, kind)))
}

fn declare_def(t: &Topology, def: ExchangeDef) -> Topology {
    next(t, t.declare_exchange(def))
}

fn bind(t: &Topology, b: Binding) -> Topology {
    next(t, t.bind(b))
}

fn route(t: &Topology, exchange: &str, key: &str) -> Vec<String> {
    route_h(t, exchange, key, None)
}

fn route_h(t: &Topology, exchange: &str, key: &str, headers: Option<&FieldTable>) -> Vec<String> {
    t.route(exchange, key, headers)
        .expect("exchange exists")
        .iter()
        .map(|q| q.to_string())
        .collect()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ----- default exchange and lookups --------------------------------------------

#[test]
fn a_new_vhost_has_the_predeclared_exchanges() {
    let t = Topology::new("/");
    let names: Vec<&str> = t.exchanges().iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "",
            "amq.direct",
            "amq.fanout",
            "amq.headers",
            "amq.match",
            "amq.topic"
        ]
    );
    assert_eq!(t.vhost(), "/");
    assert!(t.bindings().is_empty());
}

#[test]
fn default_exchange_routes_to_the_queue_named_by_the_key() {
    let t = with_queues(&["orders", "audit"]);
    assert_eq!(route(&t, "", "orders"), strs(&["orders"]));
    assert!(route(&t, "", "missing").is_empty());
    assert!(route(&t, "", "").is_empty());
}

#[test]
fn routing_to_an_unknown_exchange_is_404() {
    let t = Topology::new("/");
    let err = t.route("nope", "k", None).unwrap_err();
    assert_eq!(err.reply_code(), code::NOT_FOUND);
    assert_eq!(err.to_string(), "no exchange 'nope' in vhost '/'");
    let broker: BrokerError = err.into();
    assert_eq!(broker.code(), 404);
}

#[test]
fn route_into_reuses_the_callers_buffer_and_overwrites_it() {
    let t = bind(
        &with_queues(&["a", "b"]),
        Binding::queue("amq.fanout", "a", ""),
    );
    let mut result = RouteResult::default();
    t.route_into("amq.fanout", "", None, &mut result).unwrap();
    assert_eq!(result.queues(), [Arc::<str>::from("a")]);
    t.route_into("", "b", None, &mut result).unwrap();
    assert_eq!(result.queues(), [Arc::<str>::from("b")]);
    assert!(result.contains("b") && !result.contains("a"));
}

// ----- declaring exchanges ------------------------------------------------------

#[test]
fn reserved_and_default_names_cannot_be_declared() {
    let t = Topology::new("/");
    let err = t
        .declare_exchange(ExchangeDef::new("amq.x", ExchangeKind::Direct))
        .unwrap_err();
    assert_eq!(err.reply_code(), code::ACCESS_REFUSED);
    assert_eq!(
        err.to_string(),
        "exchange name 'amq.x' contains reserved prefix 'amq.*'"
    );
    let err = t
        .declare_exchange(ExchangeDef::new("", ExchangeKind::Direct))
        .unwrap_err();
    assert_eq!(err, TopologyError::DefaultExchange);
    assert_eq!(err.reply_code(), code::ACCESS_REFUSED);
    // "amq" without the dot is an ordinary name.
    assert!(t
        .declare_exchange(ExchangeDef::new("amqx", ExchangeKind::Direct))
        .is_ok());
}

#[test]
fn predeclared_exchanges_can_be_redeclared_equivalently() {
    let t = Topology::new("/");
    let ok = t
        .declare_exchange(ExchangeDef::new("amq.topic", ExchangeKind::Topic).durable())
        .unwrap();
    assert!(ok.is_unchanged());
    let err = t
        .declare_exchange(ExchangeDef::new("amq.topic", ExchangeKind::Topic))
        .unwrap_err();
    assert_eq!(err.reply_code(), code::PRECONDITION_FAILED);
    assert_eq!(
        err.to_string(),
        "inequivalent arg 'durable' for exchange 'amq.topic' in vhost '/': received 'false' but current is 'true'"
    );
}

#[test]
fn redeclaring_with_another_type_is_406_like_rabbitmq() {
    let t = declare(&Topology::new("/"), "x", ExchangeKind::Direct);
    let change = t
        .declare_exchange(ExchangeDef::new("x", ExchangeKind::Direct))
        .unwrap();
    assert!(change.is_unchanged());
    let err = t
        .declare_exchange(ExchangeDef::new("x", ExchangeKind::Fanout))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'"
    );
    let err: BrokerError = err.into();
    let (code, text) = (err.code(), err.text());
    assert_eq!(code, 406);
    assert!(text.starts_with("inequivalent arg 'type'"));
}

#[test]
fn declaring_records_the_new_exchange() {
    let t = Topology::new("/");
    let change = t
        .declare_exchange(ExchangeDef::new("x", ExchangeKind::Topic))
        .unwrap();
    assert_eq!(
        change.declared_exchange.as_ref().map(|d| d.name.as_str()),
        Some("x")
    );
    let t2 = change.topology.expect("changed");
    assert_eq!(t2.exchange("x").map(|d| d.kind), Some(ExchangeKind::Topic));
    // The old snapshot does not see it.
    assert!(t.exchange("x").is_none());
}

#[test]
fn a_non_string_alternate_exchange_is_refused_on_creation() {
    let t = Topology::new("/");
    let mut def = ExchangeDef::new("x", ExchangeKind::Direct);
    def.arguments
        .insert(ALTERNATE_EXCHANGE_ARG.into(), FieldValue::I64(3));
    let err = t.declare_exchange(def).unwrap_err();
    assert_eq!(err.reply_code(), code::PRECONDITION_FAILED);
    assert_eq!(
        err.to_string(),
        "invalid type 'long' for arg 'alternate-exchange' in exchange 'x' in vhost '/'"
    );
}

// ----- deleting exchanges -------------------------------------------------------

#[test]
fn default_and_system_exchanges_cannot_be_deleted() {
    let t = Topology::new("/");
    assert_eq!(
        t.delete_exchange("", false).unwrap_err(),
        TopologyError::DefaultExchange
    );
    let err = t.delete_exchange("amq.direct", false).unwrap_err();
    assert_eq!(err.reply_code(), code::ACCESS_REFUSED);
    assert_eq!(
        err.to_string(),
        "deletion of system exchange 'amq.direct' in vhost '/' not allowed"
    );
}

#[test]
fn deleting_a_missing_exchange_changes_nothing() {
    let t = Topology::new("/");
    assert!(t.delete_exchange("ghost", true).unwrap().is_unchanged());
}

#[test]
fn if_unused_refuses_an_exchange_with_bindings_as_source() {
    let t = with_queues(&["q"]);
    let t = declare(&t, "src", ExchangeKind::Direct);
    let t = declare(&t, "dst", ExchangeKind::Direct);
    let t = bind(&t, Binding::exchange("src", "dst", "k"));
    let err = t.delete_exchange("src", true).unwrap_err();
    assert_eq!(err.reply_code(), code::PRECONDITION_FAILED);
    assert_eq!(err.to_string(), "exchange 'src' in vhost '/' in use");
    // Being a destination does not make an exchange "used".
    let change = t.delete_exchange("dst", true).unwrap();
    assert_eq!(
        change.removed_bindings,
        [Binding::exchange("src", "dst", "k")]
    );
}

#[test]
fn deleting_an_exchange_removes_its_bindings_both_ways() {
    let t = with_queues(&["q"]);
    let t = declare(&t, "a", ExchangeKind::Fanout);
    let t = declare(&t, "b", ExchangeKind::Fanout);
    let t = bind(&t, Binding::exchange("a", "b", ""));
    let t = bind(&t, Binding::queue("b", "q", ""));
    let change = t.delete_exchange("b", false).unwrap();
    assert_eq!(
        change
            .deleted_exchanges
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    let mut removed = change.removed_bindings.clone();
    removed.sort();
    assert_eq!(
        removed,
        [
            Binding::exchange("a", "b", ""),
            Binding::queue("b", "q", "")
        ]
    );
    let t = change.topology.unwrap();
    assert!(t.bindings_from("a").is_empty());
    assert!(route(&t, "a", "").is_empty());
    // A new exchange with the old name starts without bindings.
    let t = declare(&t, "b", ExchangeKind::Fanout);
    assert!(route(&t, "a", "").is_empty());
    assert!(route(&t, "b", "").is_empty());
}

// ----- binding ------------------------------------------------------------------

#[test]
fn binding_to_or_from_the_default_exchange_is_403() {
    let t = with_queues(&["q"]);
    for b in [
        Binding::queue("", "q", "q"),
        Binding::exchange("amq.direct", "", "k"),
    ] {
        let err = t.bind(b.clone()).unwrap_err();
        assert_eq!(err.reply_code(), code::ACCESS_REFUSED);
        assert_eq!(
            err.to_string(),
            "operation not permitted on the default exchange"
        );
        assert_eq!(t.unbind(&b).unwrap_err(), TopologyError::DefaultExchange);
    }
}

#[test]
fn binding_needs_source_then_destination() {
    let t = with_queues(&["q"]);
    let err = t.bind(Binding::queue("nosrc", "noq", "k")).unwrap_err();
    assert_eq!(err.to_string(), "no exchange 'nosrc' in vhost '/'");
    assert_eq!(err.reply_code(), code::NOT_FOUND);
    let err = t
        .bind(Binding::queue("amq.direct", "noq", "k"))
        .unwrap_err();
    assert_eq!(err.to_string(), "no queue 'noq' in vhost '/'");
    assert_eq!(err.reply_code(), code::NOT_FOUND);
    let err = t
        .bind(Binding::exchange("amq.direct", "nox", "k"))
        .unwrap_err();
    assert_eq!(err.to_string(), "no exchange 'nox' in vhost '/'");
}

#[test]
fn binding_twice_is_a_no_op_and_records_once() {
    let t = with_queues(&["q"]);
    let change = t.bind(Binding::queue("amq.direct", "q", "k")).unwrap();
    assert_eq!(
        change.added_bindings,
        [Binding::queue("amq.direct", "q", "k")]
    );
    let t = change.topology.unwrap();
    assert!(t
        .bind(Binding::queue("amq.direct", "q", "k"))
        .unwrap()
        .is_unchanged());
    assert_eq!(route(&t, "amq.direct", "k"), strs(&["q"]));
}

#[test]
fn headers_bindings_with_a_bad_x_match_are_406() {
    let t = with_queues(&["q"]);
    let args = FieldTable::from([("x-match".to_owned(), FieldValue::string("sometimes"))]);
    let err = t
        .bind(Binding::queue("amq.match", "q", "").with_arguments(args.clone()))
        .unwrap_err();
    assert_eq!(err.reply_code(), code::PRECONDITION_FAILED);
    assert!(err
        .to_string()
        .starts_with("Invalid x-match field value 'sometimes'"));
    // A direct exchange does not interpret x-match.
    assert!(t
        .bind(Binding::queue("amq.direct", "q", "").with_arguments(args))
        .is_ok());
}

#[test]
fn unbinding_what_is_not_there_succeeds_without_change() {
    let t = with_queues(&["q"]);
    assert!(t
        .unbind(&Binding::queue("amq.direct", "q", "k"))
        .unwrap()
        .is_unchanged());
    assert!(t
        .unbind(&Binding::queue("ghost", "q", "k"))
        .unwrap()
        .is_unchanged());
    assert!(t
        .unbind(&Binding::queue("amq.direct", "ghost", "k"))
        .unwrap()
        .is_unchanged());
}

#[test]
fn unbinding_matches_arguments_exactly() {
    let t = with_queues(&["q"]);
    let args = FieldTable::from([("a".to_owned(), FieldValue::I32(1))]);
    let with_args = Binding::queue("amq.direct", "q", "k").with_arguments(args);
    let t = bind(&t, with_args.clone());
    assert!(t
        .unbind(&Binding::queue("amq.direct", "q", "k"))
        .unwrap()
        .is_unchanged());
    let change = t.unbind(&with_args).unwrap();
    assert_eq!(change.removed_bindings, [with_args]);
    assert!(route(&change.topology.unwrap(), "amq.direct", "k").is_empty());
}

// ----- queues -------------------------------------------------------------------

#[test]
fn removing_a_queue_drops_its_bindings() {
    let t = with_queues(&["q", "r"]);
    let t = bind(&t, Binding::queue("amq.direct", "q", "k"));
    let t = bind(&t, Binding::queue("amq.topic", "q", "#"));
    let t = bind(&t, Binding::queue("amq.topic", "r", "#"));
    let change = t.remove_queue("q");
    assert_eq!(
        change.removed_bindings,
        [
            Binding::queue("amq.direct", "q", "k"),
            Binding::queue("amq.topic", "q", "#")
        ]
    );
    let t = change.topology.unwrap();
    assert!(!t.has_queue("q"));
    assert_eq!(route(&t, "amq.topic", "x"), strs(&["r"]));
    assert!(route(&t, "", "q").is_empty());
    // A queue declared again under the same name has no bindings.
    let t = next(&t, Ok(t.declare_queue_name("q")));
    assert!(route(&t, "amq.direct", "k").is_empty());
    assert_eq!(route(&t, "amq.topic", "x"), strs(&["r"]));
    assert!(t.remove_queue("ghost").is_unchanged());
    assert!(t.declare_queue_name("q").is_unchanged());
}

// ----- auto-delete --------------------------------------------------------------

fn auto_delete(name: &str, kind: ExchangeKind) -> ExchangeDef {
    let mut def = ExchangeDef::new(name, kind);
    def.auto_delete = true;
    def
}

#[test]
fn an_auto_delete_exchange_goes_with_its_last_binding() {
    let t = with_queues(&["q1", "q2"]);
    let t = declare_def(&t, auto_delete("ad", ExchangeKind::Fanout));
    // Declared without bindings, it stays.
    assert!(t.exchange("ad").is_some());
    let t = bind(&t, Binding::queue("ad", "q1", ""));
    let t = bind(&t, Binding::queue("ad", "q2", ""));
    let t = next(&t, t.unbind(&Binding::queue("ad", "q1", "")));
    assert!(t.exchange("ad").is_some());
    let change = t.unbind(&Binding::queue("ad", "q2", "")).unwrap();
    assert_eq!(change.deleted_exchanges.len(), 1);
    assert!(change.topology.unwrap().exchange("ad").is_none());
}

#[test]
fn deleting_a_queue_cascades_through_auto_delete_exchanges() {
    // top -> mid -> q, both auto-delete: deleting q empties mid, whose deletion
    // removes top's only binding, which deletes top.
    let t = with_queues(&["q"]);
    let t = declare_def(&t, auto_delete("top", ExchangeKind::Fanout));
    let t = declare_def(&t, auto_delete("mid", ExchangeKind::Fanout));
    let t = declare(&t, "keep", ExchangeKind::Fanout);
    let t = bind(&t, Binding::exchange("top", "mid", ""));
    let t = bind(&t, Binding::queue("mid", "q", ""));
    let t = bind(&t, Binding::exchange("keep", "mid", ""));
    let change = t.remove_queue("q");
    let deleted: Vec<&str> = change
        .deleted_exchanges
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(deleted, ["mid", "top"]);
    let t = change.topology.unwrap();
    assert!(t.exchange("keep").is_some(), "not auto-delete");
    assert!(t.bindings_from("keep").is_empty());
}

// ----- exchange-to-exchange -----------------------------------------------------

#[test]
fn exchange_to_exchange_chains_are_followed() {
    let t = with_queues(&["eu-orders", "all-orders", "audit"]);
    let t = declare(&t, "ingress", ExchangeKind::Topic);
    let t = declare(&t, "orders", ExchangeKind::Direct);
    let t = declare(&t, "tap", ExchangeKind::Fanout);
    let t = bind(&t, Binding::exchange("ingress", "orders", "orders.#"));
    let t = bind(&t, Binding::exchange("ingress", "tap", "#"));
    let t = bind(&t, Binding::queue("orders", "eu-orders", "orders.eu"));
    let t = bind(&t, Binding::queue("orders", "all-orders", "orders.eu"));
    let t = bind(&t, Binding::queue("tap", "audit", ""));
    assert_eq!(
        route(&t, "ingress", "orders.eu"),
        strs(&["all-orders", "audit", "eu-orders"])
    );
    assert_eq!(route(&t, "ingress", "orders.us"), strs(&["audit"]));
}

#[test]
fn cycles_route_each_exchange_once() {
    let t = with_queues(&["qa", "qb"]);
    let t = declare(&t, "a", ExchangeKind::Fanout);
    let t = declare(&t, "b", ExchangeKind::Fanout);
    let t = bind(&t, Binding::exchange("a", "b", ""));
    let t = bind(&t, Binding::exchange("b", "a", ""));
    let t = bind(&t, Binding::exchange("a", "a", ""));
    let t = bind(&t, Binding::queue("a", "qa", ""));
    let t = bind(&t, Binding::queue("b", "qb", ""));
    assert_eq!(route(&t, "a", ""), strs(&["qa", "qb"]));
    assert_eq!(route(&t, "b", ""), strs(&["qa", "qb"]));
}

#[test]
fn a_queue_reached_several_ways_appears_once() {
    let t = with_queues(&["q"]);
    let t = declare(&t, "x", ExchangeKind::Fanout);
    let t = bind(&t, Binding::queue("amq.topic", "q", "a.*"));
    let t = bind(&t, Binding::queue("amq.topic", "q", "#"));
    let t = bind(&t, Binding::exchange("amq.topic", "x", "#"));
    let t = bind(&t, Binding::queue("x", "q", ""));
    assert_eq!(route(&t, "amq.topic", "a.b"), strs(&["q"]));
}

// ----- alternate exchanges ------------------------------------------------------

#[test]
fn unroutable_messages_go_to_the_alternate_exchange() {
    let t = with_queues(&["routed", "unrouted"]);
    let t = declare(&t, "ae", ExchangeKind::Fanout);
    let t = declare_def(
        &t,
        ExchangeDef::new("x", ExchangeKind::Direct).with_alternate_exchange("ae"),
    );
    let t = bind(&t, Binding::queue("x", "routed", "known"));
    let t = bind(&t, Binding::queue("ae", "unrouted", ""));
    assert_eq!(route(&t, "x", "known"), strs(&["routed"]));
    assert_eq!(route(&t, "x", "other"), strs(&["unrouted"]));
}

#[test]
fn deleting_the_only_bound_queue_hands_messages_to_the_alternate() {
    // Found by the model property test: with the queue gone, so is its binding, and
    // the exchange now matches nothing.
    let t = with_queues(&["bound", "fallback"]);
    let t = declare(&t, "ae", ExchangeKind::Fanout);
    let t = declare_def(
        &t,
        ExchangeDef::new("x", ExchangeKind::Fanout).with_alternate_exchange("ae"),
    );
    let t = bind(&t, Binding::queue("x", "bound", ""));
    let t = bind(&t, Binding::queue("ae", "fallback", ""));
    assert_eq!(route(&t, "x", ""), strs(&["bound"]));
    let t = next(&t, Ok(t.remove_queue("bound")));
    assert_eq!(route(&t, "x", ""), strs(&["fallback"]));
}

#[test]
fn a_missing_alternate_exchange_routes_nowhere() {
    let t = declare_def(
        &Topology::new("/"),
        ExchangeDef::new("x", ExchangeKind::Direct).with_alternate_exchange("not-yet"),
    );
    assert!(route(&t, "x", "k").is_empty());
    // Declared later, it is used.
    let t = next(&t, Ok(t.declare_queue_name("late")));
    let t = declare(&t, "not-yet", ExchangeKind::Fanout);
    let t = bind(&t, Binding::queue("not-yet", "late", ""));
    assert_eq!(route(&t, "x", "k"), strs(&["late"]));
}

#[test]
fn alternate_exchanges_chain_and_cycles_end() {
    let t = with_queues(&["last"]);
    let t = declare_def(
        &t,
        ExchangeDef::new("a", ExchangeKind::Direct).with_alternate_exchange("b"),
    );
    let t = declare_def(
        &t,
        ExchangeDef::new("b", ExchangeKind::Direct).with_alternate_exchange("c"),
    );
    let t = declare_def(
        &t,
        ExchangeDef::new("c", ExchangeKind::Direct).with_alternate_exchange("a"),
    );
    // a -> b -> c -> a: nothing matches anywhere, and routing ends.
    assert!(route(&t, "a", "k").is_empty());
    let t = bind(&t, Binding::queue("c", "last", "k"));
    assert_eq!(route(&t, "a", "k"), strs(&["last"]));
    assert_eq!(route(&t, "b", "k"), strs(&["last"]));
    assert!(route(&t, "a", "other").is_empty());
    // An exchange that is its own alternate.
    let t = declare_def(
        &t,
        ExchangeDef::new("self", ExchangeKind::Direct).with_alternate_exchange("self"),
    );
    assert!(route(&t, "self", "k").is_empty());
}

#[test]
fn the_alternate_is_skipped_when_an_exchange_destination_matched() {
    // RabbitMQ: the alternate is used when the exchange's own bindings matched nothing.
    // Here x matched exchange y (which routes nowhere), so x's alternate is not used,
    // but y's is.
    let t = with_queues(&["x-ae-q", "y-ae-q"]);
    let t = declare(&t, "x-ae", ExchangeKind::Fanout);
    let t = declare(&t, "y-ae", ExchangeKind::Fanout);
    let t = declare_def(
        &t,
        ExchangeDef::new("x", ExchangeKind::Fanout).with_alternate_exchange("x-ae"),
    );
    let t = declare_def(
        &t,
        ExchangeDef::new("y", ExchangeKind::Direct).with_alternate_exchange("y-ae"),
    );
    let t = bind(&t, Binding::exchange("x", "y", ""));
    let t = bind(&t, Binding::queue("x-ae", "x-ae-q", ""));
    let t = bind(&t, Binding::queue("y-ae", "y-ae-q", ""));
    assert_eq!(route(&t, "x", "k"), strs(&["y-ae-q"]));
}

#[test]
fn the_default_exchange_can_be_an_alternate() {
    let t = with_queues(&["by-key"]);
    let t = declare_def(
        &t,
        ExchangeDef::new("x", ExchangeKind::Direct).with_alternate_exchange(""),
    );
    assert_eq!(route(&t, "x", "by-key"), strs(&["by-key"]));
    assert!(route(&t, "x", "nothing").is_empty());
}

// ----- internal exchanges -------------------------------------------------------

#[test]
fn internal_exchanges_refuse_publishes_but_route_for_exchanges() {
    let t = with_queues(&["q"]);
    let mut internal = ExchangeDef::new("inner", ExchangeKind::Fanout);
    internal.internal = true;
    let t = declare_def(&t, internal);
    let t = declare(&t, "outer", ExchangeKind::Fanout);
    let t = bind(&t, Binding::exchange("outer", "inner", ""));
    let t = bind(&t, Binding::queue("inner", "q", ""));
    let mut result = RouteResult::default();
    let err = t.route_publish("inner", "", None, &mut result).unwrap_err();
    assert_eq!(err.reply_code(), code::ACCESS_REFUSED);
    assert_eq!(
        err.to_string(),
        "cannot publish to internal exchange 'inner' in vhost '/'"
    );
    t.route_publish("outer", "", None, &mut result).unwrap();
    assert_eq!(result.queues(), [Arc::<str>::from("q")]);
    assert_eq!(route(&t, "inner", ""), strs(&["q"]));
    let err = t.route_publish("ghost", "", None, &mut result).unwrap_err();
    assert_eq!(err.reply_code(), code::NOT_FOUND);
}

// ----- headers through the topology ---------------------------------------------

#[test]
fn headers_exchanges_route_on_headers() {
    let t = with_queues(&["pdf", "any-report"]);
    let pdf = FieldTable::from([("format".to_owned(), FieldValue::string("pdf"))]);
    let any = FieldTable::from([
        ("x-match".to_owned(), FieldValue::string("any")),
        ("type".to_owned(), FieldValue::string("report")),
        ("size".to_owned(), FieldValue::I32(10)),
    ]);
    let t = bind(
        &t,
        Binding::queue("amq.match", "pdf", "").with_arguments(pdf),
    );
    let t = bind(
        &t,
        Binding::queue("amq.headers", "any-report", "").with_arguments(any),
    );
    let h = FieldTable::from([
        ("format".to_owned(), FieldValue::string("pdf")),
        ("size".to_owned(), FieldValue::I64(10)),
    ]);
    assert_eq!(route_h(&t, "amq.match", "", Some(&h)), strs(&["pdf"]));
    assert_eq!(
        route_h(&t, "amq.headers", "", Some(&h)),
        strs(&["any-report"])
    );
    assert!(route_h(&t, "amq.match", "", None).is_empty());
}

// ----- listing and restoring ----------------------------------------------------

#[test]
fn bindings_are_listed_like_rabbitmq() {
    let t = with_queues(&["b", "a"]);
    let t = declare(&t, "x", ExchangeKind::Fanout);
    let t = bind(&t, Binding::queue("x", "a", ""));
    let t = bind(&t, Binding::exchange("amq.fanout", "x", ""));
    assert_eq!(
        t.bindings(),
        [
            Binding::queue("", "a", "a"),
            Binding::queue("", "b", "b"),
            Binding::exchange("amq.fanout", "x", ""),
            Binding::queue("x", "a", ""),
        ]
    );
    assert_eq!(
        t.bindings_to(&Destination::Queue("a".into())),
        [Binding::queue("", "a", "a"), Binding::queue("x", "a", "")]
    );
    assert_eq!(
        t.bindings_from(""),
        [Binding::queue("", "a", "a"), Binding::queue("", "b", "b")]
    );
    assert_eq!(t.bindings_from("x"), [Binding::queue("x", "a", "")]);
    assert_eq!(t.queue_names(), ["a", "b"]);
}

#[test]
fn restore_rebuilds_what_the_mutations_built() {
    let t = with_queues(&["q1", "q2"]);
    let t = declare_def(&t, ExchangeDef::new("t", ExchangeKind::Topic).durable());
    let t = declare_def(
        &t,
        ExchangeDef::new("f", ExchangeKind::Fanout).with_alternate_exchange("t"),
    );
    let t = bind(&t, Binding::queue("t", "q1", "a.#"));
    let t = bind(&t, Binding::exchange("t", "f", "*.b"));
    let t = bind(&t, Binding::queue("f", "q2", ""));
    let stored_exchanges: Vec<ExchangeDef> = t.exchanges().into_iter().cloned().collect();
    let stored_bindings: Vec<Binding> = t
        .bindings()
        .into_iter()
        .filter(|b| !b.source.is_empty())
        .chain([
            Binding::queue("t", "gone", "x"),
            Binding::queue("nosuch", "q1", "x"),
        ])
        .collect();
    let restored = Topology::restore(
        "/",
        stored_exchanges,
        ["q1".to_owned(), "q2".to_owned()],
        stored_bindings,
    );
    let r = &restored.topology;
    assert_eq!(r.bindings(), t.bindings());
    assert_eq!(r.exchanges(), t.exchanges());
    for key in ["a.b", "a", "x.b", "", "z"] {
        assert_eq!(route(r, "t", key), route(&t, "t", key), "key {key}");
    }
    let rejected: Vec<(String, u16)> = restored
        .rejected
        .iter()
        .map(|(b, e)| (b.source.clone(), e.reply_code()))
        .collect();
    assert_eq!(
        rejected,
        [("t".to_owned(), 404), ("nosuch".to_owned(), 404)]
    );
}

#[test]
fn snapshots_share_untouched_parts() {
    let t = with_queues(&["q"]);
    let t2 = bind(&t, Binding::queue("amq.direct", "q", "k"));
    // The binding replaced amq.direct's entry only.
    let same = |name: &str| Arc::ptr_eq(t.entry(name).unwrap(), t2.entry(name).unwrap());
    assert!(!same("amq.direct"));
    assert!(same("amq.topic") && same("amq.fanout") && same(""));
}
