//! The local inspector: a web page and a small JSON API over an [`ExchangeLog`], with
//! live updates (server-sent events) and replay. What it refuses, and why, is on
//! [`Inspector`].

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::{CapturedBody, Exchange, ExchangeId, ExchangeLog, ExchangeState, Header, ReplayError};

/// The page: one file, its style and script inline; `__NONCE__` is replaced per response.
const PAGE: &str = include_str!("inspector.html");

/// The header a changing request must carry (`1`): the page sends it, a form cannot.
const INSPECTOR_HEADER: &str = "x-mytunnel-inspector";

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

/// Why a request is refused before any handler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
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
fn refusal(local: SocketAddr, method: &Method, headers: &HeaderMap) -> Option<Refusal> {
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
fn host_allowed(local: SocketAddr, host: &str) -> bool {
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
async fn guard(State(state): State<Served>, request: Request, next: Next) -> Response {
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

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such page")
}

/// The page, its inline style and script allowed by a nonce of this response only.
async fn page() -> Response {
    let nonce = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 18]>());
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    let html = PAGE.replace("__NONCE__", &nonce);
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// `GET /api/info`: where it listens and what the log keeps.
#[derive(Debug, Serialize)]
struct Info {
    listen: String,
    loopback: bool,
    max_exchanges: usize,
    max_body_bytes: usize,
    max_head_bytes: usize,
}

async fn info(State(state): State<Served>) -> Json<Info> {
    let limits = state.log.limits();
    Json(Info {
        listen: state.local_addr.to_string(),
        loopback: state.local_addr.ip().is_loopback(),
        max_exchanges: limits.max_exchanges,
        max_body_bytes: limits.max_body_bytes,
        max_head_bytes: limits.max_head_bytes,
    })
}

/// One exchange in the list, and the first fields of its detail.
#[derive(Debug, Serialize)]
struct Summary {
    id: u64,
    host: String,
    /// RFC 3339, UTC, milliseconds: `2026-12-06T03:27:22.123Z`.
    started_at: String,
    /// The same, in milliseconds since the Unix epoch.
    started_at_ms: u64,
    method: String,
    target: String,
    status: Option<u16>,
    duration_ms: Option<f64>,
    request_bytes: u64,
    response_bytes: u64,
    /// `open`, `complete`, `upgraded`, `failed`.
    state: &'static str,
    /// Why it failed, when it did.
    error: Option<String>,
    replay_of: Option<u64>,
}

fn summary(exchange: &Exchange) -> Summary {
    let (state, error) = match &exchange.state {
        ExchangeState::Open => ("open", None),
        ExchangeState::Complete => ("complete", None),
        ExchangeState::Upgraded => ("upgraded", None),
        ExchangeState::Failed { reason } => ("failed", Some(reason.clone())),
    };
    let since_epoch = exchange
        .started_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Summary {
        id: exchange.id.0,
        host: exchange.host.clone(),
        started_at: humantime::format_rfc3339_millis(exchange.started_at).to_string(),
        started_at_ms: u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
        method: exchange.request.method.clone(),
        target: exchange.request.target.clone(),
        status: exchange.response.as_ref().map(|r| r.status),
        duration_ms: exchange.duration.map(|d| d.as_secs_f64() * 1000.0),
        request_bytes: exchange.request.body.size,
        response_bytes: exchange.response.as_ref().map_or(0, |r| r.body.size),
        state,
        error,
        replay_of: exchange.replay_of.map(|id| id.0),
    }
}

/// `GET /api/exchanges`: every exchange kept, oldest first.
async fn list(State(state): State<Served>) -> Json<Vec<Summary>> {
    Json(state.log.recent_heads().iter().map(summary).collect())
}

/// One exchange whole.
#[derive(Debug, Serialize)]
struct Detail {
    #[serde(flatten)]
    summary: Summary,
    request: RequestDetail,
    response: Option<ResponseDetail>,
}

#[derive(Debug, Serialize)]
struct RequestDetail {
    method: String,
    target: String,
    version: String,
    headers: Vec<HeaderDetail>,
    /// Bytes of the target and headers the log did not keep.
    head_bytes_left_out: u64,
    body: BodyDetail,
}

#[derive(Debug, Serialize)]
struct ResponseDetail {
    status: u16,
    headers: Vec<HeaderDetail>,
    /// Bytes of headers the log did not keep.
    head_bytes_left_out: u64,
    body: BodyDetail,
}

#[derive(Debug, Serialize)]
struct HeaderDetail {
    name: String,
    value: String,
}

/// A body: its kept bytes as text when they are UTF-8, else in base64.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct BodyDetail {
    /// `utf8` or `base64`.
    encoding: &'static str,
    data: String,
    /// Bytes the body had.
    size: u64,
    /// Bytes shown in `data` (decoded).
    shown: u64,
    /// Whether `shown` is less than `size`.
    truncated: bool,
}

fn headers_detail(headers: &[Header]) -> Vec<HeaderDetail> {
    headers
        .iter()
        .map(|h| HeaderDetail {
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect()
}

fn body_detail(body: &CapturedBody) -> BodyDetail {
    let bytes = body.bytes.as_slice();
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => Some(text),
        // A body cut off by the log may end inside a character: show the text before it.
        Err(e) if body.truncated() && e.error_len().is_none() => bytes
            .get(..e.valid_up_to())
            .and_then(|b| std::str::from_utf8(b).ok()),
        Err(_) => None,
    };
    let (encoding, data, shown) = match text {
        Some(text) => ("utf8", text.to_owned(), text.len()),
        None => (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(bytes),
            bytes.len(),
        ),
    };
    let shown = shown as u64;
    BodyDetail {
        encoding,
        data,
        size: body.size,
        shown,
        truncated: shown < body.size,
    }
}

fn detail_of(exchange: &Exchange) -> Detail {
    Detail {
        summary: summary(exchange),
        request: RequestDetail {
            method: exchange.request.method.clone(),
            target: exchange.request.target.clone(),
            version: exchange.request.version.clone(),
            headers: headers_detail(&exchange.request.headers),
            head_bytes_left_out: exchange.request.head_bytes_left_out,
            body: body_detail(&exchange.request.body),
        },
        response: exchange.response.as_ref().map(|r| ResponseDetail {
            status: r.status,
            headers: headers_detail(&r.headers),
            head_bytes_left_out: r.head_bytes_left_out,
            body: body_detail(&r.body),
        }),
    }
}

fn exchange_id(raw: &str) -> Option<ExchangeId> {
    raw.parse().ok().map(ExchangeId)
}

fn no_exchange(raw: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("exchange {raw} is not in the log (it keeps the most recent ones only)"),
    )
}

/// `GET /api/exchanges/{id}`.
async fn detail(State(state): State<Served>, Path(raw): Path<String>) -> Response {
    match exchange_id(&raw).and_then(|id| state.log.get(id)) {
        Some(exchange) => Json(detail_of(&exchange)).into_response(),
        None => no_exchange(&raw),
    }
}

/// `POST /api/exchanges/{id}/replay`: `{ "exchange": <new id> }` once the replay ended.
#[derive(Debug, Serialize)]
struct Replayed {
    exchange: u64,
}

async fn replay(State(state): State<Served>, Path(raw): Path<String>) -> Response {
    let Some(id) = exchange_id(&raw) else {
        return no_exchange(&raw);
    };
    let Ok(permit) = Arc::clone(&state.replays).try_acquire_owned() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            format!("{MAX_REPLAYS} replays are running; try again when one has ended"),
        );
    };
    // On a task of its own: a page that goes away mid-replay leaves it to end and be
    // recorded, not cut off and open for ever.
    let log = state.log.clone();
    let replayed = tokio::spawn(async move {
        let _permit: OwnedSemaphorePermit = permit;
        log.replay(id).await
    })
    .await;
    match replayed {
        Ok(Ok(new)) => Json(Replayed { exchange: new.0 }).into_response(),
        Ok(Err(e)) => {
            let status = match e {
                ReplayError::NotFound(_) => StatusCode::NOT_FOUND,
                ReplayError::BodyNotKept { .. }
                | ReplayError::HeadNotKept { .. }
                | ReplayError::Upgrade(_) => StatusCode::CONFLICT,
            };
            error(status, e.code(), e.to_string())
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the replay stopped: {e}"),
        ),
    }
}

/// What an event stream reads from.
struct Feed {
    log: ExchangeLog,
    changes: broadcast::Receiver<ExchangeId>,
    stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

/// `GET /api/events`: an `exchange` event (data: the summary, as in the list) each time
/// an exchange is added or changes; `reload` when this stream fell behind and missed
/// some (read the list again). Ends when the inspector closes.
async fn events(State(state): State<Served>) -> Response {
    let Ok(permit) = Arc::clone(&state.streams).try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("{MAX_EVENT_STREAMS} event streams are open; close a page"),
        );
    };
    let start = Feed {
        log: state.log.clone(),
        changes: state.log.changes(),
        stopping: state.stopping.clone(),
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(start, |mut st| async move {
        loop {
            if *st.stopping.borrow() {
                return None;
            }
            let next = tokio::select! {
                stop = st.stopping.changed() => {
                    if stop.is_err() {
                        return None;
                    }
                    continue;
                }
                next = st.changes.recv() => next,
            };
            let event = match next {
                Ok(id) => match st.log.head(id) {
                    Some(exchange) => Event::default()
                        .event("exchange")
                        .json_data(summary(&exchange)),
                    // Dropped already: the page trims its own rows.
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    Ok(Event::default().event("reload").data("missed"))
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if let Ok(event) = event {
                return Some((Ok::<Event, Infallible>(event), st));
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests;
