#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use reqwest::header::{HeaderName, HOST, ORIGIN};
use serde_json::Value;

use super::checks::{host_allowed, refusal, Refusal, INSPECTOR_HEADER};
use super::*;
use crate::inspect::{
    CapturedBody, ExchangeId, ExchangeLimits, ExchangeState, Header, NewExchange, RecordedRequest,
    RecordedResponse,
};

/// What the test app received: method, target, headers, body.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A local app on `127.0.0.1:<any port>` that keeps every request it receives and
/// answers `{"ok":true}`.
struct App {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl App {
    async fn start() -> App {
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&received);
        let app = Router::new().fallback(move |request: Request| {
            let kept = Arc::clone(&kept);
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                kept.lock().unwrap().push(Received {
                    method: parts.method.to_string(),
                    target: parts.uri.to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                        .collect(),
                    body: body.to_vec(),
                });
                if parts.uri.path() == "/favicon.ico" {
                    return (
                        StatusCode::NOT_FOUND,
                        [(header::CONTENT_TYPE, "text/plain")],
                        "not found",
                    );
                }
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"ok":true,"queued":1}"#,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        App {
            addr,
            received,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request as the proxy records it, sent to `upstream`.
struct Recorded<'a> {
    method: &'a str,
    target: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: &'a [u8],
}

fn headers(pairs: &[(&str, &str)]) -> Vec<Header> {
    pairs
        .iter()
        .map(|(name, value)| Header {
            name: (*name).to_owned(),
            value: (*value).to_owned(),
        })
        .collect()
}

fn captured(bytes: &[u8], cap: usize) -> CapturedBody {
    let mut body = CapturedBody::default();
    body.push(bytes, cap);
    body
}

/// A response as recorded: status, headers, body.
type Answer<'a> = (u16, &'a [(&'a str, &'a str)], &'a [u8]);

/// Records `request` in `log` as the proxy would (begun, then answered with `response`).
fn record(
    log: &ExchangeLog,
    upstream: SocketAddr,
    request: &Recorded<'_>,
    response: Option<Answer<'_>>,
) -> ExchangeId {
    let cap = log.limits().max_body_bytes;
    let id = log.begin(NewExchange {
        host: "shop.tunnel.example.com".into(),
        request: RecordedRequest {
            method: request.method.into(),
            target: request.target.into(),
            version: "HTTP/1.1".into(),
            headers: headers(request.headers),
            head_bytes_left_out: 0,
            body: captured(request.body, cap),
        },
        upstream: crate::app_link::AppLink::plain(upstream),
        replay_of: None,
    });
    if let Some((status, response_headers, body)) = response {
        log.update(id, |e| {
            e.response = Some(RecordedResponse {
                status,
                headers: headers(response_headers),
                head_bytes_left_out: 0,
                body: captured(body, cap),
            });
            e.duration = Some(Duration::from_micros(2_430));
            e.state = ExchangeState::Complete;
        });
    }
    id
}

const HOOK: Recorded<'static> = Recorded {
    method: "POST",
    target: "/hooks/github?delivery=42",
    headers: &[
        ("host", "shop.tunnel.example.com"),
        ("content-type", "application/json"),
        ("x-github-event", "pull_request"),
        ("x-hub-signature-256", "sha256=3f1c0a9e"),
    ],
    body: br#"{"action":"opened","number":7,"title":"Add the inspector"}"#,
};

fn inspector(log: &ExchangeLog) -> Inspector {
    Inspector::bind("127.0.0.1:0".parse().unwrap(), log.clone()).unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

// ---- Host, Origin and the inspector header ----------------------------------------

#[test]
fn only_the_inspectors_own_host_names_are_allowed() {
    let local: SocketAddr = "127.0.0.1:4040".parse().unwrap();
    for allowed in [
        "127.0.0.1:4040",
        "localhost:4040",
        "LocalHost:4040",
        "[::1]:4040",
    ] {
        assert!(host_allowed(local, allowed), "{allowed}");
    }
    for refused in [
        "evil.example:4040",
        "localhost.evil.example:4040",
        "127.0.0.1:4041",
        "localhost",
        "127.0.0.1",
        "[::1]",
        "192.168.1.5:4040",
        "",
        ":4040",
        "localhost:x",
    ] {
        assert!(!host_allowed(local, refused), "{refused}");
    }
    // Port 80 may be left out.
    let on_80: SocketAddr = "127.0.0.1:80".parse().unwrap();
    assert!(host_allowed(on_80, "localhost"));
    assert!(host_allowed(on_80, "[::1]"));
    // An IPv6 inspector is its own bracketed address.
    let v6: SocketAddr = "[::1]:4040".parse().unwrap();
    assert!(host_allowed(v6, "[::1]:4040"));
    // On every address: any address with the port, still no name.
    let all: SocketAddr = "0.0.0.0:4040".parse().unwrap();
    assert!(host_allowed(all, "192.168.1.5:4040"));
    assert!(host_allowed(all, "[fe80::1]:4040"));
    assert!(!host_allowed(all, "evil.example:4040"));
    assert!(!host_allowed(local, "0.0.0.0:4040"));
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[test]
fn a_changing_request_needs_the_header_and_its_own_origin() {
    let local: SocketAddr = "127.0.0.1:4040".parse().unwrap();
    let check =
        |method: Method, pairs: &[(&str, &str)]| refusal(local, &method, &header_map(pairs));
    assert_eq!(check(Method::GET, &[("host", "localhost:4040")]), None);
    assert_eq!(check(Method::GET, &[]), Some(Refusal::Host));
    assert_eq!(
        check(Method::GET, &[("host", "rebound.evil.example:4040")]),
        Some(Refusal::Host)
    );
    // A GET is read-only: the browser keeps other sites from reading the answer.
    assert_eq!(
        check(
            Method::GET,
            &[
                ("host", "localhost:4040"),
                ("origin", "http://evil.example")
            ]
        ),
        None
    );
    let post = |pairs: &[(&str, &str)]| check(Method::POST, pairs);
    assert_eq!(
        post(&[("host", "localhost:4040"), (INSPECTOR_HEADER, "1")]),
        None
    );
    assert_eq!(
        post(&[
            ("host", "localhost:4040"),
            ("origin", "http://localhost:4040"),
            (INSPECTOR_HEADER, "1")
        ]),
        None
    );
    assert_eq!(
        post(&[("host", "localhost:4040")]),
        Some(Refusal::MissingHeader)
    );
    assert_eq!(
        post(&[("host", "localhost:4040"), (INSPECTOR_HEADER, "0")]),
        Some(Refusal::MissingHeader)
    );
    for origin in [
        "http://evil.example",
        "null",
        "http://127.0.0.1:4040", // another origin than the page's (localhost:4040)
        "https://localhost:4040",
        "http://localhost:4041",
    ] {
        assert_eq!(
            post(&[
                ("host", "localhost:4040"),
                ("origin", origin),
                (INSPECTOR_HEADER, "1")
            ]),
            Some(Refusal::Origin),
            "{origin}"
        );
    }
    assert_eq!(
        post(&[("host", "evil.example:4040"), (INSPECTOR_HEADER, "1")]),
        Some(Refusal::Host)
    );
}

#[tokio::test]
async fn a_rebound_host_is_refused_before_anything_is_read() {
    let log = ExchangeLog::new(ExchangeLimits::DEFAULT);
    record(&log, "127.0.0.1:9".parse().unwrap(), &HOOK, None);
    let inspector = inspector(&log);
    let port = inspector.local_addr().port();
    let client = http();
    for path in ["/", "/api/exchanges", "/api/exchanges/1", "/api/events"] {
        let response = client
            .get(format!(
                "{}{}",
                inspector.url(),
                path.trim_start_matches('/')
            ))
            .header(HOST, format!("rebound.evil.example:{port}"))
            .send()
            .await
            .unwrap();
        let (status, body) = json(response).await;
        assert_eq!(status, 403, "{path}");
        assert_eq!(body["code"], "host_not_allowed", "{path}");
    }
    // The same requests under its own names are answered.
    for host in [
        format!("localhost:{port}"),
        inspector.local_addr().to_string(),
    ] {
        let response = client
            .get(format!("{}api/exchanges", inspector.url()))
            .header(HOST, host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    inspector.close().await;
}

#[tokio::test]
async fn a_replay_without_the_header_or_from_another_origin_is_refused_and_sends_nothing() {
    let app = App::start().await;
    let log = ExchangeLog::new(ExchangeLimits::DEFAULT);
    let id = record(&log, app.addr, &HOOK, Some((200, &[], b"{}")));
    let inspector = inspector(&log);
    let url = format!("{}api/exchanges/{id}/replay", inspector.url());
    let client = http();

    // What a cross-site form can send: no custom header.
    let (status, body) = json(client.post(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("header_required"))
    );
    // What a cross-site fetch would send with the header (after a preflight it fails).
    let from_elsewhere = client
        .post(&url)
        .header(INSPECTOR_HEADER, "1")
        .header(ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    let (status, body) = json(from_elsewhere).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("origin_not_allowed"))
    );
    assert!(
        app.received().is_empty(),
        "a refused replay reached the app"
    );
    assert_eq!(log.recent().len(), 1);

    // The page's own request.
    let own = client
        .post(&url)
        .header(INSPECTOR_HEADER, "1")
        .header(ORIGIN, format!("http://{}", inspector.local_addr()))
        .send()
        .await
        .unwrap();
    let (status, body) = json(own).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["exchange"], id.0 + 1);
    assert_eq!(app.received().len(), 1);
    inspector.close().await;
}

// ---- The API ------------------------------------------------------------------------

async fn get(inspector: &Inspector, path: &str) -> (u16, Value) {
    json(
        http()
            .get(format!("{}{path}", inspector.url()))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn post_replay(inspector: &Inspector, id: &str) -> (u16, Value) {
    json(
        http()
            .post(format!("{}api/exchanges/{id}/replay", inspector.url()))
            .header(INSPECTOR_HEADER, "1")
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_list_and_the_detail_show_what_the_log_holds() {
    let log = ExchangeLog::new(ExchangeLimits {
        max_exchanges: 100,
        max_body_bytes: 9,
        max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
    });
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let first = record(
        &log,
        upstream,
        &Recorded {
            method: "GET",
            target: "/",
            headers: &[("accept", "*/*")],
            body: b"",
        },
        Some((
            200,
            &[("content-type", "image/png")],
            &[0x89, b'P', b'N', b'G', 0xff],
        )),
    );
    // "héllo wörld" cut at 9 bytes ends inside "ö".
    let second = record(
        &log,
        upstream,
        &Recorded {
            method: "POST",
            target: "/x",
            headers: &[],
            body: "héllo wörld".as_bytes(),
        },
        None,
    );
    // Headers past the log's limit are only counted.
    log.update(first, |e| e.request.head_bytes_left_out = 1234);
    let inspector = inspector(&log);

    let (status, list) = get(&inspector, "api/exchanges").await;
    assert_eq!(status, 200);
    let ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [first.0, second.0], "oldest first");
    let one = &list[0];
    assert_eq!(one["method"], "GET");
    assert_eq!(one["target"], "/");
    assert_eq!(one["status"], 200);
    assert_eq!(one["state"], "complete");
    assert_eq!(one["response_bytes"], 5);
    assert!((one["duration_ms"].as_f64().unwrap() - 2.43).abs() < 1e-9);
    assert!(one["replay_of"].is_null());
    let started = one["started_at"].as_str().unwrap();
    assert!(started.ends_with('Z') && started.len() == 24, "{started}");
    assert!(one["started_at_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(list[1]["state"], "open");
    assert!(list[1]["status"].is_null());

    let (status, detail) = get(&inspector, &format!("api/exchanges/{first}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["request"]["headers"][0]["name"], "accept");
    assert_eq!(detail["request"]["headers"][0]["value"], "*/*");
    assert_eq!(detail["request"]["head_bytes_left_out"], 1234);
    assert_eq!(detail["response"]["head_bytes_left_out"], 0);
    assert_eq!(
        detail["request"]["body"],
        serde_json::json!({"encoding": "utf8", "data": "", "size": 0, "shown": 0, "truncated": false})
    );
    assert_eq!(
        detail["response"]["body"],
        serde_json::json!({"encoding": "base64", "data": "iVBOR/8=", "size": 5, "shown": 5, "truncated": false})
    );
    let (_, detail) = get(&inspector, &format!("api/exchanges/{second}")).await;
    assert_eq!(
        detail["request"]["body"],
        serde_json::json!({"encoding": "utf8", "data": "héllo w", "size": 13, "shown": 8, "truncated": true})
    );
    assert!(detail["response"].is_null());

    for missing in ["api/exchanges/99", "api/exchanges/nope", "api/nothing"] {
        let (status, body) = get(&inspector, missing).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{missing}"
        );
    }
    let (status, info) = get(&inspector, "api/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["loopback"], true);
    assert_eq!(info["max_body_bytes"], 9);
    assert_eq!(info["max_head_bytes"], 16 * 1024);
    assert_eq!(info["listen"], inspector.local_addr().to_string());
    inspector.close().await;
}

#[tokio::test]
async fn a_replay_that_cannot_happen_says_why() {
    let log = ExchangeLog::new(ExchangeLimits {
        max_exchanges: 100,
        max_body_bytes: 4,
        max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
    });
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let too_big = record(
        &log,
        upstream,
        &Recorded {
            body: b"more than four",
            ..HOOK
        },
        None,
    );
    let upgraded = record(&log, upstream, &Recorded { body: b"", ..HOOK }, None);
    log.update(upgraded, |e| e.state = ExchangeState::Upgraded);
    let inspector = inspector(&log);
    let (status, body) = post_replay(&inspector, "999").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = post_replay(&inspector, "x").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = post_replay(&inspector, &too_big.to_string()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("body_not_kept"))
    );
    assert!(body["message"].as_str().unwrap().contains("14 bytes"));
    let (status, body) = post_replay(&inspector, &upgraded.to_string()).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("upgrade")));
    assert_eq!(log.recent().len(), 2, "nothing was replayed");
    inspector.close().await;
}

#[tokio::test]
async fn the_page_is_self_contained_and_runs_only_its_own_script() {
    let log = ExchangeLog::new(ExchangeLimits::DEFAULT);
    let inspector = inspector(&log);
    let response = http().get(inspector.url()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    let html = response.text().await.unwrap();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(html.contains(&format!("<script nonce=\"{nonce}\">")));
    assert!(!html.contains("__NONCE__"));
    // Nothing loaded from anywhere: no script, style, image or link by address.
    for outside in ["src=", "href=", "@import", "url(", "<link", "<iframe"] {
        assert!(
            !html.contains(outside),
            "the page loads something: {outside}"
        );
    }
    // A new nonce each time.
    let again = http().get(inspector.url()).send().await.unwrap();
    assert_ne!(
        again.headers()[header::CONTENT_SECURITY_POLICY],
        csp.as_str()
    );
    inspector.close().await;
}

/// Reads `response` (an event stream) until its text contains `needle`, at most 10 s.
async fn read_until(response: &mut reqwest::Response, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {seen:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended before {needle:?}: {seen:?}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn each_change_is_an_event_and_closing_ends_the_streams() {
    let log = ExchangeLog::new(ExchangeLimits::DEFAULT);
    let inspector = inspector(&log);
    let mut events = http()
        .get(format!("{}api/events", inspector.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()[header::CONTENT_TYPE], "text/event-stream");
    let id = record(&log, "127.0.0.1:9".parse().unwrap(), &HOOK, None);
    let mut seen = String::new();
    read_until(&mut events, &mut seen, "\n\n").await;
    assert!(seen.starts_with("event: exchange\ndata: {"), "{seen}");
    let data = seen.lines().nth(1).unwrap().trim_start_matches("data: ");
    let summary: Value = serde_json::from_str(data).unwrap();
    assert_eq!(summary["id"], id.0);
    assert_eq!(summary["state"], "open");
    log.update(id, |e| e.state = ExchangeState::Complete);
    read_until(&mut events, &mut seen, "\"complete\"").await;

    // close() returns although a stream is open, and the stream ends.
    let started = Instant::now();
    inspector.close().await;
    assert!(
        started.elapsed() < CLOSE_GRACE,
        "close waited for the stream"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(_chunk) = events.chunk().await.unwrap() {}
    })
    .await;
    assert!(end.is_ok(), "the event stream did not end");
}

#[tokio::test]
async fn dropping_it_stops_listening_and_ends_the_streams() {
    let log = ExchangeLog::new(ExchangeLimits::DEFAULT);
    let inspector = inspector(&log);
    let addr = inspector.local_addr();
    let mut events = http()
        .get(format!("{}api/events", inspector.url()))
        .send()
        .await
        .unwrap();
    drop(inspector);
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(_chunk) = events.chunk().await.unwrap() {}
    })
    .await;
    assert!(end.is_ok(), "the event stream outlived the inspector");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_stream_that_falls_behind_is_told_to_reload() {
    let log = ExchangeLog::new(ExchangeLimits {
        max_exchanges: 2,
        max_body_bytes: 16,
        max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
    });
    let inspector = inspector(&log);
    let mut events = http()
        .get(format!("{}api/events", inspector.url()))
        .send()
        .await
        .unwrap();
    // Subscribed once the answer's head came; far more changes than the channel holds,
    // at once, before the stream is read.
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for _ in 0..1000 {
        record(&log, upstream, &HOOK, Some((204, &[], b"")));
    }
    let mut seen = String::new();
    read_until(&mut events, &mut seen, "event: reload\n").await;
    inspector.close().await;
}

#[tokio::test]
async fn close_stops_listening_and_a_port_in_use_is_an_error_naming_it() {
    let log = ExchangeLog::new(ExchangeLimits::DEFAULT);
    let inspector = inspector(&log);
    let addr = inspector.local_addr();
    let taken = Inspector::bind(addr, log.clone()).unwrap_err();
    assert!(taken.to_string().contains(&addr.to_string()), "{taken}");
    assert!(addr.ip().is_loopback());
    assert_eq!(Inspector::DEFAULT_ADDR.to_string(), "127.0.0.1:4040");
    inspector.close().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn bind_outside_a_runtime_is_an_error() {
    let log = ExchangeLog::new(ExchangeLimits::DEFAULT);
    let error = Inspector::bind("127.0.0.1:0".parse().unwrap(), log).unwrap_err();
    assert!(error.to_string().contains("tokio runtime"), "{error}");
}

// ---- In a real browser ------------------------------------------------------------------

/// Sends `request` to the app as the tunnel's proxy would, then records it.
async fn through_the_proxy(log: &ExchangeLog, app: &App, request: &Recorded<'_>) -> ExchangeId {
    let mut outgoing = http().request(
        request.method.parse().unwrap(),
        format!("http://{}{}", app.addr, request.target),
    );
    for (name, value) in request.headers {
        outgoing = outgoing.header(*name, *value);
    }
    let answer = outgoing.body(request.body.to_vec()).send().await.unwrap();
    let status = answer.status().as_u16();
    let body: Bytes = answer.bytes().await.unwrap();
    record(
        log,
        app.addr,
        request,
        Some((status, &[("content-type", "application/json")], &body)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_a_request_shows_live_and_replays_to_the_app() {
    use mytunnel_test_support::Browser;
    let started = Instant::now();
    let wait = Duration::from_secs(10);
    let app = App::start().await;
    let log = ExchangeLog::new(ExchangeLimits::DEFAULT);
    let inspector = inspector(&log);
    let browser = Browser::start().await.unwrap();
    browser.goto(&inspector.url()).await.unwrap();
    // `live` once the event stream is open and the list was read: what comes after can
    // only arrive through the stream.
    browser.wait_for_text("#live", "live", wait).await.unwrap();
    browser
        .wait_for_text("#listen", "this machine only", wait)
        .await
        .unwrap();
    browser
        .wait_for_text("#limits", "100 requests, 64 KiB", wait)
        .await
        .unwrap();

    // Recorded after the page loaded: it arrives through the event stream.
    let browse = Recorded {
        method: "GET",
        target: "/products?page=2",
        headers: &[("host", "shop.tunnel.example.com"), ("accept", "text/html")],
        body: b"",
    };
    through_the_proxy(&log, &app, &browse).await;
    let icon = Recorded {
        target: "/favicon.ico",
        headers: &[("host", "shop.tunnel.example.com"), ("accept", "image/*")],
        ..browse
    };
    through_the_proxy(&log, &app, &icon).await;
    let hook = through_the_proxy(&log, &app, &HOOK).await;
    let row = browser
        .wait_for_text(
            &format!("tr[data-exchange-id=\"{hook}\"]"),
            "/hooks/github?delivery=42",
            wait,
        )
        .await
        .unwrap();
    let text = row.text().await.unwrap();
    assert!(text.contains("POST") && text.contains("200"), "{text}");

    row.click().await.unwrap();
    browser
        .wait_for_text("#request-headers", "x-github-event", wait)
        .await
        .unwrap();
    let headers = browser.wait_for("#request-headers", wait).await.unwrap();
    assert!(headers.text().await.unwrap().contains("pull_request"));
    let body = browser
        .wait_for_text("#request-body", "Add the inspector", wait)
        .await
        .unwrap();
    assert!(body.text().await.unwrap().contains("\"number\": 7"));
    browser
        .wait_for_text("#response-body", "\"queued\": 1", wait)
        .await
        .unwrap();

    // Replay: the app receives the same request a second time, and the page shows it.
    let before = app.received().len();
    browser
        .wait_for("#replay", wait)
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let replay_row = browser
        .wait_for_text("#exchange-rows tr", &format!("replay of #{hook}"), wait)
        .await
        .unwrap();
    let received = app.received();
    assert_eq!(received.len(), before + 1);
    let (original, again) = (&received[before - 1], &received[before]);
    assert_eq!(again.method, "POST");
    assert_eq!(again.target, "/hooks/github?delivery=42");
    assert_eq!(again.body, HOOK.body);
    assert_eq!(again.body, original.body);
    assert!(again.headers.contains(&(
        "x-hub-signature-256".to_owned(),
        "sha256=3f1c0a9e".to_owned()
    )));
    let new_id: u64 = replay_row
        .attr("data-exchange-id")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(new_id, hook.0 + 1);
    browser
        .wait_for_text("#detail-title", &format!("#{new_id} POST"), wait)
        .await
        .unwrap();
    browser
        .wait_for_text("#response-status", "200", wait)
        .await
        .unwrap();
    if let Some(path) = std::env::var_os("MYTUNNEL_SCREENSHOT") {
        browser
            .screenshot(std::path::Path::new(&path))
            .await
            .unwrap();
    }

    // A hostile visitor's request is shown as text and runs nothing.
    let hostile = Recorded {
        method: "POST",
        target: "/<script>window.pwned=1;alert(1)</script>",
        headers: &[("x-evil", "<img src=x onerror=\"window.pwned=2;alert(2)\">")],
        body: b"<img id=injected src=x onerror=\"window.pwned=3;alert(3)\"><script>window.pwned=4</script>",
    };
    let evil = record(
        &log,
        app.addr,
        &hostile,
        Some((
            200,
            &[("content-type", "text/html")],
            b"<b id=bold>hi</b><img src=x onerror=alert(5)>",
        )),
    );
    let evil_row = browser
        .wait_for_text(
            &format!("tr[data-exchange-id=\"{evil}\"]"),
            "<script>window.pwned=1;alert(1)</script>",
            wait,
        )
        .await
        .unwrap();
    evil_row.click().await.unwrap();
    let shown = browser
        .wait_for_text("#request-body", "<img id=injected", wait)
        .await
        .unwrap();
    assert_eq!(
        shown.text().await.unwrap().as_bytes(),
        hostile.body,
        "the body is shown as it was sent"
    );
    browser
        .wait_for_text("#request-headers", "onerror=\"window.pwned=2", wait)
        .await
        .unwrap();
    browser
        .wait_for_text("#response-body", "<b id=bold>", wait)
        .await
        .unwrap();
    let injected = browser
        .run(
            "return [window.pwned === undefined, document.querySelectorAll('img, #injected, #bold, b').length, document.scripts.length];",
        )
        .await
        .unwrap();
    assert_eq!(
        injected,
        serde_json::json!([true, 0, 1]),
        "markup from a request ran"
    );
    assert!(
        browser.client().get_alert_text().await.is_err(),
        "an alert is open"
    );

    browser.close().await.unwrap();
    inspector.close().await;
    eprintln!("the browser test took {:?}", started.elapsed());
}
