//! The mytunnel edge.
#![warn(missing_docs)]
