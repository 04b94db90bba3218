//! The edge configuration: flag > `MYTUNNEL_*` environment > env file > default, read the
//! same way by `serve` and by every `ctl`.
//!
//! Resolution is a pure function of its inputs ([`ConfigInputs`]); only
//! [`load_env_file`] touches the disk. Every value is validated, and an error names the
//! setting and where its value came from (flag, variable, or file and line).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mytunnel_core::admin::CaddyAdminAddress;
use mytunnel_core::envfile::{parse_env_file, EnvEntry, EnvFileError};
use mytunnel_core::flags;
use mytunnel_core::listen::LoopbackAddress;
use mytunnel_core::policy::{AdminUsers, ReservedSlugs};
pub use mytunnel_core::settings::Setting;
use mytunnel_core::store::OwnerLimit;
use mytunnel_core::{BaseDomain, EdgeId, EdgeUrl, PortRange, Ttl};

use crate::store::Database;

/// The env file read by default.
pub const DEFAULT_ENV_FILE: &str = "/etc/mytunneld/mytunneld.env";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// The process environment.
    Environment,
    /// A line of the env file.
    EnvFile {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// The built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("command-line flag"),
            Origin::Environment => f.write_str("environment"),
            Origin::EnvFile { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// The env file as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileInput {
    /// Its path.
    pub path: PathBuf,
    /// Its entries, in file order.
    pub entries: Vec<EnvEntry>,
}

/// Everything configuration is resolved from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigInputs {
    /// Values given as flags.
    pub flags: BTreeMap<Setting, String>,
    /// The process environment (only `MYTUNNEL_*` variables matter).
    pub environment: BTreeMap<String, String>,
    /// The env file, when there is one.
    pub env_file: Option<EnvFileInput>,
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value did not validate.
    #[error("invalid {setting} from {origin}: {reason}")]
    Invalid {
        /// Which setting.
        setting: Setting,
        /// Where the value came from.
        origin: Origin,
        /// Why it is wrong.
        reason: String,
    },
    /// The env file has a malformed line.
    #[error("{path}: {source}", path = .path.display())]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// The bad line.
        source: EnvFileError,
    },
    /// The env file exists but cannot be read.
    #[error("cannot read {path}: {source}", path = .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

/// Takes the daemon settings out of a ctl command line, wherever they stand, in both
/// `--flag value` and `--flag=value` form; returns them and the remaining words.
pub fn split_setting_flags(
    words: &[String],
) -> Result<(BTreeMap<Setting, String>, Vec<String>), String> {
    let mut settings = BTreeMap::new();
    let mut rest = Vec::new();
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let (name, inline) = flags::split_inline(word);
        let Some(setting) = Setting::from_flag(name) else {
            rest.push(word.clone());
            continue;
        };
        let value = flags::value(name, inline, &mut iter)?;
        if settings.insert(setting, value).is_some() {
            return Err(format!("{name} is given twice"));
        }
    }
    Ok((settings, rest))
}

/// Reads the env file at `path`; a file that does not exist is `Ok(None)`.
pub fn load_env_file(path: &Path) -> Result<Option<EnvFileInput>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Unreadable {
                path: path.to_owned(),
                source,
            })
        }
    };
    let entries = parse_env_file(&text).map_err(|source| ConfigError::EnvFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(EnvFileInput {
        path: path.to_owned(),
        entries,
    }))
}

/// How `serve` writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The resolved, validated edge configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// The lease database: `--db-url`'s PostgreSQL, else the SQLite file `--db-path`.
    pub database: Database,
    /// This edge's id: the leases allocated through it record it, and it routes them.
    pub edge_id: EdgeId,
    /// Where the other edges reach this edge's Caddy; `None`: they do not forward to it.
    pub edge_url: Option<EdgeUrl>,
    /// The base domain; `None` makes `allocate` answer `base_domain_missing`.
    pub base_domain: Option<BaseDomain>,
    /// Caddy's admin API (loopback only).
    pub caddy_admin: CaddyAdminAddress,
    /// The Caddy HTTP server whose routes mytunnel manages.
    pub caddy_server: String,
    /// The edge ports leases bind.
    pub ports: PortRange,
    /// The default lease TTL.
    pub lease_ttl: Ttl,
    /// How often `serve` expires stale leases.
    pub cleanup_interval: Duration,
    /// How often `serve` reconciles routes.
    pub reconcile_interval: Duration,
    /// The bound on every health check and admin API request.
    pub health_timeout: Duration,
    /// How `serve` logs.
    pub log_format: LogFormat,
    /// The cap on active leases per owner.
    pub owner_limit: OwnerLimit,
    /// Who is privileged besides root.
    pub admin_users: AdminUsers,
    /// How long tombstones are kept before cleanup purges them.
    pub tombstone_retention: Duration,
    /// Names no lease may take.
    pub reserved_slugs: ReservedSlugs,
    /// How hosts reach bind targets.
    pub route_mode: RouteMode,
    /// Static mode's directory of host links and per-owner sockets.
    pub socket_dir: PathBuf,
    /// Where `authorized-keys` reads each user's tunnel keys (`<dir>/<user>`).
    pub keys_dir: PathBuf,
    /// Where `serve` answers Caddy's on-demand TLS `ask`; `None`: it does not.
    pub tls_ask_listen: Option<LoopbackAddress>,
    /// Where `serve` answers Prometheus scrapes (`GET /metrics`); `None`: it does not, and
    /// records nothing.
    pub metrics_listen: Option<LoopbackAddress>,
}

/// How public hosts reach the leases' bind targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMode {
    /// One static wildcard Caddy route dialing `<socket_dir>/hosts/<slug>.sock`; the data
    /// plane binds a unix socket in the owner's own directory. Lease changes never touch
    /// Caddy's configuration.
    Static,
    /// One Caddy route per lease to a loopback port (every change reloads Caddy).
    Routes,
}

impl fmt::Display for RouteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteMode::Static => "static",
            RouteMode::Routes => "routes",
        })
    }
}

/// One setting as `mytunneld config` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingReport {
    /// Which setting.
    pub setting: Setting,
    /// Its text after precedence; `None` when nothing sets it and it has no default.
    pub value: Option<String>,
    /// Where the text came from ([`Origin::Default`] also when there is none).
    pub origin: Origin,
    /// Why the value is refused; `None` when it is valid.
    pub error: Option<String>,
}

/// Every setting's value, where it came from and whether it is valid, and the env file's
/// warnings: what `mytunneld config` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigReport {
    /// Every setting, in table order.
    pub settings: Vec<SettingReport>,
    /// Unknown `MYTUNNEL_*` names in the env file.
    pub warnings: Vec<String>,
}

impl ConfigReport {
    /// Whether every value is valid (so `serve` would start with them).
    pub fn is_valid(&self) -> bool {
        self.settings.iter().all(|s| s.error.is_none())
    }
}

/// The longest socket directory: `<dir>/hosts/<63-byte slug>.sock` must fit the 107 bytes
/// of a unix socket address.
pub const MAX_SOCKET_DIR_LEN: usize = 32;

mod resolve;

#[cfg(test)]
mod tests;
