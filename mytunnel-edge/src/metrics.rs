//! Prometheus metrics of `mytunneld serve`, answered at `GET /metrics` on
//! `MYTUNNEL_METRICS_LISTEN` (loopback only; off when unset).
//!
//! [`Metrics`] holds every instrument in one registry; the service, the control socket,
//! the Caddy backend, the TLS ask and serve's passes record into a clone of it. Without
//! the setting it is [`Metrics::default`], which records nothing (no registry, one
//! branch per event): tests and the in-process transport use that.
//!
//! Labels are few and bounded: a result `code` (`ok` or a protocol error code), a ctl
//! `verb`, a `pass` (`cleanup`, `reconcile`), an ask `result` (`yes`, `no`, `error`).
//! No label ever carries a lease id, an owner or a host.
//!
//! The active leases are counted in the lease database when a scrape asks
//! ([`LeaseStore::stats`], the read pool, as `mytunneld ctl stats` counts them), so the
//! gauge is right whatever changed the database and whenever serve restarted. A scrape
//! is answered within the loopback server's bound (2 s): a store that does not answer
//! by then gets the scrape `503`, never a hang.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::{Method, StatusCode};
use mytunnel_core::protocol::{ApiError, ErrorCode, Verb};
use mytunnel_core::store::LeaseStore;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::loopback_http::{LoopbackAnswer, LoopbackHandler, LoopbackRequest};

/// The path Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// The exposition's `Content-Type`: Prometheus' text format 0.0.4, which every scraper
/// reads.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the ctl latency buckets: a lookup takes about a millisecond,
/// a route change in `routes` mode waits for Caddy's reload, ctl gives up at 30 s.
const CTL_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds (seconds) of the pass duration buckets: a pass is a few queries, a
/// reconcile also Caddy's route list and each change; each admin request is bounded by
/// the health timeout (5 s by default).
const PASS_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// One label and its value.
type Label = [(&'static str, &'static str); 1];

/// The `code` label of a result: `ok`, or the error's protocol code.
pub fn result_code<T>(result: &Result<T, ApiError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => error.code.as_str(),
    }
}

/// serve's periodic passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Expire leases without heartbeats, purge tombstones, end stray listeners.
    Cleanup,
    /// Make the routes match the active leases.
    Reconcile,
}

impl Pass {
    /// The `pass` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Pass::Cleanup => "cleanup",
            Pass::Reconcile => "reconcile",
        }
    }
}

/// What the TLS ask answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskResult {
    /// `200`: the host is an active lease's.
    Yes,
    /// `404`: no active lease there (or not a host at all).
    No,
    /// Neither: the store failed or did not answer in time, or the request was not an
    /// ask Caddy makes (no `domain`, another method).
    Error,
}

impl AskResult {
    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            AskResult::Yes => "yes",
            AskResult::No => "no",
            AskResult::Error => "error",
        }
    }
}

fn ctl_histogram() -> Histogram {
    Histogram::new(CTL_BUCKETS)
}

fn pass_histogram() -> Histogram {
    Histogram::new(PASS_BUCKETS)
}

/// Every instrument, and the registry that encodes them.
#[derive(Debug)]
struct Instruments {
    registry: Registry,
    /// Held from setting the gauge to the end of encoding, so a scrape shows the count
    /// it read itself.
    scrape: Mutex<()>,
    leases_active: Gauge,
    allocations: Family<Label, Counter>,
    releases: Family<Label, Counter>,
    expiries: Family<Label, Counter>,
    ctl_seconds: Family<Label, Histogram, fn() -> Histogram>,
    pass_seconds: Family<Label, Histogram, fn() -> Histogram>,
    pass_failures: Family<Label, Counter>,
    caddy_admin_errors: Counter,
    tls_ask_answers: Family<Label, Counter>,
}

impl Instruments {
    fn new() -> Instruments {
        let mut registry = Registry::with_prefix("mytunnel");
        let leases_active = Gauge::default();
        registry.register(
            "leases_active",
            "Active leases in the lease database, counted at scrape time (as `mytunneld ctl stats` counts them)",
            leases_active.clone(),
        );
        let allocations = Family::<Label, Counter>::default();
        registry.register(
            "allocations",
            "Allocate requests by result: code=\"ok\", or the protocol error code refusing it",
            allocations.clone(),
        );
        let releases = Family::<Label, Counter>::default();
        registry.register(
            "releases",
            "Release and delete requests by result: code=\"ok\", or the protocol error code refusing it",
            releases.clone(),
        );
        let expiries = Family::<Label, Counter>::default();
        registry.register(
            "expiries",
            "Leases the cleanup pass expired (code=\"ok\"); another code counts passes whose expiry step failed with it",
            expiries.clone(),
        );
        let ctl_seconds: Family<Label, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(ctl_histogram);
        registry.register(
            "ctl_request_duration_seconds",
            "Time serve took for a ctl request by verb, from its acceptance to its reply written",
            ctl_seconds.clone(),
        );
        let pass_seconds: Family<Label, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(pass_histogram);
        registry.register(
            "pass_duration_seconds",
            "Duration of serve's periodic passes by pass (cleanup, reconcile)",
            pass_seconds.clone(),
        );
        let pass_failures = Family::<Label, Counter>::default();
        registry.register(
            "pass_failures",
            "Periodic passes that failed or left changes undone, by pass (retried at the next interval)",
            pass_failures.clone(),
        );
        let caddy_admin_errors = Counter::default();
        registry.register(
            "caddy_admin_errors",
            "Requests to Caddy's admin API that got no answer or an error status",
            caddy_admin_errors.clone(),
        );
        let tls_ask_answers = Family::<Label, Counter>::default();
        registry.register(
            "tls_ask_answers",
            "Answers to Caddy's on-demand TLS ask by result (yes, no, error)",
            tls_ask_answers.clone(),
        );
        let instruments = Instruments {
            registry,
            scrape: Mutex::new(()),
            leases_active,
            allocations,
            releases,
            expiries,
            ctl_seconds,
            pass_seconds,
            pass_failures,
            caddy_admin_errors,
            tls_ask_answers,
        };
        instruments.initialise_series();
        instruments
    }

    /// Creates the series known in advance at 0, so a rate has a start and a missing
    /// series means no serve.
    fn initialise_series(&self) {
        for family in [&self.allocations, &self.releases, &self.expiries] {
            family.get_or_create_owned(&[("code", "ok")]);
        }
        for verb in Verb::ALL {
            self.ctl_seconds
                .get_or_create_owned(&[("verb", verb.as_str())]);
        }
        for pass in [Pass::Cleanup, Pass::Reconcile] {
            self.pass_seconds
                .get_or_create_owned(&[("pass", pass.as_str())]);
            self.pass_failures
                .get_or_create_owned(&[("pass", pass.as_str())]);
        }
        for result in [AskResult::Yes, AskResult::No, AskResult::Error] {
            self.tls_ask_answers
                .get_or_create_owned(&[("result", result.as_str())]);
        }
    }
}

/// serve's metrics: cheap to clone (one `Arc`), and nothing at all when disabled.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    instruments: Option<Arc<Instruments>>,
}

impl Metrics {
    /// Metrics that record, for a serve that answers scrapes.
    pub fn new() -> Metrics {
        Metrics {
            instruments: Some(Arc::new(Instruments::new())),
        }
    }

    /// Whether this records anything (not [`Metrics::default`]).
    pub fn is_enabled(&self) -> bool {
        self.instruments.is_some()
    }

    fn with(&self, record: impl FnOnce(&Instruments)) {
        if let Some(instruments) = &self.instruments {
            record(instruments);
        }
    }

    /// An allocate request answered with `code` ([`result_code`]).
    pub fn allocation(&self, code: &'static str) {
        self.with(|m| {
            m.allocations.get_or_create(&[("code", code)]).inc();
        });
    }

    /// A release or delete request answered with `code` ([`result_code`]).
    pub fn release(&self, code: &'static str) {
        self.with(|m| {
            m.releases.get_or_create(&[("code", code)]).inc();
        });
    }

    /// `count` leases expired by the cleanup pass.
    pub fn expired(&self, count: u64) {
        self.with(|m| {
            m.expiries.get_or_create(&[("code", "ok")]).inc_by(count);
        });
    }

    /// A cleanup pass whose expiry step failed with `code`.
    pub fn expiry_failed(&self, code: ErrorCode) {
        self.with(|m| {
            m.expiries.get_or_create(&[("code", code.as_str())]).inc();
        });
    }

    /// A ctl request of `verb` that took `elapsed` from acceptance to reply.
    pub fn ctl_request(&self, verb: Verb, elapsed: Duration) {
        self.with(|m| {
            m.ctl_seconds
                .get_or_create(&[("verb", verb.as_str())])
                .observe(elapsed.as_secs_f64());
        });
    }

    /// A periodic pass that took `elapsed`, and whether it succeeded.
    pub fn pass(&self, pass: Pass, elapsed: Duration, succeeded: bool) {
        self.with(|m| {
            let label = [("pass", pass.as_str())];
            m.pass_seconds
                .get_or_create(&label)
                .observe(elapsed.as_secs_f64());
            if !succeeded {
                m.pass_failures.get_or_create(&label).inc();
            }
        });
    }

    /// A request to Caddy's admin API that got no answer or an error status.
    pub fn caddy_admin_error(&self) {
        self.with(|m| {
            m.caddy_admin_errors.inc();
        });
    }

    /// An answer of the TLS ask.
    pub fn tls_ask(&self, result: AskResult) {
        self.with(|m| {
            m.tls_ask_answers
                .get_or_create(&[("result", result.as_str())])
                .inc();
        });
    }

    /// The exposition, in Prometheus' text format, with `active` leases; empty when
    /// disabled.
    pub fn render(&self, active: u64) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        if let Some(m) = &self.instruments {
            let _scrape = m.scrape.lock().unwrap_or_else(PoisonError::into_inner);
            m.leases_active
                .set(i64::try_from(active).unwrap_or(i64::MAX));
            prometheus_text::encode(&mut text, &m.registry)?;
        }
        Ok(text)
    }
}

/// `GET /metrics` over the lease store (for the active leases) and the metrics.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    store: Arc<dyn LeaseStore>,
    metrics: Metrics,
}

impl MetricsEndpoint {
    /// Scrapes of `metrics`, counting active leases in `store`.
    pub fn new(store: Arc<dyn LeaseStore>, metrics: Metrics) -> Self {
        MetricsEndpoint { store, metrics }
    }
}

impl LoopbackHandler for MetricsEndpoint {
    async fn answer(&self, request: LoopbackRequest) -> LoopbackAnswer {
        if request.path != METRICS_PATH {
            return LoopbackAnswer::new(StatusCode::NOT_FOUND, "not found; scrape /metrics\n");
        }
        if request.method != Method::GET && request.method != Method::HEAD {
            return LoopbackAnswer::new(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        let active = match self.store.stats().await {
            Ok(stats) => stats.by_state.active,
            Err(error) => {
                tracing::warn!(%error, "metrics scrape: the lease store failed; answered 503");
                return LoopbackAnswer::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the lease store did not answer\n",
                );
            }
        };
        match self.metrics.render(active) {
            Ok(text) => LoopbackAnswer::new(StatusCode::OK, text).with_content_type(CONTENT_TYPE),
            Err(error) => {
                tracing::warn!(%error, "metrics scrape: could not encode the metrics");
                LoopbackAnswer::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not encode the metrics\n",
                )
            }
        }
    }

    fn timed_out(&self) {
        tracing::warn!("metrics scrape: the lease store did not answer in time; answered 503");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// The value of the sample line `series` (name and labels as printed).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.parse().unwrap())
    }

    #[test]
    fn disabled_metrics_record_and_render_nothing() {
        let metrics = Metrics::default();
        assert!(!metrics.is_enabled());
        metrics.allocation("ok");
        metrics.caddy_admin_error();
        assert_eq!(metrics.render(3).unwrap(), "");
    }

    #[test]
    fn the_exposition_names_every_metric_with_help_and_type() {
        let metrics = Metrics::new();
        let text = metrics.render(0).unwrap();
        for (name, kind) in [
            ("mytunnel_leases_active", "gauge"),
            ("mytunnel_allocations_total", "counter"),
            ("mytunnel_releases_total", "counter"),
            ("mytunnel_expiries_total", "counter"),
            ("mytunnel_ctl_request_duration_seconds", "histogram"),
            ("mytunnel_pass_duration_seconds", "histogram"),
            ("mytunnel_pass_failures_total", "counter"),
            ("mytunnel_caddy_admin_errors_total", "counter"),
            ("mytunnel_tls_ask_answers_total", "counter"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}:\n{text}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        }
        // Known series start at 0.
        assert_eq!(
            sample(&text, "mytunnel_allocations_total{code=\"ok\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "mytunnel_ctl_request_duration_seconds_count{verb=\"heartbeat\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "mytunnel_tls_ask_answers_total{result=\"error\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn records_land_in_their_series() {
        let metrics = Metrics::new();
        metrics.allocation("ok");
        metrics.allocation("slug_taken");
        metrics.allocation("slug_taken");
        metrics.release("lease_not_found");
        metrics.expired(3);
        metrics.expiry_failed(ErrorCode::DbError);
        metrics.ctl_request(Verb::Allocate, Duration::from_millis(3));
        metrics.pass(Pass::Reconcile, Duration::from_millis(20), false);
        metrics.pass(Pass::Cleanup, Duration::from_millis(2), true);
        metrics.caddy_admin_error();
        metrics.tls_ask(AskResult::Yes);
        let text = metrics.clone().render(7).unwrap();
        for (series, value) in [
            ("mytunnel_leases_active", 7.0),
            ("mytunnel_allocations_total{code=\"ok\"}", 1.0),
            ("mytunnel_allocations_total{code=\"slug_taken\"}", 2.0),
            ("mytunnel_releases_total{code=\"ok\"}", 0.0),
            ("mytunnel_releases_total{code=\"lease_not_found\"}", 1.0),
            ("mytunnel_expiries_total{code=\"ok\"}", 3.0),
            ("mytunnel_expiries_total{code=\"db_error\"}", 1.0),
            (
                "mytunnel_ctl_request_duration_seconds_count{verb=\"allocate\"}",
                1.0,
            ),
            (
                "mytunnel_ctl_request_duration_seconds_bucket{verb=\"allocate\",le=\"0.001\"}",
                0.0,
            ),
            (
                "mytunnel_ctl_request_duration_seconds_bucket{verb=\"allocate\",le=\"0.005\"}",
                1.0,
            ),
            ("mytunnel_pass_failures_total{pass=\"reconcile\"}", 1.0),
            ("mytunnel_pass_failures_total{pass=\"cleanup\"}", 0.0),
            (
                "mytunnel_pass_duration_seconds_count{pass=\"cleanup\"}",
                1.0,
            ),
            ("mytunnel_caddy_admin_errors_total", 1.0),
            ("mytunnel_tls_ask_answers_total{result=\"yes\"}", 1.0),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
        }
    }
}
