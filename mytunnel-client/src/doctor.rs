//! `mytunnel doctor`: each step from this machine to a working tunnel, checked in order,
//! with a hint for whatever fails. The report serves both the CLI and SDK users, so a
//! hint that names a setting names both forms.

use std::time::Duration;

use serde::Serialize;

use crate::edge::EdgeBuilder;
use crate::probe::{probe_local, ProbeOutcome};
use crate::profile::ResolvedEdge;
use crate::ssh::{Multiplexing, SshTransport};
use crate::upstream::Upstream;
use mytunnel_core::protocol::HealthDto;
use mytunnel_core::transport::{Transport, TransportError};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Fine.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Broken: tunnels will not work until it is fixed.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it came out.
    pub status: CheckStatus,
    /// What was seen.
    pub detail: String,
    /// What to do (empty when ok).
    pub hint: String,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: CheckStatus::Ok,
            detail: detail.into(),
            hint: String::new(),
        }
    }

    fn warn(name: &str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: CheckStatus::Warn,
            detail: detail.into(),
            hint: hint.into(),
        }
    }

    fn fail(name: &str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: CheckStatus::Fail,
            detail: detail.into(),
            hint: hint.into(),
        }
    }
}

/// Runs every check on the edge `settings` name. `local_app` adds a probe of the local
/// app there (an `https://` one with its certificate checked).
///
/// An edge of several destinations (a profile's `destinations`) gets each check that
/// reaches the edge once per destination, in order, named after it (`edge reachable
/// (tunnel@b.example.com)`); one that fails does not stop the checks of the next.
pub async fn run_doctor(settings: &EdgeBuilder, local_app: Option<&Upstream>) -> Vec<Check> {
    let mut checks = Vec::new();
    let edge = match settings.resolve() {
        Ok(edge) => {
            let several = edge.destinations.count() > 1;
            checks.push(Check::ok(
                "edge",
                match (&edge.profile, several) {
                    (Some(profile), false) => format!("{} (profile {profile})", edge.destinations),
                    (Some(profile), true) => format!(
                        "{} (profile {profile}; each is checked, in this order)",
                        edge.destinations
                    ),
                    (None, _) => edge.destinations.to_string(),
                },
            ));
            edge
        }
        Err(e) => {
            checks.push(Check::fail("edge", e.to_string(), e.hint()));
            return checks;
        }
    };

    match tokio::process::Command::new(&edge.ssh_bin)
        .arg("-V")
        .output()
        .await
    {
        Ok(out) => {
            let version = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            checks.push(Check::ok(
                "ssh binary",
                format!("{} ({version})", edge.ssh_bin.display()),
            ));
        }
        Err(e) => {
            checks.push(Check::fail(
                "ssh binary",
                format!("{}: {e}", edge.ssh_bin.display()),
                "install OpenSSH's client, or point MYTUNNEL_SSH_BIN at it (`--ssh-bin`; in the SDK `.ssh_bin(..)`)",
            ));
            return checks;
        }
    }

    let several = edge.destinations.count() > 1;
    for destination in edge.destinations.iter() {
        let name = |check: &str| {
            if several {
                format!("{check} ({destination})")
            } else {
                check.to_owned()
            }
        };
        check_destination(settings, &edge, destination, &name, &mut checks).await;
    }

    if let Some(upstream) = local_app {
        match probe_local(upstream, Duration::from_secs(5)).await {
            Ok(ProbeOutcome::Healthy { status }) => {
                checks.push(Check::ok(
                    "local app",
                    format!("{upstream}/ answered {status}"),
                ));
            }
            Ok(ProbeOutcome::Suspicious { warning }) => {
                checks.push(Check::warn(
                    "local app",
                    warning,
                    "check the app serves its root page",
                ));
            }
            Err(e) => checks.push(Check::fail("local app", e.to_string(), e.hint())),
        }
    }
    checks
}

/// The checks that reach the edge at one destination: reachability and the key, the
/// remote binary, the edge's health, then multiplexing and the pty. The first failure
/// of reaching it ends this destination's checks.
async fn check_destination(
    settings: &EdgeBuilder,
    edge: &ResolvedEdge,
    destination: &str,
    name: &impl Fn(&str) -> String,
    checks: &mut Vec<Check>,
) {
    // Reachability, authentication, the remote binary and `ctl health`, without the mux.
    let mut plain = settings.ssh_config(edge, destination);
    plain.multiplexing = Multiplexing::PerCommand;
    let health = match SshTransport::connect(plain).await {
        Ok(transport) => {
            let health = health_of(&transport).await;
            transport.close().await;
            health
        }
        Err(e) => Err(e),
    };
    match health {
        Ok(health) => {
            checks.push(Check::ok(
                &name("edge reachable"),
                format!("ssh to {destination} works with this key"),
            ));
            let ours = env!("CARGO_PKG_VERSION");
            if health.version == ours {
                checks.push(Check::ok(
                    &name("remote binary"),
                    format!("{} {}", edge.remote_bin, health.version),
                ));
            } else {
                checks.push(Check::warn(
                    &name("remote binary"),
                    format!(
                        "{} {} (this client is {ours})",
                        edge.remote_bin, health.version
                    ),
                    "upgrade the older side so client and edge match",
                ));
            }
            if health.healthy {
                checks.push(Check::ok(
                    &name("edge health"),
                    format!("database ok, caddy ok, base domain {}", health.base_domain),
                ));
            } else {
                let mut problems = Vec::new();
                if !health.db.ok {
                    problems.push(format!("database: {}", health.db.detail));
                }
                if !health.caddy.ok {
                    problems.push(format!("caddy: {}", health.caddy.detail));
                }
                if health.base_domain.is_empty() {
                    problems.push("no base domain configured".to_owned());
                }
                checks.push(Check::fail(
                    &name("edge health"),
                    problems.join("; "),
                    "on the edge: `mytunneld ctl health`, `scripts/check-edge.sh`, and the service logs",
                ));
            }
        }
        Err(e) => {
            let hint = match &e {
                mytunnel_core::transport::TransportError::Refused(api) => api.hint.clone(),
                _ => "check `ssh <edge>` by hand: host, user, key, and that the key may run `mytunneld ctl`".to_owned(),
            };
            checks.push(Check::fail(&name("edge reachable"), e.to_string(), hint));
            return;
        }
    }

    if settings.multiplexing_setting() == Multiplexing::Shared {
        let mut shared = settings.ssh_config(edge, destination);
        shared.multiplexing = Multiplexing::Shared;
        match SshTransport::connect(shared).await {
            Ok(transport) => {
                match transport.check_shared().await {
                    Ok(_) => checks.push(Check::ok(
                        &name("ssh multiplexing"),
                        "control commands and forwards share one connection",
                    )),
                    Err(e) => checks.push(Check::warn(
                        &name("ssh multiplexing"),
                        e.to_string(),
                        "turn SSH multiplexing off (`--no-ssh-mux`; in the SDK `Multiplexing::PerCommand`)",
                    )),
                }
                let mut interactive = interactive_check(transport.interactive());
                interactive.name = name(&interactive.name);
                checks.push(interactive);
                transport.close().await;
            }
            Err(e) => checks.push(Check::warn(
                &name("ssh multiplexing"),
                e.to_string(),
                "turn SSH multiplexing off (`--no-ssh-mux`; in the SDK `Multiplexing::PerCommand`)",
            )),
        }
    }
}

/// Whether the shared connection got its pty: without one neither end sets TCP_NODELAY.
fn interactive_check(interactive: Option<bool>) -> Check {
    match interactive {
        Some(false) => Check::warn(
            "interactive",
            "the edge refused a pty for this key: small responses may wait up to 40 ms \
             for delayed ACKs",
            "ask the edge's operator to add the key option `pty` (install-edge-ssh-key.sh \
             writes it)",
        ),
        _ => Check::ok(
            "interactive",
            "the session has a pty: both ends send small responses at once (TCP_NODELAY)",
        ),
    }
}

async fn health_of(transport: &dyn Transport) -> Result<HealthDto, TransportError> {
    mytunnel_core::transport::call(transport, mytunnel_core::calls::Health).await
}
