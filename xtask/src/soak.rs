//! `cargo xtask soak [--cycles N] [--clients N] [--leases N] [--tunnels N] [--rounds N]`:
//! the long form of the load and fault suites that `cargo xtask ci` runs at a small size.
//!
//! It installs the system packages the suites start (Caddy, OpenSSH), then runs, `rounds`
//! times (default 1):
//! - `mytunnel-cli --test load_ctl` with `MYTUNNEL_LOAD_CLIENTS` (default 32) clients ×
//!   `MYTUNNEL_LOAD_CYCLES` (default 50) allocate/heartbeat/release cycles as real ctl
//!   processes, 4 of them through real ssh;
//! - `mytunnel-cli --test faults` with `MYTUNNEL_FAULT_LEASES` (default 500) leases, so the
//!   passes `serve` is killed in are long;
//! - `mytunnel-cli --test e2e_faults`: sshd restarted under `MYTUNNEL_RESTART_TUNNELS`
//!   (`--tunnels`, default 200) connected `mytunnel http` clients, until every URL serves
//!   again (the reconnect storm); 48 simultaneous logins; a client frozen past its TTL;
//! - `mytunnel-edge --test concurrent_processes` (16 processes allocating on one file).
//!
//! Every `FIGURE …` line the tests print is collected and printed again at the end, with
//! the time of each run. Needs root, like the end-to-end suite.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use mytunnel_core::flags;

use super::{cargo, command_line, ensure_system_packages, flush, seconds, workspace_root, Result};

/// What `cargo xtask soak` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Concurrent clients of the load test.
    pub clients: u64,
    /// Allocate/release cycles per client.
    pub cycles: u64,
    /// Leases in the kill-during-a-pass fault tests.
    pub leases: u64,
    /// Connected tunnels (`mytunnel http` clients) when sshd restarts in the reconnect storm.
    pub tunnels: u64,
    /// How many times the whole set runs.
    pub rounds: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clients: 32,
            cycles: 50,
            leases: 500,
            tunnels: 200,
            rounds: 1,
        }
    }
}

/// Reads the arguments after `cargo xtask soak`.
pub fn parse(rest: &[String]) -> Result<Options> {
    let mut options = Options::default();
    let mut iter = rest.iter();
    while let Some(arg) = iter.next() {
        let (name, inline) = flags::split_inline(arg);
        let slot = match name {
            "--clients" => &mut options.clients,
            "--cycles" => &mut options.cycles,
            "--leases" => &mut options.leases,
            "--tunnels" => &mut options.tunnels,
            "--rounds" => &mut options.rounds,
            _ => return Err(format!("`cargo xtask soak` does not take {arg:?}")),
        };
        let value = flags::value(name, inline, &mut iter)?;
        *slot = match value.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("{name} {value:?} is not a positive whole number")),
        };
    }
    Ok(options)
}

/// Runs the suites; fails at the first failing run.
pub fn soak(options: &Options) -> Result<()> {
    let root = workspace_root()?;
    println!("==> prerequisites: system packages the suites start");
    flush();
    ensure_system_packages()?;
    let started = Instant::now();
    let mut figures = Vec::new();
    let mut timings = Vec::new();
    for round in 1..=options.rounds {
        for (package, test) in [
            ("mytunnel-cli", "load_ctl"),
            ("mytunnel-cli", "faults"),
            ("mytunnel-cli", "e2e_faults"),
            ("mytunnel-edge", "concurrent_processes"),
        ] {
            let mut command = cargo(&root);
            command
                .args(["test", "-p", package, "--test", test, "--", "--nocapture"])
                .env("MYTUNNEL_LOAD_CLIENTS", options.clients.to_string())
                .env("MYTUNNEL_LOAD_CYCLES", options.cycles.to_string())
                .env("MYTUNNEL_FAULT_LEASES", options.leases.to_string())
                .env("MYTUNNEL_RESTART_TUNNELS", options.tunnels.to_string());
            println!("==> soak round {round}/{}: {test}", options.rounds);
            let run_started = Instant::now();
            let found = run_collecting_figures(&mut command)?;
            let took = run_started.elapsed();
            timings.push(format!("round {round} {test:<22} {:>8}", seconds(took)));
            figures.extend(found.into_iter().map(|f| format!("round {round}: {f}")));
        }
    }
    println!();
    println!("xtask soak summary ({}):", seconds(started.elapsed()));
    for line in timings.iter().chain(&figures) {
        println!("  {line}");
    }
    Ok(())
}

/// Runs `command`, echoing its output, and returns the `FIGURE …` lines it printed.
fn run_collecting_figures(command: &mut Command) -> Result<Vec<String>> {
    let line = command_line(command);
    println!("$ {line}");
    flush();
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start `{line}`: {e}"))?;
    let mut figures = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for text in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            println!("{text}");
            if let Some(at) = text.find("FIGURE ") {
                figures.push(text.get(at + "FIGURE ".len()..).unwrap_or("").to_owned());
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("could not wait for `{line}`: {e}"))?;
    if status.success() {
        Ok(figures)
    } else {
        Err(format!("`{line}` failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse(&[]), Ok(Options::default()));
        assert_eq!(
            parse(&args(&[
                "--cycles",
                "5",
                "--leases=100",
                "--tunnels",
                "50",
                "--rounds",
                "3"
            ])),
            Ok(Options {
                clients: 32,
                cycles: 5,
                leases: 100,
                tunnels: 50,
                rounds: 3
            })
        );
        for bad in [
            &["--cycles"][..],
            &["--cycles", "0"],
            &["--leases", "x"],
            &["--tunnels", "0"],
            &["--fast"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
