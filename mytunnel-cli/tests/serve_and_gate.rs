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
use mytunnel_test_support::{cmdline, eventually, make_owner_dirs, stdout_json, Guard, RealCaddy};
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
        let serve = Guard(
            self.command()
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
