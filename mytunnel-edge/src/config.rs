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
use mytunnel_core::duration::parse_duration;
use mytunnel_core::envfile::{parse_env_file, EnvEntry, EnvFileError};
use mytunnel_core::policy::{AdminUsers, ReservedSlugs};
use mytunnel_core::store::OwnerLimit;
use mytunnel_core::{BaseDomain, PortRange, Ttl};

/// The env file read by default.
pub const DEFAULT_ENV_FILE: &str = "/etc/mytunneld/mytunneld.env";

/// One configurable setting of the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    /// `--db-path`
    DbPath,
    /// `--base-domain`
    BaseDomain,
    /// `--caddy-admin-url`
    CaddyAdminUrl,
    /// `--caddy-server`
    CaddyServer,
    /// `--min-port`
    MinPort,
    /// `--max-port`
    MaxPort,
    /// `--lease-ttl`
    LeaseTtl,
    /// `--cleanup-interval`
    CleanupInterval,
    /// `--reconcile-interval`
    ReconcileInterval,
    /// `--health-timeout`
    HealthTimeout,
    /// `--log-format`
    LogFormat,
    /// `--max-leases-per-owner`
    MaxLeasesPerOwner,
    /// `--admin-users`
    AdminUsers,
    /// `--tombstone-retention`
    TombstoneRetention,
    /// `--reserved-slugs`
    ReservedSlugs,
    /// `--route-mode`
    RouteMode,
    /// `--socket-dir`
    SocketDir,
    /// `--keys-dir`
    KeysDir,
}

impl Setting {
    /// Every setting.
    pub const ALL: [Setting; 18] = [
        Setting::DbPath,
        Setting::BaseDomain,
        Setting::CaddyAdminUrl,
        Setting::CaddyServer,
        Setting::MinPort,
        Setting::MaxPort,
        Setting::LeaseTtl,
        Setting::CleanupInterval,
        Setting::ReconcileInterval,
        Setting::HealthTimeout,
        Setting::LogFormat,
        Setting::MaxLeasesPerOwner,
        Setting::AdminUsers,
        Setting::TombstoneRetention,
        Setting::ReservedSlugs,
        Setting::RouteMode,
        Setting::SocketDir,
        Setting::KeysDir,
    ];

    /// The command-line flag, e.g. `--db-path`.
    pub fn flag(self) -> &'static str {
        match self {
            Setting::DbPath => "--db-path",
            Setting::BaseDomain => "--base-domain",
            Setting::CaddyAdminUrl => "--caddy-admin-url",
            Setting::CaddyServer => "--caddy-server",
            Setting::MinPort => "--min-port",
            Setting::MaxPort => "--max-port",
            Setting::LeaseTtl => "--lease-ttl",
            Setting::CleanupInterval => "--cleanup-interval",
            Setting::ReconcileInterval => "--reconcile-interval",
            Setting::HealthTimeout => "--health-timeout",
            Setting::LogFormat => "--log-format",
            Setting::MaxLeasesPerOwner => "--max-leases-per-owner",
            Setting::AdminUsers => "--admin-users",
            Setting::TombstoneRetention => "--tombstone-retention",
            Setting::ReservedSlugs => "--reserved-slugs",
            Setting::RouteMode => "--route-mode",
            Setting::SocketDir => "--socket-dir",
            Setting::KeysDir => "--keys-dir",
        }
    }

    /// The environment variable, e.g. `MYTUNNEL_DB_PATH`.
    pub fn env_var(self) -> &'static str {
        match self {
            Setting::DbPath => "MYTUNNEL_DB_PATH",
            Setting::BaseDomain => "MYTUNNEL_BASE_DOMAIN",
            Setting::CaddyAdminUrl => "MYTUNNEL_CADDY_ADMIN_URL",
            Setting::CaddyServer => "MYTUNNEL_CADDY_SERVER",
            Setting::MinPort => "MYTUNNEL_MIN_PORT",
            Setting::MaxPort => "MYTUNNEL_MAX_PORT",
            Setting::LeaseTtl => "MYTUNNEL_LEASE_TTL",
            Setting::CleanupInterval => "MYTUNNEL_CLEANUP_INTERVAL",
            Setting::ReconcileInterval => "MYTUNNEL_RECONCILE_INTERVAL",
            Setting::HealthTimeout => "MYTUNNEL_HEALTH_TIMEOUT",
            Setting::LogFormat => "MYTUNNEL_LOG_FORMAT",
            Setting::MaxLeasesPerOwner => "MYTUNNEL_MAX_LEASES_PER_OWNER",
            Setting::AdminUsers => "MYTUNNEL_ADMIN_USERS",
            Setting::TombstoneRetention => "MYTUNNEL_TOMBSTONE_RETENTION",
            Setting::ReservedSlugs => "MYTUNNEL_RESERVED_SLUGS",
            Setting::RouteMode => "MYTUNNEL_ROUTE_MODE",
            Setting::SocketDir => "MYTUNNEL_SOCKET_DIR",
            Setting::KeysDir => "MYTUNNEL_KEYS_DIR",
        }
    }

    /// The default value as text, or `None` when the setting has no default.
    pub fn default_value(self) -> Option<&'static str> {
        match self {
            Setting::DbPath => Some("/var/lib/mytunneld/leases.db"),
            Setting::BaseDomain => None,
            Setting::CaddyAdminUrl => Some("http://127.0.0.1:2019"),
            Setting::CaddyServer => Some("srv0"),
            Setting::MinPort => Some("21000"),
            Setting::MaxPort => Some("21999"),
            Setting::LeaseTtl => Some("2m"),
            Setting::CleanupInterval => Some("30s"),
            Setting::ReconcileInterval => Some("60s"),
            Setting::HealthTimeout => Some("5s"),
            Setting::LogFormat => Some("text"),
            Setting::MaxLeasesPerOwner => Some("10"),
            Setting::AdminUsers => Some(""),
            Setting::TombstoneRetention => Some("7d"),
            Setting::ReservedSlugs => None,
            Setting::RouteMode => Some("routes"),
            Setting::SocketDir => Some("/var/lib/mytunnel-sockets"),
            Setting::KeysDir => Some("/etc/mytunneld/keys"),
        }
    }

    /// One line of help for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            Setting::DbPath => "SQLite lease database file",
            Setting::BaseDomain => {
                "Tunnels are published at https://<slug>.<base-domain> (required to allocate)"
            }
            Setting::CaddyAdminUrl => "Caddy admin API; loopback or unix socket only",
            Setting::CaddyServer => "Caddy HTTP server whose routes mytunnel manages",
            Setting::MinPort => "Lowest edge port a lease binds",
            Setting::MaxPort => "Highest edge port a lease binds",
            Setting::LeaseTtl => "Lease time to live when the client asks for none",
            Setting::CleanupInterval => "How often serve expires leases without heartbeats",
            Setting::ReconcileInterval => "How often serve makes Caddy's routes match the leases",
            Setting::HealthTimeout => "Bound on each health probe and admin API request",
            Setting::LogFormat => "serve's log format: text or json",
            Setting::MaxLeasesPerOwner => "Active leases one user may hold; 0 means unlimited",
            Setting::AdminUsers => "Comma list of users who may --force, list --all and reconcile",
            Setting::TombstoneRetention => "How long released/expired tombstones are kept",
            Setting::ReservedSlugs => {
                "Comma list of names no tunnel may take (default: www, api, admin, …)"
            }
            Setting::RouteMode => {
                "static: one wildcard Caddy route to per-owner unix sockets (no Caddy reload \
                 per lease); routes: one Caddy route per lease to a loopback port"
            }
            Setting::SocketDir => {
                "static mode: root of hosts/ (written by serve) and owners/<user>/ (sockets)"
            }
            Setting::KeysDir => "Tunnel keys read by `mytunneld authorized-keys <user>`",
        }
    }

    /// The setting a flag (`--db-path`) names.
    pub fn from_flag(flag: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.flag() == flag)
    }

    fn from_env_var(name: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.env_var() == name)
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.flag(), self.env_var())
    }
}

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
        let (name, inline) = match word.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (word.as_str(), None),
        };
        let Some(setting) = Setting::from_flag(name) else {
            rest.push(word.clone());
            continue;
        };
        let value = match inline {
            Some(value) => value,
            None => iter
                .next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
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
    /// The lease database file.
    pub db_path: PathBuf,
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

/// A setting's raw value and origin after precedence.
struct Raw<'a> {
    setting: Setting,
    value: Option<(&'a str, Origin)>,
}

impl Raw<'_> {
    fn invalid(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            setting: self.setting,
            origin: self
                .value
                .as_ref()
                .map_or(Origin::Default, |(_, o)| o.clone()),
            reason: reason.into(),
        }
    }

    fn text(&self) -> Option<&str> {
        self.value.as_ref().map(|(v, _)| *v)
    }

    fn required(&self) -> Result<&str, ConfigError> {
        self.text().ok_or_else(|| self.invalid("no value"))
    }

    fn duration(&self) -> Result<Duration, ConfigError> {
        let d = parse_duration(self.required()?).map_err(|e| self.invalid(e.message))?;
        if d.is_zero() {
            return Err(self.invalid("must be longer than 0s"));
        }
        Ok(d)
    }

    fn port(&self) -> Result<u16, ConfigError> {
        let text = self.required()?;
        match text.trim().parse::<u16>() {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(self.invalid(format!("{text:?} is not a port 1-65535"))),
        }
    }
}

impl EdgeConfig {
    /// Resolves every setting with the precedence flag > environment > env file > default.
    ///
    /// Returns the configuration and warnings (unknown `MYTUNNEL_*` names in the env file,
    /// which are kept for forward compatibility: a rolled-back binary must still start).
    pub fn resolve(inputs: &ConfigInputs) -> Result<(EdgeConfig, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let mut from_file: BTreeMap<Setting, (&str, Origin)> = BTreeMap::new();
        if let Some(file) = &inputs.env_file {
            for entry in &file.entries {
                match Setting::from_env_var(&entry.key) {
                    Some(setting) => {
                        from_file.insert(
                            setting,
                            (
                                entry.value.as_str(),
                                Origin::EnvFile {
                                    path: file.path.clone(),
                                    line: entry.line,
                                },
                            ),
                        );
                    }
                    None if entry.key.starts_with("MYTUNNEL_") => warnings.push(format!(
                        "{}:{}: unknown setting {} ignored",
                        file.path.display(),
                        entry.line,
                        entry.key
                    )),
                    None => {}
                }
            }
        }
        let raw = |setting: Setting| -> Raw<'_> {
            let value = if let Some(v) = inputs.flags.get(&setting) {
                Some((v.as_str(), Origin::Flag))
            } else if let Some(v) = inputs.environment.get(setting.env_var()) {
                Some((v.as_str(), Origin::Environment))
            } else if let Some((v, origin)) = from_file.get(&setting) {
                Some((*v, origin.clone()))
            } else {
                setting.default_value().map(|v| (v, Origin::Default))
            };
            Raw { setting, value }
        };

        let db = raw(Setting::DbPath);
        let db_path = PathBuf::from(db.required()?);
        if db_path.as_os_str().is_empty() {
            return Err(db.invalid("is empty"));
        }

        let domain = raw(Setting::BaseDomain);
        let base_domain = match domain.text().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<BaseDomain>()
                    .map_err(|e| domain.invalid(e.reason().to_owned()))?,
            ),
        };

        let admin = raw(Setting::CaddyAdminUrl);
        let caddy_admin = admin
            .required()?
            .trim()
            .parse::<CaddyAdminAddress>()
            .map_err(|e| admin.invalid(e.reason().to_owned()))?;

        let server = raw(Setting::CaddyServer);
        let caddy_server = server.required()?.trim().to_owned();
        if caddy_server.is_empty()
            || !caddy_server
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(server.invalid(format!(
                "{caddy_server:?} is not a Caddy server name ([A-Za-z0-9._-])"
            )));
        }

        let (min, max) = (raw(Setting::MinPort), raw(Setting::MaxPort));
        let ports = PortRange::new(min.port()?, max.port()?)
            .map_err(|e| max.invalid(e.reason().to_owned()))?;

        let lease_ttl = Ttl::configured(raw(Setting::LeaseTtl).duration()?);
        let cleanup_interval = raw(Setting::CleanupInterval).duration()?;
        let reconcile_interval = raw(Setting::ReconcileInterval).duration()?;
        let health_timeout = raw(Setting::HealthTimeout).duration()?;
        let tombstone_retention = raw(Setting::TombstoneRetention).duration()?;

        let log = raw(Setting::LogFormat);
        let log_format = match log.required()?.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(log.invalid(format!("{other:?} is not text or json"))),
        };

        let limit = raw(Setting::MaxLeasesPerOwner);
        let limit_text = limit.required()?.trim();
        let owner_limit = OwnerLimit::from_config(
            limit_text
                .parse::<u32>()
                .map_err(|_| limit.invalid(format!("{limit_text:?} is not a whole number")))?,
        );

        let admins = raw(Setting::AdminUsers);
        let admin_users = admins
            .text()
            .unwrap_or("")
            .parse::<AdminUsers>()
            .map_err(|e| admins.invalid(e.reason().to_owned()))?;

        let reserved = raw(Setting::ReservedSlugs);
        let reserved_slugs = match reserved.text() {
            None => ReservedSlugs::default(),
            Some(text) => text
                .parse::<ReservedSlugs>()
                .map_err(|e| reserved.invalid(e.reason().to_owned()))?,
        };

        let mode = raw(Setting::RouteMode);
        let route_mode = match mode.required()?.trim() {
            "static" => RouteMode::Static,
            "routes" => RouteMode::Routes,
            other => return Err(mode.invalid(format!("{other:?} is not static or routes"))),
        };

        let sockets = raw(Setting::SocketDir);
        let socket_dir = PathBuf::from(sockets.required()?.trim());
        check_socket_dir(&socket_dir).map_err(|reason| sockets.invalid(reason))?;

        let keys = raw(Setting::KeysDir);
        let keys_dir = PathBuf::from(keys.required()?.trim());
        if !keys_dir.is_absolute() {
            return Err(keys.invalid("must be an absolute path"));
        }

        Ok((
            EdgeConfig {
                db_path,
                base_domain,
                caddy_admin,
                caddy_server,
                ports,
                lease_ttl,
                cleanup_interval,
                reconcile_interval,
                health_timeout,
                log_format,
                owner_limit,
                admin_users,
                tombstone_retention,
                reserved_slugs,
                route_mode,
                socket_dir,
                keys_dir,
            },
            warnings,
        ))
    }
}

/// The longest socket directory: `<dir>/hosts/<63-byte slug>.sock` must fit the 107 bytes
/// of a unix socket address.
pub const MAX_SOCKET_DIR_LEN: usize = 32;

/// The socket directory must be absolute, short, and plain: it is spliced into Caddy's
/// dial address and into every lease's socket path.
fn check_socket_dir(dir: &Path) -> Result<(), String> {
    let text = dir.to_str().ok_or("is not UTF-8")?;
    if !dir.is_absolute() {
        return Err("must be an absolute path".into());
    }
    if text.len() > MAX_SOCKET_DIR_LEN {
        return Err(format!(
            "{text:?} is longer than {MAX_SOCKET_DIR_LEN} bytes (unix socket paths are short)"
        ));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'))
    {
        return Err(format!("{text:?} may only hold [A-Za-z0-9/._-]"));
    }
    if dir.components().any(|c| {
        matches!(
            c,
            std::path::Component::ParentDir | std::path::Component::CurDir
        )
    }) {
        return Err(format!("{text:?} must not contain . or .. components"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> Option<EnvFileInput> {
        Some(EnvFileInput {
            path: PathBuf::from("/etc/mytunneld/mytunneld.env"),
            entries: parse_env_file(text).unwrap(),
        })
    }

    #[test]
    fn defaults() {
        let (config, warnings) = EdgeConfig::resolve(&ConfigInputs::default()).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            config.db_path,
            PathBuf::from("/var/lib/mytunneld/leases.db")
        );
        assert_eq!(config.base_domain, None);
        assert_eq!(config.caddy_admin.to_string(), "http://127.0.0.1:2019");
        assert_eq!(config.caddy_server, "srv0");
        assert_eq!(config.ports, PortRange::DEFAULT);
        assert_eq!(config.lease_ttl.get(), Duration::from_secs(120));
        assert_eq!(config.cleanup_interval, Duration::from_secs(30));
        assert_eq!(config.reconcile_interval, Duration::from_secs(60));
        assert_eq!(config.health_timeout, Duration::from_secs(5));
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.owner_limit, OwnerLimit::AtMost(10));
        assert_eq!(config.tombstone_retention, Duration::from_secs(7 * 86400));
    }

    #[test]
    fn precedence_is_flag_env_file_default() {
        let mut inputs = ConfigInputs {
            env_file: file("MYTUNNEL_MIN_PORT=1000\nMYTUNNEL_MAX_PORT=2000\nMYTUNNEL_BASE_DOMAIN=file.example\n"),
            environment: env(&[("MYTUNNEL_MIN_PORT", "1100"), ("MYTUNNEL_BASE_DOMAIN", "env.example")]),
            ..ConfigInputs::default()
        };
        inputs
            .flags
            .insert(Setting::BaseDomain, "flag.example".into());
        let (config, _) = EdgeConfig::resolve(&inputs).unwrap();
        assert_eq!(config.base_domain.unwrap().as_str(), "flag.example");
        assert_eq!(config.ports, PortRange::new(1100, 2000).unwrap());
    }

    #[test]
    fn errors_name_the_setting_and_origin() {
        let inputs = ConfigInputs {
            env_file: file("\nMYTUNNEL_MIN_PORT=3000\nMYTUNNEL_MAX_PORT=2000\n"),
            ..ConfigInputs::default()
        };
        let message = EdgeConfig::resolve(&inputs).unwrap_err().to_string();
        assert!(
            message.contains("--max-port (MYTUNNEL_MAX_PORT)"),
            "{message}"
        );
        assert!(
            message.contains("/etc/mytunneld/mytunneld.env:3"),
            "{message}"
        );
        assert!(
            message.contains("min port 3000 is above max port 2000"),
            "{message}"
        );

        for (var, value, needle) in [
            ("MYTUNNEL_LEASE_TTL", "soon", "MYTUNNEL_LEASE_TTL"),
            ("MYTUNNEL_LEASE_TTL", "0s", "longer than 0s"),
            (
                "MYTUNNEL_CADDY_ADMIN_URL",
                "http://10.0.0.1:2019",
                "loopback",
            ),
            (
                "MYTUNNEL_BASE_DOMAIN",
                "not a domain",
                "MYTUNNEL_BASE_DOMAIN",
            ),
            ("MYTUNNEL_LOG_FORMAT", "xml", "text or json"),
            ("MYTUNNEL_MAX_LEASES_PER_OWNER", "-1", "whole number"),
            ("MYTUNNEL_MIN_PORT", "0", "port 1-65535"),
            ("MYTUNNEL_ADMIN_USERS", "ops, b c", "MYTUNNEL_ADMIN_USERS"),
            ("MYTUNNEL_CADDY_SERVER", "srv0/../x", "server name"),
        ] {
            let inputs = ConfigInputs {
                environment: env(&[(var, value)]),
                ..ConfigInputs::default()
            };
            let message = EdgeConfig::resolve(&inputs).unwrap_err().to_string();
            assert!(message.contains(needle), "{var}={value}: {message}");
            assert!(message.contains("environment"), "{message}");
        }
    }

    #[test]
    fn unknown_file_settings_warn() {
        let inputs = ConfigInputs {
            env_file: file("MYTUNNEL_FUTURE_KNOB=1\nOTHER=2\n"),
            ..ConfigInputs::default()
        };
        let (_, warnings) = EdgeConfig::resolve(&inputs).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("MYTUNNEL_FUTURE_KNOB"));
    }

    #[test]
    fn env_file_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mytunneld.env");
        std::fs::write(&path, "MYTUNNEL_MIN_PORT=1\nbroken line\n").unwrap();
        let message = load_env_file(&path).unwrap_err().to_string();
        assert!(message.contains("mytunneld.env: line 2"), "{message}");
        assert!(load_env_file(&dir.path().join("missing.env"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn setting_flags_are_split_from_ctl_words() {
        let words: Vec<String> = [
            "allocate",
            "--db-path",
            "/tmp/x.db",
            "--name",
            "a",
            "--min-port=5",
        ]
        .map(String::from)
        .to_vec();
        let (settings, rest) = split_setting_flags(&words).unwrap();
        assert_eq!(settings.get(&Setting::DbPath).unwrap(), "/tmp/x.db");
        assert_eq!(settings.get(&Setting::MinPort).unwrap(), "5");
        assert_eq!(rest, vec!["allocate", "--name", "a"]);
        assert!(split_setting_flags(&["--db-path".to_owned()]).is_err());
        assert!(
            split_setting_flags(&["--min-port=1".to_owned(), "--min-port=2".to_owned()]).is_err()
        );
    }

    #[test]
    fn override_flags_match_the_gate_list() {
        // Every daemon override flag the gate refuses is a setting here, and vice versa
        // except the two serve-only settings.
        for flag in mytunnel_core::protocol::OVERRIDE_FLAGS {
            assert!(Setting::ALL.iter().any(|s| s.flag() == flag), "{flag}");
        }
        let extra: Vec<&str> = Setting::ALL
            .iter()
            .map(|s| s.flag())
            .filter(|f| !mytunnel_core::protocol::OVERRIDE_FLAGS.contains(f))
            .collect();
        assert_eq!(
            extra,
            vec![
                "--tombstone-retention",
                "--reserved-slugs",
                "--route-mode",
                "--socket-dir",
                "--keys-dir"
            ]
        );
    }
}
