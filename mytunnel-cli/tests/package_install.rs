//! The Debian packages installed for real on this machine, as an operator installs them
//! (run by `cargo xtask package --test`, and by `cargo xtask ci` after the tests; root;
//! it changes the system, so it is a program, not a test run beside others):
//!
//! 1. `apt-get install ./mytunnel_….deb ./mytunneld_….deb`: both binaries run, the unit
//!    verifies (`systemd-analyze verify`), man pages and completions are in place.
//! 2. `mytunneld-setup --base-domain … --tls-mode on-demand`: the edge is made from the
//!    package's files (no unit of its own, the drop-in names `/usr/bin/mytunneld`).
//! 3. Caddy, serve and sshd start as their units start them (this machine has no systemd
//!    as pid 1): Debian's Caddy as user `caddy` on the Caddyfile setup wrote, serve as the
//!    package unit's user with `CAP_KILL`, the machine's own sshd with its drop-ins on a
//!    free port. Caddy's internal CA stands in for Let's Encrypt (`--tls-issuer internal`).
//! 4. `mytunneld-add-key` enrolls a tunnel user; the packaged `mytunnel http` publishes an
//!    app; curl, trusting only Caddy's CA, fetches it over HTTPS with a certificate for
//!    exactly its host; a host without a tunnel gets no certificate.
//! 5. Upgrade to a higher version of the package: the lease and the tunnel survive the
//!    restart onto the new binary.
//! 6. `apt-get remove`: the binary goes, the lease database stays; reinstalled, serve
//!    lists the lease again. `apt-get purge`: the sshd drop-in goes, the database stays.
//!
//! The packages come from `MYTUNNEL_DEB_CLIENT`, `MYTUNNEL_DEB_EDGE` and
//! `MYTUNNEL_DEB_EDGE_UPGRADE`. It refuses to run on a machine that already has an edge,
//! and puts the machine back as it found it (packages purged, edge state, user and the
//! Caddyfile restored) when it ends, also when a check fails.

// Test code: a panic is a failed check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mytunnel_test_support::{
    admin_get, client_command, eventually, free_port, generate_key, kill_all, Below,
    LoopbackServer, ServeProcess, Sshd,
};

const BASE_DOMAIN: &str = "tunnel.example.com";
const TUNNEL_USER: &str = "pkgtester";
const ENV_FILE: &str = "/etc/mytunneld/mytunneld.env";
const SOCKET_DIR: &str = "/var/lib/mytunnel-sockets";
const PACKAGED_UNIT: &str = "/lib/systemd/system/mytunneld.service";
const DROPIN: &str = "/etc/ssh/sshd_config.d/mytunnel.conf";
const CADDYFILE: &str = "/etc/caddy/Caddyfile";
const APP_BODY: &str = "hello from the packaged edge";
/// Where the edge keeps what the packages do not own, all of it removed at the end.
const EDGE_STATE: [&str; 3] = ["/etc/mytunneld", "/var/lib/mytunneld", SOCKET_DIR];

fn main() -> ExitCode {
    let started = Instant::now();
    let (Some(client_deb), Some(edge_deb), Some(upgrade_deb)) = (
        std::env::var_os("MYTUNNEL_DEB_CLIENT"),
        std::env::var_os("MYTUNNEL_DEB_EDGE"),
        std::env::var_os("MYTUNNEL_DEB_EDGE_UPGRADE"),
    ) else {
        eprintln!(
            "package_install: MYTUNNEL_DEB_CLIENT, MYTUNNEL_DEB_EDGE and MYTUNNEL_DEB_EDGE_UPGRADE \
             name the packages; run it with `cargo xtask package --test`"
        );
        return ExitCode::from(2);
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("package_install: needs root (it installs packages)");
        return ExitCode::from(2);
    }
    let debs = Debs {
        client: PathBuf::from(client_deb),
        edge: PathBuf::from(edge_deb),
        upgrade: PathBuf::from(upgrade_deb),
    };
    let machine = match Machine::take() {
        Ok(machine) => machine,
        Err(e) => {
            eprintln!("package_install: {e}");
            return ExitCode::from(2);
        }
    };
    let checks = run(&debs, &machine);
    drop(machine);
    println!(
        "package_install: {checks} checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

struct Debs {
    client: PathBuf,
    edge: PathBuf,
    upgrade: PathBuf,
}

/// The checks, in order; returns how many passed (a failure panics).
fn run(debs: &Debs, machine: &Machine) -> usize {
    let mut step = Steps::default();
    let work = tempfile::tempdir().unwrap();

    // 1. Install both packages as an operator does.
    let install = apt(&["install", "-y"], &[&debs.client, &debs.edge]);
    assert!(
        install.contains("mytunneld-setup --base-domain"),
        "the install does not say how to set the edge up:\n{install}"
    );
    let version = dpkg_version("mytunneld");
    assert_eq!(dpkg_version("mytunnel"), version);
    let edge_version = output_text(&run_ok(Command::new("/usr/bin/mytunneld").arg("--version")));
    let client_version = output_text(&run_ok(Command::new("/usr/bin/mytunnel").arg("--version")));
    assert!(edge_version.starts_with("mytunneld "), "{edge_version}");
    assert!(client_version.starts_with("mytunnel "), "{client_version}");
    run_ok(Command::new("systemd-analyze").args(["verify", PACKAGED_UNIT]));
    for file in [
        "/usr/share/man/man1/mytunneld.1.gz",
        "/usr/share/man/man1/mytunneld-serve.1.gz",
        "/usr/share/man/man1/mytunnel.1.gz",
        "/usr/share/bash-completion/completions/mytunneld",
        "/usr/share/bash-completion/completions/mytunnel",
        "/usr/share/zsh/vendor-completions/_mytunnel",
        "/usr/share/fish/vendor_completions.d/mytunneld.fish",
        "/usr/share/doc/mytunneld/edge-setup.md",
        "/usr/sbin/mytunneld-setup",
        "/usr/sbin/mytunneld-add-key",
        "/usr/sbin/mytunneld-check",
        "/usr/share/mytunneld/scripts/install-edge.sh",
    ] {
        assert!(Path::new(file).exists(), "the packages installed no {file}");
    }
    step.ok(&format!(
        "install: {version} of mytunneld and mytunnel ({} and {} KiB); `{edge_version}`, \
         `{client_version}`; systemd-analyze verify {PACKAGED_UNIT}",
        size_kib(&debs.edge),
        size_kib(&debs.client)
    ));

    // 2. Set the edge up from the package's files, in on-demand mode.
    let admin = loopback(free_port().unwrap());
    let ask = loopback(free_port().unwrap());
    let http_port = free_port().unwrap();
    let https_port = free_port().unwrap();
    let setup = output_text(&run_ok(
        Command::new("mytunneld-setup")
            .args(["--base-domain", BASE_DOMAIN, "--tls-mode", "on-demand"])
            .args(["--tls-issuer", "internal"])
            .arg("--caddy-admin-url")
            .arg(format!("http://{admin}"))
            .arg("--tls-ask-listen")
            .arg(ask.to_string())
            .arg("--caddy-http-port")
            .arg(http_port.to_string())
            .arg("--caddy-https-port")
            .arg(https_port.to_string()),
    ));
    assert!(
        setup.contains(&format!("unit: the package's {PACKAGED_UNIT}")),
        "{setup}"
    );
    assert!(!Path::new("/etc/systemd/system/mytunneld.service").exists());
    let dropin = std::fs::read_to_string(DROPIN).unwrap();
    assert!(
        dropin.contains("AuthorizedKeysCommand /usr/bin/mytunneld authorized-keys %u"),
        "{dropin}"
    );
    let env = std::fs::read_to_string(ENV_FILE).unwrap();
    assert!(
        env.contains(&format!("MYTUNNEL_TLS_ASK_LISTEN={ask}\n")),
        "{env}"
    );
    run_ok(Command::new("/usr/sbin/sshd").arg("-t"));
    step.ok("setup: mytunneld-setup --tls-mode on-demand wrote the env file, the sshd drop-in (sshd -t passes) and the Caddyfile, and kept the package's unit");

    // 3. Start Caddy, serve and sshd as their units do.
    let mut caddy = start_caddy(work.path(), admin);
    let unit = std::fs::read_to_string(PACKAGED_UNIT).unwrap();
    assert_eq!(unit_value(&unit, "ExecStart"), "/usr/bin/mytunneld serve");
    let service = (
        user_ids(unit_value(&unit, "User")).0,
        group_id(unit_value(&unit, "Group")),
    );
    let serve_log = work.path().join("serve.log");
    let start_serve = || {
        ServeProcess::start(
            Path::new("/usr/bin/mytunneld"),
            Path::new(ENV_FILE),
            Some(service),
            &serve_log,
            Path::new(SOCKET_DIR),
        )
        .unwrap()
    };
    let mut serve = Some(start_serve());
    let sshd = Sshd::start_system().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let _ = Command::new("/usr/bin/mytunneld")
                .args(["ctl", "reconcile"])
                .output();
            admin_get(admin, "/config/apps/http/servers")
                .is_ok_and(|servers| servers.contains("mytunnel-static"))
        }),
        "serve never added its route to Caddy: {}",
        std::fs::read_to_string(&serve_log).unwrap_or_default()
    );
    step.ok(&format!(
        "edge up: Caddy (user caddy, pid {}), serve ({}, pid {}), sshd on port {}",
        caddy.id(),
        unit_value(&unit, "User"),
        serve.as_ref().unwrap().pid(),
        sshd.port()
    ));

    // 4. A tunnel user, a tunnel, HTTPS checked against the local CA.
    let key = work.path().join("id_pkgtester");
    generate_key(&key, "pkgtester@laptop").unwrap();
    run_ok(
        Command::new("mytunneld-add-key")
            .arg(TUNNEL_USER)
            .arg(key.with_extension("pub")),
    );
    machine.note_user_created();
    let groups = output_text(&run_ok(Command::new("id").args(["-nG", TUNNEL_USER])));
    assert!(
        groups.split_whitespace().any(|g| g == "mytunnel"),
        "{groups}"
    );
    let app = LoopbackServer::start(|stream, _stop| {
        mytunnel_test_support::answer_http(stream, |_| (200, APP_BODY.to_owned()));
    })
    .unwrap();
    let known_hosts = work.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line()).unwrap();
    let home = work.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let mut client = Tunnel::open(
        client_command(
            Path::new("/usr/bin/mytunnel"),
            &[
                "http",
                &app.addr().port().to_string(),
                "--edge",
                &format!("{TUNNEL_USER}@127.0.0.1"),
            ],
            &sshd.client_options(&key, &known_hosts),
            &home,
            work.path(),
        ),
        &work.path().join("client.stderr"),
    );
    let host = client.host.clone();
    let ca = caddy_ca_root();
    let visit = curl_https(&host, https_port, &ca);
    assert_eq!(
        visit.body, APP_BODY,
        "curl https://{host}: {}",
        visit.verbose
    );
    assert!(
        visit
            .verbose
            .contains(&format!("matched cert's \"{host}\"")),
        "not a certificate for {host} itself: {}",
        visit.verbose
    );
    let nobody = format!("nobody-here.{BASE_DOMAIN}");
    let refused = curl_https(&nobody, https_port, &ca);
    assert_eq!(refused.exit, Some(35), "{}", refused.verbose);
    step.ok(&format!(
        "https://{host}:{https_port}/ answered {APP_BODY:?} with a certificate for {host} from Caddy's CA; {nobody} got no certificate (curl exit 35)"
    ));

    // 5. Upgrade while the edge runs; the service restarts onto the new binary (what the
    // package's postinst has systemd do: try-restart).
    apt(&["install", "-y"], &[&debs.upgrade]);
    let upgraded = dpkg_version("mytunneld");
    assert_ne!(upgraded, version);
    drop(serve.take());
    serve = Some(start_serve());
    let listed = ctl_list_as_tunnel_user();
    assert!(
        listed.contains(&host),
        "the lease is gone after the upgrade: {listed}"
    );
    let visit = curl_https(&host, https_port, &ca);
    assert_eq!(visit.body, APP_BODY, "after the upgrade: {}", visit.verbose);
    step.ok(&format!(
        "upgrade {version} -> {upgraded}: serve restarted on the new binary, the lease kept, https://{host} still serves"
    ));

    // The client releases its lease on Ctrl-C.
    client.interrupt();

    // 6. Remove, reinstall, purge: the lease database stays.
    drop(serve.take());
    apt(&["remove", "-y"], &[Path::new("mytunneld")]);
    assert!(!Path::new("/usr/bin/mytunneld").exists());
    assert!(Path::new("/var/lib/mytunneld/leases.db").is_file());
    assert!(Path::new(ENV_FILE).is_file());
    apt(&["install", "-y"], &[&debs.upgrade]);
    serve = Some(start_serve());
    let listed = ctl_list_as_tunnel_user();
    assert!(
        listed.contains(&client.lease) && listed.contains("\"released\""),
        "the released lease is not in the kept database: {listed}"
    );
    drop(serve.take());
    apt(
        &["purge", "-y"],
        &[Path::new("mytunneld"), Path::new("mytunnel")],
    );
    assert!(!Path::new(DROPIN).exists(), "purge left {DROPIN}");
    assert!(!Path::new("/usr/bin/mytunnel").exists());
    assert!(Path::new("/var/lib/mytunneld/leases.db").is_file());
    step.ok(&format!(
        "remove kept /var/lib/mytunneld/leases.db: reinstalled, serve lists {} as released; purge removed {DROPIN} and kept the database",
        client.lease
    ));

    kill_all(&mut caddy, Below::Nothing);
    drop(sshd);
    step.count
}

#[derive(Default)]
struct Steps {
    count: usize,
}

impl Steps {
    fn ok(&mut self, what: &str) {
        self.count += 1;
        println!("ok {} {what}", self.count);
        std::io::stdout().flush().unwrap();
    }
}

/// What this test changes on the machine, put back when dropped.
struct Machine {
    caddyfile: Option<Vec<u8>>,
    caddy_data_existed: bool,
    user_created: std::cell::Cell<bool>,
}

impl Machine {
    /// Refuses a machine with an edge on it already: the test would take it over.
    fn take() -> Result<Machine, String> {
        for path in EDGE_STATE.iter().chain([&DROPIN]) {
            if Path::new(path).exists() {
                return Err(format!(
                    "{path} exists: this machine has an edge (or a failed run left one); the test \
                     installs its own for real. Remove it first: apt-get purge mytunneld mytunnel; \
                     rm -rf {} {DROPIN}",
                    EDGE_STATE.join(" ")
                ));
            }
        }
        if nix::unistd::User::from_name(TUNNEL_USER)
            .ok()
            .flatten()
            .is_some()
        {
            return Err(format!(
                "user {TUNNEL_USER} exists: remove it first (userdel -r {TUNNEL_USER})"
            ));
        }
        Ok(Machine {
            caddyfile: std::fs::read(CADDYFILE).ok(),
            caddy_data_existed: caddy_data_dir().exists(),
            user_created: std::cell::Cell::new(false),
        })
    }

    fn note_user_created(&self) {
        self.user_created.set(true);
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // Best effort each: the rest is put back also when one of these fails.
        let _ = Command::new("apt-get")
            .args(["purge", "-y", "-q", "mytunneld", "mytunnel"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        for path in EDGE_STATE.iter().chain([&DROPIN]) {
            let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
        }
        if self.user_created.get() {
            let _ = Command::new("userdel").args(["-r", TUNNEL_USER]).output();
        }
        if let Some(text) = &self.caddyfile {
            let _ = std::fs::write(CADDYFILE, text);
        }
        if let Ok(entries) = std::fs::read_dir("/etc/caddy") {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("Caddyfile.before-mytunnel.")
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        if !self.caddy_data_existed {
            let _ = std::fs::remove_dir_all(caddy_data_dir());
        }
    }
}

/// A running `mytunnel http`, its `url:` and `lease:` read from its stdout.
struct Tunnel {
    child: Child,
    host: String,
    lease: String,
    stderr: PathBuf,
}

impl Tunnel {
    fn open(mut command: Command, stderr: &Path) -> Tunnel {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let next = |prefix: &str| {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    panic!(
                        "mytunnel http printed no {prefix:?} line: {}",
                        std::fs::read_to_string(stderr).unwrap_or_default()
                    )
                });
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{line:?} is not a {prefix:?} line"))
                .to_owned()
        };
        let host = next("url: https://");
        let lease = next("lease: ");
        Tunnel {
            child,
            host,
            lease,
            stderr: stderr.to_owned(),
        }
    }

    /// Ctrl-C: the client releases its lease and exits 0.
    fn interrupt(&mut self) {
        mytunnel_test_support::process::signal(self.child.id(), nix::sys::signal::Signal::SIGINT)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "mytunnel http did not stop on Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "mytunnel http exited {status}: {}",
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        );
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        kill_all(&mut self.child, Below::Nothing);
    }
}

/// Debian's Caddy as `caddy.service` runs it: its `ExecStart`, as its `User` and `Group`,
/// with the user's home as `HOME` (where Caddy keeps its data); stopped by pid.
fn start_caddy(work: &Path, admin: SocketAddr) -> Child {
    let unit = std::fs::read_to_string("/lib/systemd/system/caddy.service")
        .expect("Debian's caddy package and its unit");
    let exec: Vec<&str> = unit_value(&unit, "ExecStart").split_whitespace().collect();
    let (uid, home) = user_ids(unit_value(&unit, "User"));
    let gid = group_id(unit_value(&unit, "Group"));
    let child = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--init-groups", "--"])
        .args(&exec)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("caddy.log")).unwrap())
        .spawn()
        .unwrap();
    let mut child = child;
    if !eventually(Duration::from_secs(20), || {
        admin_get(admin, "/config/").is_ok()
    }) {
        kill_all(&mut child, Below::Nothing);
        panic!(
            "Caddy never answered on {admin}: {}",
            std::fs::read_to_string(work.join("caddy.log")).unwrap_or_default()
        );
    }
    child
}

/// Caddy's data directory as the packaged Caddy has it (`$HOME/.local/share/caddy`).
fn caddy_data_dir() -> PathBuf {
    let home = nix::unistd::User::from_name("caddy")
        .ok()
        .flatten()
        .map_or_else(|| PathBuf::from("/var/lib/caddy"), |u| u.dir);
    home.join(".local/share/caddy")
}

fn caddy_ca_root() -> PathBuf {
    caddy_data_dir().join("pki/authorities/local/root.crt")
}

/// `mytunneld ctl list` as the tunnel user, as sshd's gate would run it.
fn ctl_list_as_tunnel_user() -> String {
    output_text(&run_ok(
        Command::new("runuser")
            .args(["-u", TUNNEL_USER, "--", "/usr/bin/mytunneld", "ctl", "list"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ))
}

struct Visit {
    exit: Option<i32>,
    body: String,
    verbose: String,
}

/// `curl https://<host>:<port>/`, the host resolved to this machine, trusting only `ca`.
fn curl_https(host: &str, port: u16, ca: &Path) -> Visit {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--verbose", "--max-time", "20"])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}/"))
        .output()
        .unwrap();
    Visit {
        exit: out.status.code(),
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
        verbose: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `apt-get <args> <packages>` as an operator runs it; its output.
fn apt(args: &[&str], packages: &[&Path]) -> String {
    output_text(&run_ok(
        Command::new("apt-get")
            .args(args)
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    ))
}

fn dpkg_version(package: &str) -> String {
    output_text(&run_ok(Command::new("dpkg-query").args([
        "-W",
        "-f=${Version}",
        package,
    ])))
}

/// `KEY=value` of a systemd unit (the first).
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit:\n{unit}"))
}

fn user_ids(name: &str) -> (u32, PathBuf) {
    let user = nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {name}"));
    (user.uid.as_raw(), user.dir)
}

fn group_id(name: &str) -> u32 {
    nix::unistd::Group::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no group {name}"))
        .gid
        .as_raw()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn size_kib(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len() / 1024).unwrap_or(0)
}

/// Runs `command`; panics with its output unless it exits 0.
fn run_ok(command: &mut Command) -> Output {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} exited {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_owned()
}
