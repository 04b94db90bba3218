//! `mytunnel-bench`: measures mytunnel's control plane, time to URL, data plane and scale
//! on this machine, next to the limit (the app directly, Caddy alone) and to peers (bore,
//! rathole), and writes one Markdown report. Run by `cargo xtask bench` (which builds the
//! binaries and installs wrk, bore and rathole); needs root (it starts sshd and creates
//! the tunnel user `mtbench`).
//!
//! Usage: `mytunnel-bench [--smoke] [--control-only] [--no-peers] [--mode routes|static] [--out PATH]`. `--smoke` runs every measurement at a
//! small size (about 30 s), writes to a temporary file unless `--out` is given, and fails
//! unless every table got numbers.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod app;
mod control;
mod dataplane;
mod edge;
mod procs;
mod proctable;
mod report;
mod scale;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::app::App;
use crate::control::Size;
use crate::dataplane::{await_serving, Bore, Client, LoadPlan, Rathole};
use crate::edge::{Binaries, Edge, EdgeOptions, RouteMode};
use crate::procs::Result;
use crate::report::{Report, TunnelPath};

/// The sizes of one run.
#[derive(Debug, Clone)]
struct Plan {
    smoke: bool,
    ctl_routes: Vec<Size>,
    ctl_static: Vec<Size>,
    time_to_url_runs: usize,
    load: LoadPlan,
    scale: Vec<usize>,
}

impl Plan {
    fn full() -> Plan {
        let size = |leases, samples| Size { leases, samples };
        Plan {
            smoke: false,
            ctl_routes: vec![size(10, 200), size(1_000, 100), size(5_000, 50)],
            ctl_static: vec![size(10, 200), size(1_000, 200), size(5_000, 200)],
            time_to_url_runs: 7,
            load: LoadPlan {
                connections: vec![1, 16, 64],
                seconds: 8,
                download_bytes: 100 * 1024 * 1024,
                downloads: 5,
                warm_up: true,
            },
            scale: vec![100, 500, 1_000],
        }
    }

    fn smoke() -> Plan {
        let size = |leases, samples| Size { leases, samples };
        Plan {
            smoke: true,
            ctl_routes: vec![size(10, 5), size(100, 5)],
            ctl_static: vec![size(10, 5), size(100, 5)],
            time_to_url_runs: 1,
            load: LoadPlan {
                connections: vec![1, 16, 64],
                seconds: 1,
                download_bytes: 8 * 1024 * 1024,
                downloads: 1,
                warm_up: false,
            },
            scale: vec![5, 10],
        }
    }
}

#[derive(Debug)]
struct Args {
    smoke: bool,
    out: Option<PathBuf>,
    /// `--control-only`: only the control-plane measurements, printed (no report).
    control_only: bool,
    /// `--no-peers`: leave bore and rathole out.
    no_peers: bool,
    /// `--mode routes|static`: measure one route mode only.
    mode: Option<RouteMode>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        smoke: false,
        out: None,
        control_only: false,
        no_peers: false,
        mode: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--smoke" => args.smoke = true,
            "--control-only" => args.control_only = true,
            "--no-peers" => args.no_peers = true,
            "--mode" => {
                args.mode = match words.next().as_deref() {
                    Some("routes") => Some(RouteMode::Routes),
                    Some("static") => Some(RouteMode::Static),
                    other => return Err(format!("--mode takes routes or static, got {other:?}")),
                };
            }
            "--out" => {
                args.out = Some(PathBuf::from(words.next().ok_or("--out needs a path")?));
            }
            "-h" | "--help" => {
                return Err("usage: mytunnel-bench [--smoke] [--control-only] [--no-peers] [--mode routes|static] [--out PATH]".to_owned());
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: mytunnel-bench [--smoke] [--control-only] [--no-peers] [--mode routes|static] [--out PATH]"
                ))
            }
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    // The helper that holds static seeds' listening sockets (see `control::listen_on`).
    let words: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, list] = words.as_slice() {
        if flag == "--hold-sockets" {
            if let Err(message) = control::hold_sockets(std::path::Path::new(list)) {
                eprintln!("mytunnel-bench --hold-sockets: error: {message}");
            }
            return ExitCode::FAILURE;
        }
    }
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mytunnel-bench: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(args: Args) -> Result<()> {
    if !nix::unistd::getuid().is_root() {
        return Err(
            "run as root: the bench starts sshd and creates the tunnel user mtbench".into(),
        );
    }
    let started = Instant::now();
    let plan = if args.smoke {
        Plan::smoke()
    } else {
        Plan::full()
    };
    let root = workspace_root();
    let out = args.out.clone().unwrap_or_else(|| {
        if plan.smoke {
            std::env::temp_dir().join("mytunnel-bench-smoke.md")
        } else {
            root.join("BENCHMARKS.md")
        }
    });
    let binaries = Binaries::locate(&root)?;
    let modes: Vec<Option<RouteMode>> = if binaries.route_modes {
        vec![Some(RouteMode::Routes), Some(RouteMode::Static)]
    } else {
        vec![None]
    };
    let modes: Vec<Option<RouteMode>> = match args.mode {
        Some(only) => modes.into_iter().filter(|m| *m == Some(only)).collect(),
        None => modes,
    };
    if modes.is_empty() {
        return Err("this mytunneld has no --route-mode: --mode cannot pick one".to_owned());
    }
    let mut report = Report::new(plan.smoke, binaries.route_modes);
    report.downloads = plan.load.downloads;
    eprintln!(
        "mytunnel-bench: {} run",
        if plan.smoke { "smoke" } else { "full" }
    );

    // Control plane.
    for mode in &modes {
        let sizes = if *mode == Some(RouteMode::Static) {
            &plan.ctl_static
        } else {
            &plan.ctl_routes
        };
        report
            .control
            .extend(control::measure(&binaries, *mode, sizes)?);
    }
    if args.control_only {
        for r in &report.control {
            eprintln!(
                "  {} {} leases: p50 allocate {:?}, heartbeat {:?}, release {:?}",
                edge_mode_label(r.mode),
                r.leases,
                r.allocate.p50,
                r.heartbeat.p50,
                r.release.p50
            );
        }
        for line in report.headlines() {
            eprintln!("  {line}");
        }
        return Ok(());
    }

    let app = App::start(plan.load.download_bytes)?;
    let ports = report::port_window(1_100)?;

    // Time to URL and the mytunnel path, in each mode; scale after the peers, in each.
    let mut edges = Vec::with_capacity(modes.len());
    for mode in &modes {
        let edge = Edge::start(
            &binaries,
            &EdgeOptions {
                route_mode: *mode,
                ports,
                sshd: true,
                serve: true,
            },
        )?;
        let label = mode.map_or("", RouteMode::as_str);
        match tunnel_measurements(&edge, &app, &plan, label) {
            Ok(measured) => report.tunnels.push(measured),
            Err(e) if *mode == Some(RouteMode::Static) => {
                let note = format!("static mode: time to URL and data plane not measured: {e}");
                eprintln!("  {note}");
                report.notes.push(note);
            }
            Err(e) => return Err(e),
        }
        edges.push((*mode, edge));
    }

    // The limit and the peers.
    {
        let direct = app.addr();
        report.paths.push(dataplane::measure_path(
            "(a) app directly",
            "wrk → app",
            direct,
            "app",
            &plan.load,
        )?);
        let (_, edge) = edges.first().ok_or("no edge")?;
        let host = "direct.bench.test";
        edge.add_direct_route(host, app.port())?;
        await_serving(edge.http(), host, std::time::Duration::from_secs(10))?;
        report.paths.push(dataplane::measure_path(
            "(b) Caddy → app",
            "wrk → Caddy (reverse_proxy) → app",
            edge.http(),
            host,
            &plan.load,
        )?);
        if args.no_peers {
            report
                .notes
                .push("bore and rathole were not measured (--no-peers).".to_owned());
        } else {
            report.peers_measured = true;
            measure_peers(&mut report, edge, &app, &plan)?;
        }
    }

    // Scale.
    // One mode at a time: each edge's tunnels end (and its processes stop) before the next
    // grows.
    for (mode, edge) in edges {
        report.scale.push(report::ScaleRun {
            mode: edge_mode_label(mode),
            scale: scale::measure(&edge, app.port(), &plan.scale),
        });
    }

    report.duration = started.elapsed();
    report.machine = report::machine()?;
    let text = report.render();
    for line in report.headlines() {
        eprintln!("  {line}");
    }
    if plan.smoke {
        report.check_complete()?;
    }
    std::fs::write(&out, text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!(
        "mytunnel-bench: wrote {} in {:.0}s",
        out.display(),
        report.duration.as_secs_f64()
    );
    Ok(())
}

fn edge_mode_label(mode: Option<RouteMode>) -> String {
    mode.map_or_else(
        || "routes (the only mode of this build)".to_owned(),
        |m| m.as_str().to_owned(),
    )
}

/// Time to URL (mux and no mux) and the mytunnel data-plane path on `edge`.
fn tunnel_measurements(edge: &Edge, app: &App, plan: &Plan, mode: &str) -> Result<TunnelPath> {
    let suffix = if mode.is_empty() {
        String::new()
    } else {
        format!(" [{mode}]")
    };
    let mux = dataplane::time_to_url(
        edge,
        app.port(),
        &format!("mux{suffix}"),
        &[],
        plan.time_to_url_runs,
    )?;
    let no_mux = dataplane::time_to_url(
        edge,
        app.port(),
        &format!("--no-ssh-mux{suffix}"),
        &["--no-ssh-mux"],
        plan.time_to_url_runs,
    )?;
    let (client, _) = Client::open(edge, app.port(), &[])?;
    await_serving(
        edge.http(),
        &client.host,
        std::time::Duration::from_secs(30),
    )?;
    let path = dataplane::measure_path(
        &format!("(c) mytunnel{suffix}"),
        if mode == "static" {
            "wrk → Caddy (one wildcard route) → host link → the owner's unix socket → sshd → ssh -N -R → app (a tunnel opened by the built `mytunnel http`)"
        } else {
            "wrk → Caddy (a route per lease) → the owner's unix socket → sshd → ssh -N -R → app (a tunnel opened by the built `mytunnel http`)"
        },
        edge.http(),
        &client.host,
        &plan.load,
    )?;
    client.stop();
    Ok(TunnelPath {
        time_to_url: vec![mux, no_mux],
        path,
    })
}

/// Paths (d) bore and (e) rathole, each serving the same app.
fn measure_peers(report: &mut Report, edge: &Edge, app: &App, plan: &Plan) -> Result<()> {
    let bore = Bore::start(app.port(), &edge.path("logs"))?;
    report.paths.push(dataplane::measure_path(
        "(d) bore",
        "wrk → bore server → bore local → app",
        bore.addr,
        "bore",
        &plan.load,
    )?);
    drop(bore);
    let rathole = Rathole::start(app.port(), &edge.path("logs"))?;
    report.paths.push(dataplane::measure_path(
        "(e) rathole",
        "wrk → rathole server → rathole client → app",
        rathole.addr,
        "rathole",
        &plan.load,
    )?);
    Ok(())
}
