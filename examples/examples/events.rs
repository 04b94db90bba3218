//! Watch a tunnel's events: allocation, forwarding, renewals, reconnects, release.
//!
//! ```sh
//! cargo run -p mytunnel-examples --example events -- 3000 tunnel@edge.example.com
//! ```

use mytunnel_client::Tunnel;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().unwrap_or_else(|| "3000".into()).parse()?;
    let mut builder = Tunnel::http(port);
    if let Some(edge) = args.next() {
        builder = builder.edge(edge);
    }
    let mut tunnel = builder.open().await?;
    let mut events = tunnel.events();
    println!("{}", tunnel.url());
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(event) => println!("event: {event}"),
                None => break, // the tunnel ended
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tunnel.close().await?;
    Ok(())
}
