//! What a hook returns.

use serde::Serialize;

/// The outcome of a hook: go on, or answer the client now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Go on with the request or response as it now stands (including any
    /// edits the hook made).
    Continue,
    /// Stop the chain and send this reply to the client.
    Respond(Reply),
}

impl Decision {
    /// `Decision::Respond(reply)`.
    pub fn respond(reply: Reply) -> Self {
        Self::Respond(reply)
    }

    /// The reply, when the decision is to respond.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Self::Continue => None,
            Self::Respond(reply) => Some(reply),
        }
    }

    /// Whether the decision is to go on.
    pub fn is_continue(&self) -> bool {
        matches!(self, Self::Continue)
    }
}

/// A complete response a plugin sends instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// An empty reply with this status. The gateway answers a status that is
    /// not final ([`STATUSES`](crate::STATUSES): 200..=599) with 500 and logs
    /// the plugin's mistake.
    pub fn new(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: Vec::new() }
    }

    /// A `text/plain` reply.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status).header("content-type", "text/plain; charset=utf-8").body(body.into().into_bytes())
    }

    /// An `application/json` reply. A value that cannot be serialised gives
    /// an empty JSON object rather than a panic.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Self::new(status).header("content-type", "application/json").body(body)
    }

    /// Adds a header (names are sent lowercase).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of a header, as text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}
