//! Project automation for mytunnel, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! - `cargo xtask ci` runs every check CI runs, in order, and stops at the first failure:
//!   rustfmt, clippy, shellcheck, the tests (nextest when installed, else `cargo test`, then the doc
//!   tests), rustdoc with warnings denied, the generated docs check, a short fuzz smoke, and
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
//! - `cargo xtask e2e` installs the system packages the end-to-end suite starts (Caddy,
//!   OpenSSH server and client) when missing, then runs it:
//!   `cargo test -p mytunnel-cli --test e2e` (real sshd, Caddy and OS users; needs root).
//!
//! Only std is used, so the task builds fast on a clean machine. Every child process is a
//! `std::process::Command` whose command line is printed before it runs.

mod bench;
mod soak;

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
                               system packages (apt: caddy, openssh, shellcheck),
                               fmt --check, clippy -D warnings, shellcheck -S warning,
                               tests (nextest or cargo test, then doc tests; the
                               end-to-end suite included), rustdoc -D warnings,
                               docs --check, fuzz smoke, bench smoke
  docs [--check]             generate docs/cli (Markdown CLI reference), docs/man (man
                               pages) and docs/completions (bash, zsh, fish) from the clap
                               definitions (--check: generate into a temp dir and fail,
                               listing the files, if the committed ones differ)
  fuzz-smoke [--seconds N]   run each cargo-fuzz target for N seconds (default 20) on a
                               copy of its seed corpus; a crash fails
  e2e                        install caddy and openssh (apt) when missing, then run the
                               end-to-end suite (real sshd, Caddy, OS users; needs root):
                               cargo test -p mytunnel-cli --test e2e
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

// ---------------------------------------------------------------------------------------
// Paths, commands

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "xtask's manifest directory has no parent".to_owned())
}

/// The cargo that runs us (`cargo run` sets `CARGO`), else the one on `PATH`.
fn cargo(root: &Path) -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.current_dir(root);
    command
}

/// One word of a printed command line, quoted when a shell would need it.
fn shell_word(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '=' | ':' | ',' | '+')
        });
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command line as it would be typed: explicit env vars, then `cargo` (not the full
/// path from `CARGO`), then the arguments.
fn command_line(command: &Command) -> String {
    let mut line = String::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            let _ = write!(line, "{}={} ", key.to_string_lossy(), shell_word(value));
        }
    }
    let program = Path::new(command.get_program());
    if program.file_stem() == Some(OsStr::new("cargo")) {
        line.push_str("cargo");
    } else {
        line.push_str(&shell_word(command.get_program()));
    }
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&shell_word(arg));
    }
    line
}

/// Prints the command line, runs it with inherited stdio, and fails unless it succeeds.
fn run(command: &mut Command) -> Result<()> {
    let line = command_line(command);
    println!("$ {line}");
    flush();
    let status = command
        .status()
        .map_err(|e| format!("could not start `{line}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{line}` failed ({status})"))
    }
}

/// Like [`run`], but echoes the output line by line and records the test runners'
/// summary lines (nextest's `Summary [`, libtest's `test result:`).
fn run_recording_summaries(command: &mut Command, summaries: &mut Vec<String>) -> Result<()> {
    let line = command_line(command);
    println!("$ {line}");
    flush();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start `{line}`: {e}"))?;
    let stderr = child.stderr.take();
    let echo_stderr = std::thread::spawn(move || {
        let mut found = Vec::new();
        if let Some(stderr) = stderr {
            for text in BufReader::new(stderr)
                .lines()
                .map_while(std::result::Result::ok)
            {
                eprintln!("{text}");
                if is_summary_line(&text) {
                    found.push(text.trim().to_owned());
                }
            }
        }
        found
    });
    if let Some(stdout) = child.stdout.take() {
        for text in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            println!("{text}");
            if is_summary_line(&text) {
                summaries.push(text.trim().to_owned());
            }
        }
    }
    summaries.extend(echo_stderr.join().unwrap_or_default());
    let status = child
        .wait()
        .map_err(|e| format!("could not wait for `{line}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{line}` failed ({status})"))
    }
}

/// Every shell script the project ships: `scripts/*.sh`, `.ci/run`, test fixtures.
fn shell_scripts(root: &Path) -> Result<Vec<PathBuf>> {
    let mut scripts = vec![root.join(".ci/run")];
    for dir in ["scripts", "mytunnel-client/tests/fixtures"] {
        let entries =
            std::fs::read_dir(root.join(dir)).map_err(|e| format!("cannot list {dir}: {e}"))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_some_and(|ext| ext == "sh") {
                scripts.push(path);
            }
        }
    }
    scripts.sort();
    Ok(scripts)
}

/// The number just before `word` in a summary line (`207 passed`), or 0.
fn count_before(line: &str, word: &str) -> u64 {
    line.find(word)
        .and_then(|end| {
            let head = line.get(..end)?;
            let start = head
                .rfind(|c: char| !c.is_ascii_digit())
                .map_or(0, |i| i + 1);
            head.get(start..)?.parse().ok()
        })
        .unwrap_or(0)
}

/// nextest's own `Summary [` line (it indents it), or libtest's `test result:` at the start
/// of a line. nextest echoes a failing test's captured output indented, libtest's `test
/// result:` line included, which must not count that test twice.
fn is_summary_line(text: &str) -> bool {
    (text.trim_start().starts_with("Summary [") && text.contains("tests run"))
        || text.starts_with("test result:")
}

/// Installs the system packages the tests start for real (Caddy, and OpenSSH's server and
/// client for the end-to-end suite) when they are missing, with apt on Debian as root.
fn ensure_system_packages() -> Result<()> {
    // (what must be present, its package). A path is checked as a file: root's PATH may
    // lack /usr/sbin, where sshd lives.
    const PACKAGES: [(&str, &str); 5] = [
        ("caddy", "caddy"),
        ("shellcheck", "shellcheck"),
        ("/usr/sbin/sshd", "openssh-server"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
    ];
    let present = |binary: &str| {
        if binary.starts_with('/') {
            Path::new(binary).is_file()
        } else {
            succeeds_quietly(Command::new("sh").args(["-c", &format!("command -v {binary}")]))
        }
    };
    let mut missing: Vec<&str> = Vec::new();
    for (binary, package) in PACKAGES {
        if present(binary) {
            println!("  {binary}: present");
        } else if !missing.contains(&package) {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !succeeds_quietly(Command::new("sh").args(["-c", "command -v apt-get"])) {
        return Err(format!(
            "missing {}: install them with your package manager",
            missing.join(", ")
        ));
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

/// Whether a command runs and exits 0, with its output hidden (used for tool probes).
fn succeeds_quietly(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn flush() {
    let _ = std::io::stdout().flush();
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// ci

#[derive(Debug, Clone, Copy)]
enum Step {
    Prerequisites,
    Fmt,
    Clippy,
    Shellcheck,
    Tests,
    Doc,
    Docs,
    FuzzSmoke,
    BenchSmoke,
}

impl Step {
    const ALL: [Step; 9] = [
        Step::Prerequisites,
        Step::Fmt,
        Step::Clippy,
        Step::Shellcheck,
        Step::Tests,
        Step::Doc,
        Step::Docs,
        Step::FuzzSmoke,
        Step::BenchSmoke,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::Prerequisites => "prerequisites",
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Shellcheck => "shellcheck",
            Step::Tests => "tests",
            Step::Doc => "doc",
            Step::Docs => "docs check",
            Step::FuzzSmoke => "fuzz smoke",
            Step::BenchSmoke => "bench smoke",
        }
    }
}

/// The commands of the test step: the test runner, then the doc tests (nextest does not
/// run doc tests).
fn test_commands(root: &Path) -> [Command; 2] {
    let mut runner = cargo(root);
    if succeeds_quietly(cargo(root).args(["nextest", "--version"])) {
        runner.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        runner.args(["test", "--workspace", "--no-fail-fast"]);
    }
    let mut doc_tests = cargo(root);
    doc_tests.args(["test", "--workspace", "--doc"]);
    [runner, doc_tests]
}

fn ci() -> Result<()> {
    let root = workspace_root()?;
    let total = Step::ALL.len();
    let started = Instant::now();
    let mut results: Vec<(Step, Duration, bool)> = Vec::new();
    let mut failure = None;
    let mut test_summaries: Vec<String> = Vec::new();
    for (index, step) in Step::ALL.into_iter().enumerate() {
        let number = index + 1;
        let step_started = Instant::now();
        let outcome = match step {
            Step::Prerequisites => {
                banner(number, total, step, "system packages the tests use");
                ensure_system_packages()
            }
            Step::Fmt => {
                let mut c = cargo(&root);
                c.args(["fmt", "--all", "--", "--check"]);
                banner(number, total, step, &command_line(&c));
                run(&mut c)
            }
            Step::Clippy => {
                let mut c = cargo(&root);
                c.args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]);
                banner(number, total, step, &command_line(&c));
                run(&mut c)
            }
            Step::Shellcheck => {
                let mut c = Command::new("shellcheck");
                c.current_dir(&root).args(["-S", "warning"]);
                match shell_scripts(&root) {
                    Ok(scripts) => {
                        c.args(&scripts);
                        banner(number, total, step, &command_line(&c));
                        run(&mut c)
                    }
                    Err(e) => Err(e),
                }
            }
            Step::Tests => {
                let mut commands = test_commands(&root);
                let lines: Vec<String> = commands.iter().map(command_line).collect();
                banner(number, total, step, &lines.join(" && "));
                commands
                    .iter_mut()
                    .try_for_each(|c| run_recording_summaries(c, &mut test_summaries))
            }
            Step::Doc => {
                let mut c = cargo(&root);
                c.env("RUSTDOCFLAGS", "-D warnings")
                    .args(["doc", "--workspace", "--no-deps"]);
                banner(number, total, step, &command_line(&c));
                run(&mut c)
            }
            Step::Docs => {
                banner(
                    number,
                    total,
                    step,
                    "generate the docs into a temp dir and compare with docs/",
                );
                docs_check(&root)
            }
            Step::FuzzSmoke => {
                banner(
                    number,
                    total,
                    step,
                    &format!(
                        "cargo fuzz run <target> for {} ({DEFAULT_FUZZ_SECONDS}s each)",
                        FUZZ_TARGETS.join(", ")
                    ),
                );
                fuzz_smoke(&root, DEFAULT_FUZZ_SECONDS).map(|_| ())
            }
            Step::BenchSmoke => {
                banner(
                    number,
                    total,
                    step,
                    "cargo xtask bench --smoke --no-peers (every table at small sizes, to a temp file)",
                );
                bench::bench(&bench::Options {
                    smoke: true,
                    out: None,
                    peers: bench::Peers::Skipped,
                })
            }
        };
        let ok = outcome.is_ok();
        results.push((step, step_started.elapsed(), ok));
        if let Err(message) = outcome {
            failure = Some(format!(
                "step [{number}/{total}] {} failed: {message}",
                step.name()
            ));
            break;
        }
    }

    let passed = results.iter().filter(|(_, _, ok)| *ok).count();
    let failed = results.len() - passed;
    println!();
    println!("xtask ci summary:");
    for (index, step) in Step::ALL.into_iter().enumerate() {
        let (result, time) = match results.get(index) {
            Some((_, time, true)) => ("ok", seconds(*time)),
            Some((_, time, false)) => ("FAILED", seconds(*time)),
            None => ("not run", "-".to_owned()),
        };
        println!(
            "  [{}/{total}] {:<12} {:<8} {:>8}",
            index + 1,
            step.name(),
            result,
            time
        );
    }
    println!("  total {:>30}", seconds(started.elapsed()));
    println!("xtask ci: {passed} of {total} steps passed, {failed} failed");
    if !test_summaries.is_empty() {
        println!();
        println!("Test runner summaries:");
        for line in &test_summaries {
            println!("{line}");
        }
        // The last line of the log counts every test of every runner.
        let (passed, failed) = test_summaries
            .iter()
            .map(|line| (count_before(line, " passed"), count_before(line, " failed")))
            .fold((0, 0), |(p, f), (lp, lf)| (p + lp, f + lf));
        println!("tests: {passed} passed, {failed} failed");
    }
    flush();
    match failure {
        None => Ok(()),
        Some(message) => Err(message),
    }
}

fn banner(number: usize, total: usize, step: Step, what: &str) {
    println!();
    println!("==> [{number}/{total}] {}: {what}", step.name());
    flush();
}

// ---------------------------------------------------------------------------------------
// docs

fn docs_command(check: bool) -> Result<()> {
    let root = workspace_root()?;
    let started = Instant::now();
    if check {
        docs_check(&root)?;
        println!(
            "xtask docs: docs/{{{}}} are up to date ({})",
            DOC_TREES.join(","),
            seconds(started.elapsed())
        );
    } else {
        generate_docs(&root, &root.join("docs"))?;
        println!(
            "xtask docs: wrote docs/{{{}}} ({})",
            DOC_TREES.join(","),
            seconds(started.elapsed())
        );
    }
    Ok(())
}

/// Runs the generator (an example of mytunnel-cli, so xtask needs no clap) into `out`.
fn generate_docs(root: &Path, out: &Path) -> Result<()> {
    let mut command = cargo(root);
    command
        .args([
            "run",
            "-q",
            "-p",
            "mytunnel-cli",
            "--example",
            "gen-docs",
            "--",
        ])
        .arg(out);
    run(&mut command)
}

/// Generates the docs into a temporary directory and compares them with `docs/`.
fn docs_check(root: &Path) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("mytunnel-docs-{}", std::process::id()));
    let outcome = generate_docs(root, &scratch).and_then(|()| {
        let mut drift = Vec::new();
        for tree in DOC_TREES {
            drift.extend(compare_trees(
                &root.join("docs").join(tree),
                &scratch.join(tree),
                &Path::new("docs").join(tree),
            )?);
        }
        Ok(drift)
    });
    // Best effort: a leftover temp dir is harmless.
    let _ = std::fs::remove_dir_all(&scratch);
    let drift = outcome?;
    if drift.is_empty() {
        return Ok(());
    }
    println!("The generated docs differ from the committed ones:");
    for line in &drift {
        println!("  {line}");
    }
    println!("{DOCS_FIX}");
    flush();
    Err(format!(
        "{} generated doc file(s) out of date; {DOCS_FIX}",
        drift.len()
    ))
}

/// The files under `dir`, as paths relative to it, sorted; none when `dir` is missing.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, relative: &Path, into: &mut Vec<PathBuf>) -> Result<()> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            let path = entry.path();
            let name = relative.join(entry.file_name());
            if path.is_dir() {
                walk(&path, &name, into)?;
            } else {
                into.push(name);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    if dir.is_dir() {
        walk(dir, Path::new(""), &mut files)?;
    }
    files.sort();
    Ok(files)
}

/// Compares the committed tree with a freshly generated one, file by file, both ways.
/// Returns one line per difference, naming the file as `shown/<relative path>`.
fn compare_trees(committed: &Path, generated: &Path, shown: &Path) -> Result<Vec<String>> {
    let committed_files = list_files(committed)?;
    let generated_files = list_files(generated)?;
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut drift = Vec::new();
    for file in &generated_files {
        let name = shown.join(file);
        if !committed_files.contains(file) {
            drift.push(format!(
                "missing: {} (generated, not committed)",
                name.display()
            ));
        } else if read(&committed.join(file))? != read(&generated.join(file))? {
            drift.push(format!("differs: {}", name.display()));
        }
    }
    for file in &committed_files {
        if !generated_files.contains(file) {
            drift.push(format!(
                "extra:   {} (committed, no longer generated)",
                shown.join(file).display()
            ));
        }
    }
    Ok(drift)
}

// ---------------------------------------------------------------------------------------
// e2e

/// The demo: system packages, then the `demo` target (a real sshd, Caddy and edge on
/// loopback, a sample app published and fetched through its tunnel URL).
fn demo(once: bool) -> Result<()> {
    let root = workspace_root()?;
    println!("==> [1/2] prerequisites: system packages the demo uses");
    flush();
    ensure_system_packages()?;
    let mut command = cargo(&root);
    command.args(["test", "--quiet", "-p", "mytunnel-cli", "--test", "demo"]);
    if once {
        command.args(["--", "--once"]);
    }
    println!("==> [2/2] demo: {}", command_line(&command));
    flush();
    run(&mut command)
}

/// The end-to-end suite: system packages first, then `cargo test -p mytunnel-cli --test
/// e2e` (libtest runs its tests in parallel; each builds its own sshd, Caddy and edge).
fn e2e() -> Result<()> {
    let root = workspace_root()?;
    println!("==> [1/2] prerequisites: system packages the end-to-end suite uses");
    flush();
    ensure_system_packages()?;
    let mut command = cargo(&root);
    command.args(["test", "-p", "mytunnel-cli", "--test", "e2e"]);
    println!("==> [2/2] e2e: {}", command_line(&command));
    flush();
    let started = Instant::now();
    run(&mut command)?;
    println!("xtask e2e: passed in {}", seconds(started.elapsed()));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// fuzz smoke

fn fuzz_smoke_command(seconds_per_target: u64) -> Result<()> {
    let root = workspace_root()?;
    let timings = fuzz_smoke(&root, seconds_per_target)?;
    println!();
    println!("xtask fuzz-smoke summary:");
    for (what, time) in &timings {
        println!("  {what:<12} {:>8}", seconds(*time));
    }
    println!(
        "xtask fuzz-smoke: {} passed, 0 failed",
        timings.len().saturating_sub(1)
    );
    Ok(())
}

/// Installs cargo-fuzz when `cargo fuzz` is missing.
fn ensure_cargo_fuzz(root: &Path) -> Result<()> {
    if succeeds_quietly(cargo(root).args(["fuzz", "--version"])) {
        return Ok(());
    }
    println!("xtask: `cargo fuzz` is not installed; installing cargo-fuzz from crates.io");
    run(cargo(root).args(["install", "cargo-fuzz", "--locked"]))?;
    if succeeds_quietly(cargo(root).args(["fuzz", "--version"])) {
        Ok(())
    } else {
        Err("`cargo fuzz --version` still fails after installing cargo-fuzz".to_owned())
    }
}

/// The cargo-fuzz command for `fuzz/`, on stable Rust.
///
/// `--sanitizer none` drops `-Zsanitizer=address`, the one nightly-only flag cargo-fuzz
/// passes by default; everything else it passes (`-Cpasses=sancov-module`, the
/// `-Cllvm-args=-sanitizer-coverage-*` options, `--cfg fuzzing`) is accepted by stable
/// rustc. So no `RUSTC_BOOTSTRAP=1` is needed (checked with cargo-fuzz 0.13.2 and
/// rustc 1.95.0), and none is set: the targets build exactly as on a developer's machine.
fn fuzz_command(root: &Path, fuzz_dir: &Path, subcommand: &str) -> Command {
    let mut command = cargo(root);
    command.args([
        OsStr::new("fuzz"),
        OsStr::new(subcommand),
        OsStr::new("--sanitizer"),
        OsStr::new("none"),
        OsStr::new("--fuzz-dir"),
        fuzz_dir.as_os_str(),
    ]);
    command
}

/// Builds every target, then runs each for `seconds_per_target` on a temporary copy of its
/// seed corpus. Returns the time of the build and of each target.
fn fuzz_smoke(root: &Path, seconds_per_target: u64) -> Result<Vec<(String, Duration)>> {
    ensure_cargo_fuzz(root)?;
    let fuzz_dir = root.join("fuzz");
    let mut timings = Vec::new();

    let started = Instant::now();
    run(&mut fuzz_command(root, &fuzz_dir, "build"))?;
    timings.push(("build".to_owned(), started.elapsed()));

    let scratch = std::env::temp_dir().join(format!("mytunnel-fuzz-smoke-{}", std::process::id()));
    let outcome = FUZZ_TARGETS.iter().try_for_each(|target| {
        let started = Instant::now();
        let corpus = scratch.join(target);
        copy_corpus(&fuzz_dir.join("corpus").join(target), &corpus)?;
        let mut command = fuzz_command(root, &fuzz_dir, "run");
        command.arg(target).arg(&corpus).args([
            "--".to_owned(),
            format!("-max_total_time={seconds_per_target}"),
            "-rss_limit_mb=2048".to_owned(),
            // One input that runs this long is a hang: fail instead of using up CI's time.
            "-timeout=30".to_owned(),
        ]);
        run_fuzzer(&mut command, target, &fuzz_dir)?;
        timings.push(((*target).to_owned(), started.elapsed()));
        Ok(())
    });
    // Best effort: a leftover temp dir is harmless.
    let _ = std::fs::remove_dir_all(&scratch);
    outcome.map(|()| timings)
}

fn copy_corpus(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let entries =
        std::fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        let path = entry.path();
        if path.is_file() {
            std::fs::copy(&path, to.join(entry.file_name()))
                .map_err(|e| format!("cannot copy {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Runs one fuzzer, passing its stderr through except libFuzzer's per-input progress lines
/// (`#123\tNEW …` and their `NEW_FUNC` details) and its closing "recommended dictionary",
/// which would fill the CI log. Crash reports, `INFO:` lines and the final
/// `Done N runs in S second(s)` line are printed as they come.
fn run_fuzzer(command: &mut Command, target: &str, fuzz_dir: &Path) -> Result<()> {
    let line = command_line(command);
    println!("$ {line}");
    flush();
    let mut child = command
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start `{line}`: {e}"))?;
    let mut hidden = 0u64;
    if let Some(stderr) = child.stderr.take() {
        let mut reader = BufReader::new(stderr);
        let mut buf = Vec::new();
        let mut out = std::io::stderr().lock();
        let mut in_dictionary = false;
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if buf.starts_with(b"###### Recommended dictionary.") {
                in_dictionary = true;
            }
            if in_dictionary || is_progress_line(&buf) {
                hidden += 1;
            } else {
                let _ = out.write_all(&buf);
            }
            if buf.starts_with(b"###### End of recommended dictionary.") {
                in_dictionary = false;
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("could not wait for `{line}`: {e}"))?;
    println!("({hidden} lines of libFuzzer progress and its recommended dictionary hidden)");
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "fuzz target `{target}` failed ({status}); any crashing input is in {}; \
             reproduce with `cargo fuzz run --sanitizer none --fuzz-dir fuzz {target} <input>`",
            fuzz_dir.join("artifacts").join(target).display()
        ))
    }
}

/// libFuzzer's progress lines look like `#1024\tpulse  cov: …` or `#57\tNEW    cov: …`;
/// `INITED` and `DONE` (the corpus loaded, the final coverage) are kept.
fn is_progress_line(line: &[u8]) -> bool {
    if line.starts_with(b"\tNEW_FUNC[") {
        return true;
    }
    let Some(rest) = line.strip_prefix(b"#") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let Some(event) = rest.get(digits..).and_then(|r| r.strip_prefix(b"\t")) else {
        return false;
    };
    digits > 0 && !(event.starts_with(b"INITED") || event.starts_with(b"DONE"))
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
