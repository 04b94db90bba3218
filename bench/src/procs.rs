//! Processes the bench starts: guards that stop them by pid, process trees, memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use mytunnel_test_support::{kill_all, poll_every, signal, Below};
use nix::sys::signal::Signal;

/// Every failure is a message saying what failed.
pub type Result<T> = std::result::Result<T, String>;

/// A child process stopped by its pid when dropped: its descendants first (SIGKILL, with
/// the child stopped meanwhile so that it forks no new one), then the child itself.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    what: String,
    tree: bool,
}

impl Guard {
    /// Starts `command`, naming it `what` in errors.
    pub fn spawn(command: &mut Command, what: &str) -> Result<Guard> {
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {what} ({}): {e}", describe(command)))?;
        Ok(Guard {
            child,
            what: what.to_owned(),
            tree: true,
        })
    }

    /// Like [`Guard::spawn`] for a program that starts no processes of its own: only the
    /// child is killed (no scan of `/proc`, which matters for a thousand of them).
    pub fn spawn_leaf(command: &mut Command, what: &str) -> Result<Guard> {
        let mut guard = Guard::spawn(command, what)?;
        guard.tree = false;
        Ok(guard)
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs; an error naming it when it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} exited early with {status}", self.what)),
            Err(e) => Err(format!("cannot wait for {}: {e}", self.what)),
        }
    }

    /// Sends `signal` and waits at most `timeout` for the child to exit; whether it did.
    pub fn signal_and_wait(&mut self, sig: Signal, timeout: Duration) -> bool {
        let _ = signal(self.child.id(), sig);
        poll_every(timeout, Duration::from_millis(5), || {
            !matches!(self.child.try_wait(), Ok(None))
        })
    }

    /// Kills the tree (descendants, then the child; only the child for a leaf) and reaps
    /// the child.
    pub fn kill_tree(&mut self) {
        let below = if self.tree {
            Below::Everything
        } else {
            Below::Nothing
        };
        kill_all(&mut self.child, below);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill_tree();
    }
}

/// Memory of one process, in KiB: resident (`VmRSS`) and proportional (`Pss`, shared pages
/// divided among the processes sharing them, so sums over many processes are fair).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size.
    pub rss_kib: u64,
    /// Proportional set size.
    pub pss_kib: u64,
}

impl std::ops::Add for Memory {
    type Output = Memory;
    fn add(self, other: Memory) -> Memory {
        Memory {
            rss_kib: self.rss_kib + other.rss_kib,
            pss_kib: self.pss_kib + other.pss_kib,
        }
    }
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The memory of `pid` from `/proc/<pid>/smaps_rollup` (zero when it has gone).
pub fn memory_of(pid: i32) -> Memory {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Memory {
        rss_kib: kib_field(&rollup, "Rss:").unwrap_or(0),
        pss_kib: kib_field(&rollup, "Pss:").unwrap_or(0),
    }
}

/// A command line for messages and reports, words quoted when needed.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| {
            let word = word.to_string_lossy();
            if !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
            {
                word.into_owned()
            } else {
                format!("'{}'", word.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` to its end with stdin closed; an error unless it exits 0.
pub fn run_ok(command: &mut Command, what: &str) -> Result<Output> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what} ({}): {e}", describe(command)))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{what} failed with {}: {}\nstdout: {}\nstderr: {}",
            output.status,
            describe(command),
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A program on `PATH`, else in `~/.cargo/bin` (where `cargo install` puts it).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.push(PathBuf::from("/usr/sbin"));
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A program that must be present, or an error saying how to get it.
pub fn require_program(name: &str, how: &str) -> Result<PathBuf> {
    find_program(name).ok_or_else(|| format!("{name} is not installed: {how}"))
}

/// A free loopback TCP port: the kernel's choice on `127.0.0.1:0`, released for a child to
/// bind (a child that then fails to bind is retried by its caller).
pub fn free_port() -> Result<u16> {
    mytunnel_test_support::free_port().map_err(|e| format!("cannot probe a free port: {e}"))
}
