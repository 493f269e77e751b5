//! Loading the policy set once, at config time: parse, name each policy by
//! its `@id` annotation, validate against the schema when one is given, and
//! turn Cedar's errors into messages that point at a line of the policy text.

use std::collections::HashSet;
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use wasmgate_sdk::ConfigError;

/// At most this many errors are spelled out in one config error.
const MAX_LISTED: usize = 3;

/// Parses `text` into a policy set whose ids are the `@id` annotations
/// (Cedar's `policy0`, `policy1`, ... where there is none), validated
/// against `schema` when given.
pub fn load(text: &str, schema: Option<&str>) -> Result<PolicySet, ConfigError> {
    let statements = Statements::scan(text);
    if statements.0.is_empty() {
        return Err("`policies` has no policy, so every request would be denied; write at least one `permit`".into());
    }
    let parsed = PolicySet::from_str(text).map_err(|errors| {
        let listed = errors.iter().map(|e| {
            let at = first_offset(e);
            let policy = statements.name_at(text, at.unwrap_or(text.len()));
            format!("policy {policy}{} does not parse: {}", position(text, at), detail(e))
        });
        list("`policies`", listed.collect())
    })?;
    if let Some(template) = parsed.templates().next() {
        return Err(format!(
            "policy `{}`{} is a template (it uses `?principal` or `?resource`), and abac links no templates: name \
             the entity in the policy instead",
            template.id(),
            statements.position_of(text, template.id()),
        )
        .into());
    }
    let mut named = PolicySet::new();
    let mut seen = HashSet::new();
    for policy in parsed.policies() {
        let id = match policy.annotation("id") {
            Some(id) => {
                if id.is_empty() || id.chars().any(char::is_control) {
                    return Err(format!(
                        "policy `{}`{}: `@id({id:?})` must be non-empty text without control characters",
                        policy.id(),
                        statements.position_of(text, policy.id()),
                    )
                    .into());
                }
                PolicyId::new(id)
            }
            None => policy.id().clone(),
        };
        if !seen.insert(id.clone()) {
            return Err(format!(
                "two policies have the id `{id}` (the second{}): give each `@id` once, and do not reuse Cedar's \
                 own `policyN` names",
                statements.position_of(text, policy.id()),
            )
            .into());
        }
        named.add(policy.new_id(id)).map_err(|e| ConfigError::new(format!("`policies`: {e}")))?;
    }
    if let Some(schema) = schema {
        validate(text, &named, schema)?;
    }
    Ok(named)
}

/// Whether some policy may read the attribute, record field or string
/// `name`: it appears as a JSON string in the policy's JSON form (Cedar's
/// EST), however the text spelled it. Errs on the side of `true`.
pub fn mention(policies: &PolicySet, name: &str) -> bool {
    let needle = serde_json::Value::from(name).to_string();
    policies.policies().any(|p| p.to_json().map_or(true, |est| est.to_string().contains(&needle)))
}

/// Validates the policies against the schema (strict mode: what the
/// Cedar CLI's `validate` does by default).
fn validate(text: &str, policies: &PolicySet, schema_text: &str) -> Result<(), ConfigError> {
    let schema = if schema_text.trim_start().starts_with('{') {
        Schema::from_json_str(schema_text).map_err(|e| schema_error(schema_text, &e, "JSON"))?
    } else {
        Schema::from_cedarschema_str(schema_text).map_err(|e| schema_error(schema_text, &e, "Cedar"))?.0
    };
    let result = Validator::new(schema).validate(policies, ValidationMode::Strict);
    if result.validation_passed() {
        return Ok(());
    }
    let listed = result
        .validation_errors()
        // Cedar's message already names the policy ("for policy `x`, ...").
        .map(|e| match place(text, first_offset(e)) {
            Some(at) => format!("{at}: {}", detail(e)),
            None => detail(e),
        })
        .collect();
    Err(list("the policies do not validate against `schema`", listed))
}

fn schema_error(text: &str, e: &(impl Diagnostic + ?Sized), syntax: &str) -> ConfigError {
    let at = position(text, first_offset(e));
    ConfigError::new(format!("`schema` (as {syntax} schema syntax){at} is not a valid schema: {}", detail(e)))
}

/// `"<what>: a; b; and 2 more"`.
fn list(what: &str, items: Vec<String>) -> ConfigError {
    let more = items.len().saturating_sub(MAX_LISTED);
    let mut message = format!("{what}: {}", items.into_iter().take(MAX_LISTED).collect::<Vec<_>>().join("; "));
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    ConfigError::new(message)
}

/// The error's message with its label ("expected ...") and help.
fn detail(e: &(impl Diagnostic + ?Sized)) -> String {
    let mut out = e.to_string();
    let label = e.labels().and_then(|mut l| l.next()).and_then(|l| l.label().map(str::to_owned));
    if let Some(label) = label {
        out.push_str(&format!(": {label}"));
    }
    if let Some(help) = e.help() {
        out.push_str(&format!(" ({help})"));
    }
    out
}

fn first_offset(e: &(impl Diagnostic + ?Sized)) -> Option<usize> {
    e.labels().and_then(|mut l| l.next()).map(|l| l.offset())
}

/// `"line 3, column 7"`, when Cedar gave a position.
fn place(text: &str, offset: Option<usize>) -> Option<String> {
    let (line, column) = line_column(text, offset?);
    Some(format!("line {line}, column {column}"))
}

/// `" (line 3, column 7)"`, or nothing.
fn position(text: &str, offset: Option<usize>) -> String {
    place(text, offset).map(|p| format!(" ({p})")).unwrap_or_default()
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where each statement of the policy text starts and ends: what names a
/// policy that does not parse (Cedar numbers policies by statement, and a
/// broken one has no id yet).
#[derive(Debug)]
struct Statements(Vec<(usize, usize)>);

impl Statements {
    /// Splits at `;` outside strings and comments. A statement runs from
    /// its first significant character to its `;` (or the end of the text).
    fn scan(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let (mut i, mut start) = (0, None);
        while i < bytes.len() {
            match bytes[i] {
                b'/' if bytes.get(i + 1) == Some(&b'/') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                b if b.is_ascii_whitespace() => {}
                b'"' => {
                    start.get_or_insert(i);
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                }
                b';' => {
                    out.push((start.unwrap_or(i), i));
                    start = None;
                }
                _ => {
                    start.get_or_insert(i);
                }
            }
            i += 1;
        }
        if let Some(s) = start {
            out.push((s, text.len()));
        }
        Self(out)
    }

    /// The statement holding `offset`: its `@id` or the id Cedar would give it.
    fn name_at(&self, text: &str, offset: usize) -> String {
        let index = self.0.iter().position(|(_, end)| offset <= *end).unwrap_or(self.0.len().saturating_sub(1));
        let id = self.0.get(index).and_then(|(s, e)| annotated_id(text.get(*s..*e).unwrap_or_default()));
        match id {
            Some(id) => format!("`{id}`"),
            None => format!("`policy{index}`"),
        }
    }

    /// `" (line N)"` for Cedar's `policyN` id.
    fn position_of(&self, text: &str, id: &PolicyId) -> String {
        let index = id.to_string().strip_prefix("policy").and_then(|n| n.parse::<usize>().ok());
        match index.and_then(|i| self.0.get(i)) {
            Some((start, _)) => format!(" (line {})", line_column(text, *start).0),
            None => String::new(),
        }
    }
}

/// The value of an `@id("...")` annotation in a statement's text.
fn annotated_id(statement: &str) -> Option<String> {
    let rest = statement.split_once("@id")?.1.trim_start().strip_prefix('(')?.trim_start().strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, schema: Option<&str>) -> String {
        load(text, schema).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn mention_finds_an_attribute_however_it_is_spelled() {
        let mentions = |text: &str| mention(&load(text, None).expect("parses"), "ip");
        assert!(mentions("permit(principal, action, resource) when { context.ip.isInRange(ip(\"10.0.0.0/8\")) };"));
        assert!(mentions("permit(principal, action, resource) when { context[\"\\u{69}p\"] == ip(\"10.0.0.1\") };"));
        assert!(mentions("forbid(principal, action, resource) unless { context has ip };"));
        assert!(!mentions("permit(principal, action, resource) when { context.ip_text == \"10.0.0.1\" };"));
        assert!(!mentions("permit(principal, action, resource) when { principal.role == \"admin\" };"));
    }

    #[test]
    fn ids_come_from_annotations_or_cedar() {
        let set = load(
            "@id(\"admins\") permit(principal, action, resource) when { principal.role == \"admin\" };\n\
             forbid(principal, action, resource) when { context.hour < 6 };",
            None,
        )
        .expect("parses");
        let mut ids: Vec<String> = set.policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        assert_eq!(ids, vec!["admins", "policy1"]);
    }

    #[test]
    fn a_parse_error_names_the_policy_line_and_column() {
        let text = "permit(principal, action, resource);\n// a comment; with a semicolon\n\
                    @id(\"owner\")\npermit(principal, action, resource) when { resource.id == };\n";
        let e = err(text, None);
        assert!(e.starts_with("`policies`: policy `owner` (line 4, column 59) does not parse:"), "{e}");
        assert!(e.contains("unexpected token `}`"), "{e}");
        assert!(e.contains("expected"), "{e}");
        let e = err("permit(principal, action, resource);\npermit(principal, action, resourc);", None);
        assert!(e.contains("policy `policy1` (line 2"), "{e}");
    }

    #[test]
    fn several_errors_are_listed_then_counted() {
        let broken = "permit(principal, action, resource) when { 1 + };\n".repeat(5);
        let e = err(&broken, None);
        assert_eq!(e.matches("does not parse").count(), 3, "{e}");
        assert!(e.ends_with("; and 2 more"), "{e}");
    }

    #[test]
    fn empty_text_templates_and_duplicate_ids_are_refused() {
        assert!(err("  // nothing here\n", None).contains("has no policy"));
        assert!(err("permit(principal == ?principal, action, resource);", None).contains("is a template"));
        let twice = "@id(\"a\") permit(principal, action, resource);\n@id(\"a\") forbid(principal, action, resource);";
        assert!(err(twice, None).contains("two policies have the id `a`"));
        let clash = "@id(\"policy1\") permit(principal, action, resource);\npermit(principal, action, resource);";
        assert!(err(clash, None).contains("two policies have the id `policy1`"));
        assert!(err("@id(\"\") permit(principal, action, resource);", None).contains("must be non-empty"));
    }

    const SCHEMA: &str = r#"
        entity User = { role: String, sub: String };
        entity Route = { path: String, id?: String };
        action "read";
        action "GET" in ["read"] appliesTo { principal: User, resource: Route, context: { hour: Long } };
    "#;

    #[test]
    fn policies_are_validated_against_a_schema() {
        let good = "permit(principal, action in Action::\"read\", resource) when { principal.role == \"admin\" };";
        assert!(load(good, Some(SCHEMA)).is_ok());
        let text = "permit(principal, action, resource);\n\
                    @id(\"typo\") permit(principal, action == Action::\"GET\", resource) when { principal.rol == \"x\" };";
        let e = err(text, Some(SCHEMA));
        assert!(e.starts_with("the policies do not validate against `schema`: line 2, column"), "{e}");
        assert!(e.contains("for policy `typo`"), "{e}");
        assert!(e.contains("attribute `rol`"), "{e}");
    }

    #[test]
    fn a_bad_schema_is_refused_with_its_position() {
        let e = err("permit(principal, action, resource);", Some("entity User = { role: Strin };"));
        assert!(e.starts_with("`schema` (as Cedar schema syntax) (line 1, column 23) is not a valid schema"), "{e}");
        assert!(e.contains("Strin"), "{e}");
        let e = err("permit(principal, action, resource);", Some("{ \"\": { \"entityTypes\": 3 } }"));
        assert!(e.contains("as JSON schema syntax"), "{e}");
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_column("x", 99), (1, 2));
    }
}
