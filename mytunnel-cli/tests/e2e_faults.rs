//! Faults seen by running clients, on the end-to-end stack (real sshd, Caddy, `mytunneld
//! serve`, OS users, the built `mytunnel`): sshd restarted under every client, a login
//! storm against sshd as install-edge.sh configures it, and a client frozen (SIGSTOP, as
//! a laptop put to sleep) past its lease's TTL.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::{eventually, App, RouteMode, Stack, StackOptions, LEASE_TTL_SECS, USERS};
use mytunnel_test_support::{descendants_of, poll_every, Guard};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const SERVE: Duration = Duration::from_secs(30);

/// Tunnels connected when sshd restarts in the reconnect storm: `MYTUNNEL_RESTART_TUNNELS`
/// (`cargo xtask soak --tunnels N`, 200 there), else this many.
const RESTART_TUNNELS: usize = 24;
/// Every URL serves again within this long after sshd restarts under them.
const SERVES_AGAIN_WITHIN: Duration = Duration::from_secs(60);
/// How many clients open their tunnels at once while the storm test sets up.
const OPENING_AT_ONCE: usize = 16;

/// SSH logins of tunnel users started at the same moment: with sshd's default
/// `MaxStartups` (10:30:100) 24 of them lost 2–8.
const SIMULTANEOUS_LOGINS: usize = 48;

/// The client and every process below it, each after its parent.
fn tree(pid: u32) -> Vec<i32> {
    let pid = i32::try_from(pid).unwrap();
    std::iter::once(pid).chain(descendants_of(pid)).collect()
}

#[test]
fn every_client_reconnects_after_sshd_restarts() {
    let mut stack = Stack::new();
    let apps = [App::start("alice's app"), App::start("bob's app")];
    let clients = [
        stack.http("alice", apps[0].port(), &["--name", "restart-a"]),
        stack.http("bob", apps[1].port(), &[]),
    ];
    let bodies = ["alice's app", "bob's app"];
    for (client, body) in clients.iter().zip(bodies) {
        stack.assert_serves(&client.host(), body, SERVE);
    }

    let planes: Vec<i32> = clients
        .iter()
        .map(|c| c.data_plane_pid().expect("no data-plane ssh"))
        .collect();
    let restarted = Instant::now();
    stack.sshd.restart().unwrap();
    // Every session went with the old sshd: the URLs stop serving, then come back.
    for (client, body) in clients.iter().zip(bodies) {
        stack.assert_serves(&client.host(), body, Duration::from_secs(60));
        // The same lease: the reconnect came well within its TTL.
        let user = if body.starts_with("alice") {
            "alice"
        } else {
            "bob"
        };
        let lease = stack.lease_state(user, &client.lease);
        assert!(
            lease.as_ref().is_some_and(|l| l["state"] == "active"),
            "{lease:?}; {}",
            client.stderr()
        );
    }
    println!(
        "FIGURE sshd-restart: {} clients serving again {:.2}s after the restart",
        clients.len(),
        restarted.elapsed().as_secs_f64()
    );
    for (client, old) in clients.iter().zip(planes) {
        // A new data plane replaced the one that went with the old sshd.
        assert!(
            client.data_plane_pid().is_some_and(|pid| pid != old),
            "the data plane survived the restart: {}",
            client.stderr()
        );
        assert!(
            client.stderr().contains("reconnect"),
            "no reconnect reported: {}",
            client.stderr()
        );
    }
}

/// The reconnect storm: sshd restarted (the listener and every session killed) under many
/// connected tunnels, every client's data plane and ctl calls come back at once. Every URL
/// serves its own app again within 60 s, and no client gives up.
#[test]
fn every_url_serves_again_after_sshd_restarts_under_many_tunnels() {
    let tunnels = std::env::var("MYTUNNEL_RESTART_TUNNELS")
        .ok()
        .map_or(RESTART_TUNNELS, |n| n.parse().unwrap());
    // Static mode: one wildcard route in Caddy serves every lease, so opening the tunnels
    // reloads Caddy not once per lease. A long TTL keeps the heartbeats (ssh connections
    // of their own once the masters are gone) from adding a storm of their own.
    let mut stack = Stack::with_env(
        StackOptions {
            lease_ttl_secs: 300,
            route_mode: RouteMode::Static,
            ..StackOptions::default()
        },
        &format!("MYTUNNEL_MAX_LEASES_PER_OWNER={tunnels}\n"),
    );
    let apps: Vec<App> = (0..tunnels)
        .map(|i| App::start(&format!("storm app {i}")))
        .collect();
    let mut clients = Vec::with_capacity(tunnels);
    for batch in apps.chunks(OPENING_AT_ONCE) {
        let first = clients.len();
        let spawned: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(j, app)| {
                let i = first + j;
                stack.spawn_http(
                    USERS[i % USERS.len()],
                    app.port(),
                    &["--name", &format!("storm-{i}")],
                )
            })
            .collect();
        clients.extend(spawned.into_iter().map(|c| stack.await_opened(c)));
    }
    let hosts: Vec<String> = clients.iter().map(e2e_support::Client::host).collect();
    for (i, host) in hosts.iter().enumerate() {
        stack.assert_serves(host, &format!("storm app {i}"), SERVE);
    }
    let dropped_before = stack.sshd.log().matches("past MaxStartups").count();

    let restarted = Instant::now();
    stack.sshd.restart().unwrap();
    let mut served_again: Vec<Option<Duration>> = vec![None; tunnels];
    // Every pending URL once per round, a round every 250 ms: the poll must not be the
    // load on Caddy that slows the clients down.
    let all_back = poll_every(SERVES_AGAIN_WITHIN * 2, Duration::from_millis(250), || {
        for (i, host) in hosts.iter().enumerate() {
            if served_again[i].is_none()
                && stack
                    .get(host)
                    .is_some_and(|(status, body)| status == 200 && body == format!("storm app {i}"))
            {
                served_again[i] = Some(restarted.elapsed());
            }
        }
        served_again.iter().all(Option::is_some)
    });
    let mut times: Vec<Duration> = served_again.iter().filter_map(|t| *t).collect();
    times.sort();
    let not_back: Vec<String> = served_again
        .iter()
        .zip(&clients)
        .filter(|(t, _)| t.is_none())
        .take(5)
        .map(|(_, c)| format!("{}: {}", c.host(), c.stderr()))
        .collect();
    assert!(
        all_back,
        "{} of {tunnels} URLs did not serve again within {:?}: {not_back:#?}",
        tunnels - times.len(),
        SERVES_AGAIN_WITHIN * 2
    );
    let p50 = times[times.len() / 2];
    let max = times[times.len() - 1];
    let dropped = stack.sshd.log().matches("past MaxStartups").count() - dropped_before;
    println!(
        "FIGURE sshd-restart-storm: {tunnels} tunnels, every URL serving again after the \
         restart: p50 {:.1}s, max {:.1}s; sshd dropped {dropped} handshakes past MaxStartups",
        p50.as_secs_f64(),
        max.as_secs_f64()
    );
    assert!(
        max <= SERVES_AGAIN_WITHIN,
        "the last URL came back after {max:?}"
    );
    for client in &mut clients {
        assert!(
            client.wait_exit(Duration::ZERO).is_none(),
            "a client gave up: {}",
            client.stderr()
        );
    }
}

/// A reconnect storm's first wave: tunnel users' SSH logins all started at once, each a
/// whole login through the gate (`mytunneld ctl list`), against sshd with install-edge.sh's
/// drop-in. Every one gets through; none is dropped before the handshake.
#[test]
fn simultaneous_logins_of_tunnel_users_all_get_through() {
    let stack = Stack::new();
    let started = Instant::now();
    let mut logins: Vec<(&str, Guard, std::path::PathBuf, std::path::PathBuf)> = (0
        ..SIMULTANEOUS_LOGINS)
        .map(|i| {
            let user = USERS[i % USERS.len()];
            let stdout = stack.path(&format!("login-{i}.out"));
            let stderr = stack.path(&format!("login-{i}.err"));
            let child = stack
                .ssh_command(user, Some("mytunneld ctl list"))
                .stdin(std::process::Stdio::null())
                .stdout(std::fs::File::create(&stdout).unwrap())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .unwrap();
            (user, Guard(child), stdout, stderr)
        })
        .collect();
    let mut failed = Vec::new();
    for (user, guard, stdout, stderr) in &mut logins {
        let mut status = None;
        let ended = eventually(Duration::from_secs(120), || {
            status = guard.0.try_wait().unwrap();
            status.is_some()
        });
        assert!(ended, "a login of {user} still runs after 120 s");
        let out = std::fs::read_to_string(stdout).unwrap();
        let listed = serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|v| v.is_array());
        if !status.is_some_and(|s| s.success()) || !listed {
            failed.push(format!(
                "{user}: {status:?}: {}",
                std::fs::read_to_string(stderr).unwrap().trim()
            ));
        }
    }
    let took = started.elapsed();
    let dropped = stack.sshd.log().matches("past MaxStartups").count();
    assert!(
        failed.is_empty() && dropped == 0,
        "{} of {SIMULTANEOUS_LOGINS} simultaneous logins failed, sshd dropped {dropped} past \
         MaxStartups: {failed:#?}",
        failed.len()
    );
    println!(
        "FIGURE login-storm: {SIMULTANEOUS_LOGINS} of {SIMULTANEOUS_LOGINS} simultaneous logins \
         got through in {:.2}s",
        took.as_secs_f64()
    );
}

#[test]
fn a_frozen_client_loses_its_lease_and_takes_its_name_again() {
    let stack = Stack::new();
    let app = App::start("wakes up");
    let alice = stack.http("alice", app.port(), &["--name", "sleeper"]);
    let host = alice.host();
    stack.assert_serves(&host, "wakes up", SERVE);

    // Freeze the client and its ssh processes, as a laptop put to sleep.
    let frozen = tree(alice.pid());
    for pid in &frozen {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
    }
    let stopped = Instant::now();
    // No heartbeat: after the TTL, cleanup expires the lease and the route goes.
    let expired = eventually(Duration::from_secs(LEASE_TTL_SECS + 20), || {
        stack
            .lease_state("alice", &alice.lease)
            .is_some_and(|l| l["state"] == "expired")
            && !stack.routes().contains(&alice.lease)
    });
    let expired_after = stopped.elapsed();
    for pid in frozen.iter().rev() {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGCONT);
    }
    assert!(
        expired,
        "lease not expired; routes {}; serve log {}",
        stack.routes(),
        stack.serve_log()
    );
    assert!(stack.not_routed(&host) || !stack.routes().contains(&alice.lease));

    // Woken up: the client notices and takes the same name again, under a new lease.
    let woke = Instant::now();
    stack.assert_serves(&host, "wakes up", Duration::from_secs(60));
    let again = stack
        .leases("alice")
        .into_iter()
        .find(|l| l["state"] == "active" && l["slug"] == "sleeper")
        .unwrap_or_else(|| panic!("no active lease named sleeper; {}", alice.stderr()));
    assert_ne!(again["lease_id"], alice.lease.as_str(), "{again}");
    println!(
        "FIGURE sigstop: lease expired {:.1}s after the freeze (TTL {LEASE_TTL_SECS}s), name served again {:.2}s after SIGCONT",
        expired_after.as_secs_f64(),
        woke.elapsed().as_secs_f64()
    );
}
