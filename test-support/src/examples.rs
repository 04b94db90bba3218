//! The workspace's example programs as binaries, for tests that run a process embedding
//! the SDK (it must be a process of its own to be killed or to abort).

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Builds `cargo build -p <package> --example <name>` (the test's own profile and target
/// directory, so an up-to-date example only links) and returns the executable's path.
pub fn example_binary(package: &str, name: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--quiet", "--message-format=json", "-p", package])
        .args(["--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build -p {package} --example {name} failed ({})",
            output.status
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message
                .get("reason")
                .is_some_and(|r| r == "compiler-artifact")
        })
        .filter(|message| {
            message
                .pointer("/target/name")
                .is_some_and(|target| target == name)
        })
        .find_map(|message| {
            message
                .get("executable")
                .and_then(serde_json::Value::as_str)
                .map(PathBuf::from)
        })
        .ok_or_else(|| format!("cargo built no executable for the example {name}"))
}
