//! A fake Caddy 2.6.2 admin API, in-process, on `127.0.0.1:0`.
//!
//! It does not route traffic: it only keeps the config JSON and answers the admin API the
//! way Caddy 2.6.2 does, as measured against `/usr/bin/caddy` (Debian 12) and checked by
//! `tests/caddy_contract.rs`, which runs the same assertions against both. The config
//! access is a port of Caddy's `unsyncedConfigAccess` / `changeConfig` /
//! `indexConfigObjects` (caddy/admin.go, v2.6.2), so the fake and Caddy agree on
//! - `GET /config/<path>`: 200 with the value (`null` for a missing key), 400
//!   `invalid traversal path at: …` when the path crosses a missing object;
//! - `POST` (append to an array, set anything else), `PUT` (insert into an array at an
//!   index, create a missing key, `key already exists` otherwise), `PATCH` (replace),
//!   `DELETE`, with Caddy's 500 messages (`array index out of bounds`, …);
//! - `/id/<id>[/<path>]` resolved through an index rebuilt after every change while
//!   walking the config in order, so with duplicate `@id`s the last one in array order is
//!   the one addressed; 404 `unknown object ID '<id>'`;
//! - a change that makes a server's `routes` anything but a list (of objects) fails to
//!   "load" with Caddy's exact 500 message and is rolled back; an unchanged config
//!   answers 200 without a reload;
//! - `POST /load` replaces the whole config (400 `loading config: …` on failure);
//! - a `Host` header other than `127.0.0.1:<port>`, `localhost:<port>` or `[::1]:<port>`
//!   gets 403 `host not allowed: <host>`, whatever the path;
//! - mutations need a JSON `Content-Type` (400 `unacceptable content-type`).
//!
//! Where it differs from Caddy (none of it matters to `mytunnel_edge::caddy`):
//! - Nothing but the type of `routes` is validated: Caddy also provisions every module
//!   and refuses unknown fields, unknown handlers or bad listen addresses (500).
//! - The `admin` section of a loaded config is kept but not acted on: the fake stays on
//!   its port (Caddy moves its admin endpoint, e.g. to :2019 when `admin` is missing).
//! - No ETag trailer, no `If-Match`, no `/stop`, `/adapt`, `/pki`, `/reverse_proxy`, no
//!   `Origin` enforcement; a JSON body that does not parse gets serde_json's message
//!   after Caddy's `decoding request body: ` prefix, not Go's.
//! - With duplicate `@id`s in two different objects (not one array), Caddy's winner
//!   depends on Go's random map order; the fake's on key order.
//! - Real Caddy binds every listener with `SO_REUSEPORT`: a second process can bind its
//!   ports and take a share of the connections. The fake's listener is an ordinary one.
//!
//! Reloads. Caddy 2.6.2 replaces its admin server on every reload (a change that alters the
//! config, even one that then fails to load), and the old one shuts down asynchronously:
//! - the connection that carried a successful reload is closed, usually after an answer
//!   with `Connection: close` (199 of 200 times); the fake always sends it and closes;
//! - until the old server has stopped, a request, even on a fresh connection, is now and
//!   then reset or closed without an answer, and not run (measured: 17 of 300 requests
//!   right after a failed reload, 1 of 200 `POST /load`s right after another, and
//!   `IncompleteMessage` / `ConnectionReset` after successful changes on a busy machine;
//!   none once Caddy had logged "stopped previous server"). The fake answers every
//!   request by default; with [`FakeCaddy::set_drop_next_request_after_reload`] it takes
//!   the worst timing every time: the first request after each reload is reset unanswered
//!   and not applied.
//!
//! "Down" ([`FakeCaddy::set_down`]) keeps the port bound (so nothing else can take it) but
//! resets every new connection at once (`SO_LINGER` 0) and fails every read on a kept-alive
//! one: a client sees a transport error and no HTTP status, as with a Caddy that is not
//! running. Answering 503 instead would be an HTTP answer real Caddy never gives.

// test code: a panic is a failed assertion
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use mytunnel_core::admin::CaddyAdminAddress;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The server every fake starts with, as in Caddy's Caddyfile adapter.
pub const DEFAULT_SERVER: &str = "srv0";

/// The catch-all route a Caddyfile typically ends with.
pub fn catch_all_route() -> Value {
    json!({ "handle": [{ "handler": "static_response", "body": "catch-all" }] })
}

/// A whole Caddy config: the admin endpoint at `admin_listen`, and one HTTP server `srv0`
/// on `http_listen` with automatic HTTPS off and the given routes (`None`: no `routes` key).
pub fn caddy_config(admin_listen: &str, http_listen: &str, routes: Option<Vec<Value>>) -> Value {
    let mut server = json!({
        "listen": [http_listen],
        "automatic_https": { "disable": true },
    });
    if let (Some(routes), Some(object)) = (routes, server.as_object_mut()) {
        object.insert("routes".into(), Value::Array(routes));
    }
    json!({
        "admin": { "listen": admin_listen },
        "apps": { "http": { "servers": { DEFAULT_SERVER: server } } },
    })
}

/// Caddy's in-memory config (`rawCfg`, whose only key is `config`) and its `@id` index.
#[derive(Debug)]
struct Config {
    raw: Value,
    index: BTreeMap<String, String>,
}

impl Config {
    fn new(config: Value) -> Self {
        let raw = json!({ "config": config });
        let mut index = BTreeMap::new();
        // A config whose ids do not index is kept without an index (Caddy would refuse it).
        let _ = index_config_objects(&raw["config"], "/config", &mut index);
        Config { raw, index }
    }
}

#[derive(Debug)]
struct Shared {
    config: Mutex<Config>,
    down: AtomicBool,
    /// Drop the first request after each reload.
    drop_after_reload: AtomicBool,
    /// A reload happened and the next request is to be dropped.
    pending_drop: AtomicBool,
    port: u16,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Whether a request arriving now is reset (consumes a pending drop).
    fn refuses_request(&self) -> bool {
        self.is_down() || self.pending_drop.swap(false, Ordering::SeqCst)
    }
}

/// A running fake Caddy admin API; stops when dropped.
#[derive(Debug)]
pub struct FakeCaddy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCaddy {
    /// A fake whose `srv0` holds one catch-all route, like Caddy started from a Caddyfile.
    pub async fn start() -> FakeCaddy {
        Self::start_with(|admin| caddy_config(admin, "127.0.0.1:0", Some(vec![catch_all_route()])))
            .await
    }

    /// A fake with the config `make(admin_listen)`.
    pub async fn start_with(make: impl FnOnce(&str) -> Value) -> FakeCaddy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Caddy admin API on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the fake Caddy");
        let shared = Arc::new(Shared {
            config: Mutex::new(Config::new(make(&addr.to_string()))),
            down: AtomicBool::new(false),
            drop_after_reload: AtomicBool::new(false),
            pending_drop: AtomicBool::new(false),
            port: addr.port(),
        });
        let app = Router::new()
            .fallback(admin_api)
            .with_state(Arc::clone(&shared));
        let listener = GatedListener {
            inner: listener,
            shared: Arc::clone(&shared),
        };
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeCaddy {
            shared,
            addr,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// The admin address, for `CaddyRoutes::new`.
    pub fn admin_address(&self) -> CaddyAdminAddress {
        CaddyAdminAddress::Tcp(self.addr)
    }

    /// The admin socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `true`: every connection fails at the transport level, as if Caddy were not running
    /// (see the module docs); `false`: answers again, with the config it had.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// `true`: the first request after each reload (on any connection) is reset without
    /// an answer — the worst timing of Caddy's admin server replacement (see the module
    /// docs). `false` (the default): every request is answered.
    pub fn set_drop_next_request_after_reload(&self, drop: bool) {
        self.shared.drop_after_reload.store(drop, Ordering::SeqCst);
        if !drop {
            self.shared.pending_drop.store(false, Ordering::SeqCst);
        }
    }

    /// A copy of the whole config.
    pub fn config(&self) -> Value {
        self.shared.lock().raw["config"].clone()
    }

    /// A copy of `srv0`'s routes (`Value::Null` when it has no `routes` key).
    pub fn routes(&self) -> Value {
        self.routes_of(DEFAULT_SERVER)
    }

    /// A copy of a server's routes (`Value::Null` when absent).
    pub fn routes_of(&self, server: &str) -> Value {
        self.config()
            .pointer(&format!("/apps/http/servers/{server}/routes"))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Replaces the whole config, as a Caddy restarted with it (or `POST /load`).
    pub fn load(&self, config: Value) {
        *self.shared.lock() = Config::new(config);
    }

    /// [`caddy_config`] for this fake's admin address.
    pub fn config_with_routes(&self, routes: Option<Vec<Value>>) -> Value {
        caddy_config(&self.addr.to_string(), "127.0.0.1:0", routes)
    }
}

impl Drop for FakeCaddy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.abort();
    }
}

// -----------------------------------------------------------------------------------------
// Transport: "down" resets connections.

#[derive(Debug)]
struct GatedListener {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for GatedListener {
    type Io = GatedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) if self.shared.refuses_request() => {
                    // Close with a reset, like a port nobody listens on.
                    let _ = stream.set_zero_linger();
                    drop((stream, peer));
                }
                Ok((stream, peer)) => {
                    return (
                        GatedStream {
                            inner: stream,
                            shared: Arc::clone(&self.shared),
                        },
                        peer,
                    )
                }
                // Too many open files and the like: back off a little, as axum does.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[derive(Debug)]
struct GatedStream {
    inner: TcpStream,
    shared: Arc<Shared>,
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "fake Caddy is down")
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.shared.is_down() {
            let _ = self.inner.set_zero_linger();
            return Poll::Ready(Err(reset()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        // A request that arrives on a kept-alive connection after going down (or as the
        // first after a reload, in that mode) is reset.
        if matches!(result, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && self.shared.refuses_request()
        {
            let _ = self.inner.set_zero_linger();
            return Poll::Ready(Err(reset()));
        }
        result
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.shared.is_down() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// -----------------------------------------------------------------------------------------
// The admin API.

/// An answer: status and body, encoded the way Go's `json.Encoder` does (newline-ended).
fn answer(status: StatusCode, body: Option<&Value>) -> Response {
    match body {
        None => status.into_response(),
        Some(value) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{value}\n"),
        )
            .into_response(),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    answer(status, Some(&json!({ "error": message.into() })))
}

async fn admin_api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Caddy checks the Host header first, for every endpoint.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let port = shared.port;
    let allowed = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    if !allowed.iter().any(|a| a == host) {
        return error(StatusCode::FORBIDDEN, format!("host not allowed: {host}"));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let path = uri.path().to_owned();
    let mut reload = Reload::None;
    let mut response = route_request(&shared, &mut reload, &method, &path, &content_type, &body);
    if reload == Reload::Succeeded {
        // The old admin server is shutting down: Caddy closes this connection.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    if reload != Reload::None && shared.drop_after_reload.load(Ordering::SeqCst) {
        shared.pending_drop.store(true, Ordering::SeqCst);
    }
    response
}

/// Whether a request reloaded the config (where Caddy replaces its admin server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reload {
    None,
    Succeeded,
    Failed,
}

fn route_request(
    shared: &Shared,
    reload: &mut Reload,
    method: &Method,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Response {
    let mut config = shared.lock();
    if path == "/load" {
        return load(&mut config, reload, method, body);
    }
    if path.starts_with("/config/") {
        return handle_config(&mut config, reload, method, path, content_type, body);
    }
    if path.starts_with("/id/") {
        let parts: Vec<&str> = path.split('/').collect();
        let id = parts.get(2).copied().unwrap_or("");
        if id.is_empty() {
            return error(StatusCode::BAD_REQUEST, "request path is missing object ID");
        }
        let Some(expanded) = config.index.get(id).cloned() else {
            return error(StatusCode::NOT_FOUND, format!("unknown object ID '{id}'"));
        };
        let mut full = expanded;
        for rest in parts.iter().skip(3).filter(|p| !p.is_empty()) {
            full.push('/');
            full.push_str(rest);
        }
        return handle_config(&mut config, reload, method, &full, content_type, body);
    }
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

/// Caddy's `handleConfig`.
fn handle_config(
    config: &mut Config,
    reload: &mut Reload,
    method: &Method,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Response {
    if method == Method::GET {
        let mut raw = config.raw.clone();
        return match config_access(&mut raw, "GET", path, Value::Null) {
            Ok(value) => answer(StatusCode::OK, Some(&value.unwrap_or(Value::Null))),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        };
    }
    let verb = match *method {
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed"),
            )
        }
    };
    let mut value = Value::Null;
    if verb != "DELETE" {
        if !content_type.contains("/json") {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unacceptable content-type: {content_type}; 'application/json' required"),
            );
        }
        if !body.is_empty() {
            match serde_json::from_slice(body) {
                Ok(v) => value = v,
                Err(e) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("decoding request body: {e}"),
                    )
                }
            }
        }
    }
    match change_config(config, reload, verb, path, value) {
        Ok(()) => answer(StatusCode::OK, None),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Caddy's `handleLoad` (native JSON only).
fn load(config: &mut Config, reload: &mut Reload, method: &Method, body: &[u8]) -> Response {
    if method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("loading config: decoding request body: {e}"),
                )
            }
        }
    };
    match change_config(config, reload, "POST", "/config", value) {
        Ok(()) => answer(StatusCode::OK, None),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("loading config: {e}")),
    }
}

/// Caddy's `changeConfig`: apply, skip an unchanged config, index, "load" or roll back.
/// Sets `reload` when it gets as far as loading (where Caddy replaces its admin server).
fn change_config(
    config: &mut Config,
    reload: &mut Reload,
    verb: &str,
    path: &str,
    value: Value,
) -> Result<(), String> {
    let mut raw = config.raw.clone();
    config_access(&mut raw, verb, path, value)?;
    if raw["config"] == config.raw["config"] {
        return Ok(()); // errSameConfig: answered 200, nothing reloaded
    }
    let mut index = BTreeMap::new();
    index_config_objects(&raw["config"], "/config", &mut index)
        .map_err(|e| format!("indexing config: {e}"))?;
    *reload = Reload::Failed;
    validate(&raw["config"]).map_err(|e| format!("loading new config: {e}"))?;
    *reload = Reload::Succeeded;
    config.raw = raw;
    config.index = index;
    Ok(())
}

/// The part of Caddy's config decoding the fake reproduces: the type of `routes`.
fn validate(config: &Value) -> Result<(), String> {
    let Some(servers) = config
        .pointer("/apps/http/servers")
        .and_then(Value::as_object)
    else {
        return Ok(());
    };
    let refuse = |found: &Value, go_type: &str| {
        Err(format!(
            "loading http app module: decoding module config: http: json: cannot unmarshal {} into Go struct field Server.servers.routes of type {go_type}",
            go_json_type(found)
        ))
    };
    for server in servers.values() {
        match server.get("routes") {
            None | Some(Value::Null) => {}
            Some(Value::Array(routes)) => {
                if let Some(bad) = routes.iter().find(|r| !(r.is_object() || r.is_null())) {
                    return refuse(bad, "caddyhttp.Route");
                }
            }
            Some(other) => return refuse(other, "caddyhttp.RouteList"),
        }
    }
    Ok(())
}

fn go_json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Caddy's `indexConfigObjects`: every object with an `@id`, by id; a later one in walk
/// order replaces an earlier one.
fn index_config_objects(
    value: &Value,
    path: &str,
    index: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "@id" {
                    let id = match child {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => return Err(format!("{path}: @id field must be a string or number")),
                    };
                    index.insert(id, path.to_owned());
                    continue;
                }
                index_config_objects(child, &format!("{path}/{key}"), index)?;
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                index_config_objects(child, &format!("{path}/{i}"), index)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn atoi(text: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {text:?}: invalid syntax"))
}

/// Caddy's `unsyncedConfigAccess` on `rawCfg` (`{"config": …}`): answers the value for
/// GET, changes `root` for the other methods.
fn config_access(
    root: &mut Value,
    verb: &str,
    path: &str,
    value: Value,
) -> Result<Option<Value>, String> {
    let clean = path.trim_matches('/');
    if clean.is_empty() {
        return Err("no traversable path".into());
    }
    let mut parts: Vec<&str> = clean.split('/').collect();
    let ellipses = parts.last() == Some(&"...");
    if ellipses {
        parts.pop();
    }
    let n = parts.len();
    let mut value = Some(value);
    let mut take = || value.take().unwrap_or(Value::Null);
    let mut ptr: Option<&mut Value> = Some(root);
    for (i, part) in parts.iter().copied().enumerate() {
        match ptr {
            Some(Value::Object(map)) => {
                // The destination is an element of this array.
                if i + 2 == n {
                    if let Some(Value::Array(arr)) = map.get_mut(part) {
                        let idx_text = parts[n - 1];
                        return array_element_access(arr, verb, path, idx_text, ellipses, take());
                    }
                }
                if i + 1 == n {
                    return map_key_access(map, verb, path, part, ellipses, take());
                }
                if verb == "PUT" && map.get(part).is_none_or(Value::is_null) {
                    map.insert(part.to_owned(), Value::Object(Map::new()));
                }
                ptr = map.get_mut(part);
            }
            Some(Value::Array(arr)) => {
                let prefix = parts[..=i].join("/");
                let idx = atoi(part)
                    .map_err(|e| format!("[/{prefix}] invalid array index '{part}': {e}"))?;
                let Some(next) = usize::try_from(idx).ok().and_then(|i| arr.get_mut(i)) else {
                    return Err(format!("[/{prefix}] array index out of bounds: {part}"));
                };
                ptr = Some(next);
            }
            _ => {
                return Err(format!(
                    "invalid traversal path at: {}",
                    parts[..=i].join("/")
                ))
            }
        }
    }
    Ok(None)
}

fn array_element_access(
    arr: &mut Vec<Value>,
    verb: &str,
    path: &str,
    idx_text: &str,
    ellipses: bool,
    value: Value,
) -> Result<Option<Value>, String> {
    let mut idx = 0usize;
    if verb != "POST" {
        let parsed = atoi(idx_text)
            .map_err(|e| format!("[{path}] invalid array index '{idx_text}': {e}"))?;
        match usize::try_from(parsed) {
            Ok(i) if i < arr.len() => idx = i,
            _ => return Err(format!("[{path}] array index out of bounds: {idx_text}")),
        }
    }
    match verb {
        "GET" => return Ok(arr.get(idx).cloned()),
        "POST" => append(arr, ellipses, value)?,
        "PUT" => arr.insert(idx, value),
        "PATCH" => {
            if let Some(slot) = arr.get_mut(idx) {
                *slot = value;
            }
        }
        "DELETE" => {
            arr.remove(idx);
        }
        other => return Err(format!("unrecognized method {other}")),
    }
    Ok(None)
}

fn map_key_access(
    map: &mut Map<String, Value>,
    verb: &str,
    path: &str,
    key: &str,
    ellipses: bool,
    value: Value,
) -> Result<Option<Value>, String> {
    match verb {
        "GET" => return Ok(Some(map.get(key).cloned().unwrap_or(Value::Null))),
        "POST" => match map.get_mut(key) {
            Some(Value::Array(arr)) => append(arr, ellipses, value)?,
            _ => {
                map.insert(key.to_owned(), value);
            }
        },
        "PUT" => {
            if map.contains_key(key) {
                return Err(format!("[{path}] key already exists: {key}"));
            }
            map.insert(key.to_owned(), value);
        }
        "PATCH" => {
            if !map.contains_key(key) {
                return Err(format!("[{path}] key does not exist: {key}"));
            }
            map.insert(key.to_owned(), value);
        }
        "DELETE" => {
            map.remove(key);
        }
        other => return Err(format!("unrecognized method {other}")),
    }
    Ok(None)
}

fn append(arr: &mut Vec<Value>, ellipses: bool, value: Value) -> Result<(), String> {
    if ellipses {
        let Value::Array(items) = value else {
            return Err("final element is not an array".into());
        };
        arr.extend(items);
    } else {
        arr.push(value);
    }
    Ok(())
}
