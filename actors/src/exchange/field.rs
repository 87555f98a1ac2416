//! Comparing field values, in the two ways exchanges need.
//!
//! - **Identity** ([`cmp_tables`], [`hash_table`]): two bindings are the same binding
//!   when their arguments are the same typed values. RabbitMQ keeps arguments as
//!   `{Key, Type, Value}` triples, so `I32(1)` and `I64(1)` are different arguments.
//!   Floats compare by bit pattern so that the order is total and agrees with the hash
//!   (a `NaN` argument is equal to itself, unlike with `PartialEq`).
//! - **RabbitMQ's `==`** ([`erlang_eq`]): how the headers exchange compares a binding
//!   value with a header value. RabbitMQ decodes both to Erlang terms and compares them
//!   with `==`, where the AMQP type tag is gone at the top level: every integer type
//!   (and `Timestamp`) is an Erlang integer, `F32`/`F64` are floats, `LongString` and
//!   `Bytes` are both binaries. So `I32(1) == I64(1) == U8(1) == Timestamp(1)`,
//!   `I32(1) == F64(1.0)` (Erlang `1 == 1.0` is true), `LongString("a") == Bytes("a")`.
//!   Inside arrays and tables the type tags are part of the term, so nested values must
//!   also have the same type.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use crate::message::{FieldTable, FieldValue};

/// RabbitMQ's name of a value's AMQP type (see [`FieldValue::type_name`]).
pub fn type_name(v: &FieldValue) -> &'static str {
    v.type_name()
}

/// A value as RabbitMQ's error texts show it: strings as text, the rest as numbers or
/// words.
pub fn display_value(v: &FieldValue) -> String {
    match v {
        FieldValue::LongString(b) | FieldValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::Void => "undefined".to_owned(),
        FieldValue::Decimal(scale, value) => format!("{{{scale},{value}}}"),
        FieldValue::F32(f) => f.to_string(),
        FieldValue::F64(f) => f.to_string(),
        FieldValue::Array(items) => {
            let items: Vec<String> = items.iter().map(display_value).collect();
            format!("[{}]", items.join(","))
        }
        FieldValue::Table(t) => {
            let items: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{k}={}", display_value(v)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        other => match as_integer(other) {
            Some(i) => i.to_string(),
            None => String::new(),
        },
    }
}

/// The position of a variant in [`FieldValue`]: the first key of the identity order.
fn tag(v: &FieldValue) -> u8 {
    match v {
        FieldValue::Bool(_) => 0,
        FieldValue::I8(_) => 1,
        FieldValue::U8(_) => 2,
        FieldValue::I16(_) => 3,
        FieldValue::U16(_) => 4,
        FieldValue::I32(_) => 5,
        FieldValue::U32(_) => 6,
        FieldValue::I64(_) => 7,
        FieldValue::F32(_) => 8,
        FieldValue::F64(_) => 9,
        FieldValue::Decimal(..) => 10,
        FieldValue::LongString(_) => 11,
        FieldValue::Array(_) => 12,
        FieldValue::Timestamp(_) => 13,
        FieldValue::Table(_) => 14,
        FieldValue::Bytes(_) => 15,
        FieldValue::Void => 16,
    }
}

/// The identity order of values: by type, then by value (floats by `total_cmp`, which
/// is equality of bit patterns). Consistent with [`hash_value`].
pub fn cmp_values(a: &FieldValue, b: &FieldValue) -> Ordering {
    use FieldValue as V;
    match (a, b) {
        (V::Bool(x), V::Bool(y)) => x.cmp(y),
        (V::I8(x), V::I8(y)) => x.cmp(y),
        (V::U8(x), V::U8(y)) => x.cmp(y),
        (V::I16(x), V::I16(y)) => x.cmp(y),
        (V::U16(x), V::U16(y)) => x.cmp(y),
        (V::I32(x), V::I32(y)) => x.cmp(y),
        (V::U32(x), V::U32(y)) => x.cmp(y),
        (V::I64(x), V::I64(y)) => x.cmp(y),
        (V::F32(x), V::F32(y)) => x.total_cmp(y),
        (V::F64(x), V::F64(y)) => x.total_cmp(y),
        (V::Decimal(s1, v1), V::Decimal(s2, v2)) => (s1, v1).cmp(&(s2, v2)),
        (V::LongString(x), V::LongString(y)) | (V::Bytes(x), V::Bytes(y)) => x.cmp(y),
        (V::Array(x), V::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                match cmp_values(p, q) {
                    Ordering::Equal => {}
                    other => return other,
                }
            }
            x.len().cmp(&y.len())
        }
        (V::Timestamp(x), V::Timestamp(y)) => x.cmp(y),
        (V::Table(x), V::Table(y)) => cmp_tables(x, y),
        (V::Void, V::Void) => Ordering::Equal,
        _ => tag(a).cmp(&tag(b)),
    }
}

/// The identity order of tables: entry by entry in key order.
pub fn cmp_tables(a: &FieldTable, b: &FieldTable) -> Ordering {
    for ((ka, va), (kb, vb)) in a.iter().zip(b) {
        match ka.cmp(kb).then_with(|| cmp_values(va, vb)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

/// Hashes a value consistently with [`cmp_values`].
pub fn hash_value<H: Hasher>(v: &FieldValue, h: &mut H) {
    tag(v).hash(h);
    match v {
        FieldValue::Bool(x) => x.hash(h),
        FieldValue::I8(x) => x.hash(h),
        FieldValue::U8(x) => x.hash(h),
        FieldValue::I16(x) => x.hash(h),
        FieldValue::U16(x) => x.hash(h),
        FieldValue::I32(x) => x.hash(h),
        FieldValue::U32(x) => x.hash(h),
        FieldValue::I64(x) => x.hash(h),
        FieldValue::F32(x) => x.to_bits().hash(h),
        FieldValue::F64(x) => x.to_bits().hash(h),
        FieldValue::Decimal(s, x) => (s, x).hash(h),
        FieldValue::LongString(b) | FieldValue::Bytes(b) => b.hash(h),
        FieldValue::Array(items) => {
            items.len().hash(h);
            for item in items {
                hash_value(item, h);
            }
        }
        FieldValue::Timestamp(x) => x.hash(h),
        FieldValue::Table(t) => hash_table(t, h),
        FieldValue::Void => {}
    }
}

/// Hashes a table consistently with [`cmp_tables`].
pub fn hash_table<H: Hasher>(t: &FieldTable, h: &mut H) {
    t.len().hash(h);
    for (k, v) in t {
        k.hash(h);
        hash_value(v, h);
    }
}

/// The value as an Erlang integer, for the types RabbitMQ decodes to integers.
fn as_integer(v: &FieldValue) -> Option<i128> {
    match *v {
        FieldValue::I8(x) => Some(x.into()),
        FieldValue::U8(x) => Some(x.into()),
        FieldValue::I16(x) => Some(x.into()),
        FieldValue::U16(x) => Some(x.into()),
        FieldValue::I32(x) => Some(x.into()),
        FieldValue::U32(x) => Some(x.into()),
        FieldValue::I64(x) => Some(x.into()),
        FieldValue::Timestamp(x) => Some(x.into()),
        _ => None,
    }
}

/// The value as an Erlang float (an `F32` is widened exactly, as RabbitMQ's decoder
/// does).
fn as_float(v: &FieldValue) -> Option<f64> {
    match *v {
        FieldValue::F32(x) => Some(x.into()),
        FieldValue::F64(x) => Some(x),
        _ => None,
    }
}

/// Erlang's `1 == 1.0`: an integer equals a float when the float is exactly that
/// integer (Erlang compares the two exactly, without rounding the integer).
fn int_eq_float(i: i128, f: f64) -> bool {
    // `as` saturates; a float beyond the i128 range can't equal a value that came
    // from at most 64 bits, and saturation keeps it out of that range.
    f.is_finite() && f.fract() == 0.0 && f as i128 == i
}

/// RabbitMQ's header comparison: Erlang `==` on the decoded terms (see the module
/// documentation). `NaN` equals nothing, not even itself.
pub fn erlang_eq(a: &FieldValue, b: &FieldValue) -> bool {
    erlang_cmp(a, b, false)
}

/// Erlang `=:=` on the decoded terms: like [`erlang_eq`] but an integer never equals a
/// float. RabbitMQ's argument-equivalence check falls back to it.
pub fn erlang_exact_eq(a: &FieldValue, b: &FieldValue) -> bool {
    erlang_cmp(a, b, true)
}

fn erlang_cmp(a: &FieldValue, b: &FieldValue, exact: bool) -> bool {
    use FieldValue as V;
    if let (Some(x), Some(y)) = (as_integer(a), as_integer(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (as_float(a), as_float(b)) {
        return x == y;
    }
    match (a, b) {
        (V::LongString(x) | V::Bytes(x), V::LongString(y) | V::Bytes(y)) => x == y,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Decimal(s1, v1), V::Decimal(s2, v2)) => s1 == s2 && v1 == v2,
        (V::Void, V::Void) => true,
        // Nested values keep their type tag: `[{long, 1}]` is not `[{signedint, 1}]`.
        (V::Array(x), V::Array(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| tag(p) == tag(q) && erlang_cmp(p, q, exact))
        }
        (V::Table(x), V::Table(y)) => {
            x.len() == y.len()
                && x.iter().zip(y).all(|((kp, p), (kq, q))| {
                    kp == kq && tag(p) == tag(q) && erlang_cmp(p, q, exact)
                })
        }
        _ => match (as_integer(a), as_float(b), as_float(a), as_integer(b)) {
            (Some(i), Some(f), _, _) | (_, _, Some(f), Some(i)) => !exact && int_eq_float(i, f),
            _ => false,
        },
    }
}

/// RabbitMQ's `type_class`: integer types (and decimal) form one class, the two float
/// types another, every other type is its own class.
pub fn type_class(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::I8(_)
        | FieldValue::U8(_)
        | FieldValue::I16(_)
        | FieldValue::U16(_)
        | FieldValue::I32(_)
        | FieldValue::U32(_)
        | FieldValue::I64(_)
        | FieldValue::Decimal(..) => "int",
        FieldValue::F32(_) | FieldValue::F64(_) => "float",
        other => type_name(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn s(x: &str) -> FieldValue {
        FieldValue::string(x)
    }

    fn hash_of(v: &FieldValue) -> u64 {
        let mut h = DefaultHasher::new();
        hash_value(v, &mut h);
        h.finish()
    }

    #[test]
    fn erlang_eq_ignores_the_integer_type_at_the_top_level() {
        let ones = [
            FieldValue::I8(1),
            FieldValue::U8(1),
            FieldValue::I16(1),
            FieldValue::U16(1),
            FieldValue::I32(1),
            FieldValue::U32(1),
            FieldValue::I64(1),
            FieldValue::Timestamp(1),
        ];
        for a in &ones {
            for b in &ones {
                assert!(erlang_eq(a, b), "{a:?} == {b:?}");
            }
        }
        assert!(!erlang_eq(&FieldValue::I32(1), &FieldValue::I32(2)));
        assert!(!erlang_eq(
            &FieldValue::I64(-1),
            &FieldValue::Timestamp(u64::MAX)
        ));
    }

    #[test]
    fn erlang_eq_compares_integers_and_floats_numerically() {
        assert!(erlang_eq(&FieldValue::I32(1), &FieldValue::F64(1.0)));
        assert!(erlang_eq(&FieldValue::F32(2.0), &FieldValue::I8(2)));
        assert!(!erlang_eq(&FieldValue::I32(1), &FieldValue::F64(1.5)));
        assert!(erlang_eq(&FieldValue::F32(1.5), &FieldValue::F64(1.5)));
        // 0.1f32 widened is not 0.1f64: RabbitMQ widens the same way.
        assert!(!erlang_eq(&FieldValue::F32(0.1), &FieldValue::F64(0.1)));
        assert!(!erlang_eq(
            &FieldValue::F64(f64::NAN),
            &FieldValue::F64(f64::NAN)
        ));
        assert!(!erlang_eq(
            &FieldValue::I64(i64::MAX),
            &FieldValue::F64(f64::INFINITY)
        ));
        // 2^63 is exactly representable but is not i64::MAX (2^63 - 1): no rounding.
        let two_63 = 2f64.powi(63);
        assert!(!erlang_eq(
            &FieldValue::I64(i64::MAX),
            &FieldValue::F64(two_63)
        ));
        assert!(erlang_eq(
            &FieldValue::Timestamp(1 << 63),
            &FieldValue::F64(two_63)
        ));
        assert!(!erlang_exact_eq(&FieldValue::I32(1), &FieldValue::F64(1.0)));
        assert!(erlang_exact_eq(&FieldValue::I32(1), &FieldValue::I64(1)));
    }

    #[test]
    fn erlang_eq_on_strings_bools_decimals_and_void() {
        assert!(erlang_eq(&s("a"), &FieldValue::Bytes(b"a".to_vec())));
        assert!(!erlang_eq(&s("a"), &s("b")));
        assert!(!erlang_eq(&s("1"), &FieldValue::I32(1)));
        assert!(!erlang_eq(&FieldValue::Bool(true), &FieldValue::I8(1)));
        assert!(erlang_eq(
            &FieldValue::Bool(false),
            &FieldValue::Bool(false)
        ));
        assert!(erlang_eq(
            &FieldValue::Decimal(2, 150),
            &FieldValue::Decimal(2, 150)
        ));
        // {1, 15} and {2, 150} are different tuples, though the same number.
        assert!(!erlang_eq(
            &FieldValue::Decimal(1, 15),
            &FieldValue::Decimal(2, 150)
        ));
        assert!(!erlang_eq(&FieldValue::Decimal(0, 1), &FieldValue::I32(1)));
        assert!(erlang_eq(&FieldValue::Void, &FieldValue::Void));
        assert!(!erlang_eq(&FieldValue::Void, &s("")));
    }

    #[test]
    fn nested_values_keep_their_type() {
        let a = FieldValue::Array(vec![FieldValue::I32(1), s("x")]);
        let b = FieldValue::Array(vec![FieldValue::I32(1), s("x")]);
        let c = FieldValue::Array(vec![FieldValue::I64(1), s("x")]);
        let d = FieldValue::Array(vec![FieldValue::I32(1)]);
        assert!(erlang_eq(&a, &b));
        assert!(!erlang_eq(&a, &c));
        assert!(!erlang_eq(&a, &d));
        let t1 = FieldValue::Table(FieldTable::from([("k".into(), FieldValue::U8(3))]));
        let t2 = FieldValue::Table(FieldTable::from([("k".into(), FieldValue::U8(3))]));
        let t3 = FieldValue::Table(FieldTable::from([("k".into(), FieldValue::I8(3))]));
        let t4 = FieldValue::Table(FieldTable::from([("j".into(), FieldValue::U8(3))]));
        assert!(erlang_eq(&t1, &t2));
        assert!(!erlang_eq(&t1, &t3));
        assert!(!erlang_eq(&t1, &t4));
    }

    #[test]
    fn identity_distinguishes_types_and_agrees_with_hash() {
        let values = [
            FieldValue::I32(1),
            FieldValue::I64(1),
            FieldValue::F64(0.0),
            FieldValue::F64(-0.0),
            FieldValue::F64(f64::NAN),
            s("a"),
            FieldValue::Bytes(b"a".to_vec()),
            FieldValue::Void,
            FieldValue::Array(vec![FieldValue::Void]),
        ];
        for (i, a) in values.iter().enumerate() {
            for (j, b) in values.iter().enumerate() {
                let same = cmp_values(a, b) == Ordering::Equal;
                assert_eq!(same, i == j, "{a:?} vs {b:?}");
                if same {
                    assert_eq!(hash_of(a), hash_of(b));
                }
                // Antisymmetric, so the order can back a sorted set.
                assert_eq!(cmp_values(a, b), cmp_values(b, a).reverse());
            }
        }
    }

    #[test]
    fn type_names_and_classes_are_rabbitmqs() {
        assert_eq!(type_name(&FieldValue::I32(0)), "signedint");
        assert_eq!(type_name(&s("")), "longstr");
        assert_eq!(
            type_class(&FieldValue::U16(0)),
            type_class(&FieldValue::Decimal(0, 0))
        );
        assert_eq!(type_class(&FieldValue::F32(0.0)), "float");
        assert_ne!(type_class(&s("")), type_class(&FieldValue::Bytes(vec![])));
        assert_eq!(display_value(&s("ae")), "ae");
        assert_eq!(display_value(&FieldValue::U32(7)), "7");
    }
}
