//! The SDK over the in-process transport: no sshd, a real lease service (in-memory SQLite,
//! in-memory routes) and a real local app for the probe.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mytunnel_client::{Reconnect, Tunnel, TunnelError, TunnelEvent};
use mytunnel_core::policy::{Caller, OwnerScope};
use mytunnel_core::protocol::{CtlRequest, CtlResponse, LeaseDto, Verb};
use mytunnel_core::route::RouteBackend;
use mytunnel_core::transport::{Forward, ForwardSpec, Transport, TransportError};
use mytunnel_core::{LeaseRef, LeaseState, PortRange, Ttl};
use mytunnel_edge::in_process::{ForwardMode, InProcessTransport};
use mytunnel_edge::memory_routes::MemoryRoutes;
use mytunnel_edge::service::{LeaseService, ServiceSettings, SystemClock};
use mytunnel_edge::SqliteLeaseStore;
use mytunnel_test_support::service_settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

/// A local app answering every request with `status` and `body`.
async fn local_app(status: u16, body: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Debug)]
struct Edge {
    transport: InProcessTransport,
    routes: Arc<MemoryRoutes>,
    service: LeaseService,
    calls: Arc<Mutex<Vec<Verb>>>,
}

/// Records every ctl verb before passing it on.
#[derive(Debug)]
struct Recording {
    inner: InProcessTransport,
    calls: Arc<Mutex<Vec<Verb>>>,
}

#[async_trait]
impl Transport for Recording {
    async fn ctl(&self, request: &CtlRequest) -> Result<CtlResponse, TransportError> {
        self.calls.lock().unwrap().push(request.verb());
        self.inner.ctl(request).await
    }
    async fn open_forward(&self, spec: ForwardSpec) -> Result<Box<dyn Forward>, TransportError> {
        self.inner.open_forward(spec).await
    }
}

async fn edge() -> Edge {
    let store = Arc::new(SqliteLeaseStore::open_in_memory().await.unwrap());
    let routes = Arc::new(MemoryRoutes::new());
    let service = LeaseService::new(
        store,
        routes.clone(),
        Arc::new(SystemClock),
        ServiceSettings {
            lease_ttl: Ttl::configured(Duration::from_secs(120)),
            health_timeout: Duration::from_secs(5),
            ..service_settings(
                "t.test".parse().unwrap(),
                PortRange::new(21000, 21009).unwrap(),
            )
        },
    );
    let caller = Caller::from_identity(1000, "alice".parse().unwrap(), &Default::default());
    let transport = InProcessTransport::new(service.clone(), caller, ForwardMode::Simulated);
    Edge {
        transport,
        routes,
        service,
        calls: Arc::default(),
    }
}

impl Edge {
    fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(Recording {
            inner: self.transport.clone(),
            calls: self.calls.clone(),
        })
    }

    async fn leases(&self) -> Vec<mytunnel_core::Lease> {
        self.service.store().list(&OwnerScope::All).await.unwrap()
    }

    async fn route_ids(&self) -> Vec<String> {
        self.routes
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    }
}

/// The next event matching `want`, failing on a closed stream.
async fn wait_for(
    events: &mut broadcast::Receiver<TunnelEvent>,
    want: impl Fn(&TunnelEvent) -> bool,
) -> TunnelEvent {
    loop {
        let event = events.recv().await.expect("event stream ended");
        if want(&event) {
            return event;
        }
    }
}

#[tokio::test]
async fn open_gives_the_url_and_close_releases() {
    let edge = edge().await;
    let app = local_app(200, "hello").await;
    let mut tunnel = Tunnel::http(app)
        .name("portal")
        .transport(edge.transport())
        .open()
        .await
        .unwrap();
    assert_eq!(tunnel.url(), "https://portal.t.test");
    let lease = tunnel.lease();
    assert_eq!(lease.owner.as_str(), "alice");
    assert_eq!(
        edge.route_ids().await,
        vec![format!("mytunnel-{}", lease.lease_id)]
    );
    let mut events = tunnel.events();
    assert!(matches!(
        events.recv().await.unwrap(),
        TunnelEvent::Allocated { .. }
    ));
    assert!(matches!(
        events.recv().await.unwrap(),
        TunnelEvent::Forwarding {
            edge_bind: mytunnel_core::BindTarget::LoopbackPort(21000)
        }
    ));

    tunnel.close().await.unwrap();
    assert!(matches!(
        wait_for(&mut events, |e| matches!(e, TunnelEvent::Released { .. })).await,
        TunnelEvent::Released { lease_id } if lease_id == lease.lease_id
    ));
    let leases = edge.leases().await;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].state, LeaseState::Released);
    assert!(edge.route_ids().await.is_empty());
    assert_eq!(
        *edge.calls.lock().unwrap(),
        vec![Verb::Allocate, Verb::Release]
    );
}

/// `mytunnel stop` released the lease while its tunnel ran: closing the tunnel afterwards
/// finds the lease already ended, which is what it wanted, not an error.
#[tokio::test]
async fn closing_a_tunnel_whose_lease_was_already_released_succeeds() {
    let edge = edge().await;
    let app = local_app(200, "hello").await;
    let tunnel = Tunnel::http(app)
        .name("portal")
        .transport(edge.transport())
        .open()
        .await
        .unwrap();
    let id = tunnel.lease().lease_id;
    edge.service
        .store()
        .release(
            &"alice".parse().unwrap(),
            &mytunnel_core::LeaseRef::Id(id),
            mytunnel_core::Timestamp::EPOCH,
        )
        .await
        .unwrap();
    tunnel.close().await.unwrap();
}

#[tokio::test]
async fn dropping_the_handle_releases() {
    let edge = edge().await;
    let app = local_app(200, "hello").await;
    let mut tunnel = Tunnel::http(app)
        .transport(edge.transport())
        .open()
        .await
        .unwrap();
    let mut events = tunnel.events();
    let id = tunnel.lease().lease_id;
    // A generated readable name.
    assert!(tunnel.url().ends_with(".t.test"));
    drop(tunnel);
    wait_for(
        &mut events,
        |e| matches!(e, TunnelEvent::Released { lease_id } if *lease_id == id),
    )
    .await;
    assert_eq!(edge.leases().await[0].state, LeaseState::Released);
}

/// Answers allocate and heartbeat from memory, at once, on the test's own runtime, so
/// paused time moves only when the supervisor waits (the SQLite edge answers from another
/// thread, during which paused time may jump to any pending timer).
#[derive(Debug)]
struct Scripted {
    lease: LeaseDto,
    heartbeats: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

#[async_trait]
impl Transport for Scripted {
    async fn ctl(&self, request: &CtlRequest) -> Result<CtlResponse, TransportError> {
        if request.verb() == Verb::Heartbeat {
            self.heartbeats
                .lock()
                .unwrap()
                .push(tokio::time::Instant::now());
        }
        Ok(CtlResponse::Lease(self.lease.clone()))
    }
    async fn open_forward(&self, _spec: ForwardSpec) -> Result<Box<dyn Forward>, TransportError> {
        Ok(Box::new(NeverEnds))
    }
}

#[derive(Debug)]
struct NeverEnds;

#[async_trait]
impl Forward for NeverEnds {
    async fn ended(&mut self) -> mytunnel_core::transport::ForwardEnd {
        std::future::pending().await
    }
    async fn stop(&mut self) {}
}

#[tokio::test]
async fn heartbeats_renew_on_schedule() {
    let app = local_app(200, "hello").await;
    for (ttl_seconds, period) in [(120, 40), (30, 10), (12, 10), (3600, 1200)] {
        let lease: LeaseDto = serde_json::from_value(serde_json::json!({
            "lease_id": "lease_abcdefghijklmnop", "slug": "beat", "host": "beat.t.test",
            "owner": "alice", "edge_bind_port": 21000, "created_at": "2026-11-29T10:00:00Z",
            "updated_at": "2026-11-29T10:00:00Z", "expires_at": "2026-11-29T10:02:00Z",
            "state": "active", "ttl_seconds": ttl_seconds
        }))
        .unwrap();
        let heartbeats = Arc::new(Mutex::new(Vec::new()));
        let transport = Arc::new(Scripted {
            lease,
            heartbeats: heartbeats.clone(),
        });
        let mut tunnel = Tunnel::http(app)
            .name("beat")
            .transport(transport)
            .open()
            .await
            .unwrap();
        let mut events = tunnel.events();
        tokio::time::pause();
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            wait_for(&mut events, |e| matches!(e, TunnelEvent::Renewed { .. })).await;
        }
        let sent: Vec<u64> = heartbeats
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.duration_since(start).as_secs())
            .collect();
        // max(TTL/3, 10s) apart, the first one period after opening.
        assert_eq!(
            sent,
            vec![period, 2 * period, 3 * period],
            "ttl {ttl_seconds}s"
        );
        tokio::time::resume();
        tunnel.close().await.unwrap();
    }
}

/// Cleanup as if every active lease missed its heartbeats: expired, tombstoned.
async fn expire_every_lease(edge: &Edge) {
    let far = mytunnel_core::Timestamp::from_unix_seconds(4_000_000_000).unwrap();
    let expired = edge.service.store().expire_stale(far).await.unwrap();
    assert!(!expired.is_empty());
}

#[tokio::test]
async fn a_lease_ended_on_purpose_ends_the_tunnel_and_keeps_the_name_free() {
    for released in [true, false] {
        let edge = edge().await;
        let app = local_app(200, "hello").await;
        let mut tunnel = Tunnel::http(app)
            .name("ended")
            .transport(edge.transport())
            .open()
            .await
            .unwrap();
        let mut events = tunnel.events();
        let lease = tunnel.lease();
        let alice = Caller::from_identity(1000, "alice".parse().unwrap(), &Default::default());
        let reference = LeaseRef::Id(lease.lease_id.clone());
        // `mytunnel stop` releases it; `mytunnel rm` (or an admin's takeover) deletes it.
        if released {
            edge.service.release(&alice, &reference).await.unwrap();
        } else {
            edge.service.delete(&alice, &reference).await.unwrap();
        }
        // The client learns it when its data plane drops and it checks the lease before
        // binding again (a heartbeat finds it the same way).
        edge.transport.kill_forwards();
        let ended = wait_for(&mut events, |e| matches!(e, TunnelEvent::Ended { .. })).await;
        let end = tunnel.closed().await.unwrap_err();
        let expected = if released {
            mytunnel_client::LeaseEnd::Released
        } else {
            mytunnel_client::LeaseEnd::DeletedOrTakenOver
        };
        assert_eq!(
            end,
            TunnelError::LeaseEnded {
                lease_id: lease.lease_id.clone(),
                how: expected
            }
        );
        let said = end.to_string();
        assert!(
            said.contains(if released {
                "mytunnel stop"
            } else {
                "taken over by an admin"
            }),
            "{said}"
        );
        assert_eq!(ended.to_string(), said);
        // Nothing took the name again: no active lease is left.
        let active = edge.service.store().list(&OwnerScope::All).await.unwrap();
        assert!(
            active.iter().all(|l| l.state != LeaseState::Active),
            "{active:?}"
        );
        assert_eq!(edge.transport.forwards_opened(), 1);
        drop(tunnel);
        drop(events);
        drop(edge);
    }
}

#[tokio::test]
async fn a_lost_lease_is_allocated_again_under_the_same_name() {
    let edge = edge().await;
    let app = local_app(200, "hello").await;
    let mut tunnel = Tunnel::http(app)
        .transport(edge.transport())
        .open()
        .await
        .unwrap();
    let mut events = tunnel.events();
    let url = tunnel.url().to_owned();
    let old = tunnel.lease();
    // The edge loses the lease: cleanup expires it (missed heartbeats).
    expire_every_lease(&edge).await;
    tokio::time::pause();
    wait_for(&mut events, |e| matches!(e, TunnelEvent::Lost { .. })).await;
    let allocated = wait_for(&mut events, |e| matches!(e, TunnelEvent::Allocated { .. })).await;
    let TunnelEvent::Allocated {
        lease,
        url: new_url,
    } = allocated
    else {
        unreachable!()
    };
    assert_eq!(new_url, url, "same name, same URL");
    assert_ne!(lease.lease_id, old.lease_id);
    wait_for(&mut events, |e| matches!(e, TunnelEvent::Forwarding { .. })).await;
    tokio::time::resume();
    assert_eq!(tunnel.lease().lease_id, lease.lease_id);
    assert_eq!(edge.transport.forwards_opened(), 2);
    tunnel.close().await.unwrap();
}

#[tokio::test]
async fn a_killed_data_plane_reconnects() {
    let edge = edge().await;
    let app = local_app(200, "hello").await;
    let mut tunnel = Tunnel::http(app)
        .name("back")
        .transport(edge.transport())
        .open()
        .await
        .unwrap();
    let mut events = tunnel.events();
    tokio::time::pause();
    edge.transport.kill_forwards();
    let reconnecting = wait_for(&mut events, |e| {
        matches!(e, TunnelEvent::Reconnecting { .. })
    })
    .await;
    let TunnelEvent::Reconnecting { attempt, delay, .. } = reconnecting else {
        unreachable!()
    };
    assert_eq!(attempt, 1);
    assert!(
        delay >= Duration::from_millis(375) && delay <= Duration::from_millis(625),
        "{delay:?}"
    );
    wait_for(&mut events, |e| matches!(e, TunnelEvent::Forwarding { .. })).await;
    tokio::time::resume();
    assert_eq!(edge.transport.forwards_opened(), 2);
    assert_eq!(tunnel.url(), "https://back.t.test");
    tunnel.close().await.unwrap();
}

#[tokio::test]
async fn without_reconnect_a_dead_data_plane_ends_the_tunnel() {
    let edge = edge().await;
    let app = local_app(200, "hello").await;
    let mut tunnel = Tunnel::http(app)
        .reconnect(Reconnect::Never)
        .transport(edge.transport())
        .open()
        .await
        .unwrap();
    edge.transport.kill_forwards();
    let end = tunnel.closed().await.unwrap_err();
    assert!(matches!(end, TunnelError::ForwardEnded(_)), "{end}");
    assert_eq!(edge.leases().await[0].state, LeaseState::Released);
}

#[tokio::test]
async fn an_unreachable_app_allocates_nothing() {
    let edge = edge().await;
    let err = Tunnel::http(closed_port())
        .name("ghost")
        .transport(edge.transport())
        .open()
        .await
        .unwrap_err();
    assert!(matches!(err, TunnelError::Probe(_)), "{err}");
    assert!(err.hint().contains("start your app"), "{}", err.hint());
    assert!(edge.calls.lock().unwrap().is_empty(), "no ctl call at all");
    assert!(edge.leases().await.is_empty());
}

#[tokio::test]
async fn an_odd_app_answer_warns_then_opens() {
    for (status, body) in [(500, "boom"), (200, ""), (404, "nope")] {
        let edge = edge().await;
        let app = local_app(status, body).await;
        let mut tunnel = Tunnel::http(app)
            .transport(edge.transport())
            .open()
            .await
            .unwrap();
        let mut events = tunnel.events();
        let first = events.recv().await.unwrap();
        assert!(
            matches!(first, TunnelEvent::ProbeWarning { .. }),
            "{status} {body:?}: {first:?}"
        );
        assert!(matches!(
            events.recv().await.unwrap(),
            TunnelEvent::Allocated { .. }
        ));
        tunnel.close().await.unwrap();
    }
}

#[tokio::test]
async fn edge_refusals_come_back_typed_with_hints() {
    let edge = edge().await;
    let app = local_app(200, "hello").await;
    let tunnel = Tunnel::http(app)
        .name("taken")
        .transport(edge.transport())
        .open()
        .await
        .unwrap();
    let err = Tunnel::http(app)
        .name("taken")
        .transport(edge.transport())
        .open()
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(mytunnel_core::ErrorCode::SlugTaken),
        "{err}"
    );
    assert!(err.hint().contains("--name"), "{}", err.hint());
    let err = Tunnel::http(app)
        .name("taken")
        .takeover(mytunnel_core::protocol::Takeover::Force)
        .transport(edge.transport())
        .open()
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(mytunnel_core::ErrorCode::ForceNotAllowed),
        "{err}"
    );
    tunnel.close().await.unwrap();
}

#[tokio::test]
async fn a_name_lost_to_another_lease_ends_the_tunnel() {
    let edge = edge().await;
    let app = local_app(200, "hello").await;
    let mut tunnel = Tunnel::http(app)
        .name("contested")
        .transport(edge.transport())
        .open()
        .await
        .unwrap();
    let mut events = tunnel.events();
    // The edge loses alice's lease (expired) and bob takes the name.
    expire_every_lease(&edge).await;
    let bob = Caller::from_identity(1001, "bob".parse().unwrap(), &Default::default());
    edge.service
        .allocate(
            &bob,
            mytunnel_core::protocol::AllocateRequest {
                name: Some("contested".parse().unwrap()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::pause();
    wait_for(&mut events, |e| matches!(e, TunnelEvent::Lost { .. })).await;
    let end = tunnel.closed().await.unwrap_err();
    assert_eq!(
        end.code(),
        Some(mytunnel_core::ErrorCode::SlugTaken),
        "{end}"
    );
    // The stream closes with the tunnel.
    while !matches!(
        events.recv().await,
        Err(broadcast::error::RecvError::Closed)
    ) {}
}
