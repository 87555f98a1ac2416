//! Between `amq-protocol`'s wire types and the broker's own: field tables, message
//! properties, short strings.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable as WireTable, LongString,
    ShortString,
};
use warren_actors::message::{FieldTable, FieldValue, Properties};

/// A short string (at most 255 bytes): longer text is cut at a character boundary,
/// never a panic.
pub fn short(s: &str) -> ShortString {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::try_new(&s[..end]).unwrap_or_default()
}

/// A field value from the wire (the broker has no short strings: they become long ones).
pub fn value_from_wire(v: &AMQPValue) -> FieldValue {
    match v {
        AMQPValue::Boolean(b) => FieldValue::Bool(*b),
        AMQPValue::ShortShortInt(i) => FieldValue::I8(*i),
        AMQPValue::ShortShortUInt(u) => FieldValue::U8(*u),
        AMQPValue::ShortInt(i) => FieldValue::I16(*i),
        AMQPValue::ShortUInt(u) => FieldValue::U16(*u),
        AMQPValue::LongInt(i) => FieldValue::I32(*i),
        AMQPValue::LongUInt(u) => FieldValue::U32(*u),
        AMQPValue::LongLongInt(i) => FieldValue::I64(*i),
        AMQPValue::Float(f) => FieldValue::F32(*f),
        AMQPValue::Double(d) => FieldValue::F64(*d),
        AMQPValue::DecimalValue(d) => FieldValue::Decimal(d.scale, d.value),
        AMQPValue::ShortString(s) => FieldValue::LongString(s.as_str().as_bytes().to_vec()),
        AMQPValue::LongString(s) => FieldValue::LongString(s.as_bytes().to_vec()),
        AMQPValue::FieldArray(a) => {
            FieldValue::Array(a.as_slice().iter().map(value_from_wire).collect())
        }
        AMQPValue::Timestamp(t) => FieldValue::Timestamp(*t),
        AMQPValue::FieldTable(t) => FieldValue::Table(table_from_wire(t)),
        AMQPValue::ByteArray(b) => FieldValue::Bytes(b.as_slice().to_vec()),
        AMQPValue::Void => FieldValue::Void,
    }
}

/// A field value for the wire.
pub fn value_to_wire(v: &FieldValue) -> AMQPValue {
    match v {
        FieldValue::Bool(b) => AMQPValue::Boolean(*b),
        FieldValue::I8(i) => AMQPValue::ShortShortInt(*i),
        FieldValue::U8(u) => AMQPValue::ShortShortUInt(*u),
        FieldValue::I16(i) => AMQPValue::ShortInt(*i),
        FieldValue::U16(u) => AMQPValue::ShortUInt(*u),
        FieldValue::I32(i) => AMQPValue::LongInt(*i),
        FieldValue::U32(u) => AMQPValue::LongUInt(*u),
        FieldValue::I64(i) => AMQPValue::LongLongInt(*i),
        FieldValue::F32(f) => AMQPValue::Float(*f),
        FieldValue::F64(d) => AMQPValue::Double(*d),
        FieldValue::Decimal(scale, value) => AMQPValue::DecimalValue(DecimalValue {
            scale: *scale,
            value: *value,
        }),
        FieldValue::LongString(s) => AMQPValue::LongString(LongString::from(s.clone())),
        FieldValue::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(value_to_wire).collect::<Vec<_>>(),
        )),
        FieldValue::Timestamp(t) => AMQPValue::Timestamp(*t),
        FieldValue::Table(t) => AMQPValue::FieldTable(table_to_wire(t)),
        FieldValue::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.clone())),
        FieldValue::Void => AMQPValue::Void,
    }
}

/// A field table (arguments, headers) from the wire.
pub fn table_from_wire(t: &WireTable) -> FieldTable {
    t.inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), value_from_wire(v)))
        .collect()
}

/// A field table for the wire.
pub fn table_to_wire(t: &FieldTable) -> WireTable {
    let mut out = WireTable::default();
    for (k, v) in t {
        out.insert(short(k), value_to_wire(v));
    }
    out
}

fn text(s: &Option<ShortString>) -> Option<String> {
    s.as_ref().map(|s| s.as_str().to_string())
}

/// A content header's properties as the broker keeps them.
pub fn properties_from_wire(p: &AMQPProperties) -> Properties {
    Properties {
        content_type: text(p.content_type()),
        content_encoding: text(p.content_encoding()),
        headers: p.headers().as_ref().map(table_from_wire),
        delivery_mode: *p.delivery_mode(),
        priority: *p.priority(),
        correlation_id: text(p.correlation_id()),
        reply_to: text(p.reply_to()),
        expiration: text(p.expiration()),
        message_id: text(p.message_id()),
        timestamp: *p.timestamp(),
        kind: text(p.kind()),
        user_id: text(p.user_id()),
        app_id: text(p.app_id()),
    }
}

/// A message's properties for a content header.
pub fn properties_to_wire(p: &Properties) -> AMQPProperties {
    let mut out = AMQPProperties::default();
    if let Some(v) = &p.content_type {
        out = out.with_content_type(short(v));
    }
    if let Some(v) = &p.content_encoding {
        out = out.with_content_encoding(short(v));
    }
    if let Some(v) = &p.headers {
        out = out.with_headers(table_to_wire(v));
    }
    if let Some(v) = p.delivery_mode {
        out = out.with_delivery_mode(v);
    }
    if let Some(v) = p.priority {
        out = out.with_priority(v);
    }
    if let Some(v) = &p.correlation_id {
        out = out.with_correlation_id(short(v));
    }
    if let Some(v) = &p.reply_to {
        out = out.with_reply_to(short(v));
    }
    if let Some(v) = &p.expiration {
        out = out.with_expiration(short(v));
    }
    if let Some(v) = &p.message_id {
        out = out.with_message_id(short(v));
    }
    if let Some(v) = p.timestamp {
        out = out.with_timestamp(v);
    }
    if let Some(v) = &p.kind {
        out = out.with_type(short(v));
    }
    if let Some(v) = &p.user_id {
        out = out.with_user_id(short(v));
    }
    if let Some(v) = &p.app_id {
        out = out.with_app_id(short(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_cut_not_panicked() {
        let long = "é".repeat(200); // 400 bytes
        let s = short(&long);
        assert!(s.as_str().len() <= 255);
        assert!(s.as_str().chars().all(|c| c == 'é'));
    }

    #[test]
    fn properties_and_tables_round_trip() {
        let mut headers = FieldTable::new();
        headers.insert("x-count".into(), FieldValue::I64(3));
        headers.insert(
            "nested".into(),
            FieldValue::Table([("a".to_string(), FieldValue::Bool(true))].into()),
        );
        let p = Properties {
            content_type: Some("text/plain".into()),
            headers: Some(headers),
            delivery_mode: Some(2),
            priority: Some(5),
            expiration: Some("60000".into()),
            timestamp: Some(1_700_000_000),
            kind: Some("order".into()),
            ..Default::default()
        };
        assert_eq!(properties_from_wire(&properties_to_wire(&p)), p);
    }
}
