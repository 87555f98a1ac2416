//! The broker's values as the API's JSON: field tables (arguments, headers) and
//! message properties, both ways. JSON numbers become AMQP `long`s (or `double`s),
//! strings `longstr`s, objects tables, as RabbitMQ's management API does.

use serde_json::{Map, Number, Value};
use warren_actors::message::{FieldTable, FieldValue, Properties};

use crate::error::ApiError;

/// A field value as JSON.
pub fn value_to_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::I8(n) => (*n).into(),
        FieldValue::U8(n) => (*n).into(),
        FieldValue::I16(n) => (*n).into(),
        FieldValue::U16(n) => (*n).into(),
        FieldValue::I32(n) => (*n).into(),
        FieldValue::U32(n) => (*n).into(),
        FieldValue::I64(n) => (*n).into(),
        FieldValue::Timestamp(n) => (*n).into(),
        FieldValue::F32(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        FieldValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        FieldValue::Decimal(scale, unscaled) => {
            let value = f64::from(*unscaled) / 10f64.powi(i32::from(*scale));
            Number::from_f64(value).map_or(Value::Null, Value::Number)
        }
        FieldValue::LongString(bytes) | FieldValue::Bytes(bytes) => {
            Value::String(String::from_utf8_lossy(bytes).into_owned())
        }
        FieldValue::Array(items) => Value::Array(items.iter().map(value_to_json).collect()),
        FieldValue::Table(t) => table_to_json(t),
        FieldValue::Void => Value::Null,
    }
}

/// A field table as a JSON object.
pub fn table_to_json(t: &FieldTable) -> Value {
    Value::Object(
        t.iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect::<Map<String, Value>>(),
    )
}

/// A JSON value as a field value.
pub fn value_from_json(v: &Value) -> FieldValue {
    match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => FieldValue::string(s.clone()),
        Value::Array(items) => FieldValue::Array(items.iter().map(value_from_json).collect()),
        Value::Object(map) => FieldValue::Table(
            map.iter()
                .map(|(k, v)| (k.clone(), value_from_json(v)))
                .collect(),
        ),
    }
}

/// A JSON object (or `null`/absent: empty) as a field table; `what` names it in the
/// error.
pub fn table_from_json(v: Option<&Value>, what: &str) -> Result<FieldTable, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(FieldTable::new()),
        Some(Value::Object(map)) => Ok(map
            .iter()
            .map(|(k, v)| (k.clone(), value_from_json(v)))
            .collect()),
        Some(other) => Err(ApiError::bad_request(format!(
            "'{what}' must be a JSON object, not {}",
            kind_of(other)
        ))),
    }
}

/// AMQP's short strings (names, routing keys) hold at most 255 bytes.
pub fn short_string(what: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "{what} is {} bytes long: AMQP allows at most 255",
            value.len()
        )));
    }
    Ok(())
}

/// The JSON type of a value, for error texts.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Message properties as RabbitMQ shows them (only those set).
pub fn properties_to_json(p: &Properties) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put("content_type", p.content_type.clone().map(Value::String));
    put(
        "content_encoding",
        p.content_encoding.clone().map(Value::String),
    );
    put("headers", p.headers.as_ref().map(table_to_json));
    put("delivery_mode", p.delivery_mode.map(Value::from));
    put("priority", p.priority.map(Value::from));
    put(
        "correlation_id",
        p.correlation_id.clone().map(Value::String),
    );
    put("reply_to", p.reply_to.clone().map(Value::String));
    put("expiration", p.expiration.clone().map(Value::String));
    put("message_id", p.message_id.clone().map(Value::String));
    put("timestamp", p.timestamp.map(Value::from));
    put("type", p.kind.clone().map(Value::String));
    put("user_id", p.user_id.clone().map(Value::String));
    put("app_id", p.app_id.clone().map(Value::String));
    Value::Object(m)
}

/// Message properties from the JSON of a publish; unknown names and values of the
/// wrong type are refused.
pub fn properties_from_json(v: Option<&Value>) -> Result<Properties, ApiError> {
    let map = match v {
        None | Some(Value::Null) => return Ok(Properties::default()),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "'properties' must be a JSON object, not {}",
                kind_of(other)
            )))
        }
    };
    let mut p = Properties::default();
    for (name, value) in map {
        let text = || -> Result<String, ApiError> {
            value
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| ApiError::bad_request(format!("property '{name}' must be a string")))
        };
        let small = |max: u64| -> Result<u8, ApiError> {
            value
                .as_u64()
                .filter(|n| *n <= max)
                .map(|n| n as u8)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "property '{name}' must be a number from 0 to {max}"
                    ))
                })
        };
        match name.as_str() {
            "content_type" => p.content_type = Some(text()?),
            "content_encoding" => p.content_encoding = Some(text()?),
            "headers" => p.headers = Some(table_from_json(Some(value), "headers")?),
            "delivery_mode" => p.delivery_mode = Some(small(2)?),
            "priority" => p.priority = Some(small(255)?),
            "correlation_id" => p.correlation_id = Some(text()?),
            "reply_to" => p.reply_to = Some(text()?),
            "expiration" => {
                // RabbitMQ's rule: a non-negative integer of milliseconds, as text.
                let ttl = text()?;
                if ttl.parse::<u64>().is_err() {
                    return Err(ApiError::bad_request(format!(
                        "property 'expiration' must be a number of milliseconds, not '{ttl}'"
                    )));
                }
                p.expiration = Some(ttl);
            }
            "message_id" => p.message_id = Some(text()?),
            "timestamp" => {
                p.timestamp = Some(value.as_u64().ok_or_else(|| {
                    ApiError::bad_request("property 'timestamp' must be seconds since the epoch")
                })?)
            }
            "type" => p.kind = Some(text()?),
            "user_id" => p.user_id = Some(text()?),
            "app_id" => p.app_id = Some(text()?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown message property '{other}'"
                )))
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_go_both_ways() {
        let json = json!({"x-max-length": 10, "x-queue-type": "quorum", "ratio": 0.5,
                          "flag": true, "nested": {"a": [1, "b"]}, "none": null});
        let table = table_from_json(Some(&json), "arguments").unwrap();
        assert_eq!(table["x-max-length"], FieldValue::I64(10));
        assert_eq!(table["x-queue-type"].as_str(), Some("quorum"));
        assert_eq!(table_to_json(&table), json);
        assert!(table_from_json(Some(&json!([1])), "arguments").is_err());
        assert!(table_from_json(None, "arguments").unwrap().is_empty());
    }

    #[test]
    fn properties_go_both_ways_and_bad_ones_are_refused() {
        let json = json!({"delivery_mode": 2, "headers": {"h": "v"}, "type": "t",
                          "content_type": "text/plain", "timestamp": 5});
        let p = properties_from_json(Some(&json)).unwrap();
        assert!(p.is_persistent());
        assert_eq!(p.kind.as_deref(), Some("t"));
        assert_eq!(properties_to_json(&p), json);
        for bad in [
            json!({"delivery_mode": 3}),
            json!({"colour": "red"}),
            json!({"priority": "high"}),
            json!("x"),
        ] {
            let e = properties_from_json(Some(&bad)).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
