//! The proxy's request events, batched on their way to the tunnel's subscribers.

use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::events::TunnelEvent;
use crate::inspect::RequestSummary;

/// How long a request's event may wait to be sent with the ones after it.
pub(super) const EVENT_BATCH_DELAY: Duration = Duration::from_millis(20);

/// How many request events are sent at once at most; well under the tunnel's event
/// buffer, so a subscriber that keeps up one by one keeps up with batches.
pub(super) const EVENT_BATCH_MAX: usize = 16;

/// The proxy's [`TunnelEvent::Request`]s on their way to the tunnel's subscribers, sent
/// in batches: a request's end queues its summary and wakes no one (the first of a batch
/// starts [`send_request_events`]'s clock, a full batch is sent at once). Waking a
/// subscriber as each request ends put a thread's wake-up on the response's path; the
/// live log is a moment later instead.
pub(super) struct RequestEvents {
    queue: Mutex<Vec<RequestSummary>>,
    first: tokio::sync::Notify,
    events: broadcast::Sender<TunnelEvent>,
}

impl RequestEvents {
    pub(super) fn new(events: broadcast::Sender<TunnelEvent>) -> RequestEvents {
        RequestEvents {
            queue: Mutex::new(Vec::new()),
            first: tokio::sync::Notify::new(),
            events,
        }
    }

    pub(super) fn push(&self, summary: RequestSummary) {
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
    pub(super) fn send_queued(&self) {
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        for summary in batch {
            let _ = self.events.send(TunnelEvent::Request(summary));
        }
    }
}

/// Sends each batch of request events [`EVENT_BATCH_DELAY`] after its first.
pub(super) async fn send_request_events(events: Arc<RequestEvents>) {
    loop {
        events.first.notified().await;
        tokio::time::sleep(EVENT_BATCH_DELAY).await;
        events.send_queued();
    }
}
