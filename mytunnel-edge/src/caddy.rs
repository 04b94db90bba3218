//! The Caddy [`RouteBackend`]: one route per lease through Caddy's admin API.
//!
//! Measured behaviour of Caddy 2.6 that this code relies on (the fake Caddy in the tests
//! reproduces it, and the contract test checks both agree):
//! - `GET/PATCH/DELETE /id/<id>` address a route by `@id`; an unknown id answers 404.
//! - Duplicate `@id`s are accepted silently and `PUT /id/x` does not replace, so writes are
//!   made idempotent here: GET by id, then PATCH, or insert.
//! - Routes are inserted at index 0 (`PUT …/routes/0`) so they come before any catch-all
//!   route from a Caddyfile. `PUT …/routes/0` fails on an empty list and `POST …/routes`
//!   fails when the list is null, so the insert looks at the list first.
//! - A missing server answers 400 "invalid traversal path"; many client mistakes answer
//!   500, so nothing here retries a 5xx blindly.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use mytunnel_core::admin::CaddyAdminAddress;
use mytunnel_core::route::{
    lease_id_of_route, Forwarding, InstalledRoute, Route, RouteBackend, RouteError, Upstream,
    ROUTE_ID_PREFIX, VIA_HEADER,
};
use mytunnel_core::{BaseDomain, EdgeId, EdgeUrl, LeaseId};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::metrics::Metrics;

/// Routes in Caddy, written through its loopback admin API.
#[derive(Debug, Clone)]
pub struct CaddyRoutes {
    client: reqwest::Client,
    base: String,
    server: String,
    /// The turn at Caddy: held across each change (read, then write). Caddy resolves
    /// `/id/…` to an index when a request arrives, so two changes at once could remove or
    /// patch the wrong index ("array index out of bounds" under load).
    changes: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Route changes waiting for the turn. Caddy reloads its whole config on every change,
    /// so whoever gets the turn applies every change queued by then in one write (one
    /// reload): under 32 concurrent clients a change waits for about one reload, not for
    /// everyone else's.
    queue: std::sync::Arc<std::sync::Mutex<Vec<Queued>>>,
    /// Counts the admin requests that failed (nothing unless serve answers scrapes).
    metrics: Metrics,
}

/// How an error for a server name Caddy does not have begins.
const NO_SUCH_SERVER: &str = "Caddy has no HTTP server named";

/// One change to the server's route list.
#[derive(Debug, Clone)]
enum Change {
    /// Make the route with this `@id` exactly `json` (in place, or first in the list).
    Upsert { id: String, json: Value },
    /// Remove every route with this `@id`.
    Remove { id: String },
}

/// A change and where its outcome goes.
#[derive(Debug)]
struct Queued {
    change: Change,
    done: tokio::sync::oneshot::Sender<Result<bool, RouteError>>,
}

/// Applies `changes` in order to a route list; answers, per change, whether it found a
/// route with its id.
fn apply_changes(list: &mut Vec<Value>, changes: &[Change]) -> Vec<bool> {
    let has_id = |route: &Value, id: &str| route.get("@id").and_then(Value::as_str) == Some(id);
    changes
        .iter()
        .map(|change| match change {
            Change::Upsert { id, json } => {
                match list.iter().position(|route| has_id(route, id)) {
                    Some(first) => {
                        if let Some(slot) = list.get_mut(first) {
                            *slot = json.clone();
                        }
                        // Duplicates of the id (Caddy accepts them) go.
                        let mut index = 0;
                        list.retain(|route| {
                            index += 1;
                            index - 1 == first || !has_id(route, id)
                        });
                        true
                    }
                    None => {
                        list.insert(0, json.clone());
                        false
                    }
                }
            }
            Change::Remove { id } => {
                let before = list.len();
                list.retain(|route| !has_id(route, id));
                list.len() < before
            }
        })
        .collect()
}

/// The `@id` of `static` mode's one wildcard route. It is not a lease's route, so
/// reconcile neither counts nor removes it.
pub const STATIC_ROUTE_ID: &str = "mytunnel-static";

/// Caddy's dial address for an upstream.
fn dial(upstream: &Upstream) -> String {
    match upstream {
        Upstream::LoopbackPort(port) => format!("127.0.0.1:{port}"),
        Upstream::UnixSocket(path) => format!("unix/{path}"),
        Upstream::Edge(url) => url.dial(),
    }
}

/// The local upstream a dial address names, when it is one mytunnel writes.
fn upstream_of_dial(dial: &str) -> Option<Upstream> {
    if let Some(path) = dial.strip_prefix("unix/") {
        return path.parse().ok().map(Upstream::UnixSocket);
    }
    let port = dial.strip_prefix("127.0.0.1:")?.parse::<u16>().ok()?;
    Some(Upstream::LoopbackPort(port))
}

/// A `reverse_proxy` to `dial`s.
fn proxy(dials: Vec<String>) -> Value {
    json!({
        "handler": "reverse_proxy",
        "upstreams": dials.into_iter().map(|dial| json!({ "dial": dial })).collect::<Vec<_>>(),
    })
}

/// A `reverse_proxy` that forwards to other edges, first that can be dialled first, as
/// `via`: the request keeps its `Host`, gains [`VIA_HEADER`], and when the edges are
/// `https://` goes over TLS checked against `host`'s certificate (the one the holder
/// edge serves for it). One handler has one transport: the edges share a scheme.
fn forward(edges: &[EdgeUrl], host: &str, via: &EdgeId) -> Value {
    let mut handler = serde_json::Map::new();
    handler.insert("handler".into(), json!("reverse_proxy"));
    handler.insert(
        "upstreams".into(),
        edges.iter().map(|e| json!({ "dial": e.dial() })).collect(),
    );
    handler.insert(
        "headers".into(),
        json!({ "request": { "set": { VIA_HEADER: [via.as_str()] } } }),
    );
    if edges.len() > 1 {
        handler.insert(
            "load_balancing".into(),
            json!({ "selection_policy": { "policy": "first" }, "try_duration": "5s" }),
        );
    }
    if edges.first().is_some_and(EdgeUrl::is_https) {
        handler.insert(
            "transport".into(),
            json!({ "protocol": "http", "tls": { "server_name": host } }),
        );
    }
    Value::Object(handler)
}

/// The JSON of a lease's route exactly as mytunnel writes it.
///
/// - On an edge alone: the host, proxied to the lease's tunnel.
/// - This edge's lease, with other edges: the same in a `subroute` whose error routes
///   forward to the other edges when the tunnel cannot be dialled (a request another
///   edge forwarded is not forwarded again).
/// - Another edge's lease: the host, when no edge forwarded the request yet (no
///   [`VIA_HEADER`]), forwarded to the edge that holds it.
pub fn route_json(route: &Route) -> Value {
    let host = route.host.as_str();
    let (matcher, handler) = match (&route.forwarding, &route.upstream) {
        (Some(forwarding), Upstream::Edge(url)) => (
            json!({ "host": [host], "header": { VIA_HEADER: null } }),
            forward(std::slice::from_ref(url), host, &forwarding.via),
        ),
        (Some(forwarding), local) if !forwarding.fallback.is_empty() => (
            json!({ "host": [host] }),
            json!({
                "handler": "subroute",
                "routes": [{ "handle": [proxy(vec![dial(local)])] }],
                // A request another edge forwarded gets the error itself: without
                // the last route an unmatched error would answer an empty 200.
                "errors": { "routes": [
                    {
                        "match": [{ "header": { VIA_HEADER: null } }],
                        "handle": [forward(&forwarding.fallback, host, &forwarding.via)],
                    },
                    { "handle": [{
                        "handler": "static_response",
                        "status_code": "{http.error.status_code}",
                    }] },
                ] },
            }),
        ),
        (_, upstream) => (json!({ "host": [host] }), proxy(vec![dial(upstream)])),
    };
    json!({
        "@id": route.id(),
        "match": [matcher],
        "handle": [handler],
        "terminal": true,
    })
}

/// The edges a forwarding `reverse_proxy` names, and the edge it forwards as.
fn forwarded(handler: &Value) -> Option<(Vec<EdgeUrl>, EdgeId)> {
    let scheme = if handler.get("transport").is_some() {
        "https"
    } else {
        "http"
    };
    let edges = handler
        .get("upstreams")?
        .as_array()?
        .iter()
        .map(|u| {
            format!("{scheme}://{}", u.get("dial")?.as_str()?)
                .parse()
                .ok()
        })
        .collect::<Option<Vec<EdgeUrl>>>()?;
    let via = handler
        .get("headers")?
        .get("request")?
        .get("set")?
        .get(VIA_HEADER)?
        .get(0)?
        .as_str()?
        .parse()
        .ok()?;
    Some((edges, via))
}

/// The route a lease's route JSON describes, when it has exactly a shape
/// [`route_json`] writes.
fn route_of_json(value: &Value, lease_id: LeaseId) -> Option<Route> {
    let matcher = value.get("match")?.get(0)?;
    let host = matcher.get("host")?.get(0)?.as_str()?.parse().ok()?;
    let handler = value.get("handle")?.get(0)?;
    let first_dial = |proxy: &Value| -> Option<String> {
        Some(
            proxy
                .get("upstreams")?
                .get(0)?
                .get("dial")?
                .as_str()?
                .to_owned(),
        )
    };
    let route = if matcher.get("header").is_some() {
        let (mut edges, via) = forwarded(handler)?;
        let holder = edges.pop().filter(|_| edges.is_empty())?;
        Route {
            lease_id,
            host,
            upstream: Upstream::Edge(holder),
            forwarding: Some(Forwarding {
                via,
                fallback: Vec::new(),
            }),
        }
    } else if handler.get("handler")?.as_str()? == "subroute" {
        let local = handler.get("routes")?.get(0)?.get("handle")?.get(0)?;
        let fallback = handler
            .get("errors")?
            .get("routes")?
            .get(0)?
            .get("handle")?
            .get(0)?;
        let (edges, via) = forwarded(fallback)?;
        Route {
            lease_id,
            host,
            upstream: upstream_of_dial(&first_dial(local)?)?,
            forwarding: Some(Forwarding {
                via,
                fallback: edges,
            }),
        }
    } else {
        Route {
            lease_id,
            host,
            upstream: upstream_of_dial(&first_dial(handler)?)?,
            forwarding: None,
        }
    };
    (route_json(&route) == *value).then_some(route)
}

/// `static` mode's one route: every `<slug>.<base_domain>` is proxied to the unix socket
/// `<socket_dir>/hosts/<slug>.sock`, a link `mytunneld serve` keeps pointing at the lease's
/// socket in its owner's directory. A host with no link answers 502; a host with more
/// labels does not match.
///
/// Caddy's host matcher ignores case but its `labels` placeholder is the Host's raw text,
/// and Caddy 2.6 has no placeholder that lower-cases. So a Host with an upper-case ASCII
/// letter (and only such a Host: the lower-case path is one regular expression more than
/// a plain dial) first asks `serve` on `<socket_dir>/names.sock` for its slug
/// ([`crate::host_names`]), the way Caddy's `forward_auth` asks: a `reverse_proxy` whose
/// `handle_response` route, on a 2xx, puts the answer's `X-Mytunnel-Slug` into the
/// request's vars and then falls through to the next handler, which dials
/// `hosts/{http.vars.mytunnel_slug}.sock`. Any other answer (502) goes to the visitor.
/// Vars, not a request header: a visitor cannot set them, so cannot choose the dial path.
/// The question carries no query, no body (`GET`), no `Cookie` and no `Authorization`:
/// serve needs the Host alone, and the visitor's credentials are none of its business.
pub fn static_route_json(base_domain: &BaseDomain, socket_dir: &Path) -> Value {
    // Caddy numbers host labels from the right: in `a.t.example`, labels.0 is `example`.
    let slug_label = base_domain.as_str().split('.').count();
    let hosts_dir = crate::sockets::hosts_dir(socket_dir);
    let hosts_dir = hosts_dir.display();
    let names = crate::sockets::names_socket(socket_dir);
    let ask_serve = json!({
        "handler": "reverse_proxy",
        "upstreams": [{ "dial": format!("unix/{}", names.display()) }],
        "rewrite": { "method": "GET", "uri": "/slug?" },
        "headers": { "request": { "delete": ["Authorization", "Cookie"] } },
        "handle_response": [{
            "match": { "status_code": [2] },
            "routes": [{
                "handle": [{
                    "handler": "vars",
                    "mytunnel_slug": format!("{{http.reverse_proxy.header.{}}}", crate::host_names::SLUG_HEADER),
                }],
            }],
        }],
    });
    json!({
        "@id": STATIC_ROUTE_ID,
        "match": [{ "host": [format!("*.{base_domain}")] }],
        "handle": [{
            "handler": "subroute",
            "routes": [
                {
                    "match": [{ "header_regexp": { "Host": { "pattern": "[A-Z]" } } }],
                    "handle": [
                        ask_serve,
                        {
                            "handler": "reverse_proxy",
                            "upstreams": [{
                                "dial": format!("unix/{hosts_dir}/{{http.vars.mytunnel_slug}}.sock")
                            }],
                        },
                    ],
                    "terminal": true,
                },
                {
                    "handle": [{
                        "handler": "reverse_proxy",
                        "upstreams": [{
                            "dial": format!("unix/{hosts_dir}/{{http.request.host.labels.{slug_label}}}.sock")
                        }],
                    }],
                },
            ],
        }],
        "terminal": true,
    })
}

/// Reads a route Caddy holds. `None` when it is not one of ours; `route: None` when its
/// id is ours but the route is not exactly what mytunnel writes.
pub fn parse_installed(value: &Value) -> Option<InstalledRoute> {
    let id = value.get("@id")?.as_str()?;
    if !id.starts_with(ROUTE_ID_PREFIX) || id == STATIC_ROUTE_ID {
        return None;
    }
    let route = lease_id_of_route(id).and_then(|lease_id| route_of_json(value, lease_id));
    Some(InstalledRoute {
        id: id.to_owned(),
        route,
    })
}

/// The body of an admin API answer: `Value::Null` when empty, the JSON when it parses,
/// else the text itself as a JSON string (an error message Caddy wrote as plain text).
pub fn parse_body(text: &str) -> Value {
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
    }
}

/// Reads a server's `routes` as Caddy answers them: `null` is no routes, a list yields the
/// routes that are ours ([`parse_installed`]), anything else is an error.
pub fn parse_routes(routes: &Value) -> Result<Vec<InstalledRoute>, RouteError> {
    match routes {
        Value::Null => Ok(Vec::new()),
        Value::Array(list) => Ok(list.iter().filter_map(parse_installed).collect()),
        other => Err(RouteError(format!(
            "Caddy's routes are not a list: {}",
            other.to_string().chars().take(200).collect::<String>()
        ))),
    }
}

/// An error and its sources, e.g. `error sending request: connection refused`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How many times a request reset unanswered by a reloading Caddy is sent again.
const MAX_RESENDS: u32 = 4;

/// Whether a connection was reset (as opposed to refused: nothing listens).
fn was_reset(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

impl CaddyRoutes {
    /// A backend for the HTTP server `server` of the Caddy whose admin API is `admin`.
    /// Every request is bounded by `timeout`; proxy variables are ignored.
    pub fn new(
        admin: &CaddyAdminAddress,
        server: &str,
        timeout: Duration,
    ) -> Result<Self, RouteError> {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Caddy closes admin connections on every reload: never reuse one.
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none());
        let (builder, base) = match admin {
            CaddyAdminAddress::Tcp(addr) => (builder, format!("http://{addr}")),
            CaddyAdminAddress::Unix(path) => (
                builder.unix_socket(std::path::PathBuf::from(path)),
                "http://localhost".to_owned(),
            ),
        };
        let client = builder
            .build()
            .map_err(|e| RouteError(format!("cannot build the admin API client: {e}")))?;
        Ok(CaddyRoutes {
            client,
            base,
            changes: std::sync::Arc::default(),
            queue: std::sync::Arc::default(),
            server: server.to_owned(),
            metrics: Metrics::default(),
        })
    }

    /// The same backend, counting failed admin requests in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Queues `change` and waits for its outcome: applied by whoever holds the turn
    /// next, together with every other change queued by then.
    async fn change(&self, change: Change) -> Result<bool, RouteError> {
        let (done, mut outcome) = tokio::sync::oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Queued { change, done });
        let _turn = self.changes.lock().await;
        if let Ok(result) = outcome.try_recv() {
            // Applied in the turn before ours.
            return result;
        }
        let batch = std::mem::take(
            &mut *self
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let changes: Vec<Change> = batch.iter().map(|q| q.change.clone()).collect();
        let results = self.apply_batch(&changes).await;
        for (queued, result) in batch.into_iter().zip(results) {
            let _ = queued.done.send(result);
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(RouteError("the route change was abandoned".to_owned())))
    }

    /// Reads the route list once, applies `changes`, writes it back once when it changed.
    async fn apply_batch(&self, changes: &[Change]) -> Vec<Result<bool, RouteError>> {
        let all = |error: RouteError| vec![Err(error); changes.len()];
        let routes_path = self.routes_path();
        let current = match self.expect_ok(Method::GET, &routes_path, None).await {
            Ok(current) => current,
            // No such server: nothing to remove there; nowhere to add.
            Err(e) if e.0.contains(NO_SUCH_SERVER) => {
                return changes
                    .iter()
                    .map(|change| match change {
                        Change::Remove { .. } => Ok(false),
                        Change::Upsert { .. } => Err(e.clone()),
                    })
                    .collect()
            }
            Err(e) => return all(e),
        };
        let (mut list, create) = match current {
            Value::Array(list) => (list, false),
            Value::Null => (Vec::new(), true),
            other => {
                return all(RouteError(format!(
                    "Caddy's {routes_path} is not a list: {}",
                    other.to_string().chars().take(200).collect::<String>()
                )))
            }
        };
        let original = list.clone();
        let found = apply_changes(&mut list, changes);
        if list != original {
            let method = if create { Method::PUT } else { Method::PATCH };
            if let Err(e) = self
                .expect_ok(method, &routes_path, Some(&Value::Array(list)))
                .await
            {
                return all(e);
            }
        }
        found.into_iter().map(Ok).collect()
    }

    fn routes_path(&self) -> String {
        format!("/config/apps/http/servers/{}/routes", self.server)
    }

    /// One request; answers the status and the parsed body (`Value::Null` when empty).
    ///
    /// Caddy replaces its admin server on every config change, and a request that reaches
    /// the old one while it stops is reset without being run, or its connection is reset
    /// while it is being opened (the old listener closing with it queued; seen with 32
    /// concurrent ctl processes). Such a request (no answer, not a timeout, not a refused
    /// connection) is sent again, at most [`MAX_RESENDS`] times with a growing pause: it
    /// never ran, so it cannot apply twice.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), RouteError> {
        let mut attempt = 0;
        let response = loop {
            let mut request = self
                .client
                .request(method.clone(), format!("{}{path}", self.base));
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => break response,
                Err(e)
                    if attempt < MAX_RESENDS
                        && !e.is_timeout()
                        && (!e.is_connect() || was_reset(&e)) =>
                {
                    tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    self.metrics.caddy_admin_error();
                    return Err(RouteError(format!(
                        "Caddy admin API at {}: {}",
                        self.base,
                        error_chain(&e)
                    )));
                }
            }
        };
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            self.metrics.caddy_admin_error();
            RouteError(format!(
                "Caddy admin API at {}: {}",
                self.base,
                error_chain(&e)
            ))
        })?;
        Ok((status, parse_body(&text)))
    }

    /// The error of an answer with an error status (counted in the metrics).
    fn failure(&self, method: &Method, path: &str, status: StatusCode, body: &Value) -> RouteError {
        self.metrics.caddy_admin_error();
        let detail = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        let detail: String = detail.chars().take(300).collect();
        if detail.contains("invalid traversal path") {
            return RouteError(format!(
                "{NO_SUCH_SERVER} {:?} (set MYTUNNEL_CADDY_SERVER): {detail}",
                self.server
            ));
        }
        RouteError(format!(
            "Caddy admin API: {method} {path}: HTTP {status}: {detail}"
        ))
    }

    async fn expect_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RouteError> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(self.failure(&method, path, status, &value))
        }
    }

    /// Makes `static` mode's wildcard route exist exactly as given, after the leases' own
    /// routes (which take precedence while a `routes`-mode lease lives on) and before any
    /// route mytunnel does not own, such as a catch-all from a Caddyfile.
    pub async fn ensure_static_route(&self, json: &Value) -> Result<(), RouteError> {
        let _change = self.changes.lock().await;
        let path = format!("/id/{STATIC_ROUTE_ID}");
        let (status, current) = self.call(Method::GET, &path, None).await?;
        match status {
            StatusCode::NOT_FOUND => self.insert_after_lease_routes(json).await,
            s if s.is_success() && current == *json => Ok(()),
            s if s.is_success() => {
                self.expect_ok(Method::PATCH, &path, Some(json)).await?;
                Ok(())
            }
            s => Err(self.failure(&Method::GET, &path, s, &current)),
        }
    }

    /// Inserts a route ahead of every other route of the server.
    /// Inserts `json` after the routes of leases, before anything else.
    async fn insert_after_lease_routes(&self, json: &Value) -> Result<(), RouteError> {
        let routes_path = self.routes_path();
        let current = self.expect_ok(Method::GET, &routes_path, None).await?;
        let index = match &current {
            Value::Array(list) => list
                .iter()
                .position(|route| {
                    parse_installed(route).is_none_or(|installed| installed.route.is_none())
                })
                .unwrap_or(list.len()),
            _ => 0,
        };
        match current {
            Value::Null => {
                self.expect_ok(
                    Method::PUT,
                    &routes_path,
                    Some(&Value::Array(vec![json.clone()])),
                )
                .await?;
            }
            Value::Array(list) if list.len() == index => {
                self.expect_ok(Method::POST, &routes_path, Some(json))
                    .await?;
            }
            Value::Array(_) => {
                self.expect_ok(Method::PUT, &format!("{routes_path}/{index}"), Some(json))
                    .await?;
            }
            other => {
                return Err(RouteError(format!(
                    "Caddy's {routes_path} is not a list: {}",
                    other.to_string().chars().take(200).collect::<String>()
                )))
            }
        }
        Ok(())
    }
}

#[async_trait]
impl RouteBackend for CaddyRoutes {
    async fn upsert(&self, route: &Route) -> Result<(), RouteError> {
        self.change(Change::Upsert {
            id: route.id(),
            json: route_json(route),
        })
        .await
        .map(|_| ())
    }

    async fn remove(&self, route_id: &str) -> Result<bool, RouteError> {
        self.change(Change::Remove {
            id: route_id.to_owned(),
        })
        .await
    }

    async fn list(&self) -> Result<Vec<InstalledRoute>, RouteError> {
        let routes = self
            .expect_ok(Method::GET, &self.routes_path(), None)
            .await?;
        parse_routes(&routes)
    }

    async fn ping(&self) -> Result<(), RouteError> {
        self.expect_ok(Method::GET, "/config/", None)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests;
