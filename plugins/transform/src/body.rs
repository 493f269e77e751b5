//! JSON body edits by JSON Pointer, and the body size limit.
//!
//! A body is parsed, edited and serialised again only when an edit changed
//! it: a body the rules leave alone keeps its exact bytes — unless it names
//! a member twice in an object. The rules see the last of the two (as
//! serde does), a parser that takes the first or merges both would see
//! what a rule removed (`{"user":{"role":"admin"},"user":{}}` passed
//! `remove = ["/user/role"]` untouched, and Go's decoder read the role): so
//! such a body goes on as the rules saw it, serialised again. Edits run on the
//! parsed copy, so a body that does not fit (a [`Conflict`]) is never
//! half-edited — the caller refuses or passes the original.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::pointer::{self, Conflict, Pointer};

/// `body = { rename = {...}, remove = [...], set = {...} }` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBodyEdits {
    /// JSON Pointer → JSON Pointer: `{ "/userName" = "/user_name" }`; an absent member is left alone.
    #[serde(default)]
    rename: BTreeMap<String, String>,
    /// JSON Pointers of what to remove; an absent one is left alone.
    #[serde(default)]
    remove: Vec<String>,
    /// JSON Pointer → any value to put there, creating missing objects on the way.
    #[serde(default)]
    set: BTreeMap<String, Value>,
}

/// Checked body edits, applied in the order rename, remove, set. `set` runs
/// in pointer order, so a parent is set before its children.
#[derive(Debug, Default)]
pub struct BodyEdits {
    rename: Vec<(Pointer, Pointer)>,
    remove: Vec<Pointer>,
    set: Vec<(Pointer, Value)>,
}

/// Why a body could not be edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    NotJson,
    /// An edit that does not fit the document, at this pointer.
    Conflict(String),
}

impl From<Conflict> for BodyError {
    fn from(c: Conflict) -> Self {
        Self::Conflict(c.0)
    }
}

impl BodyEdits {
    pub fn build(raw: RawBodyEdits, at: &str) -> Result<Self, String> {
        let parse = |key: &str, text: &str| Pointer::parse(text).map_err(|e| format!("{at}.{key}: {e}"));
        let mut rename = Vec::with_capacity(raw.rename.len());
        for (from, to) in &raw.rename {
            let (from, to) = (parse("rename", from)?, parse("rename", to)?);
            if from == to {
                return Err(format!("{at}.rename: `{}` is renamed to itself; remove the entry", from.as_str()));
            }
            rename.push((from, to));
        }
        let remove = raw.remove.iter().map(|p| parse("remove", p)).collect::<Result<_, _>>()?;
        let set = raw.set.into_iter().map(|(p, v)| Ok((parse("set", &p)?, v))).collect::<Result<_, String>>()?;
        Ok(Self { rename, remove, set })
    }

    pub fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.set.is_empty()
    }

    /// The edited body, or `None` when the edits changed nothing.
    pub fn apply(&self, body: &[u8]) -> Result<Option<Vec<u8>>, BodyError> {
        let mut doc: Value = serde_json::from_slice(body).map_err(|_| BodyError::NotJson)?;
        let mut changed = false;
        for (from, to) in &self.rename {
            if let Some(value) = pointer::remove(&mut doc, from) {
                pointer::set(&mut doc, to, value)?;
                changed = true;
            }
        }
        for p in &self.remove {
            changed |= pointer::remove(&mut doc, p).is_some();
        }
        for (p, value) in &self.set {
            pointer::set(&mut doc, p, value.clone())?;
            changed = true;
        }
        // Unchanged, a body goes on as it came, unless it repeats a name
        // (checked only then: an edited body is serialised again anyway).
        if !changed && !repeats_a_name(body) {
            return Ok(None);
        }
        // Serialising a `Value` cannot fail (its map keys are strings).
        serde_json::to_vec(&doc).map(Some).map_err(|_| BodyError::NotJson)
    }
}

/// Whether the JSON text `body` (valid: parsed already) names a member
/// twice in any of its objects.
fn repeats_a_name(body: &[u8]) -> bool {
    serde_json::from_slice::<Unique>(body).is_err()
}

/// A JSON value read only to find a repeated member name (an error).
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Unique, A::Error> {
        while items.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut members: A) -> Result<Unique, A::Error> {
        let mut names = std::collections::HashSet::new();
        while let Some(name) = members.next_key::<std::borrow::Cow<'de, str>>()? {
            if !names.insert(name) {
                return Err(serde::de::Error::custom("a member name repeated"));
            }
            members.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

/// A size: a number of bytes, or text such as "64KiB", "1MiB", "10MB" —
/// read as the gateway reads its own config.
pub fn parse_size(value: &Value) -> Result<u64, String> {
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{n} is not a size in bytes")),
        Value::String(s) => wasmgate_sdk::units::parse_size(s),
        other => Err(format!("{other} is not a size; write it like \"64KiB\", \"1MiB\" or 65536")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn edits(raw: Value) -> BodyEdits {
        let raw: RawBodyEdits = serde_json::from_value(raw).expect("raw edits");
        BodyEdits::build(raw, "request.body").expect("valid edits")
    }

    fn apply(e: &BodyEdits, body: &str) -> Result<Option<Value>, BodyError> {
        e.apply(body.as_bytes()).map(|b| b.map(|b| serde_json::from_slice(&b).expect("output is JSON")))
    }

    #[test]
    fn rename_then_remove_then_set() {
        let e = edits(json!({
            "rename": { "/userName": "/user_name" },
            "remove": ["/password"],
            "set": { "/meta/source": "gateway", "/meta": { "v": 1 } },
        }));
        let out = apply(&e, r#"{"userName":"ada","password":"pw"}"#).expect("edited");
        // `/meta` is set before `/meta/source`: pointer order.
        assert_eq!(out, Some(json!({ "user_name": "ada", "meta": { "v": 1, "source": "gateway" } })));
    }

    #[test]
    fn nothing_changed_keeps_the_bytes() {
        let e = edits(json!({ "remove": ["/password"], "rename": { "/a": "/b" } }));
        assert_eq!(e.apply(br#"{ "z": 1,  "a_not": 2 }"#), Ok(None));
    }

    /// A body that names a member twice goes on as the rules saw it (the
    /// last of the two): as it came, a parser that takes the first, or
    /// merges both, read what a rule removed.
    #[test]
    fn a_repeated_member_name_goes_on_as_the_rules_saw_it() {
        let e = edits(json!({ "remove": ["/user/role"] }));
        for body in [
            r#"{"user":{"role":"admin"},"user":{}}"#,
            r#"{"user":{"role":"admin"},"\u0075ser":{}}"#,
            r#"{"list":[{"user":{"role":"admin"},"user":{}}],"user":{}}"#,
        ] {
            let out = apply(&e, body).expect("edited").expect("serialised again");
            assert!(!out.to_string().contains("admin"), "{body}: {out}");
        }
        assert_eq!(apply(&e, r#"{"user":{"name":"ada"},"other":{"name":"ada"}}"#), Ok(None), "names unique per object");
    }

    #[test]
    fn not_json_and_conflicts() {
        let e = edits(json!({ "set": { "/meta/source": "gateway" } }));
        assert_eq!(e.apply(b"name=ada"), Err(BodyError::NotJson));
        assert_eq!(e.apply(b"{\"a\":"), Err(BodyError::NotJson));
        assert_eq!(e.apply(br#"{"meta":"flat"}"#), Err(BodyError::Conflict("/meta/source".into())));
        assert_eq!(e.apply(b"[1,2]"), Err(BodyError::Conflict("/meta/source".into())));
        let rename = edits(json!({ "rename": { "/a": "/s/x" } }));
        assert_eq!(rename.apply(br#"{"a":1,"s":"str"}"#), Err(BodyError::Conflict("/s/x".into())));
    }

    #[test]
    fn bad_rules_are_refused_with_where() {
        let err = |raw: Value| {
            let raw: RawBodyEdits = serde_json::from_value(raw).expect("raw edits");
            BodyEdits::build(raw, "response.body").err().unwrap_or_default()
        };
        assert!(err(json!({ "remove": ["password"] })).starts_with("response.body.remove: `password`"));
        assert!(err(json!({ "set": { "": 1 } })).contains("whole document"));
        assert!(err(json!({ "rename": { "/a": "/a" } })).contains("renamed to itself"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&json!("1MiB")), Ok(1 << 20));
        assert_eq!(parse_size(&json!("64KiB")), Ok(65536));
        assert_eq!(parse_size(&json!("10MB")), Ok(10_000_000));
        assert_eq!(parse_size(&json!(512)), Ok(512));
        assert!(parse_size(&json!("1 parsec")).is_err());
        assert!(parse_size(&json!(-1)).is_err());
        assert!(parse_size(&json!("99999999999999GiB")).is_err_and(|e| e.contains("too large")));
    }
}
