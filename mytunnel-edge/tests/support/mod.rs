//! Support code shared by the component and contract tests: a fake Caddy admin API, a raw
//! admin API client, a tiny upstream HTTP server, a raw HTTP/1.1 request, and a wait for
//! real Caddy's reloads to settle (a real Caddy itself is `mytunnel_test_support`'s).
// test code: a panic is a failed assertion
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod fake_caddy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use mytunnel_core::admin::CaddyAdminAddress;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Raw calls to a Caddy admin API (real or fake), for setting up and inspecting state
/// by hand, beside the backend under test.
#[derive(Debug, Clone)]
pub struct AdminClient {
    client: reqwest::Client,
    base: String,
    /// Real Caddy's log: each `call` first waits for its reloads to settle.
    settle_log: Option<PathBuf>,
}

impl AdminClient {
    /// A client for a TCP admin address.
    pub fn new(admin: &CaddyAdminAddress) -> Self {
        let CaddyAdminAddress::Tcp(addr) = admin else {
            panic!("the tests use TCP admin addresses, not {admin}");
        };
        // A fresh connection per request: Caddy closes the admin connection that carried a
        // reload, asynchronously, so a kept-alive one can die under the next request.
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        AdminClient {
            client,
            base: format!("http://{addr}"),
            settle_log: None,
        }
    }

    /// Makes every `call` wait first until the real Caddy writing `log` has stopped every
    /// admin server it replaced (see [`settle_caddy_reloads`]).
    pub fn settling_on(mut self, log: PathBuf) -> Self {
        self.settle_log = Some(log);
        self
    }

    /// One request, once: the status and the body as JSON (`Null` when empty, a string
    /// when it is not JSON), or the transport error.
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// One request. A request that got no answer at all is sent again (up to 5 times):
    /// real Caddy resets the odd request right after a reload, without running it (see
    /// `fake_caddy`'s module docs), and the set-up calls of a test must not fail on that.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        if let Some(log) = &self.settle_log {
            settle_caddy_reloads(log).await;
        }
        let mut attempt = 1;
        loop {
            match self.try_call(method, path, body).await {
                Ok(answer) => return answer,
                Err(e) if attempt < 5 && !e.is_timeout() => attempt += 1,
                Err(e) => panic!("admin API {} {method} {path}: {e:?}", self.base),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `call` that must answer 200.
    pub async fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, value) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {value}");
        value
    }

    /// The routes of `server` (`Null` when it has no `routes` key).
    pub async fn routes(&self, server: &str) -> Value {
        self.ok(
            "GET",
            &format!("/config/apps/http/servers/{server}/routes"),
            None,
        )
        .await
    }

    /// Replaces the whole config (`POST /load`).
    pub async fn load(&self, config: &Value) {
        self.ok("POST", "/load", Some(config)).await;
    }
}

/// A tiny HTTP server on `127.0.0.1:0` that answers every request with `body`; stops
/// when dropped.
#[derive(Debug)]
pub struct HttpUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HttpUpstream {
    /// Starts it.
    pub async fn start(body: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(move || async move { body });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpUpstream { addr, task }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 request with exactly this `Host` header, on its own connection; the
/// status code and the body (`Connection: close`, so read to the end).
pub async fn raw_http(addr: SocketAddr, method: &str, path: &str, host: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer from {addr} within 10s"))
        .unwrap_or_else(|e| panic!("request to {addr}: {e}"));
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until every admin server a real Caddy replaced on a reload has stopped, per its
/// log (`log` is Caddy's stderr; see [`mytunnel_test_support::reloads_settled`]).
pub async fn settle_caddy_reloads(log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if mytunnel_test_support::reloads_settled(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Caddy's previous admin server did not stop within 10s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
