#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::upstream::IntoUpstream;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio::net::TcpListener;

/// A CA, and a server config with a certificate it issued for `localhost` and
/// 127.0.0.1: (the CA's certificate in DER, the config).
pub(crate) fn issued_for_localhost() -> (Vec<u8>, Arc<ServerConfig>) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (ca.der().to_vec(), Arc::new(config))
}

/// An app on `bind` answering every request with `host=<Host> xfh=<X-Forwarded-Host>
/// xfp=<X-Forwarded-Proto>`, over TLS when given a config; its address.
pub(crate) async fn echo_app(bind: &str, tls: Option<Arc<ServerConfig>>) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: http::Request<_>| {
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    let said = format!(
                        "host={} xfh={} xfp={}",
                        header("host"),
                        header("x-forwarded-host"),
                        header("x-forwarded-proto")
                    );
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(said),
                        )))
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(config) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    addr
}

fn link(target: impl IntoUpstream, certificates: AppCertificates, host: HostHeader) -> AppLink {
    AppLink::new(target.into_upstream().unwrap(), &certificates, &host).unwrap()
}

/// `GET /` through `link`: the body.
async fn get(link: &AppLink) -> String {
    let (mut sender, connection) = link.http1::<Empty<Bytes>>().await.unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::get("/")
        .header(HOST, "shop.tunnel.example.com")
        .body(Empty::new())
        .unwrap();
    link.prepare(
        &PublicHost::new("shop.tunnel.example.com"),
        request.headers_mut(),
    );
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn localhost_reaches_an_app_on_either_loopback_address() {
    for bind in ["[::1]:0", "127.0.0.1:0"] {
        let app = echo_app(bind, None).await;
        let link = link(app.port(), AppCertificates::Verify, HostHeader::Public);
        let (_, answered) = link.connect().await.unwrap();
        assert_eq!(answered, app, "{bind}");
        assert_eq!(link.answered(), Some(app));
        assert_eq!(
            get(&link).await,
            "host=shop.tunnel.example.com xfh=shop.tunnel.example.com xfp=https"
        );
    }
}

#[tokio::test]
async fn nothing_answering_names_every_address_tried() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let link = link(port, AppCertificates::Verify, HostHeader::Public);
    let tried = link.connect().await.unwrap_err();
    let addrs: Vec<String> = tried
        .iter()
        .filter_map(|a| a.addr.map(|addr| addr.to_string()))
        .collect();
    assert_eq!(
        addrs,
        [format!("127.0.0.1:{port}"), format!("[::1]:{port}")]
    );
    let said = link.describe(&tried);
    assert!(
        said.starts_with(&format!(
            "nothing answers on http://localhost:{port}/ (127.0.0.1:{port}: "
        )) && said.contains(&format!("; [::1]:{port}: ")),
        "{said}"
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve_says_so() {
    let link = link(
        "nosuch.invalid:3000",
        AppCertificates::Verify,
        HostHeader::Public,
    );
    let tried = link.connect().await.unwrap_err();
    let said = link.describe(&tried);
    assert!(
        said.starts_with(
            "nothing answers on http://nosuch.invalid:3000/ (nosuch.invalid does not resolve: "
        ),
        "{said}"
    );
}

#[tokio::test]
async fn the_host_header_is_the_public_one_rewritten_or_given() {
    let app = echo_app("[::1]:0", None).await;
    let port = app.port();
    let cases = [
        (
            format!("{port}"),
            HostHeader::Rewrite,
            format!("host=localhost:{port}"),
        ),
        (
            format!("[::1]:{port}"),
            HostHeader::Rewrite,
            format!("host=[::1]:{port}"),
        ),
        (
            format!("{port}"),
            HostHeader::Value("myapp.test".into()),
            "host=myapp.test".into(),
        ),
    ];
    for (target, host, expected) in cases {
        let link = link(target.as_str(), AppCertificates::Verify, host);
        assert_eq!(
            get(&link).await,
            format!("{expected} xfh=shop.tunnel.example.com xfp=https"),
            "{target}"
        );
    }
}

#[tokio::test]
async fn an_https_app_is_checked_against_trusted_roots_unless_told_otherwise() {
    let (ca, config) = issued_for_localhost();
    let app = echo_app("127.0.0.1:0", Some(config)).await;
    let target = format!("https://localhost:{}", app.port());

    // Its CA is in no trust store of this machine.
    let checked = link(target.as_str(), AppCertificates::Verify, HostHeader::Public);
    let tried = checked.connect().await.unwrap_err();
    assert!(
        tried
            .iter()
            .any(|a| matches!(&a.failure, AttemptFailure::Certificate(why) if why.contains("UnknownIssuer"))),
        "{tried:?}"
    );

    let trusted = link(
        target.as_str(),
        AppCertificates::VerifyWithRoots(vec![ca]),
        HostHeader::Rewrite,
    );
    assert_eq!(
        get(&trusted).await,
        format!(
            "host=localhost:{} xfh=shop.tunnel.example.com xfp=https",
            app.port()
        )
    );
    let any = link(
        target.as_str(),
        AppCertificates::AcceptAny,
        HostHeader::Public,
    );
    assert!(get(&any).await.starts_with("host=shop.tunnel.example.com"));

    // The certificate is for localhost and 127.0.0.1, not for 127.0.0.2's name.
    let (ca, config) = issued_for_localhost();
    let elsewhere = echo_app("127.0.0.2:0", Some(config)).await;
    let wrong_name = link(
        format!("https://{elsewhere}"),
        AppCertificates::VerifyWithRoots(vec![ca]),
        HostHeader::Public,
    );
    let tried = wrong_name.connect().await.unwrap_err();
    assert!(
        matches!(
            &tried[..],
            [Attempt {
                failure: AttemptFailure::Certificate(_),
                ..
            }]
        ),
        "{tried:?}"
    );
}

#[tokio::test]
async fn tls_to_a_plain_http_app_fails_as_tls_not_as_a_certificate() {
    let app = echo_app("127.0.0.1:0", None).await;
    let link = link(
        format!("https://{app}"),
        AppCertificates::AcceptAny,
        HostHeader::Public,
    );
    let tried = link.connect().await.unwrap_err();
    assert!(
        matches!(
            &tried[..],
            [Attempt {
                failure: AttemptFailure::Tls(_),
                ..
            }]
        ),
        "{tried:?}"
    );
}
