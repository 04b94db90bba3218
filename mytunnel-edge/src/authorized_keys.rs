//! `mytunneld authorized-keys <user>`: the keys sshd may accept for a tunnel user, each
//! limited to what a tunnel key may do.
//!
//! sshd runs it on every login of a tunnel user (`AuthorizedKeysCommand
//! /usr/bin/mytunneld authorized-keys %u`, as the service user). It reads the
//! user's plain public keys from `<keys_dir>/<user>` (written by root with
//! `install-edge-ssh-key.sh --keys-dir`) and prints each one with the options of a tunnel
//! key:
//!
//! ```text
//! restrict,port-forwarding,pty,permitlisten="NONE:1",command="/usr/bin/mytunneld gate" ssh-ed25519 AAAA… alice@laptop
//! ```
//!
//! The forced command is, unless told otherwise, the gate of the very binary sshd ran
//! ([`GateCommand::for_program`]): wherever the edge installed `mytunneld` (the Debian
//! package's `/usr/bin`, a source install's `/usr/local/bin`, a `--destdir`), its keys
//! run that binary's gate with that binary's env file.
//!
//! `restrict` turns everything off; `port-forwarding` gives back the forwards the data
//! plane needs, and `pty` a terminal for the session the client holds open: on an
//! interactive session both ssh and sshd set TCP_NODELAY, so requests through the tunnel
//! do not wait for delayed ACKs. Whatever the client asks, sshd runs the forced gate on
//! that terminal: the terminal gives no shell, no command and no subsystem.
//!
//! No TCP listen at all ([`DENY_ALL_LISTEN`], and `PermitListen none` in sshd's drop-in):
//! every lease binds a unix socket in its owner's own directory, where file permissions
//! keep tenants apart for as long as the connection lives. (A TCP listen permission is
//! read once, at login: a connection kept open after its lease ended could still bind the
//! port the next lease got.) So nothing here reads the lease database.
//!
//! [`render`] is pure; [`authorized_keys`] does the IO (the keys file).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use mytunnel_core::Owner;

use crate::config::EdgeConfig;

/// A `permitlisten` value that lets no `ssh -R` request listen on any TCP port.
///
/// Measured with OpenSSH 9.2 (Debian 12), see `mytunnel-cli/tests/bind_isolation.rs`:
/// - `permitlisten="none"` and `permitlisten="127.0.0.1:0"` are not accepted in
///   authorized_keys: sshd logs `bad key options: invalid permission port` and refuses the
///   whole key (only sshd_config's `PermitListen` knows `none`). Leaving `permitlisten`
///   out permits every port.
/// - sshd lower-cases the host of a forward request before it matches it against the
///   key's `permitlisten` hosts, case-sensitively (`remote_open_match`). A host with an
///   upper-case letter therefore matches no request at all: with
///   `permitlisten="NONE:23456"`, both `-R NONE:23456:…` and `-R none:23456:…` were refused
///   ("…but the request was denied"), while `permitlisten="none:23456"` let
///   `-R none:23456:…` bind 127.0.0.1:23456 (with `GatewayPorts no` sshd binds loopback
///   for any host name it does not know). Port 1 is privileged: should a later sshd match
///   hosts case-insensitively, an ordinary user still could not bind it.
/// - `permitlisten` does not apply to unix-socket forwards (`-R /path.sock:…`), so static
///   tunnels keep working with it.
pub const DENY_ALL_LISTEN: &str = "NONE:1";

/// Largest keys file read (a few hundred keys).
const MAX_KEYS_FILE: u64 = 256 * 1024;

/// The key types a tunnel key may have (as `install-edge-ssh-key.sh` accepts them).
const KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// The forced command written into every key: non-empty, without double quotes,
/// backslashes or control characters (it stands between double quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateCommand(String);

impl GateCommand {
    /// The command as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl GateCommand {
    /// The gate of the `mytunneld` at `program`: `PROGRAM gate`, or `PROGRAM --env-file
    /// ENV_FILE gate` when `env_file` is not `default_env_file`, so that the gate reads the
    /// settings the keys were printed with.
    ///
    /// sshd hands the forced command to the user's shell, so both paths must be absolute
    /// and made only of `[A-Za-z0-9/._+-]`; any other path is refused (pass the command
    /// with `--gate-command` instead).
    pub fn for_program(
        program: &Path,
        env_file: &Path,
        default_env_file: &Path,
    ) -> Result<GateCommand, String> {
        let word = |path: &Path, what: &str| -> Result<String, String> {
            let text = path.to_str().unwrap_or_default();
            let safe = text.starts_with('/')
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '+' | '-'));
            if safe {
                Ok(text.to_owned())
            } else {
                Err(format!(
                    "the {what} path {:?} cannot stand in a forced command (an absolute path of                      A-Z a-z 0-9 / . _ + - only): pass --gate-command CMD",
                    path.display()
                ))
            }
        };
        let program = word(program, "mytunneld")?;
        if env_file == default_env_file {
            Ok(GateCommand(format!("{program} gate")))
        } else {
            let env_file = word(env_file, "env file")?;
            Ok(GateCommand(format!("{program} --env-file {env_file} gate")))
        }
    }
}

impl FromStr for GateCommand {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() || s.contains(['"', '\\']) || s.chars().any(char::is_control) {
            return Err(format!(
                "invalid gate command {s:?}: it must be non-empty, without quotes, backslashes or control characters"
            ));
        }
        Ok(GateCommand(s.to_owned()))
    }
}

/// The result of [`render`]: the lines for sshd, and why some lines were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// What to print on stdout, one key per line, each ending in `\n`.
    pub stdout: String,
    /// One message per refused line of the keys file (for stderr).
    pub warnings: Vec<String>,
}

/// A user name as sshd passes it (`%u`): an [`Owner`], and never `.` or `..` (it names a
/// file in the keys directory).
pub fn parse_user(user: &str) -> Result<Owner, String> {
    if user == "." || user == ".." {
        return Err(format!("invalid user name {user:?}"));
    }
    user.parse::<Owner>().map_err(|e| e.to_string())
}

/// One public key line checked: `<type> <base64> [comment]`, nothing else.
fn check_key(line: &str) -> Result<String, &'static str> {
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err("it contains control characters");
    }
    let mut rest = line;
    let mut next_word = || {
        let trimmed = rest.trim_start_matches([' ', '\t']);
        let end = trimmed.find([' ', '\t']).unwrap_or(trimmed.len());
        let (word, after) = trimmed.split_at(end);
        rest = after;
        word
    };
    let key_type = next_word();
    if !KEY_TYPES.contains(&key_type) {
        return Err(
            "it does not start with a key type (options are added here, never read from the file)",
        );
    }
    let blob = next_word();
    let body = blob.trim_end_matches('=');
    let valid_blob = !body.is_empty()
        && blob.len() - body.len() <= 3
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !valid_blob {
        return Err("its key is not base64");
    }
    let comment = rest.trim_matches([' ', '\t']);
    Ok(if comment.is_empty() {
        format!("{key_type} {blob}")
    } else {
        format!("{key_type} {blob} {comment}")
    })
}

/// Renders the keys file `keys` for sshd: each valid key line with the tunnel options
/// (forwards, a terminal, no TCP listen) and the forced `gate` command. Blank lines and `#` comments are skipped;
/// lines that carry options already, contain control characters or are no public key are
/// refused (left out, with a warning).
pub fn render(keys: &str, gate: &GateCommand) -> Rendered {
    let options = format!(
        "restrict,port-forwarding,pty,permitlisten=\"{DENY_ALL_LISTEN}\",command=\"{}\"",
        gate.as_str()
    );
    let mut rendered = Rendered::default();
    for (index, raw) in keys.split('\n').enumerate() {
        let line = raw
            .strip_suffix('\r')
            .unwrap_or(raw)
            .trim_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match check_key(line) {
            Ok(key) => {
                rendered.stdout.push_str(&options);
                rendered.stdout.push(' ');
                rendered.stdout.push_str(&key);
                rendered.stdout.push('\n');
            }
            Err(why) => rendered
                .warnings
                .push(format!("line {} refused: {why}", index + 1)),
        }
    }
    rendered
}

/// Why `authorized-keys` printed nothing (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum AuthorizedKeysError {
    /// The user name is not a valid owner.
    #[error("{0}")]
    InvalidUser(String),
    /// The keys file or its directory could be changed by someone other than root.
    #[error("refusing {path}: {reason}", path = .path.display())]
    Unsafe {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The keys file cannot be read.
    #[error("cannot read {path}: {source}", path = .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

/// Checks like sshd's `StrictModes`: owned by root, not writable by group or others.
#[cfg(unix)]
fn check_root_owned(path: &Path, meta: &std::fs::Metadata) -> Result<(), AuthorizedKeysError> {
    use std::os::unix::fs::MetadataExt;
    let unsafe_because = |reason: String| AuthorizedKeysError::Unsafe {
        path: path.to_owned(),
        reason,
    };
    if meta.uid() != 0 {
        return Err(unsafe_because(format!(
            "owned by uid {}, not root",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_because(format!(
            "mode {:04o} is writable by group or others",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Reads `<keys_dir>/<user>`: `None` when it does not exist; refused when it or its
/// directory is not root's alone, or it is not a regular file.
#[cfg(unix)]
pub fn read_keys_file(
    keys_dir: &Path,
    user: &Owner,
) -> Result<Option<String>, AuthorizedKeysError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = keys_dir.join(user.as_str());
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AuthorizedKeysError::Io { path, source }
    };
    let link = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    if !link.file_type().is_file() {
        return Err(AuthorizedKeysError::Unsafe {
            path,
            reason: "not a regular file (symbolic links are refused)".to_owned(),
        });
    }
    let dir_meta = std::fs::metadata(keys_dir).map_err(io(keys_dir))?;
    check_root_owned(keys_dir, &dir_meta)?;
    // No symlink swapped in meanwhile, and never block on a FIFO.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(&path)
        .map_err(io(&path))?;
    let meta = file.metadata().map_err(io(&path))?;
    if !meta.file_type().is_file() {
        return Err(AuthorizedKeysError::Unsafe {
            path,
            reason: "not a regular file".to_owned(),
        });
    }
    check_root_owned(&path, &meta)?;
    if meta.len() > MAX_KEYS_FILE {
        return Err(AuthorizedKeysError::Unsafe {
            path,
            reason: format!("larger than {MAX_KEYS_FILE} bytes"),
        });
    }
    let mut text = String::new();
    file.take(MAX_KEYS_FILE)
        .read_to_string(&mut text)
        .map_err(io(&path))?;
    Ok(Some(text))
}

/// What `mytunneld authorized-keys` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizedKeys {
    /// The key lines for sshd.
    pub stdout: String,
    /// Messages for stderr (refused lines).
    pub warnings: Vec<String>,
}

impl fmt::Display for AuthorizedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stdout)
    }
}

/// The authorized keys of `user` under `config`.
#[cfg(unix)]
pub fn authorized_keys(
    config: &EdgeConfig,
    user: &str,
    gate: &GateCommand,
) -> Result<AuthorizedKeys, AuthorizedKeysError> {
    let owner = parse_user(user).map_err(AuthorizedKeysError::InvalidUser)?;
    let Some(keys) = read_keys_file(&config.keys_dir, &owner)? else {
        return Ok(AuthorizedKeys::default());
    };
    let rendered = render(&keys, gate);
    let warnings = rendered
        .warnings
        .into_iter()
        .map(|w| format!("{}: {w}", config.keys_dir.join(owner.as_str()).display()))
        .collect();
    Ok(AuthorizedKeys {
        stdout: rendered.stdout,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0aGlzaXNub3RhcmVhbGtleWJ1dGJhc2U2NA";

    #[test]
    fn every_key_gets_a_terminal_and_permits_no_listen() {
        let out = render(&format!("{KEY} alice@laptop\n"), &usr_bin_gate());
        assert_eq!(
            out.stdout,
            format!(
                "restrict,port-forwarding,pty,permitlisten=\"NONE:1\",\
                 command=\"/usr/bin/mytunneld gate\" {KEY} alice@laptop\n"
            )
        );
        assert!(out.warnings.is_empty());
    }

    fn usr_bin_gate() -> GateCommand {
        let env = Path::new("/etc/mytunneld/mytunneld.env");
        GateCommand::for_program(Path::new("/usr/bin/mytunneld"), env, env).unwrap()
    }

    #[test]
    fn the_gate_command_matches_the_key_script() {
        // The script's ~/.ssh keys force the installed binary's gate, as this module's.
        let script = include_str!("../../scripts/install-edge-ssh-key.sh");
        assert!(script.contains(r#"gate_command="$(installed_binary '') gate""#));
        assert!(script.contains(r#"line="restrict,port-forwarding,pty,command=\"$gate_command\" "#));
    }

    #[test]
    fn the_gate_is_the_program_s_own_with_its_env_file() {
        let default = Path::new("/etc/mytunneld/mytunneld.env");
        let gate = |program: &str, env: &str| {
            GateCommand::for_program(Path::new(program), Path::new(env), default)
                .map(|g| g.as_str().to_owned())
        };
        assert_eq!(usr_bin_gate().as_str(), "/usr/bin/mytunneld gate");
        assert_eq!(
            gate("/srv/edge/usr/local/bin/mytunneld", "/srv/edge/etc/mytunneld/mytunneld.env")
                .unwrap(),
            "/srv/edge/usr/local/bin/mytunneld --env-file /srv/edge/etc/mytunneld/mytunneld.env gate"
        );
        for (program, env) in [
            ("/opt/my tunnel/mytunneld", "/etc/mytunneld/mytunneld.env"),
            ("relative/mytunneld", "/etc/mytunneld/mytunneld.env"),
            ("/usr/bin/mytunneld", "/etc/x;rm -rf ~/env"),
            ("/usr/bin/$(id)", "/etc/mytunneld/mytunneld.env"),
        ] {
            let e = gate(program, env).unwrap_err();
            assert!(e.contains("--gate-command"), "{e}");
        }
    }

    #[test]
    fn blanks_and_comments_are_skipped_bad_lines_refused() {
        let text = format!(
            "# alice's keys\n\n   \n{KEY} one\r\n\
             command=\"sh\" {KEY}\n\
             no-pty {KEY}\n\
             {KEY} evil\u{1b}[2J\n\
             ssh-ed25519 not*base64\n\
             ssh-ed25519\n\
             ssh-dss AAAA\n\
             \t{KEY}   two words  \n\
             ssh-ed25519  \tAAAA=  tabbed\n"
        );
        let out = render(&text, &usr_bin_gate());
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{}", out.stdout);
        assert!(lines[0].ends_with(&format!("{KEY} one")), "{}", lines[0]);
        assert!(
            lines[1].ends_with(&format!("{KEY} two words")),
            "{}",
            lines[1]
        );
        assert_eq!(
            out.warnings.iter().map(|w| &w[..8]).collect::<Vec<_>>(),
            vec!["line 5 r", "line 6 r", "line 7 r", "line 8 r", "line 9 r", "line 10 "]
        );
        assert!(out.warnings[0].contains("key type"), "{:?}", out.warnings);
        assert!(out.warnings[2].contains("control"), "{:?}", out.warnings);
    }

    #[test]
    fn gate_commands_and_users_are_validated() {
        assert!("/opt/m/bin/mytunneld --env-file /x gate"
            .parse::<GateCommand>()
            .is_ok());
        for bad in ["", " ", "a\"b", "a\\b", "a\nb"] {
            assert!(bad.parse::<GateCommand>().is_err(), "{bad:?}");
        }
        assert!(parse_user("alice").is_ok());
        for bad in ["", ".", "..", "a/b", "-x", "a b", "a\n"] {
            assert!(parse_user(bad).is_err(), "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn keys_file_checks() {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let alice: Owner = "alice".parse().unwrap();
        // Missing directory or file: nothing.
        assert!(read_keys_file(&keys, &alice).unwrap().is_none());
        std::fs::create_dir(&keys).unwrap();
        set(&keys, 0o755);
        assert!(read_keys_file(&keys, &alice).unwrap().is_none());
        let file = keys.join("alice");
        std::fs::write(&file, format!("{KEY}\n")).unwrap();
        set(&file, 0o644);
        let root = nix::unistd::geteuid().is_root();
        if root {
            assert_eq!(
                read_keys_file(&keys, &alice).unwrap().unwrap(),
                format!("{KEY}\n")
            );
            set(&file, 0o664);
            let e = read_keys_file(&keys, &alice).unwrap_err().to_string();
            assert!(e.contains("writable by group or others"), "{e}");
            set(&file, 0o644);
            set(&keys, 0o775);
            let e = read_keys_file(&keys, &alice).unwrap_err().to_string();
            assert!(e.contains("keys: mode 0775"), "{e}");
            set(&keys, 0o755);
            nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(1)), None).unwrap();
            let e = read_keys_file(&keys, &alice).unwrap_err().to_string();
            assert!(e.contains("owned by uid 1"), "{e}");
        } else {
            let e = read_keys_file(&keys, &alice).unwrap_err().to_string();
            assert!(e.contains("not root"), "{e}");
        }
        // A symbolic link is refused, whoever owns it.
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &file).unwrap();
        let e = read_keys_file(&keys, &alice).unwrap_err().to_string();
        assert!(e.contains("symbolic links"), "{e}");
    }
}
