//! The tunnel's HTTP proxy: the forward ends here, and each HTTP exchange is passed on to
//! the app, reported as a [`TunnelEvent::Request`] and, when the tunnel has one, recorded
//! in its [`ExchangeLog`].
//!
//! It keeps the relay's contract (see `relay.rs`): closing it closes the listener and
//! every connection it carries — visitors' and the app's, upgraded ones too — and waits
//! until they are closed, so a tunnel's connections are all gone before its lease is
//! released.
//!
//! Each visitor connection (an SSH channel, in practice Caddy's upstream connection) is
//! served by hyper's HTTP/1.1 server, and its requests go to the app on one connection
//! of its own, opened at the first request and kept alive for the next ones. Bodies
//! stream both ways frame by frame; only the log's first bytes of each are copied, and
//! only when there is a log. A `101 Switching Protocols` (a WebSocket) hands both
//! connections over to a byte copy.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::{HeaderValue, CONTENT_TYPE, UPGRADE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::app_link::AppLink;
use crate::events::TunnelEvent;
use crate::inspect::{
    BodySide, CapturedBody, ExchangeId, ExchangeLog, ExchangeState, NewExchange, RecordedRequest,
    RequestSummary,
};

/// What a [`TunnelProxy`] proxies to and reports on.
#[derive(Debug, Clone)]
pub(super) struct ProxySettings {
    /// The app, and how to reach it.
    pub(super) app: Arc<AppLink>,
    /// The tunnel's public host, for the reports.
    pub(super) host: String,
    /// Where exchanges are recorded, if anywhere.
    pub(super) log: Option<ExchangeLog>,
    /// The tunnel's events: one [`TunnelEvent::Request`] per exchange.
    pub(super) events: broadcast::Sender<TunnelEvent>,
}

/// An HTTP proxy on `127.0.0.1:<ephemeral>` to the app. Dropping it aborts the listener
/// and every connection; [`TunnelProxy::close`] closes them and waits.
#[derive(Debug)]
pub(super) struct TunnelProxy {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TunnelProxy {
    /// Listens on an ephemeral loopback port for connections to `settings.upstream`.
    pub(super) async fn start(settings: ProxySettings) -> io::Result<TunnelProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (spawn_tx, spawn_rx) = mpsc::unbounded_channel();
        let body_cap = settings
            .log
            .as_ref()
            .map_or(0, |log| log.limits().max_body_bytes);
        let request_events = Arc::new(RequestEvents::new(settings.events.clone()));
        let shared = Arc::new(Shared {
            settings,
            body_cap,
            last_id: AtomicU64::new(0),
            request_events,
            spawn: spawn_tx,
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(proxy_connections(listener, shared, spawn_rx, stopped));
        Ok(TunnelProxy {
            port,
            stop: Some(stop),
            task,
        })
    }

    /// The port the forward connects to.
    pub(super) fn port(&self) -> u16 {
        self.port
    }

    /// Closes the listener and every connection, and waits until they are closed.
    pub(super) async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for TunnelProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A task that must end when the proxy closes: the byte copy of an upgraded connection
/// (run by the proxy's accept task), or a connection to the app (run by its visitor
/// connection's task).
type ConnectionTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What every connection of one proxy shares.
struct Shared {
    settings: ProxySettings,
    /// Bytes of each body copied into the log: 0 without one.
    body_cap: usize,
    /// The last exchange id given out, without a log (a log numbers its own).
    last_id: AtomicU64,
    /// Where each exchange's summary goes.
    request_events: Arc<RequestEvents>,
    /// To [`proxy_connections`], which runs each task with the connections.
    spawn: mpsc::UnboundedSender<ConnectionTask>,
}

impl Shared {
    /// Runs `task` until it ends or the proxy closes. After the close, it never runs.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let _ = self.spawn.send(Box::pin(task));
    }
}

/// Accepts until stopped, then ends every connection and waits for them; aborted (the
/// proxy dropped), it drops the set, which aborts every connection.
async fn proxy_connections(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut spawned: mpsc::UnboundedReceiver<ConnectionTask>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    let batches = send_request_events(Arc::clone(&shared.request_events));
    tokio::pin!(batches);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            () = &mut batches => {}
            accepted = listener.accept() => match accepted {
                Ok((inbound, _)) => {
                    connections.spawn(serve_inbound(inbound, Arc::clone(&shared)));
                }
                Err(e) => {
                    // Out of file descriptors, say: the next accept may work.
                    tracing::debug!(error = %e, "the proxy cannot accept");
                    tokio::task::yield_now().await;
                }
            },
            Some(task) = spawned.recv() => {
                connections.spawn(task);
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
    // The last requests' events, without waiting for a batch.
    shared.request_events.send_queued();
}

/// Serves one visitor connection with hyper's HTTP/1.1 server until it ends, and drives
/// its connections to the app in the same task: a request and its answer cross no task
/// boundary on their way through, and closing the proxy ends both.
async fn serve_inbound(inbound: TcpStream, shared: Arc<Shared>) {
    let _ = inbound.set_nodelay(true);
    let (drive, mut to_drive) = mpsc::unbounded_channel();
    let connection = Arc::new(InboundConnection {
        shared: Arc::clone(&shared),
        upstream: Mutex::new(None),
        drive,
    });
    let service =
        hyper::service::service_fn(move |request| forward(Arc::clone(&connection), request));
    let mut serving = Box::pin(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(inbound), service)
            .with_upgrades(),
    );
    let mut upstreams = FuturesUnordered::new();
    let served = loop {
        tokio::select! {
            Some(upstream) = to_drive.recv() => upstreams.push(upstream),
            Some(()) = upstreams.next(), if !upstreams.is_empty() => {}
            served = &mut serving => break served,
        }
    };
    // With the service gone, each connection to the app ends (an upgraded one once it
    // has handed its bytes over).
    drop(serving);
    while let Ok(upstream) = to_drive.try_recv() {
        upstreams.push(upstream);
    }
    while upstreams.next().await.is_some() {}
    match served {
        // hyper has answered it (400, 414 or 431) or closed the connection.
        Err(e) if e.is_parse() => {
            let exchange = ExchangeTrack::begin(&shared, None);
            exchange.finish(
                ExchangeState::Failed {
                    reason: format!("the request could not be read: {e}"),
                },
                None,
            );
        }
        Err(e) => tracing::debug!(error = %e, "a visitor connection ended"),
        Ok(()) => {}
    }
}

/// One visitor connection and its connection to the app.
struct InboundConnection {
    shared: Arc<Shared>,
    /// Its connection to the app, between requests; `None` before the first, while a
    /// request is on it, and after it failed. hyper serves one request at a time, so the
    /// lock is only ever taken, never waited for.
    upstream: Mutex<Option<SendRequest<RequestBody>>>,
    /// To [`serve_inbound`], which drives each connection to the app.
    drive: mpsc::UnboundedSender<ConnectionTask>,
}

impl InboundConnection {
    /// Sends `request` to the app on this connection's upstream connection (a new one if
    /// there is none, or the last one closed before the request went out); the response
    /// head, or why none came.
    async fn send(&self, request: Request<RequestBody>) -> Result<Response<Incoming>, String> {
        let mut request = request;
        let kept = self
            .upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut sender) = kept {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok(self.keep(sender, response)),
                    Err(mut e) => match e.take_message() {
                        // The app closed the idle connection as the request came: it
                        // never went out, so it goes on a new one.
                        Some(unsent) => request = unsent,
                        None => return Err(app_failed(e.error())),
                    },
                }
            }
        }
        let mut sender = self.connect().await?;
        match sender.try_send_request(request).await {
            Ok(response) => Ok(self.keep(sender, response)),
            Err(e) => Err(app_failed(e.error())),
        }
    }

    /// Keeps `sender` for the next request, unless the app switched protocols on it.
    fn keep(
        &self,
        sender: SendRequest<RequestBody>,
        response: Response<Incoming>,
    ) -> Response<Incoming> {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
        }
        response
    }

    /// A new connection to the app, driven by this visitor connection's task.
    async fn connect(&self) -> Result<SendRequest<RequestBody>, String> {
        let (sender, connection) = self.shared.settings.app.http1().await?;
        let _ = self.drive.send(Box::pin(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "a connection to the app ended");
            }
        }));
        Ok(sender)
    }

    /// Answers the visitor's `101` and joins both connections once hyper hands them over.
    fn switch_protocols(
        &self,
        exchange: &ExchangeTrack,
        inbound: Option<OnUpgrade>,
        mut response: Response<Incoming>,
    ) -> Response<ResponseBody> {
        let Some(inbound) = inbound else {
            return exchange.bad_gateway("the app switched protocols unasked".to_owned());
        };
        let outbound = hyper::upgrade::on(&mut response);
        exchange.response_head(&response);
        exchange.finish(ExchangeState::Upgraded, None);
        self.shared.spawn(async move {
            match tokio::join!(inbound, outbound) {
                (Ok(inbound), Ok(outbound)) => {
                    let (mut inbound, mut outbound) =
                        (TokioIo::new(inbound), TokioIo::new(outbound));
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                (inbound, outbound) => tracing::debug!(
                    visitor = ?inbound.err(),
                    app = ?outbound.err(),
                    "an upgrade did not happen"
                ),
            }
        });
        let (parts, _) = response.into_parts();
        Response::from_parts(parts, ResponseBody::Message(None))
    }
}

/// Why the app gave no response head, in words.
fn app_failed(error: &hyper::Error) -> String {
    if error.is_incomplete_message() || error.is_canceled() {
        "the app closed the connection before answering".to_owned()
    } else if error.is_parse() {
        format!("the app's answer is not HTTP/1.1: {error}")
    } else {
        format!("the app did not answer: {error}")
    }
}

/// One exchange: the request goes to the app, its response back to the visitor.
async fn forward(
    connection: Arc<InboundConnection>,
    mut request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let exchange = Arc::new(ExchangeTrack::begin(&connection.shared, Some(&request)));
    let inbound_upgrade = request
        .headers()
        .contains_key(UPGRADE)
        .then(|| hyper::upgrade::on(&mut request));
    let settings = &connection.shared.settings;
    settings.app.prepare(&settings.host, request.headers_mut());
    let request =
        request.map(|body| TappedBody::new(body, Arc::clone(&exchange), BodySide::Request));
    let response = match connection.send(request).await {
        Ok(response) => response,
        Err(reason) => return Ok(exchange.bad_gateway(reason)),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(connection.switch_protocols(&exchange, inbound_upgrade, response));
    }
    exchange.response_head(&response);
    Ok(response
        .map(|body| ResponseBody::Upstream(TappedBody::new(body, exchange, BodySide::Response))))
}

/// What the proxy knows of one exchange while it runs; reports it once, when it ends
/// (or, as a last resort, when the last part of it is dropped).
struct ExchangeTrack {
    shared: Arc<Shared>,
    id: ExchangeId,
    /// `None` for a request hyper could not read.
    request_line: Option<(Method, Uri)>,
    started: Instant,
    started_at: SystemTime,
    request_bytes: AtomicU64,
    /// The response's status; 0 before it came.
    status: AtomicU16,
    finished: AtomicBool,
}

impl ExchangeTrack {
    /// A new exchange, recorded as open when there is a log.
    fn begin(shared: &Arc<Shared>, request: Option<&Request<Incoming>>) -> ExchangeTrack {
        let started = Instant::now();
        let started_at = SystemTime::now();
        let id = match &shared.settings.log {
            Some(log) => log.begin_live(
                NewExchange {
                    host: shared.settings.host.clone(),
                    request: match request {
                        Some(request) => RecordedRequest {
                            method: request.method().as_str().to_owned(),
                            target: target_of(request.uri()),
                            version: format!("{:?}", request.version()),
                            headers: Vec::new(),
                            head_bytes_left_out: 0,
                            body: CapturedBody::default(),
                        },
                        None => RecordedRequest {
                            method: "-".to_owned(),
                            target: "-".to_owned(),
                            version: "-".to_owned(),
                            headers: Vec::new(),
                            head_bytes_left_out: 0,
                            body: CapturedBody::default(),
                        },
                    },
                    upstream: Arc::clone(&shared.settings.app),
                    replay_of: None,
                },
                started_at,
                request.map(Request::headers),
            ),
            None => ExchangeId(shared.last_id.fetch_add(1, Ordering::Relaxed) + 1),
        };
        ExchangeTrack {
            shared: Arc::clone(shared),
            id,
            request_line: request.map(|r| (r.method().clone(), r.uri().clone())),
            started,
            started_at,
            request_bytes: AtomicU64::new(0),
            status: AtomicU16::new(0),
            finished: AtomicBool::new(false),
        }
    }

    /// The response head came.
    fn response_head<B>(&self, response: &Response<B>) {
        let status = response.status().as_u16();
        self.status.store(status, Ordering::Relaxed);
        if let Some(log) = &self.shared.settings.log {
            log.respond(self.id, status, response.headers());
        }
    }

    /// Bytes of a body passed: what fits is kept in the log.
    fn body_passed(&self, side: BodySide, chunk: &[u8]) {
        if let Some(log) = &self.shared.settings.log {
            log.append_body(self.id, side, chunk);
        }
    }

    /// The request body ended, broke off or was dropped after `size` bytes.
    fn request_body_done(&self, size: u64) {
        if let Some(log) = &self.shared.settings.log {
            log.update(self.id, |e| e.request.body.size = size);
        }
    }

    /// The app could not be had: `502 Bad Gateway` saying why.
    fn bad_gateway(&self, reason: String) -> Response<ResponseBody> {
        let text = Bytes::from(format!("mytunnel: {reason}\n"));
        let mut response = Response::new(ResponseBody::Message(Some(text.clone())));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        self.response_head(&response);
        self.body_passed(BodySide::Response, &text);
        self.finish(ExchangeState::Failed { reason }, Some(text.len() as u64));
        response
    }

    /// The exchange ended: recorded, and reported as a [`TunnelEvent::Request`]. Only
    /// the first call does anything.
    /// `response_bytes`: bytes of the response body that passed, if one did.
    fn finish(&self, state: ExchangeState, response_bytes: Option<u64>) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let duration = self.started.elapsed();

        let upgraded = state == ExchangeState::Upgraded;
        let error = match &state {
            ExchangeState::Failed { reason } => Some(reason.clone()),
            _ => None,
        };
        if let Some(log) = &self.shared.settings.log {
            log.update(self.id, |e| {
                if let (Some(response), Some(size)) = (e.response.as_mut(), response_bytes) {
                    response.body.size = size;
                }
                e.duration = Some(duration);
                e.state = state;
            });
        }
        let (method, target) = match &self.request_line {
            Some((method, uri)) => (method.as_str().to_owned(), target_of(uri)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let status = self.status.load(Ordering::Relaxed);
        let summary = RequestSummary {
            exchange: self.id,
            host: self.shared.settings.host.clone(),
            started_at: self.started_at,
            method,
            target,
            status: (status != 0).then_some(status),
            duration,
            request_bytes: self.request_bytes.load(Ordering::Relaxed),
            response_bytes: response_bytes.unwrap_or(0),
            upgraded,
            error,
            replay_of: None,
        };
        self.shared.request_events.push(summary);
    }
}

/// How long a request's event may wait to be sent with the ones after it.
const EVENT_BATCH_DELAY: Duration = Duration::from_millis(20);

/// How many request events are sent at once at most; well under the tunnel's event
/// buffer, so a subscriber that keeps up one by one keeps up with batches.
const EVENT_BATCH_MAX: usize = 16;

/// The proxy's [`TunnelEvent::Request`]s on their way to the tunnel's subscribers, sent
/// in batches: a request's end queues its summary and wakes no one (the first of a batch
/// starts [`send_request_events`]'s clock, a full batch is sent at once). Waking a
/// subscriber as each request ends put a thread's wake-up on the response's path; the
/// live log is a moment later instead.
struct RequestEvents {
    queue: Mutex<Vec<RequestSummary>>,
    first: tokio::sync::Notify,
    events: broadcast::Sender<TunnelEvent>,
}

impl RequestEvents {
    fn new(events: broadcast::Sender<TunnelEvent>) -> RequestEvents {
        RequestEvents {
            queue: Mutex::new(Vec::new()),
            first: tokio::sync::Notify::new(),
            events,
        }
    }

    fn push(&self, summary: RequestSummary) {
        let full = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.push(summary);
            if queue.len() == 1 {
                self.first.notify_one();
            }
            queue.len() >= EVENT_BATCH_MAX
        };
        if full {
            self.send_queued();
        }
    }

    /// Sends what is queued, in order.
    fn send_queued(&self) {
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        for summary in batch {
            let _ = self.events.send(TunnelEvent::Request(summary));
        }
    }
}

/// Sends each batch of request events [`EVENT_BATCH_DELAY`] after its first.
async fn send_request_events(events: Arc<RequestEvents>) {
    loop {
        events.first.notified().await;
        tokio::time::sleep(EVENT_BATCH_DELAY).await;
        events.send_queued();
    }
}

impl Drop for ExchangeTrack {
    /// hyper dropped the exchange before its response: the visitor went away.
    fn drop(&mut self) {
        if !*self.finished.get_mut() {
            self.finish(
                ExchangeState::Failed {
                    reason: "the visitor went away before the app answered".to_owned(),
                },
                None,
            );
        }
    }
}

/// Path and query as the visitor sent them (the whole target when it had none).
fn target_of(uri: &Uri) -> String {
    match uri.path_and_query() {
        Some(target) => target.as_str().to_owned(),
        None => uri.to_string(),
    }
}

/// How a body's passing ended.
enum BodyEnd {
    /// Every byte passed.
    Whole,
    /// It broke off.
    Broken(String),
    /// Its reader dropped it before the end.
    Dropped,
}

/// A body passed on frame by frame, counted, its first bytes copied into the log; its
/// end reported to its exchange.
struct TappedBody {
    inner: Incoming,
    exchange: Arc<ExchangeTrack>,
    side: BodySide,
    /// Bytes that passed.
    size: u64,
    /// Bytes copied into the log, up to its cap (0 without a log).
    copied: usize,
    ended: bool,
}

/// The body of a request as it goes to the app.
type RequestBody = TappedBody;

impl TappedBody {
    fn new(inner: Incoming, exchange: Arc<ExchangeTrack>, side: BodySide) -> TappedBody {
        TappedBody {
            inner,
            exchange,
            side,
            size: 0,
            copied: 0,
            ended: false,
        }
    }

    fn pass(&mut self, chunk: &[u8]) {
        self.size = self.size.saturating_add(chunk.len() as u64);
        // Past the log's cap the body is only counted, and the log told at its end.
        let room = self.exchange.shared.body_cap.saturating_sub(self.copied);
        if room > 0 {
            self.exchange.body_passed(self.side, chunk);
            self.copied += chunk.len().min(room);
        }
        if self.side == BodySide::Request {
            self.exchange
                .request_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    }

    fn end(&mut self, end: BodyEnd) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        match self.side {
            BodySide::Request => {
                self.exchange.request_body_done(self.size);
                if let BodyEnd::Broken(e) = end {
                    self.exchange.finish(
                        ExchangeState::Failed {
                            reason: format!("the request body broke off: {e}"),
                        },
                        None,
                    );
                }
            }
            BodySide::Response => {
                let state = match end {
                    BodyEnd::Whole => ExchangeState::Complete,
                    BodyEnd::Broken(e) => ExchangeState::Failed {
                        reason: format!("the app's response broke off: {e}"),
                    },
                    BodyEnd::Dropped => ExchangeState::Failed {
                        reason: "the visitor went away before the response ended".to_owned(),
                    },
                };
                self.exchange.finish(state, Some(self.size));
            }
        }
    }
}

impl Body for TappedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    this.pass(chunk);
                }
                // hyper may stop reading once the body says it is done.
                if this.inner.is_end_stream() {
                    this.end(BodyEnd::Whole);
                }
            }
            Poll::Ready(Some(Err(e))) => this.end(BodyEnd::Broken(e.to_string())),
            Poll::Ready(None) => this.end(BodyEnd::Whole),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TappedBody {
    fn drop(&mut self) {
        // An empty body, for one, hyper drops unread once `is_end_stream` says so.
        let end = if self.inner.is_end_stream() {
            BodyEnd::Whole
        } else {
            BodyEnd::Dropped
        };
        self.end(end);
    }
}

/// What the visitor receives as a response body.
enum ResponseBody {
    /// The app's, passed on.
    Upstream(TappedBody),
    /// The proxy's own: the text of a `502`, or nothing (a `101`).
    Message(Option<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ResponseBody::Message(text) => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(body) => body.is_end_stream(),
            ResponseBody::Message(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(body) => body.size_hint(),
            ResponseBody::Message(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use crate::inspect::{ExchangeLimits, ReplayError};
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Full};
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Long enough for anything these tests do; a hang fails instead of blocking.
    const PATIENCE: Duration = Duration::from_secs(10);

    type AppBody = BoxBody<Bytes, hyper::Error>;

    fn text(text: impl Into<Bytes>) -> AppBody {
        Full::new(text.into())
            .map_err(|never| match never {})
            .boxed()
    }

    /// An app served by hyper on `127.0.0.1:<ephemeral>`: its address, and how many
    /// connections it accepted.
    struct App {
        addr: SocketAddr,
        connections: Arc<AtomicUsize>,
    }

    async fn hyper_app<F, Fut>(handler: F) -> App
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<AppBody>> + Send + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let answer = handler(request);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        App { addr, connections }
    }

    /// An app that answers every request with `hello`.
    async fn hello_app() -> App {
        hyper_app(|_| async { Response::new(text("hello")) }).await
    }

    /// A loopback address nothing listens on.
    async fn nothing_listens() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        listener.local_addr().unwrap()
    }

    async fn proxy_to(
        upstream: SocketAddr,
        log: Option<ExchangeLog>,
    ) -> (TunnelProxy, broadcast::Receiver<TunnelEvent>) {
        proxy_with(AppLink::plain(upstream), log).await
    }

    async fn proxy_with(
        app: Arc<AppLink>,
        log: Option<ExchangeLog>,
    ) -> (TunnelProxy, broadcast::Receiver<TunnelEvent>) {
        let (events, received) = broadcast::channel(64);
        let proxy = TunnelProxy::start(ProxySettings {
            app,
            host: "demo.example.com".into(),
            log,
            events,
        })
        .await
        .unwrap();
        (proxy, received)
    }

    /// A hyper client on a new connection to the proxy.
    async fn visitor(proxy: &TunnelProxy) -> SendRequest<Full<Bytes>> {
        let stream = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    }

    fn get(target: &str) -> Request<Full<Bytes>> {
        Request::get(target)
            .header("host", "demo.example.com")
            .body(Full::default())
            .unwrap()
    }

    async fn body_of(response: Response<Incoming>) -> Bytes {
        tokio::time::timeout(PATIENCE, response.into_body().collect())
            .await
            .expect("the body never ended")
            .unwrap()
            .to_bytes()
    }

    /// The next request summary the proxy reports.
    async fn next_request(events: &mut broadcast::Receiver<TunnelEvent>) -> RequestSummary {
        match tokio::time::timeout(PATIENCE, events.recv()).await {
            Ok(Ok(TunnelEvent::Request(summary))) => summary,
            other => panic!("no request event: {other:?}"),
        }
    }

    /// Reads one request or response head (up to the blank line) off a raw stream.
    async fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
                .await
                .expect("no head came")
                .unwrap();
            assert_eq!(read, 1, "closed within a head: {head:?}");
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    /// Reads until `wanted` has arrived (or panics on end of stream or timeout).
    async fn read_until(stream: &mut TcpStream, wanted: &[u8]) -> Vec<u8> {
        let mut seen = Vec::new();
        while !seen.windows(wanted.len()).any(|w| w == wanted) {
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
                .await
                .expect("it never came")
                .unwrap();
            assert!(read > 0, "closed before {wanted:?}: {seen:?}");
            seen.extend_from_slice(&chunk[..read]);
        }
        seen
    }

    /// A raw TCP app that runs `each` on every connection.
    async fn raw_app<F, Fut>(each: F) -> SocketAddr
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(each(stream));
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_get_reaches_the_app_with_its_headers_and_is_reported() {
        let app = hyper_app(|request: Request<Incoming>| async move {
            let seen = format!(
                "{} {} host={} xff={} probe={}",
                request.method(),
                request.uri(),
                request.headers()["host"].to_str().unwrap(),
                request.headers()["x-forwarded-for"].to_str().unwrap(),
                request.headers()["x-probe"].to_str().unwrap(),
            );
            Response::builder()
                .header("x-app", "yes")
                .body(text(seen))
                .unwrap()
        })
        .await;
        let (proxy, mut events) = proxy_to(app.addr, None).await;
        let mut visitor = visitor(&proxy).await;
        let mut request = get("/hello?x=1");
        request
            .headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        request
            .headers_mut()
            .insert("x-probe", HeaderValue::from_static("yes"));
        let response = visitor.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-app"], "yes");
        let body = body_of(response).await;
        assert_eq!(
            body,
            "GET /hello?x=1 host=demo.example.com xff=203.0.113.9 probe=yes"
        );

        let summary = next_request(&mut events).await;
        assert_eq!(summary.method, "GET");
        assert_eq!(summary.target, "/hello?x=1");
        assert_eq!(summary.host, "demo.example.com");
        assert_eq!(summary.status, Some(200));
        assert_eq!(summary.request_bytes, 0);
        assert_eq!(summary.response_bytes, body.len() as u64);
        assert_eq!(summary.error, None);
        assert!(!summary.upgraded);
        assert_eq!(summary.exchange, ExchangeId(1));
    }

    #[tokio::test]
    async fn a_5_mib_body_streams_through_whole_and_the_log_keeps_its_first_bytes() {
        // The app echoes the body as it reads it: both directions stream at once.
        let app = hyper_app(|request: Request<Incoming>| async move {
            Response::new(request.into_body().boxed())
        })
        .await;
        let log = ExchangeLog::new(ExchangeLimits {
            max_exchanges: 10,
            max_body_bytes: 1000,
            max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
        });
        let (proxy, mut events) = proxy_to(app.addr, Some(log.clone())).await;
        let sent: Bytes = (0..5 * 1024 * 1024u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let mut visitor = visitor(&proxy).await;
        let request = Request::post("/upload")
            .header("host", "demo.example.com")
            .body(Full::new(sent.clone()))
            .unwrap();
        let response = visitor.send_request(request).await.unwrap();
        let received = body_of(response).await;
        assert!(received == sent, "the body changed on the way");

        let summary = next_request(&mut events).await;
        assert_eq!(summary.request_bytes, sent.len() as u64);
        assert_eq!(summary.response_bytes, sent.len() as u64);
        let exchange = log.get(summary.exchange).unwrap();
        assert_eq!(exchange.state, ExchangeState::Complete);
        assert_eq!(exchange.request.body.size, sent.len() as u64);
        assert_eq!(exchange.request.body.bytes, &sent[..1000]);
        let response = exchange.response.unwrap();
        assert_eq!(response.body.size, sent.len() as u64);
        assert_eq!(response.body.bytes, &sent[..1000]);
    }

    #[tokio::test]
    async fn requests_on_one_visitor_connection_share_one_app_connection() {
        let app = hello_app().await;
        let (proxy, mut events) = proxy_to(app.addr, None).await;
        let mut visitor = visitor(&proxy).await;
        for target in ["/one", "/two"] {
            let response = visitor.send_request(get(target)).await.unwrap();
            assert_eq!(body_of(response).await, "hello");
            let summary = next_request(&mut events).await;
            assert_eq!(summary.target, target);
            assert_eq!(summary.status, Some(200));
        }
        assert_eq!(app.connections.load(Ordering::SeqCst), 1);
        assert!(events.try_recv().is_err(), "one event per request");
    }

    #[tokio::test]
    async fn an_app_that_closed_its_idle_connection_gets_the_next_request_on_a_new_one() {
        // Answers one request per connection, then closes it (saying nothing before).
        let (closed_tx, mut closed) = mpsc::unbounded_channel::<()>();
        let app = raw_app(move |mut stream| {
            let closed_tx = closed_tx.clone();
            async move {
                read_head(&mut stream).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                drop(stream);
                let _ = closed_tx.send(());
            }
        })
        .await;
        let (proxy, mut events) = proxy_to(app, None).await;
        let mut visitor = visitor(&proxy).await;
        for _ in 0..3 {
            let response = visitor.send_request(get("/")).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(body_of(response).await, "ok");
            assert_eq!(next_request(&mut events).await.error, None);
            // The app has closed the proxy's connection before the next request.
            tokio::time::timeout(PATIENCE, closed.recv())
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn an_upgrade_is_one_exchange_and_its_bytes_pass_both_ways() {
        let (app_closed_tx, app_closed) = oneshot::channel::<()>();
        let app_closed_tx = Arc::new(Mutex::new(Some(app_closed_tx)));
        let app = raw_app(move |mut stream| {
            let app_closed_tx = Arc::clone(&app_closed_tx);
            async move {
                let head = read_head(&mut stream).await;
                assert!(head.to_ascii_lowercase().contains("upgrade: websocket"));
                stream
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                          connection: Upgrade\r\n\r\n",
                    )
                    .await
                    .unwrap();
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                if let Some(tx) = app_closed_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
        })
        .await;
        let (proxy, mut events) = proxy_to(app, None).await;
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        stream
            .write_all(
                b"GET /ws HTTP/1.1\r\nhost: demo.example.com\r\nconnection: Upgrade\r\n\
                  upgrade: websocket\r\n\r\n",
            )
            .await
            .unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_ascii_lowercase().contains("upgrade: websocket"));

        let summary = next_request(&mut events).await;
        assert!(summary.upgraded);
        assert_eq!(summary.status, Some(101));
        assert_eq!(summary.target, "/ws");
        assert!(summary.to_string().ends_with(" upgraded"), "{summary}");

        for message in [&b"ping"[..], b"and pong, twice"] {
            stream.write_all(message).await.unwrap();
            let mut echoed = vec![0u8; message.len()];
            tokio::time::timeout(PATIENCE, stream.read_exact(&mut echoed))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(echoed, message);
        }
        assert!(
            events.try_recv().is_err(),
            "one exchange for the whole upgrade"
        );

        // Closing the proxy ends the upgraded connection at both ends.
        proxy.close().await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
        tokio::time::timeout(PATIENCE, app_closed)
            .await
            .expect("the app's end stayed open")
            .unwrap();
    }

    #[tokio::test]
    async fn the_first_server_sent_event_arrives_before_the_stream_ends() {
        let (more_tx, more) = oneshot::channel::<()>();
        let more = Arc::new(Mutex::new(Some(more)));
        let app = raw_app(move |mut stream| {
            let more = more.lock().unwrap().take();
            async move {
                read_head(&mut stream).await;
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                          transfer-encoding: chunked\r\n\r\nb\r\ndata: one\n\n\r\n",
                    )
                    .await
                    .unwrap();
                if let Some(more) = more {
                    let _ = more.await;
                }
                stream
                    .write_all(b"b\r\ndata: two\n\n\r\n0\r\n\r\n")
                    .await
                    .unwrap();
                let _ = read_head(&mut stream).await;
            }
        })
        .await;
        let (proxy, mut events) = proxy_to(app, None).await;
        let mut visitor = visitor(&proxy).await;
        let response = visitor.send_request(get("/events")).await.unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.into_body();
        let first = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("the first event is held back")
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "data: one\n\n");
        assert!(events.try_recv().is_err(), "reported before its end");

        more_tx.send(()).unwrap();
        let rest = tokio::time::timeout(PATIENCE, body.collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(rest, "data: two\n\n");
        let summary = next_request(&mut events).await;
        assert_eq!(summary.response_bytes, 22);
        assert_eq!(summary.error, None);
    }

    #[tokio::test]
    async fn an_https_app_gets_tls_and_the_host_it_listens_on() {
        use crate::app_link::tests::{echo_app, issued_for_localhost};
        use crate::upstream::{AppCertificates, HostHeader};
        let (ca, config) = issued_for_localhost();
        let app = echo_app("127.0.0.1:0", Some(config)).await;
        let link = AppLink::new(
            format!("https://localhost:{}", app.port()).parse().unwrap(),
            &AppCertificates::VerifyWithRoots(vec![ca]),
            &HostHeader::Rewrite,
        )
        .unwrap();
        let (proxy, _events) = proxy_with(Arc::new(link), None).await;
        let mut visitor = visitor(&proxy).await;
        for _ in 0..2 {
            let response = visitor.send_request(get("/")).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(
                body_of(response).await,
                format!(
                    "host=localhost:{} xfh=demo.example.com xfp=https",
                    app.port()
                )
            );
        }
    }

    #[tokio::test]
    async fn an_app_that_is_down_gets_the_visitor_a_502_saying_why() {
        let down = nothing_listens().await;
        let (proxy, mut events) = proxy_to(down, None).await;
        let mut visitor = visitor(&proxy).await;
        let response = visitor.send_request(get("/")).await.unwrap();
        assert_eq!(response.status(), 502);
        let body = body_of(response).await;
        let said = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            said.starts_with(&format!(
                "mytunnel: nothing answers on http://{down}/ ({down}: "
            )),
            "{said}"
        );
        let summary = next_request(&mut events).await;
        assert_eq!(summary.status, Some(502));
        let error = summary.error.unwrap();
        assert!(error.starts_with("nothing answers on"), "{error}");
        assert_eq!(format!("mytunnel: {error}\n"), said);
    }

    #[tokio::test]
    async fn an_app_that_closes_before_answering_gets_the_visitor_a_502() {
        let app = raw_app(|mut stream| async move {
            read_head(&mut stream).await;
        })
        .await;
        let log = ExchangeLog::new(ExchangeLimits::default());
        let (proxy, mut events) = proxy_to(app, Some(log.clone())).await;
        let mut visitor = visitor(&proxy).await;
        let response = visitor.send_request(get("/")).await.unwrap();
        assert_eq!(response.status(), 502);
        assert_eq!(
            body_of(response).await,
            "mytunnel: the app closed the connection before answering\n"
        );
        let summary = next_request(&mut events).await;
        assert_eq!(
            summary.error.as_deref(),
            Some("the app closed the connection before answering")
        );
        let exchange = log.get(summary.exchange).unwrap();
        assert_eq!(
            exchange.state,
            ExchangeState::Failed {
                reason: "the app closed the connection before answering".into()
            }
        );
        assert_eq!(exchange.response.unwrap().status, 502);
    }

    /// Sends `bytes` as a visitor and reads what comes back until the proxy closes.
    async fn answer_to(proxy: &TunnelProxy, bytes: &[u8]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
            .await
            .expect("the proxy neither answered nor closed");
        assert!(read.is_ok() || !answer.is_empty(), "{read:?}");
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_read_is_answered_and_reported() {
        let app = hello_app().await;
        let (proxy, mut events) = proxy_to(app.addr, None).await;

        let answer = answer_to(
            &proxy,
            b"GET / HTTP/1.1\r\nhost: demo.example.com\r\nno colon here\r\n\r\n",
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let summary = next_request(&mut events).await;
        assert_eq!(
            (summary.method.as_str(), summary.target.as_str()),
            ("-", "-")
        );
        assert_eq!(summary.status, None);
        let error = summary.error.unwrap();
        assert!(
            error.starts_with("the request could not be read: "),
            "{error}"
        );

        // Headers past hyper's buffer (~400 KiB) get 431.
        let mut huge = b"GET / HTTP/1.1\r\nhost: demo.example.com\r\nx-big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 500 * 1024));
        huge.extend_from_slice(b"\r\n\r\n");
        let answer = answer_to(&proxy, &huge).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let error = next_request(&mut events).await.error.unwrap();
        assert!(error.contains("too large"), "{error}");
        assert_eq!(
            app.connections.load(Ordering::SeqCst),
            0,
            "the app saw nothing"
        );
    }

    #[tokio::test]
    async fn a_visitor_that_goes_away_mid_response_is_reported() {
        let app = raw_app(|mut stream| async move {
            read_head(&mut stream).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                .await;
            // Then nothing more until the proxy closes this connection.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        })
        .await;
        let (proxy, mut events) = proxy_to(app, None).await;
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: demo.example.com\r\n\r\n")
            .await
            .unwrap();
        read_until(&mut stream, b"first").await;
        drop(stream);
        let summary = next_request(&mut events).await;
        assert_eq!(summary.status, Some(200));
        assert_eq!(summary.response_bytes, 5);
        assert_eq!(
            summary.error.as_deref(),
            Some("the visitor went away before the response ended")
        );
    }

    #[tokio::test]
    async fn a_visitor_that_goes_away_before_the_answer_is_reported() {
        let (asked_tx, mut asked) = mpsc::unbounded_channel::<()>();
        let app = raw_app(move |mut stream| {
            let asked_tx = asked_tx.clone();
            async move {
                read_head(&mut stream).await;
                let _ = asked_tx.send(());
                // Never answers; ends when the proxy closes this connection.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            }
        })
        .await;
        let (proxy, mut events) = proxy_to(app, None).await;
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        stream
            .write_all(b"GET /wait HTTP/1.1\r\nhost: demo.example.com\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(PATIENCE, asked.recv())
            .await
            .unwrap()
            .unwrap();
        drop(stream);
        let summary = next_request(&mut events).await;
        assert_eq!(summary.target, "/wait");
        assert_eq!(summary.status, None);
        assert_eq!(
            summary.error.as_deref(),
            Some("the visitor went away before the app answered")
        );
    }

    #[tokio::test]
    async fn closing_ends_open_connections_and_the_listener() {
        let app = hello_app().await;
        let (proxy, mut events) = proxy_to(app.addr, None).await;
        let mut held = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        held.write_all(b"GET / HTTP/1.1\r\nhost: demo.example.com\r\n\r\n")
            .await
            .unwrap();
        read_until(&mut held, b"hello").await;
        next_request(&mut events).await;
        // And one that sent nothing yet.
        let mut idle = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();

        let port = proxy.port();
        proxy.close().await;
        for stream in [&mut held, &mut idle] {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
                .await
                .expect("a connection stayed open");
            assert!(
                matches!(read, Ok(0)) || read.is_err(),
                "the connection stayed open: {read:?}"
            );
        }
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    }

    #[tokio::test]
    async fn the_log_keeps_headers_and_the_first_bytes_of_each_body() {
        let app = hyper_app(|request: Request<Incoming>| async move {
            let _ = request.into_body().collect().await;
            Response::builder()
                .status(201)
                .header("x-app", "made")
                .body(text("greetings"))
                .unwrap()
        })
        .await;
        let log = ExchangeLog::new(ExchangeLimits {
            max_exchanges: 10,
            max_body_bytes: 5,
            max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
        });
        let (proxy, mut events) = proxy_to(app.addr, Some(log.clone())).await;
        let mut visitor = visitor(&proxy).await;
        let request = Request::post("/hooks?x=1")
            .header("host", "demo.example.com")
            .header("x-probe", "yes")
            .body(Full::new(Bytes::from_static(b"hello world")))
            .unwrap();
        let response = visitor.send_request(request).await.unwrap();
        assert_eq!(body_of(response).await, "greetings");
        let summary = next_request(&mut events).await;

        let recent = log.recent();
        assert_eq!(recent.len(), 1);
        let exchange = &recent[0];
        assert_eq!(exchange.id, summary.exchange);
        assert_eq!(exchange.summary(), summary);
        assert_eq!(exchange.host, "demo.example.com");
        assert_eq!(exchange.upstream.answered(), Some(app.addr));
        assert_eq!(exchange.request.method, "POST");
        assert_eq!(exchange.request.target, "/hooks?x=1");
        assert_eq!(exchange.request.version, "HTTP/1.1");
        assert!(exchange
            .request
            .headers
            .iter()
            .any(|h| h.name == "x-probe" && h.value == "yes"));
        assert_eq!(exchange.request.body.bytes, b"hello");
        assert_eq!(exchange.request.body.size, 11);
        let response = exchange.response.as_ref().unwrap();
        assert_eq!(response.status, 201);
        assert!(response
            .headers
            .iter()
            .any(|h| h.name == "x-app" && h.value == "made"));
        assert_eq!(response.body.bytes, b"greet");
        assert_eq!(response.body.size, 9);
        assert_eq!(exchange.state, ExchangeState::Complete);
        assert!(exchange.duration.is_some());
    }

    fn summary(n: u64) -> RequestSummary {
        RequestSummary {
            exchange: ExchangeId(n),
            host: "demo.example.com".into(),
            started_at: SystemTime::UNIX_EPOCH,
            method: "GET".into(),
            target: format!("/{n}"),
            status: Some(200),
            duration: Duration::ZERO,
            request_bytes: 0,
            response_bytes: 0,
            upgraded: false,
            error: None,
            replay_of: None,
        }
    }

    fn received(events: &mut broadcast::Receiver<TunnelEvent>) -> Vec<u64> {
        let mut ids = Vec::new();
        while let Ok(TunnelEvent::Request(summary)) = events.try_recv() {
            ids.push(summary.exchange.0);
        }
        ids
    }

    #[tokio::test(start_paused = true)]
    async fn request_events_go_out_in_order_a_moment_later_or_when_a_batch_is_full() {
        let (sender, mut events) = broadcast::channel(64);
        let batched = Arc::new(RequestEvents::new(sender));
        let sending = tokio::spawn(send_request_events(Arc::clone(&batched)));
        for n in 1..=3 {
            batched.push(summary(n));
        }
        // Queued: no one was woken for them yet.
        tokio::task::yield_now().await;
        assert_eq!(received(&mut events), Vec::<u64>::new());
        tokio::time::sleep(EVENT_BATCH_DELAY + Duration::from_millis(1)).await;
        assert_eq!(received(&mut events), [1, 2, 3]);
        // A full batch goes at once, by the request that filled it.
        let many: Vec<u64> = (10..10 + EVENT_BATCH_MAX as u64).collect();
        for n in &many {
            batched.push(summary(*n));
        }
        assert_eq!(received(&mut events), many);
        // And one alone after that still arrives.
        batched.push(summary(99));
        tokio::time::sleep(EVENT_BATCH_DELAY * 2).await;
        assert_eq!(received(&mut events), [99]);
        sending.abort();
    }

    #[tokio::test]
    async fn long_heads_pass_whole_and_the_log_keeps_what_its_limit_allows() {
        let (counts_tx, mut counts) = mpsc::unbounded_channel::<usize>();
        let app = hyper_app(move |request: Request<Incoming>| {
            let counts_tx = counts_tx.clone();
            async move {
                let fill = request
                    .headers()
                    .keys()
                    .filter(|k| k.as_str().starts_with("x-fill-"))
                    .count();
                let _ = counts_tx.send(fill);
                let mut response = Response::builder();
                for i in 0..fill {
                    response = response.header(format!("x-back-{i}"), "b".repeat(1000));
                }
                response.body(text("ok")).unwrap()
            }
        })
        .await;
        let limits = ExchangeLimits {
            max_exchanges: 10,
            max_body_bytes: 64,
            max_head_bytes: 4096,
        };
        let log = ExchangeLog::new(limits);
        let (proxy, mut events) = proxy_to(app.addr, Some(log.clone())).await;
        let mut visitor = visitor(&proxy).await;
        let mut request =
            Request::get(format!("/{}", "p".repeat(1000))).header("host", "demo.example.com");
        for i in 0..30 {
            request = request.header(format!("x-fill-{i}"), "f".repeat(1000));
        }
        let response = visitor
            .send_request(request.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        // Both heads pass whole: the log's limit is the log's alone.
        assert_eq!(counts.recv().await, Some(30));
        let back = response
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("x-back-"))
            .count();
        assert_eq!(back, 30);
        assert_eq!(body_of(response).await, "ok");
        next_request(&mut events).await;

        let exchange = log.recent().pop().unwrap();
        let cost = |headers: &[crate::inspect::Header]| -> usize {
            headers
                .iter()
                .map(|h| h.name.len() + h.value.len() + crate::inspect::HEADER_BOOKKEEPING)
                .sum()
        };
        let request = &exchange.request;
        assert_eq!(request.target.len(), 1001, "a target that fits is whole");
        let kept = request.target.len() + cost(&request.headers);
        assert!(kept <= 4096, "{kept} bytes of the request head kept");
        // The kept headers are the first ones, in order; the rest is counted.
        assert_eq!(request.headers[0].name, "host");
        assert_eq!(request.headers[1].name, "x-fill-0");
        let sent: u64 = 1001 + 4 + 16 + 30 * (8 + 1000);
        let kept_bytes: usize = request
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum();
        assert!(request.head_bytes_left_out > 0);
        assert!(request.head_bytes_left_out + (1001 + kept_bytes) as u64 >= sent);
        let response = exchange.response.as_ref().unwrap();
        assert!(cost(&response.headers) <= 4096);
        assert!(response.head_bytes_left_out > 25 * 1000);

        // What was not kept cannot be sent again as it was.
        let refused = log.replay(exchange.id).await.unwrap_err();
        assert_eq!(refused.code(), "head_not_kept", "{refused}");
    }

    #[tokio::test]
    async fn a_recorded_post_replays_to_the_app_and_a_truncated_one_does_not() {
        let (bodies_tx, mut bodies) = mpsc::unbounded_channel::<Bytes>();
        let app = hyper_app(move |request: Request<Incoming>| {
            let bodies_tx = bodies_tx.clone();
            async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                bodies_tx.send(body).unwrap();
                Response::new(text("taken"))
            }
        })
        .await;
        let log = ExchangeLog::new(ExchangeLimits {
            max_exchanges: 10,
            max_body_bytes: 16,
            max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
        });
        let (proxy, mut events) = proxy_to(app.addr, Some(log.clone())).await;
        let mut visitor = visitor(&proxy).await;
        let post = |body: &'static [u8]| {
            Request::post("/hooks")
                .header("host", "demo.example.com")
                .body(Full::new(Bytes::from_static(body)))
                .unwrap()
        };
        let response = visitor.send_request(post(b"{\"n\":1}")).await.unwrap();
        assert_eq!(body_of(response).await, "taken");
        let original = next_request(&mut events).await.exchange;
        assert_eq!(bodies.recv().await.unwrap(), "{\"n\":1}");

        let replayed = log.replay(original).await.unwrap();
        assert_eq!(
            bodies.recv().await.unwrap(),
            "{\"n\":1}",
            "the app got it again"
        );
        let replay = log.get(replayed).unwrap();
        assert_ne!(replayed, original);
        assert_eq!(replay.replay_of, Some(original));
        assert_eq!(replay.state, ExchangeState::Complete);
        assert_eq!(replay.response.unwrap().body.bytes, b"taken");

        let response = visitor
            .send_request(post(b"a body longer than sixteen bytes"))
            .await
            .unwrap();
        assert_eq!(body_of(response).await, "taken");
        let truncated = next_request(&mut events).await.exchange;
        assert_eq!(
            log.replay(truncated).await,
            Err(ReplayError::BodyNotKept {
                id: truncated,
                size: 32,
                kept: 16
            })
        );
    }
}
