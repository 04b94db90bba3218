//! The time-to-URL and data-plane sections.

use super::targets::{at_most, TTU_MS, TTU_SHARE};
use super::*;

impl Report {
    /// Time to URL: the table, then its targets per edge.
    pub(super) fn render_time_to_url(&self, o: &mut String) {
        let _ = writeln!(o, "## Time to URL\n");
        let _ = writeln!(
            o,
            "From spawning `mytunnel http` to the first `200` through Caddy for its host \
             (polled every 5 ms), with a loopback sshd whose key is gated by `mytunneld gate`; \
             the tunnel is stopped with SIGINT (release) between runs. `mux` is the client's \
             default shape; `--no-ssh-mux` runs one `ssh -T` per control command and one \
             `ssh -N -R` per tunnel.\n"
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
        for v in self.tunnels.iter().flat_map(|t| &t.time_to_url) {
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
        let _ = writeln!(o);
        for t in &self.tunnels {
            let (Some(mux), Some(plain)) = (t.time_to_url(false), t.time_to_url(true)) else {
                continue;
            };
            let mux_ms = mux.to_first_200.p50.as_secs_f64() * 1000.0;
            let plain_ms = plain.to_first_200.p50.as_secs_f64() * 1000.0;
            let mode = if t.mode.is_empty() {
                String::new()
            } else {
                format!("`{}` mode: ", t.mode)
            };
            if plain_ms > 0.0 {
                let share = mux_ms / plain_ms;
                let _ = writeln!(
                    o,
                    "- {mode}mux p50 / `--no-ssh-mux` p50 = {share:.2}× — target ≤ {TTU_SHARE}×: {}",
                    at_most(share, TTU_SHARE).text()
                );
            }
            let _ = writeln!(
                o,
                "- {mode}mux p50 {} ms — target ≤ {TTU_MS:.0} ms: {}",
                ms(mux.to_first_200.p50),
                at_most(mux_ms, TTU_MS).text()
            );
        }
        let _ = writeln!(o);
    }

    /// The widest spread of single downloads through one path, fastest over slowest.
    fn download_spread(&self) -> f64 {
        self.all_paths()
            .iter()
            .map(|p| p.download.range)
            .filter(|(slow, _)| *slow > 0.0)
            .map(|(slow, fast)| fast / slow)
            .fold(1.0, f64::max)
    }

    /// The data plane: requests and latency, downloads, ratios.
    pub(super) fn render_data_plane(&self, o: &mut String) {
        let _ = writeln!(o, "## Data plane\n");
        let _ = writeln!(
            o,
            "The same app (a small tokio HTTP/1.1 server in the bench crate: 1 KiB for `GET /`, \
             the download for `GET /big`) behind each path, the same load generator. Requests/s \
             and latency percentiles are wrk's (`--latency`); the download is the median of \
             {} runs of `curl -o /dev/null` of {} MiB (MB/s = 10^6 bytes/s), with the slowest \
             and fastest run beside it: in this run single downloads through one path differed \
             by up to {:.1}×. Each mytunnel path says what its client ran, as seen in the \
             process table and at sshd's port while it served.\n",
            self.downloads,
            self.download_mib,
            self.download_spread()
        );
        if let Some(first) = self.all_paths().first() {
            let connections: Vec<String> = first
                .wrk
                .iter()
                .map(|w| w.connections.to_string())
                .collect();
            let _ = writeln!(
                o,
                "Command (per path: its address and `Host`; `-t` = min(connections, cores), `-c` {}):\n\n```\n{}\ncurl -sS -o /dev/null -w '%{{http_code}} %{{size_download}} %{{time_total}}' -H 'Host: <host>' http://<addr>/big\n```\n",
                connections.join(", "),
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
        self.render_downloads(o);
        self.render_ratios(o);
    }

    fn render_downloads(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "\n| path | SSH cipher asked for | download MB/s (median) | slowest–fastest |\n|---|---|---:|---:|"
        );
        let row = |o: &mut String, label: &str, cipher: &str, d: &crate::dataplane::Downloads| {
            let _ = writeln!(
                o,
                "| {label} | {cipher} | {} | {}–{} |",
                thousands(d.median_mb_s),
                thousands(d.range.0),
                thousands(d.range.1)
            );
        };
        let asked = |observed: &crate::shape::Observed| {
            observed.ciphers().map_or_else(
                || "none on its ssh command lines (ssh's own order)".to_owned(),
                |c| format!("`Ciphers={c}` (the client's choice)"),
            )
        };
        for p in self.paths.iter().take(2) {
            row(o, &p.label, "—", &p.download);
        }
        for t in &self.tunnels {
            for p in &t.paths {
                row(o, &p.result.label, &asked(&p.observed), &p.result.download);
            }
            if let Some(c) = &t.cipher {
                let label = format!(
                    "{}, {}",
                    crate::tunnels::path_label(&t.mode, crate::tunnels::Shape::Default),
                    c.option
                );
                let ran = c.observed.ciphers().map_or_else(
                    || "none on its ssh command lines".to_owned(),
                    |first| format!("`{first}`"),
                );
                row(
                    o,
                    &label,
                    &format!("`{}` (`--ssh-option`); the first on its ssh command lines, which ssh keeps: {ran}", c.option),
                    &c.download,
                );
            }
        }
        for p in self.paths.iter().skip(2) {
            row(o, &p.label, "—", &p.download);
        }
        let _ = writeln!(o);
    }

    fn render_ratios(&self, o: &mut String) {
        for c in self
            .tunnels
            .iter()
            .flat_map(|t| &t.paths)
            .map(|p| &p.result)
        {
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
            for other in self.all_paths().into_iter().filter(|p| p.label != c.label) {
                let _ = write!(o, "| {} |", other.label);
                for (cw, ow) in c.wrk.iter().zip(&other.wrk) {
                    let _ = write!(
                        o,
                        " {} | {} |",
                        ratio(cw.rps, ow.rps),
                        ratio(cw.p99.as_secs_f64(), ow.p99.as_secs_f64())
                    );
                }
                let _ = writeln!(
                    o,
                    " {} |",
                    ratio(c.download.median_mb_s, other.download.median_mb_s)
                );
            }
            let _ = writeln!(o);
        }
    }
}
