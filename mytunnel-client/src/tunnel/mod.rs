//! The `Tunnel` builder, the handle it opens, and the supervisor that keeps it up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use mytunnel_core::calls;
use mytunnel_core::protocol::{AllocateRequest, LeaseDto, Takeover};
use mytunnel_core::transport::call;
use mytunnel_core::transport::{Forward, ForwardSpec, Transport, TransportError};
use mytunnel_core::{heartbeat_interval, ErrorCode, LeaseRef, Slug};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use crate::backoff::jittered_backoff;
use crate::edge::EdgeSettings;
use crate::error::{LeaseEnd, TunnelError};
use crate::events::TunnelEvent;
use crate::probe::{probe_local, ProbeOutcome};
use crate::profile::ResolvedEdge;
use crate::ssh::Multiplexing;

mod handle;
mod relay;
mod supervisor;

use relay::LocalRelay;

pub use handle::TunnelHandle;
use supervisor::*;

/// Whether a tunnel comes back by itself when its data plane ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reconnect {
    /// Reconnect with jittered exponential backoff (the default).
    #[default]
    Always,
    /// End the tunnel (and release its lease) when the data plane ends.
    Never,
}

/// Entry point: `Tunnel::http(3000).open().await?`.
#[derive(Debug, Clone, Copy)]
pub struct Tunnel;

impl Tunnel {
    /// A tunnel publishing the local HTTP service on `127.0.0.1:<local_port>`.
    pub fn http(local_port: u16) -> TunnelBuilder {
        TunnelBuilder {
            local_port,
            edge: EdgeSettings::default(),
            name: None,
            ttl: None,
            takeover: Takeover::Refuse,
            reconnect: Reconnect::Always,
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// Options of a tunnel; [`TunnelBuilder::open`] checks them and opens it.
#[derive(Debug, Clone)]
pub struct TunnelBuilder {
    local_port: u16,
    edge: EdgeSettings,
    name: Option<String>,
    ttl: Option<Duration>,
    takeover: Takeover,
    reconnect: Reconnect,
    probe_timeout: Duration,
}

impl TunnelBuilder {
    /// The edge: a profile name or an ssh destination (else `MYTUNNEL_EDGE`, else the
    /// default profile).
    pub fn edge(mut self, edge: impl Into<String>) -> Self {
        self.edge.explicit.edge = Some(edge.into());
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

    /// The ssh binary (else `MYTUNNEL_SSH_BIN`, the profile, `ssh`).
    pub fn ssh_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.edge.explicit.ssh_bin = Some(path.into());
        self
    }

    /// The remote `mytunneld` (else `MYTUNNEL_REMOTE_BIN`, the profile, `mytunneld`).
    pub fn remote_bin(mut self, path: impl Into<String>) -> Self {
        self.edge.explicit.remote_bin = Some(path.into());
        self
    }

    /// The base domain the URL is expected under (a check; the edge decides the host).
    pub fn base_domain(mut self, domain: impl Into<String>) -> Self {
        self.edge.explicit.base_domain = Some(domain.into());
        self
    }

    /// One shared SSH connection for control commands, or one per command.
    pub fn multiplexing(mut self, multiplexing: Multiplexing) -> Self {
        self.edge.multiplexing = multiplexing;
        self
    }

    /// A daemon setting passed to every remote ctl command (e.g. `("--db-path", "/x")`).
    /// The SSH gate refuses these; they serve edges reached without the gate.
    pub fn remote_override(mut self, flag: impl Into<String>, value: impl Into<String>) -> Self {
        self.edge.remote_overrides.push((flag.into(), value.into()));
        self
    }

    /// An extra `ssh -o` option for every ssh the tunnel runs (e.g. `Port=2222`).
    pub fn ssh_option(mut self, option: impl Into<String>) -> Self {
        self.edge.ssh_options.push(option.into());
        self
    }

    /// The profile file (default `~/.config/mytunnel/config.toml`).
    pub fn config_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.edge.config_path = Some(path.into());
        self
    }

    /// The environment edge settings are read from (default: this process's).
    pub fn environment(mut self, env: BTreeMap<String, String>) -> Self {
        self.edge.environment = Some(env);
        self
    }

    /// Talk to the edge through this transport instead of ssh (tests, in-process edges).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.edge.transport = Some(transport);
        self
    }

    /// How long the local probe waits for the app (default 5s).
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Checks the options without contacting anything: port, name, the takeover rule.
    pub fn validate(&self) -> Result<(Option<Slug>, AllocateRequest), TunnelError> {
        if self.local_port == 0 {
            return Err(TunnelError::InvalidOptions(
                "http(0): the local port must be 1-65535".into(),
            ));
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
        for (flag, _) in &self.edge.remote_overrides {
            if !mytunnel_core::protocol::is_override_word(flag) {
                return Err(TunnelError::InvalidOptions(format!(
                    "remote_override({flag:?}, ..): not a daemon setting"
                )));
            }
        }
        Ok((
            name.clone(),
            AllocateRequest {
                local_port: Some(self.local_port),
                name,
                ttl: self.ttl,
                takeover: self.takeover,
            },
        ))
    }

    /// Resolves the edge (flag, environment, profile) without contacting it.
    pub fn resolve_edge(&self) -> Result<ResolvedEdge, TunnelError> {
        self.edge.resolve()
    }

    /// Replaces every edge setting at once (the CLI builds them from its flags).
    pub fn with_edge_settings(mut self, settings: EdgeSettings) -> Self {
        self.edge = settings;
        self
    }

    /// The edge settings (shared with [`EdgeClient`](crate::EdgeClient)).
    pub fn edge_settings(&self) -> &EdgeSettings {
        &self.edge
    }

    /// Probes the local app, connects, allocates, opens the data plane, and hands the
    /// tunnel to a supervisor. Nothing is allocated if the local app does not answer.
    pub async fn open(self) -> Result<TunnelHandle, TunnelError> {
        let (name, request) = self.validate()?;
        // Resolve before probing so a missing edge is a usage error, not a network one.
        let resolved = match &self.edge.transport {
            Some(_) => None,
            None => Some(self.edge.resolve()?),
        };
        let (events_tx, first_events) = broadcast::channel(256);
        let emit = |event: TunnelEvent| {
            let _ = events_tx.send(event);
        };

        if let ProbeOutcome::Suspicious { warning } =
            probe_local(self.local_port, self.probe_timeout).await?
        {
            emit(TunnelEvent::ProbeWarning { message: warning });
        }

        let client = self.edge.connect().await?;
        let transport = client.transport();
        let edge = resolved;

        let lease = allocate(transport.as_ref(), &request)
            .await
            .map_err(TunnelError::Allocate)?;
        let url = format!("https://{}", lease.host);
        if let Some(domain) = edge.as_ref().and_then(|e| e.base_domain.as_deref()) {
            if !lease.host.ends_with(&format!(".{domain}")) {
                emit(TunnelEvent::ProbeWarning {
                    message: format!(
                        "the edge published {} but this profile expects *.{domain}",
                        lease.host
                    ),
                });
            }
        }
        emit(TunnelEvent::Allocated {
            lease: lease.clone(),
            url: url.clone(),
        });

        // The forward ends at the tunnel's relay, so that closing the tunnel closes the
        // connections it carries (see `relay.rs`).
        let relay = match LocalRelay::start(self.local_port).await {
            Ok(relay) => relay,
            Err(e) => {
                let _ = release(transport.as_ref(), &lease).await;
                return Err(TunnelError::Forward(TransportError::Unreachable(format!(
                    "cannot listen on a loopback port for the tunnel: {e}"
                ))));
            }
        };
        // sshd may still hold the socket for a client that died without closing (until its
        // ClientAlive check evicts it), so a refused forward is retried a few times.
        let spec = ForwardSpec {
            edge_bind: lease.bind_target(),
            local_port: relay.port(),
        };
        let mut attempt = 0u32;
        let forward = loop {
            match transport.open_forward(spec.clone()).await {
                Ok(forward) => break forward,
                Err(e @ TransportError::Unreachable(_)) if attempt < OPEN_FORWARD_RETRIES => {
                    attempt += 1;
                    let delay = jittered_backoff(attempt);
                    emit(TunnelEvent::Reconnecting {
                        attempt,
                        delay,
                        reason: e.to_string(),
                    });
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    let _ = release(transport.as_ref(), &lease).await;
                    return Err(TunnelError::Forward(e));
                }
            }
        };
        emit(TunnelEvent::Forwarding {
            edge_bind: spec.edge_bind,
        });

        let (lease_tx, lease_rx) = watch::channel(lease.clone());
        let (stop_tx, stop_rx) = oneshot::channel();
        let supervisor = Supervisor {
            transport,
            relay: Some(relay),
            reallocate: AllocateRequest {
                // Keep the URL: a lost lease is allocated again under the same name.
                name: name.or_else(|| lease.slug.parse().ok()),
                takeover: Takeover::Refuse,
                ..request
            },
            reconnect: self.reconnect,
            events: events_tx.clone(),
            lease_tx,
            lease,
            forward,
        };
        let task = tokio::spawn(supervisor.run(stop_rx));
        Ok(TunnelHandle {
            url,
            lease: lease_rx,
            events: first_events.resubscribe(),
            first_events: Some(first_events),
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(builder: &TunnelBuilder) -> String {
        match builder.validate() {
            Err(TunnelError::InvalidOptions(message)) => message,
            other => panic!("not refused as invalid options: {other:?}"),
        }
    }

    #[test]
    fn options_are_checked_before_anything_runs() {
        assert!(invalid(&Tunnel::http(0)).contains("http(0)"));
        assert_eq!(
            invalid(&Tunnel::http(3000).takeover(Takeover::Force)),
            "takeover(Takeover::Force) needs .name(..): only a named lease can be taken over"
        );
        assert!(invalid(&Tunnel::http(3000).name("Bad_Name")).contains("Bad_Name"));
        assert!(invalid(&Tunnel::http(3000).remote_override("--rm-rf", "x"))
            .starts_with("remote_override(\"--rm-rf\", ..)"));
        let (name, request) = Tunnel::http(3000).name("Portal").validate().unwrap();
        assert_eq!(name.unwrap().as_str(), "portal");
        assert_eq!(request.local_port, Some(3000));
    }

    #[test]
    fn no_error_speaks_of_cli_flags() {
        let errors = [
            invalid(&Tunnel::http(0)),
            invalid(&Tunnel::http(3000).takeover(Takeover::Force)),
            invalid(&Tunnel::http(3000).remote_override("--rm-rf", "x")),
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
        ];
        for error in hints {
            let said = format!("{error} / {}", error.hint());
            assert!(
                !said.contains("--") && !said.contains("mytunnel "),
                "{said}"
            );
        }
    }
}
