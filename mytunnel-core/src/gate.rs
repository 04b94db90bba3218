//! The SSH forced-command gate: what a tunnel key may run.
//!
//! Tunnel keys carry `command="/usr/local/bin/mytunneld gate"`, so sshd runs the gate
//! whatever the client asked for and passes the request in `SSH_ORIGINAL_COMMAND`. The
//! gate splits it into words with POSIX quoting rules, never through a shell, and allows:
//!
//! - the empty command: a tunnel session, held until the client closes it (the gate
//!   prints [`SESSION_HELD`] and nothing else);
//! - `mytunneld ctl <verb> [flags]` for the eight verbs, with only the flags each verb
//!   documents. The first word may also be one of the configured remote binary paths.
//!
//! Everything else is refused with `forbidden_command`, and a daemon override flag with
//! `override_not_allowed`.
//!
//! ```
//! use mytunnel_core::gate::{parse_original_command, GateConfig, GateDecision};
//!
//! let config = GateConfig::default();
//! let decision = parse_original_command("mytunneld ctl list", &config).unwrap();
//! assert!(matches!(decision, GateDecision::Ctl(_)));
//! assert!(parse_original_command("sh -c id", &config).is_err());
//! ```

use crate::protocol::{ApiError, CtlRequest, ErrorCode};

/// Longest `SSH_ORIGINAL_COMMAND` the gate reads. Real ctl commands are under 300 bytes.
pub const MAX_COMMAND_LEN: usize = 4096;

/// The line the gate prints when it holds a tunnel session, so the client knows the session
/// is open (and its pty granted) before it counts the connection as up. A person who runs
/// `ssh edge` with a tunnel key reads it too.
pub const SESSION_HELD: &str =
    "mytunneld gate: tunnel session held; this key runs nothing else (close it with ~.)";

/// The program name a client may always use.
pub const PROGRAM_NAME: &str = "mytunneld";

/// What the gate accepts as the first word, besides [`PROGRAM_NAME`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// Absolute paths of the installed binary, e.g. `/usr/local/bin/mytunneld`.
    pub program_paths: Vec<String>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            program_paths: vec!["/usr/local/bin/mytunneld".to_owned()],
        }
    }
}

/// What the gate decided to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateDecision {
    /// No command: a data-plane session; hold it open until the client closes it.
    TunnelSession,
    /// One allowed control request.
    Ctl(CtlRequest),
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::ForbiddenCommand, message)
}

/// Decides what `SSH_ORIGINAL_COMMAND` may run. `None` (the variable unset) and an empty
/// or all-blank command are a tunnel session.
pub fn parse_original_command(
    command: &str,
    config: &GateConfig,
) -> Result<GateDecision, ApiError> {
    if command.len() > MAX_COMMAND_LEN {
        return Err(forbidden(format!(
            "command is {} bytes long (at most {MAX_COMMAND_LEN})",
            command.len()
        )));
    }
    if let Some(c) = command.chars().find(|c| c.is_control() && *c != ' ') {
        return Err(forbidden(format!(
            "command contains the control character {:?}",
            c
        )));
    }
    if command.trim().is_empty() {
        return Ok(GateDecision::TunnelSession);
    }
    let words = shell_words::split(command)
        .map_err(|e| forbidden(format!("command cannot be split into words: {e}")))?;
    let Some((program, rest)) = words.split_first() else {
        return Ok(GateDecision::TunnelSession);
    };
    if program != PROGRAM_NAME && !config.program_paths.iter().any(|p| p == program) {
        return Err(forbidden(format!(
            "only `{PROGRAM_NAME} ctl <verb>` may run with this key, not {:?}",
            program.chars().take(64).collect::<String>()
        )));
    }
    match rest.split_first() {
        Some((sub, verb_and_flags)) if sub == "ctl" => {
            CtlRequest::parse_args(verb_and_flags).map(GateDecision::Ctl)
        }
        Some((sub, _)) => Err(forbidden(format!(
            "`{PROGRAM_NAME} {}` is not allowed with this key; only `ctl` is",
            sub.chars().take(64).collect::<String>()
        ))),
        None => Err(forbidden(format!("`{PROGRAM_NAME}` needs `ctl <verb>`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AllocateRequest, ListScope, Takeover, Verb, OVERRIDE_FLAGS};
    use proptest::prelude::*;

    fn parse(command: &str) -> Result<GateDecision, ApiError> {
        parse_original_command(command, &GateConfig::default())
    }

    fn code(command: &str) -> ErrorCode {
        parse(command).unwrap_err().code
    }

    #[test]
    fn empty_command_is_a_tunnel_session() {
        assert_eq!(parse("").unwrap(), GateDecision::TunnelSession);
        assert_eq!(parse("   ").unwrap(), GateDecision::TunnelSession);
    }

    #[test]
    fn every_verb_is_allowed() {
        let cases = [
            ("mytunneld ctl allocate --local-port 3000 --name portal --ttl 90s --force --owner x",
             CtlRequest::Allocate(AllocateRequest {
                 local_port: Some(3000),
                 name: Some("portal".parse().unwrap()),
                 ttl: Some(std::time::Duration::from_secs(90)),
                 takeover: Takeover::Force,
                 replaces: None,
             })),
            ("mytunneld ctl allocate --name portal --replaces lease_abcdefghijklmnop",
             CtlRequest::Allocate(AllocateRequest {
                 name: Some("portal".parse().unwrap()),
                 replaces: Some("lease_abcdefghijklmnop".parse().unwrap()),
                 ..AllocateRequest::default()
             })),
            ("mytunneld ctl allocate", CtlRequest::Allocate(AllocateRequest::default())),
            ("mytunneld ctl heartbeat --lease lease_abcdefghijklmnop",
             CtlRequest::Heartbeat { lease: "lease_abcdefghijklmnop".parse().unwrap() }),
            ("mytunneld ctl release --lease portal.t.example",
             CtlRequest::Release { lease: "portal.t.example".parse().unwrap() }),
            ("mytunneld ctl delete --lease=portal",
             CtlRequest::Delete { lease: "portal".parse().unwrap() }),
            ("mytunneld ctl list", CtlRequest::List(ListScope::Own)),
            ("mytunneld ctl list --all", CtlRequest::List(ListScope::All)),
            ("mytunneld ctl health", CtlRequest::Health),
            ("mytunneld ctl reconcile", CtlRequest::Reconcile),
            ("mytunneld ctl stats", CtlRequest::Stats),
            ("/usr/local/bin/mytunneld ctl stats", CtlRequest::Stats),
        ];
        for (command, expected) in cases {
            assert_eq!(
                parse(command).unwrap(),
                GateDecision::Ctl(expected),
                "{command}"
            );
        }
        // Every verb of the allow-list is covered above.
        for verb in Verb::ALL {
            assert!(
                parse(&format!("mytunneld ctl {verb}")).is_ok()
                    || code(&format!("mytunneld ctl {verb}")) == ErrorCode::InvalidArgument
            );
        }
    }

    #[test]
    fn quoting_follows_posix_rules() {
        // The openssh crate shell-quotes every argument.
        let d = parse("'mytunneld' 'ctl' 'allocate' '--name' 'portal'").unwrap();
        assert!(
            matches!(d, GateDecision::Ctl(CtlRequest::Allocate(ref a)) if a.name.as_ref().unwrap().as_str() == "portal")
        );
        // A quoted value that is not a slug is an invalid slug, never a shell word.
        assert_eq!(
            code("mytunneld ctl allocate --name 'a b'\\''c'"),
            ErrorCode::InvalidSlug
        );
        assert_eq!(
            code("mytunneld ctl allocate --name \"$(id)\""),
            ErrorCode::InvalidSlug
        );
        assert_eq!(
            code("mytunneld ctl list 'unterminated"),
            ErrorCode::ForbiddenCommand
        );
    }

    #[test]
    fn each_override_flag_is_refused_in_both_forms() {
        for flag in OVERRIDE_FLAGS {
            for verb in ["allocate", "heartbeat", "list", "health", "stats"] {
                assert_eq!(
                    code(&format!("mytunneld ctl {verb} {flag} x")),
                    ErrorCode::OverrideNotAllowed,
                    "{verb} {flag} x"
                );
                assert_eq!(
                    code(&format!("mytunneld ctl {verb} {flag}=x")),
                    ErrorCode::OverrideNotAllowed,
                    "{verb} {flag}=x"
                );
            }
        }
        assert_eq!(OVERRIDE_FLAGS.len(), 13);
    }

    /// Settings added after the original override list (every row of the settings table
    /// not marked `gate_override`: the route mode, the socket and key directories, the
    /// database URL, …) are not request flags either: a tunnel user who could point ctl at a socket directory of
    /// their own could publish any host.
    #[test]
    fn later_settings_cannot_be_passed_through_the_gate() {
        let later: Vec<&str> = crate::settings::Setting::ALL
            .iter()
            .filter(|s| !s.spec().gate_override)
            .map(|s| s.flag())
            .collect();
        assert!(later.contains(&"--db-url") && later.contains(&"--socket-dir"));
        for flag in later {
            for verb in ["heartbeat", "release", "delete"] {
                for form in [format!("{flag} x"), format!("{flag}=x")] {
                    let ok = format!("mytunneld ctl {verb} --lease lease_abcdefghij234567");
                    assert!(parse(&ok).is_ok(), "{ok} refused");
                    let command = format!("{ok} {form}");
                    assert!(parse(&command).is_err(), "{command} accepted");
                }
            }
        }
    }

    #[test]
    fn everything_else_is_forbidden() {
        for command in [
            "sh",
            "sh -c 'mytunneld ctl list'",
            "bash -i",
            "mytunneld",
            "mytunneld serve",
            "mytunneld gate",
            "mytunneld ctl",
            "mytunneld ctl shell",
            "mytunneld ctl LIST",
            "mytunneld ctl list --verbose",
            "mytunneld ctl list extra",
            "mytunneld ctl health --all",
            "mytunneld ctl heartbeat --name x",
            "mytunneld ctl list; id",
            "mytunneld ctl list && id",
            "/tmp/mytunneld ctl list",
            "./mytunneld ctl list",
            "scp -t /tmp",
            "rsync --server . /",
            "internal-sftp",
        ] {
            assert_eq!(code(command), ErrorCode::ForbiddenCommand, "{command}");
        }
    }

    #[test]
    fn control_characters_nul_and_long_input_are_forbidden() {
        for command in [
            "mytunneld ctl list\n",
            "mytunneld ctl list\nid",
            "mytunneld\tctl list",
            "mytunneld ctl list\0",
            "\u{1b}[2J",
            "mytunneld ctl list\u{7f}",
            "mytunneld ctl list\u{85}",
        ] {
            assert_eq!(code(command), ErrorCode::ForbiddenCommand, "{command:?}");
        }
        let long = format!("mytunneld ctl list {}", "x".repeat(MAX_COMMAND_LEN));
        assert_eq!(code(&long), ErrorCode::ForbiddenCommand);
    }

    #[test]
    fn bad_values_are_invalid_arguments() {
        assert_eq!(
            code("mytunneld ctl allocate --local-port 0"),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("mytunneld ctl allocate --local-port 65536"),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("mytunneld ctl allocate --ttl soon"),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("mytunneld ctl allocate --name"),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("mytunneld ctl allocate --name a --name b"),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("mytunneld ctl allocate --force"),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("mytunneld ctl allocate --force=yes --name a"),
            ErrorCode::InvalidArgument
        );
        for malformed in [
            "mytunneld ctl allocate --name a --replaces portal",
            "mytunneld ctl allocate --name a --replaces=lease_",
            "mytunneld ctl allocate --name a --replaces 'lease_abcdefghijklmnop x'",
            "mytunneld ctl allocate --name a --replaces",
            "mytunneld ctl allocate --replaces lease_abcdefghijklmnop",
            "mytunneld ctl allocate --name a --replaces lease_abcdefghijklmnop --replaces lease_abcdefghijklmnop",
        ] {
            assert_eq!(code(malformed), ErrorCode::InvalidArgument, "{malformed}");
        }
        assert_eq!(code("mytunneld ctl heartbeat"), ErrorCode::InvalidArgument);
        assert_eq!(
            code("mytunneld ctl heartbeat --lease portal"),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            code("mytunneld ctl allocate --name released-x"),
            ErrorCode::InvalidSlug
        );
    }

    fn flag_word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("--name".to_owned()),
            Just("--lease".to_owned()),
            Just("--force".to_owned()),
            Just("--replaces".to_owned()),
            Just("lease_abcdefghijklmnop".to_owned()),
            Just("--all".to_owned()),
            Just("--local-port".to_owned()),
            Just("--ttl".to_owned()),
            Just("--owner".to_owned()),
            proptest::sample::select(OVERRIDE_FLAGS.to_vec()).prop_map(str::to_owned),
            proptest::sample::select(OVERRIDE_FLAGS.to_vec()).prop_map(|f| format!("{f}=v")),
            "[a-z0-9_.=-]{0,12}",
            "\\PC{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse(&s);
        }

        /// No command the gate accepts ever carries an override flag: whatever words follow
        /// the verb, a command containing one is refused.
        #[test]
        fn accepted_commands_carry_no_override(
            verb in proptest::sample::select(Verb::ALL.to_vec()),
            words in proptest::collection::vec(flag_word(), 0..6),
        ) {
            let command = format!("mytunneld ctl {verb} {}", shell_words::join(&words));
            let has_override = words.iter().any(|w| {
                OVERRIDE_FLAGS.iter().any(|f| w == f || w.starts_with(&format!("{f}=")))
            });
            match parse(&command) {
                Ok(GateDecision::Ctl(request)) => {
                    prop_assert!(!has_override, "accepted {command:?}");
                    let args = request.to_args();
                    prop_assert!(!args.iter().any(|a| OVERRIDE_FLAGS.iter().any(|f| a.starts_with(f))));
                }
                Ok(GateDecision::TunnelSession) => prop_assert!(false, "session for {command:?}"),
                Err(_) => {}
            }
        }
    }
}
