//! Scale: many tunnels on one edge, all serving, as users run them: real `mytunnel http`
//! clients, one tunnel each ([`clients`]), then programs embedding the SDK, one edge
//! connection carrying many tunnels each ([`sdk`]). At each count every host must answer
//! 200 through Caddy; then the edge's memory (sshd, the gates it holds, Caddy, serve), the
//! SSH connections sshd holds, and the clients' own memory are read.

use std::path::Path;
use std::time::Duration;

use crate::edge::{http_status, Edge, EdgeMemory};
use crate::procs::{Memory, Result};
use crate::proctable::{memory_of_all, ProcTable};

mod clients;
pub use clients::BATCH;
mod sdk;

/// What carries the tunnels of a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One `mytunnel http` process per tunnel.
    RealClients,
    /// Programs embedding the SDK, each one edge with this many tunnels.
    SdkEdges {
        /// Tunnels per edge.
        tunnels_each: usize,
    },
}

impl Kind {
    /// As the report's table names it.
    pub fn label(self) -> String {
        match self {
            Kind::RealClients => "real clients".to_owned(),
            Kind::SdkEdges { tunnels_each } => format!("SDK edges, {tunnels_each} tunnels each"),
        }
    }
}

/// The edge at one count.
#[derive(Debug, Clone)]
pub struct Row {
    /// Client processes: `mytunnel http`s, or programs each holding one SDK edge.
    pub processes: usize,
    /// Tunnels.
    pub tunnels: usize,
    /// How many answered 200 through Caddy when checked (all of them, or growing stops).
    pub serving: usize,
    /// The edge's processes and SSH connections.
    pub edge: EdgeMemory,
    /// The client side: the client processes and their ssh processes.
    pub client: Memory,
    /// How many processes that is.
    pub client_processes: usize,
    /// How long growing from the previous row took.
    pub grown: Duration,
}

/// One kind of client, grown count by count.
#[derive(Debug, Clone)]
pub struct Part {
    /// Which.
    pub kind: Kind,
    /// The edge just before this part's first tunnel.
    pub baseline: EdgeMemory,
    /// One per count, ascending.
    pub rows: Vec<Row>,
    /// Why growing stopped before the last count, if it did.
    pub stopped: Option<String>,
}

impl Part {
    /// The edge's memory per tunnel at `row`, over this part's baseline, in KiB of PSS.
    pub fn edge_pss_per_tunnel_kib(&self, row: &Row) -> u64 {
        row.edge
            .total()
            .pss_kib
            .saturating_sub(self.baseline.total().pss_kib)
            / row.tunnels.max(1) as u64
    }
}

/// Scale measured on one edge.
#[derive(Debug, Clone)]
pub struct Scale {
    /// The edge's route mode.
    pub mode: String,
    /// Real clients, then SDK edges.
    pub parts: Vec<Part>,
}

/// The counts of a run.
#[derive(Debug, Clone)]
pub struct ScalePlan {
    /// Real clients, ascending.
    pub clients: Vec<usize>,
    /// Tunnels per SDK edge.
    pub sdk_tunnels_each: usize,
    /// SDK edges, ascending.
    pub sdk_edges: Vec<usize>,
}

/// Real clients then SDK edges on `edge`. A failure while growing ends that part with the
/// rows so far and the reason; the other part still runs.
pub fn measure(edge: &Edge, app_port: u16, plan: &ScalePlan, mode: &str) -> Scale {
    let mut parts = Vec::new();
    if !plan.clients.is_empty() {
        parts.push(part(edge, Kind::RealClients, |part| {
            clients::grow(edge, app_port, &plan.clients, part)
        }));
    }
    if !plan.sdk_edges.is_empty() {
        let kind = Kind::SdkEdges {
            tunnels_each: plan.sdk_tunnels_each,
        };
        parts.push(part(edge, kind, |part| {
            sdk::grow(edge, app_port, plan.sdk_tunnels_each, &plan.sdk_edges, part)
        }));
    }
    Scale {
        mode: mode.to_owned(),
        parts,
    }
}

fn part(edge: &Edge, kind: Kind, grow: impl FnOnce(&mut Part) -> Result<()>) -> Part {
    let mut part = Part {
        kind,
        baseline: settled(edge),
        rows: Vec::new(),
        stopped: None,
    };
    if let Err(reason) = grow(&mut part) {
        eprintln!("  scale ({}) stopped: {reason}", kind.label());
        part.stopped = Some(reason);
    }
    part
}

/// The edge once the previous part's SSH connections and gates have gone (at most a
/// minute: sshd's per-connection processes end a moment after their clients).
fn settled(edge: &Edge) -> EdgeMemory {
    let started = std::time::Instant::now();
    loop {
        let memory = edge.memory();
        let quiet = memory.ssh_connections == 0 && memory.gate_processes == 0;
        if quiet || started.elapsed() > Duration::from_secs(60) {
            if !quiet {
                eprintln!(
                    "  scale: {} SSH connections and {} gate processes still open after a minute",
                    memory.ssh_connections, memory.gate_processes
                );
            }
            return memory;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Checks that every host serves, then reads the edge and the client side (`roots` and
/// everything below them, with every ssh process that names the edge's key).
fn measure_row(edge: &Edge, hosts: &[String], roots: &[i32], grown: Duration) -> Result<Row> {
    let serving = hosts
        .iter()
        .filter(|host| http_status(edge.http(), host, "/") == Some(200))
        .count();
    if serving != hosts.len() {
        return Err(format!(
            "with {} tunnels only {serving} answered 200 through Caddy",
            hosts.len()
        ));
    }
    let (client, client_processes) = client_side(roots, &edge.key());
    Ok(Row {
        processes: roots.len(),
        tunnels: hosts.len(),
        serving,
        edge: edge.memory(),
        client,
        client_processes,
        grown,
    })
}

/// The memory of the client side: `roots`, their descendants, and ssh processes naming
/// `key` (a master that daemonized has left its client's tree).
fn client_side(roots: &[i32], key: &Path) -> (Memory, usize) {
    let table = ProcTable::snapshot();
    let mut pids = table.trees(roots);
    pids.extend(table.named_with_argument("ssh", &key.to_string_lossy()));
    memory_of_all(pids)
}

/// Fails unless `more` clients like the ones of `last` fit in the memory available now,
/// with room to spare for the rest of the machine.
fn fits(part: &Part, more: usize) -> Result<()> {
    let Some(last) = part.rows.last() else {
        return Ok(());
    };
    let per_tunnel_kib =
        part.edge_pss_per_tunnel_kib(last) + last.client.pss_kib / last.tunnels.max(1) as u64;
    let needed_kib = per_tunnel_kib.saturating_mul(more as u64);
    let available_kib = mem_available_kib();
    // Half of what is free, less 2 GiB: other work shares this machine.
    let budget_kib = (available_kib / 2).saturating_sub(2 * 1024 * 1024);
    if needed_kib > budget_kib {
        return Err(format!(
            "{more} more tunnels would need about {} MiB ({} KiB each, edge and client), \
             more than the budget of {} MiB (half of the {} MiB available, less 2 GiB)",
            needed_kib / 1024,
            per_tunnel_kib,
            budget_kib / 1024,
            available_kib / 1024
        ));
    }
    Ok(())
}

/// `MemAvailable` from `/proc/meminfo`, KiB (0 when unknown).
fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn log_row(kind: Kind, part: &Part, row: &Row) {
    eprintln!(
        "  scale ({}): {} tunnels on {} processes serving (grown in {:.1}s); {} SSH \
         connections, {} sshd + {} gate processes; edge {} KiB PSS per tunnel; client side \
         {} MiB PSS",
        kind.label(),
        row.tunnels,
        row.processes,
        row.grown.as_secs_f64(),
        row.edge.ssh_connections,
        row.edge.sshd_processes,
        row.edge.gate_processes,
        part.edge_pss_per_tunnel_kib(row),
        row.client.pss_kib / 1024
    );
}
