//! The Markdown report: the machine, every table with the command that produced it, the
//! ratios, and where mytunnel loses and why.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::control;
use crate::dataplane::{PathResult, TimeToUrl};
use crate::edge::RouteMode;
use crate::procs::{find_program, Result};
use crate::scale::Scale;
use crate::stats::{ms, ratio, thousands};

mod losses;
mod machine;

pub use machine::{machine, port_window};

/// The mytunnel path measured on one edge.
#[derive(Debug, Clone)]
pub struct TunnelPath {
    /// Mux and no mux.
    pub time_to_url: Vec<TimeToUrl>,
    /// Path (c).
    pub path: PathResult,
}

/// Scale measured on one edge.
#[derive(Debug)]
pub struct ScaleRun {
    /// The edge's route mode.
    pub mode: String,
    /// What it measured.
    pub scale: Scale,
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Report {
    smoke: bool,
    route_modes: bool,
    /// Control-plane rows.
    pub control: Vec<control::Row>,
    /// mytunnel paths, one per mode.
    pub tunnels: Vec<TunnelPath>,
    /// Paths (a), (b), (d), (e).
    pub paths: Vec<PathResult>,
    /// Scale, one run per route mode.
    pub scale: Vec<ScaleRun>,
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

    /// allocate p50 at the largest size over the smallest, per mode.
    fn allocate_growth(&self, mode: Option<RouteMode>) -> Option<(usize, usize, f64)> {
        let rows: Vec<&control::Row> = self.control.iter().filter(|r| r.mode == mode).collect();
        let small = rows.first()?;
        let large = rows.last()?;
        let base = small.allocate.p50.as_secs_f64();
        (base > 0.0).then(|| {
            (
                small.leases,
                large.leases,
                large.allocate.p50.as_secs_f64() / base,
            )
        })
    }

    fn all_paths(&self) -> Vec<&PathResult> {
        let mut all: Vec<&PathResult> = self.paths.iter().take(2).collect();
        all.extend(self.tunnels.iter().map(|t| &t.path));
        all.extend(self.paths.iter().skip(2));
        all
    }

    /// The headline ratios, one line each, for the log.
    pub fn headlines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for mode in [None, Some(RouteMode::Routes), Some(RouteMode::Static)] {
            if let Some((small, large, growth)) = self.allocate_growth(mode) {
                lines.push(format!(
                    "allocate p50 {large} leases / {small} leases, {} mode: {growth:.2}×{}",
                    Self::mode_name(mode),
                    // The acceptance is about 5,000 leases; the smoke's sizes say nothing of it.
                    if mode == Some(RouteMode::Static) && large >= 5_000 {
                        if growth <= 1.5 {
                            " (issue 8 acceptance 3: within 1.5×, met)"
                        } else {
                            " (issue 8 acceptance 3: NOT within 1.5×)"
                        }
                    } else {
                        ""
                    }
                ));
            }
        }
        if let Some(c) = self.path("(c)") {
            for other in &self.paths {
                if let (Some(cw), Some(ow)) = (c.wrk.last(), other.wrk.last()) {
                    lines.push(format!(
                        "(c) / {} requests/s at c={}: {}",
                        other.label,
                        cw.connections,
                        ratio(cw.rps, ow.rps)
                    ));
                }
            }
        }
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
        if self.tunnels.is_empty()
            || self
                .tunnels
                .iter()
                .flat_map(|t| &t.time_to_url)
                .any(|t| t.to_first_200.samples == 0 || t.to_first_200.p50.is_zero())
        {
            missing.push("time to URL");
        }
        let paths = self.all_paths();
        let expected_paths = if self.peers_measured { 5 } else { 3 };
        if paths.len() < expected_paths
            || paths.iter().any(|p| {
                p.wrk.is_empty()
                    || p.download_mb_s <= 0.0
                    || p.wrk.iter().any(|w| w.rps <= 0.0 || w.errors > 0)
            })
        {
            missing.push("data plane");
        }
        let expected_runs = if self.route_modes { 2 } else { 1 };
        let complete = |run: &ScaleRun| {
            let scale = &run.scale;
            scale.stopped.is_none()
                && !scale.rows.is_empty()
                && scale
                    .rows
                    .iter()
                    .all(|r| r.serving == r.tunnels && r.memory.total().pss_kib > 0)
        };
        if self.scale.len() < expected_runs || !self.scale.iter().all(complete) {
            missing.push("scale");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("tables without numbers: {}", missing.join(", ")))
        }
    }

    /// The Markdown text.
    #[allow(clippy::too_many_lines, reason = "one report, section by section")]
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# Benchmarks\n");
        let _ = writeln!(
            o,
            "Written by `cargo xtask bench{}` from one run of {:.0} s on the machine below. Every \
             process of every path ran on this one machine at the same time as the load \
             generator, so the peers and mytunnel share the same {} cores; absolute numbers \
             are for this machine only, the ratios are the point.\n",
            if self.smoke { " --smoke" } else { "" },
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

        // Control plane.
        let _ = writeln!(o, "## Control plane\n");
        let _ = writeln!(
            o,
            "Each sample is one whole process, from spawn to its JSON on stdout, run as root \
             on the edge against a real Caddy (no SSH in the way); `ctl` sends the request to \
             the running `mytunneld serve` over its control socket, and serve, which holds the \
             database open, answers:\n\n\
             ```\nmytunneld --env-file <env> ctl allocate --local-port 3000\n\
             mytunneld --env-file <env> ctl heartbeat --lease <id>\n\
             mytunneld --env-file <env> ctl release --lease <id>\n```\n\n\
             The N active leases were seeded into the lease database with the library \
             (`SqliteLeaseStore::allocate`) and, in `routes` mode, their N routes loaded into \
             Caddy in one `POST /load` (verified: Caddy held N `mytunnel-` routes). Each \
             sample allocates, heartbeats and releases one lease, so N stays constant. Every \
             size has its own edge (Caddy, database, serve), and the sizes are sampled in \
             turn, one sample each per round in a rotating order, so whatever else the \
             machine does falls on every size alike and the ratios compare lease counts, not \
             moments. In `static` mode every seeded lease's socket listens (the bench binds \
             it, as sshd does for a live tunnel), so each sample meets a socket table as large \
             as all sizes' leases together.\n"
        );
        if !self.route_modes {
            let _ = writeln!(
                o,
                "This build of `mytunneld` has no `--route-mode`: only the per-lease-route \
                 mode (`routes`) exists and is measured; the `static` mode is not.\n"
            );
        }
        let _ = writeln!(
            o,
            "| mode | active leases | samples | allocate p50 ms | allocate p99 ms | heartbeat p50 ms | heartbeat p99 ms | release p50 ms | release p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.control {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                Self::mode_name(r.mode),
                thousands(r.leases as f64),
                r.allocate.samples,
                ms(r.allocate.p50),
                ms(r.allocate.p99),
                ms(r.heartbeat.p50),
                ms(r.heartbeat.p99),
                ms(r.release.p50),
                ms(r.release.p99)
            );
        }
        let _ = writeln!(o);
        let modes: Vec<Option<RouteMode>> = if self.route_modes {
            vec![Some(RouteMode::Routes), Some(RouteMode::Static)]
        } else {
            vec![None]
        };
        for mode in &modes {
            if let Some((small, large, growth)) = self.allocate_growth(*mode) {
                let _ = write!(
                    o,
                    "- **allocate p50 with {} active leases / with {}, `{}` mode: {growth:.2}×**",
                    thousands(large as f64),
                    thousands(small as f64),
                    Self::mode_name(*mode)
                );
                if *mode == Some(RouteMode::Static) && large >= 5_000 {
                    let verdict = if growth <= 1.5 { "met" } else { "NOT met" };
                    let _ = write!(o, " — issue 8 acceptance 3 (within 1.5×): {verdict}");
                }
                let _ = writeln!(o);
            }
        }
        // Issue 15's target for ctl as a process on the edge, static mode, every size.
        for r in self
            .control
            .iter()
            .filter(|r| r.mode == Some(RouteMode::Static))
        {
            let met = r.allocate.p50 <= Duration::from_millis(3)
                && r.allocate.p99 <= Duration::from_millis(10);
            let _ = writeln!(
                o,
                "- `static` allocate with {} active leases: p50 {} ms, p99 {} ms — issue 15 \
                 target (p50 ≤ 3 ms, p99 ≤ 10 ms): {}",
                thousands(r.leases as f64),
                ms(r.allocate.p50),
                ms(r.allocate.p99),
                if met { "met" } else { "NOT met" }
            );
        }
        if !self.route_modes {
            let _ = writeln!(
                o,
                "- `static` mode: not available in this build, not measured (issue 8 acceptance 3 \
                 cannot be checked yet)."
            );
        }
        let _ = writeln!(o);

        // Time to URL.
        let _ = writeln!(o, "## Time to URL\n");
        let _ = writeln!(
            o,
            "From spawning `mytunnel http` to the first `200` through Caddy for its host \
             (polled every 5 ms), with a loopback sshd whose key is gated by `mytunneld gate`; \
             the tunnel is stopped with SIGINT (release) between runs.\n"
        );
        let mut commands: Vec<&str> = Vec::new();
        for v in self.tunnels.iter().flat_map(|t| &t.time_to_url) {
            if !commands.contains(&v.command.as_str()) {
                commands.push(&v.command);
                let _ = writeln!(o, "- `{}`", v.command);
            }
        }
        let _ = writeln!(
            o,
            "\n| variant | runs | first 200 p50 ms | first 200 max ms | `url:` line p50 ms |\n|---|---:|---:|---:|---:|"
        );
        for t in &self.tunnels {
            for v in &t.time_to_url {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} |",
                    v.variant,
                    v.to_first_200.samples,
                    ms(v.to_first_200.p50),
                    ms(v.to_first_200.p99),
                    ms(v.to_url_line.p50)
                );
            }
        }
        let _ = writeln!(o);

        // Data plane.
        let _ = writeln!(o, "## Data plane\n");
        let _ = writeln!(
            o,
            "The same app (a small tokio HTTP/1.1 server in the bench crate: 1 KiB for `GET /`, \
             the download for `GET /big`) behind each path, the same load generator. Requests/s \
             and latency percentiles are wrk's (`--latency`); the download is the median of \
             {} runs of `curl -o /dev/null` of {} MiB (MB/s = 10^6 bytes/s), with the slowest \
             and fastest run beside it: single downloads through the same path vary by up to \
             2× on this shared machine.\n",
            self.downloads,
            self.download_mib()
        );
        if let Some(first) = self.all_paths().first() {
            let _ = writeln!(
                o,
                "Command (per path: its address and `Host`; `-t` = min(connections, cores), `-c` 1, 16, 64):\n\n```\n{}\ncurl -sS -o /dev/null -w '%{{http_code}} %{{size_download}} %{{time_total}}' -H 'Host: <host>' http://<addr>/big\n```\n",
                first.command
            );
        }
        let _ = writeln!(o, "| path | what | connections | requests/s | p50 ms | p99 ms | errors |\n|---|---|---:|---:|---:|---:|---:|");
        for p in self.all_paths() {
            for w in &p.wrk {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    p.label,
                    p.description,
                    w.connections,
                    thousands(w.rps),
                    ms(w.p50),
                    ms(w.p99),
                    w.errors
                );
            }
        }
        let _ = writeln!(
            o,
            "\n| path | download MB/s (median) | slowest–fastest |\n|---|---:|---:|"
        );
        for p in self.all_paths() {
            let _ = writeln!(
                o,
                "| {} | {} | {}–{} |",
                p.label,
                thousands(p.download_mb_s),
                thousands(p.download_range.0),
                thousands(p.download_range.1)
            );
        }
        let _ = writeln!(o);
        for t in &self.tunnels {
            let c = &t.path;
            let _ = writeln!(
                o,
                "Ratios of {} to each other path (requests/s; for p99, how many times the other's latency; download MB/s):\n",
                c.label
            );
            let _ = write!(o, "| vs |");
            for w in &c.wrk {
                let _ = write!(o, " req/s c={} | p99 c={} |", w.connections, w.connections);
            }
            let _ = writeln!(o, " download |");
            let _ = write!(o, "|---|");
            for _ in &c.wrk {
                let _ = write!(o, "---:|---:|");
            }
            let _ = writeln!(o, "---:|");
            for other in &self.paths {
                let _ = write!(o, "| {} |", other.label);
                for (cw, ow) in c.wrk.iter().zip(&other.wrk) {
                    let _ = write!(
                        o,
                        " {} | {} |",
                        ratio(cw.rps, ow.rps),
                        ratio(cw.p99.as_secs_f64(), ow.p99.as_secs_f64())
                    );
                }
                let _ = writeln!(o, " {} |", ratio(c.download_mb_s, other.download_mb_s));
            }
            let _ = writeln!(o);
        }

        // Scale.
        let _ = writeln!(o, "## Scale\n");
        if !self.scale.is_empty() {
            let _ = writeln!(
                o,
                "Concurrent tunnels on one edge per route mode, all to the same app; one mode at \
                 a time (the first mode's tunnels are closed before the second grows). Each \
                 tunnel is the data plane `mytunnel http` runs, driven directly rather than \
                 through a thousand client processes: `mytunneld ctl allocate` as the tunnel user \
                 `mtbench` (timed), then\n\n```\nssh -N -T -o ExitOnForwardFailure=yes -o ControlMaster=no -o ControlPath=none -R <bind target>:127.0.0.1:<app> mtbench@127.0.0.1\n```\n\n\
                 with the lease's bind target: `127.0.0.1:<lease port>` in `routes` mode, the \
                 lease's socket in `static` mode. {} at a time. At each count every host answered \
                 `200` through Caddy before memory was read. Memory is from \
                 `/proc/<pid>/smaps_rollup`: PSS (shared pages split among the processes sharing \
                 them, so sums are fair) and RSS, summed over the sshd listener and all its \
                 per-connection processes, Caddy, and `mytunneld serve`. Per tunnel = (total at N \
                 − total with no tunnel) / N. Allocate latency is over the allocations that \
                 brought the count from the previous row to this one.\n",
                25
            );
            for run in &self.scale {
                let b = run.scale.baseline;
                let _ = writeln!(
                    o,
                    "- `{}` mode with no tunnel: sshd {} MiB, Caddy {} MiB, mytunneld {} MiB (PSS).",
                    run.mode,
                    mib(b.sshd.pss_kib),
                    mib(b.caddy.pss_kib),
                    mib(b.serve.pss_kib)
                );
                if let Some(reason) = &run.scale.stopped {
                    let _ = writeln!(
                        o,
                        "- **`{}` mode: growing stopped early**: {reason}",
                        run.mode
                    );
                }
            }
            let _ = writeln!(
                o,
                "\n| mode | tunnels | serving | sshd processes | sshd PSS MiB | Caddy PSS MiB | mytunneld PSS MiB | total PSS MiB | total RSS MiB | per tunnel PSS KiB | per tunnel RSS KiB | allocate p50 ms | allocate p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for run in &self.scale {
                let base = run.scale.baseline.total();
                for r in &run.scale.rows {
                    let total = r.memory.total();
                    let n = r.tunnels.max(1) as u64;
                    let _ = writeln!(
                        o,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        run.mode,
                        thousands(r.tunnels as f64),
                        thousands(r.serving as f64),
                        r.memory.sshd_processes,
                        mib(r.memory.sshd.pss_kib),
                        mib(r.memory.caddy.pss_kib),
                        mib(r.memory.serve.pss_kib),
                        mib(total.pss_kib),
                        mib(total.rss_kib),
                        total.pss_kib.saturating_sub(base.pss_kib) / n,
                        total.rss_kib.saturating_sub(base.rss_kib) / n,
                        ms(r.allocate.p50),
                        ms(r.allocate.p99)
                    );
                }
            }
            let _ = writeln!(o);
        }

        o.push_str(&self.where_we_lose());
        o
    }

    fn download_mib(&self) -> usize {
        if self.smoke {
            8
        } else {
            100
        }
    }

    fn path(&self, prefix: &str) -> Option<&PathResult> {
        self.all_paths()
            .into_iter()
            .find(|p| p.label.starts_with(prefix))
    }
}
