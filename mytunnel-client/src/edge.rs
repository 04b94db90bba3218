//! Reaching an edge: which one (builder calls, environment, profile), how (ssh options,
//! multiplexing), the one connection an [`Edge`] holds, and the control operations that
//! need no tunnel (list, release, delete, health).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use mytunnel_core::calls;
use mytunnel_core::protocol::{CtlRequest, CtlResponse, HealthDto, LeaseDto, ListScope};
use mytunnel_core::transport::call;
use mytunnel_core::transport::{Forward, ForwardSpec, Transport, TransportError};
use mytunnel_core::{LeaseId, LeaseRef};
use tokio::sync::watch;

use crate::error::TunnelError;
use crate::profile::{self, ExplicitEdge, ResolvedEdge, TunnelProfile};
use crate::ssh::{Multiplexing, SshConfig, SshTransport};
use crate::tunnel::TunnelBuilder;

/// How to reach an edge, as the builder calls gave it.
#[derive(Debug, Clone, Default)]
pub(crate) struct EdgeSettings {
    /// Given explicitly (`.edge`, `.ssh_bin`, `.remote_bin`, `.base_domain`).
    pub(crate) explicit: ExplicitEdge,
    /// One SSH connection for everything, or one ssh per command and per tunnel.
    pub(crate) multiplexing: Multiplexing,
    /// Daemon settings passed to every remote ctl command (refused by the gate).
    pub(crate) remote_overrides: Vec<(String, String)>,
    /// Extra `ssh -o` options.
    pub(crate) ssh_options: Vec<String>,
    /// The profile file (default `~/.config/mytunnel/config.toml`).
    pub(crate) config_path: Option<PathBuf>,
    /// The environment to read `MYTUNNEL_*` from (default: this process's).
    pub(crate) environment: Option<BTreeMap<String, String>>,
    /// A transport to use instead of ssh.
    pub(crate) transport: Option<Arc<dyn Transport>>,
}

/// Options of an edge connection; [`EdgeBuilder::connect`] opens it.
///
/// Every option has a default: with none, the edge comes from `MYTUNNEL_EDGE`, then the
/// default profile of `~/.config/mytunnel/config.toml` (see [`crate::profile`]).
#[derive(Debug, Clone, Default)]
pub struct EdgeBuilder {
    settings: EdgeSettings,
}

impl EdgeBuilder {
    /// The edge: a profile name or an ssh destination (else `MYTUNNEL_EDGE`, else the
    /// default profile).
    pub fn edge(mut self, edge: impl Into<String>) -> Self {
        self.settings.explicit.edge = Some(edge.into());
        self
    }

    /// The ssh binary (else `MYTUNNEL_SSH_BIN`, the profile, `ssh`).
    pub fn ssh_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.explicit.ssh_bin = Some(path.into());
        self
    }

    /// The remote `mytunneld` (else `MYTUNNEL_REMOTE_BIN`, the profile, `mytunneld`).
    pub fn remote_bin(mut self, path: impl Into<String>) -> Self {
        self.settings.explicit.remote_bin = Some(path.into());
        self
    }

    /// The base domain URLs are expected under (a check; the edge decides the host).
    pub fn base_domain(mut self, domain: impl Into<String>) -> Self {
        self.settings.explicit.base_domain = Some(domain.into());
        self
    }

    /// One SSH connection for every control command and forward (the default), or one
    /// ssh per command and per tunnel (for ssh clients without multiplexing).
    pub fn multiplexing(mut self, multiplexing: Multiplexing) -> Self {
        self.settings.multiplexing = multiplexing;
        self
    }

    /// An extra `ssh -o` option for every ssh the edge runs (e.g. `Port=2222`).
    pub fn ssh_option(mut self, option: impl Into<String>) -> Self {
        self.settings.ssh_options.push(option.into());
        self
    }

    /// The profile file (default `~/.config/mytunnel/config.toml`).
    pub fn config_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.config_path = Some(path.into());
        self
    }

    /// The environment edge settings are read from (default: this process's), `HOME`
    /// for the profile file included. For tests.
    #[doc(hidden)]
    pub fn environment(mut self, env: BTreeMap<String, String>) -> Self {
        self.settings.environment = Some(env);
        self
    }

    /// Talk to the edge through this transport instead of ssh. For tests; the public form
    /// is [`Edge::from_transport`].
    #[doc(hidden)]
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.settings.transport = Some(transport);
        self
    }

    /// A daemon setting passed to every remote ctl command (e.g. `("--db-path", "/x")`).
    /// The SSH gate refuses these; they serve edges reached without the gate (tests, and
    /// the CLI's remote overrides).
    #[doc(hidden)]
    pub fn remote_override(mut self, flag: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings
            .remote_overrides
            .push((flag.into(), value.into()));
        self
    }

    /// Checks the options without contacting anything.
    pub fn validate(&self) -> Result<(), TunnelError> {
        for (flag, _) in &self.settings.remote_overrides {
            if !mytunnel_core::protocol::is_override_word(flag) {
                return Err(TunnelError::InvalidOptions(format!(
                    "remote_override({flag:?}, ..): not a daemon setting"
                )));
            }
        }
        Ok(())
    }

    /// The environment settings are read from, and the profile file with its path.
    fn environment_and_config(
        &self,
    ) -> Result<(BTreeMap<String, String>, PathBuf, profile::ClientConfig), TunnelError> {
        let env = self
            .settings
            .environment
            .clone()
            .unwrap_or_else(|| std::env::vars().collect());
        let config_path = self
            .settings
            .config_path
            .clone()
            .unwrap_or_else(|| profile::default_config_path(&env));
        let config = profile::load_config(&config_path)?;
        Ok((env, config_path, config))
    }

    /// The `[tunnels.<name>]` profile of the profile file, if it has one.
    pub fn tunnel_profile(&self, name: &str) -> Result<Option<TunnelProfile>, TunnelError> {
        let (_, _, mut config) = self.environment_and_config()?;
        Ok(config.tunnels.remove(name))
    }

    /// A tunnel with the options of profile `[tunnels.<name>]` (see
    /// [`TunnelProfile::tunnel`]); [`profile::ProfileError::NoTunnel`] if there is none.
    pub fn http_profile(self, name: &str) -> Result<TunnelBuilder, TunnelError> {
        match self.tunnel_profile(name)? {
            Some(tunnel) => tunnel.tunnel(self),
            None => Err(TunnelError::Edge(profile::ProfileError::NoTunnel {
                name: name.to_owned(),
                config_path: self.environment_and_config()?.1,
            })),
        }
    }

    /// Whether an edge was named with [`EdgeBuilder::edge`].
    pub(crate) fn names_edge(&self) -> bool {
        self.settings.explicit.edge.is_some()
    }

    /// Resolves the edge (builder call > environment > profile > default) without
    /// contacting it.
    pub fn resolve(&self) -> Result<ResolvedEdge, TunnelError> {
        let (env, config_path, config) = self.environment_and_config()?;
        Ok(profile::resolve_edge(
            &self.settings.explicit,
            &env,
            &config,
            &config_path,
        )?)
    }

    /// A tunnel that connects an edge of its own with these options when it opens, and
    /// ends that connection when it ends: what [`crate::Tunnel::http`] returns.
    /// The app's `target` is as for [`crate::Tunnel::http`].
    pub fn http(self, target: impl crate::IntoUpstream) -> TunnelBuilder {
        TunnelBuilder::new(target, self)
    }

    /// Connects: one connection to the edge (ssh to the resolved edge, or the given
    /// transport) that every tunnel opened on the [`Edge`] shares.
    pub async fn connect(self) -> Result<Edge, TunnelError> {
        self.validate()?;
        if let Some(transport) = self.settings.transport {
            return Ok(Edge::new(transport, None, None));
        }
        let resolved = self.resolve()?;
        let ssh = SshTransport::connect(self.ssh_config(&resolved, resolved.destinations.first()))
            .await
            .map_err(TunnelError::Connect)?;
        let ssh = Arc::new(ssh);
        Ok(Edge::new(ssh.clone(), Some(ssh), Some(resolved)))
    }

    /// The ssh configuration for one destination of a resolved edge.
    pub(crate) fn ssh_config(&self, edge: &ResolvedEdge, destination: &str) -> SshConfig {
        let mut config = SshConfig::new(destination);
        config.ssh_bin = edge.ssh_bin.clone();
        config.remote_bin = edge.remote_bin.clone();
        config.multiplexing = self.settings.multiplexing;
        config.remote_overrides = self.settings.remote_overrides.clone();
        config.extra_options = self.settings.ssh_options.clone();
        config
    }

    /// The multiplexing asked for.
    pub(crate) fn multiplexing_setting(&self) -> Multiplexing {
        self.settings.multiplexing
    }

    /// Whether a transport replaces ssh.
    pub(crate) fn has_transport(&self) -> bool {
        self.settings.transport.is_some()
    }
}

/// One connection to an edge, shared by every tunnel opened on it, and the control
/// operations that need no tunnel.
///
/// ```no_run
/// use mytunnel_client::Edge;
///
/// # async fn run() -> Result<(), mytunnel_client::TunnelError> {
/// let edge = Edge::builder().edge("tunnel@edge.example.com").connect().await?;
/// let shop = edge.http(3000).name("shop").open().await?;
/// let blog = edge.http(8080).name("blog").open().await?;
/// println!("{} {}", shop.url(), blog.url());
/// edge.close().await; // closes both tunnels, then the connection
/// # Ok(())
/// # }
/// ```
///
/// Cloning is cheap: clones share the connection. Closing or dropping one tunnel leaves
/// the connection and the other tunnels running; the connection ends when
/// [`Edge::close`] is called or the last clone and the last tunnel are gone, in the
/// background on the current Tokio runtime (a drop never blocks it).
#[derive(Debug, Clone)]
pub struct Edge {
    inner: Arc<EdgeInner>,
}

#[derive(Debug)]
struct EdgeInner {
    transport: Arc<dyn Transport>,
    /// The same transport when it is ssh, to end it gracefully.
    ssh: Option<Arc<SshTransport>>,
    resolved: Option<ResolvedEdge>,
    /// `true` once [`Edge::close`] began; every running tunnel holds a receiver, so
    /// [`watch::Sender::closed`] tells when the last one has stopped.
    closing: watch::Sender<bool>,
}

impl Edge {
    /// The options of a connection: `Edge::builder()…connect().await?`.
    pub fn builder() -> EdgeBuilder {
        EdgeBuilder::default()
    }

    /// An edge over any transport: mytunnel-edge's in-process one (tests and examples
    /// without sshd), or one of your own.
    pub fn from_transport(transport: Arc<dyn Transport>) -> Edge {
        Edge::new(transport, None, None)
    }

    fn new(
        transport: Arc<dyn Transport>,
        ssh: Option<Arc<SshTransport>>,
        resolved: Option<ResolvedEdge>,
    ) -> Edge {
        Edge {
            inner: Arc::new(EdgeInner {
                transport,
                ssh,
                resolved,
                closing: watch::Sender::new(false),
            }),
        }
    }

    /// A tunnel on this edge, publishing the app at `target` (a port, `"localhost:5173"`,
    /// `"https://localhost:8443"`…: see [`crate::Tunnel::http`]). Open as many as you
    /// like: they share the connection.
    pub fn http(&self, target: impl crate::IntoUpstream) -> TunnelBuilder {
        TunnelBuilder::on_edge(target, self.clone())
    }

    /// The resolved edge, when reached over ssh.
    pub fn resolved(&self) -> Option<&ResolvedEdge> {
        self.inner.resolved.as_ref()
    }

    pub(crate) fn transport_ref(&self) -> &dyn Transport {
        self.inner.transport.as_ref()
    }

    /// A receiver a running tunnel holds until it has stopped: it says when
    /// [`Edge::close`] began. `None` when it already has.
    pub(crate) fn hold(&self) -> Option<watch::Receiver<bool>> {
        let closing = self.inner.closing.subscribe();
        let closed = *closing.borrow();
        (!closed).then_some(closing)
    }

    /// The caller's leases (admins: `ListScope::All` for everyone's).
    pub async fn list(&self, scope: ListScope) -> Result<Vec<LeaseDto>, TransportError> {
        call(self.transport_ref(), calls::List(scope)).await
    }

    /// Releases a lease; answers it tombstoned.
    pub async fn release(&self, lease: LeaseRef) -> Result<LeaseDto, TransportError> {
        call(self.transport_ref(), calls::Release(lease)).await
    }

    /// Deletes a lease; answers its id.
    pub async fn delete(&self, lease: LeaseRef) -> Result<LeaseId, TransportError> {
        call(self.transport_ref(), calls::Delete(lease))
            .await
            .map(|deleted| deleted.deleted)
    }

    /// The edge's health.
    pub async fn health(&self) -> Result<HealthDto, TransportError> {
        call(self.transport_ref(), calls::Health).await
    }

    /// Closes every tunnel opened on this edge (each stops its data plane and releases
    /// its lease) and waits for them, then ends the connection. Clones of this `Edge`
    /// still held can open no more tunnels ([`TunnelError::EdgeClosed`]); their control
    /// calls keep working until the last clone is dropped, which ends the connection.
    pub async fn close(self) {
        self.inner.closing.send_replace(true);
        self.inner.closing.closed().await;
        if let Ok(mut inner) = Arc::try_unwrap(self.inner) {
            if let Some(ssh) = inner.ssh.take() {
                // Ours is the other reference: without it, the ssh transport is unique.
                drop(std::mem::replace(&mut inner.transport, Arc::new(Closed)));
                close_ssh(ssh).await;
            }
        }
    }
}

impl Drop for EdgeInner {
    fn drop(&mut self) {
        // Ending ssh waits for it: do it on the current runtime, never in the dropping
        // thread. Without a runtime there is nothing to block, and the fields' own drops
        // end it in place.
        let Some(ssh) = self.ssh.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let transport = std::mem::replace(&mut self.transport, Arc::new(Closed));
        runtime.spawn(async move {
            drop(transport);
            close_ssh(ssh).await;
        });
    }
}

/// Ends an ssh transport: gracefully when this is its last reference, else the last
/// holder's drop does.
async fn close_ssh(ssh: Arc<SshTransport>) {
    if let Ok(ssh) = Arc::try_unwrap(ssh) {
        ssh.close().await;
    }
}

/// What stands in for a transport that was handed over to be closed. Nothing can reach
/// it: it only fills the field of an edge being dropped or closed.
#[derive(Debug)]
struct Closed;

#[async_trait]
impl Transport for Closed {
    async fn ctl(&self, _request: &CtlRequest) -> Result<CtlResponse, TransportError> {
        Err(TransportError::Unreachable("the edge was closed".into()))
    }

    async fn open_forward(&self, _spec: ForwardSpec) -> Result<Box<dyn Forward>, TransportError> {
        Err(TransportError::Unreachable("the edge was closed".into()))
    }
}
