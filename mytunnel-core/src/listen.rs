//! Loopback listen addresses: where `mytunneld serve` answers HTTP on this machine only
//! (Caddy's on-demand TLS `ask` endpoint, metrics).
//!
//! Only an IP literal in 127.0.0.0/8 or `::1` with a port is taken: an endpoint that
//! decides which hosts get certificates must not be reachable from the network, and a
//! name would be resolved by someone else's rules.
//!
//! ```
//! use mytunnel_core::listen::LoopbackAddress;
//!
//! let ask: LoopbackAddress = "127.0.0.1:2020".parse()?;
//! assert_eq!(ask.to_string(), "127.0.0.1:2020");
//! assert!("0.0.0.0:2020".parse::<LoopbackAddress>().is_err());
//! assert!("[::1]:0".parse::<LoopbackAddress>().is_err());
//! # Ok::<(), mytunnel_core::InvalidValue>(())
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::names::InvalidValue;

/// A TCP address on the loopback interface with a port other than 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoopbackAddress(SocketAddr);

impl LoopbackAddress {
    /// The socket address.
    pub fn socket_addr(self) -> SocketAddr {
        self.0
    }
}

impl fmt::Display for LoopbackAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for LoopbackAddress {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown: String = s.chars().take(80).collect();
        let parsed: Option<SocketAddr> = s.trim().parse().ok();
        // The example keeps the port asked for, when there is one to keep.
        let port = parsed
            .map(|addr| addr.port())
            .filter(|port| *port != 0)
            .map_or_else(|| "PORT".to_owned(), |port| port.to_string());
        let refuse = |why: &str| {
            InvalidValue::new(
                "loopback address",
                format!(
                    "{shown:?} {why}; give IP:PORT on loopback, e.g. 127.0.0.1:{port} or [::1]:{port}"
                ),
            )
        };
        let addr = parsed.ok_or_else(|| refuse("is not an IP address with a port"))?;
        if !addr.ip().is_loopback() {
            return Err(refuse("is not a loopback address"));
        }
        if addr.port() == 0 {
            return Err(refuse("has port 0"));
        }
        Ok(LoopbackAddress(addr))
    }
}

impl From<LoopbackAddress> for SocketAddr {
    fn from(address: LoopbackAddress) -> SocketAddr {
        address.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_literals_with_a_port_are_taken() {
        for ok in [
            "127.0.0.1:2020",
            "127.1.2.3:9",
            "[::1]:65535",
            " 127.0.0.1:80 ",
        ] {
            assert!(ok.parse::<LoopbackAddress>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn anything_reachable_from_elsewhere_or_unparsed_is_refused() {
        // (input, the example the refusal gives: the port asked for, when there is one)
        for (bad, example) in [
            ("0.0.0.0:2020", "2020"),
            ("[::]:9464", "9464"),
            ("10.0.0.1:2020", "2020"),
            ("[::ffff:127.0.0.1]:2020", "2020"),
            ("localhost:2020", "PORT"),
            ("127.0.0.1", "PORT"),
            ("127.0.0.1:0", "PORT"),
            ("127.0.0.1:99999", "PORT"),
            ("http://127.0.0.1:2020", "PORT"),
            ("", "PORT"),
        ] {
            let error = bad.parse::<LoopbackAddress>().unwrap_err();
            assert_eq!(error.code(), crate::ErrorCode::InvalidArgument, "{bad}");
            assert!(
                error
                    .reason()
                    .ends_with(&format!("e.g. 127.0.0.1:{example} or [::1]:{example}")),
                "{bad}: {error}"
            );
        }
    }
}
