//! Path patterns and path templates in the gateway's route syntax, shared
//! by the router (`match.path`, `rewrite`) and plugins that rewrite paths
//! (transform's `request.path`), so both read a pattern the same way.
//!
//! `{name}` captures one non-empty segment, `{*name}` as the last segment
//! captures the rest (`/` included, possibly empty), and a pattern is
//! anchored at both ends. A template copies captures as they appear in the
//! (percent-encoded) path, never decoded.

use std::borrow::Cow;
use std::sync::Arc;

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param(Arc<str>),
    /// `{*name}`: zero or more segments, last only. `None` for a `prefix`.
    CatchAll(Option<Arc<str>>),
}

/// A route's path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
    source: String,
}

/// Values captured by a pattern, in pattern order.
pub type Captures = Vec<(Arc<str>, String)>;

impl PathPattern {
    /// Matches every path.
    pub fn any() -> Self {
        Self { segments: vec![Segment::CatchAll(None)], source: "/".to_owned() }
    }

    /// Parses `/a/{b}/{*c}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("path `{text}` must start with `/`"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let seg = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (catch_all, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                if !valid_ident(name) {
                    return Err(format!("`{{{inner}}}` in `{text}`: a capture name is letters, digits and `_`"));
                }
                if names.contains(&name) {
                    return Err(format!("capture `{name}` appears twice in `{text}`"));
                }
                names.push(name);
                if catch_all {
                    if i + 1 != parts.len() {
                        return Err(format!("`{{*{name}}}` in `{text}` must be the last segment"));
                    }
                    Segment::CatchAll(Some(Arc::from(name)))
                } else {
                    Segment::Param(Arc::from(name))
                }
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "segment `{part}` in `{text}`: a segment is either literal text or a whole `{{name}}`"
                ));
            } else if part.bytes().any(bad_path_byte) {
                return Err(format!("path `{text}` has a space, `?`, `#` or control character"));
            } else {
                Segment::Literal((*part).to_owned())
            };
            segments.push(seg);
        }
        Ok(Self { segments, source: text.to_owned() })
    }

    /// `prefix = "/api"`: `/api`, `/api/` and everything below, on segment
    /// boundaries (not `/apix`).
    pub fn prefix(text: &str) -> Result<Self, String> {
        if text.contains(['{', '}']) {
            return Err(format!("prefix `{text}` cannot hold captures; use `path` for patterns"));
        }
        let trimmed = text.trim_end_matches('/');
        let mut pattern = if trimmed.is_empty() {
            Self { segments: Vec::new(), source: String::new() }
        } else {
            Self::parse(trimmed)?
        };
        pattern.segments.push(Segment::CatchAll(None));
        pattern.source = format!("{trimmed}/*");
        Ok(pattern)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern defines capture `name`.
    pub fn has_capture(&self, name: &str) -> bool {
        self.segments.iter().any(|s| match s {
            Segment::Param(n) | Segment::CatchAll(Some(n)) => &**n == name,
            _ => false,
        })
    }

    /// The first segment, when it is literal text (the router's bucket key).
    pub fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(l)) => Some(l),
            _ => None,
        }
    }

    /// Ranks of the segments, for "most specific wins": a literal beats a
    /// capture, which beats a catch-all, and an exact end beats a catch-all.
    pub fn rank(&self) -> Vec<u8> {
        let mut r: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 3,
                Segment::Param(_) => 2,
                Segment::CatchAll(_) => 1,
            })
            .collect();
        if !matches!(self.segments.last(), Some(Segment::CatchAll(_))) {
            r.push(4);
        }
        r
    }

    /// Whether two patterns of equal rank can match the same path.
    pub fn overlaps_same_rank(&self, other: &Self) -> bool {
        self.segments.iter().zip(&other.segments).all(|pair| match pair {
            (Segment::Literal(a), Segment::Literal(b)) => a == b,
            _ => true,
        })
    }
}

/// Splits off the first segment: `("a", Some("b/c"))` for `a/b/c`, and
/// `("a", None)` for `a`.
fn split_segment(rest: &str) -> Option<(&str, Option<&str>)> {
    Some(match rest.split_once('/') {
        Some((head, tail)) => (head, Some(tail)),
        None => (rest, None),
    })
}

impl PathPattern {
    /// Matches a normalised path, returning its captures. A path that ends
    /// before the pattern's segments matches only a trailing catch-all.
    pub fn matches(&self, path: &str) -> Option<Captures> {
        let mut captures = Vec::new();
        let mut rest: Option<&str> = Some(path.strip_prefix('/')?);
        for seg in &self.segments {
            match seg {
                Segment::CatchAll(name) => {
                    if let Some(name) = name {
                        captures.push((name.clone(), rest.unwrap_or("").to_owned()));
                    }
                    return Some(captures);
                }
                Segment::Literal(lit) => {
                    let (head, tail) = split_segment(rest?)?;
                    if head != lit {
                        return None;
                    }
                    rest = tail;
                }
                Segment::Param(name) => {
                    let (head, tail) = split_segment(rest?)?;
                    if head.is_empty() {
                        return None;
                    }
                    captures.push((name.clone(), head.to_owned()));
                    rest = tail;
                }
            }
        }
        rest.is_none().then_some(captures)
    }
}

fn valid_ident(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A path built from literal text and a pattern's captures:
/// `/v2/users/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    /// The literal parts' length, for sizing a path up front.
    literal_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Capture(String),
}

/// Why a template was refused; each caller words it for its own config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// It does not start with `/`.
    NotAbsolute,
    /// It holds a space, `?`, `#` or a control character.
    BadCharacter,
    /// A `{` without its `}`.
    Unclosed,
    /// A `}` without its `{`.
    Stray,
    /// `{name}` (or `{*name}`), which the pattern does not capture.
    NotCaptured(String),
}

impl TemplateError {
    /// What is wrong with template `text` (parsed against `pattern`), for
    /// a config error; the caller says which key it is.
    pub fn describe(&self, text: &str, pattern: &PathPattern) -> String {
        match self {
            Self::NotAbsolute => format!("`{text}` must start with `/`"),
            Self::BadCharacter => format!("`{text}` has a space, `?`, `#` or control character"),
            Self::Unclosed => format!("`{text}` has an unclosed `{{`"),
            Self::Stray => format!("`{text}` has a stray `}}`"),
            Self::NotCaptured(name) => {
                format!("`{text}` uses `{{{name}}}`, which the path `{}` does not capture", pattern.as_str())
            }
        }
    }
}

impl Template {
    /// Parses `/v2/users/{id}` against the pattern whose captures it uses.
    pub fn parse(text: &str, pattern: &PathPattern) -> Result<Self, TemplateError> {
        if !text.starts_with('/') {
            return Err(TemplateError::NotAbsolute);
        }
        if text.bytes().any(bad_path_byte) {
            return Err(TemplateError::BadCharacter);
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(TemplateError::Unclosed);
            };
            let inner = &rest[open + 1..open + close];
            let name = inner.strip_prefix('*').unwrap_or(inner);
            if !pattern.has_capture(name) {
                return Err(TemplateError::NotCaptured(inner.to_owned()));
            }
            parts.push(Part::Capture(name.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(TemplateError::Stray);
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        let literal_len = parts.iter().map(|p| if let Part::Literal(l) = p { l.len() } else { 0 }).sum();
        Ok(Self { parts, literal_len })
    }

    /// The path with the captures filled in.
    pub fn apply(&self, captures: &Captures) -> String {
        let mut out = String::with_capacity(self.literal_len + captures.iter().map(|(_, v)| v.len()).sum::<usize>());
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Capture(name) => {
                    if let Some((_, v)) = captures.iter().find(|(n, _)| &**n == name) {
                        out.push_str(v);
                    }
                }
            }
        }
        // `/users/{*rest}` with an empty rest leaves `/users/`; collapse
        // the doubled slash a capture at a boundary can leave, in one pass
        // (removing one at a time was quadratic in the slashes).
        if !out.contains("//") {
            return out;
        }
        let mut collapsed = String::with_capacity(out.len());
        for c in out.chars() {
            if !(c == '/' && collapsed.ends_with('/')) {
                collapsed.push(c);
            }
        }
        collapsed
    }
}

/// Why no request path, as the gateway hands paths to routes and plugins,
/// is spelled like `text`, if none is ([`spell_escapes`] changes it): the
/// spelling to write. For the paths a plugin's config names (the gateway's
/// routes check theirs against the whole normalisation).
pub fn not_normal(text: &str) -> Option<String> {
    match spell_escapes(text) {
        Cow::Borrowed(_) => None,
        Cow::Owned(normal) => Some(format!(
            "the gateway spells escapes one way (a byte beyond ASCII escaped, hex digits in capitals, \
             letters, digits and `-._~` unescaped): write `{normal}`"
        )),
    }
}

/// `path` with its escapes in one spelling (RFC 3986 §6.2.2.1–2): an
/// escaped unreserved character (letters, digits, `-`, `.`, `_`, `~`)
/// decoded — it means the same decoded, and a route matches what it
/// means —, another escape's hex digits in capitals, and a byte beyond
/// ASCII (raw UTF-8, which a request target may not carry: RFC 9112 §3.2)
/// escaped. `/café`, `/caf%c3%a9` and `/caf%C3%A9` are one path to an
/// upstream, and to the routes `/caf%C3%A9` (one matched a route the
/// others passed by). A `%` without two hex digits is left as it is (the
/// gateway refuses such a path before). The gateway's normalisation of
/// request paths, and what a plugin's config is checked against
/// ([`not_normal`]).
pub fn spell_escapes(path: &str) -> Cow<'_, str> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let escape = |w: &[u8]| match w {
        [b'%', hi, lo] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
            let digit = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
            Some((digit(*hi)? << 4) | digit(*lo)?)
        }
        _ => None,
    };
    let unreserved = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
    let b = path.as_bytes();
    let changes = |i: usize, c: u8| {
        !c.is_ascii()
            || (c == b'%'
                && b.get(i..i + 3).is_some_and(|w| {
                    escape(w).is_some_and(unreserved) || w[1].is_ascii_lowercase() || w[2].is_ascii_lowercase()
                }))
    };
    if !b.iter().enumerate().any(|(i, &c)| changes(i, c)) {
        return Cow::Borrowed(path);
    }
    let mut out = Vec::with_capacity(b.len() + 16);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match b.get(i..i + 3).and_then(escape) {
            Some(byte) if unreserved(byte) => {
                out.push(byte);
                i += 3;
            }
            Some(byte) => {
                out.extend_from_slice(&[b'%', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]]);
                i += 3;
            }
            None if !c.is_ascii() => {
                out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
                i += 1;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    // ASCII alone: UTF-8.
    String::from_utf8(out).map_or(Cow::Borrowed(path), Cow::Owned)
}

/// A byte no path may hold as written: controls, space, `?` and `#`.
fn bad_path_byte(b: u8) -> bool {
    b <= b' ' || b == b'?' || b == b'#' || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(p: &str, path: &str) -> Option<Vec<(String, String)>> {
        PathPattern::parse(p).ok()?.matches(path).map(|c| c.into_iter().map(|(n, v)| (n.to_string(), v)).collect())
    }

    #[test]
    fn paths_not_as_the_gateway_spells_them() {
        for normal in ["/", "/caf%C3%A9", "/a%20b", "/a%2Fb", "/users/{id}"] {
            assert_eq!(not_normal(normal), None, "{normal}");
        }
        for not in ["/café", "/adm%69n", "/caf%c3%a9", "/a%2fb"] {
            assert!(not_normal(not).is_some(), "{not}");
        }
    }

    #[test]
    fn exact_and_params() {
        assert_eq!(caps("/users", "/users"), Some(vec![]));
        assert_eq!(caps("/users", "/users/"), None);
        assert_eq!(caps("/users", "/users/1"), None);
        assert_eq!(caps("/users/{id}", "/users/7"), Some(vec![("id".into(), "7".into())]));
        assert_eq!(caps("/users/{id}", "/users/"), None);
        assert_eq!(caps("/users/{id}", "/users"), None);
        assert_eq!(caps("/", "/"), Some(vec![]));
    }

    #[test]
    fn catch_all_matches_zero_or_more() {
        assert_eq!(caps("/api/{*rest}", "/api"), Some(vec![("rest".into(), "".into())]));
        assert_eq!(caps("/api/{*rest}", "/api/a/b"), Some(vec![("rest".into(), "a/b".into())]));
        assert_eq!(caps("/api/{*rest}", "/apix"), None);
    }

    #[test]
    fn prefix_is_on_segment_boundaries() {
        let p = PathPattern::prefix("/api/").unwrap_or_else(|_| PathPattern::any());
        assert!(p.matches("/api").is_some());
        assert!(p.matches("/api/v1/x").is_some());
        assert!(p.matches("/apiv1").is_none());
        assert!(PathPattern::prefix("/").is_ok_and(|p| p.matches("/anything").is_some()));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(PathPattern::parse("users").is_err());
        assert!(PathPattern::parse("/a/{*rest}/b").is_err());
        assert!(PathPattern::parse("/a/{id}.json").is_err());
        assert!(PathPattern::parse("/a/{id}/{id}").is_err());
        assert!(PathPattern::parse("/a/{}").is_err());
        assert!(PathPattern::parse("/a b").is_err());
    }

    #[test]
    fn ranks_prefer_literals_then_params_then_catch_all() {
        let r = |p: &str| PathPattern::parse(p).map(|p| p.rank()).unwrap_or_default();
        assert!(r("/a/b") > r("/a/{x}"));
        assert!(r("/a/{x}") > r("/a/{*x}"));
        assert!(r("/a/b") > r("/a/b/{*x}"));
        assert!(r("/a/b/{*x}") > r("/a/{*x}"));
    }

    #[test]
    fn templates_fill_in_captures() {
        let p = PathPattern::parse("/api/users/{id}/{*rest}").unwrap_or_else(|_| PathPattern::any());
        let c = p.matches("/api/users/7/orders/1").unwrap_or_default();
        let t = |text: &str| Template::parse(text, &p).map(|t| t.apply(&c));
        assert_eq!(t("/v2/u/{id}/{rest}"), Ok("/v2/u/7/orders/1".into()));
        assert_eq!(t("/v2/u/{id}/{*rest}"), Ok("/v2/u/7/orders/1".into()), "`{{*rest}}` names the capture too");
        let empty = p.matches("/api/users/7").unwrap_or_default();
        let t2 = Template::parse("/u/{id}/{rest}/x", &p).map(|t| t.apply(&empty));
        assert_eq!(t2, Ok("/u/7/x".into()), "an empty capture leaves no doubled slash");
        let slashes: Captures = vec![(Arc::from("id"), "//7//".into()), (Arc::from("rest"), "a///b/".into())];
        let t3 = Template::parse("/u/{id}/{rest}/x", &p).map(|t| t.apply(&slashes));
        assert_eq!(t3, Ok("/u/7/a/b/x".into()), "every run of slashes becomes one");
    }

    #[test]
    fn bad_templates_say_why() {
        let p = PathPattern::parse("/v1/{id}").unwrap_or_else(|_| PathPattern::any());
        let e = |text: &str| Template::parse(text, &p).err();
        assert_eq!(e("x/{id}"), Some(TemplateError::NotAbsolute));
        assert_eq!(e("/x?y={id}"), Some(TemplateError::BadCharacter));
        assert_eq!(e("/x/{id"), Some(TemplateError::Unclosed));
        assert_eq!(e("/x/id}"), Some(TemplateError::Stray));
        assert_eq!(e("/x/{uid}"), Some(TemplateError::NotCaptured("uid".into())));
        assert_eq!(e("/x/{*uid}"), Some(TemplateError::NotCaptured("*uid".into())));
        assert_eq!(e("/x/{id}"), None);
        assert_eq!(
            TemplateError::NotCaptured("uid".into()).describe("/x/{uid}", &p),
            "`/x/{uid}` uses `{uid}`, which the path `/v1/{id}` does not capture"
        );
    }
}
