// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! docs/client.md, run for real: every command of the guide runs against the end-to-end
//! stack (real sshd with gated keys, real Caddy, `mytunneld serve`, the built `mytunnel`,
//! OS user alice) and its output must match the page up to lease ids, generated names,
//! ports, versions and timestamps (see `e2e_support::page`).
//!
//! To update the page after a deliberate change of output, run this test with
//! `MYTUNNEL_DOCS_RECORD=1` and `--no-capture`: it prints what each command printed, in
//! the page's terms, instead of comparing. Needs root, like `e2e.rs`.

mod e2e_support;

use e2e_support::page::{parse, Runner, Step};
use e2e_support::{App, Stack, StackOptions};

const PAGE: &str = include_str!("../../docs/client.md");

/// What the guide's app answers.
const APP_BODY: &str = "hello from my laptop\n";

/// The guide's port where nothing listens.
const CLOSED_PAGE_PORT: &str = "3001";

#[test]
fn the_client_guide_runs_as_written() {
    let commands: Vec<String> = parse(PAGE)
        .into_iter()
        .filter_map(|step| match step {
            Step::Run { command, .. } => Some(command),
            Step::Interrupt { .. } => Some("^C".to_owned()),
            _ => None,
        })
        .collect();
    // Every subcommand and output mode the guide documents is run.
    for needed in [
        "mytunnel http 3000",
        "mytunnel ls",
        "mytunnel ls --json",
        "mytunnel stop",
        "mytunnel rm",
        "mytunnel doctor",
        "mytunnel doctor --json",
        "^C",
        "echo $?",
    ] {
        assert!(
            commands.iter().any(|c| c.starts_with(needed)),
            "the client guide no longer runs {needed:?}: {commands:?}"
        );
    }
    for flag in ["--json", "--name", "--ttl"] {
        assert!(
            commands.iter().any(|c| c.contains(flag)),
            "the client guide no longer shows {flag}"
        );
    }

    // The edge's default TTL, 2 minutes, as the page says.
    let stack = Stack::with(StackOptions {
        lease_ttl_secs: 120,
        ..StackOptions::default()
    });
    let app = App::start(APP_BODY);
    let closed = mytunnel_test_support::free_port().unwrap();
    let mut runner = Runner::new(&stack, "alice", &app);
    runner.substitute(CLOSED_PAGE_PORT, &closed.to_string());
    runner.run_page(PAGE);
    assert_eq!(runner.ran.len(), commands.len());
}

/// docs/sdk.md shows the examples of the `examples/` crate (compiled and linted with the
/// workspace) as they are: a whole example file, or lines of `examples/src/lib.rs` in
/// their order.
#[test]
fn the_sdk_guide_shows_the_compiled_examples() {
    let page = include_str!("../../docs/sdk.md");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(examples.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        files.push(std::fs::read_to_string(&path).unwrap());
    }
    let lib = std::fs::read_to_string(examples.join("src/lib.rs")).unwrap();
    let lib_lines: Vec<&str> = lib.lines().map(str::trim).collect();

    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        match (&mut current, line) {
            (None, "```rust") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    let mut whole = 0;
    for block in &blocks {
        if block.starts_with("//!") {
            assert!(
                files.contains(block),
                "docs/sdk.md shows an example that is not a file of examples/examples/ as it is:\n{block}"
            );
            whole += 1;
        } else if block.starts_with("let ") {
            let lines: Vec<&str> = block.lines().map(str::trim).collect();
            assert!(
                lib_lines
                    .windows(lines.len())
                    .any(|w| w == lines.as_slice()),
                "docs/sdk.md shows lines that are not in examples/src/lib.rs:\n{block}"
            );
        }
    }
    assert!(
        whole >= 2,
        "docs/sdk.md should show the expose and events examples"
    );
}
