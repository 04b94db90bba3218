// Test code: a panic is a failed assertion.
//! Port ownership in `routes` mode, against a real sshd configured like the drop-in
//! `install-edge.sh` writes (`Match Group` with `AuthorizedKeysFile none` and
//! `AuthorizedKeysCommand … mytunneld authorized-keys %u`), with keys installed by
//! `install-edge-ssh-key.sh --keys-dir`, real OS users alice and bob (as in the e2e
//! suite) and leases allocated by the built `mytunneld ctl` as those users.
//!
//! sshd lets a user `ssh -R 127.0.0.1:PORT` only for the ports of their own active leases:
//! bob cannot take alice's port while her tunnel is down, nobody without a lease binds
//! anything, and alice loses her port when her lease ends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod e2e_support;

use e2e_support::{
    check, http_get, set_mode, App, Guard, SetupLock, BASE_DOMAIN, GROUP, SERVICE_USER,
};
use mytunnel_edge::testkit::{eventually, free_port, RealCaddy, ServeProcess, Sshd};
use serde_json::Value;

/// Two of the e2e suite's users (same group, same setup lock).
const USERS: [&str; 2] = ["alice", "bob"];

/// The body of `GET /` on `127.0.0.1:port`, or None.
fn get(port: u16) -> Option<String> {
    http_get(([127, 0, 0, 1], port).into(), "x").map(|(_, body)| body)
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A real sshd, a real Caddy, users alice and bob with keys in a keys directory.
struct Edge {
    // Dropped in order: serve, sshd (and its connections), Caddy, then the directories.
    _serve: ServeProcess,
    sshd: Sshd,
    caddy: RealCaddy,
    port: u16,
    dir: tempfile::TempDir,
    bin_dir: tempfile::TempDir,
}

impl Edge {
    fn new() -> Edge {
        assert!(
            nix::unistd::getuid().is_root(),
            "this test creates OS users and starts sshd: run it as root (cargo xtask e2e)"
        );
        let caddy = RealCaddy::start().unwrap();
        let dir = tempfile::Builder::new()
            .prefix("mytunnel-bind-")
            .tempdir()
            .unwrap();
        set_mode(dir.path(), 0o755);
        // sshd runs an AuthorizedKeysCommand only from a path whose every directory is
        // root's and not writable by group or others: not /tmp, and not the checkout
        // (which may itself live under /tmp), so a directory of our own under /var/lib.
        let bin_root = Path::new("/var/lib/mytunnel-tests");
        std::fs::create_dir_all(bin_root).unwrap();
        nix::unistd::chown(
            bin_root,
            Some(nix::unistd::Uid::from_raw(0)),
            Some(nix::unistd::Gid::from_raw(0)),
        )
        .unwrap();
        set_mode(bin_root, 0o755);
        let bin_dir = tempfile::Builder::new()
            .prefix("bind-isolation-")
            .tempdir_in(bin_root)
            .unwrap();
        set_mode(bin_dir.path(), 0o755);
        let bin = bin_dir.path().join("mytunneld");
        std::fs::copy(env!("CARGO_BIN_EXE_mytunneld"), &bin).unwrap();
        set_mode(&bin, 0o755);

        let keys = dir.path().join("keys");
        for user in USERS {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("mytunnel-bind-{user}"))
                .arg("-f")
                .arg(dir.path().join(format!("id_{user}")))
                .output()
                .unwrap();
            check(&out, "ssh-keygen");
        }
        {
            let _lock = SetupLock::take();
            e2e_support::ensure_group_and_service_user();
            for user in USERS {
                let out = Command::new(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("../scripts/install-edge-ssh-key.sh"),
                )
                .arg(user)
                .arg(dir.path().join(format!("id_{user}.pub")))
                .args(["--group", GROUP, "--keys-dir"])
                .arg(&keys)
                .args(["--env-file", "/nonexistent/mytunneld.env"])
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output()
                .unwrap();
                check(&out, &format!("install-edge-ssh-key.sh {user}"));
            }
        }

        // One port in the range: alice's lease gets it.
        let port = free_port().unwrap();
        let group = nix::unistd::Group::from_name(GROUP).unwrap().unwrap();
        let service = nix::unistd::User::from_name(SERVICE_USER)
            .unwrap()
            .unwrap()
            .uid;
        // The service user's own directories: the database (no one else may enter) and
        // the socket directory (serve's control socket).
        let db_dir = dir.path().join("db");
        let socket_dir = dir.path().join("s");
        for (path, mode) in [(&db_dir, 0o700), (&socket_dir, 0o755)] {
            std::fs::create_dir(path).unwrap();
            nix::unistd::chown(path, Some(service), Some(group.gid)).unwrap();
            set_mode(path, mode);
        }
        let env = dir.path().join("mytunneld.env");
        std::fs::write(
            &env,
            format!(
                "MYTUNNEL_ROUTE_MODE=routes\nMYTUNNEL_DB_PATH={db}\nMYTUNNEL_BASE_DOMAIN={BASE_DOMAIN}\n\
                 MYTUNNEL_CADDY_ADMIN_URL={admin}\nMYTUNNEL_MIN_PORT={port}\nMYTUNNEL_MAX_PORT={port}\n\
                 MYTUNNEL_KEYS_DIR={keys}\nMYTUNNEL_LEASE_TTL=10m\nMYTUNNEL_SOCKET_DIR={sockets}\n",
                db = db_dir.join("leases.db").display(),
                admin = caddy.admin_address(),
                keys = keys.display(),
                sockets = socket_dir.display(),
            ),
        )
        .unwrap();
        nix::unistd::chown(&env, None, Some(group.gid)).unwrap();
        set_mode(&env, 0o640);
        std::fs::create_dir(dir.path().join("home")).unwrap();

        // The routes-mode drop-in of install-edge.sh, with this test's binary and env file.
        let sshd = Sshd::start_with(&format!(
            "Match Group {GROUP}\n\
             \x20   AllowTcpForwarding remote\n\
             \x20   AllowStreamLocalForwarding no\n\
             \x20   AuthorizedKeysFile none\n\
             \x20   AuthorizedKeysCommand {bin} --env-file {env} authorized-keys %u\n\
             \x20   AuthorizedKeysCommandUser {SERVICE_USER}\n",
            bin = bin.display(),
            env = env.display(),
        ))
        .unwrap();
        std::fs::write(dir.path().join("known_hosts"), sshd.known_hosts_line()).unwrap();
        // serve as the service user, the only process that opens the database.
        let serve = ServeProcess::start(
            &bin,
            &env,
            Some((service.as_raw(), group.gid.as_raw())),
            &dir.path().join("serve.log"),
            &socket_dir,
        )
        .unwrap();
        Edge {
            _serve: serve,
            sshd,
            caddy,
            port,
            dir,
            bin_dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `mytunneld ctl <args>` as `user` (runuser), with the test's env file: its JSON.
    fn ctl(&self, user: &str, args: &[&str]) -> Value {
        let out = Command::new("runuser")
            .args(["-u", user, "--"])
            .arg(self.bin_dir.path().join("mytunneld"))
            .arg("--env-file")
            .arg(self.path("mytunneld.env"))
            .arg("ctl")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir("/")
            .output()
            .unwrap();
        check(&out, &format!("{user}: mytunneld ctl {args:?}"));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `authorized-keys <user>` as sshd runs it.
    fn authorized_keys(&self, user: &str) -> String {
        let out = Command::new("runuser")
            .args(["-u", SERVICE_USER, "--"])
            .arg(self.bin_dir.path().join("mytunneld"))
            .arg("--env-file")
            .arg(self.path("mytunneld.env"))
            .args(["authorized-keys", user])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir("/")
            .output()
            .unwrap();
        check(&out, &format!("authorized-keys {user}"));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `ssh -N -o ExitOnForwardFailure=yes -R <forward> user@edge` (no mux).
    fn forward(&self, user: &str, forward: &str) -> Guard {
        let mut ssh = Command::new("ssh");
        ssh.args([
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "BatchMode=yes",
        ])
        .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
        .arg("-o")
        .arg(format!("Port={}", self.sshd.port()))
        .arg("-o")
        .arg(format!(
            "IdentityFile={}",
            self.path(&format!("id_{user}")).display()
        ))
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            self.path("known_hosts").display()
        ))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-R")
        .arg(forward)
        .arg(format!("{user}@127.0.0.1"))
        .env_clear()
        .env("HOME", self.path("home"))
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(self.path(&format!("ssh-{user}.stderr"))).unwrap());
        Guard(ssh.spawn().unwrap())
    }

    /// Asserts that `user`'s `-R forward` is refused by sshd: ssh exits non-zero saying
    /// the forward failed, and sshd logs the denial.
    fn assert_refused(&self, user: &str, forward: &str, port: u16) {
        let denial =
            format!("to remote forward to host 127.0.0.1 port {port}, but the request was denied");
        let denials_before = self.sshd.log().matches(&denial).count();
        let mut ssh = self.forward(user, forward);
        let mut status = None;
        eventually(Duration::from_secs(20), || {
            status = ssh.0.try_wait().unwrap();
            status.is_some()
        });
        let stderr = std::fs::read_to_string(self.path(&format!("ssh-{user}.stderr"))).unwrap();
        let status = status.unwrap_or_else(|| {
            panic!("{user} -R {forward}: ssh still runs (the forward was accepted); {stderr}")
        });
        assert!(!status.success(), "{user} -R {forward}: {status}");
        assert!(
            stderr.contains("remote port forwarding failed"),
            "{user} -R {forward}: {stderr}\nsshd log:\n{}",
            self.sshd.log()
        );
        assert!(
            eventually(Duration::from_secs(5), || {
                self.sshd.log().matches(&denial).count() > denials_before
            }),
            "no denial in sshd's log:\n{}",
            self.sshd.log()
        );
    }
}

#[test]
fn only_the_owner_of_an_active_lease_binds_its_port() {
    let edge = Edge::new();
    let alice_app = App::start("alice's app");
    let bob_app = App::start("bob's app");
    let p = edge.port;

    // Before any lease: nobody may listen anywhere.
    assert!(
        edge.authorized_keys("alice")
            .starts_with("restrict,port-forwarding,permitlisten=\"NONE:1\",command=\"/usr/local/bin/mytunneld gate\" ssh-ed25519 "),
        "{}",
        edge.authorized_keys("alice")
    );

    let lease = edge.ctl(
        "alice",
        &["allocate", "--local-port", &alice_app.port().to_string()],
    );
    assert_eq!(lease["edge_bind_port"], p, "{lease}");
    assert_eq!(lease["owner"], "alice", "{lease}");
    let id = lease["lease_id"].as_str().unwrap().to_owned();
    let keys = edge.authorized_keys("alice");
    assert!(
        keys.contains(&format!("permitlisten=\"127.0.0.1:{p}\",command=")),
        "{keys}"
    );

    // Alice's tunnel is down: bob cannot take her port, and no other port either.
    edge.assert_refused(
        "bob",
        &format!("127.0.0.1:{p}:127.0.0.1:{}", bob_app.port()),
        p,
    );
    assert!(!listening(p), "something listens on alice's port {p}");
    let other = free_port().unwrap();
    edge.assert_refused(
        "bob",
        &format!("127.0.0.1:{other}:127.0.0.1:{}", bob_app.port()),
        other,
    );
    assert!(!listening(other));
    // Nor a port sshd would choose.
    edge.assert_refused(
        "bob",
        &format!("127.0.0.1:0:127.0.0.1:{}", bob_app.port()),
        0,
    );
    // A request for alice's host meets no app at all (Caddy answers 502), never bob's.
    let host = lease["host"].as_str().unwrap().to_owned();
    let through_caddy = || http_get(edge.caddy.http_address(), &host);
    let (status, body) = through_caddy().unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(!body.contains("bob's app"), "{body}");

    // Alice binds her own port, and a request to it reaches her app.
    let tunnel = edge.forward(
        "alice",
        &format!("127.0.0.1:{p}:127.0.0.1:{}", alice_app.port()),
    );
    assert!(
        eventually(Duration::from_secs(20), || get(p).as_deref()
            == Some("alice's app")),
        "alice's forward never served her app; ssh stderr: {}\nsshd log:\n{}",
        std::fs::read_to_string(edge.path("ssh-alice.stderr")).unwrap_or_default(),
        edge.sshd.log()
    );
    // And her host, through Caddy, reaches her app.
    assert!(
        eventually(Duration::from_secs(20), || through_caddy().is_some_and(
            |(status, body)| status == 200 && body == "alice's app"
        )),
        "{:?}",
        through_caddy()
    );
    // Only her lease's port: another one is refused.
    drop(tunnel);
    assert!(
        eventually(Duration::from_secs(20), || !listening(p)),
        "sshd kept alice's forward after her ssh died"
    );
    edge.assert_refused(
        "alice",
        &format!("127.0.0.1:{other}:127.0.0.1:{}", alice_app.port()),
        other,
    );

    // Her lease ends: the port is no longer hers either.
    let released = edge.ctl("alice", &["release", "--lease", &id]);
    assert_eq!(released["state"], "released", "{released}");
    assert!(edge
        .authorized_keys("alice")
        .contains("permitlisten=\"NONE:1\""));
    edge.assert_refused(
        "alice",
        &format!("127.0.0.1:{p}:127.0.0.1:{}", alice_app.port()),
        p,
    );
    assert!(!listening(p));
}
