//! Scale: many concurrent tunnels on one edge, all serving.
//!
//! Each tunnel is what `mytunnel http` runs, without the client process around it: a
//! `mytunneld ctl allocate` as the tunnel user (timed: allocate latency as the count
//! grows), then the data plane `ssh -N -R <lease's bind target>:127.0.0.1:<app>` to the
//! edge's sshd: `127.0.0.1:<port>` in `routes` mode, the lease's socket in `static` mode. A thousand `mytunnel` clients would add a thousand supervisors and ssh
//! masters on the client side, which is not what the edge's cost is about.

use std::time::Duration;

use mytunnel_core::protocol::LeaseDto;

use crate::dataplane::await_serving;
use crate::edge::{http_status, Edge, EdgeMemory};
use crate::procs::{Guard, Result};
use crate::stats::Summary;

/// The edge at one tunnel count.
#[derive(Debug, Clone)]
pub struct Row {
    /// Concurrent tunnels.
    pub tunnels: usize,
    /// How many answered 200 through Caddy when checked (all of them, or the run fails).
    pub serving: usize,
    /// Memory of the edge's processes.
    pub memory: EdgeMemory,
    /// Allocate latency of the allocations that brought the count here.
    pub allocate: Summary,
}

/// The result: memory at zero tunnels and one row per count.
#[derive(Debug, Clone)]
pub struct Scale {
    /// Before any tunnel.
    pub baseline: EdgeMemory,
    /// One per count, ascending.
    pub rows: Vec<Row>,
    /// Why growing stopped before the last count, if it did.
    pub stopped: Option<String>,
}

/// How many tunnels connect at once.
const BATCH: usize = 25;

/// Grows to each count in `counts` (ascending) and measures. A failure while growing ends
/// the measurement with the rows so far and the reason.
pub fn measure(edge: &Edge, app_port: u16, counts: &[usize]) -> Scale {
    let baseline = edge.memory();
    let mut rows = Vec::new();
    let stopped = grow(edge, app_port, counts, &mut rows).err();
    if let Some(reason) = &stopped {
        eprintln!("  scale stopped: {reason}");
    }
    Scale {
        baseline,
        rows,
        stopped,
    }
}

fn grow(edge: &Edge, app_port: u16, counts: &[usize], rows: &mut Vec<Row>) -> Result<()> {
    let mut tunnels: Vec<(Guard, String)> = Vec::new();
    let app = app_port.to_string();
    for &count in counts {
        let mut allocations = Vec::new();
        let started = std::time::Instant::now();
        while tunnels.len() < count {
            let batch = BATCH.min(count - tunnels.len());
            let mut hosts = Vec::new();
            for _ in 0..batch {
                let (lease, took) = edge.ctl(&["allocate", "--local-port", &app], true)?;
                allocations.push(took);
                let lease: LeaseDto = serde_json::from_value(lease)
                    .map_err(|e| format!("allocate answered no lease: {e}"))?;
                let host = lease.host.clone();
                let guard = Guard::spawn_leaf(
                    &mut edge.ssh_forward(&lease.bind_target(), app_port)?,
                    &format!("ssh -N -R for {host}"),
                )?;
                tunnels.push((guard, host.clone()));
                hosts.push(host);
            }
            for host in &hosts {
                if let Err(e) = await_serving(edge.http(), host, Duration::from_secs(60)) {
                    let exited: Vec<String> = tunnels
                        .iter_mut()
                        .filter_map(|(g, h)| g.check_running().err().map(|e| format!("{h}: {e}")))
                        .take(5)
                        .collect();
                    return Err(format!(
                        "with {} tunnels: {e}; exited forwards: {exited:?}",
                        tunnels.len()
                    ));
                }
            }
        }
        let serving = tunnels
            .iter()
            .filter(|(_, host)| http_status(edge.http(), host, "/") == Some(200))
            .count();
        if serving != tunnels.len() {
            return Err(format!(
                "with {} tunnels only {serving} answered 200 through Caddy",
                tunnels.len()
            ));
        }
        let memory = edge.memory();
        eprintln!(
            "  scale: {count} tunnels serving (grown in {:.1}s); edge PSS {} MiB; {} SSH \
             connections, {} sshd and {} gate processes",
            started.elapsed().as_secs_f64(),
            memory.total().pss_kib / 1024,
            memory.ssh_connections,
            memory.sshd_processes,
            memory.gate_processes
        );
        rows.push(Row {
            tunnels: count,
            serving,
            memory,
            allocate: Summary::of(&allocations),
        });
    }
    Ok(())
}
