//! The headers exchange's matching of message headers against binding arguments.
//!
//! Semantics are RabbitMQ's `rabbit_exchange_type_headers` (3.10+), read from its
//! source:
//! - `x-match` selects the mode: `all` (also when absent), `any`, `all-with-x`,
//!   `any-with-x`. Binding refuses any other value (406, `binding_invalid`).
//! - The `x-match` argument itself never takes part in matching. Other arguments whose
//!   names start with `x-` are ignored too, unless the mode is `all-with-x` or
//!   `any-with-x`.
//! - An argument matches when the message has a header of that name and either the
//!   argument is `Void` (RabbitMQ: "a 'no value' in a pattern field is supposed to mean
//!   simple presence of the corresponding data field") or the two values are Erlang
//!   `==` (see [`super::field::erlang_eq`]: `I32(1)` matches `I64(1)` and `F64(1.0)`,
//!   `LongString` matches `Bytes` with the same bytes; nested arrays and tables must
//!   match types too). A header whose value is `Void` matches only a `Void` argument.
//! - `all`: every remaining argument matches; with no remaining argument a binding
//!   matches every message (headers or not). `any`: at least one matches; with no
//!   remaining argument nothing matches.
//! - No headers at all is the same as an empty header table.

use super::error::InvalidBinding;
use super::field::{display_value, erlang_eq, type_name};
use crate::message::{FieldTable, FieldValue};

/// The binding argument that selects the matching mode.
pub const X_MATCH: &str = "x-match";

/// How a headers binding combines its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XMatch {
    /// `all` (also when `x-match` is absent): every argument must match; `x-`
    /// arguments are ignored.
    All,
    /// `any`: at least one argument must match; `x-` arguments are ignored.
    Any,
    /// `all-with-x`: as `all`, and `x-` arguments (but `x-match`) take part too.
    AllWithX,
    /// `any-with-x`: as `any`, and `x-` arguments (but `x-match`) take part too.
    AnyWithX,
}

impl XMatch {
    fn includes_x_arguments(self) -> bool {
        matches!(self, XMatch::AllWithX | XMatch::AnyWithX)
    }
}

/// A headers binding's arguments, prepared for matching.
#[derive(Clone, Debug)]
pub struct HeadersPattern {
    mode: XMatch,
    /// The arguments that take part in matching, in key order.
    fields: Vec<(String, FieldValue)>,
}

impl HeadersPattern {
    /// Prepares a binding's arguments; refuses an invalid `x-match` as RabbitMQ does.
    pub fn parse(arguments: &FieldTable) -> Result<Self, InvalidBinding> {
        let mode = match arguments.get(X_MATCH) {
            None => XMatch::All,
            Some(FieldValue::LongString(v)) => match v.as_slice() {
                b"all" => XMatch::All,
                b"any" => XMatch::Any,
                b"all-with-x" => XMatch::AllWithX,
                b"any-with-x" => XMatch::AnyWithX,
                other => {
                    return Err(InvalidBinding::XMatchValue {
                        value: String::from_utf8_lossy(other).into_owned(),
                    })
                }
            },
            Some(other) => {
                return Err(InvalidBinding::XMatchType {
                    type_name: type_name(other),
                    value: display_value(other),
                })
            }
        };
        let fields = arguments
            .iter()
            .filter(|(k, _)| {
                k.as_str() != X_MATCH && (mode.includes_x_arguments() || !k.starts_with("x-"))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(HeadersPattern { mode, fields })
    }

    /// The matching mode `x-match` selected.
    pub fn mode(&self) -> XMatch {
        self.mode
    }

    /// Whether a message with `headers` matches.
    pub fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let field_matches =
            |(name, wanted): &(String, FieldValue)| match headers.and_then(|h| h.get(name)) {
                None => false,
                Some(_) if matches!(wanted, FieldValue::Void) => true,
                Some(actual) => erlang_eq(wanted, actual),
            };
        match self.mode {
            XMatch::All | XMatch::AllWithX => self.fields.iter().all(field_matches),
            XMatch::Any | XMatch::AnyWithX => self.fields.iter().any(field_matches),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::string(v)
    }

    fn pattern(pairs: &[(&str, FieldValue)]) -> HeadersPattern {
        HeadersPattern::parse(&table(pairs)).expect("valid binding")
    }

    #[test]
    fn all_needs_every_argument() {
        let p = pattern(&[("format", s("pdf")), ("type", s("report"))]);
        assert_eq!(p.mode(), XMatch::All);
        assert!(p.matches(Some(&table(&[("format", s("pdf")), ("type", s("report"))]))));
        assert!(p.matches(Some(&table(&[
            ("format", s("pdf")),
            ("type", s("report")),
            ("extra", s("ignored"))
        ]))));
        assert!(!p.matches(Some(&table(&[("format", s("pdf"))]))));
        assert!(!p.matches(Some(&table(&[("format", s("pdf")), ("type", s("log"))]))));
        assert!(!p.matches(None));
        let explicit = pattern(&[("x-match", s("all")), ("format", s("pdf"))]);
        assert!(explicit.matches(Some(&table(&[("format", s("pdf"))]))));
    }

    #[test]
    fn any_needs_one_argument() {
        let p = pattern(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]);
        assert!(p.matches(Some(&table(&[("format", s("pdf"))]))));
        assert!(p.matches(Some(&table(&[("format", s("zip")), ("type", s("report"))]))));
        assert!(!p.matches(Some(&table(&[("format", s("zip"))]))));
        assert!(!p.matches(Some(&FieldTable::new())));
        assert!(!p.matches(None));
    }

    #[test]
    fn without_arguments_all_matches_everything_and_any_nothing() {
        let all = pattern(&[]);
        assert!(all.matches(None));
        assert!(all.matches(Some(&table(&[("a", s("b"))]))));
        let any = pattern(&[("x-match", s("any"))]);
        assert!(!any.matches(None));
        assert!(!any.matches(Some(&table(&[("a", s("b"))]))));
    }

    #[test]
    fn x_arguments_are_ignored_unless_with_x() {
        let headers = table(&[("x-tenant", s("t1"))]);
        // Ignored: `all` with nothing left matches, `any` with nothing left does not.
        assert!(pattern(&[("x-tenant", s("other"))]).matches(Some(&headers)));
        assert!(!pattern(&[("x-match", s("any")), ("x-tenant", s("t1"))]).matches(Some(&headers)));
        // Included with -with-x.
        let all_x = pattern(&[("x-match", s("all-with-x")), ("x-tenant", s("t1"))]);
        assert_eq!(all_x.mode(), XMatch::AllWithX);
        assert!(all_x.matches(Some(&headers)));
        assert!(!all_x.matches(Some(&table(&[("x-tenant", s("t2"))]))));
        assert!(!all_x.matches(None));
        let any_x = pattern(&[
            ("x-match", s("any-with-x")),
            ("x-tenant", s("t1")),
            ("region", s("eu")),
        ]);
        assert!(any_x.matches(Some(&headers)));
        assert!(any_x.matches(Some(&table(&[("region", s("eu"))]))));
        assert!(!any_x.matches(Some(&table(&[("x-tenant", s("t2"))]))));
        // x-match itself is never matched, even with -with-x.
        assert!(all_x.matches(Some(&table(&[("x-tenant", s("t1")), ("x-match", s("no"))]))));
    }

    #[test]
    fn void_argument_means_presence() {
        let p = pattern(&[("flag", FieldValue::Void)]);
        assert!(p.matches(Some(&table(&[("flag", s("anything"))]))));
        assert!(p.matches(Some(&table(&[("flag", FieldValue::Void)]))));
        assert!(!p.matches(Some(&table(&[("other", s("x"))]))));
        // A Void header matches only a Void argument.
        assert!(!pattern(&[("flag", s(""))]).matches(Some(&table(&[("flag", FieldValue::Void)]))));
    }

    #[test]
    fn values_compare_like_erlang() {
        let p = pattern(&[("n", FieldValue::I32(1))]);
        assert!(p.matches(Some(&table(&[("n", FieldValue::I64(1))]))));
        assert!(p.matches(Some(&table(&[("n", FieldValue::U8(1))]))));
        assert!(p.matches(Some(&table(&[("n", FieldValue::F64(1.0))]))));
        assert!(!p.matches(Some(&table(&[("n", s("1"))]))));
        assert!(!p.matches(Some(&table(&[("n", FieldValue::Bool(true))]))));
        let bytes = pattern(&[("k", FieldValue::Bytes(b"v".to_vec()))]);
        assert!(bytes.matches(Some(&table(&[("k", s("v"))]))));
    }

    #[test]
    fn invalid_x_match_is_refused_like_rabbitmq() {
        let err = HeadersPattern::parse(&table(&[("x-match", s("some"))])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid x-match field value 'some'; expected all, any, all-with-x, or any-with-x"
        );
        assert_eq!(err.reply_code(), crate::error::code::PRECONDITION_FAILED);
        let err = HeadersPattern::parse(&table(&[("x-match", FieldValue::I32(1))])).unwrap_err();
        assert_eq!(
            err,
            InvalidBinding::XMatchType {
                type_name: "signedint",
                value: "1".into()
            }
        );
        // Case matters, as in RabbitMQ.
        assert!(HeadersPattern::parse(&table(&[("x-match", s("ALL"))])).is_err());
    }
}
