//! `mytunnel-bench --sdk-edge …`: a program embedding the SDK as a user's would, one edge
//! carrying many tunnels, for the scale measurement. It connects to the edge
//! (`Edge::builder()…connect()`: one SSH connection), opens `--tunnels N` tunnels to
//! `--app-port` on it (`edge.http(port).open()`), prints `url: https://<host>` for each and
//! then `ready`, and holds them until SIGINT or SIGTERM, when it closes the edge (each
//! tunnel releases its lease, then the connection ends) and exits.
//!
//! Usage: `mytunnel-bench --sdk-edge --destination USER@HOST --app-port PORT --tunnels N
//! [--ssh-option KEY=VALUE]…`

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use mytunnel_client::{Edge, TunnelHandle};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::procs::Result;

/// Tunnels opened at once: the edge's sshd takes a handful of sessions per connection.
const OPEN_AT_ONCE: usize = 4;
/// How long closing every tunnel may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the worker was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The ssh destination.
    pub destination: String,
    /// `--ssh-option` values.
    pub ssh_options: Vec<String>,
    /// The app's port on 127.0.0.1.
    pub app_port: u16,
    /// How many tunnels.
    pub tunnels: usize,
}

impl Spec {
    /// The worker's arguments after `--sdk-edge`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--destination".to_owned(),
            self.destination.clone(),
            "--app-port".to_owned(),
            self.app_port.to_string(),
            "--tunnels".to_owned(),
            self.tunnels.to_string(),
        ];
        for option in &self.ssh_options {
            args.push("--ssh-option".to_owned());
            args.push(option.clone());
        }
        args
    }

    /// Reads the arguments after `--sdk-edge`.
    pub fn parse(words: &[String]) -> Result<Spec> {
        let mut spec = Spec {
            destination: String::new(),
            ssh_options: Vec::new(),
            app_port: 0,
            tunnels: 0,
        };
        let mut words = words.iter();
        while let Some(word) = words.next() {
            let mut value = || {
                words
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{word} needs a value"))
            };
            match word.as_str() {
                "--destination" => spec.destination = value()?,
                "--app-port" => {
                    spec.app_port = value()?.parse().map_err(|e| format!("--app-port: {e}"))?;
                }
                "--tunnels" => {
                    spec.tunnels = value()?.parse().map_err(|e| format!("--tunnels: {e}"))?;
                }
                "--ssh-option" => spec.ssh_options.push(value()?),
                other => return Err(format!("--sdk-edge does not take {other:?}")),
            }
        }
        if spec.destination.is_empty() || spec.app_port == 0 || spec.tunnels == 0 {
            return Err("--sdk-edge needs --destination, --app-port and --tunnels".to_owned());
        }
        Ok(spec)
    }
}

/// Runs the worker to its end.
pub fn run(words: &[String]) -> Result<()> {
    let spec = Spec::parse(words)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a runtime: {e}"))?;
    runtime.block_on(serve(spec))
}

/// One edge connection for every tunnel of this program.
async fn connect(spec: &Spec) -> Result<Edge> {
    let mut builder = Edge::builder().edge(spec.destination.clone());
    for option in &spec.ssh_options {
        builder = builder.ssh_option(option.clone());
    }
    builder
        .connect()
        .await
        .map_err(|e| format!("connect to {}: {e}", spec.destination))
}

/// One tunnel on that connection.
async fn open(edge: Edge, app_port: u16) -> Result<TunnelHandle> {
    edge.http(app_port)
        .open()
        .await
        .map_err(|e| format!("open a tunnel: {e}"))
}

async fn serve(spec: Spec) -> Result<()> {
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot catch SIGINT: {e}"))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot catch SIGTERM: {e}"))?;
    let edge = connect(&spec).await?;
    let gate = Arc::new(Semaphore::new(OPEN_AT_ONCE));
    let mut opening = JoinSet::new();
    for _ in 0..spec.tunnels {
        let edge = edge.clone();
        let gate = Arc::clone(&gate);
        let app_port = spec.app_port;
        opening.spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            open(edge, app_port).await
        });
    }
    let mut tunnels = Vec::with_capacity(spec.tunnels);
    let mut failure = None;
    while let Some(joined) = opening.join_next().await {
        match joined.map_err(|e| format!("an open task failed: {e}")) {
            Ok(Ok(tunnel)) => {
                say(&format!("url: {}", tunnel.url()))?;
                tunnels.push(tunnel);
            }
            Ok(Err(e)) | Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        close(edge, tunnels).await;
        return Err(e);
    }
    say("ready")?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    close(edge, tunnels).await;
    Ok(())
}

/// Closes the edge: every tunnel on it stops and releases its lease, then the connection
/// ends; bounded by [`CLOSE_TIMEOUT`]. The handles are held until then (dropping one
/// would close its tunnel on its own).
async fn close(edge: Edge, tunnels: Vec<TunnelHandle>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, edge.close()).await;
    drop(tunnels);
}

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let spec = Spec {
            destination: "mtbench@127.0.0.1".to_owned(),
            ssh_options: vec!["Port=2222".to_owned(), "IdentityFile=/k".to_owned()],
            app_port: 3000,
            tunnels: 100,
        };
        assert_eq!(Spec::parse(&spec.to_args()), Ok(spec));
        assert!(Spec::parse(&["--tunnels".to_owned()]).is_err());
        assert!(Spec::parse(&["--app-port".to_owned(), "3000".to_owned()]).is_err());
        assert!(Spec::parse(&["--fast".to_owned()]).is_err());
    }
}
