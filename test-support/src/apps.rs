//! Local apps for tests of what a tunnel forwards to: an HTTP/1.1 answering loop that runs
//! over any stream (plain TCP or TLS), and an HTTPS app with a self-signed certificate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::server::LoopbackServer;

/// How long an app waits for the next request on a connection before closing it.
const IDLE: Duration = Duration::from_secs(10);

/// The head of a request an app received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target, e.g. `/` or `/path?query`.
    pub target: String,
    /// The header fields in the order they came, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of the first header field called `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Answers each request on `stream` with `respond`'s (status, body), as
/// `text/plain` with a `Content-Length`, until the peer closes, an HTTP/1.0 request or
/// `Connection: close` ends the connection, or no request comes for 10 s (set that read
/// timeout on a TCP stream before wrapping it: the loop cannot reach the socket).
/// A request body is read (by its `Content-Length`) and dropped.
pub fn answer_http<S: Read + Write>(stream: S, respond: impl Fn(&Request) -> (u16, String)) {
    let mut reader = BufReader::new(stream);
    while let Some((request, close)) = read_request(&mut reader) {
        let (status, body) = respond(&request);
        let response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            reason(status),
            body.len(),
            if close { "Connection: close\r\n" } else { "" },
        );
        let stream = reader.get_mut();
        if stream.write_all(response.as_bytes()).is_err() || stream.flush().is_err() || close {
            return;
        }
    }
}

/// One request head (and its body, dropped), and whether the connection ends after the
/// answer; None when the connection ended or the head is malformed.
fn read_request<R: Read>(reader: &mut BufReader<R>) -> Option<(Request, bool)> {
    let mut request_line = String::new();
    // Blank lines between requests are allowed (RFC 9112 §2.2).
    while request_line.trim().is_empty() {
        request_line.clear();
        if reader.read_line(&mut request_line).ok()? == 0 {
            return None;
        }
    }
    let mut words = request_line.split_whitespace();
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.trim_end().is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
    };
    let length: u64 = match request.header("content-length") {
        Some(value) => value.parse().ok()?,
        None => 0,
    };
    std::io::copy(&mut reader.by_ref().take(length), &mut std::io::sink()).ok()?;
    let close = version == "HTTP/1.0"
        || request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    Some((request, close))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// rustls's *ring* provider, the only one this workspace builds. rustls 0.23.48
/// deprecated it for lacking post-quantum key exchange, which a test's TLS on loopback
/// does not need.
#[allow(deprecated)]
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An HTTPS app: TLS with a self-signed certificate for the names it was given (no CA
/// vouches for it), HTTP/1.1 inside, every request answered 200 with a fixed body. Each
/// connection on a thread of its own; stopped when dropped.
#[derive(Debug)]
pub struct HttpsApp {
    server: LoopbackServer,
    certificate_pem: String,
}

impl HttpsApp {
    /// Listens on `addr` (e.g. `127.0.0.1:0`) with a fresh certificate for `names`
    /// (e.g. `localhost`), answering every request with `body`.
    pub fn start(addr: SocketAddr, names: &[&str], body: &str) -> Result<HttpsApp, String> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let certified =
            rcgen::generate_simple_self_signed(names).map_err(|e| format!("certificate: {e}"))?;
        let certificate_pem = certified.cert.pem();
        let chain: Vec<CertificateDer<'static>> = vec![certified.cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let config = rustls::ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("TLS certificate: {e}"))?;
        let config = Arc::new(config);
        let body = body.to_owned();
        let server = LoopbackServer::start_on(addr, move |stream: TcpStream, _| {
            if stream.set_read_timeout(Some(IDLE)).is_err() {
                return;
            }
            let Ok(connection) = rustls::ServerConnection::new(Arc::clone(&config)) else {
                return;
            };
            // The handshake happens on the first read; a client that refuses the
            // certificate ends the connection there.
            let tls = rustls::StreamOwned::new(connection, stream);
            answer_http(tls, |_| (200, body.clone()));
        })
        .map_err(|e| format!("listening on {addr}: {e}"))?;
        Ok(HttpsApp {
            server,
            certificate_pem,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Its certificate, PEM: what a client must be told to trust (e.g. `curl --cacert`).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    /// Sends `request` on a fresh connection to `addr` and reads until the app closes.
    fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IDLE)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn answers_each_request_of_a_connection_and_closes_on_connection_close() {
        let server = LoopbackServer::start(|stream, _| {
            answer_http(stream, |request| {
                match (request.target.as_str(), request.header("x-name")) {
                    ("/hello", Some(name)) => (200, format!("hello {name}")),
                    _ => (404, "no".to_owned()),
                }
            })
        })
        .unwrap();
        let answer = exchange(
            server.addr(),
            "POST /hello HTTP/1.1\r\nHost: a\r\nX-Name: ann\r\nContent-Length: 3\r\n\r\nabc\
             GET /other HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(
            answer,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nhello ann\
             HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\
             Connection: close\r\n\r\nno"
        );
    }

    #[test]
    fn an_https_app_serves_over_tls_to_a_client_that_trusts_its_certificate() {
        let app =
            HttpsApp::start("127.0.0.1:0".parse().unwrap(), &["localhost"], "secure").unwrap();
        let mut roots = rustls::RootCertStore::empty();
        let pem = app.certificate_pem().as_bytes();
        roots
            .add(CertificateDer::from_pem_slice(pem).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, TcpStream::connect(app.addr()).unwrap());
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        // The app closes without close_notify: the body is read, then the end is unclean.
        let _ = tls.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nsecure"), "{answer}");
    }
}
