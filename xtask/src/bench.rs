//! `cargo xtask bench [--smoke] [--no-peers] [--out PATH]`: installs what the benchmarks
//! start (Caddy and OpenSSH through the shared prerequisites, wrk from apt, bore and rathole
//! with `cargo install`) when missing, builds the binaries, then runs the bench crate:
//! `cargo run --release -p mytunnel-bench -- [--smoke] [--no-peers] [--out PATH]`.
//!
//! The full run writes `BENCHMARKS.md` at the workspace root and its headline figures to
//! `bench/last-run.json` (the next run prints them beside its own; commit both). `--smoke`
//! runs every measurement at a small size (about 40 s once built), writes to a temporary
//! file and fails
//! unless every table got numbers; it checks the harness, not the speed, so it builds in the
//! dev profile, which the test step has mostly built already. `--no-peers` leaves bore and
//! rathole out (neither installed nor measured): CI's smoke uses it, because building the
//! two from crates.io costs a fresh machine about five minutes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::{
    cargo, ensure_system_packages, flush, run, seconds, succeeds_quietly, workspace_root, Result,
};

/// What `cargo xtask bench` was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// Small sizes, temporary output, every table checked.
    pub smoke: bool,
    /// Where the report goes (default: `BENCHMARKS.md`, or a temp file with `--smoke`).
    pub out: Option<PathBuf>,
    /// Which comparison tunnels are installed and measured.
    pub peers: Peers,
}

/// Whether the run measures the peer tunnels (bore, rathole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Peers {
    /// Install them when missing and measure them.
    #[default]
    Measured,
    /// `--no-peers`: neither installed nor measured.
    Skipped,
}

/// Reads the arguments after `cargo xtask bench`.
pub fn parse(rest: &[String]) -> Result<Options> {
    let mut options = Options::default();
    let mut iter = rest.iter();
    while let Some(arg) = iter.next() {
        if arg == "--smoke" {
            options.smoke = true;
        } else if arg == "--no-peers" {
            options.peers = Peers::Skipped;
        } else if arg == "--out" {
            let path = iter.next().ok_or_else(|| "--out needs a path".to_owned())?;
            options.out = Some(PathBuf::from(path));
        } else if let Some(path) = arg.strip_prefix("--out=") {
            options.out = Some(PathBuf::from(path));
        } else {
            return Err(format!("`cargo xtask bench` does not take {arg:?}"));
        }
    }
    Ok(options)
}

/// A program on `PATH` or in `~/.cargo/bin`.
fn installed(program: &str) -> bool {
    if succeeds_quietly(Command::new("sh").args(["-c", &format!("command -v {program}")])) {
        return true;
    }
    std::env::var_os("HOME")
        .is_some_and(|home| Path::new(&home).join(".cargo/bin").join(program).is_file())
}

/// wrk (apt), and bore and rathole (`cargo install`) when measured, when missing.
fn ensure_bench_tools(root: &Path, peers: Peers) -> Result<()> {
    if installed("wrk") {
        println!("  wrk: present");
    } else {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends", "wrk"]))?;
    }
    if peers == Peers::Skipped {
        println!("  bore, rathole: not measured (--no-peers)");
        return Ok(());
    }
    for (program, krate) in [("bore", "bore-cli"), ("rathole", "rathole")] {
        if installed(program) {
            println!("  {program}: present");
        } else {
            // The crate's own lock file first; some pin dependencies that newer compilers
            // reject (rathole's `time` 0.3.29), so fall back to a fresh resolution.
            if run(cargo(root).args(["install", "--locked", krate])).is_err() {
                run(cargo(root).args(["install", krate]))?;
            }
        }
    }
    Ok(())
}

/// The whole task.
pub fn bench(options: &Options) -> Result<()> {
    let root = workspace_root()?;
    let started = Instant::now();
    println!(
        "==> [1/3] prerequisites: caddy, openssh, wrk{}",
        match options.peers {
            Peers::Measured => ", bore, rathole",
            Peers::Skipped => "",
        }
    );
    flush();
    ensure_system_packages()?;
    ensure_bench_tools(&root, options.peers)?;
    // The smoke checks that every measurement still runs, not how fast: the dev profile
    // reuses what the tests built instead of a cold release build.
    let profile: &[&str] = if options.smoke { &[] } else { &["--release"] };
    println!(
        "==> [2/3] build: the binaries the bench starts, in the {} profile",
        if options.smoke { "dev" } else { "release" }
    );
    flush();
    run(cargo(&root)
        .arg("build")
        .args(profile)
        .args(["-p", "mytunnel-cli", "--bins"]))?;
    let mut command = cargo(&root);
    command
        .arg("run")
        .args(profile)
        .args(["-p", "mytunnel-bench", "--"]);
    if options.smoke {
        command.arg("--smoke");
    }
    if options.peers == Peers::Skipped {
        command.arg("--no-peers");
    }
    if let Some(out) = &options.out {
        command.arg("--out").arg(out);
    }
    println!(
        "==> [3/3] bench{}",
        if options.smoke { " (smoke)" } else { "" }
    );
    flush();
    let bench_started = Instant::now();
    run(&mut command)?;
    println!(
        "xtask bench: done in {} (measurements {})",
        seconds(started.elapsed()),
        seconds(bench_started.elapsed())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &[&str]) -> Result<Options> {
        parse(&words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_options() {
        assert_eq!(parse_words(&[]), Ok(Options::default()));
        assert_eq!(
            parse_words(&["--smoke", "--out", "/tmp/x.md"]),
            Ok(Options {
                smoke: true,
                out: Some(PathBuf::from("/tmp/x.md")),
                peers: Peers::Measured,
            })
        );
        assert_eq!(
            parse_words(&["--smoke", "--no-peers"]).map(|o| o.peers),
            Ok(Peers::Skipped)
        );
        assert_eq!(
            parse_words(&["--out=/tmp/y.md"]).map(|o| o.out),
            Ok(Some(PathBuf::from("/tmp/y.md")))
        );
        assert!(parse_words(&["--out"]).is_err());
        assert!(parse_words(&["--fast"]).is_err());
    }
}
