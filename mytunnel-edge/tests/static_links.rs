//! `static` route mode, component level: `serve`'s lease service over a real SQLite file
//! (it writes the links), ctl's requests through serve's real control socket, the fake
//! Caddy admin API, real unix sockets standing in for sshd's `-R` listeners.
// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mytunnel_core::calls;
use mytunnel_core::policy::{AdminUsers, Caller};
use mytunnel_core::protocol::{
    decode_reply, AllocateRequest, ApiError, CtlRequest, CtlResponse, ErrorCode, LeaseDto,
    ReplyError, Takeover,
};
use mytunnel_core::route::{Route, RouteBackend};
use mytunnel_core::{BaseDomain, BindTarget, LeaseRef, PortRange};
use mytunnel_edge::caddy::{static_route_json, CaddyRoutes, STATIC_ROUTE_ID};
use mytunnel_edge::config::{ConfigInputs, EdgeConfig, Setting};
use mytunnel_edge::control::{bind_control_socket, serve_control, ControlLimits};
use mytunnel_edge::links::{HostLinks, StaticRoutes};
use mytunnel_edge::service::{BindPlan, LeaseService, ServiceSettings, SystemClock};
use mytunnel_edge::{ctl, sockets, SqlLeaseStore, StoreOptions};
use mytunnel_test_support::service_settings;
use support::fake_caddy::FakeCaddy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DOMAIN: &str = "t.example";

struct Edge {
    dir: tempfile::TempDir,
    caddy: FakeCaddy,
    /// What `mytunneld serve` runs: the only service over the database.
    serve: LeaseService,
    /// What a `mytunneld ctl` process reads: where serve listens, the route mode.
    config: EdgeConfig,
    stop_control: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Edge {
    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    fn hosts(&self) -> PathBuf {
        sockets::hosts_dir(&self.socket_dir())
    }

    fn owner_dir(&self) -> PathBuf {
        sockets::owners_dir(&self.socket_dir()).join(this_user())
    }

    /// Runs a request as `mytunneld ctl` does: over serve's control socket, as this
    /// process's user.
    async fn ctl(&self, request: CtlRequest) -> Result<CtlResponse, ApiError> {
        let verb = request.verb();
        let output = ctl::run(&self.config, request).await;
        match decode_reply(verb, &output.stdout) {
            Ok(response) => Ok(response),
            Err(ReplyError::Refused(error)) => Err(error),
            Err(other) => panic!("ctl printed {:?}: {other}", output.stdout),
        }
    }

    /// Stops serve's control socket and waits until it no longer answers.
    async fn stop_serve(&mut self) {
        if let Some(stop) = self.stop_control.take() {
            let _ = stop.send(());
        }
        let control = sockets::control_socket(&self.socket_dir());
        for _ in 0..500 {
            if tokio::net::UnixStream::connect(&control).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the control socket still answers");
    }
}

fn this_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name
}

fn settings(owners_dir: PathBuf) -> ServiceSettings {
    ServiceSettings {
        bind_plan: BindPlan::OwnerSockets { owners_dir },
        ..service_settings(
            DOMAIN.parse().unwrap(),
            PortRange::new(21000, 21009).unwrap(),
        )
    }
}

/// The static backend over the fake Caddy.
fn static_routes(
    caddy: &FakeCaddy,
    links: Arc<dyn RouteBackend>,
    socket_dir: &Path,
) -> Arc<dyn RouteBackend> {
    let admin = CaddyRoutes::new(&caddy.admin_address(), "srv0", Duration::from_secs(2)).unwrap();
    Arc::new(StaticRoutes::new(
        admin,
        links,
        &DOMAIN.parse::<BaseDomain>().unwrap(),
        socket_dir,
    ))
}

async fn store(path: &Path) -> Arc<SqlLeaseStore> {
    Arc::new(
        SqlLeaseStore::open_sqlite(path, &StoreOptions::default())
            .await
            .unwrap(),
    )
}

/// The socket dir in a short temporary path (unix socket paths are short), with
/// `hosts/` and this user's own `owners/<user>/` 0750, as the install scripts make them;
/// serve's control socket answering.
async fn edge() -> Edge {
    let dir = tempfile::Builder::new()
        .prefix("st")
        .tempdir_in("/tmp")
        .unwrap();
    let socket_dir = dir.path().join("s");
    let hosts = sockets::hosts_dir(&socket_dir);
    std::fs::create_dir_all(&hosts).unwrap();
    let owners = sockets::owners_dir(&socket_dir);
    let own = owners.join(this_user());
    std::fs::create_dir_all(&own).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o750)).unwrap();
    let caddy = FakeCaddy::start().await;
    let db = dir.path().join("leases.db");
    let links = HostLinks::new(hosts.clone(), DOMAIN.parse().unwrap());
    let serve = LeaseService::new(
        store(&db).await,
        static_routes(&caddy, Arc::new(links), &socket_dir),
        Arc::new(SystemClock),
        settings(owners),
    );
    let flags = BTreeMap::from([
        (Setting::DbPath, db.display().to_string()),
        (Setting::BaseDomain, DOMAIN.to_owned()),
        (Setting::CaddyAdminUrl, caddy.admin_address().to_string()),
        (Setting::RouteMode, "static".to_owned()),
        (Setting::SocketDir, socket_dir.display().to_string()),
    ]);
    let (config, _) = EdgeConfig::resolve(&ConfigInputs {
        flags,
        ..ConfigInputs::default()
    })
    .unwrap();
    let listener = bind_control_socket(&sockets::control_socket(&socket_dir)).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_control(
        serve.clone(),
        AdminUsers::default(),
        listener,
        ControlLimits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Edge {
        dir,
        caddy,
        serve,
        config,
        stop_control: Some(stop),
    }
}

fn root() -> Caller {
    Caller::from_identity(0, "root".parse().unwrap(), &AdminUsers::default())
}

fn allocate_request(name: &str) -> CtlRequest {
    CtlRequest::Allocate(AllocateRequest {
        name: Some(name.parse().unwrap()),
        ttl: None,
        takeover: Takeover::Refuse,
        replaces: None,
        local_port: None,
    })
}

/// `ctl allocate --name NAME` through serve.
async fn allocate(edge: &Edge, name: &str) -> Result<LeaseDto, ApiError> {
    match edge.ctl(allocate_request(name)).await? {
        CtlResponse::Lease(lease) => Ok(lease),
        other => panic!("allocate answered {other:?}"),
    }
}

/// An allocation straight through a service (no control socket).
async fn allocate_in(service: &LeaseService, name: &str) -> Result<LeaseDto, ApiError> {
    let CtlRequest::Allocate(request) = allocate_request(name) else {
        unreachable!("allocate_request builds an allocate")
    };
    service.call(&root(), calls::Allocate(request)).await
}

async fn release(edge: &Edge, lease: &LeaseDto) {
    edge.ctl(CtlRequest::Release {
        lease: LeaseRef::Id(lease.lease_id.clone()),
    })
    .await
    .unwrap();
}

fn socket_of(lease: &LeaseDto) -> String {
    match lease.bind_target() {
        BindTarget::UnixSocket(path) => path.to_string(),
        other => panic!("a static lease binds {other}"),
    }
}

/// Sends a request through `path` (what Caddy dials) and reads the answer.
async fn fetch_through(path: &Path) -> std::io::Result<String> {
    let mut stream = tokio::net::UnixStream::connect(path).await?;
    stream.write_all(b"ping").await?;
    stream.shutdown().await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

/// Stands in for sshd's `-R` listener: answers `pong from <who>` on the socket.
fn listen(path: &str, who: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf).await;
            let _ = stream
                .write_all(format!("pong from {who}").as_bytes())
                .await;
        }
    })
}

#[tokio::test]
async fn allocate_links_the_host_and_never_touches_caddy() {
    let edge = edge().await;
    // The wildcard route comes from a reconcile pass (serve runs one at start).
    edge.serve.reconcile().await.unwrap();
    let routes = edge.caddy.routes();
    // Ahead of the Caddyfile's catch-all route, which stays last.
    assert_eq!(routes.as_array().unwrap().len(), 2, "{routes}");
    assert_eq!(routes[0]["@id"], STATIC_ROUTE_ID);
    assert_eq!(routes[1]["handle"][0]["body"], "catch-all");
    assert_eq!(
        routes[0],
        static_route_json(&DOMAIN.parse().unwrap(), &edge.socket_dir())
    );
    // A lower-case Host dials its link by the raw label.
    assert_eq!(
        routes[0]["handle"][0]["routes"][1]["handle"][0]["upstreams"][0]["dial"],
        format!(
            "unix/{}/{{http.request.host.labels.2}}.sock",
            edge.hosts().display()
        )
    );
    let config_before = edge.caddy.config();

    let lease = allocate(&edge, "portal").await.unwrap();
    let socket = socket_of(&lease);
    assert_eq!(
        socket,
        format!("{}/{}.sock", edge.owner_dir().display(), lease.lease_id)
    );
    assert_eq!(lease.edge_bind_port, 0, "a socket lease holds no port");
    let link = edge.hosts().join("portal.sock");
    assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from(&socket));

    // What Caddy dials reaches the lease's socket.
    let _sshd = listen(&socket, "alice's tunnel");
    assert_eq!(
        fetch_through(&link).await.unwrap(),
        "pong from alice's tunnel"
    );

    // A second lease, a release: Caddy's configuration never changed.
    let other = allocate(&edge, "other").await.unwrap();
    release(&edge, &other).await;
    assert!(!edge.hosts().join("other.sock").exists());
    assert_eq!(edge.caddy.config(), config_before);
    assert!(link.exists(), "the other lease's release left portal alone");

    // A reconcile finds nothing to do; a junk entry in hosts/ is removed.
    std::fs::write(edge.hosts().join("junk"), b"x").unwrap();
    let report = edge.serve.reconcile().await.unwrap();
    assert_eq!(report.counts.removed, 1, "{report:?}");
    assert_eq!(report.counts.added + report.counts.fixed, 0);
    assert!(!edge.hosts().join("junk").exists());
}

#[tokio::test]
async fn serve_relinks_what_was_lost_and_unlinks_what_ended() {
    let edge = edge().await;
    let a = allocate(&edge, "a").await.unwrap();
    let b = allocate(&edge, "b").await.unwrap();
    std::fs::remove_file(edge.hosts().join("a.sock")).unwrap();
    // b ends behind serve's back (e.g. deleted while serve was down): its link stays.
    edge.serve
        .store()
        .delete(&"root".parse().unwrap(), &LeaseRef::Id(b.lease_id.clone()))
        .await
        .unwrap();
    let report = edge.serve.reconcile().await.unwrap();
    assert_eq!((report.counts.added, report.counts.removed), (1, 1));
    assert_eq!(
        std::fs::read_link(edge.hosts().join("a.sock")).unwrap(),
        PathBuf::from(socket_of(&a))
    );
    assert!(!edge.hosts().join("b.sock").exists());
}

#[tokio::test]
async fn without_serve_allocate_refuses_and_keeps_nothing() {
    let mut edge = edge().await;
    edge.stop_serve().await;
    let started = std::time::Instant::now();
    let error = allocate(&edge, "portal").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::ServiceUnavailable, "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        error.message.contains("mytunneld serve"),
        "{}",
        error.message
    );
    let active = edge
        .serve
        .store()
        .list(&mytunnel_core::policy::OwnerScope::All)
        .await
        .unwrap();
    assert!(active.is_empty(), "{active:?}");
}

#[tokio::test]
async fn an_owner_directory_that_is_not_the_owners_alone_is_refused() {
    let edge = edge().await;
    let dir = edge.owner_dir();
    type BreakIt<'a> = Box<dyn Fn() + 'a>;
    let attempts: [(&str, BreakIt<'_>); 3] = [
        (
            "writable by group",
            Box::new(|| {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap()
            }),
        ),
        (
            "is not a directory",
            Box::new(|| {
                std::fs::remove_dir_all(&dir).unwrap();
                std::os::unix::fs::symlink("/tmp", &dir).unwrap();
            }),
        ),
        (
            "does not exist",
            Box::new(|| {
                std::fs::remove_file(&dir).unwrap();
            }),
        ),
    ];
    for (why, break_it) in attempts {
        break_it();
        let error = allocate(&edge, "portal").await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Internal, "{why}: {error:?}");
        assert!(error.message.contains(why), "{why}: {}", error.message);
    }
    let nothing = edge
        .serve
        .store()
        .list(&mytunnel_core::policy::OwnerScope::All)
        .await
        .unwrap();
    assert!(nothing.is_empty());
}

#[tokio::test]
async fn a_dead_tunnels_socket_is_cleared_a_live_one_is_kept() {
    let edge = edge().await;
    let lease = allocate(&edge, "portal").await.unwrap();
    let socket = socket_of(&lease);
    let heartbeat = CtlRequest::Heartbeat {
        lease: lease.lease_id.clone(),
    };

    // A live listener: the heartbeat leaves it (and opens no connection to it).
    let live = listen(&socket, "live");
    edge.ctl(heartbeat.clone()).await.unwrap();
    assert!(Path::new(&socket).exists());
    assert_eq!(
        fetch_through(Path::new(&socket)).await.unwrap(),
        "pong from live"
    );

    // The connection dies; sshd leaves the file behind. The next heartbeat removes it,
    // so the client's new `ssh -R` can bind the same path.
    live.abort();
    let _ = live.await;
    assert!(Path::new(&socket).exists());
    edge.ctl(heartbeat).await.unwrap();
    assert!(!Path::new(&socket).exists());
    let _again = listen(&socket, "again");

    // Sockets of ended leases are swept when the owner allocates again.
    let ended = allocate(&edge, "ended").await.unwrap();
    let ended_socket = socket_of(&ended);
    drop(std::os::unix::net::UnixListener::bind(&ended_socket).unwrap());
    edge.ctl(CtlRequest::Delete {
        lease: LeaseRef::Id(ended.lease_id.clone()),
    })
    .await
    .unwrap();
    assert!(Path::new(&ended_socket).exists());
    allocate(&edge, "next").await.unwrap();
    assert!(!Path::new(&ended_socket).exists());
    assert!(Path::new(&socket).exists(), "the live lease's socket stays");
}

#[tokio::test]
async fn a_port_lease_from_routes_mode_keeps_its_caddy_route() {
    let edge = edge().await;
    // A lease allocated before the switch: a port, a Caddy route.
    let mut routes_mode = settings(sockets::owners_dir(&edge.socket_dir()));
    routes_mode.bind_plan = BindPlan::Ports;
    let caddy =
        CaddyRoutes::new(&edge.caddy.admin_address(), "srv0", Duration::from_secs(2)).unwrap();
    let before_switch = LeaseService::new(
        edge.serve.store().clone(),
        Arc::new(caddy),
        Arc::new(SystemClock),
        routes_mode,
    );
    let old = allocate_in(&before_switch, "old").await.unwrap();
    assert_eq!(old.bind_target(), BindTarget::LoopbackPort(21000));

    let report = edge.serve.reconcile().await.unwrap();
    assert_eq!(report.counts.removed, 0, "{report:?}");
    let routes = edge.caddy.routes();
    let ids: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["@id"].as_str().unwrap_or("(catch-all)"))
        .collect();
    assert_eq!(
        ids,
        vec![
            format!("mytunnel-{}", old.lease_id).as_str(),
            STATIC_ROUTE_ID,
            "(catch-all)",
        ],
        "the lease's own route comes before the wildcard"
    );
    release(&edge, &old).await;
    assert_eq!(edge.caddy.routes().as_array().unwrap().len(), 2);
}

/// What `mytunneld serve` opens: in `static` mode, beside the control socket, the host
/// names socket (0666: anyone may ask, the answer is a pure function of the Host), which
/// answers the lower-case slug of a Host with capitals; in `routes` mode no such socket.
#[tokio::test]
async fn serve_answers_on_the_host_names_socket_in_static_mode_only() {
    use mytunnel_edge::serve::{self, ServeIntervals};
    let mut edge = edge().await;
    edge.stop_serve().await;
    let names = sockets::names_socket(&edge.socket_dir());
    let opened = serve::open(&edge.config).await.unwrap();
    assert!(opened.host_names.is_some());
    let mode = std::fs::metadata(&names).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666, "{mode:o}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(serve::serve_with_control(
        opened,
        ServeIntervals {
            cleanup: Duration::from_secs(3600),
            reconcile: Duration::from_secs(3600),
        },
        async {
            let _ = stopped.await;
        },
    ));
    let ask = |host: &'static str| {
        let names = names.clone();
        async move {
            let mut stream = tokio::net::UnixStream::connect(&names).await.unwrap();
            let request = format!("GET /slug HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        }
    };
    assert_eq!(
        ask("BobSite.t.example").await,
        "HTTP/1.1 200 OK\r\nX-Mytunnel-Slug: bobsite\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert!(ask("Bob.Site.t.example").await.starts_with("HTTP/1.1 502 "));
    let _ = stop.send(());
    serving.await.unwrap();
    assert!(
        tokio::net::UnixStream::connect(&names).await.is_err(),
        "the names socket still answers after serve stopped"
    );

    // `routes` mode: nothing binds it.
    std::fs::remove_file(&names).unwrap();
    let mut routes_mode = edge.config.clone();
    routes_mode.route_mode = mytunnel_edge::config::RouteMode::Routes;
    let opened = serve::open(&routes_mode).await.unwrap();
    assert!(opened.host_names.is_none());
    assert!(!names.exists());
}

/// A takeover of a name whose lease another edge holds removes this edge's route to that
/// edge at once: in `static` mode that route is a Caddy route, which comes before the
/// host links and would send the name's visitors to the old holder until the next
/// reconcile pass.
#[tokio::test]
async fn a_takeover_removes_the_caddy_route_to_the_edge_that_held_the_name() {
    let edge = edge().await;
    edge.serve.reconcile().await.unwrap();
    let old = allocate(&edge, "portal").await.unwrap();
    // This edge's route for the lease as if another edge held it: to that edge.
    let lease = edge
        .serve
        .store()
        .find(&old.lease_id)
        .await
        .unwrap()
        .unwrap();
    let to_holder = Route::to_edge(
        &lease,
        "https://edge-b.example.com".parse().unwrap(),
        &"edge-a".parse().unwrap(),
    );
    edge.serve.routes().upsert(&to_holder).await.unwrap();
    assert!(edge
        .caddy
        .routes()
        .to_string()
        .contains(old.lease_id.as_str()));

    let CtlRequest::Allocate(request) = allocate_request("portal") else {
        unreachable!("allocate_request builds an allocate")
    };
    let request = AllocateRequest {
        takeover: Takeover::Force,
        ..request
    };
    let new = edge
        .serve
        .call(&root(), calls::Allocate(request))
        .await
        .unwrap();
    assert_ne!(new.lease_id, old.lease_id);
    let routes = edge.caddy.routes().to_string();
    assert!(!routes.contains(old.lease_id.as_str()), "{routes}");
    // The new lease's host link (its socket is not bound here: nothing listens).
    let link = edge.hosts().join("portal.sock");
    assert!(
        link.symlink_metadata().is_ok(),
        "no link {}",
        link.display()
    );
}
