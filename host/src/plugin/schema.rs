//! A plugin's config schema: the JSON Schema of its config table that the
//! SDK's `export_plugin!(P, config_schema = FILE)` writes into a custom
//! section of the component. `wasmgate inspect` shows its keys and prints
//! it whole (`--schema`) for editors and config tooling. The plugin's own
//! `configure` stays the judge of a config: the schema describes it.

use serde_json::Value;

/// The custom section the SDK writes the schema into.
const SECTION: &[u8] = b"wasmgate-config-schema";

/// The longest schema read: a schema is a few KB.
const MAX_SCHEMA_BYTES: usize = 1 << 20;

/// A component's config schema, as carried, and parsed.
#[derive(Debug, Clone)]
pub struct ConfigSchema {
    /// The section's text, exactly as the plugin's author wrote it.
    pub text: String,
    value: Value,
}

/// The config schema `component` carries: `None` when it carries none (a
/// plugin built without one, or not with the SDK), an error when what it
/// carries is not a JSON Schema of a table.
pub fn config_schema(component: &[u8]) -> Option<Result<ConfigSchema, String>> {
    let bytes = super::registry::custom_section(component, SECTION, 0)?;
    Some(parse(bytes))
}

fn parse(bytes: &[u8]) -> Result<ConfigSchema, String> {
    if bytes.len() > MAX_SCHEMA_BYTES {
        return Err(format!("its config schema is {} bytes, over the {MAX_SCHEMA_BYTES} read", bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "its config schema is not UTF-8".to_owned())?;
    // `--schema` prints the text as it is: nothing in it may steer a terminal.
    if text.chars().any(|c| unsafe_in_terminal(c) && !matches!(c, '\t' | '\n' | '\r')) {
        return Err("its config schema holds control or bidirectional characters".to_owned());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("its config schema is not JSON ({e})"))?;
    if !value.is_object() {
        return Err("its config schema is not a JSON Schema (not an object)".to_owned());
    }
    Ok(ConfigSchema { text: text.to_owned(), value })
}

/// One key of the config table, for a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    /// `string`, `integer`, `table`, `array of string`, `"a" | "b"`, …
    pub kind: String,
    pub required: bool,
    /// Its default, as JSON, when the schema gives one.
    pub default: Option<String>,
    /// The first paragraph of its description, on one line.
    pub about: Option<String>,
    /// The keys of the table it is (or of the tables in its array).
    pub keys: Vec<Key>,
}

impl ConfigSchema {
    /// The config table's keys, by name (and the keys of the tables under
    /// them), within what one look may spend on a schema its author wrote.
    pub fn table(&self) -> Table {
        let root = &self.value;
        let table = resolve(root, root, 0);
        let mut budget = Budget { nodes: MAX_NODES, keys: MAX_SHOWN, cut: false };
        let keys = keys(root, table, 0, &mut budget);
        let closed = table.get("additionalProperties") == Some(&Value::Bool(false));
        Table { keys, closed, cut: budget.cut }
    }
}

/// The config table, for a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub keys: Vec<Key>,
    /// Whether keys it does not name are refused.
    pub closed: bool,
    /// Whether more was there than is listed.
    pub cut: bool,
}

/// What one look at a schema may spend: a hostile one (`$ref`s back to a
/// table of a hundred keys, alternatives of alternatives) is cut short
/// rather than walked for ever.
#[derive(Debug)]
struct Budget {
    /// Kinds worked out.
    nodes: usize,
    /// Keys listed.
    keys: usize,
    /// Whether something was left out.
    cut: bool,
}

const MAX_NODES: usize = 10_000;
const MAX_SHOWN: usize = 500;

/// The keys of `table`, and of the tables they are, down to [`MAX_NESTING`].
fn keys(root: &Value, table: &Value, depth: usize, budget: &mut Budget) -> Vec<Key> {
    let Some(properties) = table.get("properties").and_then(Value::as_object) else { return Vec::new() };
    let required: Vec<&str> = table
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // In order of name, whether or not serde_json keeps the schema's order.
    let mut properties: Vec<(&String, &Value)> = properties.iter().collect();
    properties.sort_by_key(|(name, _)| *name);
    if properties.len() > MAX_KEYS {
        budget.cut = true;
    }
    let mut out = Vec::new();
    for (name, schema) in properties.into_iter().take(MAX_KEYS) {
        if budget.keys == 0 {
            budget.cut = true;
            break;
        }
        budget.keys -= 1;
        let resolved = resolve(root, schema, 0);
        // A table's keys, or those of the tables in its array or map.
        let inner = match (resolved.get("items"), resolved.get("additionalProperties")) {
            (Some(items), _) => resolve(root, items, 0),
            (None, Some(values @ Value::Object(_))) if resolved.get("properties").is_none() => resolve(root, values, 0),
            _ => resolved,
        };
        out.push(Key {
            name: printable(name, 64),
            kind: kind(root, schema, 0, budget),
            required: required.contains(&name.as_str()),
            default: schema.get("default").map(|d| json(d, 60)),
            about: about(schema).or_else(|| about(resolved)),
            keys: if depth < MAX_NESTING { keys(root, inner, depth + 1, budget) } else { Vec::new() },
        });
    }
    out
}

/// The most keys shown of a table.
const MAX_KEYS: usize = 100;
/// How many tables deep keys are shown.
const MAX_NESTING: usize = 2;
/// How deep `$ref`s and nested kinds are followed.
const MAX_DEPTH: usize = 4;
/// The most alternatives (types, `anyOf`, enum values) shown of one kind.
const MAX_ALTERNATIVES: usize = 8;
/// The longest kind shown.
const MAX_KIND: usize = 120;

/// What `schema` is, in a few words of TOML.
fn kind(root: &Value, schema: &Value, depth: usize, budget: &mut Budget) -> String {
    if depth > MAX_DEPTH || budget.nodes == 0 {
        budget.cut |= budget.nodes == 0;
        return "…".to_owned();
    }
    budget.nodes -= 1;
    let schema = resolve(root, schema, depth);
    let listed = |mut shown: Vec<String>, all: usize, joint: &str| {
        if all > MAX_ALTERNATIVES {
            shown.push("…".to_owned());
        }
        printable(&shown.join(joint), MAX_KIND)
    };
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let shown = values.iter().take(MAX_ALTERNATIVES).map(|v| json(v, 40)).collect();
        return listed(shown, values.len(), " | ");
    }
    if let Some(value) = schema.get("const") {
        return json(value, 40);
    }
    for either in ["oneOf", "anyOf"] {
        if let Some(alternatives) = schema.get(either).and_then(Value::as_array) {
            let shown = alternatives.iter().take(MAX_ALTERNATIVES).map(|a| kind(root, a, depth + 1, budget)).collect();
            return listed(shown, alternatives.len(), " or ");
        }
    }
    let mut one = |name: &str| match name {
        "object" => match schema.get("additionalProperties") {
            Some(values @ Value::Object(_)) => format!("table of {}", kind(root, values, depth + 1, budget)),
            _ => "table".to_owned(),
        },
        "array" => match schema.get("items") {
            Some(items @ Value::Object(_)) => format!("array of {}", kind(root, items, depth + 1, budget)),
            _ => "array".to_owned(),
        },
        "null" => "nothing".to_owned(),
        other => printable(other, 20),
    };
    match schema.get("type") {
        Some(Value::String(name)) => printable(&one(name), MAX_KIND),
        Some(Value::Array(names)) => {
            let shown = names.iter().take(MAX_ALTERNATIVES).filter_map(Value::as_str).map(&mut one).collect();
            listed(shown, names.len(), " or ")
        }
        _ => "any".to_owned(),
    }
}

/// `value` as JSON, at most `max` characters of it (written no further:
/// a default may be as long as the schema).
fn json(value: &Value, max: usize) -> String {
    /// Takes bytes until it holds `max` of them, then refuses the rest.
    struct Upto(Vec<u8>, usize);
    impl std::io::Write for Upto {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = self.1.saturating_sub(self.0.len());
            if room == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let taken = buf.len().min(room);
            self.0.extend_from_slice(&buf[..taken]);
            Ok(taken)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // Four bytes a character at most, and one past to know it was cut.
    let mut out = Upto(Vec::new(), max * 4 + 1);
    let _ = serde_json::to_writer(&mut out, value);
    printable(&String::from_utf8_lossy(&out.0), max)
}

/// `schema`, or what its local `$ref` (`#/$defs/NAME`) names.
fn resolve<'v>(root: &'v Value, schema: &'v Value, depth: usize) -> &'v Value {
    let mut schema = schema;
    for _ in depth..=MAX_DEPTH {
        let Some(pointer) = schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) else {
            break;
        };
        match root.pointer(pointer) {
            Some(target) => schema = target,
            None => break,
        }
    }
    schema
}

/// The first paragraph of `schema`'s description, on one line.
fn about(schema: &Value) -> Option<String> {
    let text = schema.get("description").and_then(Value::as_str)?;
    // No more of it than can be shown (with room for white space).
    let text: String = text.chars().take(4 * 160).collect();
    let paragraph = text.trim().split("\n\n").next().unwrap_or_default();
    let line = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
    (!line.is_empty()).then(|| printable(&line, 160))
}

/// `text` safe for a terminal (a component's author wrote it): controls
/// and bidirectional overrides as spaces, at most `max` characters.
fn printable(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).map(|c| if unsafe_in_terminal(c) { ' ' } else { c }).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// A control character, or one that turns the text's direction.
fn unsafe_in_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: &str) -> ConfigSchema {
        parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn keys_say_kind_required_default_and_description() {
        let s = schema(
            r##"{
              "type": "object",
              "properties": {
                "header": { "type": "string", "description": "The header\nto read.\n\nMore." },
                "limit": { "type": "integer", "default": 10 },
                "mode": { "$ref": "#/$defs/Mode" },
                "edits": { "$ref": "#/$defs/Edits", "description": "What to change." },
                "tags": { "type": "array", "items": { "type": "string" } },
                "set": { "type": "object", "additionalProperties": { "type": "string" } },
                "size": { "type": ["string", "integer"] },
                "either": { "anyOf": [{ "type": "boolean" }, { "$ref": "#/$defs/Edits" }] }
              },
              "required": ["header"],
              "additionalProperties": false,
              "$defs": {
                "Mode": { "type": "string", "enum": ["fixed-window", "sliding"], "description": "How it counts." },
                "Edits": { "type": "object", "properties": {} }
              }
            }"##,
        );
        let Table { keys, closed, .. } = s.table();
        assert!(closed);
        let line = |k: &Key| format!("{} {} {} {:?} {:?}", k.name, k.kind, k.required, k.default, k.about);
        assert!(keys.iter().all(|k| k.keys.is_empty()));
        let lines: Vec<String> = keys.iter().map(line).collect();
        assert_eq!(
            lines,
            [
                r#"edits table false None Some("What to change.")"#,
                r#"either boolean or table false None None"#,
                r#"header string true None Some("The header to read.")"#,
                r#"limit integer false Some("10") None"#,
                r#"mode "fixed-window" | "sliding" false None Some("How it counts.")"#,
                r#"set table of string false None None"#,
                r#"size string or integer false None None"#,
                r#"tags array of string false None None"#,
            ]
        );
    }

    #[test]
    fn the_keys_of_inner_tables_and_arrays_of_tables_are_read() {
        let s = schema(
            r##"{"type": "object", "properties": {
                   "rules": {"type": "array", "items": {"$ref": "#/$defs/Rule"}},
                   "deep": {"type": "object", "properties": {"a": {"type": "object", "properties": {
                     "b": {"type": "object", "properties": {"c": {"type": "string"}}}}}}}},
                 "$defs": {"Rule": {"type": "object", "required": ["path"],
                   "properties": {"path": {"type": "string", "description": "Which paths."}}}}}"##,
        );
        let Table { keys, .. } = s.table();
        let rules = &keys[1];
        assert_eq!((rules.name.as_str(), rules.kind.as_str()), ("rules", "array of table"));
        assert_eq!(rules.keys.len(), 1);
        assert!(rules.keys[0].required);
        assert_eq!(rules.keys[0].about.as_deref(), Some("Which paths."));
        // Two tables down, and no further.
        let deep = &keys[0];
        assert_eq!(deep.keys[0].keys[0].name, "b");
        assert!(deep.keys[0].keys[0].keys.is_empty());
    }

    #[test]
    fn a_root_ref_and_open_tables_are_read() {
        let s = schema(r##"{"$ref": "#/$defs/C", "$defs": {"C": {"type": "object", "properties": {"a": {}}}}}"##);
        let Table { keys, closed, .. } = s.table();
        assert!(!closed);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kind, "any");
    }

    #[test]
    fn a_ref_cycle_ends() {
        let s = schema(
            r##"{"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}},
                 "$defs": {"A": {"type": "array", "items": {"$ref": "#/$defs/A"}}}}"##,
        );
        let Table { keys, .. } = s.table();
        assert!(keys[0].kind.starts_with("array of array of"), "{}", keys[0].kind);
        assert!(keys[0].kind.ends_with('…'), "{}", keys[0].kind);
    }

    #[test]
    fn what_an_author_wrote_cannot_reach_a_terminal_raw() {
        let s = schema(
            r#"{"type": "object", "properties": {"k\u001b[31m": {"type": "string", "description": "red\u001b[0m"}}}"#,
        );
        let Table { keys, .. } = s.table();
        assert_eq!(keys[0].name, "k [31m");
        assert_eq!(keys[0].about.as_deref(), Some("red [0m"));
        assert_eq!(printable(&"x".repeat(10), 4), "xxxx…");
    }

    #[test]
    fn a_hostile_schema_is_cut_short() {
        // Every key a table of the same hundred keys, each of a thousand
        // types whose values are that table again.
        let names: Vec<String> = (0..100).map(|i| format!(r##""k{i}": {{"$ref": "#/$defs/T"}}"##)).collect();
        let types = vec![r#""object""#; 1000].join(",");
        let text = format!(
            r##"{{"$ref": "#/$defs/T", "$defs": {{"T": {{"type": [{types}],
                 "additionalProperties": {{"anyOf": [{refs}]}}, "properties": {{{keys}}}}}}}}}"##,
            refs = vec![r##"{"$ref": "#/$defs/T"}"##; 50].join(","),
            keys = names.join(",")
        );
        let table = schema(&text).table();
        assert!(table.cut);
        fn count(keys: &[Key]) -> usize {
            keys.iter().map(|k| 1 + count(&k.keys)).sum()
        }
        assert!(count(&table.keys) <= MAX_SHOWN, "{}", count(&table.keys));
        assert!(table.keys.iter().all(|k| k.kind.chars().count() <= MAX_KIND + 1), "{:?}", table.keys[0].kind);
        // A long default is written only as far as it is shown.
        let long = format!(r#"{{"type": "object", "properties": {{"a": {{"default": "{}"}}}}}}"#, "x".repeat(100_000));
        assert_eq!(schema(&long).table().keys[0].default.as_deref().map(str::len), Some(60 + "…".len()));
    }

    #[test]
    fn more_keys_than_are_listed_are_said_to_be_more() {
        let keys: Vec<String> = (0..=MAX_KEYS).map(|i| format!(r#""k{i:03}": {{"type": "string"}}"#)).collect();
        let table = schema(&format!(r#"{{"type": "object", "properties": {{{}}}}}"#, keys.join(","))).table();
        assert_eq!((table.keys.len(), table.cut), (MAX_KEYS, true));
        let few = schema(r#"{"type": "object", "properties": {"a": {"type": "string"}}}"#).table();
        assert!(!few.cut);
        // A table with keys of its own and a map of others: its own are listed.
        let both = schema(
            r#"{"type": "object", "properties": {"t": {"type": "object", "properties": {"own": {}},
                 "additionalProperties": {"type": "object", "properties": {"theirs": {}}}}}}"#,
        )
        .table();
        assert_eq!(both.keys[0].keys[0].name, "own");
    }

    #[test]
    fn a_schema_that_could_steer_a_terminal_is_not_read() {
        assert!(parse("{\"a\": \"\u{9b}31m\"}".as_bytes()).unwrap_err().contains("control"));
        assert!(parse("{\"a\": \"\u{202e}txt\"}".as_bytes()).unwrap_err().contains("bidirectional"));
        assert!(parse(b"{\n\t\"a\": 1\r\n}").is_ok(), "white space is not a control here");
    }

    #[test]
    fn what_is_not_a_schema_is_said() {
        assert!(parse(b"{").unwrap_err().contains("not JSON"));
        assert!(parse(b"[1]").unwrap_err().contains("not an object"));
        assert!(parse(&[0xff, 0xfe]).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn the_section_is_found_in_a_component() {
        use wasm_encoder::{Component, CustomSection, Module};
        let mut module = Module::new();
        module.section(&CustomSection { name: "wasmgate-config-schema".into(), data: br#"{"type":"object"}"#.into() });
        let mut component = Component::new();
        component.section(&wasm_encoder::ModuleSection(&module));
        let bytes = component.finish();
        let found = config_schema(&bytes).unwrap().unwrap();
        assert_eq!(found.text, r#"{"type":"object"}"#);
        assert!(config_schema(&Component::new().finish()).is_none());
    }
}
