//! The targets of the data plane at the limit, judged on a run's headline figures, each
//! with how far it is met or missed, and the previous run's figures beside them.

use super::headlines::Headlines;
use super::*;

/// The data-plane targets (ratios to Caddy → app in the same run).
pub const LATENCY_LIMIT: f64 = 1.5;
/// requests/s at the most connections, at least this share of Caddy → app's.
pub const RPS_SHARE: f64 = 0.6;
/// Download, at least this share of Caddy → app's.
pub const DOWNLOAD_SHARE: f64 = 0.5;
/// Time to URL p50 with mux, at most this share of `--no-ssh-mux`'s.
pub const TTU_SHARE: f64 = 0.65;
/// Time to URL p50 with mux, at most this many ms.
pub const TTU_MS: f64 = 350.0;
/// Edge PSS per tunnel with real clients, at most this many KiB.
pub const EDGE_KIB_PER_TUNNEL: f64 = 2048.0;
/// Tunnels on one edge, all serving.
pub const TUNNELS_ON_ONE_EDGE: u64 = 1_000;
/// Tunnels on one SDK edge that must share one SSH connection.
pub const SDK_EDGE_TUNNELS: u64 = 100;
/// The request log on: p50 at one connection, at most this many times `--raw`'s.
pub const LOG_LATENCY_LIMIT: f64 = 1.1;
/// The request log on: requests/s at the most connections, at least this share of `--raw`'s.
pub const LOG_RPS_SHARE: f64 = 0.9;

/// Whether a target was met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Met, and by how much.
    Met(String),
    /// Missed, and by how much.
    Missed(String),
    /// The run did not measure it (or not at the target's size), and why.
    NotMeasured(String),
}

impl Verdict {
    /// As the report prints it.
    pub fn text(&self) -> String {
        match self {
            Verdict::Met(how) => format!("met ({how})"),
            Verdict::Missed(how) => format!("**missed** ({how})"),
            Verdict::NotMeasured(why) => format!("not measured ({why})"),
        }
    }

    /// One word.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Met(_) => "met",
            Verdict::Missed(_) => "missed",
            Verdict::NotMeasured(_) => "not measured",
        }
    }
}

/// One target judged on one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// The measured figure, as printed (`2.10× (0.45 ms vs 0.21 ms)`).
    pub figure: String,
    /// The verdict.
    pub verdict: Verdict,
}

/// One target, on this run and on the previous one.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRow {
    /// What it asks, e.g. `p99 at 1 connection ≤ 1.5× Caddy → app`.
    pub target: String,
    /// This run.
    pub this: Judged,
    /// The previous run, when there was one.
    pub previous: Option<Judged>,
}

fn percent(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// `value` must be at most `limit`.
pub fn at_most(value: f64, limit: f64) -> Verdict {
    if value <= limit {
        Verdict::Met(format!("{} under the limit", percent(1.0 - value / limit)))
    } else if value >= 2.0 * limit {
        Verdict::Missed(format!("{:.1}× the limit", value / limit))
    } else {
        Verdict::Missed(format!("{} over the limit", percent(value / limit - 1.0)))
    }
}

/// `value` must be at most `limit`, as far as a measurement whose runs vary by `spread`
/// can tell: over the limit by less than that is met, and says so.
pub fn within_spread(value: f64, limit: f64, spread: f64) -> Verdict {
    match at_most(value, limit) {
        Verdict::Missed(_) if value <= limit + spread => Verdict::Met(format!(
            "{} over the limit, within the {} KiB the runs vary by",
            percent(value / limit - 1.0),
            thousands(spread)
        )),
        verdict => verdict,
    }
}

/// `value` must be at least `limit`.
pub fn at_least(value: f64, limit: f64) -> Verdict {
    if value >= limit {
        Verdict::Met(format!("{} over the limit", percent(value / limit - 1.0)))
    } else {
        Verdict::Missed(format!(
            "{} under the limit, {:.2}× of it",
            percent(1.0 - value / limit),
            value / limit
        ))
    }
}

fn missing(what: &str) -> Judged {
    Judged {
        figure: "—".to_owned(),
        verdict: Verdict::NotMeasured(format!("no {what} in this run")),
    }
}

fn ms_text(ms: f64) -> String {
    super::ms(Duration::from_secs_f64(ms.max(0.0) / 1000.0))
}

/// A ratio of mytunnel's figure to Caddy → app's, judged by `verdict`.
fn ratio_of(
    tunnel: Option<f64>,
    caddy: Option<f64>,
    show: impl Fn(f64) -> String,
    verdict: impl Fn(f64) -> Verdict,
    what: &str,
) -> Judged {
    match (tunnel, caddy) {
        (Some(t), Some(c)) if c > 0.0 => {
            let r = t / c;
            // Two decimals, or three where two would round across the limit.
            let two: f64 = format!("{r:.2}").parse().unwrap_or(r);
            let figure = if verdict(two).word() == verdict(r).word() {
                format!("{r:.2}×")
            } else {
                format!("{r:.3}×")
            };
            Judged {
                figure: format!("{figure} ({} vs {})", show(t), show(c)),
                verdict: verdict(r),
            }
        }
        _ => missing(what),
    }
}

fn judge(h: &Headlines) -> Vec<(String, Judged)> {
    let ms_pair = |v: f64| format!("{} ms", ms_text(v));
    let many = h.many_connections.unwrap_or(64);
    let mut rows = vec![
        (
            format!("p50 at 1 connection ≤ {LATENCY_LIMIT}× Caddy → app"),
            ratio_of(
                h.tunnel_c1_p50_ms,
                h.caddy_c1_p50_ms,
                ms_pair,
                |r| at_most(r, LATENCY_LIMIT),
                "p50 at 1 connection",
            ),
        ),
        (
            format!("p99 at 1 connection ≤ {LATENCY_LIMIT}× Caddy → app"),
            ratio_of(
                h.tunnel_c1_p99_ms,
                h.caddy_c1_p99_ms,
                ms_pair,
                |r| at_most(r, LATENCY_LIMIT),
                "p99 at 1 connection",
            ),
        ),
        (
            format!("requests/s at {many} connections ≥ {RPS_SHARE}× Caddy → app"),
            ratio_of(
                h.tunnel_many_rps,
                h.caddy_many_rps,
                thousands,
                |r| at_least(r, RPS_SHARE),
                "requests/s",
            ),
        ),
        (
            format!(
                "{} MiB download ≥ {DOWNLOAD_SHARE}× Caddy → app",
                h.download_mib.unwrap_or(100)
            ),
            ratio_of(
                h.tunnel_download_mb_s,
                h.caddy_download_mb_s,
                |v| format!("{} MB/s", thousands(v)),
                |r| at_least(r, DOWNLOAD_SHARE),
                "download",
            ),
        ),
        (
            format!("time to URL p50: mux ≤ {TTU_SHARE}× `--no-ssh-mux`"),
            ratio_of(
                h.ttu_mux_p50_ms,
                h.ttu_no_mux_p50_ms,
                ms_pair,
                |r| at_most(r, TTU_SHARE),
                "time to URL",
            ),
        ),
        (
            format!("time to URL p50: mux ≤ {TTU_MS:.0} ms"),
            match h.ttu_mux_p50_ms {
                Some(v) => Judged {
                    figure: ms_pair(v),
                    verdict: at_most(v, TTU_MS),
                },
                None => missing("time to URL"),
            },
        ),
        (
            format!(
                "edge memory per tunnel, real clients ≤ {:.0} MiB PSS",
                EDGE_KIB_PER_TUNNEL / 1024.0
            ),
            match h.edge_pss_per_tunnel_kib {
                Some(kib) => Judged {
                    figure: format!(
                        "{} KiB{}",
                        thousands(kib),
                        h.per_tunnel_of
                            .as_ref()
                            .map_or(String::new(), |of| format!(" at {of}"))
                    ),
                    verdict: if h
                        .per_tunnel_of
                        .as_deref()
                        .is_some_and(|of| of.contains("real clients"))
                    {
                        at_most(kib, EDGE_KIB_PER_TUNNEL)
                    } else {
                        Verdict::NotMeasured("not with real clients".to_owned())
                    },
                },
                None => missing("scale with real clients"),
            },
        ),
    ];
    rows.push((
        format!(
            "{} tunnels on one edge, all serving",
            thousands(TUNNELS_ON_ONE_EDGE as f64)
        ),
        match (h.most_tunnels, h.most_tunnels_serving) {
            (Some(n), Some(serving)) => Judged {
                figure: format!(
                    "{} of {} serving",
                    thousands(serving as f64),
                    thousands(n as f64)
                ),
                verdict: if n < TUNNELS_ON_ONE_EDGE {
                    Verdict::NotMeasured(format!(
                        "the run's largest count was {}",
                        thousands(n as f64)
                    ))
                } else if serving == n {
                    Verdict::Met("all serving".to_owned())
                } else {
                    Verdict::Missed(format!("{} not serving", thousands((n - serving) as f64)))
                },
            },
            _ => missing("scale"),
        },
    ));
    rows.push((
        format!("an SDK edge with {SDK_EDGE_TUNNELS} tunnels holds one SSH connection"),
        match (h.sdk_edge_tunnels, h.sdk_edge_ssh_connections) {
            (Some(n), Some(connections)) => Judged {
                figure: format!(
                    "{connections} SSH connection{} for {n} tunnels",
                    if connections == 1 { "" } else { "s" }
                ),
                verdict: if n < SDK_EDGE_TUNNELS {
                    Verdict::NotMeasured(format!("the run's SDK edges held {n} tunnels"))
                } else if connections == 1 {
                    Verdict::Met("one".to_owned())
                } else {
                    Verdict::Missed(format!("{connections} connections"))
                },
            },
            _ => missing("SDK edge"),
        },
    ));
    rows.push((
        format!("request log on: p50 at 1 connection ≤ {LOG_LATENCY_LIMIT}× `--raw`"),
        ratio_of(
            h.tunnel_c1_p50_ms,
            h.raw_c1_p50_ms,
            ms_pair,
            |r| at_most(r, LOG_LATENCY_LIMIT),
            "`--raw` path",
        ),
    ));
    rows.push((
        format!("request log on: requests/s at {many} connections ≥ {LOG_RPS_SHARE}× `--raw`"),
        ratio_of(
            h.tunnel_many_rps,
            h.raw_many_rps,
            thousands,
            |r| at_least(r, LOG_RPS_SHARE),
            "`--raw` path",
        ),
    ));
    rows.push((
        "client memory the inspector adds when full ≤ its bound".to_owned(),
        match (h.inspector_growth_kib, h.inspector_bound_kib) {
            (Some(growth), Some(bound)) => {
                let mut figure =
                    format!("{} KiB, bound {} KiB", thousands(growth), thousands(bound));
                if let Some(spread) = h.inspector_spread_kib {
                    figure.push_str(&format!(" (runs vary by {} KiB)", thousands(spread)));
                }
                Judged {
                    figure,
                    verdict: within_spread(growth, bound, h.inspector_spread_kib.unwrap_or(0.0)),
                }
            }
            _ => missing("inspector memory"),
        },
    ));
    rows
}

/// Every target on `this` run, with `previous` beside it.
pub fn targets(this: &Headlines, previous: Option<&Headlines>) -> Vec<TargetRow> {
    let before = previous.map(judge);
    judge(this)
        .into_iter()
        .enumerate()
        .map(|(i, (target, judged))| TargetRow {
            target,
            this: judged,
            previous: before
                .as_ref()
                .and_then(|b| b.get(i))
                .map(|(_, j)| j.clone()),
        })
        .collect()
}

impl Report {
    /// The targets section.
    pub(super) fn render_targets(&self, o: &mut String) {
        let _ = writeln!(o, "## Targets\n");
        let this = self.headlines();
        let rows = targets(&this, self.previous.figures.as_ref());
        let mode = this
            .mode
            .as_deref()
            .map_or(String::new(), |m| format!(", in `{m}` mode"));
        let _ = writeln!(
            o,
            "Judged on this run's own figures: mytunnel is the tunnel of the built `mytunnel \
             http` in its default shape{mode}; ratios are to Caddy → app in the same run. \
             Previous figures: {}.\n",
            self.previous.source
        );
        let previous_header = if self.previous.figures.is_some() {
            " previous run | previous verdict |"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "| target | this run | verdict |{previous_header}\n|---|---|---|{}",
            if self.previous.figures.is_some() {
                "---|---|"
            } else {
                ""
            }
        );
        for row in &rows {
            let _ = write!(
                o,
                "| {} | {} | {} |",
                row.target,
                row.this.figure,
                row.this.verdict.text()
            );
            if self.previous.figures.is_some() {
                match &row.previous {
                    Some(p) => {
                        let _ = write!(o, " {} | {} |", p.figure, p.verdict.word());
                    }
                    None => {
                        let _ = write!(o, " — | — |");
                    }
                }
            }
            let _ = writeln!(o);
        }
        if let Some(of) = self
            .previous
            .figures
            .as_ref()
            .and_then(|p| p.per_tunnel_of.as_ref())
            .filter(|of| !of.contains("real clients"))
        {
            let _ = writeln!(
                o,
                "\nThe previous run's scale table drove {of}: its memory per tunnel and its \
                 tunnel count are not from clients."
            );
        }
        let _ = writeln!(o);
    }

    /// The targets, one line each, for the log.
    pub fn target_lines(&self) -> Vec<String> {
        targets(&self.headlines(), self.previous.figures.as_ref())
            .into_iter()
            .map(|row| {
                format!(
                    "{}: {} — {}{}",
                    row.target,
                    row.this.figure,
                    row.this.verdict.text(),
                    row.previous
                        .map_or(String::new(), |p| format!(" (previous: {})", p.figure))
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_say_by_how_much() {
        assert_eq!(
            at_most(1.2, 1.5),
            Verdict::Met("20% under the limit".into())
        );
        assert_eq!(
            at_most(1.8, 1.5),
            Verdict::Missed("20% over the limit".into())
        );
        assert_eq!(
            at_most(30.0, 1.5),
            Verdict::Missed("20.0× the limit".into())
        );
        assert_eq!(
            at_least(0.9, 0.6),
            Verdict::Met("50% over the limit".into())
        );
        assert_eq!(
            at_least(0.3, 0.6),
            Verdict::Missed("50% under the limit, 0.50× of it".into())
        );
    }

    #[test]
    fn judges_every_target_with_the_previous_beside() {
        let this = Headlines {
            caddy_c1_p50_ms: Some(0.2),
            caddy_c1_p99_ms: Some(2.0),
            caddy_many_rps: Some(16_000.0),
            caddy_download_mb_s: Some(1_700.0),
            tunnel_c1_p50_ms: Some(0.25),
            tunnel_c1_p99_ms: Some(2.5),
            tunnel_many_rps: Some(8_000.0),
            tunnel_download_mb_s: Some(900.0),
            many_connections: Some(64),
            download_mib: Some(100),
            ttu_mux_p50_ms: Some(250.0),
            ttu_no_mux_p50_ms: Some(450.0),
            edge_pss_per_tunnel_kib: Some(1_500.0),
            per_tunnel_of: Some("500 real clients".into()),
            most_tunnels: Some(1_000),
            most_tunnels_serving: Some(1_000),
            sdk_edge_tunnels: Some(100),
            sdk_edge_ssh_connections: Some(1),
            raw_c1_p50_ms: Some(0.24),
            raw_many_rps: Some(8_500.0),
            inspector_growth_kib: Some(14_000.0),
            inspector_bound_kib: Some(12_800.0),
            ..Headlines::default()
        };
        let rows = targets(&this, None);
        assert_eq!(rows.len(), 12);
        let verdicts: Vec<&str> = rows.iter().map(|r| r.this.verdict.word()).collect();
        assert_eq!(
            verdicts,
            [
                "met", "met", "missed", "met", "met", "met", "met", "met", "met", "met", "met",
                "missed"
            ]
        );
        assert_eq!(
            rows.get(11).unwrap().this.figure,
            "14,000 KiB, bound 12,800 KiB"
        );
        assert_eq!(
            rows.first().unwrap().this.figure,
            "1.25× (0.25 ms vs 0.20 ms)"
        );
        assert!(rows.iter().all(|r| r.previous.is_none()));

        // A smaller, older run: scale with bare forwards, no SDK edge.
        let previous = Headlines {
            edge_pss_per_tunnel_kib: Some(1_871.0),
            per_tunnel_of: Some("1,000 bare `ssh -N -R`".into()),
            most_tunnels: Some(20),
            most_tunnels_serving: Some(20),
            ..Headlines::default()
        };
        let rows = targets(&this, Some(&previous));
        let before: Vec<&str> = rows
            .iter()
            .map(|r| r.previous.as_ref().unwrap().verdict.word())
            .collect();
        assert_eq!(
            before,
            [
                "not measured",
                "not measured",
                "not measured",
                "not measured",
                "not measured",
                "not measured",
                "not measured",
                "not measured",
                "not measured",
                "not measured",
                "not measured",
                "not measured"
            ]
        );
        assert_eq!(
            rows.get(6).unwrap().previous.as_ref().unwrap().figure,
            "1,871 KiB at 1,000 bare `ssh -N -R`"
        );
    }
}
