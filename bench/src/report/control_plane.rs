//! The control-plane section: ctl's verbs as whole processes on the edge, by lease count.

use super::*;

impl Report {
    /// allocate p50 at the largest size over the smallest, per mode.
    pub(super) fn allocate_growth(&self, mode: Option<RouteMode>) -> Option<(usize, usize, f64)> {
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

    /// The control-plane section.
    pub(super) fn render_control(&self, o: &mut String) {
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
             (`SqlLeaseStore::allocate`) and, in `routes` mode, their N routes loaded into \
             Caddy in one `POST /load` (verified: Caddy held N `mytunnel-` routes). Each \
             sample allocates, heartbeats and releases one lease, so N stays constant. Every \
             size has its own edge (Caddy, database, serve), and the sizes are sampled in \
             turn, one sample each per round in a rotating order, so whatever else the \
             machine does falls on every size alike and the ratios compare lease counts, not \
             moments. In `static` mode every seeded lease's socket listens (the bench binds \
             it, as sshd does for a live tunnel), so each sample meets a socket table as large \
             as all sizes' leases together. Between each sample's heartbeat and release, \
             serve's on-demand TLS `ask` (`MYTUNNEL_TLS_ASK_LISTEN`) is timed, each on a \
             fresh connection, from connect to the status line: `GET /ask?domain=<host>` \
             for the sampled lease's host (answered 200) and for a host without a lease \
             (404), while the verbs' writes go on between them.\n"
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
            "| mode | active leases | samples | allocate p50 ms | allocate p99 ms | heartbeat p50 ms | heartbeat p99 ms | release p50 ms | release p99 ms | TLS ask p50 ms | TLS ask p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.control {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                Self::mode_name(r.mode),
                thousands(r.leases as f64),
                r.allocate.samples,
                ms(r.allocate.p50),
                ms(r.allocate.p99),
                ms(r.heartbeat.p50),
                ms(r.heartbeat.p99),
                ms(r.release.p50),
                ms(r.release.p99),
                ms(r.ask.p50),
                ms(r.ask.p99)
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
        // Issue 18's target for the on-demand TLS ask: under 10 ms with 5,000 leases.
        for r in self
            .control
            .iter()
            .filter(|r| r.leases >= 5_000 && r.ask.samples > 0)
        {
            let met = r.ask.p99 < Duration::from_millis(10);
            let _ = writeln!(
                o,
                "- `{}` TLS ask with {} active leases: p50 {} ms, p99 {} ms over {} asks — \
                 issue 18 acceptance 2 (under 10 ms): {}",
                Self::mode_name(r.mode),
                thousands(r.leases as f64),
                ms(r.ask.p50),
                ms(r.ask.p99),
                r.ask.samples,
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
    }
}
