//! Unit tests of the HTTP proxy: requests, bodies, upgrades, failures, the log and the
//! request events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::events::{EVENT_BATCH_DELAY, EVENT_BATCH_MAX};
use super::*;
use crate::inspect::{ExchangeId, ExchangeLimits, ExchangeState, ReplayError, RequestSummary};
use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough for anything these tests do; a hang fails instead of blocking.
const PATIENCE: Duration = Duration::from_secs(10);

type AppBody = BoxBody<Bytes, hyper::Error>;

fn text(text: impl Into<Bytes>) -> AppBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An app served by hyper on `127.0.0.1:<ephemeral>`: its address, and how many
/// connections it accepted.
struct App {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn hyper_app<F, Fut>(handler: F) -> App
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<AppBody>> + Send + 'static,
{
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let answer = handler(request);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    App { addr, connections }
}

/// An app that answers every request with `hello`.
async fn hello_app() -> App {
    hyper_app(|_| async { Response::new(text("hello")) }).await
}

/// A loopback address nothing listens on.
async fn nothing_listens() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    listener.local_addr().unwrap()
}

async fn proxy_to(
    upstream: SocketAddr,
    log: Option<ExchangeLog>,
) -> (TunnelProxy, broadcast::Receiver<TunnelEvent>) {
    proxy_with(AppLink::plain(upstream), log).await
}

async fn proxy_with(
    app: Arc<AppLink>,
    log: Option<ExchangeLog>,
) -> (TunnelProxy, broadcast::Receiver<TunnelEvent>) {
    let (events, received) = broadcast::channel(64);
    let proxy = TunnelProxy::start(ProxySettings {
        app,
        host: "demo.example.com".into(),
        log,
        events,
    })
    .await
    .unwrap();
    (proxy, received)
}

/// A hyper client on a new connection to the proxy.
async fn visitor(proxy: &TunnelProxy) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn get(target: &str) -> Request<Full<Bytes>> {
    Request::get(target)
        .header("host", "demo.example.com")
        .body(Full::default())
        .unwrap()
}

async fn body_of(response: Response<Incoming>) -> Bytes {
    tokio::time::timeout(PATIENCE, response.into_body().collect())
        .await
        .expect("the body never ended")
        .unwrap()
        .to_bytes()
}

/// The next request summary the proxy reports.
async fn next_request(events: &mut broadcast::Receiver<TunnelEvent>) -> RequestSummary {
    match tokio::time::timeout(PATIENCE, events.recv()).await {
        Ok(Ok(TunnelEvent::Request(summary))) => summary,
        other => panic!("no request event: {other:?}"),
    }
}

/// Reads one request or response head (up to the blank line) off a raw stream.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("no head came")
            .unwrap();
        assert_eq!(read, 1, "closed within a head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Reads until `wanted` has arrived (or panics on end of stream or timeout).
async fn read_until(stream: &mut TcpStream, wanted: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    while !seen.windows(wanted.len()).any(|w| w == wanted) {
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("it never came")
            .unwrap();
        assert!(read > 0, "closed before {wanted:?}: {seen:?}");
        seen.extend_from_slice(&chunk[..read]);
    }
    seen
}

/// A raw TCP app that runs `each` on every connection.
async fn raw_app<F, Fut>(each: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(each(stream));
        }
    });
    addr
}

#[tokio::test]
async fn a_get_reaches_the_app_with_its_headers_and_is_reported() {
    let app = hyper_app(|request: Request<Incoming>| async move {
        let seen = format!(
            "{} {} host={} xff={} probe={}",
            request.method(),
            request.uri(),
            request.headers()["host"].to_str().unwrap(),
            request.headers()["x-forwarded-for"].to_str().unwrap(),
            request.headers()["x-probe"].to_str().unwrap(),
        );
        Response::builder()
            .header("x-app", "yes")
            .body(text(seen))
            .unwrap()
    })
    .await;
    let (proxy, mut events) = proxy_to(app.addr, None).await;
    let mut visitor = visitor(&proxy).await;
    let mut request = get("/hello?x=1");
    request
        .headers_mut()
        .insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
    request
        .headers_mut()
        .insert("x-probe", HeaderValue::from_static("yes"));
    let response = visitor.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-app"], "yes");
    let body = body_of(response).await;
    assert_eq!(
        body,
        "GET /hello?x=1 host=demo.example.com xff=203.0.113.9 probe=yes"
    );

    let summary = next_request(&mut events).await;
    assert_eq!(summary.method, "GET");
    assert_eq!(summary.target, "/hello?x=1");
    assert_eq!(summary.host, "demo.example.com");
    assert_eq!(summary.status, Some(200));
    assert_eq!(summary.request_bytes, 0);
    assert_eq!(summary.response_bytes, body.len() as u64);
    assert_eq!(summary.error, None);
    assert!(!summary.upgraded);
    assert_eq!(summary.exchange, ExchangeId(1));
}

#[tokio::test]
async fn a_5_mib_body_streams_through_whole_and_the_log_keeps_its_first_bytes() {
    // The app echoes the body as it reads it: both directions stream at once.
    let app = hyper_app(|request: Request<Incoming>| async move {
        Response::new(request.into_body().boxed())
    })
    .await;
    let log = ExchangeLog::new(ExchangeLimits {
        max_exchanges: 10,
        max_body_bytes: 1000,
        max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
    });
    let (proxy, mut events) = proxy_to(app.addr, Some(log.clone())).await;
    let sent: Bytes = (0..5 * 1024 * 1024u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut visitor = visitor(&proxy).await;
    let request = Request::post("/upload")
        .header("host", "demo.example.com")
        .body(Full::new(sent.clone()))
        .unwrap();
    let response = visitor.send_request(request).await.unwrap();
    let received = body_of(response).await;
    assert!(received == sent, "the body changed on the way");

    let summary = next_request(&mut events).await;
    assert_eq!(summary.request_bytes, sent.len() as u64);
    assert_eq!(summary.response_bytes, sent.len() as u64);
    let exchange = log.get(summary.exchange).unwrap();
    assert_eq!(exchange.state, ExchangeState::Complete);
    assert_eq!(exchange.request.body.size, sent.len() as u64);
    assert_eq!(exchange.request.body.bytes, &sent[..1000]);
    let response = exchange.response.unwrap();
    assert_eq!(response.body.size, sent.len() as u64);
    assert_eq!(response.body.bytes, &sent[..1000]);
}

#[tokio::test]
async fn requests_on_one_visitor_connection_share_one_app_connection() {
    let app = hello_app().await;
    let (proxy, mut events) = proxy_to(app.addr, None).await;
    let mut visitor = visitor(&proxy).await;
    for target in ["/one", "/two"] {
        let response = visitor.send_request(get(target)).await.unwrap();
        assert_eq!(body_of(response).await, "hello");
        let summary = next_request(&mut events).await;
        assert_eq!(summary.target, target);
        assert_eq!(summary.status, Some(200));
    }
    assert_eq!(app.connections.load(Ordering::SeqCst), 1);
    assert!(events.try_recv().is_err(), "one event per request");
}

#[tokio::test]
async fn an_app_that_closed_its_idle_connection_gets_the_next_request_on_a_new_one() {
    // Answers one request per connection, then closes it (saying nothing before).
    let (closed_tx, mut closed) = mpsc::unbounded_channel::<()>();
    let app = raw_app(move |mut stream| {
        let closed_tx = closed_tx.clone();
        async move {
            read_head(&mut stream).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            drop(stream);
            let _ = closed_tx.send(());
        }
    })
    .await;
    let (proxy, mut events) = proxy_to(app, None).await;
    let mut visitor = visitor(&proxy).await;
    for _ in 0..3 {
        let response = visitor.send_request(get("/")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(body_of(response).await, "ok");
        assert_eq!(next_request(&mut events).await.error, None);
        // The app has closed the proxy's connection before the next request.
        tokio::time::timeout(PATIENCE, closed.recv())
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn an_upgrade_is_one_exchange_and_its_bytes_pass_both_ways() {
    let (app_closed_tx, app_closed) = oneshot::channel::<()>();
    let app_closed_tx = Arc::new(Mutex::new(Some(app_closed_tx)));
    let app = raw_app(move |mut stream| {
        let app_closed_tx = Arc::clone(&app_closed_tx);
        async move {
            let head = read_head(&mut stream).await;
            assert!(head.to_ascii_lowercase().contains("upgrade: websocket"));
            stream
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                      connection: Upgrade\r\n\r\n",
                )
                .await
                .unwrap();
            let (mut read, mut write) = stream.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
            if let Some(tx) = app_closed_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    })
    .await;
    let (proxy, mut events) = proxy_to(app, None).await;
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: demo.example.com\r\nconnection: Upgrade\r\n\
              upgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"));

    let summary = next_request(&mut events).await;
    assert!(summary.upgraded);
    assert_eq!(summary.status, Some(101));
    assert_eq!(summary.target, "/ws");
    assert!(summary.to_string().ends_with(" upgraded"), "{summary}");

    for message in [&b"ping"[..], b"and pong, twice"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    assert!(
        events.try_recv().is_err(),
        "one exchange for the whole upgrade"
    );

    // Closing the proxy ends the upgraded connection at both ends.
    proxy.close().await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    tokio::time::timeout(PATIENCE, app_closed)
        .await
        .expect("the app's end stayed open")
        .unwrap();
}

#[tokio::test]
async fn the_first_server_sent_event_arrives_before_the_stream_ends() {
    let (more_tx, more) = oneshot::channel::<()>();
    let more = Arc::new(Mutex::new(Some(more)));
    let app = raw_app(move |mut stream| {
        let more = more.lock().unwrap().take();
        async move {
            read_head(&mut stream).await;
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                      transfer-encoding: chunked\r\n\r\nb\r\ndata: one\n\n\r\n",
                )
                .await
                .unwrap();
            if let Some(more) = more {
                let _ = more.await;
            }
            stream
                .write_all(b"b\r\ndata: two\n\n\r\n0\r\n\r\n")
                .await
                .unwrap();
            let _ = read_head(&mut stream).await;
        }
    })
    .await;
    let (proxy, mut events) = proxy_to(app, None).await;
    let mut visitor = visitor(&proxy).await;
    let response = visitor.send_request(get("/events")).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let first = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .expect("the first event is held back")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: one\n\n");
    assert!(events.try_recv().is_err(), "reported before its end");

    more_tx.send(()).unwrap();
    let rest = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "data: two\n\n");
    let summary = next_request(&mut events).await;
    assert_eq!(summary.response_bytes, 22);
    assert_eq!(summary.error, None);
}

#[tokio::test]
async fn an_https_app_gets_tls_and_the_host_it_listens_on() {
    use crate::app_link::tests::{echo_app, issued_for_localhost};
    use crate::upstream::{AppCertificates, HostHeader};
    let (ca, config) = issued_for_localhost();
    let app = echo_app("127.0.0.1:0", Some(config)).await;
    let link = AppLink::new(
        format!("https://localhost:{}", app.port()).parse().unwrap(),
        &AppCertificates::VerifyWithRoots(vec![ca]),
        &HostHeader::Rewrite,
    )
    .unwrap();
    let (proxy, _events) = proxy_with(Arc::new(link), None).await;
    let mut visitor = visitor(&proxy).await;
    for _ in 0..2 {
        let response = visitor.send_request(get("/")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            body_of(response).await,
            format!(
                "host=localhost:{} xfh=demo.example.com xfp=https",
                app.port()
            )
        );
    }
}

#[tokio::test]
async fn an_app_that_is_down_gets_the_visitor_a_502_saying_why() {
    let down = nothing_listens().await;
    let (proxy, mut events) = proxy_to(down, None).await;
    let mut visitor = visitor(&proxy).await;
    let response = visitor.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), 502);
    let body = body_of(response).await;
    let said = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        said.starts_with(&format!(
            "mytunnel: nothing answers on http://{down}/ ({down}: "
        )),
        "{said}"
    );
    let summary = next_request(&mut events).await;
    assert_eq!(summary.status, Some(502));
    let error = summary.error.unwrap();
    assert!(error.starts_with("nothing answers on"), "{error}");
    assert_eq!(format!("mytunnel: {error}\n"), said);
}

#[tokio::test]
async fn an_app_that_closes_before_answering_gets_the_visitor_a_502() {
    let app = raw_app(|mut stream| async move {
        read_head(&mut stream).await;
    })
    .await;
    let log = ExchangeLog::new(ExchangeLimits::default());
    let (proxy, mut events) = proxy_to(app, Some(log.clone())).await;
    let mut visitor = visitor(&proxy).await;
    let response = visitor.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        body_of(response).await,
        "mytunnel: the app closed the connection before answering\n"
    );
    let summary = next_request(&mut events).await;
    assert_eq!(
        summary.error.as_deref(),
        Some("the app closed the connection before answering")
    );
    let exchange = log.get(summary.exchange).unwrap();
    assert_eq!(
        exchange.state,
        ExchangeState::Failed {
            reason: "the app closed the connection before answering".into()
        }
    );
    assert_eq!(exchange.response.unwrap().status, 502);
}

/// Sends `bytes` as a visitor and reads what comes back until the proxy closes.
async fn answer_to(proxy: &TunnelProxy, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the proxy neither answered nor closed");
    assert!(read.is_ok() || !answer.is_empty(), "{read:?}");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_request_that_cannot_be_read_is_answered_and_reported() {
    let app = hello_app().await;
    let (proxy, mut events) = proxy_to(app.addr, None).await;

    let answer = answer_to(
        &proxy,
        b"GET / HTTP/1.1\r\nhost: demo.example.com\r\nno colon here\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    let summary = next_request(&mut events).await;
    assert_eq!(
        (summary.method.as_str(), summary.target.as_str()),
        ("-", "-")
    );
    assert_eq!(summary.status, None);
    let error = summary.error.unwrap();
    assert!(
        error.starts_with("the request could not be read: "),
        "{error}"
    );

    // Headers past hyper's buffer (~400 KiB) get 431.
    let mut huge = b"GET / HTTP/1.1\r\nhost: demo.example.com\r\nx-big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 500 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let answer = answer_to(&proxy, &huge).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    let error = next_request(&mut events).await.error.unwrap();
    assert!(error.contains("too large"), "{error}");
    assert_eq!(
        app.connections.load(Ordering::SeqCst),
        0,
        "the app saw nothing"
    );
}

#[tokio::test]
async fn a_visitor_that_goes_away_mid_response_is_reported() {
    let app = raw_app(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .await;
        // Then nothing more until the proxy closes this connection.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    })
    .await;
    let (proxy, mut events) = proxy_to(app, None).await;
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: demo.example.com\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut stream, b"first").await;
    drop(stream);
    let summary = next_request(&mut events).await;
    assert_eq!(summary.status, Some(200));
    assert_eq!(summary.response_bytes, 5);
    assert_eq!(
        summary.error.as_deref(),
        Some("the visitor went away before the response ended")
    );
}

#[tokio::test]
async fn a_visitor_that_goes_away_before_the_answer_is_reported() {
    let (asked_tx, mut asked) = mpsc::unbounded_channel::<()>();
    let app = raw_app(move |mut stream| {
        let asked_tx = asked_tx.clone();
        async move {
            read_head(&mut stream).await;
            let _ = asked_tx.send(());
            // Never answers; ends when the proxy closes this connection.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }
    })
    .await;
    let (proxy, mut events) = proxy_to(app, None).await;
    let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    stream
        .write_all(b"GET /wait HTTP/1.1\r\nhost: demo.example.com\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, asked.recv())
        .await
        .unwrap()
        .unwrap();
    drop(stream);
    let summary = next_request(&mut events).await;
    assert_eq!(summary.target, "/wait");
    assert_eq!(summary.status, None);
    assert_eq!(
        summary.error.as_deref(),
        Some("the visitor went away before the app answered")
    );
}

#[tokio::test]
async fn closing_ends_open_connections_and_the_listener() {
    let app = hello_app().await;
    let (proxy, mut events) = proxy_to(app.addr, None).await;
    let mut held = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nhost: demo.example.com\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut held, b"hello").await;
    next_request(&mut events).await;
    // And one that sent nothing yet.
    let mut idle = TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();

    let port = proxy.port();
    proxy.close().await;
    for stream in [&mut held, &mut idle] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
            .await
            .expect("a connection stayed open");
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "the connection stayed open: {read:?}"
        );
    }
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
}

#[tokio::test]
async fn the_log_keeps_headers_and_the_first_bytes_of_each_body() {
    let app = hyper_app(|request: Request<Incoming>| async move {
        let _ = request.into_body().collect().await;
        Response::builder()
            .status(201)
            .header("x-app", "made")
            .body(text("greetings"))
            .unwrap()
    })
    .await;
    let log = ExchangeLog::new(ExchangeLimits {
        max_exchanges: 10,
        max_body_bytes: 5,
        max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
    });
    let (proxy, mut events) = proxy_to(app.addr, Some(log.clone())).await;
    let mut visitor = visitor(&proxy).await;
    let request = Request::post("/hooks?x=1")
        .header("host", "demo.example.com")
        .header("x-probe", "yes")
        .body(Full::new(Bytes::from_static(b"hello world")))
        .unwrap();
    let response = visitor.send_request(request).await.unwrap();
    assert_eq!(body_of(response).await, "greetings");
    let summary = next_request(&mut events).await;

    let recent = log.recent();
    assert_eq!(recent.len(), 1);
    let exchange = &recent[0];
    assert_eq!(exchange.id, summary.exchange);
    assert_eq!(exchange.summary(), summary);
    assert_eq!(exchange.host, "demo.example.com");
    assert_eq!(exchange.upstream.answered(), Some(app.addr));
    assert_eq!(exchange.request.method, "POST");
    assert_eq!(exchange.request.target, "/hooks?x=1");
    assert_eq!(exchange.request.version, "HTTP/1.1");
    assert!(exchange
        .request
        .headers
        .iter()
        .any(|h| h.name == "x-probe" && h.value == "yes"));
    assert_eq!(exchange.request.body.bytes, b"hello");
    assert_eq!(exchange.request.body.size, 11);
    let response = exchange.response.as_ref().unwrap();
    assert_eq!(response.status, 201);
    assert!(response
        .headers
        .iter()
        .any(|h| h.name == "x-app" && h.value == "made"));
    assert_eq!(response.body.bytes, b"greet");
    assert_eq!(response.body.size, 9);
    assert_eq!(exchange.state, ExchangeState::Complete);
    assert!(exchange.duration.is_some());
}

fn summary(n: u64) -> RequestSummary {
    RequestSummary {
        exchange: ExchangeId(n),
        host: "demo.example.com".into(),
        started_at: SystemTime::UNIX_EPOCH,
        method: "GET".into(),
        target: format!("/{n}"),
        status: Some(200),
        duration: Duration::ZERO,
        request_bytes: 0,
        response_bytes: 0,
        upgraded: false,
        error: None,
        replay_of: None,
    }
}

fn received(events: &mut broadcast::Receiver<TunnelEvent>) -> Vec<u64> {
    let mut ids = Vec::new();
    while let Ok(TunnelEvent::Request(summary)) = events.try_recv() {
        ids.push(summary.exchange.0);
    }
    ids
}

#[tokio::test(start_paused = true)]
async fn request_events_go_out_in_order_a_moment_later_or_when_a_batch_is_full() {
    let (sender, mut events) = broadcast::channel(64);
    let batched = Arc::new(RequestEvents::new(sender));
    let sending = tokio::spawn(send_request_events(Arc::clone(&batched)));
    for n in 1..=3 {
        batched.push(summary(n));
    }
    // Queued: no one was woken for them yet.
    tokio::task::yield_now().await;
    assert_eq!(received(&mut events), Vec::<u64>::new());
    tokio::time::sleep(EVENT_BATCH_DELAY + Duration::from_millis(1)).await;
    assert_eq!(received(&mut events), [1, 2, 3]);
    // A full batch goes at once, by the request that filled it.
    let many: Vec<u64> = (10..10 + EVENT_BATCH_MAX as u64).collect();
    for n in &many {
        batched.push(summary(*n));
    }
    assert_eq!(received(&mut events), many);
    // And one alone after that still arrives.
    batched.push(summary(99));
    tokio::time::sleep(EVENT_BATCH_DELAY * 2).await;
    assert_eq!(received(&mut events), [99]);
    sending.abort();
}

#[tokio::test]
async fn long_heads_pass_whole_and_the_log_keeps_what_its_limit_allows() {
    let (counts_tx, mut counts) = mpsc::unbounded_channel::<usize>();
    let app = hyper_app(move |request: Request<Incoming>| {
        let counts_tx = counts_tx.clone();
        async move {
            let fill = request
                .headers()
                .keys()
                .filter(|k| k.as_str().starts_with("x-fill-"))
                .count();
            let _ = counts_tx.send(fill);
            let mut response = Response::builder();
            for i in 0..fill {
                response = response.header(format!("x-back-{i}"), "b".repeat(1000));
            }
            response.body(text("ok")).unwrap()
        }
    })
    .await;
    let limits = ExchangeLimits {
        max_exchanges: 10,
        max_body_bytes: 64,
        max_head_bytes: 4096,
    };
    let log = ExchangeLog::new(limits);
    let (proxy, mut events) = proxy_to(app.addr, Some(log.clone())).await;
    let mut visitor = visitor(&proxy).await;
    let mut request =
        Request::get(format!("/{}", "p".repeat(1000))).header("host", "demo.example.com");
    for i in 0..30 {
        request = request.header(format!("x-fill-{i}"), "f".repeat(1000));
    }
    let response = visitor
        .send_request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    // Both heads pass whole: the log's limit is the log's alone.
    assert_eq!(counts.recv().await, Some(30));
    let back = response
        .headers()
        .keys()
        .filter(|k| k.as_str().starts_with("x-back-"))
        .count();
    assert_eq!(back, 30);
    assert_eq!(body_of(response).await, "ok");
    next_request(&mut events).await;

    let exchange = log.recent().pop().unwrap();
    let cost = |headers: &[crate::inspect::Header]| -> usize {
        headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + crate::inspect::HEADER_BOOKKEEPING)
            .sum()
    };
    let request = &exchange.request;
    assert_eq!(request.target.len(), 1001, "a target that fits is whole");
    let kept = request.target.len() + cost(&request.headers);
    assert!(kept <= 4096, "{kept} bytes of the request head kept");
    // The kept headers are the first ones, in order; the rest is counted.
    assert_eq!(request.headers[0].name, "host");
    assert_eq!(request.headers[1].name, "x-fill-0");
    let sent: u64 = 1001 + 4 + 16 + 30 * (8 + 1000);
    let kept_bytes: usize = request
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len())
        .sum();
    assert!(request.head_bytes_left_out > 0);
    assert!(request.head_bytes_left_out + (1001 + kept_bytes) as u64 >= sent);
    let response = exchange.response.as_ref().unwrap();
    assert!(cost(&response.headers) <= 4096);
    assert!(response.head_bytes_left_out > 25 * 1000);

    // What was not kept cannot be sent again as it was.
    let refused = log.replay(exchange.id).await.unwrap_err();
    assert_eq!(refused.code(), "head_not_kept", "{refused}");
}

#[tokio::test]
async fn a_recorded_post_replays_to_the_app_and_a_truncated_one_does_not() {
    let (bodies_tx, mut bodies) = mpsc::unbounded_channel::<Bytes>();
    let app = hyper_app(move |request: Request<Incoming>| {
        let bodies_tx = bodies_tx.clone();
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            bodies_tx.send(body).unwrap();
            Response::new(text("taken"))
        }
    })
    .await;
    let log = ExchangeLog::new(ExchangeLimits {
        max_exchanges: 10,
        max_body_bytes: 16,
        max_head_bytes: ExchangeLimits::DEFAULT.max_head_bytes,
    });
    let (proxy, mut events) = proxy_to(app.addr, Some(log.clone())).await;
    let mut visitor = visitor(&proxy).await;
    let post = |body: &'static [u8]| {
        Request::post("/hooks")
            .header("host", "demo.example.com")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    };
    let response = visitor.send_request(post(b"{\"n\":1}")).await.unwrap();
    assert_eq!(body_of(response).await, "taken");
    let original = next_request(&mut events).await.exchange;
    assert_eq!(bodies.recv().await.unwrap(), "{\"n\":1}");

    let replayed = log.replay(original).await.unwrap();
    assert_eq!(
        bodies.recv().await.unwrap(),
        "{\"n\":1}",
        "the app got it again"
    );
    let replay = log.get(replayed).unwrap();
    assert_ne!(replayed, original);
    assert_eq!(replay.replay_of, Some(original));
    assert_eq!(replay.state, ExchangeState::Complete);
    assert_eq!(replay.response.unwrap().body.bytes, b"taken");

    let response = visitor
        .send_request(post(b"a body longer than sixteen bytes"))
        .await
        .unwrap();
    assert_eq!(body_of(response).await, "taken");
    let truncated = next_request(&mut events).await.exchange;
    assert_eq!(
        log.replay(truncated).await,
        Err(ReplayError::BodyNotKept {
            id: truncated,
            size: 32,
            kept: 16
        })
    );
}
