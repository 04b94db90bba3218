//! The plain data plane (`--no-ssh-mux`): one supervised `ssh -N -R` per forward.

use super::*;

/// The last stderr lines of a forward's ssh process.
#[derive(Debug, Default)]
pub(super) struct StderrRing {
    pub(super) lines: VecDeque<String>,
}

impl StderrRing {
    pub(super) fn push(&mut self, line: String) {
        if self.lines.len() >= STDERR_RING {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub(super) fn tail(&self, n: usize) -> String {
        join_tail(self.lines.iter().map(String::as_str), n)
    }
}

pub(super) type SharedRing = Arc<Mutex<StderrRing>>;

pub(super) fn lock(ring: &SharedRing) -> MutexGuard<'_, StderrRing> {
    ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads ssh's stderr to its end: keeps the useful lines and signals the success line.
pub(super) async fn drain_stderr(
    stderr: ChildStderr,
    ring: SharedRing,
    ready: oneshot::Sender<()>,
) {
    let mut reader = BufReader::new(stderr);
    let mut ready = Some(ready);
    let mut buf = Vec::new();
    while next_line(&mut reader, &mut buf).await {
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
    /// The guard's pipe, held apart: `Child::wait` would close it, and with it ssh.
    _stdin: Option<tokio::process::ChildStdin>,
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

pub(super) enum Startup {
    Ready,
    Exited,
    TimedOut,
}

impl SshForward {
    /// Starts `ssh -N -R` and returns once the edge accepted the forward.
    pub(super) async fn open(
        config: &SshConfig,
        program: &SshProgram,
        spec: ForwardSpec,
    ) -> Result<SshForward, TransportError> {
        check_destination(&config.destination)?;
        tracing::debug!(destination = %config.destination, edge_bind = %spec.edge_bind, local_port = spec.local_port, "starting ssh forward");
        let mut command = guarded_ssh(
            &program.guard,
            &program.ssh_bin,
            forward_args(config, program, &spec),
        );
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| spawn_error(&program.ssh_bin, &e))?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let ring: SharedRing = Arc::default();
        let (ready_tx, mut ready_rx) = oneshot::channel();
        let reader = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(drain_stderr(stderr, Arc::clone(&ring), ready_tx)));
        let mut forward = SshForward {
            child,
            _stdin: stdin,
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

pub(super) fn describe_end(status: &std::io::Result<ExitStatus>, tail: &str) -> String {
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
