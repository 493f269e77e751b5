//! URL templates: `upstream://users/users/{path.user_id}?lang={header.accept-language}`.
//!
//! A `{source.name}` placeholder takes a value from the client's request:
//! `path` (a route capture), `header`, `query`, `claim` (a member of the JSON
//! the jwt plugin leaves in context `jwt.claims`) or `context`. Every value
//! is percent-encoded (all but RFC 3986's unreserved characters), so it
//! stays inside its path segment or query value: a `/`, `?`, `&` or `#` in
//! a value can never change where the call goes. The scheme and upstream
//! name (or origin) are literal: a client never picks the target.

use std::fmt;

use wasmgate_sdk::query;

/// Where a placeholder's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Path,
    Header,
    Query,
    Claim,
    Context,
}

impl Source {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "path" => Self::Path,
            "header" => Self::Header,
            "query" => Self::Query,
            "claim" => Self::Claim,
            "context" => Self::Context,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Header => "header",
            Self::Query => "query",
            Self::Claim => "claim",
            Self::Context => "context",
        }
    }
}

/// A `{source.name}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub source: Source,
    pub name: String,
    /// Before the `?`: the value fills (part of) a path segment.
    in_path: bool,
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.source.as_str(), self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

/// A checked URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    parts: Vec<Part>,
}

/// Why a URL could not be built for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The request has no such value (`missing path.user_id`).
    Missing(String),
    /// A value that would step out of its path segment (`.`, `..`, or from
    /// a header or the query, one with `/`, `\` or `%`).
    Invalid(String),
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl UrlTemplate {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = ["upstream://", "https://", "http://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .ok_or_else(|| format!("`{url}` must start with upstream://NAME/ (or a granted https:// origin)"))?;
        let target = rest.split(['/', '?']).next().unwrap_or_default();
        if target.is_empty() {
            return Err(format!("`{url}` names no upstream or host"));
        }
        if target.contains(['{', '}']) {
            return Err(format!("`{url}`: the upstream or host cannot come from the request; only its path and query"));
        }
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("`{url}` has a space or control character"));
        }
        if url.contains('#') {
            return Err(format!("`{url}` has a `#`: a fragment is never sent"));
        }
        let mut parts = Vec::new();
        let mut in_path = true;
        let mut rest = url;
        while let Some(open) = rest.find('{') {
            let literal = &rest[..open];
            if literal.contains('}') {
                return Err(format!("`{url}` has a stray `}}`"));
            }
            in_path &= !literal.contains('?');
            if !literal.is_empty() {
                parts.push(Part::Literal(literal.to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("`{url}` has an unclosed `{{`"));
            };
            parts.push(Part::Var(parse_var(&rest[open + 1..open + close], url, in_path)?));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{url}` has a stray `}}`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The URL with each placeholder replaced by `value(var)` (the value as
    /// text, not yet encoded) and percent-encoded. In a path, an empty value
    /// counts as missing (it would drop a segment: `/users/` is the list),
    /// and a value with a `.` or `..` piece between `/` or `\\`, and a
    /// header's or query's value with `/`, `\\` or `%`, are refused.
    pub fn render(&self, mut value: impl FnMut(&Var) -> Option<Vec<u8>>) -> Result<String, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Var(var) => {
                    let v = value(var).ok_or_else(|| RenderError::Missing(var.to_string()))?;
                    if var.in_path {
                        if v.is_empty() {
                            return Err(RenderError::Missing(var.to_string()));
                        }
                        // Encoded, a separator or `%` stays in the segment
                        // only for upstreams that split the path before
                        // they decode it (`..%2Fadmin` is `../admin` to
                        // others): refused from a header or the query, as
                        // the gateway's `escaped_slashes` refuses them in
                        // request paths (which vetted the captures).
                        let client = matches!(var.source, Source::Header | Source::Query);
                        if dot_segment(&v) || (client && v.iter().any(|b| matches!(b, b'/' | b'\\' | b'%'))) {
                            return Err(RenderError::Invalid(var.to_string()));
                        }
                    }
                    query::encode_into(&v, &mut out);
                }
            }
        }
        Ok(out)
    }
}

/// Whether a path value has a `.` or `..` piece, between `/` or `\\` (a
/// capture that spans segments, `{*rest}`, decoded: `..%2F..%2Fadmin` is
/// `../../admin` with `server.escaped_slashes = "keep"`), which would climb
/// out of the call's path on an upstream that decodes it.
fn dot_segment(value: &[u8]) -> bool {
    value.split(|b| matches!(b, b'/' | b'\\')).any(|piece| piece == b"." || piece == b"..")
}

fn parse_var(inner: &str, url: &str, in_path: bool) -> Result<Var, String> {
    let (source, name) = inner.split_once('.').unwrap_or((inner, ""));
    let Some(source) = Source::parse(source) else {
        return Err(format!(
            "`{{{inner}}}` in `{url}`: use {{path.NAME}}, {{header.NAME}}, {{query.NAME}}, \
             {{claim.NAME}} or {{context.KEY}}"
        ));
    };
    if name.is_empty() {
        return Err(format!("`{{{inner}}}` in `{url}` names no {}", source.as_str()));
    }
    let name = match source {
        Source::Header if !valid_header_name(name) => {
            return Err(format!("`{{{inner}}}` in `{url}`: `{name}` is not a header name"));
        }
        Source::Header => name.to_ascii_lowercase(),
        Source::Path if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            return Err(format!("`{{{inner}}}` in `{url}`: a route capture name is letters, digits and `_`"));
        }
        _ => name.to_owned(),
    };
    Ok(Var { source, name, in_path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(url: &str) -> UrlTemplate {
        UrlTemplate::parse(url).expect("valid template")
    }

    fn err(url: &str) -> String {
        UrlTemplate::parse(url).err().unwrap_or_default()
    }

    #[test]
    fn renders_and_encodes() {
        let tpl = t("upstream://users/users/{path.id}?lang={header.Accept-Language}&q={query.q}");
        let url = tpl.render(|v| match (v.source, v.name.as_str()) {
            (Source::Path, "id") => Some(b"a b/c?".to_vec()),
            (Source::Header, "accept-language") => Some(b"fr-CA,fr;q=0.9".to_vec()),
            (Source::Query, "q") => Some("x&y=1 ä".as_bytes().to_vec()),
            _ => None,
        });
        assert_eq!(
            url.as_deref(),
            Ok("upstream://users/users/a%20b%2Fc%3F?lang=fr-CA%2Cfr%3Bq%3D0.9&q=x%26y%3D1%20%C3%A4")
        );
    }

    #[test]
    fn missing_empty_and_dot_values() {
        let tpl = t("upstream://users/users/{path.id}?tenant={header.x-tenant}");
        let render = |id: Option<&str>, tenant: Option<&str>| {
            tpl.render(|v| match v.source {
                Source::Path => id.map(|s| s.as_bytes().to_vec()),
                _ => tenant.map(|s| s.as_bytes().to_vec()),
            })
        };
        assert_eq!(render(None, Some("a")), Err(RenderError::Missing("path.id".into())));
        assert_eq!(render(Some("1"), None), Err(RenderError::Missing("header.x-tenant".into())));
        assert_eq!(render(Some(""), Some("a")), Err(RenderError::Missing("path.id".into())), "empty in a path");
        assert_eq!(render(Some(".."), Some("a")), Err(RenderError::Invalid("path.id".into())));
        assert_eq!(render(Some("1"), Some("")).as_deref(), Ok("upstream://users/users/1?tenant="), "empty in a query");
        assert_eq!(render(Some("..."), Some("..")).as_deref(), Ok("upstream://users/users/...?tenant=.."));
        // A capture across segments (`{*rest}`), decoded: no piece may climb.
        for climbing in ["../../admin", "a/../b", "a/.", "..\\admin", "a\\..\\b", "./a"] {
            assert_eq!(render(Some(climbing), Some("a")), Err(RenderError::Invalid("path.id".into())), "{climbing}");
        }
        for fine in ["a/b", "a/.../b", "..a/b..", "a/.b"] {
            assert!(render(Some(fine), Some("a")).is_ok(), "{fine}");
        }
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(err("users/{path.id}").contains("must start with upstream://"));
        assert!(err("upstream:///x").contains("names no upstream"));
        assert!(err("upstream://{header.host}/x").contains("cannot come from the request"));
        assert!(err("upstream://u/{cookie.x}").contains("use {path.NAME}"));
        assert!(err("upstream://u/{path}").contains("names no path"));
        assert!(err("upstream://u/{path.a-b}").contains("letters, digits"));
        assert!(err("upstream://u/{header.a b}").contains("space"));
        assert!(err("upstream://u/{header.a:b}").contains("not a header name"));
        assert!(err("upstream://u/{path.id").contains("unclosed"));
        assert!(err("upstream://u/x}").contains("stray"));
        assert!(err("upstream://u/x#frag").contains("fragment"));
    }

    #[test]
    fn position_is_known_at_parse_time() {
        // Empty is missing before the `?` only; claim names may hold `/` and `:`.
        let tpl = t("https://idp.example.com/keys/{context.kid}?for={claim.https://example.com/org}");
        let render = |kid: &'static str| {
            tpl.render(|v| Some(if v.source == Source::Context { kid.as_bytes().to_vec() } else { Vec::new() }))
        };
        assert_eq!(render(""), Err(RenderError::Missing("context.kid".into())));
        assert_eq!(render("k1").as_deref(), Ok("https://idp.example.com/keys/k1?for="));
    }
}
