//! Reaching an edge: which one (builder calls, environment, profile), how (ssh options,
//! multiplexing), the one connection an [`Edge`] holds (moved to the next destination
//! when its own cannot be reached: `link.rs`), and the control operations that need no
//! tunnel (list, release, delete, health).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use mytunnel_core::calls::{self, CtlCall};
use mytunnel_core::protocol::{CtlRequest, CtlResponse, HealthDto, LeaseDto, ListScope};
use mytunnel_core::transport::call;
use mytunnel_core::transport::{Forward, ForwardSpec, Transport, TransportError};
use mytunnel_core::{LeaseId, LeaseRef};
use tokio::sync::watch;

use crate::error::TunnelError;
use crate::profile::{self, ExplicitEdge, ResolvedEdge, TunnelProfile};
use crate::ssh::{Multiplexing, SshConfig, SshTransport};
use crate::tunnel::TunnelBuilder;

mod link;

use link::{move_reason, Connector, Link, Reach};
pub(crate) use link::{Current, Move};

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
    /// A transport per destination instead of ssh.
    pub(crate) connector: Option<Connector>,
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

    /// Reach each destination of the resolved edge through the transport `connect` makes
    /// for it instead of ssh (`Err`: the destination cannot be reached), with the
    /// failover between destinations as over ssh. For tests; [`EdgeBuilder::transport`]
    /// gives one transport and no destinations.
    #[doc(hidden)]
    pub fn connector(
        mut self,
        connect: impl Fn(&str) -> Result<Arc<dyn Transport>, TransportError> + Send + Sync + 'static,
    ) -> Self {
        self.settings.connector = Some(Connector(Arc::new(connect)));
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
    /// transport) that every tunnel opened on the [`Edge`] shares. An edge of several
    /// destinations connects the first that can be reached, in order.
    pub async fn connect(self) -> Result<Edge, TunnelError> {
        self.validate()?;
        if let Some(transport) = self.settings.transport {
            return Ok(Edge::from_transport(transport));
        }
        let resolved = self.resolve()?;
        let reach = Reach {
            builder: self,
            resolved,
        };
        let connected = reach
            .connect_first(0, reach.count())
            .await
            .map_err(TunnelError::Connect)?;
        // Destinations passed over are said as a move from the first.
        let moved = match connected.passed_over.split_first() {
            Some(((first, why), rest)) => Some(Move {
                from: first.clone(),
                to: reach
                    .destination(connected.index)
                    .unwrap_or_default()
                    .to_owned(),
                reason: move_reason(&link::why(why), rest),
            }),
            None => None,
        };
        let link = Link {
            current: Current {
                generation: 0,
                index: connected.index,
                transport: connected.transport,
                moved,
            },
            ssh: connected.ssh,
        };
        Ok(Edge::new(link, Some(reach)))
    }

    /// The ssh configuration for one destination of a resolved edge.
    pub(crate) fn ssh_config(&self, edge: &ResolvedEdge, destination: &str) -> SshConfig {
        let mut config = SshConfig::new(destination);
        config.ssh_bin = edge.ssh_bin.clone();
        config.remote_bin = edge.remote_bin.clone();
        config.multiplexing = self.settings.multiplexing;
        config.remote_overrides = self.settings.remote_overrides.clone();
        config.extra_options = self.settings.ssh_options.clone();
        // With another destination to go to, an edge that refuses connections is not
        // waited for as long as a lone edge restarting is.
        if edge.destinations.count() > 1 {
            config.handshake_retry = config.handshake_retry.min(FAILOVER_HANDSHAKE_RETRY);
        }
        config
    }

    /// The multiplexing asked for.
    pub(crate) fn multiplexing_setting(&self) -> Multiplexing {
        self.settings.multiplexing
    }

    /// Whether one transport replaces ssh (no edge is resolved).
    pub(crate) fn has_transport(&self) -> bool {
        self.settings.transport.is_some()
    }
}

/// How long a destination that refuses connections is retried before the next one, when
/// the edge has several (a lone edge's is [`crate::ssh::SshConfig::handshake_retry`]).
pub const FAILOVER_HANDSHAKE_RETRY: Duration = Duration::from_secs(3);

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
    /// The connection now; replaced when it moves to another destination.
    link: Mutex<Link>,
    /// Held while the connection moves, so that one move is made at a time.
    moving: tokio::sync::Mutex<()>,
    /// The resolved edge and how to reach each destination; `None` for a transport given
    /// as is (no destinations to move between).
    reach: Option<Reach>,
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
        let link = Link {
            current: Current {
                generation: 0,
                index: 0,
                transport,
                moved: None,
            },
            ssh: None,
        };
        Edge::new(link, None)
    }

    fn new(link: Link, reach: Option<Reach>) -> Edge {
        Edge {
            inner: Arc::new(EdgeInner {
                link: Mutex::new(link),
                moving: tokio::sync::Mutex::new(()),
                reach,
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

    /// The resolved edge, when reached over ssh (or a connector).
    pub fn resolved(&self) -> Option<&ResolvedEdge> {
        self.inner.reach.as_ref().map(|reach| &reach.resolved)
    }

    /// The destination the connection reaches now: the first of the resolved edge's
    /// destinations that answered, or the one it moved to since. `None` for an edge
    /// over a transport given as is.
    pub fn destination(&self) -> Option<String> {
        self.destination_at(self.current().index)
    }

    fn lock_link(&self) -> MutexGuard<'_, Link> {
        self.inner
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection now.
    pub(crate) fn current(&self) -> Current {
        self.lock_link().current.clone()
    }

    /// The transport of the connection now.
    pub(crate) fn transport(&self) -> Arc<dyn Transport> {
        Arc::clone(&self.lock_link().current.transport)
    }

    /// Destination `index` of the resolved edge.
    pub(crate) fn destination_at(&self, index: usize) -> Option<String> {
        let reach = self.inner.reach.as_ref()?;
        reach.destination(index).map(str::to_owned)
    }

    /// Whether the connection has another destination to move to.
    pub(crate) fn can_move(&self) -> bool {
        self.inner
            .reach
            .as_ref()
            .is_some_and(|reach| reach.count() > 1)
    }

    /// Moves the connection on from `seen` (which the caller found unreachable, for
    /// `reason`) to the next destination that can be reached, in order, wrapping, never
    /// `seen`'s own; the connection left is ended. If the connection has moved since
    /// `seen`, that move is the answer. An error when no other destination answers (the
    /// connection stays), or the edge is closing.
    pub(crate) async fn move_on(
        &self,
        seen: &Current,
        reason: &str,
    ) -> Result<Current, TransportError> {
        let _one_at_a_time = self.inner.moving.lock().await;
        let now = self.current();
        if now.generation != seen.generation {
            return Ok(now);
        }
        let Some(reach) = self.inner.reach.as_ref().filter(|r| r.count() > 1) else {
            return Err(TransportError::Unreachable(reason.to_owned()));
        };
        if *self.inner.closing.borrow() {
            return Err(TransportError::Unreachable("the edge is closing".into()));
        }
        let others = reach.count().saturating_sub(1);
        let connected = reach
            .connect_first(seen.index.saturating_add(1), others)
            .await
            .map_err(|e| {
                TransportError::Unreachable(format!(
                    "{reason}; no other destination answered either: {}",
                    link::why(&e)
                ))
            })?;
        let from = reach.destination(seen.index).unwrap_or_default().to_owned();
        let to = reach
            .destination(connected.index)
            .unwrap_or_default()
            .to_owned();
        tracing::info!(%from, %to, %reason, "the edge is unreachable; moved to the next destination");
        let next = Link {
            current: Current {
                generation: seen.generation.saturating_add(1),
                index: connected.index,
                transport: connected.transport,
                moved: Some(Move {
                    from,
                    to,
                    reason: move_reason(reason, &connected.passed_over),
                }),
            },
            ssh: connected.ssh,
        };
        let current = next.current.clone();
        let left = std::mem::replace(&mut *self.lock_link(), next);
        end_link(left);
        Ok(current)
    }

    /// Runs one control call, moving the connection on (and trying again) while its
    /// destination cannot be reached and another destination can.
    async fn call<C: CtlCall + Clone>(&self, ctl_call: C) -> Result<C::Reply, TransportError> {
        let mut current = self.current();
        let mut tried = vec![current.index];
        loop {
            match call(current.transport.as_ref(), ctl_call.clone()).await {
                Err(TransportError::Unreachable(why)) if self.can_move() => {
                    let moved = self.move_on(&current, &why).await?;
                    if tried.contains(&moved.index) {
                        return Err(TransportError::Unreachable(why));
                    }
                    tried.push(moved.index);
                    current = moved;
                }
                other => return other,
            }
        }
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
        self.call(calls::List(scope)).await
    }

    /// Releases a lease; answers it tombstoned.
    pub async fn release(&self, lease: LeaseRef) -> Result<LeaseDto, TransportError> {
        self.call(calls::Release(lease)).await
    }

    /// Deletes a lease; answers its id.
    pub async fn delete(&self, lease: LeaseRef) -> Result<LeaseId, TransportError> {
        self.call(calls::Delete(lease))
            .await
            .map(|deleted| deleted.deleted)
    }

    /// The health of the edge the connection reaches now.
    pub async fn health(&self) -> Result<HealthDto, TransportError> {
        call(self.transport().as_ref(), calls::Health).await
    }

    /// Closes every tunnel opened on this edge (each stops its data plane and releases
    /// its lease) and waits for them, then ends the connection. Clones of this `Edge`
    /// still held can open no more tunnels ([`TunnelError::EdgeClosed`]); their control
    /// calls keep working until the last clone is dropped, which ends the connection.
    pub async fn close(self) {
        self.inner.closing.send_replace(true);
        self.inner.closing.closed().await;
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            let (transport, ssh) = inner.take_link();
            if let Some(ssh) = ssh {
                // Ours is the other reference: without it, the ssh transport is unique.
                drop(transport);
                close_ssh(ssh).await;
            }
        }
    }
}

impl EdgeInner {
    /// The connection's transport and ssh, a stand-in left in their place.
    fn take_link(&self) -> (Arc<dyn Transport>, Option<Arc<SshTransport>>) {
        let mut link = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        let ssh = link.ssh.take();
        let transport = std::mem::replace(&mut link.current.transport, Arc::new(Closed));
        (transport, ssh)
    }
}

impl Drop for EdgeInner {
    fn drop(&mut self) {
        let (transport, ssh) = self.take_link();
        end_link(Link {
            current: Current {
                generation: 0,
                index: 0,
                transport,
                moved: None,
            },
            ssh,
        });
    }
}

/// Ends a connection no longer used: ending ssh waits for it, so on the current runtime,
/// never in the dropping thread. Without a runtime there is nothing to block, and the
/// drops end it in place.
fn end_link(link: Link) {
    let Link { current, ssh } = link;
    let Some(ssh) = ssh else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let transport = current.transport;
    runtime.spawn(async move {
        drop(transport);
        close_ssh(ssh).await;
    });
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
