//! The shape of the composed document.
//!
//! `shape` is a table whose leaves are references to the calls' bodies:
//!
//! * `"user"` — the whole JSON body of call `user`;
//! * `"cart#/total"` — the value at a JSON Pointer (RFC 6901) in it;
//! * `"count(cart#/items)"` — the number of elements of an array (or
//!   members of an object) there.
//!
//! A nested table is a nested object. A reference that yields nothing — its
//! call was omitted (`on_error = "omit"`), its pointer does not resolve, or
//! `count` found neither array nor object — leaves its field out, and an
//! object left with no fields is left out too.

use serde_json::{Map, Value};

/// A reference to (part of) a call's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// Index into the plugin's calls.
    pub call: usize,
    /// `""` for the whole body.
    pub pointer: String,
    pub count: bool,
}

/// A node of the shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Object(Vec<(String, Node)>),
    Ref(Ref),
}

/// Parses the `shape` table against the call names (in call order).
pub fn parse(shape: &Value, calls: &[&str]) -> Result<Node, String> {
    match shape {
        Value::Object(map) if !map.is_empty() => node(shape, "shape", calls),
        Value::Object(_) => Err("shape is empty: give at least one field, e.g. shape = { user = \"user\" }".into()),
        _ => Err("shape must be a table, e.g. shape = { user = \"user\", total = \"cart#/total\" }".into()),
    }
}

fn node(value: &Value, at: &str, calls: &[&str]) -> Result<Node, String> {
    match value {
        Value::String(text) => reference(text, calls).map(Node::Ref).map_err(|e| format!("{at}: {e}")),
        Value::Object(map) => {
            let mut fields = Vec::with_capacity(map.len());
            for (key, v) in map {
                fields.push((key.clone(), node(v, &format!("{at}.{key}"), calls)?));
            }
            Ok(Node::Object(fields))
        }
        other => Err(format!(
            "{at}: {other} is not a reference; write \"CALL\", \"CALL#/pointer\", \"count(CALL#/pointer)\" or a table"
        )),
    }
}

fn reference(text: &str, calls: &[&str]) -> Result<Ref, String> {
    let (inner, count) = match text.strip_prefix("count(").and_then(|t| t.strip_suffix(')')) {
        Some(inner) => (inner, true),
        None => (text, false),
    };
    let (name, pointer) = inner.split_once('#').unwrap_or((inner, ""));
    let Some(call) = calls.iter().position(|c| *c == name) else {
        return Err(format!("`{text}` refers to call `{name}`, which is not in `calls` ({})", calls.join(", ")));
    };
    check_pointer(pointer).map_err(|e| format!("`{text}`: {e}"))?;
    Ok(Ref { call, pointer: pointer.to_owned(), count })
}

/// RFC 6901 syntax: empty, or `/`-separated tokens where `~` is only ever
/// `~0` or `~1`.
fn check_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!("the JSON Pointer `{pointer}` must start with `/`"));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!("in the JSON Pointer `{pointer}`, `~` must be written `~0` (and `/` in a name `~1`)"));
        }
    }
    Ok(())
}

impl Node {
    /// The calls this node refers to.
    pub fn calls(&self, out: &mut Vec<usize>) {
        match self {
            Self::Ref(r) => out.push(r.call),
            Self::Object(fields) => fields.iter().for_each(|(_, n)| n.calls(out)),
        }
    }

    /// Builds the document from the calls' bodies (`None`: omitted).
    pub fn build(&self, bodies: &[Option<Value>]) -> Option<Value> {
        match self {
            Self::Ref(r) => {
                let body = bodies.get(r.call)?.as_ref()?;
                let value = body.pointer(&r.pointer)?;
                if !r.count {
                    return Some(value.clone());
                }
                match value {
                    Value::Array(a) => Some(Value::from(a.len())),
                    Value::Object(o) => Some(Value::from(o.len())),
                    _ => None,
                }
            }
            Self::Object(fields) => {
                let map: Map<String, Value> =
                    fields.iter().filter_map(|(k, n)| n.build(bodies).map(|v| (k.clone(), v))).collect();
                (!map.is_empty()).then_some(Value::Object(map))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CALLS: &[&str] = &["user", "orders", "cart"];

    fn shape(v: Value) -> Node {
        parse(&v, CALLS).expect("valid shape")
    }

    #[test]
    fn whole_bodies_pointers_counts_and_nesting() {
        let s = shape(json!({
            "user": "user",
            "name": "user#/name",
            "latest": "orders#/orders/0/id",
            "cart": { "items": "count(cart#/items)", "total": "cart#/total", "lines": "count(cart#)" },
        }));
        let bodies = vec![
            Some(json!({ "id": 1, "name": "Ada" })),
            Some(json!({ "orders": [{ "id": 1010 }, { "id": 1009 }] })),
            Some(json!({ "items": [{ "sku": "KB-01" }, { "sku": "MUG-42" }], "total": "145.47" })),
        ];
        assert_eq!(
            s.build(&bodies),
            Some(json!({
                "user": { "id": 1, "name": "Ada" },
                "name": "Ada",
                "latest": 1010,
                "cart": { "items": 2, "total": "145.47", "lines": 2 },
            }))
        );
    }

    #[test]
    fn what_yields_nothing_is_left_out() {
        let s = shape(json!({
            "user": "user",
            "missing": "user#/nope",
            "count_of_text": "count(user#/name)",
            "cart": { "total": "cart#/total" },
        }));
        let bodies = vec![Some(json!({ "name": "Ada" })), None, None];
        assert_eq!(s.build(&bodies), Some(json!({ "user": { "name": "Ada" } })), "an emptied object goes too");
        assert_eq!(s.build(&[None, None, None]), None);
    }

    #[test]
    fn escaped_pointers() {
        let s = shape(json!({ "a": "user#/a~1b", "t": "user#/m~0n" }));
        let bodies = vec![Some(json!({ "a/b": 1, "m~n": 2 })), None, None];
        assert_eq!(s.build(&bodies), Some(json!({ "a": 1, "t": 2 })));
    }

    #[test]
    fn bad_shapes_are_refused_with_where() {
        let err = |v: Value| parse(&v, CALLS).err().unwrap_or_default();
        assert!(err(json!("user")).starts_with("shape must be a table"));
        assert!(err(json!({})).starts_with("shape is empty"));
        assert!(err(json!({ "a": { "b": "users" } })).starts_with("shape.a.b: `users` refers to call `users`"));
        assert!(err(json!({ "a": "cart#total" })).contains("must start with `/`"));
        assert!(err(json!({ "a": "cart#/a~2" })).contains("`~0`"));
        assert!(err(json!({ "a": 1 })).contains("is not a reference"));
        assert!(err(json!({ "a": "count(cart#/items" })).contains("call `count(cart`"));
    }

    #[test]
    fn lists_the_calls_it_uses() {
        let mut used = Vec::new();
        shape(json!({ "a": "cart", "b": { "c": "user#/x" } })).calls(&mut used);
        used.sort_unstable();
        assert_eq!(used, vec![0, 2]);
    }
}
