//! A real PostgreSQL (Debian's `postgresql` package) on loopback, for the stores' tests.
//!
//! Each [`RealPostgres`] is its own cluster: `initdb` into a temporary directory, then
//! `postgres` on a free loopback port with its socket in a short directory beside it.
//! Tests take a fresh database each with [`RealPostgres::create_database`]. The server
//! runs as user `postgres` when the tests run as root (PostgreSQL refuses root), as the
//! tests' own user otherwise.
//!
//! As on a real database server, a TCP connection needs a password (scram-sha-256): make
//! a role that has one with [`RealPostgres::create_login`]. The tests' own connections
//! ([`RealPostgres::url`]) go through the unix socket, which trusts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::poll::poll_every;
use crate::ports::free_port;
use crate::process::{kill_all, signal, Below};

/// How long the server has to start, and to stop before it is killed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The directory of Debian's PostgreSQL binaries (`/usr/lib/postgresql/<version>/bin`,
/// the highest version installed), or `MYTUNNEL_TEST_PG_BIN` if set.
pub fn postgres_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("MYTUNNEL_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| format!("{}: {e} (apt-get install postgresql)", root.display()))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        format!(
            "no PostgreSQL under {} (apt-get install postgresql)",
            root.display()
        )
    })
}

/// A PostgreSQL server on `127.0.0.1`, stopped by its pid (and its backends with it) when
/// dropped.
#[derive(Debug)]
pub struct RealPostgres {
    child: Child,
    port: u16,
    bin: PathBuf,
    /// Holds `data/` (the cluster) and `sock/` (the unix socket, and `server.log`).
    dir: tempfile::TempDir,
    /// Who runs the server and its tools: `postgres` under root, else nobody else.
    run_as: Option<(u32, u32)>,
    /// How long the start took, from `initdb` until the server accepted connections.
    startup: Duration,
}

impl RealPostgres {
    /// Initialises a cluster and starts its server on a free port, retrying on a port
    /// another process took between the probe and the bind.
    pub fn start() -> Result<RealPostgres, String> {
        let bin = postgres_bin_dir()?;
        let run_as = server_user()?;
        let mut last_error = String::new();
        for _attempt in 0..5 {
            match Self::try_start(&bin, run_as) {
                Ok(pg) => return Ok(pg),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn try_start(bin: &Path, run_as: Option<(u32, u32)>) -> Result<RealPostgres, String> {
        let started = Instant::now();
        // In /tmp: short enough for the socket path's 107 bytes, and reachable by the
        // server user whatever the tests' TMPDIR is.
        let dir = tempfile::Builder::new()
            .prefix("mytunnel-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        for path in [&data, &sock] {
            std::fs::create_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), &data, &sock] {
                nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
                    .map_err(|e| format!("chown {}: {e}", path.display()))?;
            }
        }
        let mut initdb = tool(bin, "initdb", run_as);
        initdb
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .args(["--locale=C", "-D"])
            .arg(&data);
        checked(initdb.output(), "initdb")?;

        let port = free_port().map_err(|e| e.to_string())?;
        let log_path = sock.join("server.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = run_as {
            nix::unistd::chown(&log_path, Some(uid.into()), Some(gid.into()))
                .map_err(|e| format!("chown {}: {e}", log_path.display()))?;
        }
        // fsync off: a test cluster need not survive a crash of the machine.
        let child = tool(bin, "postgres", run_as)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&sock)
            .args(["-h", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}/postgres: {e}", bin.display()))?;
        let mut pg = RealPostgres {
            child,
            port,
            bin: bin.to_owned(),
            dir,
            run_as,
            startup: Duration::ZERO,
        };
        pg.wait_ready()?;
        pg.startup = started.elapsed();
        Ok(pg)
    }

    /// Waits until `postmaster.pid` says `ready` (the server accepts connections), or
    /// fails with the server's log if it exits first (a taken port) or takes too long.
    fn wait_ready(&mut self) -> Result<(), String> {
        let pid_file = self.dir.path().join("data/postmaster.pid");
        let mut exited = None;
        let ready = poll_every(START_TIMEOUT, Duration::from_millis(10), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                return true;
            }
            // Line 8 is the server's status: "starting", then "ready".
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|text| text.lines().nth(7).map(|s| s.trim() == "ready"))
                .unwrap_or(false)
        });
        let log =
            std::fs::read_to_string(self.dir.path().join("sock/server.log")).unwrap_or_default();
        match (ready, exited) {
            (true, None) => Ok(()),
            (_, Some(status)) => Err(format!("postgres exited ({status}) while starting:\n{log}")),
            (false, None) => Err(format!(
                "postgres did not accept connections within {START_TIMEOUT:?}:\n{log}"
            )),
        }
    }

    /// Creates database `name` (owned by `postgres`) and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let mut createdb = tool(&self.bin, "createdb", self.run_as);
        createdb.arg("-h").arg(self.socket_dir()).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            name,
        ]);
        checked(createdb.output(), "createdb")?;
        Ok(self.url(name))
    }

    /// `postgres://postgres@localhost:<port>/<database>?host=<socket dir>`: the superuser,
    /// through the unix socket (trusted; readable by the tests' user only).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{database}?host={}",
            self.port,
            self.socket_dir().display()
        )
    }

    /// Creates role `role` with `password`, owning a new database `database`, and returns
    /// its TCP URL without the password: `postgres://<role>@127.0.0.1:<port>/<database>`
    /// (the password goes in a password file, or `PGPASSWORD`).
    pub fn create_login(
        &self,
        role: &str,
        password: &str,
        database: &str,
    ) -> Result<String, String> {
        let mut psql = tool(&self.bin, "psql", self.run_as);
        psql.args(["-X", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args([
                "-c",
                &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
                "-c",
                &format!("CREATE DATABASE {database} OWNER {role}"),
            ]);
        checked(psql.output(), "psql")?;
        Ok(format!(
            "postgres://{role}@127.0.0.1:{}/{database}",
            self.port
        ))
    }

    /// The server's port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid (the postmaster).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory of the server's unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// How long [`RealPostgres::start`]'s successful attempt took (initdb included).
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// Stops the server: SIGQUIT (immediate shutdown: the postmaster stops its backends
    /// and frees its shared memory), then SIGKILL to it and everything below it if it has
    /// not exited within 10 s.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = signal(self.child.id(), Signal::SIGQUIT);
            let child = &mut self.child;
            poll_every(STOP_TIMEOUT, Duration::from_millis(10), || {
                !matches!(child.try_wait(), Ok(None))
            });
        }
        kill_all(&mut self.child, Below::Everything);
    }
}

impl Drop for RealPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `postgres`'s uid and gid when the tests run as root, since PostgreSQL refuses to run
/// as root; `None` otherwise.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .map_err(|e| format!("look up user postgres: {e}"))?
        .ok_or("no user postgres (apt-get install postgresql creates it)")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

/// `<bin>/<name>`, run as `run_as` if given, in `/` (the server user may not read the
/// tests' working directory).
fn tool(bin: &Path, name: &str, run_as: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(bin.join(name));
    command.current_dir("/");
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid).env("HOME", "/");
    }
    command
}

fn checked(output: std::io::Result<Output>, what: &str) -> Result<(), String> {
    let output = output.map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server starts, its database answers on its URL, and dropping it stops the
    /// postmaster and every backend by pid.
    #[test]
    fn starts_answers_on_its_url_and_stops_with_its_backends() {
        let pg = RealPostgres::start().unwrap();
        eprintln!("postgres started in {:?}", pg.startup());
        let url = pg.create_database("mytunnel_test").unwrap();
        let output = tool(&pg.bin, "psql", pg.run_as)
            .args(["-X", "-A", "-t", "-c", "SELECT current_database()", &url])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "mytunnel_test"
        );
        let postmaster = i32::try_from(pg.pid()).unwrap();
        let below = crate::process::descendants_of(postmaster);
        assert!(
            !below.is_empty(),
            "a running server has background processes"
        );
        drop(pg);
        for pid in std::iter::once(postmaster).chain(below) {
            assert!(!crate::process::running(pid), "{pid} still runs");
        }
    }

    /// TCP needs the role's password, as on a real database server.
    #[test]
    fn a_login_over_tcp_needs_its_password() {
        let pg = RealPostgres::start().unwrap();
        let url = pg.create_login("edge", "pw-1", "leases").unwrap();
        assert_eq!(
            url,
            format!("postgres://edge@127.0.0.1:{}/leases", pg.port())
        );
        let psql = |password: Option<&str>| {
            let mut command = tool(&pg.bin, "psql", pg.run_as);
            command.args(["-X", "-A", "-t", "-w", "-c", "SELECT current_user", &url]);
            if let Some(password) = password {
                command.env("PGPASSWORD", password);
            }
            command.output().unwrap()
        };
        assert!(!psql(None).status.success());
        assert!(!psql(Some("wrong")).status.success());
        let output = psql(Some("pw-1"));
        assert!(output.status.success(), "{output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "edge");
    }

    /// Two servers at once get their own ports and clusters.
    #[test]
    fn two_servers_run_side_by_side() {
        let a = RealPostgres::start().unwrap();
        let b = RealPostgres::start().unwrap();
        assert_ne!(a.port(), b.port());
        a.create_database("a").unwrap();
        b.create_database("b").unwrap();
    }
}
