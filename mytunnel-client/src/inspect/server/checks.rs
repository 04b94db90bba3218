//! What every request to the inspector passes first: its `Host`, and on a changing
//! request its `Origin` and the inspector's own header; refused with a 403 otherwise.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::{error, Served};

/// The header a changing request must carry (`1`): the page sends it, a form cannot.
pub(super) const INSPECTOR_HEADER: &str = "x-mytunnel-inspector";

/// Why a request is refused before any handler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No `Host`, or one that is not the inspector's.
    Host,
    /// An `Origin` that is not the page's own, on a changing request.
    Origin,
    /// A changing request without `X-Mytunnel-Inspector: 1`.
    MissingHeader,
}

impl Refusal {
    fn response(self) -> Response {
        match self {
            Refusal::Host => error(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                "the inspector answers only to its own address (Host header refused)",
            ),
            Refusal::Origin => error(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "only the inspector's own page may change anything (Origin refused)",
            ),
            Refusal::MissingHeader => error(
                StatusCode::FORBIDDEN,
                "header_required",
                "a changing request needs the header X-Mytunnel-Inspector: 1",
            ),
        }
    }
}

/// Checks `Host` on every request, and `Origin` and the inspector header on changing ones.
pub(super) fn refusal(local: SocketAddr, method: &Method, headers: &HeaderMap) -> Option<Refusal> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|host| host_allowed(local, host));
    let Some(host) = host else {
        return Some(Refusal::Host);
    };
    if matches!(*method, Method::GET | Method::HEAD) {
        return None;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = format!("http://{host}");
        let same = origin
            .to_str()
            .is_ok_and(|origin| origin.eq_ignore_ascii_case(&own));
        if !same {
            return Some(Refusal::Origin);
        }
    }
    if headers.get(INSPECTOR_HEADER).map(HeaderValue::as_bytes) != Some(b"1") {
        return Some(Refusal::MissingHeader);
    }
    None
}

/// Whether `host` (a `Host` header) names the inspector listening on `local`: its own
/// address or a loopback name, with its port (80 when none is given). When it listens on
/// every address (`0.0.0.0`, `[::]`), any IP address with its port: an address is not a
/// name, so it cannot have been rebound.
pub(super) fn host_allowed(local: SocketAddr, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((name, port)) if !port.ends_with(']') => match port.parse::<u16>() {
            Ok(port) => (name, port),
            Err(_) => return false,
        },
        _ => (host.as_str(), 80),
    };
    if port != local.port() {
        return false;
    }
    let own = match local {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    };
    if matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name == own {
        return true;
    }
    local.ip().is_unspecified()
        && (name.parse::<std::net::Ipv4Addr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok()))
}

/// Refuses what [`refusal`] refuses; marks every answer as not to be cached, sniffed or
/// framed.
pub(super) async fn guard(State(state): State<Served>, request: Request, next: Next) -> Response {
    let mut response = match refusal(state.local_addr, request.method(), request.headers()) {
        Some(refused) => refused.response(),
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
