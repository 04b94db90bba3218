//! Paths, commands and the system packages the tasks need.

use super::*;

/// The workspace root: the parent of this crate's directory.
pub(super) fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "xtask's manifest directory has no parent".to_owned())
}

/// The cargo that runs us (`cargo run` sets `CARGO`), else the one on `PATH`, without the
/// variables `cargo run` set for xtask itself (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …):
/// build scripts that watch them (ring's) would otherwise make the builds xtask starts
/// differ from a shell's, so a later `cargo install` or `cargo build` rebuilds them.
pub(super) fn cargo(root: &Path) -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.current_dir(root);
    for (name, _) in std::env::vars_os() {
        if is_xtask_run_variable(&name.to_string_lossy()) {
            command.env_remove(&name);
        }
    }
    command
}

/// Whether `name` is one of the variables `cargo run` sets for the program it runs.
fn is_xtask_run_variable(name: &str) -> bool {
    [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

/// One word of a printed command line, quoted when a shell would need it.
pub(super) fn shell_word(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '=' | ':' | ',' | '+')
        });
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command line as it would be typed: explicit env vars, then `cargo` (not the full
/// path from `CARGO`), then the arguments.
pub(super) fn command_line(command: &Command) -> String {
    let mut line = String::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            let _ = write!(line, "{}={} ", key.to_string_lossy(), shell_word(value));
        }
    }
    let program = Path::new(command.get_program());
    if program.file_stem() == Some(OsStr::new("cargo")) {
        line.push_str("cargo");
    } else {
        line.push_str(&shell_word(command.get_program()));
    }
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&shell_word(arg));
    }
    line
}

/// Prints the command line, runs it with inherited stdio, and fails unless it succeeds.
pub(super) fn run(command: &mut Command) -> Result<()> {
    let line = command_line(command);
    println!("$ {line}");
    flush();
    let status = command
        .status()
        .map_err(|e| format!("could not start `{line}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{line}` failed ({status})"))
    }
}

/// Like [`run`], but echoes the output line by line and records the test runners'
/// summary lines (nextest's `Summary [`, libtest's `test result:`).
pub(super) fn run_recording_summaries(
    command: &mut Command,
    summaries: &mut Vec<String>,
) -> Result<()> {
    let line = command_line(command);
    println!("$ {line}");
    flush();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start `{line}`: {e}"))?;
    let stderr = child.stderr.take();
    let echo_stderr = std::thread::spawn(move || {
        let mut found = Vec::new();
        if let Some(stderr) = stderr {
            for text in BufReader::new(stderr)
                .lines()
                .map_while(std::result::Result::ok)
            {
                eprintln!("{text}");
                if is_summary_line(&text) {
                    found.push(text.trim().to_owned());
                }
            }
        }
        found
    });
    if let Some(stdout) = child.stdout.take() {
        for text in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            println!("{text}");
            if is_summary_line(&text) {
                summaries.push(text.trim().to_owned());
            }
        }
    }
    summaries.extend(echo_stderr.join().unwrap_or_default());
    let status = child
        .wait()
        .map_err(|e| format!("could not wait for `{line}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{line}` failed ({status})"))
    }
}

/// Every shell script the project ships: `scripts/*.sh`, `.ci/run`, test fixtures, and
/// the Debian packages' wrappers and maintainer scripts (files that start with `#!/bin/sh`
/// under `packaging/deb`).
pub(super) fn shell_scripts(root: &Path) -> Result<Vec<PathBuf>> {
    let mut scripts = vec![root.join(".ci/run")];
    for dir in ["scripts", "mytunnel-client/tests/fixtures"] {
        for path in files_in(root, dir)? {
            if path.extension().is_some_and(|ext| ext == "sh") {
                scripts.push(path);
            }
        }
    }
    for dir in ["packaging/deb", "packaging/deb/mytunneld"] {
        for path in files_in(root, dir)? {
            let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if text.starts_with(b"#!/bin/sh\n") {
                scripts.push(path);
            }
        }
    }
    scripts.sort();
    Ok(scripts)
}

/// The regular files directly in `root/dir`.
fn files_in(root: &Path, dir: &str) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(root.join(dir)).map_err(|e| format!("cannot list {dir}: {e}"))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

/// The number just before `word` in a summary line (`207 passed`), or 0.
pub(super) fn count_before(line: &str, word: &str) -> u64 {
    line.find(word)
        .and_then(|end| {
            let head = line.get(..end)?;
            let start = head
                .rfind(|c: char| !c.is_ascii_digit())
                .map_or(0, |i| i + 1);
            head.get(start..)?.parse().ok()
        })
        .unwrap_or(0)
}

/// nextest's own `Summary [` line (it indents it), or libtest's `test result:` at the start
/// of a line. nextest echoes a failing test's captured output indented, libtest's `test
/// result:` line included, which must not count that test twice.
pub(super) fn is_summary_line(text: &str) -> bool {
    (text.trim_start().starts_with("Summary [") && text.contains("tests run"))
        || text.starts_with("test result:")
}

/// Installs the system packages the tests start for real (Caddy, OpenSSH's server and
/// client for the end-to-end suite, PostgreSQL for the stores, Chromium and chromedriver
/// for the inspector's browser test) when they are missing, with apt on Debian as root.
pub(super) fn ensure_system_packages() -> Result<()> {
    // (what must be present, its package). A path is checked as it is: root's PATH may
    // lack /usr/sbin, where sshd lives.
    const PACKAGES: [(&str, &str); 13] = [
        ("caddy", "caddy"),
        // A visitor over HTTPS in the on-demand TLS test, checking Caddy's certificate.
        ("curl", "curl"),
        ("shellcheck", "shellcheck"),
        // The edge scripts read `mytunneld config --json` with it.
        ("python3", "python3"),
        // setpriv runs serve and Caddy as their users, as their units do.
        ("setpriv", "util-linux"),
        ("/usr/sbin/sshd", "openssh-server"),
        // cargo-deb reads the packages' library dependencies with it.
        ("dpkg-shlibdeps", "dpkg-dev"),
        // The package install test verifies the packaged unit with it.
        ("systemd-analyze", "systemd"),
        // The stores' tests start a PostgreSQL server of their own from its binaries.
        ("/usr/lib/postgresql", "postgresql"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        // The inspector's browser test drives a headless Chromium through WebDriver.
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
    ];
    let present = |binary: &str| {
        if binary.starts_with('/') {
            Path::new(binary).exists()
        } else {
            succeeds_quietly(Command::new("sh").args(["-c", &format!("command -v {binary}")]))
        }
    };
    let mut missing: Vec<&str> = Vec::new();
    for (binary, package) in PACKAGES {
        if present(binary) {
            println!("  {binary}: present");
        } else if !missing.contains(&package) {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !succeeds_quietly(Command::new("sh").args(["-c", "command -v apt-get"])) {
        return Err(format!(
            "missing {}: install them with your package manager",
            missing.join(", ")
        ));
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

/// Whether a command runs and exits 0, with its output hidden (used for tool probes).
pub(super) fn succeeds_quietly(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

pub(super) fn flush() {
    let _ = std::io::stdout().flush();
}

pub(super) fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_scripts_are_shellchecked() {
        let root = workspace_root().unwrap();
        let scripts = shell_scripts(&root).unwrap();
        for name in [
            "mytunneld-setup",
            "mytunneld-add-key",
            "mytunneld-check",
            "mytunneld/postinst",
            "mytunneld/prerm",
            "mytunneld/postrm",
        ] {
            assert!(
                scripts.contains(&root.join("packaging/deb").join(name)),
                "{name}: {scripts:?}"
            );
        }
        assert!(!scripts.contains(&root.join("packaging/deb/mytunneld.service")));
    }

    #[test]
    fn only_the_variables_of_cargo_run_are_left_out() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_VERSION",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
        ] {
            assert!(is_xtask_run_variable(name), "{name}");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!is_xtask_run_variable(name), "{name}");
        }
    }
}
