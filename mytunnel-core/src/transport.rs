//! How a client reaches an edge: control requests, and data-plane forwards.
//!
//! Implementations: OpenSSH (a multiplexed connection or one `ssh -T` per request, and a
//! supervised `ssh -N -R` per forward) in the client crate, and an in-process transport
//! that calls an edge service directly, for tests and examples without sshd.

use async_trait::async_trait;

use crate::calls::CtlCall;
use crate::protocol::{ApiError, CtlRequest, CtlResponse, ReplyError};
use crate::BindTarget;

/// Why a control request or a forward failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The edge answered with an error envelope.
    #[error(transparent)]
    Refused(ApiError),
    /// The edge could not be reached (ssh failed to connect, authenticate, …).
    #[error("cannot reach the edge: {0}")]
    Unreachable(String),
    /// The edge answered something that is not the expected JSON.
    #[error("unexpected answer from the edge: {0}")]
    Malformed(String),
}

impl From<ReplyError> for TransportError {
    fn from(e: ReplyError) -> Self {
        match e {
            ReplyError::Refused(api) => TransportError::Refused(api),
            malformed @ ReplyError::Malformed { .. } => {
                TransportError::Malformed(malformed.to_string())
            }
        }
    }
}

/// A data-plane forward to open: edge bind target → local port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    /// Where the edge listens for this lease (from the lease DTO's bind target).
    pub edge_bind: BindTarget,
    /// The local port requests are forwarded to (on 127.0.0.1).
    pub local_port: u16,
}

/// How a forward ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardEnd {
    /// What was seen (exit status, last stderr line, …).
    pub reason: String,
}

/// A running forward. Dropping it must stop it.
#[async_trait]
pub trait Forward: Send + std::fmt::Debug {
    /// Resolves when the forward ends by itself.
    async fn ended(&mut self) -> ForwardEnd;

    /// Stops the forward and waits until it is gone.
    async fn stop(&mut self);
}

/// A way to talk to an edge.
#[async_trait]
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Runs one control request and decodes its answer.
    async fn ctl(&self, request: &CtlRequest) -> Result<CtlResponse, TransportError>;

    /// Opens a data-plane forward. It is up once this returns.
    async fn open_forward(&self, spec: ForwardSpec) -> Result<Box<dyn Forward>, TransportError>;
}

/// Runs one typed ctl call over `transport`: its reply, or `Malformed` when the edge
/// answered with a reply of another kind.
pub async fn call<C: CtlCall>(
    transport: &dyn Transport,
    call: C,
) -> Result<C::Reply, TransportError> {
    let response = transport.ctl(&call.into_request()).await?;
    C::take_reply(response).map_err(TransportError::Malformed)
}
