//! serve's control socket against callers that misbehave: silent, trickling, oversized,
//! malformed, crafted to name another owner, too many at once, gone before the answer;
//! and ctl against a serve that is down or does not answer. serve's side is the real
//! `serve_control` over an in-memory store; ctl's side is the real `control::call`.
// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mytunnel_core::control::ACCEPT_WITHIN;
use mytunnel_core::policy::{AdminUsers, OwnerScope};
use mytunnel_core::protocol::{AllocateRequest, CtlRequest, CtlResponse, ErrorCode, ListScope};
use mytunnel_core::route::{InstalledRoute, Route, RouteBackend, RouteError};
use mytunnel_core::{LeaseState, PortRange};
use mytunnel_edge::control::{self, bind_control_socket, serve_control, ControlLimits};
use mytunnel_edge::memory_routes::MemoryRoutes;
use mytunnel_edge::service::{LeaseService, SystemClock};
use mytunnel_edge::SqlLeaseStore;
use mytunnel_test_support::service_settings;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Routes that take `delay` to write: time for a caller to leave mid-request.
#[derive(Debug)]
struct SlowRoutes {
    inner: MemoryRoutes,
    delay: Duration,
}

#[async_trait]
impl RouteBackend for SlowRoutes {
    async fn upsert(&self, route: &Route) -> Result<(), RouteError> {
        tokio::time::sleep(self.delay).await;
        self.inner.upsert(route).await
    }
    async fn remove(&self, route_id: &str) -> Result<bool, RouteError> {
        self.inner.remove(route_id).await
    }
    async fn list(&self) -> Result<Vec<InstalledRoute>, RouteError> {
        self.inner.list().await
    }
    async fn ping(&self) -> Result<(), RouteError> {
        Ok(())
    }
}

struct Serve {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    service: LeaseService,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve_with(limits: ControlLimits, route_delay: Duration) -> Serve {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let socket = dir.path().join("control.sock");
    let service = LeaseService::new(
        Arc::new(SqlLeaseStore::open_in_memory().await.unwrap()),
        Arc::new(SlowRoutes {
            inner: MemoryRoutes::new(),
            delay: route_delay,
        }),
        Arc::new(SystemClock),
        service_settings(
            "t.example".parse().unwrap(),
            PortRange::new(21000, 21099).unwrap(),
        ),
    );
    let listener = bind_control_socket(&socket).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_control(
        service.clone(),
        AdminUsers::default(),
        listener,
        limits,
        async {
            let _ = stopped.await;
        },
    ));
    Serve {
        _dir: dir,
        socket,
        service,
        _stop: stop,
    }
}

async fn serve() -> Serve {
    serve_with(ControlLimits::default(), Duration::ZERO).await
}

/// Sends raw bytes, closes the writing side, reads everything serve says.
async fn raw(socket: &Path, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let _ = stream.shutdown().await;
    // serve may close with our bytes unread (the kernel then ends our reading with
    // ECONNRESET, after what serve wrote): keep what came before.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn error_code(answer: &str) -> String {
    let line = answer.lines().last().unwrap_or_default();
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {answer:?}"));
    value["error"]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_owned()
}

async fn list(serve: &Serve) -> Result<CtlResponse, mytunnel_core::ApiError> {
    control::call(
        &serve.socket,
        &CtlRequest::List(ListScope::Own),
        Duration::from_secs(5),
    )
    .await
}

async fn active_leases(serve: &Serve) -> usize {
    serve
        .service
        .store()
        .list(&OwnerScope::All)
        .await
        .unwrap()
        .iter()
        .filter(|l| l.state == LeaseState::Active)
        .count()
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_a_clear_error_and_change_nothing() {
    let serve = serve().await;
    let cases: [(&[u8], &str); 8] = [
        (b"not json\n", "invalid_argument"),
        (b"\n", "invalid_argument"),
        (b"{\"v\":1,\"ctl\":[\"serve\"]}\n", "forbidden_command"),
        (
            b"{\"v\":1,\"ctl\":[\"list\",\"--db-path\",\"/tmp/x\"]}\n",
            "override_not_allowed",
        ),
        (b"{\"v\":9,\"ctl\":[\"list\"]}\n", "invalid_argument"),
        (b"{\"v\":1,\"ctl\":[\"list\"]}", "invalid_argument"),
        (b"\xff\xfe\n", "invalid_argument"),
        (&[b'x'; 10_000], "invalid_argument"),
    ];
    for (bytes, code) in cases {
        let answer = raw(&serve.socket, bytes).await;
        assert_eq!(
            error_code(&answer),
            code,
            "{:?} answered {answer:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        );
    }
    assert_eq!(active_leases(&serve).await, 0);
    assert!(list(&serve).await.is_ok(), "serve still answers");
}

#[tokio::test]
async fn no_field_of_a_request_names_the_owner() {
    let serve = serve().await;
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    // An extra field is refused outright.
    let answer = raw(
        &serve.socket,
        b"{\"v\":1,\"ctl\":[\"list\"],\"owner\":\"bob\",\"uid\":0}\n",
    )
    .await;
    assert_eq!(error_code(&answer), "invalid_argument", "{answer}");
    // --owner in the words is accepted and ignored: the lease is the caller's.
    let answer = raw(
        &serve.socket,
        b"{\"v\":1,\"ctl\":[\"allocate\",\"--owner\",\"bob\",\"--owner=root\",\"--name\",\"crafted\"]}\n",
    )
    .await;
    let reply = answer.lines().last().unwrap();
    let value: serde_json::Value = serde_json::from_str(reply).unwrap();
    // --owner twice is a repeated flag: refused, nothing allocated.
    assert_eq!(value["error"]["code"], "invalid_argument", "{answer}");
    let answer = raw(
        &serve.socket,
        b"{\"v\":1,\"ctl\":[\"allocate\",\"--owner\",\"bob\",\"--name\",\"crafted\"]}\n",
    )
    .await;
    let reply = answer.lines().last().unwrap();
    let value: serde_json::Value = serde_json::from_str(reply).unwrap();
    assert_eq!(value["ok"]["owner"], me.as_str(), "{answer}");
}

#[tokio::test]
async fn silent_and_trickling_callers_are_dropped_and_delay_no_one() {
    let serve = serve().await;
    // One connects and says nothing; one sends a byte every 100 ms, never a newline.
    let mut silent = UnixStream::connect(&serve.socket).await.unwrap();
    let trickle_socket = serve.socket.clone();
    let trickle = tokio::spawn(async move {
        let mut stream = UnixStream::connect(&trickle_socket).await.unwrap();
        let started = Instant::now();
        for _ in 0..100 {
            if stream.write_all(b"{").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        (started.elapsed(), answer)
    });
    // Meanwhile everyone else is served at once.
    for _ in 0..20 {
        let started = Instant::now();
        list(&serve).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    let started = Instant::now();
    let mut answer = String::new();
    silent.read_to_string(&mut answer).await.unwrap();
    assert!(started.elapsed() <= ACCEPT_WITHIN + Duration::from_secs(1));
    assert_eq!(error_code(&answer), "invalid_argument", "{answer}");
    let (took, answer) = trickle.await.unwrap();
    assert!(
        took < ACCEPT_WITHIN + Duration::from_secs(2),
        "trickler held on for {took:?}"
    );
    assert!(answer.contains("no complete request"), "{answer}");
}

#[tokio::test]
async fn too_many_requests_of_one_caller_are_refused_at_once() {
    let serve = serve_with(
        ControlLimits {
            max_connections: 64,
            max_per_uid: 3,
        },
        Duration::ZERO,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(UnixStream::connect(&serve.socket).await.unwrap());
    }
    // Serve counts a connection once its task runs: wait for the refusal, not a time.
    let started = Instant::now();
    let error = loop {
        match list(&serve).await {
            Err(e) => break e,
            Ok(_) => assert!(started.elapsed() < Duration::from_secs(1), "never refused"),
        }
    };
    assert_eq!(error.code, ErrorCode::ServiceUnavailable, "{error:?}");
    assert!(error.message.contains("too many"), "{}", error.message);
    drop(held);
    let started = Instant::now();
    while list(&serve).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the slots never came back"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_allocation_nobody_hears_about_is_undone() {
    let serve = serve_with(ControlLimits::default(), Duration::from_millis(300)).await;
    // Send allocate, wait for acceptance, then leave while serve writes the route.
    let stream = UnixStream::connect(&serve.socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    write
        .write_all(b"{\"v\":1,\"ctl\":[\"allocate\",\"--name\",\"ghost\"]}\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(read);
    let mut accepted = String::new();
    reader.read_line(&mut accepted).await.unwrap();
    assert!(accepted.contains("accepted"), "{accepted}");
    drop(reader);
    drop(write);
    // serve finishes the allocation, cannot deliver it, deletes it.
    let started = Instant::now();
    loop {
        let rows = serve.service.store().list(&OwnerScope::All).await.unwrap();
        if started.elapsed() > Duration::from_millis(300) && rows.is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "kept {rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And a caller that leaves before acceptance is never served at all.
    {
        let mut stream = UnixStream::connect(&serve.socket).await.unwrap();
        stream
            .write_all(b"{\"v\":1,\"ctl\":[\"allocate\",\"--name\",\"ghost\"]}\n")
            .await
            .unwrap();
    }
    let named = control::call(
        &serve.socket,
        &CtlRequest::Allocate(AllocateRequest {
            name: Some("ghost".parse().unwrap()),
            ..AllocateRequest::default()
        }),
        Duration::from_secs(5),
    )
    .await;
    assert!(named.is_ok(), "the name is free: {named:?}");
}

#[tokio::test]
async fn ctl_answers_service_unavailable_within_two_seconds() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let request = CtlRequest::Allocate(AllocateRequest::default());
    // No socket at all.
    let missing = dir.path().join("missing.sock");
    let started = Instant::now();
    let error = control::call(&missing, &request, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::ServiceUnavailable);
    assert!(started.elapsed() < Duration::from_millis(500));
    // A socket file nobody listens on (serve killed -9 leaves one).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let error = control::call(&stale, &request, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::ServiceUnavailable);
    // A serve that is stopped (SIGSTOP): the kernel accepts the connection, nobody reads.
    let frozen = dir.path().join("frozen.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&frozen).unwrap();
    let started = Instant::now();
    let error = control::call(&frozen, &request, Duration::from_secs(30))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.code, ErrorCode::ServiceUnavailable, "{error:?}");
    assert!(
        took >= ACCEPT_WITHIN && took < Duration::from_millis(2500),
        "{took:?}"
    );
    assert_eq!(error.code.exit_code(), 2);
    assert!(!error.hint.is_empty());
}

#[tokio::test]
async fn many_callers_at_once_are_served_concurrently() {
    let serve = serve().await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let socket = serve.socket.clone();
        tasks.push(tokio::spawn(async move {
            control::call(
                &socket,
                &CtlRequest::Allocate(AllocateRequest {
                    name: Some(format!("n{i}").parse().unwrap()),
                    ..AllocateRequest::default()
                }),
                Duration::from_secs(10),
            )
            .await
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(CtlResponse::Lease(_)) => ok += 1,
            Err(e) if e.code == ErrorCode::OwnerLimit => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    // One caller, the default owner limit of 10.
    assert_eq!((ok, limited), (10, 54));
    assert_eq!(active_leases(&serve).await, 10);
}
