//! `cargo xtask package [--deb-version V] [--test]`: the Debian packages `mytunneld` (the
//! edge) and `mytunnel` (the client), built with cargo-deb from the metadata in
//! `mytunnel-cli/Cargo.toml`, and their install test.

use super::*;

/// The cargo-deb release installed when none is (`cargo install --locked`).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// What `cargo xtask package` was asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Options {
    /// The packages' version (`--deb-version`), else the crate's with revision 1.
    pub(super) deb_version: Option<String>,
    /// Then install, upgrade and remove them on this machine (`--test`; root).
    pub(super) test: bool,
}

/// Reads `[--deb-version V] [--test]`.
pub(super) fn parse(rest: &[String]) -> Result<Options> {
    let mut options = Options::default();
    let mut iter = rest.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--test" => options.test = true,
            "--deb-version" => {
                let version = iter
                    .next()
                    .ok_or_else(|| "--deb-version needs a value, e.g. 0.1.0-2".to_owned())?;
                options.deb_version = Some(check_deb_version(version)?);
            }
            other => match other.strip_prefix("--deb-version=") {
                Some(version) => options.deb_version = Some(check_deb_version(version)?),
                None => return Err(format!("`cargo xtask package` does not take {other:?}")),
            },
        }
    }
    Ok(options)
}

/// A Debian version: starts with a digit, then `[A-Za-z0-9.+~-]`.
fn check_deb_version(version: &str) -> Result<String> {
    let valid = version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-'));
    if valid {
        Ok(version.to_owned())
    } else {
        Err(format!(
            "--deb-version {version:?} is not a Debian version (a digit, then A-Z a-z 0-9 . + ~ -)"
        ))
    }
}

/// The two packages, each as cargo-deb's `--variant` (none: the client).
const PACKAGES: [(&str, Option<&str>); 2] = [("mytunnel", None), ("mytunneld", Some("mytunneld"))];

/// The built packages' paths, in `PACKAGES` order.
pub(super) struct Built {
    pub(super) client: PathBuf,
    pub(super) edge: PathBuf,
}

pub(super) fn package_command(options: &Options) -> Result<()> {
    let root = workspace_root()?;
    let started = Instant::now();
    let steps = if options.test { 4 } else { 2 };
    println!("==> [1/{steps}] cargo-deb and a release build");
    flush();
    let (built, upgrade) = if options.test {
        let (built, upgrade) = build_with_upgrade(&root, options.deb_version.as_deref())?;
        (built, Some(upgrade))
    } else {
        let out = root.join("target/debian");
        (
            build_packages(&root, options.deb_version.as_deref(), &out)?,
            None,
        )
    };
    println!("==> [2/{steps}] packages");
    for path in [&built.client, &built.edge] {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("  {} ({} KiB)", path.display(), size / 1024);
    }
    if let Some(upgrade) = upgrade {
        println!("==> [3/{steps}] system packages the install test uses");
        flush();
        ensure_system_packages()?;
        println!("==> [4/{steps}] install, set up, serve over HTTPS, upgrade, remove");
        flush();
        install_test(&root, &built, &upgrade, &mut Vec::new())?;
    }
    println!("xtask package: done in {}", seconds(started.elapsed()));
    Ok(())
}

/// The packages into target/debian, and the edge's again with the next revision (0.1.0-1:
/// 0.1.0-2) into target/debian-upgrade, for the install test's upgrade.
pub(super) fn build_with_upgrade(
    root: &Path,
    deb_version: Option<&str>,
) -> Result<(Built, PathBuf)> {
    let version =
        deb_version.map_or_else(|| format!("{}-1", env!("CARGO_PKG_VERSION")), str::to_owned);
    // cargo-deb clears target/debian of earlier packages whatever --output says: the
    // upgrade's build goes first.
    let upgrade_dir = root.join("target/debian-upgrade");
    let upgrade = build_packages(root, Some(&next_revision(&version)), &upgrade_dir)?.edge;
    let built = build_packages(root, deb_version, &root.join("target/debian"))?;
    Ok((built, upgrade))
}

/// The version one revision up: `0.1.0-1` -> `0.1.0-2`; without a numeric revision,
/// `V` -> `V+1`.
fn next_revision(version: &str) -> String {
    match version.rsplit_once('-') {
        Some((upstream, revision)) => match revision.parse::<u32>() {
            Ok(n) => format!("{upstream}-{}", n.saturating_add(1)),
            Err(_) => format!("{version}+1"),
        },
        None => format!("{version}+1"),
    }
}

/// cargo-deb (installed when missing), one release build, then both packages into `out`.
pub(super) fn build_packages(root: &Path, deb_version: Option<&str>, out: &Path) -> Result<Built> {
    ensure_cargo_deb(root)?;
    let mut build = cargo(root);
    build.args(["build", "--release", "--locked", "-p", "mytunnel-cli"]);
    println!("  {}", command_line(&build));
    flush();
    run(&mut build)?;
    let mut paths = Vec::new();
    for (name, variant) in PACKAGES {
        let mut deb = cargo(root);
        deb.args([
            "deb",
            "-p",
            "mytunnel-cli",
            "--no-build",
            "--locked",
            "--quiet",
        ]);
        if let Some(variant) = variant {
            deb.args(["--variant", variant]);
        }
        if let Some(version) = deb_version {
            deb.args(["--deb-version", version]);
        }
        deb.arg("--output").arg(out);
        println!("  {name}: {}", command_line(&deb));
        flush();
        let output = deb
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run cargo deb: {e}"))?;
        if !output.status.success() {
            return Err(format!("cargo deb ({name}) failed ({})", output.status));
        }
        // cargo-deb prints the path of the package it wrote, last.
        let stdout = String::from_utf8_lossy(&output.stdout);
        let path = stdout
            .lines()
            .rev()
            .find(|l| l.trim_end().ends_with(".deb"))
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| format!("cargo deb ({name}) named no .deb: {stdout}"))?;
        paths.push(path);
    }
    let edge = paths.pop().ok_or("no mytunneld package")?;
    let client = paths.pop().ok_or("no mytunnel package")?;
    Ok(Built { client, edge })
}

fn ensure_cargo_deb(root: &Path) -> Result<()> {
    if succeeds_quietly(cargo(root).args(["deb", "--version"])) {
        return Ok(());
    }
    let mut install = cargo(root);
    install.args([
        "install",
        "--locked",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
    ]);
    println!(
        "  cargo-deb is missing (about a minute): {}",
        command_line(&install)
    );
    flush();
    run(&mut install)
}

/// The install test (`mytunnel-cli/tests/package_install.rs`, run as a program): these
/// packages, then `upgrade`, the edge's package with a higher version. Its summary line
/// goes to `summaries`.
pub(super) fn install_test(
    root: &Path,
    built: &Built,
    upgrade: &Path,
    summaries: &mut Vec<String>,
) -> Result<()> {
    let mut test = cargo(root);
    test.args(["test", "-p", "mytunnel-cli", "--test", "package_install"])
        .env("MYTUNNEL_DEB_CLIENT", &built.client)
        .env("MYTUNNEL_DEB_EDGE", &built.edge)
        .env("MYTUNNEL_DEB_EDGE_UPGRADE", upgrade);
    run_recording_summaries(&mut test, summaries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Options> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        parse(&args)
    }

    #[test]
    fn the_upgrade_is_one_revision_up() {
        assert_eq!(next_revision("0.1.0-1"), "0.1.0-2");
        assert_eq!(next_revision("1.0~rc1-9"), "1.0~rc1-10");
        assert_eq!(next_revision("0.1.0"), "0.1.0+1");
        assert_eq!(next_revision("0.1.0-1ubuntu1"), "0.1.0-1ubuntu1+1");
    }

    #[test]
    fn reads_its_options() {
        assert_eq!(parse_args(&[]), Ok(Options::default()));
        assert_eq!(
            parse_args(&["--deb-version", "0.1.0-2", "--test"]),
            Ok(Options {
                deb_version: Some("0.1.0-2".to_owned()),
                test: true
            })
        );
        assert_eq!(
            parse_args(&["--deb-version=1.0~rc1"]).map(|o| o.deb_version),
            Ok(Some("1.0~rc1".to_owned()))
        );
        for bad in [
            &["--deb-version"][..],
            &["--deb-version", "v1"],
            &["--deb-version=1;x"],
            &["--out"],
        ] {
            assert!(parse_args(bad).is_err(), "{bad:?}");
        }
    }
}
