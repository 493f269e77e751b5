//! Header edits, the same for the request and the response.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use wasmgate_sdk::{
    EditError, FixedHeaders, HeaderEdit, Headers, check_header_name, check_header_value, check_request_header, log,
};

/// `headers = { rename = {...}, remove = [...], set = {...}, add = {...} }` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderEdits {
    /// `{ "x-old" = "x-new" }`: every value of `x-old` moves to `x-new`, replacing it.
    #[serde(default)]
    rename: BTreeMap<String, String>,
    /// Names of headers to remove.
    #[serde(default)]
    remove: Vec<String>,
    /// Headers to set, replacing any existing values.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Headers to add, keeping existing values.
    #[serde(default)]
    add: BTreeMap<String, String>,
}

/// Checked edits with lowercase names, applied in the order rename, remove,
/// set, add: a rename sees the headers as they arrived.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    rename: Vec<(String, String)>,
    remove: Vec<String>,
    set: Vec<(String, String)>,
    add: Vec<(String, String)>,
}

fn check_name(name: &str, at: &str) -> Result<String, String> {
    check_header_name(name).map_err(|e| format!("{at}: {e}"))
}

fn check_value(value: &str, at: &str) -> Result<(), String> {
    check_header_value("", value.as_bytes()).map_err(|_| format!("{at}: the value {value:?} has a control character"))
}

impl HeaderEdits {
    /// `at`: `request.headers` or `response.headers`. On a request, a field
    /// the gateway writes or takes out is refused as a name to write.
    pub fn build(raw: RawHeaderEdits, at: &str) -> Result<Self, String> {
        let written = |name: String, at: &str| -> Result<String, String> {
            match at.starts_with("request") {
                true => check_request_header(&name).map(|()| name).map_err(|e| {
                    format!("{at}: {e}: it writes or takes out that field on every request (use a route's strip_prefix for x-forwarded-prefix)")
                }),
                false => Ok(name),
            }
        };
        let pairs = |map: BTreeMap<String, String>, key: &str| -> Result<Vec<(String, String)>, String> {
            let at = format!("{at}.{key}");
            map.into_iter()
                .map(|(n, v)| {
                    check_value(&v, &at)?;
                    Ok((written(check_name(&n, &at)?, &at)?, v))
                })
                .collect()
        };
        let mut rename = Vec::with_capacity(raw.rename.len());
        for (from, to) in raw.rename {
            let at = format!("{at}.rename");
            let (from, to) = (check_name(&from, &at)?, written(check_name(&to, &at)?, &at)?);
            if from == to {
                return Err(format!("{at}: `{from}` is renamed to itself; remove the entry"));
            }
            rename.push((from, to));
        }
        let remove = raw.remove.iter().map(|n| check_name(n, &format!("{at}.remove"))).collect::<Result<_, _>>()?;
        Ok(Self { rename, remove, set: pairs(raw.set, "set")?, add: pairs(raw.add, "add")? })
    }

    pub fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Whether applying the edits reads the headers (renames do). Edits that
    /// read nothing can be left for the response by the request hook.
    pub fn reads(&self) -> bool {
        !self.rename.is_empty()
    }

    /// The edits (remove, set, add; no renames, see [`Self::reads`]) for
    /// the gateway to make, in this order, without calling the plugin.
    pub fn fixed(&self) -> Vec<(String, HeaderEdit)> {
        FixedHeaders::edits(&self.remove, self.set.iter().map(|(n, v)| (n, v)), self.add.iter().map(|(n, v)| (n, v)))
    }

    /// Applies the edits. Every rename reads its header as it arrived, so
    /// renames may chain or swap (`a` → `b` and `b` → `a`). Names and values
    /// were checked at config time, so a refused edit is unexpected: it is
    /// logged and the rest still apply.
    pub fn apply(&self, target: &mut impl Headers, side: &str) {
        let moved: Vec<(&str, &str, Vec<Vec<u8>>)> = (self.rename.iter())
            .filter_map(|(from, to)| {
                let values = target.header_all(from);
                (!values.is_empty()).then_some((from.as_str(), to.as_str(), values))
            })
            .collect();
        // Every moved header and its new name go first, then the values
        // come back under the new names.
        for (from, to, _) in &moved {
            target.remove_header(from);
            target.remove_header(to);
        }
        for (_, to, values) in &moved {
            for v in values {
                warn_on(target.append_header(to, v), side, "rename", to);
            }
        }
        for name in &self.remove {
            target.remove_header(name);
        }
        for (name, value) in &self.set {
            warn_on(target.set_header(name, value), side, "set", name);
        }
        for (name, value) in &self.add {
            warn_on(target.append_header(name, value), side, "add", name);
        }
    }
}

fn warn_on(result: Result<(), EditError>, side: &str, what: &str, name: &str) {
    if let Err(e) = result {
        log::warn(&format!("cannot {what} {side} header {name}: {e}"));
    }
}
