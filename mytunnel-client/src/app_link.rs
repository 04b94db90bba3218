//! How the tunnel reaches the app: one definition, used by the probe, the proxy, the
//! relay and the inspector's replay, so that what the probe reached is what the tunnel
//! forwards to.
//!
//! An [`AppLink`] tries each of the [`Upstream`]'s addresses in turn (both loopback
//! addresses for `localhost`, every address a name resolves to), puts the one that
//! answered first for the next connection, speaks TLS to an `https://` app, and sets the
//! headers the app is promised: `Host` as the tunnel's [`HostHeader`] says,
//! `X-Forwarded-Host` and `X-Forwarded-Proto` to the public values.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue, HOST};
use http::HeaderMap;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::upstream::{AppCertificates, HostHeader, Scheme, Upstream, UpstreamHost};

/// `X-Forwarded-Host`: the public host the visitor asked for.
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Proto`: `https`, how the visitor reached the edge.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The app, as the tunnel reaches it.
pub(crate) struct AppLink {
    upstream: Upstream,
    /// For an `https://` app: the connector and the name its certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The `Host` the app sees; `None` keeps the visitor's (the public host).
    host: Option<HeaderValue>,
    /// The address that answered last, tried first.
    answered: Mutex<Option<SocketAddr>>,
}

impl std::fmt::Debug for AppLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppLink")
            .field("upstream", &self.upstream.to_string())
            .field("tls", &self.tls.is_some())
            .field("host", &self.host)
            .finish()
    }
}

/// Links are equal when they are the same link: two tunnels to one app are two links.
impl PartialEq for AppLink {
    fn eq(&self, other: &AppLink) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for AppLink {}

/// A tunnel's public host as `X-Forwarded-Host` carries it.
#[derive(Debug, Clone)]
pub(crate) struct PublicHost(Option<HeaderValue>);

impl PublicHost {
    /// `host` (a lease's host, always a valid header value; anything else is left out).
    pub(crate) fn new(host: &str) -> PublicHost {
        PublicHost(HeaderValue::from_str(host).ok())
    }
}

/// One address that did not answer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// The address; `None` when the name resolved to none.
    pub(crate) addr: Option<SocketAddr>,
    /// Why.
    pub(crate) failure: AttemptFailure,
}

/// Why an address did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttemptFailure {
    /// No TCP connection (refused, unreachable, timed out), or the name did not resolve.
    Connect(String),
    /// TLS failed because the app's certificate is not trusted (or not for its name).
    Certificate(String),
    /// TLS failed otherwise: the app may not speak TLS.
    Tls(String),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (AttemptFailure::Connect(why)
        | AttemptFailure::Certificate(why)
        | AttemptFailure::Tls(why)) = &self.failure;
        match self.addr {
            Some(addr) => write!(f, "{addr}: {why}"),
            None => f.write_str(why),
        }
    }
}

/// A connection to the app: plain TCP, or TLS over it.
#[derive(Debug)]
pub(crate) enum AppStream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AppLink {
    /// A link to `upstream`: checks its certificate as `certificates` says (for an
    /// `https://` app) and gives it the `Host` that `host_header` says.
    pub(crate) fn new(
        upstream: Upstream,
        certificates: &AppCertificates,
        host_header: &HostHeader,
    ) -> Result<AppLink, String> {
        let tls = match upstream.scheme() {
            Scheme::Http => None,
            Scheme::Https => Some((
                TlsConnector::from(Arc::new(client_config(certificates)?)),
                server_name(&upstream)?,
            )),
        };
        let host = match host_header {
            HostHeader::Public => None,
            HostHeader::Rewrite => Some(upstream.authority()),
            HostHeader::Value(value) => Some(value.clone()),
        }
        .map(|host| {
            HeaderValue::from_str(&host).map_err(|_| format!("{host:?} cannot be a Host header"))
        })
        .transpose()?;
        Ok(AppLink {
            upstream,
            tls,
            host,
            answered: Mutex::new(None),
        })
    }

    /// A plain HTTP link to one address, the visitor's `Host` kept: for tests.
    #[cfg(test)]
    pub(crate) fn plain(addr: SocketAddr) -> Arc<AppLink> {
        use crate::upstream::IntoUpstream;
        let upstream = addr
            .into_upstream()
            .unwrap_or_else(|e| panic!("{addr}: {e}"));
        Arc::new(
            AppLink::new(upstream, &AppCertificates::Verify, &HostHeader::Public)
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Where the app listens.
    pub(crate) fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The address that answered last, if any has.
    pub(crate) fn answered(&self) -> Option<SocketAddr> {
        *self.answered.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connects to the first address that answers, the last one that did first (with
    /// TLS for an `https://` app); or every address tried and why each failed.
    pub(crate) async fn connect(&self) -> Result<(AppStream, SocketAddr), Vec<Attempt>> {
        let mut addrs = match self.upstream.addresses().await {
            Ok(addrs) if !addrs.is_empty() => addrs,
            Ok(_) => return Err(vec![self.unresolved("it resolves to no address".into())]),
            Err(e) => return Err(vec![self.unresolved(e.to_string())]),
        };
        if let Some(answered) = self.answered() {
            if let Some(at) = addrs.iter().position(|a| *a == answered) {
                addrs.swap(0, at);
            }
        }
        let mut tried = Vec::with_capacity(addrs.len());
        for addr in addrs {
            match self.connect_to(addr).await {
                Ok(stream) => {
                    *self.answered.lock().unwrap_or_else(PoisonError::into_inner) = Some(addr);
                    return Ok((stream, addr));
                }
                Err(failure) => tried.push(Attempt {
                    addr: Some(addr),
                    failure,
                }),
            }
        }
        Err(tried)
    }

    /// A name that did not resolve, as an attempt at no address.
    fn unresolved(&self, why: String) -> Attempt {
        let host = match self.upstream.host() {
            UpstreamHost::Name(name) => name.as_str(),
            _ => "the host",
        };
        Attempt {
            addr: None,
            failure: AttemptFailure::Connect(format!("{host} does not resolve: {why}")),
        }
    }

    async fn connect_to(&self, addr: SocketAddr) -> Result<AppStream, AttemptFailure> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| AttemptFailure::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(AppStream::Plain(stream));
        };
        match connector.connect(name.clone(), stream).await {
            Ok(tls) => Ok(AppStream::Tls(Box::new(tls))),
            Err(e) => Err(tls_failure(&e)),
        }
    }

    /// An HTTP/1.1 connection to the app: the sender, and the connection to drive.
    pub(crate) async fn http1<B>(
        &self,
    ) -> Result<
        (
            hyper::client::conn::http1::SendRequest<B>,
            hyper::client::conn::http1::Connection<TokioIo<AppStream>, B>,
        ),
        String,
    >
    where
        B: http_body::Body + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (stream, addr) = self
            .connect()
            .await
            .map_err(|tried| self.describe(&tried))?;
        hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP to {addr} failed: {e}"))
    }

    /// An HTTP/1.1 sender on a new connection to the app, the connection driven on the
    /// runtime until the [`Driving`] guard drops: for one-off requests (the probe, a
    /// replay), which must not leave a connection behind whatever happens.
    pub(crate) async fn http1_driven<B>(
        &self,
    ) -> Result<(hyper::client::conn::http1::SendRequest<B>, Driving), String>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (sender, connection) = self.http1().await?;
        Ok((sender, Driving::spawn(connection)))
    }

    /// What went wrong, in one line: `nothing answers on http://localhost:3000/
    /// (127.0.0.1:3000: Connection refused …; [::1]:3000: Connection refused …)`.
    pub(crate) fn describe(&self, tried: &[Attempt]) -> String {
        let each: Vec<String> = tried.iter().map(Attempt::to_string).collect();
        format!(
            "nothing answers on {}/ ({})",
            self.upstream,
            each.join("; ")
        )
    }

    /// Sets the headers the app is promised on a request from a visitor of `public_host`
    /// (the tunnel's host as a header value: made once per tunnel, not per request).
    pub(crate) fn prepare(&self, public_host: &PublicHost, headers: &mut HeaderMap) {
        if let Some(host) = &self.host {
            headers.insert(HOST, host.clone());
        }
        if let Some(public) = &public_host.0 {
            headers.insert(X_FORWARDED_HOST, public.clone());
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    }

    /// The `Host` the probe sends: the one the app will see, or (for the public host,
    /// unknown before the lease) the host the app listens on.
    pub(crate) fn probe_host(&self) -> HeaderValue {
        self.host.clone().unwrap_or_else(|| {
            HeaderValue::from_str(&self.upstream.authority())
                .unwrap_or(HeaderValue::from_static("localhost"))
        })
    }
}

/// A connection to the app driven on the runtime; dropping this ends it.
#[derive(Debug)]
pub(crate) struct Driving(tokio::task::AbortHandle);

impl Driving {
    /// Drives `connection` on the runtime until the guard drops.
    fn spawn<F>(connection: F) -> Driving
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Driving(tokio::spawn(connection).abort_handle())
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// HTTP/1.1 over `stream`, its connection driven on the runtime until the guard drops.
pub(crate) async fn drive_http1<B>(
    stream: AppStream,
) -> Result<(hyper::client::conn::http1::SendRequest<B>, Driving), hyper::Error>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    Ok((sender, Driving::spawn(connection)))
}

/// Sorts a TLS failure: a certificate the client does not trust, or anything else.
fn tls_failure(error: &io::Error) -> AttemptFailure {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(why)) => {
            AttemptFailure::Certificate(format!("its certificate is not trusted: {why:?}"))
        }
        Some(e) => AttemptFailure::Tls(format!("TLS failed: {e}")),
        None => AttemptFailure::Tls(format!("TLS failed: {error}")),
    }
}

/// The name an `https://` app's certificate must carry: `localhost`, the IP address, or
/// the DNS name.
fn server_name(upstream: &Upstream) -> Result<ServerName<'static>, String> {
    match upstream.host() {
        UpstreamHost::Localhost => Ok(ServerName::try_from("localhost")
            .map_err(|e| e.to_string())?
            .to_owned()),
        UpstreamHost::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        UpstreamHost::Name(name) => ServerName::try_from(name.clone())
            .map_err(|e| format!("{name} cannot be checked against a certificate: {e}")),
    }
}

/// rustls on the ring provider, HTTP/1.1 by ALPN, checking certificates as told.
fn client_config(certificates: &AppCertificates) -> Result<ClientConfig, String> {
    // ring has no post-quantum key exchange, which is what the deprecation is about; this
    // connection goes to the user's own app, on this machine or their network, and ring
    // keeps the build free of aws-lc-rs's C toolchain.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous();
    let verifier: Arc<dyn ServerCertVerifier> = match certificates {
        AppCertificates::Verify => Arc::new(
            rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("the system's trust store cannot be read: {e}"))?,
        ),
        AppCertificates::VerifyWithRoots(roots) => Arc::new(
            rustls_platform_verifier::Verifier::new_with_extra_roots(
                roots.iter().map(|der| CertificateDer::from(der.clone())),
                provider,
            )
            .map_err(|e| format!("a CA certificate given is not one: {e}"))?,
        ),
        AppCertificates::AcceptAny => Arc::new(AcceptAnyCertificate(provider)),
    };
    let mut config = builder
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// [`AppCertificates::AcceptAny`]: any certificate is taken, but the handshake's
/// signatures are still checked, so the connection is encrypted to whoever holds the
/// certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl AcceptAnyCertificate {
    /// The provider's signature algorithms, which check the handshake.
    fn algorithms(&self) -> &rustls::crypto::WebPkiSupportedAlgorithms {
        &self.0.signature_verification_algorithms
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

impl AsyncRead for AppStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AppStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            AppStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AppStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AppStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            AppStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AppStream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            AppStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            AppStream::Plain(stream) => stream.is_write_vectored(),
            AppStream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AppStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            AppStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AppStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            AppStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
