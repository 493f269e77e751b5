//! Path patterns (`/users/{id}`, `/api/{*rest}`), rewrites, and the path
//! normalisation applied before any route is matched.

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
            } else if part.bytes().any(|b| b <= b' ' || b == b'?' || b == b'#' || b == 0x7f) {
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
    pub(crate) fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(l)) => Some(l),
            _ => None,
        }
    }

    /// Ranks of the segments, for "most specific wins": a literal beats a
    /// capture, which beats a catch-all, and an exact end beats a catch-all.
    pub(crate) fn rank(&self) -> Vec<u8> {
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
    pub(crate) fn overlaps_same_rank(&self, other: &Self) -> bool {
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

/// How a route changes the path before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Remove this literal prefix (on a segment boundary).
    StripPrefix(String),
    /// Build the path from literal text and captures.
    Template(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Capture(String),
}

impl Rewrite {
    pub fn strip_prefix(prefix: &str) -> Result<Self, String> {
        if !prefix.starts_with('/') {
            return Err(format!("strip_prefix `{prefix}` must start with `/`"));
        }
        Ok(Self::StripPrefix(prefix.trim_end_matches('/').to_owned()))
    }

    /// Parses `/v2/users/{id}` against the route's pattern.
    pub fn template(text: &str, pattern: &PathPattern) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("rewrite `{text}` must start with `/`"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("rewrite `{text}` has an unclosed `{{`"));
            };
            let name = &rest[open + 1..open + close];
            let name = name.strip_prefix('*').unwrap_or(name);
            if !pattern.has_capture(name) {
                return Err(format!(
                    "rewrite `{text}` uses `{{{name}}}`, which the path `{}` does not capture",
                    pattern.as_str()
                ));
            }
            parts.push(Part::Capture(name.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("rewrite `{text}` has a stray `}}`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self::Template(parts))
    }

    /// The rewritten path (without query).
    pub fn apply<'a>(&self, path: &'a str, captures: &Captures) -> Cow<'a, str> {
        match self {
            Self::StripPrefix(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some("") => Cow::Borrowed("/"),
                Some(rest) if rest.starts_with('/') => Cow::Borrowed(rest),
                _ => Cow::Borrowed(path),
            },
            Self::Template(parts) => {
                let mut out = String::with_capacity(path.len());
                for part in parts {
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
                // the doubled slash a capture at a boundary can leave.
                while let Some(i) = out.find("//") {
                    out.remove(i);
                }
                Cow::Owned(out)
            }
        }
    }
}

/// Normalises a request path before routing: merges `//`, resolves `.` and
/// `..` (also percent-encoded), so `/public/../admin` is routed — and
/// forwarded — as `/admin`. `None` when `..` climbs above the root.
pub fn normalize(path: &str) -> Option<Cow<'_, str>> {
    if !needs_normalizing(path) {
        return Some(Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    let body = path.strip_prefix('/').unwrap_or(path);
    let parts: Vec<&str> = body.split('/').collect();
    let last = parts.len().saturating_sub(1);
    for (i, seg) in parts.iter().enumerate() {
        match decode_dots(seg) {
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

fn needs_normalizing(path: &str) -> bool {
    let b = path.as_bytes();
    if b.windows(2).any(|w| w == b"//") {
        return true;
    }
    path.split('/').skip(1).any(|seg| decode_dots(seg).is_some())
}

/// `Some(1)` for `.`, `Some(2)` for `..` (either may be `%2e`-encoded).
fn decode_dots(seg: &str) -> Option<u8> {
    let mut n = 0u8;
    let mut rest = seg;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case("%2e") {
            rest = &rest[3..];
        } else {
            return None;
        }
        n += 1;
        if n > 2 {
            return None;
        }
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(p: &str, path: &str) -> Option<Vec<(String, String)>> {
        PathPattern::parse(p).ok()?.matches(path).map(|c| c.into_iter().map(|(n, v)| (n.to_string(), v)).collect())
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
        let n = |p: &str| normalize(p).map(|c| c.into_owned());
        assert_eq!(n("/a/b"), Some("/a/b".into()));
        assert_eq!(n("/a//b"), Some("/a/b".into()));
        assert_eq!(n("/public/../admin"), Some("/admin".into()));
        assert_eq!(n("/public/%2e%2E/admin"), Some("/admin".into()));
        assert_eq!(n("/a/./b/"), Some("/a/b/".into()));
        assert_eq!(n("/a/b/.."), Some("/a/".into()));
        assert_eq!(n("/.."), None);
        assert_eq!(n("/a/..."), Some("/a/...".into()));
    }
}
