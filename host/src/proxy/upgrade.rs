//! Protocol upgrades (WebSocket) passed through: the `Upgrade` request goes
//! to the upstream with its upgrade headers intact; when the upstream agrees
//! (101), the client's and the upstream's connections are joined and bytes
//! are copied both ways until either side closes.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::body::Body;
use super::error::ProxyError;
use super::{Forward, Trace};
use crate::upstream::h1::Upgraded;

/// `Connection: upgrade` with an `Upgrade` header.
pub(super) fn requested(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE) && super::headers::connection_has(h, b"upgrade")
}

pub(super) async fn proxy(
    forward: &Forward<'_>,
    mut parts: http::request::Parts,
    trace: &mut Trace,
) -> Result<Response<Body>, ProxyError> {
    let Some(client) = parts.extensions.remove::<OnUpgrade>() else {
        return Err(ProxyError::ClientBody("this connection cannot be upgraded".into()));
    };
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    let mut req = Request::from_parts(forward.head(parts), Body::Empty);
    if let Some(p) = &protocol {
        req.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        req.headers_mut().insert(header::UPGRADE, p.clone());
    }
    let mut fwd = forward.send_request(req, trace).await?;
    if fwd.response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(fwd.response);
    }
    let Some((mut upstream, early)) = fwd.response.extensions_mut().remove::<Upgraded>().and_then(|u| u.take()) else {
        return Err(ProxyError::Internal("upstream switched protocols without an upgradable connection"));
    };
    tokio::spawn(async move {
        let client = match client.await {
            Ok(c) => c,
            Err(e) => return tracing::debug!("upgrade did not complete: {e}"),
        };
        let mut client = TokioIo::new(client);
        // What the upstream sent right behind its 101 goes first.
        if !early.is_empty()
            && let Err(e) = client.write_all(&early).await
        {
            return tracing::debug!("upgraded connection ended: {e}");
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!("upgraded connection ended: {e}");
        }
    });
    let h = fwd.response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(p) = protocol {
        h.insert(header::UPGRADE, p);
    }
    Ok(fwd.response)
}
