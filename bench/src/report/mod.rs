//! The Markdown report: the machine, the targets with the previous run's figures beside
//! them, every table with the command that produced it, and where mytunnel loses and why.
//! Every figure in it comes from the run that writes it, except the previous run's,
//! which are labelled as such.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::control;
use crate::dataplane::PathResult;
use crate::edge::RouteMode;
use crate::procs::{find_program, Result};
use crate::scale::Scale;
use crate::stats::{ms, ratio, thousands};
use crate::tunnels::TunnelRun;

mod control_plane;
mod data_plane;
mod headlines;
mod losses;
mod machine;
mod markdown;
pub mod previous;
mod scale_table;
mod several_edges;
mod targets;

pub use machine::{commit, machine, port_window, today};
pub use previous::Previous;

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Report {
    smoke: bool,
    route_modes: bool,
    /// Control-plane rows.
    pub control: Vec<control::Row>,
    /// Control-plane rows on PostgreSQL (static mode).
    pub control_postgres: Vec<control::Row>,
    /// The hop between edges.
    pub forwarding: Option<crate::forwarding::Forwarding>,
    /// mytunnel on each edge, one per route mode.
    pub tunnels: Vec<TunnelRun>,
    /// Paths (a), (b), (d), (e).
    pub paths: Vec<PathResult>,
    /// Scale, on one edge.
    pub scale: Option<Scale>,
    /// The client's memory with its inspector full.
    pub inspector: Option<crate::inspector::InspectorMemory>,
    /// The machine.
    pub machine: Vec<(String, String)>,
    /// How long the run took.
    pub duration: Duration,
    /// Things worth saying that are not numbers.
    pub notes: Vec<String>,
    /// Whether bore and rathole were measured (not with `--no-peers`).
    pub peers_measured: bool,
    /// Downloads per path.
    pub downloads: usize,
    /// Download size, MiB.
    pub download_mib: usize,
    /// The day of the run, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// The commit measured.
    pub commit: Option<String>,
    /// The previous run's figures.
    pub previous: Previous,
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

impl Report {
    /// An empty report.
    pub fn new(smoke: bool, route_modes: bool) -> Report {
        Report {
            smoke,
            route_modes,
            ..Report::default()
        }
    }

    fn mode_name(mode: Option<RouteMode>) -> &'static str {
        mode.map_or("routes (default)", RouteMode::as_str)
    }

    /// Every path in table order: (a), (b), each mytunnel path, the peers.
    fn all_paths(&self) -> Vec<&PathResult> {
        let mut all: Vec<&PathResult> = self.paths.iter().take(2).collect();
        all.extend(
            self.tunnels
                .iter()
                .flat_map(|t| &t.paths)
                .map(|p| &p.result),
        );
        all.extend(self.paths.iter().skip(2));
        all
    }

    /// A path that is not mytunnel's, by its label's start: `(a)`, `(b)`, `(d)`, `(e)`.
    fn path(&self, prefix: &str) -> Option<&PathResult> {
        self.paths.iter().find(|p| p.label.starts_with(prefix))
    }

    /// The run the targets are judged on: `static` mode (the installer's default), else
    /// the only one.
    fn headline_run(&self) -> Option<&TunnelRun> {
        self.tunnels
            .iter()
            .find(|t| t.mode == RouteMode::Static.as_str())
            .or(self.tunnels.first())
    }

    /// What the log shows at the end: allocate growth per mode, then the targets.
    pub fn log_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for mode in [None, Some(RouteMode::Routes), Some(RouteMode::Static)] {
            if let Some((small, large, growth)) = self.allocate_growth(mode) {
                lines.push(format!(
                    "allocate p50 {large} leases / {small} leases, {} mode: {growth:.2}×",
                    Self::mode_name(mode),
                ));
            }
        }
        lines.extend(self.target_lines());
        lines
    }

    /// Fails unless every table has numbers (the smoke's assertion).
    pub fn check_complete(&self) -> Result<()> {
        let mut missing = Vec::new();
        if self.control.is_empty()
            || self.control.iter().any(|r| {
                r.allocate.samples == 0
                    || r.heartbeat.samples == 0
                    || r.release.samples == 0
                    || r.allocate.p50.is_zero()
            })
        {
            missing.push("control plane");
        }
        if self.route_modes
            && (self.control_postgres.is_empty()
                || self
                    .control_postgres
                    .iter()
                    .any(|r| r.allocate.samples == 0 || r.allocate.p50.is_zero())
                || !self
                    .forwarding
                    .as_ref()
                    .is_some_and(|f| f.direct.samples > 0 && f.forwarded.samples > 0))
        {
            missing.push("several edges");
        }
        if self.tunnels.is_empty()
            || self.tunnels.iter().any(|t| {
                t.time_to_url.len() < 2
                    || t.time_to_url
                        .iter()
                        .any(|v| v.to_first_200.samples == 0 || v.to_first_200.p50.is_zero())
            })
        {
            missing.push("time to URL");
        }
        let paths = self.all_paths();
        // (a), (b), one per edge, `--no-ssh-mux` and `--raw` on the headline edge, and the
        // peers.
        let expected_paths = 2 + self.tunnels.len() + 2 + if self.peers_measured { 2 } else { 0 };
        let cipher_measured = self
            .headline_run()
            .and_then(|t| t.cipher.as_ref())
            .is_some_and(|c| c.download.median_mb_s > 0.0);
        if paths.len() < expected_paths
            || !cipher_measured
            || paths.iter().any(|p| {
                p.wrk.is_empty()
                    || p.download.median_mb_s <= 0.0
                    || p.wrk.iter().any(|w| w.rps <= 0.0 || w.errors > 0)
            })
        {
            missing.push("data plane");
        }
        let complete = self.scale.as_ref().is_some_and(|scale| {
            scale.parts.len() == 2
                && scale.parts.iter().all(|part| {
                    part.stopped.is_none()
                        && !part.rows.is_empty()
                        && part.rows.iter().all(|r| {
                            r.serving == r.tunnels
                                && r.edge.total().pss_kib > 0
                                && r.client.pss_kib > 0
                                && r.edge.ssh_connections > 0
                        })
                })
        });
        if !complete {
            missing.push("scale");
        }
        if !self
            .inspector
            .as_ref()
            .is_some_and(|i| i.before_kib > 0 && i.after_second_kib > 0)
        {
            missing.push("inspector memory");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("tables without numbers: {}", missing.join(", ")))
        }
    }

    /// The Markdown text.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# Benchmarks\n");
        let _ = writeln!(
            o,
            "Written by `cargo xtask bench{}` on {}{} from one run of {:.0} s on the machine \
             below. Every process of every path ran on this one machine at the same time as \
             the load generator, so the peers and mytunnel share the same {} cores; absolute \
             numbers are for this machine only, the ratios are the point.\n",
            if self.smoke { " --smoke" } else { "" },
            self.date,
            self.commit
                .as_deref()
                .map_or(String::new(), |c| format!(" (commit {c})")),
            self.duration.as_secs_f64(),
            self.machine
                .iter()
                .find(|(k, _)| k == "Cores")
                .map_or("?", |(_, v)| v.as_str())
        );
        if self.smoke {
            let _ = writeln!(
                o,
                "**Smoke run**: small sizes, 1-second load runs; the numbers only show that \
                 every measurement works.\n"
            );
        }
        let _ = writeln!(o, "## Machine\n\n| | |\n|---|---|");
        for (k, v) in &self.machine {
            let _ = writeln!(o, "| {k} | {v} |");
        }
        let _ = writeln!(o);
        for note in &self.notes {
            let _ = writeln!(o, "Note: {note}\n");
        }
        self.render_targets(&mut o);
        self.render_control(&mut o);
        self.render_several_edges(&mut o);
        self.render_time_to_url(&mut o);
        self.render_data_plane(&mut o);
        self.render_inspector(&mut o);
        self.render_scale(&mut o);
        o.push_str(&self.where_we_lose());
        o
    }
}

impl Report {
    fn render_inspector(&self, o: &mut String) {
        let Some(i) = &self.inspector else {
            return;
        };
        let [c0, c1, c2] = i.control_kib;
        let _ = writeln!(
            o,
            "## The client with its inspector full\n\n\
             `mytunnel http --inspect 127.0.0.1:0 --inspect-keep {keep} --inspect-body {body}k` \
             (the defaults, with {head} KiB of each head) was sent {n} `POST /echo` exchanges \
             through Caddy, twice as many as it keeps, each with a {sent} KiB request body and \
             {sent_head} bytes of extra headers, and the same back: twice what it keeps of each \
             body and about twice what it keeps of each head; then {n} more. A `mytunnel http` \
             without `--inspect` got the same traffic just before it: what it grew is what the \
             proxy's buffers and the allocator keep whatever the inspector holds. {runs} clients \
             of each kind, in turn; the table shows each kind's median run by growth. The \
             inspector's share is the difference. Its limits let it keep \
             {keep} × 2 × ({body} + {head}) KiB = {kept} KiB, in blocks of several exchanges \
             mapped in whole pages, one page more each: that is the bound.\n\n\
             | | client PSS KiB | grown KiB | without `--inspect`: PSS KiB | grown KiB |\n\
             |---|---:|---:|---:|---:|\n\
             | before (once the tunnel serves) | {} | — | {} | — |\n\
             | after {n} exchanges | {} | {} | {} | {} |\n\
             | after {n} more | {} | {} | {} | {} |\n\
             | the inspector's share | | {} | | |\n\
             | bound | | {} | | |\n\
             | {spread_row} | | {} | | |\n",
            thousands(i.before_kib as f64),
            thousands(c0 as f64),
            thousands(i.after_first_kib as f64),
            thousands(i.after_first_kib.saturating_sub(i.before_kib) as f64),
            thousands(c1 as f64),
            thousands(c1.saturating_sub(c0) as f64),
            thousands(i.after_second_kib as f64),
            thousands(i.after_second_kib.saturating_sub(i.before_kib) as f64),
            thousands(c2 as f64),
            thousands(c2.saturating_sub(c0) as f64),
            thousands(i.growth_kib() as f64),
            thousands(i.bound_kib() as f64),
            thousands(i.spread_kib() as f64),
            spread_row = previous::SPREAD_ROW,
            keep = i.keep,
            body = i.body_bytes / 1024,
            n = i.per_round,
            sent = i.sent_body_bytes / 1024,
            head = i.head_bytes / 1024,
            sent_head = thousands(i.sent_head_bytes as f64),
            runs = i.runs,
            kept = thousands(i.kept_kib() as f64),
        );
    }
}

#[cfg(test)]
mod tests;
