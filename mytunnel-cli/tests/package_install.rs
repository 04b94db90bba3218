//! docs/edge-setup.md run for real: the Debian packages installed and an edge set up on
//! this machine, every command of the page's `sh` blocks in the page's order ([`Page`]),
//! with checks between them (run by `cargo xtask package --test`, and by `cargo xtask
//! ci` after the tests; root; it changes the system, so it is a program, not a test run
//! beside others):
//!
//! - `cargo xtask package`, then `apt-get install caddy ./mytunneld_….deb` and the client's
//!   package: both binaries run, the unit verifies (`systemd-analyze verify`), man pages,
//!   completions and the setup commands are in place.
//! - `mytunneld-setup --base-domain … --tls-mode on-demand`: the edge is made from the
//!   package's files (no unit of its own; the drop-in and every key's gate name
//!   `/usr/bin/mytunneld`). Then Caddy, serve and sshd start as their units start them
//!   (this machine has no systemd as pid 1): Debian's Caddy as user `caddy` on the
//!   Caddyfile setup wrote, serve as the package unit's user with `CAP_KILL`, the
//!   machine's own sshd with its drop-ins on a free port.
//! - The page's checks: the printed Caddyfile and drop-in, `sshd -t`, `mytunneld-add-key`,
//!   the gate script and the gate through sshd, `mytunneld-check`, `ctl health`,
//!   `mytunnel doctor`, and `mytunnel http`, whose host curl fetches over HTTPS trusting
//!   only Caddy's CA (which stands in for Let's Encrypt: `--tls-issuer internal`); a host
//!   without a tunnel gets no certificate.
//! - The page's upgrade to the next revision: the lease and the tunnel survive the
//!   restart onto the new binary. Its `apt-get remove`: the binary goes, the lease
//!   database stays (reinstalled, serve lists the released lease); its `apt-get purge`:
//!   the sshd drop-in goes, the database stays.
//!
//! What differs from the page's edge: free ports instead of 80, 443, 2019, 2020 and 22,
//! Caddy's CA, alice's key made by the test, `edge.example.com` as 127.0.0.1 with ssh
//! options, the app's port for 3000, apt answering yes at its prompt.
//!
//! The packages come from `MYTUNNEL_DEB_CLIENT`, `MYTUNNEL_DEB_EDGE` and
//! `MYTUNNEL_DEB_EDGE_UPGRADE`. It refuses to run on a machine that already has an edge,
//! and puts the machine back as it found it (packages purged, edge state, alice and the
//! Caddyfile as they were) when it ends, also when a check fails.

// Test code: a panic is a failed check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use mytunnel_test_support::{
    admin_get, curl_https, eventually, free_port, generate_key, kill_all, stdout_lines, Below,
    Guard, LoopbackServer, ServeProcess, Sshd,
};

const BASE_DOMAIN: &str = "tunnel.example.com";
/// The page's tunnel user.
const TUNNEL_USER: &str = "alice";
/// The page this test runs.
const PAGE: &str = include_str!("../../docs/edge-setup.md");
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
    let checks = run(&debs);
    drop(machine);
    let seconds = started.elapsed().as_secs_f64();
    println!("package_install: {checks} checks passed in {seconds:.0} s");
    // In libtest's words too, so that `cargo xtask ci` counts the checks with the tests.
    println!(
        "test result: ok. {checks} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {seconds:.2}s"
    );
    ExitCode::SUCCESS
}

struct Debs {
    client: PathBuf,
    edge: PathBuf,
    upgrade: PathBuf,
}

/// The checks, in order; returns how many passed (a failure panics). The commands are
/// docs/edge-setup.md's, in its order ([`Page`]); the checks between them are the test's.
fn run(debs: &Debs) -> usize {
    let mut step = Steps::default();
    let mut page = Page::new(PAGE);
    let work = tempfile::tempdir().unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let admin = loopback(free_port().unwrap());
    let ask = loopback(free_port().unwrap());
    let http_port = free_port().unwrap();
    let https_port = free_port().unwrap();
    let key = work.path().join("alice_ed25519");
    generate_key(&key, "alice@laptop").unwrap();
    let app = LoopbackServer::start(|stream, _stop| {
        mytunnel_test_support::answer_http(stream, |_| (200, APP_BODY.to_owned()));
    })
    .unwrap();
    let home = work.path().join("home");
    std::fs::create_dir(&home).unwrap();
    // What differs on this machine from the page's edge (the page says so at its top).
    let mut machine_words = vec![
        (
            "/tmp/alice_ed25519.pub".to_owned(),
            key.with_extension("pub").display().to_string(),
        ),
        ("localhost:2019".to_owned(), admin.to_string()),
    ];
    let shell = |command: &str, words: &[(String, String)], dir: &Path| -> Output {
        let mut command = command.to_owned();
        for (page_word, here) in words {
            command = command.replace(page_word, here);
        }
        shell_command(&command, dir, &home, work.path())
            .output()
            .unwrap()
    };

    // 2. Build and install the packages.
    let built = page.next("cargo xtask package");
    let out = shell(&built, &machine_words, workspace);
    expect_success(&built, &out);
    let debian = workspace.join("target/debian");
    let install = page.next("apt-get install caddy ./mytunneld_");
    let out = shell(&install, &machine_words, &debian);
    expect_success(&install, &out);
    assert!(
        output_text(&out).contains("mytunneld-setup --base-domain"),
        "the install does not say how to set the edge up:\n{}",
        output_text(&out)
    );
    let client_install = page.next("apt-get install ./mytunnel_");
    expect_success(
        &client_install,
        &shell(&client_install, &machine_words, &debian),
    );
    let version = dpkg_version("mytunneld");
    assert_eq!(dpkg_version("mytunnel"), version);
    assert_eq!(
        Path::new(&debian).join(deb_name(&install)),
        debs.edge,
        "the page installs another file than the one built"
    );
    let edge_version = output_text(&run_ok(Command::new("/usr/bin/mytunneld").arg("--version")));
    let client_version = output_text(&run_ok(Command::new("/usr/bin/mytunnel").arg("--version")));
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
        "install: `{built}` then apt-get installed {version} of mytunneld and mytunnel ({} and {} KiB): \
         `{edge_version}`, `{client_version}`; systemd-analyze verify {PACKAGED_UNIT}",
        size_kib(&debs.edge),
        size_kib(&debs.client)
    ));

    // 3. Set the edge up, in on-demand mode; start what systemd would.
    let setup = page.next("mytunneld-setup --base-domain tunnel.example.com --tls-mode on-demand");
    let on_this_machine = format!(
        "{setup} --tls-issuer internal --caddy-admin-url http://{admin} --tls-ask-listen {ask} \
         --caddy-http-port {http_port} --caddy-https-port {https_port}"
    );
    let out = shell(&on_this_machine, &machine_words, work.path());
    expect_success(&setup, &out);
    assert!(
        output_text(&out).contains(&format!("unit: the package's {PACKAGED_UNIT}")),
        "{}",
        output_text(&out)
    );
    assert!(!Path::new("/etc/systemd/system/mytunneld.service").exists());
    let env = std::fs::read_to_string(ENV_FILE).unwrap();
    assert!(
        env.contains(&format!("MYTUNNEL_TLS_ASK_LISTEN={ask}\n")),
        "{env}"
    );
    let caddy = start_caddy(work.path(), admin);
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
    let printed = page.next("mytunneld-setup --print-caddyfile");
    let out = shell(&printed, &machine_words, work.path());
    expect_success(&printed, &out);
    assert!(
        output_text(&out).contains("on_demand_tls {"),
        "{}",
        output_text(&out)
    );
    let servers = page.next("curl -s localhost:2019/config/apps/http/servers");
    let out = shell(&servers, &machine_words, work.path());
    expect_success(&servers, &out);
    assert!(
        output_text(&out).contains("\"srv0\""),
        "{}",
        output_text(&out)
    );
    step.ok(&format!(
        "setup: `{setup}` (+ this machine's CA and ports); Caddy (user caddy, pid {}), serve \
         ({}, pid {}) and sshd (port {}) started as their units would; Caddy has serve's route",
        caddy.pid(),
        unit_value(&unit, "User"),
        serve.as_ref().unwrap().pid(),
        sshd.port()
    ));

    // 4. sshd.
    let dropin_cmd = page.next("mytunneld-setup --print-sshd-dropin");
    let out = shell(&dropin_cmd, &machine_words, work.path());
    expect_success(&dropin_cmd, &out);
    let dropin = std::fs::read_to_string(DROPIN).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), dropin);
    assert!(
        dropin.contains("AuthorizedKeysCommand /usr/bin/mytunneld authorized-keys %u"),
        "{dropin}"
    );
    let sshd_t = page.next("sshd -t");
    expect_success(&sshd_t, &shell(&sshd_t, &machine_words, work.path()));
    step.ok("sshd: the installed drop-in is the printed one, names /usr/bin/mytunneld, and sshd -t takes it");

    // 5. Users and keys.
    let add_key = page.next("mytunneld-add-key alice ");
    expect_success(&add_key, &shell(&add_key, &machine_words, work.path()));
    let groups = output_text(&run_ok(Command::new("id").args(["-nG", TUNNEL_USER])));
    assert!(
        groups.split_whitespace().any(|g| g == "mytunnel"),
        "{groups}"
    );
    let keys = output_text(&run_ok(Command::new("runuser").args([
        "-u",
        "mytunneld",
        "--",
        "/usr/bin/mytunneld",
        "authorized-keys",
        TUNNEL_USER,
    ])));
    assert!(
        keys.contains("command=\"/usr/bin/mytunneld gate\""),
        "{keys}"
    );
    step.ok(&format!(
        "keys: `{add_key}`; sshd's keys command forces /usr/bin/mytunneld gate"
    ));

    // 6. The gate, by the script and through sshd.
    let gate = page.next("/usr/share/mytunneld/scripts/test-ssh-gate.sh");
    let out = shell(&gate, &machine_words, work.path());
    expect_success(&gate, &out);
    let gate_summary = output_text(&out)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(gate_summary.ends_with(" 0 FAIL"), "{}", output_text(&out));
    let known_hosts = work.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line()).unwrap();
    let ssh_options = sshd.client_options(&key, &known_hosts);
    let ssh_flags: Vec<String> = ssh_options.iter().map(|o| format!("-o {o}")).collect();
    machine_words.push((
        "ssh -T alice@edge.example.com".to_owned(),
        format!(
            "ssh -T -o BatchMode=yes {} alice@127.0.0.1",
            ssh_flags.join(" ")
        ),
    ));
    let list = page.next("ssh -T alice@edge.example.com mytunneld ctl list");
    let out = shell(&list, &machine_words, work.path());
    expect_success(&list, &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let id = page.next("ssh -T alice@edge.example.com id");
    let out = shell(&id, &machine_words, work.path());
    assert_eq!(out.status.code(), Some(1), "{id}: {}", output_text(&out));
    assert!(
        output_text(&out).contains("\"forbidden_command\""),
        "{}",
        output_text(&out)
    );
    step.ok(&format!("gate: `{gate}` says `{gate_summary}`; through sshd `ctl list` is [] and `id` is forbidden_command"));

    // 8. Check, on the edge and from a client.
    let check = page.next("mytunneld-check");
    let out = shell(&check, &machine_words, work.path());
    expect_success(&check, &out);
    let health = page.next("mytunneld ctl health");
    let out = shell(&health, &machine_words, work.path());
    expect_success(&health, &out);
    assert!(
        output_text(&out).contains("\"healthy\":true"),
        "{}",
        output_text(&out)
    );
    let as_alice = page.next("runuser -u alice -- mytunneld ctl list");
    let out = shell(&as_alice, &machine_words, work.path());
    expect_success(&as_alice, &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let client_options: Vec<String> = ssh_options
        .iter()
        .map(|o| format!("--ssh-option {o}"))
        .collect();
    machine_words.push((
        "--edge alice@edge.example.com".to_owned(),
        format!("--edge alice@127.0.0.1 {}", client_options.join(" ")),
    ));
    machine_words.push((" 3000".to_owned(), format!(" {}", app.addr().port())));
    let doctor = page.next("mytunnel doctor --edge alice@edge.example.com --app 3000");
    let out = shell(&doctor, &machine_words, work.path());
    expect_success(&doctor, &out);
    let publish = page.next("mytunnel http 3000 --edge alice@edge.example.com");
    let mut publish_here = publish.clone();
    for (page_word, here) in &machine_words {
        publish_here = publish_here.replace(page_word, here);
    }
    let mut client = Tunnel::open(
        shell_command(
            &format!("exec {publish_here}"),
            work.path(),
            &home,
            work.path(),
        ),
        &work.path().join("client.stderr"),
    );
    let host = client.host.clone();
    let ca = caddy_ca_root();
    let visit = curl_https(&host, https_port, &ca).unwrap();
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
    let refused = curl_https(&nobody, https_port, &ca).unwrap();
    assert_eq!(refused.exit, Some(35), "{}", refused.verbose);
    step.ok(&format!(
        "check: mytunneld-check, ctl health and doctor pass; `{publish}` serves https://{host}:{https_port}/ \
         ({APP_BODY:?}) with a certificate for {host} from Caddy's CA; {nobody} gets none (curl exit 35)"
    ));

    // Upgrade while the edge runs; the service restarts onto the new binary (what the
    // package's postinst has systemd do: try-restart).
    let upgrade = page.next("apt-get install ./mytunneld_");
    let upgrade_dir = debs.upgrade.parent().unwrap();
    assert_eq!(upgrade_dir.join(deb_name(&upgrade)), debs.upgrade);
    expect_success(&upgrade, &shell(&upgrade, &machine_words, upgrade_dir));
    let upgraded = dpkg_version("mytunneld");
    assert_ne!(upgraded, version);
    drop(serve.take());
    serve = Some(start_serve());
    let listed = ctl_list_as_tunnel_user();
    assert!(
        listed.contains(&host),
        "the lease is gone after the upgrade: {listed}"
    );
    let visit = curl_https(&host, https_port, &ca).unwrap();
    assert_eq!(visit.body, APP_BODY, "after the upgrade: {}", visit.verbose);
    step.ok(&format!(
        "upgrade {version} -> {upgraded}: serve restarted on the new binary, the lease kept, https://{host} still serves"
    ));

    // The client releases its lease on Ctrl-C.
    client.interrupt();

    // Remove (the service stopped first, as the package's prerm has systemd do),
    // reinstall, purge: the lease database stays.
    drop(serve.take());
    let remove = page.next("apt-get remove mytunneld");
    expect_success(&remove, &shell(&remove, &machine_words, work.path()));
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
    let purge = page.next("apt-get purge mytunneld");
    expect_success(&purge, &shell(&purge, &machine_words, work.path()));
    assert!(!Path::new(DROPIN).exists(), "purge left {DROPIN}");
    assert!(!Path::new("/usr/bin/mytunneld").exists());
    assert!(Path::new("/var/lib/mytunneld/leases.db").is_file());
    step.ok(&format!(
        "remove kept /var/lib/mytunneld/leases.db: reinstalled, serve lists {} as released; purge removed {DROPIN} and kept the database",
        client.lease
    ));
    page.finish();

    drop((caddy, sshd));
    step.count
}

/// docs/edge-setup.md's commands: each line of its `sh` blocks (a line ending in `\`
/// joined with the next), blank and comment-only lines left out. The test takes them in
/// order, each by the start the test expects ([`Page::next`]), and every one of them
/// ([`Page::finish`]): a command added to the page, moved or dropped fails the test.
struct Page {
    commands: std::collections::VecDeque<String>,
}

impl Page {
    fn new(page: &str) -> Page {
        let mut commands = std::collections::VecDeque::new();
        let mut in_sh = false;
        let mut pending = String::new();
        for line in page.lines() {
            if let Some(info) = line.strip_prefix("```") {
                in_sh = !in_sh && info.trim() == "sh";
                continue;
            }
            if !in_sh {
                continue;
            }
            let line = line.trim();
            if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
                continue;
            }
            pending.push_str(line);
            let command = std::mem::take(&mut pending);
            if !command.is_empty() && !command.starts_with('#') {
                commands.push_back(command);
            }
        }
        Page { commands }
    }

    /// The page's next command, which must start with `start`.
    fn next(&mut self, start: &str) -> String {
        let command = self.commands.pop_front().unwrap_or_else(|| {
            panic!("edge-setup.md has no command left; the test expects {start:?}")
        });
        assert!(
            command.starts_with(start),
            "edge-setup.md's next command is {command:?}; the test expects one starting {start:?}"
        );
        command
    }

    /// Every command of the page was run.
    fn finish(&self) {
        assert!(
            self.commands.is_empty(),
            "edge-setup.md has commands no test runs: {:?}",
            self.commands
        );
    }
}

/// `bash -c COMMAND` as root at a login on the edge: in `dir`, the system's PATH (and
/// cargo's directory last, for the build machine's command), `HOME`,
/// `TMPDIR`, no terminal, and apt answering yes at its prompts as the person would.
fn shell_command(command: &str, dir: &Path, home: &Path, tmp: &Path) -> Command {
    let apt_config = tmp.join("apt-assume-yes.conf");
    std::fs::write(&apt_config, "APT::Get::Assume-Yes \"true\";\n").unwrap();
    // The build machine's cargo (rustup's, outside the system's PATH) for `cargo xtask`.
    let mut path = String::from("/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    if let Some(cargo_dir) = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|cargo| cargo.parent().map(Path::to_path_buf))
    {
        path = format!("{path}:{}", cargo_dir.display());
    }
    let mut shell = Command::new("bash");
    shell
        .args(["-c", command])
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("TMPDIR", tmp)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("APT_CONFIG", apt_config)
        .stdin(Stdio::null());
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        shell.env("CARGO_HOME", cargo_home);
    }
    if let Some(rustup_home) = std::env::var_os("RUSTUP_HOME") {
        shell.env("RUSTUP_HOME", rustup_home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        shell.env("CARGO_TARGET_DIR", target);
    }
    shell
}

/// The `./NAME.deb` an `apt-get install` command names.
fn deb_name(command: &str) -> String {
    command
        .split_whitespace()
        .find_map(|w| w.strip_prefix("./").filter(|w| w.ends_with(".deb")))
        .unwrap_or_else(|| panic!("{command:?} names no ./FILE.deb"))
        .to_owned()
}

fn expect_success(command: &str, out: &Output) {
    assert!(
        out.status.success(),
        "`{command}` exited {}:\n{}",
        out.status,
        output_text(out)
    );
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
    user_existed: bool,
    /// Whether the page's user was in the tunnel group before.
    user_was_in_group: bool,
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
        Ok(Machine {
            caddyfile: std::fs::read(CADDYFILE).ok(),
            caddy_data_existed: caddy_data_dir().exists(),
            // The e2e suite's alice may be there already: she is left as she was but for
            // her key file (in /etc/mytunneld) and the group she is in anyway.
            user_existed: nix::unistd::User::from_name(TUNNEL_USER)
                .ok()
                .flatten()
                .is_some(),
            user_was_in_group: Command::new("id")
                .args(["-nG", TUNNEL_USER])
                .output()
                .is_ok_and(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .any(|g| g == "mytunnel")
                }),
        })
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
        if !self.user_existed {
            let _ = Command::new("userdel").args(["-r", TUNNEL_USER]).output();
        } else if !self.user_was_in_group {
            let _ = Command::new("gpasswd")
                .args(["-d", TUNNEL_USER, "mytunnel"])
                .output();
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
        let lines = stdout_lines(&mut child).unwrap();
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
/// with the user's home as `HOME` (where Caddy keeps its data); stopped by pid when the
/// guard drops (also when a check fails).
fn start_caddy(work: &Path, admin: SocketAddr) -> Guard {
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
    let caddy = Guard(child);
    if !eventually(Duration::from_secs(20), || {
        admin_get(admin, "/config/").is_ok()
    }) {
        panic!(
            "Caddy never answered on {admin}: {}",
            std::fs::read_to_string(work.join("caddy.log")).unwrap_or_default()
        );
    }
    caddy
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
