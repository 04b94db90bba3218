//! The supervisor of a running tunnel: heartbeat, reconnect, re-allocation of a lease lost
//! to expiry, the move to the next of the edge's destinations when its own cannot be
//! reached, and the end of a tunnel whose lease was ended on purpose.

use super::*;
use crate::edge::{Current, Move};

/// The event of a move of the connection from `from` to `to`.
pub(super) fn moved_event(from: String, to: String, how: &Move) -> TunnelEvent {
    TunnelEvent::EdgeMoved {
        from,
        to,
        reason: how.reason.clone(),
    }
}

pub(super) async fn allocate(
    transport: &dyn Transport,
    request: &AllocateRequest,
) -> Result<LeaseDto, TransportError> {
    call(transport, calls::Allocate(request.clone())).await
}

/// Releases the lease. A lease that has already ended (released by `mytunnel stop`,
/// expired, deleted) is what releasing wants, so that is not an error.
pub(super) async fn release(
    transport: &dyn Transport,
    lease: &LeaseDto,
) -> Result<(), TransportError> {
    match call(
        transport,
        calls::Release(LeaseRef::Id(lease.lease_id.clone())),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(TransportError::Refused(e))
            if matches!(e.code, ErrorCode::LeaseNotActive | ErrorCode::LeaseNotFound) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// How often `open()` retries a refused data plane (0.5 + 1 + 2 + 4 s of waiting).
pub(super) const OPEN_FORWARD_RETRIES: u32 = 4;

/// What a heartbeat led to.
pub(super) enum Beat {
    /// The same lease, renewed or not.
    Same,
    /// A new lease (the old one was lost and the name allocated again).
    Changed,
    /// The lease was ended on purpose, or lost and its name taken: the tunnel ends.
    Ended(TunnelError),
}

/// Asks the edge how lease `id` ended: its list keeps a released or expired lease (as a
/// tombstone) until cleanup purges it, and has no row for a deleted one (`rm`, or an
/// admin's takeover). Only an expiry takes the name again; when the list cannot be had,
/// nothing is decided and the next heartbeat asks again.
pub(super) async fn why_gone(transport: &dyn Transport, id: &mytunnel_core::LeaseId) -> Gone {
    let listed = call(
        transport,
        calls::List(mytunnel_core::protocol::ListScope::Own),
    )
    .await;
    let leases = match listed {
        Ok(leases) => leases,
        Err(e) => return Gone::Unknown(format!("cannot tell how the lease ended: {e}")),
    };
    match leases.iter().find(|l| &l.lease_id == id) {
        Some(l) if l.state == mytunnel_core::LeaseState::Released => {
            Gone::OnPurpose(LeaseEnd::Released)
        }
        Some(_) => Gone::Expired,
        None => Gone::OnPurpose(LeaseEnd::DeletedOrTakenOver),
    }
}

/// Why the edge no longer has the lease active, as its own list tells.
pub(super) enum Gone {
    /// Expired for missed heartbeats (or unknown): take the name again.
    Expired,
    /// Ended on purpose: the tunnel ends.
    OnPurpose(LeaseEnd),
    /// The edge's list could not be had: decide at the next heartbeat.
    Unknown(String),
}

/// Why allocating a lost name again failed.
pub(super) enum Reacquire {
    /// Another lease holds the name.
    NameTaken(TunnelError),
    /// Anything else: try again later.
    Retry(String),
}

pub(super) enum Next {
    Stop,
    Heartbeat,
    ForwardEnded(String),
}

/// What one step of reconnecting came to.
enum Step {
    /// The data plane is up again.
    Up,
    /// The tunnel ends, with this result.
    End(Result<(), TunnelError>),
    /// Try again after the next wait; why this try failed.
    Again(String),
}

/// The fields drop in order: `closing` last, so that when [`Edge::close`] sees every
/// receiver gone, this tunnel's clone of the edge is gone too.
pub(super) struct Supervisor {
    pub(super) edge: Edge,
    /// Where the forward connects; `None` once closed.
    pub(super) relay: Option<ForwardEnd>,
    pub(super) reallocate: AllocateRequest,
    pub(super) reconnect: Reconnect,
    pub(super) events: broadcast::Sender<TunnelEvent>,
    pub(super) lease_tx: watch::Sender<LeaseDto>,
    pub(super) lease: LeaseDto,
    /// The edge's destination (index) the lease was allocated on: while the edge's
    /// connection reaches another, the tunnel takes its name again there.
    pub(super) home: usize,
    /// The generation of the connection last reported ([`TunnelEvent::EdgeMoved`]).
    pub(super) announced: u64,
    pub(super) forward: Box<dyn Forward>,
    /// Says when [`Edge::close`] began: the tunnel stops as if its handle asked.
    pub(super) closing: watch::Receiver<bool>,
}

/// Resolves once `Edge::close` began (never, should the edge's sender be gone: it lives
/// as long as the supervisor's own clone of the edge).
async fn edge_closing(closing: &mut watch::Receiver<bool>) {
    if closing.wait_for(|closing| *closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Supervisor {
    /// The transport of the edge's connection now.
    fn transport(&self) -> Arc<dyn Transport> {
        self.edge.transport()
    }

    fn emit(&self, event: TunnelEvent) {
        tracing::debug!(%event, "tunnel event");
        let _ = self.events.send(event);
    }

    fn heartbeat_timer(&self) -> tokio::time::Interval {
        let period = heartbeat_interval(Duration::from_secs(self.lease.ttl_seconds));
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    }

    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Result<(), TunnelError> {
        let mut heartbeat = self.heartbeat_timer();
        loop {
            let next = tokio::select! {
                _ = &mut stop => Next::Stop,
                () = edge_closing(&mut self.closing) => Next::Stop,
                _ = heartbeat.tick() => Next::Heartbeat,
                end = self.forward.ended() => Next::ForwardEnded(end.reason),
            };
            match next {
                Next::Stop => return self.shutdown().await,
                Next::Heartbeat => match self.heartbeat().await {
                    Beat::Same => {}
                    Beat::Changed => heartbeat = self.heartbeat_timer(),
                    Beat::Ended(end) => return Err(end),
                },
                Next::ForwardEnded(reason) => {
                    if self.reconnect == Reconnect::Never {
                        self.close_relay().await;
                        let _ = release(self.transport().as_ref(), &self.lease).await;
                        self.emit(TunnelEvent::Released {
                            lease_id: self.lease.lease_id.clone(),
                        });
                        return Err(TunnelError::ForwardEnded(reason));
                    }
                    match self.reconnect_forward(reason, &mut stop).await {
                        Some(result) => return result,
                        None => heartbeat = self.heartbeat_timer(),
                    }
                }
            }
        }
    }

    /// One heartbeat; re-allocates a lost lease.
    async fn heartbeat(&mut self) -> Beat {
        let beat = calls::Heartbeat(self.lease.lease_id.clone());
        match call(self.transport().as_ref(), beat).await {
            Ok(lease) => {
                self.emit(TunnelEvent::Renewed {
                    expires_at: lease.expires_at,
                });
                self.set_lease(lease);
                Beat::Same
            }
            Err(TransportError::Refused(e))
                if matches!(e.code, ErrorCode::LeaseNotFound | ErrorCode::LeaseNotActive) =>
            {
                match self.why_gone().await {
                    Gone::Expired => {}
                    Gone::OnPurpose(how) => {
                        self.forward.stop().await;
                        self.close_relay().await;
                        return Beat::Ended(self.ended(how));
                    }
                    Gone::Unknown(error) => {
                        self.emit(TunnelEvent::HeartbeatFailed { error });
                        return Beat::Same;
                    }
                }
                self.emit(TunnelEvent::Lost {
                    reason: e.message.clone(),
                });
                self.forward.stop().await;
                match self.reacquire().await {
                    Ok(()) => Beat::Changed,
                    Err(Reacquire::NameTaken(end)) => Beat::Ended(end),
                    Err(Reacquire::Retry(reason)) => {
                        self.emit(TunnelEvent::HeartbeatFailed { error: reason });
                        Beat::Same
                    }
                }
            }
            Err(e) => {
                self.emit(TunnelEvent::HeartbeatFailed {
                    error: e.to_string(),
                });
                Beat::Same
            }
        }
    }

    /// Asks the edge how the lease ended: its list keeps a released or expired lease (as
    /// a tombstone) until cleanup purges it, and has no row for a deleted one (`rm`, or an
    /// admin's takeover). Only an expiry takes the name again; when the list cannot be
    /// had, the tunnel keeps trying as for an expiry.
    async fn why_gone(&mut self) -> Gone {
        let transport = self.transport();
        let id = self.lease.lease_id.clone();
        why_gone(transport.as_ref(), &id).await
    }

    /// The end of a tunnel whose lease was ended on purpose: said as an event, then as
    /// the tunnel's error.
    fn ended(&self, how: LeaseEnd) -> TunnelError {
        let end = TunnelError::LeaseEnded {
            lease_id: self.lease.lease_id.clone(),
            how,
        };
        self.emit(TunnelEvent::Ended {
            reason: end.to_string(),
        });
        end
    }

    fn set_lease(&mut self, lease: LeaseDto) {
        self.lease = lease.clone();
        let _ = self.lease_tx.send(lease);
    }

    /// Allocates the name again and reopens the data plane to the new lease.
    async fn reacquire(&mut self) -> Result<(), Reacquire> {
        let current = self.edge.current();
        let lease = match allocate(current.transport.as_ref(), &self.reallocate).await {
            Ok(lease) => lease,
            // Another lease holds the name now: the URL is gone for good.
            Err(TransportError::Refused(e)) if e.code == ErrorCode::SlugTaken => {
                return Err(Reacquire::NameTaken(TunnelError::Allocate(
                    TransportError::Refused(e),
                )))
            }
            Err(e) => return Err(Reacquire::Retry(e.to_string())),
        };
        self.emit(TunnelEvent::Allocated {
            url: format!("https://{}", lease.host),
            lease: lease.clone(),
        });
        self.set_lease(lease);
        self.home = current.index;
        self.announced = current.generation;
        self.open_forward()
            .await
            .map_err(|e| Reacquire::Retry(e.to_string()))
    }

    /// Takes the name again on the destination the edge's connection reaches now, which
    /// is not the one the lease was allocated on (the connection moved): allocates it
    /// there, naming the old lease as the one this replaces (the edges share the lease
    /// database, where it would otherwise hold the name until its TTL ran out), then opens
    /// the data plane to the new lease.
    async fn relocate(&mut self, current: &Current, stop: &mut oneshot::Receiver<()>) -> Step {
        if self.announced != current.generation {
            self.announced = current.generation;
            if let Some(how) = &current.moved {
                let from = self.edge.destination_at(self.home).unwrap_or_default();
                let to = self.edge.destination_at(current.index).unwrap_or_default();
                self.emit(moved_event(from, to, how));
            }
        }
        let request = AllocateRequest {
            replaces: self
                .reallocate
                .name
                .as_ref()
                .map(|_| self.lease.lease_id.clone()),
            ..self.reallocate.clone()
        };
        let mut allocated = allocate(current.transport.as_ref(), &request).await;
        if matches!(&allocated, Err(TransportError::Refused(e)) if e.code == ErrorCode::ForbiddenCommand)
            && request.replaces.is_some()
        {
            // An edge older than `--replaces` (so not one sharing this lease database):
            // the name as it would be taken after an expiry.
            allocated = allocate(current.transport.as_ref(), &self.reallocate).await;
        }
        match allocated {
            Ok(lease) => {
                self.forward.stop().await;
                self.emit(TunnelEvent::Allocated {
                    url: format!("https://{}", lease.host),
                    lease: lease.clone(),
                });
                self.set_lease(lease);
                self.home = current.index;
                match self.open_forward().await {
                    Ok(()) => Step::Up,
                    Err(e) => Step::Again(e.to_string()),
                }
            }
            // Another lease holds the name: the URL is gone for good.
            Err(TransportError::Refused(e)) if e.code == ErrorCode::SlugTaken => {
                Step::End(Err(TunnelError::Allocate(TransportError::Refused(e))))
            }
            // This destination cannot be reached either: on to the next one.
            Err(TransportError::Unreachable(why)) => {
                match self.move_edge(current, &why, stop).await {
                    Ok(_) => Step::Again(why),
                    Err(step) => step,
                }
            }
            Err(e) => Step::Again(e.to_string()),
        }
    }

    /// Moves the edge's connection on from `seen`, which cannot be reached (see
    /// [`Edge::move_on`]); the handle or the edge's `close` stops the tunnel meanwhile.
    async fn move_edge(
        &mut self,
        seen: &Current,
        why: &str,
        stop: &mut oneshot::Receiver<()>,
    ) -> Result<Current, Step> {
        let moved = tokio::select! {
            _ = &mut *stop => None,
            () = edge_closing(&mut self.closing) => None,
            moved = self.edge.move_on(seen, why) => Some(moved),
        };
        match moved {
            None => Err(Step::End(self.shutdown().await)),
            Some(Ok(moved)) => Ok(moved),
            Some(Err(e)) => Err(Step::Again(e.to_string())),
        }
    }

    async fn open_forward(&mut self) -> Result<(), TransportError> {
        let transport = self.transport();
        let forward = transport
            .open_forward(ForwardSpec {
                edge_bind: self.lease.bind_target(),
                local_port: self.relay.as_ref().map_or(0, ForwardEnd::port),
            })
            .await?;
        self.forward = forward;
        self.emit(TunnelEvent::Forwarding {
            edge_bind: self.lease.bind_target(),
        });
        Ok(())
    }

    /// Retries the data plane with backoff until it is up (`None`), or the handle asks to
    /// stop (`Some(result of shutdown)`).
    async fn reconnect_forward(
        &mut self,
        mut reason: String,
        stop: &mut oneshot::Receiver<()>,
    ) -> Option<Result<(), TunnelError>> {
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let delay = jittered_backoff(attempt);
            self.emit(TunnelEvent::Reconnecting {
                attempt,
                delay,
                reason: reason.clone(),
            });
            let stopping = tokio::select! {
                _ = &mut *stop => true,
                () = edge_closing(&mut self.closing) => true,
                () = tokio::time::sleep(delay) => false,
            };
            if stopping {
                return Some(self.shutdown().await);
            }
            // The edge's connection moved (this tunnel found its edge unreachable, or
            // another tunnel on the same connection did): the name is taken again there.
            let current = self.edge.current();
            if current.index != self.home {
                match self.relocate(&current, stop).await {
                    Step::Up => return None,
                    Step::End(result) => return Some(result),
                    Step::Again(why) => {
                        reason = why;
                        continue;
                    }
                }
            }
            // The lease may have expired while the data plane was down.
            let check = calls::Heartbeat(self.lease.lease_id.clone());
            match call(current.transport.as_ref(), check).await {
                Ok(lease) => self.set_lease(lease),
                Err(TransportError::Refused(e))
                    if matches!(e.code, ErrorCode::LeaseNotFound | ErrorCode::LeaseNotActive) =>
                {
                    match self.why_gone().await {
                        Gone::Expired => {}
                        Gone::OnPurpose(how) => return Some(Err(self.ended(how))),
                        Gone::Unknown(e) => {
                            reason = e;
                            continue;
                        }
                    }
                    self.emit(TunnelEvent::Lost {
                        reason: e.message.clone(),
                    });
                    match self.reacquire().await {
                        Ok(()) => return None,
                        Err(Reacquire::NameTaken(end)) => return Some(Err(end)),
                        Err(Reacquire::Retry(e)) => {
                            reason = e;
                            continue;
                        }
                    }
                }
                // The edge cannot be reached (its ssh connection fails, not a refusal):
                // move to the next destination and take the name there at once.
                Err(TransportError::Unreachable(why)) if self.edge.can_move() => {
                    let step = match self.move_edge(&current, &why, stop).await {
                        Ok(moved) if moved.index != self.home => self.relocate(&moved, stop).await,
                        // Moved and back meanwhile: the lease's own edge, checked next time.
                        Ok(_) => Step::Again(why),
                        Err(step) => step,
                    };
                    match step {
                        Step::Up => return None,
                        Step::End(result) => return Some(result),
                        Step::Again(why) => {
                            reason = why;
                            continue;
                        }
                    }
                }
                Err(_) => {}
            }
            match self.open_forward().await {
                Ok(()) => return None,
                Err(e) => reason = e.to_string(),
            }
        }
    }

    /// Closes every connection the tunnel carries (see `relay.rs` and `proxy.rs`).
    async fn close_relay(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.close().await;
        }
    }

    /// Stops the forward, closes the connections it carried, then releases the lease:
    /// the edge sees neither a listener nor an open connection for it.
    async fn shutdown(&mut self) -> Result<(), TunnelError> {
        self.forward.stop().await;
        self.close_relay().await;
        release(self.transport().as_ref(), &self.lease)
            .await
            .map_err(TunnelError::Release)?;
        self.emit(TunnelEvent::Released {
            lease_id: self.lease.lease_id.clone(),
        });
        Ok(())
    }
}
