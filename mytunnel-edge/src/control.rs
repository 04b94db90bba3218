//! The control socket: `mytunneld serve` answers ctl requests, `mytunneld ctl` asks.
//!
//! Only `serve` opens the lease database. It listens on `<socket_dir>/control.sock`
//! (mode 0660, its own group, which tunnel users share so the gate's ctl can connect) and
//! names each caller by the uid the kernel reports for the connection (`SO_PEERCRED`),
//! resolved through the password database: no byte of a request names an owner. The wire
//! format is [`mytunnel_core::control`].
//!
//! Defences against a caller that is a hostile tenant:
//! - a request must arrive whole, under [`MAX_REQUEST_BYTES`], within [`ACCEPT_WITHIN`],
//!   or the connection gets an error and is closed; every connection is its own task, so
//!   a slow or silent one delays no other;
//! - at most [`ControlLimits::max_per_uid`] requests of one uid are in flight, and at
//!   most [`ControlLimits::max_connections`] in all; beyond them a connection is answered
//!   `service_unavailable` at once;
//! - an allocation whose reply cannot be delivered (ctl gave up or was killed) is undone,
//!   so a client that was not told about a lease holds none.
//!
//! Each accepted request's time, from its acceptance to its reply written, goes to the
//! service's metrics by verb ([`crate::metrics`]).

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mytunnel_core::control::{
    accepted_line, decode_reply_line, is_accepted_line, reply_line, ControlRequest, ACCEPT_WITHIN,
    MAX_REQUEST_BYTES,
};
use mytunnel_core::policy::{AdminUsers, Caller};
use mytunnel_core::protocol::{ApiError, CtlRequest, CtlResponse, ErrorCode};
use mytunnel_core::{LeaseRef, Owner};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::service::LeaseService;

/// How long ctl waits for the answer once serve has accepted its request.
pub const REPLY_WITHIN: Duration = Duration::from_secs(30);

/// How long serve tries to deliver one line to a ctl that does not read.
const WRITE_WITHIN: Duration = Duration::from_secs(2);

/// Bounds on what callers can make `serve` hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLimits {
    /// Connections served at once, all callers together.
    pub max_connections: usize,
    /// Connections served at once for one uid.
    pub max_per_uid: usize,
}

impl Default for ControlLimits {
    fn default() -> Self {
        ControlLimits {
            max_connections: 512,
            max_per_uid: 64,
        }
    }
}

/// Binds the control socket at `path`, mode 0660, replacing a socket left by a previous
/// run. The group is the process's own (the service group, which tunnel users share).
pub fn bind_control_socket(path: &Path) -> std::io::Result<UnixListener> {
    crate::sockets::bind_service_socket(path, 0o660)
}

/// The caller behind a uid: its password-database name, privileged when it is root or
/// listed in `admins`.
pub fn caller_for_uid(uid: u32, admins: &AdminUsers) -> Result<Caller, ApiError> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot look up uid {uid}: {e}"),
            )
        })?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Internal,
                format!("uid {uid} has no entry in the password database"),
            )
        })?;
    let owner: Owner = user.name.parse().map_err(|e| {
        ApiError::new(
            ErrorCode::Internal,
            format!("user name of uid {uid} cannot own leases: {e}"),
        )
    })?;
    Ok(Caller::from_identity(uid, owner, admins))
}

/// Requests in flight per uid.
#[derive(Debug, Default)]
struct InFlight {
    per_uid: Mutex<HashMap<u32, usize>>,
}

/// One request counted in [`InFlight`] until dropped.
#[derive(Debug)]
struct InFlightSlot {
    in_flight: Arc<InFlight>,
    uid: u32,
}

impl InFlight {
    fn enter(self: &Arc<Self>, uid: u32, max: usize) -> Option<InFlightSlot> {
        let mut counts = self.per_uid.lock().ok()?;
        let count = counts.entry(uid).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(InFlightSlot {
            in_flight: Arc::clone(self),
            uid,
        })
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.in_flight.per_uid.lock() {
            if let Some(count) = counts.get_mut(&self.uid) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&self.uid);
                }
            }
        }
    }
}

/// What every connection task shares.
#[derive(Debug)]
struct Answerer {
    service: LeaseService,
    admins: AdminUsers,
    limits: ControlLimits,
    in_flight: Arc<InFlight>,
}

/// Answers ctl requests on `listener` until `shutdown` resolves, one task per connection.
pub async fn serve_control(
    service: LeaseService,
    admins: AdminUsers,
    listener: UnixListener,
    limits: ControlLimits,
    shutdown: impl Future<Output = ()>,
) {
    let answerer = Arc::new(Answerer {
        service,
        admins,
        limits,
        in_flight: Arc::default(),
    });
    crate::sockets::serve_connections(
        "control",
        listener,
        limits.max_connections,
        shutdown,
        |stream| {
            let answerer = Arc::clone(&answerer);
            async move { answerer.answer(stream).await }
        },
        |stream| refuse_busy(&stream, "too many ctl requests at once"),
    )
    .await;
}

/// Answers `service_unavailable` without waiting for the caller: a full socket buffer
/// just loses the line.
fn refuse_busy(stream: &UnixStream, why: &str) {
    let error = ApiError::new(
        ErrorCode::ServiceUnavailable,
        format!("mytunneld serve is busy: {why}; try again"),
    );
    let _ = stream.try_write(reply_line(&Err(error)).as_bytes());
}

/// Writes one line within [`WRITE_WITHIN`]; answers whether it was delivered.
async fn write_line(write: &mut (impl AsyncWriteExt + Unpin), line: &str) -> bool {
    matches!(
        tokio::time::timeout(WRITE_WITHIN, write.write_all(line.as_bytes())).await,
        Ok(Ok(()))
    )
}

impl Answerer {
    async fn answer(&self, stream: UnixStream) {
        let (uid, pid) = match stream.peer_cred() {
            Ok(credentials) => (credentials.uid(), credentials.pid()),
            Err(e) => {
                tracing::warn!(error = %e, "control connection without peer credentials refused");
                return;
            }
        };
        let Some(_slot) = self.in_flight.enter(uid, self.limits.max_per_uid) else {
            tracing::warn!(uid, "ctl request refused: too many in flight for this uid");
            refuse_busy(&stream, "too many of your ctl requests at once");
            return;
        };
        let (read, mut write) = stream.into_split();
        let request = read_request(read).await;
        let request = match request {
            Ok(request) => request.ctl,
            Err(error) => {
                tracing::debug!(uid, code = %error.code, error = %error.message, "ctl request refused");
                write_line(&mut write, &reply_line(&Err(error))).await;
                return;
            }
        };
        let accepted = Instant::now();
        let verb = request.verb();
        if !write_line(&mut write, &accepted_line()).await {
            return;
        }
        let admins = self.admins.clone();
        let caller = tokio::task::spawn_blocking(move || caller_for_uid(uid, &admins))
            .await
            .unwrap_or_else(|e| {
                Err(ApiError::new(
                    ErrorCode::Internal,
                    format!("owner lookup failed: {e}"),
                ))
            });
        let caller = match caller {
            Ok(caller) => match pid.and_then(|pid| u32::try_from(pid).ok()) {
                Some(pid) => caller.with_process(pid),
                None => caller,
            },
            Err(error) => {
                write_line(&mut write, &reply_line(&Err(error))).await;
                self.service.metrics().ctl_request(verb, accepted.elapsed());
                return;
            }
        };
        let result = self.service.handle(&caller, request).await;
        if let Err(error) = &result {
            tracing::debug!(owner = %caller.owner(), %verb, code = %error.code, "ctl request refused");
        }
        let delivered = write_line(&mut write, &reply_line(&result)).await;
        self.service.metrics().ctl_request(verb, accepted.elapsed());
        if delivered {
            return;
        }
        // Nobody learnt of this lease: it must not outlive the request.
        if let Ok(CtlResponse::Lease(lease)) = &result {
            if verb == mytunnel_core::protocol::Verb::Allocate {
                let undone = self
                    .service
                    .delete(&caller, &LeaseRef::Id(lease.lease_id.clone()))
                    .await;
                match undone {
                    Ok(_) => {
                        tracing::warn!(lease = %lease.lease_id, owner = %caller.owner(), "allocation undone: ctl left before its answer")
                    }
                    Err(e) => {
                        tracing::error!(lease = %lease.lease_id, error = %e.message, "could not undo an allocation whose answer was lost; it ends by its TTL")
                    }
                }
            }
        }
    }
}

/// Reads one request line: whole, under the size limit, within [`ACCEPT_WITHIN`].
async fn read_request(read: impl tokio::io::AsyncRead + Unpin) -> Result<ControlRequest, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidArgument, message);
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64);
    let mut line = Vec::new();
    match tokio::time::timeout(ACCEPT_WITHIN, reader.read_until(b'\n', &mut line)).await {
        Err(_) => Err(invalid(format!(
            "no complete request within {ACCEPT_WITHIN:?}"
        ))),
        Ok(Err(e)) => Err(invalid(format!("unreadable request: {e}"))),
        Ok(Ok(_)) if line.last() != Some(&b'\n') => {
            Err(invalid(if line.len() >= MAX_REQUEST_BYTES {
                format!("request longer than {MAX_REQUEST_BYTES} bytes")
            } else {
                "the request ended before its newline".to_owned()
            }))
        }
        Ok(Ok(_)) => {
            let line = std::str::from_utf8(&line)
                .map_err(|_| invalid("the request is not UTF-8".to_owned()))?;
            ControlRequest::parse_line(line)
        }
    }
}

fn unavailable(socket: &Path, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        format!(
            "mytunneld serve does not answer at {} ({why}); it alone holds the lease database",
            socket.display()
        ),
    )
}

/// Sends `request` to serve at `socket` and returns its answer. Without a live serve —
/// no socket, nobody listening, or no acceptance within [`ACCEPT_WITHIN`] — the answer is
/// `service_unavailable` and nothing was changed; once accepted, the reply is awaited up
/// to `reply_within`.
pub async fn call(
    socket: &Path,
    request: &CtlRequest,
    reply_within: Duration,
) -> Result<CtlResponse, ApiError> {
    let accept = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| unavailable(socket, e))?;
        let (read, mut write) = stream.into_split();
        let sent = write
            .write_all(ControlRequest::new(request.clone()).to_line().as_bytes())
            .await;
        // A serve that refused at once (busy) may have closed before reading: its
        // reason is still there to read.
        let mut reader = BufReader::new(read);
        let mut first = String::new();
        let read = reader.read_line(&mut first).await;
        match (sent, read) {
            (_, Ok(n)) if n > 0 => {}
            (Err(e), _) | (Ok(()), Err(e)) => return Err(unavailable(socket, e)),
            (Ok(()), Ok(_)) => {}
        }
        Ok::<_, ApiError>((reader, first, write))
    };
    let (mut reader, first, _write) = tokio::time::timeout(ACCEPT_WITHIN, accept)
        .await
        .map_err(|_| unavailable(socket, format!("no answer within {ACCEPT_WITHIN:?}")))??;
    if first.is_empty() {
        return Err(unavailable(socket, "it closed the connection"));
    }
    if !is_accepted_line(&first) {
        // Refused before it was taken (malformed, busy, …).
        return decode_reply_line(request.verb(), &first);
    }
    let mut reply = String::new();
    match tokio::time::timeout(reply_within, reader.read_line(&mut reply)).await {
        Ok(Ok(n)) if n > 0 => decode_reply_line(request.verb(), &reply),
        Ok(Ok(_)) => Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "mytunneld serve accepted the request and closed the connection without an answer (did it stop?)",
        )),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!("mytunneld serve's answer could not be read: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!("mytunneld serve accepted the request but did not answer within {reply_within:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_caller_is_the_uid_not_the_environment() {
        // Whatever USER says, the owner is the password-database name of the uid.
        let uid = nix::unistd::getuid();
        let caller = caller_for_uid(uid.as_raw(), &AdminUsers::default()).unwrap();
        let expected = nix::unistd::User::from_uid(uid).unwrap().unwrap().name;
        assert_eq!(caller.owner().as_str(), expected);
        let admins: AdminUsers = expected.parse().unwrap();
        let listed = caller_for_uid(uid.as_raw(), &admins).unwrap();
        assert_eq!(listed.privilege(), mytunnel_core::policy::Privilege::Admin);
    }
}
