//! Forwarding between edges, on two real Caddys (edge A and edge B, each as `serve`
//! configures it through the admin API) and a local app standing in for a tunnel:
//!
//! - another edge's lease: A forwards the host to B, which serves it;
//! - this edge's lease whose tunnel cannot be dialled: A falls back to B;
//! - a request one edge forwarded already is never forwarded again (no loop), and a
//!   visitor's own `X-Mytunnel-Via` only keeps their request from being forwarded.
// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use mytunnel_core::route::{Route, RouteBackend};
use mytunnel_core::{EdgeId, EdgeUrl, Lease};
use mytunnel_edge::caddy::CaddyRoutes;
use mytunnel_test_support::apps::answer_http;
use mytunnel_test_support::{active_lease, free_port, http_get_path, LoopbackServer, RealCaddy};

fn lease(id: &str, slug: &str, port: u16) -> Lease {
    active_lease(id, &format!("{slug}.t.example"), port).unwrap()
}

/// An app that answers `<name>: via=<X-Mytunnel-Via or ->`.
fn app(name: &'static str) -> LoopbackServer {
    LoopbackServer::start(move |stream, _| {
        answer_http(stream, |request| {
            let via = request.header("X-Mytunnel-Via").unwrap_or("-").to_owned();
            (200, format!("{name}: via={via}"))
        })
    })
    .unwrap()
}

fn edge_url(caddy: &RealCaddy) -> EdgeUrl {
    format!("http://{}", caddy.http_address()).parse().unwrap()
}

fn get(caddy: &RealCaddy, host: &str) -> Option<(u16, String)> {
    http_get_path(caddy.http_address(), host, "/")
}

fn get_with_via(caddy: &RealCaddy, host: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(caddy.http_address()).ok()?;
    write!(
        stream,
        "GET / HTTP/1.0\r\nHost: {host}\r\nX-Mytunnel-Via: visitor\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

#[tokio::test]
async fn caddy_forwards_to_the_holding_edge_and_falls_back_without_loops() {
    let (a, b) = (RealCaddy::start().unwrap(), RealCaddy::start().unwrap());
    let routes = |caddy: &RealCaddy| {
        CaddyRoutes::new(&caddy.admin_address(), "srv0", Duration::from_secs(5)).unwrap()
    };
    let (routes_a, routes_b) = (routes(&a), routes(&b));
    let (edge_a, edge_b): (EdgeId, EdgeId) = ("edge-a".parse().unwrap(), "edge-b".parse().unwrap());
    let portal_app = app("portal");
    let portal = lease("lease_aaaaaaaaaaaaaaaa", "portal", portal_app.addr().port());

    // portal is B's: B routes it to its tunnel (falling back to A), A forwards it to B.
    routes_b
        .upsert(&Route::for_own_lease(&portal, &edge_b, vec![edge_url(&a)]))
        .await
        .unwrap();
    routes_a
        .upsert(&Route::to_edge(&portal, edge_url(&b), &edge_a))
        .await
        .unwrap();
    assert_eq!(
        get(&b, "portal.t.example"),
        Some((200, "portal: via=-".into()))
    );
    assert_eq!(
        get(&a, "portal.t.example"),
        Some((200, "portal: via=edge-a".into())),
        "A forwards to B, marked"
    );
    // Each Caddy reads its route back as written (reconcile leaves it alone).
    for (routes, which) in [(&routes_a, "A"), (&routes_b, "B")] {
        let listed = routes.list().await.unwrap();
        assert!(
            listed.iter().all(|r| r.route.is_some()),
            "{which}: {listed:?}"
        );
    }

    // A visitor's own mark only keeps their request on the edge they asked.
    assert_eq!(get_with_via(&b, "portal.t.example"), Some(200));
    assert_ne!(get_with_via(&a, "portal.t.example"), Some(200));

    // docs is A's lease, but its tunnel is gone (it moved to B, while A's serve was down
    // and could not change A's route): A falls back to B, which now holds it.
    let docs_app = app("docs");
    let dead_port = free_port().unwrap();
    let docs_on_a = lease("lease_bbbbbbbbbbbbbbbb", "docs", dead_port);
    let docs_on_b = lease("lease_cccccccccccccccc", "docs", docs_app.addr().port());
    routes_a
        .upsert(&Route::for_own_lease(
            &docs_on_a,
            &edge_a,
            vec![edge_url(&b)],
        ))
        .await
        .unwrap();
    routes_b
        .upsert(&Route::for_own_lease(
            &docs_on_b,
            &edge_b,
            vec![edge_url(&a)],
        ))
        .await
        .unwrap();
    assert_eq!(
        get(&a, "docs.t.example"),
        Some((200, "docs: via=edge-a".into()))
    );

    // A request B forwarded is not forwarded back: with docs' tunnel gone on both
    // edges, each answers an error at once instead of sending it round.
    let gone = lease("lease_dddddddddddddddd", "gone", free_port().unwrap());
    routes_a
        .upsert(&Route::for_own_lease(&gone, &edge_a, vec![edge_url(&b)]))
        .await
        .unwrap();
    routes_b
        .upsert(&Route::for_own_lease(&gone, &edge_b, vec![edge_url(&a)]))
        .await
        .unwrap();
    // (A loop would hold the request until the visitor's 10 s timeout.)
    let (status, _) = get(&a, "gone.t.example").expect("an answer, not a loop");
    assert_eq!(status, 502);
}
