//! The OpenSSH transport.
//!
//! Two shapes:
//!
//! - [`Multiplexing::Shared`] (the default): one SSH connection per transport carries
//!   every ctl request and every forward. [`SshTransport::connect`] starts it — an
//!   interactive ControlMaster, `ssh -tt -M -S <dir>/master -o ControlPersist=no`, a child
//!   of this process in a private 0700 directory (see [`session`](self) for why a pty) —
//!   and returns once it has logged in. A ctl request is one session on it through the
//!   `openssh` crate's native mux client; a forward is a mux request
//!   (`-R <edge socket>:127.0.0.1:<port>` without a new handshake), cancelled when its
//!   tunnel stops. When the connection ends (sshd restarted, network lost), its forwards
//!   end with it; the next call starts a new connection, and each tunnel's supervisor
//!   requests its forward again.
//! - [`Multiplexing::PerCommand`] (`--no-ssh-mux`, for ssh clients without
//!   multiplexing): every ctl request is one `ssh -T … <destination> '<remote command>'`,
//!   every forward its own `ssh -N -R` process with `ExitOnForwardFailure=yes`, up once
//!   ssh reports `remote forward success for: listen …` (it runs with `-v` for that line).
//!
//! Either way the remote command is `<remote_bin> ctl <verb> [flags] [overrides]`, quoted
//! with POSIX shell rules; the edge's gate splits it back with the same rules. Every ssh
//! runs under a [parent-death guard](ParentDeath): none outlives this process.
//!
//! A connection the edge refused before login — nothing listening while sshd restarts, or
//! sshd dropping handshakes past its `MaxStartups` (`kex_exchange_identification: read:
//! Connection reset by peer`) — is retried with jittered backoff for at most
//! [`SshConfig::handshake_retry`]: the connection, a per-command ctl call and a forward
//! alike. Nothing ran on the edge for such a connection, so even an allocate is safe to
//! send again. When sshd restarts every tunnel reconnects at the same moment; the jitter
//! spreads the retries. Any other failure is reported at once.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::fs::Permissions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use std::future::Future;

use async_trait::async_trait;
use mytunnel_core::printable::Printable;
use mytunnel_core::protocol::{decode_reply, CtlRequest, CtlResponse, ReplyError, Verb};
use mytunnel_core::transport::{Forward, ForwardEnd, ForwardSpec, Transport, TransportError};
use mytunnel_core::BindTarget;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::backoff::jittered_backoff;

mod args;
mod cipher;
mod forward;
mod guard;
mod handshake;
mod reply;
mod session;
#[cfg(test)]
mod tests;

use args::*;
use cipher::*;
pub use forward::SshForward;
pub use guard::ParentDeath;
use guard::*;
use handshake::*;
use reply::*;
pub use session::MuxForward;
use session::*;

/// How many stderr lines of a forward are kept for diagnostics.
const STDERR_RING: usize = 50;
/// How many lines an error message quotes.
const TAIL_LINES: usize = 5;
/// Longest stderr line kept, in characters; longer lines are cut.
const MAX_LINE_CHARS: usize = 512;
/// Longest stderr line read at once, in bytes.
const MAX_LINE_BYTES: u64 = 8192;

/// Reads the next line of ssh's output into `line` (cleared first), at most
/// [`MAX_LINE_BYTES`] of it; `false` once the output ends or fails.
async fn next_line<R>(reader: &mut R, line: &mut Vec<u8>) -> bool
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    line.clear();
    matches!(
        reader.take(MAX_LINE_BYTES).read_until(b'\n', line).await,
        Ok(n) if n > 0
    )
}
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

/// How ctl requests and forwards reach the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Multiplexing {
    /// One interactive SSH connection carries every ctl request and forward (the default).
    #[default]
    Shared,
    /// One `ssh -T` per ctl request and one `ssh -N -R` per forward (`--no-ssh-mux`).
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

/// How many ctl requests run at once on the shared connection. sshd allows 10 sessions
/// per connection by default (`MaxSessions`); the held interactive session is one of them.
const MAX_CTL_SESSIONS: usize = 8;

/// How this transport runs ssh: the binary found, the parent-death guard, and the cipher
/// preference (decided once, at connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SshProgram {
    pub(super) ssh_bin: PathBuf,
    pub(super) guard: ParentDeath,
    /// `Ciphers=…`, when the CPU has AES and the user's configuration leaves ciphers alone.
    pub(super) cipher: Option<String>,
}

/// The OpenSSH [`Transport`]: ctl requests and forwards over one interactive connection,
/// or one ssh process each (`--no-ssh-mux`).
///
/// Dropping it ends its connection (ssh is killed, without waiting);
/// [`SshTransport::close`] does the same and waits until ssh is gone.
pub struct SshTransport {
    config: SshConfig,
    program: SshProgram,
    shared: Option<Shared>,
}

/// The shared connection, started again when it ended.
struct Shared {
    current: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// [`Terminal::None`] once the edge refused a pty: later connections do not ask again.
    terminal: Mutex<Terminal>,
    ctl_sessions: Semaphore,
}

impl Shared {
    fn terminal(&self) -> Terminal {
        *self
            .terminal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a connection, with a pty unless the edge refused one before. An edge that
    /// refuses it gets a connection without (and a warning: it costs latency).
    async fn launch(
        &self,
        config: &SshConfig,
        program: &SshProgram,
    ) -> Result<Arc<Connection>, TransportError> {
        let terminal = self.terminal();
        let attempt = || session::launch(config, program, terminal);
        match retry_refused_handshake(config, attempt).await {
            Err(TransportError::Unreachable(why))
                if terminal == Terminal::Pty && why.contains(PTY_REFUSED) =>
            {
                tracing::warn!(
                    destination = %config.destination,
                    "the edge refused a pty for the tunnel key, so the connection is not \
                     interactive and small responses may wait up to 40 ms for delayed ACKs; \
                     the edge's operator can add the key option `pty` (install-edge-ssh-key.sh \
                     writes it)"
                );
                *self
                    .terminal
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Terminal::None;
                retry_refused_handshake(config, || session::launch(config, program, Terminal::None))
                    .await
            }
            other => other,
        }
    }
}

impl fmt::Debug for SshTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshTransport")
            .field("destination", &self.config.destination)
            .field("multiplexing", &self.config.multiplexing)
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

impl SshTransport {
    /// Prepares the transport. With [`Multiplexing::Shared`] this starts the connection
    /// now and returns once ssh has logged in; a failure is
    /// [`TransportError::Unreachable`] with the end of ssh's log. With
    /// [`Multiplexing::PerCommand`] nothing is started.
    pub async fn connect(config: SshConfig) -> Result<SshTransport, TransportError> {
        SshTransport::connect_guarded(config, ParentDeath::detect()).await
    }

    /// [`SshTransport::connect`] with a chosen parent-death guard (tests use the watchdog
    /// where `setpriv` exists).
    #[doc(hidden)]
    pub async fn connect_guarded(
        config: SshConfig,
        guard: ParentDeath,
    ) -> Result<SshTransport, TransportError> {
        check_destination(&config.destination)?;
        let ssh_bin = locate_program(&config.ssh_bin)?;
        let cipher = preferred_cipher(&config, &ssh_bin).await;
        let program = SshProgram {
            ssh_bin,
            guard,
            cipher,
        };
        let shared = match config.multiplexing {
            Multiplexing::Shared => {
                let shared = Shared {
                    current: tokio::sync::Mutex::new(None),
                    terminal: Mutex::new(Terminal::Pty),
                    ctl_sessions: Semaphore::new(MAX_CTL_SESSIONS),
                };
                let first = shared.launch(&config, &program).await?;
                *shared.current.lock().await = Some(first);
                Some(shared)
            }
            Multiplexing::PerCommand => None,
        };
        Ok(SshTransport {
            config,
            program,
            shared,
        })
    }

    /// Ends the connection (if any) and waits until ssh is gone.
    pub async fn close(mut self) {
        if let Some(shared) = self.shared.take() {
            if let Some(connection) = shared.current.lock().await.take() {
                connection.close().await;
            }
        }
    }

    /// Runs `health` over the shared connection only, for `doctor`.
    pub async fn check_shared(&self) -> Result<(), TransportError> {
        match &self.shared {
            Some(shared) => {
                let connection = self.connection(shared).await?;
                connection
                    .ctl(&self.config, &CtlRequest::Health)
                    .await
                    .map(|_| ())
            }
            None => Err(TransportError::Unreachable(
                "no shared connection (multiplexing is off)".into(),
            )),
        }
    }

    /// Whether the shared connection is interactive (its session has a pty, so both ends
    /// set TCP_NODELAY); `None` without a shared connection. For `doctor`.
    pub fn interactive(&self) -> Option<bool> {
        self.shared
            .as_ref()
            .map(|shared| shared.terminal() == Terminal::Pty)
    }

    /// The control socket of the current connection, while it is up (tests).
    #[doc(hidden)]
    pub async fn control_socket(&self) -> Option<PathBuf> {
        let shared = self.shared.as_ref()?;
        let current = shared.current.lock().await;
        current
            .as_ref()
            .filter(|c| c.is_up())
            .map(|c| c.socket.clone())
    }

    /// The connection, started again if it ended. One caller starts it; the others wait.
    async fn connection(&self, shared: &Shared) -> Result<Arc<Connection>, TransportError> {
        let mut current = shared.current.lock().await;
        if let Some(connection) = current.as_ref().filter(|c| c.is_up()) {
            return Ok(Arc::clone(connection));
        }
        *current = None;
        let fresh = shared.launch(&self.config, &self.program).await?;
        *current = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    async fn ctl_shared(
        &self,
        shared: &Shared,
        request: &CtlRequest,
    ) -> Result<CtlResponse, TransportError> {
        let connection = self.connection(shared).await?;
        let _session =
            shared.ctl_sessions.acquire().await.map_err(|_| {
                TransportError::Unreachable("the ssh transport is closing".to_owned())
            })?;
        connection.ctl(&self.config, request).await
    }

    async fn ctl_per_command(&self, request: &CtlRequest) -> Result<CtlResponse, TransportError> {
        retry_refused_handshake(&self.config, || self.ctl_per_command_once(request)).await
    }

    async fn ctl_per_command_once(
        &self,
        request: &CtlRequest,
    ) -> Result<CtlResponse, TransportError> {
        let verb = request.verb();
        let mut command = guarded_ssh(
            &self.program.guard,
            &self.program.ssh_bin,
            per_command_args(&self.config, &self.program, request),
        );
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let output =
            match tokio::time::timeout(self.config.ctl_timeout(), run_to_end(command)).await {
                Err(_) => {
                    return Err(TransportError::Unreachable(format!(
                        "`{verb}` got no answer within {}s",
                        self.config.ctl_timeout().as_secs()
                    )))
                }
                Ok(Err(e)) => return Err(spawn_error(&self.program.ssh_bin, &e)),
                Ok(Ok(output)) => output,
            };
        reply_of_output(verb, &output)
    }
}

/// Runs a command to its end, collecting stdout and stderr, with its stdin (the
/// watchdog's pipe, if any) kept open until then.
async fn run_to_end(mut command: tokio::process::Command) -> std::io::Result<std::process::Output> {
    let mut child = command.spawn()?;
    let _stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
    let status = child.wait().await?;
    Ok(std::process::Output {
        status,
        stdout: out,
        stderr: err,
    })
}

/// Everything a pipe gives until its end (nothing for no pipe).
async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes).await;
    }
    bytes
}

/// The ssh binary as a path: a name without `/` is looked up in `PATH`, so that a missing
/// ssh is reported as such rather than by the guard that would have run it.
pub(super) fn locate_program(program: &Path) -> Result<PathBuf, TransportError> {
    let not_found =
        |why: &str| TransportError::Unreachable(format!("cannot run {}: {why}", program.display()));
    if program.components().count() > 1 || program.is_absolute() {
        return if program.is_file() {
            Ok(program.to_path_buf())
        } else {
            Err(not_found("no such file"))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| not_found("not found in PATH"))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[async_trait]
impl Transport for SshTransport {
    async fn ctl(&self, request: &CtlRequest) -> Result<CtlResponse, TransportError> {
        tracing::debug!(verb = %request.verb(), destination = %self.config.destination, "ctl over ssh");
        match &self.shared {
            Some(shared) => self.ctl_shared(shared, request).await,
            None => self.ctl_per_command(request).await,
        }
    }

    async fn open_forward(&self, spec: ForwardSpec) -> Result<Box<dyn Forward>, TransportError> {
        match &self.shared {
            Some(shared) => {
                let connection = self.connection(shared).await?;
                Ok(Box::new(connection.forward(&self.config, spec).await?))
            }
            None => {
                let forward = retry_refused_handshake(&self.config, || {
                    SshForward::open(&self.config, &self.program, spec.clone())
                })
                .await?;
                Ok(Box::new(forward))
            }
        }
    }
}
