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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Whether `pid` runs (exists and is not a zombie).
    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| matches!(state, 'Z' | 'X'))
        })
    }

    /// Polls `check` every 10 ms for at most `limit`.
    fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if check() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The pid of the first child of `parent` (from `/proc`).
    fn child_of(parent: u32) -> Option<u32> {
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                        .is_some_and(|ppid| ppid == parent.to_string())
                })
            })
    }

    #[tokio::test]
    async fn the_watchdog_ends_ssh_when_the_owners_pipe_closes() {
        // `sleep` stands in for ssh: the watchdog runs "$0" "$@".
        let mut command = guarded_ssh(&ParentDeath::Watchdog, Path::new("sleep"), ["1000"]);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut watchdog = command.spawn().unwrap();
        let watchdog_pid = watchdog.id().unwrap();
        let mut sleeper = None;
        assert!(within(Duration::from_secs(5), || {
            sleeper = child_of(watchdog_pid).filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "sleep")
            });
            sleeper.is_some()
        }));
        let sleeper = sleeper.unwrap();
        // The owner's end of the pipe closes, as when the owner dies however it dies.
        drop(watchdog.stdin.take());
        assert!(
            within(Duration::from_secs(2), || !running(sleeper)),
            "the stand-in for ssh survived its owner's pipe"
        );
        let status = tokio::time::timeout(Duration::from_secs(5), watchdog.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!status.success(), "{status}");
    }

    #[tokio::test]
    async fn the_watchdog_exits_with_ssh_s_status() {
        let mut command = guarded_ssh(&ParentDeath::Watchdog, Path::new("sh"), ["-c", "exit 7"]);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut watchdog = command.spawn().unwrap();
        let _stdin = watchdog.stdin.take();
        let status = tokio::time::timeout(Duration::from_secs(5), watchdog.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(7));
    }

    #[test]
    fn setpriv_kills_ssh_when_the_thread_that_started_it_ends() {
        let ParentDeath::Signal(setpriv) = ParentDeath::detect() else {
            // No setpriv here: the watchdog tests cover this machine's guard.
            assert!(!Path::new("/usr/bin/setpriv").is_file());
            return;
        };
        // A thread with its own runtime starts the stand-in and ends without stopping it
        // (as a killed process would): the kernel's parent-death signal must end it.
        let pid = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut command = guarded_ssh(
                    &ParentDeath::Signal(setpriv),
                    Path::new("/bin/sleep"),
                    ["1000"],
                );
                command.stdout(Stdio::null()).stderr(Stdio::null());
                let child = command.spawn().unwrap();
                let pid = child.id().unwrap();
                // setpriv has asked for the signal once it has become `sleep`.
                assert!(within(Duration::from_secs(5), || {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm.trim() == "sleep")
                }));
                // Not dropped (dropping would kill it): the guard alone must.
                std::mem::forget(child);
                pid
            })
        })
        .join()
        .unwrap();
        assert!(
            within(Duration::from_secs(2), || !running(pid)),
            "the stand-in for ssh outlived the thread that started it"
        );
    }
}
