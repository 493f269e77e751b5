//! The request line: path rewrites with captures, and query parameter edits.
//!
//! Path patterns use the gateway's own route syntax rather than regular
//! expressions: `{name}` captures one non-empty segment (the regex
//! `(?P<name>[^/]+)`), `{*name}` as the last segment captures the rest, `/`
//! included and possibly empty (`(?P<name>.*)`), and the pattern is anchored
//! at both ends. Captured text is copied into `to` as it appears in the
//! (percent-encoded) path, never decoded.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use wasmgate_sdk::path::{PathPattern, Template, TemplateError};
use wasmgate_sdk::query;

/// `path = { from = "/v1/users/{id}", to = "/users/{id}" }` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPathRewrite {
    /// The pattern, in the gateway's route syntax (`{name}`, a last `{*name}`), anchored at both ends.
    from: String,
    /// The new path, with `{name}` (or `{*name}`) where a capture goes.
    to: String,
}

/// A checked rewrite.
#[derive(Debug)]
pub struct PathRewrite {
    from: PathPattern,
    to: Template,
}

impl PathRewrite {
    pub fn build(raw: &RawPathRewrite) -> Result<Self, String> {
        let from = PathPattern::parse(&raw.from).map_err(|e| format!("request.path.from: {e}"))?;
        // Matched against the path as the gateway spells it.
        if let Some(why) = wasmgate_sdk::path::not_normal(&raw.from) {
            return Err(format!("request.path.from: `{}` would never match: {why}", raw.from));
        }
        let to = Template::parse(&raw.to, &from).map_err(|e| {
            let hint = if e == TemplateError::BadCharacter { "; use `query` for the query" } else { "" };
            format!("request.path.to: {}{hint}", e.describe(&raw.to, &from))
        })?;
        Ok(Self { from, to })
    }

    /// The rewritten path, or `None` when `path` does not match `from`.
    pub fn apply(&self, path: &str) -> Option<String> {
        Some(self.to.apply(&self.from.matches(path)?))
    }
}

/// `query = { remove = [...], set = {...}, add = {...} }` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawQueryEdits {
    /// Parameters to remove, every occurrence.
    #[serde(default)]
    remove: Vec<String>,
    /// Parameters to set: the first occurrence replaced in place, later ones dropped, appended when absent.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Parameters to append.
    #[serde(default)]
    add: BTreeMap<String, String>,
}

/// Query edits, applied in the order remove, set, add. Names match after
/// decoding (`a%20b` is `a b`); parameters no rule names keep their bytes.
#[derive(Debug, Default)]
pub struct QueryEdits {
    remove: Vec<String>,
    set: Vec<(String, String)>,
    add: Vec<(String, String)>,
}

impl QueryEdits {
    pub fn build(raw: RawQueryEdits) -> Result<Self, String> {
        for name in raw.remove.iter().chain(raw.set.keys()).chain(raw.add.keys()) {
            if name.is_empty() {
                return Err("request.query: a parameter name cannot be empty".into());
            }
        }
        Ok(Self { remove: raw.remove, set: raw.set.into_iter().collect(), add: raw.add.into_iter().collect() })
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// The new query (`Some(None)`: remove it), or `None` when unchanged.
    pub fn apply(&self, query: Option<&str>) -> Option<Option<String>> {
        let mut pairs: Vec<(Vec<u8>, String)> =
            query::pairs(query.unwrap_or("")).map(|(name, pair)| (name, pair.to_owned())).collect();
        let before = pairs.len();
        let mut changed = false;
        pairs.retain(|(name, _)| !self.remove.iter().any(|r| r.as_bytes() == name));
        changed |= pairs.len() != before;
        for (name, value) in &self.set {
            let fresh = param(name, value);
            match pairs.iter().position(|(n, _)| n == name.as_bytes()) {
                Some(first) => {
                    if let Some(slot) = pairs.get_mut(first) {
                        changed |= slot.1 != fresh;
                        slot.1 = fresh;
                    }
                    let count = pairs.len();
                    let mut index = 0;
                    pairs.retain(|(n, _)| {
                        let keep = index == first || n != name.as_bytes();
                        index += 1;
                        keep
                    });
                    changed |= pairs.len() != count;
                }
                None => {
                    pairs.push((name.as_bytes().to_vec(), fresh));
                    changed = true;
                }
            }
        }
        for (name, value) in &self.add {
            pairs.push((name.as_bytes().to_vec(), param(name, value)));
            changed = true;
        }
        if !changed {
            return None;
        }
        let joined = pairs.into_iter().map(|(_, raw)| raw).collect::<Vec<_>>().join("&");
        Some((!joined.is_empty()).then_some(joined))
    }
}

/// A `name=value` pair, both percent-encoded.
fn param(name: &str, value: &str) -> String {
    let mut out = String::with_capacity(name.len() + value.len() + 1);
    query::encode_into(name.as_bytes(), &mut out);
    out.push('=');
    query::encode_into(value.as_bytes(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(from: &str, to: &str) -> PathRewrite {
        PathRewrite::build(&RawPathRewrite { from: from.into(), to: to.into() }).expect("valid rewrite")
    }

    fn bad_rewrite(from: &str, to: &str) -> String {
        PathRewrite::build(&RawPathRewrite { from: from.into(), to: to.into() }).err().unwrap_or_default()
    }

    #[test]
    fn captures_move_into_the_new_path() {
        let r = rewrite("/v1/users/{id}", "/users/{id}");
        assert_eq!(r.apply("/v1/users/42").as_deref(), Some("/users/42"));
        assert_eq!(r.apply("/v1/users/a%2Fb").as_deref(), Some("/users/a%2Fb"), "copied, not decoded");
        assert_eq!(r.apply("/v1/users"), None);
        assert_eq!(r.apply("/v1/users/"), None, "a capture is never empty");
        assert_eq!(r.apply("/v1/users/42/"), None, "anchored at the end");
        assert_eq!(r.apply("/v1/users/42/orders"), None);
        assert_eq!(r.apply("/v2/users/42"), None);
    }

    #[test]
    fn catch_all_and_reordering() {
        let r = rewrite("/api/{version}/{*rest}", "/{rest}/for/{version}");
        assert_eq!(r.apply("/api/v2/a/b").as_deref(), Some("/a/b/for/v2"));
        assert_eq!(r.apply("/api/v2").as_deref(), Some("/for/v2"), "an empty capture leaves no `//`, as in routes");
        let strip = rewrite("/legacy/{*rest}", "/{*rest}");
        assert_eq!(strip.apply("/legacy/x/y").as_deref(), Some("/x/y"));
        assert_eq!(strip.apply("/legacy").as_deref(), Some("/"));
        assert_eq!(rewrite("/old", "/new").apply("/old").as_deref(), Some("/new"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(bad_rewrite("v1/{id}", "/x").contains("must start with `/`"));
        assert!(bad_rewrite("/v1/{id}", "/users/{uid}").contains("which the path `/v1/{id}` does not capture"));
        assert!(bad_rewrite("/{*rest}/x", "/").contains("must be the last segment"));
        assert!(bad_rewrite("/{a}/{a}", "/").contains("appears twice"));
        assert!(bad_rewrite("/user-{id}", "/").contains("a whole `{name}`"));
        assert!(bad_rewrite("/{id}", "/x?y={id}").contains("use `query`"));
        assert!(bad_rewrite("/{id}", "/x/{id").contains("unclosed"));
        assert!(bad_rewrite("/{a-b}", "/").contains("capture name"));
    }

    fn query(raw: serde_json::Value) -> QueryEdits {
        QueryEdits::build(serde_json::from_value(raw).expect("raw query")).expect("valid query edits")
    }

    #[test]
    fn query_remove_set_add() {
        let q = query(serde_json::json!({
            "remove": ["debug"],
            "set": { "version": "2" },
            "add": { "tag": "a b&c=d" },
        }));
        let out = |before: Option<&str>| q.apply(before).flatten();
        assert_eq!(out(Some("debug=1&keep=yes")).as_deref(), Some("keep=yes&version=2&tag=a%20b%26c%3Dd"));
        assert_eq!(out(Some("version=1&x=1&version=3")).as_deref(), Some("version=2&x=1&tag=a%20b%26c%3Dd"));
        assert_eq!(out(None).as_deref(), Some("version=2&tag=a%20b%26c%3Dd"));
        assert_eq!(out(Some("de%62ug=1&keep")).as_deref(), Some("keep&version=2&tag=a%20b%26c%3Dd"), "names decode");
    }

    #[test]
    fn query_unchanged_or_emptied() {
        let q = query(serde_json::json!({ "remove": ["debug"], "set": { "v": "2" } }));
        assert_eq!(q.apply(Some("v=2&keep=%41")), None, "already right: left alone");
        let only_remove = query(serde_json::json!({ "remove": ["debug"] }));
        assert_eq!(only_remove.apply(Some("debug=1&debug=2")), Some(None), "the query goes away");
        assert_eq!(only_remove.apply(None), None);
        assert!(
            QueryEdits::build(serde_json::from_value(serde_json::json!({ "remove": [""] })).expect("raw")).is_err()
        );
    }
}
