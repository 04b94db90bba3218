//! Data plane and time to URL: the same app and the same load generator (wrk) through each
//! path, and a 100 MiB download with curl.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::edge::{http_status, Edge};
use crate::procs::{describe, free_port, require_program, run_ok, Guard, Result};
use crate::stats::Summary;
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
    /// Download throughput in MB/s (10^6 bytes): the median of the downloads.
    pub download_mb_s: f64,
    /// The slowest and the fastest download, MB/s.
    pub download_range: (f64, f64),
    /// The wrk command line of the first run (placeholders for the varying parts).
    pub command: String,
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
    let mut downloads = Vec::with_capacity(plan.downloads.max(1));
    for _ in 0..plan.downloads.max(1) {
        downloads.push(download(addr, host, plan.download_bytes)?);
    }
    downloads.sort_by(f64::total_cmp);
    let download_mb_s = downloads.get(downloads.len() / 2).copied().unwrap_or(0.0);
    let download_range = (
        downloads.first().copied().unwrap_or(0.0),
        downloads.last().copied().unwrap_or(0.0),
    );
    eprintln!(
        "  {label} download: {download_mb_s:.0} MB/s (median of {}; {:.0}–{:.0})",
        downloads.len(),
        download_range.0,
        download_range.1
    );
    Ok(PathResult {
        label: label.to_owned(),
        description: description.to_owned(),
        wrk: results,
        download_mb_s,
        download_range,
        command: first_command,
    })
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

/// A running `mytunnel http`.
#[derive(Debug)]
pub struct Client {
    guard: Guard,
    /// Its public host.
    pub host: String,
    /// How long from spawn until it printed its `url:` line.
    pub url_printed: Duration,
}

impl Client {
    /// Starts `mytunnel http <port> [extra]` and waits for its `url:` and `lease:` lines.
    pub fn open(edge: &Edge, local_port: u16, extra: &[&str]) -> Result<(Client, Instant)> {
        let stderr = edge.path(&format!("logs/client-{}.stderr", free_port()?));
        let mut command = edge.mytunnel_http(local_port, extra)?;
        command.stdout(Stdio::piped()).stderr(
            std::fs::File::create(&stderr).map_err(|e| format!("client stderr file: {e}"))?,
        );
        let started = Instant::now();
        let mut guard = Guard::spawn(&mut command, "mytunnel http")?;
        let stdout = guard
            .child_mut()
            .stdout
            .take()
            .ok_or("mytunnel http has no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let url = lines.recv_timeout(Duration::from_secs(60)).map_err(|_| {
            format!(
                "mytunnel http printed no url line within 60s: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        })?;
        let url_printed = started.elapsed();
        let host = url
            .strip_prefix("url: https://")
            .ok_or_else(|| format!("mytunnel http printed {url:?} first"))?
            .to_owned();
        Ok((
            Client {
                guard,
                host,
                url_printed,
            },
            started,
        ))
    }

    /// Stops it as Ctrl-C would (SIGINT: it stops ssh and releases the lease), waiting at
    /// most 15 s; the guard kills what is left.
    pub fn stop(mut self) {
        let _ = self
            .guard
            .signal_and_wait(Signal::SIGINT, Duration::from_secs(15));
    }
}

/// Time to URL: from spawning `mytunnel http` to the first 200 through Caddy.
#[derive(Debug, Clone)]
pub struct TimeToUrl {
    /// Label of the variant.
    pub variant: String,
    /// Spawn to the first 200.
    pub to_first_200: Summary,
    /// Spawn to the `url:` line.
    pub to_url_line: Summary,
    /// The command line (ports and paths as placeholders).
    pub command: String,
}

/// Measures time to URL `runs` times with `extra` flags.
pub fn time_to_url(
    edge: &Edge,
    local_port: u16,
    variant: &str,
    extra: &[&str],
    runs: usize,
) -> Result<TimeToUrl> {
    let mut to_200 = Vec::new();
    let mut to_line = Vec::new();
    for _ in 0..runs {
        let (client, started) = Client::open(edge, local_port, extra)?;
        await_serving(edge.http(), &client.host, Duration::from_secs(60))?;
        to_200.push(started.elapsed());
        to_line.push(client.url_printed);
        client.stop();
    }
    let mut command =
        "mytunnel http <app-port> --edge mtbench@127.0.0.1 --ssh-option Port=<sshd port> --ssh-option IdentityFile=<key> …".to_owned();
    for flag in extra {
        command.push(' ');
        command.push_str(flag);
    }
    let result = TimeToUrl {
        variant: variant.to_owned(),
        to_first_200: Summary::of(&to_200),
        to_url_line: Summary::of(&to_line),
        command,
    };
    eprintln!(
        "  time to URL [{variant}]: p50 {:?} (url line p50 {:?})",
        result.to_first_200.p50, result.to_url_line.p50
    );
    Ok(result)
}

/// A local `bore server` and `bore local` forwarding to the app; the public address.
#[derive(Debug)]
pub struct Bore {
    _server: Guard,
    _client: Guard,
    /// The port bore's server exposes.
    pub addr: SocketAddr,
}

/// bore's control port, fixed in bore itself.
const BORE_CONTROL_PORT: u16 = 7835;

impl Bore {
    /// Starts both ends; bore's control port 7835 is fixed by bore and must be free.
    pub fn start(app_port: u16, logs: &Path) -> Result<Bore> {
        let bore = require_program("bore", "cargo install bore-cli")?;
        if std::net::TcpListener::bind(("127.0.0.1", BORE_CONTROL_PORT)).is_err() {
            return Err(format!(
                "bore's control port {BORE_CONTROL_PORT} (fixed by bore) is taken"
            ));
        }
        let log = |name: &str| {
            std::fs::File::create(logs.join(name)).map_err(|e| format!("bore log {name}: {e}"))
        };
        let server = Guard::spawn(
            Command::new(&bore)
                .args(["server", "--bind-addr", "127.0.0.1", "--min-port", "1024"])
                .stdin(Stdio::null())
                .stdout(log("bore-server.log")?)
                .stderr(log("bore-server.err")?),
            "bore server",
        )?;
        if !poll_every(Duration::from_secs(10), Duration::from_millis(10), || {
            std::net::TcpStream::connect(("127.0.0.1", BORE_CONTROL_PORT)).is_ok()
        }) {
            return Err("bore server did not listen on 7835 within 10s".to_owned());
        }
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port()?;
            let mut client = Guard::spawn(
                Command::new(&bore)
                    .args(["local", &app_port.to_string(), "--local-host", "127.0.0.1"])
                    .args(["--to", "127.0.0.1", "--port"])
                    .arg(port.to_string())
                    .stdin(Stdio::null())
                    .stdout(log("bore-local.log")?)
                    .stderr(log("bore-local.err")?),
                "bore local",
            )?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut exited = false;
            let up = poll_every(Duration::from_secs(10), Duration::from_millis(10), || {
                exited = client.check_running().is_err();
                exited || http_status(addr, "bore", "/") == Some(200)
            });
            if up && !exited {
                return Ok(Bore {
                    _server: server,
                    _client: client,
                    addr,
                });
            }
            last = format!("bore local on port {port} did not serve");
        }
        Err(last)
    }
}

/// A local rathole server and client (TCP transport, default settings).
#[derive(Debug)]
pub struct Rathole {
    _server: Guard,
    _client: Guard,
    /// The address the rathole server exposes the service on.
    pub addr: SocketAddr,
}

impl Rathole {
    /// Writes both config files and starts both ends.
    pub fn start(app_port: u16, dir: &Path) -> Result<Rathole> {
        let rathole = require_program("rathole", "cargo install rathole")?;
        let mut last = String::new();
        for attempt in 0..5 {
            let control = free_port()?;
            let public = free_port()?;
            let server_toml = dir.join(format!("rathole-server-{attempt}.toml"));
            let client_toml = dir.join(format!("rathole-client-{attempt}.toml"));
            std::fs::write(
                &server_toml,
                format!(
                    "[server]\nbind_addr = \"127.0.0.1:{control}\"\ndefault_token = \"mytunnel-bench\"\n\n\
                     [server.services.app]\nbind_addr = \"127.0.0.1:{public}\"\n"
                ),
            )
            .map_err(|e| format!("write {}: {e}", server_toml.display()))?;
            std::fs::write(
                &client_toml,
                format!(
                    "[client]\nremote_addr = \"127.0.0.1:{control}\"\ndefault_token = \"mytunnel-bench\"\n\n\
                     [client.services.app]\nlocal_addr = \"127.0.0.1:{app_port}\"\n"
                ),
            )
            .map_err(|e| format!("write {}: {e}", client_toml.display()))?;
            let log = |name: String| {
                std::fs::File::create(dir.join(&name)).map_err(|e| format!("log {name}: {e}"))
            };
            let server = Guard::spawn(
                Command::new(&rathole)
                    .arg("--server")
                    .arg(&server_toml)
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(log(format!("rathole-server-{attempt}.log"))?)
                    .stderr(log(format!("rathole-server-{attempt}.err"))?),
                "rathole server",
            )?;
            let client = Guard::spawn(
                Command::new(&rathole)
                    .arg("--client")
                    .arg(&client_toml)
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(log(format!("rathole-client-{attempt}.log"))?)
                    .stderr(log(format!("rathole-client-{attempt}.err"))?),
                "rathole client",
            )?;
            let addr = SocketAddr::from(([127, 0, 0, 1], public));
            let mut guards = (server, client);
            let mut exited = false;
            let up = poll_every(Duration::from_secs(10), Duration::from_millis(10), || {
                exited = guards.0.check_running().is_err() || guards.1.check_running().is_err();
                exited || http_status(addr, "rathole", "/") == Some(200)
            });
            if up && !exited {
                return Ok(Rathole {
                    _server: guards.0,
                    _client: guards.1,
                    addr,
                });
            }
            last = format!("rathole on ports {control}/{public} did not serve");
        }
        Err(last)
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
