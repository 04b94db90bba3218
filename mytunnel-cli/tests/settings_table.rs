//! The settings table (`mytunnel-core/src/settings.rs`) reaches everything built from it.
//! Each test walks every row, so a new row is checked without touching this file: it must
//! be a flag of `mytunneld serve`, `authorized-keys` and `config`, resolve from its
//! environment variable and env file key, be refused by the SSH gate as its row says, be
//! a remote override of `mytunnel` when its row says so, and appear in the generated CLI
//! reference; the scripts' fallback defaults must be the table's.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use mytunnel_cli::client_cli::{self, Cli};
use mytunnel_cli::edge_cli::{self, serve_settings};
use mytunnel_cli::reference::{markdown, programs};
use mytunnel_core::envfile::EnvEntry;
use mytunnel_core::gate::{parse_original_command, GateConfig};
use mytunnel_core::protocol::{ErrorCode, OVERRIDE_FLAGS};
use mytunnel_core::settings::Setting;
use mytunnel_edge::config::{split_setting_flags, ConfigInputs, EdgeConfig, EnvFileInput, Origin};

/// A value for any setting: resolution reports it whether or not it validates.
const VALUE: &str = "some-value";

#[test]
fn every_setting_is_a_flag_of_serve_authorized_keys_and_config() {
    for setting in Setting::ALL {
        let flag = setting.flag();
        for words in [
            vec!["serve", flag, VALUE],
            vec!["authorized-keys", &format!("{flag}={VALUE}"), "alice"],
            vec!["config", "--json", flag, VALUE],
        ] {
            let matches = edge_cli::command()
                .try_get_matches_from([&["mytunneld"][..], &words].concat())
                .unwrap_or_else(|e| panic!("{words:?}: {e}"));
            let (_, sub) = matches.subcommand().unwrap();
            assert_eq!(
                serve_settings(sub).get(&setting).map(String::as_str),
                Some(VALUE),
                "{words:?}"
            );
        }
        // ctl takes it out of its words (it matters only for --socket-dir there).
        let words = ["list".to_owned(), flag.to_owned(), VALUE.to_owned()];
        let (settings, rest) = split_setting_flags(&words).unwrap();
        assert_eq!(settings.get(&setting).map(String::as_str), Some(VALUE));
        assert_eq!(rest, ["list"]);
    }
}

#[test]
fn every_setting_resolves_from_its_variable_and_env_file_key() {
    let file = PathBuf::from("/etc/mytunneld/mytunneld.env");
    for setting in Setting::ALL {
        let env_var = setting.env_var();
        let from_environment = ConfigInputs {
            environment: [(env_var.to_owned(), VALUE.to_owned())].into(),
            ..ConfigInputs::default()
        };
        let from_file = ConfigInputs {
            env_file: Some(EnvFileInput {
                path: file.clone(),
                entries: vec![EnvEntry {
                    key: env_var.to_owned(),
                    value: VALUE.to_owned(),
                    line: 7,
                }],
            }),
            ..ConfigInputs::default()
        };
        for (inputs, origin) in [
            (from_environment, Origin::Environment),
            (
                from_file,
                Origin::EnvFile {
                    path: file.clone(),
                    line: 7,
                },
            ),
        ] {
            let report = EdgeConfig::report(&inputs);
            assert!(report.warnings.is_empty(), "{:?}", report.warnings);
            let entry = report
                .settings
                .iter()
                .find(|entry| entry.setting == setting)
                .unwrap();
            assert_eq!(entry.value.as_deref(), Some(VALUE), "{setting}");
            assert_eq!(entry.origin, origin, "{setting}");
        }
    }
}

#[test]
fn the_gate_refuses_every_setting_as_its_row_says() {
    for setting in Setting::ALL {
        let spec = setting.spec();
        let expected = if spec.gate_override {
            ErrorCode::OverrideNotAllowed
        } else {
            ErrorCode::ForbiddenCommand
        };
        for form in [format!("{} v", spec.flag), format!("{}=v", spec.flag)] {
            for verb in ["list", "allocate --local-port 3000"] {
                let command = format!("mytunneld ctl {verb} {form}");
                let refused =
                    parse_original_command(&command, &GateConfig::default()).expect_err(&command);
                assert_eq!(refused.code, expected, "{command}");
            }
        }
        assert_eq!(OVERRIDE_FLAGS.contains(&spec.flag), spec.gate_override);
    }
}

#[test]
fn every_remote_override_of_the_table_is_a_flag_of_mytunnel() {
    for setting in Setting::ALL {
        let spec = setting.spec();
        let parsed = Cli::try_parse_from(["mytunnel", "ls", spec.flag, VALUE]);
        if spec.client_override {
            let cli = parsed.unwrap_or_else(|e| panic!("{}: {e}", spec.flag));
            let client_cli::Command::Ls(ls) = cli.command else {
                panic!("not ls")
            };
            assert_eq!(
                ls.edge.overrides.pairs(),
                [(spec.flag.to_owned(), VALUE.to_owned())]
            );
        } else if let Ok(cli) = parsed {
            // The client's own --base-domain is another flag: it is never sent.
            let client_cli::Command::Ls(ls) = cli.command else {
                panic!("not ls")
            };
            assert!(ls.edge.overrides.pairs().is_empty(), "{}", spec.flag);
        }
    }
}

/// The `## <name>` section of a generated page.
fn section<'a>(page: &'a str, name: &str) -> &'a str {
    let start = page
        .find(&format!("\n## {name}\n"))
        .unwrap_or_else(|| panic!("no section {name}"));
    let rest = &page[start + 1..];
    rest[3..].find("\n## ").map_or(rest, |end| &rest[..end + 3])
}

#[test]
fn every_setting_is_in_the_generated_reference() {
    let [client, edge] = programs(true);
    let (client_page, edge_page) = (markdown(&client), markdown(&edge));
    let table = section(&edge_page, "Daemon settings");
    for setting in Setting::ALL {
        let spec = setting.spec();
        for command in [
            "mytunneld serve",
            "mytunneld authorized-keys",
            "mytunneld config",
        ] {
            let help = section(&edge_page, command);
            assert!(
                help.contains(&format!("{} <{}>", spec.flag, spec.value_name)),
                "{command}: no {}",
                spec.flag
            );
            assert!(
                help.contains(spec.env_var),
                "{command}: no {}",
                spec.env_var
            );
        }
        let row = table
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` | `{}` |", spec.env_var, spec.flag)))
            .unwrap_or_else(|| panic!("no row for {setting} in {table}"));
        let gate = if spec.gate_override {
            "| `override_not_allowed` |"
        } else {
            "| `forbidden_command` |"
        };
        assert!(row.contains(gate), "{row}");
        let remote = format!("Remote {}:", spec.flag);
        assert_eq!(
            section(&client_page, "mytunnel ls").contains(&remote),
            spec.client_override,
            "{remote}"
        );
    }
}

#[test]
fn the_scripts_fallback_defaults_are_the_tables() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib-edge.sh");
    let output = Command::new("bash")
        .arg("-c")
        .arg(
            r#"source "$1" && for name in "${!FALLBACK_DEFAULTS[@]}"; do printf '%s=%s\n' "$name" "${FALLBACK_DEFAULTS[$name]}"; done"#,
        )
        .arg("bash")
        .arg(&lib)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        !text.is_empty(),
        "no FALLBACK_DEFAULTS in {}",
        lib.display()
    );
    for line in text.lines() {
        let (name, value) = line.split_once('=').unwrap();
        let setting =
            Setting::from_env_var(name).unwrap_or_else(|| panic!("{name} is not a setting"));
        // '' stands for a setting without a default.
        assert_eq!(setting.default_value().unwrap_or(""), value, "{name}");
    }
}
