//! The built `mytunnel http` as users run it: started, read for its URL, observed, stopped
//! as Ctrl-C would; and time to URL measured with it. Its stdout goes to a file, so that
//! hundreds can run at once without a reader thread each.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::dataplane::await_serving;
use crate::edge::Edge;
use crate::procs::{Guard, Result};
use crate::shape::Observed;
use crate::stats::Summary;
use mytunnel_test_support::signal;

/// Numbers the clients' log files.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A `mytunnel http` started, its URL not read yet.
#[derive(Debug)]
pub struct Starting {
    guard: Guard,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
}

/// A running `mytunnel http` that printed its URL.
#[derive(Debug)]
pub struct Client {
    guard: Guard,
    /// Its public host.
    pub host: String,
    /// From spawn to its `url:` line.
    pub url_printed: Duration,
    /// When it was spawned.
    pub started: Instant,
}

impl Starting {
    /// Starts `mytunnel http <port> [extra]`.
    pub fn spawn(edge: &Edge, local_port: u16, extra: &[&str]) -> Result<Starting> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let stdout = edge.path(&format!("logs/client-{n}.stdout"));
        let stderr = edge.path(&format!("logs/client-{n}.stderr"));
        let file = |path: &PathBuf| {
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let mut command = edge.mytunnel_http(local_port, extra)?;
        command
            .stdout(Stdio::from(file(&stdout)?))
            .stderr(Stdio::from(file(&stderr)?));
        let started = Instant::now();
        let guard = Guard::spawn(&mut command, "mytunnel http")?;
        Ok(Starting {
            guard,
            stdout,
            stderr,
            started,
        })
    }

    /// Waits (at most `timeout`) for its first line, `url: https://<host>`.
    pub fn wait_url(mut self, timeout: Duration) -> Result<Client> {
        loop {
            let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if let Some((line, _)) = text.split_once('\n') {
                let url_printed = self.started.elapsed();
                let host = line
                    .strip_prefix("url: https://")
                    .ok_or_else(|| format!("mytunnel http printed {line:?} first"))?
                    .to_owned();
                return Ok(Client {
                    guard: self.guard,
                    host,
                    url_printed,
                    started: self.started,
                });
            }
            if let Err(e) = self.guard.check_running() {
                return Err(format!("{e}: {}", self.stderr_text()));
            }
            if self.started.elapsed() > timeout {
                return Err(format!(
                    "mytunnel http printed no url line within {timeout:?}: {}",
                    self.stderr_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Client {
    /// Starts one and waits for its URL.
    pub fn open(edge: &Edge, local_port: u16, extra: &[&str]) -> Result<Client> {
        Starting::spawn(edge, local_port, extra)?.wait_url(Duration::from_secs(60))
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.guard.pid()).unwrap_or(i32::MAX)
    }

    /// Its ssh processes and the SSH connections to the edge now.
    pub fn observe(&self, edge: &Edge) -> Observed {
        Observed::of(&[self.pid()], &edge.key(), edge.sshd_port())
    }

    /// Sends SIGINT (Ctrl-C: it stops ssh and releases the lease) without waiting.
    pub fn interrupt(&self) {
        let _ = signal(self.guard.pid(), Signal::SIGINT);
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        self.guard.check_running().is_err()
    }

    /// Stops it as Ctrl-C would, waiting at most 15 s; the guard kills what is left.
    pub fn stop(mut self) {
        let _ = self
            .guard
            .signal_and_wait(Signal::SIGINT, Duration::from_secs(15));
    }
}

/// Stops many clients as Ctrl-C would, all at once, waiting at most `timeout` for all;
/// the guards kill what is left. How many had to be killed.
pub fn stop_all(mut clients: Vec<Client>, timeout: Duration) -> usize {
    for client in &clients {
        client.interrupt();
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        clients.retain_mut(|c| !c.exited());
        if clients.is_empty() {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    clients.len()
}

/// Time to URL: from spawning `mytunnel http` to the first 200 through Caddy.
#[derive(Debug, Clone)]
pub struct TimeToUrl {
    /// Label of the variant.
    pub variant: String,
    /// Whether it ran with `--no-ssh-mux`.
    pub no_mux: bool,
    /// Spawn to the first 200.
    pub to_first_200: Summary,
    /// Spawn to the `url:` line.
    pub to_url_line: Summary,
    /// The command line (ports and paths as placeholders).
    pub command: String,
}

/// Measures time to URL `runs` times with `extra` flags.
pub fn time_to_url(
    edge: &Edge,
    local_port: u16,
    variant: &str,
    extra: &[&str],
    runs: usize,
) -> Result<TimeToUrl> {
    let mut to_200 = Vec::new();
    let mut to_line = Vec::new();
    for _ in 0..runs {
        let client = Client::open(edge, local_port, extra)?;
        await_serving(edge.http(), &client.host, Duration::from_secs(60))?;
        to_200.push(client.started.elapsed());
        to_line.push(client.url_printed);
        client.stop();
    }
    let mut command =
        "mytunnel http <app-port> --edge mtbench@127.0.0.1 --ssh-option Port=<sshd port> --ssh-option IdentityFile=<key> …".to_owned();
    for flag in extra {
        command.push(' ');
        command.push_str(flag);
    }
    let result = TimeToUrl {
        variant: variant.to_owned(),
        no_mux: extra.contains(&"--no-ssh-mux"),
        to_first_200: Summary::of(&to_200),
        to_url_line: Summary::of(&to_line),
        command,
    };
    eprintln!(
        "  time to URL [{variant}]: p50 {:?} (url line p50 {:?})",
        result.to_first_200.p50, result.to_url_line.p50
    );
    Ok(result)
}
