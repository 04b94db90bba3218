//! The handle of a running tunnel: its URL, lease and events; closing it.

use super::*;

/// A running tunnel. Dropping it stops the data plane and releases the lease
/// (best effort, in the background: the drop itself only signals the tunnel's task and
/// never blocks the runtime); [`TunnelHandle::close`] does it and waits. Either way the
/// [`Edge`] it was opened on and its other tunnels keep running; a tunnel from
/// [`Tunnel::http`](super::Tunnel::http) also ends its own connection.
#[derive(Debug)]
pub struct TunnelHandle {
    pub(super) url: String,
    pub(super) app: Arc<AppLink>,
    pub(super) lease: watch::Receiver<LeaseDto>,
    /// Only to resubscribe from: the supervisor holds the only sender, so the stream
    /// closes when the tunnel ends.
    pub(super) events: broadcast::Receiver<TunnelEvent>,
    pub(super) first_events: Option<broadcast::Receiver<TunnelEvent>>,
    pub(super) stop: Option<oneshot::Sender<()>>,
    pub(super) task: Option<JoinHandle<Result<(), TunnelError>>>,
}

impl TunnelHandle {
    /// The public URL, `https://<slug>.<base-domain>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the app listens, as given: `http://localhost:3000`, `https://[::1]:8443`.
    pub fn upstream(&self) -> &Upstream {
        self.app.upstream()
    }

    /// The app's address that answered last: for a port alone, 127.0.0.1 or ::1,
    /// whichever the app listens on.
    pub fn app_address(&self) -> Option<std::net::SocketAddr> {
        self.app.answered()
    }

    /// The current lease (it changes if the lease is lost and allocated again).
    pub fn lease(&self) -> LeaseDto {
        self.lease.borrow().clone()
    }

    /// The event stream. The first call sees every event since `open()` began (so
    /// `Allocated` and `Forwarding` are there); later calls see events from then on. It
    /// ends when the tunnel ends. See [`TunnelEvents`] for a reader that falls behind.
    pub fn events(&mut self) -> TunnelEvents {
        TunnelEvents::new(
            self.first_events
                .take()
                .unwrap_or_else(|| self.events.resubscribe()),
        )
    }

    /// Stops the data plane, releases the lease and waits for both (and, for a tunnel
    /// from [`Tunnel::http`](super::Tunnel::http), for its connection to end).
    pub async fn close(mut self) -> Result<(), TunnelError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join().await
    }

    /// Waits until the tunnel ends by itself (only when reconnecting is off, or the
    /// name was lost to another lease).
    pub async fn closed(&mut self) -> Result<(), TunnelError> {
        self.join().await
    }

    async fn join(&mut self) -> Result<(), TunnelError> {
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| {
                Err(TunnelError::ForwardEnded(format!("supervisor failed: {e}")))
            }),
            None => Ok(()),
        }
    }
}

impl Drop for TunnelHandle {
    fn drop(&mut self) {
        // Dropping the sender tells the supervisor to stop and release; the supervisor's
        // task does both on its runtime. Dropping the join handle detaches that task: the
        // drop waits for nothing.
        self.stop.take();
    }
}
