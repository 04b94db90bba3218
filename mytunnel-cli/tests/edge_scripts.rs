// Test code: a panic is a failed assertion.
//! The edge scripts (`scripts/install-edge.sh`, `check-edge.sh`, `upgrade-edge.sh`,
//! `rollback-edge.sh`) run for real, as root, inside a temporary root (`--destdir`), with
//! the built `mytunneld` and a real Caddy, so that `mytunneld ctl health` can be healthy.
//! Each test uses its own group and service user, deleted when it ends. `mytunneld ctl`
//! asks `mytunneld serve` (the only process that opens the lease database): a test that
//! runs ctl starts the installed serve as the service user, as the installed unit would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use mytunnel_test_support::{eventually, generate_key, mytunneld_command, stdout_json, RealCaddy};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_mytunneld");

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

/// The group and service user of one test, deleted (user first: the group is its
/// primary group) when dropped.
#[derive(Debug)]
struct Names {
    group: String,
    user: String,
}

impl Names {
    fn new(tag: &str) -> Names {
        let pid = std::process::id();
        Names {
            group: format!("mtt-g{tag}-{pid}"),
            user: format!("mtt-u{tag}-{pid}"),
        }
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .arg(&self.user)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("groupdel")
            .arg(&self.group)
            .stderr(Stdio::null())
            .status();
    }
}

/// `mytunneld serve` as the installed unit runs it: `runuser -u USER -- <bin> --env-file
/// <env> serve`. Stopped by pid when dropped: SIGTERM to serve itself (runuser, sent a
/// signal, waits 2 s before it passes on a SIGKILL), then runuser is waited for.
#[derive(Debug)]
struct Serve {
    runuser: Child,
    /// serve's own pid, runuser's child.
    pid: Option<Pid>,
    /// Its stdout and stderr.
    log: PathBuf,
}

impl Serve {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        self.stop_with(Signal::SIGTERM);
    }

    fn stop_with(&mut self, signal: Signal) {
        let runuser = Pid::from_raw(i32::try_from(self.runuser.id()).unwrap());
        let _ = kill(self.pid.unwrap_or(runuser), signal);
        let exited = eventually(Duration::from_secs(10), || {
            matches!(self.runuser.try_wait(), Ok(Some(_)))
        });
        if !exited {
            if let Some(pid) = self.pid {
                let _ = kill(pid, Signal::SIGKILL);
            }
            let _ = self.runuser.kill();
        }
        let _ = self.runuser.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A temporary root with an installed edge, its Caddy and, once started, its serve (each
/// stopped by pid when dropped, serve first: the service user is deleted last).
#[derive(Debug)]
struct Edge {
    serve: Option<Serve>,
    caddy: RealCaddy,
    root: tempfile::TempDir,
    /// serve's logs, outside the root (whose listing the tests compare).
    logs: tempfile::TempDir,
    names: Names,
    /// Extra arguments of every install (e.g. `--route-mode routes`).
    install_args: Vec<String>,
}

/// The socket directory of the tests' installs, inside the temporary root: the default
/// (/var/lib/mytunnel-sockets) would be longer than the 32 bytes install-edge.sh allows
/// there (`<tmp>/.tmpXXXXXX/sockets` fits).
const SOCKET_DIR: &str = "/sockets";

/// A script's exit code and its stdout followed by its stderr.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    text: String,
}

fn run_output(output: &Output) -> Run {
    Run {
        code: output.status.code(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

impl Edge {
    /// A new install with the default route mode (static).
    fn new(tag: &str) -> Edge {
        Edge::with_args(tag, &["--socket-dir", SOCKET_DIR])
    }

    /// A new install in route mode `routes`.
    fn routes(tag: &str) -> Edge {
        Edge::with_args(tag, &["--route-mode", "routes", "--socket-dir", SOCKET_DIR])
    }

    fn with_args(tag: &str, install_args: &[&str]) -> Edge {
        let names = Names::new(tag);
        let caddy = RealCaddy::start().unwrap();
        let root = tempfile::tempdir().unwrap();
        // The service user reaches the installed files through the root, as through `/`.
        set_mode(root.path(), 0o755);
        let edge = Edge {
            serve: None,
            caddy,
            root,
            logs: tempfile::tempdir().unwrap(),
            names,
            install_args: install_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        let run = edge.install();
        assert_eq!(run.code, Some(0), "install failed: {}", run.text);
        edge.write_sshd_config("");
        edge
    }

    fn destdir(&self) -> &Path {
        self.root.path()
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.destdir().join(relative)
    }

    fn bin(&self) -> PathBuf {
        self.path("usr/local/bin/mytunneld")
    }

    fn env_file(&self) -> PathBuf {
        self.path("etc/mytunneld/mytunneld.env")
    }

    fn db(&self) -> PathBuf {
        self.path("var/lib/mytunneld/leases.db")
    }

    fn state_dir(&self) -> PathBuf {
        self.path("var/lib/mytunneld")
    }

    /// The database's files that exist: `leases.db` and its `-wal`, `-shm`.
    fn db_files(&self) -> Vec<PathBuf> {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| PathBuf::from(format!("{}{suffix}", self.db().display())))
            .filter(|p| p.exists())
            .collect()
    }

    /// The socket directory the installed env file names (serve binds control.sock there).
    fn socket_dir(&self) -> PathBuf {
        let env = std::fs::read_to_string(self.env_file()).unwrap();
        env.lines()
            .filter_map(|l| l.strip_prefix("MYTUNNEL_SOCKET_DIR="))
            .next_back()
            .map_or_else(|| PathBuf::from("/var/lib/mytunnel-sockets"), PathBuf::from)
    }

    fn service_user(&self) -> nix::unistd::User {
        nix::unistd::User::from_name(&self.names.user)
            .unwrap()
            .unwrap()
    }

    /// Starts the installed `mytunneld serve` as the service user, the way the installed
    /// unit does, and waits until its control socket exists and `ctl health` answers.
    fn start_serve(&mut self) {
        assert!(self.serve.is_none(), "serve runs already");
        let log = self.logs.path().join("serve.log");
        let log_file = std::fs::File::create(&log).unwrap();
        // No MYTUNNEL_* from the test's environment: the env file only, as systemd.
        let user = Some(self.names.user.as_str());
        let runuser = mytunneld_command(&self.bin(), &self.env_file(), user, "serve")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut serve = Serve {
            runuser,
            pid: None,
            log,
        };
        let children = format!("/proc/{0}/task/{0}/children", serve.runuser.id());
        let found = eventually(Duration::from_secs(10), || {
            serve.pid = std::fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
                .map(Pid::from_raw);
            serve.pid.is_some() || matches!(serve.runuser.try_wait(), Ok(Some(_)))
        });
        assert!(
            found && serve.pid.is_some(),
            "serve did not start: {}",
            serve.log_text()
        );
        let control = self.socket_dir().join("control.sock");
        let ready = eventually(Duration::from_secs(20), || {
            if matches!(serve.runuser.try_wait(), Ok(Some(_))) {
                return true;
            }
            control.exists() && {
                let (_, health) = self.try_ctl(&["health"]);
                health.is_some_and(|h| h.get("healthy").is_some())
            }
        });
        let exited = serve.runuser.try_wait().unwrap();
        assert!(
            ready && exited.is_none(),
            "serve is not answering on {} (exit {exited:?}): {}",
            control.display(),
            serve.log_text()
        );
        self.serve = Some(serve);
    }

    /// Stops serve (by its pid) and waits for it.
    fn stop_serve(&mut self) {
        let mut serve = self.serve.take().expect("serve is not running");
        serve.stop();
    }

    /// Kills serve with SIGKILL (no checkpoint: the database keeps its -wal and -shm).
    fn kill_serve(&mut self) {
        let mut serve = self.serve.take().expect("serve is not running");
        serve.stop_with(Signal::SIGKILL);
    }

    /// What systemd does to the service around a binary or database change: the scripts
    /// leave it alone with --destdir.
    fn restart_serve(&mut self) {
        self.stop_serve();
        self.start_serve();
    }

    fn script(&self, name: &str, args: &[&str]) -> Run {
        let output = Command::new(script(name))
            .args(args)
            .env_remove("MYTUNNEL_DB_PATH")
            .env_remove("MYTUNNEL_CADDY_ADMIN_URL")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        run_output(&output)
    }

    fn install(&self) -> Run {
        let extra: Vec<&str> = self.install_args.iter().map(String::as_str).collect();
        self.install_with(&extra)
    }

    fn install_with(&self, extra: &[&str]) -> Run {
        let admin = self.caddy.admin_address().to_string();
        let mut args = vec![
            "--destdir",
            self.destdir().to_str().unwrap(),
            "--binary",
            BINARY,
            "--group",
            &self.names.group,
            "--user",
            &self.names.user,
            "--base-domain",
            "t.test",
            "--caddy-admin-url",
            &admin,
        ];
        args.extend_from_slice(extra);
        self.script("install-edge.sh", &args)
    }

    fn check(&self) -> Run {
        self.script(
            "check-edge.sh",
            &[
                "--destdir",
                self.destdir().to_str().unwrap(),
                "--group",
                &self.names.group,
                "--user",
                &self.names.user,
                "--sshd-config",
                self.sshd_config().to_str().unwrap(),
            ],
        )
    }

    /// The edge's sshd_config for `check-edge.sh --sshd-config`, outside the root (whose
    /// listing the tests compare): Debian's include of `sshd_config.d` first, a host key
    /// (`sshd -T` wants one), then `extra` (read after the drop-in).
    fn write_sshd_config(&self, extra: &str) {
        let host_key = self.logs.path().join("ssh_host_ed25519_key");
        if !host_key.exists() {
            generate_key(&host_key, "edge-scripts-host").unwrap();
        }
        std::fs::write(
            self.sshd_config(),
            format!(
                "Include {}/etc/ssh/sshd_config.d/*.conf\nHostKey {}\nUsePAM no\n{extra}",
                self.destdir().display(),
                host_key.display()
            ),
        )
        .unwrap();
    }

    fn sshd_config(&self) -> PathBuf {
        self.logs.path().join("sshd_config")
    }

    fn upgrade(&self, new_binary: &Path) -> Run {
        self.script(
            "upgrade-edge.sh",
            &[
                new_binary.to_str().unwrap(),
                "--destdir",
                self.destdir().to_str().unwrap(),
            ],
        )
    }

    fn rollback(&self) -> Run {
        self.script(
            "rollback-edge.sh",
            &["--destdir", self.destdir().to_str().unwrap()],
        )
    }

    fn ctl_output(&self, args: &[&str]) -> Output {
        Command::new(self.bin())
            .arg("--env-file")
            .arg(self.env_file())
            .arg("ctl")
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `mytunneld ctl <args>` (as root) with the installed binary and env file: its exit
    /// code and its output, when that is JSON other than `service_unavailable`.
    fn try_ctl(&self, args: &[&str]) -> (Option<i32>, Option<Value>) {
        let output = self.ctl_output(args);
        let value = serde_json::from_slice::<Value>(&output.stdout)
            .ok()
            .filter(|v| v["error"]["code"] != "service_unavailable");
        (output.status.code(), value)
    }

    /// `mytunneld ctl <args>`; serve must be running. An allocation binds a socket in
    /// its owner's directory: root's is made first, as `install-edge-ssh-key.sh` makes
    /// a tunnel user's (root:caddy 2750).
    fn ctl(&self, args: &[&str]) -> (Option<i32>, Value) {
        assert!(self.serve.is_some(), "ctl needs serve: start_serve first");
        if args.first() == Some(&"allocate") {
            let dir = self.socket_dir().join("owners/root");
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                let caddy = nix::unistd::Group::from_name("caddy").unwrap().unwrap();
                nix::unistd::chown(&dir, None, Some(caddy.gid)).unwrap();
                set_mode(&dir, 0o2750);
            }
        }
        let output = self.ctl_output(args);
        (output.status.code(), stdout_json(&output).unwrap())
    }

    fn assert_healthy(&self) {
        let (code, health) = self.ctl(&["health"]);
        assert_eq!(code, Some(0), "unhealthy: {health}");
        assert_eq!(health["healthy"], true, "{health}");
    }

    fn lease_names(&self) -> Vec<String> {
        let (code, list) = self.ctl(&["list"]);
        assert_eq!(code, Some(0), "{list}");
        list.as_array()
            .unwrap()
            .iter()
            .filter(|l| l["state"] == "active")
            .map(|l| l["slug"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The drop-in's `AuthorizedKeysCommand` for an install under `--destdir`: the
    /// install's own binary and env file (the system's would read another keys directory).
    fn keys_command(&self) -> String {
        format!(
            "AuthorizedKeysCommand {} --env-file {} authorized-keys %u",
            self.bin().display(),
            self.env_file().display()
        )
    }

    fn gid(&self) -> u32 {
        let output = Command::new("getent")
            .args(["group", &self.names.group])
            .output()
            .unwrap();
        let line = String::from_utf8(output.stdout).unwrap();
        line.split(':').nth(2).unwrap().trim().parse().unwrap()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every path under `root` with its type, mode, owner and a hash of its content.
fn listing(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_file() {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&path).unwrap().hash(&mut hasher);
                hasher.finish()
            } else {
                0
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                format!(
                    "{:o} {}:{} {content:x}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid()
                ),
            );
        }
    }
    out
}

/// The check names on check-edge's final line ("… failed: a b").
fn failed_checks(run: &Run) -> Vec<String> {
    let last = run.text.lines().last().unwrap_or("");
    last.split_once("failed:")
        .map(|(_, names)| names.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[test]
fn install_twice_is_idempotent_with_exact_modes_and_a_hardened_unit() {
    let mut edge = Edge::new("a");
    let before = listing(edge.destdir());
    let second = edge.install();
    assert_eq!(second.code, Some(0), "{}", second.text);
    assert!(second.text.contains("left untouched"), "{}", second.text);
    assert_eq!(
        listing(edge.destdir()),
        before,
        "the second install changed files"
    );

    let gid = edge.gid();
    let expect = [
        ("usr/local/bin/mytunneld", 0o755, 0),
        ("etc/mytunneld", 0o750, gid),
        ("etc/mytunneld/mytunneld.env", 0o640, gid),
        ("etc/systemd/system/mytunneld.service", 0o644, 0),
        ("etc/mytunneld/keys", 0o755, 0),
        ("etc/ssh/sshd_config.d/mytunnel.conf", 0o644, 0),
        ("sockets/owners", 0o755, 0),
    ];
    for (relative, want_mode, want_gid) in expect {
        let path = edge.path(relative);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(mode(&path), want_mode, "{relative}: mode {:o}", mode(&path));
        assert_eq!(meta.uid(), 0, "{relative} not owned by root");
        assert_eq!(meta.gid(), want_gid, "{relative}: group");
    }
    // The lease database's directory, the socket directory and its host links belong to
    // the service user; tunnel users cannot even enter the first.
    let service_uid = edge.service_user().uid.as_raw();
    for (relative, want_mode) in [
        ("var/lib/mytunneld", 0o700),
        ("sockets", 0o755),
        ("sockets/hosts", 0o755),
    ] {
        let path = edge.path(relative);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(mode(&path), want_mode, "{relative}: mode {:o}", mode(&path));
        assert_eq!((meta.uid(), meta.gid()), (service_uid, gid), "{relative}");
    }
    assert!(
        second.text.contains("lease database are up to date"),
        "{}",
        second.text
    );
    assert_eq!(
        std::fs::read(edge.bin()).unwrap(),
        std::fs::read(BINARY).unwrap()
    );

    let env = std::fs::read_to_string(edge.env_file()).unwrap();
    for line in [
        "MYTUNNEL_BASE_DOMAIN=t.test".to_owned(),
        format!("MYTUNNEL_CADDY_ADMIN_URL={}", edge.caddy.admin_address()),
        format!("MYTUNNEL_DB_PATH={}", edge.db().display()),
        "MYTUNNEL_ROUTE_MODE=static".to_owned(),
        format!("MYTUNNEL_SOCKET_DIR={}", edge.path("sockets").display()),
        format!(
            "MYTUNNEL_KEYS_DIR={}",
            edge.path("etc/mytunneld/keys").display()
        ),
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} missing from:\n{env}"
        );
    }

    let unit = std::fs::read_to_string(edge.path("etc/systemd/system/mytunneld.service")).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/mytunneld serve",
        &format!("User={}", edge.names.user),
        &format!("Group={}", edge.names.group),
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/mytunneld",
        "ReadWritePaths=/sockets",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "CapabilityBoundingSet=CAP_KILL",
        "AmbientCapabilities=CAP_KILL",
        "UMask=0077",
        "Restart=on-failure",
        "EnvironmentFile=-/etc/mytunneld/mytunneld.env",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from:\n{unit}"
        );
    }
    assert!(second.text.contains("systemd skipped"), "{}", second.text);

    // The service user exists, without a login shell, in the group.
    let groups = Command::new("id")
        .args(["-nG", &edge.names.user])
        .output()
        .unwrap();
    let groups = String::from_utf8(groups.stdout).unwrap();
    assert!(
        groups.split_whitespace().any(|g| g == edge.names.group),
        "{groups}"
    );
    // And in the proxy's group: serve reaches tunnel sockets to end them with their lease.
    assert!(groups.split_whitespace().any(|g| g == "caddy"), "{groups}");

    assert_eq!(
        dropin_settings(&edge),
        [
            "AllowTcpForwarding remote",
            "PermitListen none",
            "AllowStreamLocalForwarding remote",
            "StreamLocalBindMask 0117",
            "StreamLocalBindUnlink no",
            "AuthorizedKeysFile none",
            &edge.keys_command(),
            &format!("AuthorizedKeysCommandUser {}", edge.names.user),
        ]
    );
    // Global, before the Match block: sized for a reconnect storm, not sshd's 10:30:100.
    assert_eq!(dropin_global_settings(&edge), ["MaxStartups 256:30:1024"]);
    assert_sshd_applies_dropin(&edge);
    assert_printed_dropin_is_installed(&edge, "static");
    assert_keys_command_reads_the_install(&edge);

    // Without serve, ctl says so at once; nothing else opens the database.
    let started = std::time::Instant::now();
    let output = edge.ctl_output(&["list"]);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(output.status.code(), Some(2));
    let reply: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reply["error"]["code"], "service_unavailable", "{reply}");
    assert!(!edge.db().exists());

    // The installed binary works in the temporary root, run as the unit runs it: serve
    // makes the database its own (0600, whatever its umask) and answers root's ctl on a
    // control socket of its group.
    edge.start_serve();
    let (code, list) = edge.ctl(&["list"]);
    assert_eq!((code, list), (Some(0), serde_json::json!([])));
    for file in edge.db_files() {
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(mode(&file), 0o600, "{}", file.display());
        assert_eq!(
            (meta.uid(), meta.gid()),
            (service_uid, gid),
            "{}",
            file.display()
        );
    }
    let control = edge.path("sockets/control.sock");
    let meta = std::fs::metadata(&control).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(mode(&control), 0o660);
    assert_eq!((meta.uid(), meta.gid()), (service_uid, gid));
}

/// The settings of the sshd drop-in (comments left out): the global ones before its
/// `Match Group <group>` line, and those of the block.
fn dropin_parts(edge: &Edge) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(edge.path("etc/ssh/sshd_config.d/mytunnel.conf")).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let match_line = format!("Match Group {}", edge.names.group);
    let at = lines
        .iter()
        .position(|l| *l == match_line)
        .unwrap_or_else(|| panic!("no `{match_line}` line: {text}"));
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("Match ")).count(),
        1,
        "{text}"
    );
    (lines[..at].to_vec(), lines[at + 1..].to_vec())
}

/// The settings of the sshd drop-in's `Match Group <group>` block (comments left out).
fn dropin_settings(edge: &Edge) -> Vec<String> {
    dropin_parts(edge).1
}

/// The drop-in's global settings, before its `Match` block.
fn dropin_global_settings(edge: &Edge) -> Vec<String> {
    dropin_parts(edge).0
}

/// `install-edge.sh --print-sshd-dropin` (what the e2e suite and the bench run sshd with)
/// prints exactly the drop-in the install wrote, and writes nothing.
fn assert_printed_dropin_is_installed(edge: &Edge, route_mode: &str) {
    let before = listing(edge.destdir());
    let printed = edge.script(
        "install-edge.sh",
        &[
            "--print-sshd-dropin",
            "--destdir",
            edge.destdir().to_str().unwrap(),
            "--route-mode",
            route_mode,
            "--group",
            &edge.names.group,
            "--user",
            &edge.names.user,
        ],
    );
    assert_eq!(printed.code, Some(0), "{}", printed.text);
    let installed =
        std::fs::read_to_string(edge.path("etc/ssh/sshd_config.d/mytunnel.conf")).unwrap();
    assert_eq!(printed.text, installed);
    assert_eq!(listing(edge.destdir()), before);
}

/// The drop-in's `AuthorizedKeysCommand`, run as sshd runs it (its words split at spaces,
/// `%u` the user logging in, as the `AuthorizedKeysCommandUser`, with no environment),
/// prints the key enrolled in this install's keys directory with the gate's options: it
/// runs the installed binary with the installed env file, not `/usr/local/bin/mytunneld`
/// and `/etc/mytunneld`'s (which on a test machine do not exist, or name other keys), and
/// every key it prints forces that binary's gate with that env file.
fn assert_keys_command_reads_the_install(edge: &Edge) {
    let key = edge.logs.path().join("id_keys_command");
    let public = generate_key(&key, "keys-command@test").unwrap();
    let keys_file = edge.path("etc/mytunneld/keys/alice");
    std::fs::write(&keys_file, format!("{public}\n")).unwrap();
    set_mode(&keys_file, 0o644);
    let (global, block) = dropin_parts(edge);
    assert!(!global.is_empty());
    let command = block
        .iter()
        .find_map(|l| l.strip_prefix("AuthorizedKeysCommand "))
        .unwrap_or_else(|| panic!("no AuthorizedKeysCommand: {block:?}"));
    let words: Vec<String> = command
        .split_whitespace()
        .map(|w| w.replace("%u", "alice"))
        .collect();
    let out = Command::new("runuser")
        .args(["-u", &edge.names.user, "--"])
        .args(&words)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{command}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blob = public.split_whitespace().nth(1).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    // The forced gate is this install's binary with this install's env file.
    let gate = format!(
        "command=\"{} --env-file {} gate\" ",
        edge.path("usr/local/bin/mytunneld").display(),
        edge.env_file().display()
    );
    assert!(
        stdout.starts_with(&format!(
            "restrict,port-forwarding,pty,permitlisten=\"NONE:1\",{gate}"
        )) && stdout.contains(blob),
        "{command} printed: {stdout}"
    );
    std::fs::remove_file(&keys_file).unwrap();
}

/// Real sshd accepts the drop-in (`sshd -t`), included the way Debian's sshd_config
/// includes sshd_config.d, and applies every setting of its Match block to a member of
/// the tunnel group (`sshd -T -C`), and none of them to others.
fn assert_sshd_applies_dropin(edge: &Edge) {
    let work = tempfile::tempdir().unwrap();
    let host_key = work.path().join("host_key");
    generate_key(&host_key, "edge-scripts-host").unwrap();
    let config = work.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Include {}/etc/ssh/sshd_config.d/*.conf
HostKey {}
UsePAM no
AllowTcpForwarding yes
",
            edge.destdir().display(),
            host_key.display()
        ),
    )
    .unwrap();
    let sshd = mytunnel_test_support::sshd_binary().unwrap();
    let test = Command::new(&sshd)
        .arg("-t")
        .arg("-f")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "sshd -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let effective = |user: &str| {
        let out = Command::new(&sshd)
            .arg("-T")
            .arg("-f")
            .arg(&config)
            .arg("-C")
            .arg(format!("user={user},host=localhost,addr=127.0.0.1"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sshd -T: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The service user is a member of the tunnel group; root is not.
    let member = effective(&edge.names.user);
    let other = effective("root");
    // The global settings hold for every login (sshd -T prints MaxStartups as is).
    for setting in dropin_global_settings(edge) {
        let want = setting.to_lowercase();
        for effective in [&member, &other] {
            assert!(
                effective.lines().any(|l| l.to_lowercase() == want),
                "{setting} not in effect:\n{effective}"
            );
        }
    }
    for setting in dropin_settings(edge) {
        let want = setting.to_lowercase();
        assert!(
            member.lines().any(|l| l.to_lowercase() == want),
            "{setting} not in effect for a member:
{member}"
        );
        assert!(
            !other.lines().any(|l| l.to_lowercase() == want) || want.ends_with(" no"),
            "{setting} in effect for root:
{other}"
        );
    }
}

#[test]
fn routes_mode_install_has_the_same_socket_layout_and_dropin_as_static() {
    let mut edge = Edge::routes("r");
    let env = std::fs::read_to_string(edge.env_file()).unwrap();
    assert!(
        env.lines().any(|l| l == "MYTUNNEL_ROUTE_MODE=routes"),
        "{env}"
    );
    // One bind shape: serve's control socket and every tunnel's socket live in the
    // socket directory in this mode too.
    assert!(
        env.lines()
            .any(|l| l == format!("MYTUNNEL_SOCKET_DIR={}", edge.path("sockets").display())),
        "{env}"
    );
    let sockets = edge.path("sockets");
    let meta = std::fs::metadata(&sockets).unwrap();
    assert_eq!(mode(&sockets), 0o755);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (edge.service_user().uid.as_raw(), edge.gid())
    );
    assert_eq!(mode(&sockets.join("owners")), 0o755);
    assert_eq!(std::fs::metadata(sockets.join("owners")).unwrap().uid(), 0);
    assert_eq!(mode(&sockets.join("hosts")), 0o755);
    assert!(!edge.path("var/lib/mytunnel-sockets").exists());
    let unit = std::fs::read_to_string(edge.path("etc/systemd/system/mytunneld.service")).unwrap();
    assert_eq!(unit.matches("ReadWritePaths=").count(), 2, "{unit}");
    assert!(
        unit.lines().any(|l| l == "ReadWritePaths=/sockets"),
        "{unit}"
    );
    assert_eq!(
        dropin_settings(&edge),
        [
            "AllowTcpForwarding remote",
            "PermitListen none",
            "AllowStreamLocalForwarding remote",
            "StreamLocalBindMask 0117",
            "StreamLocalBindUnlink no",
            "AuthorizedKeysFile none",
            &edge.keys_command(),
            &format!("AuthorizedKeysCommandUser {}", edge.names.user),
        ]
    );
    assert_eq!(dropin_global_settings(&edge), ["MaxStartups 256:30:1024"]);
    assert_sshd_applies_dropin(&edge);
    assert_printed_dropin_is_installed(&edge, "routes");
    let before = listing(edge.destdir());
    // A second run, even asking for static, keeps the env file's mode.
    let again = edge.install_with(&["--route-mode", "static"]);
    assert_eq!(again.code, Some(0), "{}", again.text);
    assert!(
        again.text.contains("--route-mode static ignored"),
        "{}",
        again.text
    );
    assert_eq!(listing(edge.destdir()), before);
    edge.start_serve();
    edge.assert_healthy();
    let check = edge.check();
    assert_eq!(check.code, Some(0), "{}", check.text);
    assert!(
        check
            .text
            .lines()
            .any(|l| l.starts_with("ok sockets ") && l.contains("0 owner directories")),
        "{}",
        check.text
    );

    // --max-startups sizes it otherwise; check-edge then wants at least that.
    let bigger = edge.install_with(&["--max-startups", "512:20:2048"]);
    assert_eq!(bigger.code, Some(0), "{}", bigger.text);
    assert_eq!(dropin_global_settings(&edge), ["MaxStartups 512:20:2048"]);
    assert_sshd_applies_dropin(&edge);
    let check = edge.check();
    assert_eq!(check.code, Some(0), "{}", check.text);
    assert!(
        check_line(&check, "sshd").contains("maxstartups 512:20:2048"),
        "{}",
        check.text
    );
    edge.write_sshd_config("MaxStartups 300:30:4096\n");
    let check = edge.check();
    assert_eq!(failed_checks(&check), ["sshd"], "{}", check.text);
}

#[test]
fn an_install_from_before_route_modes_stays_routes_without_a_dropin_until_asked() {
    let mut edge = Edge::routes("o");
    // What an older install.sh left: no route mode, no keys dir, no drop-in.
    let env = std::fs::read_to_string(edge.env_file()).unwrap();
    let old: String = env
        .lines()
        .filter(|l| !l.contains("MYTUNNEL_ROUTE_MODE") && !l.contains("MYTUNNEL_KEYS_DIR"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(edge.env_file(), &old).unwrap();
    let dropin = edge.path("etc/ssh/sshd_config.d/mytunnel.conf");
    std::fs::remove_file(&dropin).unwrap();

    for _ in 0..2 {
        let run = edge.install_with(&[]);
        assert_eq!(run.code, Some(0), "{}", run.text);
        assert!(
            run.text.contains("mytunnel.conf not written"),
            "{}",
            run.text
        );
        assert!(run.text.contains("route mode routes"), "{}", run.text);
        assert!(!dropin.exists());
        assert!(!edge.path("var/lib/mytunnel-sockets").exists());
        assert!(edge.path("sockets/owners").is_dir());
        assert_eq!(std::fs::read_to_string(edge.env_file()).unwrap(), old);
    }
    let run = edge.install_with(&["--sshd-dropin"]);
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert_eq!(dropin_settings(&edge)[0], "AllowTcpForwarding remote");
    // From now on it is kept up to date without the flag.
    let before = listing(edge.destdir());
    let run = edge.install_with(&[]);
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert_eq!(listing(edge.destdir()), before);
    edge.start_serve();
    edge.assert_healthy();
}

#[test]
fn install_refuses_bad_route_settings() {
    let names = Names::new("x");
    let root = tempfile::tempdir().unwrap();
    let destdir = root.path().to_str().unwrap();
    for (args, needle) in [
        (vec!["--route-mode", "both"], "static or routes"),
        (vec!["--socket-dir", "relative/dir"], "invalid --socket-dir"),
        (vec!["--socket-dir", "/a/../b"], "invalid --socket-dir"),
        (vec!["--proxy-group", "Bad Group"], "invalid proxy group"),
        (vec!["--max-startups", "10:30"], "--max-startups must be"),
        (
            vec!["--max-startups", "100:30:10"],
            "--max-startups must be",
        ),
        (vec!["--max-startups", "10:0:100"], "--max-startups must be"),
        (vec!["--max-startups", "0"], "--max-startups must be"),
        // Inside the temporary root the default socket directory is too long, in both
        // modes (serve's control socket lives there).
        (vec![], "longer than 32 bytes"),
        (vec!["--route-mode", "routes"], "longer than 32 bytes"),
    ] {
        let mut all = vec![
            "--destdir",
            destdir,
            "--binary",
            BINARY,
            "--group",
            &names.group,
            "--user",
            &names.user,
        ];
        all.extend(args.iter().copied());
        let output = Command::new(script("install-edge.sh"))
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let run = run_output(&output);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.text);
        assert!(run.text.contains(needle), "{args:?}: {}", run.text);
    }
}

#[test]
fn install_refuses_tls_options_that_cannot_make_a_caddyfile_and_writes_nothing() {
    let names = Names::new("t");
    let root = tempfile::tempdir().unwrap();
    let destdir = root.path().to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--tls-mode", "letsencrypt"],
            "--tls-mode must be wildcard or on-demand: letsencrypt",
        ),
        (
            vec!["--tls-mode", "wildcard"],
            "--tls-mode wildcard needs --dns-provider NAME",
        ),
        (
            vec!["--tls-mode", "on-demand", "--dns-provider", "infomaniak"],
            "--dns-provider is only for --tls-mode wildcard",
        ),
        (
            vec!["--tls-mode", "on-demand", "--tls-ask-listen", "0.0.0.0:2020"],
            "--tls-ask-listen must be a loopback IP:PORT (127.0.0.0/8 or [::1], port 1-65535): 0.0.0.0:2020",
        ),
        (
            vec!["--tls-mode", "on-demand", "--tls-ask-listen", "[::]:2020"],
            "--tls-ask-listen must be a loopback IP:PORT",
        ),
        (
            vec![
                "--tls-mode",
                "on-demand",
                "--caddy-admin-url",
                "http://203.0.113.9:2019",
            ],
            "--caddy-admin-url must be loopback",
        ),
        (
            vec!["--tls-ask-listen", "127.0.0.1:2020"],
            "--tls-ask-listen needs --tls-mode",
        ),
        (
            vec!["--tls-mode", "on-demand", "--caddyfile", "etc/Caddyfile"],
            "--caddyfile must be an absolute file path",
        ),
    ] {
        let mut all = vec![
            "--destdir",
            destdir,
            "--binary",
            BINARY,
            "--group",
            &names.group,
            "--user",
            &names.user,
            "--base-domain",
            "t.test",
            "--socket-dir",
            SOCKET_DIR,
        ];
        all.extend(args.iter().copied());
        let output = Command::new(script("install-edge.sh"))
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let run = run_output(&output);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.text);
        assert!(run.text.contains(needle), "{args:?}: {}", run.text);
        assert!(output.stdout.is_empty(), "{args:?}: {}", run.text);
        assert_eq!(listing(root.path()), BTreeMap::new(), "{args:?}");
    }
    assert!(nix::unistd::User::from_name(&names.user).unwrap().is_none());
}

/// `install-edge.sh --print-caddyfile` with the flags `edge` was installed with and
/// `extra`.
fn printed_caddyfile(edge: &Edge, extra: &[&str]) -> String {
    let admin = edge.caddy.admin_address().to_string();
    let mut args = vec![
        "--print-caddyfile",
        "--destdir",
        edge.destdir().to_str().unwrap(),
        "--base-domain",
        "t.test",
        "--caddy-admin-url",
        &admin,
        "--socket-dir",
        SOCKET_DIR,
    ];
    args.extend_from_slice(extra);
    let run = edge.script("install-edge.sh", &args);
    assert_eq!(run.code, Some(0), "{}", run.text);
    run.text
}

/// The `KEY=` lines of the env file for `key`.
fn env_lines(edge: &Edge, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    std::fs::read_to_string(edge.env_file())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// The status of Caddy's on-demand question for `host`, asked where `caddyfile`'s `ask`
/// line says (`GET <ask URL>?domain=<host>`), as Caddy asks it.
fn ask_status(caddyfile: &str, host: &str) -> u16 {
    let url = caddyfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("ask http://"))
        .unwrap_or_else(|| panic!("no ask line:\n{caddyfile}"));
    let (addr, path) = url.split_once('/').unwrap();
    mytunnel_test_support::http_get_path(
        addr.parse().unwrap(),
        addr,
        &format!("/{path}?domain={host}"),
    )
    .unwrap_or_else(|| panic!("no HTTP answer from {addr}"))
    .0
}

/// The `Caddyfile.before-mytunnel.*` copies in `etc/caddy`, by name.
fn caddyfile_copies(edge: &Edge) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(edge.path("etc/caddy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            name.starts_with("Caddyfile.before-mytunnel.")
                .then(|| (name, std::fs::read(&p).unwrap()))
        })
        .collect()
}

#[test]
fn install_writes_the_caddyfile_of_its_tls_mode_and_never_loses_an_operators_file() {
    let mut edge = Edge::new("c");
    let caddyfile = edge.path("etc/caddy/Caddyfile");
    // Without --tls-mode no Caddyfile is written (an edge keeps a hand-written one).
    assert!(!edge.path("etc/caddy").exists());
    assert!(env_lines(&edge, "MYTUNNEL_TLS_ASK_LISTEN").is_empty());

    // The operator's own Caddyfile, of a mode and content the install does not write.
    std::fs::create_dir(edge.path("etc/caddy")).unwrap();
    let operators = b"# mine\n:80 {\n\troot * /usr/share/caddy\n\tfile_server\n}\n";
    std::fs::write(&caddyfile, operators).unwrap();
    set_mode(&caddyfile, 0o640);
    // serve is to listen for Caddy's ask: a port of its own (the default is 2020).
    let ask = format!("127.0.0.1:{}", mytunnel_test_support::free_port().unwrap());
    let tls = ["--tls-mode", "on-demand", "--tls-ask-listen", &ask];
    let run = edge.install_with(&tls);
    assert_eq!(run.code, Some(0), "{}", run.text);
    let copies = caddyfile_copies(&edge);
    assert_eq!(copies.len(), 1, "{copies:?}");
    let (copy, bytes) = copies.iter().next().unwrap();
    assert_eq!(bytes, operators, "{copy}");
    assert_eq!(mode(&edge.path(&format!("etc/caddy/{copy}"))), 0o640);
    assert!(
        run.text.contains(&format!(
            "kept a copy of {} as {}",
            caddyfile.display(),
            edge.path(&format!("etc/caddy/{copy}")).display()
        )),
        "{}",
        run.text
    );
    // What --print-caddyfile shows for the same flags, 0644 root:root.
    assert_eq!(
        std::fs::read_to_string(&caddyfile).unwrap(),
        printed_caddyfile(&edge, &tls)
    );
    let meta = std::fs::metadata(&caddyfile).unwrap();
    assert_eq!((mode(&caddyfile), meta.uid(), meta.gid()), (0o644, 0, 0));
    assert!(
        std::fs::read_to_string(&caddyfile)
            .unwrap()
            .contains(&format!("\t\task http://{ask}/ask\n")),
        "{}",
        std::fs::read_to_string(&caddyfile).unwrap()
    );
    assert!(run.text.contains("the Caddyfile is valid"), "{}", run.text);
    assert!(
        run.text.contains("caddy not reloaded (--destdir)"),
        "{}",
        run.text
    );
    // The env file existed: it gets the ask line, and keeps its mode and owner.
    assert_eq!(
        env_lines(&edge, "MYTUNNEL_TLS_ASK_LISTEN"),
        [format!("MYTUNNEL_TLS_ASK_LISTEN={ask}")]
    );
    assert!(
        run.text.contains(&format!(
            "added MYTUNNEL_TLS_ASK_LISTEN={ask} to {}",
            edge.env_file().display()
        )),
        "{}",
        run.text
    );
    let env_meta = std::fs::metadata(edge.env_file()).unwrap();
    assert_eq!(mode(&edge.env_file()), 0o640);
    assert_eq!((env_meta.uid(), env_meta.gid()), (0, edge.gid()));

    // Again: nothing changes, no copy of our own file.
    let before = listing(edge.destdir());
    let again = edge.install_with(&tls);
    assert_eq!(again.code, Some(0), "{}", again.text);
    assert!(
        again
            .text
            .contains(&format!("{} is up to date", caddyfile.display())),
        "{}",
        again.text
    );
    assert!(
        !again.text.contains("added MYTUNNEL_TLS_ASK_LISTEN"),
        "{}",
        again.text
    );
    assert_eq!(listing(edge.destdir()), before);

    // The env file's address wins over the flag's (serve listens there): the ask URL
    // follows it, the previous file is kept.
    let other = format!("127.0.0.1:{}", mytunnel_test_support::free_port().unwrap());
    let env = std::fs::read_to_string(edge.env_file()).unwrap();
    std::fs::write(
        edge.env_file(),
        env.replace(
            &format!("MYTUNNEL_TLS_ASK_LISTEN={ask}"),
            &format!("MYTUNNEL_TLS_ASK_LISTEN={other}"),
        ),
    )
    .unwrap();
    let previous = std::fs::read(&caddyfile).unwrap();
    let run = edge.install_with(&tls);
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert!(
        run.text.contains(&format!(
            "sets MYTUNNEL_TLS_ASK_LISTEN={other}: the Caddyfile asks serve there (--tls-ask-listen {ask} ignored)"
        )),
        "{}",
        run.text
    );
    let text = std::fs::read_to_string(&caddyfile).unwrap();
    assert!(
        text.contains(&format!("\t\task http://{other}/ask\n")),
        "{text}"
    );
    let copies = caddyfile_copies(&edge);
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert!(copies.values().any(|c| *c == previous));
    assert!(copies.values().any(|c| c == operators));

    // serve, started with the env file as the install left it, answers the ask where the
    // Caddyfile sends Caddy: yes for the host of an active lease only.
    edge.start_serve();
    edge.assert_healthy();
    let (code, lease) = edge.ctl(&["allocate", "--local-port", "3000", "--name", "portal"]);
    assert_eq!(code, Some(0), "{lease}");
    assert_eq!(
        ask_status(&text, "portal.t.test"),
        200,
        "{}",
        edge.serve.as_ref().unwrap().log_text()
    );
    assert_eq!(
        ask_status(&text, "nothing.t.test"),
        404,
        "{}",
        edge.serve.as_ref().unwrap().log_text()
    );
    edge.stop_serve();

    // A wildcard through DNS-01 on the packaged Caddy, which has no DNS module: written
    // anyway (for the Caddy the operator builds), with a warning naming the module.
    let run = edge.install_with(&["--tls-mode", "wildcard", "--dns-provider", "infomaniak"]);
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert!(
        run.text.contains("has no dns.providers.infomaniak module")
            && run
                .text
                .contains("xcaddy build --with github.com/caddy-dns/infomaniak"),
        "{}",
        run.text
    );
    let text = std::fs::read_to_string(&caddyfile).unwrap();
    assert!(
        text.contains("\t\tdns infomaniak {env.INFOMANIAK_TOKEN}\n"),
        "{text}"
    );
    assert_eq!(caddyfile_copies(&edge).len(), 3);

    // An ask address serve would refuse stops the run before anything changes.
    let env = std::fs::read_to_string(edge.env_file()).unwrap();
    std::fs::write(
        edge.env_file(),
        env.replace(
            &format!("MYTUNNEL_TLS_ASK_LISTEN={other}"),
            "MYTUNNEL_TLS_ASK_LISTEN=0.0.0.0:2020",
        ),
    )
    .unwrap();
    let before = listing(edge.destdir());
    let run = edge.install_with(&["--tls-mode", "on-demand"]);
    assert_eq!(run.code, Some(1), "{}", run.text);
    assert!(
        run.text.contains("MYTUNNEL_TLS_ASK_LISTEN in")
            && run.text.contains("is not a loopback address"),
        "{}",
        run.text
    );
    assert_eq!(listing(edge.destdir()), before);
}

/// A mytunneld from before `MYTUNNEL_TLS_ASK_LISTEN` (its `config --json` has no such
/// setting), and one that cannot answer at all: the install reads the ask address from
/// the env file's own lines, appends it when missing, and follows the file's value.
#[test]
fn on_demand_reads_the_ask_address_from_the_env_file_where_mytunneld_cannot_say() {
    let edge = Edge::new("f");
    let work = tempfile::tempdir().unwrap();
    let older = work.path().join("older-mytunneld");
    std::fs::write(
        &older,
        format!(
            "#!/bin/sh\n{BINARY} \"$@\" | python3 -c 'import json, sys; d = json.load(sys.stdin); \
             d[\"settings\"] = [s for s in d[\"settings\"] if s[\"env\"] != \"MYTUNNEL_TLS_ASK_LISTEN\"]; \
             json.dump(d, sys.stdout)'\n"
        ),
    )
    .unwrap();
    set_mode(&older, 0o755);
    let failing = work.path().join("failing-mytunneld");
    std::fs::write(&failing, "#!/bin/sh\nexit 2\n").unwrap();
    set_mode(&failing, 0o755);
    let caddyfile = edge.path("etc/caddy/Caddyfile");
    for (binary, tag) in [(&older, "older"), (&failing, "failing")] {
        let binary = binary.to_str().unwrap();
        // The older binary does not list the setting even when the file sets it.
        let out = Command::new(binary)
            .args([
                "--env-file",
                edge.env_file().to_str().unwrap(),
                "config",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("MYTUNNEL_TLS_ASK_LISTEN"),
            "{tag}"
        );
        let env = std::fs::read_to_string(edge.env_file()).unwrap();
        let without: String = env
            .lines()
            .filter(|l| !l.starts_with("MYTUNNEL_TLS_ASK_LISTEN="))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(edge.env_file(), without).unwrap();
        let run = edge.install_with(&["--binary", binary, "--tls-mode", "on-demand"]);
        assert_eq!(run.code, Some(0), "{tag}: {}", run.text);
        assert!(
            run.text
                .contains("added MYTUNNEL_TLS_ASK_LISTEN=127.0.0.1:2020 to"),
            "{tag}: {}",
            run.text
        );
        assert_eq!(
            env_lines(&edge, "MYTUNNEL_TLS_ASK_LISTEN"),
            ["MYTUNNEL_TLS_ASK_LISTEN=127.0.0.1:2020"],
            "{tag}"
        );
        let env = std::fs::read_to_string(edge.env_file()).unwrap();
        std::fs::write(
            edge.env_file(),
            env.replace("=127.0.0.1:2020", "=127.0.0.9:2029"),
        )
        .unwrap();
        let run = edge.install_with(&["--binary", binary, "--tls-mode", "on-demand"]);
        assert_eq!(run.code, Some(0), "{tag}: {}", run.text);
        assert!(
            std::fs::read_to_string(&caddyfile)
                .unwrap()
                .contains("\t\task http://127.0.0.9:2029/ask\n"),
            "{tag}: {}",
            run.text
        );
        // Read from the file's lines, the value is checked here.
        let env = std::fs::read_to_string(edge.env_file()).unwrap();
        std::fs::write(
            edge.env_file(),
            env.replace("=127.0.0.9:2029", "=192.0.2.1:2029"),
        )
        .unwrap();
        let run = edge.install_with(&["--binary", binary, "--tls-mode", "on-demand"]);
        assert_eq!(run.code, Some(1), "{tag}: {}", run.text);
        assert!(
            run.text.contains("must be a loopback IP:PORT"),
            "{tag}: {}",
            run.text
        );
    }
}

#[test]
fn a_new_on_demand_install_writes_the_ask_address_into_its_env_file() {
    let ask = format!("127.0.0.1:{}", mytunnel_test_support::free_port().unwrap());
    let mut edge = Edge::with_args(
        "d",
        &[
            "--socket-dir",
            SOCKET_DIR,
            "--route-mode",
            "routes",
            "--tls-mode",
            "on-demand",
            "--tls-issuer",
            "internal",
            "--tls-ask-listen",
            &ask,
            "--caddyfile",
            "/etc/caddy/edge.caddyfile",
        ],
    );
    assert_eq!(
        env_lines(&edge, "MYTUNNEL_TLS_ASK_LISTEN"),
        [format!("MYTUNNEL_TLS_ASK_LISTEN={ask}")]
    );
    let caddyfile = edge.path("etc/caddy/edge.caddyfile");
    assert!(!edge.path("etc/caddy/Caddyfile").exists());
    let text = std::fs::read_to_string(&caddyfile).unwrap();
    assert_eq!(
        text,
        printed_caddyfile(
            &edge,
            &[
                "--route-mode",
                "routes",
                "--tls-mode",
                "on-demand",
                "--tls-issuer",
                "internal",
                "--tls-ask-listen",
                &ask,
                "--caddyfile",
                "/etc/caddy/edge.caddyfile",
            ]
        )
    );
    assert!(text.contains("route mode routes"), "{text}");
    assert!(
        text.contains("\ttls internal {\n\t\ton_demand\n\t}\n"),
        "{text}"
    );
    assert!(caddyfile_copies(&edge).is_empty());
    edge.start_serve();
    edge.assert_healthy();
    // serve listens where the Caddyfile asks (no lease: no host gets a certificate).
    assert_eq!(
        ask_status(&text, "nothing.t.test"),
        404,
        "{}",
        edge.serve.as_ref().unwrap().log_text()
    );
}

#[test]
fn check_edge_passes_then_names_each_failed_check() {
    let mut edge = Edge::routes("b");
    // No serve, no health: the one check that needs the running service.
    let run = edge.check();
    assert_eq!(run.code, Some(1), "{}", run.text);
    assert_eq!(failed_checks(&run), ["health"], "{}", run.text);
    assert!(run.text.contains("service_unavailable"), "{}", run.text);
    edge.start_serve();
    let good = edge.check();
    assert_eq!(good.code, Some(0), "{}", good.text);
    assert!(good.text.contains("ok health"), "{}", good.text);
    // serve created the database: the service user's, 0600.
    assert_eq!(mode(&edge.db()), 0o600);
    assert!(
        good.text.lines().all(|l| !l.starts_with("fail")),
        "{}",
        good.text
    );
    assert!(good.text.contains("ok state-dir "), "{}", good.text);
    let service_user = edge.service_user();

    let env_text = std::fs::read_to_string(edge.env_file()).unwrap();
    let admin = edge.caddy.admin_address().to_string();
    let with_admin = |url: &str| {
        env_text.replace(
            &format!("MYTUNNEL_CADDY_ADMIN_URL={admin}"),
            &format!("MYTUNNEL_CADDY_ADMIN_URL={url}"),
        )
    };

    // (what breaks, expected failed checks, break, restore)
    type Step<'a> = Box<dyn Fn(&mut Edge) + 'a>;
    let cases: Vec<(&str, Vec<&str>, Step<'_>, Step<'_>)> = vec![
        (
            "binary 0775",
            vec!["binary"],
            Box::new(|e: &mut Edge| set_mode(&e.bin(), 0o775)),
            Box::new(|e: &mut Edge| set_mode(&e.bin(), 0o755)),
        ),
        (
            "env file 0644",
            vec!["env-file"],
            Box::new(|e: &mut Edge| set_mode(&e.env_file(), 0o644)),
            Box::new(|e: &mut Edge| set_mode(&e.env_file(), 0o640)),
        ),
        (
            "state dir owned by root",
            vec!["state-dir"],
            Box::new(|e: &mut Edge| {
                nix::unistd::chown(&e.state_dir(), Some(nix::unistd::Uid::from_raw(0)), None)
                    .unwrap()
            }),
            Box::new(|e: &mut Edge| {
                nix::unistd::chown(&e.state_dir(), Some(service_user.uid), None).unwrap();
            }),
        ),
        (
            "database 0644",
            vec!["database"],
            Box::new(|e: &mut Edge| set_mode(&e.db(), 0o644)),
            Box::new(|e: &mut Edge| set_mode(&e.db(), 0o600)),
        ),
        (
            "database owned by root",
            vec!["database"],
            Box::new(|e: &mut Edge| {
                nix::unistd::chown(&e.db(), Some(nix::unistd::Uid::from_raw(0)), None).unwrap()
            }),
            Box::new(|e: &mut Edge| {
                nix::unistd::chown(&e.db(), Some(service_user.uid), None).unwrap();
            }),
        ),
        (
            "admin URL 0.0.0.0",
            vec!["admin-url", "health"],
            Box::new(|e: &mut Edge| {
                std::fs::write(e.env_file(), with_admin("http://0.0.0.0:2019")).unwrap();
            }),
            Box::new(|e: &mut Edge| std::fs::write(e.env_file(), &env_text).unwrap()),
        ),
        (
            "admin URL 127.0.0.1.nip.io",
            vec!["admin-url", "health"],
            Box::new(|e: &mut Edge| {
                std::fs::write(e.env_file(), with_admin("http://127.0.0.1.nip.io:2019")).unwrap();
            }),
            Box::new(|e: &mut Edge| std::fs::write(e.env_file(), &env_text).unwrap()),
        ),
        (
            "keys dir group-writable",
            vec!["keys-dir"],
            Box::new(|e: &mut Edge| set_mode(&e.path("etc/mytunneld/keys"), 0o775)),
            Box::new(|e: &mut Edge| set_mode(&e.path("etc/mytunneld/keys"), 0o755)),
        ),
        (
            "a MaxStartups read after the drop-in, sshd's default",
            vec!["sshd"],
            Box::new(|e: &mut Edge| e.write_sshd_config("MaxStartups 10:30:100\n")),
            Box::new(|e: &mut Edge| e.write_sshd_config("")),
        ),
        (
            "a MaxStartups read after the drop-in, as many at once but fewer in all",
            vec!["sshd"],
            Box::new(|e: &mut Edge| e.write_sshd_config("MaxStartups 256:30:512\n")),
            // Larger is fine: sshd's single-number form, 1024:30:1024.
            Box::new(|e: &mut Edge| e.write_sshd_config("MaxStartups 1024\n")),
        ),
        (
            "Caddy stopped",
            vec!["health"],
            Box::new(|e: &mut Edge| e.caddy.kill()),
            Box::new(|e: &mut Edge| e.caddy.restart().unwrap()),
        ),
    ];
    for (what, expected, break_it, restore) in cases {
        break_it(&mut edge);
        let run = edge.check();
        assert_eq!(run.code, Some(1), "{what}: {}", run.text);
        for check in &expected {
            assert!(
                run.text
                    .lines()
                    .any(|l| l.starts_with(&format!("fail {check} "))),
                "{what}: no `fail {check}` line: {}",
                run.text
            );
        }
        assert!(run.text.contains("  hint: "), "{what}: {}", run.text);
        assert_eq!(failed_checks(&run), expected, "{what}: {}", run.text);
        restore(&mut edge);
        let run = edge.check();
        assert_eq!(run.code, Some(0), "after restoring {what}: {}", run.text);
    }
}

#[test]
fn upgrade_rolls_back_a_broken_binary_and_rollback_restores_the_previous_one() {
    // With --destdir the scripts leave the service alone: serve keeps running through
    // each of them (their health checks ask it), and the test restarts it afterwards,
    // as systemd would have, so that it runs the installed binary on the installed files.
    let mut edge = Edge::routes("c");
    edge.start_serve();
    let original = std::fs::read(BINARY).unwrap();
    let (code, lease) = edge.ctl(&["allocate", "--local-port", "3000", "--name", "keep"]);
    assert_eq!(code, Some(0), "{lease}");
    let work = tempfile::tempdir().unwrap();

    // Broken "new binaries": a script that exits 2, and a truncated copy.
    let failing = work.path().join("failing");
    std::fs::write(&failing, "#!/bin/sh\nexit 2\n").unwrap();
    set_mode(&failing, 0o755);
    let truncated = work.path().join("truncated");
    std::fs::write(&truncated, &original[..original.len().min(4096)]).unwrap();
    set_mode(&truncated, 0o755);
    for broken in [&failing, &truncated] {
        let run = edge.upgrade(broken);
        assert_eq!(run.code, Some(1), "{}: {}", broken.display(), run.text);
        assert!(run.text.contains("upgrade failed"), "{}", run.text);
        assert!(run.text.contains("rolled back to"), "{}", run.text);
        assert!(
            std::fs::read(edge.bin()).unwrap() == original,
            "{}: the installed binary is not the old one",
            broken.display()
        );
        assert_eq!(mode(&edge.bin()), 0o755);
        edge.restart_serve();
        edge.assert_healthy();
        assert_eq!(edge.lease_names(), ["keep"]);
    }

    // A good new binary: a working copy that differs from the installed one.
    let mut newer = original.clone();
    newer.extend_from_slice(b"\0mytunnel edge_scripts test upgrade\0");
    let good = work.path().join("mytunneld-new");
    std::fs::write(&good, &newer).unwrap();
    set_mode(&good, 0o700);
    let run = edge.upgrade(&good);
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert!(run.text.contains("upgraded"), "{}", run.text);
    assert!(std::fs::read(edge.bin()).unwrap() == newer);
    assert_eq!(mode(&edge.bin()), 0o755);
    edge.restart_serve();
    edge.assert_healthy();

    // A lease made after the upgrade goes with the rollback (the DB is restored too).
    let (code, lease) = edge.ctl(&["allocate", "--local-port", "3001", "--name", "after"]);
    assert_eq!(code, Some(0), "{lease}");
    let run = edge.rollback();
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert!(
        std::fs::read(edge.bin()).unwrap() == original,
        "rollback did not restore the previous binary"
    );
    assert_eq!(mode(&edge.bin()), 0o755);
    edge.restart_serve();
    edge.assert_healthy();
    assert_eq!(edge.lease_names(), ["keep"]);

    // Nothing left behind: no temporary binaries next to the installed one.
    let leftovers: Vec<_> = std::fs::read_dir(edge.path("usr/local/bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "mytunneld")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let check = edge.check();
    assert_eq!(check.code, Some(0), "{}", check.text);

    // An edge that is unhealthy already is not upgraded: a failed check would prove nothing.
    edge.caddy.kill();
    let run = edge.upgrade(&good);
    assert_eq!(run.code, Some(1), "{}", run.text);
    assert!(
        run.text.contains("unhealthy, not upgrading"),
        "{}",
        run.text
    );
    assert!(std::fs::read(edge.bin()).unwrap() == original);
    edge.caddy.restart().unwrap();
    edge.assert_healthy();
}

#[test]
fn check_edge_checks_the_socket_layout_in_static_mode() {
    let edge = Edge::new("s");
    let sockets_line = |run: &Run| {
        run.text
            .lines()
            .find(|l| l.contains(" sockets "))
            .unwrap_or_else(|| panic!("no sockets check: {}", run.text))
            .to_owned()
    };
    let good = edge.check();
    assert!(
        sockets_line(&good).starts_with("ok sockets "),
        "{}",
        good.text
    );
    assert!(good.text.contains("ok keys-dir "), "{}", good.text);

    let owners = edge.path("sockets/owners");
    set_mode(&owners, 0o775);
    let run = edge.check();
    assert_eq!(run.code, Some(1), "{}", run.text);
    assert!(
        sockets_line(&run).starts_with("fail sockets "),
        "{}",
        run.text
    );
    assert!(
        sockets_line(&run).contains("owners is 0775"),
        "{}",
        run.text
    );
    set_mode(&owners, 0o755);

    // An owner directory must be <user>:<proxy group> 2750: the service user stands in
    // for a tunnel user, first with its own group, then with the proxy's.
    let user = nix::unistd::User::from_name(&edge.names.user)
        .unwrap()
        .unwrap();
    let dir = owners.join(&edge.names.user);
    std::fs::create_dir(&dir).unwrap();
    nix::unistd::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
    set_mode(&dir, 0o2750);
    let run = edge.check();
    assert!(
        sockets_line(&run).starts_with("fail sockets "),
        "{}",
        run.text
    );
    let proxy = edge.names.group.clone();
    let with_proxy = edge.script(
        "check-edge.sh",
        &[
            "--destdir",
            edge.destdir().to_str().unwrap(),
            "--group",
            &edge.names.group,
            "--user",
            &edge.names.user,
            "--proxy-group",
            &proxy,
        ],
    );
    assert!(
        sockets_line(&with_proxy).starts_with("ok sockets "),
        "{}",
        with_proxy.text
    );
    assert!(
        sockets_line(&with_proxy).contains("1 owner directories"),
        "{}",
        with_proxy.text
    );
    set_mode(&dir, 0o2770);
    let run = edge.check();
    assert!(sockets_line(&run).contains("is 2770"), "{}", run.text);
}

/// The active leases `ctl list` shows: (lease id, slug, port).
fn active_leases(edge: &Edge) -> Vec<(String, String, u64)> {
    let (code, list) = edge.ctl(&["list"]);
    assert_eq!(code, Some(0), "{list}");
    let mut leases: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "active")
        .map(|l| {
            (
                l["lease_id"].as_str().unwrap().to_owned(),
                l["slug"].as_str().unwrap().to_owned(),
                l["edge_bind_port"].as_u64().unwrap(),
            )
        })
        .collect();
    leases.sort();
    leases
}

/// The line check-edge printed for `check`.
fn check_line(run: &Run, check: &str) -> String {
    run.text
        .lines()
        .find(|l| {
            l.starts_with(&format!("ok {check} ")) || l.starts_with(&format!("fail {check} "))
        })
        .unwrap_or_else(|| panic!("no {check} check: {}", run.text))
        .to_owned()
}

#[test]
fn rerunning_install_migrates_a_shared_database_directory_without_losing_a_lease() {
    let mut edge = Edge::routes("m");
    edge.start_serve();
    for (port, name) in [("3000", "kept-one"), ("3001", "kept-two")] {
        let (code, lease) = edge.ctl(&["allocate", "--local-port", port, "--name", name]);
        assert_eq!(code, Some(0), "{lease}");
    }
    let before = active_leases(&edge);
    assert_eq!(before.len(), 2, "{before:?}");
    // Killed, as by a crash: the leases are still in the write-ahead log, which must
    // survive the migration with the database.
    edge.kill_serve();

    // What an install from before the control socket looked like: the directory 2770
    // root:GROUP, the database made by a tunnel user's ctl (0660, that user's) and a
    // unix socket a tunnel user bound as the database's journal, which stops every open.
    let state_dir = edge.state_dir();
    let group = nix::unistd::Gid::from_raw(edge.gid());
    nix::unistd::chown(&state_dir, Some(nix::unistd::Uid::from_raw(0)), Some(group)).unwrap();
    set_mode(&state_dir, 0o2770);
    let tenant = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let db_files = edge.db_files();
    assert_eq!(db_files.len(), 3, "{db_files:?}");
    for file in &db_files {
        nix::unistd::chown(file, Some(tenant.uid), Some(group)).unwrap();
        set_mode(file, 0o660);
    }
    let journal = state_dir.join("leases.db-journal");
    drop(std::os::unix::net::UnixListener::bind(&journal).unwrap());
    assert!(std::fs::symlink_metadata(&journal)
        .unwrap()
        .file_type()
        .is_socket());
    let contents: Vec<Vec<u8>> = db_files.iter().map(|f| std::fs::read(f).unwrap()).collect();

    let run = edge.check();
    assert_eq!(run.code, Some(1), "{}", run.text);
    let line = check_line(&run, "state-dir");
    assert!(line.starts_with("fail state-dir "), "{}", run.text);
    assert!(
        line.contains(&format!("{} is 2770 root:", state_dir.display())),
        "{line}"
    );
    assert!(
        line.contains(&format!("{} (socket)", journal.display())),
        "{line}"
    );
    assert!(
        check_line(&run, "database").starts_with("fail database "),
        "{}",
        run.text
    );
    assert_eq!(
        failed_checks(&run),
        ["state-dir", "database", "health"],
        "{}",
        run.text
    );

    let run = edge.install();
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert!(
        run.text
            .lines()
            .any(|l| l.contains(&format!("removed {}, a socket", journal.display()))),
        "{}",
        run.text
    );
    assert!(
        std::fs::symlink_metadata(&journal).is_err(),
        "the socket is still there"
    );
    let service = edge.service_user();
    let meta = std::fs::metadata(&state_dir).unwrap();
    assert_eq!(mode(&state_dir), 0o700);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (service.uid.as_raw(), group.as_raw())
    );
    for (file, content) in db_files.iter().zip(&contents) {
        let meta = std::fs::metadata(file).unwrap();
        assert_eq!(mode(file), 0o600, "{}", file.display());
        assert_eq!(
            (meta.uid(), meta.gid()),
            (service.uid.as_raw(), group.as_raw()),
            "{}",
            file.display()
        );
        assert!(
            std::fs::read(file).unwrap() == *content,
            "{} changed",
            file.display()
        );
    }
    // Migrated once: the next run changes nothing.
    let listed = listing(edge.destdir());
    let again = edge.install();
    assert_eq!(again.code, Some(0), "{}", again.text);
    assert!(
        again.text.contains("lease database are up to date"),
        "{}",
        again.text
    );
    assert_eq!(listing(edge.destdir()), listed);

    // Everything but the running service checks out; with serve, all of it, and every
    // lease is there.
    let run = edge.check();
    assert_eq!(failed_checks(&run), ["health"], "{}", run.text);
    edge.start_serve();
    let run = edge.check();
    assert_eq!(run.code, Some(0), "{}", run.text);
    assert_eq!(active_leases(&edge), before);
}

#[test]
fn check_edge_fails_on_a_writable_database_directory_and_on_anything_else_in_it() {
    let mut edge = Edge::routes("d");
    edge.start_serve();
    let good = edge.check();
    assert_eq!(good.code, Some(0), "{}", good.text);
    let state_dir = edge.state_dir();

    for writable in [0o770, 0o2770, 0o702] {
        set_mode(&state_dir, writable);
        let run = edge.check();
        assert_eq!(run.code, Some(1), "{writable:o}: {}", run.text);
        assert_eq!(
            failed_checks(&run),
            ["state-dir"],
            "{writable:o}: {}",
            run.text
        );
        let line = check_line(&run, "state-dir");
        assert!(
            line.contains(&format!("{} is {writable:04o} ", state_dir.display())),
            "{line}"
        );
        set_mode(&state_dir, 0o700);
    }

    // Anything that is not the database's regular files, under any name.
    let notes = state_dir.join("notes.txt");
    std::fs::write(&notes, "a file of someone's\n").unwrap();
    let fifo = state_dir.join("leases.db-journal");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let link = state_dir.join("leases.db-old");
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    let run = edge.check();
    assert_eq!(run.code, Some(1), "{}", run.text);
    assert_eq!(failed_checks(&run), ["state-dir"], "{}", run.text);
    let line = check_line(&run, "state-dir");
    for (path, kind) in [(&notes, "file"), (&fifo, "fifo"), (&link, "symbolic link")] {
        assert!(
            line.contains(&format!("{} ({kind})", path.display())),
            "{line}"
        );
    }
    for path in [&fifo, &link] {
        std::fs::remove_file(path).unwrap();
    }
    let run = edge.check();
    assert_eq!(failed_checks(&run), ["state-dir"], "{}", run.text);
    assert!(
        check_line(&run, "state-dir").contains("notes.txt (file)"),
        "{}",
        run.text
    );
    // install-edge.sh leaves a regular file alone, and says so.
    let install = edge.install();
    assert_eq!(install.code, Some(0), "{}", install.text);
    assert!(
        install.text.contains(&format!(
            "{} is not a file of the lease database: left alone",
            notes.display()
        )),
        "{}",
        install.text
    );
    assert!(notes.exists());
    std::fs::remove_file(&notes).unwrap();
    let run = edge.check();
    assert_eq!(run.code, Some(0), "{}", run.text);

    // A regular rollback journal someone else wrote (SQLite would apply it when serve
    // opens the database): install-edge.sh moves it out of the directory, kept aside.
    let journal = state_dir.join("leases.db-journal");
    std::fs::write(&journal, "not a journal the service wrote").unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    nix::unistd::chown(&journal, Some(nobody.uid), None).unwrap();
    let install = edge.install();
    assert_eq!(install.code, Some(0), "{}", install.text);
    assert!(!journal.exists(), "{}", install.text);
    let quarantine = state_dir.with_extension("quarantine");
    let kept: Vec<_> = std::fs::read_dir(&quarantine).unwrap().collect();
    assert_eq!(kept.len(), 1, "{}", install.text);
    assert!(install.text.contains("moved"), "{}", install.text);
    let run = edge.check();
    assert_eq!(run.code, Some(0), "{}", run.text);
}

/// A tunnel user of `edge`'s group, named after its service user and `suffix`, with home
/// directory `home` (none made): removed when dropped.
struct Tenant(String);

impl Tenant {
    fn new(edge: &Edge, suffix: &str, home: Option<&Path>) -> Tenant {
        let name = format!("{}-{suffix}", edge.names.user);
        let mut useradd = Command::new("useradd");
        useradd.args([
            "-M",
            "-N",
            "-G",
            &edge.names.group,
            "-s",
            "/usr/sbin/nologin",
        ]);
        if let Some(home) = home {
            useradd.arg("-d").arg(home);
        }
        let status = useradd.arg(&name).status().unwrap();
        assert!(status.success(), "useradd {name}");
        Tenant(name)
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).status();
    }
}

/// Clients hold their session on a terminal (`ssh -tt`), which fails on a key
/// without `pty`. check-edge reads the keys as sshd gets them: what `mytunneld
/// authorized-keys` prints for the keys directory, else the members' ~/.ssh files.
#[test]
fn check_edge_fails_on_a_tunnel_key_without_pty() {
    let edge = Edge::new("p");
    let home = tempfile::tempdir().unwrap();
    set_mode(home.path(), 0o755);
    let tenant = Tenant::new(&edge, "p", Some(home.path()));
    let no_keys = edge.check();
    assert!(
        check_line(&no_keys, "tunnel-keys").starts_with("ok tunnel-keys 0 key(s) of 0 "),
        "{}",
        no_keys.text
    );

    // The keys directory: the installed binary adds the options.
    let public = generate_key(&home.path().join("id"), "tenant@host").unwrap();
    let keys_file = edge.path("etc/mytunneld/keys").join(&tenant.0);
    std::fs::write(&keys_file, format!("{public}\n")).unwrap();
    set_mode(&keys_file, 0o644);
    let from_dir = edge.check();
    let line = check_line(&from_dir, "tunnel-keys");
    assert!(
        line.starts_with("ok tunnel-keys 1 key(s) of 1 ") && line.contains("authorized-keys"),
        "{}",
        from_dir.text
    );

    // An edge without a keys directory (installed before route modes): ~/.ssh. A `pty`
    // inside the quoted command and a key without options are no `pty`.
    let env = std::fs::read_to_string(edge.env_file()).unwrap();
    let without_keys_dir: String = env
        .lines()
        .filter(|l| !l.starts_with("MYTUNNEL_KEYS_DIR="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(env, without_keys_dir);
    std::fs::write(edge.env_file(), without_keys_dir).unwrap();
    let ssh_dir = home.path().join(".ssh");
    std::fs::create_dir(&ssh_dir).unwrap();
    let gate = "command=\"/usr/local/bin/mytunneld gate\"";
    let good = format!("restrict,port-forwarding,pty,{gate} {public}");
    let authorized = ssh_dir.join("authorized_keys");
    std::fs::write(
        &authorized,
        format!(
            "# tenant's keys\n\n{good}\n\
             restrict,port-forwarding,command=\"/usr/local/bin/mytunneld gate,pty\" {public}\n\
             {public}\n\
             restrict,PTY,port-forwarding,{gate} {public}\n\
             restrict,port-forwarding,pty {public}\n"
        ),
    )
    .unwrap();
    let old = edge.check();
    let line = check_line(&old, "tunnel-keys");
    assert!(
        line.starts_with("fail tunnel-keys 3 key(s) "),
        "{}",
        old.text
    );
    for number in [4, 5, 7] {
        assert!(line.contains(&format!("{}:{number}", tenant.0)), "{line}");
    }
    assert!(old.text.contains("install-edge-ssh-key.sh"), "{}", old.text);
    assert_eq!(old.code, Some(1), "{}", old.text);

    std::fs::write(&authorized, format!("{good}\n{good}\n")).unwrap();
    let fixed = edge.check();
    assert!(
        check_line(&fixed, "tunnel-keys").starts_with("ok tunnel-keys 2 key(s) of 1 "),
        "{}",
        fixed.text
    );
}

#[test]
fn check_edge_reports_a_tunnel_users_sockets_outside_its_directory() {
    let edge = Edge::new("x");
    // A tunnel user of this edge's group (serve's own sockets are not reported).
    let tenant = Tenant::new(&edge, "t", None);
    let tenant = tenant.0.clone();
    let clean = edge.check();
    assert!(
        check_line(&clean, "stray-sockets").starts_with("ok stray-sockets "),
        "{}",
        clean.text
    );

    // A socket of the tenant's in /tmp, listened on, then left behind.
    let scratch = tempfile::Builder::new()
        .prefix("mtt-stray-")
        .tempdir_in("/tmp")
        .unwrap();
    let path = scratch.path().join("evil.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let uid = nix::unistd::User::from_name(&tenant).unwrap().unwrap().uid;
    nix::unistd::chown(&path, Some(uid), None).unwrap();
    let bound = edge.check();
    let line = check_line(&bound, "stray-sockets");
    assert!(line.starts_with("fail stray-sockets "), "{}", bound.text);
    assert!(
        line.contains(&format!("{tenant}:{}", path.display())),
        "{line}"
    );
    assert!(bound.text.contains("docs/operations.md"), "{}", bound.text);
    drop(listener);
    let stale = edge.check();
    assert!(
        check_line(&stale, "stray-sockets").starts_with("fail stray-sockets "),
        "{}",
        stale.text
    );
    std::fs::remove_file(&path).unwrap();
    let removed = edge.check();
    assert!(
        check_line(&removed, "stray-sockets").starts_with("ok stray-sockets "),
        "{}",
        removed.text
    );
}

/// check-edge's `tls-ask`: off without on-demand TLS; with it, serve must answer Caddy's
/// ask where the env file says and the Caddyfile must ask exactly there. Each way the two
/// drift apart (serve down, the env file moved, the setting gone while Caddy still asks)
/// fails the check, and the hint says how to mend it.
#[test]
fn check_edge_fails_when_caddy_asks_where_serve_does_not_answer() {
    let ask = format!("127.0.0.1:{}", mytunnel_test_support::free_port().unwrap());
    let mut edge = Edge::with_args(
        "t",
        &[
            "--socket-dir",
            SOCKET_DIR,
            "--tls-mode",
            "on-demand",
            "--tls-issuer",
            "internal",
            "--tls-ask-listen",
            &ask,
        ],
    );
    edge.start_serve();
    let good = edge.check();
    assert_eq!(good.code, Some(0), "{}", good.text);
    assert_eq!(
        check_line(&good, "tls-ask"),
        format!(
            "ok tls-ask serve answers Caddy's ask at http://{ask}/ask (the Caddyfile asks there)"
        )
    );

    // serve not running: nobody answers Caddy.
    edge.stop_serve();
    let down = edge.check();
    assert_eq!(failed_checks(&down), ["health", "tls-ask"], "{}", down.text);
    assert!(
        check_line(&down, "tls-ask").contains("no answer"),
        "{}",
        down.text
    );
    edge.start_serve();

    // The env file moved the ask; the Caddyfile still asks the old address.
    let env = std::fs::read_to_string(edge.env_file()).unwrap();
    let other = format!("127.0.0.1:{}", mytunnel_test_support::free_port().unwrap());
    std::fs::write(edge.env_file(), env.replace(&ask, &other)).unwrap();
    edge.restart_serve();
    let moved = edge.check();
    assert_eq!(failed_checks(&moved), ["tls-ask"], "{}", moved.text);
    assert!(
        check_line(&moved, "tls-ask").contains(&format!(
            "asks http://{ask}/ask, but serve answers at http://{other}/ask"
        )),
        "{}",
        moved.text
    );

    // No setting at all, and Caddy still asks.
    let without: String = env
        .lines()
        .filter(|l| !l.starts_with("MYTUNNEL_TLS_ASK_LISTEN="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(edge.env_file(), without).unwrap();
    edge.restart_serve();
    let unset = edge.check();
    assert_eq!(failed_checks(&unset), ["tls-ask"], "{}", unset.text);
    assert!(
        unset.text.contains("hint: set MYTUNNEL_TLS_ASK_LISTEN"),
        "{}",
        unset.text
    );

    // And without on-demand TLS (no ask line), nothing to check.
    std::fs::remove_file(edge.path("etc/caddy/Caddyfile")).unwrap();
    let off = edge.check();
    assert_eq!(off.code, Some(0), "{}", off.text);
    assert!(check_line(&off, "tls-ask").starts_with("ok tls-ask off: "));
}

/// The Debian package ships the unit `install-edge.sh --print-unit --packaged` prints
/// (one text for both), naming the package's binary; an install from the source tree
/// names its own. `mytunneld-setup` (`--packaged`) refuses the options that would install
/// another binary or elsewhere.
#[test]
fn the_package_s_unit_is_the_installer_s() {
    let print = |args: &[&str]| {
        let out = Command::new(script("install-edge.sh"))
            .arg("--print-unit")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let packaged = print(&["--packaged"]);
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/deb/mytunneld.service"),
    )
    .unwrap();
    assert_eq!(
        shipped, packaged,
        "packaging/deb/mytunneld.service is stale: scripts/install-edge.sh --print-unit --packaged > packaging/deb/mytunneld.service"
    );
    assert!(packaged.contains("\nExecStart=/usr/bin/mytunneld serve\n"));
    assert!(print(&[]).contains("\nExecStart=/usr/local/bin/mytunneld serve\n"));
    assert!(
        print(&["--packaged", "--user", "edge", "--group", "tunnels"])
            .contains("\nUser=edge\nGroup=tunnels\n")
    );

    for (args, says) in [
        (
            &["--packaged", "--destdir", "/tmp/x"][..],
            "not with --destdir",
        ),
        (
            &["--packaged", "--binary", "/tmp/mytunneld"][..],
            "not with --binary",
        ),
    ] {
        let out = Command::new(script("install-edge.sh"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// On an edge whose mytunneld is the Debian package's (`/usr/bin/mytunneld`, no
/// `/usr/local/bin/mytunneld`), apt owns the binary: `upgrade-edge.sh` and
/// `rollback-edge.sh` refuse it (exit 2, naming apt) and change nothing; `check-edge.sh`
/// checks that binary. With both, the source install's comes first, as on PATH.
#[test]
fn the_package_s_binary_is_found_and_left_to_apt() {
    let root = tempfile::tempdir().unwrap();
    let packaged = root.path().join("usr/bin/mytunneld");
    std::fs::create_dir_all(packaged.parent().unwrap()).unwrap();
    std::fs::copy(BINARY, &packaged).unwrap();
    let before = std::fs::read(&packaged).unwrap();
    for (name, args) in [
        ("upgrade-edge.sh", vec![BINARY, "--force"]),
        ("rollback-edge.sh", vec![]),
    ] {
        let out = Command::new(script(name))
            .args(&args)
            .arg("--destdir")
            .arg(root.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains("Debian package") && stderr.contains("apt-get install"),
            "{name}: {stderr}"
        );
    }
    assert_eq!(std::fs::read(&packaged).unwrap(), before);
    assert!(!root.path().join("var/backups").exists());

    let binary_check = |root: &Path| {
        let out = Command::new(script("check-edge.sh"))
            .arg("--destdir")
            .arg(root)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains(" binary "))
            .unwrap_or_default()
            .to_owned()
    };
    let line = binary_check(root.path());
    assert!(line.contains(&packaged.display().to_string()), "{line}");
    let source = root.path().join("usr/local/bin/mytunneld");
    std::fs::create_dir_all(source.parent().unwrap()).unwrap();
    std::fs::copy(BINARY, &source).unwrap();
    let line = binary_check(root.path());
    assert!(line.contains(&source.display().to_string()), "{line}");
}
