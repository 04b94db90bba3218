//! `scripts/test-ssh-gate.sh` against the freshly built `mytunneld`.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Command, Stdio};

use mytunnel_core::gate::SESSION_HELD;
use mytunnel_core::protocol::OVERRIDE_FLAGS;

#[test]
fn the_gate_script_passes_and_covers_every_override_flag() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-ssh-gate.sh");
    // A long TMPDIR (cargo's, a login's) must not make the throwaway serve's socket
    // directory too long for a unix socket path.
    let long_tmp = tempfile::Builder::new()
        .prefix("a-temporary-directory-with-a-long-name-")
        .tempdir()
        .unwrap();
    let output = Command::new("bash")
        .arg(&script)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_mytunneld"))
        .env("TMPDIR", long_tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains("FAIL "), "{stdout}");

    let ok_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ok ")).collect();
    for flag in OVERRIDE_FLAGS {
        for shape in [format!("{flag} v"), format!("{flag}=v")] {
            assert!(
                ok_lines
                    .iter()
                    .any(|l| l.contains(&format!(" {shape} -> override_not_allowed"))),
                "no ok line for {shape}:\n{stdout}"
            );
        }
    }
    // The script knows the line a held session prints, and the built gate prints it.
    let source = std::fs::read_to_string(&script).unwrap();
    assert!(
        source.contains(&format!("HELD = \"{SESSION_HELD}\"")),
        "test-ssh-gate.sh does not know SESSION_HELD"
    );
    for shape in [
        "ok <empty: tunnel session> -> held (exit 0)",
        "ok sh -> forbidden_command",
        "ok mytunneld serve -> forbidden_command",
        "ok mytunneld ctl list; id -> forbidden_command",
        "ok mytunneld ctl list -> json (exit 0)",
    ] {
        assert!(stdout.contains(shape), "no line {shape:?}:\n{stdout}");
    }
}
