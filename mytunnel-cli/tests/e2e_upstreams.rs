//! What `mytunnel http <TARGET>` forwards to, end to end: real sshd, Caddy and OS users
//! (see `e2e_support`), and apps that do not sit on `http://127.0.0.1:<port>`: one on
//! `[::1]` only, one on `127.0.0.2`, an HTTPS one with a self-signed certificate, one that
//! insists on its own Host header. Visitors go through Caddy with the tunnel's host; the
//! apps check what arrives. A target nothing answers on, or whose certificate is not
//! trusted, costs no lease.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod e2e_support;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use e2e_support::{eventually, App, Client, Stack};
use mytunnel_test_support::{answer_http, HttpsApp, LoopbackServer};

const USER: &str = "alice";
const SERVE: Duration = Duration::from_secs(15);

/// The `forwarding https://<host> → <target> (<address>)` line of an opened client.
fn forwarding_line(client: &Client) -> String {
    let stderr = client.stderr();
    stderr
        .lines()
        .find(|line| line.starts_with("forwarding "))
        .unwrap_or_else(|| panic!("no forwarding line on stderr:\n{stderr}"))
        .to_owned()
}

/// The ids of every lease of `USER` the edge lists, in any state.
fn lease_ids(stack: &Stack) -> BTreeSet<String> {
    stack
        .leases(USER)
        .iter()
        .map(|lease| lease["lease_id"].as_str().unwrap().to_owned())
        .collect()
}

/// A `mytunnel http` that refused to start: its whole stderr, and its diagnostic's
/// message and help, each on one line.
struct Refusal {
    stderr: String,
    message: String,
    help: String,
}

/// Runs `mytunnel http <target> <args>`, which is to refuse: exit 1, nothing on stdout,
/// no new lease on the edge.
fn refused(stack: &Stack, target: &str, args: &[&str]) -> Refusal {
    let before = lease_ids(stack);
    let mut client = stack.spawn_http_target(USER, target, args);
    let status = client.wait_exit(Duration::from_secs(30));
    let stderr = client.stderr();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "`mytunnel http {target}`: {status:?}\nstderr:\n{stderr}"
    );
    // Its stdout ended with it: a line here would be a `url:`.
    assert_eq!(
        client.next_line(Duration::from_secs(5)),
        None,
        "`mytunnel http {target}` printed on stdout; stderr:\n{stderr}"
    );
    let after = lease_ids(stack);
    assert_eq!(
        after, before,
        "`mytunnel http {target}` allocated a lease; stderr:\n{stderr}"
    );
    let flat = unwrapped(&stderr);
    let message = flat
        .split_once("× ")
        .map(|(_, rest)| rest.split(" help: ").next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no diagnostic (×) on stderr:\n{stderr}"));
    let help = flat
        .split_once(" help: ")
        .map(|(_, rest)| rest.to_owned())
        .unwrap_or_else(|| panic!("no help on stderr:\n{stderr}"));
    Refusal {
        stderr,
        message,
        help,
    }
}

/// `text` as one line: miette wraps long lines (between words only: the binaries tell it
/// not to split at hyphens, so a flag stays whole) and marks the message's continuations
/// with `│`.
fn unwrapped(text: &str) -> String {
    let mut flat = String::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix('│').unwrap_or(line).trim_start();
        if line.is_empty() {
            continue;
        }
        if !flat.is_empty() {
            flat.push(' ');
        }
        flat.push_str(&line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    flat
}

/// A port nothing listens on, on `127.0.0.1` nor on `[::1]`: bound on both, so that
/// nothing else takes it while this lives, but never listening, so connections to it are
/// refused.
struct ClosedPort {
    _sockets: [tokio::net::TcpSocket; 2],
    port: u16,
}

impl ClosedPort {
    fn new() -> ClosedPort {
        for _ in 0..50 {
            let v4 = tokio::net::TcpSocket::new_v4().unwrap();
            v4.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
            let port = v4.local_addr().unwrap().port();
            let v6 = tokio::net::TcpSocket::new_v6().unwrap();
            if v6
                .bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
                .is_ok()
            {
                return ClosedPort {
                    _sockets: [v4, v6],
                    port,
                };
            }
        }
        panic!("no port free on both 127.0.0.1 and [::1] in 50 tries");
    }
}

/// An app on `[::1]` only is found by its port alone (localhost: 127.0.0.1 and ::1 are
/// both tried) and by its address; the status line names the address that answered.
#[test]
fn an_app_on_ipv6_loopback_only_is_served_by_its_port_and_by_its_address() {
    let stack = Stack::new();
    let app = App::start_on(
        SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        "hello from [::1]",
    );
    let port = app.port();
    let by_port = stack.spawn_http_target(USER, &port.to_string(), &[]);
    let by_address = stack.spawn_http_target(USER, &format!("[::1]:{port}"), &[]);
    let by_port = stack.await_opened(by_port);
    let by_address = stack.await_opened(by_address);

    assert_eq!(
        forwarding_line(&by_port),
        format!(
            "forwarding {} → http://localhost:{port} ([::1]:{port})",
            by_port.url
        )
    );
    assert_eq!(
        forwarding_line(&by_address),
        format!(
            "forwarding {} → http://[::1]:{port} ([::1]:{port})",
            by_address.url
        )
    );
    stack.assert_serves(&by_port.host(), "hello from [::1]", SERVE);
    stack.assert_serves(&by_address.host(), "hello from [::1]", SERVE);
}

/// An app on another loopback address than 127.0.0.1 is published by `host:port`.
#[test]
fn an_app_on_127_0_0_2_is_served_by_its_address() {
    let stack = Stack::new();
    let app = App::start_on(
        SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0)),
        "hello from 127.0.0.2",
    );
    let port = app.port();
    let client = stack.http_target(USER, &format!("127.0.0.2:{port}"), &[]);

    assert_eq!(
        forwarding_line(&client),
        format!(
            "forwarding {} → http://127.0.0.2:{port} (127.0.0.2:{port})",
            client.url
        )
    );
    stack.assert_serves(&client.host(), "hello from 127.0.0.2", SERVE);
}

/// Nothing on the port, on either loopback address: refused before any lease, naming
/// both addresses tried.
#[test]
fn a_port_nothing_answers_on_names_both_loopback_addresses_and_allocates_nothing() {
    let stack = Stack::new();
    let closed = ClosedPort::new();
    let port = closed.port;

    let refusal = refused(&stack, &port.to_string(), &[]);
    assert!(
        refusal.stderr.contains("app_unreachable"),
        "no code app_unreachable:\n{}",
        refusal.stderr
    );
    assert!(
        refusal
            .message
            .starts_with(&format!("nothing answers on http://localhost:{port}/ (")),
        "the message does not start `nothing answers on http://localhost:{port}/ (`:\n{}",
        refusal.stderr
    );
    for address in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        assert!(
            refusal.message.contains(&address),
            "{address} not named:\n{}",
            refusal.stderr
        );
    }
}

/// An HTTPS app with a self-signed certificate: refused (no lease) until
/// `--upstream-insecure`, then served through Caddy.
#[test]
fn an_https_app_with_an_untrusted_certificate_is_served_only_with_upstream_insecure() {
    let stack = Stack::new();
    let app = HttpsApp::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        &["localhost"],
        "hello over TLS",
    )
    .unwrap();
    let port = app.port();
    let target = format!("https://localhost:{port}");

    let refusal = refused(&stack, &target, &[]);
    assert!(
        refusal.stderr.contains("app_certificate_untrusted"),
        "no code app_certificate_untrusted:\n{}",
        refusal.stderr
    );
    assert!(
        refusal.message.to_lowercase().contains("certificate"),
        "the message does not mention the certificate:\n{}",
        refusal.stderr
    );
    assert!(
        refusal.help.contains("--upstream-insecure"),
        "the help does not name --upstream-insecure:\n{}",
        refusal.stderr
    );
    // Whole on the terminal too, where a user copies it from.
    assert!(
        refusal.stderr.contains("--upstream-insecure"),
        "the flag is broken across lines:\n{}",
        refusal.stderr
    );

    let client = stack.http_target(USER, &target, &["--upstream-insecure"]);
    assert_eq!(
        forwarding_line(&client),
        format!(
            "forwarding {} → https://localhost:{port} (127.0.0.1:{port})",
            client.url
        )
    );
    stack.assert_serves(&client.host(), "hello over TLS", SERVE);
}

/// An app that answers only to its own `Host: localhost:<port>` (as dev servers guarding
/// against DNS rebinding do): `--host-header rewrite` gives it that host, and without it
/// the app sees the public host as before. Either way `X-Forwarded-Host` carries the
/// public host and `X-Forwarded-Proto` is `https`.
#[test]
fn host_header_rewrite_gives_the_app_its_own_host_and_forwarded_headers_the_public_one() {
    let stack = Stack::new();
    let app = LoopbackServer::start(|stream, _| {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let own = format!("localhost:{}", stream.local_addr().unwrap().port());
        answer_http(stream, |request| {
            let header = |name| request.header(name).unwrap_or("<none>");
            let forwarded = format!(
                "x-forwarded-host: {}\nx-forwarded-proto: {}",
                header("x-forwarded-host"),
                header("x-forwarded-proto")
            );
            if request.header("host") == Some(own.as_str()) {
                (200, forwarded)
            } else {
                (400, format!("host: {}\n{forwarded}", header("host")))
            }
        });
    })
    .unwrap();
    let port = app.port().to_string();
    let rewrite = stack.spawn_http_target(USER, &port, &["--host-header", "rewrite"]);
    let public = stack.spawn_http_target(USER, &port, &[]);
    let rewrite = stack.await_opened(rewrite);
    let public = stack.await_opened(public);

    stack.assert_serves(
        &rewrite.host(),
        &format!(
            "x-forwarded-host: {}\nx-forwarded-proto: https",
            rewrite.host()
        ),
        SERVE,
    );

    // Caddy answers 404 or 502 until the route is in; then the app's 400.
    let mut last = None;
    eventually(SERVE, || {
        last = stack.get(&public.host());
        last.as_ref().is_some_and(|(status, _)| *status == 400)
    });
    let host = public.host();
    assert_eq!(
        last,
        Some((
            400,
            format!("host: {host}\nx-forwarded-host: {host}\nx-forwarded-proto: https")
        )),
        "stderr:\n{}",
        public.stderr()
    );
}
