//! The troubleshooting page covers every error code of the protocol module.

// Test code: a panic is a failed assertion.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mytunnel_core::ErrorCode;

#[test]
fn every_error_code_has_a_section() {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/troubleshooting.md"),
    )
    .unwrap();
    let headings: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .filter_map(|l| l.strip_suffix('`'))
        .collect();
    for code in ErrorCode::ALL {
        assert!(
            headings.contains(&code.as_str()),
            "docs/troubleshooting.md has no `### `{code}`` section"
        );
    }
    // And no section for a code that does not exist.
    for heading in &headings {
        assert!(
            ErrorCode::ALL.iter().any(|c| c.as_str() == *heading),
            "docs/troubleshooting.md documents unknown code {heading}"
        );
    }
}
