//! An edge in the same process, no sshd or Caddy: publish a hello app and fetch it through
//! the edge port the way Caddy would.
//!
//! ```sh
//! cargo run -p mytunnel-examples --example in_process_edge
//! ```

use mytunnel_core::PortRange;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let free = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let (url, body) = mytunnel_examples::in_process_round_trip(PortRange::new(free, free)?).await?;
    println!("published at {url}");
    println!("fetched through the edge port: {body}");
    Ok(())
}
