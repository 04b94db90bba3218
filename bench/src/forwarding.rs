//! Several edges: what the hop from one edge's Caddy to another's adds to a request.
//!
//! Two real Caddys stand for edge A and edge B, configured through the admin API exactly
//! as `serve` configures them (`mytunnel_edge::caddy`): B holds the lease, whose route
//! goes to a local app (standing in for the tunnel, which is the same on both paths); A
//! routes the host to B (`Route::to_edge`, plain HTTP on loopback). Each request is a
//! fresh connection from the visitor, `GET /` to the last byte, alternating between the
//! two paths so that both meet the same moments of the machine.

use std::time::{Duration, Instant};

use mytunnel_core::route::{Route, RouteBackend};
use mytunnel_core::{EdgeId, EdgeUrl};
use mytunnel_edge::caddy::CaddyRoutes;
use mytunnel_test_support::{active_lease, answer_http, http_get_path, LoopbackServer, RealCaddy};

use crate::procs::Result;
use crate::stats::Summary;

/// The two paths' latencies.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// Through the holding edge's Caddy: visitor → B → app.
    pub direct: Summary,
    /// Through the other edge's Caddy: visitor → A → B → app.
    pub forwarded: Summary,
}

const HOST: &str = "portal.bench.test";

/// Times `requests` requests on each path (after a warm-up of 20 each).
pub fn measure(requests: usize) -> Result<Forwarding> {
    let app = LoopbackServer::start(|stream, _| answer_http(stream, |_| (200, "ok".to_owned())))
        .map_err(|e| format!("cannot start the app: {e}"))?;
    let (a, b) = (RealCaddy::start()?, RealCaddy::start()?);
    let lease = active_lease("lease_aaaaaaaaaaaaaaaa", HOST, app.addr().port())?;
    let id = |text: &str| -> Result<EdgeId> { text.parse().map_err(|e| format!("{e}")) };
    let url = |caddy: &RealCaddy| -> Result<EdgeUrl> {
        format!("http://{}", caddy.http_address())
            .parse()
            .map_err(|e| format!("{e}"))
    };
    let routes = |caddy: &RealCaddy| {
        CaddyRoutes::new(&caddy.admin_address(), "srv0", Duration::from_secs(5))
            .map_err(|e| e.to_string())
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a runtime: {e}"))?;
    runtime.block_on(async {
        routes(&b)?
            .upsert(&Route::for_own_lease(
                &lease,
                &id("edge-b")?,
                vec![url(&a)?],
            ))
            .await
            .map_err(|e| e.to_string())?;
        routes(&a)?
            .upsert(&Route::to_edge(&lease, url(&b)?, &id("edge-a")?))
            .await
            .map_err(|e| e.to_string())
    })?;
    let time = |caddy: &RealCaddy| -> Result<Duration> {
        let started = Instant::now();
        match http_get_path(caddy.http_address(), HOST, "/") {
            Some((200, body)) if body == "ok" => Ok(started.elapsed()),
            other => Err(format!(
                "GET {HOST} through {}: {other:?}",
                caddy.http_address()
            )),
        }
    };
    for _ in 0..20 {
        time(&b)?;
        time(&a)?;
    }
    let (mut direct, mut forwarded) = (Vec::new(), Vec::new());
    for _ in 0..requests {
        direct.push(time(&b)?);
        forwarded.push(time(&a)?);
    }
    eprintln!("  several edges: {requests} requests on each path");
    Ok(Forwarding {
        direct: Summary::of(&direct),
        forwarded: Summary::of(&forwarded),
    })
}
