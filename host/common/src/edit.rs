//! What a plugin's header, path, status and body edits may be refused for,
//! the headers no plugin may edit, and how many headers and requests it may
//! leave or send: the gateway refuses with these, and the SDK checks with
//! them before asking (`wit/types.wit`, `edit-error`).

use std::fmt;
use std::ops::RangeInclusive;

/// Why an edit was refused. The request or response is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    /// Not a valid HTTP field name.
    InvalidName(String),
    /// Not a valid header value, path or query.
    InvalidValue(String),
    /// The gateway owns this header (framing and hop-by-hop headers).
    Forbidden(String),
    /// Not a final status ([`STATUSES`]).
    InvalidStatus(u16),
    /// A body of this many bytes is over the route's limit.
    TooLarge(u64),
    /// The body was not buffered: the plugin did not ask for it (the SDK's
    /// `Info`: `request_body`/`response_body`).
    BodyUnavailable,
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName(n) => write!(f, "`{n}` is not a valid header name"),
            Self::InvalidValue(v) => write!(f, "invalid value: {v}"),
            Self::Forbidden(n) => write!(f, "`{n}` is managed by the gateway"),
            Self::InvalidStatus(s) => write!(f, "invalid status {s}"),
            Self::TooLarge(n) => write!(f, "body of {n} bytes is over the limit"),
            Self::BodyUnavailable => f.write_str("body not buffered: ask for it in Plugin::info"),
        }
    }
}

impl std::error::Error for EditError {}

/// The statuses a plugin may answer with or set a response to: the final
/// ones. A 1xx is interim: after it the client waits on for the answer.
pub const STATUSES: RangeInclusive<u16> = 200..=599;

/// Most headers a plugin may leave on a request or response, or put in a
/// reply or an outbound request: a header map panics past ~24 500 names,
/// and one the plugin's memory limit does not count must stay bounded.
pub const MAX_EDITED_HEADERS: usize = 1024;

/// Longest header value a plugin may set, or put in a reply or an outbound
/// request, in bytes: the default limit of a whole request head
/// (`server.max_header_bytes`). Host memory its memory limit does not count
/// stays bounded (a plugin could set the same 60 MB value again and again).
pub const MAX_HEADER_VALUE: usize = 64 * 1024;

/// Most requests one `send-all` sends (the rest fail): each answer is held
/// whole until all are in.
pub const MAX_SEND_ALL: usize = 64;

/// Headers the gateway manages itself (framing and hop-by-hop); a plugin may
/// not set or remove them. The gateway's checks and the SDK's are this list.
pub const MANAGED_HEADERS: [&str; 8] =
    ["connection", "content-length", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Request fields the gateway writes itself or takes out on the way
/// upstream (what a client says of where it came from, of the prefix and
/// port it asked for and of its certificate, which upstreams believe): a
/// plugin's value went the way a client's goes, silently. A plugin may not
/// set or add them on a request; it may remove them.
pub const GATEWAY_REQUEST_HEADERS: [&str; 6] = [
    "x-real-ip",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-client-cert",
];

/// Whether a plugin may set or add request field `name` (lowercase):
/// `Forbidden` for [`GATEWAY_REQUEST_HEADERS`].
pub fn check_request_header(name: &str) -> Result<(), EditError> {
    match GATEWAY_REQUEST_HEADERS.contains(&name) {
        true => Err(EditError::Forbidden(name.to_owned())),
        false => Ok(()),
    }
}
