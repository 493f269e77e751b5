//! Parsing a token's header and claims: a JSON object whose member names are
//! unique. serde_json keeps the last of two equal names, other parsers the
//! first; refusing duplicates means this plugin and every policy after it
//! read the same `alg`, `sub` or `role`.

use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, MapAccess, Visitor};
use serde_json::{Map, Value};

/// Why a segment is not an acceptable JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectError {
    /// Not UTF-8 JSON at all.
    NotJson,
    /// JSON, but an array, string, number, ...
    NotObject,
    /// A member name appears twice.
    Duplicate,
}

const DUPLICATE: &str = "duplicate member";

struct UniqueMap;

impl<'de> Visitor<'de> for UniqueMap {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = Map::new();
        while let Some(name) = access.next_key::<String>()? {
            if map.contains_key(&name) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let value: Value = access.next_value()?;
            map.insert(name, value);
        }
        Ok(map)
    }
}

/// Parses `bytes` as one JSON object with unique member names.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ObjectError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ObjectError::NotJson)?;
    if !text.trim_start().starts_with('{') {
        // Tell "valid JSON, wrong shape" from garbage, for a precise reason.
        return Err(match serde_json::from_str::<Value>(text) {
            Ok(_) => ObjectError::NotObject,
            Err(_) => ObjectError::NotJson,
        });
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let map = de.deserialize_map(UniqueMap).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE) { ObjectError::Duplicate } else { ObjectError::NotJson }
    })?;
    de.end().map_err(|_| ObjectError::NotJson)?;
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::{ObjectError, parse_object};

    #[test]
    fn objects_with_unique_names_parse() {
        let map = parse_object(br#" {"alg":"RS256","kid":"k1","n":{"alg":1,"alg":2}} "#).unwrap();
        assert_eq!(map["alg"], "RS256");
        assert_eq!(map.len(), 3, "only top-level names must be unique");
    }

    #[test]
    fn everything_else_is_refused_with_its_reason() {
        assert_eq!(parse_object(br#"["RS256"]"#), Err(ObjectError::NotObject));
        assert_eq!(parse_object(b"\"x\""), Err(ObjectError::NotObject));
        assert_eq!(parse_object(b"{\"alg\":"), Err(ObjectError::NotJson));
        assert_eq!(parse_object(b"{} {}"), Err(ObjectError::NotJson));
        assert_eq!(parse_object(b"\xff{}"), Err(ObjectError::NotJson));
        assert_eq!(parse_object(b"nope"), Err(ObjectError::NotJson));
        assert_eq!(parse_object(br#"{"alg":"HS256","alg":"RS256"}"#), Err(ObjectError::Duplicate));
    }
}
