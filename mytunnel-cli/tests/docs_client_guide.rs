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

/// docs/sdk.md shows only code of the `examples/` crate (compiled and linted with the
/// workspace), as it is: every Rust block is a whole example file, or consecutive lines
/// of a file of `examples/src/`. Both shapes (the one-liner and one edge with many
/// tunnels) and the events example are among the whole files.
#[test]
fn the_sdk_guide_shows_the_compiled_examples() {
    let page = include_str!("../../docs/sdk.md");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let read_dir = |dir: &str| -> Vec<(String, String)> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(examples.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.push((name, std::fs::read_to_string(&path).unwrap()));
        }
        files
    };
    let files = read_dir("examples");
    let sources = read_dir("src");

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
    let mut shown = Vec::new();
    for block in &blocks {
        if block.starts_with("//!") {
            let file = files.iter().find(|(_, text)| text == block);
            let Some((name, _)) = file else {
                panic!("docs/sdk.md shows an example that is not a file of examples/examples/ as it is:\n{block}");
            };
            shown.push(name.as_str());
        } else {
            let lines: Vec<&str> = block.lines().map(str::trim).collect();
            assert!(
                sources.iter().any(|(_, text)| {
                    let source: Vec<&str> = text.lines().map(str::trim).collect();
                    source.windows(lines.len()).any(|w| w == lines.as_slice())
                }),
                "docs/sdk.md shows lines that are not in a file of examples/src/:\n{block}"
            );
        }
    }
    for example in ["expose.rs", "edge.rs", "events.rs"] {
        assert!(
            shown.contains(&example),
            "docs/sdk.md should show examples/examples/{example}: it shows {shown:?}"
        );
    }
}
