//! "Where we lose, why, and what would change it": the report's reading of its own
//! figures. Every number here is computed from this run; the prose around them names the
//! component and the shape the client was seen to run.

use super::targets::{at_least, at_most, DOWNLOAD_SHARE, LATENCY_LIMIT, RPS_SHARE};
use super::*;
use crate::dataplane::WrkResult;
use crate::shape::Carrier;
use crate::tunnels::{MytunnelPath, TunnelRun};

fn at(p: &PathResult, conns: u32) -> Option<WrkResult> {
    p.wrk.iter().find(|w| w.connections == conns).cloned()
}

/// The paths the latency and throughput findings compare.
struct Compared<'a> {
    /// (a): the app alone.
    a: &'a PathResult,
    /// (b): Caddy → app.
    b: &'a PathResult,
    /// mytunnel in its default shape.
    mux: &'a MytunnelPath,
    /// mytunnel with `--no-ssh-mux`, when the run had it.
    plain: Option<&'a MytunnelPath>,
}

impl Report {
    pub(super) fn where_we_lose(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "## Where we lose, why, and what would change it\n");
        let (Some(a), Some(b), Some(run)) =
            (self.path("(a)"), self.path("(b)"), self.headline_run())
        else {
            return o;
        };
        let Some(mux) = run.mux_path() else {
            return o;
        };
        let compared = Compared {
            a,
            b,
            mux,
            plain: run.path(crate::tunnels::Shape::NoMux),
        };
        self.latency(&mut o, &compared);
        self.throughput(&mut o, &compared);
        self.download(&mut o, b, run, mux);
        self.control_plane(&mut o);
        Self::time_to_url(&mut o, run, mux);
        self.memory(&mut o);
        let _ = writeln!(o);
        o
    }

    fn latency(&self, o: &mut String, compared: &Compared<'_>) {
        let Compared { a, b, mux, plain } = *compared;
        let (Some(b1), Some(c1)) = (at(b, 1), at(&mux.result, 1)) else {
            return;
        };
        let p50 = c1.p50.as_secs_f64() / b1.p50.as_secs_f64().max(1e-9);
        let p99 = c1.p99.as_secs_f64() / b1.p99.as_secs_f64().max(1e-9);
        let _ = write!(
            o,
            "- **Latency at one connection** ({}): mytunnel's p50 is {} ms and p99 {} ms \
             against {} ms and {} ms for Caddy → app ({} ms and {} ms for the app alone): \
             {p50:.2}× and {p99:.2}× — target ≤ {LATENCY_LIMIT}×: p50 {}, p99 {}.",
            mux.result.label,
            ms(c1.p50),
            ms(c1.p99),
            ms(b1.p50),
            ms(b1.p99),
            at(a, 1).map_or("?".into(), |w| ms(w.p50)),
            at(a, 1).map_or("?".into(), |w| ms(w.p99)),
            at_most(p50, LATENCY_LIMIT).word(),
            at_most(p99, LATENCY_LIMIT).word(),
        );
        let _ = write!(o, " {}", carrier_latency(mux.observed.carrier()));
        if let Some(plain1) = plain.and_then(|p| at(&p.result, 1)) {
            let _ = write!(
                o,
                " In the same run `--no-ssh-mux`, whose client ran {}, served p50 {} ms and \
                 p99 {} ms.",
                plain.map_or_else(|| "?".to_owned(), |p| p.observed.hop()),
                ms(plain1.p50),
                ms(plain1.p99)
            );
        }
        let _ = writeln!(o);
    }

    fn throughput(&self, o: &mut String, compared: &Compared<'_>) {
        let Compared { a, b, mux, plain } = *compared;
        let Some(c) = mux.result.wrk.last() else {
            return;
        };
        let n = c.connections;
        let (Some(an), Some(bn)) = (at(a, n), at(b, n)) else {
            return;
        };
        let share = c.rps / bn.rps.max(1e-9);
        let peers: Vec<String> = ["(d)", "(e)"]
            .iter()
            .filter_map(|p| self.path(p))
            .filter_map(|p| {
                at(p, n).map(|w| format!("{} {} requests/s", p.label, thousands(w.rps)))
            })
            .collect();
        let _ = write!(
            o,
            "- **Throughput at {n} connections: two proxies in series, and Caddy is the first \
             ceiling.** The app alone serves {} requests/s; Caddy → app {} ({} of direct): \
             Caddy's reverse proxy (TLS off here) is the first ceiling on this machine. \
             mytunnel adds sshd and ssh — two more user-space hops with encryption, on the \
             same cores — and the client's HTTP proxy, which reads each request for the \
             request log, and serves {} ({share:.2}× Caddy → app; target ≥ {RPS_SHARE}×: {})",
            thousands(an.rps),
            thousands(bn.rps),
            ratio(bn.rps, an.rps),
            thousands(c.rps),
            at_least(share, RPS_SHARE).text(),
        );
        if let Some(pn) = plain.and_then(|p| at(&p.result, n)) {
            let _ = write!(
                o,
                "; `--no-ssh-mux` serves {} ({} of the default shape)",
                thousands(pn.rps),
                ratio(pn.rps, c.rps)
            );
        }
        let raw = self
            .headline_run()
            .and_then(|run| run.path(crate::tunnels::Shape::Raw))
            .and_then(|p| at(&p.result, n));
        if let Some(rn) = raw {
            let _ = write!(
                o,
                "; `--raw` (bytes only, no request log) serves {} (the default shape is {} of it)",
                thousands(rn.rps),
                ratio(c.rps, rn.rps)
            );
        }
        let _ = write!(o, ".");
        if !peers.is_empty() {
            let _ = write!(
                o,
                " The peers have no HTTP proxy in front at all: {}; a like-for-like \
                 comparison would put Caddy in front of them too, since a public HTTPS URL \
                 needs TLS somewhere.",
                peers.join(", ")
            );
        }
        let _ = writeln!(
            o,
            " What would change it: keeping the edge's sshd and Caddy off the cores of the \
             app and the load generator, as on a real deployment; the cipher (below)."
        );
    }

    fn download(&self, o: &mut String, b: &PathResult, run: &TunnelRun, mux: &MytunnelPath) {
        let c = mux.result.download.median_mb_s;
        let share = c / b.download.median_mb_s.max(1e-9);
        let cipher = mux.observed.ciphers().map_or_else(
            || "no `Ciphers` on its ssh command lines, so ssh's own order".to_owned(),
            |c| format!("`Ciphers={c}`"),
        );
        let _ = write!(
            o,
            "- **Download throughput**: {} MB/s through mytunnel ({cipher}) against {} MB/s \
             through Caddy alone: {share:.2}× — target ≥ {DOWNLOAD_SHARE}×: {}.",
            thousands(c),
            thousands(b.download.median_mb_s),
            at_least(share, DOWNLOAD_SHARE).text()
        );
        if let Some(chacha) = &run.cipher {
            let _ = write!(
                o,
                " With `{}` asked for, {} MB/s ({} of the default).",
                chacha.option,
                thousands(chacha.download.median_mb_s),
                ratio(chacha.download.median_mb_s, c)
            );
        }
        let aes = self
            .machine
            .iter()
            .find(|(k, _)| k.starts_with("AES"))
            .map_or("unknown", |(_, v)| v.as_str());
        let _ = writeln!(
            o,
            " (AES instructions on this CPU: {aes}.) Every byte is encrypted by sshd and \
             decrypted by ssh on the same cores as Caddy and curl. Component: the SSH channel \
             (cipher and window). What would change it: the cipher where the CPU accelerates \
             it, or the app's host being a separate machine (on a real deployment the two ends \
             do not share cores)."
        );
    }

    fn control_plane(&self, o: &mut String) {
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
                 change it: the reload-free `static` mode (one wildcard route that dials a \
                 per-lease unix socket; lease changes never touch Caddy)",
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
                    "- **`static` mode still grows with the lease count** (at most 1.5× is the \
                     target): from {} to {} active leases allocate p50 grows {allocate:.2}×, \
                     release {release:.2}×, heartbeat {heartbeat:.2}×. A static allocate reads \
                     no other lease, and serve answers it with one write transaction on a \
                     database it holds open. Look for what else grew with the seeded edge in \
                     this run.",
                    thousands(first.leases as f64),
                    thousands(last.leases as f64),
                );
            }
        }
    }

    fn time_to_url(o: &mut String, run: &TunnelRun, mux: &MytunnelPath) {
        let (Some(m), Some(p)) = (run.time_to_url(false), run.time_to_url(true)) else {
            return;
        };
        let share = m.to_first_200.p50.as_secs_f64() / p.to_first_200.p50.as_secs_f64().max(1e-9);
        let after_line = m.to_first_200.p50.saturating_sub(m.to_url_line.p50);
        let why = match mux.observed.carrier() {
            Carrier::ForwardProcess => {
                "The default shape still opens two SSH connections: the control master, then \
                 the data plane's `ssh -N -R`, each with its own handshake (key exchange and \
                 authentication). What would change it: requesting the forward over the \
                 connection that already carries the control commands."
            }
            Carrier::InteractiveMux => {
                "The default shape makes one SSH handshake and requests the forward over that \
                 connection's mux; `--no-ssh-mux` makes one per control command and one for \
                 the forward. What is left is that handshake, the allocation and the forward \
                 request."
            }
            Carrier::Mux => {
                "The default shape's connection ran without a pty (`-T`): the client asks for \
                 one first (`-tt`), and when the edge's key refuses it, connects again \
                 without and gives the gate a grace period to say it holds the session. What \
                 would change it: keys with the `pty` option, so the first connection is the \
                 one that stays."
            }
            Carrier::Unknown => "The client's ssh processes were not seen.",
        };
        let _ = writeln!(
            o,
            "- **Time to URL** is {} ms with the default shape and {} ms with `--no-ssh-mux` \
             ({share:.2}×; p50 of first 200s); the `url:` line comes {} ms before the first \
             200. {why}",
            ms(m.to_first_200.p50),
            ms(p.to_first_200.p50),
            ms(after_line)
        );
    }

    fn memory(&self, o: &mut String) {
        let Some(scale) = &self.scale else {
            return;
        };
        let lines: Vec<String> = scale
            .parts
            .iter()
            .filter_map(|part| {
                part.rows
                    .last()
                    .map(|r| scale_table::per_tunnel_line(part, r))
            })
            .collect();
        if lines.is_empty() {
            return;
        }
        // A shell among the gate's processes: the forced command's shell waits for it.
        let shell = scale
            .parts
            .iter()
            .filter_map(|part| part.rows.last())
            .flat_map(|r| &r.edge.gate_names)
            .find(|(name, _)| ["sh", "dash", "bash"].contains(&name.as_str()))
            .map(|(name, _)| name.clone());
        let _ = write!(
            o,
            "- **Memory per tunnel**: {} Privilege separation forks a monitor and a user \
             process per SSH connection, and the gate a connection holds is one more process; \
             bore and rathole hold a tunnel as a task in one process.",
            lines.join(" ")
        );
        if let Some(shell) = shell {
            let _ = write!(
                o,
                " The user's shell (`{shell}`), which sshd runs the key's forced command with, \
                 stays alive as the held gate's parent: a forced command that `exec`s the gate \
                 would save that process on every connection."
            );
        }
        let _ = writeln!(
            o,
            " What would change it on the edge: fewer SSH connections per tunnel (an SDK \
             edge carries many tunnels on one); each connection's processes are the price of \
             using sshd for authentication and isolation."
        );
    }
}

/// Why the latency at one connection is what it is, for how the forward was carried.
fn carrier_latency(carrier: Carrier) -> &'static str {
    match carrier {
        Carrier::ForwardProcess => {
            "The client carried the forward on `ssh -N -R`: a forward with no session never \
             gets TCP_NODELAY from ssh or sshd, so a small response that follows an \
             unacknowledged segment waits for the peer's delayed ACK. Component: OpenSSH's \
             channel sockets, both ends. What would change it: carrying the forward on an \
             interactive session, on which both ends set TCP_NODELAY."
        }
        Carrier::InteractiveMux => {
            "The client carried the forward over its one interactive connection, on which \
             ssh and sshd set TCP_NODELAY; what is left is two more user-space hops with \
             encryption on the same cores."
        }
        Carrier::Mux => {
            "The client carried the forward over the mux of its one connection, opened \
             without a terminal (`-T`, which the client falls back to when the edge's key \
             gives no pty), so neither ssh nor sshd marks it interactive."
        }
        Carrier::Unknown => "The client's ssh processes were not seen.",
    }
}
