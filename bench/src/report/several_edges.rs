//! The several-edges section: the control plane on PostgreSQL beside SQLite, and the hop
//! from one edge's Caddy to another's.

use super::*;

impl Report {
    /// allocate p50 on PostgreSQL over SQLite (static mode) at each size both measured.
    pub(super) fn postgres_allocate_ratios(&self) -> Vec<(usize, f64)> {
        self.control_postgres
            .iter()
            .filter_map(|pg| {
                let sqlite = self
                    .control
                    .iter()
                    .find(|r| r.mode == Some(RouteMode::Static) && r.leases == pg.leases)?;
                let base = sqlite.allocate.p50.as_secs_f64();
                (base > 0.0).then(|| (pg.leases, pg.allocate.p50.as_secs_f64() / base))
            })
            .collect()
    }

    /// The section.
    pub(super) fn render_several_edges(&self, o: &mut String) {
        if self.control_postgres.is_empty() && self.forwarding.is_none() {
            return;
        }
        let _ = writeln!(o, "## Several edges\n");
        let _ = writeln!(
            o,
            "**The lease database.** The control plane above, in `static` mode, with the \
             edge's leases in PostgreSQL (`MYTUNNEL_DB_URL`: Debian's server on this machine, \
             a database and login of its own per size, the password in a `PGPASSFILE`, over \
             TCP on loopback) instead of the SQLite file; the same seeding, sampling and \
             rounds. Every write takes the database's one write lock (an advisory lock), as \
             it does for several edges sharing it.\n"
        );
        let _ = writeln!(
            o,
            "| database | active leases | samples | allocate p50 ms | allocate p99 ms | heartbeat p50 ms | heartbeat p99 ms | release p50 ms | release p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let sizes: Vec<usize> = self.control_postgres.iter().map(|r| r.leases).collect();
        let sqlite = self
            .control
            .iter()
            .filter(|r| r.mode == Some(RouteMode::Static) && sizes.contains(&r.leases));
        for (name, r) in sqlite
            .map(|r| ("SQLite", r))
            .chain(self.control_postgres.iter().map(|r| ("PostgreSQL", r)))
        {
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands(r.leases as f64),
                r.allocate.samples,
                ms(r.allocate.p50),
                ms(r.allocate.p99),
                ms(r.heartbeat.p50),
                ms(r.heartbeat.p99),
                ms(r.release.p50),
                ms(r.release.p99),
            );
        }
        let _ = writeln!(o);
        for (leases, factor) in self.postgres_allocate_ratios() {
            let _ = writeln!(
                o,
                "- **allocate p50 on PostgreSQL / on SQLite, {} active leases: {factor:.2}×**",
                thousands(leases as f64)
            );
        }
        if let Some(f) = &self.forwarding {
            let _ = writeln!(
                o,
                "\n**Through another edge.** Two Caddys stand for edge A and edge B, configured \
                 through the admin API as `serve` configures them; B holds the lease, whose \
                 route goes to a local app (standing in for the tunnel, the same on both \
                 paths), and A's route forwards the host to B (`http://` on loopback: no TLS \
                 on the hop). Each request is a fresh connection, `GET /` to the last byte, \
                 the two paths taken in turn.\n"
            );
            let _ = writeln!(
                o,
                "| path | requests | p50 ms | p99 ms |\n|---|---:|---:|---:|\n\
                 | visitor → edge B's Caddy → app | {} | {} | {} |\n\
                 | visitor → edge A's Caddy → edge B's Caddy → app | {} | {} | {} |\n",
                f.direct.samples,
                ms(f.direct.p50),
                ms(f.direct.p99),
                f.forwarded.samples,
                ms(f.forwarded.p50),
                ms(f.forwarded.p99),
            );
            let added = f.forwarded.p50.saturating_sub(f.direct.p50);
            let _ = writeln!(
                o,
                "- **a request through the other edge: +{} ms at p50 ({} the direct path)**; \
                 with `https://` edge URLs the hop adds a TLS handshake on a new connection to \
                 the holder (Caddy keeps its connections to it open).\n",
                ms(added),
                ratio(f.forwarded.p50.as_secs_f64(), f.direct.p50.as_secs_f64()),
            );
        }
    }
}
