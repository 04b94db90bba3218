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
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Routes in Caddy, written through its loopback admin API.
#[derive(Debug, Clone)]
pub struct CaddyRoutes {
    client: reqwest::Client,
    base: String,
    server: String,
}

/// The JSON of a lease's route exactly as mytunnel writes it.
pub fn route_json(route: &Route) -> Value {
    let Upstream::LoopbackPort(port) = route.upstream;
    json!({
        "@id": route.id(),
        "match": [{ "host": [route.host.as_str()] }],
        "handle": [{
            "handler": "reverse_proxy",
            "upstreams": [{ "dial": format!("127.0.0.1:{port}") }],
        }],
        "terminal": true,
    })
}

/// Reads a route Caddy holds. `None` when it is not one of ours; `route: None` when its
/// id is ours but the route is not exactly what mytunnel writes.
pub fn parse_installed(value: &Value) -> Option<InstalledRoute> {
    let id = value.get("@id")?.as_str()?;
    if !id.starts_with(ROUTE_ID_PREFIX) {
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
        let port = dial.strip_prefix("127.0.0.1:")?.parse::<u16>().ok()?;
        let route = Route {
            lease_id,
            host,
            upstream: Upstream::LoopbackPort(port),
        };
        (route_json(&route) == *value).then_some(route)
    })();
    Some(InstalledRoute {
        id: id.to_owned(),
        route,
    })
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
    /// the old one while it stops is reset without being run. Such a request (no answer,
    /// not a timeout) is sent again, at most twice: it never ran, so it cannot apply twice.
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
                Err(e) if attempt < 2 && !e.is_timeout() && !e.is_connect() => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
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
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
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

    /// Inserts a route ahead of every other route of the server.
    async fn insert_first(&self, json: &Value) -> Result<(), RouteError> {
        let routes_path = self.routes_path();
        let current = self.expect_ok(Method::GET, &routes_path, None).await?;
        match current {
            Value::Null => {
                self.expect_ok(
                    Method::PUT,
                    &routes_path,
                    Some(&Value::Array(vec![json.clone()])),
                )
                .await?;
            }
            Value::Array(list) if list.is_empty() => {
                self.expect_ok(Method::POST, &routes_path, Some(json))
                    .await?;
            }
            Value::Array(_) => {
                self.expect_ok(Method::PUT, &format!("{routes_path}/0"), Some(json))
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
        match routes {
            Value::Null => Ok(Vec::new()),
            Value::Array(list) => Ok(list.iter().filter_map(parse_installed).collect()),
            other => Err(RouteError(format!(
                "Caddy's routes are not a list: {}",
                other.to_string().chars().take(200).collect::<String>()
            ))),
        }
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
