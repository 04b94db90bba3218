//! The live updates: a server-sent event each time an exchange is added or changes.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit};

use super::api::summary;
use super::{error, Served, MAX_EVENT_STREAMS};
use crate::inspect::{ExchangeId, ExchangeLog};

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
pub(super) async fn events(State(state): State<Served>) -> Response {
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
