//! Active health checks: every `interval`, a `GET path` to each endpoint; an
//! endpoint turns unhealthy after `unhealthy_threshold` failed checks in a
//! row and healthy again after `healthy_threshold` good ones. Runs on the
//! control runtime (with one worker, that worker's runtime: see
//! `control.rs`), never in a request's task, and stops when its
//! upstream is dropped or replaced by a reload, checks in flight too.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, header};
use tokio::sync::watch;

use super::EndpointSet;
use super::pool::Pools;
use crate::config::HealthCheck;
use crate::proxy::body::Body;
use crate::telemetry::Metrics;

pub(super) async fn run(
    upstream: Arc<str>,
    check: HealthCheck,
    set: Arc<ArcSwap<EndpointSet>>,
    pools: Arc<Pools>,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<()>,
) {
    // The first round at a random point of the first interval: a gateway
    // starting, or reloading, does not check every upstream at once (as
    // HAProxy spreads its first checks).
    let first = check.interval.mul_f64(fastrand::f64());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // The upstream was dropped (reload or shutdown).
            _ = stopped.changed() => return,
        }
        let endpoints = set.load().endpoints.clone();
        let probes = endpoints.iter().map(|ep| {
            let (pools, check) = (&pools, &check);
            async move {
                let ok = probe(pools, &ep.address, check).await;
                (ep, ok)
            }
        });
        let results = tokio::select! {
            r = futures::future::join_all(probes) => r,
            // Not recorded: the endpoints may be gone.
            _ = stopped.changed() => return,
        };
        for (ep, ok) in results {
            if let Some(healthy) = ep.record_check(ok, check.healthy_threshold, check.unhealthy_threshold) {
                if healthy {
                    tracing::info!(
                        upstream = &*upstream,
                        endpoint = &*ep.address,
                        "endpoint healthy again (active check)"
                    );
                } else {
                    tracing::warn!(
                        upstream = &*upstream,
                        endpoint = &*ep.address,
                        path = check.path,
                        "endpoint unhealthy (active check)"
                    );
                }
                metrics.endpoint_health(&ep.series, &upstream, &ep.address, healthy);
            }
        }
    }
}

/// One check: the status must be an expected one, within the timeout.
async fn probe(pools: &Pools, address: &Arc<str>, check: &HealthCheck) -> bool {
    let now = tokio::time::Instant::now();
    let deadline = now + check.timeout;
    let attempt = async {
        let conn = pools.checkout(address, now, deadline).await.ok()?;
        let mut req = Request::new(Body::Empty);
        let authority = check.host.clone().unwrap_or_else(|| pools.authority_for(address));
        if pools.http2() {
            let scheme = if pools.tls() { "https" } else { "http" };
            *req.uri_mut() = format!("{scheme}://{authority}{}", check.path).parse().ok()?;
            *req.version_mut() = http::Version::HTTP_2;
        } else {
            *req.uri_mut() = check.path.parse().ok()?;
            req.headers_mut().insert(header::HOST, authority.parse().ok()?);
        }
        req.headers_mut().insert(header::USER_AGENT, http::HeaderValue::from_static("wasmgate-health-check"));
        // A kept connection the upstream closed as the check went out (its
        // idle timeout racing the interval), or an HTTP/2 stream it turned
        // away unprocessed, says nothing of its health: the check goes
        // again, as a request does.
        let sent = conn.send(Box::new(req), None, deadline).await;
        let (resp, _) = pools.again_if_unseen(address, None, deadline, sent).await.ok()?;
        let status = resp.status().as_u16();
        // Read the body so the connection goes back to the pool.
        let _ = crate::proxy::body::collect(resp.into_body(), 64 * 1024).await;
        Some(check.healthy_status(status))
    };
    matches!(tokio::time::timeout_at(deadline, attempt).await, Ok(Some(true)))
}
