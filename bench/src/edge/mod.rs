//! One edge on loopback for the bench: a real sshd whose tunnel user's key is gated by the
//! built `mytunneld gate`, a real Caddy, an env file and lease database, optionally
//! `mytunneld serve`. The tunnel user `mtbench` (group `mytunnel-bench`) is created with
//! `scripts/install-edge-ssh-key.sh`, as an operator would.
//!
//! Every process is stopped by its pid when the edge drops.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mytunnel_test_support::{
    admin_request, base_config, client_command, copy_executable, generate_key, mytunneld_command,
    poll_every, stdout_json, RealCaddy, Sshd,
};
use serde_json::{json, Value};

use crate::procs::{describe, run_ok, Guard, Memory, Result};
use crate::proctable::{established_to, memory_of_all, ProcTable};

mod caddy;
mod clients;

/// The tunnel user and its group.
pub const USER: &str = "mtbench";
/// The group that may read the env file and write the lease database.
pub const GROUP: &str = "mytunnel-bench";
/// The base domain of every lease.
pub const BASE_DOMAIN: &str = "bench.test";

/// Where the built binaries are and what they support.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The built `mytunneld`.
    pub mytunneld: PathBuf,
    /// The built `mytunnel`.
    pub mytunnel: PathBuf,
    /// Whether this `mytunneld` knows `--route-mode static|routes`.
    pub route_modes: bool,
    /// The workspace root (for `scripts/`).
    pub root: PathBuf,
}

impl Binaries {
    /// The binaries next to this executable (`target/release/`), checked to exist.
    pub fn locate(root: &Path) -> Result<Binaries> {
        let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
        let dir = exe
            .parent()
            .ok_or_else(|| format!("{} has no directory", exe.display()))?;
        let mytunneld = dir.join("mytunneld");
        let mytunnel = dir.join("mytunnel");
        for binary in [&mytunneld, &mytunnel] {
            if !binary.is_file() {
                return Err(format!(
                    "{} is missing: build it first (cargo build --release -p mytunnel-cli --bins)",
                    binary.display()
                ));
            }
        }
        let help = Command::new(&mytunneld)
            .args(["serve", "--help"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {} serve --help: {e}", mytunneld.display()))?;
        let route_modes = String::from_utf8_lossy(&help.stdout).contains("--route-mode");
        Ok(Binaries {
            mytunneld,
            mytunnel,
            route_modes,
            root: root.to_owned(),
        })
    }
}

/// Routing mode of the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMode {
    /// One Caddy route per lease (every lease change reloads Caddy's config).
    Routes,
    /// One static wildcard route; lease changes never touch Caddy.
    Static,
}

impl RouteMode {
    /// As written in `--route-mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMode::Routes => "routes",
            RouteMode::Static => "static",
        }
    }
}

/// How an edge is set up.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// `Some` when the binary supports route modes; `None` writes no mode (its default).
    pub route_mode: Option<RouteMode>,
    /// The lease port range.
    pub ports: (u16, u16),
    /// Whether to start sshd (the control-plane bench calls ctl directly).
    pub sshd: bool,
    /// Whether to start `mytunneld serve`.
    pub serve: bool,
    /// Whether serve answers Caddy's on-demand TLS `ask` (on a free loopback port).
    pub tls_ask: bool,
    /// A PostgreSQL database instead of the edge's own SQLite file.
    pub database: Option<EdgeDatabase>,
}

/// A PostgreSQL database for an edge, set up as docs/operations.md says.
#[derive(Debug, Clone)]
pub struct EdgeDatabase {
    /// serve's `MYTUNNEL_DB_URL`: a login, without its password.
    pub url: String,
    /// The password file serve is given (`PGPASSFILE`).
    pub pgpass: PathBuf,
    /// The same login with its password, for the bench's own seeding.
    pub seed_url: String,
}

/// A user and group of the OS, by id.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
}

/// The running edge.
#[derive(Debug)]
pub struct Edge {
    // Dropped in order: serve, sshd and its connections, Caddy, then the directory.
    serve: Option<Guard>,
    sshd: Option<Sshd>,
    /// The real Caddy.
    pub caddy: RealCaddy,
    binaries: Binaries,
    user: Ids,
    key_installed: bool,
    /// `static` mode's socket directory (short: it is spliced into socket addresses).
    socket_dir: Option<tempfile::TempDir>,
    /// Where serve answers Caddy's on-demand TLS `ask`, when asked to.
    tls_ask: Option<SocketAddr>,
    /// The PostgreSQL database, when not the SQLite file.
    database: Option<EdgeDatabase>,
    dir: tempfile::TempDir,
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

impl Edge {
    /// Starts Caddy (and sshd, serve as asked), creates the tunnel user and writes the env
    /// file.
    pub fn start(binaries: &Binaries, options: &EdgeOptions) -> Result<Edge> {
        let caddy = RealCaddy::start().map_err(|e| format!("cannot start Caddy: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix("mytunnel-bench-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        set_mode(dir.path(), 0o755)?;
        let bin = dir.path().join("mytunneld");
        copy_executable(&binaries.mytunneld, &bin)?;
        let mut edge = Edge {
            serve: None,
            sshd: None,
            caddy,
            binaries: binaries.clone(),
            user: Ids { uid: 0, gid: 0 },
            key_installed: false,
            socket_dir: None,
            tls_ask: None,
            database: options.database.clone(),
            dir,
        };
        edge.install_user()?;
        // The database directory is serve's alone (serve runs as root here).
        let db_dir = edge.path("db");
        std::fs::create_dir(&db_dir).map_err(|e| format!("mkdir {}: {e}", db_dir.display()))?;
        set_mode(&db_dir, 0o700)?;
        let mut env = format!(
            "MYTUNNEL_DB_PATH={db}\nMYTUNNEL_BASE_DOMAIN={BASE_DOMAIN}\n\
             MYTUNNEL_CADDY_ADMIN_URL={admin}\nMYTUNNEL_LEASE_TTL=1h\n\
             MYTUNNEL_MAX_LEASES_PER_OWNER=0\nMYTUNNEL_MIN_PORT={min}\nMYTUNNEL_MAX_PORT={max}\n",
            db = edge.db_path().display(),
            admin = edge.caddy.admin_address(),
            min = options.ports.0,
            max = options.ports.1,
        );
        if let Some(mode) = options.route_mode {
            env.push_str(&format!("MYTUNNEL_ROUTE_MODE={}\n", mode.as_str()));
        }
        if let Some(database) = &options.database {
            env.push_str(&format!("MYTUNNEL_DB_URL={}\n", database.url));
        }
        // serve's control socket lives in the socket directory, in both route modes.
        let socket_dir = edge.make_socket_dir()?;
        env.push_str(&format!("MYTUNNEL_SOCKET_DIR={}\n", socket_dir.display()));
        if options.tls_ask {
            let port = mytunnel_test_support::free_port()
                .map_err(|e| format!("a free port for the TLS ask: {e}"))?;
            let ask = SocketAddr::from(([127, 0, 0, 1], port));
            env.push_str(&format!("MYTUNNEL_TLS_ASK_LISTEN={ask}\n"));
            edge.tls_ask = Some(ask);
        }
        let env_path = edge.env_file();
        write_file(&env_path, &env)?;
        nix::unistd::chown(
            &env_path,
            None,
            Some(nix::unistd::Gid::from_raw(edge.user.gid)),
        )
        .map_err(|e| format!("chown {}: {e}", env_path.display()))?;
        set_mode(&env_path, 0o640)?;
        for sub in ["home", "tmp", "logs"] {
            std::fs::create_dir(edge.path(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
        }
        if options.sshd {
            // The tunnel group's settings exactly as install-edge.sh writes them (a build
            // without route modes is a routes-mode edge).
            let mode = options.route_mode.map_or("routes", RouteMode::as_str);
            let dropin = mytunnel_test_support::production_sshd_dropin(mode, GROUP)?;
            let sshd = Sshd::start_with(&format!("{BENCH_SSHD_SETTINGS}{dropin}"))?;
            write_file(&edge.path("known_hosts"), &sshd.known_hosts_line())?;
            edge.sshd = Some(sshd);
        }
        if options.serve {
            edge.start_serve()?;
        }
        Ok(edge)
    }

    /// Starts `mytunneld serve` and waits until it takes ctl requests.
    pub fn start_serve(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.path("logs/serve.log"))
            .map_err(|e| format!("cannot create serve.log: {e}"))?;
        let mut command =
            mytunneld_command(&self.path("mytunneld"), &self.env_file(), None, "serve");
        if let Some(database) = &self.database {
            command.env("PGPASSFILE", &database.pgpass);
        }
        let serve = Guard::spawn(command.stdout(Stdio::null()).stderr(log), "mytunneld serve")?;
        self.serve = Some(serve);
        // Ready once it has opened (and created) the database and takes ctl requests.
        let db = self.db_path();
        let on_postgres = self.database.is_some();
        let control = self
            .socket_dir()
            .map(|dir| mytunnel_edge::sockets::control_socket(&dir));
        if !poll_every(Duration::from_secs(15), Duration::from_millis(10), || {
            (on_postgres || db.exists())
                && control
                    .as_ref()
                    .is_none_or(|c| std::os::unix::net::UnixStream::connect(c).is_ok())
        }) {
            return Err(format!(
                "mytunneld serve did not create {} within 15s: {}",
                db.display(),
                self.serve_log()
            ));
        }
        Ok(())
    }

    /// The socket directory, as the env file names it.
    pub fn socket_dir(&self) -> Option<PathBuf> {
        self.socket_dir.as_ref().map(|d| d.path().to_owned())
    }

    /// `owners/`, where leases bind their sockets.
    pub fn owners_dir(&self) -> Option<PathBuf> {
        self.socket_dir()
            .map(|dir| mytunnel_edge::sockets::owners_dir(&dir))
            .filter(|owners| owners.is_dir())
    }

    /// Creates the socket directory as `install-edge.sh` lays it out: serve's control
    /// socket, `hosts/` for serve, `owners/` root's, and `owners/<user>` owned by each
    /// user who allocates here (root for the bench's own ctl calls, the tunnel user).
    fn make_socket_dir(&mut self) -> Result<PathBuf> {
        let dir = tempfile::Builder::new()
            .prefix("mtb")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create the socket directory: {e}"))?;
        let path = dir.path().to_owned();
        // Setgid to the tunnel group, so serve's control socket (0660) is theirs to use.
        nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(self.user.gid)))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
        set_mode(&path, 0o2755)?;
        // Every lease binds a socket in its owner's directory (both modes, from 0.2 on;
        // an older build in `routes` mode binds ports and ignores them).
        let owners = mytunnel_edge::sockets::owners_dir(&path);
        for sub in [mytunnel_edge::sockets::hosts_dir(&path), owners.clone()] {
            std::fs::create_dir(&sub).map_err(|e| format!("mkdir {}: {e}", sub.display()))?;
            set_mode(&sub, 0o755)?;
        }
        for (name, uid, gid) in [("root", 0, 0), (USER, self.user.uid, self.user.gid)] {
            let owner_dir = owners.join(name);
            std::fs::create_dir(&owner_dir)
                .map_err(|e| format!("mkdir {}: {e}", owner_dir.display()))?;
            nix::unistd::chown(
                &owner_dir,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(|e| format!("chown {}: {e}", owner_dir.display()))?;
            set_mode(&owner_dir, 0o2750)?;
        }
        self.socket_dir = Some(dir);
        Ok(path)
    }

    /// How many entries `static` mode's `hosts/` holds (links serve wrote).
    pub fn host_link_count(&self) -> usize {
        self.socket_dir()
            .and_then(|dir| std::fs::read_dir(mytunnel_edge::sockets::hosts_dir(&dir)).ok())
            .map_or(0, Iterator::count)
    }

    /// A path in the edge's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Where serve answers Caddy's on-demand TLS `ask`, when the edge was started with it.
    pub fn tls_ask(&self) -> Option<SocketAddr> {
        self.tls_ask
    }

    /// The env file every ctl reads.
    pub fn env_file(&self) -> PathBuf {
        self.path("mytunneld.env")
    }

    /// The SQLite lease database file (unused on PostgreSQL).
    pub fn db_path(&self) -> PathBuf {
        self.path("db").join("leases.db")
    }

    /// The lease database as the bench opens it to seed leases.
    pub fn database(&self) -> Result<mytunnel_edge::Database> {
        match &self.database {
            Some(database) => Ok(mytunnel_edge::Database::Postgres(
                database
                    .seed_url
                    .parse()
                    .map_err(|e| format!("the seeding URL: {e}"))?,
            )),
            None => Ok(mytunnel_edge::Database::Sqlite(self.db_path())),
        }
    }

    /// The tunnel user's private key.
    pub fn key(&self) -> PathBuf {
        self.path("keys").join(USER)
    }

    fn gate_command(&self) -> String {
        format!(
            "{} --env-file {} gate",
            self.path("mytunneld").display(),
            self.env_file().display()
        )
    }

    fn script(&self) -> PathBuf {
        self.binaries.root.join("scripts/install-edge-ssh-key.sh")
    }

    fn install_user(&mut self) -> Result<()> {
        let keys = self.path("keys");
        std::fs::create_dir(&keys).map_err(|e| format!("mkdir {}: {e}", keys.display()))?;
        set_mode(&keys, 0o700)?;
        generate_key(&self.key(), "mytunnel-bench")?;
        run_ok(Command::new("groupadd").args(["-f", GROUP]), "groupadd")?;
        run_ok(
            Command::new(self.script())
                .arg(USER)
                .arg(self.key().with_extension("pub"))
                .arg("--group")
                .arg(GROUP)
                .arg("--gate-command")
                .arg(self.gate_command())
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "install-edge-ssh-key.sh",
        )?;
        self.key_installed = true;
        let user = nix::unistd::User::from_name(USER)
            .map_err(|e| format!("look up user {USER}: {e}"))?
            .ok_or_else(|| format!("user {USER} does not exist after the key script"))?;
        let group = nix::unistd::Group::from_name(GROUP)
            .map_err(|e| format!("look up group {GROUP}: {e}"))?
            .ok_or_else(|| format!("group {GROUP} does not exist after groupadd"))?;
        self.user = Ids {
            uid: user.uid.as_raw(),
            gid: group.gid.as_raw(),
        };
        Ok(())
    }

    /// Memory of the edge's processes: sshd (listener and every connection process), what
    /// sshd runs for the tunnel user (the held `mytunneld gate`, a child of sshd), Caddy
    /// and `mytunneld serve`; with process counts and the SSH connections sshd holds.
    pub fn memory(&self) -> EdgeMemory {
        let pid = |p: u32| i32::try_from(p).unwrap_or(i32::MAX);
        let table = ProcTable::snapshot();
        let below_sshd = self
            .sshd
            .as_ref()
            .map(|s| table.trees(&[pid(s.pid())]))
            .unwrap_or_default();
        let (sshd_pids, gate_pids): (Vec<i32>, Vec<i32>) = below_sshd
            .into_iter()
            .partition(|p| table.name(*p) == "sshd");
        let mut gate_names: Vec<(String, usize)> = Vec::new();
        for pid in &gate_pids {
            let name = table.name(*pid);
            match gate_names.iter_mut().find(|(n, _)| n == name) {
                Some((_, count)) => *count += 1,
                None => gate_names.push((name.to_owned(), 1)),
            }
        }
        gate_names.sort();
        let (sshd, sshd_processes) = memory_of_all(sshd_pids);
        let (gate, gate_processes) = memory_of_all(gate_pids);
        let (caddy, _) = memory_of_all(table.trees(&[pid(self.caddy.pid())]));
        let (serve, _) = self
            .serve
            .as_ref()
            .map(|s| memory_of_all(table.trees(&[pid(s.pid())])))
            .unwrap_or_default();
        EdgeMemory {
            sshd,
            sshd_processes,
            gate,
            gate_processes,
            gate_names,
            caddy,
            serve,
            ssh_connections: self.sshd.as_ref().map_or(0, |s| established_to(s.port())),
        }
    }

    /// sshd's port (0 without sshd).
    pub fn sshd_port(&self) -> u16 {
        self.sshd.as_ref().map_or(0, Sshd::port)
    }

    /// `mytunneld serve`'s log.
    pub fn serve_log(&self) -> String {
        std::fs::read_to_string(self.path("logs/serve.log")).unwrap_or_default()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.serve.take();
        // Every connection process too: a thousand tunnels' worth.
        if let Some(mut sshd) = self.sshd.take() {
            sshd.kill_tree();
        }
        if self.key_installed {
            let _ = Command::new(self.script())
                .arg(USER)
                .arg(self.key().with_extension("pub"))
                .arg("--remove")
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// Memory of the edge's processes.
#[derive(Debug, Clone, Default)]
pub struct EdgeMemory {
    /// sshd listener plus every connection process.
    pub sshd: Memory,
    /// How many sshd processes that is.
    pub sshd_processes: usize,
    /// What sshd runs for the tunnel user: the gate a connection holds (`mytunneld
    /// gate`), and a ctl command's gate while it runs.
    pub gate: Memory,
    /// How many processes that is.
    pub gate_processes: usize,
    /// Their names (`/proc/<pid>/comm`) and how many of each.
    pub gate_names: Vec<(String, usize)>,
    /// Caddy.
    pub caddy: Memory,
    /// `mytunneld serve`.
    pub serve: Memory,
    /// Established TCP connections to sshd's port.
    pub ssh_connections: usize,
}

impl EdgeMemory {
    /// The sum.
    pub fn total(&self) -> Memory {
        self.sshd + self.gate + self.caddy + self.serve
    }
}

/// The JSON a ctl printed, or an error with its output.
pub fn ctl_json(command: &Command, output: &Output) -> Result<Value> {
    let json = stdout_json(output).map_err(|e| format!("{}: {e}", describe(command)))?;
    if !output.status.success() || json.get("error").is_some() {
        return Err(format!(
            "{}: exit {}: {json}",
            describe(command),
            output.status
        ));
    }
    Ok(json)
}

/// One HTTP/1.0 GET to `addr` with `Host: host`; the status, or None when it failed.
pub fn http_status(addr: SocketAddr, host: &str, path: &str) -> Option<u16> {
    mytunnel_test_support::http_get_path(addr, host, path).map(|(status, _)| status)
}

/// What the bench's sshd sets in place of the test support's defaults: production-like
/// liveness checks and quieter logs. `MaxStartups` is the installer's (its drop-in): the
/// scale measurement connects 25 tunnels at a time.
const BENCH_SSHD_SETTINGS: &str = "\
MaxSessions 10
ClientAliveInterval 15
ClientAliveCountMax 3
LogLevel INFO
";
