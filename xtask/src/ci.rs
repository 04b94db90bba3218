//! `cargo xtask ci`: every check CI runs, in order, with the test runners' summaries.

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    Prerequisites,
    Fmt,
    Clippy,
    Shellcheck,
    Packages,
    Tests,
    PackageInstall,
    Doc,
    Docs,
    FuzzSmoke,
    BenchSmoke,
}

impl Step {
    const ALL: [Step; 11] = [
        Step::Prerequisites,
        Step::Fmt,
        Step::Clippy,
        Step::Shellcheck,
        Step::Packages,
        Step::Tests,
        Step::PackageInstall,
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
            Step::Packages => "packages",
            Step::Tests => "tests",
            Step::PackageInstall => "package install",
            Step::Doc => "doc",
            Step::Docs => "docs check",
            Step::FuzzSmoke => "fuzz smoke",
            Step::BenchSmoke => "bench smoke",
        }
    }
}

/// The commands of the test step: the test runner, then the doc tests (nextest does not
/// run doc tests).
pub(super) fn test_commands(root: &Path) -> [Command; 2] {
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

pub(super) fn ci() -> Result<()> {
    let root = workspace_root()?;
    let total = Step::ALL.len();
    let started = Instant::now();
    let mut results: Vec<(Step, Duration, bool)> = Vec::new();
    let mut failure = None;
    let mut test_summaries: Vec<String> = Vec::new();
    // The packages step's output, for the install step after the tests.
    let mut packages: Option<(package::Built, PathBuf)> = None;
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
            Step::Packages => {
                banner(
                    number,
                    total,
                    step,
                    "cargo build --release, then cargo deb: mytunneld, mytunnel (and mytunneld one revision up)",
                );
                package::build_with_upgrade(&root, None).map(|built| packages = Some(built))
            }
            Step::PackageInstall => {
                banner(
                    number,
                    total,
                    step,
                    "install the packages, set an edge up, HTTPS through a tunnel, upgrade, remove, purge",
                );
                match &packages {
                    Some((built, upgrade)) => {
                        package::install_test(&root, built, upgrade, &mut test_summaries)
                    }
                    None => Err("the packages step built nothing".to_owned()),
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
            "  [{}/{total}] {:<16} {:<8} {:>8}",
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

pub(super) fn banner(number: usize, total: usize, step: Step, what: &str) {
    println!();
    println!("==> [{number}/{total}] {}: {what}", step.name());
    flush();
}
