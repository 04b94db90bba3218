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
        config.database,
        Database::Sqlite(PathBuf::from("/var/lib/mytunneld/leases.db"))
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
    assert_eq!(config.tls_ask_listen, None);
    assert_eq!(config.metrics_listen, None);
}

#[test]
fn loopback_listen_addresses_are_off_when_empty_and_loopback_only() {
    let inputs = ConfigInputs {
        environment: env(&[
            ("MYTUNNEL_METRICS_LISTEN", " 127.0.0.1:9464 "),
            ("MYTUNNEL_TLS_ASK_LISTEN", ""),
        ]),
        ..ConfigInputs::default()
    };
    let (config, _) = EdgeConfig::resolve(&inputs).unwrap();
    assert_eq!(
        config.metrics_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9464")
    );
    assert_eq!(config.tls_ask_listen, None);
    // (setting, value, the loopback address the refusal suggests)
    for (var, value, example) in [
        ("MYTUNNEL_METRICS_LISTEN", "0.0.0.0:9100", "127.0.0.1:9100"),
        ("MYTUNNEL_METRICS_LISTEN", "[::]:9100", "127.0.0.1:9100"),
        (
            "MYTUNNEL_METRICS_LISTEN",
            "localhost:9100",
            "127.0.0.1:PORT",
        ),
        ("MYTUNNEL_TLS_ASK_LISTEN", "0.0.0.0:2020", "127.0.0.1:2020"),
    ] {
        let inputs = ConfigInputs {
            environment: env(&[(var, value)]),
            ..ConfigInputs::default()
        };
        let message = EdgeConfig::resolve(&inputs).unwrap_err().to_string();
        assert!(message.contains(var), "{var}={value}: {message}");
        assert!(message.contains(example), "{var}={value}: {message}");
    }
}

#[test]
fn precedence_is_flag_env_file_default() {
    let mut inputs = ConfigInputs {
        env_file: file(
            "MYTUNNEL_MIN_PORT=1000\nMYTUNNEL_MAX_PORT=2000\nMYTUNNEL_BASE_DOMAIN=file.example\n",
        ),
        environment: env(&[
            ("MYTUNNEL_MIN_PORT", "1100"),
            ("MYTUNNEL_BASE_DOMAIN", "env.example"),
        ]),
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
    assert!(split_setting_flags(&["--min-port=1".to_owned(), "--min-port=2".to_owned()]).is_err());
}

#[test]
fn the_report_names_every_value_its_origin_and_each_refused_one() {
    let mut inputs = ConfigInputs {
        env_file: file("MYTUNNEL_CADDY_ADMIN_URL=http://0.0.0.0:2019\nMYTUNNEL_MIN_PORT=x\n"),
        environment: env(&[
            ("MYTUNNEL_LOG_FORMAT", "xml"),
            ("MYTUNNEL_ROUTE_MODE", "static"),
        ]),
        ..ConfigInputs::default()
    };
    inputs.flags.insert(Setting::KeysDir, "/srv/keys".into());
    let report = EdgeConfig::report(&inputs);
    assert!(!report.is_valid());
    assert_eq!(report.settings.len(), Setting::ALL.len());
    let entry = |setting| {
        report
            .settings
            .iter()
            .find(|s| s.setting == setting)
            .unwrap()
            .clone()
    };
    let keys = entry(Setting::KeysDir);
    assert_eq!(
        (keys.value.as_deref(), keys.origin),
        (Some("/srv/keys"), Origin::Flag)
    );
    assert_eq!(entry(Setting::RouteMode).origin, Origin::Environment);
    assert_eq!(
        entry(Setting::MinPort).origin,
        Origin::EnvFile {
            path: PathBuf::from("/etc/mytunneld/mytunneld.env"),
            line: 2
        }
    );
    let db = entry(Setting::DbPath);
    assert_eq!(
        (db.value.as_deref(), db.origin, db.error),
        (Some("/var/lib/mytunneld/leases.db"), Origin::Default, None)
    );
    let domain = entry(Setting::BaseDomain);
    assert_eq!((domain.value, domain.error), (None, None));
    // Every refused value, not only the first.
    let refused: Vec<Setting> = report
        .settings
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.setting)
        .collect();
    assert_eq!(
        refused,
        [Setting::CaddyAdminUrl, Setting::MinPort, Setting::LogFormat]
    );
    assert!(entry(Setting::CaddyAdminUrl)
        .error
        .unwrap()
        .contains("loopback"));
    // resolve gives the first of them.
    let message = EdgeConfig::resolve(&inputs).unwrap_err().to_string();
    assert!(message.contains("--caddy-admin-url"), "{message}");
    assert!(EdgeConfig::report(&ConfigInputs::default()).is_valid());
}

#[test]
fn a_database_url_chooses_postgres_and_may_not_hold_a_password() {
    let with = |url: &str| ConfigInputs {
        env_file: file(&format!("MYTUNNEL_DB_URL={url}\n")),
        ..ConfigInputs::default()
    };
    let (config, _) = EdgeConfig::resolve(&with(
        "postgres://mytunnel@db.internal/leases?sslmode=require",
    ))
    .unwrap();
    assert_eq!(
        config.database.to_string(),
        "postgres://mytunnel@db.internal/leases?sslmode=require"
    );
    assert!(matches!(config.database, Database::Postgres(_)));
    // Empty is unset: the SQLite file.
    let (config, _) = EdgeConfig::resolve(&with("")).unwrap();
    assert!(matches!(config.database, Database::Sqlite(_)));

    // The env file is readable by every tunnel user: a password there is refused, and
    // neither the error nor `mytunneld config`'s report shows it.
    for url in [
        "postgres://mytunnel:s3cret@db.internal/leases",
        "postgres://mytunnel@db.internal/leases?password=s3cret",
    ] {
        let message = EdgeConfig::resolve(&with(url)).unwrap_err().to_string();
        assert!(
            message.contains("--db-url") && message.contains("PGPASSFILE"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        let report = EdgeConfig::report(&with(url));
        let db = report
            .settings
            .iter()
            .find(|s| s.setting == Setting::DbUrl)
            .unwrap();
        assert!(db.error.is_some());
        let shown = format!("{:?}", db);
        assert!(
            !shown.contains("s3cret") && shown.contains("***"),
            "{shown}"
        );
    }
    let message = EdgeConfig::resolve(&with("mysql://h/db"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("not a postgres:// URL"), "{message}");
}

#[test]
fn the_edge_id_defaults_to_local_and_must_be_a_dns_label() {
    let with = |id: &str| ConfigInputs {
        env_file: file(&format!("MYTUNNEL_EDGE_ID={id}\n")),
        ..ConfigInputs::default()
    };
    let (config, _) = EdgeConfig::resolve(&ConfigInputs::default()).unwrap();
    assert_eq!(config.edge_id, EdgeId::local());
    let (config, _) = EdgeConfig::resolve(&with("fra-1")).unwrap();
    assert_eq!(config.edge_id.as_str(), "fra-1");
    for bad in ["Fra-1", "fra_1", "-fra", "", &"a".repeat(64)] {
        let message = EdgeConfig::resolve(&with(bad)).unwrap_err().to_string();
        assert!(message.contains("--edge-id"), "{bad}: {message}");
    }
}
