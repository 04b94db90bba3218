//! `mytunneld` run as the edge runs it, `serve` as a process, and the directories the
//! install scripts make for it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::poll::poll_every;
use crate::process::{kill_all, Below};

/// The `PATH` of the edge's own processes (under systemd, or run by sshd): the system's
/// directories.
pub const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// `<bin> --env-file <env_file> <verb>` as the edge runs `mytunneld`: the environment
/// cleared but [`SYSTEM_PATH`] (settings come from the env file alone), stdin closed; as
/// `user` (`runuser -u <user> --`) when given. Add the verb's arguments with `.args`.
pub fn mytunneld_command(bin: &Path, env_file: &Path, user: Option<&str>, verb: &str) -> Command {
    let command = match user {
        Some(user) => {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", user, "--"]).arg(bin);
            runuser
        }
        None => Command::new(bin),
    };
    with_env_file(command, env_file, verb)
}

/// `command` (which runs `mytunneld`) given `--env-file <env_file> <verb>`, a cleared
/// environment but [`SYSTEM_PATH`], and no stdin.
fn with_env_file(mut command: Command, env_file: &Path, verb: &str) -> Command {
    command
        .arg("--env-file")
        .arg(env_file)
        .arg(verb)
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .stdin(Stdio::null());
    command
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
        Self::start_with_environment(bin, env_file, user, log, socket_dir, &[])
    }

    /// [`ServeProcess::start`] with `environment` added to serve's environment, as a
    /// unit's `Environment=` lines would (e.g. `PGPASSFILE`).
    pub fn start_with_environment(
        bin: &Path,
        env_file: &Path,
        user: Option<(u32, u32)>,
        log: &Path,
        socket_dir: &Path,
        environment: &[(&str, &str)],
    ) -> Result<ServeProcess, String> {
        let stderr =
            std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let command = match user {
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
        let child = with_env_file(command, env_file, "serve")
            .envs(environment.iter().copied())
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
        kill_all(&mut self.child, Below::Nothing);
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
    let control = mytunnel_edge::sockets::control_socket(socket_dir);
    poll_every(timeout, Duration::from_millis(10), || {
        std::os::unix::net::UnixStream::connect(&control).is_ok()
    })
}
