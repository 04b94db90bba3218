//! `mytunneld serve` and `mytunneld gate` as processes, against a real Caddy.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mytunnel_core::gate::SESSION_HELD;
use mytunnel_edge::gate::HOLDER;
use mytunnel_test_support::{
    cmdline, eventually, free_port, make_owner_dirs, stdout_json, Guard, RealCaddy,
};
use serde_json::Value;

#[derive(Debug)]
struct Edge {
    dir: tempfile::TempDir,
    caddy: RealCaddy,
}

impl Edge {
    fn new(extra_env: &str) -> Edge {
        let caddy = RealCaddy::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("s")).unwrap();
        // The tests' ctl runs as root: its leases bind sockets in owners/root.
        make_owner_dirs(&dir.path().join("s"), &["root"], None).unwrap();
        let env = format!(
            "MYTUNNEL_DB_PATH={}\nMYTUNNEL_BASE_DOMAIN=t.test\nMYTUNNEL_CADDY_ADMIN_URL={}\nMYTUNNEL_MIN_PORT=23000\nMYTUNNEL_MAX_PORT=23099\nMYTUNNEL_SOCKET_DIR={}\n{extra_env}",
            dir.path().join("leases.db").display(),
            caddy.admin_address(),
            dir.path().join("s").display(),
        );
        std::fs::write(dir.path().join("mytunneld.env"), env).unwrap();
        Edge { dir, caddy }
    }

    fn env_file(&self) -> PathBuf {
        self.dir.path().join("mytunneld.env")
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mytunneld"));
        command.arg("--env-file").arg(self.env_file()).env_clear();
        command
    }

    /// Starts `mytunneld serve` (ctl asks it) logging to `log`; waits until it listens.
    fn serve(&self, log: &Path) -> Guard {
        self.serve_with_environment(log, &[])
    }

    /// [`Edge::serve`] with `environment` added, as a unit's `Environment=` lines would.
    fn serve_with_environment(&self, log: &Path, environment: &[(&str, &Path)]) -> Guard {
        let serve = Guard(
            self.command()
                .envs(environment.iter().copied())
                .arg("serve")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        );
        assert!(
            mytunnel_test_support::wait_for_serve(
                &self.dir.path().join("s"),
                Duration::from_secs(20)
            ),
            "serve never listened: {}",
            read(log)
        );
        serve
    }

    fn ctl(&self, args: &[&str]) -> Value {
        let output = self.command().arg("ctl").args(args).output().unwrap();
        stdout_json(&output).unwrap()
    }

    fn routes(&self) -> String {
        self.caddy.routes().unwrap_or_default()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Two edges' serves (each with its own Caddy and directories) on one PostgreSQL, as
/// docs/operations.md sets them up: the URL in the env file names a login without its
/// password, which is in a password file only the service reads (`PGPASSFILE`). A name
/// taken on one edge cannot be taken on the other, both list the same leases, each
/// edge's Caddy routes only the leases allocated through it, and a lease without
/// heartbeats is expired once, by its own edge.
#[test]
fn two_serves_share_one_postgres() {
    let pg = mytunnel_test_support::RealPostgres::start().unwrap();
    let url = pg.create_login("mytunnel", "pw-edge", "leases").unwrap();
    let env = |edge: &str| {
        format!(
            "MYTUNNEL_DB_URL={url}\nMYTUNNEL_EDGE_ID={edge}\nMYTUNNEL_ROUTE_MODE=routes\n\
             MYTUNNEL_CLEANUP_INTERVAL=1s\nMYTUNNEL_RECONCILE_INTERVAL=1s\nMYTUNNEL_LOG_FORMAT=json\n"
        )
    };
    let (a, b) = (Edge::new(&env("edge-a")), Edge::new(&env("edge-b")));
    let pgpass = a.dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:{}:leases:mytunnel:pw-edge\n", pg.port()),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let logs = [
        a.dir.path().join("serve.log"),
        b.dir.path().join("serve.log"),
    ];
    let _serve_a = a.serve_with_environment(&logs[0], &[("PGPASSFILE", &pgpass)]);
    let _serve_b = b.serve_with_environment(&logs[1], &[("PGPASSFILE", &pgpass)]);

    let portal = a.ctl(&["allocate", "--name", "portal", "--ttl", "10m"]);
    assert_eq!(portal["host"], "portal.t.test", "{portal}");
    let taken = b.ctl(&["allocate", "--name", "portal"]);
    assert_eq!(taken["error"]["code"], "slug_taken", "{taken}");
    let short = b.ctl(&["allocate", "--name", "short", "--ttl", "30s"]);
    let short_id = short["lease_id"].as_str().unwrap().to_owned();
    for edge in [&a, &b] {
        let mut hosts: Vec<String> = edge
            .ctl(&["list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["host"].as_str().unwrap().to_owned())
            .collect();
        hosts.sort();
        assert_eq!(hosts, ["portal.t.test", "short.t.test"]);
    }
    // Each Caddy has the route of its own edge's lease, and keeps it through a reconcile
    // pass; the other edge's never appears.
    let portal_id = portal["lease_id"].as_str().unwrap().to_owned();
    for edge in [&a, &b] {
        let pass = edge.ctl(&["reconcile"]);
        assert!(pass.get("error").is_none(), "{pass}");
    }
    let (routes_a, routes_b) = (a.routes(), b.routes());
    assert!(
        routes_a.contains(&portal_id) && !routes_a.contains(&short_id),
        "{routes_a}"
    );
    assert!(
        routes_b.contains(&short_id) && !routes_b.contains(&portal_id),
        "{routes_b}"
    );

    // Both serves run cleanup every second; the lease expires once, by its own edge.
    assert!(
        eventually(Duration::from_secs(45), || {
            a.ctl(&["list"])
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["lease_id"] == short_id.as_str() && l["state"] == "expired")
        }),
        "the lease never expired; logs: {} {}",
        read(&logs[0]),
        read(&logs[1])
    );
    // serve logs a pass's expiries when the pass is over (routes removed, tunnels
    // ended), a moment after the list shows the tombstone.
    let expiries = || -> usize {
        logs.iter()
            .map(|log| {
                read(log)
                    .lines()
                    .filter(|line| line.contains("lease expired") && line.contains(&short_id))
                    .count()
            })
            .sum()
    };
    assert!(
        eventually(Duration::from_secs(10), || expiries() >= 1),
        "no expiry logged: {} {}",
        read(&logs[0]),
        read(&logs[1])
    );
    assert_eq!(expiries(), 1, "{} {}", read(&logs[0]), read(&logs[1]));
    assert!(
        read(&logs[1]).contains("lease expired"),
        "{}",
        read(&logs[1])
    );
}

/// A password in the env file's database URL would be every tunnel user's to read: serve
/// refuses to start, and says so without printing it.
#[test]
fn serve_refuses_a_database_url_with_a_password() {
    let edge = Edge::new("MYTUNNEL_DB_URL=postgres://mytunnel:s3cret@127.0.0.1:1/leases\n");
    let output = edge.command().arg("serve").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--db-url") && stderr.contains("PGPASSFILE"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let config = edge.command().arg("config").output().unwrap();
    let shown = String::from_utf8_lossy(&config.stdout);
    assert!(
        shown.contains("postgres://mytunnel:***@127.0.0.1:1/leases"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn serve_expires_reconciles_survives_caddy_and_stops_on_sigterm() {
    let mut edge = Edge::new(
        "MYTUNNEL_LEASE_TTL=2s\nMYTUNNEL_CLEANUP_INTERVAL=1s\nMYTUNNEL_RECONCILE_INTERVAL=1s\nMYTUNNEL_LOG_FORMAT=json\n",
    );
    let log = edge.dir.path().join("serve.log");
    let mut serve = edge.serve(&log);
    let long = edge.ctl(&["allocate", "--name", "long", "--ttl", "10m"]);
    let short = edge.ctl(&["allocate", "--name", "short"]);
    let long_id = long["lease_id"].as_str().unwrap().to_owned();
    let short_id = short["lease_id"].as_str().unwrap().to_owned();
    assert!(edge.routes().contains(&long_id));

    // Cleanup: the 2s lease expires and its route goes; the 10m lease stays.
    assert!(
        eventually(Duration::from_secs(10), || !edge
            .routes()
            .contains(&short_id)),
        "short lease's route still there; log: {}",
        read(&log)
    );
    let list = edge.ctl(&["list"]);
    let state = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|l| l["lease_id"] == id)
            .map(|l| l["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state(&short_id).as_deref(), Some("expired"));
    assert_eq!(state(&long_id).as_deref(), Some("active"));

    // Caddy restarted with its config lost: reconcile restores the route.
    edge.caddy.reset(true).unwrap();
    assert!(!edge.routes().contains(&long_id));
    assert!(
        eventually(Duration::from_secs(10), || edge.routes().contains(&long_id)),
        "route not restored; log: {}",
        read(&log)
    );

    // Caddy down: passes fail, the service keeps running; Caddy back: converges.
    edge.caddy.kill();
    assert!(
        eventually(Duration::from_secs(10), || read(&log)
            .contains("reconcile pass failed")),
        "no failed pass logged: {}",
        read(&log)
    );
    assert!(
        serve.0.try_wait().unwrap().is_none(),
        "serve died with Caddy down"
    );
    edge.caddy.restart().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || edge.routes().contains(&long_id)),
        "route not restored after Caddy came back; log: {}",
        read(&log)
    );

    // SIGTERM: a clean, prompt exit.
    serve.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut status = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            status = serve.0.try_wait().unwrap();
            status.is_some()
        }),
        "serve did not stop on SIGTERM"
    );
    assert!(status.unwrap().success(), "exit status {status:?}");
    let log_text = read(&log);
    assert!(log_text.contains("SIGTERM"), "{log_text}");
    // JSON logs: every line is one JSON object.
    for line in log_text.lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}

/// `GET <path>` from `address` over TCP as a scraper sends it: the status, the
/// `Content-Type` and the body; `None` when nothing answers there (yet).
fn http_get(address: &str, path: &str) -> Option<(u16, String, String)> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Some((status, content_type, body.to_owned()))
}

/// The value of each sample line of a scrape, by series as printed; every other line
/// must be a `# HELP` or `# TYPE` comment.
fn samples(exposition: &str) -> std::collections::BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|line| {
            assert!(
                !line.starts_with('#')
                    || line.starts_with("# HELP mytunnel_")
                    || line.starts_with("# TYPE mytunnel_"),
                "{line}"
            );
            !line.starts_with('#')
        })
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.starts_with("mytunnel_"), "{line}");
            let value = if value == "+Inf" {
                f64::INFINITY
            } else {
                value.parse().unwrap()
            };
            (series.to_owned(), value)
        })
        .collect()
}

#[test]
fn serve_answers_scrapes_of_its_metrics_on_loopback() {
    let address = format!("127.0.0.1:{}", free_port().unwrap());
    let edge = Edge::new(&format!("MYTUNNEL_METRICS_LISTEN={address}\n"));
    let log = edge.dir.path().join("serve.log");
    let _serve = edge.serve(&log);
    let scrape = || {
        let mut answer = None;
        assert!(
            eventually(Duration::from_secs(10), || {
                answer = http_get(&address, "/metrics");
                answer.is_some()
            }),
            "nothing answers at {address}; log: {}",
            read(&log)
        );
        let (status, content_type, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        samples(&body)
    };
    let series = |scrape: &std::collections::BTreeMap<String, f64>, name: &str| {
        scrape.get(name).copied().unwrap_or(0.0)
    };
    const OK: &str = "mytunnel_allocations_total{code=\"ok\"}";
    const TAKEN: &str = "mytunnel_allocations_total{code=\"slug_taken\"}";
    const RELEASED: &str = "mytunnel_releases_total{code=\"ok\"}";
    const ACTIVE: &str = "mytunnel_leases_active";
    const CTL_ALLOCATE: &str = "mytunnel_ctl_request_duration_seconds_count{verb=\"allocate\"}";
    const CTL_RELEASE: &str = "mytunnel_ctl_request_duration_seconds_count{verb=\"release\"}";

    let before = scrape();
    assert_eq!(before.get(ACTIVE), Some(&0.0));
    assert_eq!(before.get(OK), Some(&0.0));
    // serve's first passes ran at start (no Caddy error: the routes were reconciled).
    assert_eq!(series(&before, "mytunnel_caddy_admin_errors_total"), 0.0);

    let lease = edge.ctl(&["allocate", "--name", "metered"]);
    let id = lease["lease_id"].as_str().unwrap().to_owned();
    let taken = edge.ctl(&["allocate", "--name", "metered"]);
    assert_eq!(taken["error"]["code"], "slug_taken", "{taken}");
    let allocated = scrape();
    assert_eq!(series(&allocated, OK) - series(&before, OK), 1.0);
    assert_eq!(series(&allocated, TAKEN) - series(&before, TAKEN), 1.0);
    assert_eq!(
        series(&allocated, CTL_ALLOCATE) - series(&before, CTL_ALLOCATE),
        2.0
    );
    assert_eq!(series(&allocated, ACTIVE), 1.0);

    let released = edge.ctl(&["release", "--lease", &id]);
    assert_eq!(released["state"], "released", "{released}");
    let after = scrape();
    assert_eq!(series(&after, RELEASED) - series(&allocated, RELEASED), 1.0);
    assert_eq!(
        series(&after, CTL_RELEASE) - series(&allocated, CTL_RELEASE),
        1.0
    );
    assert_eq!(series(&after, ACTIVE), 0.0);

    // Nothing else is served there.
    let (status, _, _) = http_get(&address, "/").unwrap();
    assert_eq!(status, 404);
    assert!(
        read(&log).contains("serving Prometheus metrics"),
        "{}",
        read(&log)
    );
}

/// Runs `mytunneld <args>` and waits (bounded) for it to exit; its status, stdout and
/// stderr (as one line of words).
fn exits(edge: &Edge, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let err = edge.dir.path().join("exits.err");
    let out = edge.dir.path().join("exits.out");
    let mut child = Guard(
        edge.command()
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut status = None;
    assert!(
        eventually(Duration::from_secs(20), || {
            status = child.0.try_wait().unwrap();
            status.is_some()
        }),
        "mytunneld {args:?} did not exit: {}",
        read(&err)
    );
    // miette wraps and frames long messages: one line of words.
    let err = read(&err).replace('│', " ");
    let err = err.split_whitespace().collect::<Vec<_>>().join(" ");
    (status.unwrap(), read(&out), err)
}

#[test]
fn a_metrics_address_off_loopback_or_taken_is_refused_naming_the_setting() {
    let edge = Edge::new("MYTUNNEL_METRICS_LISTEN=0.0.0.0:9100\n");
    let (status, out, _) = exits(&edge, &["config"]);
    assert_eq!(status.code(), Some(1), "{out}");
    let line = out
        .lines()
        .find(|line| line.contains("MYTUNNEL_METRICS_LISTEN") || line.contains("metrics_listen"))
        .unwrap_or_else(|| panic!("the setting is not named: {out}"));
    assert!(out.contains("not a loopback address"), "{line}\n{out}");
    let (status, _, err) = exits(&edge, &["serve"]);
    assert!(!status.success());
    assert!(err.contains("MYTUNNEL_METRICS_LISTEN"), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");

    // A loopback address something else holds: serve names the setting and stops.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = held.local_addr().unwrap();
    let edge = Edge::new(&format!("MYTUNNEL_METRICS_LISTEN={address}\n"));
    let (status, _, err) = exits(&edge, &["serve"]);
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "cannot listen on {address} (MYTUNNEL_METRICS_LISTEN)"
        )),
        "{err}"
    );
}

fn gate(edge: &Edge, command: Option<&str>) -> Command {
    let mut gate = edge.command();
    gate.arg("gate");
    if let Some(command) = command {
        gate.env("SSH_ORIGINAL_COMMAND", command);
    }
    gate
}

/// `serve`'s text log goes to a file or the journal, not a terminal: no colour codes.
#[test]
fn the_text_log_has_no_colour_codes_off_a_terminal() {
    let edge = Edge::new("");
    let log = edge.dir.path().join("serve.log");
    let _serve = edge.serve(&log);
    edge.ctl(&["allocate", "--name", "plain"]);
    assert!(
        eventually(Duration::from_secs(10), || read(&log).contains(" INFO ")),
        "no INFO line: {:?}",
        read(&log)
    );
    let text = read(&log);
    assert!(!text.contains('\x1b'), "colour codes in the log: {text:?}");
}

#[test]
fn gate_runs_allowed_verbs_refuses_the_rest_and_ignores_the_environment() {
    let edge = Edge::new("");
    let _serve = edge.serve(&edge.dir.path().join("serve.log"));
    let output = gate(
        &edge,
        Some("mytunneld ctl allocate --name 'gated' --local-port 8080"),
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let lease = stdout_json(&output).unwrap();
    assert_eq!(lease["host"], "gated.t.test");

    for (command, code) in [
        ("sh -c id", "forbidden_command"),
        ("mytunneld serve", "forbidden_command"),
        (
            "mytunneld ctl list --db-path /tmp/x.db",
            "override_not_allowed",
        ),
        (
            "mytunneld ctl list --caddy-admin-url=http://10.0.0.1:2019",
            "override_not_allowed",
        ),
        ("mytunneld ctl shell", "forbidden_command"),
    ] {
        let output = gate(&edge, Some(command)).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{command}");
        assert_eq!(
            stdout_json(&output).unwrap()["error"]["code"],
            code,
            "{command}"
        );
    }

    // Environment variables a client could send (AcceptEnv) do not reach the config.
    let elsewhere = edge.dir.path().join("elsewhere.db");
    let output = gate(&edge, Some("mytunneld ctl list"))
        .env("MYTUNNEL_DB_PATH", &elsewhere)
        .env("MYTUNNEL_ADMIN_USERS", "nobody")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let list = stdout_json(&output).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert!(
        !elsewhere.exists(),
        "the gate used MYTUNNEL_DB_PATH from the environment"
    );
}

/// `mytunneld gate` with `command` in SSH_ORIGINAL_COMMAND (None: unset) and `env_file`.
fn gate_with(env_file: &Path, command: Option<&str>) -> Command {
    let mut gate = Command::new(env!("CARGO_BIN_EXE_mytunneld"));
    gate.arg("--env-file").arg(env_file).arg("gate").env_clear();
    if let Some(command) = command {
        gate.env("SSH_ORIGINAL_COMMAND", command);
    }
    gate
}

/// A held session, its stdin and stdout piped, once it is reading: more than a pipe holds
/// was written to it, so it has read most of that.
fn held_session(env_file: &Path, command: Option<&str>) -> (Guard, std::process::ChildStdin) {
    let mut session = Guard(
        gate_with(env_file, command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = session.0.stdin.take().unwrap();
    stdin.write_all(&[b'x'; 256 * 1024]).unwrap();
    stdin.write_all(b"id\nexit\n").unwrap();
    stdin.flush().unwrap();
    (session, stdin)
}

/// The `Threads:` line of /proc/<pid>/status.
fn threads(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits (5 s at most) for the session to end: its exit status and what it printed.
fn ended(session: &mut Guard) -> (std::process::ExitStatus, String) {
    let mut status = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            status = session.0.try_wait().unwrap();
            status.is_some()
        }),
        "the session did not end"
    );
    let mut stdout = String::new();
    session
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    (status.unwrap(), stdout)
}

/// A held session is one process per client session on the edge: it runs one thread (no
/// async runtime) and becomes `cat` once it has printed its line, reads no configuration (an env file it cannot read changes nothing),
/// runs nothing and prints one line (that it holds the session), and ends when the client
/// closes its input, or at SIGHUP (sshd hanging up its terminal) or SIGTERM.
#[test]
fn gate_holds_an_empty_command_until_the_client_closes_it() {
    use std::os::unix::process::ExitStatusExt;
    let edge = Edge::new("");
    // A directory is no env file.
    let unreadable = edge.dir.path().join("s");
    for (command, env_file) in [
        (None, edge.env_file()),
        (Some(""), edge.env_file()),
        (Some("  "), unreadable.clone()),
    ] {
        let what = format!("{command:?} {}", env_file.display());
        let (mut session, stdin) = held_session(&env_file, command);
        assert!(
            session.0.try_wait().unwrap().is_none(),
            "{what}: session ended on its own"
        );
        assert_eq!(threads(session.pid()), 1, "{what}");
        // Held by the smallest process that can: the gate became `cat`.
        let pid = i32::try_from(session.pid()).unwrap();
        assert!(
            eventually(Duration::from_secs(5), || cmdline(pid)
                .first()
                .map(String::as_str)
                == Some(HOLDER)),
            "{what}: the held session is still {:?}",
            cmdline(pid)
        );
        drop(stdin);
        let (status, stdout) = ended(&mut session);
        assert!(status.success(), "{what}: {status}");
        assert_eq!(stdout, format!("{SESSION_HELD}\n"), "{what}");
    }
    for signal in [
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let (mut session, _stdin) = held_session(&edge.env_file(), None);
        session.signal(signal).unwrap();
        let (status, stdout) = ended(&mut session);
        assert_eq!(status.signal(), Some(signal as i32), "{signal}: {status}");
        assert_eq!(stdout, format!("{SESSION_HELD}\n"), "{signal}");
    }
}
