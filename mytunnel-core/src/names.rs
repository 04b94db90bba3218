//! Validated names: lease ids, slugs, hosts, base domains, owners.
//!
//! Each type can only hold a value that passed its rules, so code that receives one
//! never checks again.

use std::fmt;
use std::str::FromStr;

use crate::protocol::ErrorCode;

/// A value that did not pass its type's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidValue {
    code: ErrorCode,
    what: &'static str,
    reason: String,
}

impl InvalidValue {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidArgument,
            what,
            reason: reason.into(),
        }
    }

    fn slug(reason: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidSlug,
            what: "slug",
            reason: reason.into(),
        }
    }

    /// The protocol error code this refusal maps to (`invalid_slug` or `invalid_argument`).
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// What kind of value was refused, e.g. `"slug"` or `"lease id"`.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

macro_rules! string_newtype_serde {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        serde_as_text!($ty);
        impl $ty {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

/// Checks one DNS label: `[a-z0-9-]`, 1–63 characters, no leading or trailing `-`.
/// Expects lower-case input.
fn check_dns_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("is empty".into());
    }
    if label.len() > 63 {
        return Err(format!("is {} characters long (at most 63)", label.len()));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("contains {c:?} (only a-z, 0-9 and - are allowed)"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("starts or ends with '-'".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

/// The unique id of a lease: `lease_` followed by 16 lowercase base32 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(String);
string_newtype_serde!(LeaseId);

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

impl LeaseId {
    /// The prefix every lease id starts with.
    pub const PREFIX: &'static str = "lease_";

    /// Builds an id from 80 bits of entropy. The caller takes the bytes from a CSPRNG.
    pub fn from_random_bytes(bytes: [u8; 10]) -> Self {
        let mut bits: u128 = 0;
        for b in bytes {
            bits = (bits << 8) | u128::from(b);
        }
        let mut out = String::with_capacity(Self::PREFIX.len() + 16);
        out.push_str(Self::PREFIX);
        for i in (0..16).rev() {
            // Masked to five bits, so always inside the 32-entry alphabet.
            let index = ((bits >> (i * 5)) & 0x1f) as usize;
            out.push(BASE32_ALPHABET.get(index).map_or('a', |b| char::from(*b)));
        }
        LeaseId(out)
    }
}

impl FromStr for LeaseId {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix(Self::PREFIX) else {
            return Err(InvalidValue::new(
                "lease id",
                format!("{s:?} does not start with \"lease_\""),
            ));
        };
        if rest.len() != 16 || !rest.bytes().all(|b| BASE32_ALPHABET.contains(&b)) {
            return Err(InvalidValue::new(
                "lease id",
                format!("{s:?} is not \"lease_\" and 16 characters of a-z, 2-7"),
            ));
        }
        Ok(LeaseId(s.to_owned()))
    }
}

// ---------------------------------------------------------------------------------------

/// A tunnel name: one DNS label, `[a-z0-9-]`, 1–63 characters, no leading or trailing `-`.
///
/// Input is lower-cased. Names starting with `released-` or `expired-` are refused because
/// tombstones use them. (A configurable reserved list is applied by policy, not here.)
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slug(String);
string_newtype_serde!(Slug);

const ADJECTIVES: [&str; 64] = [
    "able", "agile", "amber", "ample", "azure", "bold", "brave", "bright", "brisk", "calm",
    "clever", "cosy", "crisp", "daring", "deft", "eager", "early", "easy", "fair", "fancy", "fast",
    "fine", "fond", "fresh", "gentle", "glad", "golden", "grand", "happy", "hardy", "jolly",
    "keen", "kind", "lively", "lucky", "merry", "mellow", "mighty", "neat", "nimble", "noble",
    "plucky", "polite", "proud", "quick", "quiet", "rapid", "ready", "regal", "rosy", "rustic",
    "sharp", "shiny", "silver", "sleek", "smart", "snug", "solid", "sunny", "swift", "tidy",
    "vivid", "warm", "witty",
];

const ANIMALS: [&str; 64] = [
    "badger", "bat", "bear", "beaver", "bison", "camel", "cat", "cobra", "crane", "crow", "deer",
    "dingo", "dolphin", "dove", "eagle", "eel", "elk", "falcon", "ferret", "finch", "fox", "gecko",
    "goat", "goose", "hare", "hawk", "heron", "horse", "ibis", "jackal", "jay", "koala", "lark",
    "lemur", "lion", "llama", "lynx", "marten", "mole", "moose", "newt", "otter", "owl", "panda",
    "parrot", "pony", "puffin", "quail", "rabbit", "raven", "robin", "seal", "shrew", "sloth",
    "stoat", "swan", "tapir", "tiger", "toad", "trout", "turtle", "viper", "walrus", "wolf",
];

impl Slug {
    /// Prefixes that only tombstones may use.
    pub const TOMBSTONE_PREFIXES: [&'static str; 2] = ["released-", "expired-"];

    /// A readable generated name such as `brisk-otter-42`, from 4 bytes of entropy.
    ///
    /// There are 64 × 64 × 90 = 368,640 such names; the store checks for collisions.
    pub fn generated(bytes: [u8; 4]) -> Self {
        let [a, b, c, d] = bytes;
        let pick = |list: &[&'static str; 64], byte: u8| {
            list.get(usize::from(byte) % list.len())
                .copied()
                .unwrap_or("x")
        };
        let adjective = pick(&ADJECTIVES, a);
        let animal = pick(&ANIMALS, b);
        let number = u16::from_be_bytes([c, d]) % 90 + 10;
        Slug(format!("{adjective}-{animal}-{number}"))
    }
}

impl FromStr for Slug {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        check_dns_label(&lower).map_err(|reason| InvalidValue::slug(format!("{s:?} {reason}")))?;
        if let Some(prefix) = Self::TOMBSTONE_PREFIXES
            .iter()
            .find(|p| lower.starts_with(**p))
        {
            return Err(InvalidValue::slug(format!(
                "{s:?} starts with {prefix:?}, which is reserved for tombstones"
            )));
        }
        Ok(Slug(lower))
    }
}

// ---------------------------------------------------------------------------------------

/// The DNS name under which tunnels are published, e.g. `tunnel.example.com`.
///
/// Lower-cased, a trailing dot removed, every label a valid DNS label, at most 189
/// characters so that any `<slug>.<base>` host fits in 253.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseDomain(String);
string_newtype_serde!(BaseDomain);

impl BaseDomain {
    /// The public host of a slug: `<slug>.<base_domain>`.
    pub fn host_for(&self, slug: &Slug) -> Host {
        Host(format!("{}.{}", slug.0, self.0))
    }
}

fn check_dns_name(name: &str, max_len: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > max_len {
        return Err(format!(
            "is {} characters long (at most {max_len})",
            name.len()
        ));
    }
    for label in name.split('.') {
        check_dns_label(label).map_err(|reason| format!("has a label {label:?} that {reason}"))?;
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("looks like an IP address, not a DNS name".into());
    }
    Ok(())
}

impl FromStr for BaseDomain {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        check_dns_name(name, 189)
            .map_err(|reason| InvalidValue::new("base domain", format!("{s:?} {reason}")))?;
        Ok(BaseDomain(name.to_owned()))
    }
}

// ---------------------------------------------------------------------------------------

/// A public tunnel host, `<slug>.<base_domain>`, lower-case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Host(String);
string_newtype_serde!(Host);

impl FromStr for Host {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        check_dns_name(name, 253)
            .map_err(|reason| InvalidValue::new("host", format!("{s:?} {reason}")))?;
        if !name.contains('.') {
            return Err(InvalidValue::new(
                "host",
                format!("{s:?} has a single label"),
            ));
        }
        Ok(Host(name.to_owned()))
    }
}

// ---------------------------------------------------------------------------------------

/// The OS user that owns a lease. Taken from the uid of the ctl process, never from input.
///
/// 1–64 characters of `[A-Za-z0-9._-]`, not starting with `-`, optionally ending in `$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner(String);
string_newtype_serde!(Owner);

impl FromStr for Owner {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s.strip_suffix('$').unwrap_or(s);
        let ok = !body.is_empty()
            && s.len() <= 64
            && !body.starts_with('-')
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Owner(s.to_owned()))
        } else {
            Err(InvalidValue::new(
                "owner",
                format!("{s:?} is not a user name of 1-64 characters [A-Za-z0-9._-]"),
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------

/// The id of an edge among the edges that share one lease database
/// (`MYTUNNEL_EDGE_ID`): each lease records the edge that holds its tunnel.
///
/// 1–63 characters of `[a-z0-9-]`, not starting or ending with `-` (a DNS label, so an
/// edge can be named after its host).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeId(String);
string_newtype_serde!(EdgeId);

impl EdgeId {
    /// The id of an edge that was given none: `local`.
    pub fn local() -> EdgeId {
        EdgeId("local".to_owned())
    }
}

impl FromStr for EdgeId {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match check_dns_label(s) {
            Ok(()) => Ok(EdgeId(s.to_owned())),
            Err(reason) => Err(InvalidValue::new(
                "edge id",
                format!("{s:?} is not an edge id: {reason}"),
            )),
        }
    }
}

/// Where the other edges' Caddy reaches this edge's Caddy (`MYTUNNEL_EDGE_URL`), to
/// forward a request for a host whose tunnel this edge holds:
/// `https://edge-a.example.com` (the edge's public name, TLS checked against the tunnel
/// host's certificate) or `http://10.0.0.2` (plain HTTP, for a private network).
///
/// A scheme, a host (a DNS name, an IPv4 address or a bracketed IPv6 address) and an
/// optional port; nothing else (no user, path, query or fragment).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeUrl {
    https: bool,
    host: String,
    port: u16,
}

impl EdgeUrl {
    /// Whether requests go over TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// `host:port`, as a proxy dials it.
    pub fn dial(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for EdgeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}
serde_as_text!(EdgeUrl);

impl FromStr for EdgeUrl {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = |reason: &str| {
            InvalidValue::new(
                "edge URL",
                format!("{s:?} is not an edge URL (http:// or https://, a host, a port): {reason}"),
            )
        };
        let (https, rest) = if let Some(rest) = s.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(refuse("the scheme must be http:// or https://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(refuse(
                "it may not have a user, a path, a query or a fragment",
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| refuse("the port must be 1-65535"))?;
                (host, port)
            }
            _ => (rest, if https { 443 } else { 80 }),
        };
        let valid_host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else if host.parse::<std::net::Ipv4Addr>().is_ok() {
            true
        } else {
            host.len() <= 253 && host.split('.').all(|label| check_dns_label(label).is_ok())
        };
        if !valid_host {
            return Err(refuse(
                "the host must be a lower-case DNS name or an IP address",
            ));
        }
        Ok(EdgeUrl {
            https,
            host: host.to_owned(),
            port,
        })
    }
}

// ---------------------------------------------------------------------------------------

/// How a command names a lease: by id, by public host, or by slug.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeaseRef {
    /// `lease_…`
    Id(LeaseId),
    /// `portal.tunnel.example.com`
    Host(Host),
    /// `portal`
    Slug(Slug),
}

impl FromStr for LeaseRef {
    type Err = InvalidValue;

    /// `lease_…` is an id, anything with a dot a host, anything else a slug.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = |e: InvalidValue| {
            InvalidValue::new(
                "lease reference",
                format!("{s:?} is not a lease id, host or slug ({})", e.reason()),
            )
        };
        if s.starts_with(LeaseId::PREFIX) {
            s.parse().map(LeaseRef::Id).map_err(refuse)
        } else if s.contains('.') {
            s.parse().map(LeaseRef::Host).map_err(refuse)
        } else {
            s.parse().map(LeaseRef::Slug).map_err(refuse)
        }
    }
}

impl fmt::Display for LeaseRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseRef::Id(id) => id.fmt(f),
            LeaseRef::Host(host) => host.fmt(f),
            LeaseRef::Slug(slug) => slug.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_ids_are_dns_labels() {
        assert_eq!("fra-1".parse::<EdgeId>().unwrap().as_str(), "fra-1");
        assert_eq!(EdgeId::local().as_str(), "local");
        for bad in ["", "Fra", "fra_1", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(bad.parse::<EdgeId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn edge_urls_are_a_scheme_a_host_and_a_port() {
        for (text, shown, dial, https) in [
            (
                "https://edge-a.example.com",
                "https://edge-a.example.com:443",
                "edge-a.example.com:443",
                true,
            ),
            (
                "https://edge-a.example.com:8443/",
                "https://edge-a.example.com:8443",
                "edge-a.example.com:8443",
                true,
            ),
            (
                "http://10.0.0.2",
                "http://10.0.0.2:80",
                "10.0.0.2:80",
                false,
            ),
            (
                "http://[fd00::2]:8080",
                "http://[fd00::2]:8080",
                "[fd00::2]:8080",
                false,
            ),
            (
                "http://127.0.0.1:41234",
                "http://127.0.0.1:41234",
                "127.0.0.1:41234",
                false,
            ),
        ] {
            let url: EdgeUrl = text.parse().unwrap();
            assert_eq!(
                (
                    url.to_string().as_str(),
                    url.dial().as_str(),
                    url.is_https()
                ),
                (shown, dial, https),
                "{text}"
            );
            assert_eq!(url.to_string().parse::<EdgeUrl>().unwrap(), url);
        }
        for bad in [
            "edge-a.example.com",
            "ftp://edge-a.example.com",
            "https://",
            "https://Edge.example.com",
            "https://u:p@edge.example.com",
            "https://edge.example.com/path",
            "https://edge.example.com?x=1",
            "https://edge.example.com:0",
            "https://edge.example.com:65536",
            "https://edge.example.com:x",
            "http://[fd00::2",
            "http://[nothex]:80",
            "http://a b",
        ] {
            assert!(bad.parse::<EdgeUrl>().is_err(), "{bad:?}");
        }
    }
    use proptest::prelude::*;

    #[test]
    fn slug_rules() {
        assert_eq!("Portal".parse::<Slug>().unwrap().as_str(), "portal");
        assert_eq!("a".parse::<Slug>().unwrap().as_str(), "a");
        assert_eq!("a-b-9".parse::<Slug>().unwrap().as_str(), "a-b-9");
        assert!("x".repeat(63).parse::<Slug>().is_ok());
        for bad in [
            "",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "a b",
            "é",
            "released-x",
            "expired-y",
            "Released-x",
            &"x".repeat(64),
        ] {
            let err = bad.parse::<Slug>().unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidSlug, "{bad:?}");
        }
        // The bare words are fine: only the tombstone prefixes are taken.
        assert!("released".parse::<Slug>().is_ok());
        assert!("expired".parse::<Slug>().is_ok());
    }

    #[test]
    fn generated_slugs_are_readable_and_valid() {
        let slug = Slug::generated([0, 0, 0, 0]);
        assert_eq!(slug.as_str(), "able-badger-10");
        let slug = Slug::generated([255, 255, 255, 255]);
        assert_eq!(slug.as_str(), "witty-wolf-25");
    }

    #[test]
    fn lease_id_format() {
        let id = LeaseId::from_random_bytes([0; 10]);
        assert_eq!(id.as_str(), "lease_aaaaaaaaaaaaaaaa");
        let id = LeaseId::from_random_bytes([0xff; 10]);
        assert_eq!(id.as_str(), "lease_7777777777777777");
        for bad in [
            "lease_",
            "lease_abc",
            "lease_AAAAAAAAAAAAAAAA",
            "lease_aaaaaaaaaaaaaaa1",
            "x",
        ] {
            assert!(bad.parse::<LeaseId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn base_domain_and_host() {
        let d: BaseDomain = "Tunnel.Example.COM.".parse().unwrap();
        assert_eq!(d.as_str(), "tunnel.example.com");
        let slug: Slug = "portal".parse().unwrap();
        assert_eq!(d.host_for(&slug).as_str(), "portal.tunnel.example.com");
        for bad in [
            "",
            ".",
            "a..b",
            "-a.com",
            "10.0.0.1",
            "a_b.com",
            "exa mple.com",
            "x.y-",
        ] {
            assert!(bad.parse::<BaseDomain>().is_err(), "{bad}");
        }
        assert!("localhost".parse::<BaseDomain>().is_ok());
    }

    #[test]
    fn lease_ref_kinds() {
        assert!(matches!(
            "lease_aaaaaaaaaaaaaaaa".parse(),
            Ok(LeaseRef::Id(_))
        ));
        assert!(matches!("portal.t.example".parse(), Ok(LeaseRef::Host(_))));
        assert!(matches!("portal".parse(), Ok(LeaseRef::Slug(_))));
        assert!("lease_nope".parse::<LeaseRef>().is_err());
        assert!("a b".parse::<LeaseRef>().is_err());
    }

    #[test]
    fn owner_rules() {
        for good in ["alice", "bob.smith", "svc_1", "machine$", "A-b"] {
            assert!(good.parse::<Owner>().is_ok(), "{good}");
        }
        for bad in ["", "-x", "a b", "a/b", "$", "a\n", &"x".repeat(65)] {
            assert!(bad.parse::<Owner>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn generated_slugs_always_parse(bytes in any::<[u8; 4]>()) {
            let slug = Slug::generated(bytes);
            prop_assert_eq!(slug.as_str().parse::<Slug>().unwrap(), slug);
        }

        #[test]
        fn lease_ids_always_parse(bytes in any::<[u8; 10]>()) {
            let id = LeaseId::from_random_bytes(bytes);
            prop_assert_eq!(id.as_str().parse::<LeaseId>().unwrap(), id);
        }

        #[test]
        fn parsed_slugs_are_dns_labels(s in "\\PC{0,80}") {
            if let Ok(slug) = s.parse::<Slug>() {
                let v = slug.as_str();
                prop_assert!(!v.is_empty() && v.len() <= 63);
                prop_assert!(v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert!(!v.starts_with('-') && !v.ends_with('-'));
            }
        }
    }
}
