//! The local probe: before allocating anything, `GET /` from the app, reached as the
//! tunnel will reach it (every address tried, TLS for an `https://` app, the `Host` the
//! app will see).
//!
//! Unreachable → no lease is allocated. An empty body or a status of 400 or more is only
//! a warning: the app may serve its real pages elsewhere.

use std::time::Duration;

use http::header::HOST;
use http_body_util::{BodyExt, Empty};

use crate::app_link::{drive_http1, AppLink, Attempt, AttemptFailure};
use crate::upstream::{Scheme, Upstream, UpstreamHost};

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A non-empty answer with a status below 400.
    Healthy {
        /// The HTTP status.
        status: u16,
    },
    /// An answer, but an odd one: worth a warning, not a refusal.
    Suspicious {
        /// What was odd.
        warning: String,
    },
}

/// Why the probe failed. Each has a stable [`code`](ProbeFailure::code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeFailure {
    /// No address accepted a connection (`app_unreachable`).
    Unreachable,
    /// An `https://` app's certificate is not trusted (`app_certificate_untrusted`).
    CertificateUntrusted,
    /// TLS to an `https://` app failed otherwise: it may speak plain HTTP
    /// (`app_tls_failed`).
    TlsFailed,
    /// The app accepted the connection, but its answer is not HTTP/1.1: it may speak
    /// HTTPS (`app_not_http`).
    NotHttp,
    /// The app accepted the connection but did not answer in time (`app_no_answer`).
    NoAnswer,
}

impl ProbeFailure {
    /// The stable, machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            ProbeFailure::Unreachable => "app_unreachable",
            ProbeFailure::CertificateUntrusted => "app_certificate_untrusted",
            ProbeFailure::TlsFailed => "app_tls_failed",
            ProbeFailure::NotHttp => "app_not_http",
            ProbeFailure::NoAnswer => "app_no_answer",
        }
    }
}

/// The local app could not be reached, or did not answer HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    /// What failed.
    pub failure: ProbeFailure,
    /// The app's target, e.g. `http://localhost:3000`.
    pub upstream: Upstream,
    /// The whole message: the target and, for each address tried, why it failed.
    pub message: String,
}

impl ProbeError {
    /// The stable, machine-readable code of [`ProbeError::failure`].
    pub fn code(&self) -> &'static str {
        self.failure.code()
    }

    /// What to do about it, in the SDK's terms.
    pub fn hint(&self) -> String {
        let upstream = &self.upstream;
        match self.failure {
            ProbeFailure::CertificateUntrusted => {
                "for an app on this machine with a self-signed certificate, \
                 `.app_certificates(AppCertificates::AcceptAny)`; or install its CA in the \
                 system's trust store (e.g. `mkcert -install`)"
                    .to_owned()
            }
            ProbeFailure::TlsFailed => format!(
                "check that the app speaks HTTPS on port {}; for plain HTTP, target http://{}",
                upstream.port(),
                upstream.authority()
            ),
            ProbeFailure::NotHttp if upstream.scheme() == Scheme::Http => format!(
                "check that the app speaks HTTP on port {}; if it serves HTTPS, target https://{}",
                upstream.port(),
                upstream.authority()
            ),
            ProbeFailure::NotHttp | ProbeFailure::NoAnswer => {
                "check that the app serves HTTP/1.1 requests and answers `GET /`".to_owned()
            }
            ProbeFailure::Unreachable => self.start_hint(),
        }
    }

    /// How to start an app where the target says.
    fn start_hint(&self) -> String {
        let port = self.upstream.port();
        match self.upstream.host() {
            UpstreamHost::Localhost => format!(
                "start your app on port {port} first (e.g. `python3 -m http.server {port}`), \
                 or check the port number"
            ),
            _ => format!(
                "start your app so that it listens on {}, or check the target",
                self.upstream.authority()
            ),
        }
    }
}

/// Probes the app at `upstream` over plain HTTP or with its certificate checked against
/// the system's trust store, within `timeout`.
pub async fn probe_local(
    upstream: &Upstream,
    timeout: Duration,
) -> Result<ProbeOutcome, ProbeError> {
    let link = AppLink::new(
        upstream.clone(),
        &crate::upstream::AppCertificates::Verify,
        &crate::upstream::HostHeader::Public,
    )
    .map_err(|message| ProbeError {
        failure: ProbeFailure::TlsFailed,
        upstream: upstream.clone(),
        message,
    })?;
    probe_app(&link, timeout).await
}

/// Probes the app the way `link` reaches it, within `timeout`. The address that answers
/// is the one the link tries first from then on.
pub(crate) async fn probe_app(
    link: &AppLink,
    timeout: Duration,
) -> Result<ProbeOutcome, ProbeError> {
    let upstream = link.upstream();
    let fail = |failure: ProbeFailure, message: String| ProbeError {
        failure,
        upstream: upstream.clone(),
        message,
    };
    let (stream, addr) = match tokio::time::timeout(timeout, link.connect()).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(tried)) => return Err(refused(link, &tried)),
        Err(_) => {
            return Err(fail(
                ProbeFailure::Unreachable,
                format!(
                    "nothing answers on {upstream}/ (no connection within {}s)",
                    timeout.as_secs_f32()
                ),
            ))
        }
    };
    let url = format!("{upstream}/");
    let exchange = async {
        // The connection ends when `_driving` drops, on every way out of this block.
        let (mut sender, _driving) = drive_http1(stream)
            .await
            .map_err(|e| (ProbeFailure::NotHttp, e.to_string()))?;
        let request = http::Request::get("/")
            .header(HOST, link.probe_host())
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| (ProbeFailure::NotHttp, e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| (ProbeFailure::NotHttp, root_cause(&e)))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut empty = true;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| (ProbeFailure::NotHttp, root_cause(&e)))?;
            if frame.data_ref().is_some_and(|data| !data.is_empty()) {
                empty = false;
                break;
            }
        }
        Ok::<_, (ProbeFailure, String)>((status, empty))
    };
    let (status, empty) = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err((failure, why))) => {
            return Err(fail(
                failure,
                format!("{url} did not answer HTTP/1.1 ({addr}: {why})"),
            ))
        }
        Err(_) => {
            return Err(fail(
                ProbeFailure::NoAnswer,
                format!(
                    "{url} accepted a connection on {addr} but did not answer within {}s",
                    timeout.as_secs_f32()
                ),
            ))
        }
    };
    if status >= 400 {
        return Ok(ProbeOutcome::Suspicious {
            warning: format!("{url} answered HTTP {status}; publishing anyway"),
        });
    }
    if empty {
        return Ok(ProbeOutcome::Suspicious {
            warning: format!("{url} answered HTTP {status} with an empty body; publishing anyway"),
        });
    }
    Ok(ProbeOutcome::Healthy { status })
}

/// The error for a connection no address accepted: a certificate refused first, then TLS
/// failures, then nothing answering.
fn refused(link: &AppLink, tried: &[Attempt]) -> ProbeError {
    let upstream = link.upstream().clone();
    let each = |keep: fn(&AttemptFailure) -> bool| -> Vec<String> {
        tried
            .iter()
            .filter(|attempt| keep(&attempt.failure))
            .map(Attempt::to_string)
            .collect()
    };
    let certificates = each(|f| matches!(f, AttemptFailure::Certificate(_)));
    if !certificates.is_empty() {
        return ProbeError {
            failure: ProbeFailure::CertificateUntrusted,
            message: format!(
                "{upstream}/ presented a certificate this machine does not trust ({})",
                certificates.join("; ")
            ),
            upstream,
        };
    }
    let tls = each(|f| matches!(f, AttemptFailure::Tls(_)));
    if !tls.is_empty() {
        return ProbeError {
            failure: ProbeFailure::TlsFailed,
            message: format!("{upstream}/ did not complete TLS ({})", tls.join("; ")),
            upstream,
        };
    }
    ProbeError {
        failure: ProbeFailure::Unreachable,
        message: link.describe(tried),
        upstream,
    }
}

/// The innermost cause of `error`, which says most.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::app_link::tests::{echo_app, issued_for_localhost};
    use crate::upstream::{AppCertificates, HostHeader};

    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn probe(
        target: &str,
        certificates: AppCertificates,
    ) -> Result<ProbeOutcome, ProbeError> {
        let link =
            AppLink::new(target.parse().unwrap(), &certificates, &HostHeader::Public).unwrap();
        probe_app(&link, TIMEOUT).await
    }

    #[tokio::test]
    async fn an_app_on_ipv6_loopback_only_is_found_by_its_port() {
        let app = echo_app("[::1]:0", None).await;
        let outcome = probe_local(&Upstream::localhost(app.port()).unwrap(), TIMEOUT).await;
        assert_eq!(outcome, Ok(ProbeOutcome::Healthy { status: 200 }));
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_its_own_failure_with_a_way_out() {
        let (_, config) = issued_for_localhost();
        let app = echo_app("127.0.0.1:0", Some(config)).await;
        let target = format!("https://localhost:{}", app.port());
        let e = probe(&target, AppCertificates::Verify).await.unwrap_err();
        assert_eq!(e.code(), "app_certificate_untrusted");
        assert!(
            e.to_string().starts_with(&format!(
                "{target}/ presented a certificate this machine does not trust (127.0.0.1:"
            )),
            "{e}"
        );
        assert!(
            e.hint().contains("AppCertificates::AcceptAny"),
            "{}",
            e.hint()
        );
        assert_eq!(
            probe(&target, AppCertificates::AcceptAny).await,
            Ok(ProbeOutcome::Healthy { status: 200 })
        );
    }

    #[tokio::test]
    async fn the_wrong_scheme_either_way_says_which_one_to_try() {
        let (_, config) = issued_for_localhost();
        let tls_app = echo_app("127.0.0.1:0", Some(config)).await;
        let e = probe(&format!("http://{tls_app}"), AppCertificates::Verify)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "app_not_http");
        assert!(
            e.hint().ends_with(&format!("target https://{tls_app}")),
            "{}",
            e.hint()
        );

        let plain_app = echo_app("127.0.0.1:0", None).await;
        let e = probe(&format!("https://{plain_app}"), AppCertificates::AcceptAny)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "app_tls_failed");
        assert!(
            e.hint().ends_with(&format!("target http://{plain_app}")),
            "{}",
            e.hint()
        );
    }

    #[tokio::test]
    async fn an_app_that_accepts_but_never_answers_is_no_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                kept.push(stream);
            }
        });
        let link = AppLink::new(
            addr.to_string().parse().unwrap(),
            &AppCertificates::Verify,
            &HostHeader::Public,
        )
        .unwrap();
        let e = probe_app(&link, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "app_no_answer");
        assert!(e.to_string().contains("did not answer within 0.2s"), "{e}");
        held.abort();
    }
}
