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
use mytunnel_client::{Edge, Reconnect, Tunnel, TunnelError, TunnelEvent, TunnelEvents};
use mytunnel_core::policy::{Caller, OwnerScope};
use mytunnel_core::protocol::{CtlRequest, CtlResponse, LeaseDto, ListScope, Verb};
use mytunnel_core::route::RouteBackend;
use mytunnel_core::transport::{Forward, ForwardSpec, Transport, TransportError};
use mytunnel_core::{LeaseRef, LeaseState, PortRange, Ttl};
use mytunnel_edge::in_process::{ForwardMode, InProcessTransport};
use mytunnel_edge::memory_routes::MemoryRoutes;
use mytunnel_edge::service::{LeaseService, ServiceSettings, SystemClock};
use mytunnel_edge::SqlLeaseStore;
use mytunnel_test_support::service_settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// The edge side of a test: the service and what it saw.
#[derive(Debug)]
struct TestEdge {
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

async fn edge() -> TestEdge {
    let store = Arc::new(SqlLeaseStore::open_in_memory().await.unwrap());
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
    TestEdge {
        transport,
        routes,
        service,
        calls: Arc::default(),
    }
}

impl TestEdge {
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
async fn wait_for(events: &mut TunnelEvents, want: impl Fn(&TunnelEvent) -> bool) -> TunnelEvent {
    loop {
        let event = events.next().await.expect("event stream ended");
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
        events.next().await.unwrap(),
        TunnelEvent::Allocated { .. }
    ));
    assert!(matches!(
        events.next().await.unwrap(),
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
async fn expire_every_lease(edge: &TestEdge) {
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
        let first = events.next().await.unwrap();
        assert!(
            matches!(first, TunnelEvent::ProbeWarning { .. }),
            "{status} {body:?}: {first:?}"
        );
        assert!(matches!(
            events.next().await.unwrap(),
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
    while events.next().await.is_some() {}
}

// ---------------------------------------------------------------------------------------
// One edge, many tunnels

#[tokio::test]
async fn one_edge_carries_many_tunnels_on_its_one_transport() {
    let test = edge().await;
    let app = local_app(200, "hello").await;
    let transport = test.transport();
    let edge = Edge::from_transport(transport.clone());
    let mut tunnels = Vec::new();
    for name in ["shop", "blog", "wiki"] {
        tunnels.push(edge.http(app).name(name).open().await.unwrap());
    }
    let urls: Vec<&str> = tunnels.iter().map(|t| t.url()).collect();
    assert_eq!(
        urls,
        [
            "https://shop.t.test",
            "https://blog.t.test",
            "https://wiki.t.test"
        ]
    );
    // The three go through the edge's one transport: no tunnel holds one of its own.
    assert_eq!(
        Arc::strong_count(&transport),
        2,
        "the test's and the edge's"
    );
    assert_eq!(test.transport.forwards_opened(), 3);
    assert_eq!(
        *test.calls.lock().unwrap(),
        vec![Verb::Allocate, Verb::Allocate, Verb::Allocate]
    );
    assert_eq!(test.route_ids().await.len(), 3);
    for tunnel in tunnels {
        tunnel.close().await.unwrap();
    }
    // Closing every tunnel leaves the edge connected.
    assert_eq!(Arc::strong_count(&transport), 2);
    assert_eq!(edge.list(ListScope::Own).await.unwrap().len(), 3);
}

#[tokio::test]
async fn closing_one_tunnel_leaves_the_others_heartbeating() {
    let test = edge().await;
    let app = local_app(200, "hello").await;
    let edge = Edge::builder()
        .transport(test.transport())
        .connect()
        .await
        .unwrap();
    let closed = edge.http(app).name("closed").open().await.unwrap();
    let mut left = Vec::new();
    for name in ["left", "right"] {
        let mut tunnel = edge.http(app).name(name).open().await.unwrap();
        let events = tunnel.events();
        left.push((tunnel, events));
    }
    let id = closed.lease().lease_id;
    closed.close().await.unwrap();

    tokio::time::pause();
    for (_, events) in &mut left {
        wait_for(events, |e| matches!(e, TunnelEvent::Renewed { .. })).await;
    }
    tokio::time::resume();
    for lease in test.leases().await {
        let expected = if lease.id == id {
            LeaseState::Released
        } else {
            LeaseState::Active
        };
        assert_eq!(lease.state, expected, "{}", lease.slug);
    }
    let calls = test.calls.lock().unwrap().clone();
    assert_eq!(
        calls[..4],
        [
            Verb::Allocate,
            Verb::Allocate,
            Verb::Allocate,
            Verb::Release
        ]
    );
    assert!(
        calls.iter().filter(|v| **v == Verb::Heartbeat).count() >= 2,
        "{calls:?}"
    );
    assert_eq!(test.transport.forwards_opened(), 3);
    for (tunnel, _) in left {
        tunnel.close().await.unwrap();
    }
}

#[tokio::test]
async fn closing_the_edge_closes_its_tunnels() {
    let test = edge().await;
    let app = local_app(200, "hello").await;
    let edge = Edge::from_transport(test.transport());
    let mut tunnels = Vec::new();
    for name in ["one", "two"] {
        let mut tunnel = edge.http(app).name(name).open().await.unwrap();
        let events = tunnel.events();
        tunnels.push((tunnel, events));
    }
    let clone = edge.clone();
    edge.close().await;
    // Both tunnels released their leases before `close` returned, and ended.
    assert!(test
        .leases()
        .await
        .iter()
        .all(|l| l.state == LeaseState::Released));
    for (mut tunnel, mut events) in tunnels {
        tunnel.closed().await.unwrap();
        wait_for(&mut events, |e| matches!(e, TunnelEvent::Released { .. })).await;
        assert_eq!(events.next().await, None);
    }
    // A clone can open no more tunnels; its control calls work until it is dropped.
    let err = clone.http(app).open().await.unwrap_err();
    assert_eq!(err, TunnelError::EdgeClosed);
    assert_eq!(clone.list(ListScope::Own).await.unwrap().len(), 2);
    assert_eq!(test.transport.forwards_opened(), 2);
}

#[tokio::test]
async fn a_one_line_tunnel_keeps_its_own_edge_until_it_ends() {
    let test = edge().await;
    let app = local_app(200, "hello").await;
    let transport = test.transport();
    let tunnel = Tunnel::http(app)
        .transport(transport.clone())
        .open()
        .await
        .unwrap();
    assert_eq!(
        Arc::strong_count(&transport),
        2,
        "the test's and the tunnel's edge"
    );
    tunnel.close().await.unwrap();
    assert_eq!(
        Arc::strong_count(&transport),
        1,
        "the tunnel's own edge ended with it"
    );
    // Edge options on a connected edge are refused before anything runs.
    let edge = Edge::from_transport(transport);
    let err = edge.http(app).ssh_bin("/bin/ssh").open().await.unwrap_err();
    assert!(matches!(err, TunnelError::InvalidOptions(_)), "{err}");
    assert_eq!(
        *test.calls.lock().unwrap(),
        vec![Verb::Allocate, Verb::Release]
    );
}

/// Holds every release until the test gives a permit.
#[derive(Debug)]
struct HeldRelease {
    inner: Arc<dyn Transport>,
    permits: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl Transport for HeldRelease {
    async fn ctl(&self, request: &CtlRequest) -> Result<CtlResponse, TransportError> {
        if request.verb() == Verb::Release {
            self.permits.acquire().await.unwrap().forget();
        }
        self.inner.ctl(request).await
    }
    async fn open_forward(&self, spec: ForwardSpec) -> Result<Box<dyn Forward>, TransportError> {
        self.inner.open_forward(spec).await
    }
}

/// On a single-threaded runtime, a drop that waited for the release (held here until
/// after the drops) would never return: the release can only run once the drop has.
#[tokio::test(flavor = "current_thread")]
async fn dropping_a_handle_returns_at_once_and_releases_in_the_background() {
    let test = edge().await;
    let app = local_app(200, "hello").await;
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    let transport: Arc<dyn Transport> = Arc::new(HeldRelease {
        inner: test.transport(),
        permits: permits.clone(),
    });
    let edge = Edge::from_transport(transport.clone());
    let mut on_edge = edge.http(app).name("shared").open().await.unwrap();
    let mut own = Tunnel::http(app)
        .name("own")
        .transport(transport)
        .open()
        .await
        .unwrap();
    let mut events = [on_edge.events(), own.events()];
    let start = std::time::Instant::now();
    drop(on_edge);
    drop(own);
    // Not a wait: a bound a million times what the drops take, against a drop that waits
    // for a while and gives up.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(test
        .leases()
        .await
        .iter()
        .all(|l| l.state == LeaseState::Active));

    permits.add_permits(2);
    for events in &mut events {
        wait_for(events, |e| matches!(e, TunnelEvent::Released { .. })).await;
        assert_eq!(events.next().await, None, "the tunnel ended");
    }
    assert!(test
        .leases()
        .await
        .iter()
        .all(|l| l.state == LeaseState::Released));
    // The edge the first tunnel was opened on is still up.
    assert_eq!(edge.list(ListScope::Own).await.unwrap().len(), 2);
}
