//! `mytunneld config`: every resolved setting, where its value came from and why it is
//! refused, as text for a person or as one JSON document for scripts.

use std::fmt::Write as _;
use std::path::Path;

use mytunnel_core::printable::printable;
use mytunnel_edge::config::{ConfigReport, Origin, SettingReport};
use serde_json::{json, Value};

/// What `mytunneld config` prints and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOutput {
    /// Everything for stdout.
    pub stdout: String,
    /// 0 every value is valid, 1 some value is refused.
    pub exit_code: u8,
}

/// The env file the settings were read from.
#[derive(Debug, Clone, Copy)]
pub struct EnvFileSeen<'a> {
    /// Its path.
    pub path: &'a Path,
    /// Whether it exists (a missing file is no error: defaults apply).
    pub found: bool,
}

/// The output of `mytunneld config [--json]`.
pub fn config_output(report: &ConfigReport, env_file: EnvFileSeen<'_>, json: bool) -> ConfigOutput {
    let stdout = if json {
        format!("{}\n", config_json(report, env_file))
    } else {
        config_text(report, env_file)
    };
    ConfigOutput {
        stdout,
        exit_code: if report.is_valid() { 0 } else { 1 },
    }
}

/// The JSON key of an origin, and the env file's line when it is one.
fn source(origin: &Origin) -> (&'static str, Option<usize>) {
    match origin {
        Origin::Flag => ("flag", None),
        Origin::Environment => ("environment", None),
        Origin::EnvFile { line, .. } => ("env_file", Some(*line)),
        Origin::Default => ("default", None),
    }
}

/// The document `--json` prints (its keys are described in `mytunneld config --help`).
pub fn config_json(report: &ConfigReport, env_file: EnvFileSeen<'_>) -> Value {
    let settings: Vec<Value> = report
        .settings
        .iter()
        .map(|entry| {
            let spec = entry.setting.spec();
            let (source, line) = source(&entry.origin);
            json!({
                "name": spec.name,
                "flag": spec.flag,
                "env": spec.env_var,
                "value": entry.value,
                "source": source,
                "line": line,
                "default": spec.default,
                "gate_override": spec.gate_override,
                "error": entry.error,
            })
        })
        .collect();
    json!({
        "env_file": {
            "path": env_file.path.to_string_lossy(),
            "found": env_file.found,
        },
        "valid": report.is_valid(),
        "settings": settings,
        "warnings": report.warnings,
    })
}

/// Where a value came from, in words.
fn source_text(origin: &Origin) -> String {
    match origin {
        Origin::Flag => "flag".to_owned(),
        Origin::Environment => "environment".to_owned(),
        Origin::EnvFile { line, .. } => format!("env file, line {line}"),
        Origin::Default => "default".to_owned(),
    }
}

/// `NAME=VALUE` as the left column (`NAME` alone when unset), control characters shown.
fn assignment(entry: &SettingReport) -> String {
    let name = entry.setting.env_var();
    match &entry.value {
        Some(value) => format!("{name}={}", printable(value)),
        None => name.to_owned(),
    }
}

/// The text `mytunneld config` prints: one line per setting, `NAME=VALUE` and where the
/// value came from, each refused value's reason under it, then the env file's warnings.
pub fn config_text(report: &ConfigReport, env_file: EnvFileSeen<'_>) -> String {
    let mut text = format!(
        "# flag > environment > env file > default; env file {}{}\n",
        printable(&env_file.path.to_string_lossy()),
        if env_file.found { "" } else { " (not found)" }
    );
    let width = report
        .settings
        .iter()
        .map(|entry| assignment(entry).chars().count())
        .max()
        .unwrap_or(0);
    for entry in &report.settings {
        let left = assignment(entry);
        let source = match &entry.value {
            Some(_) => source_text(&entry.origin),
            None => "not set, no default".to_owned(),
        };
        let _ = writeln!(text, "{left:<width$}  # {source}");
        if let Some(error) = &entry.error {
            let _ = writeln!(text, "  refused: {}", printable(error));
        }
    }
    for warning in &report.warnings {
        let _ = writeln!(text, "warning: {}", printable(warning));
    }
    let refused: Vec<&str> = report
        .settings
        .iter()
        .filter(|entry| entry.error.is_some())
        .map(|entry| entry.setting.env_var())
        .collect();
    if !refused.is_empty() {
        let _ = writeln!(
            text,
            "# refused: {} (serve would not start)",
            refused.join(", ")
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use mytunnel_core::envfile::parse_env_file;
    use mytunnel_edge::config::{ConfigInputs, EdgeConfig, EnvFileInput, Setting};

    fn report() -> ConfigReport {
        let mut flags = BTreeMap::new();
        flags.insert(Setting::RouteMode, "static".to_owned());
        EdgeConfig::report(&ConfigInputs {
            flags,
            environment: [("MYTUNNEL_LOG_FORMAT".to_owned(), "xml".to_owned())].into(),
            env_file: Some(EnvFileInput {
                path: PathBuf::from("/etc/mytunneld/mytunneld.env"),
                entries: parse_env_file("MYTUNNEL_BASE_DOMAIN=t.example\nMYTUNNEL_NEW=1\n")
                    .unwrap(),
            }),
        })
    }

    fn file() -> EnvFileSeen<'static> {
        EnvFileSeen {
            path: Path::new("/etc/mytunneld/mytunneld.env"),
            found: true,
        }
    }

    #[test]
    fn json_names_every_setting_its_source_and_error() {
        let output = config_output(&report(), file(), true);
        assert_eq!(output.exit_code, 1);
        let doc: Value = serde_json::from_str(&output.stdout).unwrap();
        assert_eq!(doc["valid"], false);
        assert_eq!(doc["env_file"]["path"], "/etc/mytunneld/mytunneld.env");
        let settings = doc["settings"].as_array().unwrap();
        assert_eq!(settings.len(), Setting::ALL.len());
        let by_env = |env: &str| {
            settings
                .iter()
                .find(|s| s["env"] == env)
                .unwrap_or_else(|| panic!("{env}"))
                .clone()
        };
        assert_eq!(
            by_env("MYTUNNEL_BASE_DOMAIN"),
            json!({"name": "base_domain", "flag": "--base-domain", "env": "MYTUNNEL_BASE_DOMAIN",
                   "value": "t.example", "source": "env_file", "line": 1, "default": null,
                   "gate_override": true, "error": null})
        );
        assert_eq!(by_env("MYTUNNEL_ROUTE_MODE")["source"], "flag");
        assert_eq!(by_env("MYTUNNEL_DB_PATH")["source"], "default");
        let log = by_env("MYTUNNEL_LOG_FORMAT");
        assert_eq!(log["source"], "environment");
        assert!(log["error"].as_str().unwrap().contains("text or json"));
        assert!(doc["warnings"][0]
            .as_str()
            .unwrap()
            .contains("MYTUNNEL_NEW"));
    }

    #[test]
    fn text_has_a_line_per_setting_with_its_source() {
        let output = config_output(&report(), file(), false);
        assert_eq!(output.exit_code, 1);
        let text = output.stdout;
        assert!(text.starts_with("# flag > environment > env file > default; env file /etc/mytunneld/mytunneld.env\n"), "{text}");
        for (line_start, source) in [
            ("MYTUNNEL_BASE_DOMAIN=t.example ", "# env file, line 1"),
            ("MYTUNNEL_ROUTE_MODE=static ", "# flag"),
            ("MYTUNNEL_LOG_FORMAT=xml ", "# environment"),
            (
                "MYTUNNEL_DB_PATH=/var/lib/mytunneld/leases.db ",
                "# default",
            ),
            ("MYTUNNEL_RESERVED_SLUGS ", "# not set, no default"),
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(line_start))
                .unwrap_or_else(|| panic!("no {line_start}: {text}"));
            assert!(line.ends_with(source), "{line}");
        }
        assert!(
            text.contains("\n  refused: \"xml\" is not text or json\n"),
            "{text}"
        );
        assert!(text.contains("warning: "), "{text}");
        assert!(text.ends_with("# refused: MYTUNNEL_LOG_FORMAT (serve would not start)\n"));

        let valid = EdgeConfig::report(&ConfigInputs::default());
        let missing = EnvFileSeen {
            path: Path::new("/nonexistent.env"),
            found: false,
        };
        let output = config_output(&valid, missing, false);
        assert_eq!(output.exit_code, 0);
        assert!(output.stdout.contains("/nonexistent.env (not found)"));
        assert!(!output.stdout.contains("refused"));
    }
}
