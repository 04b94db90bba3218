//! On-demand TLS end to end: the edge's Caddy runs the Caddyfile `install-edge.sh`
//! writes for `--tls-mode on-demand`, with Caddy's own CA as the issuer (`--tls-issuer
//! internal`) where a real edge has Let's Encrypt, and `mytunneld serve` answers its
//! `ask` on `MYTUNNEL_TLS_ASK_LISTEN`. A visitor's curl checks the certificate against
//! that CA: a tunnel's host gets a certificate for exactly that host at the first
//! handshake and serves over HTTPS; a host without a lease gets none (the handshake
//! fails, and Caddy stores nothing for it); once the tunnel is released the ask says no.
//! Real sshd, Caddy as its own user, serve as the service user (see `e2e_support`).

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod e2e_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use mytunnel_test_support::curl_https;
use std::time::Duration;

use e2e_support::{eventually, http_get, App, RouteMode, Stack, StackOptions, BASE_DOMAIN};
use nix::sys::signal::Signal;

/// `install-edge.sh --print-caddyfile` for on-demand mode on this stack's Caddy.
fn on_demand_caddyfile(stack: &Stack, ask: SocketAddr, http_port: u16, https_port: u16) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-edge.sh");
    let output = Command::new(script)
        .args([
            "--print-caddyfile",
            "--tls-mode",
            "on-demand",
            "--tls-issuer",
            "internal",
        ])
        .args(["--base-domain", BASE_DOMAIN])
        .arg("--caddy-admin-url")
        .arg(format!("http://{}", stack.caddy.admin_socket()))
        .arg("--tls-ask-listen")
        .arg(ask.to_string())
        .arg("--caddy-http-port")
        .arg(http_port.to_string())
        .arg("--caddy-https-port")
        .arg(https_port.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "install-edge.sh --print-caddyfile: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// What serve's ask endpoint answers for `host`.
fn ask_status(ask: SocketAddr, host: &str) -> u16 {
    mytunnel_test_support::http_get_path(ask, &ask.to_string(), &format!("/ask?domain={host}"))
        .unwrap_or_else(|| panic!("serve's ask at {ask} did not answer"))
        .0
}

/// Where Caddy keeps what its internal issuer issued for `host`.
fn stored_certificate(stack: &Stack, host: &str) -> PathBuf {
    stack
        .caddy
        .data_dir()
        .join("caddy/certificates/local")
        .join(host)
}

#[test]
fn a_tunnel_host_gets_its_certificate_on_demand_and_no_other_host_gets_one() {
    let ask = SocketAddr::from(([127, 0, 0, 1], mytunnel_test_support::free_port().unwrap()));
    let stack = Stack::with_env(
        StackOptions {
            route_mode: RouteMode::Static,
            ..StackOptions::default()
        },
        &format!("MYTUNNEL_TLS_ASK_LISTEN={ask}\n"),
    );
    let http_port = mytunnel_test_support::free_port().unwrap();
    let https_port = mytunnel_test_support::free_port().unwrap();
    let caddyfile = stack.path("Caddyfile");
    std::fs::write(
        &caddyfile,
        on_demand_caddyfile(&stack, ask, http_port, https_port),
    )
    .unwrap();
    stack.caddy.load_caddyfile(&caddyfile).unwrap();
    // A new config drops the route serve added; its next reconcile pass (every second
    // here) puts it back, as on an edge after `systemctl reload caddy`.
    assert!(
        eventually(Duration::from_secs(15), || stack
            .routes()
            .contains("mytunnel-static")),
        "serve did not put its route back: {}\n{}",
        stack.routes(),
        stack.serve_log()
    );

    let app = App::start("hello over https");
    let mut client = stack.http("alice", app.port(), &[]);
    let host = client.host();
    assert_eq!(ask_status(ask, &host), 200);

    // The first handshake for the host gets it a certificate of its own, from the CA the
    // visitor trusts.
    let visit = curl_https(&host, https_port, &stack.caddy.local_ca_root()).unwrap();
    let verbose = &visit.verbose;
    assert_eq!(
        visit.exit,
        Some(0),
        "curl https://{host}: {verbose}\ncaddy: {}",
        stack.caddy.log()
    );
    assert_eq!(visit.body, "hello over https");
    assert!(
        verbose.contains(&format!("matched cert's \"{host}\"")),
        "not a certificate for {host} itself: {verbose}"
    );
    assert!(stored_certificate(&stack, &host).is_dir());

    // A host without a lease: serve says no, Caddy issues nothing, the handshake fails.
    let nobody = format!("nobody-here.{BASE_DOMAIN}");
    assert_eq!(ask_status(ask, &nobody), 404);
    let refused = curl_https(&nobody, https_port, &stack.caddy.local_ca_root()).unwrap();
    assert_eq!(
        refused.exit,
        Some(35),
        "curl https://{nobody} should fail its TLS handshake: {}",
        refused.verbose
    );
    assert!(!stored_certificate(&stack, &nobody).exists());

    // Released: the ask says no again (a certificate Caddy already holds stays in its
    // cache; the host then answers like any host without a tunnel).
    client.signal(Signal::SIGINT);
    assert!(client.wait_exit(Duration::from_secs(20)).is_some());
    assert!(
        eventually(Duration::from_secs(10), || ask_status(ask, &host) == 404),
        "the ask still says yes for a released host"
    );
    // Plain HTTP on Caddy's other port is redirected to HTTPS, not served.
    let http = http_get(SocketAddr::from(([127, 0, 0, 1], http_port)), &host);
    assert!(
        matches!(http, Some((301 | 302 | 308, _))),
        "plain HTTP for {host}: {http:?}"
    );
}
