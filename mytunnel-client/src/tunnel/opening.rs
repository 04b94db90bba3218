//! [`Opening`]: a tunnel on a connected edge, from its allocation (on the next of the
//! edge's destinations while one cannot be reached) to a running supervisor — the lease,
//! the forward's local end, the data plane (retried while sshd still holds the port) and
//! the handle.

use std::sync::Arc;

use mytunnel_core::protocol::{AllocateRequest, LeaseDto, Takeover};
use mytunnel_core::transport::{ForwardSpec, TransportError};
use mytunnel_core::Slug;
use tokio::sync::{broadcast, oneshot, watch};

use super::supervisor::{allocate, moved_event, release, Supervisor, OPEN_FORWARD_RETRIES};
use super::{ForwardEnd, ProxyMode, Reconnect, TunnelHandle};
use crate::app_link::AppLink;
use crate::backoff::jittered_backoff;
use crate::edge::{Current, Edge};
use crate::error::TunnelError;
use crate::events::TunnelEvent;
use crate::inspect::ExchangeLog;

/// A tunnel being opened on a connected edge, after the probe.
pub(super) struct Opening {
    pub(super) app: Arc<AppLink>,
    pub(super) name: Option<Slug>,
    pub(super) request: AllocateRequest,
    pub(super) reconnect: Reconnect,
    pub(super) proxy_mode: ProxyMode,
    pub(super) exchange_log: Option<ExchangeLog>,
    /// The edge is the tunnel's own: it closes when the tunnel ends.
    pub(super) owned: bool,
}

impl Opening {
    /// Allocates, opens the data plane and starts the supervisor.
    pub(super) async fn open(
        self,
        edge: Edge,
        events_tx: broadcast::Sender<TunnelEvent>,
        first_events: broadcast::Receiver<TunnelEvent>,
    ) -> Result<TunnelHandle, TunnelError> {
        let emit = |event: TunnelEvent| {
            let _ = events_tx.send(event);
        };
        // Held from before the allocation: `Edge::close` waits for this tunnel too.
        let closing = edge.hold().ok_or(TunnelError::EdgeClosed)?;
        let start = edge.current();
        // The tunnel's own connection: the destinations it passed over are news.
        if let (true, Some(moved)) = (self.owned, &start.moved) {
            emit(moved_event(moved.from.clone(), moved.to.clone(), moved));
        }
        let (lease, current) = allocate_where_reachable(&edge, &self.request, start, &emit).await?;
        let transport = current.transport.as_ref();
        let url = format!("https://{}", lease.host);
        if let Some(domain) = edge.resolved().and_then(|e| e.base_domain.as_deref()) {
            if !lease.host.ends_with(&format!(".{domain}")) {
                emit(TunnelEvent::ProbeWarning {
                    message: format!(
                        "the edge published {} but this profile expects *.{domain}",
                        lease.host
                    ),
                });
            }
        }
        emit(TunnelEvent::Allocated {
            lease: lease.clone(),
            url: url.clone(),
        });

        // The forward ends at the tunnel's proxy (or relay), so that closing the tunnel
        // closes the connections it carries (see `relay.rs`).
        let relay = match ForwardEnd::start(
            self.proxy_mode,
            Arc::clone(&self.app),
            &lease.host,
            self.exchange_log,
            &events_tx,
        )
        .await
        {
            Ok(relay) => relay,
            Err(e) => {
                let _ = release(transport, &lease).await;
                return Err(TunnelError::Forward(TransportError::Unreachable(format!(
                    "cannot listen on a loopback port for the tunnel: {e}"
                ))));
            }
        };
        // sshd may still hold the socket for a client that died without closing (until its
        // ClientAlive check evicts it), so a refused forward is retried a few times.
        let spec = ForwardSpec {
            edge_bind: lease.bind_target(),
            local_port: relay.port(),
        };
        let mut attempt = 0u32;
        let forward = loop {
            match transport.open_forward(spec.clone()).await {
                Ok(forward) => break forward,
                Err(e @ TransportError::Unreachable(_)) if attempt < OPEN_FORWARD_RETRIES => {
                    attempt += 1;
                    let delay = jittered_backoff(attempt);
                    emit(TunnelEvent::Reconnecting {
                        attempt,
                        delay,
                        reason: e.to_string(),
                    });
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    let _ = release(transport, &lease).await;
                    return Err(TunnelError::Forward(e));
                }
            }
        };
        emit(TunnelEvent::Forwarding {
            edge_bind: spec.edge_bind,
        });

        let (lease_tx, lease_rx) = watch::channel(lease.clone());
        let (stop_tx, stop_rx) = oneshot::channel();
        let owned = self.owned.then(|| edge.clone());
        let supervisor = Supervisor {
            edge,
            relay: Some(relay),
            reallocate: AllocateRequest {
                // Keep the URL: a lost lease is allocated again under the same name.
                name: self.name.or_else(|| lease.slug.parse().ok()),
                takeover: Takeover::Refuse,
                ..self.request
            },
            reconnect: self.reconnect,
            events: events_tx.clone(),
            lease_tx,
            lease,
            home: current.index,
            announced: current.generation,
            forward,
            closing,
        };
        let task = tokio::spawn(async move {
            let result = supervisor.run(stop_rx).await;
            // The tunnel's own connection ends with it.
            if let Some(edge) = owned {
                edge.close().await;
            }
            result
        });
        Ok(TunnelHandle {
            url,
            app: self.app,
            lease: lease_rx,
            events: first_events.resubscribe(),
            first_events: Some(first_events),
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// Allocates over the edge's connection; while the destination it reaches cannot be
/// reached, moves the connection on to the next and allocates there (each destination
/// once). An edge's refusal (a name taken, a limit) is its answer: it never moves the
/// connection. Answers the lease and the connection it was allocated over.
async fn allocate_where_reachable(
    edge: &Edge,
    request: &AllocateRequest,
    mut current: Current,
    emit: &impl Fn(TunnelEvent),
) -> Result<(LeaseDto, Current), TunnelError> {
    let mut tried = vec![current.index];
    loop {
        match allocate(current.transport.as_ref(), request).await {
            Ok(lease) => return Ok((lease, current)),
            Err(TransportError::Unreachable(why)) if edge.can_move() => {
                let moved = edge
                    .move_on(&current, &why)
                    .await
                    .map_err(TunnelError::Allocate)?;
                if tried.contains(&moved.index) {
                    return Err(TunnelError::Allocate(TransportError::Unreachable(why)));
                }
                tried.push(moved.index);
                let from = edge.destination_at(current.index).unwrap_or_default();
                let to = edge.destination_at(moved.index).unwrap_or_default();
                if let Some(how) = &moved.moved {
                    emit(moved_event(from, to, how));
                }
                current = moved;
            }
            Err(e) => return Err(TunnelError::Allocate(e)),
        }
    }
}
