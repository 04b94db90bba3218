//! The Caddy admin API address, which must be reachable only from loopback.
//!
//! The admin API can add, remove and edit routes, so `mytunneld` refuses any address
//! whose host is not a loopback address. The check is on the parsed address, never a
//! string prefix: `127.0.0.1.evil.com`, `localhost.evil.com`, `0.0.0.0`,
//! `[::ffff:10.0.0.1]` and userinfo tricks are all refused. The parser is deliberately
//! narrower than a general URL parser: `http://HOST[:PORT][/]` with HOST one of
//! `localhost`, an IPv4 address in 127.0.0.0/8, or `[::1]`; or a unix socket given as
//! `unix//abs/path` (Caddy's form) or `unix:///abs/path`. Requests are then made to the
//! canonical form of what was parsed, so no other parser ever sees the original text.
//!
//! ```
//! use mytunnel_core::admin::CaddyAdminAddress;
//!
//! assert!("http://127.0.0.1:2019".parse::<CaddyAdminAddress>().is_ok());
//! assert!("http://127.0.0.1.nip.io:2019".parse::<CaddyAdminAddress>().is_err());
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::names::InvalidValue;

/// A validated Caddy admin API address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CaddyAdminAddress {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// A unix socket path (absolute).
    Unix(String),
}

impl CaddyAdminAddress {
    /// The default, `http://127.0.0.1:2019`.
    pub fn default_address() -> Self {
        CaddyAdminAddress::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2019))
    }

    /// The `Host` header value Caddy expects on its admin API for this address.
    pub fn host_header(&self) -> String {
        match self {
            CaddyAdminAddress::Tcp(addr) => addr.to_string(),
            CaddyAdminAddress::Unix(_) => "localhost".to_owned(),
        }
    }
}

fn refuse(input: &str, why: &str) -> InvalidValue {
    InvalidValue::new(
        "caddy admin url",
        format!(
            "{:?} {why}; the admin API must be loopback-only, e.g. http://127.0.0.1:2019 or unix//run/caddy/admin.sock",
            input.chars().take(120).collect::<String>()
        ),
    )
}

fn parse_unix(input: &str, path: &str) -> Result<CaddyAdminAddress, InvalidValue> {
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(refuse(input, "is not an absolute socket path"));
    }
    if path.chars().any(char::is_control) || path.len() > 107 {
        return Err(refuse(input, "is not a usable socket path"));
    }
    Ok(CaddyAdminAddress::Unix(path.to_owned()))
}

fn parse_port(input: &str, text: &str) -> Result<u16, InvalidValue> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse(input, "has an invalid port"));
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(refuse(input, "has an invalid port")),
    }
}

impl FromStr for CaddyAdminAddress {
    type Err = InvalidValue;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if let Some(path) = input.strip_prefix("unix://") {
            return parse_unix(input, path);
        }
        if let Some(path) = input.strip_prefix("unix/") {
            return parse_unix(input, path);
        }
        let Some(rest) = input.strip_prefix("http://") else {
            return Err(refuse(input, "is not an http:// or unix socket address"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.chars().any(|c| {
            matches!(c, '/' | '?' | '#' | '@' | '\\' | '%') || c.is_whitespace() || c.is_control()
        }) {
            return Err(refuse(
                input,
                "may only be http://HOST[:PORT] (no user info, path, query or escapes)",
            ));
        }
        let (ip, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((host, after)) = bracketed.split_once(']') else {
                return Err(refuse(input, "has an unclosed IPv6 bracket"));
            };
            let ip: Ipv6Addr = host
                .parse()
                .map_err(|_| refuse(input, "has an invalid IPv6 address"))?;
            let port = match after {
                "" => 80,
                p => parse_port(input, p.strip_prefix(':').unwrap_or("x"))?,
            };
            (IpAddr::V6(ip), port)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, parse_port(input, port)?),
                None => (authority, 80),
            };
            let ip = if host.eq_ignore_ascii_case("localhost") {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V4(host.parse::<Ipv4Addr>().map_err(|_| {
                    refuse(
                        input,
                        "does not name a loopback address (localhost, 127.0.0.0/8 or [::1])",
                    )
                })?)
            };
            (ip, port)
        };
        if !ip.is_loopback() {
            return Err(refuse(input, "is not a loopback address"));
        }
        Ok(CaddyAdminAddress::Tcp(SocketAddr::new(ip, port)))
    }
}

impl fmt::Display for CaddyAdminAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaddyAdminAddress::Tcp(addr) => write!(f, "http://{addr}"),
            CaddyAdminAddress::Unix(path) => write!(f, "unix/{path}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn loopback_addresses_are_accepted() {
        for (input, canonical) in [
            ("http://127.0.0.1:2019", "http://127.0.0.1:2019"),
            ("http://127.0.0.1:2019/", "http://127.0.0.1:2019"),
            ("http://localhost:2019", "http://127.0.0.1:2019"),
            ("http://LOCALHOST:2019", "http://127.0.0.1:2019"),
            ("http://127.8.9.10:2019", "http://127.8.9.10:2019"),
            ("http://[::1]:2019", "http://[::1]:2019"),
            ("http://127.0.0.1", "http://127.0.0.1:80"),
            ("unix//run/caddy/admin.sock", "unix//run/caddy/admin.sock"),
            ("unix:///run/caddy/admin.sock", "unix//run/caddy/admin.sock"),
        ] {
            let parsed: CaddyAdminAddress =
                input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn hostile_addresses_are_refused() {
        for input in [
            "http://127.0.0.1.nip.io:2019",
            "http://127.0.0.1.evil.com:2019",
            "http://localhost.evil.com:2019",
            "http://0.0.0.0:2019",
            "http://[::]:2019",
            "http://[::ffff:10.0.0.1]:2019",
            "http://[::ffff:127.0.0.1]:2019",
            "http://10.0.0.1:2019",
            "http://192.168.1.1:2019",
            "http://example.com:2019",
            "http://127.0.0.1@evil.com:2019",
            "http://evil.com@127.0.0.1:2019",
            "http://user:pw@127.0.0.1:2019",
            "http://127.0.0.1:2019@evil.com",
            "http://127.0.0.1%2eevil.com",
            "http://127.0.0.1\\@evil.com",
            "http://127.0.0.1:2019/../x",
            "http://127.0.0.1:2019?x",
            "http://127.0.0.1:2019#x",
            "http://127.1:2019",
            "http://2130706433:2019",
            "http://0x7f.0.0.1:2019",
            "http://0177.0.0.1:2019",
            "http://127.0.0.1:0",
            "http://127.0.0.1:65536",
            "http://127.0.0.1:+80",
            "http://127.0.0.1:",
            "http://[::1",
            "http://[::1]x",
            "http:// 127.0.0.1",
            "https://127.0.0.1:2019",
            "ftp://127.0.0.1",
            "127.0.0.1:2019",
            "",
            "unix//",
            "unix/relative.sock",
            "unix//run/a\nb",
        ] {
            assert!(
                input.parse::<CaddyAdminAddress>().is_err(),
                "accepted {input:?}"
            );
        }
    }

    proptest! {
        /// Whatever is accepted is loopback or a unix socket.
        #[test]
        fn accepted_means_loopback(s in "(http://|unix//)?[a-z0-9.:\\[\\]@%/]{0,40}") {
            if let Ok(CaddyAdminAddress::Tcp(addr)) = s.parse::<CaddyAdminAddress>() {
                prop_assert!(addr.ip().is_loopback(), "{s}");
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<CaddyAdminAddress>();
        }
    }
}
