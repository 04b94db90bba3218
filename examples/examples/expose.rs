//! Publish a local port in a few lines.
//!
//! ```sh
//! MYTUNNEL_EDGE=tunnel@edge.example.com cargo run -p mytunnel-examples --example expose -- 3000
//! ```

use mytunnel_client::Tunnel;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "3000".into())
        .parse()?;
    let tunnel = Tunnel::http(port).open().await?;
    println!("{}", tunnel.url());
    tokio::signal::ctrl_c().await?;
    tunnel.close().await?;
    Ok(())
}
