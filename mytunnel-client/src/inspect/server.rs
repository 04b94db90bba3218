//! The local inspector: a web page and a small JSON API over an [`ExchangeLog`], with
//! live updates (server-sent events) and replay. What it refuses, and why, is on
//! [`Inspector`].

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::ExchangeLog;

mod api;
mod checks;
mod events;
mod page;

use api::{detail, info, list, replay};
use checks::guard;
use events::events;
use page::page;

/// Event streams served at once; one more is refused (503).
const MAX_EVENT_STREAMS: usize = 32;

/// Replays running at once; one more is refused (429).
const MAX_REPLAYS: usize = 4;

/// How long [`Inspector::close`] lets open requests finish before it stops them.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A local web page showing the exchanges of an [`ExchangeLog`], serving on a task of its
/// own from [`bind`](Inspector::bind) until [`close`](Inspector::close) or drop.
///
/// `GET /` is the page (one file, nothing loaded from elsewhere). Its data is a JSON API
/// on the same address: `GET /api/exchanges` (every exchange kept, oldest first, as
/// summaries), `GET /api/exchanges/{id}` (one whole: headers, bodies as UTF-8 text or
/// base64), `GET /api/events` (server-sent events: `exchange` with a summary each time one
/// is added or changes, `reload` when the stream fell behind), `GET /api/info` (address
/// and limits) and `POST /api/exchanges/{id}/replay` ([`ExchangeLog::replay`]; answers
/// `{"exchange": <new id>}`). Errors are `{"code": "not_found", "message": "…"}`.
///
/// The page holds what visitors sent (webhook bodies, tokens in headers) and replay makes
/// the app receive requests, so every request is checked first, and refused with a 403
/// and a JSON code:
///
/// - its `Host` must be the inspector's own address, or `localhost`, `127.0.0.1` or
///   `[::1]` with its port (`host_not_allowed`): a web page whose name was rebound to
///   this machine's address (DNS rebinding) sends its own name;
/// - a `POST` must carry `X-Mytunnel-Inspector: 1` (`header_required`), which the page
///   sends and an HTML form of another site cannot, and an `Origin`, when it has one,
///   that is the page's own (`origin_not_allowed`).
///
/// The page runs under a content security policy allowing only its own script (a nonce
/// per response) and shows captured text with `textContent` only: a request holding
/// markup is displayed, never run. Memory is the log's: at most 32 event streams and 4
/// replays run at once.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use mytunnel_client::inspect::{ExchangeLimits, ExchangeLog, Inspector};
///
/// let log = ExchangeLog::new(ExchangeLimits::DEFAULT);
/// let inspector = Inspector::bind(Inspector::DEFAULT_ADDR, log.clone())?;
/// println!("inspector: {}", inspector.url());
/// // … give `log` to the tunnels …
/// inspector.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Inspector {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Inspector {
    /// `127.0.0.1:4040`: this machine only.
    pub const DEFAULT_ADDR: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4040));

    /// Listens on `addr` now (port 0: one the system picks) and serves `log` on a task
    /// of the current tokio runtime. Fails when the address cannot be bound, or when
    /// called outside a tokio runtime.
    pub fn bind(addr: SocketAddr, log: ExchangeLog) -> Result<Inspector, io::Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("the inspector runs on a tokio runtime: {e}")))?;
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        listener.set_nonblocking(true)?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let local_addr = listener.local_addr()?;
        if !local_addr.ip().is_loopback() {
            tracing::warn!(
                "the inspector listens on {local_addr}, not on loopback: whoever reaches it sees the traffic and can replay it"
            );
        }
        let (shutdown, stopping) = watch::channel(false);
        let state = Served {
            log,
            local_addr,
            stopping: stopping.clone(),
            streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
            replays: Arc::new(Semaphore::new(MAX_REPLAYS)),
        };
        let app = router(state);
        let task = runtime.spawn(async move {
            let mut stopping = stopping;
            let stopped = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!("the inspector stopped: {e}");
            }
        });
        Ok(Inspector {
            local_addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The address it listens on (with the port the system picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The page's address: `http://127.0.0.1:4040/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local_addr)
    }

    /// Stops listening, ends the event streams, lets requests still running finish (at
    /// most 5 s), and returns once it has stopped.
    pub async fn close(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl Drop for Inspector {
    /// Stops accepting at once; open connections and event streams end on their own.
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
struct Served {
    log: ExchangeLog,
    local_addr: SocketAddr,
    stopping: watch::Receiver<bool>,
    streams: Arc<Semaphore>,
    replays: Arc<Semaphore>,
}

fn router(state: Served) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/info", get(info))
        .route("/api/exchanges", get(list))
        .route("/api/exchanges/{id}", get(detail))
        .route("/api/exchanges/{id}/replay", post(replay))
        .route("/api/events", get(events))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// An error answer: `{ "code": "not_found", "message": "…" }`.
#[derive(Debug, Serialize)]
struct ApiError {
    code: &'static str,
    message: String,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    let body = ApiError {
        code,
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such page")
}

#[cfg(test)]
mod tests;
