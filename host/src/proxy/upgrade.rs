//! Protocol upgrades (WebSocket) passed through: the `Upgrade` request goes
//! to the upstream with its upgrade headers intact; when the upstream agrees
//! (101), the client's and the upstream's connections are joined and bytes
//! are copied both ways until either side closes.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio::io::AsyncWriteExt;

use super::body::Body;
use super::error::ProxyError;
use super::{Forward, Present, Trace};
use crate::server::h1::ClientUpgrade;
use crate::upstream::h1::Upgraded;

/// `Connection: upgrade` with an `Upgrade` header.
fn requested(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE) && super::headers::ConnectionTokens::of(h).upgrade
}

/// Whether a request, whose head may have the fields `present` tells of,
/// asks for an upgrade its connection can make (its server said so: an
/// HTTP/1.1 request without a body). Plugins cannot edit `Connection` or
/// `Upgrade`: on a plugin route it is the client's ask as it came. One its
/// connection cannot make is forwarded as a plain request, without its
/// `Upgrade` (RFC 9110 §7.8 lets the upstream ignore it anyway).
#[inline]
pub(super) fn asked<B>(req: &Request<B>, present: Present) -> bool {
    present.may_have(Present::HOP) && requested(req.headers()) && req.extensions().get::<ClientUpgrade>().is_some()
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
    let forwarding = forward.head(&mut req, present);
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
    let Some((mut upstream, early)) = response.extensions_mut().remove::<Upgraded>().and_then(|u| u.take()) else {
        return Err(ProxyError::Internal("upstream switched protocols without an upgradable connection"));
    };
    tokio::spawn(async move {
        // `_tunnel` keeps a shutdown waiting until the tunnel closes.
        let Ok((mut client, sent, _tunnel)) = client.await else {
            return tracing::debug!("upgrade did not complete: the client's connection ended first");
        };
        // What either side sent right behind its head goes first.
        if let Err(e) = pass_early(&mut client, &early, &mut upstream, &sent).await {
            return tracing::debug!("upgraded connection ended: {e}");
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!("upgraded connection ended: {e}");
        }
    });
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(p) = protocol {
        h.insert(header::UPGRADE, p);
    }
    Ok(response)
}

async fn pass_early(
    client: &mut Box<dyn crate::upstream::h1::Io>,
    to_client: &[u8],
    upstream: &mut Box<dyn crate::upstream::h1::Io>,
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
