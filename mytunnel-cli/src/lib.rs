//! The command-line definitions of `mytunnel` and `mytunneld`, kept in a library so the
//! binaries stay thin and `cargo xtask docs` can render the same definitions.
#![warn(missing_docs)]

pub mod edge_cli;
