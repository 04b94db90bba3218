//! `mytunneld`: arguments, configuration loading and the ctl help text.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};
use mytunnel_core::protocol::{ApiError, CtlRequest, ErrorCode};
use mytunnel_edge::authorized_keys::GateCommand;
use mytunnel_edge::config::{
    load_env_file, split_setting_flags, ConfigInputs, EdgeConfig, Setting, DEFAULT_ENV_FILE,
};

use crate::config_output::{config_output, ConfigOutput, EnvFileSeen};

const EXAMPLES: &str = "\
Examples:
  mytunneld serve --base-domain tunnel.example.com
  mytunneld ctl health
  mytunneld ctl list --all
  mytunneld ctl allocate --local-port 3000 --name portal
  sudo -u alice mytunneld ctl list
  mytunneld config";

/// The help of `mytunneld ctl` (it parses its own words, so clap does not render it).
pub const CTL_HELP: &str = "\
One control operation; prints one JSON document on stdout.

Usage: mytunneld ctl <VERB> [FLAGS] [DAEMON SETTINGS]

Verbs:
  allocate   [--local-port N] [--name SLUG] [--ttl DUR] [--force] [--owner X (ignored)]
             [--replaces ID]   (with --name: your own lease ID that holds the name
                                is replaced at once, as a client moving edges does)
  heartbeat  --lease ID
  release    --lease ID|HOST|SLUG
  delete     --lease ID|HOST|SLUG
  list       [--all]            (--all: admins only)
  health
  reconcile                     (admins only)
  stats

The owner is always the user running the command. ctl asks the running
`mytunneld serve` (at <socket dir>/control.sock), which alone opens the lease database
and answers with its own settings: of the daemon settings only --socket-dir means
anything here (others are accepted, with a warning; never through the SSH gate).
Without serve, every verb answers service_unavailable (exit 2) and changes nothing.

Exit codes: 0 success, 1 refused (or unhealthy), 2 internal failure or bad configuration.

Examples:
  mytunneld ctl allocate --local-port 3000 --name portal --ttl 5m
  mytunneld ctl release --lease portal.tunnel.example.com
  mytunneld ctl list --all";

fn setting_id(setting: Setting) -> &'static str {
    setting.flag().trim_start_matches('-')
}

/// The daemon settings as flags, from the settings table.
fn setting_args() -> Vec<Arg> {
    Setting::ALL
        .into_iter()
        .map(|setting| {
            let spec = setting.spec();
            let mut help = format!("{} [env: {}]", spec.help, spec.env_var);
            if let Some(default) = spec.default.filter(|d| !d.is_empty()) {
                help.push_str(&format!(" [default: {default}]"));
            }
            Arg::new(setting_id(setting))
                .long(setting_id(setting))
                .value_name(spec.value_name)
                .help(help)
                .help_heading("Daemon settings")
        })
        .collect()
}

/// The `mytunneld` command definition.
pub fn command() -> Command {
    Command::new("mytunneld")
        .version(env!("CARGO_PKG_VERSION"))
        .about("The mytunnel edge: lease database, Caddy routes and the SSH gate")
        .after_help(EXAMPLES)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            Arg::new("env-file")
                .long("env-file")
                .global(true)
                .value_name("PATH")
                .default_value(DEFAULT_ENV_FILE)
                .help("Env file of KEY=VALUE settings, read by serve, ctl, gate, authorized-keys and config"),
        )
        .subcommand(
            Command::new("serve")
                .about("Run the cleanup and reconcile loops until SIGTERM or SIGINT")
                .args(setting_args()),
        )
        .subcommand(
            Command::new("ctl")
                .about("One control operation; prints one JSON document (see `mytunneld ctl --help`)")
                .disable_help_flag(true)
                .arg(
                    Arg::new("words")
                        .num_args(0..)
                        .trailing_var_arg(true)
                        .allow_hyphen_values(true)
                        .action(ArgAction::Append),
                ),
        )
        .subcommand(Command::new("gate").about(
            "SSH forced command for tunnel keys: allows only `mytunneld ctl <verb>` and tunnel sessions",
        ))
        .subcommand(
            Command::new("authorized-keys")
                .about("sshd's AuthorizedKeysCommand: prints USER's tunnel keys, each limited to what a tunnel key may do")
                .long_about(AUTHORIZED_KEYS_ABOUT)
                .arg(
                    Arg::new("user")
                        .required(true)
                        .value_name("USER")
                        .help("The user logging in (sshd's %u)"),
                )
                .arg(
                    Arg::new("gate-command")
                        .long("gate-command")
                        .value_name("CMD")
                        .help("The forced command written into every key [default: this binary's gate, with --env-file when not the default]"),
                )
                .args(setting_args()),
        )
        .subcommand(
            Command::new("config")
                .about("Print every setting as serve resolves it, where its value came from, and what is refused")
                .long_about(CONFIG_ABOUT)
                .after_help(CONFIG_EXAMPLES)
                .arg(
                    Arg::new("json")
                        .long("json")
                        .action(ArgAction::SetTrue)
                        .help("Print one JSON document instead of text"),
                )
                .args(setting_args()),
        )
}

const CONFIG_ABOUT: &str = "\
Prints every daemon setting as `mytunneld serve` resolves it here (flag > MYTUNNEL_*
environment > env file > default), where each value came from, and why a value is
refused. Every setting is printed, also when some are refused.

--json prints one document: {\"env_file\": {\"path\", \"found\"}, \"valid\", \"settings\": [{\"name\",
\"flag\", \"env\", \"value\" (null when unset), \"source\" (flag, environment, env_file or
default), \"line\" (of the env file, else null), \"default\", \"gate_override\", \"error\"
(null when valid)}], \"warnings\"}. The edge scripts read paths, the route mode and the
admin URL check from it.

Exit codes: 0 every value is valid, 1 some value is refused (serve would not start), 2 the
env file cannot be read.";

const CONFIG_EXAMPLES: &str = "\
Examples:
  mytunneld config
  mytunneld --env-file /etc/mytunneld/mytunneld.env config --json
  mytunneld config --route-mode static";

const AUTHORIZED_KEYS_ABOUT: &str = "\
sshd's AuthorizedKeysCommand for tunnel users. Reads USER's public keys from
<keys-dir>/USER (one key per line, without options; the file and its directory must be
root's and not writable by group or others) and prints each with
`restrict,port-forwarding,pty,permitlisten=\"NONE:1\",command=\"<gate command>\"`:
forwards, and a terminal for the session the gate holds (ssh and sshd set TCP_NODELAY on
an interactive session); whatever the client asks, sshd runs only the gate.

permitlisten=\"NONE:1\" matches no listen request: in both route modes every lease binds
a unix socket in its owner's directory, and no tunnel key listens on a TCP port. The
lease database is not read.

The forced command is this very binary's gate (`/usr/bin/mytunneld gate` for the Debian
package), with `--env-file PATH` when one other than the default was given, unless
--gate-command says otherwise. A missing keys file prints nothing (exit 0). Exit 1: refused (unsafe file or bad user
name); exit 2: bad configuration.

In sshd_config (a Match block for the tunnel group):
  AuthorizedKeysFile none
  AuthorizedKeysCommand /usr/bin/mytunneld authorized-keys %u
  AuthorizedKeysCommandUser mytunneld";

/// What `mytunneld authorized-keys` runs with.
#[derive(Debug)]
pub struct AuthorizedKeysInvocation {
    /// The resolved edge configuration.
    pub config: EdgeConfig,
    /// The user name as sshd passed it (validated by the library).
    pub user: String,
    /// The forced command for the keys.
    pub gate: GateCommand,
}

/// Reads `mytunneld authorized-keys` arguments and the configuration (as `serve` does).
/// Without `--gate-command` the keys force the gate of `program`, the running binary.
pub fn parse_authorized_keys(
    matches: &ArgMatches,
    env_file: &Path,
    program: &Path,
) -> Result<AuthorizedKeysInvocation, String> {
    let gate = match matches.get_one::<String>("gate-command") {
        Some(command) => command.parse::<GateCommand>()?,
        None => GateCommand::for_program(program, env_file, Path::new(DEFAULT_ENV_FILE))?,
    };
    let user = matches
        .get_one::<String>("user")
        .cloned()
        .ok_or("a user name is required")?;
    let (config, _warnings) = load_config(serve_settings(matches), env_file)?;
    Ok(AuthorizedKeysInvocation { config, user, gate })
}

/// The settings given as flags to `serve`, `authorized-keys` or `config`.
pub fn serve_settings(matches: &ArgMatches) -> BTreeMap<Setting, String> {
    Setting::ALL
        .into_iter()
        .filter_map(|s| {
            matches
                .get_one::<String>(setting_id(s))
                .map(|v| (s, v.clone()))
        })
        .collect()
}

/// The `MYTUNNEL_*` variables of this process.
pub fn mytunnel_environment() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("MYTUNNEL_"))
        .collect()
}

/// Resolves the configuration from flags, the environment and the env file.
pub fn load_config(
    flags: BTreeMap<Setting, String>,
    env_file: &Path,
) -> Result<(EdgeConfig, Vec<String>), String> {
    let env_file = load_env_file(env_file).map_err(|e| e.to_string())?;
    EdgeConfig::resolve(&ConfigInputs {
        flags,
        environment: mytunnel_environment(),
        env_file,
    })
    .map_err(|e| e.to_string())
}

/// Runs `mytunneld config [--json]`: resolves every setting from the flags, the
/// environment and the env file. An env file that cannot be read is the error.
pub fn run_config(matches: &ArgMatches, env_file: &Path) -> Result<ConfigOutput, String> {
    let file = load_env_file(env_file).map_err(|e| e.to_string())?;
    let found = file.is_some();
    let report = EdgeConfig::report(&ConfigInputs {
        flags: serve_settings(matches),
        environment: mytunnel_environment(),
        env_file: file,
    });
    Ok(config_output(
        &report,
        EnvFileSeen {
            path: env_file,
            found,
        },
        matches.get_flag("json"),
    ))
}

/// What `mytunneld ctl WORDS` asks for.
#[derive(Debug)]
pub enum CtlInvocation {
    /// `--help`
    Help,
    /// A request with its configuration, and warnings for stderr.
    Run(Box<EdgeConfig>, CtlRequest, Vec<String>),
}

/// Parses `mytunneld ctl WORDS` into a configuration and a request. Errors come back as
/// the envelope to print and the exit code (2 for bad configuration or usage).
pub fn parse_ctl(words: &[String], env_file: &Path) -> Result<CtlInvocation, (ApiError, i32)> {
    if words.iter().any(|w| w == "--help" || w == "-h") || words.is_empty() {
        return Ok(CtlInvocation::Help);
    }
    let usage = |message: String| (ApiError::new(ErrorCode::InvalidArgument, message), 2);
    let (settings, rest) = split_setting_flags(words).map_err(usage)?;
    let request = CtlRequest::parse_args(&rest).map_err(|e| {
        let code = e.code.exit_code();
        (e, code)
    })?;
    // ctl asks the running serve, which answers with its own settings: on ctl's command
    // line only where serve listens means anything.
    let warnings = settings
        .keys()
        .filter(|s| **s != Setting::SocketDir)
        .map(|s| {
            format!(
                "mytunneld ctl: {} is ignored: ctl asks the running `mytunneld serve`, which uses its own settings (set {} in the env file and restart it)",
                s.flag(),
                s.env_var()
            )
        })
        .collect();
    let (config, _warnings) = load_config(settings, env_file).map_err(usage)?;
    Ok(CtlInvocation::Run(Box::new(config), request, warnings))
}

/// The env file of `mytunneld gate` when the arguments after the program name are one of
/// the shapes a key's forced command takes — `gate`, `--env-file PATH gate` or
/// `--env-file=PATH gate` — read without building the clap command: a held gate is one
/// process per client session on the edge, and clap's parse leaves about 90 kB on its
/// heap. None for anything else, which clap parses (to the same meaning for these shapes).
pub fn gate_env_file(args: &[OsString]) -> Option<PathBuf> {
    let path = |value: &str| (!value.is_empty() && !value.starts_with('-')).then(|| value.into());
    match args {
        [gate] if gate == "gate" => Some(PathBuf::from(DEFAULT_ENV_FILE)),
        [flag, value, gate] if flag == "--env-file" && gate == "gate" => path(value.to_str()?),
        [flag, gate] if gate == "gate" => path(flag.to_str()?.strip_prefix("--env-file=")?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_s_shapes_are_read_as_clap_reads_them() {
        let words = |shape: &[&str]| shape.iter().map(OsString::from).collect::<Vec<_>>();
        for shape in [
            &["gate"][..],
            &["--env-file", "/etc/mytunneld/other.env", "gate"],
            &["--env-file=/etc/mytunneld/other.env", "gate"],
            &["--env-file", "relative.env", "gate"],
        ] {
            let matches = command()
                .try_get_matches_from(std::iter::once("mytunneld").chain(shape.iter().copied()))
                .unwrap();
            assert_eq!(matches.subcommand_name(), Some("gate"), "{shape:?}");
            let clap_env_file = matches.get_one::<String>("env-file").map(PathBuf::from);
            assert_eq!(gate_env_file(&words(shape)), clap_env_file, "{shape:?}");
        }
        // Anything else is clap's.
        for shape in [
            &[][..],
            &["ctl", "list"],
            &["gate", "--help"],
            &["gate", "extra"],
            &["gate", "--env-file", "/x"],
            &["--env-file", "gate"],
            &["--env-file", "-x", "gate"],
            &["--env-file", "", "gate"],
            &["--env-file=", "gate"],
            &["--env-file=-x", "gate"],
            &["--env", "/x", "gate"],
            &["-h", "gate"],
        ] {
            assert_eq!(gate_env_file(&words(shape)), None, "{shape:?}");
        }
    }

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn every_setting_is_a_serve_flag() {
        let serve = command().find_subcommand("serve").cloned().unwrap();
        for setting in Setting::ALL {
            assert!(
                serve
                    .get_arguments()
                    .any(|a| a.get_long() == Some(setting_id(setting))),
                "{setting:?}"
            );
        }
    }

    #[test]
    fn authorized_keys_reads_settings_like_serve() {
        let matches = command()
            .try_get_matches_from([
                "mytunneld",
                "--env-file",
                "/nonexistent/env",
                "authorized-keys",
                "--route-mode",
                "static",
                "--keys-dir",
                "/srv/keys",
                "alice",
            ])
            .unwrap();
        let (_, sub) = matches.subcommand().unwrap();
        let program = PathBuf::from("/usr/bin/mytunneld");
        let invocation =
            parse_authorized_keys(sub, &PathBuf::from("/nonexistent/env"), &program).unwrap();
        assert_eq!(invocation.user, "alice");
        // Its own gate, with the env file it was given.
        assert_eq!(
            invocation.gate.as_str(),
            "/usr/bin/mytunneld --env-file /nonexistent/env gate"
        );
        let invocation =
            parse_authorized_keys(sub, &PathBuf::from(DEFAULT_ENV_FILE), &program).unwrap();
        assert_eq!(invocation.gate.as_str(), "/usr/bin/mytunneld gate");
        assert_eq!(
            invocation.config.route_mode,
            mytunnel_edge::config::RouteMode::Static
        );
        assert_eq!(invocation.config.keys_dir, PathBuf::from("/srv/keys"));

        let matches = command()
            .try_get_matches_from([
                "mytunneld",
                "authorized-keys",
                "--gate-command",
                "a\"b",
                "x",
            ])
            .unwrap();
        let (_, sub) = matches.subcommand().unwrap();
        let e =
            parse_authorized_keys(sub, &PathBuf::from("/nonexistent/env"), &program).unwrap_err();
        assert!(e.contains("gate command"), "{e}");
    }

    #[test]
    fn config_reads_flags_and_a_missing_env_file_is_no_error() {
        let run = |args: &[&str]| {
            let matches = command()
                .try_get_matches_from([&["mytunneld", "config"][..], args].concat())
                .unwrap();
            let (_, sub) = matches.subcommand().unwrap();
            run_config(sub, &PathBuf::from("/nonexistent/env")).unwrap()
        };
        let text = run(&["--route-mode", "static"]);
        assert_eq!(text.exit_code, 0, "{}", text.stdout);
        assert!(text.stdout.contains("/nonexistent/env (not found)"));
        assert!(text
            .stdout
            .lines()
            .any(|l| l.starts_with("MYTUNNEL_ROUTE_MODE=static ") && l.ends_with("# flag")));
        let json = run(&["--json", "--min-port", "0"]);
        assert_eq!(json.exit_code, 1);
        let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(doc["valid"], false);
        assert_eq!(doc["env_file"]["found"], false);
    }

    #[test]
    fn ctl_words_split_into_settings_and_request() {
        let words: Vec<String> = ["list", "--db-path", "/nonexistent/x.db", "--all"]
            .map(String::from)
            .to_vec();
        match parse_ctl(&words, &PathBuf::from("/nonexistent/env")).unwrap() {
            CtlInvocation::Run(config, request, warnings) => {
                assert_eq!(
                    config.database,
                    mytunnel_edge::Database::Sqlite(PathBuf::from("/nonexistent/x.db"))
                );
                assert_eq!(request.verb().as_str(), "list");
                assert_eq!(warnings.len(), 1, "{warnings:?}");
                assert!(warnings[0].contains("--db-path is ignored"), "{warnings:?}");
            }
            CtlInvocation::Help => panic!("help"),
        }
        let (e, code) = parse_ctl(
            &["list".into(), "--min-port".into(), "x".into()],
            &PathBuf::from("/nonexistent/env"),
        )
        .unwrap_err();
        assert_eq!((e.code, code), (ErrorCode::InvalidArgument, 2));
        assert!(e.message.contains("MYTUNNEL_MIN_PORT"), "{}", e.message);
    }
}
