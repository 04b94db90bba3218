//! The headline figures of a run: what the targets are judged on, what the sidecar
//! `bench/last-run.json` keeps, and what the next run prints beside its own.

use serde::{Deserialize, Serialize};

use super::*;
use crate::scale::Kind;

/// A run's headline figures. Every field is optional: an older report may lack some.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Headlines {
    /// The day of the run, `YYYY-MM-DD` (UTC).
    pub date: Option<String>,
    /// The commit measured (`git describe --always --dirty`).
    pub commit: Option<String>,
    /// Whether it was a smoke run.
    pub smoke: bool,
    /// The route mode of the mytunnel figures.
    pub mode: Option<String>,
    /// Caddy → app at one connection: p50, ms.
    pub caddy_c1_p50_ms: Option<f64>,
    /// Caddy → app at one connection: p99, ms.
    pub caddy_c1_p99_ms: Option<f64>,
    /// Caddy → app at the most connections: requests/s.
    pub caddy_many_rps: Option<f64>,
    /// Caddy → app: download MB/s (median).
    pub caddy_download_mb_s: Option<f64>,
    /// mytunnel (default shape) at one connection: p50, ms.
    pub tunnel_c1_p50_ms: Option<f64>,
    /// mytunnel (default shape) at one connection: p99, ms.
    pub tunnel_c1_p99_ms: Option<f64>,
    /// mytunnel (default shape) at the most connections: requests/s.
    pub tunnel_many_rps: Option<f64>,
    /// mytunnel (default shape): download MB/s (median).
    pub tunnel_download_mb_s: Option<f64>,
    /// The most connections wrk used.
    pub many_connections: Option<u64>,
    /// Download size, MiB.
    pub download_mib: Option<u64>,
    /// Time to URL p50 with the default shape, ms.
    pub ttu_mux_p50_ms: Option<f64>,
    /// Time to URL p50 with `--no-ssh-mux`, ms.
    pub ttu_no_mux_p50_ms: Option<f64>,
    /// Edge PSS per tunnel, KiB, at the largest count of real clients.
    pub edge_pss_per_tunnel_kib: Option<f64>,
    /// What carried those tunnels, e.g. `500 real clients`.
    pub per_tunnel_of: Option<String>,
    /// The most tunnels on the edge at once.
    pub most_tunnels: Option<u64>,
    /// How many of those served.
    pub most_tunnels_serving: Option<u64>,
    /// Tunnels on the one SDK edge of the first SDK row.
    pub sdk_edge_tunnels: Option<u64>,
    /// SSH connections that edge held (all connections to sshd at that row).
    pub sdk_edge_ssh_connections: Option<u64>,
    /// mytunnel `--raw` (no request log) at one connection: p50, ms.
    pub raw_c1_p50_ms: Option<f64>,
    /// mytunnel `--raw` at the most connections: requests/s.
    pub raw_many_rps: Option<f64>,
    /// How much the client's memory grew, KiB PSS, with its inspector full.
    pub inspector_growth_kib: Option<f64>,
    /// What the inspector's limits allow it to take, KiB.
    pub inspector_bound_kib: Option<f64>,
    /// How much the growth of clients without `--inspect` varied between runs, KiB.
    pub inspector_spread_kib: Option<f64>,
}

/// Milliseconds to the microsecond: the sidecar keeps what the report can show.
fn ms_of(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A rate to a tenth.
fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Report {
    /// This run's headline figures.
    pub fn headlines(&self) -> Headlines {
        let mut h = Headlines {
            date: Some(self.date.clone()),
            commit: self.commit.clone(),
            smoke: self.smoke,
            download_mib: Some(self.download_mib as u64),
            ..Headlines::default()
        };
        let one = |p: &PathResult| p.wrk.iter().find(|w| w.connections == 1).cloned();
        if let Some(b) = self.path("(b)") {
            h.caddy_c1_p50_ms = one(b).map(|w| ms_of(w.p50));
            h.caddy_c1_p99_ms = one(b).map(|w| ms_of(w.p99));
            h.caddy_many_rps = b.wrk.last().map(|w| tenths(w.rps));
            h.caddy_download_mb_s = Some(tenths(b.download.median_mb_s));
        }
        if let Some(run) = self.headline_run() {
            h.mode = (!run.mode.is_empty()).then(|| run.mode.clone());
            if let Some(c) = run.mux_path().map(|p| &p.result) {
                h.tunnel_c1_p50_ms = one(c).map(|w| ms_of(w.p50));
                h.tunnel_c1_p99_ms = one(c).map(|w| ms_of(w.p99));
                h.tunnel_many_rps = c.wrk.last().map(|w| tenths(w.rps));
                h.many_connections = c.wrk.last().map(|w| u64::from(w.connections));
                h.tunnel_download_mb_s = Some(tenths(c.download.median_mb_s));
            }
            if let Some(raw) = run.path(crate::tunnels::Shape::Raw).map(|p| &p.result) {
                h.raw_c1_p50_ms = one(raw).map(|w| ms_of(w.p50));
                h.raw_many_rps = raw.wrk.last().map(|w| tenths(w.rps));
            }
            h.ttu_mux_p50_ms = run.time_to_url(false).map(|t| ms_of(t.to_first_200.p50));
            h.ttu_no_mux_p50_ms = run.time_to_url(true).map(|t| ms_of(t.to_first_200.p50));
        }
        if let Some(inspector) = &self.inspector {
            h.inspector_growth_kib = Some(inspector.growth_kib() as f64);
            h.inspector_bound_kib = Some(inspector.bound_kib() as f64);
            h.inspector_spread_kib = Some(inspector.spread_kib() as f64);
        }
        if let Some(scale) = &self.scale {
            for part in &scale.parts {
                match part.kind {
                    Kind::RealClients => {
                        if let Some(row) = part.rows.last() {
                            h.edge_pss_per_tunnel_kib =
                                Some(part.edge_pss_per_tunnel_kib(row) as f64);
                            h.per_tunnel_of =
                                Some(format!("{} real clients", thousands(row.tunnels as f64)));
                        }
                    }
                    Kind::SdkEdges { .. } => {
                        if let Some(row) = part.rows.iter().find(|r| r.processes == 1) {
                            h.sdk_edge_tunnels = Some(row.tunnels as u64);
                            h.sdk_edge_ssh_connections = Some(row.edge.ssh_connections as u64);
                        }
                    }
                }
            }
            if let Some(row) = scale
                .parts
                .iter()
                .flat_map(|p| &p.rows)
                .max_by_key(|r| r.tunnels)
            {
                h.most_tunnels = Some(row.tunnels as u64);
                h.most_tunnels_serving = Some(row.serving as u64);
            }
        }
        h
    }
}
