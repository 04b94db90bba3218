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

use std::time::Duration;

use async_trait::async_trait;
use mytunnel_core::admin::CaddyAdminAddress;
use mytunnel_core::route::{
    lease_id_of_route, InstalledRoute, Route, RouteBackend, RouteError, Upstream, ROUTE_ID_PREFIX,
};
use mytunnel_core::BaseDomain;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Routes in Caddy, written through its loopback admin API.
#[derive(Debug, Clone)]
pub struct CaddyRoutes {
    client: reqwest::Client,
    base: String,
    server: String,
}

/// The `@id` of `static` mode's one wildcard route. It is not a lease's route, so
/// reconcile neither counts nor removes it.
pub const STATIC_ROUTE_ID: &str = "mytunnel-static";

/// Caddy's dial address for an upstream.
fn dial(upstream: &Upstream) -> String {
    match upstream {
        Upstream::LoopbackPort(port) => format!("127.0.0.1:{port}"),
        Upstream::UnixSocket(path) => format!("unix/{path}"),
    }
}

/// The upstream a dial address names, when it is one mytunnel writes.
fn upstream_of_dial(dial: &str) -> Option<Upstream> {
    if let Some(path) = dial.strip_prefix("unix/") {
        return path.parse().ok().map(Upstream::UnixSocket);
    }
    let port = dial.strip_prefix("127.0.0.1:")?.parse::<u16>().ok()?;
    Some(Upstream::LoopbackPort(port))
}

/// The JSON of a lease's route exactly as mytunnel writes it.
pub fn route_json(route: &Route) -> Value {
    json!({
        "@id": route.id(),
        "match": [{ "host": [route.host.as_str()] }],
        "handle": [{
            "handler": "reverse_proxy",
            "upstreams": [{ "dial": dial(&route.upstream) }],
        }],
        "terminal": true,
    })
}

/// `static` mode's one route: every `<slug>.<base_domain>` is proxied to the unix socket
/// `<hosts_dir>/<slug>.sock`, a link `mytunneld serve` keeps pointing at the lease's socket
/// in its owner's directory. A host with no link answers 502; a host with more labels
/// does not match.
pub fn static_route_json(base_domain: &BaseDomain, hosts_dir: &str) -> Value {
    // Caddy numbers host labels from the right: in `a.t.example`, labels.0 is `example`.
    let slug_label = base_domain.as_str().split('.').count();
    json!({
        "@id": STATIC_ROUTE_ID,
        "match": [{ "host": [format!("*.{base_domain}")] }],
        "handle": [{
            "handler": "reverse_proxy",
            "upstreams": [{
                "dial": format!("unix/{hosts_dir}/{{http.request.host.labels.{slug_label}}}.sock")
            }],
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
    let route = (|| {
        let lease_id = lease_id_of_route(id)?;
        let host = value
            .get("match")?
            .get(0)?
            .get("host")?
            .get(0)?
            .as_str()?
            .parse()
            .ok()?;
        let dial = value
            .get("handle")?
            .get(0)?
            .get("upstreams")?
            .get(0)?
            .get("dial")?
            .as_str()?;
        let route = Route {
            lease_id,
            host,
            upstream: upstream_of_dial(dial)?,
        };
        (route_json(&route) == *value).then_some(route)
    })();
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

/// Where a new route goes in the server's list.
#[derive(Debug, Clone, Copy)]
enum InsertAt {
    /// Ahead of every route.
    First,
    /// After the routes of leases, before anything else.
    AfterLeaseRoutes,
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

/// At most this many copies of one id are deleted by one `remove` (duplicates are rare).
const MAX_DUPLICATES: usize = 16;

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
            server: server.to_owned(),
        })
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
                    return Err(RouteError(format!(
                        "Caddy admin API at {}: {}",
                        self.base,
                        error_chain(&e)
                    )))
                }
            }
        };
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            RouteError(format!(
                "Caddy admin API at {}: {}",
                self.base,
                error_chain(&e)
            ))
        })?;
        Ok((status, parse_body(&text)))
    }

    fn failure(&self, method: &Method, path: &str, status: StatusCode, body: &Value) -> RouteError {
        let detail = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        let detail: String = detail.chars().take(300).collect();
        if detail.contains("invalid traversal path") {
            return RouteError(format!(
                "Caddy has no HTTP server named {:?} (set MYTUNNEL_CADDY_SERVER): {detail}",
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
        let path = format!("/id/{STATIC_ROUTE_ID}");
        let (status, current) = self.call(Method::GET, &path, None).await?;
        match status {
            StatusCode::NOT_FOUND => self.insert_at(json, InsertAt::AfterLeaseRoutes).await,
            s if s.is_success() && current == *json => Ok(()),
            s if s.is_success() => {
                self.expect_ok(Method::PATCH, &path, Some(json)).await?;
                Ok(())
            }
            s => Err(self.failure(&Method::GET, &path, s, &current)),
        }
    }

    /// Inserts a route ahead of every other route of the server.
    async fn insert_first(&self, json: &Value) -> Result<(), RouteError> {
        self.insert_at(json, InsertAt::First).await
    }

    async fn insert_at(&self, json: &Value, at: InsertAt) -> Result<(), RouteError> {
        let routes_path = self.routes_path();
        let current = self.expect_ok(Method::GET, &routes_path, None).await?;
        let index = match (&current, at) {
            (Value::Array(list), InsertAt::AfterLeaseRoutes) => list
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
        let json = route_json(route);
        let path = format!("/id/{}", route.id());
        let (status, current) = self.call(Method::GET, &path, None).await?;
        match status {
            StatusCode::NOT_FOUND => self.insert_first(&json).await,
            s if s.is_success() => {
                if current == json {
                    return Ok(());
                }
                self.expect_ok(Method::PATCH, &path, Some(&json)).await?;
                Ok(())
            }
            s => Err(self.failure(&Method::GET, &path, s, &current)),
        }
    }

    async fn remove(&self, route_id: &str) -> Result<bool, RouteError> {
        let path = format!("/id/{route_id}");
        let mut removed = false;
        for _ in 0..MAX_DUPLICATES {
            let (status, body) = self.call(Method::DELETE, &path, None).await?;
            match status {
                StatusCode::NOT_FOUND => return Ok(removed),
                s if s.is_success() => removed = true,
                s => return Err(self.failure(&Method::DELETE, &path, s, &body)),
            }
        }
        Ok(removed)
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
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            lease_id: "lease_aaaaaaaaaaaaaaaa".parse().unwrap(),
            host: "portal.t.example".parse().unwrap(),
            upstream: Upstream::LoopbackPort(21000),
        }
    }

    #[test]
    fn route_json_round_trips() {
        let json = route_json(&route());
        assert_eq!(json["@id"], "mytunnel-lease_aaaaaaaaaaaaaaaa");
        assert_eq!(json["handle"][0]["upstreams"][0]["dial"], "127.0.0.1:21000");
        let installed = parse_installed(&json).unwrap();
        assert_eq!(installed.route, Some(route()));
    }

    #[test]
    fn foreign_and_malformed_routes() {
        assert_eq!(parse_installed(&json!({"handle": []})), None);
        assert_eq!(parse_installed(&json!({"@id": "other"})), None);
        let mut tampered = route_json(&route());
        tampered["handle"][0]["upstreams"][0]["dial"] = json!("10.0.0.1:80");
        let installed = parse_installed(&tampered).unwrap();
        assert_eq!(installed.id, "mytunnel-lease_aaaaaaaaaaaaaaaa");
        assert_eq!(installed.route, None);
        let mut extra = route_json(&route());
        extra["handle"][0]["extra"] = json!(1);
        assert_eq!(parse_installed(&extra).unwrap().route, None);
        assert_eq!(
            parse_installed(&json!({"@id": "mytunnel-x"}))
                .unwrap()
                .route,
            None
        );
    }
}
