//! The previous run's figures, read before a run overwrites them: from the sidecar
//! `bench/last-run.json` that every full run writes beside BENCHMARKS.md, else from the
//! tables of the outgoing BENCHMARKS.md itself (a report from before the sidecar).

use std::path::{Path, PathBuf};

use super::headlines::Headlines;
use super::markdown::{cell, number, tables, Table};
use super::*;

/// Where the previous figures came from, and the figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Previous {
    /// For the report: `the run of 2026-01-05 (bench/last-run.json, commit abc1234)`.
    pub source: String,
    /// None when there was no previous run.
    pub figures: Option<Headlines>,
}

impl Default for Previous {
    fn default() -> Previous {
        Previous {
            source: "no previous run".to_owned(),
            figures: None,
        }
    }
}

/// The sidecar of the report at the workspace root.
pub fn sidecar(root: &Path) -> PathBuf {
    root.join("bench").join("last-run.json")
}

/// The figures of the last full run: the sidecar, else the report at the root.
pub fn load(root: &Path) -> Previous {
    if let Ok(text) = std::fs::read_to_string(sidecar(root)) {
        match serde_json::from_str::<Headlines>(&text) {
            Ok(figures) => {
                return Previous {
                    source: format!(
                        "the run of {} (`bench/last-run.json`{})",
                        figures.date.as_deref().unwrap_or("an unknown day"),
                        figures
                            .commit
                            .as_deref()
                            .map_or(String::new(), |c| format!(", commit {c}"))
                    ),
                    figures: Some(figures),
                }
            }
            Err(e) => eprintln!("  bench/last-run.json is unreadable ({e}); trying BENCHMARKS.md"),
        }
    }
    let report = root.join("BENCHMARKS.md");
    let Ok(text) = std::fs::read_to_string(&report) else {
        return Previous::default();
    };
    let figures = parse_markdown(&text);
    if figures == Headlines::default() {
        return Previous::default();
    }
    let commit = last_commit_of(root, "BENCHMARKS.md");
    let date = figures
        .date
        .clone()
        .or_else(|| commit.as_ref().map(|(_, day)| day.clone()));
    Previous {
        source: format!(
            "the run of {} (the outgoing BENCHMARKS.md{})",
            date.as_deref().unwrap_or("an unknown day"),
            commit.map_or(String::new(), |(hash, _)| format!(", committed in {hash}"))
        ),
        figures: Some(Headlines { date, ..figures }),
    }
}

/// The last commit that changed `file`: its short hash and day.
fn last_commit_of(root: &Path, file: &str) -> Option<(String, String)> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["log", "-1", "--format=%h %cs", "--", file])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (hash, day) = text.trim().split_once(' ')?;
    Some((hash.to_owned(), day.to_owned()))
}

/// Writes `figures` to `path` (pretty JSON).
pub fn write_sidecar(path: &Path, figures: &Headlines) -> Result<()> {
    let text = serde_json::to_string_pretty(figures)
        .map_err(|e| format!("cannot encode the run's figures: {e}"))?;
    std::fs::write(path, format!("{text}\n"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A `YYYY-MM-DD` in the line that says who wrote the report.
fn written_on(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("Written by"))?;
    line.split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .find(|w| {
            let b = w.as_bytes();
            b.len() == 10
                && b.get(4) == Some(&b'-')
                && b.get(7) == Some(&b'-')
                && w.chars().filter(char::is_ascii_digit).count() == 8
        })
        .map(str::to_owned)
}

/// The commit in the line that says who wrote the report: `(commit abc1234)`.
fn written_at(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("Written by"))?;
    let (_, rest) = line.split_once("(commit ")?;
    let (commit, _) = rest.split_once(')')?;
    Some(commit.to_owned())
}

/// The download size the data-plane section names: "`curl -o /dev/null` of 100 MiB".
fn download_mib(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once("`curl -o /dev/null` of ")?;
    let (n, _) = rest.split_once(" MiB")?;
    n.trim().parse().ok()
}

fn find<'a>(all: &'a [Table], names: &[&str]) -> Option<&'a Table> {
    all.iter().find(|t| t.has(names))
}

/// The headline figures of a BENCHMARKS.md, by its tables' column names. What it lacks
/// stays None.
pub fn parse_markdown(text: &str) -> Headlines {
    let all = tables(text);
    let mut h = Headlines {
        date: written_on(text),
        commit: written_at(text),
        smoke: text.contains("**Smoke run**"),
        download_mib: download_mib(text),
        ..Headlines::default()
    };
    read_data_plane(&all, &mut h);
    read_time_to_url(&all, &mut h);
    read_scale(&all, &mut h);
    read_inspector(&all, &mut h);
    h
}

/// The inspector table's row of the run-to-run spread.
pub const SPREAD_ROW: &str = "run-to-run spread without `--inspect`";

/// The inspector table: the inspector's share of the client's growth, and the bound.
fn read_inspector(all: &[Table], h: &mut Headlines) {
    let Some(t) = find(all, &["client PSS KiB", "grown KiB"]) else {
        return;
    };
    let grown = t.named("grown KiB");
    let row = |name: &str| {
        t.rows
            .iter()
            .find(|r| cell(r, Some(0)) == name)
            .and_then(|r| number(cell(r, grown)))
    };
    h.inspector_growth_kib = row("the inspector's share");
    h.inspector_bound_kib = row("bound");
    h.inspector_spread_kib = row(SPREAD_ROW);
}

/// The mytunnel label to read: the default shape, `static` mode first.
fn tunnel_label<'a>(labels: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = labels
        .filter(|l| {
            l.starts_with("(c)")
                && !l.contains("no-ssh-mux")
                && !l.contains("--raw")
                && !l.contains("Ciphers")
        })
        .collect();
    candidates
        .iter()
        .find(|l| l.contains("[static]"))
        .or(candidates.first())
        .copied()
}

fn mode_of(label: &str) -> Option<String> {
    let (_, rest) = label.rsplit_once('[')?;
    Some(rest.strip_suffix(']')?.to_owned())
}

fn read_data_plane(all: &[Table], h: &mut Headlines) {
    if let Some(t) = find(
        all,
        &["path", "connections", "requests/s", "p50 ms", "p99 ms"],
    ) {
        let (path, conns, rps, p50, p99) = (
            t.named("path"),
            t.named("connections"),
            t.named("requests/s"),
            t.named("p50 ms"),
            t.named("p99 ms"),
        );
        let label = tunnel_label(t.rows.iter().map(|r| cell(r, path))).map(str::to_owned);
        h.mode = label.as_deref().and_then(mode_of);
        let rows_of = |wanted: &dyn Fn(&str) -> bool| -> Vec<&Vec<String>> {
            t.rows.iter().filter(|r| wanted(cell(r, path))).collect()
        };
        let at = |rows: &[&Vec<String>], n: f64| {
            rows.iter()
                .find(|r| number(cell(r, conns)) == Some(n))
                .map(|r| (number(cell(r, p50)), number(cell(r, p99))))
        };
        let most = |rows: &[&Vec<String>]| {
            rows.iter()
                .filter_map(|r| Some((number(cell(r, conns))?, number(cell(r, rps))?)))
                .max_by(|a, b| a.0.total_cmp(&b.0))
        };
        let caddy = rows_of(&|l: &str| l.starts_with("(b)"));
        let tunnel = rows_of(&|l: &str| Some(l) == label.as_deref());
        if let Some((p50, p99)) = at(&caddy, 1.0) {
            (h.caddy_c1_p50_ms, h.caddy_c1_p99_ms) = (p50, p99);
        }
        if let Some((p50, p99)) = at(&tunnel, 1.0) {
            (h.tunnel_c1_p50_ms, h.tunnel_c1_p99_ms) = (p50, p99);
        }
        // `(c) mytunnel [static]` → `(c) mytunnel --raw [static]`.
        let raw_label = label
            .as_deref()
            .map(|l| l.replacen("(c) mytunnel", "(c) mytunnel --raw", 1));
        let raw = rows_of(&|l: &str| Some(l) == raw_label.as_deref());
        h.raw_c1_p50_ms = at(&raw, 1.0).and_then(|(p50, _)| p50);
        h.raw_many_rps = most(&raw).map(|(_, r)| r);
        h.caddy_many_rps = most(&caddy).map(|(_, r)| r);
        if let Some((n, r)) = most(&tunnel) {
            h.tunnel_many_rps = Some(r);
            h.many_connections = Some(n as u64);
        }
        let download = all.iter().find(|d| {
            d.named("path").is_some() && d.column(|c| c.starts_with("download MB/s")).is_some()
        });
        if let Some(d) = download {
            let (dpath, mb) = (
                d.named("path"),
                d.column(|c| c.starts_with("download MB/s")),
            );
            let value = |wanted: &str| {
                d.rows
                    .iter()
                    .find(|r| cell(r, dpath) == wanted)
                    .and_then(|r| number(cell(r, mb)))
            };
            h.caddy_download_mb_s = d
                .rows
                .iter()
                .find(|r| cell(r, dpath).starts_with("(b)"))
                .and_then(|r| number(cell(r, mb)));
            h.tunnel_download_mb_s = label.as_deref().and_then(value);
        }
    }
}

fn read_time_to_url(all: &[Table], h: &mut Headlines) {
    let Some(t) = find(all, &["variant", "first 200 p50 ms"]) else {
        return;
    };
    let (variant, p50) = (t.named("variant"), t.named("first 200 p50 ms"));
    let suffix = h
        .mode
        .as_deref()
        .map_or(String::new(), |m| format!(" [{m}]"));
    let value = |prefix: &str| {
        let exact = format!("{prefix}{suffix}");
        t.rows
            .iter()
            .find(|r| cell(r, variant) == exact)
            .or_else(|| t.rows.iter().find(|r| cell(r, variant).starts_with(prefix)))
            .and_then(|r| number(cell(r, p50)))
    };
    h.ttu_mux_p50_ms = value("mux");
    h.ttu_no_mux_p50_ms = value("--no-ssh-mux");
}

fn read_scale(all: &[Table], h: &mut Headlines) {
    let Some(t) = find(all, &["tunnels", "serving"]) else {
        return;
    };
    let (tunnels, serving, kind, mode, processes, connections) = (
        t.named("tunnels"),
        t.named("serving"),
        t.named("kind"),
        t.named("mode"),
        t.named("clients or SDK edges"),
        t.named("SSH connections"),
    );
    let per_tunnel =
        t.column(|c| c.contains("per tunnel") && c.contains("PSS") && !c.contains("client"));
    let count = |r: &Vec<String>, col| number(cell(r, col)).map(|n| n as u64);
    // Rows with clients: `real clients` in a report that says so; a report without a kind
    // column drove a bare forward per tunnel, in each mode (this one's, else any).
    let with_clients: Vec<&Vec<String>> = if kind.is_some() {
        t.rows
            .iter()
            .filter(|r| cell(r, kind).starts_with("real clients"))
            .collect()
    } else {
        let mode_rows: Vec<&Vec<String>> = t
            .rows
            .iter()
            .filter(|r| h.mode.as_deref().is_some_and(|m| cell(r, mode) == m))
            .collect();
        if mode_rows.is_empty() {
            t.rows.iter().collect()
        } else {
            mode_rows
        }
    };
    if let Some(row) = with_clients.iter().max_by_key(|r| count(r, tunnels)) {
        h.edge_pss_per_tunnel_kib = number(cell(row, per_tunnel));
        h.per_tunnel_of = count(row, tunnels).map(|n| {
            if kind.is_some() {
                format!("{} real clients", thousands(n as f64))
            } else {
                format!("{} bare `ssh -N -R` (no client)", thousands(n as f64))
            }
        });
    }
    if let Some(row) = t.rows.iter().max_by_key(|r| count(r, tunnels)) {
        h.most_tunnels = count(row, tunnels);
        h.most_tunnels_serving = count(row, serving);
    }
    if let Some(row) = t
        .rows
        .iter()
        .find(|r| cell(r, kind).starts_with("SDK edges") && count(r, processes) == Some(1))
    {
        h.sdk_edge_tunnels = count(row, tunnels);
        h.sdk_edge_ssh_connections = count(row, connections);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables of the report before this one (abridged), as committed.
    const OLD: &str = "\
# Benchmarks

Written by `cargo xtask bench` from one run of 392 s on the machine below.

## Data plane

The same app behind each path; the download is the median of 5 runs of `curl -o /dev/null` of 100 MiB (MB/s = 10^6 bytes/s).

## Time to URL

| variant | runs | first 200 p50 ms | first 200 max ms | `url:` line p50 ms |
|---|---:|---:|---:|---:|
| mux [routes] | 7 | 432 | 438 | 430 |
| --no-ssh-mux [routes] | 7 | 429 | 432 | 427 |
| mux [static] | 7 | 431 | 434 | 429 |
| --no-ssh-mux [static] | 7 | 420 | 427 | 418 |

## Data plane

| path | what | connections | requests/s | p50 ms | p99 ms | errors |
|---|---|---:|---:|---:|---:|---:|
| (a) app directly | wrk → app | 1 | 13,356 | 0.08 | 0.38 | 0 |
| (b) Caddy → app | wrk → Caddy (reverse_proxy) → app | 1 | 4,564 | 0.21 | 2.09 | 0 |
| (b) Caddy → app | wrk → Caddy (reverse_proxy) → app | 16 | 17,851 | 0.77 | 5.42 | 0 |
| (b) Caddy → app | wrk → Caddy (reverse_proxy) → app | 64 | 16,371 | 3.66 | 12.1 | 0 |
| (c) mytunnel [routes] | wrk → … → ssh -N -R → app | 1 | 1,097 | 0.48 | 42.2 | 0 |
| (c) mytunnel [routes] | wrk → … → ssh -N -R → app | 64 | 5,127 | 8.11 | 75.0 | 0 |
| (c) mytunnel [static] | wrk → … → ssh -N -R → app | 1 | 1,095 | 0.48 | 42.1 | 0 |
| (c) mytunnel [static] | wrk → … → ssh -N -R → app | 64 | 5,109 | 8.14 | 74.5 | 0 |

| path | download MB/s (median) | slowest–fastest |
|---|---:|---:|
| (a) app directly | 3,872 | 3,519–5,769 |
| (b) Caddy → app | 1,723 | 1,641–1,922 |
| (c) mytunnel [routes] | 416 | 343–446 |
| (c) mytunnel [static] | 408 | 374–446 |

## Scale

| mode | tunnels | serving | sshd processes | sshd PSS MiB | Caddy PSS MiB | mytunneld PSS MiB | total PSS MiB | total RSS MiB | per tunnel PSS KiB | per tunnel RSS KiB | allocate p50 ms | allocate p99 ms |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| routes | 100 | 100 | 201 | 189.9 | 36.4 | 9.2 | 235.5 | 1598.1 | 1940 | 15683 | 37.9 | 91.2 |
| routes | 1,000 | 1,000 | 2001 | 1854.8 | 261.5 | 26.5 | 2142.8 | 15604.1 | 2147 | 15910 | 85.4 | 182 |
| static | 100 | 100 | 201 | 187.5 | 40.7 | 7.7 | 235.9 | 1584.3 | 1837 | 15600 | 35.2 | 108 |
| static | 1,000 | 1,000 | 2001 | 1807.3 | 66.1 | 10.2 | 1883.6 | 15334.1 | 1871 | 15639 | 40.9 | 97.8 |
";

    #[test]
    fn reads_the_report_from_before_the_sidecar() {
        let h = parse_markdown(OLD);
        assert_eq!(h.date, None);
        assert_eq!(h.commit, None);
        assert_eq!(h.download_mib, Some(100));
        assert_eq!(h.mode.as_deref(), Some("static"));
        assert_eq!(h.caddy_c1_p50_ms, Some(0.21));
        assert_eq!(h.caddy_c1_p99_ms, Some(2.09));
        assert_eq!(h.caddy_many_rps, Some(16_371.0));
        assert_eq!(h.tunnel_c1_p50_ms, Some(0.48));
        assert_eq!(h.tunnel_c1_p99_ms, Some(42.1));
        assert_eq!(h.tunnel_many_rps, Some(5_109.0));
        assert_eq!(h.many_connections, Some(64));
        assert_eq!(h.caddy_download_mb_s, Some(1_723.0));
        assert_eq!(h.tunnel_download_mb_s, Some(408.0));
        assert_eq!(h.ttu_mux_p50_ms, Some(431.0));
        assert_eq!(h.ttu_no_mux_p50_ms, Some(420.0));
        assert_eq!(h.edge_pss_per_tunnel_kib, Some(1_871.0));
        assert_eq!(
            h.per_tunnel_of.as_deref(),
            Some("1,000 bare `ssh -N -R` (no client)")
        );
        assert_eq!(
            (h.most_tunnels, h.most_tunnels_serving),
            (Some(1_000), Some(1_000))
        );
        assert_eq!(h.sdk_edge_tunnels, None);
    }

    #[test]
    fn reads_what_there_is_and_nothing_else() {
        assert_eq!(parse_markdown(""), Headlines::default());
        assert_eq!(
            parse_markdown("# Benchmarks\n\nno tables"),
            Headlines::default()
        );
        let only_ttu = "| variant | first 200 p50 ms |\n|---|---|\n| mux | 300 |\n";
        let h = parse_markdown(only_ttu);
        assert_eq!(h.ttu_mux_p50_ms, Some(300.0));
        assert_eq!(h.ttu_no_mux_p50_ms, None);
        assert_eq!(h.tunnel_c1_p99_ms, None);
    }

    #[test]
    fn reads_the_day_a_report_was_written() {
        assert_eq!(
            written_on("# B\n\nWritten by `cargo xtask bench` on 2026-01-05 from one run"),
            Some("2026-01-05".to_owned())
        );
        assert_eq!(written_on("Written by x from 12 runs of 392 s"), None);
        assert_eq!(
            written_at("Written by `x` on 2026-01-05 (commit abc1234-dirty) from"),
            Some("abc1234-dirty".to_owned())
        );
    }

    #[test]
    fn sidecar_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bench")).unwrap();
        assert_eq!(load(dir.path()), Previous::default());
        std::fs::write(dir.path().join("BENCHMARKS.md"), OLD).unwrap();
        let from_report = load(dir.path());
        assert!(from_report.source.contains("the outgoing BENCHMARKS.md"));
        assert_eq!(
            from_report.figures.as_ref().and_then(|f| f.ttu_mux_p50_ms),
            Some(431.0)
        );
        let figures = Headlines {
            date: Some("2026-01-05".into()),
            commit: Some("abc1234".into()),
            ttu_mux_p50_ms: Some(250.0),
            ..Headlines::default()
        };
        write_sidecar(&sidecar(dir.path()), &figures).unwrap();
        let loaded = load(dir.path());
        assert_eq!(loaded.figures, Some(figures));
        assert_eq!(
            loaded.source,
            "the run of 2026-01-05 (`bench/last-run.json`, commit abc1234)"
        );
    }
}
