//! Who the client is: the socket peer, or — when the peer is a proxy we
//! trust — the address that proxy reports in `X-Forwarded-For` (or the
//! configured header), found by the walk the gateway's own
//! `server.trusted_proxies` uses ([`client_behind`]).

use std::net::IpAddr;

use wasmgate_sdk::cidr::{Cidr, Client, client_behind};

/// Finds the client behind `trusted` proxies.
#[derive(Debug)]
pub struct Resolver {
    pub trusted: Vec<Cidr>,
    /// The header trusted proxies report the client in (lowercase).
    pub header: String,
}

impl Resolver {
    /// `peer` is the socket address (canonical); `values` every value of the
    /// configured header, in order.
    pub fn resolve(&self, peer: IpAddr, values: &[Vec<u8>]) -> Client {
        client_behind(&self.trusted, peer, values.iter().map(Vec::as_slice))
    }
}
