//! What `mytunnel` prints: the fixed output formats, and errors as messages with hints.

use mytunnel_client::inspect::RequestSummary;
use mytunnel_client::probe::ProbeFailure;
use mytunnel_core::{ErrorCode, Timestamp};

use super::*;

/// The two lines `http` prints on stdout once the tunnel is up.
pub fn format_opened(url: &str, lease_id: &str) -> String {
    format!("url: {url}\nlease: {lease_id}\n")
}

/// `http --json`'s first line once the tunnel is up: `{"type":"opened","url":…,"lease_id":…}`.
pub fn format_opened_json(url: &str, lease_id: &str) -> String {
    let mut line =
        serde_json::json!({ "type": "opened", "url": url, "lease_id": lease_id }).to_string();
    line.push('\n');
    line
}

/// One request log line: `14:03:07 GET /hooks 200 3.1ms 0 B → 1.2 kB`, the time of day
/// the request arrived (UTC). What a visitor sent is shown with every unprintable
/// character replaced, so no request can write to the terminal.
pub fn format_request(summary: &RequestSummary) -> String {
    let time = Timestamp::from_system_time(summary.started_at).to_string();
    // RFC 3339: 2026-12-06T14:03:07Z → 14:03:07.
    let clock = time.get(11..19).unwrap_or(&time);
    format!("{clock} {}\n", printable(&summary.to_string()))
}

/// One `http --json` line per request: `{"type":"request", …}`.
pub fn format_request_json(summary: &RequestSummary) -> String {
    let started_ms = summary
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut line = serde_json::json!({
        "type": "request",
        "exchange": summary.exchange.0,
        "host": summary.host,
        "started_at": Timestamp::from_system_time(summary.started_at).to_string(),
        "started_at_ms": u64::try_from(started_ms).unwrap_or(u64::MAX),
        "method": summary.method,
        "target": summary.target,
        "status": summary.status,
        "duration_ms": summary.duration.as_secs_f64() * 1000.0,
        "request_bytes": summary.request_bytes,
        "response_bytes": summary.response_bytes,
        "upgraded": summary.upgraded,
        "error": summary.error,
        "replay_of": summary.replay_of.map(|id| id.0),
    })
    .to_string();
    line.push('\n');
    line
}

/// `ls` as aligned text columns, or `no leases`.
pub fn format_ls(leases: &[LeaseDto]) -> String {
    if leases.is_empty() {
        return "no leases\n".to_owned();
    }
    let header = ["LEASE_ID", "HOST", "OWNER", "PORT", "STATE", "EXPIRES_AT"];
    let rows: Vec<[String; 6]> = leases
        .iter()
        .map(|l| {
            [
                l.lease_id.to_string(),
                l.host.clone(),
                l.owner.to_string(),
                // A lease that binds a socket (static route mode) holds no port.
                match l.edge_bind_port {
                    0 => "-".to_owned(),
                    port => port.to_string(),
                },
                l.state.to_string(),
                l.expires_at.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == header.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The status line once the tunnel is up: `forwarding https://<host> → <target> (<the
/// address that answered>)`, e.g. `forwarding https://shop.example → http://localhost:3000
/// ([::1]:3000)`.
pub fn format_forwarding(
    url: &str,
    upstream: &mytunnel_client::Upstream,
    answered: Option<std::net::SocketAddr>,
) -> String {
    match answered {
        Some(addr) => format!("forwarding {url} → {upstream} ({addr})"),
        None => format!("forwarding {url} → {upstream}"),
    }
}

/// The line `stop` prints: `released <id> (<tombstoned host>)`.
pub fn format_released(lease: &LeaseDto) -> String {
    format!("released {} ({})\n", lease.lease_id, lease.host)
}

/// The doctor report as text: one line per check.
pub fn format_checks(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let status = match check.status {
            CheckStatus::Ok => "ok  ",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        };
        out.push_str(&format!(
            "{status}  {:<17} {}",
            check.name,
            printable(&check.detail)
        ));
        if !check.hint.is_empty() {
            out.push_str(&format!("\n      hint: {}", printable(&check.hint)));
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Errors

/// An SDK error in the CLI's words, as (message, hint): where the SDK names its own calls
/// (`.edge(..)`, `Reconnect::Always`), the CLI names its flags and subcommands.
pub fn describe(error: &TunnelError) -> (String, String) {
    let message = match error {
        TunnelError::Edge(ProfileError::NoEdge { config_path }) => format!(
            "no edge given: use --edge <ssh-destination|profile>, set MYTUNNEL_EDGE, or set \
             default_edge in {}",
            config_path.display()
        ),
        _ => error.to_string(),
    };
    let hint = match error {
        TunnelError::InvalidOptions(_) => "see `mytunnel http --help`",
        TunnelError::HostHeader(_) => "pass --host-header rewrite, or a host with an optional port",
        TunnelError::Upstream(e) => {
            return (
                message,
                format!("{}; or the name of a [tunnels.NAME] profile", e.hint()),
            )
        }
        TunnelError::Probe(e) if e.failure == ProbeFailure::CertificateUntrusted => {
            "for a self-signed certificate on this machine, pass --upstream-insecure; or \
             trust its CA (e.g. `mkcert -install`)"
        }
        TunnelError::Edge(ProfileError::NoEdge { .. }) => {
            "pass --edge user@your-edge, or add a profile (see `mytunnel http --help`)"
        }
        TunnelError::Connect(TransportError::Unreachable(_))
        | TunnelError::Allocate(TransportError::Unreachable(_)) => {
            "check that `ssh <edge>` works with your tunnel key; `mytunnel doctor` checks each step"
        }
        TunnelError::Connect(TransportError::Malformed(_))
        | TunnelError::Allocate(TransportError::Malformed(_))
        | TunnelError::Forward(TransportError::Malformed(_)) => {
            "the edge answered unexpectedly: check that client and edge versions match (`mytunnel doctor`)"
        }
        TunnelError::ForwardEnded(_) => {
            "run again, or leave --reconnect on so the tunnel comes back by itself"
        }
        TunnelError::Release(_) => {
            "the lease expires by itself after its TTL; `mytunnel ls` shows it until then"
        }
        TunnelError::LeaseEnded { .. } => {
            "someone with access to this edge account ended it; run `mytunnel http` again to publish anew"
        }
        // The SDK's own hint names no call of the SDK for the rest.
        _ => return (message, error.hint()),
    };
    (message, hint.to_owned())
}

/// Prints an error as a miette diagnostic with its code and hint, and returns the exit
/// code: 2 for usage errors (nothing was sent), 1 for refusals and failures.
pub(super) fn report(error: &TunnelError) -> ExitCode {
    let (message, hint) = describe(error);
    let mut diagnostic =
        miette::MietteDiagnostic::new(printable(&message)).with_help(printable(&hint));
    if let Some(code) = error.code().map(ErrorCode::as_str).or(error.local_code()) {
        diagnostic = diagnostic.with_code(code);
    }
    eprintln!("{:?}", miette::Report::new(diagnostic));
    match error {
        TunnelError::InvalidOptions(_)
        | TunnelError::Edge(_)
        | TunnelError::Upstream(_)
        | TunnelError::HostHeader(_) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

pub(super) fn report_transport(error: &TransportError) -> ExitCode {
    let (code, hint) = match error {
        TransportError::Refused(api) => (Some(api.code.as_str()), api.hint.clone()),
        TransportError::Unreachable(_) => (
            None,
            "check `ssh <edge>` works with your tunnel key (`mytunnel doctor`)".to_owned(),
        ),
        TransportError::Malformed(_) => (
            None,
            "client and edge may not match: `mytunnel doctor` shows both versions".to_owned(),
        ),
    };
    let mut diagnostic =
        miette::MietteDiagnostic::new(printable(&error.to_string())).with_help(printable(&hint));
    if let Some(code) = code {
        diagnostic = diagnostic.with_code(code);
    }
    eprintln!("{:?}", miette::Report::new(diagnostic));
    ExitCode::from(1)
}
