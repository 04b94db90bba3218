//! Data plane: the same app and the same load generator (wrk) through each path, and a
//! large download with curl.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::edge::http_status;
use crate::procs::{describe, require_program, run_ok, Result};
use mytunnel_test_support::poll_every;

/// One wrk run.
#[derive(Debug, Clone)]
pub struct WrkResult {
    /// Connections.
    pub connections: u32,
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Responses that were not 2xx/3xx plus socket errors.
    pub errors: u64,
}

/// What one path measured.
#[derive(Debug, Clone)]
pub struct PathResult {
    /// Short label, e.g. `(c) mytunnel`.
    pub label: String,
    /// What it is.
    pub description: String,
    /// One per concurrency.
    pub wrk: Vec<WrkResult>,
    /// The downloads.
    pub download: Downloads,
    /// The wrk command line of the first run (placeholders for the varying parts).
    pub command: String,
}

/// Downloads through one path.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Downloads {
    /// How many.
    pub count: usize,
    /// Throughput in MB/s (10^6 bytes): the median of the downloads.
    pub median_mb_s: f64,
    /// The slowest and the fastest download, MB/s.
    pub range: (f64, f64),
}

/// How long and how hard each path is driven.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Concurrencies.
    pub connections: Vec<u32>,
    /// Seconds per wrk run.
    pub seconds: u32,
    /// Bytes of the download.
    pub download_bytes: usize,
    /// Downloads per path; the report gives their median and range. One 100 MiB download
    /// through the same tunnel varied from 157 to 355 MB/s between runs on this machine.
    pub downloads: usize,
    /// Whether a one-second wrk run warms each path up first (not measured).
    pub warm_up: bool,
}

/// wrk threads for `connections` on this machine: one per connection up to the cores.
fn threads_for(connections: u32) -> u32 {
    let cores = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1);
    connections.clamp(1, cores)
}

/// Runs wrk and curl against `addr` with `Host: host`.
pub fn measure_path(
    label: &str,
    description: &str,
    addr: SocketAddr,
    host: &str,
    plan: &LoadPlan,
) -> Result<PathResult> {
    let wrk = require_program("wrk", "apt-get install wrk")?;
    let mut results = Vec::new();
    let mut first_command = String::new();
    // Warm-up: connections and caches, not measured.
    if plan.warm_up {
        run_ok(&mut wrk_command(&wrk, addr, host, 1, 1), "wrk warm-up")?;
    }
    for &connections in &plan.connections {
        let mut command = wrk_command(&wrk, addr, host, connections, plan.seconds);
        if first_command.is_empty() {
            first_command = describe(&command);
        }
        let output = run_ok(&mut command, "wrk")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let mut result = parse_wrk(&text)
            .ok_or_else(|| format!("cannot read wrk's output for {label}:\n{text}"))?;
        result.connections = connections;
        eprintln!(
            "  {label} c={connections}: {:.0} req/s, p50 {:?}, p99 {:?}, errors {}",
            result.rps, result.p50, result.p99, result.errors
        );
        results.push(result);
    }
    let download = downloads(label, addr, host, plan)?;
    Ok(PathResult {
        label: label.to_owned(),
        description: description.to_owned(),
        wrk: results,
        download,
        command: first_command,
    })
}

/// `plan.downloads` downloads of `/big` through `addr` with `Host: host`.
pub fn downloads(label: &str, addr: SocketAddr, host: &str, plan: &LoadPlan) -> Result<Downloads> {
    let mut each = Vec::with_capacity(plan.downloads.max(1));
    for _ in 0..plan.downloads.max(1) {
        each.push(download(addr, host, plan.download_bytes)?);
    }
    each.sort_by(f64::total_cmp);
    let result = Downloads {
        count: each.len(),
        median_mb_s: each.get(each.len() / 2).copied().unwrap_or(0.0),
        range: (
            each.first().copied().unwrap_or(0.0),
            each.last().copied().unwrap_or(0.0),
        ),
    };
    eprintln!(
        "  {label} download: {:.0} MB/s (median of {}; {:.0}–{:.0})",
        result.median_mb_s, result.count, result.range.0, result.range.1
    );
    Ok(result)
}

fn wrk_command(
    wrk: &Path,
    addr: SocketAddr,
    host: &str,
    connections: u32,
    seconds: u32,
) -> Command {
    let mut command = Command::new(wrk);
    command
        .arg("-t")
        .arg(threads_for(connections).to_string())
        .arg("-c")
        .arg(connections.to_string())
        .arg("-d")
        .arg(format!("{seconds}s"))
        .arg("--latency")
        .arg("-H")
        .arg(format!("Host: {host}"))
        .arg(format!("http://{addr}/"));
    command
}

/// A wrk duration like `45.00us`, `1.23ms`, `2.00s`, `1.50m`.
fn parse_wrk_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// Reads requests/s, p50, p99 and errors from `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = 0u64;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => rps = n.parse::<f64>().ok(),
            ["50%", d] => p50 = parse_wrk_duration(d),
            ["99%", d] => p99 = parse_wrk_duration(d),
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    Some(WrkResult {
        connections: 0,
        rps: rps?,
        p50: p50?,
        p99: p99?,
        errors,
    })
}

/// Downloads `/big` with curl; MB/s (10^6 bytes per second). Fails unless all bytes came.
fn download(addr: SocketAddr, host: &str, bytes: usize) -> Result<f64> {
    let output = run_ok(
        Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download} %{time_total}",
            ])
            .arg("-H")
            .arg(format!("Host: {host}"))
            .arg(format!("http://{addr}/big")),
        "curl download",
    )?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["200", size, seconds] => {
            let size: f64 = size.parse().map_err(|e| format!("curl size {size}: {e}"))?;
            let seconds: f64 = seconds
                .parse()
                .map_err(|e| format!("curl time {seconds}: {e}"))?;
            #[allow(clippy::cast_precision_loss, reason = "a byte count for a ratio")]
            let expected = bytes as f64;
            if (size - expected).abs() > 0.5 {
                return Err(format!("download through {host}: {size} bytes of {bytes}"));
            }
            Ok(size / seconds.max(1e-9) / 1e6)
        }
        _ => Err(format!("download through {host}: curl said {text:?}")),
    }
}

/// Waits until `GET /` to `addr` with `Host: host` answers 200.
pub fn await_serving(addr: SocketAddr, host: &str, timeout: Duration) -> Result<()> {
    if poll_every(timeout, Duration::from_millis(5), || {
        http_status(addr, host, "/") == Some(200)
    }) {
        Ok(())
    } else {
        Err(format!(
            "{host} via {addr} did not answer 200 within {timeout:?} (last: {:?})",
            http_status(addr, host, "/")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "\
Running 1s test @ http://127.0.0.1:1/
  1 threads and 1 connections
  Latency Distribution
     50%   45.00us
     75%   50.00us
     90%   60.00us
     99%    1.20ms
  1000 requests in 1.00s, 1.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  20000.50
Transfer/sec:      2.20MB
";
        let r = parse_wrk(text).unwrap();
        assert!((r.rps - 20000.5).abs() < 1e-6);
        assert_eq!(r.p50, Duration::from_micros(45));
        assert_eq!(r.p99, Duration::from_micros(1200));
        assert_eq!(r.errors, 8);
        assert!(parse_wrk("nothing").is_none());
    }
}
