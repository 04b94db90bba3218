//! Control plane: `mytunneld ctl allocate`, `heartbeat` and `release` as whole processes
//! (spawn to JSON on stdout) against a real Caddy, with N active leases already present.
//!
//! The N leases are seeded straight into the SQLite file with the library (the same file
//! ctl opens through the env file), and in `routes` mode their routes go into Caddy in one
//! `POST /load`, in exactly the shape `mytunnel_edge::caddy::route_json` writes: seeding
//! 5,000 leases through ctl would reload Caddy 5,000 times. In `static` mode the seeded
//! leases get their socket in the owner's directory, as ctl would give them, listening (the
//! bench binds each, as sshd would for a live tunnel), and one
//! `ctl reconcile` has `serve` (which ctl asks to link a host) link all N hosts; serve's
//! reconcile loop keeps its default interval, so it does not compete with the samples.
//! Each sample is one allocate, a heartbeat of that lease and its release, so N stays
//! constant while sampling; between the heartbeat and the release, `serve`'s on-demand TLS
//! `ask` is timed for that lease's host (yes) and for a host without a lease (no). Every
//! size has its own edge and the sizes are sampled in turn (see [`measure`]).

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use mytunnel_core::protocol::Takeover;
use mytunnel_core::route::Route;
use mytunnel_core::store::{AllocateSpec, LeaseStore, NameChoice, OwnerLimit};
use mytunnel_core::{BaseDomain, Owner, PortRange, Slug, SocketPath, Timestamp, Ttl};
use mytunnel_edge::caddy::route_json;
use mytunnel_edge::ids::new_lease_id;
use mytunnel_edge::{SqlLeaseStore, StoreOptions};
use serde_json::Value;

use crate::edge::{
    http_status, Binaries, Edge, EdgeDatabase, EdgeOptions, RouteMode, BASE_DOMAIN, USER,
};
use crate::procs::{Guard, Result};
use crate::stats::Summary;
use mytunnel_test_support::poll_every;

/// The lease port range of the control-plane edge (nothing binds these ports).
const PORTS: (u16, u16) = (20_000, 29_999);

/// A PostgreSQL server (Debian's, started by the bench) whose databases the control
/// plane's PostgreSQL edges keep their leases in: one database and login per edge, the
/// logins' password in one password file, as docs/operations.md sets an edge up.
#[derive(Debug)]
pub struct SharedPostgres {
    server: mytunnel_test_support::RealPostgres,
    /// Holds `pgpass`.
    dir: tempfile::TempDir,
    made: std::cell::Cell<usize>,
}

/// Every bench login's password.
const PG_PASSWORD: &str = "bench-password";

impl SharedPostgres {
    /// Starts the server and writes the password file.
    pub fn start() -> Result<SharedPostgres> {
        let server = mytunnel_test_support::RealPostgres::start()?;
        let dir = tempfile::tempdir().map_err(|e| format!("a directory for pgpass: {e}"))?;
        let pgpass = dir.path().join("pgpass");
        std::fs::write(
            &pgpass,
            format!("127.0.0.1:{}:*:*:{PG_PASSWORD}\n", server.port()),
        )
        .map_err(|e| format!("cannot write {}: {e}", pgpass.display()))?;
        std::fs::set_permissions(
            &pgpass,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .map_err(|e| format!("chmod {}: {e}", pgpass.display()))?;
        Ok(SharedPostgres {
            server,
            dir,
            made: std::cell::Cell::new(0),
        })
    }

    /// A new database and login for one edge.
    fn next_database(&self) -> Result<EdgeDatabase> {
        let n = self.made.get() + 1;
        self.made.set(n);
        let (login, database) = (format!("bench{n}"), format!("leases{n}"));
        let url = self.server.create_login(&login, PG_PASSWORD, &database)?;
        let seed_url = format!(
            "postgres://{login}:{PG_PASSWORD}@127.0.0.1:{}/{database}",
            self.server.port()
        );
        Ok(EdgeDatabase {
            url,
            pgpass: self.dir.path().join("pgpass"),
            seed_url,
        })
    }
}

/// One measured size.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Active leases present while sampling.
    pub leases: usize,
    /// Samples of each verb.
    pub samples: usize,
}

/// Latencies of the three verbs at one size in one mode.
#[derive(Debug, Clone)]
pub struct Row {
    /// The route mode.
    pub mode: Option<RouteMode>,
    /// Active leases present.
    pub leases: usize,
    /// allocate.
    pub allocate: Summary,
    /// heartbeat.
    pub heartbeat: Summary,
    /// release.
    pub release: Summary,
    /// Caddy's on-demand TLS `ask`, a host that has a lease and one that has none, each
    /// a fresh connection: `GET /ask?domain=<host>` to its status line.
    pub ask: Summary,
}

/// Measures every size in one route mode.
///
/// Each size gets its own edge (Caddy, database, and serve in `static` mode), seeded
/// first; then the samples are taken in rounds, one allocate/heartbeat/release per size
/// per round, in an order that rotates every round. Whatever else the machine does while
/// sampling falls on every size alike, so the growth ratio measures the lease count and
/// not the minute it was taken in.
///
/// With `postgres`, each edge keeps its leases in a database of its own on that server
/// (a login of its own, the password in a password file), as several edges would.
pub fn measure(
    binaries: &Binaries,
    mode: Option<RouteMode>,
    sizes: &[Size],
    postgres: Option<&SharedPostgres>,
) -> Result<Vec<Row>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a runtime: {e}"))?;
    let mut edges = Vec::with_capacity(sizes.len());
    // In static mode, every seeded lease's socket listens while sampling, as a live
    // tunnel's does (sshd holds it): the edge reads the listening sockets to tell a stale
    // socket from a live one, and that read grows with them.
    let mut holders: Vec<Guard> = Vec::new();
    for size in sizes {
        let started = std::time::Instant::now();
        let edge = Edge::start(
            binaries,
            &EdgeOptions {
                route_mode: mode,
                ports: PORTS,
                sshd: false,
                // In static mode serve links the seeded hosts. In routes mode it starts
                // once the routes are loaded, so its first reconcile finds them in place
                // (run during the seeding, it would add some twice).
                serve: mode == Some(RouteMode::Static),
                // Caddy's on-demand TLS ask, sampled beside the verbs at every size.
                tls_ask: true,
                database: postgres.map(SharedPostgres::next_database).transpose()?,
            },
        )?;
        let mut edge = edge;
        let (routes, sockets) = runtime.block_on(seed(&edge, size.leases))?;
        if mode == Some(RouteMode::Static) {
            await_host_links(&edge, size.leases)?;
            holders.push(listen_on(&edge, &sockets)?);
        } else {
            load_routes(&edge, routes)?;
            // ctl asks serve, which alone opens the database.
            edge.start_serve()?;
        }
        eprintln!(
            "  control plane [{}]: {} leases seeded in {:.1}s",
            mode.map_or("default", RouteMode::as_str),
            size.leases,
            started.elapsed().as_secs_f64(),
        );
        edges.push(edge);
    }
    let rounds = sizes.iter().map(|s| s.samples).max().unwrap_or(0);
    eprintln!(
        "  control plane [{}]: sampling {rounds} rounds over {} edges",
        mode.map_or("default", RouteMode::as_str),
        edges.len()
    );
    let mut samples: Vec<Samples> = sizes.iter().map(|s| Samples::new(s.samples)).collect();
    for round in 0..rounds {
        for turn in 0..edges.len() {
            let i = (round + turn) % edges.len();
            if let (Some(edge), Some(size), Some(taken)) =
                (edges.get(i), sizes.get(i), samples.get_mut(i))
            {
                if round < size.samples {
                    taken.take(edge)?;
                }
            }
        }
    }
    Ok(sizes
        .iter()
        .zip(samples)
        .map(|(size, taken)| Row {
            mode,
            leases: size.leases,
            allocate: Summary::of(&taken.allocate),
            heartbeat: Summary::of(&taken.heartbeat),
            release: Summary::of(&taken.release),
            ask: Summary::of(&taken.ask),
        })
        .collect())
}

/// The latencies taken at one size.
struct Samples {
    allocate: Vec<Duration>,
    heartbeat: Vec<Duration>,
    release: Vec<Duration>,
    ask: Vec<Duration>,
}

impl Samples {
    fn new(capacity: usize) -> Samples {
        Samples {
            allocate: Vec::with_capacity(capacity),
            heartbeat: Vec::with_capacity(capacity),
            release: Vec::with_capacity(capacity),
            ask: Vec::with_capacity(2 * capacity),
        }
    }

    /// One allocate, a heartbeat of that lease and its release: N stays constant.
    fn take(&mut self, edge: &Edge) -> Result<()> {
        let (lease, took) = edge.ctl(&["allocate", "--local-port", "3000"], false)?;
        self.allocate.push(took);
        let id = lease
            .get("lease_id")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("allocate answered no lease_id: {lease}"))?
            .to_owned();
        let (_, took) = edge.ctl(&["heartbeat", "--lease", &id], false)?;
        self.heartbeat.push(took);
        if let Some(ask) = edge.tls_ask() {
            let host = lease
                .get("host")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("allocate answered no host: {lease}"))?;
            let unknown = format!("no-lease-{id}.{BASE_DOMAIN}").replace('_', "-");
            for (host, expected) in [(host, 200), (unknown.as_str(), 404)] {
                let started = Instant::now();
                let status = http_status(ask, "127.0.0.1", &format!("/ask?domain={host}"));
                let took = started.elapsed();
                if status != Some(expected) {
                    return Err(format!(
                        "TLS ask for {host} answered {status:?}, not {expected}: {}",
                        edge.serve_log()
                    ));
                }
                self.ask.push(took);
            }
        }
        let (_, took) = edge.ctl(&["release", "--lease", &id], false)?;
        self.release.push(took);
        Ok(())
    }
}

/// `routes` mode: the seeded leases' routes go into Caddy in one load, checked.
fn load_routes(edge: &Edge, routes: Vec<Value>) -> Result<()> {
    let expected = routes.len();
    edge.load_routes(routes)?;
    let in_caddy = edge.mytunnel_route_count()?;
    if in_caddy != expected {
        return Err(format!(
            "after seeding {expected} leases Caddy holds {in_caddy} mytunnel routes"
        ));
    }
    Ok(())
}

/// `static` mode: one `ctl reconcile` has serve link every seeded host.
fn await_host_links(edge: &Edge, leases: usize) -> Result<()> {
    edge.ctl(&["reconcile"], false)
        .map_err(|e| format!("static mode: ctl reconcile after seeding: {e}"))?;
    if poll_every(Duration::from_secs(120), Duration::from_millis(50), || {
        edge.host_link_count() >= leases
    }) {
        return Ok(());
    }
    Err(format!(
        "static mode: serve linked {} of {leases} seeded hosts within 120s: {}",
        edge.host_link_count(),
        edge.serve_log()
    ))
}

/// Listening sockets at `sockets`, held by a child process (`mytunnel-bench
/// --hold-sockets FILE`) until the guard drops: held here, thousands of descriptors would
/// make every `ctl` this process spawns slower to start, and the samples would time that.
fn listen_on(edge: &Edge, sockets: &[SocketPath]) -> Result<Guard> {
    let list = edge.path(&format!("tmp/hold-{}.txt", sockets.len()));
    let text: String = sockets
        .iter()
        .map(|s| format!("{}\n", s.as_str()))
        .collect();
    std::fs::write(&list, text).map_err(|e| format!("write {}: {e}", list.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    let mut holder = Guard::spawn_leaf(
        Command::new(exe)
            .arg("--hold-sockets")
            .arg(&list)
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
        "the socket holder",
    )?;
    let ready = ready_marker(&list);
    if poll_every(Duration::from_secs(60), Duration::from_millis(20), || {
        ready.exists() || holder.check_running().is_err()
    }) && ready.exists()
    {
        return Ok(holder);
    }
    Err(format!(
        "the socket holder did not listen on {} sockets within 60s",
        sockets.len()
    ))
}

fn ready_marker(list: &Path) -> PathBuf {
    list.with_extension("ready")
}

/// `mytunnel-bench --hold-sockets FILE`: listens on every path in FILE (one per line),
/// writes FILE's `.ready` marker, and holds them until killed.
pub fn hold_sockets(list: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(list).map_err(|e| format!("read {}: {e}", list.display()))?;
    let paths: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    raise_open_files(paths.len() + 64)?;
    let listeners = paths
        .iter()
        .map(|path| UnixListener::bind(path).map_err(|e| format!("cannot listen on {path}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    std::fs::write(ready_marker(list), "")
        .map_err(|e| format!("write the ready marker of {}: {e}", list.display()))?;
    loop {
        std::thread::park();
        let _ = &listeners;
    }
}

/// Lets this process hold `wanted` descriptors (the static seeds' listening sockets).
fn raise_open_files(wanted: usize) -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let wanted = u64::try_from(wanted).unwrap_or(u64::MAX);
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit NOFILE: {e}"))?;
    if soft >= wanted {
        return Ok(());
    }
    // Root may raise the hard limit too.
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard.max(wanted))
        .map_err(|e| format!("cannot allow {wanted} open files (soft {soft}, hard {hard}): {e}"))
}

/// Allocates `count` leases (owner: the tunnel user, names `seed-<i>`) in the edge's DB and
/// answers their routes and, in static mode, their sockets.
async fn seed(edge: &Edge, count: usize) -> Result<(Vec<Value>, Vec<SocketPath>)> {
    let database = edge.database()?;
    let store = SqlLeaseStore::open(&database, &StoreOptions::default())
        .await
        .map_err(|e| format!("open {database}: {e}"))?;
    let owner: Owner = USER.parse().map_err(|e| format!("owner: {e}"))?;
    let owners_dir = edge.owners_dir();
    let base_domain: BaseDomain = BASE_DOMAIN
        .parse()
        .map_err(|e| format!("base domain: {e}"))?;
    let ports = PortRange::new(PORTS.0, PORTS.1).map_err(|e| format!("port range: {e}"))?;
    let mut routes = Vec::with_capacity(count);
    let mut sockets = Vec::new();
    for i in 0..count {
        let slug: Slug = format!("seed-{i}")
            .parse()
            .map_err(|e| format!("slug seed-{i}: {e}"))?;
        let id = new_lease_id();
        let bind_socket = match &owners_dir {
            Some(dir) => Some(
                mytunnel_edge::sockets::lease_socket(dir, &owner, &id)
                    .map_err(|e| format!("socket of seed lease {i}: {}", e.message))?,
            ),
            None => None,
        };
        sockets.extend(bind_socket.clone());
        let allocation = store
            .allocate(AllocateSpec {
                id,
                bind_socket,
                owner: owner.clone(),
                name: NameChoice::Exact(slug),
                takeover: Takeover::Refuse,
                replaces: None,
                ttl: Ttl::configured(Duration::from_secs(24 * 3600)),
                base_domain: base_domain.clone(),
                ports,
                // Nothing listens on the control-plane edge's ports.
                held_ports: Vec::new(),
                owner_limit: OwnerLimit::Unlimited,
                now: Timestamp::from_system_time(SystemTime::now()),
            })
            .await
            .map_err(|e| format!("seed lease {i}: {e}"))?;
        routes.push(route_json(&Route::for_lease(&allocation.lease)));
    }
    store.close().await;
    Ok((routes, sockets))
}
