//! Processes: finding them in `/proc`, signalling them, and stopping a child together with
//! the processes it started.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Every pid in `/proc` (none when it cannot be read).
pub fn pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// The parent pid of `pid`, from the field after the command name in `/proc/<pid>/stat`.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    // " <state> <ppid> …"
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is running: it exists and is not a zombie waiting to be reaped.
pub fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S …`: the state follows the last parenthesis.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// The pids whose parent is `parent` (from `/proc/<pid>/stat`).
pub fn children_of(parent: i32) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// Every descendant of `pid` (its children, theirs, …), each after its parent, from one
/// scan of `/proc`.
pub fn descendants_of(pid: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = pids()
        .into_iter()
        .filter_map(|p| Some((p, parent_of(p)?)))
        .collect();
    let mut tree = vec![pid];
    let mut next = 0;
    while let Some(&parent) = tree.get(next) {
        for &(child, _) in parents.iter().filter(|(_, p)| *p == parent) {
            if !tree.contains(&child) {
                tree.push(child);
            }
        }
        next += 1;
    }
    tree.into_iter().skip(1).collect()
}

/// The arguments of a process, from `/proc/<pid>/cmdline` (none when it has gone).
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

/// Copies the executable `from` to `to` (mode 0755) for a test to run, in a child
/// process (`install`). Copied by this process, the new file's write descriptor could be
/// inherited by a child that another thread forks meanwhile, and running the copy would
/// fail with `ETXTBSY` ("Text file busy") until that child has called exec.
pub fn copy_executable(from: &Path, to: &Path) -> Result<(), String> {
    let output = Command::new("install")
        .args(["-m", "0755"])
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run install: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "install {} {} failed with {}: {}",
            from.display(),
            to.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Sends `sig` to the process `pid`.
pub fn signal(pid: u32, sig: Signal) -> Result<(), String> {
    let raw = i32::try_from(pid).map_err(|_| format!("{pid} is not a pid"))?;
    nix::sys::signal::kill(Pid::from_raw(raw), sig).map_err(|e| format!("{sig} to {pid}: {e}"))
}

/// The JSON document a process printed on its stdout (a ctl reply); when it is not one,
/// an error with the exit status, stdout and stderr.
pub fn stdout_json(output: &Output) -> Result<serde_json::Value, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&stdout).map_err(|e| {
        format!(
            "not JSON ({e}): exit {}, stdout {stdout:?}, stderr {:?}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Which processes below a child [`kill_all`] kills with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Below {
    /// None: the child alone (and no scan of `/proc`, which matters for many children
    /// that start nothing).
    Nothing,
    /// Its children: a client's ssh processes, or sshd's connection processes (the
    /// per-user processes those fork end with them).
    Children,
    /// Every descendant.
    Everything,
}

/// Kills `child` (SIGKILL) with the processes `below` it, by pid, and reaps it. A child
/// that still runs is stopped (SIGSTOP) first, so that it forks no new process while they
/// are found; one that has exited is only reaped (its pid may not be its own any more).
pub fn kill_all(child: &mut Child, below: Below) {
    if let Ok(None) = child.try_wait() {
        if below != Below::Nothing {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGSTOP);
                let victims = match below {
                    Below::Children => children_of(pid),
                    _ => descendants_of(pid),
                };
                for victim in victims {
                    let _ = nix::sys::signal::kill(Pid::from_raw(victim), Signal::SIGKILL);
                }
            }
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The lines `child` writes to its stdout (which must be piped), each sent as it comes
/// by a thread of their own, until the child closes its stdout or the receiver is dropped.
/// `None` when its stdout is not piped or was taken already.
pub fn stdout_lines(child: &mut Child) -> Option<std::sync::mpsc::Receiver<String>> {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take()?;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Some(lines)
}

/// A child process killed (SIGKILL) by its pid and reaped when dropped.
#[derive(Debug)]
pub struct Guard(pub Child);

impl Guard {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends it `sig`.
    pub fn signal(&self, sig: Signal) -> Result<(), String> {
        signal(self.pid(), sig)
    }

    /// Whether it still runs (one that has exited is reaped).
    pub fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        kill_all(&mut self.0, Below::Nothing);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    #[test]
    fn a_copied_executable_runs() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::write(&source, "#!/bin/sh\necho ran \"$@\"\n").unwrap();
        let copy = dir.path().join("copy");
        copy_executable(&source, &copy).unwrap();
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        let output = Command::new(&copy).arg("here").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout), "ran here\n");
        assert!(copy_executable(&dir.path().join("missing"), &copy).is_err());
    }

    /// `sh` with two children, one of them a `sh` with two children of its own (`sleep`s
    /// all), waited for until all four are there.
    fn tree() -> (Child, i32) {
        let mut child = Command::new("sh")
            .args(["-c", "sh -c 'sleep 600 & sleep 600; :' & sleep 600; :"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let started = crate::eventually(Duration::from_secs(10), || descendants_of(pid).len() == 4);
        if !started {
            kill_all(&mut child, Below::Everything);
            panic!("the process tree did not start");
        }
        (child, pid)
    }

    #[test]
    fn descendants_follow_their_parents_and_kill_all_reaches_as_far_as_asked() {
        let (mut child, pid) = tree();
        let all = descendants_of(pid);
        let children = children_of(pid);
        let order_kept = all.iter().all(|descendant| {
            let at = |p: i32| all.iter().position(|d| *d == p);
            parent_of(*descendant)
                .is_some_and(|parent| parent == pid || at(parent) < at(*descendant))
        });
        kill_all(&mut child, Below::Children);
        // The grandchildren still run (below another parent now): stop them, then check.
        let grandchildren: Vec<i32> = all
            .iter()
            .filter(|p| !children.contains(p))
            .copied()
            .collect();
        let survived: Vec<bool> = grandchildren
            .iter()
            .map(|grandchild| {
                let alive = cmdline(*grandchild).iter().any(|a| a == "sleep");
                let _ = signal(u32::try_from(*grandchild).unwrap(), Signal::SIGKILL);
                alive
            })
            .collect();
        assert!(order_kept, "{all:?}");
        assert_eq!(children.len(), 2, "{all:?}");
        assert_eq!(survived, [true, true], "{all:?}");

        let (mut child, pid) = tree();
        let all = descendants_of(pid);
        kill_all(&mut child, Below::Everything);
        // Gone, or a zombie (no arguments) until something reaps it.
        assert!(crate::eventually(Duration::from_secs(10), || {
            all.iter().all(|p| cmdline(*p).is_empty())
        }));
    }
}
