//! The OpenSSH transport: control requests over ssh, data-plane forwards as `ssh -N -R`.
//!
//! Two ways to run control requests:
//!
//! - [`Multiplexing::Shared`] (the default): [`SshTransport::connect`] launches one
//!   ControlMaster (`ssh -M -S <dir>/master -f -N`) with the configured ssh binary, in a
//!   private 0700 directory, and every ctl request becomes one session on it through the
//!   `openssh` crate's native mux client (~16–65 ms per request instead of ~340 ms).
//! - [`Multiplexing::PerCommand`] (`--no-ssh-mux`): every ctl request is one
//!   `ssh -T … <destination> '<remote command>'`.
//!
//! Either way the remote command is `<remote_bin> ctl <verb> [flags] [overrides]`, quoted
//! with POSIX shell rules; the edge's gate splits it back with the same rules.
//!
//! A data-plane forward is always its own `ssh -N -R 127.0.0.1:<edge>:127.0.0.1:<local>`
//! process with `ControlMaster=no` and `ControlPath=none`: a forward that rode on a
//! short-lived master would die with it. It counts as up once ssh reports
//! `remote forward success for: listen …` (it runs with `-v` for that line and
//! `ExitOnForwardFailure=yes` so that a refused forward ends the process).
//!
//! A connection the edge refused before login — nothing listening while sshd restarts, or
//! sshd dropping handshakes past its `MaxStartups` (`kex_exchange_identification: read:
//! Connection reset by peer`) — is retried with jittered backoff for at most
//! [`SshConfig::handshake_retry`]: the master launch, a per-command ctl call and a
//! forward alike. Nothing ran on the edge for such a connection, so even an allocate is
//! safe to send again. When sshd restarts every tunnel reconnects at the same moment; the
//! jitter spreads the retries. Any other failure is reported at once.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::fs::Permissions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::future::Future;

use async_trait::async_trait;
use mytunnel_core::printable::Printable;
use mytunnel_core::protocol::{decode_reply, CtlRequest, CtlResponse, ReplyError, Verb};
use mytunnel_core::transport::{Forward, ForwardEnd, ForwardSpec, Transport, TransportError};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::backoff::jittered_backoff;

mod args;
mod forward;
mod handshake;
mod master;
mod reply;
#[cfg(test)]
mod tests;

use args::*;
pub use forward::SshForward;
use handshake::*;
use master::*;
use reply::*;

/// How many stderr lines of a forward are kept for diagnostics.
const STDERR_RING: usize = 50;
/// How many lines an error message quotes.
const TAIL_LINES: usize = 5;
/// Longest stderr line kept, in characters; longer lines are cut.
const MAX_LINE_CHARS: usize = 512;
/// Longest stderr line read at once, in bytes.
const MAX_LINE_BYTES: u64 = 8192;
/// How much of the end of a log file is read for its tail.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// Extra time a ctl request gets beyond the connect timeout.
const CTL_GRACE: Duration = Duration::from_secs(30);
/// Extra time a forward gets beyond the connect timeout to report success.
const FORWARD_GRACE: Duration = Duration::from_secs(15);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for the last stderr lines once ssh has exited.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// The line OpenSSH (with `-v`) prints once the edge accepted a remote forward.
const FORWARD_SUCCESS: &str = "remote forward success for: listen";
/// How long a refused handshake is retried by default ([`SshConfig::handshake_retry`]).
const DEFAULT_HANDSHAKE_RETRY: Duration = Duration::from_secs(30);

/// How control requests reach the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Multiplexing {
    /// One master connection for all ctl requests (the default).
    #[default]
    Shared,
    /// One `ssh -T` per ctl request (`--no-ssh-mux`).
    PerCommand,
}

/// How to reach an edge with OpenSSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    /// The ssh destination, e.g. `user@edge` or a `Host` alias of `~/.ssh/config`.
    pub destination: String,
    /// The ssh client binary (default `ssh`, looked up in `PATH`).
    pub ssh_bin: PathBuf,
    /// The remote program (default `mytunneld`); the gate also accepts its installed path.
    pub remote_bin: String,
    /// How control requests share connections.
    pub multiplexing: Multiplexing,
    /// Daemon override flags and their values, e.g. `("--db-path", "/x")`, appended to
    /// every ctl command. Leave empty unless the user gave them: the gate refuses them.
    pub remote_overrides: Vec<(String, String)>,
    /// How long ssh may take to connect (`-o ConnectTimeout=`, whole seconds, at least 1).
    /// A ctl request is bounded by this plus 30 s, a forward's readiness by this plus 15 s.
    pub connect_timeout: Duration,
    /// Extra ssh options, each passed as `-o <option>`, e.g. `Port=2222`.
    pub extra_options: Vec<String>,
    /// How long a connection the edge refused before login (sshd restarting, or past its
    /// `MaxStartups`) is retried, with jittered backoff from 0.5 s; zero: not retried. The
    /// error after the last try says so.
    pub handshake_retry: Duration,
}

impl SshConfig {
    /// A configuration for `destination` with the defaults: `ssh`, `mytunneld`, a shared
    /// master, no overrides, a 10 s connect timeout, no extra options, and refused
    /// handshakes retried for 30 s.
    pub fn new(destination: impl Into<String>) -> Self {
        SshConfig {
            destination: destination.into(),
            ssh_bin: PathBuf::from("ssh"),
            remote_bin: "mytunneld".to_owned(),
            multiplexing: Multiplexing::Shared,
            remote_overrides: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            extra_options: Vec::new(),
            handshake_retry: DEFAULT_HANDSHAKE_RETRY,
        }
    }

    fn ctl_timeout(&self) -> Duration {
        self.connect_timeout.saturating_add(CTL_GRACE)
    }

    fn forward_timeout(&self) -> Duration {
        self.connect_timeout.saturating_add(FORWARD_GRACE)
    }
}

/// The OpenSSH [`Transport`]: ctl requests over a shared master or one `ssh -T` each,
/// forwards as supervised `ssh -N -R` children.
///
/// Call [`SshTransport::close`] when done; dropping it also stops the master, best effort.
pub struct SshTransport {
    config: SshConfig,
    master: Option<Master>,
}

/// The shared master connection and its private directory.
struct Master {
    /// `<dir>/master`.
    socket: PathBuf,
    /// `<dir>/log`: the master's `-E` log.
    log: PathBuf,
    /// The mux client; it does not own the master (resumed), so dropping it stops nothing.
    session: openssh::Session,
    /// The 0700 directory; removed on drop.
    dir: TempDir,
}

impl fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshTransport")
            .field("destination", &self.config.destination)
            .field("multiplexing", &self.config.multiplexing)
            .field(
                "control_socket",
                &self.master.as_ref().map(|m| m.socket.as_path()),
            )
            .finish_non_exhaustive()
    }
}

impl SshTransport {
    /// Prepares the transport. With [`Multiplexing::Shared`] this launches the master
    /// connection now and returns once ssh has authenticated and forked into the
    /// background; a failure is [`TransportError::Unreachable`] with the end of ssh's log.
    /// With [`Multiplexing::PerCommand`] nothing is started.
    pub async fn connect(config: SshConfig) -> Result<SshTransport, TransportError> {
        check_destination(&config.destination)?;
        let master = match config.multiplexing {
            Multiplexing::Shared => {
                Some(retry_refused_handshake(&config, || launch_master(&config)).await?)
            }
            Multiplexing::PerCommand => None,
        };
        Ok(SshTransport { config, master })
    }

    /// Stops the master connection (if any) with `ssh -O exit` and removes its directory.
    pub async fn close(mut self) {
        if let Some(master) = self.master.take() {
            let mut command = tokio::process::Command::new(&self.config.ssh_bin);
            command
                .args(exit_args(&master.socket, &self.config.destination))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            match tokio::time::timeout(STOP_GRACE, command.status()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => tracing::debug!(%status, "ssh -O exit failed"),
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot run ssh -O exit"),
                Err(_) => tracing::debug!("ssh -O exit timed out"),
            }
            let Master { dir, .. } = master;
            if let Err(e) = dir.close() {
                tracing::debug!(error = %e, "cannot remove the control directory");
            }
        }
    }

    /// Runs `health` over the shared connection only (no fallback), for `doctor`.
    pub async fn check_shared(&self) -> Result<(), TransportError> {
        match &self.master {
            Some(master) => self
                .ctl_shared(master, &CtlRequest::Health)
                .await
                .map(|_| ()),
            None => Err(TransportError::Unreachable(
                "no shared connection (multiplexing is off)".into(),
            )),
        }
    }

    async fn ctl_shared(
        &self,
        master: &Master,
        request: &CtlRequest,
    ) -> Result<CtlResponse, TransportError> {
        let verb = request.verb();
        let mut command = master.session.command(self.config.remote_bin.as_str());
        command.args(ctl_words(&self.config, request));
        let output = match tokio::time::timeout(self.config.ctl_timeout(), command.output()).await {
            Err(_) => {
                return Err(TransportError::Unreachable(format!(
                    "`{verb}` got no answer within {}s over the shared connection{}",
                    self.config.ctl_timeout().as_secs(),
                    with_tail("ssh log", &log_tail(&master.log)),
                )))
            }
            Ok(Err(e)) => return Err(map_mux_error(&e, &log_tail(&master.log))),
            Ok(Ok(output)) => output,
        };
        reply_of_output(verb, &output)
    }

    async fn ctl_per_command(&self, request: &CtlRequest) -> Result<CtlResponse, TransportError> {
        retry_refused_handshake(&self.config, || self.ctl_per_command_once(request)).await
    }

    async fn ctl_per_command_once(
        &self,
        request: &CtlRequest,
    ) -> Result<CtlResponse, TransportError> {
        let verb = request.verb();
        let mut command = tokio::process::Command::new(&self.config.ssh_bin);
        command
            .args(per_command_args(&self.config, request))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(self.config.ctl_timeout(), command.output()).await {
            Err(_) => {
                return Err(TransportError::Unreachable(format!(
                    "`{verb}` got no answer within {}s",
                    self.config.ctl_timeout().as_secs()
                )))
            }
            Ok(Err(e)) => return Err(spawn_error(&self.config.ssh_bin, &e)),
            Ok(Ok(output)) => output,
        };
        reply_of_output(verb, &output)
    }
}

impl Drop for SshTransport {
    fn drop(&mut self) {
        let Some(master) = self.master.take() else {
            return;
        };
        // Best effort, synchronously: ask the master to exit, bounded, then remove the
        // directory (the TempDir's own drop).
        let child = std::process::Command::new(&self.config.ssh_bin)
            .args(exit_args(&master.socket, &self.config.destination))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = child {
            let deadline = Instant::now() + STOP_GRACE;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        drop(master);
    }
}

#[async_trait]
impl Transport for SshTransport {
    async fn ctl(&self, request: &CtlRequest) -> Result<CtlResponse, TransportError> {
        tracing::debug!(verb = %request.verb(), destination = %self.config.destination, "ctl over ssh");
        match &self.master {
            Some(master) => match self.ctl_shared(master, request).await {
                // The shared connection is gone (sshd restarted, network change): this
                // call goes over its own connection, so heartbeats keep the lease alive.
                Err(TransportError::Unreachable(shared)) => {
                    tracing::debug!(%shared, "shared ssh connection failed; retrying with ssh -T");
                    self.ctl_per_command(request).await
                }
                other => other,
            },
            None => self.ctl_per_command(request).await,
        }
    }

    async fn open_forward(&self, spec: ForwardSpec) -> Result<Box<dyn Forward>, TransportError> {
        let forward = retry_refused_handshake(&self.config, || {
            SshForward::open(&self.config, spec.clone())
        })
        .await?;
        Ok(Box::new(forward))
    }
}
