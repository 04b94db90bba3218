//! "Where we lose, why, and what would change it": the report's reading of its figures.

use super::*;

impl Report {
    pub(super) fn where_we_lose(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "## Where we lose, why, and what would change it\n");
        let (Some(a), Some(b), Some(c)) = (self.path("(a)"), self.path("(b)"), self.path("(c)"))
        else {
            return o;
        };
        let at =
            |p: &PathResult, conns: u32| p.wrk.iter().find(|w| w.connections == conns).cloned();
        if let (Some(b1), Some(c1)) = (at(b, 1), at(c, 1)) {
            let _ = writeln!(
                o,
                "- **Latency at low concurrency: the `ssh -N -R` hop (Nagle meets delayed ACKs).** \
                 At one connection mytunnel's p99 is {} ms against {} ms for Caddy → app and \
                 {} ms for the app alone; p50 {} ms against {} ms. A forward with no session \
                 (`-N`) never gets TCP_NODELAY from ssh or sshd, so a small response that follows \
                 an unacknowledged segment waits for the peer's delayed ACK (~40 ms on Linux). \
                 Component: OpenSSH's channel sockets, both ends. What would change it: carrying \
                 the forward on an interactive session (`ssh -tt`, key option `pty`, the gate \
                 holding the empty command), on which both ends set TCP_NODELAY, or a data \
                 plane that sets TCP_NODELAY itself.",
                ms(c1.p99),
                ms(b1.p99),
                at(a, 1).map_or("?".into(), |w| ms(w.p99)),
                ms(c1.p50),
                ms(b1.p50)
            );
        }
        if let (Some(a64), Some(b64), Some(c64)) = (at(a, 64), at(b, 64), at(c, 64)) {
            let peers: Vec<String> = ["(d)", "(e)"]
                .iter()
                .filter_map(|p| self.path(p))
                .filter_map(|p| {
                    at(p, 64).map(|w| format!("{} {} requests/s", p.label, thousands(w.rps)))
                })
                .collect();
            let _ = writeln!(
                o,
                "- **Throughput at 64 connections: two proxies in series, and Caddy is the first \
                 ceiling.** The app alone serves {} requests/s; Caddy → app {} ({} of direct): \
                 Caddy's reverse proxy (TLS off here) is the first ceiling on this machine. \
                 mytunnel adds sshd and ssh — two more user-space hops with encryption, on the \
                 same 2 cores — and serves {} ({} of Caddy → app). The peers have no HTTP proxy \
                 in front at all: {}; a like-for-like comparison would put Caddy in front of them \
                 too, since a public HTTPS URL needs TLS somewhere. What would change it: none \
                 of mytunnel's own code is on this path; the levers (not measured here) are \
                 ssh's cipher choice and keeping the edge's sshd and Caddy off the cores of the \
                 app and the load generator, as on a real deployment.",
                thousands(a64.rps),
                thousands(b64.rps),
                ratio(b64.rps, a64.rps),
                thousands(c64.rps),
                ratio(c64.rps, b64.rps),
                peers.join(", ")
            );
        }
        let _ = writeln!(
            o,
            "- **Download throughput** ({} MB/s through mytunnel against {} MB/s through Caddy \
             alone): every byte is encrypted by sshd and decrypted by ssh on the same cores as \
             Caddy and curl. Component: the SSH channel (cipher and 2 MiB window). What would \
             change it: a faster cipher, or the app's host being a separate machine (on a real \
             deployment the two ends do not share cores).",
            thousands(c.download_mb_s),
            thousands(b.download_mb_s)
        );
        let routes_mode = if self.route_modes {
            Some(RouteMode::Routes)
        } else {
            None
        };
        if let Some((small, large, growth)) = self.allocate_growth(routes_mode) {
            let rows: Vec<&control::Row> = self
                .control
                .iter()
                .filter(|r| r.mode == routes_mode)
                .collect();
            let (first, last) = (rows.first(), rows.last());
            let _ = write!(
                o,
                "- **Control plane in `routes` mode: Caddy reloads its whole config on every \
                 change.** allocate p50 grows {growth:.1}× from {} to {} active leases ({} ms → \
                 {} ms; release {} ms → {} ms): each allocate reads the routes list and inserts \
                 one route, each release deletes one, and Caddy re-provisions all N routes every \
                 time (and drops every open WebSocket). Component: Caddy's admin API. What would \
                 change it: the reload-free `static` mode of issue 8 (one wildcard route that \
                 dials a per-lease unix socket; lease changes never touch Caddy)",
                thousands(small as f64),
                thousands(large as f64),
                first.map_or("?".into(), |r| ms(r.allocate.p50)),
                last.map_or("?".into(), |r| ms(r.allocate.p50)),
                first.map_or("?".into(), |r| ms(r.release.p50)),
                last.map_or("?".into(), |r| ms(r.release.p50)),
            );
            if let Some((_, _, g)) = self.allocate_growth(Some(RouteMode::Static)) {
                let _ = write!(o, ", measured above at {g:.2}× over the same range");
            }
            let _ = writeln!(o, ".");
        }
        let static_rows: Vec<&control::Row> = self
            .control
            .iter()
            .filter(|r| r.mode == Some(RouteMode::Static))
            .collect();
        if let (Some(first), Some(last)) = (static_rows.first(), static_rows.last()) {
            let growth = |f: fn(&control::Row) -> Duration| {
                let base = f(first).as_secs_f64();
                if base > 0.0 {
                    f(last).as_secs_f64() / base
                } else {
                    0.0
                }
            };
            let (allocate, heartbeat, release) = (
                growth(|r| r.allocate.p50),
                growth(|r| r.heartbeat.p50),
                growth(|r| r.release.p50),
            );
            if allocate > 1.5 {
                let _ = writeln!(
                    o,
                    "- **`static` mode still grows with the lease count** (issue 8 acceptance 3 \
                     asks for at most 1.5×): from {} to {} active leases allocate p50 grows \
                     {allocate:.2}×, release {release:.2}×, heartbeat {heartbeat:.2}×. A static \
                     allocate reads no other lease (socket leases hold no port, and ctl sweeps \
                     only its owner's directory), and serve answers it with one write \
                     transaction on a database it holds open. Look for what else grew with the \
                     seeded edge in this run.",
                    thousands(first.leases as f64),
                    thousands(last.leases as f64),
                );
            }
        }
        if let Some(t) = self.tunnels.first() {
            if let [mux, no_mux] = t.time_to_url.as_slice() {
                let _ = writeln!(
                    o,
                    "- **Time to URL** is {} ms with mux and {} ms with `--no-ssh-mux`: it is SSH \
                     handshakes (key exchange and authentication, each a few hundred ms on \
                     loopback) — the control master, then the data-plane connection, plus one \
                     `ssh -T` per ctl command without mux. What would change it: opening the \
                     data-plane connection in parallel with the allocation, or requesting the \
                     forward on the connection that already carries the control session.",
                    ms(mux.to_first_200.p50),
                    ms(no_mux.to_first_200.p50)
                );
            }
        }
        // Per mode: "<N> tunnels, <total> KiB PSS of which sshd <sshd> KiB (<procs> processes)".
        let per_tunnel: Vec<String> = self
            .scale
            .iter()
            .filter_map(|run| {
                let r = run.scale.rows.last()?;
                let n = r.tunnels.max(1) as u64;
                let base = run.scale.baseline;
                let sshd = r.memory.sshd.pss_kib.saturating_sub(base.sshd.pss_kib) / n;
                let total = r
                    .memory
                    .total()
                    .pss_kib
                    .saturating_sub(base.total().pss_kib)
                    / n;
                Some(format!(
                    "`{}` mode at {} tunnels: {} KiB PSS, of which sshd's per-connection \
                     processes take {} KiB ({} sshd processes)",
                    run.mode,
                    thousands(r.tunnels as f64),
                    thousands(total as f64),
                    thousands(sshd as f64),
                    r.memory.sshd_processes
                ))
            })
            .collect();
        if !per_tunnel.is_empty() {
            let _ = writeln!(
                o,
                "- **Memory per tunnel**: {}. Privilege separation forks a monitor and a user \
                 process per connection. bore and rathole hold a tunnel as a task in one \
                 process. What would change it: nothing cheap with stock OpenSSH; it is the \
                 price of using sshd for authentication and isolation.",
                per_tunnel.join("; ")
            );
        }
        let _ = writeln!(o);
        o
    }
}
