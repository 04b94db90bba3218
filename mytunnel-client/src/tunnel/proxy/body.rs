//! The bodies that cross the proxy: the visitor's and the app's, tapped as they pass,
//! and the proxy's own answers.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::exchange::ExchangeTrack;
use crate::inspect::{BodySide, ExchangeState};

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
pub(super) struct TappedBody {
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
pub(super) type RequestBody = TappedBody;

impl TappedBody {
    pub(super) fn new(inner: Incoming, exchange: Arc<ExchangeTrack>, side: BodySide) -> TappedBody {
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

/// What the visitor receives as a response body: the app's, passed on and tapped
/// ([`ResponseBody::Left`]), or the proxy's own ([`ResponseBody::Right`]: the text of a
/// `502`, or nothing for a `101`).
pub(super) type ResponseBody = http_body_util::Either<TappedBody, http_body_util::Full<Bytes>>;
