//! SDK edges: programs embedding the SDK (`mytunnel-bench --sdk-edge`, see
//! [`crate::sdk_worker`]), each one edge connection carrying many tunnels, started one at
//! a time; every tunnel counted once its URL answers through Caddy.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{fits, log_row, measure_row, Kind, Part};
use crate::dataplane::await_serving;
use crate::edge::Edge;
use crate::procs::{Guard, Result};
use crate::sdk_worker::Spec;
use mytunnel_test_support::{poll_every, signal};

/// How long one SDK edge may take to open all its tunnels.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// A running program with one SDK edge.
#[derive(Debug)]
struct Worker {
    guard: Guard,
    hosts: Vec<String>,
}

impl Worker {
    fn start(edge: &Edge, n: usize, spec: &Spec) -> Result<Worker> {
        let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
        let stdout = edge.path(&format!("logs/sdk-edge-{n}.stdout"));
        let stderr = edge.path(&format!("logs/sdk-edge-{n}.stderr"));
        let file = |path: &PathBuf| {
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let mut guard = Guard::spawn(
            Command::new(exe)
                .arg("--sdk-edge")
                .args(spec.to_args())
                // As a user's program runs: its own HOME and TMPDIR, nothing inherited.
                .env_clear()
                .env("HOME", edge.path("home"))
                .env("PATH", "/usr/bin:/bin")
                .env("TMPDIR", edge.path("tmp"))
                .stdin(Stdio::null())
                .stdout(Stdio::from(file(&stdout)?))
                .stderr(Stdio::from(file(&stderr)?)),
            "an SDK edge",
        )?;
        let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        let mut exited = false;
        poll_every(READY_TIMEOUT, Duration::from_millis(10), || {
            exited = guard.check_running().is_err();
            exited || read(&stdout).lines().any(|l| l == "ready")
        });
        let text = read(&stdout);
        if exited || !text.lines().any(|l| l == "ready") {
            return Err(format!(
                "SDK edge {n} did not open {} tunnels{}: {}",
                spec.tunnels,
                if exited { "" } else { " in time" },
                read(&stderr).trim()
            ));
        }
        let hosts = text
            .lines()
            .filter_map(|l| l.strip_prefix("url: https://"))
            .map(str::to_owned)
            .collect();
        Ok(Worker { guard, hosts })
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.guard.pid()).unwrap_or(i32::MAX)
    }
}

/// Grows to each count of SDK edges in `counts`, `tunnels_each` tunnels on each, then
/// stops them as Ctrl-C would (each closes its tunnels).
pub(super) fn grow(
    edge: &Edge,
    app_port: u16,
    tunnels_each: usize,
    counts: &[usize],
    part: &mut Part,
) -> Result<()> {
    let spec = Spec {
        destination: edge.destination(),
        ssh_options: edge.ssh_options()?,
        app_port,
        tunnels: tunnels_each,
    };
    let mut workers = Vec::new();
    let result = grow_into(edge, &spec, counts, part, &mut workers);
    stop_all(workers);
    result
}

fn grow_into(
    edge: &Edge,
    spec: &Spec,
    counts: &[usize],
    part: &mut Part,
    workers: &mut Vec<Worker>,
) -> Result<()> {
    let kind = Kind::SdkEdges {
        tunnels_each: spec.tunnels,
    };
    for &count in counts {
        fits(part, count.saturating_sub(workers.len()) * spec.tunnels)?;
        let started = Instant::now();
        while workers.len() < count {
            let worker = Worker::start(edge, workers.len(), spec)?;
            for host in &worker.hosts {
                await_serving(edge.http(), host, Duration::from_secs(60))?;
            }
            workers.push(worker);
        }
        let hosts: Vec<String> = workers.iter().flat_map(|w| w.hosts.clone()).collect();
        let roots: Vec<i32> = workers.iter().map(Worker::pid).collect();
        let row = measure_row(edge, &hosts, &roots, started.elapsed())?;
        log_row(kind, part, &row);
        part.rows.push(row);
    }
    Ok(())
}

/// SIGINT to every worker, then at most a minute for all to close their tunnels; the
/// guards kill what is left.
fn stop_all(mut workers: Vec<Worker>) {
    for worker in &workers {
        let _ = signal(worker.guard.pid(), Signal::SIGINT);
    }
    poll_every(Duration::from_secs(60), Duration::from_millis(20), || {
        workers.retain_mut(|w| w.guard.check_running().is_ok());
        workers.is_empty()
    });
}
