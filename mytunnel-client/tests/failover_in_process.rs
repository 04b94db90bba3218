//! Failover between the destinations of one profile, over the in-process transport: two
//! edges (each its own lease service, routes and edge id) on one lease database (a SQLite
//! file), as edges that share a PostgreSQL database are. An edge is made unreachable as a
//! dead host is to ssh: its connection cannot be made, its calls fail as unreachable and
//! its forwards end.
//!
//! The tests wait for the tunnel's events, on the real clock: the store answers from
//! threads of its own, and on a paused clock its pool's timeouts would fire while a
//! connection opens. A move costs the first reconnect's backoff, about half a second.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mytunnel_client::{Edge, EdgeBuilder, TunnelError, TunnelEvent, TunnelEvents};
use mytunnel_core::policy::{Caller, OwnerScope};
use mytunnel_core::protocol::{
    AllocateRequest, ApiError, CtlRequest, CtlResponse, ErrorCode, LeaseDto, Verb,
};
use mytunnel_core::route::RouteBackend;
use mytunnel_core::store::LeaseStore;
use mytunnel_core::transport::{Forward, ForwardSpec, Transport, TransportError};
use mytunnel_core::{LeaseState, PortRange, Ttl};
use mytunnel_edge::in_process::{ForwardMode, InProcessTransport};
use mytunnel_edge::memory_routes::MemoryRoutes;
use mytunnel_edge::service::{LeaseService, ServiceSettings, SystemClock};
use mytunnel_edge::{SqlLeaseStore, StoreOptions};
use mytunnel_test_support::service_settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: &str = "alice@edge-a";
const B: &str = "alice@edge-b";

/// A local app answering every request with 200.
async fn local_app() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    port
}

fn alice() -> Caller {
    Caller::from_identity(1000, "alice".parse().unwrap(), &Default::default())
}

/// One edge of the pair.
#[derive(Debug)]
struct Side {
    destination: &'static str,
    /// Its store: the edge's own view of the database, with its edge id.
    store: Arc<SqlLeaseStore>,
    service: LeaseService,
    routes: Arc<MemoryRoutes>,
    transport: InProcessTransport,
    /// Its connection cannot be made (ssh cannot log in).
    refuses_connections: AtomicBool,
    /// Its calls fail as unreachable (the connection is gone).
    calls_fail: Arc<AtomicBool>,
    /// It answers as an edge from before `--replaces`, whose gate refuses the flag.
    old_gate: Arc<AtomicBool>,
    /// Every ctl verb that reached it.
    calls: Arc<Mutex<Vec<Verb>>>,
    /// How many connections were made to it.
    connections: AtomicUsize,
}

impl Side {
    /// What the connector answers for this destination.
    fn connect(&self) -> Result<Arc<dyn Transport>, TransportError> {
        if self.refuses_connections.load(Ordering::SeqCst) {
            return Err(unreachable(self.destination));
        }
        self.connections.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(SideTransport {
            destination: self.destination,
            inner: self.transport.clone(),
            calls_fail: Arc::clone(&self.calls_fail),
            old_gate: Arc::clone(&self.old_gate),
            calls: Arc::clone(&self.calls),
        }))
    }

    /// The edge goes down: no connection, no call, every forward ended.
    fn cut(&self) {
        self.refuses_connections.store(true, Ordering::SeqCst);
        self.calls_fail.store(true, Ordering::SeqCst);
        self.transport.kill_forwards();
    }

    /// The edge is back.
    fn restore(&self) {
        self.refuses_connections.store(false, Ordering::SeqCst);
        self.calls_fail.store(false, Ordering::SeqCst);
    }

    fn calls(&self) -> Vec<Verb> {
        self.calls.lock().unwrap().clone()
    }

    async fn route_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .routes
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        ids.sort();
        ids
    }
}

/// What OpenSSH says when the host does not answer.
fn unreachable(destination: &str) -> TransportError {
    let host = destination.split('@').nth(1).unwrap_or(destination);
    TransportError::Unreachable(format!(
        "ssh to {destination} failed (exit status: 255); ssh said: ssh: connect to host \
         {host} port 22: Connection timed out"
    ))
}

/// A side's transport, as one ssh connection to it is.
#[derive(Debug)]
struct SideTransport {
    destination: &'static str,
    inner: InProcessTransport,
    calls_fail: Arc<AtomicBool>,
    old_gate: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<Verb>>>,
}

#[async_trait]
impl Transport for SideTransport {
    async fn ctl(&self, request: &CtlRequest) -> Result<CtlResponse, TransportError> {
        self.calls.lock().unwrap().push(request.verb());
        if self.calls_fail.load(Ordering::SeqCst) {
            return Err(unreachable(self.destination));
        }
        if self.old_gate.load(Ordering::SeqCst)
            && matches!(request, CtlRequest::Allocate(r) if r.replaces.is_some())
        {
            return Err(TransportError::Refused(ApiError::new(
                ErrorCode::ForbiddenCommand,
                "`allocate` does not take \"--replaces\"",
            )));
        }
        self.inner.ctl(request).await
    }

    async fn open_forward(&self, spec: ForwardSpec) -> Result<Box<dyn Forward>, TransportError> {
        if self.calls_fail.load(Ordering::SeqCst) {
            return Err(unreachable(self.destination));
        }
        self.inner.open_forward(spec).await
    }
}

/// Two edges on one lease database, and the profile naming both.
#[derive(Debug)]
struct Pair {
    a: Arc<Side>,
    b: Arc<Side>,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pair {
    async fn new() -> Pair {
        Pair::with_stores(true).await
    }

    /// Two edges (ids `a` and `b`) on one lease database (`shared`: one SQLite file, as
    /// edges share one PostgreSQL database), or each on its own.
    async fn with_stores(shared: bool) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let open = |file: &str, edge: &str| {
            let path = dir.path().join(file);
            let options = StoreOptions {
                edge_id: edge.parse().unwrap(),
                ..StoreOptions::default()
            };
            async move { Arc::new(SqlLeaseStore::open_sqlite(&path, &options).await.unwrap()) }
        };
        let a_store = open("leases.db", "a").await;
        let b_store = open(if shared { "leases.db" } else { "b.db" }, "b").await;
        let side = |destination: &'static str, store: Arc<SqlLeaseStore>| {
            let routes = Arc::new(MemoryRoutes::new());
            let service = LeaseService::new(
                store.clone(),
                routes.clone(),
                Arc::new(SystemClock),
                ServiceSettings {
                    lease_ttl: Ttl::configured(Duration::from_secs(120)),
                    ..service_settings(
                        "t.test".parse().unwrap(),
                        PortRange::new(21000, 21019).unwrap(),
                    )
                },
            );
            let transport =
                InProcessTransport::new(service.clone(), alice(), ForwardMode::Simulated);
            Arc::new(Side {
                destination,
                store,
                service,
                routes,
                transport,
                refuses_connections: AtomicBool::new(false),
                calls_fail: Arc::default(),
                old_gate: Arc::default(),
                calls: Arc::default(),
                connections: AtomicUsize::new(0),
            })
        };
        let (a, b) = (side(A, a_store), side(B, b_store));
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "default_edge = \"team\"\n\n[edges.team]\n\
                 destinations = [\"{A}\", \"{B}\"]\nbase_domain = \"t.test\"\n"
            ),
        )
        .unwrap();
        Pair {
            a,
            b,
            config,
            _dir: dir,
        }
    }

    /// The client's edge: the profile, each destination through its side's transport.
    fn builder(&self) -> EdgeBuilder {
        let (a, b) = (Arc::clone(&self.a), Arc::clone(&self.b));
        Edge::builder()
            .config_path(&self.config)
            .environment(BTreeMap::new())
            .connector(move |destination| match destination {
                A => a.connect(),
                B => b.connect(),
                other => Err(TransportError::Unreachable(format!("no edge {other}"))),
            })
    }

    /// Every lease in the database (A's view; B's is the same when they share it).
    async fn leases(&self) -> Vec<mytunnel_core::Lease> {
        self.a.store.list(&OwnerScope::All).await.unwrap()
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

/// The events until the data plane is up (`Forwarding`), that one included.
async fn until_forwarding(events: &mut TunnelEvents) -> Vec<TunnelEvent> {
    let mut seen = Vec::new();
    loop {
        let event = events.next().await.expect("event stream ended");
        let done = matches!(event, TunnelEvent::Forwarding { .. });
        seen.push(event);
        if done {
            return seen;
        }
    }
}

fn route_id(lease: &LeaseDto) -> String {
    format!("mytunnel-{}", lease.lease_id)
}

#[tokio::test]
async fn the_first_destination_unreachable_at_open_opens_on_the_second() {
    // Shared ssh: the connection to A cannot be made. Per-command ssh: it "connects"
    // (nothing starts), and the allocation is what fails.
    for connection_refused in [true, false] {
        let pair = Pair::new().await;
        pair.a.cut();
        if !connection_refused {
            pair.a.refuses_connections.store(false, Ordering::SeqCst);
        }
        let app = local_app().await;
        let mut tunnel = pair
            .builder()
            .http(app)
            .name("portal")
            .open()
            .await
            .unwrap();
        assert_eq!(tunnel.url(), "https://portal.t.test");
        let mut events = tunnel.events();
        let opening = until_forwarding(&mut events).await;
        let TunnelEvent::EdgeMoved { from, to, reason } = &opening[0] else {
            panic!("{opening:?}");
        };
        assert_eq!((from.as_str(), to.as_str()), (A, B));
        assert!(reason.contains("Connection timed out"), "{reason}");
        assert_eq!(
            opening[0].to_string(),
            format!("edge {A} unreachable; moved to {B} ({reason})")
        );
        let TunnelEvent::Allocated { lease, .. } = &opening[1] else {
            panic!("{opening:?}");
        };
        assert_eq!(opening.len(), 3, "{opening:?}");

        // Allocated on B: its route; none on A, which was asked at most once.
        assert_eq!(pair.b.route_ids().await, [route_id(lease)]);
        assert!(pair.a.route_ids().await.is_empty());
        let expected_on_a: &[Verb] = if connection_refused {
            &[]
        } else {
            &[Verb::Allocate]
        };
        assert_eq!(pair.a.calls(), expected_on_a);
        assert_eq!(pair.b.calls(), [Verb::Allocate]);
        assert_eq!(pair.b.transport.forwards_opened(), 1);

        tunnel.close().await.unwrap();
        assert_eq!(pair.leases().await[0].state, LeaseState::Released);
        assert_eq!(pair.b.calls(), [Verb::Allocate, Verb::Release]);
    }
}

#[tokio::test]
async fn every_destination_unreachable_fails_the_open_naming_each() {
    let pair = Pair::new().await;
    pair.a.cut();
    pair.b.cut();
    let app = local_app().await;
    let err = pair.builder().http(app).open().await.unwrap_err();
    let TunnelError::Connect(TransportError::Unreachable(said)) = &err else {
        panic!("{err:?}");
    };
    assert!(
        said.starts_with("none of the edge's 2 destinations could be reached (alice@edge-a: ssh"),
        "{said}"
    );
    assert!(
        said.contains("alice@edge-b: ssh to alice@edge-b failed"),
        "{said}"
    );
    assert!(pair.leases().await.is_empty());
}

/// `slug_taken` (or any refusal) is the edges' answer, the same on every edge of the
/// database: the tunnel does not try the next destination.
#[tokio::test]
async fn a_refusal_is_an_answer_and_never_moves_the_tunnel() {
    let pair = Pair::new().await;
    let bob = Caller::from_identity(1001, "bob".parse().unwrap(), &Default::default());
    pair.a
        .service
        .allocate(
            &bob,
            AllocateRequest {
                name: Some("portal".parse().unwrap()),
                ..AllocateRequest::default()
            },
        )
        .await
        .unwrap();
    let app = local_app().await;
    let err = pair
        .builder()
        .http(app)
        .name("portal")
        .open()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SlugTaken), "{err}");
    assert_eq!(pair.a.calls(), [Verb::Allocate]);
    assert_eq!(pair.b.connections.load(Ordering::SeqCst), 0);
    assert!(pair.b.calls().is_empty());
}

/// The tunnel's edge goes down while it runs: the tunnel moves to the next destination
/// with the same name, and its old lease is displaced there and then (not left to run
/// out its TTL, which would keep the name taken). When that edge goes down in turn and
/// the first is back, it moves back: in order, wrapping.
#[tokio::test]
async fn a_running_tunnel_whose_edge_becomes_unreachable_moves_with_its_name() {
    let pair = Pair::new().await;
    let app = local_app().await;
    let mut tunnel = pair
        .builder()
        .http(app)
        .name("portal")
        .open()
        .await
        .unwrap();
    let mut events = tunnel.events();
    until_forwarding(&mut events).await;
    let on_a = tunnel.lease();
    assert_eq!(pair.a.route_ids().await, [route_id(&on_a)]);

    pair.a.cut();
    let moved = wait_for(&mut events, |e| matches!(e, TunnelEvent::EdgeMoved { .. })).await;
    let TunnelEvent::EdgeMoved { from, to, reason } = &moved else {
        unreachable!()
    };
    assert_eq!((from.as_str(), to.as_str()), (A, B));
    assert!(reason.contains("Connection timed out"), "{reason}");
    let moving = until_forwarding(&mut events).await;
    let TunnelEvent::Allocated { lease: on_b, url } = &moving[0] else {
        panic!("{moving:?}");
    };
    assert_eq!(url, "https://portal.t.test", "the same URL");
    assert_eq!(on_b.slug, "portal");
    assert_ne!(on_b.lease_id, on_a.lease_id);
    assert_eq!(tunnel.lease().lease_id, on_b.lease_id);
    assert_eq!(tunnel.url(), "https://portal.t.test");

    // The old lease is gone from the shared database now, well within its 120 s TTL: the
    // allocation on B named it as the one it replaces.
    let leases = pair.leases().await;
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(
        (leases[0].id.clone(), leases[0].state),
        (on_b.lease_id.clone(), LeaseState::Active)
    );
    assert_eq!(pair.b.route_ids().await, [route_id(on_b)]);
    // The new lease is B's (B routes it and expires it); A holds none now.
    let ids = |leases: Vec<mytunnel_core::Lease>| -> Vec<String> {
        leases.into_iter().map(|l| l.id.to_string()).collect()
    };
    assert_eq!(
        ids(pair.b.store.active_on_this_edge().await.unwrap()),
        [on_b.lease_id.to_string()]
    );
    assert!(pair.a.store.active_on_this_edge().await.unwrap().is_empty());
    let on_b_calls = pair.b.calls();
    assert_eq!(on_b_calls, [Verb::Allocate], "{on_b_calls:?}");
    assert_eq!(pair.b.connections.load(Ordering::SeqCst), 1);

    // B goes down, A is back: the tunnel moves on, wrapping to the first destination.
    pair.a.restore();
    pair.b.cut();
    let back = wait_for(&mut events, |e| matches!(e, TunnelEvent::EdgeMoved { .. })).await;
    assert!(
        matches!(&back, TunnelEvent::EdgeMoved { from, to, .. } if from == B && to == A),
        "{back:?}"
    );
    let moving = until_forwarding(&mut events).await;
    let TunnelEvent::Allocated { lease: again, .. } = &moving[0] else {
        panic!("{moving:?}");
    };
    let leases = pair.leases().await;
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].id, again.lease_id);
    // A kept the route of the lease it could not end while it was down; its reconcile
    // (each edge reconciles its own routes) removes it.
    assert_eq!(pair.a.route_ids().await, {
        let mut both = vec![route_id(&on_a), route_id(again)];
        both.sort();
        both
    });
    pair.a.service.reconcile().await.unwrap();
    assert_eq!(pair.a.route_ids().await, [route_id(again)]);

    tunnel.close().await.unwrap();
    assert_eq!(pair.leases().await[0].state, LeaseState::Released);
}

/// Several tunnels on one connection: whichever finds the edge unreachable first moves
/// the connection, once; each tunnel then takes its own name on the next edge.
#[tokio::test]
async fn tunnels_sharing_a_connection_move_together_and_the_connection_moves_once() {
    let pair = Pair::new().await;
    let app = local_app().await;
    let edge = pair.builder().connect().await.unwrap();
    assert_eq!(edge.destination().as_deref(), Some(A));
    let mut tunnels = Vec::new();
    for name in ["shop", "blog"] {
        let mut tunnel = edge.http(app).name(name).open().await.unwrap();
        let mut events = tunnel.events();
        until_forwarding(&mut events).await;
        tunnels.push((tunnel, events));
    }
    let old: Vec<_> = tunnels.iter().map(|(t, _)| t.lease().lease_id).collect();

    pair.a.cut();
    for (_, events) in &mut tunnels {
        let moved = wait_for(events, |e| matches!(e, TunnelEvent::EdgeMoved { .. })).await;
        assert!(
            matches!(&moved, TunnelEvent::EdgeMoved { from, to, .. } if from == A && to == B),
            "{moved:?}"
        );
        until_forwarding(events).await;
    }
    assert_eq!(pair.b.connections.load(Ordering::SeqCst), 1, "one move");
    assert_eq!(edge.destination().as_deref(), Some(B));
    let mut names: Vec<String> = pair
        .leases()
        .await
        .iter()
        .map(|l| {
            assert_eq!(l.state, LeaseState::Active);
            assert!(!old.contains(&l.id), "{} was not replaced", l.id);
            l.slug.to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["blog", "shop"]);
    // The edge's own calls follow the connection.
    assert_eq!(
        edge.list(mytunnel_core::protocol::ListScope::Own)
            .await
            .unwrap()
            .len(),
        2
    );
    edge.close().await;
    assert!(pair
        .leases()
        .await
        .iter()
        .all(|l| l.state == LeaseState::Released));
}

/// An edge from before `--replaces` refuses the flag (`forbidden_command`): the tunnel
/// takes its name there without it, as it would after an expiry. (Such an edge cannot
/// share a lease database with a newer one; here it has its own.)
#[tokio::test]
async fn an_edge_older_than_replaces_gets_the_allocation_without_it() {
    let pair = Pair::with_stores(false).await;
    pair.b.old_gate.store(true, Ordering::SeqCst);
    let app = local_app().await;
    let mut tunnel = pair
        .builder()
        .http(app)
        .name("portal")
        .open()
        .await
        .unwrap();
    let mut events = tunnel.events();
    until_forwarding(&mut events).await;
    pair.a.cut();
    wait_for(&mut events, |e| matches!(e, TunnelEvent::EdgeMoved { .. })).await;
    let moving = until_forwarding(&mut events).await;
    assert!(
        matches!(&moving[0], TunnelEvent::Allocated { url, .. } if url == "https://portal.t.test"),
        "{moving:?}"
    );
    assert_eq!(pair.b.calls(), [Verb::Allocate, Verb::Allocate]);
    let on_b = pair.b.store.list(&OwnerScope::All).await.unwrap();
    assert_eq!(on_b.len(), 1);
    assert_eq!(on_b[0].slug.as_str(), "portal");
    tunnel.close().await.unwrap();
}
