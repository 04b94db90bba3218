//! The session's one SSH connection: an interactive ControlMaster that carries every ctl
//! request (each a mux session) and every forward (each a mux request) of the transport.
//!
//! The master is `ssh -tt -M -S <dir>/master -o ControlPersist=no … <destination>`, a
//! child of this process (no `-f`), started through the parent-death [`guard`](super::guard).
//! It asks for a pty and no command, so the edge's gate holds the session and both ssh and
//! sshd mark the connection interactive: TCP_NODELAY on both ends, so a small response is
//! never held back waiting for an ACK. Its stdin is not the user's terminal (never put in
//! raw mode); its stdout, the pty, carries nothing.

use super::*;
use mytunnel_core::gate::SESSION_HELD;
use openssh::{ForwardType, Socket};
use tokio::sync::watch;

/// Whether the connection's session asks for a pty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Terminal {
    /// `-tt`: an interactive connection, TCP_NODELAY on both ends.
    Pty,
    /// `-T`: for an edge whose keys refuse a pty (written before keys had `pty`). Works,
    /// but small responses may wait for delayed ACKs.
    None,
}

/// What ssh logs when the edge refused the pty; with `-tt` it then exits.
pub(super) const PTY_REFUSED: &str = "PTY allocation request failed";

/// How the connection ended: what `ssh` exited with and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConnectionEnd {
    /// `exit status: 255`, or why there is none (closed by the client, …).
    pub(super) status: String,
    /// The last lines of ssh's log and stderr.
    pub(super) said: String,
}

impl fmt::Display for ConnectionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ssh ended ({}){}",
            self.status,
            with_tail("ssh said", &self.said)
        )
    }
}

/// A running master connection. Dropping the last `Arc` of it kills ssh and removes its
/// directory; nothing blocks.
pub(super) struct Connection {
    destination: String,
    /// `<dir>/master`.
    pub(super) socket: PathBuf,
    /// `<dir>/log`: the master's `-E` log.
    log: PathBuf,
    /// The mux client; it does not own the master (resumed), so dropping it stops nothing.
    mux: openssh::Session,
    /// True once the gate said it holds the session ([`SESSION_HELD`]).
    held: watch::Receiver<bool>,
    ended: watch::Receiver<Option<ConnectionEnd>>,
    /// Sending (or dropping) tells the watcher task to kill ssh.
    kill: Mutex<Option<oneshot::Sender<()>>>,
    /// The 0700 directory; removed on drop.
    _dir: TempDir,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("destination", &self.destination)
            .field("socket", &self.socket)
            .field("ended", &*self.ended.borrow())
            .finish_non_exhaustive()
    }
}

/// Starts the master and returns once its mux socket answers, or why it could not.
pub(super) async fn launch(
    config: &SshConfig,
    program: &SshProgram,
    terminal: Terminal,
) -> Result<Arc<Connection>, TransportError> {
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
    tracing::debug!(destination = %config.destination, socket = %socket.display(), "launching the ssh connection");
    let mut command = guarded_ssh(
        &program.guard,
        &program.ssh_bin,
        master_args(config, program, terminal, &socket, &log),
    );
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_file));
    let mut child = command
        .spawn()
        .map_err(|e| spawn_error(&program.ssh_bin, &e))?;
    let (held_tx, held) = watch::channel(false);
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(read_session_output(stdout, held_tx));
    }
    let (ended_tx, ended) = watch::channel(None);
    let (kill_tx, kill_rx) = oneshot::channel();
    tokio::spawn(watch_ssh(
        child,
        kill_rx,
        ended_tx,
        log.clone(),
        stderr_path,
    ));
    let mux = openssh::Session::resume_mux(
        socket.clone().into_boxed_path(),
        Some(log.clone().into_boxed_path()),
    );
    let connection = Arc::new(Connection {
        destination: config.destination.clone(),
        socket,
        log,
        mux,
        held,
        ended,
        kill: Mutex::new(Some(kill_tx)),
        _dir: dir,
    });
    match tokio::time::timeout(config.ctl_timeout(), connection.until_ready()).await {
        Ok(Ok(())) => Ok(connection),
        Ok(Err(end)) => Err(TransportError::Unreachable(format!(
            "ssh to {} failed ({}){}",
            config.destination,
            end.status,
            with_tail("ssh said", &end.said)
        ))),
        Err(_) => Err(TransportError::Unreachable(format!(
            "ssh did not connect to {} within {}s{}",
            config.destination,
            config.ctl_timeout().as_secs(),
            with_tail("ssh said", &log_tail(&connection.log)),
        ))),
    }
}

/// Reads what the session prints (the gate's one line, through the pty) to its end, and
/// says when the gate holds the session. Nothing else is expected; the rest is dropped.
async fn read_session_output(stdout: tokio::process::ChildStdout, held: watch::Sender<bool>) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    while next_line(&mut reader, &mut line).await {
        if !*held.borrow() && String::from_utf8_lossy(&line).contains(SESSION_HELD) {
            let _ = held.send(true);
        }
    }
}

/// Owns the ssh child: records how it ended, or kills it when told to (or when the
/// connection is dropped).
async fn watch_ssh(
    mut child: Child,
    mut kill: oneshot::Receiver<()>,
    ended: watch::Sender<Option<ConnectionEnd>>,
    log: PathBuf,
    stderr: PathBuf,
) {
    // `Child::wait` closes the child's stdin first; ssh must keep it (the guard's pipe).
    let _stdin = child.stdin.take();
    let status = tokio::select! {
        status = child.wait() => status,
        _ = &mut kill => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let _ = ended.send(Some(ConnectionEnd {
                status: "closed by the client".to_owned(),
                said: String::new(),
            }));
            return;
        }
    };
    let mut said = log_tail(&log);
    let stderr = log_tail(&stderr);
    if !stderr.is_empty() {
        if !said.is_empty() {
            said.push_str("; ");
        }
        said.push_str(&stderr);
    }
    let status = match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("cannot read its status: {e}"),
    };
    tracing::debug!(%status, %said, "the ssh connection ended");
    let _ = ended.send(Some(ConnectionEnd { status, said }));
}

/// How often readiness is checked while ssh logs in.
const READY_POLL: Duration = Duration::from_millis(5);
/// How long after the mux socket answers a connection counts as up without the gate's
/// [`SESSION_HELD`] line (a gate older than that line prints nothing).
const HELD_GRACE: Duration = Duration::from_secs(2);

impl Connection {
    /// Whether ssh is still running.
    pub(super) fn is_up(&self) -> bool {
        self.ended.borrow().is_none()
    }

    /// Waits until ssh has exited; says how.
    pub(super) async fn ended(&self) -> ConnectionEnd {
        let mut ended = self.ended.clone();
        let end = match ended.wait_for(Option::is_some).await {
            Ok(end) => end.clone(),
            Err(_) => None,
        };
        end.unwrap_or_else(gone)
    }

    /// Kills ssh now (the watcher reaps it); does not wait.
    pub(super) fn kill(&self) {
        let sender = self
            .kill
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }

    /// Kills ssh and waits (bounded) until it is gone.
    pub(super) async fn close(&self) {
        self.kill();
        let _ = tokio::time::timeout(STOP_GRACE, self.ended()).await;
    }

    /// Up: the gate holds the session (so the edge granted it, pty and all) and the mux
    /// socket answers. Or ssh exited (a refused pty ends `ssh -tt`), and how.
    async fn until_ready(&self) -> Result<(), ConnectionEnd> {
        let mut ended = self.ended.clone();
        let mut held = self.held.clone();
        let mut mux_up_since: Option<tokio::time::Instant> = None;
        let mut output_open = true;
        loop {
            if let Some(end) = ended.borrow_and_update().clone() {
                return Err(end);
            }
            if mux_up_since.is_none() && self.socket.exists() && self.mux.check().await.is_ok() {
                mux_up_since = Some(tokio::time::Instant::now());
            }
            if let Some(since) = mux_up_since {
                if *held.borrow_and_update() || since.elapsed() >= HELD_GRACE {
                    return Ok(());
                }
            }
            tokio::select! {
                changed = ended.changed() => if changed.is_err() { return Err(gone()) },
                changed = held.changed(), if output_open => output_open = changed.is_ok(),
                () = tokio::time::sleep(READY_POLL) => {}
            }
        }
    }

    /// Runs one ctl request as a mux session.
    pub(super) async fn ctl(
        &self,
        config: &SshConfig,
        request: &CtlRequest,
    ) -> Result<CtlResponse, TransportError> {
        let verb = request.verb();
        let mut command = self.mux.command(config.remote_bin.as_str());
        command.args(ctl_words(config, request));
        let output = match tokio::time::timeout(config.ctl_timeout(), command.output()).await {
            Err(_) => {
                return Err(TransportError::Unreachable(format!(
                    "`{verb}` got no answer within {}s over the ssh connection{}",
                    config.ctl_timeout().as_secs(),
                    with_tail("ssh log", &log_tail(&self.log)),
                )))
            }
            Ok(Err(e)) => return Err(map_mux_error(&e, &log_tail(&self.log))),
            Ok(Ok(output)) => output,
        };
        reply_of_output(verb, &output)
    }

    /// Asks the edge for a remote forward over this connection; returns once it accepted.
    pub(super) async fn forward(
        self: &Arc<Self>,
        config: &SshConfig,
        spec: ForwardSpec,
    ) -> Result<MuxForward, TransportError> {
        let request = self.mux.request_port_forward(
            ForwardType::Remote,
            listen_socket(&spec.edge_bind),
            app_socket(spec.local_port),
        );
        let refused = |why: String| {
            TransportError::Unreachable(format!(
                "the forward {} -> 127.0.0.1:{} did not come up: {why}",
                spec.edge_bind, spec.local_port
            ))
        };
        match tokio::time::timeout(config.forward_timeout(), request).await {
            Err(_) => Err(refused(format!(
                "no answer within {}s{}",
                config.forward_timeout().as_secs(),
                with_tail("ssh log", &log_tail(&self.log))
            ))),
            Ok(Err(e)) => Err(refused(format!(
                "{}{}",
                error_chain(&e),
                with_tail("ssh log", &log_tail(&self.log))
            ))),
            Ok(Ok(())) => Ok(MuxForward {
                connection: Arc::clone(self),
                spec,
                end: None,
            }),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.kill();
    }
}

fn gone() -> ConnectionEnd {
    ConnectionEnd {
        status: "the ssh connection's watcher is gone".to_owned(),
        said: String::new(),
    }
}

fn listen_socket(bind: &BindTarget) -> Socket<'_> {
    match bind {
        BindTarget::LoopbackPort(port) => Socket::TcpSocket {
            host: "127.0.0.1".into(),
            port: *port,
        },
        BindTarget::UnixSocket(path) => Socket::UnixSocket {
            path: Path::new(path.as_str()).into(),
        },
    }
}

fn app_socket(port: u16) -> Socket<'static> {
    Socket::TcpSocket {
        host: "127.0.0.1".into(),
        port,
    }
}

/// A forward on the session's connection. It ends when the connection ends; stopping it
/// cancels it on the edge and leaves the connection (and its other forwards) up.
pub struct MuxForward {
    connection: Arc<Connection>,
    spec: ForwardSpec,
    end: Option<ForwardEnd>,
}

impl fmt::Debug for MuxForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxForward")
            .field("spec", &self.spec)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl MuxForward {
    async fn cancel(connection: &Connection, spec: &ForwardSpec) {
        let cancel = connection.mux.close_port_forward(
            ForwardType::Remote,
            listen_socket(&spec.edge_bind),
            app_socket(spec.local_port),
        );
        match tokio::time::timeout(STOP_GRACE, cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %error_chain(&e), "cannot cancel the forward"),
            Err(_) => tracing::debug!("cancelling the forward timed out"),
        }
    }
}

#[async_trait]
impl Forward for MuxForward {
    async fn ended(&mut self) -> ForwardEnd {
        if let Some(end) = &self.end {
            return end.clone();
        }
        let end = ForwardEnd {
            reason: format!(
                "the ssh connection ended: {}",
                self.connection.ended().await
            ),
        };
        self.end = Some(end.clone());
        end
    }

    async fn stop(&mut self) {
        if self.end.is_some() {
            return;
        }
        if self.connection.is_up() {
            MuxForward::cancel(&self.connection, &self.spec).await;
        }
        self.end = Some(ForwardEnd {
            reason: "stopped by the client".to_owned(),
        });
    }
}

impl Drop for MuxForward {
    /// A forward dropped without [`Forward::stop`] is cancelled in the background, so
    /// that the connection's other forwards are not ended with it.
    fn drop(&mut self) {
        if self.end.is_some() || !self.connection.is_up() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let connection = Arc::clone(&self.connection);
            let spec = self.spec.clone();
            runtime.spawn(async move { MuxForward::cancel(&connection, &spec).await });
        }
    }
}

/// A fresh 0700 directory under `$XDG_RUNTIME_DIR` (when set and writable) or the system
/// temporary directory. Refuses to go on unless the mode really is 0700.
pub(super) fn private_dir() -> std::io::Result<TempDir> {
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

pub(super) fn map_mux_error(e: &openssh::Error, master_log: &str) -> TransportError {
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

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
