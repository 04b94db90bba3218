//! One visitor connection: hyper serves it, and each of its requests goes to the app on
//! a connection of its own, kept for the next request; a `101` joins both connections.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::UPGRADE;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::body::{RequestBody, ResponseBody, TappedBody};
use super::exchange::ExchangeTrack;
use super::{ConnectionTask, Shared};
use crate::inspect::{BodySide, ExchangeState};

/// Serves one visitor connection with hyper's HTTP/1.1 server until it ends, and drives
/// its connections to the app in the same task: a request and its answer cross no task
/// boundary on their way through, and closing the proxy ends both.
pub(super) async fn serve_inbound(inbound: TcpStream, shared: Arc<Shared>) {
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
        Response::from_parts(parts, ResponseBody::Right(http_body_util::Full::default()))
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
    settings
        .app
        .prepare(&connection.shared.public_host, request.headers_mut());
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
    Ok(
        response
            .map(|body| ResponseBody::Left(TappedBody::new(body, exchange, BodySide::Response))),
    )
}
