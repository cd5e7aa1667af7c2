//! Replies as data: RESP values to JSON, and the map-shaped replies
//! (`THREADS`, `LATENCY source`, ...) read the same whether they arrived as
//! RESP3 maps or as RESP2 flat `key, value, ...` arrays.

use rtedge_proto::Value;
use serde_json::{Map, Number, Value as Json};

/// What a command's reply is, beyond its RESP types: RESP2 loses the
/// difference between a map and an array, so we know it per command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Converted as it comes.
    Plain,
    /// A map (`HELLO`, `LATENCY source`, `CONFIG GET`).
    Map,
    /// An array of maps (`THREADS`, `IRQS`, `SOFTIRQS`, `MODULE LIST`).
    Table,
}

/// The shape of the reply to `args` (command name first), per CONTROL.md.
pub fn shape_of<A: AsRef<str>>(args: &[A]) -> Shape {
    let word = |index: usize| args.get(index).map(|arg| arg.as_ref().to_ascii_uppercase()).unwrap_or_default();
    match word(0).as_str() {
        "THREADS" | "IRQS" | "SOFTIRQS" | "TASKLETS" | "TIMERS" | "WORKQUEUES" => Shape::Table,
        "MODULE" if word(1) == "LIST" => Shape::Table,
        "HELLO" => Shape::Map,
        "LATENCY" if args.len() >= 2 => Shape::Map,
        "CONFIG" if word(1) == "GET" => Shape::Map,
        _ => Shape::Plain,
    }
}

/// The text of a string-like value, lossily decoded.
pub fn text(value: &Value) -> Option<String> {
    value.as_bytes().map(|bytes| String::from_utf8_lossy(bytes).into_owned())
}

/// A value read as an integer: `:n`, or a string of digits (RESP2 sends
/// some numbers as bulk strings), or a boolean as 0/1.
pub fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(number) => Some(*number),
        Value::Boolean(flag) => Some(i64::from(*flag)),
        Value::Double(number) if number.fract() == 0.0 && number.abs() < 9.0e15 => {
            // Exact: the value is integral and well inside i64.
            Some(*number as i64)
        }
        other => other.as_bytes().and_then(|bytes| std::str::from_utf8(bytes).ok()).and_then(|text| text.trim().parse().ok()),
    }
}

/// The key/value pairs of a map-shaped value: a RESP3 map, or a RESP2 flat
/// array of even length whose keys are strings. `None` for anything else.
pub fn pairs(value: &Value) -> Option<Vec<(String, &Value)>> {
    match value {
        Value::Map(entries) => entries.iter().map(|(key, value)| Some((key_text(key)?, value))).collect(),
        Value::Array(elements) if elements.len() % 2 == 0 => elements
            .chunks_exact(2)
            .map(|pair| match pair {
                [key, value] => Some((key_text(key)?, value)),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::Integer(number) => Some(number.to_string()),
        other => text(other),
    }
}

/// One map-shaped reply, looked up by field name.
#[derive(Clone, Debug)]
pub struct Record<'a> {
    fields: Vec<(String, &'a Value)>,
}

impl<'a> Record<'a> {
    /// The record of a map-shaped value.
    pub fn from_value(value: &'a Value) -> Option<Record<'a>> {
        pairs(value).map(|fields| Record { fields })
    }

    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.fields.iter().find(|(key, _)| key == name).map(|(_, value)| *value)
    }

    /// Field `name` as text (integers rendered in decimal).
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|value| match value {
            Value::Integer(number) => Some(number.to_string()),
            other => text(other),
        })
    }

    /// Field `name` as an integer.
    pub fn integer(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(integer)
    }

    /// The field names, in the server's order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(key, _)| key.as_str())
    }
}

/// The rows of a table-shaped reply (an array of maps); elements that are
/// not maps are skipped.
pub fn records(value: &Value) -> Vec<Record<'_>> {
    match value {
        Value::Array(rows) | Value::Set(rows) => rows.iter().filter_map(Record::from_value).collect(),
        _ => Vec::new(),
    }
}

/// A reply as JSON: maps become objects, arrays arrays, strings strings
/// (lossily decoded), nulls null. `shape` says where a RESP2 flat array
/// stands for a map.
pub fn to_json(value: &Value, shape: Shape) -> Json {
    match (shape, value) {
        (Shape::Map, Value::Array(_)) => map_json(value).unwrap_or_else(|| plain_json(value)),
        (Shape::Table, Value::Array(rows)) => {
            Json::Array(rows.iter().map(|row| map_json(row).unwrap_or_else(|| plain_json(row))).collect())
        }
        _ => plain_json(value),
    }
}

fn map_json(value: &Value) -> Option<Json> {
    let fields = pairs(value)?;
    Some(Json::Object(fields.into_iter().map(|(key, value)| (key, plain_json(value))).collect::<Map<_, _>>()))
}

/// A reply as JSON without shape knowledge.
pub fn plain_json(value: &Value) -> Json {
    match value {
        Value::Simple(bytes) | Value::Bulk(bytes) => Json::String(String::from_utf8_lossy(bytes).into_owned()),
        Value::Verbatim { text, .. } => Json::String(String::from_utf8_lossy(text).into_owned()),
        Value::Error(bytes) => {
            let mut object = Map::new();
            object.insert("error".into(), Json::String(String::from_utf8_lossy(bytes).into_owned()));
            Json::Object(object)
        }
        Value::Integer(number) => Json::from(*number),
        Value::Null | Value::NullArray => Json::Null,
        Value::Array(elements) | Value::Set(elements) | Value::Push(elements) => Json::Array(elements.iter().map(plain_json).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(key, value)| {
                    let key = key_text(key).unwrap_or_else(|| plain_json(key).to_string());
                    (key, plain_json(value))
                })
                .collect(),
        ),
        Value::Double(number) => Number::from_f64(*number).map(Json::Number).unwrap_or_else(|| Json::String(number.to_string())),
        Value::Boolean(flag) => Json::Bool(*flag),
        Value::BigNumber(digits) => {
            let digits = String::from_utf8_lossy(digits).into_owned();
            digits.parse::<i64>().map(Json::from).or_else(|_| digits.parse::<u64>().map(Json::from)).unwrap_or(Json::String(digits))
        }
        Value::Attributed { value, .. } => plain_json(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::Bulk(text.as_bytes().to_vec())
    }

    #[test]
    fn resp2_flat_arrays_become_objects_for_table_commands() {
        let row = Value::Array(vec![bulk("id"), Value::Integer(1), bulk("name"), bulk("rt0")]);
        let reply = Value::Array(vec![row.clone()]);
        assert_eq!(to_json(&reply, shape_of(&["threads"])).to_string(), r#"[{"id":1,"name":"rt0"}]"#);
        // Without shape knowledge the same bytes stay an array.
        assert_eq!(to_json(&reply, Shape::Plain).to_string(), r#"[["id",1,"name","rt0"]]"#);
        let resp3 = Value::Array(vec![Value::Map(vec![(bulk("id"), Value::Integer(1)), (bulk("name"), bulk("rt0"))])]);
        assert_eq!(to_json(&resp3, Shape::Table), to_json(&reply, Shape::Table));
    }

    #[test]
    fn scalars_convert_to_their_json_types() {
        assert_eq!(plain_json(&Value::Double(0.5)).to_string(), "0.5");
        assert_eq!(plain_json(&Value::Double(f64::INFINITY)).to_string(), r#""inf""#);
        assert_eq!(plain_json(&Value::Boolean(true)).to_string(), "true");
        assert_eq!(plain_json(&Value::Null).to_string(), "null");
        assert_eq!(plain_json(&Value::BigNumber(b"123".to_vec())).to_string(), "123");
        assert_eq!(
            plain_json(&Value::BigNumber(b"123456789012345678901234567890".to_vec())).to_string(),
            r#""123456789012345678901234567890""#
        );
        assert_eq!(plain_json(&Value::Error(b"ERR x".to_vec())).to_string(), r#"{"error":"ERR x"}"#);
        assert_eq!(plain_json(&Value::Simple(b"OK".to_vec())).to_string(), r#""OK""#);
    }

    #[test]
    fn map_shaped_replies_keep_nested_arrays() {
        let buckets = Value::Array(vec![Value::Array(vec![Value::Integer(1024), Value::Integer(3)])]);
        let reply = Value::Array(vec![bulk("source"), bulk("rt0"), bulk("buckets"), buckets]);
        assert_eq!(to_json(&reply, shape_of(&["LATENCY", "rt0"])).to_string(), r#"{"source":"rt0","buckets":[[1024,3]]}"#);
        // `LATENCY` alone lists names: an array stays an array.
        let names = Value::Array(vec![bulk("a"), bulk("b")]);
        assert_eq!(to_json(&names, shape_of(&["LATENCY"])).to_string(), r#"["a","b"]"#);
    }

    #[test]
    fn odd_or_non_string_keyed_arrays_are_not_maps() {
        assert!(pairs(&Value::Array(vec![bulk("a")])).is_none());
        assert!(pairs(&Value::Array(vec![Value::Null, bulk("a")])).is_none());
        let map = Value::Map(vec![(bulk("n"), bulk("42"))]);
        let record = Record::from_value(&map);
        assert_eq!(record.and_then(|record| record.integer("n")), Some(42));
    }
}
