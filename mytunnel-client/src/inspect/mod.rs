//! What a tunnel's HTTP proxy saw: each exchange (request and response), kept in a
//! bounded [`ExchangeLog`] for the local inspector, and summarised as a
//! [`TunnelEvent::Request`](crate::TunnelEvent::Request) for the live request log.
//!
//! The log holds at most [`ExchangeLimits::max_exchanges`] exchanges (the oldest goes
//! first), at most [`ExchangeLimits::max_body_bytes`] of each body (the rest of a body
//! streams on to its reader and is only counted) and at most
//! [`ExchangeLimits::max_head_bytes`] of each head (the headers past it reach the app or
//! the visitor, and are only counted): its memory is bounded by its limits.
//!
//! An [`Inspector`] serves a log as a local web page: the exchanges live, their headers
//! and bodies, and a button to [replay](ExchangeLog::replay) one.
//!
//! ```
//! use mytunnel_client::inspect::{ExchangeLimits, ExchangeLog};
//!
//! let log = ExchangeLog::new(ExchangeLimits::default());
//! assert!(log.recent().is_empty());
//! ```

// What is recorded of an exchange is in `exchange.rs`, its line in the request log in
// `summary.rs`, the log's limits in `limits.rs` and the log in `log.rs`; the log keeps an
// exchange's bytes in `slots.rs` (a slot per place in the log, in reused blocks), its
// heads framed by `frame.rs`, moved there and back by `store.rs`.

mod exchange;
mod frame;
mod limits;
mod log;
mod replay;
mod server;
mod slots;
mod store;
mod summary;

pub(crate) use exchange::headers_of;
pub use exchange::{
    CapturedBody, Exchange, ExchangeId, ExchangeState, Header, RecordedRequest, RecordedResponse,
};
pub use limits::{ExchangeLimits, HEADER_BOOKKEEPING};
pub use log::ExchangeLog;
pub(crate) use log::{BodySide, NewExchange};
pub use replay::ReplayError;
pub use server::Inspector;
pub use summary::RequestSummary;
