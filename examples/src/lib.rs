//! Compiled examples of embedding mytunnel; see `examples/examples/`. They arrive with the
//! client SDK.
