//! Caddy's on-demand TLS `ask` endpoint: may Caddy get a certificate for this host?
//!
//! With on-demand TLS, Caddy obtains a certificate for a host at the first TLS handshake
//! that names it, after asking `GET <ask>?domain=<host>`; any answer but `2xx` refuses.
//! `serve` answers on `MYTUNNEL_TLS_ASK_LISTEN` (loopback only): `200` when the host is
//! the host of an active lease whose TTL has not run out, `404` otherwise (released,
//! expired, deleted, unknown, or not a host at all), so nobody can make the edge ask its
//! CA for certificates of names no tunnel holds. The answer is one lookup of the host's
//! unique index on the read pool, which writers never block; a store that does not
//! answer within the server's bound refuses (`503`), as does a failing one.
//!
//! Requests: `GET /ask?domain=<host>` (also `HEAD`); any other path is `404`, any other
//! method `405`, a query without exactly one `domain` is `400`.
//!
//! Every answer on the ask's path is counted in the service's metrics by result: `yes`
//! (200), `no` (404) or `error` (the store failed or did not answer in time, or a
//! request Caddy does not make: 400, 405).

use hyper::{Method, StatusCode};
use mytunnel_core::Host;

use crate::loopback_http::{LoopbackAnswer, LoopbackHandler, LoopbackRequest};
use crate::metrics::AskResult;
use crate::service::LeaseService;

/// The path Caddy's `ask` URL names.
pub const ASK_PATH: &str = "/ask";

/// The `ask` endpoint over the lease service.
#[derive(Debug, Clone)]
pub struct TlsAsk {
    service: LeaseService,
}

impl TlsAsk {
    /// Answers from `service`'s leases.
    pub fn new(service: LeaseService) -> Self {
        TlsAsk { service }
    }
}

/// Why a request names no host to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskRefusal {
    /// The path is not [`ASK_PATH`].
    UnknownPath,
    /// Not `GET` or `HEAD`.
    Method,
    /// No `domain` parameter, or more than one.
    NoDomain,
    /// The `domain` is not a host name (or a host no lease could hold).
    NotAHost,
}

/// The host a request asks about: the one `domain=` parameter of a `GET /ask`, in any
/// case, with or without a trailing dot. Host names never need percent-encoding, so
/// a `%` or `+` in one makes it no host.
pub fn asked_host(request: &LoopbackRequest) -> Result<Host, AskRefusal> {
    if request.path != ASK_PATH {
        return Err(AskRefusal::UnknownPath);
    }
    if request.method != Method::GET && request.method != Method::HEAD {
        return Err(AskRefusal::Method);
    }
    let mut domains = request
        .query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("domain="));
    let (Some(domain), None) = (domains.next(), domains.next()) else {
        return Err(AskRefusal::NoDomain);
    };
    if domain.contains(['%', '+']) {
        return Err(AskRefusal::NotAHost);
    }
    domain.parse().map_err(|_| AskRefusal::NotAHost)
}

impl TlsAsk {
    /// The answer to `request` and how it counts (`None`: not an ask).
    async fn answer_counted(
        &self,
        request: &LoopbackRequest,
    ) -> (LoopbackAnswer, Option<AskResult>) {
        let host = match asked_host(request) {
            Ok(host) => host,
            Err(refusal) => {
                let (status, body, result) = match refusal {
                    AskRefusal::UnknownPath => (StatusCode::NOT_FOUND, "not found\n", None),
                    AskRefusal::Method => (
                        StatusCode::METHOD_NOT_ALLOWED,
                        "GET only\n",
                        Some(AskResult::Error),
                    ),
                    AskRefusal::NoDomain => (
                        StatusCode::BAD_REQUEST,
                        "ask as GET /ask?domain=<host>\n",
                        Some(AskResult::Error),
                    ),
                    AskRefusal::NotAHost => (
                        StatusCode::NOT_FOUND,
                        "no tunnel at that host\n",
                        Some(AskResult::No),
                    ),
                };
                return (LoopbackAnswer::new(status, body), result);
            }
        };
        match self.service.active_lease_for_host(&host).await {
            Ok(Some(_)) => (
                LoopbackAnswer::new(StatusCode::OK, "a tunnel is published there\n"),
                Some(AskResult::Yes),
            ),
            Ok(None) => {
                tracing::debug!(%host, "TLS ask refused: no active lease at this host");
                (
                    LoopbackAnswer::new(StatusCode::NOT_FOUND, "no tunnel at that host\n"),
                    Some(AskResult::No),
                )
            }
            Err(error) => {
                tracing::warn!(%host, code = %error.code, error = %error.message, "TLS ask: the lease store failed; refused");
                (
                    LoopbackAnswer::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the lease store did not answer\n",
                    ),
                    Some(AskResult::Error),
                )
            }
        }
    }
}

impl LoopbackHandler for TlsAsk {
    async fn answer(&self, request: LoopbackRequest) -> LoopbackAnswer {
        let (answer, result) = self.answer_counted(&request).await;
        if let Some(result) = result {
            self.service.metrics().tls_ask(result);
        }
        answer
    }

    fn timed_out(&self) {
        tracing::warn!("TLS ask: the lease store did not answer in time; refused");
        self.service.metrics().tls_ask(AskResult::Error);
    }
}
