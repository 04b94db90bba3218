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

use mytunnel_test_support::{
    children_of, client_command, cmdline, copy_executable, example_binary, generate_key, kill_all,
    pids, signal, stdout_json, stdout_lines, Below, LoopbackServer, RealCaddy, ServeProcess, Sshd,
};
use serde_json::Value;

pub const GROUP: &str = "mytunnel-e2e";
/// The stack's tunnel users. `mallory` is only for the attack whose defence ends every
/// connection of its user: tests run in parallel, and users are shared between stacks.
pub const USERS: [&str; 4] = ["alice", "bob", "ops", "mallory"];
pub const BASE_DOMAIN: &str = "e2e.test";
/// The service user `serve` runs as (and sshd's AuthorizedKeysCommandUser): a member of
/// the group without a login shell, as install-edge.sh makes it.
pub const SERVICE_USER: &str = "mytunneld-e2e";
/// The proxy's group: the packaged Caddy's, whose user runs the stacks' Caddy. Owner
/// directories are `<user>:caddy` 2750, and the service user is a member.
pub const PROXY_GROUP: &str = "caddy";
/// Longer than the client's heartbeat interval (max(TTL/3, 10s) = 10s), so a live client
/// keeps its lease; short enough that an abandoned lease expires quickly.
pub const LEASE_TTL_SECS: u64 = 12;
/// Ports a stack's leases use: one window of this many per stack, claimed under a lock.
const PORT_WINDOW: u16 = 16;
const PORT_WINDOWS_FROM: u16 = 24_000;
const PORT_WINDOWS_TO: u16 = 32_000;

pub use mytunnel_test_support::eventually;

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn check(output: &Output, what: &str) {
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
pub struct SetupLock(nix::fcntl::Flock<std::fs::File>);

impl SetupLock {
    pub fn take() -> SetupLock {
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

/// A tiny HTTP server on `127.0.0.1:0` answering every request with `body`.
#[derive(Debug)]
pub struct App(LoopbackServer);

impl App {
    pub fn start(body: &str) -> App {
        App::start_on("127.0.0.1:0".parse().unwrap(), body)
    }

    /// Like [`App::start`], listening on `addr` only (e.g. `[::1]:0`).
    pub fn start_on(addr: SocketAddr, body: &str) -> App {
        let body = body.to_owned();
        App(LoopbackServer::start_on(addr, move |stream, _| serve_one(stream, &body)).unwrap())
    }

    pub fn port(&self) -> u16 {
        self.0.port()
    }
}

fn serve_one(mut stream: TcpStream, body: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    // Answer each request on the connection (Caddy keeps upstream connections alive).
    loop {
        let mut request_line = None;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            request_line.get_or_insert(line);
        }
        let Some(request_line) = request_line else {
            return;
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // HTTP/1.0 (a plain client straight at the app) ends with the response.
        if stream.write_all(response.as_bytes()).is_err()
            || request_line.trim_end().ends_with("HTTP/1.0")
        {
            return;
        }
    }
}

/// One HTTP/1.0 GET to `addr` with `Host: host`: (status, body), or None when the
/// connection failed.
pub fn http_get(addr: SocketAddr, host: &str) -> Option<(u16, String)> {
    mytunnel_test_support::http_get_path(addr, host, "/")
}

/// One answer a [`Visitors`] thread read: when, the status and the body.
#[derive(Debug, Clone)]
pub struct Visit {
    /// When the request was sent.
    pub sent: std::time::Instant,
    pub status: u16,
    pub body: String,
}

/// Visitors that each hold one keep-alive HTTP/1.1 connection to `addr` and send
/// `GET /` with `Host: host` on it, one after another, reconnecting when it closes; every
/// answer is recorded. Stopped (and joined) when dropped.
#[derive(Debug)]
pub struct Visitors {
    visits: Arc<std::sync::Mutex<Vec<Visit>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Visitors {
    pub fn start(addr: SocketAddr, host: &str, count: usize) -> Visitors {
        let visits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let (visits, stop, host) =
                    (Arc::clone(&visits), Arc::clone(&stop), host.to_owned());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                        else {
                            continue;
                        };
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut reader = BufReader::new(stream.try_clone().unwrap());
                        let mut writer = stream;
                        while !stop.load(Ordering::SeqCst) {
                            let request = format!(
                                "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mytunnel-e2e\r\n\r\n"
                            );
                            let sent = std::time::Instant::now();
                            if writer.write_all(request.as_bytes()).is_err() {
                                break;
                            }
                            let Some((status, body)) = read_response(&mut reader) else {
                                break;
                            };
                            visits.lock().unwrap().push(Visit { sent, status, body });
                        }
                    }
                })
            })
            .collect();
        Visitors {
            visits,
            stop,
            threads,
        }
    }

    /// Every answer so far.
    pub fn visits(&self) -> Vec<Visit> {
        self.visits.lock().unwrap().clone()
    }

    /// Waits until at least `count` requests sent after `since` were answered (at most
    /// `timeout`); returns those answers. A request sent before `since` may be answered
    /// after it: it was on its way already.
    pub fn after(&self, since: std::time::Instant, count: usize, timeout: Duration) -> Vec<Visit> {
        let enough = eventually(timeout, || {
            self.visits().iter().filter(|v| v.sent > since).count() >= count
        });
        let after: Vec<Visit> = self
            .visits()
            .into_iter()
            .filter(|v| v.sent > since)
            .collect();
        assert!(enough, "only {} answers in {timeout:?}", after.len());
        after
    }
}

impl Drop for Visitors {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One HTTP/1.1 response with a `Content-Length` (Caddy's and the test apps' answers):
/// (status, body), or None when the connection ended.
fn read_response(reader: &mut BufReader<TcpStream>) -> Option<(u16, String)> {
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).ok()? == 0 {
        return None;
    }
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
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

    /// The ssh that carries the forward: the client's child `ssh` that is its connection
    /// (`-M`), or with `--no-ssh-mux` its `ssh -N -R`.
    pub fn data_plane_pid(&self) -> Option<i32> {
        children_of(i32::try_from(self.pid()).unwrap())
            .into_iter()
            .find(|pid| {
                let args = cmdline(*pid);
                args.first().is_some_and(|a| a.ends_with("ssh"))
                    && args.iter().any(|a| a == "-R" || a == "-M")
            })
    }

    /// Every ssh process this client started that is still running.
    pub fn ssh_children(&self) -> Vec<i32> {
        children_of(i32::try_from(self.pid()).unwrap())
            .into_iter()
            .filter(|pid| cmdline(*pid).first().is_some_and(|a| a.ends_with("ssh")))
            .collect()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(self.pid(), sig).unwrap();
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
        kill_all(&mut self.child, Below::Children);
    }

    /// The next stdout line within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

/// A process embedding the SDK: the `edge` example, one `Edge` (one SSH connection)
/// with a tunnel per port.
pub struct SdkEdge {
    child: Child,
    stderr: PathBuf,
    /// Each tunnel's host, in the order of the ports.
    pub hosts: Vec<String>,
}

impl SdkEdge {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Every ssh process this program started that is still running.
    pub fn ssh_children(&self) -> Vec<i32> {
        children_of(i32::try_from(self.pid()).unwrap())
            .into_iter()
            .filter(|pid| cmdline(*pid).first().is_some_and(|a| a.ends_with("ssh")))
            .collect()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(self.pid(), sig).unwrap();
    }
}

impl Drop for SdkEdge {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill_all(&mut self.child, Below::Children);
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_all();
        }
    }
}

/// What a stack is built with.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub lease_ttl_secs: u64,
    pub route_mode: RouteMode,
    /// A PostgreSQL database instead of the stack's own SQLite file.
    pub database: Option<SharedDatabase>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            lease_ttl_secs: LEASE_TTL_SECS,
            route_mode: RouteMode::Routes,
            database: None,
        }
    }
}

/// A PostgreSQL database several stacks share, as docs/operations.md sets one up: the URL
/// names a login without its password, which is in a password file only the service
/// user reads, given to serve as `PGPASSFILE`.
#[derive(Debug, Clone)]
pub struct SharedDatabase {
    /// `postgres://<login>@127.0.0.1:<port>/<database>`.
    pub url: String,
    /// The password file.
    pub pgpass: PathBuf,
    /// The server and the password file's directory, kept while any stack uses them.
    _keep: std::sync::Arc<(mytunnel_test_support::RealPostgres, tempfile::TempDir)>,
}

impl SharedDatabase {
    /// Starts a PostgreSQL server with a login `mytunnel` owning database `leases`, and
    /// writes its password file for the service user.
    pub fn start() -> SharedDatabase {
        {
            let _lock = SetupLock::take();
            ensure_group_and_service_user();
        }
        let pg = mytunnel_test_support::RealPostgres::start().unwrap();
        let url = pg
            .create_login("mytunnel", "e2e-password", "leases")
            .unwrap();
        let dir = tempfile::Builder::new()
            .prefix("mytunnel-pgpass-")
            .tempdir()
            .unwrap();
        set_mode(dir.path(), 0o755);
        let pgpass = dir.path().join("pgpass");
        std::fs::write(
            &pgpass,
            format!("127.0.0.1:{}:leases:mytunnel:e2e-password\n", pg.port()),
        )
        .unwrap();
        let service = nix::unistd::User::from_name(SERVICE_USER).unwrap().unwrap();
        nix::unistd::chown(&pgpass, Some(service.uid), Some(service.gid)).unwrap();
        set_mode(&pgpass, 0o600);
        SharedDatabase {
            url,
            pgpass,
            _keep: std::sync::Arc::new((pg, dir)),
        }
    }
}

/// The edge's route mode, with the sshd settings each needs for the tunnel group (as the
/// install script writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMode {
    /// One Caddy route per lease to a loopback port.
    Routes,
    /// One wildcard route to per-owner unix sockets through host links.
    Static,
}

impl RouteMode {
    pub fn name(self) -> &'static str {
        match self {
            RouteMode::Routes => "routes",
            RouteMode::Static => "static",
        }
    }

    /// The sshd settings `install-edge.sh` writes for this mode (its `MaxStartups` and its
    /// `Match Group` block, less the `AuthorizedKeys*` lines: the suite's users enrol key
    /// files), after the sftp subsystem the distribution's sshd_config declares (a tunnel
    /// key asking for it must meet the gate).
    fn sshd_config(self) -> String {
        format!(
            "Subsystem sftp /usr/lib/openssh/sftp-server\n{}",
            mytunnel_test_support::production_sshd_dropin(self.name(), GROUP).unwrap()
        )
    }
}

/// One edge and its users, private to one test.
#[derive(Debug)]
pub struct Stack {
    // Dropped in order: serve, sshd (and its connections), Caddy, then the directory.
    serve: Option<ServeProcess>,
    pub sshd: Sshd,
    pub caddy: RealCaddy,
    ports: PortWindow,
    dir: tempfile::TempDir,
    client_count: std::cell::Cell<u32>,
    /// The shared database, kept until the last stack using it is gone.
    _database: Option<SharedDatabase>,
}

impl Stack {
    pub fn new() -> Stack {
        Stack::with(StackOptions::default())
    }

    pub fn with(options: StackOptions) -> Stack {
        Stack::with_env(options, "")
    }

    /// Like [`Stack::with`], with `extra_env` appended to the edge env file (later lines
    /// win), e.g. a wider port range for a load test.
    pub fn with_env(options: StackOptions, extra_env: &str) -> Stack {
        assert!(
            nix::unistd::getuid().is_root(),
            "the end-to-end tests create OS users and start sshd: run them as root \
             (cargo xtask e2e)"
        );
        {
            let _lock = SetupLock::take();
            ensure_group_and_service_user();
        }
        // Caddy as its own user, as the distribution's package runs it: it reaches the
        // tunnels' sockets through its group, like on an edge.
        let caddy = RealCaddy::start_as(Some("caddy")).unwrap();
        let sshd = Sshd::start_with(&options.route_mode.sshd_config()).unwrap();
        let ports = PortWindow::claim();
        let dir = tempfile::Builder::new()
            .prefix("mytunnel-e2e-")
            .tempdir()
            .unwrap();
        set_mode(dir.path(), 0o755);

        let bin = dir.path().join("mytunneld");
        copy_executable(Path::new(env!("CARGO_BIN_EXE_mytunneld")), &bin).unwrap();

        let mut stack = Stack {
            serve: None,
            sshd,
            caddy,
            ports,
            dir,
            client_count: std::cell::Cell::new(0),
            _database: options.database.clone(),
        };
        let group = nix::unistd::Group::from_name(GROUP).unwrap().unwrap();
        // The service user's own directories, as install-edge.sh makes them: the database
        // (no tunnel user may enter it: serve alone opens the database, ctl asks serve)
        // and the socket directory, where serve's control socket lives in both modes.
        let service = nix::unistd::User::from_name(SERVICE_USER)
            .unwrap()
            .unwrap()
            .uid;
        let db_dir = stack.path("db");
        for (path, mode) in [(db_dir.clone(), 0o700), (stack.socket_dir(), 0o755)] {
            std::fs::create_dir(&path).unwrap();
            nix::unistd::chown(&path, Some(service), Some(group.gid)).unwrap();
            set_mode(&path, mode);
        }
        // The socket layout install-edge.sh makes; install-edge-ssh-key.sh makes each
        // user's own directory in owners/.
        stack.make_socket_dir();
        stack.install_users();
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
        let mode_env = format!(
            "MYTUNNEL_ROUTE_MODE={}\nMYTUNNEL_SOCKET_DIR={}\n",
            options.route_mode.name(),
            stack.socket_dir().display()
        );
        // Sharing a database, the other edges reach this one's Caddy at its HTTP address.
        let database_env = match &options.database {
            Some(database) => format!(
                "MYTUNNEL_DB_URL={}\nMYTUNNEL_EDGE_URL=http://{}\n",
                database.url,
                stack.caddy.http_address()
            ),
            None => String::new(),
        };
        let env = format!("{env}{mode_env}{database_env}{extra_env}");
        let env_path = stack.env_file();
        std::fs::write(&env_path, env).unwrap();
        nix::unistd::chown(&env_path, None, Some(group.gid)).unwrap();
        set_mode(&env_path, 0o640);
        std::fs::write(stack.path("known_hosts"), stack.sshd.known_hosts_line()).unwrap();
        std::fs::create_dir(stack.path("home")).unwrap();
        std::fs::create_dir(stack.path("tmp")).unwrap();

        // The service user, with the tunnel group as its group, as on an edge: serve's
        // control socket (0660) is then reachable by the tunnel users' ctl.
        let serve_environment: Vec<(&str, &str)> = match &options.database {
            Some(database) => vec![("PGPASSFILE", database.pgpass.to_str().unwrap())],
            None => Vec::new(),
        };
        stack.serve = Some(
            ServeProcess::start_with_environment(
                &bin,
                &env_path,
                Some((service.as_raw(), group.gid.as_raw())),
                &stack.path("serve.log"),
                &stack.socket_dir(),
                &serve_environment,
            )
            .unwrap(),
        );
        stack
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Stops `serve` (by its pid), as a crash would.
    pub fn kill_serve(&mut self) {
        self.serve = None;
    }

    /// The key `user` logs in with here, and the known-hosts file that trusts this
    /// stack's sshd.
    pub fn login_files(&self, user: &str) -> (PathBuf, PathBuf) {
        (self.key(user), self.path("known_hosts"))
    }

    /// The socket directory (short: unix socket paths are).
    pub fn socket_dir(&self) -> PathBuf {
        self.path("s")
    }

    /// The socket layout install-edge.sh makes: `hosts/` for serve and `owners/` (root's).
    /// root's own `owners/root/` too (owned by root, the proxy's group, 2750): the load
    /// test's local clients run ctl as root.
    fn make_socket_dir(&self) {
        let hosts = self.socket_dir().join("hosts");
        std::fs::create_dir_all(&hosts).unwrap();
        let service = nix::unistd::User::from_name(SERVICE_USER)
            .unwrap()
            .unwrap()
            .uid;
        nix::unistd::chown(&hosts, Some(service), None).unwrap();
        mytunnel_test_support::make_owner_dirs(&self.socket_dir(), &["root"], Some(PROXY_GROUP))
            .unwrap();
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
            generate_key(&self.key(user), &format!("mytunnel-e2e-{user}")).unwrap();
        }
        let _lock = SetupLock::take();
        for user in USERS {
            let out = Command::new(script())
                .arg(user)
                .arg(self.key(user).with_extension("pub"))
                .arg("--group")
                .arg(GROUP)
                .arg("--gate-command")
                .arg(self.gate_command())
                .arg("--socket-dir")
                .arg(self.socket_dir())
                .args(["--proxy-group", PROXY_GROUP])
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output()
                .unwrap();
            check(&out, &format!("install-edge-ssh-key.sh {user}"));
        }
    }

    /// The ssh options every client of this stack uses for `user`.
    pub fn ssh_options(&self, user: &str) -> Vec<String> {
        self.sshd
            .client_options(&self.key(user), &self.path("known_hosts"))
    }

    /// `mytunnel <args> --edge user@127.0.0.1 --ssh-option …` as root, HOME in the stack.
    pub fn mytunnel_command(&self, user: &str, args: &[&str]) -> Command {
        let edge = format!("{user}@127.0.0.1");
        let mut all = args.to_vec();
        all.extend(["--edge", edge.as_str()]);
        self.mytunnel_command_without_edge(user, &all)
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

    /// Starts `mytunnel http <target> <args>` (a port, `host:port`, `http://…`,
    /// `https://…`) and waits for its `url:` and `lease:` lines.
    pub fn http_target(&self, user: &str, target: &str, args: &[&str]) -> Client {
        let client = self.spawn_http_target(user, target, args);
        self.await_opened(client)
    }

    /// Runs the SDK's `edge` example as `user`'s program: one `Edge` to this stack with a
    /// tunnel per port; returns once every tunnel printed its URL. The edge comes from
    /// `MYTUNNEL_EDGE`, and this stack's ssh options from a wrapper given as
    /// `MYTUNNEL_SSH_BIN`, as a user's `~/.ssh/config` would give them.
    pub fn sdk_edge(&self, user: &str, ports: &[u16]) -> SdkEdge {
        let example = example_binary("mytunnel-examples", "edge").unwrap();
        let wrapper = self.path(&format!("ssh-{user}"));
        let options: Vec<String> = self
            .ssh_options(user)
            .iter()
            .map(|o| format!("-o '{o}'"))
            .collect();
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec ssh {} \"$@\"\n", options.join(" ")),
        )
        .unwrap();
        set_mode(&wrapper, 0o755);
        let n = self.client_count.get() + 1;
        self.client_count.set(n);
        let stderr = self.path(&format!("sdk-{n}-{user}.stderr"));
        let mut child = Command::new(example)
            .args(ports.iter().map(u16::to_string))
            .env("MYTUNNEL_EDGE", format!("{user}@127.0.0.1"))
            .env("MYTUNNEL_SSH_BIN", &wrapper)
            .env("HOME", self.path("home"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let lines = stdout_lines(&mut child).unwrap();
        let mut edge = SdkEdge {
            child,
            stderr,
            hosts: Vec::new(),
        };
        for _ in ports {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no URL line; stderr: {}", edge.stderr()));
            // `https://<host> → http://127.0.0.1:<port>`
            let host = line
                .split_whitespace()
                .next()
                .and_then(|url| url.strip_prefix("https://"))
                .unwrap_or_else(|| panic!("line {line:?}"));
            edge.hosts.push(host.to_owned());
        }
        edge
    }

    /// Starts `mytunnel http <port> <args>` without waiting.
    pub fn spawn_http(&self, user: &str, port: u16, args: &[&str]) -> Client {
        self.spawn_http_target(user, &port.to_string(), args)
    }

    /// Starts `mytunnel http <target> <args>` without waiting.
    pub fn spawn_http_target(&self, user: &str, target: &str, args: &[&str]) -> Client {
        let mut all = vec!["http", target];
        all.extend_from_slice(args);
        self.spawn_client(user, self.mytunnel_command(user, &all))
    }

    /// Starts `command` (a `mytunnel http …` made otherwise, e.g. with a profile of its
    /// own) as a client of this stack: its stdout read line by line, its stderr in the
    /// stack's directory.
    pub fn spawn_client(&self, user: &str, mut command: Command) -> Client {
        let n = self.client_count.get() + 1;
        self.client_count.set(n);
        let stderr = self.path(&format!("client-{n}-{user}.stderr"));
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let lines = stdout_lines(&mut child).unwrap();
        Client {
            child,
            lines,
            stderr,
            url: String::new(),
            lease: String::new(),
        }
    }

    /// Waits (30 s at most) for a client from [`Stack::spawn_http`] to print its `url:` and
    /// `lease:` lines.
    pub fn await_opened(&self, mut client: Client) -> Client {
        let timeout = Duration::from_secs(30);
        let url = client.next_line(timeout).unwrap_or_else(|| {
            panic!(
                "no url line; exit {:?}; stderr: {}; serve log: {}\nsshd log (tail): {}",
                client.child.try_wait(),
                client.stderr(),
                self.serve_log(),
                tail(&self.sshd.log(), 15)
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
        self.ssh_with_flags(user, &[if tty { "-tt" } else { "-T" }], command)
    }

    /// `ssh <flags> … user@edge [command]` with this stack's options and no master, e.g.
    /// `-tt -s` for a subsystem on a terminal.
    pub fn ssh_with_flags(&self, user: &str, flags: &[&str], command: Option<&str>) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args(flags).args([
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

    /// `ssh -N -R <listen>:127.0.0.1:<port> user@edge` with `ExitOnForwardFailure`, as a
    /// tenant would run it by hand: no session, so no forced command runs; ssh exits at
    /// once when sshd refuses the bind. stdin is closed.
    pub fn ssh_remote_forward(&self, user: &str, listen: &str, port: u16) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args([
            "-N",
            "-o",
            "BatchMode=yes",
            "-o",
            "ExitOnForwardFailure=yes",
        ])
        .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"]);
        for option in self.ssh_options(user) {
            ssh.arg("-o").arg(option);
        }
        ssh.arg("-R")
            .arg(format!("{listen}:127.0.0.1:{port}"))
            .arg(format!("{user}@127.0.0.1"))
            .env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null());
        ssh
    }

    /// `ssh -M -N -S <control> user@edge`: a master connection a tenant keeps open, on
    /// which `ssh -O forward` asks for forwards later (no session, no forced command).
    pub fn ssh_master(&self, user: &str, control: &Path) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args(["-M", "-N", "-o", "BatchMode=yes", "-S"])
            .arg(control);
        for option in self.ssh_options(user) {
            ssh.arg("-o").arg(option);
        }
        ssh.arg(format!("{user}@127.0.0.1"))
            .env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null());
        ssh
    }

    /// `ssh -tt -M -S <control> user@edge`: a master holding its session on a terminal, as
    /// the client's data plane does (the gate holds the empty command; forwards are asked
    /// for over the master with `ssh -O forward`). stdin is closed.
    pub fn ssh_master_tty(&self, user: &str, control: &Path) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args(["-tt", "-M", "-o", "BatchMode=yes", "-S"])
            .arg(control);
        for option in self.ssh_options(user) {
            ssh.arg("-o").arg(option);
        }
        ssh.arg(format!("{user}@127.0.0.1"))
            .env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null());
        ssh
    }

    /// Whether the master at `control` answers `ssh -O check`.
    pub fn master_check(&self, control: &Path) -> bool {
        Command::new("ssh")
            .arg("-S")
            .arg(control)
            .args(["-O", "check", "x"])
            .env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", "/usr/bin:/bin")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `ssh -S <control> -O forward -R <listen>:127.0.0.1:<port>` on a running master.
    pub fn master_forward(&self, control: &Path, listen: &str, port: u16) -> Output {
        self.master_op(control, "forward", listen, port)
    }

    /// `ssh -S <control> -O cancel -R <listen>:127.0.0.1:<port>`: the listener goes, open
    /// channels stay.
    pub fn master_cancel(&self, control: &Path, listen: &str, port: u16) -> Output {
        self.master_op(control, "cancel", listen, port)
    }

    /// `ssh -S <control> -O <op> -R <listen>:127.0.0.1:<port>` on a running master.
    fn master_op(&self, control: &Path, op: &str, listen: &str, port: u16) -> Output {
        Command::new("ssh")
            .arg("-S")
            .arg(control)
            .args(["-O", op, "-R"])
            .arg(format!("{listen}:127.0.0.1:{port}"))
            .arg("x")
            .env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .output()
            .unwrap()
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

    /// Caddy's whole configuration as it answers it.
    pub fn caddy_config(&self) -> String {
        mytunnel_test_support::admin_get(self.caddy.admin_socket(), "/config/").unwrap_or_default()
    }

    pub fn routes(&self) -> String {
        self.caddy.routes().unwrap_or_default()
    }

    pub fn serve_log(&self) -> String {
        std::fs::read_to_string(self.path("serve.log")).unwrap_or_default()
    }

    /// How many SSH connections of `user` this stack's sshd holds: its per-connection
    /// processes (`sshd: <user> [priv]`, children of the listener).
    pub fn sshd_connections_of(&self, user: &str) -> usize {
        let prefix = format!("sshd: {user} ");
        children_of(i32::try_from(self.sshd.pid()).unwrap())
            .into_iter()
            .filter(|pid| {
                cmdline(*pid)
                    .first()
                    .is_some_and(|a| a.starts_with(&prefix))
            })
            .count()
    }

    /// The `ssh` processes running with `user`'s key of this stack (masters, forwards).
    pub fn ssh_pids_of(&self, user: &str) -> Vec<i32> {
        let key = format!("IdentityFile={}", self.key(user).display());
        pids()
            .into_iter()
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
        for pid in pids() {
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

/// The tunnel group and the service user (a member without a login shell, and of the
/// proxy's group, as install-edge.sh makes it), created when missing. Call with the
/// [`SetupLock`] held.
pub fn ensure_group_and_service_user() {
    let out = Command::new("groupadd")
        .args(["-f", GROUP])
        .output()
        .unwrap();
    check(&out, "groupadd");
    if nix::unistd::User::from_name(SERVICE_USER)
        .unwrap()
        .is_none()
    {
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/usr/sbin/nologin", "--gid", GROUP, SERVICE_USER])
            .output()
            .unwrap();
        check(&out, "useradd service user");
    }
    // serve reaches tunnel sockets through the proxy's group, to end them with their lease.
    let out = Command::new("usermod")
        .args(["-a", "-G", PROXY_GROUP, SERVICE_USER])
        .output()
        .unwrap();
    check(&out, "usermod service user");
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-edge-ssh-key.sh")
}

pub fn parse_reply(user: &str, command: &str, output: &Output) -> (i32, Value) {
    let json = stdout_json(output).unwrap_or_else(|e| panic!("{user}: {command:?}: {e}"));
    (output.status.code().unwrap_or(-1), json)
}

pub fn code(json: &Value) -> &str {
    json["error"]["code"].as_str().unwrap_or("<no error>")
}

// ---------------------------------------------------------------------------------------
// Additions for the docs tests (docs_quickstart.rs, docs_client_guide.rs).

impl Stack {
    /// The lowest lease port of this stack's window (the edge's `MYTUNNEL_MIN_PORT`).
    pub fn min_port(&self) -> u16 {
        self.ports.min
    }

    /// `mytunnel <args> --ssh-option …` as root, HOME in the stack, like
    /// [`Stack::mytunnel_command`] but without `--edge`: the edge comes from `args`, the
    /// environment or the profile in `$HOME/.config/mytunnel/config.toml`. The ssh options
    /// stand in for what a user's `~/.ssh/config` would hold (port, key, known hosts).
    pub fn mytunnel_command_without_edge(&self, user: &str, args: &[&str]) -> Command {
        client_command(
            Path::new(env!("CARGO_BIN_EXE_mytunnel")),
            args,
            &self.ssh_options(user),
            &self.path("home"),
            // The ssh control directories of clients killed by a test go with the stack.
            &self.path("tmp"),
        )
    }
}

/// A process whose stdout and stderr share one pipe, as on a terminal: its lines arrive
/// in the order it wrote them. Killed with every process it started when dropped.
#[derive(Debug)]
pub struct Merged {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Merged {
    /// Spawns `command` with stdout and stderr on one pipe.
    pub fn spawn(mut command: Command) -> Merged {
        let (read, write) = nix::unistd::pipe().unwrap();
        let write2 = write.try_clone().unwrap();
        command
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write2));
        let child = command.spawn().unwrap();
        // The command holds the write ends until dropped: drop it, so the reader sees EOF
        // when the child (and whatever inherited the pipe) is gone.
        drop(command);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(std::fs::File::from(read))
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Merged { child, lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Whether the process ends within `timeout`.
    pub fn exited(&mut self, timeout: Duration) -> bool {
        eventually(timeout, || self.child.try_wait().unwrap().is_some())
    }

    /// Waits (at most `timeout`) for the exit and for the end of the output; the exit
    /// status (None if still running) and every line not read yet.
    pub fn finish(&mut self, timeout: Duration) -> (Option<std::process::ExitStatus>, Vec<String>) {
        let mut status = None;
        eventually(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        let mut rest = Vec::new();
        if status.is_some() {
            while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                rest.push(line);
            }
        } else {
            while let Ok(line) = self.lines.try_recv() {
                rest.push(line);
            }
        }
        (status, rest)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(self.pid(), sig).unwrap();
    }

    /// Kills the process and every process it started (SIGKILL, by pid).
    pub fn kill_all(&mut self) {
        kill_all(&mut self.child, Below::Children);
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_all();
        }
    }
}

/// A docs page run for real: its fenced `console` blocks are commands (`$ …`) and the
/// lines they print, run against a [`Stack`]; the output must match the page up to lease
/// ids, timestamps, versions and whitespace runs. The page's placeholders (edge, base
/// domain, local port 3000, edge ports from 21000, generated names) are mapped to the
/// stack's values both ways.
///
/// What a page may hold:
/// - ```` ```console ```` blocks: `$ mytunnel …` (run to its end; `mytunnel http …` runs
///   in the background and the page shows its first lines), `$ curl https://HOST` (a GET
///   through the stack's Caddy with that Host), `$ echo $?` (the previous exit code),
///   `^C` (SIGINT to the background `mytunnel http`; the page shows its last lines), and
///   `$ cargo install …` (the page's arguments, run from the workspace root into a
///   directory of the stack; the page shows lines that must be among cargo's, and every
///   later `mytunnel` is the installed one).
/// - ```` ```toml ```` blocks whose first line is `# ~/PATH`: written to that file under
///   the client's HOME before the next command.
/// - `<!-- docs-test: a killed client holds NAME -->`: a client publishing NAME is
///   started and killed with its ssh (SIGKILL), leaving an active lease behind.
pub mod page {
    use super::{eventually, App, Merged, Stack};
    use mytunnel_test_support::client_command;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// The page's local port, first edge port, edge and base domain.
    pub const PAGE_PORT: &str = "3000";
    pub const PAGE_MIN_PORT: u16 = 21000;
    /// The edge's socket directory on the pages (the default).
    pub const PAGE_SOCKET_DIR: &str = "/var/lib/mytunnel-sockets";
    pub const PAGE_BASE_DOMAIN: &str = "tunnel.example.com";
    pub const PAGE_EDGE_HOST: &str = "edge.example.com";
    /// The reader's checkout of the repository on the pages (cargo prints its path).
    pub const PAGE_CHECKOUT: &str = "/path/to/mytunnel";
    /// How long `cargo install` may take: a release build from nothing, on two cores,
    /// beside other tests.
    const INSTALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

    /// The workspace's top directory: where a reader's checkout runs `cargo install`.
    pub fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    /// The target directory of this test build: `CARGO_TARGET_DIR` when set (relative to
    /// the workspace root when relative), else the workspace's `target`. `cargo install`
    /// builds there, so a release build already made (CI makes one before the tests) is
    /// reused.
    pub fn target_dir() -> PathBuf {
        let root = workspace_root();
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => root.join(dir),
            _ => root.join("target"),
        }
    }

    /// Whether `name` is a variable the test runner (cargo or nextest) sets for a test
    /// process and a reader's shell does not have. cargo compares the variables a build
    /// script tracks with its own environment (ring's tracks `CARGO_MANIFEST_DIR` and
    /// `CARGO_PKG_*`): passed on to `cargo install`, they would rebuild what they touch.
    fn set_by_test_runner(name: &str) -> bool {
        ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_EXE_", "NEXTEST"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name)
    }

    /// `line` without terminal colour sequences (`CARGO_TERM_COLOR=always`).
    fn strip_colours(line: &str) -> String {
        let mut out = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// One step of a page.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Step {
        /// A file the page asks the reader to write (`~/…`).
        File { path: String, text: String },
        /// `$ command` and the lines the page shows after it.
        Run {
            command: String,
            expected: Vec<String>,
        },
        /// `^C` to the running `mytunnel http` and its last lines.
        Interrupt { expected: Vec<String> },
        /// A setup step the page describes in prose.
        Directive(String),
    }

    /// The steps of a page, in order.
    pub fn parse(page: &str) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut fence: Option<(String, Vec<String>)> = None;
        for line in page.lines() {
            if let Some(info) = line.strip_prefix("```") {
                match fence.take() {
                    None => fence = Some((info.trim().to_owned(), Vec::new())),
                    Some((lang, body)) => steps.extend(block(&lang, &body)),
                }
                continue;
            }
            if let Some((_, body)) = fence.as_mut() {
                body.push(line.to_owned());
                continue;
            }
            if let Some(rest) = line.trim().strip_prefix("<!-- docs-test:") {
                let directive = rest.strip_suffix("-->").expect("one-line directive");
                steps.push(Step::Directive(directive.trim().to_owned()));
            }
        }
        assert!(fence.is_none(), "unclosed code fence");
        steps
    }

    fn block(lang: &str, body: &[String]) -> Vec<Step> {
        match lang {
            "console" => {
                let mut steps = Vec::new();
                // Lines a block shows before its `^C`: what the running `mytunnel http`
                // printed meanwhile (its request log).
                let mut before_interrupt = Vec::new();
                for line in body {
                    if let Some(command) = line.strip_prefix("$ ") {
                        assert!(
                            before_interrupt.is_empty(),
                            "output lines before a command: {before_interrupt:?}"
                        );
                        steps.push(Step::Run {
                            command: command.to_owned(),
                            expected: Vec::new(),
                        });
                    } else if line == "^C" {
                        steps.push(Step::Interrupt {
                            expected: std::mem::take(&mut before_interrupt),
                        });
                    } else {
                        match steps.last_mut() {
                            Some(Step::Run { expected, .. } | Step::Interrupt { expected }) => {
                                expected.push(line.clone());
                            }
                            _ => before_interrupt.push(line.clone()),
                        }
                    }
                }
                assert!(
                    before_interrupt.is_empty(),
                    "output lines before any command: {before_interrupt:?}"
                );
                steps
            }
            "toml" => match body.first().and_then(|l| l.strip_prefix("# ~/")) {
                Some(path) => vec![Step::File {
                    path: path.trim().to_owned(),
                    text: body[1..].join("\n") + "\n",
                }],
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// Replaces `from` by `to` where it is not part of a longer word or number.
    pub fn replace_word(text: &str, from: &str, to: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        let mut before: Option<char> = None;
        while let Some(at) = rest.find(from) {
            let prev = rest[..at].chars().next_back().or(before);
            let next = rest[at + from.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            out.push_str(&rest[..at]);
            if word(prev) || word(next) {
                out.push_str(from);
            } else {
                out.push_str(to);
            }
            before = from.chars().next_back();
            rest = &rest[at + from.len()..];
        }
        out.push_str(rest);
        out
    }

    fn is_base32(c: char) -> bool {
        c.is_ascii_lowercase() || ('2'..='7').contains(&c)
    }

    /// Lease ids, timestamps, ssh and mytunnel versions replaced by placeholders;
    /// runs of whitespace collapsed.
    pub fn normalise(line: &str) -> String {
        // Lease ids: lease_ + 16 base32 characters.
        let mut out = String::new();
        let mut rest = line;
        while let Some(at) = rest.find("lease_") {
            out.push_str(&rest[..at]);
            let tail = &rest[at + 6..];
            let id_len = tail.chars().take_while(|c| is_base32(*c)).count();
            if id_len == 16 {
                out.push_str("lease_<id>");
                rest = &tail[16..];
            } else {
                out.push_str("lease_");
                rest = tail;
            }
        }
        out.push_str(rest);
        // RFC 3339 timestamps: 2026-11-29T17:44:10Z.
        let shape = "dddd-dd-ddTdd:dd:ddZ";
        let chars: Vec<char> = out.chars().collect();
        let mut stamped = String::new();
        let mut i = 0;
        while i < chars.len() {
            let fits = chars.len() - i >= shape.len()
                && shape.chars().zip(&chars[i..]).all(|(s, c)| match s {
                    'd' => c.is_ascii_digit(),
                    _ => s == *c,
                });
            if fits {
                stamped.push_str("<time>");
                i += shape.len();
            } else {
                stamped.push(chars[i]);
                i += 1;
            }
        }
        // The ssh client's version.
        let mut out = stamped;
        if let Some(at) = out.find("(OpenSSH_") {
            if let Some(end) = out[at..].find(')') {
                out.replace_range(at..at + end + 1, "(OpenSSH_<version>)");
            }
        }
        // Release versions x.y.z (not addresses: those have three dots).
        let mut versioned = String::new();
        let mut run = String::new();
        let flush = |run: &mut String, versioned: &mut String| {
            let dots = run.matches('.').count();
            let ok = dots == 2
                && !run.starts_with('.')
                && !run.ends_with('.')
                && !run.contains("..")
                && run.chars().any(|c| c.is_ascii_digit());
            versioned.push_str(if ok { "<version>" } else { run.as_str() });
            run.clear();
        };
        for c in out.chars() {
            if c.is_ascii_digit() || c == '.' {
                run.push(c);
            } else {
                flush(&mut run, &mut versioned);
                versioned.push(c);
            }
        }
        flush(&mut run, &mut versioned);
        // The request log's clock (14:03:07) and durations (0.4ms, 1.2s).
        versioned
            .split_whitespace()
            .map(|word| {
                let digits =
                    |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_digit() || c == '.');
                let clock = word.len() == 8
                    && word.char_indices().all(|(i, c)| {
                        if i == 2 || i == 5 {
                            c == ':'
                        } else {
                            c.is_ascii_digit()
                        }
                    });
                if clock {
                    "<clock>"
                } else if word
                    .strip_suffix("ms")
                    .or_else(|| word.strip_suffix('s'))
                    .is_some_and(digits)
                {
                    "<duration>"
                } else {
                    word
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs a page's steps against a stack, as `user`, with `app` as the page's port 3000.
    pub struct Runner<'a> {
        stack: &'a Stack,
        user: &'a str,
        app: &'a App,
        /// (page text, actual text, whole words only)
        subs: Vec<(String, String, bool)>,
        /// Running `mytunnel http` clients, oldest first.
        background: Vec<Merged>,
        last_exit: Option<i32>,
        /// What ran so far, for failure messages.
        transcript: Vec<String>,
        /// Every command the page ran, page form.
        pub ran: Vec<String>,
        /// The `mytunnel` a `cargo install` step installed: later steps run it.
        installed: Option<PathBuf>,
    }

    impl<'a> Runner<'a> {
        pub fn new(stack: &'a Stack, user: &'a str, app: &'a App) -> Runner<'a> {
            let mut subs = vec![
                (
                    format!("{user}@{PAGE_EDGE_HOST}"),
                    format!("{user}@127.0.0.1"),
                    false,
                ),
                (
                    PAGE_BASE_DOMAIN.to_owned(),
                    super::BASE_DOMAIN.to_owned(),
                    false,
                ),
                (PAGE_PORT.to_owned(), app.port().to_string(), true),
                (
                    PAGE_SOCKET_DIR.to_owned(),
                    stack.socket_dir().display().to_string(),
                    false,
                ),
            ];
            for k in 0..super::PORT_WINDOW {
                subs.push((
                    (PAGE_MIN_PORT + k).to_string(),
                    (stack.min_port() + k).to_string(),
                    true,
                ));
            }
            Runner {
                stack,
                user,
                app,
                subs,
                background: Vec::new(),
                last_exit: None,
                transcript: Vec::new(),
                ran: Vec::new(),
                installed: None,
            }
        }

        /// The `mytunnel` the page installed, if it did.
        pub fn installed(&self) -> Option<&Path> {
            self.installed.as_deref()
        }

        /// `mytunnel <args>` as the page's reader runs it: the installed binary once the
        /// page installed it, the test build's before (pages that install nothing).
        fn mytunnel_command(&self, args: &[&str]) -> Command {
            match &self.installed {
                Some(bin) => client_command(
                    bin,
                    args,
                    &self.stack.ssh_options(self.user),
                    &self.stack.path("home"),
                    &self.stack.path("tmp"),
                ),
                None => self.stack.mytunnel_command_without_edge(self.user, args),
            }
        }

        /// Page text → the stack's.
        pub fn to_actual(&self, text: &str) -> String {
            let mut text = text.to_owned();
            for (page, actual, word) in &self.subs {
                text = if *word {
                    replace_word(&text, page, actual)
                } else {
                    text.replace(page.as_str(), actual)
                };
            }
            text
        }

        /// The stack's text → the page's.
        pub fn to_page(&self, text: &str) -> String {
            let mut text = text.to_owned();
            for (page, actual, word) in &self.subs {
                text = if *word {
                    replace_word(&text, actual, page)
                } else {
                    text.replace(actual.as_str(), page)
                };
            }
            text
        }

        /// Maps `page` text to `actual` text (both ways) from now on.
        pub fn substitute(&mut self, page: &str, actual: &str) {
            self.learn(page, actual);
        }

        fn learn(&mut self, page: &str, actual: &str) {
            if page != actual && !self.subs.iter().any(|(p, _, _)| p == page) {
                // Names before domains and ports: insert first.
                self.subs
                    .insert(0, (page.to_owned(), actual.to_owned(), false));
            }
        }

        /// Learns lease ids, pairing the ids of each page line with those of the output
        /// line it is compared with.
        fn learn_ids(&mut self, expected: &[String], actual: &[String]) {
            fn ids(line: &str) -> Vec<String> {
                let mut found = Vec::new();
                let mut rest = line;
                while let Some(at) = rest.find("lease_") {
                    let tail = &rest[at + 6..];
                    if tail.chars().take_while(|c| is_base32(*c)).count() == 16 {
                        found.push(format!("lease_{}", &tail[..16]));
                        rest = &tail[16..];
                    } else {
                        rest = tail;
                    }
                }
                found
            }
            for (page, actual) in expected.iter().zip(actual) {
                for (page, actual) in ids(page).iter().zip(ids(actual)) {
                    self.learn(page, &actual);
                }
            }
        }

        /// Learns the generated name from a `url:` line of the page and of the output
        /// (only for commands without `--name`: a name asked for must match as it is).
        fn learn_names(&mut self, expected: &[String], actual: &[String]) {
            let host_of = |lines: &[String]| {
                lines.iter().find_map(|l| {
                    l.strip_prefix("url: https://")
                        .and_then(|h| h.split('.').next())
                        .map(str::to_owned)
                })
            };
            if let (Some(page), Some(actual)) = (host_of(expected), host_of(actual)) {
                self.learn(&page, &actual);
            }
        }

        fn compare(&mut self, what: &str, expected: &[String], actual: &[String]) {
            self.learn_ids(expected, actual);
            if std::env::var_os("MYTUNNEL_DOCS_RECORD").is_some() {
                // Updating a page: show what ran, in the page's terms, and go on.
                eprintln!("$ {what}");
                for line in actual {
                    eprintln!("{}", self.to_page(line));
                }
                return;
            }
            let want: Vec<String> = expected.iter().map(|l| normalise(l)).collect();
            let got: Vec<String> = actual.iter().map(|l| normalise(&self.to_page(l))).collect();
            assert!(
                want == got,
                "`{what}`: the output differs from the page.\n--- page (normalised):\n{}\n--- run (normalised):\n{}\n--- run (raw):\n{}\n--- transcript:\n{}\n--- serve log:\n{}",
                want.join("\n"),
                got.join("\n"),
                actual.join("\n"),
                self.transcript.join("\n"),
                self.stack.serve_log()
            );
        }

        /// Runs every step.
        pub fn run_page(&mut self, page: &str) {
            let steps = parse(page);
            assert!(!steps.is_empty(), "no steps in the page");
            for step in steps {
                self.step(step);
            }
            for mut background in self.background.drain(..) {
                background.kill_all();
            }
        }

        fn step(&mut self, step: Step) {
            match step {
                Step::File { path, text } => {
                    let path = self.stack.path("home").join(path);
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, self.to_actual(&text)).unwrap();
                    self.transcript.push(format!("wrote {}", path.display()));
                }
                Step::Directive(directive) => self.directive(&directive),
                Step::Interrupt { expected } => {
                    let mut background = self
                        .background
                        .pop()
                        .expect("^C without a running mytunnel http");
                    background.signal(nix::sys::signal::Signal::SIGINT);
                    let (status, lines) = background.finish(Duration::from_secs(30));
                    let status = status.expect("mytunnel http still runs after ^C");
                    self.last_exit = status.code();
                    self.ran.push("^C".to_owned());
                    self.transcript.push(format!("^C -> {status}"));
                    self.transcript.extend(lines.iter().cloned());
                    self.compare("^C", &expected, &lines);
                }
                Step::Run { command, expected } => self.run(&command, &expected),
            }
        }

        fn directive(&mut self, directive: &str) {
            if let Some(name) = directive.strip_prefix("a killed client holds ") {
                let name = self.to_actual(name.trim());
                let mut client =
                    self.stack
                        .http(self.user, self.app.port(), &["--name", name.as_str()]);
                client.kill_all();
                self.stack.kill_ssh_of(self.user);
                let state = self.stack.lease_state(self.user, &client.lease).unwrap();
                assert_eq!(state["state"], "active", "{state}");
                self.transcript
                    .push(format!("(a killed client holds {name}: {})", client.lease));
            } else {
                panic!("unknown docs-test directive {directive:?}");
            }
        }

        fn run(&mut self, command: &str, expected: &[String]) {
            assert!(
                !command.contains(['\'', '"', '|', ';', '&', '>', '<']),
                "keep page commands to plain words: {command:?}"
            );
            self.ran.push(command.to_owned());
            let actual = self.to_actual(command);
            let words: Vec<&str> = actual.split_whitespace().collect();
            self.transcript.push(format!("$ {actual}"));
            match words.as_slice() {
                ["mytunnel", "http", ..] => {
                    let mut background = Merged::spawn(self.mytunnel_command(&words[1..]));
                    let mut lines = Vec::new();
                    for _ in expected {
                        match background.next_line(Duration::from_secs(30)) {
                            Some(line) => lines.push(line),
                            None => break,
                        }
                    }
                    if !words.contains(&"--name") {
                        self.learn_names(expected, &lines);
                    }
                    // A page that shows no `lease:` line expects a refusal: the client
                    // ends, and is compared to its last line.
                    let refused = !expected.iter().any(|l| l.starts_with("lease: "));
                    let wait = if refused {
                        Duration::from_secs(30)
                    } else {
                        Duration::ZERO
                    };
                    if background.exited(wait) {
                        let (status, rest) = background.finish(Duration::from_secs(5));
                        let status = status.unwrap();
                        lines.extend(rest);
                        self.last_exit = status.code();
                        self.transcript.push(format!("({status})"));
                    } else {
                        self.background.push(background);
                    }
                    self.transcript.extend(lines.iter().cloned());
                    self.compare(command, expected, &lines);
                }
                ["mytunnel", args @ ..] => {
                    let mut child = Merged::spawn(self.mytunnel_command(args));
                    let (status, lines) = child.finish(Duration::from_secs(60));
                    let status = status.unwrap_or_else(|| panic!("`{command}` did not end"));
                    self.last_exit = status.code();
                    self.transcript.push(format!("({status})"));
                    self.transcript.extend(lines.iter().cloned());
                    self.compare(command, expected, &lines);
                }
                ["curl", url] => {
                    let host = url.strip_prefix("https://").expect("curl https://HOST");
                    let mut last = None;
                    eventually(Duration::from_secs(15), || {
                        last = self.stack.get(host);
                        last.as_ref().is_some_and(|(status, _)| *status == 200)
                    });
                    let (status, body) =
                        last.unwrap_or_else(|| panic!("`{command}`: no answer from Caddy"));
                    assert_eq!(status, 200, "`{command}`: {body}");
                    self.last_exit = Some(0);
                    let lines: Vec<String> = body.lines().map(str::to_owned).collect();
                    self.transcript.extend(lines.iter().cloned());
                    self.compare(command, expected, &lines);
                }
                ["echo", "$?"] => {
                    let code = self.last_exit.expect("echo $? before any command");
                    self.compare(command, expected, &[code.to_string()]);
                }
                ["cargo", "install", args @ ..] => self.cargo_install(command, args, expected),
                _ => panic!(
                    "the docs test cannot run {command:?}: use mytunnel, curl, echo $? or \
                     cargo install"
                ),
            }
        }

        /// `cargo install <args>` as the reader runs it in their checkout: the page's
        /// arguments from the workspace root, plus `--root` in the stack's directory (never
        /// `~/.cargo`) and `CARGO_TARGET_DIR` this build's target directory (a release build
        /// already there is reused), without the test runner's variables. cargo must succeed, print the page's lines among its
        /// progress, and leave an executable `mytunnel`, which later steps run.
        fn cargo_install(&mut self, command: &str, args: &[&str], expected: &[String]) {
            let workspace = workspace_root();
            let root = self.stack.path("cargo-root");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut install = Command::new(cargo);
            for (name, _) in std::env::vars_os() {
                if name.to_str().is_some_and(set_by_test_runner) {
                    install.env_remove(name);
                }
            }
            install
                .arg("install")
                .args(args)
                .arg("--root")
                .arg(&root)
                .env("CARGO_TARGET_DIR", target_dir())
                .current_dir(&workspace)
                .stdin(Stdio::null());
            let started = Instant::now();
            let mut child = Merged::spawn(install);
            let (status, lines) = child.finish(INSTALL_TIMEOUT);
            let status =
                status.unwrap_or_else(|| panic!("`{command}` did not end in {INSTALL_TIMEOUT:?}"));
            let lines: Vec<String> = lines.iter().map(|l| strip_colours(l)).collect();
            self.last_exit = status.code();
            // Seconds with a release build in the target directory, minutes without.
            let took = format!("({status} after {:.1?})", started.elapsed());
            eprintln!("`{command}`: {took}");
            self.transcript.push(took);
            self.transcript.extend(lines.iter().cloned());
            assert!(
                status.success(),
                "`{command}` failed ({status}):\n{}",
                lines.join("\n")
            );
            let bin = root.join("bin").join("mytunnel");
            let mode = std::fs::metadata(&bin)
                .unwrap_or_else(|e| {
                    panic!(
                        "`{command}` installed no {}: {e}\n{}",
                        bin.display(),
                        lines.join("\n")
                    )
                })
                .permissions()
                .mode();
            assert!(
                mode & 0o111 != 0,
                "{} is not executable ({mode:o})",
                bin.display()
            );
            // cargo names the checkout: the reader's is the page's placeholder.
            let checkout = workspace.display().to_string();
            let lines: Vec<String> = lines
                .iter()
                .map(|l| l.replace(&checkout, PAGE_CHECKOUT))
                .collect();
            self.compare_among(command, expected, &lines);
            self.installed = Some(bin);
        }

        /// Like `compare`, for output that varies around stable lines (cargo's progress):
        /// the page's lines must be among `actual`'s, in order.
        fn compare_among(&self, what: &str, expected: &[String], actual: &[String]) {
            if std::env::var_os("MYTUNNEL_DOCS_RECORD").is_some() {
                eprintln!("$ {what}");
                for line in actual {
                    eprintln!("{}", self.to_page(line));
                }
                return;
            }
            let got: Vec<String> = actual.iter().map(|l| normalise(&self.to_page(l))).collect();
            let mut rest = got.iter();
            for line in expected {
                let want = normalise(line);
                assert!(
                    rest.any(|g| *g == want),
                    "`{what}`: the page's line {want:?} is not in the output (normalised, \
                     after the page's lines before it):\n{}\n--- transcript:\n{}",
                    got.join("\n"),
                    self.transcript.join("\n")
                );
            }
        }

        /// The exit code of the last command.
        pub fn last_exit(&self) -> Option<i32> {
            self.last_exit
        }
    }

    impl Drop for Runner<'_> {
        fn drop(&mut self) {
            for mut background in self.background.drain(..) {
                background.kill_all();
            }
        }
    }
}
