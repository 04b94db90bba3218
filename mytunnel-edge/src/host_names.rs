//! `static` mode's answer to "which tunnel does this `Host` name?", for the Hosts Caddy
//! cannot map to a host link itself.
//!
//! Caddy's wildcard route dials `<socket_dir>/hosts/{http.request.host.labels.N}.sock`,
//! and that placeholder is the Host's raw text: `BobSite.<base>` would dial
//! `hosts/BobSite.sock`, which does not exist, and Caddy 2.6 has no placeholder that
//! lower-cases. So the route sends a request whose Host holds an upper-case letter, and
//! only such a request, here first (`reverse_proxy` with `handle_response`, as Caddy's
//! `forward_auth` does), and dials `hosts/<the slug answered>.sock`.
//!
//! `serve` listens on `<socket_dir>/names.sock`. Each connection carries one HTTP/1.1
//! request from Caddy; the answer is `200` with `X-Mytunnel-Slug: <slug>` when the Host is
//! one label under the base domain that is a valid slug (in any case, with or without a
//! `:port`), else `502`; both with `Content-Length: 0` and `Connection: close`. The answer
//! is a pure function of the Host ([`answer`]): no database, no links, nothing about
//! leases, so it tells a caller nothing it did not send, and whether the slug has a tunnel
//! is left to the link Caddy then dials (none: 502, as for a lower-case Host).
//!
//! Bounds: a request head must arrive whole, within [`MAX_HEAD_BYTES`] and
//! [`READ_WITHIN`], or the connection is closed unanswered (Caddy answers 502); at most
//! [`MAX_CONNECTIONS`] connections are served at once, more are closed at once.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mytunnel_core::{BaseDomain, Slug};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// The response header that carries the slug to Caddy.
pub const SLUG_HEADER: &str = "X-Mytunnel-Slug";

/// The longest request head answered, its closing blank line included; a connection
/// with a longer one is closed unanswered.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// How long a connection has to deliver its request head.
pub const READ_WITHIN: Duration = Duration::from_secs(2);

/// How long the answer may take to deliver.
const WRITE_WITHIN: Duration = Duration::from_secs(2);

/// Connections answered at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;

/// The refusal: whatever the Host, no slug.
const REFUSED: &str = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// The slug `host` (a `Host` header's value) names under `base_domain`: the Host without
/// a `:port`, in any case, must be `<one label>.<base_domain>` and the label a valid slug.
/// Answers the slug in lower case, or `None`.
pub fn slug_of_host(host: &str, base_domain: &BaseDomain) -> Option<Slug> {
    let host = host.trim_matches([' ', '\t']);
    let name = match host.split_once(':') {
        Some((name, port))
            if !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name
        }
        Some(_) => return None,
        None => host,
    };
    if !name.is_ascii() {
        return None;
    }
    let name = name.to_ascii_lowercase();
    let label = name.strip_suffix(base_domain.as_str())?.strip_suffix('.')?;
    if label.is_empty() || label.contains('.') {
        return None;
    }
    let slug: Slug = label.parse().ok()?;
    // Slug lower-cases and checks the label; the answer is the label itself.
    (slug.as_str() == label).then_some(slug)
}

/// The value of the one `Host` header of a request head (`None` when there is none, or
/// more than one, or the head is not text).
fn host_header(head: &[u8]) -> Option<&str> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    // The request line.
    lines.next()?;
    let mut hosts = lines.filter_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("host").then_some(value)
    });
    let host = hosts.next()?;
    hosts.next().is_none().then_some(host)
}

/// The slug a request head (request line and header lines, up to the blank line) names
/// under `base_domain` by its `Host` header; see [`slug_of_host`].
pub fn slug_of_head(head: &[u8], base_domain: &BaseDomain) -> Option<Slug> {
    slug_of_host(host_header(head)?, base_domain)
}

/// The whole HTTP/1.1 answer to a request head.
pub fn answer(head: &[u8], base_domain: &BaseDomain) -> String {
    match slug_of_head(head, base_domain) {
        Some(slug) => format!(
            "HTTP/1.1 200 OK\r\n{SLUG_HEADER}: {slug}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        None => REFUSED.to_owned(),
    }
}

/// Reads a request head and answers it without the blank line that ends it. `None` when
/// the connection ends or fails first, or the head is longer than [`MAX_HEAD_BYTES`].
async fn read_head(stream: &mut UnixStream) -> Option<Vec<u8>> {
    const END: &[u8] = b"\r\n\r\n";
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend(chunk.iter().take(n));
        if let Some(end) = head.windows(END.len()).position(|w| w == END) {
            if end + END.len() > MAX_HEAD_BYTES {
                return None;
            }
            head.truncate(end);
            return Some(head);
        }
        if head.len() >= MAX_HEAD_BYTES {
            return None;
        }
    }
}

/// Answers the one request on `stream`: its head read within [`READ_WITHIN`], the answer
/// written within 2 s; otherwise the connection is closed unanswered.
pub async fn answer_connection(mut stream: UnixStream, base_domain: &BaseDomain) {
    let Ok(Some(head)) = tokio::time::timeout(READ_WITHIN, read_head(&mut stream)).await else {
        return;
    };
    let reply = answer(&head, base_domain);
    let _ = tokio::time::timeout(WRITE_WITHIN, async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Binds `path` for [`serve_host_names`], replacing a socket left by a previous run.
///
/// Mode 0666: Caddy, running as its own user, must connect, and so may anyone else. That
/// is safe because the answer is a pure function of the Host the caller sends: it reads
/// no database and no link and says nothing about leases; and the work a caller can cause
/// is bounded ([`MAX_CONNECTIONS`], [`READ_WITHIN`], [`MAX_HEAD_BYTES`]).
pub fn bind_names_socket(path: &Path) -> std::io::Result<UnixListener> {
    crate::sockets::bind_service_socket(path, 0o666)
}

/// Answers the requests on `listener` until `shutdown` resolves, one task per connection.
pub async fn serve_host_names(
    listener: UnixListener,
    base_domain: BaseDomain,
    shutdown: impl Future<Output = ()>,
) {
    let base_domain = Arc::new(base_domain);
    crate::sockets::serve_connections(
        "host names",
        listener,
        MAX_CONNECTIONS,
        shutdown,
        |stream| {
            let base_domain = Arc::clone(&base_domain);
            async move { answer_connection(stream, &base_domain).await }
        },
        // Closed unanswered: Caddy answers 502.
        drop,
    )
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    fn base() -> BaseDomain {
        "tunnel.example.com".parse().unwrap()
    }

    fn slug(host: &str) -> Option<String> {
        slug_of_host(host, &base()).map(|s| s.as_str().to_owned())
    }

    #[test]
    fn a_host_in_any_case_names_its_lower_case_slug() {
        for host in [
            "bobsite.tunnel.example.com",
            "BobSite.tunnel.example.com",
            "BOBSITE.TUNNEL.EXAMPLE.COM",
            "bobSite.Tunnel.Example.Com:443",
            "BobSite.tunnel.example.com:8443",
            " BobSite.tunnel.example.com\t",
        ] {
            assert_eq!(slug(host).as_deref(), Some("bobsite"), "{host}");
        }
        assert_eq!(
            slug("My-App-2.tunnel.example.com").as_deref(),
            Some("my-app-2")
        );
    }

    #[test]
    fn anything_but_one_valid_label_under_the_base_is_refused() {
        for host in [
            "",
            "tunnel.example.com",
            ".tunnel.example.com",
            "a.b.tunnel.example.com",
            "bobsite.other.example.com",
            "bobsitetunnel.example.com",
            "bobsite.tunnel.example.com.",
            "bobsite.tunnel.example.com.evil",
            "-bob.tunnel.example.com",
            "bob-.tunnel.example.com",
            "bob_site.tunnel.example.com",
            "bob/../x.tunnel.example.com",
            "released-bob.tunnel.example.com",
            "Expired-Bob.tunnel.example.com",
            "bobsite.tunnel.example.com:",
            "bobsite.tunnel.example.com:x",
            "bobsite.tunnel.example.com:123456",
            "bobsite.tunnel.example.com:80:80",
            "[::1]:80",
            "BÖB.tunnel.example.com",
            // U+212A KELVIN SIGN lower-cases to 'k' outside ASCII: never a slug here.
            "\u{212A}.tunnel.example.com",
            &format!("{}.tunnel.example.com", "a".repeat(64)),
        ] {
            assert_eq!(slug(host), None, "{host:?}");
        }
    }

    #[test]
    fn the_head_must_carry_exactly_one_host() {
        let base = base();
        let one = b"GET /slug HTTP/1.1\r\nHost: BobSite.tunnel.example.com\r\nUser-Agent: Go\r\n";
        assert_eq!(
            answer(one, &base),
            "HTTP/1.1 200 OK\r\nX-Mytunnel-Slug: bobsite\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let lower_name = b"GET / HTTP/1.1\r\nhOST:BOBSITE.tunnel.example.com";
        assert_eq!(slug_of_head(lower_name, &base).unwrap().as_str(), "bobsite");
        for head in [
            &b""[..],
            b"GET / HTTP/1.1",
            b"Host: bobsite.tunnel.example.com",
            b"GET / HTTP/1.1\r\nX-Host: bobsite.tunnel.example.com",
            b"GET / HTTP/1.1\r\nHost: a.tunnel.example.com\r\nHost: b.tunnel.example.com",
            b"GET / HTTP/1.1\r\nHost: a.tunnel.example.com\xff",
        ] {
            assert_eq!(answer(head, &base), REFUSED, "{head:?}");
        }
    }

    /// Writes `request` on a fresh connection answered by [`answer_connection`] and
    /// reads to the end: what came back, and how long until the connection closed.
    async fn exchange(request: Vec<u8>) -> (String, Duration) {
        let (mut client, server) = UnixStream::pair().unwrap();
        let answering = tokio::spawn(async move { answer_connection(server, &base()).await });
        let started = std::time::Instant::now();
        // A head over the limit may be cut off: the write can fail.
        let _ = client.write_all(&request).await;
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        let took = started.elapsed();
        answering.await.unwrap();
        (String::from_utf8(answer).unwrap(), took)
    }

    #[tokio::test]
    async fn a_connection_gets_one_answer_to_a_whole_head_within_the_limits() {
        let (answer, _) =
            exchange(b"GET /slug HTTP/1.1\r\nHost: BobSite.tunnel.example.com\r\n\r\n".to_vec())
                .await;
        assert!(
            answer.contains("\r\nX-Mytunnel-Slug: bobsite\r\n"),
            "{answer:?}"
        );
        // At the limit: answered; a byte over: not.
        let mut head = b"GET /slug HTTP/1.1\r\nHost: BobSite.tunnel.example.com\r\nX: ".to_vec();
        head.resize(MAX_HEAD_BYTES - 4, b'x');
        head.extend(b"\r\n\r\n");
        assert_eq!(head.len(), MAX_HEAD_BYTES);
        assert!(exchange(head.clone()).await.0.starts_with("HTTP/1.1 200 "));
        head.insert(60, b'x');
        assert_eq!(exchange(head).await.0, "");
        // Over it: closed unanswered, without waiting for the rest.
        let mut head = b"GET /slug HTTP/1.1\r\nHost: BobSite.tunnel.example.com\r\nX: ".to_vec();
        head.resize(MAX_HEAD_BYTES + 2048, b'x');
        let (answer, took) = exchange(head).await;
        assert_eq!(answer, "");
        assert!(took < READ_WITHIN, "{took:?}");
    }

    #[tokio::test]
    async fn a_head_that_does_not_end_is_closed_unanswered_after_two_seconds() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let answering = tokio::spawn(async move { answer_connection(server, &base()).await });
        let started = std::time::Instant::now();
        client
            .write_all(b"GET /slug HTTP/1.1\r\nHost: BobSite.tunnel.example.com\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        let took = started.elapsed();
        answering.await.unwrap();
        assert_eq!(answer, b"");
        assert!(took >= READ_WITHIN && took < READ_WITHIN * 3, "{took:?}");
    }

    proptest! {
        /// Whatever the bytes, the answer is a refusal or a 200 with a valid lower-case
        /// slug, and nothing panics.
        #[test]
        fn any_head_gets_a_refusal_or_a_valid_slug(head in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            // A Host header of any bytes, often under the base domain.
            (proptest::collection::vec(any::<u8>(), 0..80), any::<bool>()).prop_map(|(host, under)| {
                let mut head = b"GET /slug HTTP/1.1\r\nHost: ".to_vec();
                head.extend(host);
                if under {
                    head.extend(b".TUNNEL.example.com");
                }
                head
            }),
        ]) {
            let reply = answer(&head, &base());
            if reply != REFUSED {
                let slug = reply
                    .strip_prefix("HTTP/1.1 200 OK\r\nX-Mytunnel-Slug: ")
                    .and_then(|rest| rest.strip_suffix("\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
                    .unwrap();
                prop_assert!(slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{slug:?}");
                let parsed: Slug = slug.parse().unwrap();
                prop_assert_eq!(parsed.as_str(), slug);
            }
        }

        /// Hosts shaped like the real thing: any text where the label goes, any case.
        #[test]
        fn any_host_gets_a_refusal_or_its_own_label(label in "[a-zA-Z0-9_.\\-]{0,70}", upper in any::<bool>(), port in proptest::option::of(0u32..70000)) {
            let mut host = format!("{label}.tunnel.example.com");
            if upper {
                host = host.to_ascii_uppercase();
            }
            if let Some(port) = port {
                host = format!("{host}:{port}");
            }
            let head = format!("GET /slug HTTP/1.1\r\nHost: {host}\r\nAccept: */*");
            let lower = label.to_ascii_lowercase();
            match slug_of_head(head.as_bytes(), &base()) {
                Some(slug) => prop_assert_eq!(slug.as_str(), lower),
                None => prop_assert!(
                    lower.contains('.') || lower.parse::<Slug>().is_err(),
                    "{host:?} refused"
                ),
            }
        }
    }
}
