//! Sending a recorded request to the app again, recorded as a new exchange.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::app_link::PublicHost;

use super::{
    CapturedBody, ExchangeId, ExchangeLimits, ExchangeLog, ExchangeState, Header, NewExchange,
    RecordedResponse,
};

/// How long a replay waits for the app's whole response.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a replay did not happen. Each has a stable [`code`](ReplayError::code).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    /// The log no longer holds the exchange.
    #[error("exchange {0} is no longer in the log")]
    NotFound(ExchangeId),
    /// Its request body was larger than the log keeps, so it cannot be sent again whole.
    #[error(
        "exchange {id}'s request body had {size} bytes and the log keeps {kept}: it cannot be sent again whole"
    )]
    BodyNotKept {
        /// The exchange.
        id: ExchangeId,
        /// Bytes the body had.
        size: u64,
        /// Bytes the log kept.
        kept: usize,
    },
    /// Its target and headers were longer than the log keeps, so it cannot be sent again
    /// whole.
    #[error(
        "exchange {id}'s request head had {left_out} bytes more than the log keeps ({kept}): it cannot be sent again whole"
    )]
    HeadNotKept {
        /// The exchange.
        id: ExchangeId,
        /// Bytes of target and headers not kept.
        left_out: u64,
        /// Bytes the log keeps of each head.
        kept: usize,
    },
    /// A WebSocket or other upgrade cannot be replayed.
    #[error("exchange {0} switched protocols (an upgrade); it cannot be replayed")]
    Upgrade(ExchangeId),
}

impl ReplayError {
    /// A stable, machine-readable code: `not_found`, `body_not_kept`, `head_not_kept`,
    /// `upgrade`.
    pub fn code(&self) -> &'static str {
        match self {
            ReplayError::NotFound(_) => "not_found",
            ReplayError::BodyNotKept { .. } => "body_not_kept",
            ReplayError::HeadNotKept { .. } => "head_not_kept",
            ReplayError::Upgrade(_) => "upgrade",
        }
    }
}

/// Headers that belong to one connection, not to the request: not sent again.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

impl ExchangeLog {
    /// Sends exchange `id`'s request to the app it went to, as it was recorded (method,
    /// target, headers, body; the `Host` and `X-Forwarded-*` headers set as the tunnel
    /// sets them), on a connection of its own, and records what happens as a
    /// new exchange whose `replay_of` is `id`. Returns the new exchange's id once it has
    /// ended; a failure to reach the app is recorded in it (state `Failed`), not returned.
    pub async fn replay(&self, id: ExchangeId) -> Result<ExchangeId, ReplayError> {
        let original = self.get(id).ok_or(ReplayError::NotFound(id))?;
        if original.state == ExchangeState::Upgraded {
            return Err(ReplayError::Upgrade(id));
        }
        if original.request.head_bytes_left_out > 0 {
            return Err(ReplayError::HeadNotKept {
                id,
                left_out: original.request.head_bytes_left_out,
                kept: self.limits().max_head_bytes,
            });
        }
        let body = &original.request.body;
        if body.truncated() {
            return Err(ReplayError::BodyNotKept {
                id,
                size: body.size,
                kept: self.limits().max_body_bytes,
            });
        }
        let new_id = self.begin(NewExchange {
            host: original.host.clone(),
            request: original.request.clone(),
            upstream: std::sync::Arc::clone(&original.upstream),
            replay_of: Some(id),
        });
        let started = Instant::now();
        let outcome = tokio::time::timeout(REPLAY_TIMEOUT, send(&original, self.limits())).await;
        let state = match outcome {
            Ok(Ok(response)) => {
                self.update(new_id, |e| e.response = Some(response));
                ExchangeState::Complete
            }
            Ok(Err(reason)) => ExchangeState::Failed { reason },
            Err(_) => ExchangeState::Failed {
                reason: format!(
                    "the app did not answer within {}s",
                    REPLAY_TIMEOUT.as_secs()
                ),
            },
        };
        self.update(new_id, |e| {
            e.duration = Some(started.elapsed());
            e.state = state;
        });
        Ok(new_id)
    }
}

/// One request on a new connection to the app; the whole response, its body captured
/// within `limits` (the log keeps what fits of its head).
async fn send(
    original: &super::Exchange,
    limits: ExchangeLimits,
) -> Result<RecordedResponse, String> {
    let app = &original.upstream;
    // The connection ends when `_driving` drops, on every way out of this function.
    let (mut sender, _driving) = app.http1_driven().await?;
    let request = &original.request;
    let mut builder = hyper::Request::builder()
        .method(request.method.as_str())
        .uri(request.target.as_str());
    for Header { name, value } in &request.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            builder = builder.header(name.as_str(), value.as_str());
        }
    }
    if let Some(headers) = builder.headers_mut() {
        app.prepare(&PublicHost::new(&original.host), headers);
    }
    let body = Bytes::from(request.body.bytes.clone());
    let outgoing = builder
        .header("content-length", body.len())
        .body(Full::new(body))
        .map_err(|e| format!("the recorded request cannot be sent again: {e}"))?;
    let response = sender
        .send_request(outgoing)
        .await
        .map_err(|e| format!("the app did not answer: {e}"))?;
    let status = response.status().as_u16();
    let headers = super::headers_of(response.headers());
    let mut captured = CapturedBody::default();
    let mut incoming = response.into_body();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| format!("the response broke off: {e}"))?;
        if let Some(chunk) = frame.data_ref() {
            captured.push(chunk, limits.max_body_bytes);
        }
    }
    Ok(RecordedResponse {
        status,
        headers,
        head_bytes_left_out: 0,
        body: captured,
    })
}
