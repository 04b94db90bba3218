//! Reaching an edge: which one (flags, environment, profile), how (ssh options,
//! multiplexing), and the control operations that need no tunnel (`ls`, `stop`, `rm`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use mytunnel_core::calls;
use mytunnel_core::protocol::{HealthDto, LeaseDto, ListScope};
use mytunnel_core::transport::call;
use mytunnel_core::transport::{Transport, TransportError};
use mytunnel_core::{LeaseId, LeaseRef};

use crate::error::TunnelError;
use crate::profile::{self, ExplicitEdge, ResolvedEdge};
use crate::ssh::{Multiplexing, SshConfig, SshTransport};

/// How to reach an edge. Shared by [`crate::TunnelBuilder`] and [`EdgeClient`].
#[derive(Debug, Clone, Default)]
pub struct EdgeSettings {
    /// Flags given explicitly (`--edge`, `--ssh-bin`, `--remote-bin`, `--base-domain`).
    pub explicit: ExplicitEdge,
    /// One shared SSH connection for control commands, or one per command.
    pub multiplexing: Multiplexing,
    /// Daemon settings passed to every remote ctl command (refused by the gate).
    pub remote_overrides: Vec<(String, String)>,
    /// Extra `ssh -o` options.
    pub ssh_options: Vec<String>,
    /// The profile file (default `~/.config/mytunnel/config.toml`).
    pub config_path: Option<PathBuf>,
    /// The environment to read `MYTUNNEL_*` from (default: this process's).
    pub environment: Option<BTreeMap<String, String>>,
    /// A transport to use instead of ssh.
    pub transport: Option<Arc<dyn Transport>>,
}

impl EdgeSettings {
    /// Resolves the edge (flag > environment > profile > default) without contacting it.
    pub fn resolve(&self) -> Result<ResolvedEdge, TunnelError> {
        let env = self
            .environment
            .clone()
            .unwrap_or_else(|| std::env::vars().collect());
        let config_path = self
            .config_path
            .clone()
            .unwrap_or_else(|| profile::default_config_path(&env));
        let config = profile::load_config(&config_path)?;
        Ok(profile::resolve_edge(
            &self.explicit,
            &env,
            &config,
            &config_path,
        )?)
    }

    /// The ssh configuration for a resolved edge.
    pub fn ssh_config(&self, edge: &ResolvedEdge) -> SshConfig {
        let mut config = SshConfig::new(edge.destination.clone());
        config.ssh_bin = edge.ssh_bin.clone();
        config.remote_bin = edge.remote_bin.clone();
        config.multiplexing = self.multiplexing;
        config.remote_overrides = self.remote_overrides.clone();
        config.extra_options = self.ssh_options.clone();
        config
    }

    /// Connects (the given transport, or ssh to the resolved edge).
    pub async fn connect(&self) -> Result<EdgeClient, TunnelError> {
        if let Some(transport) = &self.transport {
            return Ok(EdgeClient {
                transport: transport.clone(),
                edge: None,
            });
        }
        let edge = self.resolve()?;
        let transport = SshTransport::connect(self.ssh_config(&edge))
            .await
            .map_err(TunnelError::Connect)?;
        Ok(EdgeClient {
            transport: Arc::new(transport),
            edge: Some(edge),
        })
    }
}

/// A control connection to an edge.
#[derive(Debug, Clone)]
pub struct EdgeClient {
    transport: Arc<dyn Transport>,
    edge: Option<ResolvedEdge>,
}

impl EdgeClient {
    /// A client over any transport.
    pub fn from_transport(transport: Arc<dyn Transport>) -> Self {
        EdgeClient {
            transport,
            edge: None,
        }
    }

    /// The transport underneath.
    pub fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }

    /// The resolved edge, when reached over ssh.
    pub fn edge(&self) -> Option<&ResolvedEdge> {
        self.edge.as_ref()
    }

    /// The caller's leases (admins: `ListScope::All` for everyone's).
    pub async fn list(&self, scope: ListScope) -> Result<Vec<LeaseDto>, TransportError> {
        call(self.transport.as_ref(), calls::List(scope)).await
    }

    /// Releases a lease; answers it tombstoned.
    pub async fn release(&self, lease: LeaseRef) -> Result<LeaseDto, TransportError> {
        call(self.transport.as_ref(), calls::Release(lease)).await
    }

    /// Deletes a lease; answers its id.
    pub async fn delete(&self, lease: LeaseRef) -> Result<LeaseId, TransportError> {
        call(self.transport.as_ref(), calls::Delete(lease))
            .await
            .map(|deleted| deleted.deleted)
    }

    /// The edge's health.
    pub async fn health(&self) -> Result<HealthDto, TransportError> {
        call(self.transport.as_ref(), calls::Health).await
    }
}
