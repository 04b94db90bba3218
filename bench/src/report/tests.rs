//! The report read back: what a run writes, the next run parses to the same figures.

use std::time::Duration;

use super::headlines::Headlines;
use super::previous::parse_markdown;
use super::*;
use crate::client::TimeToUrl;
use crate::dataplane::{Downloads, WrkResult};
use crate::edge::EdgeMemory;
use crate::procs::Memory;
use crate::scale::{Kind, Part, Row};
use crate::shape::Observed;
use crate::stats::Summary;
use crate::tunnels::Shape;
use crate::tunnels::{CipherDownload, MytunnelPath};

fn ms(n: f64) -> Duration {
    Duration::from_secs_f64(n / 1000.0)
}

fn path(label: &str, c1: (f64, f64), many_rps: f64, download: f64) -> PathResult {
    let wrk = |connections, rps, p50, p99| WrkResult {
        connections,
        rps,
        p50: ms(p50),
        p99: ms(p99),
        errors: 0,
    };
    PathResult {
        label: label.to_owned(),
        description: "wrk → … → app".to_owned(),
        wrk: vec![
            wrk(1, 4_000.0, c1.0, c1.1),
            wrk(16, 9_000.0, 1.0, 5.0),
            wrk(64, many_rps, 4.0, 12.0),
        ],
        download: Downloads {
            count: 5,
            median_mb_s: download,
            range: (download * 0.9, download * 1.1),
        },
        command: "wrk -t 1 -c 1 -d 8s --latency http://127.0.0.1:1/".to_owned(),
    }
}

fn ttu(variant: &str, no_mux: bool, p50: f64) -> TimeToUrl {
    TimeToUrl {
        variant: variant.to_owned(),
        no_mux,
        to_first_200: Summary {
            samples: 7,
            p50: ms(p50),
            p99: ms(p50 + 20.0),
        },
        to_url_line: Summary {
            samples: 7,
            p50: ms(p50 - 2.0),
            p99: ms(p50 + 18.0),
        },
        command: "mytunnel http <app-port> …".to_owned(),
    }
}

fn interactive() -> Observed {
    Observed {
        ssh: vec![vec!["-tt".into(), "-M".into(), "--".into(), "u@h".into()]],
        connections: 1,
        relay: true,
    }
}

fn edge(sshd_kib: u64, connections: usize) -> EdgeMemory {
    let kib = |pss_kib| Memory {
        rss_kib: pss_kib * 4,
        pss_kib,
    };
    EdgeMemory {
        sshd: kib(sshd_kib),
        sshd_processes: 1 + 2 * connections,
        gate: kib(300 * connections as u64),
        gate_processes: connections,
        gate_names: vec![("mytunneld".to_owned(), connections)],
        caddy: kib(30_000),
        serve: kib(8_000),
        ssh_connections: connections,
    }
}

fn row(processes: usize, tunnels: usize, connections: usize) -> Row {
    Row {
        processes,
        tunnels,
        serving: tunnels,
        edge: edge(2_000 + 1_000 * connections as u64, connections),
        client: Memory {
            rss_kib: 9_000 * processes as u64,
            pss_kib: 3_000 * processes as u64,
        },
        client_processes: 2 * processes,
        grown: Duration::from_millis(2_500),
    }
}

/// A full run's report, with figures that print exactly.
fn sample() -> Report {
    let mut report = Report::new(false, true);
    report.date = "2026-12-06".to_owned();
    report.commit = Some("abc1234".to_owned());
    report.downloads = 5;
    report.download_mib = 100;
    report.machine = vec![("Cores".into(), "2".into())];
    let summary = |p50| Summary {
        samples: 50,
        p50: ms(p50),
        p99: ms(p50 * 2.0),
    };
    report.control = [RouteMode::Routes, RouteMode::Static]
        .into_iter()
        .flat_map(|mode| {
            [(10, 2.5), (5_000, 3.0)].map(|(leases, p50)| control::Row {
                mode: Some(mode),
                leases,
                allocate: summary(p50),
                heartbeat: summary(2.0),
                release: summary(p50),
                ask: summary(0.4),
            })
        })
        .collect();
    report.control_postgres = [(10, 2.6), (5_000, 3.3)]
        .map(|(leases, p50)| control::Row {
            mode: Some(RouteMode::Static),
            leases,
            allocate: summary(p50),
            heartbeat: summary(2.0),
            release: summary(p50),
            ask: summary(0.4),
        })
        .to_vec();
    report.forwarding = Some(crate::forwarding::Forwarding {
        direct: summary(0.5),
        forwarded: summary(0.8),
    });
    report.paths = vec![
        path("(a) app directly", (0.08, 0.38), 200_000.0, 3_800.0),
        path("(b) Caddy → app", (0.2, 2.0), 16_000.0, 1_700.0),
    ];
    let mytunnel = |mode: &str, shape, c1, rps, mb| MytunnelPath {
        shape,
        observed: interactive(),
        result: path(&crate::tunnels::path_label(mode, shape), c1, rps, mb),
    };
    report.tunnels = vec![
        TunnelRun {
            mode: "routes".into(),
            time_to_url: vec![
                ttu("mux [routes]", false, 260.0),
                ttu("--no-ssh-mux [routes]", true, 440.0),
            ],
            paths: vec![mytunnel(
                "routes",
                Shape::Default,
                (0.3, 3.0),
                9_000.0,
                800.0,
            )],
            cipher: None,
        },
        TunnelRun {
            mode: "static".into(),
            time_to_url: vec![
                ttu("mux [static]", false, 250.0),
                ttu("--no-ssh-mux [static]", true, 450.0),
            ],
            paths: vec![
                mytunnel("static", Shape::Default, (0.25, 2.5), 8_000.0, 900.0),
                mytunnel("static", Shape::Raw, (0.22, 2.4), 8_500.0, 950.0),
                mytunnel("static", Shape::NoMux, (0.5, 42.0), 5_000.0, 400.0),
            ],
            cipher: Some(CipherDownload {
                option: crate::tunnels::CHACHA.to_owned(),
                observed: interactive(),
                download: Downloads {
                    count: 5,
                    median_mb_s: 600.0,
                    range: (550.0, 650.0),
                },
            }),
        },
    ];
    report.inspector = Some(crate::inspector::InspectorMemory {
        keep: 100,
        body_bytes: 64 * 1024,
        head_bytes: 16 * 1024,
        per_round: 200,
        sent_body_bytes: 128 * 1024,
        sent_head_bytes: 32_000,
        before_kib: 9_000,
        after_first_kib: 15_000,
        after_second_kib: 15_400,
        control_kib: [8_000, 9_500, 9_600],
        runs: 3,
        control_growths_kib: vec![1_500, 1_900, 1_600],
    });
    report.scale = Some(Scale {
        mode: "static".into(),
        parts: vec![
            Part {
                kind: Kind::RealClients,
                baseline: edge(2_000, 0),
                rows: vec![row(100, 100, 100), row(500, 500, 500)],
                stopped: None,
            },
            Part {
                kind: Kind::SdkEdges { tunnels_each: 100 },
                baseline: edge(2_000, 0),
                rows: vec![row(1, 100, 1), row(10, 1_000, 10)],
                stopped: None,
            },
        ],
    });
    report
}

#[test]
fn what_a_run_writes_the_next_run_reads() {
    let report = sample();
    let written = report.headlines();
    assert_eq!(written.tunnel_c1_p99_ms, Some(2.5));
    assert_eq!(written.ttu_mux_p50_ms, Some(250.0));
    assert_eq!(written.per_tunnel_of.as_deref(), Some("500 real clients"));
    assert_eq!(
        (written.sdk_edge_tunnels, written.sdk_edge_ssh_connections),
        (Some(100), Some(1))
    );
    assert_eq!(written.most_tunnels, Some(1_000));
    assert_eq!(written.raw_c1_p50_ms, Some(0.22));
    assert_eq!(written.raw_many_rps, Some(8_500.0));
    assert_eq!(
        (written.inspector_growth_kib, written.inspector_bound_kib),
        (Some(4_800.0), Some(16_016.0))
    );
    let read = parse_markdown(&report.render());
    assert_eq!(read, written);
}

#[test]
fn the_report_says_every_target_and_where_we_lose() {
    let mut report = sample();
    report.previous = Previous {
        source: "the run of 2026-12-05 (the outgoing BENCHMARKS.md, committed in 8f08270)"
            .to_owned(),
        figures: Some(Headlines {
            tunnel_c1_p99_ms: Some(42.1),
            caddy_c1_p99_ms: Some(2.09),
            ..Headlines::default()
        }),
    };
    let text = report.render();
    assert!(text.contains("Written by `cargo xtask bench` on 2026-12-06 (commit abc1234)"));
    assert!(text.contains(
        "| p99 at 1 connection ≤ 1.5× Caddy → app | 1.25× (2.50 ms vs 2.00 ms) | met (17% under the limit) | 20.14× (42.1 ms vs 2.09 ms) | missed |"
    ));
    assert!(text.contains("| an SDK edge with 100 tunnels holds one SSH connection | 1 SSH connection for 100 tunnels | met (one) |"));
    assert!(text
        .contains("- `static` mode: mux p50 / `--no-ssh-mux` p50 = 0.56× — target ≤ 0.65×: met"));
    assert!(text.contains("ssh (one interactive connection, forward over its mux)"));
    assert!(text.contains("| real clients | 500 | 500 | 500 | 500 |"));
    assert!(text.contains(
        "With `Ciphers=chacha20-poly1305@openssh.com` asked for, 600 MB/s (0.67× of the default)."
    ));
    assert!(text.contains("The client carried the forward over its one interactive connection"));
    assert!(!text.contains("stays alive as the held gate's parent"));
    assert!(text.contains("`-c` 1, 16, 64)"));
    assert!(text.contains(
        "| client memory the inspector adds when full ≤ its bound | 4,800 KiB, bound 16,016 KiB (runs vary by 400 KiB) | met"
    ));
    assert!(text.contains("| request log on: p50 at 1 connection ≤ 1.1× `--raw` | 1.14× (0.25 ms vs 0.22 ms) | **missed**"));
    assert!(text.contains("| run-to-run spread without `--inspect` | | 400 | | |"));
    // Several edges: PostgreSQL beside SQLite, and the hop.
    assert!(
        text.contains("| PostgreSQL | 5,000 | 50 | 3.30 | 6.60 |"),
        "{text}"
    );
    assert!(
        text.contains("- **allocate p50 on PostgreSQL / on SQLite, 5,000 active leases: 1.10×**")
    );
    assert!(text.contains(
        "- **a request through the other edge: +0.30 ms at p50 (1.60× the direct path)**"
    ));
    assert!(report.check_complete().is_ok());
    let mut without = sample();
    without.forwarding = None;
    assert!(without
        .check_complete()
        .unwrap_err()
        .contains("several edges"));
}

#[test]
fn a_share_over_the_bound_by_less_than_the_runs_vary_is_met_and_says_so() {
    use super::targets::{within_spread, Verdict};
    assert!(
        matches!(within_spread(15_000.0, 16_000.0, 500.0), Verdict::Met(why) if why.contains("under the limit"))
    );
    match within_spread(16_200.0, 16_000.0, 500.0) {
        Verdict::Met(why) => assert!(why.contains("within the 500 KiB the runs vary by"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        within_spread(16_600.0, 16_000.0, 500.0),
        Verdict::Missed(_)
    ));
}
