//! The scale section: real clients, then SDK edges, on one edge.

use super::*;
use crate::scale::{Kind, Part, Row};

fn per(n: usize, of: usize) -> String {
    let x = n as f64 / of.max(1) as f64;
    if x > 0.0 && x < 0.1 {
        format!("{x:.3}")
    } else {
        format!("{x:.2}")
    }
}

/// `mytunneld ×500, sh ×500`.
pub(super) fn names(counts: &[(String, usize)]) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(name, n)| format!("`{name}` ×{}", thousands(*n as f64)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    /// The scale section.
    pub(super) fn render_scale(&self, o: &mut String) {
        let _ = writeln!(o, "## Scale\n");
        let Some(scale) = &self.scale else {
            let _ = writeln!(o, "Not measured in this run.\n");
            return;
        };
        let tunnels_each = scale
            .parts
            .iter()
            .find_map(|p| match p.kind {
                Kind::SdkEdges { tunnels_each } => Some(tunnels_each),
                Kind::RealClients => None,
            })
            .unwrap_or(0);
        let _ = writeln!(
            o,
            "Tunnels on one edge{}, all to the same app, carried by two kinds of client in \
             turn (the first kind's are stopped before the second starts):\n\n\
             - **real clients**: one built `mytunnel http <app-port> --edge …` process per \
             tunnel, as users run it, {} started at a time;\n\
             - **SDK edges**: programs embedding the SDK (`mytunnel-bench --sdk-edge`), each \
             holding one edge (`Edge::builder()…connect()`) with {tunnels_each} tunnels on it \
             (`edge.http(port).open()`), started one at a time.\n\n\
             At each count every host answered `200` through Caddy before anything was read. \
             Memory is PSS from `/proc/<pid>/smaps_rollup` (shared pages split among the \
             processes sharing them, so sums are fair). The edge is sshd (the listener and \
             every per-connection process), the gate (what sshd runs as the tunnel user: the \
             `mytunneld gate` a connection holds, a child of sshd, counted in the edge's sums, \
             and a control command's gate while it runs), Caddy and `mytunneld serve`; edge \
             per tunnel = (edge at N − edge just before that kind's first tunnel) / N, that \
             baseline read once the previous kind's SSH connections had closed (Caddy keeps \
             memory it grew, so the second baseline holds it). SSH \
             connections are the established TCP connections at sshd's port. The client side \
             is the client processes, everything below them, and every ssh process naming the \
             bench's key (a master that daemonized has left its client's tree).\n",
            if scale.mode.is_empty() {
                String::new()
            } else {
                format!(
                    " in `{}` mode (the installer's default; the other mode's edge was \
                     stopped first)",
                    scale.mode
                )
            },
            crate::scale::BATCH,
        );
        for part in &scale.parts {
            let b = &part.baseline;
            let _ = writeln!(
                o,
                "- {} — the edge before the first tunnel: sshd {} MiB, gate {} MiB, Caddy {} \
                 MiB, mytunneld serve {} MiB (PSS); {} SSH connections.",
                part.kind.label(),
                mib(b.sshd.pss_kib),
                mib(b.gate.pss_kib),
                mib(b.caddy.pss_kib),
                mib(b.serve.pss_kib),
                b.ssh_connections
            );
            if let Some(reason) = &part.stopped {
                let _ = writeln!(
                    o,
                    "- **{}: growing stopped early**: {reason}",
                    part.kind.label()
                );
            }
        }
        let _ = writeln!(
            o,
            "\n| kind | clients or SDK edges | tunnels | serving | SSH connections | sshd processes | gate processes | sshd PSS MiB | gate PSS MiB | Caddy PSS MiB | mytunneld serve PSS MiB | edge PSS MiB | edge PSS per tunnel KiB | client-side processes | client-side PSS MiB | client-side PSS per tunnel KiB | grown in s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for part in &scale.parts {
            for r in &part.rows {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
                    part.kind.label(),
                    thousands(r.processes as f64),
                    thousands(r.tunnels as f64),
                    thousands(r.serving as f64),
                    thousands(r.edge.ssh_connections as f64),
                    thousands(r.edge.sshd_processes as f64),
                    thousands(r.edge.gate_processes as f64),
                    mib(r.edge.sshd.pss_kib),
                    mib(r.edge.gate.pss_kib),
                    mib(r.edge.caddy.pss_kib),
                    mib(r.edge.serve.pss_kib),
                    mib(r.edge.total().pss_kib),
                    thousands(part.edge_pss_per_tunnel_kib(r) as f64),
                    thousands(r.client_processes as f64),
                    mib(r.client.pss_kib),
                    thousands((r.client.pss_kib / r.tunnels.max(1) as u64) as f64),
                    r.grown.as_secs_f64()
                );
            }
        }
        let _ = writeln!(o);
        for part in &scale.parts {
            if let Some(r) = part.rows.last() {
                let _ = writeln!(o, "- {}", per_tunnel_line(part, r));
            }
        }
        let _ = writeln!(o);
    }
}

/// What one tunnel costs at `row`: connections and processes on both sides (over the
/// part's baseline on the edge), memory.
pub(super) fn per_tunnel_line(part: &Part, row: &Row) -> String {
    format!(
        "{} at {} tunnels: per tunnel {} SSH connections, {} sshd and {} gate processes on \
         the edge (the gate's: {}), {} client-side processes; {} KiB PSS on the edge, {} KiB \
         on the client side.",
        part.kind.label(),
        thousands(row.tunnels as f64),
        per(
            row.edge
                .ssh_connections
                .saturating_sub(part.baseline.ssh_connections),
            row.tunnels
        ),
        per(
            row.edge
                .sshd_processes
                .saturating_sub(part.baseline.sshd_processes),
            row.tunnels
        ),
        per(
            row.edge
                .gate_processes
                .saturating_sub(part.baseline.gate_processes),
            row.tunnels
        ),
        names(&row.edge.gate_names),
        per(row.client_processes, row.tunnels),
        thousands(part.edge_pss_per_tunnel_kib(row) as f64),
        thousands((row.client.pss_kib / row.tunnels.max(1) as u64) as f64)
    )
}
