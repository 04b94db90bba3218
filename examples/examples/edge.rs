//! One connection to the edge, several tunnels on it: one per `PORT[:NAME]` given.
//!
//! ```sh
//! MYTUNNEL_EDGE=tunnel@edge.example.com cargo run -p mytunnel-examples --example edge -- 3000:shop 8080
//! ```

use mytunnel_client::Edge;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut wanted = Vec::new();
    for arg in std::env::args().skip(1) {
        let (port, name) = match arg.split_once(':') {
            Some((port, name)) => (port.parse::<u16>()?, Some(name.to_owned())),
            None => (arg.parse::<u16>()?, None),
        };
        wanted.push((port, name));
    }
    if wanted.is_empty() {
        return Err("usage: edge PORT[:NAME]...".into());
    }

    let edge = Edge::builder().connect().await?;
    // Dropping a handle closes its tunnel: keep them while they should serve.
    let mut tunnels = Vec::new();
    for (port, name) in wanted {
        let mut tunnel = edge.http(port);
        if let Some(name) = name {
            tunnel = tunnel.name(name);
        }
        match tunnel.open().await {
            Ok(tunnel) => {
                println!("{} → http://127.0.0.1:{port}", tunnel.url());
                tunnels.push(tunnel);
            }
            Err(e) => {
                edge.close().await; // releases the tunnels already open
                return Err(e.into());
            }
        }
    }
    tokio::signal::ctrl_c().await?;
    // Every tunnel stops and releases its lease, then the connection ends.
    edge.close().await;
    Ok(())
}
