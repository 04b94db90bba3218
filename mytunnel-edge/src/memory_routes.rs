//! An in-memory [`RouteBackend`] for tests and examples: a list of routes, with a switch
//! that makes it fail like an unreachable Caddy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use mytunnel_core::route::{InstalledRoute, Route, RouteBackend, RouteError};

/// Routes held in memory, in insertion order (newest first, like Caddy's index 0).
#[derive(Debug, Default)]
pub struct MemoryRoutes {
    routes: Mutex<Vec<InstalledRoute>>,
    unavailable: AtomicBool,
}

impl MemoryRoutes {
    /// An empty, available backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail (`true`) or succeed again (`false`).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// A copy of every route held.
    pub fn snapshot(&self) -> Vec<InstalledRoute> {
        self.lock().clone()
    }

    /// Inserts a raw entry, as a hand edit or a crash half-way would leave it.
    pub fn insert_raw(&self, route: InstalledRoute) {
        self.lock().insert(0, route);
    }

    /// Forgets every route, as a Caddy restarted with its config lost.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<InstalledRoute>> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check(&self) -> Result<(), RouteError> {
        if self.unavailable.load(Ordering::SeqCst) {
            Err(RouteError("in-memory routes: marked unavailable".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl RouteBackend for MemoryRoutes {
    async fn upsert(&self, route: &Route) -> Result<(), RouteError> {
        self.check()?;
        let mut routes = self.lock();
        let entry = InstalledRoute {
            id: route.id(),
            route: Some(route.clone()),
        };
        match routes.iter_mut().find(|r| r.id == entry.id) {
            Some(existing) => *existing = entry,
            None => routes.insert(0, entry),
        }
        Ok(())
    }

    async fn remove(&self, route_id: &str) -> Result<bool, RouteError> {
        self.check()?;
        let mut routes = self.lock();
        let before = routes.len();
        routes.retain(|r| r.id != route_id);
        Ok(routes.len() != before)
    }

    async fn list(&self) -> Result<Vec<InstalledRoute>, RouteError> {
        self.check()?;
        Ok(self.snapshot())
    }

    async fn ping(&self) -> Result<(), RouteError> {
        self.check()
    }
}
