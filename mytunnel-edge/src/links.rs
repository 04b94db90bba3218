//! `static` mode's routes: host links instead of Caddy routes.
//!
//! Caddy holds one wildcard route that dials `<socket_dir>/hosts/<slug>.sock`. Each entry
//! there is a symlink to the lease's socket in its owner's directory,
//! `<socket_dir>/owners/<owner>/<lease_id>.sock`. Lease changes only add and remove links,
//! so Caddy's configuration never changes and nothing it proxies is ever interrupted.
//!
//! Only `mytunneld serve` (the service user) can write `hosts/`: a tunnel user who could
//! write there could bind a socket under any host with `ssh -R`. serve is also the only
//! process that runs the lease service, so the links it writes are what the database
//! says.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use mytunnel_core::route::{
    lease_id_of_route, InstalledRoute, Route, RouteBackend, RouteError, Upstream,
};
use mytunnel_core::{BaseDomain, SocketPath};

use crate::caddy::{static_route_json, CaddyRoutes};

/// The id under which [`HostLinks::list`] reports an entry of `hosts/` that is not a
/// link mytunnel wrote; [`HostLinks::remove`] takes it back.
const JUNK_PREFIX: &str = "mytunnel-link:";

/// The links in `hosts/`, written directly (by `serve`).
#[derive(Debug, Clone)]
pub struct HostLinks {
    hosts_dir: PathBuf,
    base_domain: BaseDomain,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> RouteError {
    RouteError(format!("{what} {}: {e}", path.display()))
}

impl HostLinks {
    /// The links of hosts under `base_domain` in `hosts_dir`.
    pub fn new(hosts_dir: PathBuf, base_domain: BaseDomain) -> Self {
        HostLinks {
            hosts_dir,
            base_domain,
        }
    }

    /// `<hosts_dir>/<slug>.sock` for a host of the base domain.
    fn link_path(&self, route: &Route) -> Result<PathBuf, RouteError> {
        let suffix = format!(".{}", self.base_domain);
        let slug = route
            .host
            .as_str()
            .strip_suffix(&suffix)
            .filter(|slug| !slug.is_empty() && !slug.contains('.'))
            .ok_or_else(|| {
                RouteError(format!(
                    "{} is not one label under {}",
                    route.host, self.base_domain
                ))
            })?;
        Ok(self.hosts_dir.join(format!("{slug}.sock")))
    }

    /// Every entry of `hosts/` with where it points, skipping our temporary names.
    fn entries(&self) -> Result<Vec<(String, Option<SocketPath>)>, RouteError> {
        let dir = std::fs::read_dir(&self.hosts_dir)
            .map_err(|e| io_error("cannot read", &self.hosts_dir, e))?;
        let mut entries = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| io_error("cannot read", &self.hosts_dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let target = std::fs::read_link(entry.path())
                .ok()
                .and_then(|t| t.to_str()?.parse::<SocketPath>().ok());
            entries.push((name, target));
        }
        Ok(entries)
    }

    fn unlink(&self, name: &str) -> Result<(), RouteError> {
        let path = self.hosts_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("cannot remove", &path, e)),
        }
    }
}

#[async_trait]
impl RouteBackend for HostLinks {
    async fn upsert(&self, route: &Route) -> Result<(), RouteError> {
        let Upstream::UnixSocket(target) = &route.upstream else {
            return Err(RouteError(format!(
                "{} binds a port; static routes only link sockets",
                route.lease_id
            )));
        };
        let link = self.link_path(route)?;
        if std::fs::read_link(&link).is_ok_and(|t| t.as_os_str() == target.as_str()) {
            return Ok(());
        }
        // A new link under a temporary name, renamed over the old one: a request never
        // finds the host missing while its link is replaced.
        let temporary = self.hosts_dir.join(format!(".{}.tmp", route.lease_id));
        let _ = std::fs::remove_file(&temporary);
        std::os::unix::fs::symlink(target.as_str(), &temporary)
            .map_err(|e| io_error("cannot create", &temporary, e))?;
        std::fs::rename(&temporary, &link).map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            io_error("cannot rename a link to", &link, e)
        })
    }

    async fn remove(&self, route_id: &str) -> Result<bool, RouteError> {
        if let Some(name) = route_id.strip_prefix(JUNK_PREFIX) {
            self.unlink(name)?;
            return Ok(true);
        }
        let Some(lease) = lease_id_of_route(route_id) else {
            return Ok(false);
        };
        let mut removed = false;
        for (name, target) in self.entries()? {
            if target.and_then(|t| t.lease_id()).as_ref() == Some(&lease) {
                self.unlink(&name)?;
                removed = true;
            }
        }
        Ok(removed)
    }

    /// The link of the route's host, if it still points at the route's socket.
    async fn remove_route(&self, route: &Route) -> Result<bool, RouteError> {
        let Upstream::UnixSocket(target) = &route.upstream else {
            return self.remove(&route.id()).await;
        };
        let link = self.link_path(route)?;
        match std::fs::read_link(&link) {
            Ok(current) if current.as_os_str() == target.as_str() => {
                let name = link
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                self.unlink(name)?;
                Ok(true)
            }
            // Another lease's link now (the name was taken again), or none.
            _ => Ok(false),
        }
    }

    async fn list(&self) -> Result<Vec<InstalledRoute>, RouteError> {
        let mut routes = Vec::new();
        for (name, target) in self.entries()? {
            let route = (|| {
                let target = target?;
                let lease_id = target.lease_id()?;
                let slug = name.strip_suffix(".sock")?;
                let host = format!("{slug}.{}", self.base_domain).parse().ok()?;
                Some(Route {
                    lease_id,
                    host,
                    upstream: Upstream::UnixSocket(target),
                    forwarding: None,
                })
            })();
            routes.push(match route {
                Some(route) => InstalledRoute {
                    id: route.id(),
                    route: Some(route),
                },
                None => InstalledRoute {
                    id: format!("{JUNK_PREFIX}{name}"),
                    route: None,
                },
            });
        }
        Ok(routes)
    }

    async fn ping(&self) -> Result<(), RouteError> {
        nix::unistd::access(&self.hosts_dir, nix::unistd::AccessFlags::W_OK)
            .map_err(|e| RouteError(format!("cannot write {}: {e}", self.hosts_dir.display())))
    }
}

/// `static` mode's backend: socket leases by host links, port leases (allocated before the
/// switch from `routes` mode) still by their Caddy routes, which come first in Caddy's
/// list; and the wildcard route itself, made by [`RouteBackend::prepare`].
#[derive(Debug, Clone)]
pub struct StaticRoutes {
    caddy: CaddyRoutes,
    links: Arc<dyn RouteBackend>,
    static_route: serde_json::Value,
}

impl StaticRoutes {
    /// Routes for `base_domain` whose links live in `<socket_dir>/hosts` (and whose Hosts
    /// with capitals Caddy asks `serve` about on `<socket_dir>/names.sock`).
    pub fn new(
        caddy: CaddyRoutes,
        links: Arc<dyn RouteBackend>,
        base_domain: &BaseDomain,
        socket_dir: &Path,
    ) -> Self {
        StaticRoutes {
            caddy,
            links,
            static_route: static_route_json(base_domain, socket_dir),
        }
    }
}

#[async_trait]
impl RouteBackend for StaticRoutes {
    async fn upsert(&self, route: &Route) -> Result<(), RouteError> {
        match route.upstream {
            Upstream::UnixSocket(_) => self.links.upsert(route).await,
            Upstream::LoopbackPort(_) | Upstream::Edge(_) => self.caddy.upsert(route).await,
        }
    }

    async fn remove(&self, route_id: &str) -> Result<bool, RouteError> {
        if route_id.starts_with(JUNK_PREFIX) {
            return self.links.remove(route_id).await;
        }
        let linked = self.links.remove(route_id).await?;
        let routed = self.caddy.remove(route_id).await?;
        Ok(linked || routed)
    }

    async fn remove_route(&self, route: &Route) -> Result<bool, RouteError> {
        match route.upstream {
            Upstream::UnixSocket(_) => self.links.remove_route(route).await,
            Upstream::LoopbackPort(_) | Upstream::Edge(_) => self.caddy.remove_route(route).await,
        }
    }

    /// A host link is a file: it cannot say where to go when its socket is gone.
    fn falls_back(&self, upstream: &Upstream) -> bool {
        !matches!(upstream, Upstream::UnixSocket(_))
    }

    async fn list(&self) -> Result<Vec<InstalledRoute>, RouteError> {
        let mut routes = self.links.list().await?;
        routes.extend(self.caddy.list().await?);
        Ok(routes)
    }

    async fn ping(&self) -> Result<(), RouteError> {
        self.links.ping().await?;
        self.caddy.ping().await
    }

    async fn prepare(&self) -> Result<(), RouteError> {
        self.caddy.ensure_static_route(&self.static_route).await
    }
}
