//! Generates the CLI reference, man pages and shell completions of `mytunnel` and
//! `mytunneld` from their clap definitions:
//!
//! ```text
//! cargo run -q -p mytunnel-cli --example gen-docs -- <OUT_DIR>
//! ```
//!
//! writes `<OUT_DIR>/cli/*.md`, `<OUT_DIR>/man/*.1` and `<OUT_DIR>/completions/*`, after
//! removing whatever those three directories held (so a removed subcommand leaves no stale
//! page). `cargo xtask docs` runs it into `docs/`; `cargo xtask docs --check` runs it into a
//! temporary directory and compares. What is rendered, and the Markdown pages, come from
//! `mytunnel_cli::reference`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Command;
use clap_complete::Shell;
use mytunnel_cli::edge_cli::CTL_HELP;
use mytunnel_cli::reference::{is_ctl, markdown, programs, walk};

/// The shells completion scripts are generated for.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The file a shell's completion script for `name` is installed as.
fn completion_file(shell: Shell, name: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{name}"),
        Shell::Fish => format!("{name}.fish"),
        _ => format!("{name}.bash"),
    }
}

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: cargo run -q -p mytunnel-cli --example gen-docs -- <OUT_DIR>");
        return ExitCode::from(2);
    };
    match generate(Path::new(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gen-docs: {message}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path) -> Result<()> {
    let dirs = [out.join("cli"), out.join("man"), out.join("completions")];
    for dir in &dirs {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", dir.display())),
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let [cli, man, completions] = dirs;
    for cmd in programs(false) {
        man_pages(&cmd, &man)?;
    }
    for cmd in programs(true) {
        let name = cmd.get_name().to_owned();
        write(&cli.join(format!("{name}.md")), markdown(&cmd).as_bytes())?;
        for shell in SHELLS {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), name.as_str(), &mut buf);
            write(&completions.join(completion_file(shell, &name)), &buf)?;
        }
    }
    Ok(())
}

fn write(path: &PathBuf, contents: &[u8]) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// One page per command and subcommand: `mytunnel.1`, `mytunnel-http.1`, …
fn man_pages(top: &Command, dir: &Path) -> Result<()> {
    let source = format!(
        "{} {}",
        top.get_name(),
        top.get_version().unwrap_or_default()
    );
    let mut commands = Vec::new();
    walk(top, &mut commands);
    for cmd in commands {
        let mut cmd = cmd.clone();
        if is_ctl(top, &cmd) {
            // clap does not render ctl's own help; the page gets it as its extra section.
            cmd = cmd.after_long_help(CTL_HELP);
        }
        // No date: the pages must not change from one run to the next.
        let page = clap_mangen::Man::new(cmd).source(source.as_str());
        let mut buf = Vec::new();
        page.render(&mut buf)
            .map_err(|e| format!("cannot render {}: {e}", page.get_filename()))?;
        write(&dir.join(page.get_filename()), &buf)?;
    }
    Ok(())
}
