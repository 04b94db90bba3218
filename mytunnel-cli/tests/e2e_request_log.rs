//! The request log and the inspector, end to end: real sshd, Caddy and OS users (see
//! `e2e_support`), headless Chromium for the inspector page, and a
//! `mytunnel http` whose HTTP proxy sees every exchange. Visitors go through Caddy with the
//! tunnel's host; the app checks what arrives.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod e2e_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use e2e_support::{Client, Stack};
use mytunnel_test_support::LoopbackServer;
use sha2::{Digest, Sha256};

/// 5 MiB.
const UPLOAD_BYTES: usize = 5 * 1024 * 1024;

/// A flag the test raises and the app waits for.
#[derive(Default)]
struct Signal(Mutex<bool>, Condvar);

impl Signal {
    fn raise(&self) {
        *self.0.lock().unwrap() = true;
        self.1.notify_all();
    }

    /// Waits for the flag (10 s at most); whether it was raised.
    fn wait(&self) -> bool {
        let guard = self.0.lock().unwrap();
        let (guard, _) = self
            .1
            .wait_timeout_while(guard, Duration::from_secs(10), |raised| !*raised)
            .unwrap();
        *guard
    }
}

/// A stream that reads `head` first: the request head the app already read, given back
/// to the WebSocket handshake.
struct Replayed {
    head: std::io::Cursor<Vec<u8>>,
    stream: TcpStream,
}

impl Read for Replayed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        self.stream.read(buf)
    }
}

impl Write for Replayed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// The app: `GET /hello` → `hello`; `POST /upload` → the SHA-256 of the body, in hex;
/// `GET /ws` → a WebSocket that echoes each message; `GET /events` → server-sent events,
/// the first at once, the second once `more_events` is raised, then the end.
fn start_app(more_events: Arc<Signal>) -> LoopbackServer {
    start_recording_app(more_events, Arc::default())
}

/// The app, and `POST /hooks` → `{"queued":1}`, each body it received kept in `hooks`.
fn start_recording_app(
    more_events: Arc<Signal>,
    hooks: Arc<Mutex<Vec<Vec<u8>>>>,
) -> LoopbackServer {
    LoopbackServer::start(move |stream, _| serve(stream, &more_events, &hooks)).unwrap()
}

fn serve(stream: TcpStream, more_events: &Signal, hooks: &Mutex<Vec<Vec<u8>>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut head = Vec::new();
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.extend_from_slice(line.as_bytes());
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap();
                }
            }
            if line == "\r\n" {
                break;
            }
        }
        let request_line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap()
            .to_owned();
        let path = request_line.split_whitespace().nth(1).unwrap().to_owned();
        let mut stream = stream.try_clone().unwrap();
        match path.as_str() {
            "/hello" => respond(&mut stream, "200 OK", b"hello"),
            "/hooks" => {
                let mut body = vec![0u8; content_length];
                reader.read_exact(&mut body).unwrap();
                hooks.lock().unwrap().push(body);
                respond(&mut stream, "200 OK", br#"{"queued":1}"#);
            }
            "/upload" => {
                let mut body = vec![0u8; content_length];
                reader.read_exact(&mut body).unwrap();
                let digest = hex(&Sha256::digest(&body));
                respond(&mut stream, "200 OK", digest.as_bytes());
            }
            "/ws" => {
                // The reader may hold bytes past the head; a client waits for the 101.
                assert!(reader.buffer().is_empty());
                let replayed = Replayed {
                    head: std::io::Cursor::new(head),
                    stream,
                };
                let mut socket = tungstenite::accept(replayed).unwrap();
                while let Ok(message) = socket.read() {
                    if message.is_close() {
                        return;
                    }
                    if socket.send(message).is_err() {
                        return;
                    }
                }
                return;
            }
            "/events" => {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\ndata: one\n\n",
                );
                let _ = stream.flush();
                if more_events.wait() {
                    let _ = stream.write_all(b"data: two\n\n");
                }
                return;
            }
            _ => respond(&mut stream, "404 Not Found", b"no such path"),
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One request through Caddy (`Connection: close`): status and body.
fn request(caddy: SocketAddr, host: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(caddy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

/// The request log lines the client printed within `timeout` until `done` says they are
/// enough.
fn log_lines(client: &Client, timeout: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    while !done(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_line(left) {
            Some(line) => lines.push(line),
            None => break,
        }
    }
    lines
}

/// The words of a log line after its time: method, target, status, duration, then the
/// rest.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().skip(1).collect()
}

/// Every kind of exchange gets its line, and what passes through the proxy arrives
/// intact: a GET, a POST of 5 MiB (the app's SHA-256 matches), a WebSocket echo (one
/// line, upgraded, for its whole life) and a server-sent event stream (the first event
/// reaches the visitor before the app ends the stream: nothing is buffered).
#[test]
fn the_request_log_shows_get_post_websocket_and_sse_and_passes_them_intact() {
    let stack = Stack::new();
    let more_events = Arc::new(Signal::default());
    let app = start_app(Arc::clone(&more_events));
    let client = stack.http("bob", app.port(), &[]);
    let host = client.host();
    let caddy = stack.caddy.http_address();

    // GET.
    let (status, body) = request(caddy, &host, "GET", "/hello", b"");
    assert_eq!((status, body.as_slice()), (200, b"hello".as_slice()));

    // POST, 5 MiB.
    let upload: Vec<u8> = (0..UPLOAD_BYTES).map(|i| (i * 7 % 251) as u8).collect();
    let (status, digest) = request(caddy, &host, "POST", "/upload", &upload);
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(digest).unwrap(),
        hex(&Sha256::digest(&upload)),
        "the app got other bytes than were sent"
    );

    // A WebSocket: three messages echoed on one connection.
    let stream = TcpStream::connect(caddy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut socket, response) = tungstenite::client(format!("ws://{host}/ws"), stream).unwrap();
    assert_eq!(response.status(), 101);
    for text in ["one", "two", "three"] {
        socket.send(tungstenite::Message::text(text)).unwrap();
        assert_eq!(socket.read().unwrap().into_text().unwrap().as_str(), text);
    }
    socket.close(None).unwrap();
    while socket.read().is_ok() {}

    // Server-sent events: the first arrives while the app holds the stream open.
    let mut events = TcpStream::connect(caddy).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        events,
        "GET /events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: one") {
        let n = events
            .read(&mut buf)
            .expect("the first event did not arrive");
        assert!(n > 0, "the stream ended before its first event");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&seen).contains("data: two"));
    more_events.raise();
    while !String::from_utf8_lossy(&seen).contains("data: two") {
        let n = events
            .read(&mut buf)
            .expect("the second event did not arrive");
        assert!(n > 0, "the stream ended before its second event");
        seen.extend_from_slice(&buf[..n]);
    }
    // The app ends the stream after two: read to its end (the last chunk), so the
    // exchange ends whole rather than with this visitor going away first.
    while !seen.ends_with(b"\r\n0\r\n\r\n") {
        let n = events.read(&mut buf).expect("the stream did not end");
        assert!(
            n > 0,
            "the connection closed before the stream's last chunk"
        );
        seen.extend_from_slice(&buf[..n]);
    }
    drop(events);

    let lines = log_lines(&client, Duration::from_secs(15), |lines| {
        lines.iter().any(|l| l.contains("/events"))
            && lines.iter().any(|l| l.contains("/ws"))
            && lines.len() >= 4
    });
    // The one line of `target`: its method and status, and how it ends.
    let the_line = |method: &str, target: &str, status: &str, ending: &str| {
        let found: Vec<&String> = lines
            .iter()
            .filter(|l| words(l).get(1) == Some(&target))
            .collect();
        assert_eq!(found.len(), 1, "one line for {target}: {lines:#?}");
        assert_eq!(words(found[0])[..3], [method, target, status], "{lines:#?}");
        assert!(found[0].ends_with(ending), "{lines:#?}");
    };
    the_line("GET", "/hello", "200", "0 B → 5 B");
    the_line("POST", "/upload", "200", "5.2 MB → 64 B");
    // The WebSocket: one exchange for its whole life.
    the_line("GET", "/ws", "101", "upgraded");
    the_line("GET", "/events", "200", "0 B → 22 B");
    // Each line starts with the time of day.
    for line in &lines {
        let time = line.split_whitespace().next().unwrap();
        assert!(
            time.len() == 8 && time.as_bytes()[2] == b':' && time.as_bytes()[5] == b':',
            "{line:?}"
        );
    }
}

/// `--json` prints the opened line and one object per request; `--quiet` prints none;
/// `--raw` carries bytes only, so no request is seen (and the app still answers).
#[test]
fn json_quiet_and_raw_shape_what_the_log_prints() {
    let stack = Stack::new();
    let more_events = Arc::new(Signal::default());
    let app = start_app(more_events);
    let caddy = stack.caddy.http_address();

    let json = stack.spawn_http("bob", app.port(), &["--json"]);
    let opened: serde_json::Value =
        serde_json::from_str(&json.next_line(Duration::from_secs(30)).unwrap()).unwrap();
    assert_eq!(opened["type"], "opened");
    let host = opened["url"]
        .as_str()
        .unwrap()
        .strip_prefix("https://")
        .unwrap()
        .to_owned();
    assert!(opened["lease_id"].as_str().unwrap().starts_with("lease_"));
    let (status, _) = request(caddy, &host, "POST", "/upload", b"abc");
    assert_eq!(status, 200);
    let line: serde_json::Value =
        serde_json::from_str(&json.next_line(Duration::from_secs(15)).unwrap()).unwrap();
    assert_eq!(line["type"], "request");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["target"], "/upload");
    assert_eq!(line["status"], 200);
    assert_eq!(line["request_bytes"], 3);
    assert_eq!(line["response_bytes"], 64);
    assert_eq!(line["upgraded"], false);
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0);

    for flags in [["--quiet"], ["--raw"]] {
        let mut client = stack.http("bob", app.port(), &flags);
        for _ in 0..3 {
            let (status, body) = request(caddy, &client.host(), "GET", "/hello", b"");
            assert_eq!(
                (status, body.as_slice()),
                (200, b"hello".as_slice()),
                "{flags:?}"
            );
        }
        // Everything it printed, once it has ended (stdout closed).
        client.signal(nix::sys::signal::Signal::SIGINT);
        assert!(
            client.wait_exit(Duration::from_secs(15)).is_some(),
            "{flags:?}"
        );
        let rest: Vec<String> =
            std::iter::from_fn(|| client.next_line(Duration::from_secs(5))).collect();
        assert_eq!(
            rest,
            Vec::<String>::new(),
            "{flags:?} printed request lines"
        );
    }
}

/// The inspector of a real tunnel, in headless Chromium: a webhook sent through Caddy and
/// the tunnel appears on the page with its headers and body; Replay makes the app receive
/// it a second time, and the page shows the new exchange as a replay.
#[test]
fn the_inspector_shows_a_request_through_the_tunnel_and_replays_it_to_the_app() {
    let stack = Stack::new();
    let hooks: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let app = start_recording_app(Arc::default(), Arc::clone(&hooks));
    let client = stack.http("bob", app.port(), &["--inspect", "127.0.0.1:0"]);
    let mut page = None;
    assert!(
        e2e_support::eventually(Duration::from_secs(10), || {
            page = client.stderr().lines().find_map(|l| {
                l.strip_prefix("inspector: ")
                    .and_then(|rest| rest.strip_suffix(" (this machine only)"))
                    .map(str::to_owned)
            });
            page.is_some()
        }),
        "no inspector line: {}",
        client.stderr()
    );
    let page = page.unwrap();
    let body = br#"{"action":"opened","number":7,"title":"Add the inspector"}"#;
    let caddy = stack.caddy.http_address();
    let mut stream = TcpStream::connect(caddy).unwrap();
    write!(
        stream,
        "POST /hooks HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nX-GitHub-Event: pull_request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        client.host(),
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(hooks.lock().unwrap().len(), 1);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let wait = Duration::from_secs(15);
        let browser = mytunnel_test_support::Browser::start().await.unwrap();
        browser.goto(&page).await.unwrap();
        let row = browser
            .wait_for_text("#exchange-rows tr", "/hooks", wait)
            .await
            .unwrap();
        let id = row.attr("data-exchange-id").await.unwrap().unwrap();
        row.click().await.unwrap();
        browser
            .wait_for_text("#request-headers", "pull_request", wait)
            .await
            .unwrap();
        browser
            .wait_for_text("#request-body", "Add the inspector", wait)
            .await
            .unwrap();
        browser
            .wait_for_text("#response-body", "queued", wait)
            .await
            .unwrap();
        browser
            .wait_for("#replay", wait)
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        browser
            .wait_for_text("#exchange-rows tr", &format!("replay of #{id}"), wait)
            .await
            .unwrap();
        browser.close().await.unwrap();
    });
    let received = hooks.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "the app did not receive the replay");
    assert_eq!(received[0], body.to_vec());
    assert_eq!(received[1], body.to_vec());
}
