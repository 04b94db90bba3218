// Test code: a panic is a failed assertion.
//! One bind shape, checked in `routes` mode against a real sshd configured with exactly the
//! drop-in `install-edge.sh` writes (its `Match Group` block, `AuthorizedKeysCommand …
//! mytunneld authorized-keys %u` included), keys and owner directories made by
//! `install-edge-ssh-key.sh --keys-dir --socket-dir`, real OS users alice and bob (as in
//! the e2e suite) and leases allocated by the built `mytunneld ctl` as those users.
//!
//! Every lease binds a unix socket in its owner's directory and its Caddy route dials
//! that socket; no tunnel user listens on any TCP port, with or without a lease (a TCP
//! listen permission is read once, at login, so it could outlive the lease that granted
//! it); nobody binds another user's socket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod e2e_support;

use e2e_support::{check, http_get, set_mode, App, SetupLock, BASE_DOMAIN, GROUP, SERVICE_USER};
use mytunnel_test_support::{
    copy_executable, eventually, free_port, generate_key, mytunneld_command,
    production_sshd_dropin, Guard, RealCaddy, ServeProcess, Sshd,
};
use serde_json::Value;

/// Two of the e2e suite's users (same group, same setup lock).
const USERS: [&str; 2] = ["alice", "bob"];

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A real sshd, a real Caddy, users alice and bob with keys in a keys directory.
struct Edge {
    // Dropped in order: serve, sshd (and its connections), Caddy, then the directories.
    _serve: ServeProcess,
    sshd: Sshd,
    caddy: RealCaddy,
    /// The edge's port range (one port), left from before sockets: nobody may bind it.
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
        copy_executable(Path::new(env!("CARGO_BIN_EXE_mytunneld")), &bin).unwrap();

        let group = nix::unistd::Group::from_name(GROUP);
        let keys = dir.path().join("keys");
        for user in USERS {
            let key = dir.path().join(format!("id_{user}"));
            generate_key(&key, &format!("mytunnel-bind-{user}")).unwrap();
        }
        let db_dir = dir.path().join("db");
        let socket_dir = dir.path().join("s");
        {
            let _lock = SetupLock::take();
            e2e_support::ensure_group_and_service_user();
            let group = group.unwrap().unwrap();
            let service = nix::unistd::User::from_name(SERVICE_USER)
                .unwrap()
                .unwrap()
                .uid;
            // As install-edge.sh makes them: the database directory (the service user's
            // alone), the socket directory (serve's control socket, the host links) and
            // owners/ (root's; the key script makes each user's directory in it).
            for (path, mode) in [(&db_dir, 0o700), (&socket_dir, 0o755)] {
                std::fs::create_dir(path).unwrap();
                nix::unistd::chown(path, Some(service), Some(group.gid)).unwrap();
                set_mode(path, mode);
            }
            std::fs::create_dir(socket_dir.join("owners")).unwrap();
            set_mode(&socket_dir.join("owners"), 0o755);
            for user in USERS {
                let out = Command::new(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("../scripts/install-edge-ssh-key.sh"),
                )
                .arg(user)
                .arg(dir.path().join(format!("id_{user}.pub")))
                .args(["--group", GROUP, "--keys-dir"])
                .arg(&keys)
                .arg("--socket-dir")
                .arg(&socket_dir)
                .args(["--env-file", "/nonexistent/mytunneld.env"])
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output()
                .unwrap();
                check(&out, &format!("install-edge-ssh-key.sh {user}"));
            }
        }

        let group = nix::unistd::Group::from_name(GROUP).unwrap().unwrap();
        let service = nix::unistd::User::from_name(SERVICE_USER)
            .unwrap()
            .unwrap()
            .uid;
        // A port range, as an edge from before may still name: no lease may bind it.
        let port = free_port().unwrap();
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

        // The routes-mode drop-in of install-edge.sh (MaxStartups, then its Match block), with
        // this test's binary and env file.
        let sshd = Sshd::start_with(&format!(
            "{block}\
             \x20   AuthorizedKeysFile none\n\
             \x20   AuthorizedKeysCommand {bin} --env-file {env} authorized-keys %u\n\
             \x20   AuthorizedKeysCommandUser {SERVICE_USER}\n",
            block = production_sshd_dropin("routes", GROUP).unwrap(),
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

    fn range_port(&self) -> u16 {
        self.port
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `mytunneld ctl <args>` as `user` (runuser), with the test's env file: its JSON.
    fn ctl(&self, user: &str, args: &[&str]) -> Value {
        let bin = self.bin_dir.path().join("mytunneld");
        let out = mytunneld_command(&bin, &self.path("mytunneld.env"), Some(user), "ctl")
            .args(args)
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
        .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"]);
        let key = self.path(&format!("id_{user}"));
        for option in self.sshd.client_options(&key, &self.path("known_hosts")) {
            ssh.arg("-o").arg(option);
        }
        ssh.arg("-R")
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
    /// the forward failed, and sshd logs `denial`.
    fn assert_refused(&self, user: &str, forward: &str, denial: &str) {
        let denials_before = self.sshd.log().matches(denial).count();
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
                self.sshd.log().matches(denial).count() > denials_before
            }),
            "no denial in sshd's log:\n{}",
            self.sshd.log()
        );
    }
}

/// sshd's log line for a TCP listen it refused.
fn tcp_denial(port: u16) -> String {
    format!("to remote forward to host 127.0.0.1 port {port}, but the request was denied")
}

/// sshd's log line for a socket it could not bind (the file permissions refused it).
const SOCKET_DENIAL: &str = "cannot bind to path";

#[test]
fn every_lease_binds_a_socket_of_its_owner_and_no_one_listens_on_tcp() {
    let edge = Edge::new();
    let alice_app = App::start("alice's app");
    let bob_app = App::start("bob's app");

    // Every key, with or without a lease: no TCP listen anywhere.
    // The forced gate is the binary sshd ran, with the env file it was given.
    let no_listen = format!(
        "restrict,port-forwarding,pty,permitlisten=\"NONE:1\",command=\"{} --env-file {} gate\" ssh-ed25519 ",
        edge.bin_dir.path().join("mytunneld").display(),
        edge.path("mytunneld.env").display()
    );
    assert!(
        edge.authorized_keys("alice").starts_with(&no_listen),
        "{}",
        edge.authorized_keys("alice")
    );

    let lease = edge.ctl(
        "alice",
        &["allocate", "--local-port", &alice_app.port().to_string()],
    );
    assert_eq!(lease["owner"], "alice", "{lease}");
    assert_eq!(lease["edge_bind_port"], 0, "{lease}");
    let id = lease["lease_id"].as_str().unwrap().to_owned();
    let socket = lease["edge_bind_target"].as_str().unwrap().to_owned();
    assert_eq!(
        socket,
        format!("{}/s/owners/alice/{id}.sock", edge.dir.path().display()),
        "{lease}"
    );
    assert!(edge.authorized_keys("alice").starts_with(&no_listen));
    // The route dials the socket.
    let routes = mytunnel_test_support::admin_get(edge.caddy.admin_socket(), "/config/").unwrap();
    assert!(routes.contains(&format!("unix/{socket}")), "{routes}");

    // Alice's tunnel is down: bob cannot bind her socket.
    edge.assert_refused(
        "bob",
        &format!("{socket}:127.0.0.1:{}", bob_app.port()),
        SOCKET_DENIAL,
    );
    // Nor any TCP port: the range's, one of sshd's choice, or another.
    for port in [edge.range_port(), 0, free_port().unwrap()] {
        edge.assert_refused(
            "bob",
            &format!("127.0.0.1:{port}:127.0.0.1:{}", bob_app.port()),
            &tcp_denial(port),
        );
        assert!(port == 0 || !listening(port));
    }
    // A request for alice's host meets no app at all (Caddy answers 502), never bob's.
    let host = lease["host"].as_str().unwrap().to_owned();
    let through_caddy = || http_get(edge.caddy.http_address(), &host);
    let (status, body) = through_caddy().unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(!body.contains("bob's app"), "{body}");

    // Alice binds her socket, and her host, through Caddy, reaches her app.
    let tunnel = edge.forward("alice", &format!("{socket}:127.0.0.1:{}", alice_app.port()));
    assert!(
        eventually(Duration::from_secs(20), || through_caddy().is_some_and(
            |(status, body)| status == 200 && body == "alice's app"
        )),
        "{:?}; ssh stderr: {}\nsshd log:\n{}",
        through_caddy(),
        std::fs::read_to_string(edge.path("ssh-alice.stderr")).unwrap_or_default(),
        edge.sshd.log()
    );
    drop(tunnel);
    // With a lease, alice listens on no TCP port either.
    let port = edge.range_port();
    edge.assert_refused(
        "alice",
        &format!("127.0.0.1:{port}:127.0.0.1:{}", alice_app.port()),
        &tcp_denial(port),
    );
    assert!(!listening(port));

    // Her lease ends: its route goes.
    let released = edge.ctl("alice", &["release", "--lease", &id]);
    assert_eq!(released["state"], "released", "{released}");
    assert!(
        eventually(Duration::from_secs(10), || through_caddy()
            .is_some_and(|(status, _)| status != 200)),
        "{:?}",
        through_caddy()
    );
}
