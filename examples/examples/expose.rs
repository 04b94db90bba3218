//! Publish a local app in a few lines: a port (`3000`), `localhost:5173`, `[::1]:8080` or
//! `https://localhost:8443` (see `mytunnel_client::upstream`).
//!
//! ```sh
//! MYTUNNEL_EDGE=tunnel@edge.example.com cargo run -p mytunnel-examples --example expose -- 3000
//! ```

use mytunnel_client::Tunnel;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args().nth(1).unwrap_or_else(|| "3000".into());
    let tunnel = Tunnel::http(target).open().await?;
    println!("{}", tunnel.url());
    tokio::signal::ctrl_c().await?;
    tunnel.close().await?;
    Ok(())
}
