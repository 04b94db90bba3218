//! The peers every path is compared with: bore and rathole, each a server and a client on
//! this machine in front of the same app.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mytunnel_test_support::poll_every;

use crate::edge::http_status;
use crate::procs::{free_port, require_program, Guard, Result};

/// A local `bore server` and `bore local` forwarding to the app; the public address.
#[derive(Debug)]
pub struct Bore {
    _server: Guard,
    _client: Guard,
    /// The port bore's server exposes.
    pub addr: SocketAddr,
}

/// bore's control port, fixed in bore itself.
const BORE_CONTROL_PORT: u16 = 7835;

impl Bore {
    /// Starts both ends; bore's control port 7835 is fixed by bore and must be free.
    pub fn start(app_port: u16, logs: &Path) -> Result<Bore> {
        let bore = require_program("bore", "cargo install bore-cli")?;
        if std::net::TcpListener::bind(("127.0.0.1", BORE_CONTROL_PORT)).is_err() {
            return Err(format!(
                "bore's control port {BORE_CONTROL_PORT} (fixed by bore) is taken"
            ));
        }
        let log = |name: &str| {
            std::fs::File::create(logs.join(name)).map_err(|e| format!("bore log {name}: {e}"))
        };
        let server = Guard::spawn(
            Command::new(&bore)
                .args(["server", "--bind-addr", "127.0.0.1", "--min-port", "1024"])
                .stdin(Stdio::null())
                .stdout(log("bore-server.log")?)
                .stderr(log("bore-server.err")?),
            "bore server",
        )?;
        if !poll_every(Duration::from_secs(10), Duration::from_millis(10), || {
            std::net::TcpStream::connect(("127.0.0.1", BORE_CONTROL_PORT)).is_ok()
        }) {
            return Err("bore server did not listen on 7835 within 10s".to_owned());
        }
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port()?;
            let mut client = Guard::spawn(
                Command::new(&bore)
                    .args(["local", &app_port.to_string(), "--local-host", "127.0.0.1"])
                    .args(["--to", "127.0.0.1", "--port"])
                    .arg(port.to_string())
                    .stdin(Stdio::null())
                    .stdout(log("bore-local.log")?)
                    .stderr(log("bore-local.err")?),
                "bore local",
            )?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut exited = false;
            let up = poll_every(Duration::from_secs(10), Duration::from_millis(10), || {
                exited = client.check_running().is_err();
                exited || http_status(addr, "bore", "/") == Some(200)
            });
            if up && !exited {
                return Ok(Bore {
                    _server: server,
                    _client: client,
                    addr,
                });
            }
            last = format!("bore local on port {port} did not serve");
        }
        Err(last)
    }
}

/// A local rathole server and client (TCP transport, default settings).
#[derive(Debug)]
pub struct Rathole {
    _server: Guard,
    _client: Guard,
    /// The address the rathole server exposes the service on.
    pub addr: SocketAddr,
}

impl Rathole {
    /// Writes both config files and starts both ends.
    pub fn start(app_port: u16, dir: &Path) -> Result<Rathole> {
        let rathole = require_program("rathole", "cargo install rathole")?;
        let mut last = String::new();
        for attempt in 0..5 {
            let control = free_port()?;
            let public = free_port()?;
            let server_toml = dir.join(format!("rathole-server-{attempt}.toml"));
            let client_toml = dir.join(format!("rathole-client-{attempt}.toml"));
            std::fs::write(
                &server_toml,
                format!(
                    "[server]\nbind_addr = \"127.0.0.1:{control}\"\ndefault_token = \"mytunnel-bench\"\n\n\
                     [server.services.app]\nbind_addr = \"127.0.0.1:{public}\"\n"
                ),
            )
            .map_err(|e| format!("write {}: {e}", server_toml.display()))?;
            std::fs::write(
                &client_toml,
                format!(
                    "[client]\nremote_addr = \"127.0.0.1:{control}\"\ndefault_token = \"mytunnel-bench\"\n\n\
                     [client.services.app]\nlocal_addr = \"127.0.0.1:{app_port}\"\n"
                ),
            )
            .map_err(|e| format!("write {}: {e}", client_toml.display()))?;
            let log = |name: String| {
                std::fs::File::create(dir.join(&name)).map_err(|e| format!("log {name}: {e}"))
            };
            let server = Guard::spawn(
                Command::new(&rathole)
                    .arg("--server")
                    .arg(&server_toml)
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(log(format!("rathole-server-{attempt}.log"))?)
                    .stderr(log(format!("rathole-server-{attempt}.err"))?),
                "rathole server",
            )?;
            let client = Guard::spawn(
                Command::new(&rathole)
                    .arg("--client")
                    .arg(&client_toml)
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(log(format!("rathole-client-{attempt}.log"))?)
                    .stderr(log(format!("rathole-client-{attempt}.err"))?),
                "rathole client",
            )?;
            let addr = SocketAddr::from(([127, 0, 0, 1], public));
            let mut guards = (server, client);
            let mut exited = false;
            let up = poll_every(Duration::from_secs(10), Duration::from_millis(10), || {
                exited = guards.0.check_running().is_err() || guards.1.check_running().is_err();
                exited || http_status(addr, "rathole", "/") == Some(200)
            });
            if up && !exited {
                return Ok(Rathole {
                    _server: guards.0,
                    _client: guards.1,
                    addr,
                });
            }
            last = format!("rathole on ports {control}/{public} did not serve");
        }
        Err(last)
    }
}
