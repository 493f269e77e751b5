//! Reads the request headers named in its config, one `header` call each,
//! and reports how many were present in `x-headers-found`: the "plugin that
//! reads 20 headers" of the dispatch benchmark.

use serde::Deserialize;
use wasmgate_sdk::prelude::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    names: Vec<String>,
}

#[derive(Debug)]
pub struct ReadHeaders {
    names: Vec<String>,
}

impl Plugin for ReadHeaders {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        Ok(Self { names: c.names })
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let found = self.names.iter().filter(|n| req.header(n).is_some()).count();
        let _ = req.set_header("x-headers-found", found.to_string());
        Decision::Continue
    }
}

export_plugin!(ReadHeaders);

#[cfg(test)]
mod tests {
    use wasmgate_sdk::testing::{self, TestRequest};

    use super::*;

    #[test]
    fn counts_present_headers() {
        let p = testing::configure::<ReadHeaders>(r#"{"names":["a","b","c"]}"#).unwrap();
        let mut req = TestRequest::get("/").header("a", "1").header("c", "3");
        let _ = testing::on_request(&p, &mut req);
        assert_eq!(req.headers.get_str("x-headers-found").as_deref(), Some("2"));
    }
}
