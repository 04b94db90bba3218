//! `mytunnel-bench`: measures mytunnel's control plane, time to URL, data plane and scale
//! on this machine, next to the limit (the app directly, Caddy alone) and to peers (bore,
//! rathole), and writes one Markdown report with the targets judged and the previous
//! run's figures beside them. Everything mytunnel is measured as users run it: the built
//! `mytunnel http` in both shapes (its default, and `--no-ssh-mux`), and programs
//! embedding the SDK. Run by `cargo xtask bench` (which builds the binaries and installs
//! wrk, bore and rathole); needs root (it starts sshd and creates the tunnel user
//! `mtbench`).
//!
//! Usage: `mytunnel-bench [--smoke] [--control-only] [--no-peers] [--mode routes|static]
//! [--out PATH]`. `--smoke` runs every measurement at a small size (about 40 s), writes to
//! a temporary file unless `--out` is given, and fails unless every table got numbers.
//! The full run writes `BENCHMARKS.md` and its figures to `bench/last-run.json`, which
//! the next run reads first (see `report::previous`).
//!
//! Internal modes, started by the bench itself: `--hold-sockets FILE` (see
//! `control::listen_on`) and `--sdk-edge …` (see `sdk_worker`).
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod app;
mod client;
mod control;
mod dataplane;
mod edge;
mod forwarding;
mod inspector;
mod peers;
mod procs;
mod proctable;
mod report;
mod scale;
mod sdk_worker;
mod shape;
mod stats;
mod tunnels;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::app::App;
use crate::control::Size;
use crate::dataplane::{await_serving, LoadPlan};
use crate::edge::{Binaries, Edge, EdgeOptions, RouteMode};
use crate::peers::{Bore, Rathole};
use crate::procs::Result;
use crate::report::Report;
use crate::scale::ScalePlan;

/// The sizes of one run.
#[derive(Debug, Clone)]
struct Plan {
    smoke: bool,
    ctl_routes: Vec<Size>,
    ctl_static: Vec<Size>,
    /// The control plane on PostgreSQL (static mode).
    ctl_postgres: Vec<Size>,
    /// Requests timed through each of the two forwarding paths.
    forwarded_requests: usize,
    time_to_url_runs: usize,
    load: LoadPlan,
    scale: ScalePlan,
}

impl Plan {
    fn full() -> Plan {
        let size = |leases, samples| Size { leases, samples };
        Plan {
            smoke: false,
            ctl_routes: vec![size(10, 200), size(1_000, 100), size(5_000, 50)],
            ctl_static: vec![size(10, 200), size(1_000, 200), size(5_000, 200)],
            ctl_postgres: vec![size(10, 200), size(5_000, 200)],
            forwarded_requests: 1_000,
            time_to_url_runs: 7,
            load: LoadPlan {
                connections: vec![1, 16, 64],
                seconds: 8,
                download_bytes: 100 * 1024 * 1024,
                downloads: 5,
                warm_up: true,
            },
            // Each real client is a mytunnel process and its ssh on this machine, besides
            // the edge's processes for it: 500 fit in this machine's memory with room for
            // everything else. SDK edges reach a thousand tunnels.
            scale: ScalePlan {
                clients: vec![100, 250, 500],
                sdk_tunnels_each: 100,
                sdk_edges: vec![1, 5, 10],
            },
        }
    }

    /// The full plan cut short: the same connection counts, each for a moment.
    fn smoke() -> Plan {
        let size = |leases, samples| Size { leases, samples };
        Plan {
            smoke: true,
            ctl_routes: vec![size(10, 5), size(100, 5)],
            ctl_static: vec![size(10, 5), size(100, 5)],
            ctl_postgres: vec![size(10, 5), size(100, 5)],
            forwarded_requests: 20,
            time_to_url_runs: 1,
            load: LoadPlan {
                seconds: 1,
                download_bytes: 8 * 1024 * 1024,
                downloads: 1,
                warm_up: false,
                ..Plan::full().load
            },
            scale: ScalePlan {
                clients: vec![2, 4],
                sdk_tunnels_each: 3,
                sdk_edges: vec![1, 2],
            },
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
    let words: Vec<String> = std::env::args().skip(1).collect();
    // The helper that holds static seeds' listening sockets (see `control::listen_on`).
    if let [flag, list] = words.as_slice() {
        if flag == "--hold-sockets" {
            if let Err(message) = control::hold_sockets(std::path::Path::new(list)) {
                eprintln!("mytunnel-bench --hold-sockets: error: {message}");
            }
            return ExitCode::FAILURE;
        }
    }
    // A program with one SDK edge, for the scale measurement (see `sdk_worker`).
    if let Some(("--sdk-edge", rest)) = words.split_first().map(|(f, r)| (f.as_str(), r)) {
        return match sdk_worker::run(rest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("mytunnel-bench --sdk-edge: error: {message}");
                ExitCode::FAILURE
            }
        };
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

/// The mode whose edge carries the extra paths and the scale: `static` (the installer's
/// default), or the only mode of a build without modes.
fn headline_mode(route_modes: bool) -> Option<RouteMode> {
    route_modes.then_some(RouteMode::Static)
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
    let default_out = args.out.is_none() && !plan.smoke;
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
    // Read before anything is overwritten.
    report.previous = report::previous::load(&root);
    report.downloads = plan.load.downloads;
    report.download_mib = plan.load.download_bytes / (1024 * 1024);
    report.date = report::today();
    report.commit = report::commit(&root);
    eprintln!(
        "mytunnel-bench: {} run; previous figures: {}",
        if plan.smoke { "smoke" } else { "full" },
        report.previous.source
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
            .extend(control::measure(&binaries, *mode, sizes, None)?);
    }
    // Several edges: the control plane on PostgreSQL (static mode, the installer's), and
    // the hop one edge's Caddy adds to reach another's.
    if binaries.route_modes {
        let postgres = control::SharedPostgres::start()?;
        report.control_postgres = control::measure(
            &binaries,
            Some(RouteMode::Static),
            &plan.ctl_postgres,
            Some(&postgres),
        )?;
        report.forwarding = Some(forwarding::measure(plan.forwarded_requests)?);
    }
    if args.control_only {
        for r in &report.control {
            eprintln!(
                "  {} {} leases: p50 allocate {:?}, heartbeat {:?}, release {:?}; TLS ask p50 {:?}, p99 {:?}",
                edge_mode_label(r.mode),
                r.leases,
                r.allocate.p50,
                r.heartbeat.p50,
                r.release.p50,
                r.ask.p50,
                r.ask.p99
            );
        }
        for line in report.log_lines() {
            eprintln!("  {line}");
        }
        return Ok(());
    }

    let app = App::start(plan.load.download_bytes)?;
    let ports = report::port_window(1_100)?;
    let headline = headline_mode(binaries.route_modes);

    // Time to URL and the mytunnel paths, in each mode.
    let mut edges = Vec::with_capacity(modes.len());
    for mode in &modes {
        let edge = Edge::start(
            &binaries,
            &EdgeOptions {
                route_mode: *mode,
                ports,
                sshd: true,
                serve: true,
                tls_ask: false,
                database: None,
            },
        )?;
        let label = mode.map_or("", RouteMode::as_str);
        let extras = tunnels::Extras {
            no_mux_path: *mode == headline,
            raw_path: *mode == headline,
            cipher: *mode == headline,
        };
        match tunnels::measure(
            &edge,
            &app,
            &plan.load,
            plan.time_to_url_runs,
            label,
            extras,
        ) {
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

    // The client with its inspector full, on the headline edge.
    if let Some((_, edge)) = edges.iter().find(|(mode, _)| *mode == headline) {
        report.inspector = Some(inspector::measure(edge, &app)?);
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

    // Scale, on one edge: the others stop first, so their processes take nothing from it.
    let scale_edge = edges
        .into_iter()
        .rfind(|(mode, _)| *mode == headline || args.mode.is_some());
    if let Some((mode, edge)) = scale_edge {
        report.scale = Some(scale::measure(
            &edge,
            app.port(),
            &plan.scale,
            mode.map_or("", RouteMode::as_str),
        ));
    }

    report.duration = started.elapsed();
    report.machine = report::machine()?;
    let text = report.render();
    for line in report.log_lines() {
        eprintln!("  {line}");
    }
    if plan.smoke {
        report.check_complete()?;
    }
    std::fs::write(&out, text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    // The figures the next run prints beside its own: beside BENCHMARKS.md for the full
    // run, beside the output otherwise (so a smoke never replaces a full run's).
    let sidecar = if default_out {
        report::previous::sidecar(&root)
    } else {
        out.with_extension("json")
    };
    report::previous::write_sidecar(&sidecar, &report.headlines())?;
    eprintln!(
        "mytunnel-bench: wrote {} and {} in {:.0}s",
        out.display(),
        sidecar.display(),
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

/// Paths (d) bore and (e) rathole, each serving the same app, one at a time: each peer
/// is stopped before the next starts.
fn measure_peers(report: &mut Report, edge: &Edge, app: &App, plan: &Plan) -> Result<()> {
    let logs = edge.path("logs");
    let mut measure = |label: &str, route: &str, addr, host: &str| -> Result<()> {
        let path = dataplane::measure_path(label, route, addr, host, &plan.load)?;
        report.paths.push(path);
        Ok(())
    };
    let bore = Bore::start(app.port(), &logs)?;
    let route = "wrk → bore server → bore local → app";
    measure("(d) bore", route, bore.addr, "bore")?;
    drop(bore);
    let rathole = Rathole::start(app.port(), &logs)?;
    let route = "wrk → rathole server → rathole client → app";
    measure("(e) rathole", route, rathole.addr, "rathole")?;
    drop(rathole);
    Ok(())
}
