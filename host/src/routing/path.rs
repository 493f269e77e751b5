//! Route rewrites and the path normalisation applied before any route is
//! matched. Patterns and templates themselves are in
//! [`wasmgate_common::path`], shared with the plugins.

use std::borrow::Cow;

pub use wasmgate_common::path::{Captures, PathPattern};
use wasmgate_common::path::{Template, TemplateError, spell_escapes};

use crate::config::Ambiguous;

/// How a route changes the path before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Remove this literal prefix (on a segment boundary).
    StripPrefix(String),
    /// Build the path from literal text and captures.
    Template(Template),
}

impl Rewrite {
    pub fn strip_prefix(prefix: &str) -> Result<Self, String> {
        if !prefix.starts_with('/') {
            return Err(format!("strip_prefix `{prefix}` must start with `/`"));
        }
        Ok(Self::StripPrefix(prefix.trim_end_matches('/').to_owned()))
    }

    /// Parses `/v2/users/{id}` against the route's pattern. An error is
    /// what is wrong and how to fix it.
    pub fn template(text: &str, pattern: &PathPattern) -> Result<Self, (String, &'static str)> {
        Template::parse(text, pattern).map(Self::Template).map_err(|e| {
            let fix = match e {
                TemplateError::NotAbsolute => "e.g. rewrite = \"/v2/users/{id}\"",
                TemplateError::BadCharacter => {
                    "a rewrite is the path alone and the client's query is kept; to edit the query, use the transform plugin's request.query"
                }
                TemplateError::Unclosed | TemplateError::Stray | TemplateError::NotCaptured(_) => {
                    "use only {name} captures that the path pattern defines, e.g. rewrite = \"/v2/users/{id}\""
                }
            };
            (format!("rewrite {}", e.describe(text, pattern)), fix)
        })
    }

    /// The rewritten path (without query).
    pub fn apply<'a>(&self, path: &'a str, captures: &Captures) -> Cow<'a, str> {
        match self {
            Self::StripPrefix(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some("") => Cow::Borrowed("/"),
                Some(rest) if rest.starts_with('/') => Cow::Borrowed(rest),
                _ => Cow::Borrowed(path),
            },
            Self::Template(template) => Cow::Owned(template.apply(captures)),
        }
    }
}

/// What [`normalize`] does with paths that routes and some upstreams read
/// as two different paths (`[server] escaped_slashes`, `path_parameters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathRules {
    /// A hidden separator: `%2F`, `%5C` (also encoded twice), a raw `\`.
    pub escaped_slashes: Ambiguous,
    /// Path parameters: a `;` in the path.
    pub parameters: Ambiguous,
}

impl PathRules {
    /// Every such path kept, routed and forwarded as sent.
    pub const KEEP: Self = Self { escaped_slashes: Ambiguous::Keep, parameters: Ambiguous::Keep };
}

/// Normalises a request path before routing (RFC 3986 §6.2.2): decodes
/// percent-encoded unreserved characters (`%41` is `A`, `%2e` is `.`),
/// merges `//`, resolves `.` and `..`, so `/public/../admin` and
/// `/adm%69n` are routed — and forwarded — as `/admin`. `None` when `..`
/// climbs above the root, a dot segment has parameters (`..;`) or is
/// encoded twice (`%252e`), a `%` is not followed by two hex digits (RFC
/// 3986 §2.1), or (unless `rules` keep them) the path hides a separator or
/// has parameters.
pub fn normalize(path: &str, rules: PathRules) -> Option<Cow<'_, str>> {
    match scan(path) {
        Scan::Plain => return Some(Cow::Borrowed(path)),
        // Decoding `%%32e` leaves `%2e`: an escape the checks below never
        // saw, made by the decoding (`/public/%%32e%%32e/admin` went
        // upstream as `/public/%2e%2e/admin`, `..` to one that decodes).
        _ if malformed_escape(path) => return None,
        _ if rules.escaped_slashes == Ambiguous::Reject && hides_a_separator(path) => return None,
        _ if rules.parameters == Ambiguous::Reject && path.contains(';') => return None,
        _ => {}
    }
    let path = match spell_escapes(path) {
        // Decoding `%25%32F` makes `%252F`: a separator encoded twice that
        // the check above did not see.
        Cow::Owned(decoded) if rules.escaped_slashes == Ambiguous::Reject && hides_a_separator(&decoded) => {
            return None;
        }
        decoded => decoded,
    };
    // A dot segment with parameters (`..;x`) is a dot segment to servers
    // that drop them (Tomcat, Jetty), and one encoded twice (`%252e`) to
    // servers that decode twice; neither is one to the routes: refused.
    if path.split('/').any(|seg| matches!(seg.split_once(';'), Some(("." | "..", _))) || dots_encoded_twice(seg)) {
        return None;
    }
    if !path.contains("//") && !path.split('/').skip(1).any(|seg| dots(seg).is_some()) {
        return Some(path);
    }
    let mut out: Vec<&str> = Vec::new();
    let body = path.strip_prefix('/').unwrap_or(&path);
    let parts: Vec<&str> = body.split('/').collect();
    let last = parts.len().saturating_sub(1);
    for (i, seg) in parts.iter().enumerate() {
        match dots(seg) {
            Some(1) => {
                if i == last {
                    out.push("");
                }
            }
            Some(2) => {
                out.pop()?;
                if i == last {
                    out.push("");
                }
            }
            _ if seg.is_empty() && i != last => {}
            _ => out.push(seg),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    Some(Cow::Owned(s))
}

/// Why a route's path text — a pattern, a prefix, a `strip_prefix`, a
/// rewrite — can never meet a request's path as [`normalize`] leaves it
/// (routes match normal paths: `/adm%69n` is `/admin`, `/café` is
/// `/caf%C3%A9`, `//` is `/`), and the text to write instead; or how a
/// rewrite would make a path the upstream cannot be sent. Captures
/// (`{id}`) are taken as they come.
pub fn abnormal(text: &str, rules: PathRules) -> Option<(String, String)> {
    let segments: Vec<&str> = text.strip_prefix('/')?.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut normal = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        if seg.starts_with('{') && seg.ends_with('}') {
            normal.push(Cow::Borrowed(*seg));
            continue;
        }
        let (problem, fix) = match normalize(&format!("/{seg}"), rules) {
            _ if seg.is_empty() && i != last => {
                ("an empty segment (`//`), which request paths never have (theirs are merged)", "remove it")
            }
            _ if matches!(*seg, "." | "..") => (
                "a `.` or `..` segment, which request paths never have (theirs are resolved)",
                "write the path it stands for",
            ),
            None => {
                return Some((
                    format!("`{seg}` in `{text}`: a request path with it is answered 400"),
                    "an escaped `/`, `\\` or a `;` is refused unless server.escaped_slashes or \
                     server.path_parameters is \"keep\"; a `%` takes two hex digits"
                        .to_owned(),
                ));
            }
            Some(n) if n.get(1..) != Some(*seg) => {
                normal.push(Cow::Owned(n.get(1..).unwrap_or_default().to_owned()));
                continue;
            }
            Some(_) => {
                normal.push(Cow::Borrowed(*seg));
                continue;
            }
        };
        return Some((format!("`{text}` has {problem}"), fix.to_owned()));
    }
    let normal = format!("/{}", normal.join("/"));
    if normal != text {
        return Some((
            format!(
                "`{text}` is not in the normal form request paths are matched and sent in \
                 (escapes of letters, digits and `-._~` decoded, others in capitals, bytes beyond ASCII escaped)"
            ),
            format!("write `{normal}`"),
        ));
    }
    if normal.parse::<http::uri::PathAndQuery>().is_err() || normal.contains(['?', '#']) {
        return Some((
            format!("`{text}` is not a path an upstream can be sent"),
            "escape the character with `%`".to_owned(),
        ));
    }
    None
}

/// Whether a segment is `.` or `..` (parameters aside) once its `%25`s
/// are decoded and then its escaped unreserved characters: `%252e%252e`
/// is `..` to an upstream that decodes twice.
fn dots_encoded_twice(seg: &str) -> bool {
    if !seg.contains("%25") {
        return false;
    }
    let once = seg.replace("%25", "%");
    let twice = spell_escapes(&once);
    let name = twice.split_once(';').map_or(&*twice, |(name, _)| name);
    dots(name).is_some()
}

/// What one pass over a path's bytes tells.
enum Scan {
    /// No dot, escape, backslash, `;`, byte beyond ASCII or `//`: nothing
    /// to do (most paths).
    Plain,
    /// A `//`.
    Doubled,
    /// A dot, an escape, a backslash, a `;` or a byte beyond ASCII, and no
    /// `//`: a closer look.
    Escapes,
}

fn scan(path: &str) -> Scan {
    let mut slash = false;
    for &b in path.as_bytes() {
        match b {
            b'.' | b'%' | b'\\' | b';' | 0x80.. => {
                return if path.contains("//") { Scan::Doubled } else { Scan::Escapes };
            }
            b'/' if slash => return Scan::Doubled,
            _ => slash = b == b'/',
        }
    }
    Scan::Plain
}

/// Whether a `%` is not followed by two hex digits.
fn malformed_escape(path: &str) -> bool {
    let b = path.as_bytes();
    let hex = |i: usize| b.get(i).is_some_and(u8::is_ascii_hexdigit);
    b.iter().enumerate().any(|(i, &c)| c == b'%' && !(hex(i + 1) && hex(i + 2)))
}

/// Whether a path has an encoded slash or backslash (encoded once, or
/// twice: `%252F` is a slash to an upstream that decodes twice), or a
/// backslash.
fn hides_a_separator(path: &str) -> bool {
    let b = path.as_bytes();
    let separator = |w: &[u8]| matches!(w, [b'2', b'f' | b'F'] | [b'5', b'c' | b'C']);
    b.contains(&b'\\')
        || b.windows(3).any(|w| matches!(w, [b'%', rest @ ..] if separator(rest)))
        || b.windows(5).any(|w| matches!(w, [b'%', b'2', b'5', rest @ ..] if separator(rest)))
}

/// `Some(1)` for `.`, `Some(2)` for `..` (escapes decoded already).
fn dots(seg: &str) -> Option<u8> {
    match seg {
        "." => Some(1),
        ".." => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites() {
        let p = PathPattern::parse("/api/users/{id}/{*rest}").unwrap_or_else(|_| PathPattern::any());
        let c = p.matches("/api/users/7/orders/1").unwrap_or_default();
        let t = Rewrite::template("/v2/u/{id}/{rest}", &p);
        assert_eq!(t.as_ref().map(|t| t.apply("/x", &c).into_owned()), Ok("/v2/u/7/orders/1".into()));
        assert!(Rewrite::template("/v2/{nope}", &p).is_err());
        let s = Rewrite::strip_prefix("/api").unwrap_or(Rewrite::StripPrefix(String::new()));
        assert_eq!(s.apply("/api/users", &vec![]), "/users");
        assert_eq!(s.apply("/api", &vec![]), "/");
        assert_eq!(s.apply("/apix", &vec![]), "/apix");
    }

    #[test]
    fn normalisation() {
        let n = |p: &str| normalize(p, PathRules::KEEP).map(|c| c.into_owned());
        assert_eq!(n("/a/b"), Some("/a/b".into()));
        assert_eq!(n("/a//b"), Some("/a/b".into()));
        assert_eq!(n("/public/../admin"), Some("/admin".into()));
        assert_eq!(n("/public/%2e%2E/admin"), Some("/admin".into()));
        assert_eq!(n("/a/./b/"), Some("/a/b/".into()));
        assert_eq!(n("/a/b/.."), Some("/a/".into()));
        assert_eq!(n("/.."), None);
        assert_eq!(n("/a/..."), Some("/a/...".into()));
        assert_eq!(n("/a/%2e/b//"), Some("/a/b/".into()));
        assert_eq!(n("/a.b/c%20d"), Some("/a.b/c%20d".into()));
        // Separators hidden from the routes: kept, or refused.
        assert_eq!(n("/public/..%2Fadmin"), Some("/public/..%2Fadmin".into()));
        let reject = |p: &str| normalize(p, PathRules::default()).map(|c| c.into_owned());
        for hidden in [
            "/public/..%2Fadmin",
            "/a%2fb",
            "/a%5Cb",
            "/a%5cb",
            "/a\\b",
            "//a%2Fb",
            "/a/.%2f",
            "/a%25%2F",
            "/a%252Fb",
            "/a%255c",
            "/a%25%32Fb",
            "/a%25%32%46b",
            "/a%25%35c",
        ] {
            assert_eq!(reject(hidden), None, "{hidden}");
        }
        for plain in ["/a/b", "/a%20b/c", "/a.b", "/a%25", "/a%2520b"] {
            assert_eq!(reject(plain), Some(plain.to_owned()), "{plain}");
        }
        // Bytes beyond ASCII are escaped, escapes' hex is in capitals: one
        // spelling of a path, whichever the client sent.
        assert_eq!(n("/naïve.txt"), Some("/na%C3%AFve.txt".into()));
        assert_eq!(n("/x//naïve/../é.é"), Some("/x/%C3%A9.%C3%A9".into()));
        for p in ["/café", "/caf%c3%a9", "/caf%C3%a9", "/caf%C3%A9"] {
            assert_eq!(n(p), Some("/caf%C3%A9".into()), "{p}");
            assert_eq!(reject(p), Some("/caf%C3%A9".into()), "{p}");
        }
        assert_eq!(n("/a%2fb"), Some("/a%2Fb".into()));

        // Escaped unreserved characters mean themselves; others stay.
        assert_eq!(n("/a/b%2E%2e"), Some("/a/b..".into()));
        assert_eq!(n("/adm%69n/%7Eme"), Some("/admin/~me".into()));
        assert_eq!(n("/a%20b/%2Fc/%7a"), Some("/a%20b/%2Fc/z".into()));
        // A `%` without two hex digits: refused (RFC 3986 §2.1) — decoding
        // around it could make a new escape (`%%32e` is `%2e` once `%32`
        // is `2`), hiding a dot segment or a separator from the checks.
        for p in ["/a%zz", "/a/%4", "/a%2", "/100%", "/public/%%32e%%32e/admin", "/a%%32Fb", "/a%%35c", "/%%%32e"] {
            assert_eq!(n(p), None, "{p}");
            assert_eq!(reject(p), None, "{p}");
        }
        assert_eq!(n("/%2e%2E"), None);
        // Dot segments with parameters: refused; other parameters stay.
        for p in ["/public/..;/admin", "/a/.;x/b", "/a/%2e%2e;/b"] {
            assert_eq!(n(p), None, "{p}");
        }
        assert_eq!(n("/a;v=1/b.json;x"), Some("/a;v=1/b.json;x".into()));
        // ... unless parameters are refused (the default): `/admin;x/users`
        // is `/admin/users` to Tomcat. Separators are a rule of their own.
        for p in ["/admin;x/users", "/a/b;", "/;"] {
            assert_eq!(reject(p), None, "{p}");
        }
        let params = PathRules { parameters: Ambiguous::Reject, ..PathRules::KEEP };
        assert_eq!(normalize("/a%2Fb", params).as_deref(), Some("/a%2Fb"));
        assert_eq!(normalize("/a;b", params), None);
        let slashes = PathRules { escaped_slashes: Ambiguous::Reject, ..PathRules::KEEP };
        assert_eq!(normalize("/a;b", slashes).as_deref(), Some("/a;b"));
        assert_eq!(normalize("/a%2Fb", slashes), None);
        // A dot segment encoded twice (`..` to an upstream that decodes
        // twice): refused, however its bytes are escaped; other `%25`s stay.
        for p in ["/public/%252e%252e/admin", "/a/%252E", "/a/.%252e/b", "/a/%25%32%65%252e", "/a/%252e%252e;x/b"] {
            assert_eq!(n(p), None, "{p}");
        }
        assert_eq!(n("/a/%252e%252e%252e"), Some("/a/%252e%252e%252e".into()));
        assert_eq!(n("/a/%2520b"), Some("/a/%2520b".into()));
        assert_eq!(n("//"), Some("/".into()));
        assert_eq!(n("/"), Some("/".into()));
        // Paths already normal are borrowed, not copied.
        for p in ["/", "/a/b", "/a/b/", "/a.b/c%20d", "/a/...", "/.a/b", "/caf%C3%A9"] {
            assert!(matches!(normalize(p, PathRules::default()), Some(Cow::Borrowed(_))), "{p}");
        }
        for p in ["//", "/a//b", "/a/./b", "/a/%2e/b", "/a/b/..", "/%61", "/é", "/%c3%a9"] {
            assert!(matches!(normalize(p, PathRules::default()), Some(Cow::Owned(_))), "{p}");
        }
    }

    #[test]
    fn route_text_that_no_normal_path_meets() {
        let rules = PathRules::default();
        let fix = |t: &str| abnormal(t, rules).map(|(_, fix)| fix);
        for fine in ["/", "/api", "/api/", "/users/{id}", "/files/{*rest}", "/caf%C3%A9", "/a%20b", "/v2/{id}/x"] {
            assert_eq!(abnormal(fine, rules), None, "{fine}");
        }
        assert_eq!(fix("/adm%69n").as_deref(), Some("write `/admin`"));
        assert_eq!(fix("/café/{id}").as_deref(), Some("write `/caf%C3%A9/{id}`"));
        assert_eq!(fix("/caf%c3%a9").as_deref(), Some("write `/caf%C3%A9`"));
        for never in ["/api//x", "/a/./b", "/a/../b", "/x;y", "/a%2Fb", "/a%zz"] {
            assert!(abnormal(never, rules).is_some(), "{never}");
        }
        assert_eq!(abnormal("/x;y", PathRules::KEEP), None);
        let what = abnormal("/v2/<id>/{id}", rules);
        assert!(what.as_ref().is_some_and(|(what, _)| what.contains("not a path an upstream can be sent")), "{what:?}");
    }
}
