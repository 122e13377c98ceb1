//! Strict JSON for publish bodies: a key given twice in one object, at any depth, is refused.
//! serde_json keeps the last of two equal keys when it builds a map, so `{"topic":"a",
//! "topic":"b"}` would publish to `b` while a proxy or log that keeps the first saw `a`; and a
//! duplicate inside `data` would be dropped from what subscribers get. The check is one pass of
//! serde_json's parser that builds nothing but the set of keys of the object being read.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

use super::error::ApiError;

/// Parses `body` as `T`, refusing invalid JSON and duplicate keys with a one-line 400.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let invalid = |e: serde_json::Error| ApiError::bad(format!("invalid JSON: {e}"));
    serde_json::from_slice::<NoDuplicateKeys>(body).map_err(invalid)?;
    serde_json::from_slice(body).map_err(invalid)
}

/// Any JSON value whose objects hold each key once.
struct NoDuplicateKeys;

impl<'de> de::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        // Keys are compared unescaped: "a" and "\u0061" are the same key.
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            map.next_value::<NoDuplicateKeys>()?;
            keys.insert(key);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for body in [
            r#"{"topic":"a","topic":"b"}"#,
            r#"{"topic":"a","data":{"k":1,"k":2}}"#,
            r#"[{"topic":"a"},{"topic":"b","id":"x","id":"y"}]"#,
            r#"{"topic":"a","\u0074opic":"b"}"#,
            r#"{"data":[[{"x":1,"x":1}]]}"#,
        ] {
            let err = parse::<Value>(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("duplicate key"), "{body}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn distinct_keys_and_every_kind_of_value_pass() {
        let body =
            r#"{"topic":["a","b"],"data":{"k":[1,-2,3.5,true,null,"s"],"j":{}},"x":{"k":1}}"#;
        let value: Value = parse(body.as_bytes()).unwrap();
        assert_eq!(value["data"]["k"][2], 3.5);
        assert!(parse::<Value>(b"{\"a\":1").is_err());
    }
}
