//! The JSON API the page reads: the inspector's address and limits, the exchanges as
//! summaries, one exchange whole, and replay.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;

use super::{error, Served, MAX_REPLAYS};
use crate::inspect::{CapturedBody, Exchange, ExchangeId, ExchangeState, Header, ReplayError};

/// `GET /api/info`: where it listens and what the log keeps.
#[derive(Debug, Serialize)]
pub(super) struct Info {
    listen: String,
    loopback: bool,
    max_exchanges: usize,
    max_body_bytes: usize,
    max_head_bytes: usize,
}

pub(super) async fn info(State(state): State<Served>) -> Json<Info> {
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
pub(super) struct Summary {
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

pub(super) fn summary(exchange: &Exchange) -> Summary {
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
pub(super) async fn list(State(state): State<Served>) -> Json<Vec<Summary>> {
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
pub(super) async fn detail(State(state): State<Served>, Path(raw): Path<String>) -> Response {
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

pub(super) async fn replay(State(state): State<Served>, Path(raw): Path<String>) -> Response {
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
