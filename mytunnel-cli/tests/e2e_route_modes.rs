//! End to end, both route modes (issue 8): real sshd, real Caddy, `mytunneld serve`, OS
//! users, the built client.
//!
//! - Connections held open through one tunnel while 100 other leases come and go: in
//!   `static` mode Caddy's configuration never changes, so nothing is interrupted; in
//!   `routes` mode every change reloads Caddy, and the test records what that does.
//! - A tunnel user cannot bind another user's bind target while that user's data plane is
//!   down, and no request for the other user's host reaches them.
// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod e2e_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_support::{eventually, App, RouteMode, Stack, StackOptions, BASE_DOMAIN};
use mytunnel_test_support::{mytunneld_command, LoopbackServer};
use nix::sys::signal::Signal;
use serde_json::Value;

/// A local app with the three kinds of traffic a tunnel carries: a plain page, a
/// WebSocket upgrade (`101 Switching Protocols`, then bytes echoed both ways, which is
/// all Caddy sees of a WebSocket), and a response streamed in chunks every 50 ms.
struct HoldApp(LoopbackServer);

impl HoldApp {
    fn start() -> HoldApp {
        HoldApp(LoopbackServer::start(serve).unwrap())
    }

    fn port(&self) -> u16 {
        self.0.port()
    }
}

fn serve(stream: TcpStream, stop: &AtomicBool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut upgrade = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        upgrade |= line.to_ascii_lowercase().starts_with("upgrade: websocket");
    }
    let mut out = stream;
    if request_line.starts_with("GET /ws ") && upgrade {
        let _ = out.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        );
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    } else if request_line.starts_with("GET /stream ") {
        let _ = out.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        let mut tick = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let chunk = format!("tick {tick}\n");
            if out
                .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                .is_err()
            {
                return;
            }
            tick += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    } else {
        let body = "held app";
        let _ = out.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
}

/// Sends a request through Caddy and reads up to the end of the response head.
fn open_through_caddy(
    stack: &Stack,
    host: &str,
    path: &str,
    extra: &str,
) -> (String, BufReader<TcpStream>) {
    let stream = TcpStream::connect(stack.caddy.http_address()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    write!(writer, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    (head, reader)
}

/// A WebSocket-style connection held open through Caddy: `echo` sends a line and
/// answers whether the same line came back.
struct HeldSocket {
    reader: BufReader<TcpStream>,
}

impl HeldSocket {
    fn open(stack: &Stack, host: &str) -> HeldSocket {
        let (head, reader) = open_through_caddy(
            stack,
            host,
            "/ws",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        );
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "upgrade answered {head:?}"
        );
        HeldSocket { reader }
    }

    /// Sends a line and reads it back. A proxy that ends the connection either closes it
    /// or first sends a WebSocket close frame (0x88, then the status code).
    fn echo(&mut self, text: &str) -> Result<(), String> {
        self.reader
            .get_mut()
            .write_all(format!("{text}\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let want = format!("{text}\n").into_bytes();
        let mut got = vec![0u8; want.len()];
        let mut filled = 0;
        while filled < got.len() {
            match self.reader.read(&mut got[filled..]) {
                Ok(0) => return Err("closed by the proxy".to_owned()),
                Ok(n) => filled += n,
                Err(e) => return Err(format!("read: {e}")),
            }
            if got[0] == 0x88 {
                let code = (filled >= 4).then(|| u16::from_be_bytes([got[2], got[3]]));
                return Err(format!(
                    "websocket close frame from the proxy, code {code:?}"
                ));
            }
        }
        if got == want {
            Ok(())
        } else {
            Err(format!("echoed {:?}", String::from_utf8_lossy(&got)))
        }
    }
}

/// A streamed response held open through Caddy; a thread counts the chunks received.
struct HeldStream {
    chunks: Arc<AtomicU64>,
    ended: Arc<AtomicBool>,
}

impl HeldStream {
    fn open(stack: &Stack, host: &str) -> HeldStream {
        let (head, mut reader) = open_through_caddy(stack, host, "/stream", "");
        assert!(head.starts_with("HTTP/1.1 200"), "stream answered {head:?}");
        let chunks = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(AtomicBool::new(false));
        let (counting, ending) = (Arc::clone(&chunks), Arc::clone(&ended));
        std::thread::spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.starts_with("tick ") => {
                        counting.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                }
            }
            ending.store(true, Ordering::SeqCst);
        });
        HeldStream { chunks, ended }
    }

    fn chunks(&self) -> u64 {
        self.chunks.load(Ordering::SeqCst)
    }

    /// Whether new chunks keep arriving (at least two more within 5 s).
    fn still_flowing(&self) -> bool {
        let from = self.chunks();
        eventually(Duration::from_secs(5), || self.chunks() >= from + 2) && !self.ended()
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// `mytunneld ctl` run on the edge as `user` (what the gate runs for them).
fn ctl_as(stack: &Stack, user: &str, args: &[&str]) -> Value {
    let output = mytunneld_command(
        &stack.path("mytunneld"),
        &stack.env_file(),
        Some(user),
        "ctl",
    )
    .args(args)
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ctl {args:?} as {user}: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

/// What the held connections went through while 100 leases came and went.
#[derive(Debug)]
struct Churn {
    socket_error: Option<String>,
    stream_flowing: bool,
    caddy_config_changed: bool,
}

fn hold_through_churn(mode: RouteMode) -> Churn {
    let stack = Stack::with(StackOptions {
        route_mode: mode,
        lease_ttl_secs: 60,
        ..StackOptions::default()
    });
    let app = HoldApp::start();
    let alice = stack.http("alice", app.port(), &["--name", "held"]);
    let host = alice.host();
    stack.assert_serves(&host, "held app", Duration::from_secs(20));

    let mut socket = HeldSocket::open(&stack, &host);
    socket.echo("before").unwrap();
    let stream = HeldStream::open(&stack, &host);
    assert!(stream.still_flowing(), "the stream did not start");
    let config_before = stack.caddy_config();

    let started = Instant::now();
    let mut caddy_config_changed = false;
    for n in 0..100 {
        let name = format!("churn-{n}");
        let lease = ctl_as(&stack, "bob", &["allocate", "--name", &name]);
        caddy_config_changed |= stack.caddy_config() != config_before;
        let id = lease["lease_id"].as_str().unwrap().to_owned();
        ctl_as(&stack, "bob", &["release", "--lease", &id]);
    }
    let seconds = started.elapsed().as_secs_f64();

    let churn = Churn {
        socket_error: socket.echo("after").err(),
        stream_flowing: stream.still_flowing(),
        caddy_config_changed,
    };
    eprintln!(
        "{} mode: 100 allocate/release cycles in {seconds:.1}s; {churn:?}; chunks streamed: {}",
        mode.name(),
        stream.chunks()
    );
    // Either way, the tunnel itself still serves new requests.
    stack.assert_serves(&host, "held app", Duration::from_secs(20));
    churn
}

#[test]
fn static_mode_keeps_held_connections_through_100_other_tunnels() {
    let churn = hold_through_churn(RouteMode::Static);
    assert_eq!(churn.socket_error, None, "{churn:?}");
    assert!(churn.stream_flowing, "{churn:?}");
    assert!(!churn.caddy_config_changed, "{churn:?}");
}

/// `routes` mode, the same churn: every lease change reloads Caddy's whole config. What
/// Caddy 2.6 does to connections it proxies when it reloads, recorded here so that a
/// change in Caddy shows up as a failing test: it closes upgraded (WebSocket)
/// connections with code 1001, and lets a streamed response of the old config run on.
#[test]
fn routes_mode_reloads_caddy_and_closes_held_websockets() {
    let churn = hold_through_churn(RouteMode::Routes);
    assert!(churn.caddy_config_changed, "{churn:?}");
    // Caddy sends close code 1001 ("going away") to both ends when it unloads a config.
    assert_eq!(
        churn.socket_error.as_deref(),
        Some("websocket close frame from the proxy, code Some(1001)"),
        "{churn:?}"
    );
    assert!(churn.stream_flowing, "{churn:?}");
}

#[test]
fn static_mode_bob_cannot_bind_alices_socket_while_her_tunnel_is_down() {
    let stack = Stack::with(StackOptions {
        route_mode: RouteMode::Static,
        ..StackOptions::default()
    });
    let alice_app = App::start("alice's app");
    let bob_app = App::start("bob's app");
    let alice = stack.http("alice", alice_app.port(), &["--name", "alice-site"]);
    let host = alice.host();
    stack.assert_serves(&host, "alice's app", Duration::from_secs(20));
    let lease = stack
        .leases("alice")
        .into_iter()
        .find(|l| l["slug"] == "alice-site")
        .unwrap();
    let target = lease["edge_bind_target"].as_str().unwrap().to_owned();
    assert!(
        target.starts_with(&format!("{}/owners/alice/", stack.socket_dir().display())),
        "{target}"
    );
    // Caddy holds the one wildcard route and no route for the lease.
    let routes = stack.routes();
    assert!(routes.contains("mytunnel-static"), "{routes}");
    assert!(
        !routes.contains(lease["lease_id"].as_str().unwrap()),
        "{routes}"
    );

    // Alice's client frozen (so it does not reconnect), her data plane killed.
    alice.signal(Signal::SIGSTOP);
    let forward = alice.data_plane_pid().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(forward), Signal::SIGKILL).unwrap();
    assert!(eventually(Duration::from_secs(10), || stack.not_routed(&host)));

    // Bob binds alice's socket, and the host link itself: sshd refuses both.
    let link = stack
        .socket_dir()
        .join("hosts")
        .join(format!("{}.sock", "alice-site"));
    // A TCP listen on a port of the range is refused too (`PermitListen none`).
    let tcp = format!("127.0.0.1:{}", stack.min_port());
    for path in [target.clone(), link.display().to_string(), tcp] {
        let output = stack
            .ssh_remote_forward("bob", &path, bob_app.port())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "bob bound {path}: {stderr}");
        assert!(
            stderr.contains("remote port forwarding failed"),
            "bob binding {path}: {stderr}"
        );
        for _ in 0..5 {
            let answer = stack.get(&host);
            assert!(
                answer.as_ref().is_none_or(|(_, body)| body != "bob's app"),
                "bob got alice's traffic: {answer:?}"
            );
        }
    }
    // Bob's own tunnel still works, under his own name.
    let bob = stack.http("bob", bob_app.port(), &["--name", "bob-site"]);
    stack.assert_serves(&bob.host(), "bob's app", Duration::from_secs(20));

    // Alice's client wakes up, frees her stale socket and binds it again.
    alice.signal(Signal::SIGCONT);
    stack.assert_serves(&host, "alice's app", Duration::from_secs(40));
    assert!(stack.get(&host).is_none_or(|(_, b)| b != "bob's app"));
    assert_eq!(
        stack.get(&format!("nobody.{BASE_DOMAIN}")).map(|(s, _)| s),
        Some(502),
        "a host with no link"
    );
}

/// `ssh -W` (what `ssh -L` does per connection) to Caddy's admin API on the edge's
/// loopback: refused for tunnel users in both modes, so no tenant can rewrite the routes.
#[test]
fn tunnel_users_cannot_reach_the_edges_loopback_services() {
    for mode in [RouteMode::Routes, RouteMode::Static] {
        let stack = Stack::with(StackOptions {
            route_mode: mode,
            ..StackOptions::default()
        });
        let admin = stack.caddy.admin_socket();
        let mut child = Command::new("ssh")
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "ControlMaster=no",
                "-o",
                "ControlPath=none",
            ])
            .args(
                stack
                    .ssh_options("alice")
                    .iter()
                    .flat_map(|o| ["-o".to_owned(), o.clone()]),
            )
            .arg("-W")
            .arg(admin.to_string())
            .arg("alice@127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET /config/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{}: {stdout}", mode.name());
        assert!(
            !stdout.contains("apps"),
            "{}: alice read Caddy's config: {stdout}",
            mode.name()
        );
        assert!(
            stderr.contains("administratively prohibited"),
            "{}: {stderr}",
            mode.name()
        );
    }
}
