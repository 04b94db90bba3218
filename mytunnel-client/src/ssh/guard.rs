//! Every ssh this crate starts ends with the process that started it, however that process
//! ends (`kill -9`, a panic that aborts, the OOM killer): a tunnel must never outlive its
//! client.
//!
//! Dropping a [`tokio::process::Child`] kills ssh (`kill_on_drop`), but only when the
//! owner lives to drop it. So each ssh is started through a guard that the kernel or the
//! pipe to its owner ends:
//!
//! - [`ParentDeath::Signal`] (Linux): `setpriv --pdeathsig KILL -- ssh …`. util-linux's
//!   `setpriv` asks the kernel (`PR_SET_PDEATHSIG`) to send SIGKILL when the thread that
//!   forked it exits, then execs ssh in place, so no extra process stays. Tokio forks from
//!   the runtime thread that polls the spawning task; runtime threads live as long as the
//!   runtime, so the signal comes when the process (or its runtime) ends. This crate needs
//!   no `unsafe` code for it.
//! - [`ParentDeath::Watchdog`] (elsewhere, or when `setpriv` is missing): `sh` starts ssh
//!   in the background and reads its own stdin, a pipe whose other end only the owner
//!   holds. End of file on it — the owner exited, however — makes the watchdog kill ssh.
//!   The watchdog exits with ssh's status when ssh ends first.
//!
//! Either way ssh's stdin is that pipe too, never written to. When the owner is gone, ssh
//! reads end of file and passes it on: a session without a pty (an edge whose keys lack
//! the `pty` option) then ends on the edge, and ssh with it.

use super::*;
use std::sync::OnceLock;

/// How ssh is made to end with its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentDeath {
    /// `setpriv --pdeathsig KILL` at this path (Linux).
    Signal(PathBuf),
    /// A `sh` watchdog that kills ssh at end of file on the pipe from the owner.
    Watchdog,
}

impl ParentDeath {
    /// `setpriv` where util-linux installs it, or the watchdog. Looked up once.
    pub fn detect() -> ParentDeath {
        static DETECTED: OnceLock<ParentDeath> = OnceLock::new();
        DETECTED
            .get_or_init(|| {
                if !cfg!(target_os = "linux") {
                    return ParentDeath::Watchdog;
                }
                ["/usr/bin/setpriv", "/bin/setpriv"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|path| path.is_file())
                    .map_or(ParentDeath::Watchdog, ParentDeath::Signal)
            })
            .clone()
    }
}

/// The watchdog: `$0` is ssh, `"$@"` its arguments; stdin is the pipe from the owner, for
/// ssh as well (fd 3: an asynchronous list's own stdin would be /dev/null). Exits with
/// ssh's status.
const WATCHDOG: &str = r#"
exec 3<&0
"$0" "$@" <&3 &
ssh_pid=$!
trap 'kill -TERM "$ssh_pid" 2>/dev/null' HUP INT TERM
( while read -r _; do :; done <&3; kill -TERM "$ssh_pid" 2>/dev/null ) &
reader_pid=$!
wait "$ssh_pid"
status=$?
kill "$reader_pid" 2>/dev/null
exit "$status"
"#;

/// A command that runs `ssh_bin args…` guarded by `guard`. The caller sets stdout and
/// stderr. stdin is a pipe from this process that nobody writes to: keep the child's
/// `stdin` handle for as long as ssh should run (dropping it ends ssh with the watchdog,
/// and a session without a pty in any case).
pub(super) fn guarded_ssh<I, S>(
    guard: &ParentDeath,
    ssh_bin: &Path,
    args: I,
) -> tokio::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = match guard {
        ParentDeath::Signal(setpriv) => {
            let mut command = tokio::process::Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", "--"]).arg(ssh_bin);
            command
        }
        ParentDeath::Watchdog => {
            let mut command = tokio::process::Command::new("sh");
            command.arg("-c").arg(WATCHDOG).arg(ssh_bin);
            command
        }
    };
    command.args(args).stdin(Stdio::piped()).kill_on_drop(true);
    command
}
