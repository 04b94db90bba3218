//! Load: many clients allocating and releasing at once, as real `mytunneld ctl`
//! processes (allocate, heartbeat, release) on one real SQLite file with a real Caddy, a share of them through real ssh
//! and the gate (the e2e stack: sshd, Caddy, `mytunneld serve`, users alice/bob/ops).
//!
//! Checked: every cycle succeeds (so no "database is locked", no `db_error`, no
//! `caddy_unavailable`); no two simultaneously active leases share a port or a name,
//! both from each client's own timeline and from a monitor listing the database while the
//! load runs; at the end nothing is active and Caddy holds no mytunnel route. p50/p99 of
//! each operation are printed as `FIGURE` lines.
//!
//! Size: `MYTUNNEL_LOAD_CLIENTS` (32) × `MYTUNNEL_LOAD_CYCLES` (5 here; `cargo xtask soak`
//! runs 50), of which `MYTUNNEL_LOAD_SSH_CLIENTS` (4) go through ssh.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod e2e_support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use e2e_support::{RouteMode, Stack, StackOptions, USERS};
use serde_json::Value;

const MIN_PORT: u16 = 42_000;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One operation as a client saw it.
#[derive(Debug, Clone)]
struct Sample {
    op: &'static str,
    took: Duration,
}

/// A lease as one client held it: from the end of its allocate to the start of its
/// release it was certainly active (the real active span contains this one).
#[derive(Debug, Clone)]
struct Held {
    client: usize,
    lease: String,
    /// Where it binds: `127.0.0.1:<port>` or its socket.
    target: String,
    slug: String,
    from: Instant,
    to: Instant,
}

#[derive(Debug, Default)]
struct Outcome {
    samples: Vec<Sample>,
    held: Vec<Held>,
    failures: Vec<String>,
}

/// How a client reaches the edge.
#[derive(Debug, Clone)]
enum Via {
    /// `mytunneld ctl` run on the edge as root.
    Local,
    /// `ssh -T user@edge mytunneld ctl …` through sshd and the gate.
    Ssh(&'static str),
}

/// An `ssh` command line: program, arguments, environment.
type SshCommand = (OsString, Vec<OsString>, Vec<(OsString, OsString)>);

/// What the client threads need of the stack (the stack itself stays on the test thread).
#[derive(Debug, Clone)]
struct Edge {
    bin: PathBuf,
    env_file: PathBuf,
    /// Per user: `ssh -T … user@127.0.0.1` (program, arguments, environment).
    ssh: BTreeMap<&'static str, SshCommand>,
}

impl Edge {
    fn of(stack: &Stack) -> Edge {
        let ssh = USERS
            .iter()
            .map(|user| {
                let command = stack.ssh_command(user, None);
                let envs = command
                    .get_envs()
                    .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                    .collect();
                let args = command.get_args().map(ToOwned::to_owned).collect();
                (*user, (command.get_program().to_owned(), args, envs))
            })
            .collect();
        Edge {
            bin: stack.path("mytunneld"),
            env_file: stack.env_file(),
            ssh,
        }
    }
}

fn run(edge: &Edge, via: &Via, words: &[&str]) -> Output {
    match via {
        Via::Local => Command::new(&edge.bin)
            .arg("--env-file")
            .arg(&edge.env_file)
            .arg("ctl")
            .args(words)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .unwrap(),
        Via::Ssh(user) => {
            let (program, args, envs) = &edge.ssh[user];
            Command::new(program)
                .args(args)
                .arg(format!("mytunneld ctl {}", words.join(" ")))
                .env_clear()
                .envs(envs.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }
    }
}

/// Runs one operation: its JSON on success, else a description of the failure.
fn op(edge: &Edge, via: &Via, words: &[&str], samples: &mut Vec<Sample>) -> Result<Value, String> {
    let name: &'static str = match (via, words[0]) {
        (Via::Local, "allocate") => "allocate (local ctl)",
        (Via::Local, "heartbeat") => "heartbeat (local ctl)",
        (Via::Local, "release") => "release (local ctl)",
        (Via::Ssh(_), "allocate") => "allocate (ssh + gate)",
        (Via::Ssh(_), "heartbeat") => "heartbeat (ssh + gate)",
        (Via::Ssh(_), "release") => "release (ssh + gate)",
        _ => "other",
    };
    let started = Instant::now();
    let output = run(edge, via, words);
    let took = started.elapsed();
    samples.push(Sample { op: name, took });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || stderr.contains("database is locked") {
        return Err(format!(
            "{via:?} {words:?}: {} after {took:?}: stdout {stdout} stderr {stderr}",
            output.status
        ));
    }
    serde_json::from_str(&stdout)
        .map_err(|e| format!("{via:?} {words:?}: not JSON ({e}): {stdout}"))
}

fn client(edge: &Edge, index: usize, via: &Via, cycles: usize, start: &Barrier) -> Outcome {
    let mut out = Outcome::default();
    start.wait();
    for _ in 0..cycles {
        let lease = match op(
            edge,
            via,
            &["allocate", "--local-port", "8080"],
            &mut out.samples,
        ) {
            Ok(lease) => lease,
            Err(e) => {
                out.failures.push(e);
                continue;
            }
        };
        let from = Instant::now();
        let id = lease["lease_id"].as_str().unwrap_or_default().to_owned();
        // A heartbeat while holding it, as a live client does.
        match op(edge, via, &["heartbeat", "--lease", &id], &mut out.samples) {
            Ok(renewed) if renewed["state"] == "active" => {}
            Ok(other) => out.failures.push(format!("heartbeat {id}: {other}")),
            Err(e) => out.failures.push(e),
        }
        let to = Instant::now();
        match op(edge, via, &["release", "--lease", &id], &mut out.samples) {
            Ok(released) if released["state"] == "released" => {}
            Ok(other) => out.failures.push(format!("release {id}: {other}")),
            Err(e) => out.failures.push(e),
        }
        out.held.push(Held {
            client: index,
            lease: id,
            target: lease["edge_bind_target"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            slug: lease["slug"].as_str().unwrap_or_default().to_owned(),
            from,
            to,
        });
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `routes` mode: every allocate and release changes Caddy's config (serve makes those
/// changes one at a time).
#[test]
fn many_clients_allocate_and_release_at_once() {
    load(RouteMode::Routes);
}

/// `static` mode, what a new edge runs: allocate and release only write the database and
/// a host link.
#[test]
fn many_clients_allocate_and_release_at_once_in_static_mode() {
    load(RouteMode::Static);
}

fn load(route_mode: RouteMode) {
    let clients = setting("MYTUNNEL_LOAD_CLIENTS", 32);
    let cycles = setting("MYTUNNEL_LOAD_CYCLES", 5);
    let ssh_clients = setting("MYTUNNEL_LOAD_SSH_CLIENTS", 4).min(clients);
    let max_port = MIN_PORT + u16::try_from(clients).unwrap() + 31;
    // A lease port range of its own (no process binds these ports: ctl only reserves
    // them), unlimited leases per owner (28 local clients share the owner root).
    let stack = Stack::with_env(
        StackOptions {
            route_mode,
            ..StackOptions::default()
        },
        &format!(
            "MYTUNNEL_MIN_PORT={MIN_PORT}\nMYTUNNEL_MAX_PORT={max_port}\nMYTUNNEL_MAX_LEASES_PER_OWNER=0\n"
        ),
    );
    let edge = Edge::of(&stack);
    let start = Arc::new(Barrier::new(clients + 1));
    let done = Arc::new(AtomicBool::new(false));

    // The monitor: lists every lease while the load runs; active ones must never share a
    // port or a name.
    let monitor = {
        let (edge, done) = (edge.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut snapshots = 0usize;
            let mut violations = Vec::new();
            let mut most_active = 0usize;
            while !done.load(Ordering::SeqCst) {
                let Ok(list) = op(&edge, &Via::Local, &["list", "--all"], &mut Vec::new()) else {
                    continue;
                };
                let active: Vec<&Value> = list
                    .as_array()
                    .map(|l| l.iter().filter(|l| l["state"] == "active").collect())
                    .unwrap_or_default();
                let ports: BTreeSet<&str> = active
                    .iter()
                    .map(|l| l["edge_bind_target"].as_str().unwrap_or_default())
                    .collect();
                let slugs: BTreeSet<&str> = active
                    .iter()
                    .map(|l| l["slug"].as_str().unwrap_or_default())
                    .collect();
                if ports.len() != active.len() || slugs.len() != active.len() {
                    violations.push(format!("{active:?}"));
                }
                most_active = most_active.max(active.len());
                snapshots += 1;
            }
            (snapshots, most_active, violations)
        })
    };

    let workers: Vec<_> = (0..clients)
        .map(|index| {
            let (edge, start) = (edge.clone(), Arc::clone(&start));
            let via = if index < ssh_clients {
                Via::Ssh(USERS[index % USERS.len()])
            } else {
                Via::Local
            };
            std::thread::spawn(move || client(&edge, index, &via, cycles, &start))
        })
        .collect();
    let started = Instant::now();
    start.wait();
    let outcomes: Vec<Outcome> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let wall = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let (snapshots, most_active, violations) = monitor.join().unwrap();

    let failures: Vec<&String> = outcomes.iter().flat_map(|o| &o.failures).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cycles failed; first: {:#?}\nserve log: {}",
        failures.len(),
        clients * cycles,
        failures.iter().take(5).collect::<Vec<_>>(),
        stack.serve_log()
    );
    let held: Vec<&Held> = outcomes.iter().flat_map(|o| &o.held).collect();
    assert_eq!(held.len(), clients * cycles);
    assert!(
        violations.is_empty(),
        "monitor saw duplicates: {violations:#?}"
    );

    // From the clients' timelines: two leases on one port (or name) never overlap.
    let mut by_port: BTreeMap<&str, Vec<&Held>> = BTreeMap::new();
    let mut by_slug: BTreeMap<&str, Vec<&Held>> = BTreeMap::new();
    for h in &held {
        by_port.entry(h.target.as_str()).or_default().push(h);
        by_slug.entry(h.slug.as_str()).or_default().push(h);
    }
    for spans in by_port.values().chain(by_slug.values()) {
        for (i, a) in spans.iter().enumerate() {
            for b in spans.iter().skip(i + 1) {
                assert!(
                    a.to <= b.from || b.to <= a.from,
                    "leases {} (client {}) and {} (client {}) held port {} / name {} at once",
                    a.lease,
                    a.client,
                    b.lease,
                    b.client,
                    a.target,
                    a.slug
                );
            }
        }
    }
    let ids: BTreeSet<&str> = held.iter().map(|h| h.lease.as_str()).collect();
    assert_eq!(ids.len(), held.len(), "a lease id was handed out twice");

    // Nothing is left: no active lease, no mytunnel route.
    let list = op(&edge, &Via::Local, &["list", "--all"], &mut Vec::new()).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|l| l["state"] != "active"),
        "{list}"
    );
    // (static mode's one wildcard route stays: it is no lease's.)
    assert!(
        !stack.routes().contains("mytunnel-lease_"),
        "routes left: {}",
        stack.routes()
    );
    if route_mode == RouteMode::Static {
        let links: Vec<_> = std::fs::read_dir(stack.socket_dir().join("hosts"))
            .unwrap()
            .collect();
        assert!(links.is_empty(), "host links left: {links:?}");
    }

    // Figures.
    let mut by_op: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for s in outcomes.iter().flat_map(|o| &o.samples) {
        by_op.entry(s.op).or_default().push(s.took);
    }
    println!(
        "FIGURE load [{}]: {clients} clients ({ssh_clients} via ssh) x {cycles} cycles = {} allocate/release cycles in {:.1}s; \
         monitor: {snapshots} snapshots, up to {most_active} leases active at once, 0 duplicates",
        route_mode.name(),
        clients * cycles,
        wall.as_secs_f64()
    );
    for (name, mut times) in by_op {
        times.sort();
        println!(
            "FIGURE load [{}]: {name:<22} n={:<5} p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms",
            route_mode.name(),
            times.len(),
            percentile(&times, 50.0).as_secs_f64() * 1000.0,
            percentile(&times, 99.0).as_secs_f64() * 1000.0,
            times.last().unwrap().as_secs_f64() * 1000.0
        );
    }
}
