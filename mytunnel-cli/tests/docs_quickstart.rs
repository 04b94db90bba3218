// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! docs/quickstart.md, run for real: every command of the page runs against the
//! end-to-end stack (real sshd with gated keys, real Caddy, `mytunneld serve`, OS user
//! alice) and its output must match the page up to lease ids, generated names, ports and
//! timestamps (see `e2e_support::page`). The page's first command installs `mytunnel` with
//! `cargo install` from this checkout, and the page's `mytunnel` commands run what it
//! installed.
//!
//! Needs root, like `e2e.rs`. The install reuses the workspace's release build when there
//! is one (`cargo build --release -p mytunnel-cli --locked`), else makes it.

mod e2e_support;

use e2e_support::page::{normalise, parse, replace_word, Runner, Step};
use e2e_support::{App, Stack, StackOptions};

const PAGE: &str = include_str!("../../docs/quickstart.md");

/// What the page's app answers ("this one answers `hello from my laptop`").
const APP_BODY: &str = "hello from my laptop\n";

#[test]
fn the_quickstart_runs_as_written() {
    // The page is not allowed to shrink to nothing: these steps are what it teaches.
    let commands: Vec<String> = parse(PAGE)
        .into_iter()
        .filter_map(|step| match step {
            Step::Run { command, .. } => Some(command),
            Step::Interrupt { .. } => Some("^C".to_owned()),
            _ => None,
        })
        .collect();
    // The reader installs the client before anything else: every `mytunnel` of the page
    // is then the installed one.
    let install = "cargo install --locked --path mytunnel-cli --bin mytunnel";
    assert_eq!(
        commands.first().map(String::as_str),
        Some(install),
        "the quickstart must start by installing the client: {commands:?}"
    );
    for needed in [
        install,
        "mytunnel http 3000",
        "curl ",
        "mytunnel ls",
        "^C",
        "mytunnel stop ",
    ] {
        assert!(
            commands.iter().any(|c| c.starts_with(needed)),
            "the quickstart no longer runs {needed:?}: {commands:?}"
        );
    }
    assert!(
        PAGE.contains(APP_BODY.trim_end()),
        "the page must say what its app answers"
    );

    // The edge's default TTL, 2 minutes, as the page says.
    let stack = Stack::with(StackOptions {
        lease_ttl_secs: 120,
        ..StackOptions::default()
    });
    let app = App::start(APP_BODY);
    let mut runner = Runner::new(&stack, "alice", &app);
    runner.run_page(PAGE);
    assert_eq!(runner.ran.len(), commands.len());
    assert!(
        runner.installed().is_some(),
        "the page's mytunnel commands ran the test build, not an installed mytunnel"
    );
    // The last step released the leftover lease: alice has no active lease.
    assert!(stack
        .leases("alice")
        .iter()
        .all(|lease| lease["state"] != "active"));
}

#[test]
fn the_page_runner_normalises_only_ids_times_and_versions() {
    assert_eq!(
        normalise("lease_3kq7x2mfdatb4wcz  x.invalid   2026-11-29T17:44:10Z"),
        "lease_<id> x.invalid <time>"
    );
    assert_eq!(normalise("lease_short"), "lease_short");
    assert_eq!(
        normalise("ok ssh binary ssh (OpenSSH_9.2p1 Debian-2, OpenSSL 3.0.17 1 Jul 2025)"),
        "ok ssh binary ssh (OpenSSH_<version>)"
    );
    assert_eq!(
        normalise("mytunneld 0.1.0 on 127.0.0.1"),
        "mytunneld <version> on 127.0.0.1"
    );
    // cargo's line for the install (the checkout's path is the page's placeholder).
    assert_eq!(
        normalise(
            "  Installed package `mytunnel-cli v0.1.0 (/path/to/mytunnel/mytunnel-cli)` \
             (executable `mytunnel`)"
        ),
        "Installed package `mytunnel-cli v<version> (/path/to/mytunnel/mytunnel-cli)` \
         (executable `mytunnel`)"
    );
    // Anything else is compared as it is.
    assert_ne!(normalise("released; bye"), normalise("released, bye"));
    assert_eq!(
        replace_word("3000 13000 :3000/", "3000", "41234"),
        "41234 13000 :41234/"
    );
    assert_eq!(replace_word("lease_3000x", "3000", "1"), "lease_3000x");
}
