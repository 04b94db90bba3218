//! Faults the edge must survive, with real processes: `mytunneld serve` killed with -9 in
//! the middle of a cleanup or a reconcile pass, Caddy killed while allocations run, the
//! database locked, full or unwritable, and a malformed env file. Each test ends in a
//! checked state: no lease lost, no orphan route, no partial row, the service running.
//!
//! Sizes: `MYTUNNEL_FAULT_LEASES` (default 120) leases make a pass long enough to be
//! killed in the middle; `cargo xtask soak` runs it with more.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use mytunnel_core::policy::OwnerScope;
use mytunnel_core::protocol::{LeaseDto, Takeover};
use mytunnel_core::route::{InstalledRoute, Route};
use mytunnel_core::store::{AllocateSpec, LeaseStore, NameChoice, OwnerLimit};
use mytunnel_core::{Lease, PortRange, Timestamp, Ttl};
use mytunnel_edge::caddy::{parse_body, parse_routes, route_json};
use mytunnel_edge::ids::new_lease_id;
use mytunnel_edge::{SqlLeaseStore, StoreOptions};
use mytunnel_test_support::{
    admin_request, base_config, copy_executable, eventually, make_owner_dirs, stdout_json, Guard,
    RealCaddy,
};
use serde_json::Value;

const MIN_PORT: u16 = 40_000;
const MAX_PORT: u16 = 41_999;

fn fault_leases() -> usize {
    std::env::var("MYTUNNEL_FAULT_LEASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(120)
}

/// How long a restarted serve may take to converge: Caddy reloads its whole config on
/// every change, so each route costs more the more there are (see BENCHMARKS.md).
fn converge_timeout(leases: usize) -> Duration {
    Duration::from_secs(60 + u64::try_from(leases).unwrap() / 2)
}

/// A tmpfs mounted for one test; unmounted (lazily, so a leftover open file cannot keep
/// it) when dropped, also after a failed assertion.
#[derive(Debug)]
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount tmpfs on {}: {status}",
            dir.display()
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// One edge: a real Caddy, an env file and a database in a temporary directory, and the
/// built `mytunneld` copied where any user can run it.
#[derive(Debug)]
struct Edge {
    caddy: RealCaddy,
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Edge {
    fn new(db_dir: Option<&Path>, extra_env: &str) -> Edge {
        let caddy = RealCaddy::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = db_dir.unwrap_or(dir.path()).join("leases.db");
        let bin = dir.path().join("mytunneld");
        copy_executable(Path::new(env!("CARGO_BIN_EXE_mytunneld")), &bin).unwrap();
        std::fs::create_dir(dir.path().join("s")).unwrap();
        // The tests' ctl runs as root: its leases bind sockets in owners/root.
        make_owner_dirs(&dir.path().join("s"), &["root"], None).unwrap();
        let env = format!(
            "MYTUNNEL_DB_PATH={}\nMYTUNNEL_BASE_DOMAIN=t.test\nMYTUNNEL_CADDY_ADMIN_URL={}\n\
             MYTUNNEL_MIN_PORT={MIN_PORT}\nMYTUNNEL_MAX_PORT={MAX_PORT}\n\
             MYTUNNEL_MAX_LEASES_PER_OWNER=0\nMYTUNNEL_SOCKET_DIR={}\n{extra_env}",
            db.display(),
            caddy.admin_address(),
            dir.path().join("s").display(),
        );
        let env_path = dir.path().join("mytunneld.env");
        std::fs::write(&env_path, env).unwrap();
        std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Edge { caddy, dir, db }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(self.dir.path().join("mytunneld"));
        command
            .arg("--env-file")
            .arg(self.dir.path().join("mytunneld.env"))
            .env_clear()
            .stdin(Stdio::null());
        command
    }

    /// `mytunneld ctl <args>` as root: exit code, JSON, how long it took.
    fn ctl(&self, args: &[&str]) -> (i32, Value, Duration) {
        let started = Instant::now();
        let output = self.command().arg("ctl").args(args).output().unwrap();
        let took = started.elapsed();
        (
            output.status.code().unwrap_or(-1),
            stdout_json(&output).unwrap(),
            took,
        )
    }

    fn serve(&self, log: &str) -> Guard {
        Guard(
            self.command()
                .arg("serve")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.dir.path().join(log)).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    /// Starts serve and waits until ctl can reach it.
    fn serve_ready(&self, log: &str) -> Guard {
        let serve = self.serve(log);
        assert!(
            mytunnel_test_support::wait_for_serve(
                &self.dir.path().join("s"),
                Duration::from_secs(20)
            ),
            "serve never listened: {}",
            self.log(log)
        );
        serve
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Every lease in the database, read from the file (serve may be down).
    fn all_leases(&self) -> Vec<Value> {
        runtime().block_on(async {
            let store = SqlLeaseStore::open_existing_read_only(&self.db, &StoreOptions::default())
                .await
                .unwrap();
            let leases = store.list(&OwnerScope::All).await.unwrap();
            store.close().await;
            leases
                .iter()
                .map(|l| serde_json::to_value(LeaseDto::from(l)).unwrap())
                .collect()
        })
    }

    /// Caddy's routes that belong to mytunnel.
    fn our_routes(&self) -> Vec<InstalledRoute> {
        let text = self.caddy.routes().unwrap_or_default();
        parse_routes(&parse_body(&text)).unwrap_or_default()
    }

    /// Replaces Caddy's routes with `routes` (ahead of the catch-all) in one load.
    fn load_routes(&self, routes: &[Route]) {
        let mut config = base_config(self.caddy.admin_socket(), self.caddy.http_address(), true);
        let server = &mut config["apps"]["http"]["servers"]["srv0"];
        let mut list: Vec<Value> = routes.iter().map(route_json).collect();
        list.extend(server["routes"].as_array().unwrap().iter().cloned());
        server["routes"] = Value::Array(list);
        admin_request(self.caddy.admin_socket(), "POST", "/load", Some(&config)).unwrap();
        self.caddy.settle();
    }
}

/// `mytunneld ctl allocate --local-port 8080` with `bin` and `env_file`, as root: exit
/// code and JSON.
fn allocate_once(bin: &Path, env_file: &Path) -> (i32, Value) {
    let output = Command::new(bin)
        .arg("--env-file")
        .arg(env_file)
        .args(["ctl", "allocate", "--local-port", "8080"])
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        stdout_json(&output).unwrap(),
    )
}

/// The lease ids of the allocations that succeeded.
fn allocated_ids(results: &[(i32, Value)]) -> BTreeSet<String> {
    results
        .iter()
        .filter(|(c, _)| *c == 0)
        .map(|(_, v)| v["lease_id"].as_str().unwrap().to_owned())
        .collect()
}

fn code(json: &Value) -> &str {
    json["error"]["code"].as_str().unwrap_or("<no error>")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Inserts `count` leases straight into the store (fast; no routes), each allocated at
/// `now` with `ttl`. Returns them.
fn insert_leases(db: &Path, count: usize, now: SystemTime, ttl: Duration) -> Vec<Lease> {
    runtime().block_on(async {
        let store = SqlLeaseStore::open_sqlite(db, &StoreOptions::default())
            .await
            .unwrap();
        let mut leases = Vec::with_capacity(count);
        for _ in 0..count {
            let spec = AllocateSpec {
                held_ports: Vec::new(),
                id: new_lease_id(),
                owner: "root".parse().unwrap(),
                name: NameChoice::FirstFreeOf(mytunnel_edge::ids::generated_slug_candidates(8)),
                takeover: Takeover::Refuse,
                replaces: None,
                ttl: Ttl::configured(ttl),
                base_domain: "t.test".parse().unwrap(),
                ports: PortRange::new(MIN_PORT, MAX_PORT).unwrap(),
                bind_socket: None,
                owner_limit: OwnerLimit::Unlimited,
                now: Timestamp::from_system_time(now),
            };
            leases.push(store.allocate(spec).await.unwrap().lease);
        }
        store.close().await;
        leases
    })
}

fn active_ids(edge: &Edge) -> BTreeSet<String> {
    edge.all_leases()
        .iter()
        .filter(|l| l["state"] == "active")
        .map(|l| l["lease_id"].as_str().unwrap().to_owned())
        .collect()
}

fn route_ids(routes: &[InstalledRoute]) -> BTreeSet<String> {
    routes
        .iter()
        .filter_map(|r| r.route.as_ref().map(|r| r.lease_id.to_string()))
        .collect()
}

/// Routes match the active leases exactly: one correct route per lease, nothing else.
fn converged(edge: &Edge, leases: &[Lease]) -> bool {
    let routes = edge.our_routes();
    let mut expected: Vec<Route> = leases.iter().map(Route::for_lease).collect();
    let mut got: Vec<Route> = routes.iter().filter_map(|r| r.route.clone()).collect();
    expected.sort_by_key(Route::id);
    got.sort_by_key(Route::id);
    routes.len() == got.len() && got == expected
}

#[test]
fn serve_killed_during_reconcile_converges_on_the_next_start() {
    let n = fault_leases();
    let edge = Edge::new(
        None,
        "MYTUNNEL_CLEANUP_INTERVAL=1h\nMYTUNNEL_RECONCILE_INTERVAL=1h\n",
    );
    let leases = insert_leases(&edge.db, n, SystemTime::now(), Duration::from_secs(3600));
    // Orphans of leases that do not exist, and no route of any real lease.
    let orphans = insert_leases(
        &edge.dir.path().join("other.db"),
        10,
        SystemTime::now(),
        Duration::from_secs(3600),
    );
    edge.load_routes(&orphans.iter().map(Route::for_lease).collect::<Vec<_>>());
    assert_eq!(edge.our_routes().len(), 10);

    // The first pass removes the orphans, then adds the routes one by one: kill it -9
    // once some but not all are there.
    let mut serve = edge.serve("serve-1.log");
    let mut seen = 0;
    let killed = eventually(Duration::from_secs(60), || {
        seen = route_ids(&edge.our_routes()).len();
        if seen > 0 && seen < n / 2 {
            serve.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
            true
        } else {
            false
        }
    });
    serve.kill();
    assert!(
        killed,
        "never saw a partial reconcile (last count {seen}); log: {}",
        edge.log("serve-1.log")
    );
    let partial = edge.our_routes().len();
    assert!(
        partial < n,
        "the pass finished before the kill ({partial} routes)"
    );
    // No lease lost.
    let expected: BTreeSet<String> = leases.iter().map(|l| l.id.to_string()).collect();
    assert_eq!(active_ids(&edge), expected);

    let started = Instant::now();
    let _serve = edge.serve("serve-2.log");
    assert!(
        eventually(converge_timeout(n), || converged(&edge, &leases)),
        "not converged: {} routes for {n} leases; log: {}",
        edge.our_routes().len(),
        edge.log("serve-2.log")
    );
    println!(
        "FIGURE reconcile-kill: {n} leases, killed at {partial} routes, converged {:.2}s after restart",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(active_ids(&edge), expected, "a lease was lost");
}

#[test]
fn serve_killed_during_cleanup_leaves_no_orphan_after_the_next_start() {
    let n = fault_leases();
    let edge = Edge::new(
        None,
        "MYTUNNEL_CLEANUP_INTERVAL=1h\nMYTUNNEL_RECONCILE_INTERVAL=1h\n",
    );
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let stale = insert_leases(&edge.db, n, hour_ago, Duration::from_secs(120));
    let live = insert_leases(&edge.db, 3, SystemTime::now(), Duration::from_secs(3600));
    let all: Vec<Route> = stale.iter().chain(&live).map(Route::for_lease).collect();
    edge.load_routes(&all);
    assert_eq!(edge.our_routes().len(), n + 3);

    // Cleanup expires every stale lease in one transaction, then removes their routes
    // one by one: kill it -9 once some of those routes are gone but not all.
    let stale_ids: BTreeSet<String> = stale.iter().map(|l| l.id.to_string()).collect();
    let mut serve = edge.serve("serve-1.log");
    let mut left = n;
    let killed = eventually(Duration::from_secs(60), || {
        left = route_ids(&edge.our_routes())
            .intersection(&stale_ids)
            .count();
        if left > n / 2 && left < n {
            serve.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
            true
        } else {
            false
        }
    });
    serve.kill();
    assert!(
        killed,
        "never saw a partial cleanup ({left} routes of stale leases left); log: {}",
        edge.log("serve-1.log")
    );
    let orphans = route_ids(&edge.our_routes())
        .intersection(&stale_ids)
        .count();
    assert!(orphans > 0, "the pass finished before the kill");
    let states = |edge: &Edge| {
        let leases = edge.all_leases();
        let count = |s: &str| leases.iter().filter(|l| l["state"] == s).count();
        (count("active"), count("expired"))
    };
    assert_eq!(
        states(&edge),
        (3, n),
        "cleanup commits the expiry before removing routes"
    );

    let started = Instant::now();
    let _serve = edge.serve("serve-2.log");
    assert!(
        eventually(converge_timeout(n), || converged(&edge, &live)),
        "orphans left: {} routes for 3 live leases; log: {}",
        edge.our_routes().len(),
        edge.log("serve-2.log")
    );
    println!(
        "FIGURE cleanup-kill: {n} stale leases, killed with {orphans} orphan routes, converged {:.2}s after restart",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(states(&edge), (3, n), "a lease was lost");
}

/// Allocations running while Caddy is killed: each one either succeeded (its lease is
/// active, and its route is back once Caddy returns) or answered `caddy_unavailable` and
/// kept no lease. Complements `service_component::caddy_down_during_allocate_keeps_no_lease`
/// (Caddy down before the call) with a kill at a moment the test does not choose.
#[test]
fn caddy_killed_while_allocations_run() {
    let mut edge = Edge::new(
        None,
        "MYTUNNEL_CLEANUP_INTERVAL=1h\nMYTUNNEL_RECONCILE_INTERVAL=1s\nMYTUNNEL_HEALTH_TIMEOUT=2s\n",
    );
    let _serve = edge.serve_ready("serve.log");
    let bin = edge.dir.path().join("mytunneld");
    let env_file = edge.dir.path().join("mytunneld.env");
    let workers: Vec<std::thread::JoinHandle<Vec<(i32, Value)>>> = (0..8)
        .map(|_| {
            let bin = bin.clone();
            let env_file = env_file.clone();
            std::thread::spawn(move || (0..10).map(|_| allocate_once(&bin, &env_file)).collect())
        })
        .collect();
    // Kill Caddy once some allocations went through.
    assert!(eventually(Duration::from_secs(60), || edge
        .our_routes()
        .len()
        >= 8));
    edge.caddy.kill();
    let results: Vec<(i32, Value)> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let ok = allocated_ids(&results);
    let refused = results
        .iter()
        .filter(|(c, v)| *c == 2 && code(v) == "caddy_unavailable")
        .count();
    assert_eq!(ok.len() + refused, results.len(), "{results:#?}");
    assert!(refused > 0, "Caddy was never seen down: {results:#?}");
    // Nothing but the successful allocations is active.
    assert_eq!(active_ids(&edge), ok);

    // Caddy back with its config lost: serve's reconcile restores exactly those routes.
    edge.caddy.restart().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || route_ids(&edge.our_routes())
            == ok
            && edge.our_routes().len() == ok.len()),
        "routes {:?} != leases {ok:?}; log: {}",
        route_ids(&edge.our_routes()),
        edge.log("serve.log")
    );
    println!(
        "FIGURE caddy-kill: {} allocations, {} ok, {refused} caddy_unavailable",
        results.len(),
        ok.len()
    );
}

/// Holds the write lock of `db` (`BEGIN IMMEDIATE`) in another thread until dropped.
struct WriteLock {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriteLock {
    fn take(db: &Path) -> WriteLock {
        use sqlx::{Connection, Executor};
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        // Creates the file when it does not exist yet (a database serve must still migrate).
        let url = format!("sqlite://{}?mode=rwc", db.display());
        let thread = std::thread::spawn(move || {
            runtime().block_on(async move {
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                conn.execute("BEGIN IMMEDIATE").await.unwrap();
                locked_tx.send(()).unwrap();
                let _ = tokio::task::spawn_blocking(move || release_rx.recv()).await;
                conn.execute("ROLLBACK").await.unwrap();
                conn.close().await.unwrap();
            });
        });
        locked_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        WriteLock {
            release: Some(release),
            thread: Some(thread),
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Asserts that `name` has no row (the failed allocation left nothing behind).
fn no_row_named(edge: &Edge, name: &str) {
    let leases = edge.all_leases();
    assert!(
        !leases
            .iter()
            .any(|l| l["slug"] == name || l["host"].as_str().is_some_and(|h| h.starts_with(name))),
        "{name}: {leases:#?}"
    );
}

#[test]
fn database_locked_full_or_unwritable_is_db_error_and_serve_keeps_running() {
    let scratch = tempfile::tempdir().unwrap();
    let mount = scratch.path().join("db");
    let tmpfs = Tmpfs::mount(&mount, "4m");
    let edge = Edge::new(
        Some(&tmpfs.0),
        "MYTUNNEL_CLEANUP_INTERVAL=1s\nMYTUNNEL_RECONCILE_INTERVAL=1s\n",
    );
    let serving_ok = |edge: &Edge, name: &str| {
        let (c, lease, _) = edge.ctl(&["allocate", "--name", name, "--local-port", "80"]);
        assert_eq!(c, 0, "{name}: {lease}");
        assert!(route_ids(&edge.our_routes()).contains(lease["lease_id"].as_str().unwrap()));
    };

    // 1. Locked by another process for longer than the busy timeout (5s).
    //  a. A new database file, locked while serve starts: migrating it needs the lock, so
    //     serve waits for the database instead of exiting; until it has it, ctl answers
    //     service_unavailable at once and changes nothing.
    let mut serve;
    {
        let _lock = WriteLock::take(&edge.db);
        serve = edge.serve("serve.log");
        assert!(
            eventually(Duration::from_secs(20), || edge
                .log("serve.log")
                .contains("cannot open the lease database")),
            "{}",
            edge.log("serve.log")
        );
        let (c, err, took) = edge.ctl(&["allocate", "--name", "locked", "--local-port", "80"]);
        assert_eq!((c, code(&err)), (2, "service_unavailable"), "{err}");
        assert!(took < Duration::from_secs(2), "answered after {took:?}");
        println!(
            "FIGURE db-locked-at-start: service_unavailable after {:.3}s",
            took.as_secs_f64()
        );
        assert!(serve.running(), "serve died: {}", edge.log("serve.log"));
    }
    assert!(
        eventually(Duration::from_secs(20), || edge
            .log("serve.log")
            .contains("mytunneld serving")),
        "serve did not start once the lock went: {}",
        edge.log("serve.log")
    );
    no_row_named(&edge, "locked");
    assert!(serve.running(), "serve died: {}", edge.log("serve.log"));
    serving_ok(&edge, "after-lock");
    //  b. The migrated database, locked while serve runs: an open only reads the schema
    //     version, so serve's passes and ctl's writes each answer db_error, and serve
    //     keeps running.
    {
        let failed_passes = || edge.log("serve.log").matches("pass failed").count();
        let before = failed_passes();
        let _lock = WriteLock::take(&edge.db);
        let (c, err, took) = edge.ctl(&["allocate", "--name", "relocked", "--local-port", "80"]);
        assert_eq!((c, code(&err)), (2, "db_error"), "{err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains("locked"),
            "{err}"
        );
        assert!(took >= Duration::from_secs(5), "gave up after {took:?}");
        println!(
            "FIGURE db-locked: db_error after {:.2}s",
            took.as_secs_f64()
        );
        assert!(
            eventually(Duration::from_secs(20), || failed_passes() > before),
            "{}",
            edge.log("serve.log")
        );
        assert!(serve.running(), "serve died: {}", edge.log("serve.log"));
    }
    no_row_named(&edge, "relocked");
    serving_ok(&edge, "after-relock");

    // 2. Disk full: allocations either succeed whole or answer db_error with no row.
    let filler = tmpfs.0.join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let mut byte = [0u8; 1];
        while file.write_all(&byte).is_ok() {
            byte[0] = 1;
        }
    }
    let mut outcomes = Vec::new();
    let mut full_error = None;
    for i in 0..200 {
        let name = format!("full-{i}");
        let (c, reply, _) = edge.ctl(&["allocate", "--name", &name, "--local-port", "80"]);
        outcomes.push((name, c, reply.clone()));
        if c != 0 {
            full_error = Some(reply);
            break;
        }
    }
    let full_error = full_error.expect("200 allocations on a full disk all succeeded");
    assert_eq!(code(&full_error), "db_error", "{full_error}");
    let message = full_error["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("full") || message.contains("space"),
        "{message}"
    );
    println!(
        "FIGURE disk-full: db_error after {} allocation(s): {message}",
        outcomes.len() - 1
    );
    assert!(serve.running(), "serve died: {}", edge.log("serve.log"));
    std::fs::remove_file(&filler).unwrap();
    let active = active_ids(&edge);
    for (name, c, reply) in &outcomes {
        if *c == 0 {
            assert!(
                active.contains(reply["lease_id"].as_str().unwrap()),
                "{name}"
            );
        } else {
            no_row_named(&edge, name);
        }
    }
    serving_ok(&edge, "after-full");

    // 3. A user who may not open the database at all (it is serve's, 0600) still has
    //    it only through serve: nobody is not in serve's group, so the control socket
    //    (0660) refuses them too, and nothing is written.
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let output = edge
        .command()
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .args([
            "ctl",
            "allocate",
            "--name",
            "outsider",
            "--local-port",
            "80",
        ])
        .output()
        .unwrap();
    let reply = stdout_json(&output).unwrap();
    assert_eq!(
        (output.status.code(), code(&reply)),
        (Some(2), "service_unavailable"),
        "{reply}"
    );
    no_row_named(&edge, "outsider");
    assert!(serve.running(), "serve died: {}", edge.log("serve.log"));
    serving_ok(&edge, "after-outsider");
    let (c, health, _) = edge.ctl(&["health"]);
    assert_eq!(c, 0, "{health}");

    serve.kill();
    drop(edge);
    drop(tmpfs);
}

#[test]
fn a_malformed_env_file_names_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let env_path = dir.path().join("mytunneld.env");
    std::fs::write(
        &env_path,
        "MYTUNNEL_BASE_DOMAIN=t.test\n# fine\nthis is not a pair\n",
    )
    .unwrap();
    let file = env_path.display().to_string();
    for args in [&["ctl", "list"][..], &["serve"][..]] {
        let output = Command::new(env!("CARGO_BIN_EXE_mytunneld"))
            .arg("--env-file")
            .arg(&env_path)
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.status.success(), "{args:?}: {text}");
        assert!(
            text.contains(&file),
            "{args:?} does not name the file: {text}"
        );
        assert!(
            text.contains("line 3"),
            "{args:?} does not name the line: {text}"
        );
    }
    // The gate (SSH_ORIGINAL_COMMAND) answers a JSON envelope naming both.
    let output = Command::new(env!("CARGO_BIN_EXE_mytunneld"))
        .arg("--env-file")
        .arg(&env_path)
        .arg("gate")
        .env_clear()
        .env("SSH_ORIGINAL_COMMAND", "mytunneld ctl list")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let reply = stdout_json(&output).unwrap();
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&file) && message.contains("line 3"),
        "{reply}"
    );
}

/// `serve` killed -9 while 32 clients allocate (real ctl processes, `static` mode), then
/// started again: no two active leases share a name or socket; every lease a client was
/// told about is active; a client answered `service_unavailable` holds nothing it knows
/// of (an allocation committed just before the kill whose answer was lost is never
/// heartbeated and ends by its TTL); and nothing else ever came back.
#[test]
fn serve_killed_while_32_clients_allocate() {
    const CLIENTS: usize = 32;
    let edge = Edge::new(
        None,
        "MYTUNNEL_ROUTE_MODE=static\nMYTUNNEL_CLEANUP_INTERVAL=1h\nMYTUNNEL_RECONCILE_INTERVAL=1h\n",
    );
    let socket_dir = edge.dir.path().join("s");
    std::fs::create_dir_all(socket_dir.join("hosts")).unwrap();
    let mut serve = edge.serve_ready("serve-1.log");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let told = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bin = edge.dir.path().join("mytunneld");
    let env_file = edge.dir.path().join("mytunneld.env");
    let clients: Vec<std::thread::JoinHandle<Vec<(i32, Value)>>> = (0..CLIENTS)
        .map(|_| {
            let (bin, env_file) = (bin.clone(), env_file.clone());
            let (stop, told, refused) = (stop.clone(), told.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut results = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let (code, reply) = allocate_once(&bin, &env_file);
                    if code == 0 {
                        told.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    } else {
                        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    results.push((code, reply));
                }
                results
            })
        })
        .collect();
    // Kill it in the middle of the load, leave it down a moment, start it again.
    assert!(eventually(Duration::from_secs(60), || told
        .load(std::sync::atomic::Ordering::SeqCst)
        >= 64));
    serve.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    serve.kill();
    let at_kill = told.load(std::sync::atomic::Ordering::SeqCst);
    // Down until clients have noticed (each answer comes within 2 s).
    assert!(eventually(Duration::from_secs(20), || refused
        .load(std::sync::atomic::Ordering::SeqCst)
        >= CLIENTS));
    let _serve = edge.serve_ready("serve-2.log");
    assert!(eventually(Duration::from_secs(60), || told
        .load(std::sync::atomic::Ordering::SeqCst)
        >= at_kill + 64));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let results: Vec<(i32, Value)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();

    let told = allocated_ids(&results);
    let unavailable = results
        .iter()
        .filter(|(_, v)| code(v) == "service_unavailable")
        .count();
    let others: Vec<&(i32, Value)> = results
        .iter()
        .filter(|(c, v)| *c != 0 && code(v) != "service_unavailable")
        .collect();
    assert!(others.is_empty(), "unexpected answers: {others:#?}");
    assert!(unavailable > 0, "no client saw serve down");

    let leases = edge.all_leases();
    let active: Vec<&Value> = leases.iter().filter(|l| l["state"] == "active").collect();
    let distinct = |key: &str| {
        active
            .iter()
            .map(|l| l[key].as_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>()
            .len()
    };
    assert_eq!(
        distinct("slug"),
        active.len(),
        "two active leases share a name"
    );
    assert_eq!(
        distinct("edge_bind_target"),
        active.len(),
        "two active leases share a socket"
    );
    let active_ids: BTreeSet<String> = active
        .iter()
        .map(|l| l["lease_id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<&String> = told.difference(&active_ids).collect();
    assert!(
        lost.is_empty(),
        "leases a client was told about are gone: {lost:?}"
    );
    // Committed just before the kill, answer lost: at most one per client in flight,
    // never heartbeated, so they end by their TTL.
    let untold: Vec<&&Value> = active
        .iter()
        .filter(|l| !told.contains(l["lease_id"].as_str().unwrap()))
        .collect();
    assert!(untold.len() <= CLIENTS, "{} untold leases", untold.len());
    for lease in &untold {
        assert_eq!(lease["updated_at"], lease["created_at"], "{lease}");
    }
    println!(
        "FIGURE serve-kill-under-load: {} allocations told, {unavailable} service_unavailable, {} committed but untold (end by TTL), 0 duplicates",
        told.len(),
        untold.len()
    );
}
