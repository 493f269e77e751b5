//! A route's plugin chain around the upstream call: the request phase in
//! chain order, the upstream (unless a plugin answered), the response phase
//! in reverse over the plugins that ran.

use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::{Request, Response};
use tokio::time::Instant;

use super::body::{self, Body, BodyError};
use super::error::ProxyError;
use super::{Forward, Present, Trace, client_body_error, clone_head, fix_length, upgrade};
use crate::config::OnPluginError;
use crate::exchange::{self, Exchange, HeaderEdit, Undo};
use crate::plugin::host_api::wasmgate::plugin::types::Reply;
use crate::plugin::memo::Memo;
use crate::plugin::{ChainLink, Fault, FaultKind, Outcome};
use crate::telemetry::log_budget;

/// A response body: as the upstream streams it, or in memory.
enum RespBody {
    Stream(Body),
    Bytes(Bytes),
}

/// A hook's phase; its value indexes [`ChainLink::timers`].
#[derive(Clone, Copy)]
enum Phase {
    Request = 0,
    Response = 1,
}

/// Runs the chain for a request whose head, as its server read it, may have
/// the fields `present` tells of.
pub(super) async fn run<'s>(
    forward: &Forward<'s, '_>,
    mut ex: Box<Exchange>,
    body: Body,
    present: Present,
    trace: &mut Trace<'s>,
) -> Result<Box<Response<Body>>, ProxyError> {
    let route = forward.route;
    let mut body = Some(body);
    if route.needs_request_body
        && let Some(b) = body.take()
    {
        // Boxed, as the rarer awaits below: only their box when they run,
        // not their size in every request's chain future.
        let collect = Box::pin(body::collect(b, route.max_body));
        ex.request_body = Some(collect.await.map_err(|e| client_body_error(e, route))?);
    }
    // Only a route rewrite needs to know whether a plugin changed the path.
    let path_before = route.rewrite.is_some().then(|| ex.request.uri.path().to_owned());
    let head = ex.request.method == http::Method::HEAD;

    let mut early = None;
    let mut lap = Lap::start();
    let fail_open = route.on_plugin_error == OnPluginError::FailOpen;
    for (i, link) in route.chain.iter().enumerate() {
        // Its fixed headers go with it if it fails open.
        let undo = (fail_open && link.info.on_request).then(|| ex.undo_point());
        ex.apply_fixed_request(&link.fixed.request);
        if !link.info.on_request {
            continue;
        }
        ex.link = i;
        let result = match &link.memo {
            Some(memo) => memoized(forward, link, memo, &mut ex, trace, &mut lap).await,
            None => call(forward, link, &mut ex, Phase::Request, trace, &mut lap).await,
        };
        match result {
            Ok(Outcome::Continue) => {}
            Ok(Outcome::Respond(reply)) => match reply_parts(link, reply) {
                Ok(parts) => {
                    early = Some((i, parts));
                    break;
                }
                Err(fault) => {
                    relabel_last(forward, trace, fault.kind.as_str());
                    request_fault(forward, link, i, &mut ex, undo, fault)?;
                }
            },
            Err(fault) => request_fault(forward, link, i, &mut ex, undo, fault)?,
        }
    }

    // Upstream, unless a plugin answered.
    let (resp_parts, resp_body, ran) = match early {
        Some((i, (mut parts, bytes))) => {
            // The reply passes back through the plugin that gave it.
            exchange::pass_back(&route.chain[i].fixed, &mut ex.staged, i, &mut parts.headers);
            (parts, RespBody::Bytes(bytes), i)
        }
        None => {
            if let (Some(rw), Some(before)) = (&route.rewrite, &path_before)
                && ex.request.uri.path() == before
            {
                let path = rw.apply(before, &ex.captures).into_owned();
                forward.rewrote(before, &path);
                ex.set_path(&path).map_err(|_| ProxyError::BadPath)?;
            }
            // The fields the head may have now: the client's, and those
            // the chain may have added. Plugins cannot set the framing
            // fields or `Connection` (`MANAGED_HEADERS`); the other
            // hop-by-hop fields they may set are noted as they are.
            let mut present = present;
            if ex.hop_by_hop_added {
                present |= Present::HOP;
            }
            let req_body = match (ex.request_body.take(), body.take()) {
                (Some(bytes), _) => {
                    fix_length(&mut ex.request.headers, Some(bytes.len()));
                    present |= Present::CONTENT_LENGTH;
                    Body::full(bytes)
                }
                (None, Some(b)) => b,
                (None, None) => Body::Empty,
            };
            // Response hooks read the request too: keep it, send a copy.
            let head = if route.has_response_hooks {
                clone_head(&ex.request)
            } else {
                std::mem::replace(&mut ex.request, Request::new(()).into_parts().0)
            };
            let mut req = Box::new(Request::from_parts(head, req_body));
            // The routed host went into `Host` before the plugins ran, theirs
            // to edit: the target's authority (HTTP/2, absolute form), which
            // the forwarding fields would write over `Host`, goes (a plugin's
            // `Host` reached HTTP/1 clients' upstreams only).
            super::origin_form(req.uri_mut());
            if ex.host_removed {
                forward.host_removed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let resp = if upgrade::asked(&req, present, &forward.route.upgrades) {
                Box::pin(upgrade::proxy(forward, req, present, lap.last(), trace)).await?
            } else {
                let forwarding = forward.head(&mut req, present, trace.client);
                forward.send(req, &forwarding, lap.last(), trace).await?
            };
            let (parts, body) = resp.into_parts();
            (parts, RespBody::Stream(body), route.chain.len())
        }
    };
    response_phase(forward, ex, ran, resp_parts, resp_body, trace)
        .await
        .map(|(parts, body)| into_response(parts, body, head))
}

/// The response phase over the first `ran` plugins, last first: each
/// passes back the response headers its request hook set; without response
/// hooks, that is all.
async fn response_phase<'s>(
    forward: &Forward<'s, '_>,
    mut ex: Box<Exchange>,
    ran: usize,
    mut parts: http::response::Parts,
    body: RespBody,
    trace: &mut Trace<'s>,
) -> Result<(http::response::Parts, RespBody), ProxyError> {
    let links = &forward.route.chain[..ran];
    // What the plugins do to the response they do to it with this hop's
    // `Via` in, as a client will get it (one may remove it); when none
    // touches it, the server writes it with the head ([`super::Stamp`]).
    let hooks = links.iter().any(|l| l.info.on_response);
    let touch_via = hooks
        || links.iter().any(|l| l.fixed.response.iter().any(|(n, _)| n == header::VIA))
        || ex.staged.iter().any(|s| s.name == header::VIA);
    if touch_via && let Some(via) = trace.via.take() {
        super::headers::add_via(&mut parts.headers, &via);
    }
    if hooks {
        // Boxed: its hook calls and body collection would make every
        // request's chain future larger than the allocator's cache limit
        // (1 032 bytes), and most chains have no response hook.
        return Box::pin(response_hooks(forward, ex, links, parts, body, trace)).await;
    }
    for (i, link) in links.iter().enumerate().rev() {
        if !ex.skipped.contains(&i) {
            exchange::pass_back(&link.fixed, &mut ex.staged, i, &mut parts.headers);
        }
    }
    Ok((parts, body))
}

/// Runs the response hooks of `links`, last first, each after the response
/// headers its request hook set. A plugin that replies replaces the
/// response; the plugins before it still see it.
async fn response_hooks<'s>(
    forward: &Forward<'s, '_>,
    mut ex: Box<Exchange>,
    links: &[ChainLink],
    parts: http::response::Parts,
    mut body: RespBody,
    trace: &mut Trace<'s>,
) -> Result<(http::response::Parts, RespBody), ProxyError> {
    let route = forward.route;
    if route.needs_response_body {
        let bytes = match body {
            RespBody::Bytes(b) => b,
            RespBody::Stream(s) => {
                let limit = route.max_body;
                let upstream: Arc<str> = Arc::from(trace.upstream.unwrap_or("-"));
                body::collect(s, limit).await.map_err(|e| match e {
                    BodyError::TooLarge(_) => ProxyError::UpstreamBodyTooLarge { upstream, limit },
                    other => ProxyError::UpstreamProtocol { upstream, detail: other.to_string() },
                })?
            }
        };
        ex.response_body = Some(bytes);
        body = RespBody::Bytes(Bytes::new());
    }
    ex.response = Some(parts);
    let mut lap = Lap::start();
    let fail_open = route.on_plugin_error == OnPluginError::FailOpen;
    for (i, link) in links.iter().enumerate().rev() {
        if ex.skipped.contains(&i) {
            continue;
        }
        ex.pass_back(&link.fixed, i);
        if !link.info.on_response {
            continue;
        }
        let undo = fail_open.then(|| ex.undo_point());
        match call(forward, link, &mut ex, Phase::Response, trace, &mut lap).await {
            Ok(Outcome::Continue) => {}
            Ok(Outcome::Respond(reply)) => match reply_parts(link, reply) {
                Ok((parts, bytes)) => {
                    ex.response = Some(parts);
                    match &mut ex.response_body {
                        Some(b) => *b = bytes,
                        None => body = RespBody::Bytes(bytes),
                    }
                }
                Err(fault) => {
                    relabel_last(forward, trace, fault.kind.as_str());
                    plugin_fault(forward, link, &mut ex, undo, fault)?;
                }
            },
            Err(fault) => plugin_fault(forward, link, &mut ex, undo, fault)?,
        }
    }
    if let Some(b) = ex.response_body.take() {
        body = RespBody::Bytes(b);
    }
    let parts = ex.response.take().ok_or(ProxyError::Internal("response lost in the response phase"))?;
    Ok((parts, body))
}

/// Times consecutive hook calls with one clock read per call: each call
/// ends its own lap and starts the next.
struct Lap(Instant);

impl Lap {
    fn start() -> Self {
        Self(Instant::now())
    }

    /// When the last lap ended (or the first began).
    fn last(&self) -> Instant {
        self.0
    }

    /// The time since the last lap (or the start).
    fn lap(&mut self) -> std::time::Duration {
        let now = Instant::now();
        let took = now.saturating_duration_since(self.0);
        self.0 = now;
        took
    }
}

/// A request hook that declared the facts it depends on: the outcome kept
/// for their values when there is one, made again without a call;
/// otherwise a recorded call, kept when it read only those facts.
async fn memoized<'s>(
    forward: &Forward<'s, '_>,
    link: &ChainLink,
    memo: &Memo,
    ex: &mut Box<Exchange>,
    trace: &mut Trace<'s>,
    lap: &mut Lap,
) -> Result<Outcome, Fault> {
    let Some(key) = memo.key(ex) else {
        return call(forward, link, ex, Phase::Request, trace, lap).await;
    };
    if let Some(kept) = memo.get(&key) {
        let outcome = kept.replay(ex);
        link.series.kept.inc();
        // The next call's time starts here.
        lap.lap();
        let label = match outcome {
            Outcome::Continue => "kept-continue",
            Outcome::Respond(_) => "kept-respond",
        };
        log_outcome(forward, link, trace, label);
        return Ok(outcome);
    }
    ex.recording = Some(memo.recording());
    let result = call(forward, link, ex, Phase::Request, trace, lap).await;
    if let (Some(recording), Ok(outcome)) = (ex.recording.take(), &result) {
        memo.keep(key, recording, outcome);
    }
    result
}

/// One hook call, timed and counted. `lap` started when the call did: at
/// the start of the phase, or when the previous call ended.
async fn call<'s>(
    forward: &Forward<'s, '_>,
    link: &ChainLink,
    ex: &mut Box<Exchange>,
    phase: Phase,
    trace: &mut Trace<'s>,
    lap: &mut Lap,
) -> Result<Outcome, Fault> {
    // The call's deadline counts from the lap's start.
    let started = lap.last().into_std();
    let result = match phase {
        // Boxed: an async call's future (instantiation, the guest's
        // suspended stack) is large, and only plugins with outbound I/O
        // make one. Its waits on I/O may put its deadline off by the
        // route's timeout.
        _ if link.is_async() => {
            let request_phase = matches!(phase, Phase::Request);
            Box::pin(link.call_async(ex, request_phase, started, forward.route.timeout)).await
        }
        Phase::Request => link.on_request(ex, started),
        Phase::Response => link.on_response(ex, started),
    };
    link.series.timers[phase as usize].observe(lap.lap().as_secs_f64());
    let outcome = match &result {
        Ok(Outcome::Continue) => "continue",
        Ok(Outcome::Respond(_)) => "respond",
        Err(f) => f.kind.as_str(),
    };
    log_outcome(forward, link, trace, outcome);
    result
}

/// Corrects the outcome the access log line has for the last plugin called
/// (a reply found invalid after the call).
fn relabel_last(forward: &Forward<'_, '_>, trace: &mut Trace<'_>, outcome: &'static str) {
    if forward.snapshot.access_log.is_some()
        && let Some(last) = trace.plugins.last_mut()
    {
        last.1 = outcome;
    }
}

/// Notes a plugin's outcome for the access log line (only when it is on).
fn log_outcome<'s>(forward: &Forward<'s, '_>, link: &ChainLink, trace: &mut Trace<'s>, outcome: &'static str) {
    if forward.snapshot.access_log.is_some() {
        trace.plugins.push((link.plugin.name.clone(), outcome));
    }
}

/// The response as it goes to the client. A buffered body sets the length,
/// except on an answer that has no body — a 204, a 304, or a `HEAD`'s
/// empty one — whose length, if any, is that of the body it describes
/// (RFC 9110 §8.6: a 304 or `HEAD` answer's `Content-Length: 0` says the
/// resource is empty). The servers send no body on these.
fn into_response(parts: http::response::Parts, body: RespBody, head: bool) -> Box<Response<Body>> {
    match body {
        RespBody::Stream(s) => Box::new(Response::from_parts(parts, s)),
        RespBody::Bytes(b) => {
            let mut parts = parts;
            let status = parts.status;
            if super::bodiless(false, status) || (head && b.is_empty()) {
                parts.headers.remove(header::TRANSFER_ENCODING);
            } else {
                fix_length(&mut parts.headers, Some(b.len()));
            }
            Box::new(Response::from_parts(parts, Body::full(b)))
        }
    }
}

/// [`plugin_fault`] for link `i`'s request hook. Failed open, the link is
/// out of the response phase too, and of its fixed request edits only the
/// removals stay: they scrub what a client sent (jwt's removal of client
/// copies of the claim headers it sets), which a failure must not let
/// through to the upstream.
fn request_fault(
    forward: &Forward<'_, '_>,
    link: &ChainLink,
    i: usize,
    ex: &mut Exchange,
    undo: Option<Box<Undo>>,
    fault: Fault,
) -> Result<(), ProxyError> {
    plugin_fault(forward, link, ex, undo, fault)?;
    for (name, edit) in &link.fixed.request {
        if matches!(edit, HeaderEdit::Remove) {
            ex.apply_request_edit(name.clone(), HeaderEdit::Remove);
        }
    }
    ex.skipped.push(i);
    Ok(())
}

/// Counts and logs a plugin failure and applies the route's choice: with
/// fail-open, what the plugin changed is put back to `undo` (taken before
/// its call) and the chain goes on.
fn plugin_fault(
    forward: &Forward<'_, '_>,
    link: &ChainLink,
    ex: &mut Exchange,
    undo: Option<Box<Undo>>,
    fault: Fault,
) -> Result<(), ProxyError> {
    let (route, request_id) = (forward.route, forward.request_id);
    forward.snapshot.metrics.plugin_failure(&link.plugin.name, fault.kind);
    let open = route.on_plugin_error == OnPluginError::FailOpen;
    if let Some(n) = log_budget::PLUGIN_FAILURES.take() {
        tracing::warn!(
            plugin = &*link.plugin.name,
            route = &*route.name,
            key = link.key,
            kind = fault.kind.as_str(),
            request_id = request_id.to_str().unwrap_or("-"),
            detail = fault.detail,
            dropped = log_budget::dropped(n),
            "plugin failed; {}",
            if open { "skipping it (fail-open)" } else { "failing the request (fail-closed)" }
        );
    }
    if open {
        if let Some(undo) = undo {
            ex.undo(undo);
        }
        Ok(())
    } else {
        Err(ProxyError::Plugin { plugin: link.plugin.name.clone(), kind: fault.kind, detail: fault.detail })
    }
}

/// A plugin's reply as response parts, refusing what is not valid HTTP (a
/// [`FaultKind::Reply`]).
fn reply_parts(link: &ChainLink, reply: Reply) -> Result<(http::response::Parts, Bytes), Fault> {
    let invalid = |detail| Fault { kind: FaultKind::Reply, detail };
    let status = exchange::status(reply.status)
        .map_err(|_| invalid(format!("reply status {} is not a final status (200..=599)", reply.status)))?;
    // As many as an edit may leave (a header map panics past ~24 000).
    if reply.headers.len() > exchange::MAX_EDITED_HEADERS {
        let n = reply.headers.len();
        return Err(invalid(format!("a reply with {n} headers, more than {}", exchange::MAX_EDITED_HEADERS)));
    }
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    let mut dropped = None;
    for (name, value) in reply.headers {
        match exchange::editable_name(&name).and_then(|n| Ok((exchange::header_value(&n, value)?, n))) {
            Ok((v, n)) => {
                parts.headers.append(n, v);
            }
            Err(_) => match &mut dropped {
                Some((_, n)) => *n += 1,
                None => dropped = Some((name, 1)),
            },
        }
    }
    // One line for all of them: a reply may carry a thousand.
    if let Some((first, n)) = dropped {
        tracing::warn!(
            plugin = &*link.plugin.name,
            header = %crate::plugin::host_api::for_log(&first),
            dropped = n,
            "dropped invalid or gateway-managed headers from a plugin reply"
        );
    }
    Ok((parts, Bytes::from(reply.body)))
}
