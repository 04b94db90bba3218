//! End to end, several edges on one PostgreSQL: two edges, each with its own sshd, Caddy
//! and `mytunneld serve` (as the service user, its database password in a password file
//! only it reads), share one namespace, and each edge's Caddy forwards the hosts of the
//! other's tunnels to it (`MYTUNNEL_EDGE_URL`: here each Caddy's HTTP address).
// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod e2e_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e_support::{eventually, App, RouteMode, SharedDatabase, Stack, StackOptions};

/// A tunnel on edge A answers through edge B's Caddy; a name taken on edge A cannot be
/// taken on edge B; 16 clients allocating on both edges at once never get the same name,
/// and each of their tunnels answers through both edges.
#[test]
fn two_edges_share_one_namespace_in_routes_mode() {
    two_edges_share_one_namespace(RouteMode::Routes);
}

/// The same in `static` mode: each edge's own tunnels through its host links, the other
/// edge's through Caddy routes to it.
#[test]
fn two_edges_share_one_namespace_in_static_mode() {
    two_edges_share_one_namespace(RouteMode::Static);
}

fn two_edges_share_one_namespace(route_mode: RouteMode) {
    let database = SharedDatabase::start();
    let options = StackOptions {
        database: Some(database),
        route_mode,
        ..StackOptions::default()
    };
    let env = |edge: &str| format!("MYTUNNEL_EDGE_ID={edge}\nMYTUNNEL_MAX_LEASES_PER_OWNER=0\n");
    let a = Stack::with_env(options.clone(), &env("edge-a"));
    let b = Stack::with_env(options, &env("edge-b"));

    let app = App::start("alice on A");
    let alice = a.http("alice", app.port(), &["--name", "shared"]);
    a.assert_serves(&alice.host(), "alice on A", Duration::from_secs(10));
    // Through B's Caddy, forwarded to A once B's serve has routed A's lease (its
    // reconcile runs every second here).
    b.assert_serves(&alice.host(), "alice on A", Duration::from_secs(10));
    let taken = b.mytunnel(
        "bob",
        &["http", &app.port().to_string(), "--name", "shared"],
    );
    let stderr = String::from_utf8_lossy(&taken.stderr);
    assert_eq!(taken.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("slug_taken"), "{stderr}");

    // 16 clients at once, 8 through each edge, all asking for generated names.
    let apps: Vec<App> = (0..16).map(|i| App::start(&format!("app {i}"))).collect();
    let starting: Vec<_> = apps
        .iter()
        .enumerate()
        .map(|(i, app)| {
            let (edge, user) = if i % 2 == 0 {
                (&a, "alice")
            } else {
                (&b, "bob")
            };
            (edge, edge.spawn_http(user, app.port(), &[]))
        })
        .collect();
    let clients: Vec<_> = starting
        .into_iter()
        .map(|(edge, client)| (edge, edge.await_opened(client)))
        .collect();
    let names: BTreeSet<String> = clients.iter().map(|(_, c)| c.slug()).collect();
    assert_eq!(names.len(), 16, "{names:?}");
    assert!(!names.contains("shared"), "{names:?}");
    for (i, (_, client)) in clients.iter().enumerate() {
        for edge in [&a, &b] {
            edge.assert_serves(&client.host(), &format!("app {i}"), Duration::from_secs(10));
        }
    }
    // Each user's leases, as either edge lists them: the same, from both.
    let active = |edge: &Stack, user: &str| -> BTreeSet<String> {
        edge.leases(user)
            .iter()
            .filter(|l| l["state"] == "active")
            .map(|l| l["host"].as_str().unwrap().to_owned())
            .collect()
    };
    for user in ["alice", "bob"] {
        let (on_a, on_b) = (active(&a, user), active(&b, user));
        assert_eq!(on_a, on_b, "{user}");
        assert_eq!(on_a.len(), if user == "alice" { 9 } else { 8 }, "{on_a:?}");
    }
    drop(alice);
}

/// Failover: alice's profile lists both edges. Her tunnel opens on edge A; edge A's sshd
/// and serve are killed (its Caddy stays, as on an edge whose sshd crashed); her client
/// moves to edge B, keeps its name (its old lease displaced at once, not after the TTL),
/// and its URL serves again through both edges' Caddy within 30 s: B's own route, and
/// A's route falling back to B while A's serve cannot change it.
#[test]
fn a_client_moves_to_the_next_edge_and_keeps_its_url() {
    let database = SharedDatabase::start();
    let options = StackOptions {
        database: Some(database),
        // A lease outlives the whole test: only the move can free the name.
        lease_ttl_secs: 600,
        ..StackOptions::default()
    };
    let mut a = Stack::with_env(options.clone(), "MYTUNNEL_EDGE_ID=edge-a\n");
    let b = Stack::with_env(options, "MYTUNNEL_EDGE_ID=edge-b\n");

    // alice's ssh config names both edges; her profile lists them in order.
    let home = a.path("alice-home");
    std::fs::create_dir_all(home.join(".config/mytunnel")).unwrap();
    let host_block = |alias: &str, stack: &Stack| {
        let (key, known_hosts) = stack.login_files("alice");
        format!(
            "Host {alias}\n  HostName 127.0.0.1\n  Port {}\n  IdentityFile {}\n  UserKnownHostsFile {}\n",
            stack.sshd.port(),
            key.display(),
            known_hosts.display()
        )
    };
    let ssh_config = home.join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "{}{}Host *\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n",
            host_block("edge-a", &a),
            host_block("edge-b", &b)
        ),
    )
    .unwrap();
    let ssh = home.join("ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
            ssh_config.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        home.join(".config/mytunnel/config.toml"),
        format!(
            "default_edge = \"both\"\n\n[edges.both]\ndestinations = [\"alice@edge-a\", \"alice@edge-b\"]\nssh_bin = \"{}\"\n",
            ssh.display()
        ),
    )
    .unwrap();

    let app = App::start("alice's app");
    let port = app.port().to_string();
    let command = mytunnel_test_support::client::client_command(
        std::path::Path::new(env!("CARGO_BIN_EXE_mytunnel")),
        &["http", &port, "--name", "moving"],
        &[],
        &home,
        &a.path("tmp"),
    );
    let client = a.await_opened(a.spawn_client("alice", command));
    let host = client.host();
    assert_eq!(client.slug(), "moving");
    a.assert_serves(&host, "alice's app", Duration::from_secs(10));
    b.assert_serves(&host, "alice's app", Duration::from_secs(10));
    let old_lease = a
        .leases("alice")
        .into_iter()
        .find(|l| l["state"] == "active")
        .unwrap()["lease_id"]
        .clone();

    // Edge A's sshd (with its sessions, the tunnel's among them) and serve go; its Caddy
    // stays.
    a.sshd.kill_tree();
    a.kill_serve();
    let down_at = Instant::now();
    let deadline = Duration::from_secs(30);
    assert!(
        eventually(deadline, || client
            .stderr()
            .contains("moved to alice@edge-b")),
        "the client did not move: {}",
        client.stderr()
    );
    let left = || deadline.saturating_sub(down_at.elapsed());
    b.assert_serves(&host, "alice's app", left());
    a.assert_serves(&host, "alice's app", left());
    let took = down_at.elapsed();
    assert!(took <= deadline, "{took:?}");
    eprintln!("served again through both edges {took:?} after edge A went down");

    // Same name, a new lease on B; the old one is gone, not waiting for its TTL.
    let leases = b.leases("alice");
    let active: Vec<_> = leases.iter().filter(|l| l["state"] == "active").collect();
    assert_eq!(active.len(), 1, "{leases:?}");
    assert_eq!(active[0]["host"], host.as_str());
    assert_ne!(active[0]["lease_id"], old_lease);
    assert!(
        leases.iter().all(|l| l["lease_id"] != old_lease),
        "{leases:?}"
    );
    let said = client.stderr();
    assert!(said.contains("moved to alice@edge-b"), "{said}");
}
