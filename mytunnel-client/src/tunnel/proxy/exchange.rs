//! What the proxy knows of one exchange while it runs, and how it is recorded and
//! reported when it ends.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::Shared;
use crate::inspect::{
    BodySide, CapturedBody, ExchangeId, ExchangeState, NewExchange, RecordedRequest, RequestSummary,
};

/// What the proxy knows of one exchange while it runs; reports it once, when it ends
/// (or, as a last resort, when the last part of it is dropped).
pub(super) struct ExchangeTrack {
    pub(super) shared: Arc<Shared>,
    id: ExchangeId,
    /// `None` for a request hyper could not read.
    request_line: Option<(Method, Uri)>,
    started: Instant,
    started_at: SystemTime,
    pub(super) request_bytes: AtomicU64,
    /// The response's status; 0 before it came.
    status: AtomicU16,
    finished: AtomicBool,
}

impl ExchangeTrack {
    /// A new exchange, recorded as open when there is a log.
    pub(super) fn begin(
        shared: &Arc<Shared>,
        request: Option<&Request<Incoming>>,
    ) -> ExchangeTrack {
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
    pub(super) fn response_head<B>(&self, response: &Response<B>) {
        let status = response.status().as_u16();
        self.status.store(status, Ordering::Relaxed);
        if let Some(log) = &self.shared.settings.log {
            log.respond(self.id, status, response.headers());
        }
    }

    /// Bytes of a body passed: what fits is kept in the log.
    pub(super) fn body_passed(&self, side: BodySide, chunk: &[u8]) {
        if let Some(log) = &self.shared.settings.log {
            log.append_body(self.id, side, chunk);
        }
    }

    /// The request body ended, broke off or was dropped after `size` bytes.
    pub(super) fn request_body_done(&self, size: u64) {
        if let Some(log) = &self.shared.settings.log {
            log.update(self.id, |e| e.request.body.size = size);
        }
    }

    /// The app could not be had: `502 Bad Gateway` saying why.
    pub(super) fn bad_gateway(&self, reason: String) -> Response<ResponseBody> {
        let text = Bytes::from(format!("mytunnel: {reason}\n"));
        let mut response =
            Response::new(ResponseBody::Right(http_body_util::Full::new(text.clone())));
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

    /// The exchange ended: recorded, and reported as a [`TunnelEvent::Request`](crate::TunnelEvent::Request). Only
    /// the first call does anything.
    /// `response_bytes`: bytes of the response body that passed, if one did.
    pub(super) fn finish(&self, state: ExchangeState, response_bytes: Option<u64>) {
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
