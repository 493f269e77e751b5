//! Protocol upgrades (WebSocket) passed through: the `Upgrade` request goes
//! to the upstream with its upgrade headers intact; when the upstream agrees
//! (101), the client's and the upstream's connections are joined and bytes
//! are copied both ways until either side closes, or no byte has passed
//! either way for `server.tunnel_idle_timeout`. The tunnel holds the
//! upstream's bulkhead place and counts as a request in flight to its
//! endpoint for as long as it is open.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::body::Body;
use super::error::ProxyError;
use super::{Forward, Present, Trace};
use crate::config::Upgrades;
use crate::server::h1::ClientUpgrade;
use crate::upstream::h1::Upgraded;

/// `Connection: upgrade` with an `Upgrade` header whose every protocol the
/// route `allows`, and none `h2c`: an HTTP/2 connection made by upgrade
/// would be a tunnel whose requests no route or plugin sees (h2c
/// smuggling). Any other goes on as a plain request, without its `Upgrade`
/// (RFC 9110 §7.8 lets a server ignore it), as nginx and Envoy send it.
fn requested(h: &HeaderMap, allows: &Upgrades) -> bool {
    h.get(header::UPGRADE).is_some_and(|offer| {
        let mut any = false;
        protocols(offer).all(|p| {
            any = true;
            let name = Upgrades::name(p);
            !name.eq_ignore_ascii_case(b"h2c") && allows.allow(name)
        }) && any
    }) && super::headers::ConnectionTokens::of(h).upgrade
}

/// The protocols an `Upgrade` field lists (`websocket`, `TLS/1.2`).
fn protocols(field: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    field.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|p| !p.is_empty())
}

/// Whether a request, whose head may have the fields `present` tells of,
/// asks for an upgrade its route `allows` and its connection can make (its
/// server said so: an HTTP/1.1 request without a body). Plugins cannot edit
/// `Connection` or `Upgrade`: on a plugin route it is the client's ask as
/// it came. Any other is forwarded as a plain request, without its
/// `Upgrade` (RFC 9110 §7.8 lets the upstream ignore it anyway).
#[inline]
pub(super) fn asked<B>(req: &Request<B>, present: Present, allows: &Upgrades) -> bool {
    present.may_have(Present::HOP)
        && requested(req.headers(), allows)
        && req.extensions().get::<ClientUpgrade>().is_some()
}

/// Proxies an upgrade request whose head may have the fields `present`
/// tells of (a hop-by-hop one, at least: `Connection`); `started` as for
/// [`Forward::send`].
pub(super) async fn proxy<'s>(
    forward: &Forward<'s, '_>,
    mut req: Box<Request<Body>>,
    present: Present,
    started: tokio::time::Instant,
    trace: &mut Trace<'s>,
) -> Result<Box<Response<Body>>, ProxyError> {
    let Some(client) = req.extensions_mut().remove::<ClientUpgrade>().and_then(|u| u.take()) else {
        return Err(ProxyError::ClientBody("this connection cannot be upgraded".into()));
    };
    let protocol = req.headers().get(header::UPGRADE).cloned();
    let forwarding = forward.head(&mut req, present, trace.client);
    // What follows the head on the connection is the upgraded protocol's.
    *req.body_mut() = Body::Empty;
    if let Some(p) = &protocol {
        req.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        req.headers_mut().insert(header::UPGRADE, p.clone());
    }
    let mut response = forward.send(req, &forwarding, started, trace).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(response);
    }
    // The upstream switched to one of the protocols the client offered
    // (RFC 9110 §7.8), and the client is told which.
    let to = response.headers_mut().remove(header::UPGRADE);
    let offered = |to: &HeaderValue| {
        let mut to = protocols(to);
        let (Some(to), None) = (to.next(), to.next()) else { return false };
        protocol.as_ref().is_some_and(|offer| protocols(offer).any(|p| p.eq_ignore_ascii_case(to)))
    };
    let Some(to) = to.filter(|to| offered(to)) else {
        return Err(ProxyError::UpstreamProtocol {
            upstream: trace.upstream.map(Into::into).unwrap_or_else(|| "-".into()),
            detail: "switched to a protocol the client did not offer".into(),
        });
    };
    let Some((upstream, early)) = response.extensions_mut().remove::<Upgraded>().and_then(|u| u.take()) else {
        return Err(ProxyError::Internal("upstream switched protocols without an upgradable connection"));
    };
    // The empty body holds the bulkhead's place and the endpoint's count of
    // requests in flight: they go with the tunnel (dropped with the 101's
    // head, a thousand tunnels counted as none).
    let held = std::mem::replace(response.body_mut(), Body::Empty);
    let idle = forward.snapshot.config.server.tunnel_idle_timeout;
    tokio::spawn(async move {
        // `_tunnel` keeps a shutdown waiting until the tunnel closes.
        let Ok((client, sent, _tunnel)) = client.await else {
            return tracing::debug!("upgrade did not complete: the client's connection ended first");
        };
        let activity = Activity::new();
        let (mut client, mut upstream) = (Watched(client, activity.clone()), Watched(upstream, activity.clone()));
        let tunnel = async {
            // What either side sent right behind its head goes first (under
            // the idle bound too: a peer that reads none of it held the
            // tunnel for ever).
            pass_early(&mut client, &early, &mut upstream, &sent).await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
        };
        tokio::select! {
            copied = tunnel => {
                if let Err(e) = copied {
                    tracing::debug!("upgraded connection ended: {e}");
                }
            }
            // A peer gone without a word (a phone off the network, a NAT
            // mapping expired) or one that stopped reading held both
            // connections for ever.
            () = activity.idle_for(idle) => tracing::debug!(?idle, "upgraded connection closed: idle"),
        }
        // The place is free before either side hears of the close.
        drop(held);
    });
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, to);
    Ok(response)
}

/// When a tunnel last moved a byte, either way.
#[derive(Clone)]
struct Activity {
    since: Instant,
    /// Milliseconds from `since`.
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self { since: Instant::now(), last: Arc::new(AtomicU64::new(0)) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Ends once no byte has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.last.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.since + Duration::from_millis(last) + idle).await;
            if self.last.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}

/// One side of a tunnel, noting each byte it moves in its [`Activity`].
struct Watched(Box<dyn crate::upstream::h1::Io>, Activity);

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.1.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.0).poll_write(cx, bytes);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.1.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

async fn pass_early(
    client: &mut Watched,
    to_client: &[u8],
    upstream: &mut Watched,
    to_upstream: &[u8],
) -> std::io::Result<()> {
    if !to_client.is_empty() {
        client.write_all(to_client).await?;
        client.flush().await?;
    }
    if !to_upstream.is_empty() {
        upstream.write_all(to_upstream).await?;
        upstream.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};

    use super::requested;
    use crate::config::Upgrades;

    fn asking(offer: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static(offer));
        h
    }

    #[test]
    fn an_upgrade_is_passed_when_the_route_allows_every_protocol_offered() {
        let websocket = Upgrades::Only(vec![b"websocket".to_vec().into_boxed_slice()]);
        let none = Upgrades::Only(Vec::new());
        for (offer, any, ws) in [
            ("websocket", true, true),
            ("WebSocket", true, true),
            ("websocket/13", true, true),
            ("foo", true, false),
            ("websocket, foo", true, false),
            ("websocket, h2c", false, false),
            ("h2c", false, false),
            ("H2C/2", false, false),
            ("", false, false),
            (" , ", false, false),
        ] {
            assert_eq!(requested(&asking(offer), &Upgrades::Any), any, "{offer} on any");
            assert_eq!(requested(&asking(offer), &websocket), ws, "{offer} on websocket");
            assert!(!requested(&asking(offer), &none), "{offer} on none");
        }
        let mut without_connection = asking("websocket");
        without_connection.remove(CONNECTION);
        assert!(!requested(&without_connection, &Upgrades::Any));
    }
}
