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
use std::time::Duration;

use e2e_support::{App, RouteMode, SharedDatabase, Stack, StackOptions};

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
