//! The edge's Caddy: its address, and the routes the bench loads and counts.

use super::*;

impl Edge {
    /// Caddy's HTTP address.
    pub fn http(&self) -> SocketAddr {
        self.caddy.http_address()
    }

    /// Replaces Caddy's whole config in one `POST /load`: the base config (HTTP server
    /// `srv0`, catch-all 404 last) with `routes` in front.
    pub fn load_routes(&self, routes: Vec<Value>) -> Result<()> {
        let admin = self.caddy.admin_socket();
        let mut config = base_config(admin, self.http(), true);
        let catch_all = config
            .pointer("/apps/http/servers/srv0/routes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut all = routes;
        all.extend(catch_all);
        if let Some(slot) = config.pointer_mut("/apps/http/servers/srv0/routes") {
            *slot = Value::Array(all);
        }
        admin_request(admin, "POST", "/load", Some(&config))
            .map_err(|e| format!("Caddy POST /load: {e}"))?;
        self.caddy.settle();
        Ok(())
    }

    /// How many routes Caddy holds under a `mytunnel-` id.
    pub fn mytunnel_route_count(&self) -> Result<usize> {
        let text = self
            .caddy
            .routes()
            .map_err(|e| format!("Caddy GET routes: {e}"))?;
        let routes: Value =
            serde_json::from_str(&text).map_err(|e| format!("Caddy routes are not JSON: {e}"))?;
        Ok(routes
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|r| {
                        r.get("@id")
                            .and_then(Value::as_str)
                            .is_some_and(|id| id.starts_with("mytunnel-"))
                    })
                    .count()
            })
            .unwrap_or(0))
    }

    /// Adds a route `host` → `127.0.0.1:<port>` ahead of the others (the Caddy → app path).
    pub fn add_direct_route(&self, host: &str, port: u16) -> Result<()> {
        let route = json!({
            "@id": "bench-direct",
            "match": [{ "host": [host] }],
            "handle": [{
                "handler": "reverse_proxy",
                "upstreams": [{ "dial": format!("127.0.0.1:{port}") }],
            }],
            "terminal": true,
        });
        admin_request(
            self.caddy.admin_socket(),
            "PUT",
            "/config/apps/http/servers/srv0/routes/0",
            Some(&route),
        )
        .map_err(|e| format!("Caddy: add the direct route: {e}"))?;
        self.caddy.settle();
        Ok(())
    }
}
