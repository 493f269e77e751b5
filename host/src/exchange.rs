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
use wasmgate_common::edit;
pub use wasmgate_common::edit::EditError;

use crate::plugin::memo::{Effect, Read, Recording};
use crate::routing::Captures;

/// Headers that describe the connection or the framing of a message. The
/// gateway manages them; plugins may not set or remove them
/// ([`edit::MANAGED_HEADERS`], which the SDK checks with too).
pub static MANAGED_HEADERS: [HeaderName; 8] = {
    let n = edit::MANAGED_HEADERS;
    [
        HeaderName::from_static(n[0]),
        HeaderName::from_static(n[1]),
        HeaderName::from_static(n[2]),
        HeaderName::from_static(n[3]),
        HeaderName::from_static(n[4]),
        HeaderName::from_static(n[5]),
        HeaderName::from_static(n[6]),
        HeaderName::from_static(n[7]),
    ]
};

/// The request/response pair plugins work on.
#[derive(Debug)]
pub struct Exchange {
    pub request: http::request::Parts,
    /// The buffered request body, when a plugin on the route asked for it.
    pub request_body: Option<Bytes>,
    pub client_ip: IpAddr,
    /// The certificate the client presented on its connection.
    pub client_cert: Option<Arc<crate::tls::ClientCert>>,
    pub scheme: &'static str,
    pub request_id: HeaderValue,
    pub route: Arc<str>,
    pub captures: Captures,
    pub body_limit: u64,
    pub response: Option<http::response::Parts>,
    pub response_body: Option<Bytes>,
    /// Keys are the plugins' own (at most 256 entries, see `host_api`), so
    /// hashed with foldhash: SipHash's resistance to chosen keys would cost
    /// ~200 instructions on each of the chain's context calls for nothing.
    pub context: HashMap<String, String, foldhash::fast::RandomState>,
    /// Response headers request hooks set (`set-response-header`), applied
    /// when the response passes back through the plugin that set them. In
    /// chain order: each plugin's are after those of the plugins before it.
    pub staged: Vec<StagedHeader>,
    /// The index in the route's chain of the plugin being called.
    pub link: usize,
    /// While a memoized request hook runs: what it reads and edits
    /// ([`crate::plugin::memo`]).
    pub recording: Option<Recording>,
    /// The links whose request hook failed on a fail-open route: skipped
    /// in the response phase too (their fixed response headers, their
    /// response hook).
    pub skipped: Vec<usize>,
    /// Whether an edit set or added a hop-by-hop request field the gateway
    /// lets plugins edit (`Proxy-Authorization`): the request going
    /// upstream must then be looked through for hop-by-hop fields even
    /// when the client's had none.
    pub hop_by_hop_added: bool,
    /// Bytes of header values and context entries the plugins have handed
    /// this request so far (at most [`MAX_HANDED_BYTES`]).
    handed: usize,
    /// Whether a plugin removed the request's `Host` (the proxy then sends
    /// the upstream's name: an HTTP/1.1 request must carry one).
    pub host_removed: bool,
}

/// The most bytes of header values (set, appended, left for the response)
/// and context entries the plugins may hand one request in all. Each edit
/// is bounded on its own (64 KiB), and their counts too, but without this
/// a plugin could make the gateway hold ~150 MiB for every request in
/// flight, outside its own `max_memory`.
pub const MAX_HANDED_BYTES: usize = 1 << 20;

/// The state of an exchange before a plugin call ([`Exchange::undo_point`]).
#[derive(Debug)]
pub struct Undo {
    uri: http::Uri,
    headers: HeaderMap,
    request_body: Option<Bytes>,
    response: Option<(http::StatusCode, HeaderMap)>,
    response_body: Option<Bytes>,
    context: HashMap<String, String, foldhash::fast::RandomState>,
    staged: usize,
    hop_by_hop_added: bool,
    host_removed: bool,
}

/// A response header a request hook set, waiting for the response.
#[derive(Debug)]
pub struct StagedHeader {
    /// The index in the route's chain of the plugin that set it.
    pub link: usize,
    pub name: HeaderName,
    pub edit: HeaderEdit<HeaderValue>,
}

/// What a plugin does to one header: with the value as the plugin sent it
/// (`Vec<u8>`), then checked (`HeaderValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit<V> {
    /// Replaces every value.
    Set(V),
    /// Adds a value, keeping the others.
    Append(V),
    /// Removes every value.
    Remove,
}

impl HeaderEdit<HeaderValue> {
    /// Checks the value of a plugin's edit of header `name`. A request has
    /// one `Host`: adding one replaces it (two went upstream).
    fn check(name: &HeaderName, edit: HeaderEdit<Vec<u8>>) -> Result<Self, EditError> {
        Ok(match edit {
            HeaderEdit::Set(v) => Self::Set(header_value(name, v)?),
            HeaderEdit::Append(v) if name == header::HOST => Self::Set(header_value(name, v)?),
            HeaderEdit::Append(v) => Self::Append(header_value(name, v)?),
            HeaderEdit::Remove => Self::Remove,
        })
    }

    fn apply(self, name: HeaderName, headers: &mut HeaderMap) {
        match self {
            Self::Set(v) => {
                headers.insert(name, v);
            }
            Self::Append(v) => {
                headers.append(name, v);
            }
            Self::Remove => {
                headers.remove(name);
            }
        }
    }
}

/// Most fixed header edits a plugin may declare for each phase.
pub const MAX_FIXED_EDITS: usize = 64;

/// A header and what to do to it, checked.
pub type CheckedEdit = (HeaderName, HeaderEdit<HeaderValue>);

/// The header edits a plugin declared when it was configured (WIT
/// `setup`), which the gateway makes on every request and response passing
/// it without calling it.
#[derive(Debug, Clone, Default)]
pub struct FixedEdits {
    pub request: Vec<CheckedEdit>,
    pub response: Vec<CheckedEdit>,
}

impl FixedEdits {
    pub fn add_request(&mut self, name: &str, edit: HeaderEdit<Vec<u8>>) -> Result<(), EditError> {
        add_fixed(&mut self.request, name, edit, true)
    }

    pub fn add_response(&mut self, name: &str, edit: HeaderEdit<Vec<u8>>) -> Result<(), EditError> {
        add_fixed(&mut self.response, name, edit, false)
    }
}

fn add_fixed(
    list: &mut Vec<CheckedEdit>,
    name: &str,
    edit: HeaderEdit<Vec<u8>>,
    request: bool,
) -> Result<(), EditError> {
    if list.len() >= MAX_FIXED_EDITS {
        return Err(EditError::InvalidValue(format!("more than {MAX_FIXED_EDITS} fixed headers")));
    }
    let name = editable_name(name)?;
    if request && !matches!(edit, HeaderEdit::Remove) {
        edit::check_request_header(name.as_str())?;
    }
    let edit = HeaderEdit::check(&name, edit)?;
    list.push((name, edit));
    Ok(())
}

/// Makes a plugin's fixed edits on `headers` (a response's; a request's go
/// through [`Exchange::apply_fixed_request`]). Like the plugin's own, those
/// that add stop once the headers hold [`MAX_EDITED_HEADERS`].
pub fn apply_fixed(edits: &[CheckedEdit], headers: &mut HeaderMap) {
    for (name, edit) in edits {
        apply_checked(name.clone(), edit.clone(), headers);
    }
}

/// Makes a checked edit; one that adds is skipped once the headers hold
/// [`MAX_EDITED_HEADERS`].
pub fn apply_checked(name: HeaderName, edit: HeaderEdit<HeaderValue>, headers: &mut HeaderMap) {
    if !matches!(edit, HeaderEdit::Remove) && headers.len() >= MAX_EDITED_HEADERS {
        return;
    }
    edit.apply(name, headers);
}

/// Most context entries a request may hold, and the longest key and value:
/// the context lives as long as the request and must stay small.
pub const MAX_CONTEXT_ENTRIES: usize = 256;
pub const MAX_CONTEXT_BYTES: usize = 64 * 1024;

pub use wasmgate_common::edit::{MAX_EDITED_HEADERS, MAX_HEADER_VALUE};

impl Exchange {
    /// The exchange for one request, before any plugin ran.
    pub fn new(
        request: http::request::Parts,
        client_ip: IpAddr,
        scheme: &'static str,
        request_id: HeaderValue,
        route: Arc<str>,
        captures: Captures,
        body_limit: u64,
    ) -> Self {
        Self {
            request,
            request_body: None,
            client_ip,
            client_cert: None,
            scheme,
            request_id,
            route,
            captures,
            body_limit,
            response: None,
            response_body: None,
            context: HashMap::default(),
            staged: Vec::new(),
            link: 0,
            recording: None,
            skipped: Vec::new(),
            hop_by_hop_added: false,
            handed: 0,
            host_removed: false,
        }
    }

    /// Counts `edit`'s bytes against [`MAX_HANDED_BYTES`]; `Err` (and nothing
    /// counted) past it.
    pub fn hand<V: AsRef<[u8]>>(&mut self, edit: &HeaderEdit<V>) -> Result<(), EditError> {
        match edit {
            HeaderEdit::Set(v) | HeaderEdit::Append(v) => self.take(v.as_ref().len()).map_err(|()| too_much()),
            HeaderEdit::Remove => Ok(()),
        }
    }

    fn take(&mut self, bytes: usize) -> Result<(), ()> {
        let handed = self.handed.saturating_add(bytes);
        if handed > MAX_HANDED_BYTES {
            return Err(());
        }
        self.handed = handed;
        Ok(())
    }

    /// What a plugin call may change, to be put back ([`Exchange::undo`])
    /// if the call fails on a fail-open route: a failed call leaves nothing
    /// (an identity header set before a trap would otherwise go upstream).
    /// Boxed: it is held across the call, in the chain's future.
    pub fn undo_point(&self) -> Box<Undo> {
        Box::new(Undo {
            uri: self.request.uri.clone(),
            headers: self.request.headers.clone(),
            request_body: self.request_body.clone(),
            response: self.response.as_ref().map(|r| (r.status, r.headers.clone())),
            response_body: self.response_body.clone(),
            context: self.context.clone(),
            staged: self.staged.len(),
            hop_by_hop_added: self.hop_by_hop_added,
            host_removed: self.host_removed,
        })
    }

    /// Puts back what a failed call changed.
    pub fn undo(&mut self, to: Box<Undo>) {
        let to = *to;
        self.request.uri = to.uri;
        self.request.headers = to.headers;
        self.request_body = to.request_body;
        if let (Some(resp), Some((status, headers))) = (&mut self.response, to.response) {
            resp.status = status;
            resp.headers = headers;
        }
        self.response_body = to.response_body;
        self.context = to.context;
        // A call only adds to them.
        self.staged.truncate(to.staged);
        self.hop_by_hop_added = to.hop_by_hop_added;
        self.host_removed = to.host_removed;
    }

    /// An empty exchange: what a plugin store holds between calls.
    pub fn placeholder() -> Self {
        let (request, ()) = http::Request::new(()).into_parts();
        let unspecified = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        Self::new(request, unspecified, "http", HeaderValue::from_static("-"), Arc::from(""), Vec::new(), 0)
    }

    /// Edits a header of the response: at once in the response phase; in
    /// the request phase kept until the response passes back through the
    /// plugin being called ([`pass_back`]).
    pub fn edit_response_header(&mut self, name: HeaderName, edit: HeaderEdit<Vec<u8>>) -> Result<(), EditError> {
        if self.response.is_some() {
            return self.edit_response(name, edit);
        }
        let edit = HeaderEdit::check(&name, edit)?;
        self.hand(&edit)?;
        let recorded = self.recording.is_some().then(|| (name.clone(), edit.clone()));
        self.leave_response_header(name, edit)?;
        if let (Some(r), Some((name, edit))) = (&mut self.recording, recorded) {
            r.record(Effect::ResponseHeader(name, edit));
        }
        Ok(())
    }

    /// Edits the response's headers (the response phase: `Err` before
    /// there is a response).
    pub fn edit_response(&mut self, name: HeaderName, edit: HeaderEdit<Vec<u8>>) -> Result<(), EditError> {
        let edit = match &self.response {
            Some(resp) => checked_edit(&resp.headers, &name, edit)?,
            None => return Err(EditError::InvalidValue("there is no response yet".into())),
        };
        self.hand(&edit)?;
        if let Some(resp) = &mut self.response {
            edit.apply(name, &mut resp.headers);
        }
        Ok(())
    }

    /// Keeps a checked response header edit of the plugin at `self.link`
    /// for the response (request phase).
    pub fn leave_response_header(&mut self, name: HeaderName, edit: HeaderEdit<HeaderValue>) -> Result<(), EditError> {
        if self.staged.len() >= MAX_EDITED_HEADERS {
            return Err(too_many());
        }
        if self.staged.capacity() == 0 {
            // Room for a chain's few at once rather than growing 4, 8, 16.
            self.staged.reserve(16);
        }
        self.staged.push(StagedHeader { link: self.link, name, edit });
        Ok(())
    }

    pub fn request_headers(&self) -> &HeaderMap {
        &self.request.headers
    }

    /// Edits a request header for a plugin.
    pub fn edit_request_header(&mut self, name: HeaderName, edit: HeaderEdit<Vec<u8>>) -> Result<(), EditError> {
        if !matches!(edit, HeaderEdit::Remove) {
            edit::check_request_header(name.as_str())?;
        }
        let edit = checked_edit(&self.request.headers, &name, edit)?;
        self.hand(&edit)?;
        if let Some(r) = &mut self.recording {
            r.record(Effect::RequestHeader(name.clone(), edit.clone()));
        }
        self.apply_request_edit(name, edit);
        Ok(())
    }

    /// Makes a checked edit of a request header, as [`apply_checked`]: a
    /// plugin's, a fixed one, or a kept call's again. Every edit that
    /// may add to the request's headers comes here (a removal cannot add),
    /// so [`Self::hop_by_hop_added`] misses none.
    pub fn apply_request_edit(&mut self, name: HeaderName, edit: HeaderEdit<HeaderValue>) {
        if matches!(edit, HeaderEdit::Remove) {
            self.host_removed |= name == header::HOST;
        } else if crate::proxy::headers::is_hop_by_hop(&name) {
            self.hop_by_hop_added = true;
        }
        apply_checked(name, edit, &mut self.request.headers);
    }

    /// Makes a plugin's fixed request edits, each as
    /// [`apply_request_edit`](Self::apply_request_edit).
    pub fn apply_fixed_request(&mut self, edits: &[CheckedEdit]) {
        for (name, edit) in edits {
            self.apply_request_edit(name.clone(), edit.clone());
        }
    }

    /// Removes every value of a request header for a plugin; whether there
    /// was one. The answer reads the header, and the removal is recorded
    /// either way (a replay removes the same).
    pub fn remove_request_header(&mut self, name: HeaderName) -> bool {
        if let Some(r) = &mut self.recording {
            r.reads(Read::Header(name.as_str()));
            r.record(Effect::RequestHeader(name.clone(), HeaderEdit::Remove));
        }
        self.host_removed |= name == header::HOST;
        self.request.headers.remove(name).is_some()
    }

    /// Notes what a plugin's host call reads, for a memoized hook's
    /// recording.
    pub fn reads(&mut self, read: Read<'_>) {
        if let Some(r) = &mut self.recording {
            r.reads(read);
        }
    }

    /// Notes a host call whose answer is not a function of the declared
    /// facts (the clock, every header, a body): a memoized hook's call that
    /// makes one is not kept.
    pub fn spoil(&mut self) {
        if let Some(r) = &mut self.recording {
            r.spoil();
        }
    }

    /// The authority the client asked for: the URI's (HTTP/2, absolute
    /// form) or the `Host` header.
    pub fn authority(&self) -> Option<&str> {
        match self.request.uri.authority() {
            Some(a) => Some(a.as_str()),
            None => self.request.headers.get(header::HOST)?.to_str().ok(),
        }
    }

    /// Sets a context entry; refused (`Err` with its key) when the context
    /// is full or the entry too large.
    pub fn context_set(&mut self, key: String, value: String) -> Result<(), String> {
        let full = self.context.len() >= MAX_CONTEXT_ENTRIES && !self.context.contains_key(&key);
        let bytes = key.len() + value.len();
        if full || bytes > MAX_CONTEXT_BYTES || self.take(bytes).is_err() {
            return Err(key);
        }
        if let Some(r) = &mut self.recording {
            r.record(Effect::ContextSet(key.clone(), value.clone()));
        }
        self.context.insert(key, value);
        Ok(())
    }

    /// Removes a context entry.
    pub fn context_remove(&mut self, key: &str) -> Option<String> {
        if let Some(r) = &mut self.recording {
            r.reads(Read::Context(key));
            r.record(Effect::ContextRemove(key.to_owned()));
        }
        self.context.remove(key)
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
        self.set_path_and_query(&pq)?;
        if let Some(r) = &mut self.recording {
            r.record(Effect::Path(path.to_owned()));
        }
        Ok(())
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
        self.set_path_and_query(&pq)?;
        if let Some(r) = &mut self.recording {
            r.record(Effect::Query(query.map(str::to_owned)));
        }
        Ok(())
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

    /// What the response gets as it passes back through the plugin at
    /// `link` ([`pass_back`]).
    pub fn pass_back(&mut self, fixed: &FixedEdits, link: usize) {
        if let Some(resp) = &mut self.response {
            pass_back(fixed, &mut self.staged, link, &mut resp.headers);
        }
    }

    /// A route capture by name.
    pub fn capture(&self, name: &str) -> Option<&str> {
        self.captures.iter().find(|(n, _)| &**n == name).map(|(_, v)| v.as_str())
    }
}

/// The name of a header a plugin edits: valid, and not one the gateway
/// manages.
pub fn editable_name(name: &str) -> Result<HeaderName, EditError> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| EditError::InvalidName(name.to_owned()))?;
    if MANAGED_HEADERS.contains(&parsed) {
        return Err(EditError::Forbidden(parsed.as_str().to_owned()));
    }
    Ok(parsed)
}

/// The value a plugin gave header `name`. The plugin's bytes are already a
/// copy the host owns: kept as they are rather than copied once more.
pub fn header_value(name: &HeaderName, value: Vec<u8>) -> Result<HeaderValue, EditError> {
    if value.len() > MAX_HEADER_VALUE {
        let n = value.len();
        return Err(EditError::InvalidValue(format!("value of `{name}` is {n} bytes, more than {MAX_HEADER_VALUE}")));
    }
    HeaderValue::from_maybe_shared(Bytes::from(value))
        .map_err(|_| EditError::InvalidValue(format!("value of `{name}` is not a valid header value")))
}

/// The header names one plugin instance edited, each parsed and checked
/// once: a plugin edits the same few names on every request, and parsing a
/// custom name (`ratelimit-limit`) copies it into a new allocation each
/// time. Holds names as a plugin wrote them in lower case, up to 16.
#[derive(Debug, Default)]
pub struct EditableNames(Vec<HeaderName>);

impl EditableNames {
    const MAX: usize = 16;

    /// [`editable_name`], from the names seen before when it is one.
    pub fn get(&mut self, name: &str) -> Result<HeaderName, EditError> {
        if let Some(seen) = self.0.iter().find(|n| n.as_str().as_bytes() == name.as_bytes()) {
            return Ok(seen.clone());
        }
        let parsed = editable_name(name)?;
        if self.0.len() < Self::MAX && parsed.as_str() == name {
            self.0.push(parsed.clone());
        }
        Ok(parsed)
    }
}

/// Reads one header (first value).
pub fn header_get(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    headers.get(name).map(|v| v.as_bytes().to_vec())
}

pub fn header_get_all(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    headers.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect()
}

/// `header-single`: the value of a header that appears at most once, or
/// how many times it appears.
pub fn header_get_single(headers: &HeaderMap, name: &str) -> Result<Option<Vec<u8>>, u32> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    match values.count() {
        0 => Ok(Some(first.as_bytes().to_vec())),
        more => Err(u32::try_from(more + 1).unwrap_or(u32::MAX)),
    }
}

pub fn header_list(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect()
}

/// Applies a plugin's edit to `headers`; one that adds is refused once they
/// hold [`MAX_EDITED_HEADERS`].
pub fn edit_headers(headers: &mut HeaderMap, name: HeaderName, edit: HeaderEdit<Vec<u8>>) -> Result<(), EditError> {
    checked_edit(headers, &name, edit)?.apply(name, headers);
    Ok(())
}

/// A plugin's edit of `headers` checked, before it is made.
fn checked_edit(
    headers: &HeaderMap,
    name: &HeaderName,
    edit: HeaderEdit<Vec<u8>>,
) -> Result<HeaderEdit<HeaderValue>, EditError> {
    if !matches!(edit, HeaderEdit::Remove) && headers.len() >= MAX_EDITED_HEADERS {
        return Err(too_many());
    }
    HeaderEdit::check(name, edit)
}

fn too_much() -> EditError {
    EditError::InvalidValue(format!(
        "the plugins have handed this request {} KiB of header values and context already",
        MAX_HANDED_BYTES >> 10
    ))
}

fn too_many() -> EditError {
    EditError::InvalidValue(format!("more than {MAX_EDITED_HEADERS} headers"))
}

/// What a response passing back through the plugin at `link` gets before
/// that plugin's response hook: the plugin's fixed edits, then the headers
/// its request hook left (the last of `staged`, which is in chain order).
pub fn pass_back(fixed: &FixedEdits, staged: &mut Vec<StagedHeader>, link: usize, headers: &mut HeaderMap) {
    apply_fixed(&fixed.response, headers);
    if staged.is_empty() {
        return;
    }
    let start = staged.iter().rposition(|s| s.link < link).map_or(0, |i| i + 1);
    for s in staged.drain(start..) {
        s.edit.apply(s.name, headers);
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
    if !edit::STATUSES.contains(&code) {
        return Err(EditError::InvalidStatus(code));
    }
    StatusCode::from_u16(code).map_err(|_| EditError::InvalidStatus(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> HeaderName {
        HeaderName::from_bytes(s.as_bytes()).unwrap()
    }

    fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
    }

    #[test]
    fn an_edit_adding_a_hop_by_hop_field_is_noted() {
        let value = || HeaderValue::from_static("Basic Zm9vOmJhcg==");
        let mut ex = Exchange::placeholder();
        ex.apply_request_edit(name("x-tenant"), HeaderEdit::Set(value()));
        ex.apply_request_edit(name("proxy-authorization"), HeaderEdit::Remove);
        assert!(!ex.hop_by_hop_added, "neither a field of one hop nor one added");
        ex.apply_request_edit(name("proxy-authorization"), HeaderEdit::Append(value()));
        assert!(ex.hop_by_hop_added);
        let mut ex = Exchange::placeholder();
        ex.edit_request_header(name("Proxy-Authorization"), HeaderEdit::Set(b"Basic x".to_vec())).unwrap();
        assert!(ex.hop_by_hop_added, "a plugin's edit goes the same way");
    }

    /// The request fields the gateway writes or takes out on the way
    /// upstream are refused to a plugin's set or add, fixed or not (its
    /// value was dropped without a word); removing them, and setting them
    /// on a response, are edits like any other.
    #[test]
    fn a_plugin_may_not_set_what_the_gateway_writes_on_a_request() {
        let mut ex = Exchange::placeholder();
        let value = || b"192.0.2.1".to_vec();
        for name in edit::GATEWAY_REQUEST_HEADERS {
            let name = HeaderName::from_static(name);
            let refused = Err(EditError::Forbidden(name.as_str().to_owned()));
            assert_eq!(ex.edit_request_header(name.clone(), HeaderEdit::Set(value())), refused);
            assert_eq!(ex.edit_request_header(name.clone(), HeaderEdit::Append(value())), refused);
            assert_eq!(ex.edit_request_header(name.clone(), HeaderEdit::Remove), Ok(()));
            let mut fixed = FixedEdits::default();
            assert_eq!(fixed.add_request(&name.as_str().to_ascii_uppercase(), HeaderEdit::Set(value())), refused);
            assert_eq!(fixed.add_request(name.as_str(), HeaderEdit::Remove), Ok(()));
            assert_eq!(fixed.add_response(name.as_str(), HeaderEdit::Set(value())), Ok(()));
        }
        assert!(ex.request.headers.is_empty());
    }

    #[test]
    fn a_single_header_is_its_value_and_a_repeated_one_its_count() {
        let mut h = HeaderMap::new();
        assert_eq!(header_get_single(&h, "authorization"), Ok(None));
        h.append("authorization", HeaderValue::from_static("Bearer a"));
        assert_eq!(header_get_single(&h, "Authorization"), Ok(Some(b"Bearer a".to_vec())));
        h.append("authorization", HeaderValue::from_static("Bearer b"));
        h.append("authorization", HeaderValue::from_static(""));
        assert_eq!(header_get_single(&h, "authorization"), Err(3));
    }

    #[test]
    fn response_headers_left_in_the_request_phase_wait_for_their_plugin() {
        let mut ex = Exchange::placeholder();
        ex.link = 0;
        ex.edit_response_header(name("x-a"), HeaderEdit::Set(b"first".to_vec())).unwrap();
        ex.edit_response_header(name("vary"), HeaderEdit::Append(b"Origin".to_vec())).unwrap();
        ex.link = 2;
        ex.edit_response_header(name("x-a"), HeaderEdit::Set(b"third".to_vec())).unwrap();
        ex.edit_response_header(name("server"), HeaderEdit::Remove).unwrap();
        assert_eq!(editable_name("Connection").map(|_| ()), Err(EditError::Forbidden("connection".into())));
        assert!(matches!(
            ex.edit_response_header(name("x-bad"), HeaderEdit::Set(b"a\nb".to_vec())),
            Err(EditError::InvalidValue(_))
        ));
        assert_eq!(ex.staged.len(), 4, "refused edits are not kept");

        let (mut resp, ()) = http::Response::new(()).into_parts();
        resp.headers.insert("vary", HeaderValue::from_static("Accept"));
        resp.headers.insert("server", HeaderValue::from_static("upstream"));
        ex.response = Some(resp);
        // The response passes back through plugins 2, 1 and 0.
        ex.pass_back(&FixedEdits::default(), 2);
        let headers = |ex: &Exchange| ex.response.as_ref().map(|r| r.headers.clone()).unwrap_or_default();
        assert_eq!(values(&headers(&ex), "x-a"), ["third"]);
        assert!(values(&headers(&ex), "server").is_empty(), "removed");
        ex.pass_back(&FixedEdits::default(), 1);
        assert_eq!(ex.staged.len(), 2, "plugin 1 left nothing");
        ex.pass_back(&FixedEdits::default(), 0);
        assert_eq!(values(&headers(&ex), "x-a"), ["first"], "the plugin in front sets its value last");
        assert_eq!(values(&headers(&ex), "vary"), ["Accept", "Origin"], "appended");
        assert!(ex.staged.is_empty());

        // In the response phase the header is set at once.
        ex.edit_response_header(name("x-now"), HeaderEdit::Set(b"1".to_vec())).unwrap();
        assert_eq!(values(&headers(&ex), "x-now"), ["1"]);
        assert!(ex.staged.is_empty());
    }

    /// Header values and context entries add up to at most
    /// `MAX_HANDED_BYTES` a request, however they are handed over.
    #[test]
    fn plugins_hand_a_request_a_bounded_number_of_bytes() {
        let mut ex = Exchange::placeholder();
        let value = vec![b'a'; MAX_HEADER_VALUE];
        let each = MAX_HANDED_BYTES / MAX_HEADER_VALUE;
        for i in 0..each / 2 {
            ex.edit_request_header(name(&format!("x-{i}")), HeaderEdit::Append(value.clone())).unwrap();
            ex.edit_response_header(name(&format!("x-{i}")), HeaderEdit::Set(value.clone())).unwrap();
        }
        let refused = ex.edit_request_header(name("x-more"), HeaderEdit::Set(b"1".to_vec()));
        assert!(matches!(refused, Err(EditError::InvalidValue(m)) if m.contains("1024 KiB")));
        assert!(ex.edit_response_header(name("x-more"), HeaderEdit::Append(b"1".to_vec())).is_err());
        assert_eq!(ex.context_set("k".into(), "v".into()), Err("k".into()));
        assert_eq!(ex.request.headers.len(), each / 2);
        assert!(ex.edit_request_header(name("x-0"), HeaderEdit::Remove).is_ok(), "a removal hands nothing");
        // The response phase's edits (a response hook's, the response
        // resource's) count against the same budget.
        ex.response = Some(http::Response::new(()).into_parts().0);
        assert!(ex.edit_response(name("x-late"), HeaderEdit::Set(b"1".to_vec())).is_err());
        assert!(ex.response.as_ref().is_some_and(|r| r.headers.is_empty()));
    }

    #[test]
    fn plugin_edits_stop_at_the_header_limit() {
        let mut ex = Exchange::placeholder();
        let mut headers = HeaderMap::new();
        for i in 0..MAX_EDITED_HEADERS {
            edit_headers(&mut headers, name(&format!("x-{i}")), HeaderEdit::Set(b"1".to_vec())).unwrap();
            ex.edit_response_header(name(&format!("x-{i}")), HeaderEdit::Append(b"1".to_vec())).unwrap();
        }
        assert!(matches!(
            edit_headers(&mut headers, name("x-one-more"), HeaderEdit::Set(b"1".to_vec())),
            Err(EditError::InvalidValue(_))
        ));
        assert!(matches!(
            ex.edit_response_header(name("x-one-more"), HeaderEdit::Set(b"1".to_vec())),
            Err(EditError::InvalidValue(_))
        ));
        assert_eq!((headers.len(), ex.staged.len()), (MAX_EDITED_HEADERS, MAX_EDITED_HEADERS));
    }

    #[test]
    fn a_value_is_bounded_and_a_request_keeps_one_host() {
        let mut headers = HeaderMap::new();
        let long = vec![b'a'; MAX_HEADER_VALUE + 1];
        assert!(matches!(
            edit_headers(&mut headers, name("x-big"), HeaderEdit::Set(long)),
            Err(EditError::InvalidValue(_))
        ));
        edit_headers(&mut headers, name("x-big"), HeaderEdit::Set(vec![b'a'; MAX_HEADER_VALUE])).unwrap();
        headers.insert(header::HOST, HeaderValue::from_static("a.example"));
        edit_headers(&mut headers, header::HOST, HeaderEdit::Append(b"b.example".to_vec())).unwrap();
        assert_eq!(values(&headers, "host"), ["b.example"]);
    }

    #[test]
    fn header_names_are_checked_once_per_instance_and_every_time_refused() {
        let mut names = EditableNames::default();
        assert_eq!(names.get("ratelimit-limit").unwrap(), "ratelimit-limit");
        assert_eq!(names.get("ratelimit-limit").unwrap(), "ratelimit-limit");
        assert_eq!(names.0.len(), 1, "kept once");
        // Not in lower case: parsed (and lowered) every time, never kept.
        assert_eq!(names.get("X-Tenant").unwrap(), "x-tenant");
        assert_eq!(names.0.len(), 1);
        for _ in 0..2 {
            assert_eq!(names.get("transfer-encoding"), Err(EditError::Forbidden("transfer-encoding".into())));
            assert_eq!(names.get("bad name"), Err(EditError::InvalidName("bad name".into())));
        }
        assert_eq!(names.0.len(), 1, "refused names are not kept");
        for i in 0..40 {
            assert_eq!(names.get(&format!("x-{i}")).unwrap(), format!("x-{i}").as_str());
        }
        assert_eq!(names.0.len(), EditableNames::MAX, "bounded");
        assert_eq!(names.get("x-39").unwrap(), "x-39", "past the bound still parsed");
    }

    #[test]
    fn fixed_edits_are_checked_when_declared_and_made_before_the_left_ones() {
        let mut fixed = FixedEdits::default();
        fixed.add_response("x-a", HeaderEdit::Set(b"fixed".to_vec())).unwrap();
        fixed.add_response("Server", HeaderEdit::Remove).unwrap();
        assert_eq!(
            fixed.add_response("content-length", HeaderEdit::Set(b"1".to_vec())),
            Err(EditError::Forbidden("content-length".into()))
        );
        assert!(matches!(fixed.add_request("x-b", HeaderEdit::Set(b"a\nb".to_vec())), Err(EditError::InvalidValue(_))));
        for i in 0..MAX_FIXED_EDITS {
            fixed.add_request(&format!("x-{i}"), HeaderEdit::Append(b"1".to_vec())).unwrap();
        }
        assert!(matches!(
            fixed.add_request("x-one-more", HeaderEdit::Remove),
            Err(EditError::InvalidValue(m)) if m.contains("more than 64")
        ));
        assert_eq!((fixed.request.len(), fixed.response.len()), (MAX_FIXED_EDITS, 2));

        // On the way back: the plugin's fixed edits, then what its request
        // hook left, which wins.
        let mut ex = Exchange::placeholder();
        ex.edit_response_header(name("x-a"), HeaderEdit::Set(b"left".to_vec())).unwrap();
        let (mut resp, ()) = http::Response::new(()).into_parts();
        resp.headers.insert("server", HeaderValue::from_static("upstream"));
        pass_back(&fixed, &mut ex.staged, 0, &mut resp.headers);
        assert_eq!(values(&resp.headers, "x-a"), ["left"]);
        assert!(values(&resp.headers, "server").is_empty());

        // Adds stop at the header limit, as a plugin's own do.
        let mut full = HeaderMap::new();
        for i in 0..MAX_EDITED_HEADERS {
            full.insert(name(&format!("x-full-{i}")), HeaderValue::from_static("1"));
        }
        apply_fixed(&fixed.request, &mut full);
        assert_eq!(full.len(), MAX_EDITED_HEADERS);
    }
}
