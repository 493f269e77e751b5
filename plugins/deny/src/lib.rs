//! `deny`: answers matching requests itself (403 by default) so they never
//! reach the upstream. A request is denied when its path, its method or one
//! of its headers matches.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use wasmgate_sdk::prelude::*;

/// The route's `config` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Paths to deny: exact (`/admin`), or a prefix ending in `/*` (`/internal/*`).
    #[serde(default)]
    paths: Vec<String>,
    /// Methods to deny, e.g. `["DELETE"]`.
    #[serde(default)]
    methods: Vec<String>,
    /// Headers that deny when present with this value (`"*"`: any value).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The status to answer with (default 403).
    #[serde(default = "default_status")]
    status: u16,
    /// The message in the JSON body (default "forbidden").
    #[serde(default)]
    message: Option<String>,
}

fn default_status() -> u16 {
    403
}

#[derive(Debug)]
enum PathRule {
    Exact(String),
    Prefix(String),
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        match self {
            // `/admin` denies `/admin/` too: most frameworks serve both.
            Self::Exact(p) => path.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest == "/"),
            // `/internal/*` denies `/internal` and everything below it.
            Self::Prefix(p) => {
                path.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }
}

/// The plugin: its rules and its answer.
#[derive(Debug)]
pub struct Deny {
    paths: Vec<PathRule>,
    methods: Vec<String>,
    headers: Vec<(String, Option<String>)>,
    status: u16,
    message: String,
}

impl Plugin for Deny {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        if c.paths.is_empty() && c.methods.is_empty() && c.headers.is_empty() {
            return Err("nothing to deny: give `paths`, `methods` or `headers`".into());
        }
        if !(400..=599).contains(&c.status) {
            return Err(format!("status {} is not an error status; use 400..=599", c.status).into());
        }
        if let Some(name) = c.headers.keys().find(|n| !wasmgate_sdk::is_token(n)) {
            return Err(format!("headers: `{name}` is not a header name, so no request could carry it").into());
        }
        let mut paths = Vec::new();
        for p in c.paths {
            if !p.starts_with('/') {
                return Err(format!("path `{p}` must start with `/`").into());
            }
            // Its own checks, then the escapes' spelling (which names the
            // spelling to write).
            if let Some(why) = unmatchable(&p).map(str::to_owned).or_else(|| wasmgate_sdk::path::not_normal(&p)) {
                return Err(format!("path `{p}` would never match: {why}").into());
            }
            paths.push(match p.strip_suffix("/*") {
                Some(prefix) => PathRule::Prefix(prefix.to_owned()),
                // `/admin/` as `/admin`: either denies both.
                None => PathRule::Exact(p.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(&p).to_owned()),
            });
        }
        Ok(Self {
            paths,
            methods: c.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            headers: c.headers.into_iter().map(|(n, v)| (n.to_ascii_lowercase(), (v != "*").then_some(v))).collect(),
            status: c.status,
            message: c.message.unwrap_or_else(|| "forbidden".to_owned()),
        })
    }

    /// The answer is a function of the path, the method and the headers
    /// the rules name: the gateway keeps it per their values.
    fn depends_on(&self) -> Option<Vec<RequestFact>> {
        let mut facts = vec![RequestFact::Path, RequestFact::Method];
        facts.extend(self.headers.iter().map(|(name, _)| RequestFact::Header(name.clone())));
        Some(facts)
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let path = req.path();
        let by_path = self.paths.iter().any(|r| r.matches(&path));
        let by_method = !self.methods.is_empty() && {
            let method = req.method();
            self.methods.iter().any(|m| m.eq_ignore_ascii_case(&method))
        };
        // Any of a header's values: a client may send it twice, or as one
        // comma-separated list (the same to a recipient, RFC 9110 §5.3).
        let by_header = self.headers.iter().any(|(name, want)| match want {
            None => req.header(name).is_some(),
            Some(want) => req.header_all(name).iter().any(|v| {
                v == want.as_bytes() || v.split(|&b| b == b',').any(|item| item.trim_ascii() == want.as_bytes())
            }),
        });
        if by_path || by_method || by_header {
            log::debug(&format!("denied {} {path}", req.method()));
            return Decision::respond(Reply::json(self.status, &error_body(&self.message)));
        }
        Decision::Continue
    }
}

/// Why no request path could be `p` (as the gateway hands paths to
/// plugins: normalised, percent-encoded, without the query), if none could.
fn unmatchable(p: &str) -> Option<&'static str> {
    let body = p.strip_suffix("/*").unwrap_or(p);
    if p.contains(['?', '#']) {
        return Some("the query is not part of the path");
    }
    if body.contains('*') {
        return Some("only a trailing `/*` is a wildcard");
    }
    if p.bytes().any(|b| !b.is_ascii_graphic()) {
        return Some("request paths are percent-encoded: write a space as `%20`, other characters as UTF-8 escapes");
    }
    let inner = body.strip_suffix('/').unwrap_or(body);
    if inner.split('/').skip(1).any(|seg| matches!(seg, "" | "." | "..")) {
        return Some("the gateway resolves `.`, `..` and `//` first: write the path they lead to");
    }
    None
}

fn error_body(message: &str) -> BTreeMap<&'static str, &str> {
    BTreeMap::from([("error", message)])
}

export_plugin!(Deny, config_schema = "config.schema.json");

#[cfg(test)]
mod tests {
    use wasmgate_sdk::testing::{self, TestRequest};

    use super::*;

    fn deny(json: &str) -> Deny {
        testing::configure::<Deny>(json).expect("config accepted")
    }

    #[test]
    fn paths_exact_and_prefix() {
        let p = deny(r#"{"paths":["/admin","/internal/*"]}"#);
        let status = |path: &str| testing::on_request(&p, &mut TestRequest::get(path)).reply().map(|r| r.status);
        assert_eq!(status("/admin"), Some(403));
        assert_eq!(status("/admin/"), Some(403), "as most frameworks serve it");
        let slash = deny(r#"{"paths":["/admin/"]}"#);
        for path in ["/admin", "/admin/"] {
            assert!(testing::on_request(&slash, &mut TestRequest::get(path)).reply().is_some(), "{path}");
        }
        assert_eq!(status("/admin/x"), None);
        assert_eq!(status("/admin//"), None);
        assert_eq!(status("/internal"), Some(403));
        assert_eq!(status("/internal/metrics"), Some(403));
        assert_eq!(status("/internals"), None);
        assert_eq!(status("/public"), None);
    }

    #[test]
    fn headers_and_methods() {
        let p = deny(r#"{"headers":{"X-Debug":"*","x-env":"prod"},"methods":["delete"],"status":451,"message":"no"}"#);
        let d = testing::on_request(&p, &mut TestRequest::get("/").header("x-debug", "1"));
        let reply = d.reply().expect("denied");
        assert_eq!(reply.status, 451);
        assert_eq!(reply.body, br#"{"error":"no"}"#);
        assert_eq!(reply.header_str("content-type"), Some("application/json"));
        assert!(testing::on_request(&p, &mut TestRequest::get("/").header("x-env", "prod")).reply().is_some());
        assert!(testing::on_request(&p, &mut TestRequest::get("/").header("x-env", "dev")).is_continue());
        let twice = TestRequest::get("/").header("x-env", "dev").header("x-env", "prod");
        assert!(testing::on_request(&p, &mut { twice }).reply().is_some(), "any of a header's values");
        let listed = TestRequest::get("/").header("x-env", "dev, prod");
        assert!(testing::on_request(&p, &mut { listed }).reply().is_some(), "any item of a list");
        let within = TestRequest::get("/").header("x-env", "production");
        assert!(testing::on_request(&p, &mut { within }).is_continue());
        assert!(testing::on_request(&p, &mut TestRequest::new("DELETE", "/")).reply().is_some());
        let purge = deny(r#"{"methods":["PURGE"]}"#);
        assert!(testing::on_request(&purge, &mut TestRequest::new("purge", "/")).reply().is_some(), "any letters");
        assert!(testing::on_request(&p, &mut TestRequest::get("/")).is_continue());
    }

    #[test]
    fn bad_configs_are_refused() {
        let err = |json: &str| testing::configure::<Deny>(json).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err("{}").contains("nothing to deny"));
        assert!(err(r#"{"paths":["admin"]}"#).contains("must start with"));
        for (path, why) in [
            ("/admin?x=1", "the query"),
            ("/internal*", "trailing `/*`"),
            ("/a/*/b", "trailing `/*`"),
            ("/my report", "percent-encoded"),
            ("/café", "percent-encoded"),
            ("/adm%69n", "write `/admin`"),
            ("/caf%c3%a9", "write `/caf%C3%A9`"),
            ("/a/../admin", "resolves"),
            ("/a//b", "resolves"),
        ] {
            let e = err(&format!(r#"{{"paths":["{path}"]}}"#));
            assert!(e.contains("would never match") && e.contains(why), "{path}: {e}");
        }
        for fine in ["/", "/*", "/admin/", "/a%2Fb", "/x/*", "/a.b/c~d"] {
            assert!(testing::configure::<Deny>(&format!(r#"{{"paths":["{fine}"]}}"#)).is_ok(), "{fine}");
        }
        assert!(err(r#"{"paths":["/a"],"status":200}"#).contains("not an error status"));
        assert!(err(r#"{"headers":{"x debug":"*"}}"#).contains("`x debug` is not a header name"));
    }

    /// Every answer depends on the path, the method and the named headers
    /// alone (`depends_on`), so the gateway keeps each.
    #[test]
    fn every_answer_is_one_the_gateway_keeps() {
        let p = deny(r#"{"paths":["/admin/*"],"methods":["DELETE"],"headers":{"X-Debug":"*"}}"#);
        for mut req in [
            TestRequest::get("/admin/x"),
            TestRequest::get("/ok").header("x-debug", "1"),
            TestRequest::new("DELETE", "/ok"),
            TestRequest::get("/ok"),
        ] {
            let (_, kept) = testing::on_request_kept(&p, &mut req);
            assert_eq!(kept, Ok(()));
        }
    }
}
