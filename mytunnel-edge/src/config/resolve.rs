//! Resolution: each setting's raw text after precedence (flag > environment > env file >
//! default), then validated into an [`EdgeConfig`], or reported setting by setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mytunnel_core::admin::CaddyAdminAddress;
use mytunnel_core::duration::parse_duration;
use mytunnel_core::listen::LoopbackAddress;
use mytunnel_core::policy::{AdminUsers, ReservedSlugs};
use mytunnel_core::store::OwnerLimit;
use mytunnel_core::{BaseDomain, EdgeId, EdgeUrl, PortRange, Ttl};

use crate::store::{redact_password, Database, PostgresUrl};

use super::{
    ConfigError, ConfigInputs, ConfigReport, EdgeConfig, LogFormat, Origin, RouteMode, Setting,
    SettingReport, MAX_SOCKET_DIR_LEN,
};

/// A setting's raw value and origin after precedence.
#[derive(Clone)]
struct Raw<'a> {
    setting: Setting,
    value: Option<(&'a str, Origin)>,
}

impl Raw<'_> {
    fn invalid(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            setting: self.setting,
            origin: self.origin(),
            reason: reason.into(),
        }
    }

    fn origin(&self) -> Origin {
        self.value
            .as_ref()
            .map_or(Origin::Default, |(_, o)| o.clone())
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

    /// An optional loopback `IP:PORT`: `None` when unset or empty.
    fn loopback_address(&self) -> Result<Option<LoopbackAddress>, ConfigError> {
        match self.text().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => text
                .parse::<LoopbackAddress>()
                .map(Some)
                .map_err(|e| self.invalid(e.reason().to_owned())),
        }
    }

    fn port(&self) -> Result<u16, ConfigError> {
        let text = self.required()?;
        match text.trim().parse::<u16>() {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(self.invalid(format!("{text:?} is not a port 1-65535"))),
        }
    }
}

/// Every setting's raw value after precedence, and the env file's warnings.
struct Precedence<'a> {
    raw: BTreeMap<Setting, Raw<'a>>,
    warnings: Vec<String>,
}

impl<'a> Precedence<'a> {
    /// Applies flag > environment > env file > default to every setting.
    fn apply(inputs: &'a ConfigInputs) -> Precedence<'a> {
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
        let raw = Setting::ALL
            .into_iter()
            .map(|setting| {
                let value = if let Some(v) = inputs.flags.get(&setting) {
                    Some((v.as_str(), Origin::Flag))
                } else if let Some(v) = inputs.environment.get(setting.env_var()) {
                    Some((v.as_str(), Origin::Environment))
                } else if let Some((v, origin)) = from_file.remove(&setting) {
                    Some((v, origin))
                } else {
                    setting.default_value().map(|v| (v, Origin::Default))
                };
                (setting, Raw { setting, value })
            })
            .collect();
        Precedence { raw, warnings }
    }

    fn raw(&self, setting: Setting) -> Raw<'a> {
        self.raw.get(&setting).cloned().unwrap_or(Raw {
            setting,
            value: None,
        })
    }

    /// Validates every setting. Returns the configuration, or the first error in
    /// resolution order; and every refused value, as (setting, reason).
    fn validate(&self) -> (Result<EdgeConfig, ConfigError>, Vec<(Setting, String)>) {
        let mut found = Findings::default();
        let raw = |setting| self.raw(setting);

        let db = raw(Setting::DbPath);
        let db_path = found.keep(db.required().and_then(|text| {
            let path = PathBuf::from(text);
            if path.as_os_str().is_empty() {
                return Err(db.invalid("is empty"));
            }
            Ok(path)
        }));
        let url = raw(Setting::DbUrl);
        let db_url = found.keep(match url.text().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => match text.parse::<PostgresUrl>() {
                // The env file is readable by every tunnel user (ctl reads it).
                Ok(parsed) if parsed.has_password() => Err(url.invalid(
                    "holds a password, which every tunnel user could read in the env file: \
                     drop it from the URL and give it to the service user alone, in a \
                     password file (PGPASSFILE) or PGPASSWORD (see docs/operations.md)",
                )),
                Ok(parsed) => Ok(Some(parsed)),
                Err(e) => Err(url.invalid(e.to_string())),
            },
        });

        let edge = raw(Setting::EdgeId);
        let edge_id = found.keep(edge.required().and_then(|text| {
            text.trim()
                .parse::<EdgeId>()
                .map_err(|e| edge.invalid(e.reason().to_owned()))
        }));

        let edge_url_raw = raw(Setting::EdgeUrl);
        let edge_url = found.keep(match edge_url_raw.text().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => text
                .parse::<EdgeUrl>()
                .map(Some)
                .map_err(|e| edge_url_raw.invalid(e.reason().to_owned())),
        });

        let domain = raw(Setting::BaseDomain);
        let base_domain = found.keep(match domain.text().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => text
                .parse::<BaseDomain>()
                .map(Some)
                .map_err(|e| domain.invalid(e.reason().to_owned())),
        });

        let admin = raw(Setting::CaddyAdminUrl);
        let caddy_admin = found.keep(admin.required().and_then(|text| {
            text.trim()
                .parse::<CaddyAdminAddress>()
                .map_err(|e| admin.invalid(e.reason().to_owned()))
        }));

        let server = raw(Setting::CaddyServer);
        let caddy_server = found.keep(server.required().and_then(|text| {
            let name = text.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(server.invalid(format!(
                    "{name:?} is not a Caddy server name ([A-Za-z0-9._-])"
                )));
            }
            Ok(name.to_owned())
        }));

        let (min, max) = (raw(Setting::MinPort), raw(Setting::MaxPort));
        let min_port = found.keep(min.port());
        let max_port = found.keep(max.port());
        let ports = min_port.and_then(|low| {
            max_port.and_then(|high| {
                found
                    .keep(PortRange::new(low, high).map_err(|e| max.invalid(e.reason().to_owned())))
            })
        });

        let lease_ttl = found.keep(raw(Setting::LeaseTtl).duration().map(Ttl::configured));
        let cleanup_interval = found.keep(raw(Setting::CleanupInterval).duration());
        let reconcile_interval = found.keep(raw(Setting::ReconcileInterval).duration());
        let health_timeout = found.keep(raw(Setting::HealthTimeout).duration());
        let tombstone_retention = found.keep(raw(Setting::TombstoneRetention).duration());

        let log = raw(Setting::LogFormat);
        let log_format = found.keep(log.required().and_then(|text| match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(log.invalid(format!("{other:?} is not text or json"))),
        }));

        let limit = raw(Setting::MaxLeasesPerOwner);
        let owner_limit = found.keep(limit.required().and_then(|text| {
            let text = text.trim();
            text.parse::<u32>()
                .map(OwnerLimit::from_config)
                .map_err(|_| limit.invalid(format!("{text:?} is not a whole number")))
        }));

        let admins = raw(Setting::AdminUsers);
        let admin_users = found.keep(
            admins
                .text()
                .unwrap_or("")
                .parse::<AdminUsers>()
                .map_err(|e| admins.invalid(e.reason().to_owned())),
        );

        let reserved = raw(Setting::ReservedSlugs);
        let reserved_slugs = found.keep(match reserved.text() {
            None => Ok(ReservedSlugs::default()),
            Some(text) => text
                .parse::<ReservedSlugs>()
                .map_err(|e| reserved.invalid(e.reason().to_owned())),
        });

        let mode = raw(Setting::RouteMode);
        let route_mode = found.keep(mode.required().and_then(|text| match text.trim() {
            "static" => Ok(RouteMode::Static),
            "routes" => Ok(RouteMode::Routes),
            other => Err(mode.invalid(format!("{other:?} is not static or routes"))),
        }));

        let sockets = raw(Setting::SocketDir);
        let socket_dir = found.keep(sockets.required().and_then(|text| {
            let dir = PathBuf::from(text.trim());
            check_socket_dir(&dir).map_err(|reason| sockets.invalid(reason))?;
            Ok(dir)
        }));

        let keys = raw(Setting::KeysDir);
        let keys_dir = found.keep(keys.required().and_then(|text| {
            let dir = PathBuf::from(text.trim());
            if !dir.is_absolute() {
                return Err(keys.invalid("must be an absolute path"));
            }
            Ok(dir)
        }));

        let tls_ask_listen = found.keep(raw(Setting::TlsAskListen).loopback_address());
        let metrics_listen = found.keep(raw(Setting::MetricsListen).loopback_address());

        // Fields in resolution order: the first refused value is the error.
        let config = (move || {
            Ok(EdgeConfig {
                database: match (db_path, db_url?) {
                    (_, Some(url)) => Database::Postgres(url),
                    (path, None) => Database::Sqlite(path?),
                },
                edge_id: edge_id?,
                edge_url: edge_url?,
                base_domain: base_domain?,
                caddy_admin: caddy_admin?,
                caddy_server: caddy_server?,
                ports: ports?,
                lease_ttl: lease_ttl?,
                cleanup_interval: cleanup_interval?,
                reconcile_interval: reconcile_interval?,
                health_timeout: health_timeout?,
                tombstone_retention: tombstone_retention?,
                log_format: log_format?,
                owner_limit: owner_limit?,
                admin_users: admin_users?,
                reserved_slugs: reserved_slugs?,
                route_mode: route_mode?,
                socket_dir: socket_dir?,
                keys_dir: keys_dir?,
                tls_ask_listen: tls_ask_listen?,
                metrics_listen: metrics_listen?,
            })
        })();
        (config, found.refused)
    }
}

/// The values validation refused, as it goes.
#[derive(Default)]
struct Findings {
    refused: Vec<(Setting, String)>,
}

impl Findings {
    /// Notes a refused value and passes the result on.
    fn keep<T>(&mut self, result: Result<T, ConfigError>) -> Result<T, ConfigError> {
        if let Err(ConfigError::Invalid {
            setting, reason, ..
        }) = &result
        {
            self.refused.push((*setting, reason.clone()));
        }
        result
    }
}

impl EdgeConfig {
    /// Resolves every setting with the precedence flag > environment > env file > default.
    ///
    /// Returns the configuration and warnings (unknown `MYTUNNEL_*` names in the env file,
    /// which are kept for forward compatibility: a rolled-back binary must still start).
    pub fn resolve(inputs: &ConfigInputs) -> Result<(EdgeConfig, Vec<String>), ConfigError> {
        let precedence = Precedence::apply(inputs);
        let (config, _refused) = precedence.validate();
        Ok((config?, precedence.warnings))
    }

    /// Resolves every setting as [`EdgeConfig::resolve`] does, and reports each one's
    /// value, origin and, when it is refused, why (every refused value, not only the first).
    pub fn report(inputs: &ConfigInputs) -> ConfigReport {
        let precedence = Precedence::apply(inputs);
        let (_config, refused) = precedence.validate();
        let settings = Setting::ALL
            .into_iter()
            .map(|setting| {
                let raw = precedence.raw(setting);
                SettingReport {
                    setting,
                    // A database URL's password never shows.
                    value: raw.text().map(redact_password),
                    origin: raw.origin(),
                    error: refused
                        .iter()
                        .find(|(s, _)| *s == setting)
                        .map(|(_, reason)| reason.clone()),
                }
            })
            .collect();
        ConfigReport {
            settings,
            warnings: precedence.warnings,
        }
    }
}

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
