//! Where the app listens: the target of [`Tunnel::http`](crate::Tunnel::http) and of
//! `mytunnel http <TARGET>`, and what the app is told about the request's host.
//!
//! A target is one of:
//!
//! | form | example | reaches |
//! |---|---|---|
//! | a port | `3000` | `localhost:3000`: 127.0.0.1, then ::1 |
//! | `host:port` | `localhost:5173`, `127.0.0.2:8080`, `devbox.lan:80` | that host |
//! | `[v6]:port` | `[::1]:18555` | that IPv6 address |
//! | a URL | `http://localhost:3000`, `https://localhost:8443` | that host, over HTTP or HTTPS |
//!
//! `localhost` (and the unspecified addresses `0.0.0.0` and `[::]` that dev servers print)
//! means what it means to the user's other tools: both loopback addresses are tried, and
//! the tunnel forwards to the one that answers. A URL's port defaults to 80 or 443; it may
//! end in `/`, but carries no other path, query or user.
//!
//! Every malformed target is refused with an [`UpstreamError`] whose
//! [`code`](UpstreamError::code) is stable.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// How the tunnel's proxy speaks to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS; see [`AppCertificates`] for how the app's certificate is
    /// checked.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// The host part of an [`Upstream`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UpstreamHost {
    /// `localhost`, a port alone, `0.0.0.0` or `[::]`: 127.0.0.1, then ::1.
    Localhost,
    /// One IP address.
    Ip(IpAddr),
    /// A DNS name (lower-cased), resolved when the tunnel connects to the app; every
    /// address it resolves to is tried.
    Name(String),
}

/// Where the app listens: scheme, host and port. Parse one from text
/// (`"localhost:5173".parse()`), or build one with [`Upstream::localhost`] and
/// [`Upstream::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    scheme: Scheme,
    host: UpstreamHost,
    port: u16,
}

impl Upstream {
    /// `http://localhost:<port>`: what a port alone means. Port 0 is refused.
    pub fn localhost(port: u16) -> Result<Upstream, UpstreamError> {
        Upstream::new(Scheme::Http, UpstreamHost::Localhost, port)
    }

    /// Any upstream. Port 0 is refused, and a name must be a DNS name.
    pub fn new(scheme: Scheme, host: UpstreamHost, port: u16) -> Result<Upstream, UpstreamError> {
        if port == 0 {
            return Err(UpstreamError::Port {
                text: "0".to_owned(),
            });
        }
        let host = match host {
            UpstreamHost::Name(name) => parse_host(&name)?,
            UpstreamHost::Ip(ip) if ip.is_unspecified() => UpstreamHost::Localhost,
            other => other,
        };
        Ok(Upstream { scheme, host, port })
    }

    /// HTTP or HTTPS.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host.
    pub fn host(&self) -> &UpstreamHost {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host and port as an app expects them in its `Host` header: `localhost:3000`,
    /// `[::1]:18555`, `127.0.0.2:8080`; the port is left out when it is the scheme's
    /// default (`https://localhost` → `localhost`).
    pub fn authority(&self) -> String {
        let host = match &self.host {
            UpstreamHost::Localhost => "localhost".to_owned(),
            UpstreamHost::Ip(IpAddr::V4(ip)) => ip.to_string(),
            UpstreamHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            UpstreamHost::Name(name) => name.clone(),
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The addresses to try, in order, without a DNS lookup: both loopback addresses for
    /// `localhost`, the address itself for an IP; `None` for a DNS name.
    pub fn fixed_addresses(&self) -> Option<Vec<SocketAddr>> {
        match &self.host {
            UpstreamHost::Localhost => Some(vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, self.port)),
            ]),
            UpstreamHost::Ip(ip) => Some(vec![SocketAddr::new(*ip, self.port)]),
            UpstreamHost::Name(_) => None,
        }
    }

    /// The addresses to try, in order: [`Upstream::fixed_addresses`], or what the name
    /// resolves to now.
    pub async fn addresses(&self) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(fixed) = self.fixed_addresses() {
            return Ok(fixed);
        }
        let UpstreamHost::Name(name) = &self.host else {
            return Ok(Vec::new());
        };
        let mut resolved: Vec<SocketAddr> = Vec::new();
        for addr in tokio::net::lookup_host((name.as_str(), self.port)).await? {
            if !resolved.contains(&addr) {
                resolved.push(addr);
            }
        }
        Ok(resolved)
    }
}

impl fmt::Display for Upstream {
    /// `http://localhost:3000`, `https://[::1]:8443`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())
    }
}

impl FromStr for Upstream {
    type Err = UpstreamError;

    fn from_str(text: &str) -> Result<Upstream, UpstreamError> {
        if text.is_empty() {
            return Err(UpstreamError::Empty);
        }
        if text.len() > MAX_TARGET_LEN {
            return Err(UpstreamError::Host {
                text: clip(text),
                reason: "it is longer than a host and port can be",
            });
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return Upstream::localhost(parse_port(text)?);
        }
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = match scheme.to_ascii_lowercase().as_str() {
                    "http" => Scheme::Http,
                    "https" => Scheme::Https,
                    _ => {
                        return Err(UpstreamError::Scheme {
                            scheme: scheme.to_owned(),
                        })
                    }
                };
                (Some(scheme), rest)
            }
            None => (None, text),
        };
        let authority = match rest.find(['/', '?', '#']) {
            Some(at) => {
                let (authority, path) = rest.split_at(at);
                if scheme.is_none() || path != "/" {
                    return Err(UpstreamError::Path {
                        text: text.to_owned(),
                    });
                }
                authority
            }
            None => rest,
        };
        if authority.contains('@') {
            return Err(UpstreamError::Host {
                text: text.to_owned(),
                reason: "a target carries no user or password",
            });
        }
        let (host, port) = split_host_port(authority)?;
        let port = match (port, scheme) {
            (Some(port), _) => parse_port(port)?,
            (None, Some(scheme)) => scheme.default_port(),
            (None, None) => {
                return Err(UpstreamError::NoPort {
                    text: text.to_owned(),
                })
            }
        };
        Upstream::new(scheme.unwrap_or(Scheme::Http), parse_host(host)?, port)
    }
}

/// The longest target accepted: a URL with a 253-byte name and a port, with room to spare.
const MAX_TARGET_LEN: usize = 300;

/// `host:port`, `[v6]:port`, `host` or `[v6]`, into the host and the port text.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), UpstreamError> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((v6, after)) = bracketed.split_once(']') else {
            return Err(UpstreamError::Host {
                text: authority.to_owned(),
                reason: "the IPv6 address has no closing ]",
            });
        };
        return match after {
            "" => Ok((authority.get(..v6.len() + 2).unwrap_or(authority), None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((
                    authority.get(..v6.len() + 2).unwrap_or(authority),
                    Some(port),
                )),
                None => Err(UpstreamError::Host {
                    text: authority.to_owned(),
                    reason: "a port follows the ] after a colon, e.g. [::1]:3000",
                }),
            },
        };
    }
    match authority.split_once(':') {
        Some((_, port)) if port.contains(':') => Err(UpstreamError::Host {
            text: authority.to_owned(),
            reason: "put an IPv6 address in brackets, e.g. [::1]:3000",
        }),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

/// 1 to 65535, in decimal digits only.
fn parse_port(text: &str) -> Result<u16, UpstreamError> {
    let bad = || UpstreamError::Port { text: clip(text) };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(port) => Ok(port),
    }
}

/// `localhost`, an IP address (`[v6]` in brackets) or a DNS name.
fn parse_host(host: &str) -> Result<UpstreamHost, UpstreamError> {
    let bad = |reason| UpstreamError::Host {
        text: clip(host),
        reason,
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match v6.parse::<Ipv6Addr>() {
            Ok(ip) if ip.is_unspecified() => Ok(UpstreamHost::Localhost),
            Ok(ip) => Ok(UpstreamHost::Ip(IpAddr::V6(ip))),
            Err(_) => Err(bad("it is not an IPv6 address")),
        };
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(if ip.is_unspecified() {
            UpstreamHost::Localhost
        } else {
            UpstreamHost::Ip(IpAddr::V4(ip))
        });
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return Err(bad("put an IPv6 address in brackets, e.g. [::1]:3000"));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name == "localhost" {
        return Ok(UpstreamHost::Localhost);
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(bad(
            "it is not a host name (letters, digits, '-' and '_' in dot-separated labels)",
        ));
    }
    Ok(UpstreamHost::Name(name))
}

/// At most 64 characters of what was given, for an error message.
fn clip(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", text.get(..at).unwrap_or(text)),
        None => text.to_owned(),
    }
}

/// Why a target was refused. Each has a stable [`code`](UpstreamError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// Nothing was given.
    #[error("the target is empty")]
    Empty,
    /// The port is not a number from 1 to 65535.
    #[error("{text:?} is not a port: a port is a number from 1 to 65535")]
    Port {
        /// The port as given.
        text: String,
    },
    /// `host` without a port (and without a scheme to take one from).
    #[error("{text:?} has no port: say which one, e.g. {text}:3000")]
    NoPort {
        /// The target as given.
        text: String,
    },
    /// A scheme other than `http` and `https`.
    #[error("{scheme:?} is not a scheme the tunnel speaks to an app: use http:// or https://")]
    Scheme {
        /// The scheme as given.
        scheme: String,
    },
    /// The host is malformed.
    #[error("{text:?} is not a host: {reason}")]
    Host {
        /// The host (or target) as given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A path, query or fragment, which a tunnel cannot publish on its own.
    #[error(
        "{text:?} has a path: a tunnel publishes the whole app, so give only its host and port"
    )]
    Path {
        /// The target as given.
        text: String,
    },
}

impl UpstreamError {
    /// A stable, machine-readable code: `target_empty`, `target_port`, `target_no_port`,
    /// `target_scheme`, `target_host` or `target_path`.
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::Empty => "target_empty",
            UpstreamError::Port { .. } => "target_port",
            UpstreamError::NoPort { .. } => "target_no_port",
            UpstreamError::Scheme { .. } => "target_scheme",
            UpstreamError::Host { .. } => "target_host",
            UpstreamError::Path { .. } => "target_path",
        }
    }

    /// The forms a target takes.
    pub fn hint(&self) -> String {
        "a target is a port (3000), host:port (localhost:5173, 127.0.0.2:8080, [::1]:3000) \
         or a URL (http://localhost:3000, https://localhost:8443)"
            .to_owned()
    }
}

/// What can name an app: a port (`3000`), target text (`"localhost:5173"`), an
/// [`Upstream`] or a socket address. Text is parsed when the tunnel's options are checked,
/// so a malformed target is a [`TunnelError::Upstream`](crate::TunnelError::Upstream)
/// from [`TunnelBuilder::validate`](crate::TunnelBuilder::validate) and `open`.
pub trait IntoUpstream {
    /// The upstream, or why the text is not one.
    fn into_upstream(self) -> Result<Upstream, UpstreamError>;
}

impl IntoUpstream for Upstream {
    fn into_upstream(self) -> Result<Upstream, UpstreamError> {
        Ok(self)
    }
}

impl IntoUpstream for u16 {
    fn into_upstream(self) -> Result<Upstream, UpstreamError> {
        Upstream::localhost(self)
    }
}

impl IntoUpstream for &str {
    fn into_upstream(self) -> Result<Upstream, UpstreamError> {
        self.parse()
    }
}

impl IntoUpstream for String {
    fn into_upstream(self) -> Result<Upstream, UpstreamError> {
        self.parse()
    }
}

impl IntoUpstream for &String {
    fn into_upstream(self) -> Result<Upstream, UpstreamError> {
        self.parse()
    }
}

impl IntoUpstream for SocketAddr {
    fn into_upstream(self) -> Result<Upstream, UpstreamError> {
        Upstream::new(Scheme::Http, UpstreamHost::Ip(self.ip()), self.port())
    }
}

/// The `Host` header the app sees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostHeader {
    /// The tunnel's public host, as the visitor sent it (the default).
    #[default]
    Public,
    /// The host the app listens on: the target's [`authority`](Upstream::authority),
    /// e.g. `localhost:3000`, for apps that check or route by host.
    Rewrite,
    /// This value, e.g. `myapp.test`.
    Value(String),
}

impl FromStr for HostHeader {
    type Err = HostHeaderError;

    /// `rewrite`, or a host with an optional port (`myapp.test`, `localhost:8080`).
    fn from_str(text: &str) -> Result<HostHeader, HostHeaderError> {
        if text == "rewrite" {
            return Ok(HostHeader::Rewrite);
        }
        // The same rules as a target's host and port.
        let valid = text.len() <= MAX_TARGET_LEN
            && split_host_port(text).is_ok_and(|(host, port)| {
                parse_host(host).is_ok() && port.is_none_or(|port| parse_port(port).is_ok())
            });
        if valid {
            Ok(HostHeader::Value(text.to_owned()))
        } else {
            Err(HostHeaderError { text: clip(text) })
        }
    }
}

/// A `Host` value that is not `rewrite` or a host with an optional port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a host header: give `rewrite` or a host with an optional port, e.g. myapp.test or localhost:8080")]
pub struct HostHeaderError {
    /// What was given.
    pub text: String,
}

impl HostHeaderError {
    /// A stable, machine-readable code: `host_header_invalid`.
    pub fn code(&self) -> &'static str {
        "host_header_invalid"
    }
}

/// How the certificate of an `https://` app is checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AppCertificates {
    /// Against the operating system's trust store (with a local CA such as mkcert's, if
    /// it is installed there), for the target's host name: the default.
    #[default]
    Verify,
    /// As [`AppCertificates::Verify`], also trusting these CA certificates (DER).
    VerifyWithRoots(Vec<Vec<u8>>),
    /// Any certificate: for an app on this machine with a self-signed certificate. The
    /// connection is still encrypted, but not to a checked party, so use it for apps
    /// reached over loopback only.
    AcceptAny,
}

#[cfg(test)]
mod tests;
