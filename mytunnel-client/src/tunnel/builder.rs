//! [`TunnelBuilder`]: a tunnel's options, their checks, and `open`, which probes the app
//! and resolves or joins the edge before [`Opening`] takes over.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mytunnel_core::protocol::{AllocateRequest, Takeover};
use mytunnel_core::transport::Transport;
use mytunnel_core::Slug;
use tokio::sync::broadcast;

use super::opening::Opening;
use super::{ProxyMode, Reconnect, TunnelHandle};
use crate::app_link::AppLink;
use crate::edge::{Edge, EdgeBuilder};
use crate::error::TunnelError;
use crate::events::{TunnelEvent, EVENT_BUFFER};
use crate::inspect::ExchangeLog;
use crate::probe::{probe_app, ProbeOutcome};
use crate::ssh::Multiplexing;
use crate::upstream::{AppCertificates, HostHeader, IntoUpstream, Scheme, Upstream, UpstreamError};

/// Where a tunnel opens.
#[derive(Debug, Clone)]
enum EdgeSource {
    /// [`Tunnel::http`](super::Tunnel::http): on a connection of its own, made with these options.
    Own(Box<EdgeBuilder>),
    /// [`Edge::http`]: on a connected edge. `misplaced` is the first edge option called
    /// on the builder, which cannot apply to a connection already made.
    Shared {
        edge: Edge,
        misplaced: Option<&'static str>,
    },
}

/// Options of a tunnel; [`TunnelBuilder::open`] checks them and opens it.
///
/// Tunnel options (`name`, `ttl`, `takeover`, `reconnect`, `probe_timeout`,
/// `proxy_mode`, `host_header`, `app_certificates`, `exchange_log`) apply to every
/// tunnel. Edge options (`edge`, `ssh_bin`, `remote_bin`, `base_domain`,
/// `multiplexing`, `ssh_option`, `config_path`) are those of [`EdgeBuilder`], for a
/// tunnel from [`Tunnel::http`](super::Tunnel::http), which connects its own edge; on a builder from
/// [`Edge::http`] they are an error ([`TunnelError::InvalidOptions`]): set them on
/// [`Edge::builder`].
#[derive(Debug, Clone)]
pub struct TunnelBuilder {
    upstream: Result<Upstream, UpstreamError>,
    edge: EdgeSource,
    name: Option<String>,
    ttl: Option<Duration>,
    takeover: Takeover,
    reconnect: Reconnect,
    probe_timeout: Duration,
    proxy_mode: ProxyMode,
    host_header: HostHeader,
    app_certificates: AppCertificates,
    exchange_log: Option<ExchangeLog>,
}

impl TunnelBuilder {
    pub(crate) fn new(target: impl IntoUpstream, edge: EdgeBuilder) -> TunnelBuilder {
        TunnelBuilder::with_source(target.into_upstream(), EdgeSource::Own(Box::new(edge)))
    }

    pub(crate) fn on_edge(target: impl IntoUpstream, edge: Edge) -> TunnelBuilder {
        TunnelBuilder::with_source(
            target.into_upstream(),
            EdgeSource::Shared {
                edge,
                misplaced: None,
            },
        )
    }

    fn with_source(upstream: Result<Upstream, UpstreamError>, edge: EdgeSource) -> TunnelBuilder {
        TunnelBuilder {
            upstream,
            edge,
            name: None,
            ttl: None,
            takeover: Takeover::Refuse,
            reconnect: Reconnect::Always,
            probe_timeout: Duration::from_secs(5),
            proxy_mode: ProxyMode::Http,
            host_header: HostHeader::Public,
            app_certificates: AppCertificates::Verify,
            exchange_log: None,
        }
    }

    /// An edge option: applied to the tunnel's own edge, remembered as misplaced on a
    /// connected one.
    fn edge_option(
        mut self,
        method: &'static str,
        set: impl FnOnce(EdgeBuilder) -> EdgeBuilder,
    ) -> Self {
        self.edge = match self.edge {
            EdgeSource::Own(builder) => EdgeSource::Own(Box::new(set(*builder))),
            EdgeSource::Shared { edge, misplaced } => EdgeSource::Shared {
                edge,
                misplaced: misplaced.or(Some(method)),
            },
        };
        self
    }

    /// The name: the tunnel is published at `https://<name>.<base-domain>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The lease TTL to ask for (the edge clamps it to [30s, 24h]).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Take over the name if another lease holds it (edge admins only; needs a name).
    pub fn takeover(mut self, takeover: Takeover) -> Self {
        self.takeover = takeover;
        self
    }

    /// Whether to reconnect when the data plane ends.
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// How long the local probe waits for the app (default 5s).
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// How connections pass to the app: through the HTTP proxy that reports each
    /// request (the default), or as bytes only ([`ProxyMode`]).
    pub fn proxy_mode(mut self, mode: ProxyMode) -> Self {
        self.proxy_mode = mode;
        self
    }

    /// The `Host` header the app sees: the public host (the default),
    /// [`HostHeader::Rewrite`] for the host it listens on (e.g. `localhost:3000`, for
    /// apps that check or route by host), or a value. `X-Forwarded-Host` and
    /// `X-Forwarded-Proto` always carry the public host and `https`. Needs
    /// [`ProxyMode::Http`], which sets headers; [`ProxyMode::Tcp`] passes bytes.
    pub fn host_header(mut self, host_header: HostHeader) -> Self {
        self.host_header = host_header;
        self
    }

    /// How the certificate of an `https://` app is checked: against the system's trust
    /// store (the default), also against given CAs, or not at all
    /// ([`AppCertificates::AcceptAny`], for a self-signed certificate on this machine).
    pub fn app_certificates(mut self, certificates: AppCertificates) -> Self {
        self.app_certificates = certificates;
        self
    }

    /// Records each exchange (headers and the first bytes of each body, within the
    /// log's limits) in `log`, for an inspector; the log can be shared by several
    /// tunnels. Needs [`ProxyMode::Http`]: with [`ProxyMode::Tcp`] there are no
    /// exchanges to record, and `open` fails with [`TunnelError::InvalidOptions`].
    pub fn exchange_log(mut self, log: ExchangeLog) -> Self {
        self.exchange_log = Some(log);
        self
    }

    /// Edge option ([`EdgeBuilder::edge`]): a profile name or an ssh destination.
    pub fn edge(self, edge: impl Into<String>) -> Self {
        let edge = edge.into();
        self.edge_option("edge", |b| b.edge(edge))
    }

    /// Edge option ([`EdgeBuilder::ssh_bin`]): the ssh binary.
    pub fn ssh_bin(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.edge_option("ssh_bin", |b| b.ssh_bin(path))
    }

    /// Edge option ([`EdgeBuilder::remote_bin`]): the remote `mytunneld`.
    pub fn remote_bin(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.edge_option("remote_bin", |b| b.remote_bin(path))
    }

    /// Edge option ([`EdgeBuilder::base_domain`]): the base domain the URL is expected
    /// under.
    pub fn base_domain(self, domain: impl Into<String>) -> Self {
        let domain = domain.into();
        self.edge_option("base_domain", |b| b.base_domain(domain))
    }

    /// Edge option ([`EdgeBuilder::multiplexing`]): one SSH connection for everything,
    /// or one ssh per command and per tunnel.
    pub fn multiplexing(self, multiplexing: Multiplexing) -> Self {
        self.edge_option("multiplexing", |b| b.multiplexing(multiplexing))
    }

    /// Edge option ([`EdgeBuilder::ssh_option`]): an extra `ssh -o` option.
    pub fn ssh_option(self, option: impl Into<String>) -> Self {
        let option = option.into();
        self.edge_option("ssh_option", |b| b.ssh_option(option))
    }

    /// Edge option ([`EdgeBuilder::config_path`]): the profile file.
    pub fn config_path(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.edge_option("config_path", |b| b.config_path(path))
    }

    /// Edge option, for tests: the environment edge settings are read from.
    #[doc(hidden)]
    pub fn environment(self, env: BTreeMap<String, String>) -> Self {
        self.edge_option("environment", |b| b.environment(env))
    }

    /// Edge option, for tests: this transport instead of ssh.
    #[doc(hidden)]
    pub fn transport(self, transport: Arc<dyn Transport>) -> Self {
        self.edge_option("transport", |b| b.transport(transport))
    }

    /// Edge option, for tests: a daemon setting passed to every remote ctl command.
    #[doc(hidden)]
    pub fn remote_override(self, flag: impl Into<String>, value: impl Into<String>) -> Self {
        let (flag, value) = (flag.into(), value.into());
        self.edge_option("remote_override", |b| b.remote_override(flag, value))
    }

    /// The builder of the tunnel's own edge, for a tunnel from [`Tunnel::http`](super::Tunnel::http).
    #[cfg(test)]
    pub(crate) fn edge_builder(&self) -> Option<&EdgeBuilder> {
        match &self.edge {
            EdgeSource::Own(builder) => Some(builder),
            EdgeSource::Shared { .. } => None,
        }
    }

    /// Checks the options without contacting anything: the target, the name, the takeover
    /// rule and the edge options.
    pub fn validate(&self) -> Result<(), TunnelError> {
        self.request().map(drop)
    }

    /// The checked options: the name, and the allocation to ask for.
    fn request(&self) -> Result<(Option<Slug>, AllocateRequest), TunnelError> {
        let upstream = self.upstream.clone()?;
        if self.proxy_mode == ProxyMode::Tcp && self.host_header != HostHeader::Public {
            return Err(TunnelError::InvalidOptions(
                ".host_header(..) is set by the HTTP proxy, and .proxy_mode(ProxyMode::Tcp) \
                 passes bytes without one: use ProxyMode::Http to set the Host header"
                    .into(),
            ));
        }
        if upstream.scheme() == Scheme::Http && self.app_certificates != AppCertificates::Verify {
            return Err(TunnelError::InvalidOptions(format!(
                ".app_certificates(..) applies to an https:// app, and {upstream} is plain \
                 HTTP: leave it out, or target https://{}",
                upstream.authority()
            )));
        }
        let name = self
            .name
            .as_deref()
            .map(str::parse::<Slug>)
            .transpose()
            .map_err(|e| TunnelError::InvalidOptions(e.to_string()))?;
        if self.takeover == Takeover::Force && name.is_none() {
            return Err(TunnelError::InvalidOptions(
                "takeover(Takeover::Force) needs .name(..): only a named lease can be taken over"
                    .into(),
            ));
        }
        if self.proxy_mode == ProxyMode::Tcp && self.exchange_log.is_some() {
            return Err(TunnelError::InvalidOptions(
                ".exchange_log(..) records what the HTTP proxy sees, and \
                 .proxy_mode(ProxyMode::Tcp) passes bytes without one: use ProxyMode::Http \
                 to keep the log"
                    .into(),
            ));
        }
        match &self.edge {
            EdgeSource::Own(builder) => builder.validate()?,
            EdgeSource::Shared {
                misplaced: Some(method),
                ..
            } => {
                return Err(TunnelError::InvalidOptions(format!(
                    ".{method}(..) sets how to reach the edge, and this tunnel opens on an \
                     Edge already connected: call it on Edge::builder() instead"
                )))
            }
            EdgeSource::Shared {
                misplaced: None, ..
            } => {}
        }
        Ok((
            name.clone(),
            AllocateRequest {
                local_port: Some(upstream.port()),
                name,
                ttl: self.ttl,
                takeover: self.takeover,
                replaces: None,
            },
        ))
    }

    /// Probes the local app, allocates, opens the data plane, and hands the tunnel to a
    /// supervisor. Nothing is allocated if the local app does not answer.
    ///
    /// From [`Tunnel::http`](super::Tunnel::http), the tunnel first resolves its edge (before the probe, so a
    /// missing edge is a usage error), then connects it after the probe; the connection
    /// ends with the tunnel. From [`Edge::http`], it opens on that edge's connection.
    pub async fn open(self) -> Result<TunnelHandle, TunnelError> {
        let (name, request) = self.request()?;
        let upstream = self.upstream.clone()?;
        let app = Arc::new(
            AppLink::new(upstream, &self.app_certificates, &self.host_header)
                .map_err(TunnelError::InvalidOptions)?,
        );
        let (events_tx, first_events) = broadcast::channel(EVENT_BUFFER);
        let emit = |event: TunnelEvent| {
            let _ = events_tx.send(event);
        };
        let (edge, owned) = match self.edge {
            EdgeSource::Own(builder) => {
                // Resolve before probing so a missing edge is a usage error, not a
                // network one.
                if !builder.has_transport() {
                    builder.resolve()?;
                }
                probe(&app, self.probe_timeout, &emit).await?;
                (builder.connect().await?, true)
            }
            EdgeSource::Shared { edge, .. } => {
                if edge.hold().is_none() {
                    return Err(TunnelError::EdgeClosed);
                }
                probe(&app, self.probe_timeout, &emit).await?;
                (edge, false)
            }
        };
        let opening = Opening {
            app,
            name,
            request,
            reconnect: self.reconnect,
            proxy_mode: self.proxy_mode,
            exchange_log: self.exchange_log,
            owned,
        };
        match opening.open(edge.clone(), events_tx, first_events).await {
            Ok(handle) => Ok(handle),
            Err(e) => {
                if owned {
                    edge.close().await;
                }
                Err(e)
            }
        }
    }
}

/// Probes the local app; an odd answer is a warning event.
async fn probe(
    app: &AppLink,
    timeout: Duration,
    emit: &impl Fn(TunnelEvent),
) -> Result<(), TunnelError> {
    if let ProbeOutcome::Suspicious { warning } = probe_app(app, timeout).await? {
        emit(TunnelEvent::ProbeWarning { message: warning });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::Tunnel;
    use mytunnel_core::transport::{Forward, ForwardSpec, TransportError};

    fn invalid(builder: &TunnelBuilder) -> String {
        match builder.validate() {
            Err(TunnelError::InvalidOptions(message)) => message,
            other => panic!("not refused as invalid options: {other:?}"),
        }
    }

    #[test]
    fn options_are_checked_before_anything_runs() {
        assert!(matches!(
            Tunnel::http(0).validate(),
            Err(TunnelError::Upstream(UpstreamError::Port { .. }))
        ));
        assert!(matches!(
            Tunnel::http("localhost").validate(),
            Err(TunnelError::Upstream(UpstreamError::NoPort { .. }))
        ));
        assert!(Tunnel::http("localhost:5173").validate().is_ok());
        assert!(Tunnel::http(String::from("https://localhost:8443"))
            .app_certificates(AppCertificates::AcceptAny)
            .validate()
            .is_ok());
        assert!(
            invalid(&Tunnel::http(3000).app_certificates(AppCertificates::AcceptAny))
                .starts_with(".app_certificates(..) applies to an https:// app")
        );
        assert!(invalid(
            &Tunnel::http(3000)
                .host_header(HostHeader::Rewrite)
                .proxy_mode(ProxyMode::Tcp)
        )
        .starts_with(".host_header(..) is set by the HTTP proxy"));
        assert_eq!(
            invalid(&Tunnel::http(3000).takeover(Takeover::Force)),
            "takeover(Takeover::Force) needs .name(..): only a named lease can be taken over"
        );
        assert!(invalid(&Tunnel::http(3000).name("Bad_Name")).contains("Bad_Name"));
        assert!(invalid(&Tunnel::http(3000).remote_override("--rm-rf", "x"))
            .starts_with("remote_override(\"--rm-rf\", ..)"));
        let (name, request) = Tunnel::http(3000).name("Portal").request().unwrap();
        assert_eq!(name.unwrap().as_str(), "portal");
        assert_eq!(request.local_port, Some(3000));
    }

    #[derive(Debug)]
    struct Nowhere;

    #[async_trait::async_trait]
    impl Transport for Nowhere {
        async fn ctl(
            &self,
            _request: &mytunnel_core::protocol::CtlRequest,
        ) -> Result<mytunnel_core::protocol::CtlResponse, TransportError> {
            Err(TransportError::Unreachable("nowhere".into()))
        }
        async fn open_forward(
            &self,
            _spec: ForwardSpec,
        ) -> Result<Box<dyn Forward>, TransportError> {
            Err(TransportError::Unreachable("nowhere".into()))
        }
    }

    #[test]
    fn no_error_speaks_of_cli_flags() {
        let edge = Edge::from_transport(Arc::new(Nowhere));
        let errors = [
            invalid(&Tunnel::http(3000).app_certificates(AppCertificates::AcceptAny)),
            invalid(&Tunnel::http(3000).takeover(Takeover::Force)),
            invalid(&Tunnel::http(3000).remote_override("--rm-rf", "x")),
            invalid(&edge.http(3000).ssh_bin("/x")),
        ];
        for error in errors {
            assert!(!error.contains(" --"), "{error}");
        }
        let hints = [
            TunnelError::InvalidOptions(String::new()),
            TunnelError::Edge(crate::profile::ProfileError::NoEdge {
                config_path: "/c".into(),
            }),
            TunnelError::Connect(TransportError::Unreachable(String::new())),
            TunnelError::Forward(TransportError::Malformed(String::new())),
            TunnelError::ForwardEnded(String::new()),
            TunnelError::Release(TransportError::Unreachable(String::new())),
            TunnelError::EdgeClosed,
        ];
        for error in hints {
            let said = format!("{error} / {}", error.hint());
            assert!(
                !said.contains("--") && !said.contains("mytunnel "),
                "{said}"
            );
        }
    }

    #[test]
    fn an_exchange_log_needs_the_http_proxy() {
        let log = ExchangeLog::new(crate::inspect::ExchangeLimits::default());
        let edge = Edge::from_transport(Arc::new(Nowhere));
        for builder in [Tunnel::http(3000), edge.http(3000)] {
            assert_eq!(builder.proxy_mode, ProxyMode::Http, "the default");
            assert!(builder.clone().exchange_log(log.clone()).validate().is_ok());
            assert!(builder
                .clone()
                .proxy_mode(ProxyMode::Tcp)
                .validate()
                .is_ok());
            let said = invalid(&builder.exchange_log(log.clone()).proxy_mode(ProxyMode::Tcp));
            assert!(
                said.starts_with(".exchange_log(..) records what the HTTP proxy sees"),
                "{said}"
            );
        }
    }

    #[test]
    fn edge_options_belong_on_the_edge_builder_for_a_connected_edge() {
        let edge = Edge::from_transport(Arc::new(Nowhere));
        assert!(edge.http(3000).name("api").validate().is_ok());
        let said = invalid(&edge.http(3000).name("api").ssh_option("Port=22").edge("x"));
        assert!(
            said.starts_with(".ssh_option(..) sets how to reach the edge")
                && said.contains("Edge::builder()"),
            "{said}"
        );
        // From `Tunnel::http`, the same options configure the tunnel's own edge.
        assert!(Tunnel::http(3000)
            .ssh_option("Port=22")
            .edge("x")
            .validate()
            .is_ok());
    }
}
