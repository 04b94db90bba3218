//! A visitor's plain HTTP request, as tests and the bench make them through Caddy or to
//! serve's loopback answers: one `GET` per connection, read to its end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One HTTP/1.0 `GET path` to `addr` with `Host: host`, read until the server closes: the
/// status and the body, or `None` when no answer came (refused, reset, timed out).
pub fn http_get_path(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mytunnel-test\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// What a visitor's curl saw of `https://host:port/` ([`curl_https`]).
#[derive(Debug, Clone)]
pub struct CurlVisit {
    /// curl's exit code (0: an answer came; 35: the TLS handshake failed, e.g. no
    /// certificate for the host; 60: one the CA does not vouch for).
    pub exit: Option<i32>,
    /// The answer's HTTP status, when one came.
    pub status: Option<u16>,
    /// The answer's body.
    pub body: String,
    /// curl's `--verbose` account on stderr: the handshake, the certificate it matched
    /// (`matched cert's "<host>"`), the headers, or its error.
    pub verbose: String,
}

/// `curl https://host:port/` as a visitor whose resolver points `host` at 127.0.0.1 and
/// who trusts only the CA certificate `ca` (no proxy from the environment, 20 s at most).
pub fn curl_https(host: &str, port: u16, ca: &std::path::Path) -> std::io::Result<CurlVisit> {
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--verbose", "--max-time", "20"])
        .args(["--write-out", "\n%{http_code}"])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}/"))
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .stdin(std::process::Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // --write-out puts the status after the body, on a line of its own (000: none).
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Ok(CurlVisit {
        exit: out.status.code(),
        status: code.trim().parse().ok().filter(|code| *code != 0),
        body: body.to_owned(),
        verbose: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
