//! `add-header`: sets, appends and removes headers on the request (before
//! the upstream sees it) and on the response (before the client does). The
//! edits are fixed (`Plugin::fixed_headers`): the gateway makes them itself
//! and never calls the plugin on the request path.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use wasmgate_sdk::check_request_header;
use wasmgate_sdk::prelude::*;

/// The route's `config` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shorthand for one request header: `{ name = "x-hello", value = "world" }`.
    name: Option<String>,
    /// The value of the request header `name` sets.
    value: Option<String>,
    /// Edits of the request, before the upstream sees it.
    #[serde(default)]
    request: Edits,
    /// Edits of the response, before the client sees it.
    #[serde(default)]
    response: Edits,
}

/// Header edits, applied in this order: remove, set, append.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Edits {
    /// Names of headers to take out.
    #[serde(default)]
    remove: Vec<String>,
    /// Headers to set, replacing any of that name: `{ x-team = "payments" }`.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Headers to add beside any of that name.
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
            if side == "request" {
                check_request_header(&name.to_ascii_lowercase()).map_err(|e| {
                    format!(
                        "{side}: {e}: it writes or takes out that field on every request \
                         (the prefix a route's strip_prefix took off goes as x-forwarded-prefix)"
                    )
                })?;
            }
        }
        // Keys differing only in case are one header: which value won
        // depended on the keys' order.
        for list in [self.remove.iter().collect::<Vec<_>>(), self.set.keys().collect(), self.append.keys().collect()] {
            for (i, a) in list.iter().enumerate() {
                if let Some(b) = list.iter().skip(i + 1).find(|b| b.eq_ignore_ascii_case(a)) {
                    return Err(format!("{side}: `{a}` and `{b}` are the same header: give it once").into());
                }
            }
        }
        Ok(())
    }

    /// Applies the edits to the request's or the response's headers. Names
    /// and values were checked at config time; a refused edit is logged.
    /// The edits for the gateway to make, in the order remove, set, append.
    fn fixed(&self) -> Vec<(String, HeaderEdit)> {
        FixedHeaders::edits(&self.remove, &self.set, &self.append)
    }
}

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
                if request.set.keys().any(|n| n.eq_ignore_ascii_case(&name)) {
                    return Err(format!("`{name}` is both `name` and a key of `request.set`: give it once").into());
                }
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

    /// Every edit is fixed: the gateway makes them and never calls the
    /// plugin.
    fn info(&self) -> Info {
        Info { on_request: false, ..Info::default() }
    }

    fn fixed_headers(&self) -> FixedHeaders {
        FixedHeaders { request: self.request.fixed(), response: self.response.fixed() }
    }
}

export_plugin!(AddHeader, config_schema = "config.schema.json");

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
        assert_eq!(p.info(), Info { on_request: false, on_response: false, ..Info::default() }, "never called");
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
    fn the_edits_are_fixed_in_order() {
        let p = plugin(r#"{"response":{"append":{"vary":"origin"},"set":{"x-r":"1"},"remove":["server"]}}"#);
        let fixed = p.fixed_headers();
        assert!(fixed.request.is_empty());
        assert_eq!(
            fixed.response,
            [
                ("server".into(), HeaderEdit::Remove),
                ("x-r".into(), HeaderEdit::Set(b"1".to_vec())),
                ("vary".into(), HeaderEdit::Append(b"origin".to_vec())),
            ]
        );
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
        // What the gateway writes or drops on a request: refused there, not
        // on a response, and removing it is allowed.
        let gateway_s = err(r#"{"request":{"append":{"X-Forwarded-Prefix":"/api"}}}"#);
        assert!(gateway_s.is_some_and(|e| e.contains("request: `x-forwarded-prefix` is managed by the gateway")));
        assert!(err(r#"{"name":"x-real-ip","value":"192.0.2.1"}"#).is_some_and(|e| e.contains("`x-real-ip`")));
        assert_eq!(err(r#"{"response":{"set":{"x-real-ip":"192.0.2.1"}}}"#), None);
        assert_eq!(err(r#"{"request":{"remove":["x-forwarded-client-cert"]}}"#), None);
        let twice = err(r#"{"response":{"set":{"X-Tenant":"a","x-tenant":"b"}}}"#);
        assert!(twice.is_some_and(|e| e.contains("response: `X-Tenant` and `x-tenant` are the same header")));
        let twice = err(r#"{"name":"X-Hello","value":"a","request":{"set":{"x-hello":"b"}}}"#);
        assert!(twice.is_some_and(|e| e.contains("both `name` and a key of `request.set`")));
    }
}
