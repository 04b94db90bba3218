//! Project automation for mytunnel, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! - `cargo xtask ci` runs every check CI runs, in order, and stops at the first failure:
//!   rustfmt, clippy, shellcheck, the Debian packages, the tests (nextest when installed,
//!   else `cargo test`, then the doc tests), the packages' install test, rustdoc with warnings denied, the generated docs check, a short fuzz smoke, and
//!   the bench smoke (`cargo xtask bench --smoke --no-peers`).
//! - `cargo xtask docs [--check]` generates the CLI reference (`docs/cli/*.md`), the man pages
//!   (`docs/man/*.1`) and the shell completions (`docs/completions/`) from the clap
//!   definitions, with `cargo run -q -p mytunnel-cli --example gen-docs -- <dir>`. With
//!   `--check` it generates into a temporary directory instead and fails, listing the files,
//!   when the committed ones differ.
//! - `cargo xtask fuzz-smoke [--seconds N]` runs only the fuzz smoke: each cargo-fuzz target
//!   in `fuzz/` for N seconds (default 20) on a copy of its seed corpus.
//! - `cargo xtask bench [--smoke] [--no-peers]` runs the benchmarks (see `bench.rs`) and
//!   writes `BENCHMARKS.md`; `--smoke --no-peers` is the short check CI runs.
//! - `cargo xtask soak [--cycles N] [--clients N] [--leases N] [--tunnels N] [--rounds N]`
//!   runs the long form of the load and fault suites (see `soak.rs`) and prints their
//!   figures.
//! - `cargo xtask package [--deb-version V] [--test]` builds the Debian packages
//!   `mytunneld` and `mytunnel` with cargo-deb (see `package.rs`); `--test` installs,
//!   upgrades and removes them on this machine (root).
//! - `cargo xtask e2e` installs the system packages the end-to-end suite starts (Caddy,
//!   OpenSSH server and client) when missing, then runs it:
//!   `cargo test -p mytunnel-cli --test e2e` (real sshd, Caddy and OS users; needs root).
//!
//! Only std is used, so the task builds fast on a clean machine. Every child process is a
//! `std::process::Command` whose command line is printed before it runs.

mod bench;
mod ci;
mod docs;
mod e2e;
mod fuzz;
mod package;
mod process;
mod soak;

use ci::*;
use docs::*;
use e2e::*;
use fuzz::*;
use process::*;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Every failure is a message for the person reading the log.
type Result<T> = std::result::Result<T, String>;

/// The cargo-fuzz targets in `fuzz/fuzz_targets/`, each with a seed corpus in
/// `fuzz/corpus/<target>/`.
const FUZZ_TARGETS: [&str; 8] = [
    "gate",
    "slug",
    "duration",
    "reply",
    "caddy_json",
    "envfile",
    "control_request",
    "host_names",
];

/// Seconds each fuzz target runs for in `ci` and by default in `fuzz-smoke`.
const DEFAULT_FUZZ_SECONDS: u64 = 20;

/// The directories under `docs/` that `cargo xtask docs` generates (and owns entirely).
const DOC_TREES: [&str; 3] = ["cli", "man", "completions"];

/// What to run when the committed docs are out of date.
const DOCS_FIX: &str = "run `cargo xtask docs` and commit the result";

/// Commands planned in the design that this release does not have yet.
const NOT_YET: [&str; 1] = ["dist"];

const USAGE: &str = "\
Usage: cargo xtask <command> [options]

Commands:
  ci                         run every CI check in order, stopping at the first failure:
                               system packages (apt: caddy, openssh, shellcheck,
                               chromium, chromium-driver, dpkg-dev, systemd,
                               postgresql),
                               fmt --check, clippy -D warnings, shellcheck -S warning,
                               the Debian packages (package), tests (nextest or cargo
                               test, then doc tests; the end-to-end suite included),
                               the packages installed for real (package --test),
                               rustdoc -D warnings, docs --check, fuzz smoke, bench smoke
  docs [--check]             generate docs/cli (Markdown CLI reference), docs/man (man
                               pages) and docs/completions (bash, zsh, fish) from the clap
                               definitions (--check: generate into a temp dir and fail,
                               listing the files, if the committed ones differ)
  fuzz-smoke [--seconds N]   run each cargo-fuzz target for N seconds (default 20) on a
                               copy of its seed corpus; a crash fails
  e2e                        install caddy and openssh (apt) when missing, then run the
                               end-to-end suite (real sshd, Caddy, OS users; needs root):
                               cargo test -p mytunnel-cli --test e2e
  package [--deb-version V] [--test]
                             build the Debian packages mytunneld (edge) and mytunnel
                               (client) into target/debian with cargo-deb (installed
                               when missing), from one release build (--deb-version:
                               their version, default the crate's, revision 1; --test:
                               then install them on this machine, set an on-demand TLS
                               edge up with Debian's Caddy, fetch a tunnel over HTTPS,
                               upgrade, remove and purge; needs root)
                             e.g. cargo xtask package && apt-get install ./target/debian/mytunneld_*.deb
  demo [--once]              install caddy and openssh when missing, start sshd, Caddy and
                               mytunneld serve on loopback, publish a sample app as user
                               alice and fetch it through its tunnel URL; Ctrl-C tears
                               down (--once: exit after the fetch). Needs root.
  bench [--smoke] [--no-peers] [--out P]
                             install wrk (apt), bore and rathole (cargo install) when
                               missing, build in release mode and run the benchmarks:
                               cargo run --release -p mytunnel-bench; writes BENCHMARKS.md
                               (--smoke: small sizes in ~30 s, dev profile, a temp file,
                               fails unless every table got numbers; --no-peers: leave
                               bore and rathole out). Needs root.
                             e.g. cargo xtask bench --smoke --no-peers   (what CI runs)
  soak [--cycles N] [--clients N] [--leases N] [--tunnels N] [--rounds N]
                             the long load and fault suites: 32 clients x 50 cycles of
                               real ctl processes (4 through ssh), serve killed -9 in
                               passes over 500 leases, sshd restarted under 200
                               connected tunnels (--tunnels), frozen clients;
                               prints every measured figure. Needs root.
  help, --help, -h           print this help

Not yet available (each arrives with a later release; exits with code 2):
  dist
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Task {
    Help,
    Ci,
    Docs { check: bool },
    FuzzSmoke { seconds: u64 },
    E2e,
    Demo { once: bool },
    NotYet(String),
    Bench(bench::Options),
    Package(package::Options),
    Soak(soak::Options),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = match parse_command_line(&args) {
        Ok(task) => task,
        Err(message) => {
            eprintln!("xtask: {message}\n");
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = match task {
        Task::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Task::NotYet(command) => {
            eprintln!(
                "xtask: `cargo xtask {command}` is not yet available; it arrives with a later release"
            );
            return ExitCode::from(2);
        }
        Task::Ci => ci(),
        Task::Docs { check } => docs_command(check),
        Task::FuzzSmoke { seconds } => fuzz_smoke_command(seconds),
        Task::E2e => e2e(),
        Task::Demo { once } => demo(once),
        Task::Bench(options) => bench::bench(&options),
        Task::Package(options) => package::package_command(&options),
        Task::Soak(options) => soak::soak(&options),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the arguments after `cargo xtask`. An error is a usage error (exit code 2).
fn parse_command_line(args: &[String]) -> Result<Task> {
    let Some((command, rest)) = args.split_first() else {
        return Err("no command given".to_owned());
    };
    match command.as_str() {
        "help" | "--help" | "-h" => Ok(Task::Help),
        "ci" => match rest.first() {
            None => Ok(Task::Ci),
            Some(extra) => Err(format!(
                "`cargo xtask ci` takes no arguments, got {extra:?}"
            )),
        },
        "docs" => match rest {
            [] => Ok(Task::Docs { check: false }),
            [flag] if flag == "--check" => Ok(Task::Docs { check: true }),
            _ => Err(format!(
                "`cargo xtask docs` takes only --check, got {rest:?}"
            )),
        },
        "fuzz-smoke" => fuzz_smoke_seconds(rest).map(|seconds| Task::FuzzSmoke { seconds }),
        "e2e" => match rest.first() {
            None => Ok(Task::E2e),
            Some(extra) => Err(format!(
                "`cargo xtask e2e` takes no arguments, got {extra:?}"
            )),
        },
        "demo" => match rest {
            [] => Ok(Task::Demo { once: false }),
            [flag] if flag == "--once" => Ok(Task::Demo { once: true }),
            _ => Err(format!(
                "`cargo xtask demo` takes only --once, got {rest:?}"
            )),
        },
        "bench" => bench::parse(rest).map(Task::Bench),
        "package" => package::parse(rest).map(Task::Package),
        "soak" => soak::parse(rest).map(Task::Soak),
        other if NOT_YET.contains(&other) => Ok(Task::NotYet(other.to_owned())),
        other => Err(format!("unknown command {other:?}")),
    }
}

/// Reads `[--seconds N]` / `[--seconds=N]`.
fn fuzz_smoke_seconds(rest: &[String]) -> Result<u64> {
    let mut seconds = DEFAULT_FUZZ_SECONDS;
    let mut iter = rest.iter();
    while let Some(arg) = iter.next() {
        let value = if arg == "--seconds" {
            iter.next()
                .ok_or_else(|| "--seconds needs a value".to_owned())?
                .as_str()
        } else if let Some(value) = arg.strip_prefix("--seconds=") {
            value
        } else {
            return Err(format!("`cargo xtask fuzz-smoke` does not take {arg:?}"));
        };
        seconds = match value.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "--seconds {value:?} is not a positive whole number"
                ))
            }
        };
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Task> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        parse_command_line(&args)
    }

    #[test]
    fn parses_command_lines() {
        assert_eq!(parse(&["ci"]), Ok(Task::Ci));
        assert_eq!(parse(&["--help"]), Ok(Task::Help));
        assert_eq!(
            parse(&["fuzz-smoke"]),
            Ok(Task::FuzzSmoke {
                seconds: DEFAULT_FUZZ_SECONDS
            })
        );
        assert_eq!(
            parse(&["fuzz-smoke", "--seconds", "5"]),
            Ok(Task::FuzzSmoke { seconds: 5 })
        );
        assert_eq!(
            parse(&["fuzz-smoke", "--seconds=7"]),
            Ok(Task::FuzzSmoke { seconds: 7 })
        );
        assert_eq!(parse(&["e2e"]), Ok(Task::E2e));
        assert_eq!(parse(&["docs"]), Ok(Task::Docs { check: false }));
        assert_eq!(parse(&["docs", "--check"]), Ok(Task::Docs { check: true }));
        assert_eq!(parse(&["demo"]), Ok(Task::Demo { once: false }));
        assert_eq!(parse(&["demo", "--once"]), Ok(Task::Demo { once: true }));
        assert_eq!(
            parse(&["bench", "--smoke"]),
            Ok(Task::Bench(bench::Options {
                smoke: true,
                out: None,
                peers: bench::Peers::Measured,
            }))
        );
        for bad in [
            &[][..],
            &["bogus"],
            &["ci", "--fast"],
            &["e2e", "--fast"],
            &["docs", "--fix"],
            &["docs", "--check", "--check"],
            &["fuzz-smoke", "--seconds"],
            &["fuzz-smoke", "--seconds", "0"],
            &["fuzz-smoke", "--seconds", "x"],
            &["fuzz-smoke", "gate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn summary_lines_are_the_runners_own() {
        assert!(is_summary_line(
            "     Summary [  98.967s] 292 tests run: 291 passed, 1 failed, 0 skipped"
        ));
        assert!(is_summary_line(
            "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured"
        ));
        // A failing test's captured output, as nextest echoes it.
        assert!(!is_summary_line(
            "    test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 4 filtered out"
        ));
    }

    #[test]
    fn summary_counts() {
        let nextest = "Summary [  16.573s] 207 tests run: 207 passed, 0 skipped";
        assert_eq!(count_before(nextest, " passed"), 207);
        assert_eq!(count_before(nextest, " failed"), 0);
        let failing = "Summary [   1.0s] 10 tests run: 8 passed, 2 failed, 0 skipped";
        assert_eq!(count_before(failing, " failed"), 2);
        let libtest = "test result: ok. 3 passed; 1 failed; 0 ignored; 0 measured";
        assert_eq!(count_before(libtest, " passed"), 3);
        assert_eq!(count_before(libtest, " failed"), 1);
    }

    #[test]
    fn libfuzzer_progress_lines() {
        assert!(is_progress_line(b"#57\tNEW    cov: 12 ft: 13\n"));
        assert!(is_progress_line(b"#1048576\tpulse  cov: 12\n"));
        assert!(is_progress_line(b"\tNEW_FUNC[1/2]: 0x55\n"));
        assert!(!is_progress_line(b"#13\tINITED cov: 386\n"));
        assert!(!is_progress_line(b"#400100\tDONE   cov: 824\n"));
        assert!(!is_progress_line(b"Done 400100 runs in 6 second(s)\n"));
        assert!(!is_progress_line(b"# comment\n"));
    }

    #[test]
    fn compares_doc_trees_both_ways() -> Result<()> {
        let base = std::env::temp_dir().join(format!("xtask-compare-{}", std::process::id()));
        let committed = base.join("committed");
        let generated = base.join("generated");
        let write = |path: PathBuf, text: &str| -> Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&path, text).map_err(|e| e.to_string())
        };
        for dir in [&committed, &generated] {
            write(dir.join("same.md"), "same\n")?;
            write(dir.join("sub/changed.1"), "old\n")?;
        }
        let shown = Path::new("docs/cli");
        let clean = compare_trees(&committed, &generated, shown);
        write(generated.join("sub/changed.1"), "new\n")?;
        write(generated.join("new.bash"), "x\n")?;
        write(committed.join("gone.fish"), "x\n")?;
        let drift = compare_trees(&committed, &generated, shown);
        let missing_dir = compare_trees(&base.join("absent"), &generated, shown);
        let _ = std::fs::remove_dir_all(&base);

        assert_eq!(clean, Ok(Vec::new()));
        assert_eq!(
            drift,
            Ok(vec![
                "missing: docs/cli/new.bash (generated, not committed)".to_owned(),
                "differs: docs/cli/sub/changed.1".to_owned(),
                "extra:   docs/cli/gone.fish (committed, no longer generated)".to_owned(),
            ])
        );
        assert_eq!(missing_dir.map(|d| d.len()), Ok(3));
        Ok(())
    }

    #[test]
    fn printed_command_lines() {
        let mut c = Command::new("/opt/rust/bin/cargo");
        c.env("RUSTDOCFLAGS", "-D warnings")
            .args(["doc", "--workspace", "it's"]);
        assert_eq!(
            command_line(&c),
            "RUSTDOCFLAGS='-D warnings' cargo doc --workspace 'it'\\''s'"
        );
    }
}
