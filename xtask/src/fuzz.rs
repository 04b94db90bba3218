//! `cargo xtask fuzz-smoke`: each cargo-fuzz target for a few seconds on its corpus.

use super::*;

pub(super) fn fuzz_smoke_command(seconds_per_target: u64) -> Result<()> {
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
pub(super) fn ensure_cargo_fuzz(root: &Path) -> Result<()> {
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
pub(super) fn fuzz_command(root: &Path, fuzz_dir: &Path, subcommand: &str) -> Command {
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
pub(super) fn fuzz_smoke(root: &Path, seconds_per_target: u64) -> Result<Vec<(String, Duration)>> {
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

pub(super) fn copy_corpus(from: &Path, to: &Path) -> Result<()> {
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
pub(super) fn run_fuzzer(command: &mut Command, target: &str, fuzz_dir: &Path) -> Result<()> {
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
pub(super) fn is_progress_line(line: &[u8]) -> bool {
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
