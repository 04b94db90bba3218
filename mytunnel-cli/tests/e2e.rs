//! End to end on real sshd, Caddy and OS users: the built `mytunnel` and `mytunneld`, a
//! real `sshd` on a loopback port whose tunnel keys (installed by
//! `scripts/install-edge-ssh-key.sh`) are gated by `mytunneld gate`, a real Caddy, OS users
//! alice, bob and ops (ops is an edge admin), real local apps, and HTTP requests through
//! Caddy with the tunnel's Host header.
//!
//! Each test builds its own stack (see `e2e_support`); needs root, as `cargo xtask e2e`
//! runs it.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod e2e_support;

use std::process::Stdio;
use std::time::Duration;

use e2e_support::{code, eventually, App, RouteMode, Stack, StackOptions, LEASE_TTL_SECS};
use mytunnel_core::gate::SESSION_HELD;
use mytunnel_core::protocol::OVERRIDE_FLAGS;
use mytunnel_edge::gate::HOLDER;
use mytunnel_test_support::{cmdline, descendants_of, Guard};
use nix::sys::signal::Signal;
use serde_json::Value;

const SERVE: Duration = Duration::from_secs(15);

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// a + b: alice publishes her app; only alice sees and can touch the lease.
#[test]
fn alice_publishes_an_app_and_only_alice_sees_it() {
    let stack = Stack::new();
    let app = App::start("hello from alice");
    let alice = stack.http("alice", app.port(), &[]);

    // a. The two fixed lines, and the app through Caddy with the tunnel's host.
    assert!(
        alice.url.starts_with("https://") && alice.url.ends_with(".e2e.test"),
        "{}",
        alice.url
    );
    assert!(alice.lease.starts_with("lease_"), "{}", alice.lease);
    stack.assert_serves(&alice.host(), "hello from alice", SERVE);
    // Another host is not routed anywhere.
    assert!(stack.not_routed("nobody-here.e2e.test"));

    // b. alice's ls shows the lease; bob's does not.
    let ls = stack.mytunnel("alice", &["ls"]);
    assert_eq!(ls.status.code(), Some(0), "{}", stderr(&ls));
    let text = stdout(&ls);
    assert!(text.starts_with("LEASE_ID"), "{text}");
    assert!(
        text.contains(&alice.lease) && text.contains(&alice.host()),
        "{text}"
    );
    assert!(text.contains("alice") && text.contains("active"), "{text}");
    let ls = stack.mytunnel("bob", &["ls"]);
    assert_eq!(ls.status.code(), Some(0), "{}", stderr(&ls));
    assert_eq!(stdout(&ls), "no leases\n");

    // bob can neither stop nor remove alice's lease: it looks missing to him.
    for verb in ["stop", "rm"] {
        for reference in [alice.lease.clone(), alice.host()] {
            let out = stack.mytunnel("bob", &[verb, &reference]);
            assert_eq!(
                out.status.code(),
                Some(1),
                "bob {verb} {reference}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains("lease_not_found"),
                "bob {verb} {reference}: {}",
                stderr(&out)
            );
        }
    }
    // Still alice's, still serving.
    let state = stack.lease_state("alice", &alice.lease).unwrap();
    assert_eq!(state["state"], "active");
    stack.assert_serves(&alice.host(), "hello from alice", SERVE);
}

/// c. Through real ssh with a gated key: the allowed verbs work, everything else is
/// refused with the right code.
#[test]
fn the_gate_allows_ctl_verbs_and_refuses_everything_else_over_real_ssh() {
    let stack = Stack::new();

    let (rc, list) = stack.ssh_ctl("alice", "mytunneld ctl list");
    assert_eq!((rc, list), (0, Value::Array(vec![])));
    let (rc, health) = stack.ssh_ctl("alice", "mytunneld ctl health");
    assert_eq!(rc, 0, "{health}");
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["base_domain"], "e2e.test", "{health}");
    // The installed path of the binary is accepted as the first word too.
    let bin = stack.path("mytunneld").display().to_string();
    let (rc, lease) = stack.ssh_ctl(
        "alice",
        &format!("{bin} ctl allocate --name gated-c --local-port 8080"),
    );
    assert_eq!(rc, 0, "{lease}");
    assert_eq!(lease["owner"], "alice", "{lease}");
    assert_eq!(lease["host"], "gated-c.e2e.test", "{lease}");
    let id = lease["lease_id"].as_str().unwrap().to_owned();
    let (rc, beat) = stack.ssh_ctl("alice", &format!("mytunneld ctl heartbeat --lease {id}"));
    assert_eq!(rc, 0, "{beat}");
    assert_eq!(beat["state"], "active");
    let (rc, stats) = stack.ssh_ctl("alice", "mytunneld ctl stats");
    assert_eq!(rc, 0, "{stats}");
    assert!(stats.get("per_owner").is_none(), "{stats}");
    let (rc, stats) = stack.ssh_ctl("ops", "mytunneld ctl stats");
    assert_eq!(rc, 0, "{stats}");
    assert_eq!(stats["per_owner"]["alice"], 1, "{stats}");
    let (rc, json) = stack.ssh_ctl("alice", "mytunneld ctl reconcile");
    assert_eq!((rc, code(&json)), (1, "forbidden_command"), "{json}");
    let (rc, json) = stack.ssh_ctl("ops", "mytunneld ctl reconcile");
    assert_eq!(rc, 0, "{json}");
    let (rc, released) = stack.ssh_ctl("alice", "mytunneld ctl release --lease gated-c");
    assert_eq!(rc, 0, "{released}");
    assert_eq!(released["state"], "released");
    assert_eq!(released["host"], format!("released-{id}.invalid"));
    let (rc, deleted) = stack.ssh_ctl("alice", &format!("mytunneld ctl delete --lease {id}"));
    assert_eq!(rc, 0, "{deleted}");
    assert_eq!(deleted["deleted"], id.as_str());
    let (_, list) = stack.ssh_ctl("alice", "mytunneld ctl list");
    assert_eq!(list, Value::Array(vec![]));

    // Refusals, run concurrently (each is one ssh connection through the gate).
    let mut refused: Vec<(String, &str)> = vec![
        ("id".to_owned(), "forbidden_command"),
        ("sh -c id".to_owned(), "forbidden_command"),
        ("mytunneld serve".to_owned(), "forbidden_command"),
        (format!("{bin} serve"), "forbidden_command"),
        ("mytunneld gate".to_owned(), "forbidden_command"),
        ("mytunneld ctl shell".to_owned(), "forbidden_command"),
        ("/bin/mytunneld ctl list".to_owned(), "forbidden_command"),
    ];
    for flag in OVERRIDE_FLAGS {
        refused.push((
            format!("mytunneld ctl list {flag} x"),
            "override_not_allowed",
        ));
        refused.push((
            format!("mytunneld ctl allocate --local-port 3000 {flag}=x"),
            "override_not_allowed",
        ));
    }
    assert_eq!(OVERRIDE_FLAGS.len(), 13);
    for batch in refused.chunks(8) {
        let children: Vec<_> = batch
            .iter()
            .map(|(command, _)| {
                stack
                    .ssh_command("alice", Some(command))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for ((command, expected), child) in batch.iter().zip(children) {
            let output = child.wait_with_output().unwrap();
            let (rc, json) = e2e_support::parse_reply("alice", command, &output);
            assert_eq!((rc, code(&json)), (1, *expected), "{command}: {json}");
        }
    }
    // Nothing of that reached the database.
    let (_, list) = stack.ssh_ctl("alice", "mytunneld ctl list");
    assert_eq!(list, Value::Array(vec![]));

    // No shell: a session without a command (and without a terminal) is a held tunnel
    // session that runs nothing it is sent, and ends when its input does. On a terminal:
    // `a_terminal_gives_a_tunnel_key_the_held_session_and_nothing_else`.
    let mut ssh = stack.ssh_with_tty("alice", false, None);
    let mut child = ssh
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"id\necho pwned\nexit\n").unwrap();
    }
    let ended = eventually(Duration::from_secs(15), || {
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    assert!(ended, "the session did not end when its input closed");
    let out = stdout(&output);
    assert!(
        !out.contains("uid=") && !out.contains("pwned"),
        "a shell ran: {out:?}"
    );
}

/// The gate processes below `stack`'s sshd: `mytunneld gate` (its binary, subcommand
/// `gate`) and what a held session becomes ([`HOLDER`]).
fn gates(stack: &Stack) -> Vec<i32> {
    let bin = stack.path("mytunneld").display().to_string();
    descendants_of(i32::try_from(stack.sshd.pid()).unwrap())
        .into_iter()
        .filter(|pid| {
            let args = cmdline(*pid);
            (args.first() == Some(&bin) && args.iter().any(|a| a == "gate"))
                || args.first().map(String::as_str) == Some(HOLDER)
        })
        .collect()
}

/// The terminal settings of process `pid`'s stdin, opened again through /proc (as root).
fn terminal_of(pid: i32) -> Option<nix::sys::termios::Termios> {
    use std::os::unix::fs::OpenOptionsExt;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(format!("/proc/{pid}/fd/0"))
        .ok()?;
    nix::sys::termios::tcgetattr(&tty).ok()
}

/// The bytes process `pid` has read so far (`rchar` of /proc/<pid>/io).
fn bytes_read(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

/// Tunnel keys carry `pty`: the client holds its session on a terminal, so ssh and sshd
/// set TCP_NODELAY. The terminal gives the tunnel user nothing else. `ssh -tt edge` is the
/// held session: no prompt but the gate's one line, echo off, what is typed is read and
/// never run or shown, and it ends only when the client closes the connection (not when
/// its input ends). A command, `mytunneld serve`, shell syntax or a subsystem on a
/// terminal is refused as without one, and none of them leaves the file it would have
/// made.
#[test]
fn a_terminal_gives_a_tunnel_key_the_held_session_and_nothing_else() {
    use std::io::{Read, Write};
    let stack = Stack::new();
    let alice = nix::unistd::User::from_name("alice").unwrap().unwrap();
    // The line install-edge-ssh-key.sh wrote for this stack's key asks for a terminal.
    let keys = std::fs::read_to_string(alice.dir.join(".ssh/authorized_keys")).unwrap();
    let gate_command = stack.path("mytunneld").display().to_string();
    let line = keys
        .lines()
        .find(|l| l.contains(&gate_command))
        .unwrap_or_else(|| panic!("no key of this stack: {keys}"));
    assert!(
        line.starts_with("restrict,port-forwarding,pty,command="),
        "{line}"
    );
    // alice's own directory: a command that ran would leave its file here.
    let marks = stack.path("marks");
    std::fs::create_dir(&marks).unwrap();
    nix::unistd::chown(&marks, Some(alice.uid), None).unwrap();
    e2e_support::set_mode(&marks, 0o700);
    let mark = |name: &str| marks.join(name).display().to_string();

    // The held session.
    let mut session = Guard(
        stack
            .ssh_with_tty("alice", true, None)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut gate = None;
    assert!(
        eventually(Duration::from_secs(15), || {
            gate = gates(&stack).first().copied();
            gate.is_some()
        }),
        "no gate for alice's session; sshd log:\n{}",
        stack.sshd.log()
    );
    let gate = gate.unwrap();
    let stdin_path = std::fs::read_link(format!("/proc/{gate}/fd/0")).unwrap();
    assert!(
        stdin_path.starts_with("/dev/pts"),
        "the gate has no terminal: {}",
        stdin_path.display()
    );
    // The gate turns echo off before it reads: only then is what is typed never shown.
    assert!(
        eventually(Duration::from_secs(10), || terminal_of(gate).is_some_and(
            |t| { !t.local_flags.contains(nix::sys::termios::LocalFlags::ECHO) }
        )),
        "the gate's terminal still echoes"
    );
    let before = bytes_read(gate);
    let typed = format!("id\necho pwned\ntouch {}\nexit\n", mark("typed"));
    let mut stdin = session.0.stdin.take().unwrap();
    stdin.write_all(typed.as_bytes()).unwrap();
    stdin.flush().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || bytes_read(gate)
            >= before + typed.len() as u64),
        "the gate did not read what was typed"
    );
    // Its input ended: still held, on the terminal (only the connection ends it).
    drop(stdin);
    assert!(
        !eventually(Duration::from_secs(2), || session
            .0
            .try_wait()
            .unwrap()
            .is_some()),
        "the session ended when its input did"
    );
    assert_eq!(gates(&stack), [gate], "the gate ended");
    session.0.kill().unwrap();
    session.0.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || gates(&stack).is_empty()),
        "the gate outlived its connection"
    );
    let mut shown = String::new();
    session
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut shown)
        .unwrap();
    // The gate's line, through the terminal (which ends it with CR LF), and nothing else.
    assert_eq!(
        shown,
        format!("{SESSION_HELD}\r\n"),
        "the held session printed more"
    );

    // Commands on a terminal, and a subsystem with and without one.
    let commands = [
        "id".to_owned(),
        format!("touch {}", mark("command")),
        "mytunneld serve".to_owned(),
        "mytunneld ctl list; id".to_owned(),
        format!("mytunneld ctl list; touch {}", mark("list")),
        format!("sh -c 'touch {}'", mark("sh")),
    ];
    let mut shapes: Vec<(Vec<&str>, &str)> = commands
        .iter()
        .map(|command| (vec!["-tt"], command.as_str()))
        .collect();
    shapes.push((vec!["-tt", "-s"], "sftp"));
    shapes.push((vec!["-T", "-s"], "sftp"));
    for (flags, command) in shapes {
        let output = stack
            .ssh_with_flags("alice", &flags, Some(command))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let shape = format!("ssh {} {command}", flags.join(" "));
        let (rc, json) = e2e_support::parse_reply("alice", &shape, &output);
        assert_eq!(
            (rc, code(&json)),
            (1, "forbidden_command"),
            "{shape}: {json}"
        );
        assert!(!stdout(&output).contains("uid="), "{shape}");
    }
    let left: Vec<_> = std::fs::read_dir(&marks).unwrap().collect();
    assert!(left.is_empty(), "a command ran: {left:?}");
    // Nothing of that reached the database either.
    let (_, list) = stack.ssh_ctl("alice", "mytunneld ctl list");
    assert_eq!(list, Value::Array(vec![]));
}

/// d. Takeover: bob may not force a name; ops may, while alice's client still runs. Her
/// lease is gone, ops's app answers at the URL, and alice's client ends: it notices the
/// lease is lost, finds the name taken, and exits with `slug_taken`.
/// `mytunnel stop` of a lease whose client still runs ends that client: it says why and
/// exits 1, and the name stays free for anyone.
#[test]
fn stopping_a_running_tunnel_ends_its_client() {
    let stack = Stack::new();
    let alice_app = App::start("alice's app");
    let mut alice = stack.http("alice", alice_app.port(), &[]);
    stack.assert_serves(&alice.host(), "alice's app", SERVE);
    let out = stack.mytunnel("alice", &["stop", &alice.host()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = alice
        .wait_exit(Duration::from_secs(40))
        .unwrap_or_else(|| panic!("alice's client still runs: {}", alice.stderr()));
    assert_eq!(status.code(), Some(1), "{}", alice.stderr());
    assert!(
        alice.stderr().contains("was released (`mytunnel stop`)"),
        "{}",
        alice.stderr()
    );
    assert!(
        !alice.stderr().contains("allocating again"),
        "{}",
        alice.stderr()
    );
    let ls = stack.mytunnel("alice", &["ls"]);
    assert!(!stdout(&ls).contains(" active "), "{}", stdout(&ls));
    // The name is free: bob takes it.
    let bob_app = App::start("bob's app");
    let bob = stack.http("bob", bob_app.port(), &["--name", &alice.slug()]);
    stack.assert_serves(&bob.host(), "bob's app", SERVE);
}

#[test]
fn only_an_admin_takes_a_name_over() {
    let stack = Stack::new();
    let alice_app = App::start("alice's app");
    let ops_app = App::start("ops's app");
    let mut alice = stack.http("alice", alice_app.port(), &[]);
    stack.assert_serves(&alice.host(), "alice's app", SERVE);
    let slug = alice.slug();

    let out = stack.mytunnel(
        "bob",
        &[
            "http",
            &ops_app.port().to_string(),
            "--name",
            &slug,
            "--force",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("force_not_allowed"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    let ls = stack.mytunnel("bob", &["ls"]);
    assert_eq!(stdout(&ls), "no leases\n");
    stack.assert_serves(&alice.host(), "alice's app", SERVE);

    // ops takes the name over while alice's tunnel is up: the new lease gets another
    // port (alice's ssh still holds hers), so ops's forward comes up at once.
    let ops = stack.http("ops", ops_app.port(), &["--name", &slug, "--force"]);
    assert_eq!(ops.url, alice.url);
    assert_ne!(ops.lease, alice.lease);
    stack.assert_serves(&alice.host(), "ops's app", SERVE);
    assert!(stack.lease_state("alice", &alice.lease).is_none());
    let ls = stack.mytunnel("ops", &["ls"]);
    assert!(stdout(&ls).contains(&ops.lease), "{}", stdout(&ls));
    assert!(!stack.routes().contains(&alice.lease));

    // alice's client learns at its next heartbeat (every 10s here) that its lease was
    // taken over, says so and stops (it does not try the name again).
    let status = alice
        .wait_exit(Duration::from_secs(40))
        .unwrap_or_else(|| panic!("alice's client still runs: {}", alice.stderr()));
    assert_eq!(status.code(), Some(1), "{}", alice.stderr());
    assert!(
        alice.stderr().contains("taken over by an admin"),
        "{}",
        alice.stderr()
    );
    let ls = stack.mytunnel("alice", &["ls"]);
    assert_eq!(stdout(&ls), "no leases\n");
    stack.assert_serves(&alice.host(), "ops's app", SERVE);
}

/// e. The data-plane ssh dies: the client reconnects and the same URL serves again.
#[test]
fn a_killed_data_plane_reconnects_to_the_same_url() {
    let stack = Stack::new();
    let app = App::start("still here");
    let alice = stack.http("alice", app.port(), &[]);
    stack.assert_serves(&alice.host(), "still here", SERVE);

    let old = alice
        .data_plane_pid()
        .unwrap_or_else(|| panic!("no data-plane ssh child of {}", alice.pid()));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL).unwrap();
    // A new data plane replaces it (a new pid), and the URL serves again.
    assert!(
        eventually(Duration::from_secs(30), || alice
            .data_plane_pid()
            .is_some_and(|pid| pid != old)),
        "no new data-plane ssh; client stderr: {}",
        alice.stderr()
    );
    stack.assert_serves(&alice.host(), "still here", Duration::from_secs(30));
    // The same lease: the reconnect did not need a new one.
    let state = stack.lease_state("alice", &alice.lease).unwrap();
    assert_eq!(state["state"], "active");
    assert!(
        alice.stderr().contains("reconnect"),
        "no reconnect reported: {}",
        alice.stderr()
    );
}

/// f. The whole client dies: after the TTL, cleanup expires the lease and the route goes.
#[test]
fn a_killed_client_s_lease_expires_after_the_ttl() {
    let stack = Stack::new();
    let app = App::start("soon gone");
    let mut alice = stack.http("alice", app.port(), &[]);
    stack.assert_serves(&alice.host(), "soon gone", SERVE);

    alice.kill_all();
    stack.kill_ssh_of("alice");
    // With the data plane gone Caddy answers 502 at once; the route itself stays until
    // cleanup expires the lease after its TTL.
    assert!(
        eventually(Duration::from_secs(LEASE_TTL_SECS + 10), || !stack
            .routes()
            .contains(&alice.lease)),
        "route still there after the TTL; routes: {}; serve log: {}",
        stack.routes(),
        stack.serve_log()
    );
    assert_eq!(
        stack.get(&alice.host()),
        Some((404, "no tunnel here".to_owned()))
    );
    let state = stack.lease_state("alice", &alice.lease).unwrap();
    assert_eq!(state["state"], "expired", "{state}");
    assert_eq!(
        state["host"],
        format!("expired-{}.invalid", alice.lease),
        "{state}"
    );
    assert!(!stack.routes().contains(&alice.lease));
}

/// A crashed client takes its tunnel with it: `kill -9` of `mytunnel http` (its pid
/// only, nothing else) leaves no ssh it started within 2 s, and its URL stops serving.
/// Both shapes: the one interactive connection, and `--no-ssh-mux`'s ssh per tunnel.
#[test]
fn kill_9_of_a_client_leaves_no_ssh_and_its_url_stops_serving() {
    let stack = Stack::new();
    let app = App::start("crash me");
    for shape in [&[][..], &["--no-ssh-mux"][..]] {
        let alice = stack.http("alice", app.port(), shape);
        stack.assert_serves(&alice.host(), "crash me", SERVE);
        let ssh = alice.ssh_children();
        assert!(
            !ssh.is_empty(),
            "{shape:?}: no ssh child of {}",
            alice.pid()
        );

        alice.signal(Signal::SIGKILL);
        let gone = eventually(Duration::from_secs(2), || {
            ssh.iter()
                .all(|pid| !mytunnel_test_support::process::running(*pid))
        });
        let left: Vec<String> = ssh
            .iter()
            .filter(|pid| mytunnel_test_support::process::running(**pid))
            .map(|pid| mytunnel_test_support::process::cmdline(*pid).join(" "))
            .collect();
        assert!(gone, "{shape:?}: ssh outlived its client by 2 s: {left:?}");
        assert!(
            eventually(Duration::from_secs(2), || stack
                .get(&alice.host())
                .is_none_or(|(status, body)| status != 200 || body != "crash me")),
            "{shape:?}: {} still serves the killed client's app",
            alice.host()
        );
    }
}

/// One SDK `Edge` with three tunnels holds one SSH connection; kill it and all three
/// URLs serve again, under the same names, within 5 s.
#[test]
fn three_tunnels_on_one_connection_all_come_back_when_it_is_killed() {
    let stack = Stack::new();
    let apps = [App::start("one"), App::start("two"), App::start("three")];
    let ports: Vec<u16> = apps.iter().map(App::port).collect();
    let edge = stack.sdk_edge("alice", &ports);
    for (host, body) in edge.hosts.iter().zip(["one", "two", "three"]) {
        stack.assert_serves(host, body, SERVE);
    }
    let ssh = edge.ssh_children();
    assert_eq!(
        ssh.len(),
        1,
        "one SSH connection for three tunnels: {ssh:?}"
    );
    let sshd_connections = stack.sshd_connections_of("alice");
    assert_eq!(sshd_connections, 1, "sshd sees one connection of alice");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(ssh[0]), Signal::SIGKILL).unwrap();
    let killed = std::time::Instant::now();
    for (host, body) in edge.hosts.iter().zip(["one", "two", "three"]) {
        let left = Duration::from_secs(5).saturating_sub(killed.elapsed());
        assert!(
            eventually(left, || stack
                .get(host)
                .is_some_and(|(status, b)| status == 200 && b == body)),
            "{host} did not serve again within 5 s; program stderr: {}",
            edge.stderr()
        );
    }
    let again = edge.ssh_children();
    assert!(again.len() == 1 && again[0] != ssh[0], "{again:?}");
}

/// Closing one tunnel of an `Edge` ends the connections Caddy pooled to it — a released
/// name never reaches its app again — while the edge's other tunnel serves on, on the
/// same SSH connection.
#[test]
fn closing_one_tunnel_of_an_edge_ends_its_connections_and_spares_the_others() {
    // `static` mode: Caddy dials the name's host link, so a connection it pooled for the
    // name would be reused for the name's next lease.
    let stack = Stack::with(StackOptions {
        route_mode: RouteMode::Static,
        ..StackOptions::default()
    });
    let closed_app = App::start("closed one");
    let kept_app = App::start("kept one");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut builder = mytunnel_client::Edge::builder()
        .edge("alice@127.0.0.1")
        .environment(
            [("HOME".to_owned(), stack.path("home").display().to_string())]
                .into_iter()
                .collect(),
        );
    for option in stack.ssh_options("alice") {
        builder = builder.ssh_option(option);
    }
    let edge = runtime.block_on(builder.connect()).unwrap();
    let closed = runtime
        .block_on(edge.http(closed_app.port()).open())
        .unwrap();
    let kept = runtime.block_on(edge.http(kept_app.port()).open()).unwrap();
    let closed_host = closed.url().strip_prefix("https://").unwrap().to_owned();
    let kept_host = kept.url().strip_prefix("https://").unwrap().to_owned();
    stack.assert_serves(&closed_host, "closed one", SERVE);
    stack.assert_serves(&kept_host, "kept one", SERVE);
    // Caddy now holds idle upstream connections to the closed tunnel's socket.
    for _ in 0..20 {
        assert_eq!(
            stack.get(&closed_host),
            Some((200, "closed one".to_owned()))
        );
    }
    assert_eq!(stack.sshd_connections_of("alice"), 1);

    runtime.block_on(closed.close()).unwrap();
    let answers: Vec<Option<(u16, String)>> = (0..20).map(|_| stack.get(&closed_host)).collect();
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_none_or(|(_, body)| body != "closed one")),
        "the released name still reached its app: {answers:?}"
    );
    stack.assert_serves(&kept_host, "kept one", SERVE);
    assert_eq!(
        stack.sshd_connections_of("alice"),
        1,
        "the other tunnel kept its connection"
    );
    runtime.block_on(edge.close());
}

/// A process embedding the SDK that aborts takes its tunnels with it: within 2 s no ssh
/// it started remains and its URLs stop serving.
#[test]
fn an_sdk_process_that_aborts_leaves_no_ssh_and_no_tunnel() {
    let stack = Stack::new();
    let apps = [App::start("sdk one"), App::start("sdk two")];
    let ports: Vec<u16> = apps.iter().map(App::port).collect();
    let edge = stack.sdk_edge("alice", &ports);
    for (host, body) in edge.hosts.iter().zip(["sdk one", "sdk two"]) {
        stack.assert_serves(host, body, SERVE);
    }
    let ssh = edge.ssh_children();
    assert!(!ssh.is_empty());

    edge.signal(Signal::SIGABRT);
    let gone = eventually(Duration::from_secs(2), || {
        ssh.iter()
            .all(|pid| !mytunnel_test_support::process::running(*pid))
    });
    assert!(gone, "ssh outlived the aborted program by 2 s");
    for (host, body) in edge.hosts.iter().zip(["sdk one", "sdk two"]) {
        assert!(
            eventually(Duration::from_secs(2), || stack
                .get(host)
                .is_none_or(|(status, b)| status != 200 || b != body)),
            "{host} still serves the aborted program's app"
        );
    }
}

/// Ctrl-C to `client`, which must exit 0 within 15 s.
fn interrupt_and_expect_a_clean_exit(client: &mut e2e_support::Client) {
    client.signal(Signal::SIGINT);
    let status = client.wait_exit(Duration::from_secs(15));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{status:?}; stderr: {}",
        client.stderr()
    );
}

/// g'. Ctrl-C the moment the URL is printed (a script that stops the tunnel as soon as
/// it has read it): the handlers are in place before the lines, so the lease is released
/// and the client says so, rather than dying of the signal's default action.
#[test]
fn sigint_right_after_the_url_still_releases() {
    let stack = Stack::new();
    let app = App::start("quick");
    for _ in 0..3 {
        let mut alice = stack.http("alice", app.port(), &[]);
        interrupt_and_expect_a_clean_exit(&mut alice);
        assert!(
            alice.stderr().contains("released; bye"),
            "{}",
            alice.stderr()
        );
        let state = stack.lease_state("alice", &alice.lease).unwrap();
        assert_eq!(state["state"], "released", "{state}");
    }
}

/// g. Ctrl-C: exit 0, the lease is released and the route is gone at once.
#[test]
fn sigint_releases_the_lease_and_the_route_at_once() {
    let stack = Stack::new();
    let app = App::start("bye");
    let mut alice = stack.http("alice", app.port(), &[]);
    stack.assert_serves(&alice.host(), "bye", SERVE);

    interrupt_and_expect_a_clean_exit(&mut alice);
    // Right after the exit, not eventually.
    assert!(
        stack.not_routed(&alice.host()),
        "{:?}; routes: {}",
        stack.get(&alice.host()),
        stack.routes()
    );
    assert!(!stack.routes().contains(&alice.lease));
    let state = stack.lease_state("alice", &alice.lease).unwrap();
    assert_eq!(state["state"], "released", "{state}");
    assert_eq!(state["host"], format!("released-{}.invalid", alice.lease));
    assert_eq!(state["slug"], format!("released-{}", alice.lease));
    // No ssh of the client is left behind.
    assert!(
        eventually(Duration::from_secs(5), || stack
            .ssh_pids_of("alice")
            .is_empty()),
        "ssh processes left: {:?}",
        stack.ssh_pids_of("alice")
    );
}

/// h. Caddy restarted with its config lost: reconcile restores the route.
#[test]
fn reconcile_restores_the_route_after_caddy_loses_its_config() {
    let mut stack = Stack::new();
    let app = App::start("back again");
    let alice = stack.http("alice", app.port(), &[]);
    stack.assert_serves(&alice.host(), "back again", SERVE);

    stack.caddy.restart().unwrap();
    // Within one reconcile interval (1s), with slack for a loaded machine.
    stack.assert_serves(&alice.host(), "back again", Duration::from_secs(10));
    assert!(stack.routes().contains(&alice.lease));
}

/// i. No local app: nothing is allocated.
#[test]
fn no_lease_when_the_local_app_is_not_running() {
    let stack = Stack::new();
    let closed = mytunnel_test_support::free_port().unwrap();
    let out = stack.mytunnel("alice", &["http", &closed.to_string()]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.status.code().is_some(), "killed by a signal");
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    assert!(!stderr(&out).is_empty());
    let ls = stack.mytunnel("alice", &["ls"]);
    assert_eq!(ls.status.code(), Some(0), "{}", stderr(&ls));
    assert_eq!(stdout(&ls), "no leases\n");
}

/// j. The SDK opens a tunnel through real ssh, serves a request, closes and releases.
#[test]
fn the_sdk_opens_a_tunnel_through_real_ssh() {
    let stack = Stack::new();
    let app = App::start("from the sdk");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut builder = mytunnel_client::Tunnel::http(app.port())
        .edge("alice@127.0.0.1")
        .environment(
            [("HOME".to_owned(), stack.path("home").display().to_string())]
                .into_iter()
                .collect(),
        );
    for option in stack.ssh_options("alice") {
        builder = builder.ssh_option(option);
    }
    let tunnel = runtime.block_on(builder.open()).unwrap();
    let host = tunnel.url().strip_prefix("https://").unwrap().to_owned();
    assert!(host.ends_with(".e2e.test"), "{host}");
    let lease = tunnel.lease();
    assert_eq!(lease.owner.to_string(), "alice");
    stack.assert_serves(&host, "from the sdk", SERVE);

    runtime.block_on(tunnel.close()).unwrap();
    assert!(stack.not_routed(&host));
    let state = stack.lease_state("alice", lease.lease_id.as_str()).unwrap();
    assert_eq!(state["state"], "released", "{state}");
}
