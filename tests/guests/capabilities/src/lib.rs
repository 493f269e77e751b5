//! Uses each capability as its config says and reports the result in
//! request headers, so the gateway's tests can check grants, namespacing and
//! enforcement. It imports all four capability interfaces, so it needs all
//! four granted to load at all.

use serde::Deserialize;
use wasmgate_sdk::crypto::Key;
use wasmgate_sdk::http::OutgoingRequest;
use wasmgate_sdk::prelude::*;
use wasmgate_sdk::{http, secrets, store};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Increment this store counter; its value goes in `x-count`.
    counter: Option<String>,
    /// Fetch this URL; the status (or error) goes in `x-fetch`.
    fetch: Option<String>,
    /// A `Host` header to send with the fetch (which the gateway must ignore).
    fetch_host: Option<String>,
    /// Headers (`x-f-N`) to send with the fetch.
    #[serde(default)]
    fetch_headers: usize,
    /// Send the fetch this many times with `send-all`; `x-fetch` is then
    /// "N of M sent" and the first error.
    #[serde(default)]
    fetch_copies: usize,
    /// Send the fetch again and again, for ever: the deadline must stop it
    /// (whether each send fails at once or waits on the upstream).
    #[serde(default)]
    fetch_forever: bool,
    /// Read this secret; its length goes in `x-secret-len`.
    secret: Option<String>,
    /// Make a key from this JWK; its algorithms go in `x-key`.
    jwk: Option<String>,
}

#[derive(Debug)]
pub struct Capabilities {
    config: Config,
}

impl Plugin for Capabilities {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(Self { config })
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let c = &self.config;
        if let Some(key) = &c.counter {
            let v = match store::incr(key, 1, None) {
                Ok(n) => n.to_string(),
                Err(e) => format!("error: {e}"),
            };
            let _ = req.set_header("x-count", v);
        }
        if let Some(url) = &c.fetch {
            let mut out = OutgoingRequest::get(url.clone());
            if let Some(h) = &c.fetch_host {
                out = out.header("host", h.as_bytes());
            }
            for i in 0..c.fetch_headers {
                out = out.header(&format!("x-f-{i}"), "1");
            }
            if c.fetch_forever {
                loop {
                    let _ = http::send(out.clone());
                }
            }
            let v = if c.fetch_copies > 0 {
                let results = http::send_all(vec![out; c.fetch_copies]);
                let sent = results.iter().filter(|r| r.is_ok()).count();
                let error = results.iter().find_map(|r| r.as_ref().err()).map(|e| format!(", then error: {e}"));
                format!("{sent} of {} sent{}", results.len(), error.unwrap_or_default())
            } else {
                match http::send(out) {
                    Ok(r) => format!("{} {}", r.status, r.header_str("x-upstream").unwrap_or("-")),
                    Err(e) => format!("error: {e}"),
                }
            };
            let _ = req.set_header("x-fetch", v);
        }
        if let Some(name) = &c.secret {
            let v = secrets::get(name).map_or_else(|| "none".to_owned(), |s| s.len().to_string());
            let _ = req.set_header("x-secret-len", v);
        }
        if let Some(jwk) = &c.jwk {
            let v = match Key::from_jwk(jwk) {
                Ok(k) => k.algorithms().iter().map(|a| a.jwt_name()).collect::<Vec<_>>().join(","),
                Err(e) => format!("error: {e}"),
            };
            let _ = req.set_header("x-key", v);
        }
        Decision::Continue
    }
}

export_plugin!(Capabilities);

#[cfg(test)]
mod tests {
    use wasmgate_sdk::testing::{self, TestRequest};

    use super::*;

    #[test]
    fn counts_and_reads_secrets() {
        testing::reset();
        testing::set_secret("s", "abc");
        let p = testing::configure::<Capabilities>(r#"{"counter":"c","secret":"s"}"#).unwrap();
        let mut req = TestRequest::get("/");
        let _ = testing::on_request(&p, &mut req);
        let _ = testing::on_request(&p, &mut req);
        assert_eq!(req.headers.get_str("x-count").as_deref(), Some("2"));
        assert_eq!(req.headers.get_str("x-secret-len").as_deref(), Some("3"));
    }
}
