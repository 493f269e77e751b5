//! The request context: one request (and later its response) as the plugin
//! chain sees and edits it. The proxy owns it; for the length of each plugin
//! call it is lent to that plugin's store and taken back afterwards.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, StatusCode};

use crate::routing::Captures;

/// Headers that describe the connection or the framing of a message. The
/// gateway manages them; plugins may not set or remove them.
pub static MANAGED_HEADERS: [HeaderName; 8] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Why an edit was refused; mirrors the WIT `edit-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    InvalidName(String),
    InvalidValue(String),
    Forbidden(String),
    InvalidStatus(u16),
    TooLarge(u64),
    BodyUnavailable,
}

/// The request/response pair plugins work on.
#[derive(Debug)]
pub struct Exchange {
    pub request: http::request::Parts,
    /// The buffered request body, when a plugin on the route asked for it.
    pub request_body: Option<Bytes>,
    pub client_ip: IpAddr,
    pub scheme: &'static str,
    pub request_id: HeaderValue,
    pub route: Arc<str>,
    pub captures: Captures,
    pub body_limit: u64,
    pub response: Option<http::response::Parts>,
    pub response_body: Option<Bytes>,
    pub context: HashMap<String, String>,
}

impl Exchange {
    /// An empty exchange: what a plugin store holds between calls.
    pub fn placeholder() -> Self {
        let (request, ()) = http::Request::new(()).into_parts();
        Self {
            request,
            request_body: None,
            client_ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            scheme: "http",
            request_id: HeaderValue::from_static("-"),
            route: Arc::from(""),
            captures: Vec::new(),
            body_limit: 0,
            response: None,
            response_body: None,
            context: HashMap::new(),
        }
    }

    pub fn request_headers(&self) -> &HeaderMap {
        &self.request.headers
    }

    /// Replaces the path, keeping the query.
    pub fn set_path(&mut self, path: &str) -> Result<(), EditError> {
        if !path.starts_with('/') || path.contains(['?', '#']) {
            return Err(EditError::InvalidValue(format!("`{path}` is not an origin-form path")));
        }
        let pq = match self.request.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        self.set_path_and_query(&pq)
    }

    /// Replaces the query; `None` removes it.
    pub fn set_query(&mut self, query: Option<&str>) -> Result<(), EditError> {
        if query.is_some_and(|q| q.contains('#')) {
            return Err(EditError::InvalidValue("a query cannot contain `#`".into()));
        }
        let path = self.request.uri.path().to_owned();
        let pq = match query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        self.set_path_and_query(&pq)
    }

    fn set_path_and_query(&mut self, pq: &str) -> Result<(), EditError> {
        let pq: PathAndQuery =
            pq.parse().map_err(|_| EditError::InvalidValue(format!("`{pq}` is not a valid path and query")))?;
        let mut parts = std::mem::take(&mut self.request.uri).into_parts();
        parts.path_and_query = Some(pq);
        self.request.uri = http::Uri::from_parts(parts)
            .map_err(|_| EditError::InvalidValue("the resulting URI is not valid".into()))?;
        Ok(())
    }

    /// A route capture by name.
    pub fn capture(&self, name: &str) -> Option<&str> {
        self.captures.iter().find(|(n, _)| &**n == name).map(|(_, v)| v.as_str())
    }
}

/// Checks a header edit a plugin asked for.
pub fn header_edit(name: &str, value: Option<Vec<u8>>) -> Result<(HeaderName, Option<HeaderValue>), EditError> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| EditError::InvalidName(name.to_owned()))?;
    if MANAGED_HEADERS.contains(&name) {
        return Err(EditError::Forbidden(name.as_str().to_owned()));
    }
    let value = match value {
        None => None,
        Some(v) => Some(
            // The plugin's bytes are already a copy the host owns: kept as
            // they are rather than copied once more.
            HeaderValue::from_maybe_shared(Bytes::from(v))
                .map_err(|_| EditError::InvalidValue(format!("value of `{name}` is not a valid header value")))?,
        ),
    };
    Ok((name, value))
}

/// Reads one header (first value).
pub fn header_get(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    headers.get(name).map(|v| v.as_bytes().to_vec())
}

pub fn header_get_all(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    headers.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect()
}

pub fn header_list(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect()
}

pub fn header_set(headers: &mut HeaderMap, name: &str, value: Vec<u8>, append: bool) -> Result<(), EditError> {
    let (name, value) = header_edit(name, Some(value))?;
    if let Some(value) = value {
        if append {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
    Ok(())
}

pub fn header_remove(headers: &mut HeaderMap, name: &str) -> bool {
    match header_edit(name, None) {
        Ok((name, _)) => headers.remove(&name).is_some(),
        Err(_) => false,
    }
}

/// Checks a body a plugin wants to set against the route's limit.
pub fn body_edit(limit: u64, body: Vec<u8>) -> Result<Bytes, EditError> {
    let len = body.len() as u64;
    if len > limit {
        return Err(EditError::TooLarge(len));
    }
    Ok(Bytes::from(body))
}

/// A status a plugin set or replied with.
pub fn status(code: u16) -> Result<StatusCode, EditError> {
    if !(100..=599).contains(&code) {
        return Err(EditError::InvalidStatus(code));
    }
    StatusCode::from_u16(code).map_err(|_| EditError::InvalidStatus(code))
}
