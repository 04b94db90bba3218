//! A small HTTP/1.1 server on a loopback address, for the answers `serve` gives to local
//! programs over TCP: Caddy's on-demand TLS `ask` ([`crate::tls_ask`]) and Prometheus'
//! scrapes ([`crate::metrics`]).
//!
//! Each request is answered by a handler from its method, path and query alone (no body
//! is read), with a text body (`text/plain` unless the handler names another type).
//! Bounds: a request head must arrive within [`LoopbackHttpLimits::head_within`]; at most
//! [`LoopbackHttpLimits::max_connections`] connections are served at once, further ones
//! wait in the listen queue; the handler's answer is awaited at most
//! [`LoopbackHttpLimits::answer_within`], after which the request gets `503` (and the
//! handler hears of it: [`LoopbackHandler::timed_out`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mytunnel_core::listen::LoopbackAddress;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The bounds of one loopback server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopbackHttpLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a connection has to deliver a request head.
    pub head_within: Duration,
    /// How long the handler may take to answer.
    pub answer_within: Duration,
}

impl Default for LoopbackHttpLimits {
    fn default() -> Self {
        LoopbackHttpLimits {
            max_connections: 64,
            head_within: Duration::from_secs(5),
            answer_within: Duration::from_secs(2),
        }
    }
}

/// What a handler sees of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopbackRequest {
    /// The method.
    pub method: Method,
    /// The path, e.g. `/ask`.
    pub path: String,
    /// The query without its `?`, e.g. `domain=x.example.com`; empty when there is none.
    pub query: String,
}

/// The content type of an answer unless its handler names another.
pub const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// A handler's answer: a status and a text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopbackAnswer {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: String,
    /// The body's `Content-Type`: [`PLAIN_TEXT`] unless set otherwise.
    pub content_type: &'static str,
}

impl LoopbackAnswer {
    /// An answer of `status` with `body`, as [`PLAIN_TEXT`].
    pub fn new(status: StatusCode, body: impl Into<String>) -> Self {
        LoopbackAnswer {
            status,
            body: body.into(),
            content_type: PLAIN_TEXT,
        }
    }

    /// The same answer, its body of type `content_type`.
    #[must_use]
    pub fn with_content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = content_type;
        self
    }
}

/// Answers requests on a loopback server.
pub trait LoopbackHandler: Send + Sync + 'static {
    /// The answer to `request`.
    fn answer(&self, request: LoopbackRequest) -> impl Future<Output = LoopbackAnswer> + Send;

    /// Called when an answer took longer than [`LoopbackHttpLimits::answer_within`] and
    /// the request got `503` instead (to count or log it). Does nothing by default.
    fn timed_out(&self) {}
}

/// Binds `address`.
pub async fn bind_loopback(address: LoopbackAddress) -> std::io::Result<TcpListener> {
    TcpListener::bind(address.socket_addr()).await
}

/// Serves `handler` on `listener` until `shutdown` resolves; connections still open then
/// are closed.
pub async fn serve_loopback_http<H: LoopbackHandler>(
    listener: TcpListener,
    handler: H,
    limits: LoopbackHttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, most likely: say so, and do not spin.
                    tracing::warn!(%error, "loopback HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Finished connections leave the set as new ones come.
        while connections.try_join_next().is_some() {}
        let handler = Arc::clone(&handler);
        connections.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let handler = Arc::clone(&handler);
                async move {
                    Ok::<_, Infallible>(respond(&*handler, request, limits.answer_within).await)
                }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.head_within)
                .max_buf_size(16 * 1024);
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        });
    }
    connections.shutdown().await;
}

async fn respond<H: LoopbackHandler>(
    handler: &H,
    request: Request<Incoming>,
    within: Duration,
) -> Response<Full<Bytes>> {
    let uri = request.uri();
    let asked = LoopbackRequest {
        method: request.method().clone(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
    };
    let answer = tokio::time::timeout(within, handler.answer(asked))
        .await
        .unwrap_or_else(|_| {
            handler.timed_out();
            LoopbackAnswer::new(StatusCode::SERVICE_UNAVAILABLE, "no answer in time\n")
        });
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() = answer.status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(answer.content_type),
    );
    response
}
