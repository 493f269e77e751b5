//! `ip-filter`: allows or denies requests by the client's address. The
//! client is the socket peer, or, when the peer is a trusted proxy, the
//! address the proxies report in `X-Forwarded-For` (or another header),
//! found without believing anything the client itself could have written.
//! The address it settles on is left in the context as `client.ip` for the
//! plugins after it (rate limits, audit).

mod client;

use std::collections::BTreeMap;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::Deserialize;
use wasmgate_sdk::is_token;
use wasmgate_sdk::prelude::*;

use crate::client::Resolver;
use wasmgate_sdk::cidr::{Cidr, Client, any_contains, canonical};

/// The context key later plugins read the resolved client address from.
pub const CONTEXT_KEY: &str = "client.ip";

/// The route's `config` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// When non-empty, only these ranges are let through.
    #[serde(default)]
    allow: Vec<String>,
    /// These ranges are refused, even when `allow` holds them.
    #[serde(default)]
    deny: Vec<String>,
    /// Peers whose forwarding header is believed.
    #[serde(default)]
    trusted_proxies: Vec<String>,
    /// The header trusted proxies report the client in (default
    /// `x-forwarded-for`; `x-real-ip` and the like work the same way).
    #[serde(default)]
    header: Option<String>,
    /// The status refused requests get (default 403).
    #[serde(default = "default_status")]
    status: u16,
    /// The `error` field of the JSON body (default "forbidden").
    #[serde(default)]
    message: Option<String>,
}

fn default_status() -> u16 {
    403
}

/// The plugin: the ranges, how to find the client, and the refusal.
#[derive(Debug)]
pub struct IpFilter {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    resolver: Resolver,
    status: u16,
    message: String,
}

impl Plugin for IpFilter {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        let allow = ranges("allow", &c.allow)?;
        let deny = ranges("deny", &c.deny)?;
        let trusted = ranges("trusted_proxies", &c.trusted_proxies)?;
        if allow.is_empty() && deny.is_empty() && trusted.is_empty() {
            return Err("nothing to do: give `allow` or `deny` ranges (or `trusted_proxies`, to only resolve \
                        the client address into the context)"
                .into());
        }
        let header = match c.header {
            None => "x-forwarded-for".to_owned(),
            Some(h) if !is_token(&h) => return Err(format!("header: `{h}` is not a valid header name").into()),
            Some(h) if trusted.is_empty() => {
                return Err(format!(
                    "header = \"{h}\" needs trusted_proxies: without them any client could write its own \
                     address into `{h}`; list the proxies that set it"
                )
                .into());
            }
            Some(h) => h.to_ascii_lowercase(),
        };
        if !(400..=599).contains(&c.status) {
            return Err(format!("status {} is not an error status; use 400..=599", c.status).into());
        }
        Ok(Self {
            allow,
            deny,
            resolver: Resolver { trusted, header },
            status: c.status,
            message: c.message.unwrap_or_else(|| "forbidden".to_owned()),
        })
    }

    /// The answer is a function of the client's address and the forwarding
    /// header: the gateway keeps it per their values.
    fn depends_on(&self) -> Option<Vec<RequestFact>> {
        Some(vec![RequestFact::ClientAddress, RequestFact::Header(self.resolver.header.clone())])
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let Ok(peer) = req.client_ip().parse::<IpAddr>() else {
            // The gateway always gives an address; should it not, fail closed.
            log::error(&format!("the gateway gave a client address that is not one: `{}`", req.client_ip()));
            return self.refuse();
        };
        let client = self.resolver.resolve(canonical(peer), &req.header_all(&self.resolver.header));
        if let Client::Malformed { peer, entry } = &client {
            log::warn(&format!(
                "`{}` from trusted proxy {peer} has an entry that is not an address ({:?}); \
                 taking the proxy as the client",
                self.resolver.header,
                entry.chars().take(64).collect::<String>()
            ));
        }
        let ip = client.ip();
        context::set(CONTEXT_KEY, &ip.to_string());
        if any_contains(&self.deny, ip) {
            log::debug(&format!("{ip} denied: in `deny`"));
            return self.refuse();
        }
        if !self.allow.is_empty() && !any_contains(&self.allow, ip) {
            log::debug(&format!("{ip} denied: not in `allow`"));
            return self.refuse();
        }
        Decision::Continue
    }
}

impl IpFilter {
    fn refuse(&self) -> Decision {
        Decision::respond(Reply::json(self.status, &BTreeMap::from([("error", self.message.as_str())])))
    }
}

fn ranges(key: &str, list: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    list.iter().map(|t| Cidr::parse(t).map_err(|e| ConfigError::from(format!("{key}: {e}")))).collect()
}

export_plugin!(IpFilter, config_schema = "config.schema.json");

#[cfg(test)]
mod tests;
