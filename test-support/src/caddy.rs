//! A real Caddy on loopback, and blocking calls to its admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mytunnel_core::admin::CaddyAdminAddress;
use serde_json::{json, Value};

use crate::ports::ReservedPort;
use crate::process::{kill_all, Below};

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

/// Starts `caddy run --config <dir>/caddy.json` with its home in `dir`, as `user` when
/// given, its output appended to `<dir>/caddy.log`.
fn spawn_caddy(
    binary: &Path,
    dir: &Path,
    user: Option<&nix::unistd::User>,
) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("caddy.log"))
        .map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
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
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))
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
        let child = spawn_caddy(binary, dir.path(), user)?;
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
        kill_all(&mut self.child, Below::Nothing);
    }

    /// Starts Caddy again on the same ports with the base config (every API-added route
    /// lost), as a crash and restart would.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let binary = caddy_binary()?;
        self.child = spawn_caddy(&binary, self.dir.path(), self.user.as_ref())?;
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
        while !reloads_settled(&self.log()) && Instant::now() <= deadline {
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
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Where Caddy writes its log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("caddy.log")
    }

    /// The routes of `srv0` as the admin API answers them (JSON text).
    pub fn routes(&self) -> Result<String, String> {
        admin_get(self.admin, "/config/apps/http/servers/srv0/routes")
    }

    /// Replaces the whole config with a Caddyfile, adapted by `caddy adapt` as `caddy run
    /// --config FILE` adapts it. The file's `admin` line must name this Caddy's admin
    /// address, which the tests keep using.
    pub fn load_caddyfile(&self, caddyfile: &Path) -> Result<(), String> {
        let output = Command::new(caddy_binary()?)
            .args(["adapt", "--adapter", "caddyfile", "--config"])
            .arg(caddyfile)
            .output()
            .map_err(|e| format!("caddy adapt: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "caddy adapt {}: {}",
                caddyfile.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let config: Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("caddy adapt printed no JSON: {e}"))?;
        let admin = config.pointer("/admin/listen").and_then(Value::as_str);
        if admin != Some(self.admin.to_string().as_str()) {
            return Err(format!(
                "{} moves the admin API to {admin:?}; this Caddy's is {}",
                caddyfile.display(),
                self.admin
            ));
        }
        admin_request(self.admin, "POST", "/load", Some(&config))?;
        self.settle();
        Ok(())
    }

    /// The root certificate of Caddy's own CA (`tls internal`), once Caddy has made it.
    pub fn local_ca_root(&self) -> PathBuf {
        self.data_dir().join("caddy/pki/authorities/local/root.crt")
    }

    /// Caddy's data directory (`XDG_DATA_HOME`): certificates, keys, its CA.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
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
        self.kill();
    }
}

/// Whether every admin server a Caddy replaced has stopped, per its `log`: Caddy (2.6.2)
/// replaces its admin server on every config change, and until the old one has stopped a
/// new request may be reset unanswered (measured: none of 600 requests failed when sent
/// after this held, 11 of 600 without waiting for it).
pub fn reloads_settled(log: &str) -> bool {
    let started = log.matches("admin endpoint started").count();
    let stopped = log.matches("stopped previous server").count();
    stopped + 1 >= started
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
