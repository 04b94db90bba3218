//! The edge daemon's settings, defined once.
//!
//! Each row of the table below is one setting: its name, command-line flag, environment
//! variable, default, value name, help line, how the SSH gate treats its flag, and whether
//! the client offers it as a remote override. Everything that lists settings is built
//! from it: `mytunneld`'s flags and help, the env resolution (`mytunnel-edge`'s
//! `config.rs`), the gate's [`OVERRIDE_FLAGS`](crate::protocol::OVERRIDE_FLAGS), the
//! client's remote overrides, `mytunneld config` and the generated CLI reference.
//!
//! Adding a setting is one row here plus its use where it is validated
//! (`EdgeConfig::resolve`); `mytunnel-cli/tests/settings_table.rs` shows that every row
//! reaches the flags, the env resolution, the gate and the docs.
//!
//! ```
//! use mytunnel_core::settings::Setting;
//!
//! let setting = Setting::from_env_var("MYTUNNEL_DB_PATH").unwrap();
//! assert_eq!(setting.flag(), "--db-path");
//! assert_eq!(setting.default_value(), Some("/var/lib/mytunneld/leases.db"));
//! assert!(setting.spec().gate_override);
//! ```

use std::fmt;

/// One row of the settings table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingSpec {
    /// The name in `snake_case`, e.g. `db_path` (the key `mytunneld config --json` uses).
    pub name: &'static str,
    /// The command-line flag, e.g. `--db-path`.
    pub flag: &'static str,
    /// The environment variable and env file key, e.g. `MYTUNNEL_DB_PATH`.
    pub env_var: &'static str,
    /// The default value as text, or `None` when the setting has none.
    pub default: Option<&'static str>,
    /// What the value is, for `--help` (`<PATH>`).
    pub value_name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Whether the SSH gate refuses the flag by name, as daemon configuration
    /// (`override_not_allowed`), wherever it stands on a ctl command line. A setting
    /// without it is still never accepted through the gate: it is an unknown flag there
    /// (`forbidden_command`).
    pub gate_override: bool,
    /// Whether `mytunnel` offers the flag as a remote override, passed to a `mytunneld ctl`
    /// reached without the gate. Only a `gate_override` setting may be one.
    pub client_override: bool,
}

/// Declares the table: the [`Setting`] enum (one variant per row), [`Setting::ALL`] in
/// row order, and [`Setting::spec`], from one block per setting.
macro_rules! settings_table {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident {
            name: $name:literal,
            flag: $flag:literal,
            env_var: $env_var:literal,
            default: $default:expr,
            value_name: $value_name:literal,
            gate_override: $gate_override:literal,
            client_override: $client_override:literal,
            help: $help:expr $(,)?
        }
    ),+ $(,)?) => {
        /// One configurable setting of the edge daemon: a row of the settings table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Setting {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl Setting {
            /// Every setting, in table order.
            pub const ALL: [Setting; [$(stringify!($variant)),+].len()] =
                [$(Setting::$variant),+];

            /// The setting's row of the table.
            pub const fn spec(self) -> &'static SettingSpec {
                match self {
                    $(
                        Setting::$variant => &SettingSpec {
                            name: $name,
                            flag: $flag,
                            env_var: $env_var,
                            default: $default,
                            value_name: $value_name,
                            help: $help,
                            gate_override: $gate_override,
                            client_override: $client_override,
                        },
                    )+
                }
            }
        }
    };
}

settings_table! {
    /// `--db-path`
    DbPath {
        name: "db_path",
        flag: "--db-path",
        env_var: "MYTUNNEL_DB_PATH",
        default: Some("/var/lib/mytunneld/leases.db"),
        value_name: "PATH",
        gate_override: true,
        client_override: true,
        help: "SQLite lease database file (unused when --db-url is set)",
    },
    /// `--db-url`
    DbUrl {
        name: "db_url",
        flag: "--db-url",
        env_var: "MYTUNNEL_DB_URL",
        default: None,
        value_name: "URL",
        // Not one of the gate's named overrides: through the gate it is an unknown flag.
        gate_override: false,
        // A URL may hold a password: never on a command line the client builds.
        client_override: false,
        help: "PostgreSQL lease database shared by several edges (postgres://...); \
               replaces --db-path. Set it in the env file: it may hold a password",
    },
    /// `--edge-id`
    EdgeId {
        name: "edge_id",
        flag: "--edge-id",
        env_var: "MYTUNNEL_EDGE_ID",
        default: Some("local"),
        value_name: "ID",
        // Not one of the gate's named overrides: through the gate it is an unknown flag.
        gate_override: false,
        client_override: false,
        help: "This edge's id among the edges sharing a --db-url database: each edge \
               routes the leases allocated through it (a-z, 0-9, -)",
    },
    /// `--edge-url`
    EdgeUrl {
        name: "edge_url",
        flag: "--edge-url",
        env_var: "MYTUNNEL_EDGE_URL",
        default: None,
        value_name: "URL",
        gate_override: false,
        client_override: false,
        help: "Where the other edges sharing the database reach this edge's Caddy to \
               forward its tunnels' hosts (https://NAME, or http://ADDRESS on a private \
               network); unset: they do not",
    },
    /// `--base-domain`
    BaseDomain {
        name: "base_domain",
        flag: "--base-domain",
        env_var: "MYTUNNEL_BASE_DOMAIN",
        default: None,
        value_name: "DOMAIN",
        gate_override: true,
        // The client's own --base-domain is the domain it expects URLs under.
        client_override: false,
        help: "Tunnels are published at https://<slug>.<base-domain> (required to allocate)",
    },
    /// `--caddy-admin-url`
    CaddyAdminUrl {
        name: "caddy_admin_url",
        flag: "--caddy-admin-url",
        env_var: "MYTUNNEL_CADDY_ADMIN_URL",
        default: Some("http://127.0.0.1:2019"),
        value_name: "URL",
        gate_override: true,
        client_override: true,
        help: "Caddy admin API; loopback or unix socket only",
    },
    /// `--caddy-server`
    CaddyServer {
        name: "caddy_server",
        flag: "--caddy-server",
        env_var: "MYTUNNEL_CADDY_SERVER",
        default: Some("srv0"),
        value_name: "NAME",
        gate_override: true,
        client_override: true,
        help: "Caddy HTTP server whose routes mytunnel manages",
    },
    /// `--min-port`
    MinPort {
        name: "min_port",
        flag: "--min-port",
        env_var: "MYTUNNEL_MIN_PORT",
        default: Some("21000"),
        value_name: "PORT",
        gate_override: true,
        client_override: true,
        help: "Lowest edge port a lease binds",
    },
    /// `--max-port`
    MaxPort {
        name: "max_port",
        flag: "--max-port",
        env_var: "MYTUNNEL_MAX_PORT",
        default: Some("21999"),
        value_name: "PORT",
        gate_override: true,
        client_override: true,
        help: "Highest edge port a lease binds",
    },
    /// `--lease-ttl`
    LeaseTtl {
        name: "lease_ttl",
        flag: "--lease-ttl",
        env_var: "MYTUNNEL_LEASE_TTL",
        default: Some("2m"),
        value_name: "DURATION",
        gate_override: true,
        client_override: true,
        help: "Lease time to live when the client asks for none",
    },
    /// `--cleanup-interval`
    CleanupInterval {
        name: "cleanup_interval",
        flag: "--cleanup-interval",
        env_var: "MYTUNNEL_CLEANUP_INTERVAL",
        default: Some("30s"),
        value_name: "DURATION",
        gate_override: true,
        client_override: true,
        help: "How often serve expires leases without heartbeats",
    },
    /// `--reconcile-interval`
    ReconcileInterval {
        name: "reconcile_interval",
        flag: "--reconcile-interval",
        env_var: "MYTUNNEL_RECONCILE_INTERVAL",
        default: Some("60s"),
        value_name: "DURATION",
        gate_override: true,
        client_override: true,
        help: "How often serve makes Caddy's routes match the leases",
    },
    /// `--health-timeout`
    HealthTimeout {
        name: "health_timeout",
        flag: "--health-timeout",
        env_var: "MYTUNNEL_HEALTH_TIMEOUT",
        default: Some("5s"),
        value_name: "DURATION",
        gate_override: true,
        client_override: true,
        help: "Bound on each health probe and admin API request",
    },
    /// `--log-format`
    LogFormat {
        name: "log_format",
        flag: "--log-format",
        env_var: "MYTUNNEL_LOG_FORMAT",
        default: Some("text"),
        value_name: "text|json",
        gate_override: true,
        client_override: true,
        help: "serve's log format: text or json",
    },
    /// `--max-leases-per-owner`
    MaxLeasesPerOwner {
        name: "max_leases_per_owner",
        flag: "--max-leases-per-owner",
        env_var: "MYTUNNEL_MAX_LEASES_PER_OWNER",
        default: Some("10"),
        value_name: "N",
        gate_override: true,
        client_override: true,
        help: "Active leases one user may hold; 0 means unlimited",
    },
    /// `--admin-users`
    AdminUsers {
        name: "admin_users",
        flag: "--admin-users",
        env_var: "MYTUNNEL_ADMIN_USERS",
        default: Some(""),
        value_name: "USERS",
        gate_override: true,
        client_override: false,
        help: "Comma list of users who may --force, list --all and reconcile",
    },
    /// `--tombstone-retention`
    TombstoneRetention {
        name: "tombstone_retention",
        flag: "--tombstone-retention",
        env_var: "MYTUNNEL_TOMBSTONE_RETENTION",
        default: Some("7d"),
        value_name: "DURATION",
        gate_override: false,
        client_override: false,
        help: "How long released/expired tombstones are kept",
    },
    /// `--reserved-slugs`
    ReservedSlugs {
        name: "reserved_slugs",
        flag: "--reserved-slugs",
        env_var: "MYTUNNEL_RESERVED_SLUGS",
        default: None,
        value_name: "NAMES",
        gate_override: false,
        client_override: false,
        help: "Comma list of names no tunnel may take (default: www, api, admin, …)",
    },
    /// `--route-mode`
    RouteMode {
        name: "route_mode",
        flag: "--route-mode",
        env_var: "MYTUNNEL_ROUTE_MODE",
        default: Some("routes"),
        value_name: "static|routes",
        gate_override: false,
        client_override: false,
        help: "static: one wildcard Caddy route to per-owner unix sockets (no Caddy reload \
               per lease); routes: one Caddy route per lease to a loopback port",
    },
    /// `--socket-dir`
    SocketDir {
        name: "socket_dir",
        flag: "--socket-dir",
        env_var: "MYTUNNEL_SOCKET_DIR",
        default: Some("/var/lib/mytunnel-sockets"),
        value_name: "DIR",
        gate_override: false,
        client_override: false,
        help: "static mode: root of hosts/ (written by serve) and owners/<user>/ (sockets)",
    },
    /// `--keys-dir`
    KeysDir {
        name: "keys_dir",
        flag: "--keys-dir",
        env_var: "MYTUNNEL_KEYS_DIR",
        default: Some("/etc/mytunneld/keys"),
        value_name: "DIR",
        gate_override: false,
        client_override: false,
        help: "Tunnel keys read by `mytunneld authorized-keys <user>`",
    },
    /// `--tls-ask-listen`
    TlsAskListen {
        name: "tls_ask_listen",
        flag: "--tls-ask-listen",
        env_var: "MYTUNNEL_TLS_ASK_LISTEN",
        default: None,
        value_name: "ADDR",
        gate_override: false,
        client_override: false,
        help: "Answer Caddy's on-demand TLS `ask` here (loopback IP:PORT): yes only for hosts of active leases; off when unset",
    },
    /// `--metrics-listen`
    MetricsListen {
        name: "metrics_listen",
        flag: "--metrics-listen",
        env_var: "MYTUNNEL_METRICS_LISTEN",
        default: None,
        value_name: "ADDR",
        gate_override: false,
        client_override: false,
        help: "Serve Prometheus metrics at GET /metrics here (loopback IP:PORT, e.g. 127.0.0.1:9464); off when unset",
    },
}

impl Setting {
    /// The `snake_case` name, e.g. `db_path`.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }

    /// The command-line flag, e.g. `--db-path`.
    pub const fn flag(self) -> &'static str {
        self.spec().flag
    }

    /// The environment variable, e.g. `MYTUNNEL_DB_PATH`.
    pub const fn env_var(self) -> &'static str {
        self.spec().env_var
    }

    /// The default value as text, or `None` when the setting has no default.
    pub const fn default_value(self) -> Option<&'static str> {
        self.spec().default
    }

    /// One line of help for `--help`.
    pub const fn help(self) -> &'static str {
        self.spec().help
    }

    /// The setting a flag (`--db-path`) names.
    pub fn from_flag(flag: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.flag() == flag)
    }

    /// The setting an environment variable (`MYTUNNEL_DB_PATH`) names.
    pub fn from_env_var(name: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.env_var() == name)
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.flag(), self.env_var())
    }
}

/// How many settings the gate refuses by name ([`SettingSpec::gate_override`]).
pub const GATE_OVERRIDE_COUNT: usize = {
    let mut count = 0;
    let mut rest: &[Setting] = &Setting::ALL;
    while let [setting, tail @ ..] = rest {
        if setting.spec().gate_override {
            count += 1;
        }
        rest = tail;
    }
    count
};

/// The flags of the settings the gate refuses by name, in table order. `N` is
/// [`GATE_OVERRIDE_COUNT`]; evaluated at compile time.
pub(crate) const fn gate_override_flags<const N: usize>() -> [&'static str; N] {
    let mut flags = [""; N];
    let mut slots: &mut [&'static str] = &mut flags;
    let mut rest: &[Setting] = &Setting::ALL;
    while let [setting, tail @ ..] = rest {
        let spec = setting.spec();
        if spec.gate_override {
            if let [slot, more @ ..] = slots {
                *slot = spec.flag;
                slots = more;
            }
        }
        rest = tail;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_flags_and_variables_agree() {
        for setting in Setting::ALL {
            let spec = setting.spec();
            assert_eq!(spec.flag, format!("--{}", spec.name.replace('_', "-")));
            assert_eq!(
                spec.env_var,
                format!("MYTUNNEL_{}", spec.name.to_ascii_uppercase())
            );
            assert_eq!(Setting::from_flag(spec.flag), Some(setting));
            assert_eq!(Setting::from_env_var(spec.env_var), Some(setting));
            assert!(!spec.help.is_empty() && !spec.value_name.is_empty());
            // A remote override is a setting the gate refuses by name.
            assert!(!spec.client_override || spec.gate_override, "{setting}");
        }
    }

    #[test]
    fn the_gate_list_is_the_marked_rows_in_order() {
        let marked: Vec<&str> = Setting::ALL
            .iter()
            .filter(|s| s.spec().gate_override)
            .map(|s| s.flag())
            .collect();
        assert_eq!(
            gate_override_flags::<GATE_OVERRIDE_COUNT>().to_vec(),
            marked
        );
        assert_eq!(GATE_OVERRIDE_COUNT, 13);
    }
}
