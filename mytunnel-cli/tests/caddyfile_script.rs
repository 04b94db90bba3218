// Test code: a panic is a failed assertion.
//! The Caddyfile `scripts/install-edge.sh --tls-mode` writes, as `--print-caddyfile`
//! prints it (the same text: `edge_scripts.rs` checks an install writes exactly that), run
//! through the packaged Caddy: `caddy adapt` reads every variant Debian's Caddy can load,
//! the comment on what a host without a tunnel gets is what Caddy answers in each route
//! mode, and on-demand TLS gets a certificate only for a host the ask endpoint allows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mytunnel_edge::caddy::{static_route_json, CaddyRoutes, STATIC_ROUTE_ID};
use mytunnel_test_support::{
    admin_request, answer_http, caddy_binary, curl_https, LoopbackServer, RealCaddy, ReservedPort,
};
use serde_json::Value;

const DOMAIN: &str = "t.test";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-edge.sh")
}

/// `install-edge.sh --print-caddyfile --base-domain t.test <args>`.
fn print(args: &[&str]) -> Output {
    Command::new(script())
        .args(["--print-caddyfile", "--base-domain", DOMAIN])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The printed Caddyfile; the script must succeed.
fn printed(args: &[&str]) -> String {
    let out = print(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `caddy <args>` on `text` written to a file, with a home of its own: its output.
fn caddy_on(text: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, text).unwrap();
    Command::new(caddy_binary().unwrap())
        .args(args)
        .arg(&file)
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `caddy adapt --adapter caddyfile` of `text`: the JSON config Caddy would run.
fn adapt(text: &str) -> Value {
    let out = caddy_on(text, &["adapt", "--adapter", "caddyfile", "--config"]);
    assert!(
        out.status.success(),
        "caddy adapt: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The policy of `config`'s TLS automation for `*.t.test`.
fn wildcard_policy(config: &Value) -> &Value {
    config["apps"]["tls"]["automation"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["subjects"] == serde_json::json!([format!("*.{DOMAIN}")]))
        .unwrap_or_else(|| panic!("no policy for *.{DOMAIN}: {config}"))
}

/// The status the site block's comment says a host without a tunnel gets: the number in
/// its "… gets NNN" (the on-demand text first says such a host gets no certificate).
fn promised_status(caddyfile: &str) -> u16 {
    let comment: String = caddyfile
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("# "))
        .collect::<Vec<_>>()
        .join(" ");
    let at = comment
        .find("A host without a tunnel gets ")
        .unwrap_or_else(|| panic!("no claim about hosts without a tunnel:\n{caddyfile}"));
    comment[at..]
        .split("gets ")
        .skip(1)
        .find_map(|after| after.get(..3)?.parse().ok())
        .unwrap_or_else(|| panic!("no status in the claim:\n{caddyfile}"))
}

#[test]
fn every_variant_is_one_caddy_reads_as_intended() {
    let staging = "https://acme-staging-v02.api.letsencrypt.org/directory";
    for issuer in ["acme", "internal"] {
        for route_mode in ["static", "routes"] {
            let text = printed(&[
                "--tls-mode",
                "on-demand",
                "--tls-issuer",
                issuer,
                "--route-mode",
                route_mode,
            ]);
            // Formatted as Caddy formats it (Caddy warns about anything else).
            let fmt = caddy_on(&text, &["fmt"]);
            assert_eq!(String::from_utf8_lossy(&fmt.stdout), text, "caddy fmt");
            let config = adapt(&text);
            assert_eq!(config["admin"]["listen"], "127.0.0.1:2019", "{config}");
            // Caddy asks serve, on the installer's default address, before every
            // certificate; the tunnel hosts' policy obtains them on demand.
            assert_eq!(
                config["apps"]["tls"]["automation"]["on_demand"]["ask"],
                "http://127.0.0.1:2020/ask",
                "{config}"
            );
            let policy = wildcard_policy(&config);
            assert_eq!(policy["on_demand"], true, "{config}");
            // Ports as Caddy's defaults: none written.
            assert!(config["apps"]["http"]["http_port"].is_null(), "{config}");
            assert!(config["apps"]["http"]["https_port"].is_null(), "{config}");
            let site = &config["apps"]["http"]["servers"]["srv0"];
            assert_eq!(site["listen"], serde_json::json!([":443"]), "{config}");
            match issuer {
                "internal" => {
                    assert_eq!(policy["issuers"][0]["module"], "internal", "{config}");
                    assert_eq!(
                        config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"],
                        false,
                        "{config}"
                    );
                }
                _ => {
                    // Caddy's default ACME issuers (no issuer named), no local CA.
                    assert!(policy["issuers"].is_null(), "{config}");
                    assert!(config["apps"]["pki"].is_null(), "{config}");
                }
            }
            let expected = if route_mode == "static" { 502 } else { 404 };
            assert_eq!(promised_status(&text), expected, "{text}");
            assert!(
                text.contains("so its TLS handshake fails"),
                "on-demand: no word of the handshake:\n{text}"
            );
        }
    }

    // Another ACME CA, another ask address, ports behind a NAT, a unix admin socket.
    let text = printed(&[
        "--tls-mode",
        "on-demand",
        "--acme-ca",
        staging,
        "--tls-ask-listen",
        "[::1]:7020",
        "--caddy-http-port",
        "8080",
        "--caddy-https-port",
        "08443",
        "--caddy-admin-url",
        "unix:///run/caddy/admin.sock",
    ]);
    let config = adapt(&text);
    assert_eq!(config["admin"]["listen"], "unix//run/caddy/admin.sock");
    assert_eq!(
        config["apps"]["tls"]["automation"]["on_demand"]["ask"],
        "http://[::1]:7020/ask"
    );
    assert_eq!(
        wildcard_policy(&config)["issuers"],
        serde_json::json!([{ "module": "acme", "ca": staging }])
    );
    assert_eq!(config["apps"]["http"]["http_port"], 8080, "{config}");
    assert_eq!(config["apps"]["http"]["https_port"], 8443, "{config}");
    assert_eq!(
        config["apps"]["http"]["servers"]["srv0"]["listen"],
        serde_json::json!([":8443"])
    );

    // A wildcard from Caddy's local CA: no DNS provider, no ask.
    let text = printed(&["--tls-mode", "wildcard", "--tls-issuer", "internal"]);
    let config = adapt(&text);
    let policy = wildcard_policy(&config);
    assert_eq!(policy["issuers"][0]["module"], "internal", "{config}");
    assert!(policy["on_demand"].is_null(), "{config}");
    assert!(config["apps"]["tls"]["automation"]["on_demand"].is_null());
    assert_eq!(promised_status(&text), 502, "{text}");
    assert!(!text.contains("handshake"), "{text}");

    // A wildcard through DNS-01: the packaged Caddy has no DNS provider module, so it
    // cannot even adapt the file (install-edge.sh warns on exactly this message); the
    // text is checked as it is.
    let text = printed(&["--tls-mode", "wildcard", "--dns-provider", "infomaniak"]);
    let out = caddy_on(&text, &["adapt", "--adapter", "caddyfile", "--config"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("module not registered: dns.providers.infomaniak"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text,
        "\
# Caddy for the mytunnel edge *.t.test: TLS mode wildcard, issuer acme, route mode
# static. Written by install-edge.sh --tls-mode on every such run; other content it
# replaces is kept as <file>.before-mytunnel.<time>.
# Check: caddy validate --adapter caddyfile --config /etc/caddy/Caddyfile
{
\t# The admin API can rewrite every route: loopback only (mytunneld refuses anything else).
\tadmin 127.0.0.1:2019
}

*.t.test {
\t# One wildcard certificate through the ACME DNS-01 challenge: needs a Caddy built with
\t# the infomaniak module (xcaddy build --with github.com/caddy-dns/infomaniak) and
\t# INFOMANIAK_TOKEN in its environment.
\ttls {
\t\tdns infomaniak {env.INFOMANIAK_TOKEN}
\t}
\t# A host without a tunnel gets 502 (Bad Gateway): mytunneld serve adds one route in
\t# front of this block through the admin API (route mode static) that takes every
\t# *.t.test to /var/lib/mytunnel-sockets/hosts/<slug>.sock, and no such link exists. The
\t# 404 below answers only while that route is missing: after Caddy loads this file,
\t# until serve's next reconcile (`mytunneld ctl reconcile`).
\trespond \"no tunnel here\" 404
}
"
    );
    // The token variable: named, or the provider's name in capitals, `-` as `_`.
    let text = printed(&[
        "--tls-mode",
        "wildcard",
        "--dns-provider",
        "openstack-designate",
        "--route-mode",
        "routes",
    ]);
    assert!(
        text.contains("\t\tdns openstack-designate {env.OPENSTACK_DESIGNATE_TOKEN}\n"),
        "{text}"
    );
    assert_eq!(promised_status(&text), 404, "{text}");
    let text = printed(&[
        "--tls-mode",
        "wildcard",
        "--dns-provider",
        "cloudflare",
        "--dns-token-env",
        "CF_API_TOKEN",
    ]);
    assert!(
        text.contains("\t\tdns cloudflare {env.CF_API_TOKEN}\n"),
        "{text}"
    );
}

#[test]
fn print_refuses_what_cannot_make_a_caddyfile() {
    for (args, needle) in [
        (
            vec!["--tls-mode", "both"],
            "--tls-mode must be wildcard or on-demand",
        ),
        (vec!["--tls-mode", "wildcard"], "needs --dns-provider"),
        (
            vec!["--tls-mode", "on-demand", "--dns-provider", "infomaniak"],
            "--dns-provider is only for --tls-mode wildcard",
        ),
        (
            vec![
                "--tls-mode",
                "wildcard",
                "--tls-issuer",
                "internal",
                "--dns-provider",
                "infomaniak",
            ],
            "--dns-provider is only for",
        ),
        (
            vec![
                "--tls-mode",
                "on-demand",
                "--tls-ask-listen",
                "0.0.0.0:2020",
            ],
            "--tls-ask-listen must be a loopback IP:PORT",
        ),
        (
            vec![
                "--tls-mode",
                "on-demand",
                "--tls-ask-listen",
                "10.0.0.1:2020",
            ],
            "--tls-ask-listen must be a loopback IP:PORT",
        ),
        (
            vec!["--tls-mode", "on-demand", "--tls-ask-listen", "127.0.0.1"],
            "--tls-ask-listen must be a loopback IP:PORT",
        ),
        (
            vec![
                "--tls-mode",
                "on-demand",
                "--tls-ask-listen",
                "127.0.0.1:70000",
            ],
            "--tls-ask-listen must be a loopback IP:PORT",
        ),
        (
            vec![
                "--tls-mode",
                "wildcard",
                "--tls-issuer",
                "internal",
                "--tls-ask-listen",
                "127.0.0.1:2020",
            ],
            "--tls-ask-listen is only for --tls-mode on-demand",
        ),
        (
            vec!["--tls-mode", "on-demand", "--tls-issuer", "letsencrypt"],
            "--tls-issuer must be acme or internal",
        ),
        (
            vec![
                "--tls-mode",
                "on-demand",
                "--tls-issuer",
                "internal",
                "--acme-ca",
                "https://ca.test/dir",
            ],
            "--acme-ca is only for --tls-issuer acme",
        ),
        (
            vec![
                "--tls-mode",
                "on-demand",
                "--acme-ca",
                "https://ca.test/{x}",
            ],
            "invalid --acme-ca",
        ),
        (
            vec!["--tls-mode", "on-demand", "--caddy-https-port", "0"],
            "--caddy-https-port must be a port number",
        ),
        (
            vec![
                "--tls-mode",
                "on-demand",
                "--caddy-http-port",
                "8443",
                "--caddy-https-port",
                "8443",
            ],
            "must differ",
        ),
        (
            vec![
                "--tls-mode",
                "on-demand",
                "--caddy-admin-url",
                "http://192.0.2.1:2019",
            ],
            "--caddy-admin-url must be loopback",
        ),
        // Nothing would use them without a mode.
        (vec!["--dns-provider", "infomaniak"], "needs --tls-mode"),
        (vec![], "--print-caddyfile needs --tls-mode"),
    ] {
        let out = print(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = Command::new(script())
        .args(["--print-caddyfile", "--tls-mode", "on-demand"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --base-domain"));
}

/// `GET /` with `Host: host` over plain HTTP: the status.
fn status_of(addr: SocketAddr, host: &str) -> u16 {
    mytunnel_test_support::http_get_path(addr, host, "/")
        .unwrap_or_else(|| panic!("no HTTP answer from {addr} for {host}"))
        .0
}

/// What the site block's comment promises a host without a tunnel, in each route mode, is
/// what Caddy answers: static mode's wildcard route (which serve puts in front of the
/// block) dials a host link that does not exist, 502; in routes mode no route of serve's
/// matches and the block's own `respond` answers, 404.
///
/// Over plain HTTP, the least artificial way: the routes are exactly those `caddy adapt`
/// makes of the printed Caddyfile, loaded into a test Caddy's HTTP server (the harness's
/// `srv0`, automatic HTTPS off), and static mode's route is put in front of them by
/// `CaddyRoutes::ensure_static_route`, the call serve makes, with `static_route_json`,
/// the route serve writes. Only the listener differs from the edge's: the file's site
/// serves HTTPS, whose handshake an unknown host does not pass in on-demand mode (checked
/// by `on_demand_tls_gets_a_certificate_only_for_hosts_the_ask_allows`); Caddy chooses the
/// route by Host after any handshake.
#[test]
fn the_comment_says_what_a_host_without_a_tunnel_gets() {
    let sockets = tempfile::tempdir().unwrap();
    std::fs::create_dir(sockets.path().join("hosts")).unwrap();
    let socket_dir = sockets.path().to_str().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for route_mode in ["static", "routes"] {
        let caddy = RealCaddy::start().unwrap();
        let text = printed(&[
            "--tls-mode",
            "on-demand",
            "--route-mode",
            route_mode,
            "--socket-dir",
            socket_dir,
        ]);
        let config = adapt(&text);
        let routes = &config["apps"]["http"]["servers"]["srv0"]["routes"];
        assert_eq!(routes.as_array().unwrap().len(), 1, "{config}");
        // The harness's catch-all goes: only the Caddyfile's routes answer.
        admin_request(
            caddy.admin_socket(),
            "PATCH",
            "/config/apps/http/servers/srv0/routes",
            Some(routes),
        )
        .unwrap();
        caddy.settle();
        if route_mode == "static" {
            let domain = DOMAIN.parse().unwrap();
            let backend =
                CaddyRoutes::new(&caddy.admin_address(), "srv0", Duration::from_secs(10)).unwrap();
            runtime
                .block_on(backend.ensure_static_route(&static_route_json(&domain, sockets.path())))
                .unwrap();
            caddy.settle();
            let installed: Value = serde_json::from_str(&caddy.routes().unwrap()).unwrap();
            assert_eq!(installed[0]["@id"], STATIC_ROUTE_ID, "{installed}");
            assert_eq!(installed[1], routes[0], "{installed}");
            assert!(
                text.contains(&format!("{socket_dir}/hosts/<slug>.sock")),
                "{text}"
            );
        }
        let promised = promised_status(&text);
        for host in [
            format!("nothing-here.{DOMAIN}"),
            format!("Nothing-Here.{DOMAIN}"),
        ] {
            // A Host with capitals takes the other path of static mode's route (serve's
            // names.sock, absent here, is asked its slug): the same answer.
            let got = status_of(caddy.http_address(), &host);
            assert_eq!(
                got,
                promised,
                "{route_mode}: {host} got {got}, the Caddyfile says {promised}:\n{text}\n{}",
                caddy.log()
            );
        }
    }
}

/// The on-demand Caddyfile, loaded into a real Caddy as it is (`RealCaddy::load_caddyfile`:
/// its listeners, its TLS; `tls internal`, so no CA outside this machine is asked): Caddy
/// asks the `ask` URL the file names before it gets a host a certificate. A host the
/// endpoint refuses gets none, so its TLS handshake fails, as the comment says; a host it
/// allows gets one (signed by Caddy's local CA, which curl checks) and then the status
/// the comment promises (routes mode: no lease route).
#[test]
fn on_demand_tls_gets_a_certificate_only_for_hosts_the_ask_allows() {
    // Caddy's ask, as serve answers it: 200 for a host of an active lease only.
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let ask = {
        let asked = Arc::clone(&asked);
        LoopbackServer::start(move |stream, _| {
            answer_http(stream, |request| {
                asked.lock().unwrap().push(request.target.clone());
                if request.target == format!("/ask?domain=live.{DOMAIN}") {
                    (200, String::new())
                } else {
                    (404, String::new())
                }
            });
        })
        .unwrap()
    };
    let caddy = RealCaddy::start().unwrap();
    // The file's ports: the admin API and HTTP port this Caddy holds, and an HTTPS port
    // held here while it runs.
    let https = ReservedPort::new().unwrap();
    let text = printed(&[
        "--tls-mode",
        "on-demand",
        "--tls-issuer",
        "internal",
        "--route-mode",
        "routes",
        "--tls-ask-listen",
        &ask.addr().to_string(),
        "--caddy-admin-url",
        &format!("http://{}", caddy.admin_socket()),
        "--caddy-http-port",
        &caddy.http_address().port().to_string(),
        "--caddy-https-port",
        &https.port().to_string(),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Caddyfile");
    std::fs::write(&file, &text).unwrap();
    caddy.load_caddyfile(&file).unwrap();
    let root = caddy.local_ca_root();
    assert!(root.is_file(), "no local CA: {}", caddy.log());

    let gone = curl_https(&format!("gone.{DOMAIN}"), https.port(), &root).unwrap();
    // 35: the TLS handshake failed (Caddy had no certificate to offer).
    assert_eq!(gone.exit, Some(35), "{}\n{}", gone.verbose, caddy.log());
    assert_eq!(
        *asked.lock().unwrap(),
        [format!("/ask?domain=gone.{DOMAIN}")],
        "{}",
        caddy.log()
    );

    let live = curl_https(&format!("live.{DOMAIN}"), https.port(), &root).unwrap();
    assert_eq!(live.exit, Some(0), "{}\n{}", live.verbose, caddy.log());
    assert_eq!(live.status, Some(promised_status(&text)), "{text}");
    assert_eq!(live.status, Some(404));
    assert!(
        asked
            .lock()
            .unwrap()
            .contains(&format!("/ask?domain=live.{DOMAIN}")),
        "{:?}",
        asked.lock().unwrap()
    );
}
