//! The host side of the WIT world: bindings generated from `wit/`, the
//! per-store state, and the functions a plugin may import (request and
//! response accessors, log, context, clock, the shared bytes).
//!
//! Every call works on the one request lent to the store for the current
//! hook, so the request and response are fixed handles and need no table.
//! The capabilities a plugin must be granted (store, http, secrets, crypto)
//! are in [`super::caps`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime::{AsContextMut, StoreContextMut, UpdateDeadline};

use wasmgate_common::decimal::ip_text;

use super::limits::Limiter;
use super::memo::{self, Fact, Read};
use super::sandbox::Stdio;
use crate::exchange::{self, EditError, EditableNames, Exchange, FixedEdits, HeaderEdit};
use crate::telemetry::log_budget;

wasmtime::component::bindgen!({
    world: "policy-plugin",
    path: "../wit",
    with: {
        "wasmgate:plugin/types.request": RequestHandle,
        "wasmgate:plugin/types.response": ResponseHandle,
        "wasmgate:plugin/crypto.key": super::caps::crypto::KeyHandle,
    },
    // Key handles live in a resource table, whose operations can fail.
    imports: { "wasmgate:plugin/crypto": trappable },
});

use self::wasmgate::plugin::setup;
use self::wasmgate::plugin::types::{self as wit};

/// The request lent to a hook. The host never creates more than one, so the
/// handle carries no data.
#[derive(Debug)]
pub struct RequestHandle;

/// The response lent to a response hook.
#[derive(Debug)]
pub struct ResponseHandle;

/// The data of one plugin store.
#[derive(Debug)]
pub struct HostState {
    /// The request being worked on, swapped in for each hook call (an empty
    /// placeholder in between, so no call allocates).
    pub(crate) exchange: Box<Exchange>,
    /// The plugin's name, for logs.
    pub(crate) plugin: Arc<str>,
    pub(crate) limiter: Limiter,
    pub(crate) stdio: Stdio,
    /// Log lines (`log`, stdout, stderr) the current call wrote, and past
    /// [`MAX_LOG_LINES`] dropped ([`HostState::may_log`]).
    pub(crate) logged: (u32, u32),
    /// What this plugin was granted.
    pub(crate) caps: Arc<super::caps::Caps>,
    /// Crypto keys the plugin holds (the only resources it creates).
    pub(crate) table: wasmtime::component::ResourceTable,
    pub(crate) keys_held: usize,
    /// The header names this instance edited, checked once.
    pub(crate) names: EditableNames,
    /// The fixed header edits the plugin declares: collected while its
    /// config hook runs, `None` at any other time.
    pub(crate) fixed: Option<FixedEdits>,
    /// The facts the plugin's request hook depends on, when it declared
    /// them (`setup.memoize-request`) while its config hook ran.
    pub(crate) memo_facts: Option<Vec<Fact>>,
    /// The plugin's deadline: the most one entry into the guest may take
    /// ([`arm`]), moved on by the time it waits on I/O (the deadline bounds
    /// the plugin's computing; the I/O has timeouts of its own).
    pub(crate) deadline: Duration,
    /// When the current entry's deadline passes (`None`: too far to say).
    pub(crate) interrupt_at: Option<Instant>,
    /// How far waits on I/O may move the deadline on ([`waited`]).
    pub(crate) waits_until: Option<Instant>,
}

impl HostState {
    pub fn new(caps: Arc<super::caps::Caps>, max_memory: u64, deadline: Duration) -> Self {
        Self {
            exchange: Box::new(Exchange::placeholder()),
            plugin: caps.plugin.clone(),
            limiter: Limiter::new(max_memory),
            stdio: Stdio::default(),
            logged: (0, 0),
            caps,
            table: wasmtime::component::ResourceTable::new(),
            keys_held: 0,
            names: EditableNames::default(),
            fixed: Some(FixedEdits::default()),
            memo_facts: None,
            deadline,
            interrupt_at: None,
            waits_until: None,
        }
    }

    pub(crate) fn request_id(&self) -> &str {
        self.exchange.request_id.to_str().unwrap_or("-")
    }
}

/// Starts the deadline of an entry into the guest that began at `from`
/// (an earlier clock reading, or now): the guest is interrupted at the
/// first tick of the plugins' clock after `from` plus the plugin's deadline
/// ([`on_tick`], [`super::clock`]). Its waits on I/O may move that on by
/// `waits` in all ([`waited`]).
pub(crate) fn arm(mut store: impl AsContextMut<Data = HostState>, from: Instant, waits: Duration) {
    let mut s = store.as_context_mut();
    arm_state(s.data_mut(), from, waits);
    s.set_epoch_deadline(1);
}

/// [`arm`]'s part in the host state (and a new call's log budget).
fn arm_state(data: &mut HostState, from: Instant, waits: Duration) {
    data.interrupt_at = from.checked_add(data.deadline);
    data.waits_until = data.interrupt_at.and_then(|at| at.checked_add(waits));
    data.logged = (0, 0);
}

/// How long the current entry into the guest may still wait on I/O before
/// its deadline can move on no further (`None`: too far to say). A wait up
/// to it leaves the guest its time to compute.
pub(crate) fn may_wait(data: &HostState) -> Option<Duration> {
    Some(data.waits_until?.saturating_duration_since(data.interrupt_at?))
}

/// After a wait on I/O that began at `since`: the deadline moves on by the
/// time waited, so that it still bounds the plugin's own computing, and no
/// further than its waits may take it. A call that fails without waiting
/// (a request not granted, a key too long) moves it on by nothing: a guest
/// calling one in a loop is stopped at its deadline.
pub(crate) fn waited(mut store: impl AsContextMut<Data = HostState>, since: Instant) {
    let mut s = store.as_context_mut();
    let data = s.data_mut();
    data.interrupt_at = moved_on(data.interrupt_at, data.waits_until, Instant::now().saturating_duration_since(since));
}

/// A deadline `at` moved on by `waited`, no further than `until` (and
/// never back).
fn moved_on(at: Option<Instant>, until: Option<Instant>, waited: Duration) -> Option<Instant> {
    let at = at?;
    let later = at.checked_add(waited);
    Some(match (later, until) {
        (Some(later), Some(until)) => later.min(until).max(at),
        (Some(later), None) => later,
        (None, until) => until.unwrap_or(at).max(at),
    })
}

/// What a tick of the plugins' clock does to a running guest (the store's
/// epoch callback): interrupts it once its deadline passed, otherwise lets
/// it run to the next tick.
pub(crate) fn on_tick(s: StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline> {
    Ok(match s.data().interrupt_at {
        Some(at) if Instant::now() >= at => UpdateDeadline::Interrupt,
        _ => UpdateDeadline::Continue(1),
    })
}

/// Links what every plugin may import: the request and response, log,
/// context, clock, setup, the shared bytes, and the sandbox's WASI.
/// Capabilities are linked per plugin, when granted
/// ([`super::caps::link`]).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    type D = HasSelf<HostState>;
    self::wasmgate::plugin::types::add_to_linker::<HostState, D>(linker, |s| s)?;
    self::wasmgate::plugin::log::add_to_linker::<HostState, D>(linker, |s| s)?;
    self::wasmgate::plugin::context::add_to_linker::<HostState, D>(linker, |s| s)?;
    self::wasmgate::plugin::clock::add_to_linker::<HostState, D>(linker, |s| s)?;
    self::wasmgate::plugin::setup::add_to_linker::<HostState, D>(linker, |s| s)?;
    self::wasmgate::plugin::shared::add_to_linker::<HostState, D>(linker, |s| s)?;
    super::sandbox::add_to_linker(linker)
}

pub fn request_handle() -> Resource<RequestHandle> {
    Resource::new_borrow(0)
}

pub fn response_handle() -> Resource<ResponseHandle> {
    Resource::new_borrow(0)
}

impl From<EditError> for wit::EditError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::InvalidName(n) => Self::InvalidName(n),
            EditError::InvalidValue(v) => Self::InvalidValue(v),
            EditError::Forbidden(n) => Self::Forbidden(n),
            EditError::InvalidStatus(s) => Self::InvalidStatus(s),
            EditError::TooLarge(n) => Self::TooLarge(n),
            EditError::BodyUnavailable => Self::BodyUnavailable,
        }
    }
}

type EditResult = Result<(), wit::EditError>;

impl HostState {
    fn ex(&self) -> &Exchange {
        &self.exchange
    }

    fn ex_mut(&mut self) -> &mut Exchange {
        &mut self.exchange
    }

    /// The exchange, after noting the read for a memoized hook.
    fn ex_reads(&mut self, read: Read<'_>) -> &mut Exchange {
        self.exchange.reads(read);
        &mut self.exchange
    }
}

impl wit::Host for HostState {}

impl From<setup::HeaderEdit> for HeaderEdit<Vec<u8>> {
    fn from(edit: setup::HeaderEdit) -> Self {
        match edit {
            setup::HeaderEdit::Set(v) => Self::Set(v),
            setup::HeaderEdit::Append(v) => Self::Append(v),
            setup::HeaderEdit::Remove => Self::Remove,
        }
    }
}

impl setup::Host for HostState {
    fn fixed_request_header(&mut self, name: String, edit: setup::HeaderEdit) -> EditResult {
        Ok(self.fixed.as_mut().ok_or_else(not_configuring)?.add_request(&name, edit.into())?)
    }

    fn fixed_response_header(&mut self, name: String, edit: setup::HeaderEdit) -> EditResult {
        Ok(self.fixed.as_mut().ok_or_else(not_configuring)?.add_response(&name, edit.into())?)
    }

    fn memoize_request(&mut self, facts: Vec<setup::RequestFact>) -> EditResult {
        if self.fixed.is_none() {
            return Err(wit::EditError::InvalidValue("memoize-request is called from configure only".into()));
        }
        if self.caps.store.is_some() || self.caps.http.is_some() {
            return Err(wit::EditError::InvalidValue(
                "memoize-request: a plugin granted `store` or `http` gets answers that change over time, \
                 so its request hook cannot be memoized"
                    .into(),
            ));
        }
        if facts.len() > memo::MAX_FACTS {
            return Err(wit::EditError::InvalidValue(format!("more than {} request facts", memo::MAX_FACTS)));
        }
        let mut declared = Vec::with_capacity(facts.len());
        for fact in facts {
            declared.push(match fact {
                setup::RequestFact::Method => Fact::Method,
                setup::RequestFact::Path => Fact::Path,
                setup::RequestFact::Query => Fact::Query,
                setup::RequestFact::Scheme => Fact::Scheme,
                setup::RequestFact::Authority => Fact::Authority,
                setup::RequestFact::ClientAddress => Fact::ClientAddress,
                setup::RequestFact::Header(name) => Fact::Header(
                    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| wit::EditError::InvalidName(name))?,
                ),
                setup::RequestFact::PathParam(name) => Fact::PathParam(name),
                setup::RequestFact::Context(key) => Fact::Context(key),
            });
        }
        self.memo_facts = Some(declared);
        Ok(())
    }
}

fn not_configuring() -> wit::EditError {
    wit::EditError::InvalidValue("fixed headers are declared from configure only".into())
}

impl wit::HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestHandle>) -> String {
        self.ex_reads(Read::Method).request.method.as_str().to_owned()
    }

    fn method_kind(&mut self, _: Resource<RequestHandle>) -> wit::MethodKind {
        method_kind(&self.ex_reads(Read::Method).request.method)
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> String {
        self.ex_reads(Read::Path).request.uri.path().to_owned()
    }

    fn query(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        self.ex_reads(Read::Query).request.uri.query().map(str::to_owned)
    }

    fn scheme(&mut self, _: Resource<RequestHandle>) -> String {
        self.ex_reads(Read::Scheme).scheme.to_owned()
    }

    fn authority(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        self.ex_reads(Read::Authority).authority().map(str::to_owned)
    }

    fn client_ip(&mut self, _: Resource<RequestHandle>) -> String {
        ip_text(self.ex_reads(Read::ClientAddress).client_ip)
    }

    fn client_address(&mut self, _: Resource<RequestHandle>) -> wit::IpAddress {
        ip_address(self.ex_reads(Read::ClientAddress).client_ip)
    }

    fn client_certificate(&mut self, _: Resource<RequestHandle>) -> Option<wit::ClientCertificate> {
        // Not a fact a plugin can declare: a kept call must not read it.
        self.exchange.spoil();
        self.ex().client_cert.as_deref().map(|c| wit::ClientCertificate {
            hash: c.hash.clone(),
            subject: c.subject.clone(),
            uris: c.uris.clone(),
            dns_names: c.dns_names.clone(),
        })
    }

    fn id(&mut self, _: Resource<RequestHandle>) -> String {
        self.exchange.spoil();
        self.request_id().to_owned()
    }

    fn route(&mut self, _: Resource<RequestHandle>) -> String {
        // Not `to_string`: `Display` formatting costs ~200 instructions more.
        (*self.ex().route).to_owned()
    }

    fn path_param(&mut self, _: Resource<RequestHandle>, name: String) -> Option<String> {
        self.ex_reads(Read::PathParam(&name)).capture(&name).map(str::to_owned)
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Option<Vec<u8>> {
        exchange::header_get(&self.ex_reads(Read::Header(&name)).request.headers, &name)
    }

    fn header_all(&mut self, _: Resource<RequestHandle>, name: String) -> Vec<Vec<u8>> {
        exchange::header_get_all(&self.ex_reads(Read::Header(&name)).request.headers, &name)
    }

    fn header_single(&mut self, _: Resource<RequestHandle>, name: String) -> Result<Option<Vec<u8>>, u32> {
        exchange::header_get_single(&self.ex_reads(Read::Header(&name)).request.headers, &name)
    }

    fn headers(&mut self, _: Resource<RequestHandle>) -> Vec<(String, Vec<u8>)> {
        self.exchange.spoil();
        exchange::header_list(&self.ex().request.headers)
    }

    fn set_header(&mut self, _: Resource<RequestHandle>, name: String, value: Vec<u8>) -> EditResult {
        let name = self.names.get(&name)?;
        Ok(self.ex_mut().edit_request_header(name, HeaderEdit::Set(value))?)
    }

    fn append_header(&mut self, _: Resource<RequestHandle>, name: String, value: Vec<u8>) -> EditResult {
        let name = self.names.get(&name)?;
        Ok(self.ex_mut().edit_request_header(name, HeaderEdit::Append(value))?)
    }

    fn remove_header(&mut self, _: Resource<RequestHandle>, name: String) -> bool {
        self.names.get(&name).is_ok_and(|n| self.ex_mut().remove_request_header(n))
    }

    fn set_response_header(&mut self, _: Resource<RequestHandle>, name: String, value: Vec<u8>) -> EditResult {
        let name = self.names.get(&name)?;
        Ok(self.ex_mut().edit_response_header(name, HeaderEdit::Set(value))?)
    }

    fn append_response_header(&mut self, _: Resource<RequestHandle>, name: String, value: Vec<u8>) -> EditResult {
        let name = self.names.get(&name)?;
        Ok(self.ex_mut().edit_response_header(name, HeaderEdit::Append(value))?)
    }

    fn remove_response_header(&mut self, _: Resource<RequestHandle>, name: String) -> EditResult {
        let name = self.names.get(&name)?;
        Ok(self.ex_mut().edit_response_header(name, HeaderEdit::Remove)?)
    }

    fn set_path(&mut self, _: Resource<RequestHandle>, path: String) -> EditResult {
        Ok(self.ex_mut().set_path(&path)?)
    }

    fn set_query(&mut self, _: Resource<RequestHandle>, query: Option<String>) -> EditResult {
        Ok(self.ex_mut().set_query(query.as_deref())?)
    }

    fn body(&mut self, _: Resource<RequestHandle>) -> Result<Vec<u8>, wit::EditError> {
        self.exchange.spoil();
        self.ex().request_body.as_ref().map(|b| b.to_vec()).ok_or(wit::EditError::BodyUnavailable)
    }

    fn set_body(&mut self, _: Resource<RequestHandle>, body: Vec<u8>) -> EditResult {
        let e = self.ex_mut();
        e.spoil();
        if e.request_body.is_none() {
            return Err(wit::EditError::BodyUnavailable);
        }
        e.request_body = Some(exchange::body_edit(e.body_limit, body)?);
        Ok(())
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// An address as `ip-address`: a value, where `client-ip` copies text.
fn ip_address(ip: std::net::IpAddr) -> wit::IpAddress {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            wit::IpAddress::Ipv4((a, b, c, d))
        }
        std::net::IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            wit::IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    }
}

/// A method as `method-kind`: a value, where `method` copies text into
/// the plugin's memory.
fn method_kind(method: &http::Method) -> wit::MethodKind {
    use wit::MethodKind as K;
    match method.as_str() {
        "GET" => K::Get,
        "HEAD" => K::Head,
        "POST" => K::Post,
        "PUT" => K::Put,
        "DELETE" => K::Delete,
        "CONNECT" => K::Connect,
        "OPTIONS" => K::Options,
        "TRACE" => K::Trace,
        "PATCH" => K::Patch,
        _ => K::Other,
    }
}

impl HostState {
    fn resp(&self) -> Option<&http::response::Parts> {
        self.ex().response.as_ref()
    }

    fn resp_mut(&mut self) -> Result<&mut http::response::Parts, wit::EditError> {
        self.ex_mut().response.as_mut().ok_or(wit::EditError::BodyUnavailable)
    }
}

impl wit::HostResponse for HostState {
    fn status(&mut self, _: Resource<ResponseHandle>) -> u16 {
        self.resp().map_or(0, |r| r.status.as_u16())
    }

    fn set_status(&mut self, _: Resource<ResponseHandle>, status: u16) -> EditResult {
        let code = exchange::status(status)?;
        self.resp_mut()?.status = code;
        Ok(())
    }

    fn header(&mut self, _: Resource<ResponseHandle>, name: String) -> Option<Vec<u8>> {
        exchange::header_get(&self.resp()?.headers, &name)
    }

    fn header_all(&mut self, _: Resource<ResponseHandle>, name: String) -> Vec<Vec<u8>> {
        self.resp().map(|r| exchange::header_get_all(&r.headers, &name)).unwrap_or_default()
    }

    fn header_single(&mut self, _: Resource<ResponseHandle>, name: String) -> Result<Option<Vec<u8>>, u32> {
        self.resp().map_or(Ok(None), |r| exchange::header_get_single(&r.headers, &name))
    }

    fn headers(&mut self, _: Resource<ResponseHandle>) -> Vec<(String, Vec<u8>)> {
        self.resp().map(|r| exchange::header_list(&r.headers)).unwrap_or_default()
    }

    fn set_header(&mut self, _: Resource<ResponseHandle>, name: String, value: Vec<u8>) -> EditResult {
        let name = self.names.get(&name)?;
        if self.resp().is_none() {
            return Err(wit::EditError::BodyUnavailable);
        }
        Ok(self.ex_mut().edit_response(name, HeaderEdit::Set(value))?)
    }

    fn append_header(&mut self, _: Resource<ResponseHandle>, name: String, value: Vec<u8>) -> EditResult {
        let name = self.names.get(&name)?;
        if self.resp().is_none() {
            return Err(wit::EditError::BodyUnavailable);
        }
        Ok(self.ex_mut().edit_response(name, HeaderEdit::Append(value))?)
    }

    fn remove_header(&mut self, _: Resource<ResponseHandle>, name: String) -> bool {
        let Ok(name) = self.names.get(&name) else { return false };
        self.resp_mut().is_ok_and(|r| r.headers.remove(name).is_some())
    }

    fn body(&mut self, _: Resource<ResponseHandle>) -> Result<Vec<u8>, wit::EditError> {
        self.ex().response_body.as_ref().map(|b| b.to_vec()).ok_or(wit::EditError::BodyUnavailable)
    }

    fn set_body(&mut self, _: Resource<ResponseHandle>, body: Vec<u8>) -> EditResult {
        let e = self.ex_mut();
        if e.response_body.is_none() {
            return Err(wit::EditError::BodyUnavailable);
        }
        e.response_body = Some(exchange::body_edit(e.body_limit, body)?);
        Ok(())
    }

    fn drop(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// Longest log message a plugin can write; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 4096;

/// Most log lines (`log`, stdout and stderr together) one call into a
/// plugin may write; the rest are dropped and counted in one warning at the
/// call's end. A plugin logging in a loop would otherwise write as many as
/// its deadline lets it, on every request.
const MAX_LOG_LINES: u32 = 100;

impl HostState {
    /// Whether the current call may write one more log line (counting it).
    pub(crate) fn may_log(&mut self) -> bool {
        let (written, dropped) = &mut self.logged;
        if *written < MAX_LOG_LINES {
            *written += 1;
            true
        } else {
            *dropped = dropped.saturating_add(1);
            false
        }
    }

    /// Whether one more line of the current call may be written: within
    /// the call's [`MAX_LOG_LINES`] ([`may_log`](Self::may_log)) and the
    /// process's budget for plugins' lines; `Some` with the lines that
    /// budget dropped since the last one written (a log field, left out
    /// when none were).
    pub(crate) fn may_write_line(&mut self) -> Option<Option<u64>> {
        if !self.may_log() {
            return None;
        }
        log_budget::PLUGIN_LINES.take().map(log_budget::dropped)
    }

    /// Says how many log lines the call that ended dropped, if any.
    pub(crate) fn report_dropped_lines(&mut self) {
        let in_call = std::mem::take(&mut self.logged.1);
        if in_call > 0
            && let Some(n) = log_budget::PLUGIN_LINES.take()
        {
            let (plugin, id, dropped) = (&*self.plugin, self.request_id(), log_budget::dropped(n));
            tracing::warn!(
                target: "wasmgate::plugin",
                plugin,
                request_id = id,
                in_call,
                dropped,
                "plugin wrote more than {MAX_LOG_LINES} log lines in one call; the rest were dropped"
            );
        }
    }
}

/// A plugin's text as it goes into the log: cut to [`MAX_LOG_MESSAGE`]
/// bytes, its control characters escaped (`\n` as `\\n`), so that it cannot
/// write a log line of its own in the text format.
pub(crate) fn for_log(message: &str) -> Cow<'_, str> {
    let mut end = message.len().min(MAX_LOG_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &message[..end];
    if !cut.contains(char::is_control) {
        return Cow::Borrowed(cut);
    }
    let mut escaped = String::with_capacity(cut.len() + 16);
    for c in cut.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

impl self::wasmgate::plugin::log::Host for HostState {
    fn enabled(&mut self, level: self::wasmgate::plugin::log::Level) -> bool {
        use self::wasmgate::plugin::log::Level as L;
        match level {
            L::Trace => tracing::enabled!(target: "wasmgate::plugin", tracing::Level::TRACE),
            L::Debug => tracing::enabled!(target: "wasmgate::plugin", tracing::Level::DEBUG),
            L::Info => tracing::enabled!(target: "wasmgate::plugin", tracing::Level::INFO),
            L::Warn => tracing::enabled!(target: "wasmgate::plugin", tracing::Level::WARN),
            L::Error => tracing::enabled!(target: "wasmgate::plugin", tracing::Level::ERROR),
        }
    }

    fn log(&mut self, level: self::wasmgate::plugin::log::Level, message: String) {
        use self::wasmgate::plugin::log::Level as L;
        if matches!(level, L::Warn | L::Error) {
            // A warning replayed silently would hide what it warns of.
            self.exchange.spoil();
        }
        // Only lines the filter lets through count against the budgets.
        if !self.enabled(level) {
            return;
        }
        let Some(dropped) = self.may_write_line() else { return };
        let (plugin, id, msg) = (&*self.plugin, self.request_id(), for_log(&message));
        match level {
            L::Trace => {
                tracing::trace!(target: "wasmgate::plugin", plugin, request_id = id, dropped, "{msg}")
            }
            L::Debug => {
                tracing::debug!(target: "wasmgate::plugin", plugin, request_id = id, dropped, "{msg}")
            }
            L::Info => tracing::info!(target: "wasmgate::plugin", plugin, request_id = id, dropped, "{msg}"),
            L::Warn => tracing::warn!(target: "wasmgate::plugin", plugin, request_id = id, dropped, "{msg}"),
            L::Error => {
                tracing::error!(target: "wasmgate::plugin", plugin, request_id = id, dropped, "{msg}")
            }
        }
    }
}

impl self::wasmgate::plugin::context::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.ex_reads(Read::Context(&key)).context.get(&key).cloned()
    }

    fn set(&mut self, key: String, value: String) {
        if let Err(key) = self.exchange.context_set(key, value) {
            // Refused for the entries other plugins left: not a function of
            // this plugin's facts.
            self.exchange.spoil();
            if let Some(dropped) = self.may_write_line() {
                tracing::warn!(
                    plugin = &*self.plugin,
                    key = %for_log(&key),
                    dropped,
                    "context entry refused: too many or too large"
                );
            }
        }
    }

    fn remove(&mut self, key: String) -> Option<String> {
        self.exchange.context_remove(&key)
    }

    fn keys(&mut self) -> Vec<String> {
        self.exchange.spoil();
        self.ex().context.keys().cloned().collect()
    }
}

fn process_start() -> Instant {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

pub(crate) fn monotonic_ns() -> u64 {
    u64::try_from(process_start().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Reading or writing the shared bytes makes a call's outcome depend on
/// more than its declared facts: it is not kept. A plugin whose instances
/// share none finds nothing and keeps nothing.
impl self::wasmgate::plugin::shared::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.exchange.spoil();
        // Copied into the plugin once the lock is let go of.
        let value = self.caps.shared()?.get(&key);
        value.map(|v| v.to_vec())
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> bool {
        self.exchange.spoil();
        // Copied out of the plugin's list before the lock is taken.
        let value: std::sync::Arc<[u8]> = value.into();
        self.caps.shared().is_some_and(|mut s| s.set(&key, value))
    }

    fn delete(&mut self, key: String) -> bool {
        self.exchange.spoil();
        self.caps.shared().is_some_and(|mut s| s.delete(&key))
    }
}

impl self::wasmgate::plugin::clock::Host for HostState {
    fn now_unix_ms(&mut self) -> u64 {
        self.exchange.spoil();
        unix_ms()
    }

    fn monotonic_ns(&mut self) -> u64 {
        self.exchange.spoil();
        monotonic_ns()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{MAX_LOG_LINES, MAX_LOG_MESSAGE, for_log, ip_address, method_kind, moved_on, wit};

    #[test]
    fn a_call_may_write_so_many_log_lines_and_the_next_as_many_again() {
        let caps = super::super::caps::Caps::none("p");
        let mut state = super::HostState::new(std::sync::Arc::new(caps), 1 << 20, Duration::from_millis(100));
        super::arm_state(&mut state, Instant::now(), Duration::ZERO);
        let written = (0..MAX_LOG_LINES + 5).filter(|_| state.may_log()).count();
        assert_eq!((written, state.logged.1), (MAX_LOG_LINES as usize, 5));
        state.report_dropped_lines();
        assert_eq!(state.logged.1, 0, "reported once");
        super::arm_state(&mut state, Instant::now(), Duration::ZERO);
        assert!(state.may_log(), "a new call, a new budget");
    }

    #[test]
    fn a_plugins_log_text_is_cut_and_cannot_start_a_line_of_its_own() {
        assert!(matches!(for_log("plain text, ünïcode"), std::borrow::Cow::Borrowed("plain text, ünïcode")));
        let forged = "ok\n2026-12-06T00:00:00Z  INFO wasmgate: admin login\r\tx\u{1b}[31m";
        assert_eq!(for_log(forged), "ok\\n2026-12-06T00:00:00Z  INFO wasmgate: admin login\\r\\tx\\u{1b}[31m");
        // Cut at a character's boundary.
        let long = "é".repeat(MAX_LOG_MESSAGE);
        assert_eq!(for_log(&long).len(), MAX_LOG_MESSAGE);
    }

    #[test]
    fn a_wait_moves_the_deadline_on_by_its_length_up_to_the_limit() {
        let at = Instant::now();
        let ms = Duration::from_millis;
        let until = Some(at + ms(500));
        assert_eq!(moved_on(Some(at), until, ms(0)), Some(at), "a call that did not wait");
        assert_eq!(moved_on(Some(at), until, ms(200)), Some(at + ms(200)));
        assert_eq!(moved_on(Some(at), until, ms(900)), until, "no further than the waits may take it");
        assert_eq!(moved_on(Some(at), Some(at), ms(200)), Some(at), "no waits allowed");
        assert_eq!(moved_on(Some(at), None, ms(200)), Some(at + ms(200)), "no limit to say");
        assert_eq!(moved_on(None, until, ms(200)), None, "too far to say");
    }

    #[test]
    fn addresses_are_their_octets_or_segments_in_order() {
        let v4 = ip_address("10.20.30.4".parse().unwrap());
        assert!(matches!(v4, wit::IpAddress::Ipv4((10, 20, 30, 4))), "{v4:?}");
        let v6 = ip_address("2001:db8::7".parse().unwrap());
        assert!(matches!(v6, wit::IpAddress::Ipv6((0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))), "{v6:?}");
        // A mapped IPv4 address stays IPv6, as the socket gave it.
        let mapped = ip_address("::ffff:10.0.0.1".parse().unwrap());
        assert!(matches!(mapped, wit::IpAddress::Ipv6((0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001))), "{mapped:?}");
    }

    #[test]
    fn standard_methods_are_kinds_and_others_are_other() {
        use wit::MethodKind as K;
        let kinds = [
            ("GET", K::Get),
            ("HEAD", K::Head),
            ("POST", K::Post),
            ("PUT", K::Put),
            ("DELETE", K::Delete),
            ("CONNECT", K::Connect),
            ("OPTIONS", K::Options),
            ("TRACE", K::Trace),
            ("PATCH", K::Patch),
            ("PURGE", K::Other),
            ("get", K::Other),
        ];
        for (text, kind) in kinds {
            let method = http::Method::from_bytes(text.as_bytes()).unwrap();
            assert_eq!(method_kind(&method), kind, "{text}");
        }
    }
}
