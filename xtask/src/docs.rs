//! `cargo xtask docs [--check]`: the generated CLI reference, man pages and completions.

use super::*;

pub(super) fn docs_command(check: bool) -> Result<()> {
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
pub(super) fn generate_docs(root: &Path, out: &Path) -> Result<()> {
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
pub(super) fn docs_check(root: &Path) -> Result<()> {
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
pub(super) fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
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
pub(super) fn compare_trees(
    committed: &Path,
    generated: &Path,
    shown: &Path,
) -> Result<Vec<String>> {
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
