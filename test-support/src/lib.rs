//! Test support for this workspace's tests and its bench (not published): a real Caddy,
//! a real sshd and a real PostgreSQL on loopback, local apps (HTTP on any stream, HTTPS
//! with a self-signed certificate), a headless Chromium through WebDriver, `mytunneld
//! serve` as a process, loopback ports, polling, SSH key generation, process trees, and
//! fixtures.
//!
//! Every process started here is stopped by its pid when its handle drops. Errors are
//! messages (`Result<_, String>`): a test unwraps them into a failed assertion, the bench
//! reports them.
#![warn(missing_docs)]

pub mod apps;
pub mod browser;
pub mod caddy;
pub mod client;
pub mod examples;
pub mod fixtures;
pub mod keys;
pub mod poll;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod serve;
pub mod server;
pub mod sshd;
pub mod visitor;

pub use apps::{answer_http, HttpsApp, Request};
pub use browser::{chromedriver_binary, chromium_binary, Browser};
pub use caddy::{admin_get, admin_request, base_config, caddy_binary, reloads_settled, RealCaddy};
pub use client::client_command;
pub use examples::example_binary;
pub use fixtures::{active_lease, service_settings};
pub use keys::{generate_key, public_key_path};
pub use poll::{eventually, poll_every};
pub use ports::{free_port, ReservedPort};
pub use postgres::{postgres_bin_dir, RealPostgres};
pub use process::{
    children_of, cmdline, copy_executable, descendants_of, kill_all, parent_of, pids, signal,
    stdout_json, stdout_lines, Below, Guard,
};
pub use serve::{make_owner_dirs, mytunneld_command, wait_for_serve, ServeProcess, SYSTEM_PATH};
pub use server::LoopbackServer;
pub use sshd::{production_sshd_dropin, sshd_binary, Sshd};
pub use visitor::{curl_https, http_get_path, CurlVisit};
