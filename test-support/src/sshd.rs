//! A real sshd on loopback, with the settings the edge's installer writes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::keys::generate_key;
use crate::ports::free_port;
use crate::process::{kill_all, Below};

/// The sshd drop-in that `scripts/install-edge.sh --print-sshd-dropin` writes for
/// `route_mode` (`static` or `routes`): its global settings (`MaxStartups`, sized for a
/// reconnect storm), then its `Match Group <group>` block, for harnesses that run sshd
/// with exactly the production settings. Give it to [`Sshd::start_with`], whose defaults
/// it replaces keyword by keyword.
///
/// Left out: comments, and the three `AuthorizedKeys*` lines, because harness users enrol
/// their keys in `~/.ssh/authorized_keys`; the `AuthorizedKeysCommand` path has its own
/// end-to-end test (`bind_isolation`).
pub fn production_sshd_dropin(route_mode: &str, group: &str) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-edge.sh");
    let output = Command::new("bash")
        .arg(&script)
        .args([
            "--print-sshd-dropin",
            "--route-mode",
            route_mode,
            "--group",
            group,
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{} --print-sshd-dropin failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    dropin_settings(&text, group)
        .ok_or_else(|| format!("unexpected drop-in from {}:\n{text}", script.display()))
}

/// The settings of an install-edge.sh drop-in `text`: the global lines, then the one
/// `Match Group <group>` line and its block indented, without comments, blank lines and
/// `AuthorizedKeys*`. None unless exactly one `Match` line, for `group`, is there.
fn dropin_settings(text: &str, group: &str) -> Option<String> {
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("AuthorizedKeys"))
        .collect();
    let match_line = format!("Match Group {group}");
    let at = settings.iter().position(|l| *l == match_line)?;
    if settings.iter().filter(|l| l.starts_with("Match ")).count() != 1 {
        return None;
    }
    let (global, block) = settings.split_at(at);
    let mut out: String = global.iter().map(|l| format!("{l}\n")).collect();
    for (i, line) in block.iter().enumerate() {
        if i == 0 {
            out.push_str(&format!("{line}\n"));
        } else {
            out.push_str(&format!("    {line}\n"));
        }
    }
    Some(out)
}

/// The sshd binary: `$MYTUNNEL_SSHD_BIN`, else `/usr/sbin/sshd` (root's `PATH` may lack
/// `/usr/sbin`, so the path is checked, not looked up).
pub fn sshd_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("MYTUNNEL_SSHD_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path = PathBuf::from("/usr/sbin/sshd");
    if path.is_file() {
        Ok(path)
    } else {
        Err(
            "sshd is not installed at /usr/sbin/sshd: `cargo xtask e2e` installs it \
             (apt-get install openssh-server)"
                .to_owned(),
        )
    }
}

/// A real `sshd -D` on `127.0.0.1` with its own config, host key, pid file and log in a
/// temporary directory. Key-only logins (`UsePAM no`), TCP forwarding on, gateway ports
/// off, and `ClientAliveInterval 2` / `ClientAliveCountMax 2` so that a dead client's
/// forwards are evicted within seconds. Needs root (sshd changes to the logged-in user).
///
/// Dropping it stops the listener and every connection process it forked, by pid.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    port: u16,
    host_public_key: String,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts sshd on a free loopback port and waits until it answers with its banner
    /// (at most 15 s). sshd cannot share a port, so a port taken between probing and
    /// binding is retried with another one.
    pub fn start() -> Result<Sshd, String> {
        Self::start_with("")
    }

    /// Like [`Sshd::start`], with `extra_config` added to the config (e.g. a route mode's
    /// forwarding settings, or a `Match` block, which goes last). A global keyword that
    /// `extra_config` sets replaces the base config's default for it (forwarding, client
    /// alive checks, `LogLevel`, `MaxSessions`) instead of competing with it. The base
    /// config sets no `MaxStartups`: sshd's default (10:30:100) holds unless
    /// `extra_config` sets one, as install-edge.sh's drop-in does
    /// ([`production_sshd_dropin`]).
    pub fn start_with(extra_config: &str) -> Result<Sshd, String> {
        let binary = sshd_binary()?;
        ensure_privsep_dir()?;
        let mut last_error = String::new();
        for _attempt in 0..5 {
            match Self::try_start(&binary, extra_config) {
                Ok(sshd) => return Ok(sshd),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn try_start(binary: &Path, extra_config: &str) -> Result<Sshd, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let host_key = dir.path().join("ssh_host_ed25519_key");
        let public = generate_key(&host_key, "mytunnel-test-sshd")?;
        let host_public_key = public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let port = free_port().map_err(|e| e.to_string())?;
        let config_path = dir.path().join("sshd_config");
        std::fs::write(
            &config_path,
            sshd_config(dir.path(), &host_key, port, extra_config),
        )
        .map_err(|e| e.to_string())?;
        let log_path = dir.path().join("sshd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let child = sshd_command(binary, &config_path, log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut sshd = Sshd {
            child,
            port,
            host_public_key,
            dir,
        };
        sshd.wait_ready()?;
        Ok(sshd)
    }

    /// The machine's own sshd as its service runs it: `/etc/ssh/sshd_config` with every
    /// drop-in it includes and the machine's host keys, on a free loopback port instead
    /// of 22 (`-p`, `ListenAddress`) and without a pid file, so that it stands beside any
    /// sshd already running. For tests of an edge installed for real (the package test).
    pub fn start_system() -> Result<Sshd, String> {
        let binary = sshd_binary()?;
        ensure_privsep_dir()?;
        let host_public_key = std::fs::read_to_string("/etc/ssh/ssh_host_ed25519_key.pub")
            .map_err(|e| format!("the machine's host key: {e} (is openssh-server installed?)"))?
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let port = free_port().map_err(|e| e.to_string())?;
            let log =
                std::fs::File::create(dir.path().join("sshd.log")).map_err(|e| e.to_string())?;
            let child = Command::new(&binary)
                .args(["-D", "-e", "-p"])
                .arg(port.to_string())
                .args(["-o", "ListenAddress=127.0.0.1", "-o", "PidFile=none"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
            let mut sshd = Sshd {
                child,
                port,
                host_public_key: host_public_key.clone(),
                dir,
            };
            match sshd.wait_ready() {
                Ok(()) => return Ok(sshd),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Waits until this sshd (its log says it listens) answers a TCP connection with an
    /// SSH banner.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let listening = format!("Server listening on 127.0.0.1 port {}", self.port);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("sshd exited with {status}: {}", self.log()));
            }
            if self.log().contains(&listening) && read_banner(self.port).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "sshd did not answer on port {} within 15s: {}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The loopback port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host key as `ssh-ed25519 AAAA…` (no comment).
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// The `known_hosts` line for this sshd: `[127.0.0.1]:PORT ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_public_key)
    }

    /// The ssh client options (`-o` values) that log in to this sshd with the key
    /// `identity` only and trust no host key but the one in `known_hosts` (a file holding
    /// [`Sshd::known_hosts_line`]).
    pub fn client_options(&self, identity: &Path, known_hosts: &Path) -> Vec<String> {
        vec![
            format!("Port={}", self.port),
            format!("IdentityFile={}", identity.display()),
            format!("UserKnownHostsFile={}", known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
            "IdentitiesOnly=yes".to_owned(),
        ]
    }

    /// The pid of the listening sshd.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// sshd's log so far (`-e`, `LogLevel VERBOSE`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Stops the listener and the connection processes it forked (SIGKILL), and waits for
    /// the listener.
    pub fn kill(&mut self) {
        kill_all(&mut self.child, Below::Children);
    }

    /// Kills the listener and every process below it (connection monitors and the
    /// per-user processes they fork, which [`Sshd::kill`] leaves to die on their own).
    pub fn kill_tree(&mut self) {
        kill_all(&mut self.child, Below::Everything);
    }

    /// Restarts sshd on the same port with the same config and host key, as a crash or a
    /// restart that ends every session does: the listener and every connection are killed
    /// (SIGKILL, [`Sshd::kill_tree`]), so clients see their sessions drop and must
    /// reconnect.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill_tree();
        let binary = sshd_binary()?;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("sshd.log"))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = log.try_clone().map_err(|e| e.to_string())?;
            self.child = sshd_command(&binary, &self.dir.path().join("sshd_config"), log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                // The port may linger for a moment after the kill: try again.
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {
                    self.kill();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `sshd -D -e -f <config>` (in the foreground, logging to stderr), its stderr in `log`.
fn sshd_command(binary: &Path, config: &Path, log: std::fs::File) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    command
}

/// sshd's privilege separation directory; sshd refuses to start without it.
fn ensure_privsep_dir() -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new("/run/sshd");
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create /run/sshd: {e}"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot chmod /run/sshd: {e}"))?;
    }
    Ok(())
}

fn sshd_config(dir: &Path, host_key: &Path, port: u16, extra_config: &str) -> String {
    // A `Match` block runs to the end of the file, so it goes last.
    let (global_extra, match_blocks) = match extra_config.find("Match ") {
        Some(at) => extra_config.split_at(at),
        None => (extra_config, ""),
    };
    // Defaults only for what global_extra omits: sshd keeps the first value of most
    // keywords but the last of some (MaxStartups, measured on OpenSSH 9.2), so a keyword
    // must appear once. No MaxStartups of our own: the tests run with the installer's
    // (its drop-in in extra_config), or with sshd's default as an edge without it would.
    let overridable = [
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding no",
        "ClientAliveInterval 2",
        "ClientAliveCountMax 2",
        "LogLevel VERBOSE",
        "MaxSessions 100",
    ];
    let defaults = overridable
        .into_iter()
        .filter(|line| {
            let keyword = line.split(' ').next().unwrap_or(line);
            !global_extra
                .lines()
                .any(|l| l.trim().split(' ').next() == Some(keyword))
        })
        .map(|line| format!("{line}\n"))
        .collect::<String>();
    format!(
        "\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {pid_file}
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PermitRootLogin no
{defaults}{global_extra}
GatewayPorts no
X11Forwarding no
AllowAgentForwarding no
PermitTunnel no
UseDNS no
PrintMotd no
PrintLastLog no
{match_blocks}
",
        host_key = host_key.display(),
        pid_file = dir.join("sshd.pid").display(),
    )
}

/// Connects to `127.0.0.1:port` and reads until the `SSH-2.0` banner.
fn read_banner(port: u16) -> Result<(), String> {
    use std::io::Read;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut seen: Vec<u8> = Vec::new();
    let mut buf = [0u8; 256];
    while seen.len() < 4096 {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        seen.extend(buf.iter().take(n).copied());
        if seen.windows(7).any(|w| w == b"SSH-2.0") {
            return Ok(());
        }
    }
    Err("no SSH-2.0 banner".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_settings_replace_the_defaults_and_match_blocks_go_last() {
        let config = sshd_config(
            Path::new("/d"),
            Path::new("/d/key"),
            2222,
            "MaxStartups 2000:30:4000\nLogLevel INFO\nMatch Group g\n    PermitListen none\n",
        );
        let keyword = |k: &str| {
            config
                .lines()
                .filter(|l| l.split(' ').next() == Some(k))
                .collect::<Vec<_>>()
        };
        assert_eq!(keyword("MaxStartups"), ["MaxStartups 2000:30:4000"]);
        assert_eq!(keyword("LogLevel"), ["LogLevel INFO"]);
        // Not overridden: the defaults stay, once.
        assert_eq!(keyword("MaxSessions"), ["MaxSessions 100"]);
        assert_eq!(keyword("AllowTcpForwarding"), ["AllowTcpForwarding yes"]);
        let tail: Vec<&str> = config.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(tail.last(), Some(&"    PermitListen none"));
        assert!(config.contains("Match Group g\n"));
        // Without one in the extra settings, sshd's own default holds.
        let plain = sshd_config(Path::new("/d"), Path::new("/d/key"), 2222, "");
        assert!(!plain.contains("MaxStartups"), "{plain}");
    }

    #[test]
    fn the_installer_s_dropin_keeps_its_global_lines_before_its_match_block() {
        let text = "# comment\nMaxStartups 256:30:1024\nMatch Group g\n    # why\n    \
                    AllowTcpForwarding remote\n    AuthorizedKeysFile none\n";
        assert_eq!(
            dropin_settings(text, "g").as_deref(),
            Some("MaxStartups 256:30:1024\nMatch Group g\n    AllowTcpForwarding remote\n")
        );
        assert_eq!(dropin_settings(text, "other"), None);
        assert_eq!(dropin_settings(&format!("{text}Match User x\n"), "g"), None);
        // Given to sshd_config, the global line lands once among the globals and the
        // block goes last.
        let config = sshd_config(
            Path::new("/d"),
            Path::new("/d/key"),
            2222,
            &dropin_settings(text, "g").unwrap(),
        );
        let max_startups: Vec<&str> = config
            .lines()
            .filter(|l| l.starts_with("MaxStartups"))
            .collect();
        assert_eq!(max_startups, ["MaxStartups 256:30:1024"]);
        let non_empty: Vec<&str> = config.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(non_empty.last(), Some(&"    AllowTcpForwarding remote"));
        assert!(
            config.find("MaxStartups") < config.find("Match Group g"),
            "{config}"
        );
    }

    #[test]
    fn the_installer_prints_a_dropin_with_max_startups_before_match() {
        let dropin = production_sshd_dropin("static", "tunnelers").unwrap();
        let first_match = dropin.find("Match ").unwrap();
        let max_startups = dropin.find("MaxStartups ").unwrap();
        assert!(max_startups < first_match, "{dropin}");
        assert_eq!(dropin.matches("MaxStartups").count(), 1, "{dropin}");
    }
}
