//! `add-header`: sets, appends and removes headers on the request (before
//! the upstream sees it) and on the response (before the client does).

use std::collections::BTreeMap;

use serde::Deserialize;
use wasmgate_sdk::prelude::*;

/// The route's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shorthand for one request header: `{ name = "x-hello", value = "world" }`.
    name: Option<String>,
    value: Option<String>,
    #[serde(default)]
    request: Edits,
    #[serde(default)]
    response: Edits,
}

/// Header edits, applied in this order: remove, set, append.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edits {
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    append: BTreeMap<String, String>,
}

impl Edits {
    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.append.is_empty()
    }

    fn check(&self, side: &str) -> Result<(), ConfigError> {
        for name in self.remove.iter().chain(self.set.keys()).chain(self.append.keys()) {
            check_header_name(name).map_err(|e| format!("{side}: {e}"))?;
        }
        for (name, value) in self.set.iter().chain(self.append.iter()) {
            check_header_value(name, value.as_bytes()).map_err(|e| format!("{side}: {e}"))?;
        }
        Ok(())
    }

    /// Applies the edits to the request's or the response's headers. Names
    /// and values were checked at config time; a refused edit is logged.
    fn apply(&self, target: &mut impl Headers, side: &str) {
        for name in &self.remove {
            target.remove_header(name);
        }
        for (name, value) in &self.set {
            if let Err(e) = target.set_header(name, value) {
                log::warn(&format!("cannot set {side} header {name}: {e}"));
            }
        }
        for (name, value) in &self.append {
            if let Err(e) = target.append_header(name, value) {
                log::warn(&format!("cannot append {side} header {name}: {e}"));
            }
        }
    }
}

/// The plugin: the edits for each phase.
#[derive(Debug)]
pub struct AddHeader {
    request: Edits,
    response: Edits,
}

impl Plugin for AddHeader {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let mut request = config.request;
        match (config.name, config.value) {
            (Some(name), Some(value)) => {
                request.set.insert(name, value);
            }
            (None, None) => {}
            _ => {
                return Err("`name` and `value` go together: give both, or use `request.set`".into());
            }
        }
        request.check("request")?;
        config.response.check("response")?;
        if request.is_empty() && config.response.is_empty() {
            return Err(
                "nothing to do: give `name` and `value`, or `request`/`response` with set, append or remove".into()
            );
        }
        Ok(Self { request, response: config.response })
    }

    fn info(&self) -> Info {
        Info { on_request: !self.request.is_empty(), on_response: !self.response.is_empty(), ..Info::default() }
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        self.request.apply(req, "request");
        Decision::Continue
    }

    fn on_response(&self, _req: &Request<'_>, resp: &mut Response<'_>) -> Decision {
        self.response.apply(resp, "response");
        Decision::Continue
    }
}

export_plugin!(AddHeader);

#[cfg(test)]
mod tests {
    use wasmgate_sdk::testing::{self, TestRequest, TestResponse};

    use super::*;

    fn plugin(json: &str) -> AddHeader {
        testing::configure::<AddHeader>(json).expect("config accepted")
    }

    #[test]
    fn shorthand_sets_a_request_header() {
        let p = plugin(r#"{"name":"x-hello","value":"world"}"#);
        let mut req = TestRequest::get("/").header("x-hello", "old");
        assert!(testing::on_request(&p, &mut req).is_continue());
        assert_eq!(req.headers.get_all("x-hello"), vec![b"world".to_vec()]);
    }

    #[test]
    fn request_and_response_edits_apply_in_order() {
        let p = plugin(
            r#"{"request":{"remove":["cookie"],"set":{"x-a":"1"},"append":{"x-b":"2"}},
                "response":{"remove":["server"],"set":{"x-frame-options":"DENY"}}}"#,
        );
        assert_eq!(p.info(), Info { on_request: true, on_response: true, ..Info::default() });
        let mut req = TestRequest::get("/").header("cookie", "s=1").header("x-b", "1");
        let _ = testing::on_request(&p, &mut req);
        assert_eq!(req.headers.get("cookie"), None);
        assert_eq!(req.headers.get_str("x-a").as_deref(), Some("1"));
        assert_eq!(req.headers.get_all("x-b"), vec![b"1".to_vec(), b"2".to_vec()]);

        let mut resp = TestResponse::new(200).header("server", "nginx");
        let _ = testing::on_response(&p, &mut req, &mut resp);
        assert_eq!(resp.headers.get("server"), None);
        assert_eq!(resp.headers.get_str("x-frame-options").as_deref(), Some("DENY"));
    }

    #[test]
    fn response_only_config_skips_the_request_hook() {
        let p = plugin(r#"{"response":{"set":{"x-r":"1"}}}"#);
        assert!(!p.info().on_request);
        assert!(p.info().on_response);
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let err = |json: &str| testing::configure::<AddHeader>(json).err().map(|e| e.to_string());
        assert_eq!(err("{}").as_deref().map(|e| e.starts_with("nothing to do")), Some(true));
        assert!(err(r#"{"name":"x"}"#).is_some_and(|e| e.contains("go together")));
        assert!(err(r#"{"name":"bad name","value":"v"}"#).is_some_and(|e| e.contains("not a valid header name")));
        assert!(
            err(r#"{"request":{"set":{"content-length":"1"}}}"#).is_some_and(|e| e.contains("managed by the gateway"))
        );
        assert!(err(r#"{"nme":"x","value":"y"}"#).is_some_and(|e| e.contains("unknown field `nme`")));
    }
}
