//! The end-to-end stack: a real sshd whose keys are gated by the built `mytunneld gate`, a
//! real Caddy, `mytunneld serve`, OS users alice, bob and ops (ops is an edge admin), local
//! apps, and the built `mytunnel` client.
//!
//! Every process is stopped by its pid when its guard drops, also when an assertion fails:
//! the stack kills whatever still runs from its directory (clients, ssh masters, gates).

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use mytunnel_edge::testkit::{children_of, RealCaddy, Sshd};
use serde_json::Value;

pub const GROUP: &str = "mytunnel-e2e";
pub const USERS: [&str; 3] = ["alice", "bob", "ops"];
pub const BASE_DOMAIN: &str = "e2e.test";
/// Longer than the client's heartbeat interval (max(TTL/3, 10s) = 10s), so a live client
/// keeps its lease; short enough that an abandoned lease expires quickly.
pub const LEASE_TTL_SECS: u64 = 12;
/// Ports a stack's leases use: one window of this many per stack, claimed under a lock.
const PORT_WINDOW: u16 = 16;
const PORT_WINDOWS_FROM: u16 = 24_000;
const PORT_WINDOWS_TO: u16 = 32_000;

pub use mytunnel_edge::testkit::eventually;

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn check(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An exclusive lock on a file shared by every e2e test process: user setup (useradd and
/// usermod refuse to run concurrently) and port windows are claimed under it.
struct SetupLock(nix::fcntl::Flock<std::fs::File>);

impl SetupLock {
    fn take() -> SetupLock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("mytunnel-e2e-setup.lock"))
            .unwrap();
        SetupLock(
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .unwrap(),
        )
    }
}

/// A window of lease ports for one stack, recorded in a claim file holding our pid, so
/// that parallel test processes never share one. A claim of a dead process is taken over.
#[derive(Debug)]
struct PortWindow {
    min: u16,
    claim: PathBuf,
}

impl PortWindow {
    fn claim() -> PortWindow {
        let _lock = SetupLock::take();
        let dir = std::env::temp_dir().join("mytunnel-e2e-ports");
        std::fs::create_dir_all(&dir).unwrap();
        let windows = (PORT_WINDOWS_TO - PORT_WINDOWS_FROM) / PORT_WINDOW;
        let start = (std::process::id() as u16) % windows;
        for i in 0..windows {
            let min = PORT_WINDOWS_FROM + ((start + i) % windows) * PORT_WINDOW;
            let claim = dir.join(min.to_string());
            if let Ok(text) = std::fs::read_to_string(&claim) {
                let alive = text
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if alive {
                    continue;
                }
            }
            let all_free =
                (min..min + PORT_WINDOW).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
            if !all_free {
                continue;
            }
            std::fs::write(&claim, std::process::id().to_string()).unwrap();
            return PortWindow { min, claim };
        }
        panic!("no free window of {PORT_WINDOW} ports in {PORT_WINDOWS_FROM}..{PORT_WINDOWS_TO}");
    }

    fn max(&self) -> u16 {
        self.min + PORT_WINDOW - 1
    }
}

impl Drop for PortWindow {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.claim);
    }
}

/// A child process killed (SIGKILL) by its pid when dropped.
#[derive(Debug)]
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tiny HTTP server on `127.0.0.1:0` answering every request with `body`.
#[derive(Debug)]
pub struct App {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl App {
    pub fn start(body: &str) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let body = body.to_owned();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let body = body.clone();
                    std::thread::spawn(move || serve_one(stream, &body));
                }
            })
        };
        App {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn serve_one(mut stream: TcpStream, body: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    // Answer each request on the connection (Caddy keeps upstream connections alive).
    loop {
        let mut saw_request = false;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            saw_request = true;
        }
        if !saw_request {
            return;
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One HTTP/1.0 GET to `addr` with `Host: host`: (status, body), or None when the
/// connection failed.
pub fn http_get(addr: SocketAddr, host: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mytunnel-e2e\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A running `mytunnel http`: its stdout lines arrive on a channel, stderr goes to a file.
#[derive(Debug)]
pub struct Client {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
    pub url: String,
    pub lease: String,
}

impl Client {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn host(&self) -> String {
        self.url.strip_prefix("https://").unwrap().to_owned()
    }

    pub fn slug(&self) -> String {
        self.host().split('.').next().unwrap().to_owned()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The data-plane ssh: the child `ssh` of this client whose arguments hold `-R`.
    pub fn data_plane_pid(&self) -> Option<i32> {
        children_of(i32::try_from(self.pid()).unwrap())
            .into_iter()
            .find(|pid| {
                let args = cmdline(*pid);
                args.first().is_some_and(|a| a.ends_with("ssh")) && args.iter().any(|a| a == "-R")
            })
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.pid()).unwrap()),
            signal,
        )
        .unwrap();
    }

    /// Waits (at most `timeout`) for the client to exit; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        eventually(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    /// Kills the client and every process it started (SIGKILL, by pid).
    pub fn kill_all(&mut self) {
        let pid = i32::try_from(self.pid()).unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        );
        for child in children_of(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The next stdout line within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_all();
        }
    }
}

/// The arguments of a process, from `/proc/<pid>/cmdline`.
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What a stack is built with.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub lease_ttl_secs: u64,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            lease_ttl_secs: LEASE_TTL_SECS,
        }
    }
}

/// One edge and its users, private to one test.
#[derive(Debug)]
pub struct Stack {
    // Dropped in order: serve, sshd (and its connections), Caddy, then the directory.
    serve: Option<Guard>,
    pub sshd: Sshd,
    pub caddy: RealCaddy,
    ports: PortWindow,
    dir: tempfile::TempDir,
    client_count: std::cell::Cell<u32>,
}

impl Stack {
    pub fn new() -> Stack {
        Stack::with(StackOptions::default())
    }

    pub fn with(options: StackOptions) -> Stack {
        assert!(
            nix::unistd::getuid().is_root(),
            "the end-to-end tests create OS users and start sshd: run them as root \
             (cargo xtask e2e)"
        );
        let caddy = RealCaddy::start().unwrap();
        let sshd = Sshd::start().unwrap();
        let ports = PortWindow::claim();
        let dir = tempfile::Builder::new()
            .prefix("mytunnel-e2e-")
            .tempdir()
            .unwrap();
        set_mode(dir.path(), 0o755);

        let bin = dir.path().join("mytunneld");
        std::fs::copy(env!("CARGO_BIN_EXE_mytunneld"), &bin).unwrap();
        set_mode(&bin, 0o755);

        let mut stack = Stack {
            serve: None,
            sshd,
            caddy,
            ports,
            dir,
            client_count: std::cell::Cell::new(0),
        };
        stack.install_users();

        let group = nix::unistd::Group::from_name(GROUP).unwrap().unwrap();
        let db_dir = stack.path("db");
        std::fs::create_dir(&db_dir).unwrap();
        nix::unistd::chown(&db_dir, None, Some(group.gid)).unwrap();
        set_mode(&db_dir, 0o2770);
        let env = format!(
            "MYTUNNEL_DB_PATH={db}\nMYTUNNEL_BASE_DOMAIN={BASE_DOMAIN}\nMYTUNNEL_CADDY_ADMIN_URL={admin}\n\
             MYTUNNEL_ADMIN_USERS=ops\nMYTUNNEL_LEASE_TTL={ttl}s\nMYTUNNEL_CLEANUP_INTERVAL=1s\n\
             MYTUNNEL_RECONCILE_INTERVAL=1s\nMYTUNNEL_MIN_PORT={min}\nMYTUNNEL_MAX_PORT={max}\n",
            db = db_dir.join("leases.db").display(),
            admin = stack.caddy.admin_address(),
            ttl = options.lease_ttl_secs,
            min = stack.ports.min,
            max = stack.ports.max(),
        );
        let env_path = stack.env_file();
        std::fs::write(&env_path, env).unwrap();
        nix::unistd::chown(&env_path, None, Some(group.gid)).unwrap();
        set_mode(&env_path, 0o640);
        std::fs::write(stack.path("known_hosts"), stack.sshd.known_hosts_line()).unwrap();
        std::fs::create_dir(stack.path("home")).unwrap();
        std::fs::create_dir(stack.path("tmp")).unwrap();

        let log = std::fs::File::create(stack.path("serve.log")).unwrap();
        stack.serve = Some(Guard(
            Command::new(&bin)
                .arg("--env-file")
                .arg(&env_path)
                .arg("serve")
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        ));
        stack
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn env_file(&self) -> PathBuf {
        self.path("mytunneld.env")
    }

    pub fn key(&self, user: &str) -> PathBuf {
        self.path("keys").join(user)
    }

    fn gate_command(&self) -> String {
        format!(
            "{} --env-file {} gate",
            self.path("mytunneld").display(),
            self.env_file().display()
        )
    }

    /// A fresh key per user for this stack, installed with the script (only this key's
    /// line changes, so parallel stacks keep theirs).
    fn install_users(&mut self) {
        let keys = self.path("keys");
        std::fs::create_dir(&keys).unwrap();
        set_mode(&keys, 0o700);
        for user in USERS {
            let key = self.key(user);
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("mytunnel-e2e-{user}"))
                .arg("-f")
                .arg(&key)
                .output()
                .unwrap();
            check(&out, "ssh-keygen");
        }
        let _lock = SetupLock::take();
        Command::new("groupadd")
            .args(["-f", GROUP])
            .status()
            .unwrap();
        for user in USERS {
            let out = Command::new(script())
                .arg(user)
                .arg(self.key(user).with_extension("pub"))
                .arg("--group")
                .arg(GROUP)
                .arg("--gate-command")
                .arg(self.gate_command())
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output()
                .unwrap();
            check(&out, &format!("install-edge-ssh-key.sh {user}"));
        }
    }

    /// The ssh options every client of this stack uses for `user`.
    pub fn ssh_options(&self, user: &str) -> Vec<String> {
        vec![
            format!("Port={}", self.sshd.port()),
            format!("IdentityFile={}", self.key(user).display()),
            format!("UserKnownHostsFile={}", self.path("known_hosts").display()),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
            "IdentitiesOnly=yes".to_owned(),
        ]
    }

    fn edge_args(&self, user: &str) -> Vec<String> {
        let mut args = vec!["--edge".to_owned(), format!("{user}@127.0.0.1")];
        for option in self.ssh_options(user) {
            args.push("--ssh-option".to_owned());
            args.push(option);
        }
        args
    }

    /// `mytunnel <args> --edge user@127.0.0.1 --ssh-option …` as root, HOME in the stack.
    pub fn mytunnel_command(&self, user: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mytunnel"));
        command
            .args(args)
            .args(self.edge_args(user))
            .env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", "/usr/bin:/bin")
            // The ssh control directories of clients killed by a test go with the stack.
            .env("TMPDIR", self.path("tmp"))
            .stdin(Stdio::null());
        command
    }

    /// Runs `mytunnel <args>` to its end.
    pub fn mytunnel(&self, user: &str, args: &[&str]) -> Output {
        self.mytunnel_command(user, args).output().unwrap()
    }

    /// Starts `mytunnel http <port> <args>` and waits for its `url:` and `lease:` lines.
    pub fn http(&self, user: &str, port: u16, args: &[&str]) -> Client {
        let client = self.spawn_http(user, port, args);
        self.await_opened(client)
    }

    /// Starts `mytunnel http <port> <args>` without waiting.
    pub fn spawn_http(&self, user: &str, port: u16, args: &[&str]) -> Client {
        let n = self.client_count.get() + 1;
        self.client_count.set(n);
        let stderr = self.path(&format!("client-{n}-{user}.stderr"));
        let port = port.to_string();
        let mut all = vec!["http", port.as_str()];
        all.extend_from_slice(args);
        let mut child = self
            .mytunnel_command(user, &all)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
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
        Client {
            child,
            lines,
            stderr,
            url: String::new(),
            lease: String::new(),
        }
    }

    fn await_opened(&self, mut client: Client) -> Client {
        let timeout = Duration::from_secs(30);
        let url = client.next_line(timeout).unwrap_or_else(|| {
            panic!(
                "no url line; exit {:?}; stderr: {}; serve log: {}",
                client.child.try_wait(),
                client.stderr(),
                self.serve_log()
            )
        });
        let lease = client
            .next_line(timeout)
            .unwrap_or_else(|| panic!("no lease line; stderr: {}", client.stderr()));
        client.url = url
            .strip_prefix("url: ")
            .unwrap_or_else(|| panic!("first line {url:?}"))
            .to_owned();
        client.lease = lease
            .strip_prefix("lease: ")
            .unwrap_or_else(|| panic!("second line {lease:?}"))
            .to_owned();
        client
    }

    /// `ssh -T user@edge [command]` with this stack's options: the command goes through
    /// sshd to the gate.
    pub fn ssh_command(&self, user: &str, command: Option<&str>) -> Command {
        self.ssh_with_tty(user, false, command)
    }

    /// Like [`Stack::ssh_command`]; with `tty`, `-tt` (force a terminal) instead of `-T`.
    pub fn ssh_with_tty(&self, user: &str, tty: bool, command: Option<&str>) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.arg(if tty { "-tt" } else { "-T" }).args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
        ]);
        for option in self.ssh_options(user) {
            ssh.arg("-o").arg(option);
        }
        ssh.arg("--").arg(format!("{user}@127.0.0.1"));
        if let Some(command) = command {
            ssh.arg(command);
        }
        ssh.env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", "/usr/bin:/bin");
        ssh
    }

    /// Runs one remote command through ssh and the gate: (exit code, JSON on stdout).
    pub fn ssh_ctl(&self, user: &str, command: &str) -> (i32, Value) {
        let output = self
            .ssh_command(user, Some(command))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        parse_reply(user, command, &output)
    }

    /// The user's leases as the edge lists them (`mytunneld ctl list` through ssh).
    pub fn leases(&self, user: &str) -> Vec<Value> {
        let (code, list) = self.ssh_ctl(user, "mytunneld ctl list");
        assert_eq!(code, 0, "{user} list: {list}");
        list.as_array().unwrap().clone()
    }

    /// The state of lease `id` in `user`'s list (None when absent).
    pub fn lease_state(&self, user: &str, id: &str) -> Option<Value> {
        self.leases(user).into_iter().find(|l| l["lease_id"] == id)
    }

    /// GET through Caddy's HTTP server with `Host: host`.
    pub fn get(&self, host: &str) -> Option<(u16, String)> {
        http_get(self.caddy.http_address(), host)
    }

    /// Waits until `host` serves `body` through Caddy.
    pub fn assert_serves(&self, host: &str, body: &str, timeout: Duration) {
        let mut last = None;
        let ok = eventually(timeout, || {
            last = self.get(host);
            last.as_ref()
                .is_some_and(|(status, b)| *status == 200 && b == body)
        });
        assert!(
            ok,
            "{host} did not serve {body:?} within {timeout:?}; last answer {last:?}\nroutes: {}\nserve log: {}",
            self.routes(),
            self.serve_log()
        );
    }

    /// Whether `host` is not routed to any app: Caddy's catch-all 404 or a 502.
    pub fn not_routed(&self, host: &str) -> bool {
        match self.get(host) {
            Some((404, body)) => body == "no tunnel here",
            Some((502, _)) => true,
            _ => false,
        }
    }

    pub fn routes(&self) -> String {
        mytunnel_edge::testkit::admin_get(
            self.caddy.admin_socket(),
            "/config/apps/http/servers/srv0/routes",
        )
        .unwrap_or_default()
    }

    pub fn serve_log(&self) -> String {
        std::fs::read_to_string(self.path("serve.log")).unwrap_or_default()
    }

    /// The `ssh` processes running with `user`'s key of this stack (masters, forwards).
    pub fn ssh_pids_of(&self, user: &str) -> Vec<i32> {
        let key = format!("IdentityFile={}", self.key(user).display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let args = cmdline(*pid);
                args.first().is_some_and(|a| a.ends_with("ssh")) && args.contains(&key)
            })
            .collect()
    }

    /// Kills (SIGKILL, by pid) every `ssh` running with `user`'s key of this stack.
    pub fn kill_ssh_of(&self, user: &str) {
        for pid in self.ssh_pids_of(user) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Kills (SIGKILL, by pid) every process still running from this stack's directory:
    /// clients' ssh masters and forwards (their arguments name our key files), gates.
    fn kill_leftovers(&self) {
        let dir = self.dir.path().display().to_string();
        let me = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for pid in entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            if u32::try_from(pid).is_ok_and(|p| p == me) {
                continue;
            }
            if cmdline(pid).iter().any(|a| a.contains(&dir)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.serve.take();
        self.kill_leftovers();
        self.sshd.kill();
        // Remove this stack's keys; other stacks' lines stay.
        let _lock = SetupLock::take();
        for user in USERS {
            let _ = Command::new(script())
                .arg(user)
                .arg(self.key(user).with_extension("pub"))
                .arg("--remove")
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output();
        }
    }
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-edge-ssh-key.sh")
}

pub fn parse_reply(user: &str, command: &str, output: &Output) -> (i32, Value) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{user}: {command:?}: not JSON ({e}): exit {}, stdout {stdout:?}, stderr {:?}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), json)
}

pub fn code(json: &Value) -> &str {
    json["error"]["code"].as_str().unwrap_or("<no error>")
}
