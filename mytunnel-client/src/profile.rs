//! Which edge to use: flags, `MYTUNNEL_*` variables, and profiles in
//! `~/.config/mytunnel/config.toml`.
//!
//! ```toml
//! default_edge = "prod"
//!
//! [edges.prod]
//! destination = "tunnel@edge.example.com"   # an ssh destination or Host alias
//! base_domain = "tunnel.example.com"        # optional: checked against the URL
//! ssh_bin = "ssh"                           # optional
//! remote_bin = "/usr/local/bin/mytunneld"   # optional
//! ```
//!
//! Edges that share one lease database (and one base domain) can be listed together,
//! in the order they are tried, with `destinations` instead of `destination` (exactly
//! one of the two): a tunnel opens on the first that can be reached, and moves to the
//! next, keeping its name and URL, when its edge becomes unreachable:
//!
//! ```toml
//! [edges.team]
//! destinations = ["tunnel@a.example.com", "tunnel@b.example.com"]
//! base_domain = "tunnel.example.com"
//! ```
//!
//! `[tunnels.NAME]` tables name a tunnel's options, so that `mytunnel http NAME` (or
//! [`EdgeBuilder::http_profile`](crate::EdgeBuilder::http_profile)) opens it without
//! repeating them; flags and builder calls given as well take precedence:
//!
//! ```toml
//! [tunnels.shop]
//! target = "https://localhost:8443"         # a port, host:port or URL (crate::upstream)
//! name = "shop"                             # optional: the public name
//! host_header = "rewrite"                   # optional: `rewrite` or a host
//! upstream_insecure = true                  # optional: accept a self-signed certificate
//! edge = "prod"                             # optional: an edge profile or destination
//! ```
//!
//! Precedence: flag > environment (`MYTUNNEL_EDGE`, `MYTUNNEL_SSH_BIN`,
//! `MYTUNNEL_REMOTE_BIN`, `MYTUNNEL_BASE_DOMAIN`) > profile > default. An edge given by
//! flag or variable may name a profile or be an ssh destination itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An edge's ssh destinations (`user@host`, or `Host` aliases of `~/.ssh/config`) in the
/// order they are tried. Never empty: the first is where a tunnel opens when it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    first: String,
    rest: Vec<String>,
}

impl Destinations {
    /// One destination.
    pub fn one(destination: impl Into<String>) -> Destinations {
        Destinations {
            first: destination.into(),
            rest: Vec::new(),
        }
    }

    /// These destinations in this order; `None` for an empty list.
    pub fn from_vec(destinations: Vec<String>) -> Option<Destinations> {
        let mut all = destinations.into_iter();
        let first = all.next()?;
        Some(Destinations {
            first,
            rest: all.collect(),
        })
    }

    /// The first, tried first.
    pub fn first(&self) -> &str {
        &self.first
    }

    /// The destination at `index` (0 is the first).
    pub fn get(&self, index: usize) -> Option<&str> {
        match index.checked_sub(1) {
            None => Some(&self.first),
            Some(i) => self.rest.get(i).map(String::as_str),
        }
    }

    /// How many there are (at least one).
    pub fn count(&self) -> usize {
        self.rest.len().saturating_add(1)
    }

    /// Each in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.first.as_str()).chain(self.rest.iter().map(String::as_str))
    }
}

impl fmt::Display for Destinations {
    /// `a`, or `a, b, c`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, destination) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(destination)?;
        }
        Ok(())
    }
}

/// One `[edges.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "EdgeTable")]
pub struct EdgeProfile {
    /// Its ssh destinations, in order: `destination = "…"` gives one, `destinations =
    /// […]` several (edges that share one lease database).
    pub destinations: Destinations,
    /// The edge's base domain, if known.
    pub base_domain: Option<String>,
    /// The ssh binary.
    pub ssh_bin: Option<PathBuf>,
    /// The remote `mytunneld` path.
    pub remote_bin: Option<String>,
}

impl EdgeProfile {
    /// A profile of one destination and no other setting.
    pub fn new(destinations: Destinations) -> EdgeProfile {
        EdgeProfile {
            destinations,
            base_domain: None,
            ssh_bin: None,
            remote_bin: None,
        }
    }
}

/// An `[edges.NAME]` table as written, before `destination`/`destinations` is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeTable {
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    destinations: Option<Vec<String>>,
    #[serde(default)]
    base_domain: Option<String>,
    #[serde(default)]
    ssh_bin: Option<PathBuf>,
    #[serde(default)]
    remote_bin: Option<String>,
}

impl TryFrom<EdgeTable> for EdgeProfile {
    type Error = String;

    fn try_from(table: EdgeTable) -> Result<Self, Self::Error> {
        let destinations = match (table.destination, table.destinations) {
            (Some(one), None) => Destinations::one(one),
            (None, Some(list)) => Destinations::from_vec(list).ok_or(
                "`destinations` is an empty list: give at least one ssh destination, \
                 e.g. destinations = [\"tunnel@a.example.com\", \"tunnel@b.example.com\"]",
            )?,
            (Some(_), Some(_)) => {
                return Err("both `destination` and `destinations` are given: keep one \
                            (`destinations` lists every edge, in the order they are tried)"
                    .into())
            }
            (None, None) => {
                return Err(
                    "missing `destination` (one ssh destination) or `destinations` \
                            (a list of them, tried in order)"
                        .into(),
                )
            }
        };
        Ok(EdgeProfile {
            destinations,
            base_domain: table.base_domain,
            ssh_bin: table.ssh_bin,
            remote_bin: table.remote_bin,
        })
    }
}

/// One `[tunnels.NAME]` table: a tunnel's options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelProfile {
    /// Where the app listens: a port, `host:port`, `[v6]:port` or a URL.
    pub target: String,
    /// The public name (`https://<name>.<base-domain>`).
    #[serde(default)]
    pub name: Option<String>,
    /// The `Host` header the app sees: `rewrite`, or a host with an optional port.
    #[serde(default)]
    pub host_header: Option<String>,
    /// For an `https://` target: accept any certificate.
    #[serde(default)]
    pub upstream_insecure: bool,
    /// The edge: a profile name or an ssh destination.
    #[serde(default)]
    pub edge: Option<String>,
}

impl TunnelProfile {
    /// The tunnel these options describe, on a connection of its own made with `edge`
    /// (whose edge, if [`EdgeBuilder::edge`](crate::EdgeBuilder::edge) named one, wins
    /// over the profile's). A malformed value is an error naming its key.
    pub fn tunnel(
        &self,
        edge: crate::EdgeBuilder,
    ) -> Result<crate::TunnelBuilder, crate::TunnelError> {
        use crate::upstream::{AppCertificates, HostHeader, Scheme, Upstream};
        use crate::TunnelError;
        let upstream: Upstream = self.target.parse()?;
        let edge = match &self.edge {
            Some(profile_edge) if !edge.names_edge() => edge.edge(profile_edge.clone()),
            _ => edge,
        };
        let mut builder = edge.http(upstream.clone());
        if let Some(name) = &self.name {
            builder = builder.name(name.clone());
        }
        if let Some(host_header) = &self.host_header {
            builder = builder.host_header(host_header.parse::<HostHeader>()?);
        }
        if self.upstream_insecure {
            if upstream.scheme() != Scheme::Https {
                return Err(TunnelError::InvalidOptions(format!(
                    "upstream_insecure is for an https:// target, and {upstream} is plain HTTP"
                )));
            }
            builder = builder.app_certificates(AppCertificates::AcceptAny);
        }
        Ok(builder)
    }
}

/// The whole client config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The profile (or destination) used when no edge is given.
    #[serde(default)]
    pub default_edge: Option<String>,
    /// Named edges.
    #[serde(default)]
    pub edges: BTreeMap<String, EdgeProfile>,
    /// Named tunnels.
    #[serde(default)]
    pub tunnels: BTreeMap<String, TunnelProfile>,
}

/// Why the edge could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The config file is not valid TOML of the expected shape.
    #[error("{path}: {reason}", path = .path.display())]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No edge was given anywhere.
    #[error("no edge given: name one with .edge(\"<ssh-destination|profile>\"), set MYTUNNEL_EDGE, or set default_edge in {path}", path = .config_path.display())]
    NoEdge {
        /// Where a profile would be read from.
        config_path: PathBuf,
    },
    /// No `[tunnels.NAME]` table has the name asked for.
    #[error("no tunnel profile {name:?}: add [tunnels.{name}] to {path}", path = .config_path.display())]
    NoTunnel {
        /// The name asked for.
        name: String,
        /// The profile file.
        config_path: PathBuf,
    },
    /// The edge text cannot be an ssh destination.
    #[error(
        "{0:?} is not an ssh destination (it must not be empty, start with '-' or contain spaces)"
    )]
    BadDestination(String),
}

/// Settings given explicitly (flags or builder calls).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExplicitEdge {
    /// `.edge(..)` (the CLI's `--edge`)
    pub edge: Option<String>,
    /// `.ssh_bin(..)` (the CLI's `--ssh-bin`)
    pub ssh_bin: Option<PathBuf>,
    /// `.remote_bin(..)` (the CLI's `--remote-bin`)
    pub remote_bin: Option<String>,
    /// `.base_domain(..)` (the CLI's `--base-domain`)
    pub base_domain: Option<String>,
}

/// The edge to talk to, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEdge {
    /// The ssh destinations, in the order they are tried (one unless the profile lists
    /// several with `destinations`).
    pub destinations: Destinations,
    /// The profile it came from, if any.
    pub profile: Option<String>,
    /// The ssh binary.
    pub ssh_bin: PathBuf,
    /// The remote binary.
    pub remote_bin: String,
    /// The base domain, if known.
    pub base_domain: Option<String>,
}

/// `$XDG_CONFIG_HOME/mytunnel/config.toml`, else `~/.config/mytunnel/config.toml`.
pub fn default_config_path(env: &BTreeMap<String, String>) -> PathBuf {
    match (env.get("XDG_CONFIG_HOME"), env.get("HOME")) {
        (Some(xdg), _) if !xdg.is_empty() => Path::new(xdg).join("mytunnel/config.toml"),
        (_, Some(home)) => Path::new(home).join(".config/mytunnel/config.toml"),
        _ => PathBuf::from(".config/mytunnel/config.toml"),
    }
}

/// Parses the config file text.
pub fn parse_config(path: &Path, text: &str) -> Result<ClientConfig, ProfileError> {
    toml::from_str(text).map_err(|e| ProfileError::BadConfig {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads the config file; a missing file is an empty config.
pub fn load_config(path: &Path) -> Result<ClientConfig, ProfileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_config(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
        Err(e) => Err(ProfileError::BadConfig {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

fn check_destination(text: &str) -> Result<(), ProfileError> {
    let ok = !text.is_empty()
        && !text.starts_with('-')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ProfileError::BadDestination(text.to_owned()))
    }
}

/// Resolves the edge from explicit settings, the environment and the config file.
pub fn resolve_edge(
    explicit: &ExplicitEdge,
    env: &BTreeMap<String, String>,
    config: &ClientConfig,
    config_path: &Path,
) -> Result<ResolvedEdge, ProfileError> {
    let env_get = |key: &str| env.get(key).filter(|v| !v.is_empty()).cloned();
    let edge_text = explicit
        .edge
        .clone()
        .or_else(|| env_get("MYTUNNEL_EDGE"))
        .or_else(|| config.default_edge.clone())
        .ok_or_else(|| ProfileError::NoEdge {
            config_path: config_path.to_owned(),
        })?;
    let (profile_name, profile) = match config.edges.get(&edge_text) {
        Some(profile) => (Some(edge_text.clone()), profile.clone()),
        None => (None, EdgeProfile::new(Destinations::one(edge_text.clone()))),
    };
    for destination in profile.destinations.iter() {
        check_destination(destination)?;
    }
    Ok(ResolvedEdge {
        destinations: profile.destinations,
        profile: profile_name,
        ssh_bin: explicit
            .ssh_bin
            .clone()
            .or_else(|| env_get("MYTUNNEL_SSH_BIN").map(PathBuf::from))
            .or(profile.ssh_bin)
            .unwrap_or_else(|| PathBuf::from("ssh")),
        remote_bin: explicit
            .remote_bin
            .clone()
            .or_else(|| env_get("MYTUNNEL_REMOTE_BIN"))
            .or(profile.remote_bin)
            .unwrap_or_else(|| "mytunneld".to_owned()),
        base_domain: explicit
            .base_domain
            .clone()
            .or_else(|| env_get("MYTUNNEL_BASE_DOMAIN"))
            .or(profile.base_domain),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
default_edge = "prod"

[edges.prod]
destination = "tunnel@edge.example.com"
base_domain = "tunnel.example.com"
remote_bin = "/usr/local/bin/mytunneld"

[edges.lab]
destination = "lab-edge"
ssh_bin = "/opt/ssh"
"#;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn config() -> ClientConfig {
        parse_config(Path::new("c.toml"), CONFIG).unwrap()
    }

    #[test]
    fn default_profile_applies() {
        let edge = resolve_edge(
            &ExplicitEdge::default(),
            &env(&[]),
            &config(),
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(
            edge.destinations,
            Destinations::one("tunnel@edge.example.com")
        );
        assert_eq!(edge.profile.as_deref(), Some("prod"));
        assert_eq!(edge.remote_bin, "/usr/local/bin/mytunneld");
        assert_eq!(edge.ssh_bin, PathBuf::from("ssh"));
        assert_eq!(edge.base_domain.as_deref(), Some("tunnel.example.com"));
    }

    #[test]
    fn precedence_flag_env_profile_default() {
        let e = env(&[("MYTUNNEL_EDGE", "lab"), ("MYTUNNEL_SSH_BIN", "/env/ssh")]);
        let edge = resolve_edge(&ExplicitEdge::default(), &e, &config(), Path::new("c")).unwrap();
        assert_eq!(edge.destinations, Destinations::one("lab-edge"));
        assert_eq!(edge.ssh_bin, PathBuf::from("/env/ssh"));
        assert_eq!(edge.remote_bin, "mytunneld");
        let explicit = ExplicitEdge {
            edge: Some("root@other".into()),
            ssh_bin: Some("/flag/ssh".into()),
            ..ExplicitEdge::default()
        };
        let edge = resolve_edge(&explicit, &e, &config(), Path::new("c")).unwrap();
        assert_eq!(edge.destinations, Destinations::one("root@other"));
        assert_eq!(edge.profile, None);
        assert_eq!(edge.ssh_bin, PathBuf::from("/flag/ssh"));
    }

    #[test]
    fn errors_are_explicit() {
        let err = resolve_edge(
            &ExplicitEdge::default(),
            &env(&[]),
            &ClientConfig::default(),
            Path::new("/h/.config/mytunnel/config.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains(".edge(\"<ssh-destination|profile>\")"),
            "{err}"
        );
        for bad in ["-oProxyCommand=x", "a b", ""] {
            let explicit = ExplicitEdge {
                edge: Some(bad.into()),
                ..ExplicitEdge::default()
            };
            assert!(
                resolve_edge(
                    &explicit,
                    &env(&[]),
                    &ClientConfig::default(),
                    Path::new("c")
                )
                .is_err(),
                "{bad}"
            );
        }
        let bad = parse_config(Path::new("c.toml"), "[edges.x]\nnope = 1\n").unwrap_err();
        assert!(bad.to_string().contains("c.toml"), "{bad}");
    }

    /// The error `parse_config` gives for `text` in `/h/c.toml`.
    fn refused(text: &str) -> String {
        match parse_config(Path::new("/h/c.toml"), text) {
            Err(e @ ProfileError::BadConfig { .. }) => e.to_string(),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn several_destinations_are_kept_in_order() {
        let text = "[edges.team]\n\
                    destinations = [\"tunnel@a.example.com\", \"tunnel@b.example.com\", \"c\"]\n\
                    base_domain = \"t.example.com\"\n";
        let team = parse_config(Path::new("c.toml"), text).unwrap();
        let explicit = ExplicitEdge {
            edge: Some("team".into()),
            ..ExplicitEdge::default()
        };
        let edge = resolve_edge(&explicit, &env(&[]), &team, Path::new("c")).unwrap();
        let listed: Vec<&str> = edge.destinations.iter().collect();
        assert_eq!(
            listed,
            ["tunnel@a.example.com", "tunnel@b.example.com", "c"]
        );
        assert_eq!(edge.destinations.first(), "tunnel@a.example.com");
        assert_eq!(edge.destinations.count(), 3);
        assert_eq!(edge.destinations.get(1), Some("tunnel@b.example.com"));
        assert_eq!(edge.destinations.get(3), None);
        assert_eq!(
            edge.destinations.to_string(),
            "tunnel@a.example.com, tunnel@b.example.com, c"
        );
        assert_eq!(edge.base_domain.as_deref(), Some("t.example.com"));
        // `destination` alone still gives one, as before.
        assert_eq!(
            config().edges["prod"].destinations,
            Destinations::one("tunnel@edge.example.com")
        );
        // A list of one is one.
        let one = parse_config(Path::new("c"), "[edges.x]\ndestinations = [\"a\"]\n").unwrap();
        assert_eq!(one.edges["x"].destinations, Destinations::one("a"));
        assert_eq!(Destinations::from_vec(Vec::new()), None);
    }

    #[test]
    fn destination_and_destinations_are_exclusive_and_a_list_is_not_empty() {
        let both = refused("[edges.team]\ndestination = \"a\"\ndestinations = [\"a\", \"b\"]\n");
        assert!(both.starts_with("/h/c.toml: "), "{both}");
        assert!(
            both.contains("both `destination` and `destinations` are given"),
            "{both}"
        );
        assert!(both.contains("[edges.team]"), "the table is shown: {both}");
        let empty = refused("[edges.team]\ndestinations = []\n");
        assert!(empty.starts_with("/h/c.toml: "), "{empty}");
        assert!(empty.contains("`destinations` is an empty list"), "{empty}");
        let neither = refused("[edges.team]\nbase_domain = \"t.example.com\"\n");
        assert!(
            neither.contains("missing `destination`") && neither.contains("`destinations`"),
            "{neither}"
        );
        let not_a_list = refused("[edges.team]\ndestinations = \"a\"\n");
        assert!(not_a_list.starts_with("/h/c.toml: "), "{not_a_list}");
        // Unknown keys are refused by name, next to either key.
        for text in [
            "[edges.team]\ndestinations = [\"a\"]\ndestination_list = [\"b\"]\n",
            "[edges.team]\ndestination = \"a\"\ndestination_list = [\"b\"]\n",
        ] {
            let unknown = refused(text);
            assert!(
                unknown.starts_with("/h/c.toml: ") && unknown.contains("destination_list"),
                "{unknown}"
            );
        }
    }

    #[test]
    fn every_destination_of_a_list_is_checked() {
        let config = parse_config(
            Path::new("c"),
            "[edges.team]\ndestinations = [\"a\", \"-oProxyCommand=x\"]\n",
        )
        .unwrap();
        let explicit = ExplicitEdge {
            edge: Some("team".into()),
            ..ExplicitEdge::default()
        };
        assert_eq!(
            resolve_edge(&explicit, &env(&[]), &config, Path::new("c")),
            Err(ProfileError::BadDestination("-oProxyCommand=x".into()))
        );
    }

    #[test]
    fn config_path_follows_xdg() {
        assert_eq!(
            default_config_path(&env(&[("HOME", "/home/a")])),
            PathBuf::from("/home/a/.config/mytunnel/config.toml")
        );
        assert_eq!(
            default_config_path(&env(&[("HOME", "/home/a"), ("XDG_CONFIG_HOME", "/x")])),
            PathBuf::from("/x/mytunnel/config.toml")
        );
    }

    #[test]
    fn a_tunnel_profile_becomes_a_tunnel_and_an_edge_given_wins() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("config.toml");
        let text = format!(
            "{CONFIG}\n[tunnels.shop]\ntarget = \"https://localhost:8443\"\nname = \"Shop\"\n\
             host_header = \"rewrite\"\nupstream_insecure = true\nedge = \"lab\"\n"
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        let edge = crate::Edge::builder()
            .config_path(&path)
            .environment(BTreeMap::new());
        let Ok(Some(shop)) = edge.tunnel_profile("shop") else {
            panic!("no shop profile");
        };
        assert_eq!(shop.target, "https://localhost:8443");
        let tunnel = edge.clone().http_profile("shop");
        assert!(
            tunnel.as_ref().is_ok_and(|t| t.validate().is_ok()),
            "{tunnel:?}"
        );
        let resolved = |builder: crate::EdgeBuilder| {
            shop.tunnel(builder)
                .and_then(|t| t.edge_builder().map(|e| e.resolve()).transpose())
        };
        assert!(
            matches!(resolved(edge.clone()), Ok(Some(e)) if e.destinations.first() == "lab-edge")
        );
        assert!(
            matches!(resolved(edge.clone().edge("bob@other")), Ok(Some(e)) if e.destinations.first() == "bob@other")
        );
        assert!(matches!(
            edge.clone().http_profile("nosuch"),
            Err(crate::TunnelError::Edge(ProfileError::NoTunnel { .. }))
        ));
        let bad = TunnelProfile {
            target: "3000".into(),
            upstream_insecure: true,
            ..TunnelProfile::default()
        };
        assert!(matches!(
            bad.tunnel(edge),
            Err(crate::TunnelError::InvalidOptions(message)) if message.starts_with("upstream_insecure is for an https:// target")
        ));
    }
}
