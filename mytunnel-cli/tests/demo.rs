//! `cargo xtask demo`: the whole stack for a person. A real sshd (tunnel keys gated by
//! `mytunneld gate`), a real Caddy and `mytunneld serve` on loopback; a sample app
//! published by user alice through `mytunnel http`; the URL, a `curl` line that fetches it
//! through Caddy, and the answer. Ctrl-C tears everything down (every process by pid).
//!
//! A test target without the test harness so it can use the built binaries; it is not
//! part of `cargo test` (`test = false`). `--once` exits after the fetch.

// Demo code: a panic is a failed step, reported with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[allow(dead_code)]
#[path = "e2e_support/mod.rs"]
mod e2e_support;

use std::time::Duration;

use e2e_support::{App, RouteMode, Stack, StackOptions};

const BODY: &str = "Hello from the mytunnel demo app!";

fn main() {
    let once = std::env::args().any(|a| a == "--once");
    println!("mytunnel demo: starting sshd, Caddy and mytunneld serve on loopback…");
    // The route mode of a new install: one wildcard Caddy route, per-user sockets.
    let stack = Stack::with(StackOptions {
        route_mode: RouteMode::Static,
        ..StackOptions::default()
    });
    let app = App::start(BODY);
    println!("sample app: http://127.0.0.1:{}/", app.port());
    println!(
        "$ mytunnel http {} --edge alice@127.0.0.1 (ssh port {})",
        app.port(),
        stack.sshd.port()
    );
    let alice = stack.http("alice", app.port(), &[]);
    println!("url: {}", alice.url);
    println!("lease: {}", alice.lease);
    println!(
        "route mode static: Caddy dials {}/hosts/{}.sock",
        stack.socket_dir().display(),
        alice.slug()
    );
    let caddy = stack.caddy.http_address();
    println!();
    println!(
        "Fetch it through Caddy with the tunnel's host (DNS and TLS stand in for a real edge):"
    );
    println!("  curl -H 'Host: {}' http://{caddy}/", alice.host());
    stack.assert_serves(&alice.host(), BODY, Duration::from_secs(20));
    let (status, body) = stack.get(&alice.host()).unwrap();
    println!("  → HTTP {status}: {body}");
    if once {
        println!("demo: ok (--once), tearing down");
        return;
    }
    println!();
    println!("The tunnel stays up; press Ctrl-C to stop it and tear everything down.");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).unwrap();
        let mut term = signal(SignalKind::terminate()).unwrap();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    });
    println!("\ndemo: stopping the client (its lease is released), serve, sshd and Caddy");
    drop(alice);
    drop(stack);
}
