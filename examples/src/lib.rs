//! Shared pieces of the examples in `examples/examples/`, kept here so tests run them.
#![warn(missing_docs)]

pub mod snippets;

use std::sync::Arc;
use std::time::Duration;

use mytunnel_client::{Edge, TunnelError};
use mytunnel_core::policy::{AdminUsers, Caller, ReservedSlugs};
use mytunnel_core::store::OwnerLimit;
use mytunnel_core::{PortRange, Ttl};
use mytunnel_edge::in_process::{ForwardMode, InProcessTransport};
use mytunnel_edge::memory_routes::MemoryRoutes;
use mytunnel_edge::service::{LeaseService, ServiceSettings, SystemClock};
use mytunnel_edge::SqlLeaseStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves `body` over HTTP on `127.0.0.1:0`; returns the port.
pub async fn hello_app(body: &'static str) -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = socket.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(port)
}

/// A GET over plain TCP, as Caddy would send it to the edge port; returns the body.
pub async fn fetch(port: u16, host: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// An edge in this process: in-memory leases and routes, forwards as real TCP proxies on
/// ports `edge_ports`, acting for the user `owner`.
pub async fn in_process_edge(
    edge_ports: PortRange,
    owner: &str,
) -> Result<(InProcessTransport, Arc<MemoryRoutes>), Box<dyn std::error::Error>> {
    let store = SqlLeaseStore::open_in_memory().await?;
    let routes = Arc::new(MemoryRoutes::new());
    let service = LeaseService::new(
        Arc::new(store),
        routes.clone(),
        Arc::new(SystemClock),
        ServiceSettings {
            base_domain: Some("tunnel.localhost".parse()?),
            ports: edge_ports,
            lease_ttl: Ttl::configured(Duration::from_secs(120)),
            owner_limit: OwnerLimit::DEFAULT,
            reserved_slugs: ReservedSlugs::default(),
            tombstone_retention: Duration::from_secs(3600),
            health_timeout: Duration::from_secs(5),
            bind_plan: mytunnel_edge::service::BindPlan::Ports,
        },
    );
    let caller = Caller::from_identity(1000, owner.parse()?, &AdminUsers::default());
    Ok((
        InProcessTransport::new(service, caller, ForwardMode::Proxy),
        routes,
    ))
}

/// Publishes a hello app through an in-process edge, fetches it through the edge port,
/// closes the tunnel and the edge; returns (url, body fetched).
pub async fn in_process_round_trip(
    edge_ports: PortRange,
) -> Result<(String, String), Box<dyn std::error::Error>> {
    let app = hello_app("hello through the tunnel").await?;
    let (transport, _routes) = in_process_edge(edge_ports, "demo").await?;
    let edge = Edge::from_transport(Arc::new(transport));
    let tunnel = edge.http(app).name("demo").open().await?;
    let lease = tunnel.lease();
    let body = fetch(lease.edge_bind_port, &lease.host).await?;
    let url = tunnel.url().to_owned();
    tunnel
        .close()
        .await
        .map_err(|e: TunnelError| e.to_string())?;
    edge.close().await;
    Ok((url, body))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_in_process_example_serves_through_its_tunnel() {
        // Find a free port for the edge range.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let range = mytunnel_core::PortRange::new(port, port).unwrap();
        let (url, body) = super::in_process_round_trip(range).await.unwrap();
        assert_eq!(url, "https://demo.tunnel.localhost");
        assert_eq!(body, "hello through the tunnel");
    }
}
