//! The smaller snippets docs/sdk.md shows, compiled and linted with the workspace (a test
//! checks the page shows them as they are here). None of them runs in tests: each needs
//! a real edge.

/// Every tunnel option, on the one-line form.
pub mod tunnel_options {
    use std::time::Duration;

    use mytunnel_client::core::protocol::Takeover;
    use mytunnel_client::{Reconnect, Tunnel, TunnelError};

    /// Publishes port 8080 as `portal`.
    pub async fn publish_portal() -> Result<(), TunnelError> {
        let tunnel = Tunnel::http(8080)
            .edge("alice@edge.example.com")
            .name("portal")
            .ttl(Duration::from_secs(300))
            .takeover(Takeover::Refuse)
            .reconnect(Reconnect::Always)
            .ssh_option("IdentityFile=~/.ssh/tunnel_ed25519")
            .open()
            .await?;
        println!("{} ({})", tunnel.url(), tunnel.lease().lease_id);
        tunnel.close().await
    }
}

/// An app that is not plain HTTP on a port: HTTPS, and a Host header of its own.
pub mod upstreams {
    use mytunnel_client::{AppCertificates, HostHeader, Tunnel, TunnelError};

    /// Publishes a dev server that serves HTTPS with a self-signed certificate and checks
    /// its Host header.
    pub async fn publish_https_dev_server() -> Result<(), TunnelError> {
        let tunnel = Tunnel::http("https://localhost:8443")
            // The app sees `Host: localhost:8443`.
            .host_header(HostHeader::Rewrite)
            // Any certificate: it is self-signed, and on this machine.
            .app_certificates(AppCertificates::AcceptAny)
            .open()
            .await?;
        println!("{} → {}", tunnel.url(), tunnel.upstream());
        tunnel.close().await
    }
}

/// Edge options on the edge, tunnel options on each tunnel.
pub mod edge_options {
    use std::time::Duration;

    use mytunnel_client::{Edge, Multiplexing, TunnelError};

    /// Publishes ports 3000 and 8080 over one connection.
    pub async fn publish_shop_and_blog() -> Result<(), TunnelError> {
        let edge = Edge::builder()
            .edge("alice@edge.example.com")
            .ssh_option("IdentityFile=~/.ssh/tunnel_ed25519")
            .multiplexing(Multiplexing::Shared)
            .connect()
            .await?;
        let shop = edge.http(3000).name("shop").open().await?;
        let blog = edge
            .http(8080)
            .name("blog")
            .ttl(Duration::from_secs(300))
            .open()
            .await?;
        println!("{} and {}", shop.url(), blog.url());
        shop.close().await?; // the edge and blog keep running
        edge.close().await; // closes blog, then the connection
        Ok(())
    }
}

/// Reading events until the tunnel ends.
pub mod events {
    use mytunnel_client::{TunnelEvent, TunnelHandle};

    /// Prints every event of `tunnel` until it ends.
    pub async fn print_events(tunnel: &mut TunnelHandle) {
        let mut events = tunnel.events();
        while let Some(event) = events.next().await {
            match event {
                TunnelEvent::Missed { count } => eprintln!("({count} events missed)"),
                TunnelEvent::Renewed { .. } => {}
                event => println!("{event}"),
            }
        }
    }
}

/// The request log and the inspector.
pub mod requests {
    use mytunnel_client::inspect::{ExchangeLimits, ExchangeLog, Inspector};
    use mytunnel_client::{Tunnel, TunnelEvent};

    /// Publishes port 3000 with the inspector on 127.0.0.1:4040 and prints a line per
    /// request until the tunnel ends.
    pub async fn publish_and_watch() -> Result<(), Box<dyn std::error::Error>> {
        let log = ExchangeLog::new(ExchangeLimits::default());
        let inspector = Inspector::bind(Inspector::DEFAULT_ADDR, log.clone())?;
        let mut tunnel = Tunnel::http(3000).exchange_log(log).open().await?;
        println!("{} (requests at {})", tunnel.url(), inspector.url());
        let mut events = tunnel.events();
        while let Some(event) = events.next().await {
            if let TunnelEvent::Request(request) = event {
                println!("{request}");
            }
        }
        Ok(())
    }
}

/// Matching on errors.
pub mod errors {
    use mytunnel_client::core::ErrorCode;
    use mytunnel_client::{Tunnel, TunnelError};

    /// Publishes port 3000 as `portal`, or under a generated name if `portal` is taken.
    pub async fn publish_or_pick_another_name() -> Result<String, TunnelError> {
        match Tunnel::http(3000).name("portal").open().await {
            Ok(tunnel) => Ok(tunnel.url().to_owned()),
            Err(e) if e.code() == Some(ErrorCode::SlugTaken) => {
                let tunnel = Tunnel::http(3000).open().await?; // a generated name
                Ok(tunnel.url().to_owned())
            }
            Err(TunnelError::Probe(e)) => {
                eprintln!("{e}: {}", e.hint());
                Err(TunnelError::Probe(e))
            }
            Err(e) => Err(e),
        }
    }
}

/// Leases without a tunnel.
pub mod control {
    use mytunnel_client::core::protocol::ListScope;
    use mytunnel_client::core::LeaseRef;
    use mytunnel_client::Edge;

    /// Lists the caller's leases, releases `portal`, and asks the edge's version.
    pub async fn release_portal() -> Result<(), Box<dyn std::error::Error>> {
        let edge = Edge::builder()
            .edge("alice@edge.example.com")
            .connect()
            .await?;
        for lease in edge.list(ListScope::Own).await? {
            println!("{} {} {}", lease.lease_id, lease.host, lease.state);
        }
        let released = edge.release("portal".parse::<LeaseRef>()?).await?;
        println!("released {} ({})", released.lease_id, released.host);
        println!("edge {}", edge.health().await?.version);
        edge.close().await;
        Ok(())
    }
}
