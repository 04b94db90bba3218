//! Test support shared by the edge, CLI and end-to-end tests (feature `testkit`): a real
//! Caddy started on loopback ports for contract and component tests.
//!
//! Every process started here is stopped by its pid when its handle drops.
#![allow(clippy::missing_panics_doc)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mytunnel_core::admin::CaddyAdminAddress;
use serde_json::{json, Value};

/// A free loopback TCP port: bound to `127.0.0.1:0`, then released for a child to bind.
/// Prefer [`ReservedPort`] for children that bind with `SO_REUSEPORT` (Caddy does).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A loopback port held for a child that binds with `SO_REUSEPORT`, as Caddy does: the
/// socket stays bound (not listening) with `SO_REUSEPORT`, so the child can join it but no
/// other test is handed the same port while this lives.
#[derive(Debug)]
pub struct ReservedPort {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl ReservedPort {
    /// Reserves a port the kernel picks on `127.0.0.1`.
    pub fn new() -> std::io::Result<ReservedPort> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseport(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let port = socket.local_addr()?.port();
        Ok(ReservedPort {
            _socket: socket,
            port,
        })
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    poll_every(timeout, Duration::from_millis(50), condition)
}

/// A running `mytunneld serve`, stopped by its pid (SIGKILL, then reaped) when dropped.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
}

impl ServeProcess {
    /// Starts `<bin> --env-file <env_file> serve` (environment cleared but `PATH`), as
    /// `user` (uid, gid) when given, its stderr in `log`; waits until it listens on the
    /// control socket of `socket_dir`. As the user it runs the way the installed unit
    /// runs it: the user's supplementary groups, and `CAP_KILL` as its one (ambient)
    /// capability (`setpriv`).
    pub fn start(
        bin: &Path,
        env_file: &Path,
        user: Option<(u32, u32)>,
        log: &Path,
        socket_dir: &Path,
    ) -> Result<ServeProcess, String> {
        let stderr =
            std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let mut command = match user {
            Some((uid, gid)) => {
                let mut setpriv = Command::new("setpriv");
                setpriv
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .args([
                        "--init-groups",
                        "--inh-caps=-all,+kill",
                        "--ambient-caps=-all,+kill",
                        "--bounding-set=-all,+kill",
                        "--",
                    ])
                    .arg(bin);
                setpriv
            }
            None => Command::new(bin),
        };
        let child = command
            .arg("--env-file")
            .arg(env_file)
            .arg("serve")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {} serve: {e}", bin.display()))?;
        let serve = ServeProcess { child };
        if !wait_for_serve(socket_dir, Duration::from_secs(20)) {
            return Err(format!(
                "serve never listened: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            ));
        }
        Ok(serve)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The owner directories `install-edge.sh` and `install-edge-ssh-key.sh` make under
/// `socket_dir`: `owners/` (0755), and for each user `owners/<user>`, owned by the user,
/// with `proxy_group` 2750 as on an edge (the proxy's group: Caddy's, and serve is in
/// it), or 0750 without one. Existing directories are kept.
pub fn make_owner_dirs(
    socket_dir: &Path,
    users: &[&str],
    proxy_group: Option<&str>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    let owners = socket_dir.join("owners");
    std::fs::create_dir_all(&owners).map_err(|e| io(&owners, e))?;
    std::fs::set_permissions(&owners, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io(&owners, e))?;
    for user in users {
        let dir = socket_dir.join("owners").join(user);
        let uid = nix::unistd::User::from_name(user)
            .map_err(|e| format!("user {user}: {e}"))?
            .ok_or_else(|| format!("no user {user}"))?
            .uid;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&dir, e)),
        }
        let gid = match proxy_group {
            Some(name) => Some(
                nix::unistd::Group::from_name(name)
                    .map_err(|e| format!("group {name}: {e}"))?
                    .ok_or_else(|| format!("no group {name}"))?
                    .gid,
            ),
            None => None,
        };
        nix::unistd::chown(&dir, Some(uid), gid).map_err(|e| format!("chown {user}: {e}"))?;
        let mode = if gid.is_some() { 0o2750 } else { 0o750 };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io(&dir, e))?;
    }
    Ok(())
}

/// Waits until `mytunneld serve` listens on the control socket of `socket_dir` (ctl
/// answers `service_unavailable` before that).
pub fn wait_for_serve(socket_dir: &Path, timeout: Duration) -> bool {
    let control = crate::sockets::control_socket(socket_dir);
    poll_every(timeout, Duration::from_millis(10), || {
        std::os::unix::net::UnixStream::connect(&control).is_ok()
    })
}

/// Polls `condition` every `every` until it holds or `timeout` passes (a short `every`
/// for waits that are themselves measured).
pub fn poll_every(timeout: Duration, every: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// The caddy binary: `$MYTUNNEL_CADDY_BIN`, else `caddy` on `PATH`.
pub fn caddy_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("MYTUNNEL_CADDY_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("caddy"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            "caddy is not installed: `cargo xtask ci` installs it (apt-get install caddy)"
                .to_owned()
        })
}

/// A real `caddy run` on loopback: admin API and one HTTP server `srv0` with automatic
/// HTTPS off and a catch-all route answering 404 "no tunnel here".
#[derive(Debug)]
pub struct RealCaddy {
    child: Child,
    admin: SocketAddr,
    http: SocketAddr,
    dir: tempfile::TempDir,
    _ports: Option<[ReservedPort; 2]>,
    /// Who it runs as, when not as this process's user.
    user: Option<nix::unistd::User>,
}

/// `caddy run --config <dir>/caddy.json` with its home in `dir`, as `user` when given.
fn caddy_command(binary: &Path, dir: &Path, user: Option<&nix::unistd::User>) -> Command {
    let mut command = match user {
        Some(user) => {
            let mut setpriv = Command::new("setpriv");
            setpriv
                .arg(format!("--reuid={}", user.uid))
                .arg(format!("--regid={}", user.gid))
                .args(["--init-groups", "--"])
                .arg(binary);
            setpriv
        }
        None => Command::new(binary),
    };
    command
        .arg("run")
        .arg("--config")
        .arg(dir.join("caddy.json"))
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .stdin(Stdio::null());
    command
}

/// The config a fresh test Caddy starts with (and returns to on [`RealCaddy::reset`]).
pub fn base_config(admin: SocketAddr, http: SocketAddr, with_catch_all: bool) -> Value {
    let routes = if with_catch_all {
        json!([{
            "handle": [{ "handler": "static_response", "status_code": 404, "body": "no tunnel here" }]
        }])
    } else {
        Value::Null
    };
    let server = json!({
        "listen": [http.to_string()],
        "automatic_https": { "disable": true },
        "routes": routes,
    });
    json!({
        "admin": { "listen": admin.to_string() },
        "apps": { "http": { "servers": { "srv0": server } } },
    })
}

impl RealCaddy {
    /// Starts Caddy and waits until its admin API answers (at most 15 s).
    pub fn start() -> Result<RealCaddy, String> {
        Self::start_as(None)
    }

    /// Like [`RealCaddy::start`], run as `user` (with its groups, as systemd's
    /// `User=caddy` of the distribution's unit does) when given.
    pub fn start_as(user: Option<&str>) -> Result<RealCaddy, String> {
        let binary = caddy_binary()?;
        let user = match user {
            Some(name) => Some(
                nix::unistd::User::from_name(name)
                    .map_err(|e| format!("user {name}: {e}"))?
                    .ok_or_else(|| format!("no user {name}: install Caddy's package"))?,
            ),
            None => None,
        };
        let mut last_error = String::new();
        for _attempt in 0..3 {
            match Self::try_start(&binary, user.as_ref()) {
                Ok(caddy) => return Ok(caddy),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn try_start(binary: &Path, user: Option<&nix::unistd::User>) -> Result<RealCaddy, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let admin_port = ReservedPort::new().map_err(|e| e.to_string())?;
        let http_port = ReservedPort::new().map_err(|e| e.to_string())?;
        let (admin, http) = (admin_port.addr(), http_port.addr());
        let config_path = dir.path().join("caddy.json");
        std::fs::write(&config_path, base_config(admin, http, true).to_string())
            .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("caddy.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        if let Some(user) = user {
            // Its own directory, as /var/lib/caddy is the packaged Caddy's.
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))
                .map_err(|e| format!("chown for {}: {e}", user.name))?;
        }
        // Ports held with SO_REUSEPORT can only be shared by the same uid: another user's
        // Caddy binds them once they are let go (a port taken meanwhile is retried).
        let ports = if user.is_some() {
            drop((admin_port, http_port));
            None
        } else {
            Some([admin_port, http_port])
        };
        let child = caddy_command(binary, dir.path(), user)
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut caddy = RealCaddy {
            child,
            admin,
            http,
            dir,
            _ports: ports,
            user: user.cloned(),
        };
        caddy.wait_ready()?;
        Ok(caddy)
    }

    /// Kills Caddy (SIGKILL) and waits for it: the admin API and server are gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts Caddy again on the same ports with the base config (every API-added route
    /// lost), as a crash and restart would.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let binary = caddy_binary()?;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("caddy.log"))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        self.child = caddy_command(&binary, self.dir.path(), self.user.as_ref())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| e.to_string())?;
        self.wait_ready()
    }

    /// Waits until this Caddy (not another one sharing the port) answers with its config.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let ours = self.http.to_string();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("caddy exited with {status}: {}", self.log()));
            }
            if admin_get(self.admin, "/config/apps/http/servers/srv0/listen")
                .is_ok_and(|listen| listen.contains(&ours))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "caddy admin API did not answer within 15s: {}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until Caddy's previous admin server has stopped after a config change (each
    /// change replaces it, and requests meeting the old one are dropped).
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            let started = log.matches("admin endpoint started").count();
            let stopped = log.matches("stopped previous server").count();
            if stopped + 1 >= started || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The admin API address.
    pub fn admin_address(&self) -> CaddyAdminAddress {
        CaddyAdminAddress::Tcp(self.admin)
    }

    /// The admin API socket address.
    pub fn admin_socket(&self) -> SocketAddr {
        self.admin
    }

    /// The address of the HTTP server `srv0`.
    pub fn http_address(&self) -> SocketAddr {
        self.http
    }

    /// The pid of the caddy process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Caddy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }

    /// Replaces the whole config, as a restart that lost every API-added route does.
    pub fn reset(&self, with_catch_all: bool) -> Result<(), String> {
        admin_request(
            self.admin,
            "POST",
            "/load",
            Some(&base_config(self.admin, self.http, with_catch_all)),
        )?;
        self.settle();
        Ok(())
    }
}

impl Drop for RealCaddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking GET to an admin API (readiness polling needs no runtime).
pub fn admin_get(admin: SocketAddr, path: &str) -> Result<String, String> {
    admin_request(admin, "GET", path, None)
}

/// A blocking HTTP/1.0 request to a loopback admin API; answers the body of a 2xx.
pub fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<String, String> {
    // A request meeting Caddy's previous admin server during a reload is reset unrun.
    let mut last = String::new();
    for _ in 0..3 {
        match admin_request_once(admin, method, path, body) {
            Ok(answer) => return answer,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(last)
}

/// `Ok(answer)` when an HTTP answer came back (2xx body, or the status line as error);
/// `Err` when the connection failed without one.
fn admin_request_once(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Result<String, String>, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    if response.is_empty() {
        return Err("connection closed without an answer".into());
    }
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(Ok(body.to_owned()))
    } else {
        Ok(Err(format!(
            "{method} {path}: {}",
            head.lines().next().unwrap_or("")
        )))
    }
}

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
        let keygen = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "mytunnel-test-sshd",
                "-f",
            ])
            .arg(&host_key)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run ssh-keygen: {e}"))?;
        if !keygen.status.success() {
            return Err(format!(
                "ssh-keygen failed: {}",
                String::from_utf8_lossy(&keygen.stderr)
            ));
        }
        let public = std::fs::read_to_string(dir.path().join("ssh_host_ed25519_key.pub"))
            .map_err(|e| e.to_string())?;
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
        let child = Command::new(binary)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
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
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let pid = nix::unistd::Pid::from_raw(pid);
                // A stopped listener forks no new connection process while they are found.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP);
                for child in children_of(pid.as_raw()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(child),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// Kills the listener and every process below it (connection monitors and the
    /// per-user processes they fork, which [`Sshd::kill`] leaves to die on their own).
    pub fn kill_tree(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(root) = i32::try_from(self.child.id()) {
                // A stopped listener forks no new connection process while they are found.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(root),
                    nix::sys::signal::Signal::SIGSTOP,
                );
                let mut all = vec![root];
                let mut next = 0;
                while let Some(&pid) = all.get(next) {
                    all.extend(children_of(pid));
                    next += 1;
                }
                for pid in all.into_iter().skip(1) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        self.kill();
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
            self.child = Command::new(&binary)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(self.dir.path().join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.try_clone().map_err(|e| e.to_string())?)
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

/// The pids whose parent is `parent` (from `/proc/<pid>/stat`).
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// The parent pid of `pid`, from the field after the command name in `/proc/<pid>/stat`.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    // " <state> <ppid> …"
    after_name.split_whitespace().nth(1)?.parse().ok()
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
