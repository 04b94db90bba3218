//! The client's memory with its inspector full: a `mytunnel http --inspect` is sent
//! twice as many exchanges as its inspector keeps, each with a request and a response
//! body twice the size it keeps of each and heads (headers) twice the size it keeps of
//! each, and its PSS is read before and after; a second
//! round as large shows whether it keeps growing. A client without `--inspect` gets the
//! same traffic first: what the proxy's buffers and the allocator keep whatever the
//! inspector holds, so the difference is the inspector's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::app::App;
use crate::client::Client;
use crate::dataplane::await_serving;
use crate::edge::Edge;
use crate::procs::Result;
use crate::proctable::memory_of_all;
use mytunnel_client::inspect::ExchangeLimits;

/// Exchanges the inspector keeps (the client's default).
pub const KEEP: usize = ExchangeLimits::DEFAULT.max_exchanges;
/// Bytes of each body it keeps (the client's default, 64 KiB).
pub const BODY_BYTES: usize = ExchangeLimits::DEFAULT.max_body_bytes;
/// Bytes of each head it keeps (the client's default, 16 KiB).
pub const HEAD_BYTES: usize = ExchangeLimits::DEFAULT.max_head_bytes;
/// Each request carries this many `X-Fill-<n>` headers of [`FILL_VALUE_BYTES`], about
/// twice what the inspector keeps of a head; the app sends them back in its response.
const FILL_HEADERS: usize = 32;
const FILL_VALUE_BYTES: usize = 1000;

/// What the measurement found.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectorMemory {
    /// Exchanges kept.
    pub keep: usize,
    /// Bytes kept of each body.
    pub body_bytes: usize,
    /// Bytes kept of each head.
    pub head_bytes: usize,
    /// Exchanges sent in each round.
    pub per_round: usize,
    /// Bytes of each request body (and of each response, an echo).
    pub sent_body_bytes: usize,
    /// Bytes of the fill headers of each request (and of each response, an echo).
    pub sent_head_bytes: usize,
    /// The client's PSS before, KiB.
    pub before_kib: u64,
    /// After the first round, KiB.
    pub after_first_kib: u64,
    /// After the second round, KiB.
    pub after_second_kib: u64,
    /// The same for a client without `--inspect`: before, after one round, after two.
    pub control_kib: [u64; 3],
    /// Clients of each kind measured, one after the other: the figures are each kind's
    /// median run by growth.
    pub runs: usize,
    /// How much each client without `--inspect` grew, KiB, in run order.
    pub control_growths_kib: Vec<u64>,
}

impl InspectorMemory {
    fn limits(&self) -> ExchangeLimits {
        ExchangeLimits {
            max_exchanges: self.keep,
            max_body_bytes: self.body_bytes,
            max_head_bytes: self.head_bytes,
        }
    }

    /// What the limits let the log hold: `keep` exchanges × (two bodies × `body_bytes` +
    /// two heads × `head_bytes`), as [`ExchangeLimits::bound_bytes`] counts it.
    pub fn kept_kib(&self) -> u64 {
        (self.limits().bound_bytes() / 1024) as u64
    }

    /// The bound: what those bytes take from the system, in the log's blocks of whole
    /// pages ([`ExchangeLimits::footprint_bytes`]).
    pub fn bound_kib(&self) -> u64 {
        (self.limits().footprint_bytes() / 1024) as u64
    }

    /// The most the client with the inspector grew over its PSS before.
    pub fn total_growth_kib(&self) -> u64 {
        self.after_first_kib
            .max(self.after_second_kib)
            .saturating_sub(self.before_kib)
    }

    /// The most the client without it grew.
    pub fn control_growth_kib(&self) -> u64 {
        let [before, first, second] = self.control_kib;
        first.max(second).saturating_sub(before)
    }

    /// How much the growth without `--inspect` varied between runs, KiB: what the
    /// measurement cannot tell apart.
    pub fn spread_kib(&self) -> u64 {
        let max = self.control_growths_kib.iter().max().copied().unwrap_or(0);
        let min = self.control_growths_kib.iter().min().copied().unwrap_or(0);
        max - min
    }

    /// What the inspector added: its client's growth less the control's.
    pub fn growth_kib(&self) -> u64 {
        self.total_growth_kib()
            .saturating_sub(self.control_growth_kib())
    }
}

/// Measures it on `edge` with `app` (which answers `POST /echo`).
pub fn measure(edge: &Edge, app: &App) -> Result<InspectorMemory> {
    let keep = KEEP.to_string();
    let body = format!("{}k", BODY_BYTES / 1024);
    let per_round = KEEP * 2;
    let sent_body_bytes = BODY_BYTES * 2;
    let inspect = [
        "--inspect",
        "127.0.0.1:0",
        "--inspect-keep",
        &keep,
        "--inspect-body",
        &body,
    ];
    // Each process's allocator keeps a different few hundred KiB of the proxy's buffers:
    // a median over several clients of each kind, measured in turn.
    let mut controls = Vec::new();
    let mut inspectors = Vec::new();
    for _ in 0..RUNS {
        controls.push(rounds(edge, app, &[], per_round, sent_body_bytes)?);
        inspectors.push(rounds(edge, app, &inspect, per_round, sent_body_bytes)?);
    }
    let control_growths_kib = controls.iter().map(growth).collect();
    let control_kib = median_by_growth(controls);
    let [before_kib, after_first_kib, after_second_kib] = median_by_growth(inspectors);
    let measured = InspectorMemory {
        keep: KEEP,
        body_bytes: BODY_BYTES,
        head_bytes: HEAD_BYTES,
        per_round,
        sent_body_bytes,
        sent_head_bytes: FILL_HEADERS * FILL_VALUE_BYTES,
        before_kib,
        after_first_kib,
        after_second_kib,
        control_kib,
        runs: RUNS,
        control_growths_kib,
    };
    eprintln!(
        "  inspector: client PSS {before_kib} KiB before, {after_first_kib} after {per_round} exchanges, \
         {after_second_kib} after {per_round} more; without --inspect {control_kib:?}; the inspector's \
         {} KiB (bound {} KiB)",
        measured.growth_kib(),
        measured.bound_kib()
    );
    Ok(measured)
}

/// Clients of each kind measured.
const RUNS: usize = 3;

/// The most a run grew over its PSS before, KiB.
fn growth([before, first, second]: &[u64; 3]) -> u64 {
    (*first).max(*second).saturating_sub(*before)
}

/// The run whose growth is the median.
fn median_by_growth(mut runs: Vec<[u64; 3]>) -> [u64; 3] {
    runs.sort_by_key(growth);
    runs.get(runs.len() / 2).copied().unwrap_or_default()
}

/// A client with `flags`: its PSS once its tunnel serves, after `per_round` exchanges,
/// and after `per_round` more. No warm-up before the first reading: warm-up exchanges
/// would fill places in the log before it, and hide their bytes from the growth.
fn rounds(
    edge: &Edge,
    app: &App,
    flags: &[&str],
    per_round: usize,
    body_bytes: usize,
) -> Result<[u64; 3]> {
    let client = Client::open(edge, app.port(), flags)?;
    await_serving(edge.http(), &client.host, Duration::from_secs(30))?;
    let payload = vec![b'z'; body_bytes];
    let pss = || memory_of_all([client.pid()]).0.pss_kib;
    let before = pss();
    echo_round(edge.http(), &client.host, &payload, per_round)?;
    let first = pss();
    echo_round(edge.http(), &client.host, &payload, per_round)?;
    let second = pss();
    client.stop();
    Ok([before, first, second])
}

/// `count` `POST /echo` requests of `payload` through Caddy with `Host: host`, each on a
/// keep-alive connection of one round; an error unless each is answered with the payload.
fn echo_round(caddy: SocketAddr, host: &str, payload: &[u8], count: usize) -> Result<()> {
    let mut stream =
        TcpStream::connect(caddy).map_err(|e| format!("inspector: connect {caddy}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let fill: String = (0..FILL_HEADERS)
        .map(|i| format!("X-Fill-{i}: {}\r\n", "f".repeat(FILL_VALUE_BYTES)))
        .collect();
    for _ in 0..count {
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{fill}\r\n",
            payload.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(payload))
            .map_err(|e| format!("inspector: send: {e}"))?;
        let length = read_head(&mut stream)?;
        if length != payload.len() {
            return Err(format!(
                "inspector: the echo had {length} bytes, not {}",
                payload.len()
            ));
        }
        let mut body = vec![0u8; length];
        stream
            .read_exact(&mut body)
            .map_err(|e| format!("inspector: read the echo: {e}"))?;
    }
    Ok(())
}

/// Reads a response head; its Content-Length. An error unless the status is 200.
fn read_head(stream: &mut TcpStream) -> Result<usize> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .map_err(|e| format!("inspector: read the answer: {e}"))?;
        head.extend_from_slice(&byte);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if text.split_whitespace().nth(1) != Some("200") {
        return Err(format!("inspector: the echo answered {}", text.trim()));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("inspector: no content-length in {}", text.trim()))
}
