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
        interpret_reply(
            verb,
            output.status.code(),
            &output.stdout,
            &tail_of_text(&String::from_utf8_lossy(&output.stderr), TAIL_LINES),
        )
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
        interpret_reply(
            verb,
            output.status.code(),
            &output.stdout,
            &tail_of_text(&String::from_utf8_lossy(&output.stderr), TAIL_LINES),
        )
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

// ---------------------------------------------------------------------------------------
// Refused handshakes

/// Whether ssh's output says the edge refused the connection before login, so that
/// nothing ran there and another try may get through: nothing listening (`ssh: connect to
/// host … port …: Connection refused`, sshd restarting), or the connection closed or reset
/// before the SSH banner (`kex_exchange_identification: read: Connection reset by peer`,
/// `… Connection closed by remote host`, `banner line 0: Exceeded MaxStartups`: sshd
/// shedding handshakes past its `MaxStartups`), or no banner within the connect timeout.
/// A failed login, an unknown host key, a name that does not resolve or a refused
/// forward are not: trying again would fail the same way.
fn is_refused_handshake(ssh_output: &str) -> bool {
    const BEFORE_THE_BANNER: [&str; 3] = [
        "Connection closed by remote host",
        "Connection reset by peer",
        "Exceeded MaxStartups",
    ];
    ssh_output.split(';').map(str::trim).any(|line| {
        let banner_exchange = line.contains("kex_exchange_identification:")
            || line.contains("ssh_exchange_identification:");
        (banner_exchange && BEFORE_THE_BANNER.iter().any(|b| line.contains(b)))
            || (line.contains("ssh: connect to host ") && line.ends_with(": Connection refused"))
            || line.contains("Connection timed out during banner exchange")
    })
}

/// Runs `attempt` again, with jittered backoff, while it fails with a handshake the edge
/// refused ([`is_refused_handshake`]), for at most `config.handshake_retry` in all (the
/// last wait is cut to fit). Then the last error says how many refusals over how long.
async fn retry_refused_handshake<T, F, Fut>(
    config: &SshConfig,
    mut attempt: F,
) -> Result<T, TransportError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TransportError>>,
{
    let started = tokio::time::Instant::now();
    let mut refusals = 0u32;
    loop {
        match attempt().await {
            Err(TransportError::Unreachable(message)) if is_refused_handshake(&message) => {
                refusals = refusals.saturating_add(1);
                let spent = started.elapsed();
                let left = config.handshake_retry.saturating_sub(spent);
                if left.is_zero() {
                    return Err(TransportError::Unreachable(gave_up_on_refusals(
                        &message,
                        refusals,
                        spent,
                        config.handshake_retry,
                    )));
                }
                let delay = jittered_backoff(refusals).min(left);
                tracing::debug!(
                    destination = %config.destination,
                    refusals,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    %message,
                    "the edge refused the ssh handshake; retrying"
                );
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

/// The last refusal's message, with what was tried.
fn gave_up_on_refusals(message: &str, refusals: u32, spent: Duration, budget: Duration) -> String {
    if budget.is_zero() {
        return format!(
            "{message} (the edge refused the connection before login; retrying is off)"
        );
    }
    format!(
        "{message} (the edge refused the connection before login {refusals} time{s} in \
         {spent:.1}s: sshd is restarting or past its MaxStartups; gave up after the {budget}s \
         retry budget)",
        s = if refusals == 1 { "" } else { "s" },
        spent = spent.as_secs_f64(),
        budget = budget.as_secs_f64(),
    )
}

// ---------------------------------------------------------------------------------------
// Shared master

async fn launch_master(config: &SshConfig) -> Result<Master, TransportError> {
    let dir = private_dir().map_err(|e| {
        TransportError::Unreachable(format!(
            "cannot create a private directory for the ssh control socket: {e}"
        ))
    })?;
    let socket = dir.path().join("master");
    let log = dir.path().join("log");
    let stderr_path = dir.path().join("stderr");
    let stderr_file = std::fs::File::create(&stderr_path).map_err(|e| {
        TransportError::Unreachable(format!("cannot create {}: {e}", stderr_path.display()))
    })?;
    tracing::debug!(destination = %config.destination, socket = %socket.display(), "launching ssh master");
    let mut command = tokio::process::Command::new(&config.ssh_bin);
    command
        .args(master_args(config, &socket, &log))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_file))
        .kill_on_drop(true);
    let diagnostics = || {
        let mut text = log_tail(&log);
        let stderr = log_tail(&stderr_path);
        if !stderr.is_empty() {
            if !text.is_empty() {
                text.push_str("; ");
            }
            text.push_str(&stderr);
        }
        text
    };
    let status = match tokio::time::timeout(config.ctl_timeout(), command.status()).await {
        Err(_) => {
            return Err(TransportError::Unreachable(format!(
                "ssh did not connect to {} within {}s{}",
                config.destination,
                config.ctl_timeout().as_secs(),
                with_tail("ssh said", &diagnostics()),
            )))
        }
        Ok(Err(e)) => return Err(spawn_error(&config.ssh_bin, &e)),
        Ok(Ok(status)) => status,
    };
    if !status.success() {
        return Err(TransportError::Unreachable(format!(
            "ssh to {} failed ({status}){}",
            config.destination,
            with_tail("ssh said", &diagnostics()),
        )));
    }
    let session = openssh::Session::resume_mux(
        socket.clone().into_boxed_path(),
        Some(log.clone().into_boxed_path()),
    );
    Ok(Master {
        socket,
        log,
        session,
        dir,
    })
}

/// A fresh 0700 directory under `$XDG_RUNTIME_DIR` (when set and writable) or the system
/// temporary directory. Refuses to go on unless the mode really is 0700.
fn private_dir() -> std::io::Result<TempDir> {
    let make = |base: &Path| {
        tempfile::Builder::new()
            .prefix("mytunnel-ssh-")
            .permissions(Permissions::from_mode(0o700))
            .tempdir_in(base)
    };
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir());
    let dir = match runtime.map(|base| make(&base)) {
        Some(Ok(dir)) => dir,
        _ => make(&std::env::temp_dir())?,
    };
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o700))?;
    let mode = std::fs::symlink_metadata(dir.path())?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        return Err(std::io::Error::other(format!(
            "{} has mode {mode:o}, not 700",
            dir.path().display()
        )));
    }
    Ok(dir)
}

/// `-M -S <socket> -f -N -o ControlPersist=yes -o BatchMode=yes -o ConnectTimeout=N
/// -E <log> [-o extra…] -- <destination>`
fn master_args(config: &SshConfig, socket: &Path, log: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "-M".into(),
        "-S".into(),
        socket.into(),
        "-f".into(),
        "-N".into(),
        "-o".into(),
        "ControlPersist=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        connect_timeout_option(config.connect_timeout).into(),
        "-E".into(),
        log.into(),
    ];
    args.extend(extra_option_args(config).into_iter().map(OsString::from));
    args.push("--".into());
    args.push(config.destination.clone().into());
    args
}

/// `-S <socket> -O exit -- <destination>`
fn exit_args(socket: &Path, destination: &str) -> Vec<OsString> {
    vec![
        "-S".into(),
        socket.into(),
        "-O".into(),
        "exit".into(),
        "--".into(),
        destination.into(),
    ]
}

fn map_mux_error(e: &openssh::Error, master_log: &str) -> TransportError {
    let text = error_chain(e);
    match e {
        // The remote program could not run (exit 127: not installed or not in PATH).
        openssh::Error::Remote(_) => {
            TransportError::Malformed(format!("the edge could not run the remote command: {text}"))
        }
        openssh::Error::InvalidCommand => {
            TransportError::Malformed(format!("the command cannot be sent: {text}"))
        }
        _ => TransportError::Unreachable(format!(
            "the shared ssh connection failed: {text}{}",
            with_tail("ssh log", master_log)
        )),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

// ---------------------------------------------------------------------------------------
// Argument building (pure)

/// `ConnectTimeout=N`, N in whole seconds rounded up, at least 1.
fn connect_timeout_option(timeout: Duration) -> String {
    let secs = timeout
        .as_secs()
        .saturating_add(u64::from(timeout.subsec_nanos() > 0))
        .max(1);
    format!("ConnectTimeout={secs}")
}

fn extra_option_args(config: &SshConfig) -> Vec<String> {
    config
        .extra_options
        .iter()
        .flat_map(|o| ["-o".to_owned(), o.clone()])
        .collect()
}

/// The words after the remote program: `ctl <verb> [flags]` plus the overrides.
fn ctl_words(config: &SshConfig, request: &CtlRequest) -> Vec<String> {
    let mut words = request.to_args();
    for (flag, value) in &config.remote_overrides {
        words.push(flag.clone());
        words.push(value.clone());
    }
    words
}

/// The one remote command string of a per-command ctl call, POSIX-quoted.
fn remote_command(config: &SshConfig, request: &CtlRequest) -> String {
    let mut words = vec![config.remote_bin.clone()];
    words.extend(ctl_words(config, request));
    shell_words::join(words)
}

/// `-T -o BatchMode=yes -o ControlMaster=no -o ControlPath=none -o ConnectTimeout=N
/// [-o extra…] -- <destination> <remote command>`
fn per_command_args(config: &SshConfig, request: &CtlRequest) -> Vec<String> {
    let mut args: Vec<String> = [
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-o",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    args.push(connect_timeout_option(config.connect_timeout));
    args.extend(extra_option_args(config));
    args.push("--".to_owned());
    args.push(config.destination.clone());
    args.push(remote_command(config, request));
    args
}

/// `-N -T -v -o ExitOnForwardFailure=yes -o ControlMaster=no -o ControlPath=none
/// -o BatchMode=yes -o ServerAliveInterval=10 -o ServerAliveCountMax=3 -o ConnectTimeout=N
/// [-o extra…] -R 127.0.0.1:<edge>:127.0.0.1:<local> -- <destination>`
fn forward_args(config: &SshConfig, spec: &ForwardSpec) -> Vec<String> {
    let mut args: Vec<String> = [
        "-N",
        "-T",
        "-v",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-o",
        "BatchMode=yes",
        "-o",
        "ServerAliveInterval=10",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    args.push(connect_timeout_option(config.connect_timeout));
    args.extend(extra_option_args(config));
    args.push("-R".to_owned());
    // `127.0.0.1:PORT:…` or `/path/to.sock:…`: the bind target is already in ssh's form.
    args.push(format!("{}:127.0.0.1:{}", spec.edge_bind, spec.local_port));
    args.push("--".to_owned());
    args.push(config.destination.clone());
    args
}

/// An empty destination, or one ssh would read as an option, is refused up front.
fn check_destination(destination: &str) -> Result<(), TransportError> {
    if destination.trim().is_empty() {
        return Err(TransportError::Unreachable(
            "no ssh destination given".to_owned(),
        ));
    }
    if destination.starts_with('-') || destination.chars().any(char::is_control) {
        return Err(TransportError::Unreachable(format!(
            "{:?} is not an ssh destination",
            clean_text(destination)
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Replies and diagnostics (pure)

/// Turns what a ctl command left behind into its answer. `status` is the exit code (None
/// when killed by a signal), `stderr_tail` the last stderr lines for messages.
fn interpret_reply(
    verb: Verb,
    status: Option<i32>,
    stdout: &[u8],
    stderr_tail: &str,
) -> Result<CtlResponse, TransportError> {
    let text = String::from_utf8_lossy(stdout);
    // Every string of the edge's answer is made printable here, before anything can show
    // it: a hostile or broken edge must not write escape sequences to the user's terminal.
    match decode_reply(verb, &text) {
        Ok(response) if status == Some(0) => Ok(response.printable()),
        // `health` prints its document and exits 1 when the edge is unhealthy.
        Ok(response @ CtlResponse::Health(_)) if status == Some(1) => Ok(response.printable()),
        Ok(_) => Err(TransportError::Malformed(format!(
            "`{verb}` printed a success document but {}{}",
            describe_code(status),
            with_tail("stderr", stderr_tail)
        ))),
        Err(ReplyError::Refused(api)) => Err(TransportError::Refused(api.printable())),
        Err(malformed @ ReplyError::Malformed { .. }) => match status {
            // ssh's own failure: it could not connect, authenticate or run the command.
            Some(255) | None => Err(TransportError::Unreachable(format!(
                "ssh {}{}",
                describe_code(status),
                with_tail("ssh said", stderr_tail)
            ))),
            Some(_) => Err(TransportError::Malformed(format!(
                "{malformed} ({}){}{}",
                describe_code(status),
                with_tail("stdout", &tail_of_text(&text, 2)),
                with_tail("stderr", stderr_tail)
            ))),
        },
    }
}

fn describe_code(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_owned(),
    }
}

/// `"; <label>: <tail>"`, or nothing for an empty tail.
fn with_tail(label: &str, tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; {label}: {tail}")
    }
}

/// Control characters (other than tab) removed, at most [`MAX_LINE_CHARS`] characters.
fn clean_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .take(MAX_LINE_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// One raw stderr line, decoded lossily and cleaned.
fn clean_line(bytes: &[u8]) -> String {
    clean_text(&String::from_utf8_lossy(bytes))
}

/// Whether a stderr line is worth keeping: everything but ssh's debug chatter, except the
/// debug lines that tell where a connection got to.
fn keep_stderr_line(line: &str) -> bool {
    if line.is_empty() || line.starts_with("Warning: Permanently added") {
        return false;
    }
    if !line.starts_with("debug") {
        return true;
    }
    const USEFUL: [&str; 8] = [
        "remote forward",
        "Connecting to",
        "Connection established",
        "Authenticated to",
        "Authentication succeeded",
        "Exit status",
        "Killed by signal",
        "Remote connections from",
    ];
    line.starts_with("debug1:") && USEFUL.iter().any(|u| line.contains(u))
}

/// Whether a stderr line says the edge accepted the remote forward.
fn is_forward_success(line: &str) -> bool {
    line.contains(FORWARD_SUCCESS)
}

/// The last `n` kept lines of a text, joined with `"; "`.
fn tail_of_text(text: &str, n: usize) -> String {
    let kept: Vec<String> = text
        .lines()
        .map(clean_text)
        .filter(|l| keep_stderr_line(l))
        .collect();
    join_tail(kept.iter().map(String::as_str), n)
}

fn join_tail<'a>(lines: impl DoubleEndedIterator<Item = &'a str>, n: usize) -> String {
    let mut last: Vec<&str> = lines.rev().take(n).collect();
    last.reverse();
    last.join("; ")
}

/// The last lines of a log file (its last 16 KiB), or nothing if it cannot be read.
fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read()
        .map(|text| tail_of_text(&text, TAIL_LINES))
        .unwrap_or_default()
}

fn spawn_error(ssh_bin: &Path, e: &std::io::Error) -> TransportError {
    TransportError::Unreachable(format!("cannot run {}: {e}", ssh_bin.display()))
}

// ---------------------------------------------------------------------------------------
// Data plane

/// The last stderr lines of a forward's ssh process.
#[derive(Debug, Default)]
struct StderrRing {
    lines: VecDeque<String>,
}

impl StderrRing {
    fn push(&mut self, line: String) {
        if self.lines.len() >= STDERR_RING {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn tail(&self, n: usize) -> String {
        join_tail(self.lines.iter().map(String::as_str), n)
    }
}

type SharedRing = Arc<Mutex<StderrRing>>;

fn lock(ring: &SharedRing) -> MutexGuard<'_, StderrRing> {
    ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads ssh's stderr to its end: keeps the useful lines and signals the success line.
async fn drain_stderr(stderr: ChildStderr, ring: SharedRing, ready: oneshot::Sender<()>) {
    let mut reader = BufReader::new(stderr);
    let mut ready = Some(ready);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = clean_line(&buf);
        if is_forward_success(&line) {
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
        }
        if keep_stderr_line(&line) {
            lock(&ring).push(line);
        }
    }
}

/// A running `ssh -N -R` forward. Dropping it kills ssh.
pub struct SshForward {
    child: Child,
    pid: Option<u32>,
    spec: ForwardSpec,
    ring: SharedRing,
    reader: Option<JoinHandle<()>>,
    end: Option<ForwardEnd>,
}

impl fmt::Debug for SshForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshForward")
            .field("pid", &self.pid)
            .field("spec", &self.spec)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

enum Startup {
    Ready,
    Exited,
    TimedOut,
}

impl SshForward {
    /// Starts `ssh -N -R` and returns once the edge accepted the forward.
    async fn open(config: &SshConfig, spec: ForwardSpec) -> Result<SshForward, TransportError> {
        check_destination(&config.destination)?;
        tracing::debug!(destination = %config.destination, edge_bind = %spec.edge_bind, local_port = spec.local_port, "starting ssh forward");
        let mut command = tokio::process::Command::new(&config.ssh_bin);
        command
            .args(forward_args(config, &spec))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| spawn_error(&config.ssh_bin, &e))?;
        let pid = child.id();
        let ring: SharedRing = Arc::default();
        let (ready_tx, mut ready_rx) = oneshot::channel();
        let reader = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(drain_stderr(stderr, Arc::clone(&ring), ready_tx)));
        let mut forward = SshForward {
            child,
            pid,
            spec: spec.clone(),
            ring,
            reader,
            end: None,
        };
        let startup = tokio::time::timeout(config.forward_timeout(), async {
            tokio::select! {
                biased;
                ready = &mut ready_rx => match ready {
                    Ok(()) => Startup::Ready,
                    // stderr closed without the success line: ssh is exiting.
                    Err(_) => Startup::Exited,
                },
                _ = forward.child.wait() => Startup::Exited,
            }
        })
        .await
        .unwrap_or(Startup::TimedOut);
        match startup {
            Startup::Ready => Ok(forward),
            Startup::Exited => {
                let end = forward.finish(config.forward_timeout()).await;
                Err(TransportError::Unreachable(format!(
                    "the forward {} -> 127.0.0.1:{} did not come up: {}",
                    spec.edge_bind, spec.local_port, end.reason
                )))
            }
            Startup::TimedOut => {
                forward.stop().await;
                Err(TransportError::Unreachable(format!(
                    "the forward {} -> 127.0.0.1:{} was not confirmed within {}s{}",
                    spec.edge_bind,
                    spec.local_port,
                    config.forward_timeout().as_secs(),
                    with_tail("ssh said", &lock(&forward.ring).tail(TAIL_LINES)),
                )))
            }
        }
    }

    /// Waits (at most `limit`, then kills) for ssh to exit and for its last stderr lines.
    async fn finish(&mut self, limit: Duration) -> ForwardEnd {
        if let Some(end) = &self.end {
            return end.clone();
        }
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                let _ = self.child.start_kill();
                self.child.wait().await
            }
        };
        self.settle(status, "").await
    }

    /// Collects the stderr tail once ssh has exited and records the end.
    async fn settle(&mut self, status: std::io::Result<ExitStatus>, prefix: &str) -> ForwardEnd {
        if let Some(reader) = self.reader.as_mut() {
            // A grandchild (e.g. a ProxyCommand) may hold stderr open: do not wait forever.
            if tokio::time::timeout(DRAIN_GRACE, reader).await.is_err() {
                if let Some(reader) = &self.reader {
                    reader.abort();
                }
            }
        }
        self.reader = None;
        let end = ForwardEnd {
            reason: format!(
                "{prefix}{}",
                describe_end(&status, &lock(&self.ring).tail(TAIL_LINES))
            ),
        };
        self.end = Some(end.clone());
        end
    }

    /// Sends SIGTERM to ssh (with the `kill` utility; this crate has no signal API).
    async fn terminate(&self) -> bool {
        let Some(pid) = self.pid else {
            return false;
        };
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        matches!(status, Ok(s) if s.success())
    }
}

fn describe_end(status: &std::io::Result<ExitStatus>, tail: &str) -> String {
    let status = match status {
        Ok(status) => format!("ssh exited ({status})"),
        Err(e) => format!("ssh ended (cannot read its status: {e})"),
    };
    format!("{status}{}", with_tail("last output", tail))
}

#[async_trait]
impl Forward for SshForward {
    async fn ended(&mut self) -> ForwardEnd {
        if let Some(end) = &self.end {
            return end.clone();
        }
        let status = self.child.wait().await;
        self.settle(status, "").await
    }

    async fn stop(&mut self) {
        if self.end.is_some() {
            return;
        }
        // Signal only a child not yet reaped, so the pid cannot belong to anyone else.
        if let Ok(None) = self.child.try_wait() {
            let exited = if self.terminate().await {
                tokio::time::timeout(STOP_GRACE, self.child.wait())
                    .await
                    .is_ok()
            } else {
                false
            };
            if !exited {
                let _ = self.child.start_kill();
            }
        }
        let status = self.child.wait().await;
        let end = self.settle(status, "stopped by the client: ").await;
        tracing::debug!(reason = %end.reason, "ssh forward stopped");
    }
}

impl Drop for SshForward {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.start_kill();
        }
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mytunnel_core::protocol::{AllocateRequest, ApiError, ErrorCode, ListScope, Takeover};
    use mytunnel_core::transport::TransportError;

    fn config() -> SshConfig {
        let mut c = SshConfig::new("alice@edge");
        c.extra_options = vec!["Port=2222".into()];
        c
    }

    fn allocate() -> CtlRequest {
        CtlRequest::Allocate(AllocateRequest {
            local_port: Some(3000),
            name: Some("portal".parse().unwrap()),
            ttl: Some(Duration::from_secs(5400)),
            takeover: Takeover::Refuse,
        })
    }

    #[test]
    fn refused_handshakes_are_told_from_other_failures() {
        // What OpenSSH 9.2 prints when sshd drops a connection past MaxStartups, closes it
        // before the banner, or is not listening (restarting); as our messages carry it.
        for refused in [
            "ssh exited with status 255; ssh said: kex_exchange_identification: read: Connection reset by peer; Connection reset by 127.0.0.1 port 22",
            "kex_exchange_identification: Connection closed by remote host",
            "kex_exchange_identification: banner line 0: Exceeded MaxStartups",
            "ssh_exchange_identification: Connection closed by remote host",
            "ssh to alice@edge failed (exit status: 255); ssh said: ssh: connect to host edge port 22: Connection refused",
            "ssh: connect to host 127.0.0.1 port 2222: Connection refused",
            "Connection timed out during banner exchange",
            "the forward 127.0.0.1:21000 -> 127.0.0.1:3000 did not come up: ssh exited (exit status: 255); last output: kex_exchange_identification: read: Connection reset by peer",
        ] {
            assert!(is_refused_handshake(refused), "{refused}");
        }
        for other in [
            "alice@edge: Permission denied (publickey).",
            "Host key verification failed.",
            "ssh: Could not resolve hostname edge: Name or service not known",
            "ssh: connect to host edge port 22: Connection timed out",
            "ssh: connect to host edge port 22: No route to host",
            "Error: remote port forwarding failed for listen port 21000",
            "kex_exchange_identification: banner line contains invalid characters",
            // After login (sshd killed while the command ran): the command may have run.
            "Connection closed by 127.0.0.1 port 22",
            "Connection reset by 127.0.0.1 port 22",
            "`allocate` got no answer within 40s",
            "",
        ] {
            assert!(!is_refused_handshake(other), "{other}");
        }
    }

    #[test]
    fn giving_up_says_how_often_and_how_long() {
        let text = gave_up_on_refusals(
            "ssh: connect to host edge port 22: Connection refused",
            7,
            Duration::from_millis(30_400),
            Duration::from_secs(30),
        );
        assert!(
            text.starts_with("ssh: connect to host edge port 22: Connection refused ("),
            "{text}"
        );
        assert!(text.contains("7 times in 30.4s"), "{text}");
        assert!(
            text.contains("gave up after the 30s retry budget"),
            "{text}"
        );
        let off = gave_up_on_refusals("x", 1, Duration::ZERO, Duration::ZERO);
        assert!(off.contains("retrying is off"), "{off}");
    }

    #[tokio::test(start_paused = true)]
    async fn refused_handshakes_are_retried_with_backoff_within_the_budget() {
        let refused = || {
            Err::<(), _>(TransportError::Unreachable(
                "kex_exchange_identification: read: Connection reset by peer".to_owned(),
            ))
        };
        // Refused twice, then through.
        let mut tries = 0;
        let start = tokio::time::Instant::now();
        let result = retry_refused_handshake(&config(), || {
            tries += 1;
            let outcome = if tries <= 2 { refused() } else { Ok(()) };
            async move { outcome }
        })
        .await;
        assert_eq!(result, Ok(()));
        assert_eq!(tries, 3);
        // 0.5 s and 1 s, each ±25%.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(1125) && waited <= Duration::from_millis(1875),
            "{waited:?}"
        );

        // Always refused: given up once the budget is spent, not before, not much after.
        let mut c = config();
        c.handshake_retry = Duration::from_secs(20);
        let mut tries = 0;
        let start = tokio::time::Instant::now();
        let result = retry_refused_handshake(&c, || {
            tries += 1;
            async move { refused() }
        })
        .await;
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        match result {
            Err(TransportError::Unreachable(m)) => {
                assert!(m.contains("Connection reset by peer"), "{m}");
                assert!(m.contains(&format!("{tries} times in 20.0s")), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // 0.5 + 1 + 2 + 4 + 8 (±25%) then the rest of the 20 s: 6 or 7 tries.
        assert!((6..=7).contains(&tries), "{tries}");

        // Any other failure is final at once.
        let mut tries = 0;
        let result = retry_refused_handshake(&config(), || {
            tries += 1;
            async {
                Err::<(), _>(TransportError::Unreachable(
                    "alice@edge: Permission denied (publickey).".to_owned(),
                ))
            }
        })
        .await;
        assert_eq!(tries, 1);
        assert!(
            matches!(result, Err(TransportError::Unreachable(m)) if m.ends_with("(publickey)."))
        );
    }

    #[test]
    fn defaults() {
        let c = SshConfig::new("edge");
        assert_eq!(c.ssh_bin, PathBuf::from("ssh"));
        assert_eq!(c.remote_bin, "mytunneld");
        assert_eq!(c.multiplexing, Multiplexing::Shared);
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert!(c.remote_overrides.is_empty() && c.extra_options.is_empty());
        assert_eq!(c.ctl_timeout(), Duration::from_secs(40));
        assert_eq!(c.forward_timeout(), Duration::from_secs(25));
        assert_eq!(c.handshake_retry, Duration::from_secs(30));
    }

    #[test]
    fn connect_timeout_rounds_up_to_whole_seconds() {
        assert_eq!(
            connect_timeout_option(Duration::from_secs(10)),
            "ConnectTimeout=10"
        );
        assert_eq!(
            connect_timeout_option(Duration::from_millis(1500)),
            "ConnectTimeout=2"
        );
        assert_eq!(connect_timeout_option(Duration::ZERO), "ConnectTimeout=1");
        assert_eq!(
            connect_timeout_option(Duration::MAX),
            format!("ConnectTimeout={}", u64::MAX)
        );
    }

    #[test]
    fn per_command_arguments() {
        let args = per_command_args(&config(), &allocate());
        assert_eq!(
            args,
            [
                "-T",
                "-o",
                "BatchMode=yes",
                "-o",
                "ControlMaster=no",
                "-o",
                "ControlPath=none",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "Port=2222",
                "--",
                "alice@edge",
                "mytunneld ctl allocate --local-port 3000 --name portal --ttl '1h 30m'",
            ]
        );
    }

    #[test]
    fn overrides_follow_the_request_words() {
        let mut c = config();
        assert_eq!(ctl_words(&c, &CtlRequest::Stats), ["ctl", "stats"]);
        c.remote_overrides = vec![("--db-path".into(), "/var/lib/my db".into())];
        c.remote_bin = "/opt/x/mytunneld".into();
        assert_eq!(
            ctl_words(&c, &CtlRequest::List(ListScope::All)),
            ["ctl", "list", "--all", "--db-path", "/var/lib/my db"]
        );
        assert_eq!(
            remote_command(&c, &CtlRequest::Stats),
            "/opt/x/mytunneld ctl stats --db-path '/var/lib/my db'"
        );
    }

    #[test]
    fn forward_arguments() {
        let args = forward_args(
            &config(),
            &ForwardSpec {
                edge_bind: mytunnel_core::BindTarget::LoopbackPort(21007),
                local_port: 3000,
            },
        );
        let joined = args.join(" ");
        assert!(joined.starts_with("-N -T -v -o ExitOnForwardFailure=yes -o ControlMaster=no -o ControlPath=none -o BatchMode=yes -o ServerAliveInterval=10 -o ServerAliveCountMax=3 -o ConnectTimeout=10 -o Port=2222 "), "{joined}");
        assert!(joined.ends_with("-R 127.0.0.1:21007:127.0.0.1:3000 -- alice@edge"));
    }

    #[test]
    fn master_and_exit_arguments() {
        let args = master_args(&config(), Path::new("/d/master"), Path::new("/d/log"));
        let joined: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            joined.join(" "),
            "-M -S /d/master -f -N -o ControlPersist=yes -o BatchMode=yes -o ConnectTimeout=10 -E /d/log -o Port=2222 -- alice@edge"
        );
        let exit: Vec<String> = exit_args(Path::new("/d/master"), "alice@edge")
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(exit.join(" "), "-S /d/master -O exit -- alice@edge");
    }

    #[test]
    fn destinations_that_look_like_options_are_refused() {
        for bad in ["", "  ", "-oProxyCommand=sh", "edge\nx"] {
            assert!(
                matches!(check_destination(bad), Err(TransportError::Unreachable(_))),
                "{bad:?}"
            );
        }
        assert!(check_destination("alice@edge.example.com").is_ok());
    }

    #[test]
    fn stderr_filtering() {
        assert!(keep_stderr_line(
            "debug1: remote forward success for: listen 127.0.0.1:21000, connect 127.0.0.1:3000"
        ));
        assert!(keep_stderr_line(
            "Error: remote port forwarding failed for listen port 21000"
        ));
        assert!(keep_stderr_line(
            "alice@edge: Permission denied (publickey)."
        ));
        assert!(keep_stderr_line(
            "debug1: Authenticated to edge ([127.0.0.1]:22) using \"publickey\"."
        ));
        assert!(!keep_stderr_line(
            "debug1: Reading configuration data /etc/ssh/ssh_config"
        ));
        assert!(!keep_stderr_line("debug2: channel 0: open confirm"));
        assert!(!keep_stderr_line(
            "Warning: Permanently added 'edge' (ED25519) to the list of known hosts."
        ));
        assert!(!keep_stderr_line(""));
        assert!(is_forward_success(
            "debug1: remote forward success for: listen 127.0.0.1:21000, connect 127.0.0.1:3000"
        ));
        assert!(!is_forward_success(
            "debug1: remote forward failure for: listen 127.0.0.1:21000, connect 127.0.0.1:3000"
        ));
    }

    #[test]
    fn lines_are_cleaned_and_bounded() {
        assert_eq!(clean_line(b"Error: x\r\n"), "Error: x");
        assert_eq!(
            clean_line(b"\x1b[2Jbad \xff byte\n"),
            "[2Jbad \u{fffd} byte"
        );
        assert_eq!(clean_line(&[b'a'; 10_000]).chars().count(), MAX_LINE_CHARS);
        assert_eq!(
            tail_of_text("debug1: noise\none\ntwo\n\nthree\n", 2),
            "two; three"
        );
        assert_eq!(tail_of_text("", 5), "");
    }

    #[test]
    fn ring_keeps_the_last_lines() {
        let mut ring = StderrRing::default();
        for i in 0..(STDERR_RING + 7) {
            ring.push(format!("line {i}"));
        }
        assert_eq!(ring.lines.len(), STDERR_RING);
        assert_eq!(ring.lines.front().map(String::as_str), Some("line 7"));
        assert_eq!(
            ring.tail(2),
            format!("line {}; line {}", STDERR_RING + 5, STDERR_RING + 6)
        );
    }

    #[test]
    fn replies_map_to_transport_errors() {
        let health = r#"{"healthy":true,"version":"0.1.0","base_domain":"t.example","db":{"ok":true,"detail":"ok"},"caddy":{"ok":true,"detail":"ok"}}"#;
        assert!(matches!(
            interpret_reply(Verb::Health, Some(0), health.as_bytes(), ""),
            Ok(CtlResponse::Health(h)) if h.healthy
        ));
        // A success document with a failure status is not trusted.
        assert!(matches!(
            interpret_reply(Verb::Health, Some(2), health.as_bytes(), ""),
            Err(TransportError::Malformed(_))
        ));
        let refusal = ApiError::new(ErrorCode::SlugTaken, "portal is taken");
        assert_eq!(
            interpret_reply(
                Verb::Allocate,
                Some(1),
                refusal.to_envelope_json().as_bytes(),
                ""
            ),
            Err(TransportError::Refused(refusal))
        );
        match interpret_reply(
            Verb::List,
            Some(255),
            b"",
            "alice@edge: Permission denied (publickey).",
        ) {
            Err(TransportError::Unreachable(m)) => {
                assert!(m.contains("Permission denied (publickey)."), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            interpret_reply(Verb::List, None, b"", ""),
            Err(TransportError::Unreachable(_))
        ));
        match interpret_reply(
            Verb::List,
            Some(127),
            b"",
            "bash: line 1: mytunneld: command not found",
        ) {
            Err(TransportError::Malformed(m)) => {
                assert!(m.contains("command not found"), "{m}");
                assert!(m.contains("127"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            interpret_reply(Verb::List, Some(0), &[0xff, 0xfe, b'{'], ""),
            Err(TransportError::Malformed(_))
        ));
    }

    #[test]
    fn log_tail_reads_the_end_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut text = "x\n".repeat(20_000);
        text.push_str("debug1: noise\nssh: connect to host edge port 22: Connection refused\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            log_tail(&path),
            "x; x; x; x; ssh: connect to host edge port 22: Connection refused"
        );
        assert_eq!(log_tail(&dir.path().join("missing")), "");
    }

    #[test]
    fn private_dir_is_0700() {
        let dir = private_dir().unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn forward_end_describes_status_and_output() {
        use std::os::unix::process::ExitStatusExt;
        let reason = describe_end(
            &Ok(ExitStatus::from_raw(255 << 8)),
            "Error: remote port forwarding failed for listen port 21000",
        );
        assert!(reason.contains("255"), "{reason}");
        assert!(reason.contains("remote port forwarding failed"), "{reason}");
    }
}
