//! The command-line definitions of `mytunnel` and `mytunneld`, kept in a library so the
//! binaries stay thin and `cargo xtask docs` can render the same definitions.
#![warn(missing_docs)]
// Doc comments double as --help text, where `<NAME>` is a placeholder, not HTML.
#![allow(rustdoc::invalid_html_tags)]

pub mod client_cli;
pub mod config_output;
pub mod diagnostics;
pub mod edge_cli;
pub mod reference;
pub mod shutdown;
