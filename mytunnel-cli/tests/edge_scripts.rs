// Test code: a panic is a failed assertion.
//! The edge scripts (`scripts/install-edge.sh`, `check-edge.sh`, `upgrade-edge.sh`,
//! `rollback-edge.sh`) run for real, as root, inside a temporary root (`--destdir`), with
//! the built `mytunneld` and a real Caddy, so that `mytunneld ctl health` can be healthy.
//! Each test uses its own group and service user, deleted when it ends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mytunnel_edge::testkit::RealCaddy;
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

/// A temporary root with an installed edge and its Caddy (stopped by pid when dropped).
#[derive(Debug)]
struct Edge {
    caddy: RealCaddy,
    root: tempfile::TempDir,
    names: Names,
    /// Extra arguments of every install (e.g. `--route-mode routes`).
    install_args: Vec<String>,
}

/// The socket directory of the tests' static installs, inside the temporary root: the
/// default (/var/lib/mytunnel-sockets) would be too long for a unix socket path there.
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

    fn with_args(tag: &str, install_args: &[&str]) -> Edge {
        let names = Names::new(tag);
        let caddy = RealCaddy::start().unwrap();
        let root = tempfile::tempdir().unwrap();
        let edge = Edge {
            caddy,
            root,
            names,
            install_args: install_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        let run = edge.install();
        assert_eq!(run.code, Some(0), "install failed: {}", run.text);
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
            ],
        )
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

    /// `mytunneld ctl <args>` with the installed binary and env file.
    fn ctl(&self, args: &[&str]) -> (Option<i32>, Value) {
        let output = Command::new(self.bin())
            .arg("--env-file")
            .arg(self.env_file())
            .arg("ctl")
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {stdout:?}, stderr {:?}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code(), value)
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
    let edge = Edge::new("a");
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
        ("var/lib/mytunneld", 0o2770, gid),
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
    // The socket directory and its host links belong to the service user.
    let service_uid = nix::unistd::User::from_name(&edge.names.user)
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    for relative in ["sockets", "sockets/hosts"] {
        let path = edge.path(relative);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(mode(&path), 0o755, "{relative}: mode {:o}", mode(&path));
        assert_eq!((meta.uid(), meta.gid()), (service_uid, gid), "{relative}");
    }
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
        "CapabilityBoundingSet=",
        "UMask=0007",
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

    assert_eq!(
        dropin_settings(&edge),
        [
            "AllowTcpForwarding remote",
            "PermitListen none",
            "AllowStreamLocalForwarding remote",
            "StreamLocalBindMask 0117",
            "StreamLocalBindUnlink no",
            "AuthorizedKeysFile none",
            "AuthorizedKeysCommand /usr/local/bin/mytunneld authorized-keys %u",
            &format!("AuthorizedKeysCommandUser {}", edge.names.user),
        ]
    );
    assert_sshd_applies_dropin(&edge);
    assert_printed_dropin_is_installed(&edge, "static");

    // The installed binary works in the temporary root (health in static mode needs
    // `mytunneld serve`, which this test does not start).
    let (code, list) = edge.ctl(&["list"]);
    assert_eq!((code, list), (Some(0), serde_json::json!([])));
}

/// The settings of the sshd drop-in's `Match Group <group>` block (comments left out).
fn dropin_settings(edge: &Edge) -> Vec<String> {
    let text = std::fs::read_to_string(edge.path("etc/ssh/sshd_config.d/mytunnel.conf")).unwrap();
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    assert_eq!(
        lines.next(),
        Some(format!("Match Group {}", edge.names.group).as_str()),
        "{text}"
    );
    lines.map(str::to_owned).collect()
}

/// `install-edge.sh --print-sshd-dropin` (what the e2e suite and the bench run sshd with)
/// prints exactly the drop-in the install wrote, and writes nothing.
fn assert_printed_dropin_is_installed(edge: &Edge, route_mode: &str) {
    let before = listing(edge.destdir());
    let printed = edge.script(
        "install-edge.sh",
        &[
            "--print-sshd-dropin",
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

/// Real sshd accepts the drop-in (`sshd -t`), included the way Debian's sshd_config
/// includes sshd_config.d, and applies every setting of its Match block to a member of
/// the tunnel group (`sshd -T -C`), and none of them to others.
fn assert_sshd_applies_dropin(edge: &Edge) {
    let work = tempfile::tempdir().unwrap();
    let host_key = work.path().join("host_key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key)
        .output()
        .unwrap();
    assert!(keygen.status.success());
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
    let sshd = mytunnel_edge::testkit::sshd_binary().unwrap();
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
fn routes_mode_install_has_no_socket_directory_and_a_tcp_dropin() {
    let edge = Edge::with_args("r", &["--route-mode", "routes"]);
    let env = std::fs::read_to_string(edge.env_file()).unwrap();
    assert!(
        env.lines().any(|l| l == "MYTUNNEL_ROUTE_MODE=routes"),
        "{env}"
    );
    assert!(!env.contains("MYTUNNEL_SOCKET_DIR"), "{env}");
    assert!(!edge.path("var/lib/mytunnel-sockets").exists());
    let unit = std::fs::read_to_string(edge.path("etc/systemd/system/mytunneld.service")).unwrap();
    assert_eq!(unit.matches("ReadWritePaths=").count(), 1, "{unit}");
    assert_eq!(
        dropin_settings(&edge),
        [
            "AllowTcpForwarding remote",
            "AllowStreamLocalForwarding no",
            "AuthorizedKeysFile none",
            "AuthorizedKeysCommand /usr/local/bin/mytunneld authorized-keys %u",
            &format!("AuthorizedKeysCommandUser {}", edge.names.user),
        ]
    );
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
    edge.assert_healthy();
    let check = edge.check();
    assert_eq!(check.code, Some(0), "{}", check.text);
    assert!(!check.text.contains(" sockets "), "{}", check.text);
}

#[test]
fn an_install_from_before_route_modes_stays_routes_without_a_dropin_until_asked() {
    let edge = Edge::with_args("o", &["--route-mode", "routes"]);
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
        // Inside the temporary root the default socket directory is too long.
        (vec![], "longer than 32 bytes"),
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
fn check_edge_passes_then_names_each_failed_check() {
    let mut edge = Edge::with_args("b", &["--route-mode", "routes"]);
    let good = edge.check();
    assert_eq!(good.code, Some(0), "{}", good.text);
    assert!(good.text.contains("ok health"), "{}", good.text);
    // The first health check created the database (0660 in the setgid directory).
    assert_eq!(mode(&edge.db()), 0o660);
    let good = edge.check();
    assert_eq!(good.code, Some(0), "{}", good.text);
    assert!(
        good.text.lines().all(|l| !l.starts_with("fail")),
        "{}",
        good.text
    );

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
            "state dir without setgid",
            vec!["state-dir"],
            Box::new(|e: &mut Edge| set_mode(&e.path("var/lib/mytunneld"), 0o770)),
            Box::new(|e: &mut Edge| set_mode(&e.path("var/lib/mytunneld"), 0o2770)),
        ),
        (
            "database 0644",
            vec!["database"],
            Box::new(|e: &mut Edge| set_mode(&e.db(), 0o644)),
            // The check's own `ctl health` may have opened the 0644 database meanwhile,
            // and SQLite gives its -wal/-shm files the database's mode: restore all three.
            Box::new(|e: &mut Edge| {
                set_mode(&e.db(), 0o660);
                for suffix in ["-wal", "-shm"] {
                    let side = std::path::PathBuf::from(format!("{}{suffix}", e.db().display()));
                    if side.exists() {
                        set_mode(&side, 0o660);
                    }
                }
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
    let mut edge = Edge::with_args("c", &["--route-mode", "routes"]);
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
