//! Component tests of serve's metrics: the real SQLite store (in memory), the real Caddy
//! backend against the fake Caddy admin API, the real control socket (`serve_control`
//! and ctl's `control::call`), serve's own passes, and the real loopback server answering
//! `GET /metrics`, scraped over HTTP before and after each event. Every count must move
//! by exactly what happened, and every line of the exposition must be well formed.
// test code: a panic is a failed assertion
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hyper::StatusCode;
use mytunnel_core::policy::{AdminUsers, OwnerScope};
use mytunnel_core::protocol::{
    AllocateRequest, ApiError, CtlRequest, CtlResponse, ErrorCode, LeaseDto,
};
use mytunnel_core::store::{AllocateSpec, Allocation, LeaseStore, StoreError, StoreStats};
use mytunnel_core::{Host, Lease, LeaseId, LeaseRef, Owner, PortRange, Timestamp};
use mytunnel_edge::caddy::CaddyRoutes;
use mytunnel_edge::control::{self, bind_control_socket, serve_control, ControlLimits};
use mytunnel_edge::loopback_http::{serve_loopback_http, LoopbackHttpLimits};
use mytunnel_edge::memory_routes::MemoryRoutes;
use mytunnel_edge::metrics::{Metrics, MetricsEndpoint, CONTENT_TYPE};
use mytunnel_edge::serve::{cleanup_once, reconcile_once};
use mytunnel_edge::service::{Clock, LeaseService};
use mytunnel_edge::tls_ask::TlsAsk;
use mytunnel_edge::SqlLeaseStore;
use mytunnel_test_support::service_settings;
use support::fake_caddy::FakeCaddy;

const T0: i64 = 1_800_000_000;

/// A clock the test moves by hand.
#[derive(Debug)]
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_seconds(self.0.load(Ordering::SeqCst)).unwrap()
    }
}

/// Stops a loopback server when dropped.
struct Stop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `handler` on `127.0.0.1:0` with `limits`; its base URL.
async fn loopback<H: mytunnel_edge::loopback_http::LoopbackHandler>(
    handler: H,
    limits: LoopbackHttpLimits,
) -> (String, Stop) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_loopback_http(listener, handler, limits, async move {
        let _ = stopped.await;
    }));
    (base, Stop(Some(stop)))
}

/// A service with metrics, as serve runs it: the control socket and `/metrics` served.
struct Edge {
    service: LeaseService,
    fake: FakeCaddy,
    clock: Arc<TestClock>,
    socket: PathBuf,
    metrics_url: String,
    _dir: tempfile::TempDir,
    _stops: Vec<Stop>,
}

impl Edge {
    async fn start() -> Edge {
        let metrics = Metrics::new();
        let fake = FakeCaddy::start().await;
        let routes = CaddyRoutes::new(&fake.admin_address(), "srv0", Duration::from_secs(5))
            .unwrap()
            .with_metrics(metrics.clone());
        let clock = Arc::new(TestClock(AtomicI64::new(T0)));
        let service = LeaseService::new(
            Arc::new(SqlLeaseStore::open_in_memory().await.unwrap()),
            Arc::new(routes),
            Arc::clone(&clock) as Arc<dyn Clock>,
            service_settings(
                "t.example".parse().unwrap(),
                PortRange::new(21000, 21009).unwrap(),
            ),
        )
        .with_metrics(metrics.clone());

        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let socket = dir.path().join("control.sock");
        let listener = bind_control_socket(&socket).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_control(
            service.clone(),
            AdminUsers::default(),
            listener,
            ControlLimits::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let (base, metrics_stop) = loopback(
            MetricsEndpoint::new(service.store().clone(), metrics),
            LoopbackHttpLimits::default(),
        )
        .await;
        Edge {
            service,
            fake,
            clock,
            socket,
            metrics_url: format!("{base}/metrics"),
            _dir: dir,
            _stops: vec![Stop(Some(stop)), metrics_stop],
        }
    }

    /// One ctl request over the control socket, as `mytunneld ctl` sends it.
    async fn ctl(&self, request: CtlRequest) -> Result<CtlResponse, ApiError> {
        control::call(&self.socket, &request, control::REPLY_WITHIN).await
    }

    async fn allocate(&self, name: &str) -> Result<LeaseDto, ApiError> {
        let request = AllocateRequest {
            name: Some(name.parse().unwrap()),
            ..AllocateRequest::default()
        };
        match self.ctl(CtlRequest::Allocate(request)).await? {
            CtlResponse::Lease(lease) => Ok(lease),
            other => panic!("allocate answered {other:?}"),
        }
    }

    async fn release(&self, lease: &LeaseDto) -> Result<CtlResponse, ApiError> {
        self.ctl(CtlRequest::Release {
            lease: LeaseRef::Id(lease.lease_id.clone()),
        })
        .await
    }

    /// `GET /metrics`, checked to be well formed; its samples by series.
    async fn scrape(&self) -> Samples {
        let response = reqwest::get(&self.metrics_url).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], CONTENT_TYPE);
        Samples(parse_exposition(&response.text().await.unwrap()))
    }

    async fn ask(&self, host: &str) -> StatusCode {
        use mytunnel_edge::loopback_http::{LoopbackHandler, LoopbackRequest};
        let request = LoopbackRequest {
            method: hyper::Method::GET,
            path: "/ask".into(),
            query: format!("domain={host}"),
        };
        TlsAsk::new(self.service.clone())
            .answer(request)
            .await
            .status
    }
}

/// The samples of one scrape, by series as printed (`name{label="value",…}`).
#[derive(Debug, Clone)]
struct Samples(BTreeMap<String, f64>);

impl Samples {
    /// A series' value; an absent series counts as 0, as a counter not yet created.
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

/// How far each of `series` moved between two scrapes.
fn moved(before: &Samples, after: &Samples, series: &[&str]) -> Vec<(String, f64)> {
    series
        .iter()
        .map(|s| ((*s).to_owned(), after.get(s) - before.get(s)))
        .collect()
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Checks every line of a text exposition (format 0.0.4): `# HELP name text`,
/// `# TYPE name kind` once per family before its samples, and samples
/// `name{label="value",…} value` of a declared family with well-formed labels and a
/// number. Returns the samples by series.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with('\n'), "no final newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(is_metric_name(name), "{line}");
            assert!(!help.is_empty(), "{line}");
            assert!(
                helps.insert(name.to_owned(), help.to_owned()).is_none(),
                "{line}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(is_metric_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "unexpected: {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let name = match series.split_once('{') {
            None => series,
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                for pair in labels.split(',') {
                    let (key, quoted) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    assert!(is_metric_name(key) && !key.contains(':'), "{line}");
                    let inner = quoted
                        .strip_prefix('"')
                        .and_then(|q| q.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("{line}"));
                    assert!(!inner.contains(['"', '\\', '\n']), "{line}");
                }
                name
            }
        };
        assert!(is_metric_name(name), "{line}");
        // A histogram's samples carry their family's name with a suffix.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        assert!(helps.contains_key(family), "sample without HELP: {line}");
        assert!(family.starts_with("mytunnel_"), "{line}");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "twice: {line}"
        );
    }
    // Counters end in _total; histograms of time are in seconds.
    for (name, kind) in &types {
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "{name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
            _ => {}
        }
    }
    samples
}

const ALLOC_OK: &str = "mytunnel_allocations_total{code=\"ok\"}";
const ALLOC_TAKEN: &str = "mytunnel_allocations_total{code=\"slug_taken\"}";
const ALLOC_CADDY: &str = "mytunnel_allocations_total{code=\"caddy_unavailable\"}";
const RELEASE_OK: &str = "mytunnel_releases_total{code=\"ok\"}";
const RELEASE_MISSING: &str = "mytunnel_releases_total{code=\"lease_not_found\"}";
const EXPIRY_OK: &str = "mytunnel_expiries_total{code=\"ok\"}";
const ACTIVE: &str = "mytunnel_leases_active";
const CTL_ALLOCATE: &str = "mytunnel_ctl_request_duration_seconds_count{verb=\"allocate\"}";
const CTL_RELEASE: &str = "mytunnel_ctl_request_duration_seconds_count{verb=\"release\"}";
const CTL_DELETE: &str = "mytunnel_ctl_request_duration_seconds_count{verb=\"delete\"}";
const CLEANUP_PASSES: &str = "mytunnel_pass_duration_seconds_count{pass=\"cleanup\"}";
const CLEANUP_FAILURES: &str = "mytunnel_pass_failures_total{pass=\"cleanup\"}";
const RECONCILE_PASSES: &str = "mytunnel_pass_duration_seconds_count{pass=\"reconcile\"}";
const RECONCILE_FAILURES: &str = "mytunnel_pass_failures_total{pass=\"reconcile\"}";
const CADDY_ERRORS: &str = "mytunnel_caddy_admin_errors_total";
const ASK_YES: &str = "mytunnel_tls_ask_answers_total{result=\"yes\"}";
const ASK_NO: &str = "mytunnel_tls_ask_answers_total{result=\"no\"}";
const ASK_ERROR: &str = "mytunnel_tls_ask_answers_total{result=\"error\"}";

/// Every series the tests follow.
const FOLLOWED: [&str; 20] = [
    ALLOC_OK,
    ALLOC_TAKEN,
    ALLOC_CADDY,
    RELEASE_OK,
    RELEASE_MISSING,
    EXPIRY_OK,
    ACTIVE,
    CTL_ALLOCATE,
    CTL_RELEASE,
    CTL_DELETE,
    CLEANUP_PASSES,
    CLEANUP_FAILURES,
    RECONCILE_PASSES,
    RECONCILE_FAILURES,
    CADDY_ERRORS,
    ASK_YES,
    ASK_NO,
    ASK_ERROR,
    "mytunnel_ctl_request_duration_seconds_count{verb=\"list\"}",
    "mytunnel_expiries_total{code=\"db_error\"}",
];

/// Asserts that, of [`FOLLOWED`], exactly `expected` moved, by exactly those amounts.
fn assert_moved(what: &str, before: &Samples, after: &Samples, expected: &[(&str, f64)]) {
    for (series, delta) in moved(before, after, &FOLLOWED) {
        let want = expected
            .iter()
            .find(|(s, _)| *s == series)
            .map_or(0.0, |(_, d)| *d);
        assert_eq!(
            delta, want,
            "{what}: {series} moved by {delta}, expected {want}"
        );
    }
}

#[tokio::test]
async fn each_event_moves_its_counts_by_exactly_one() {
    let edge = Edge::start().await;
    let start = edge.scrape().await;
    // Known series are there from the start, at 0.
    for series in [
        ALLOC_OK,
        RELEASE_OK,
        EXPIRY_OK,
        CTL_ALLOCATE,
        ASK_ERROR,
        ACTIVE,
    ] {
        assert_eq!(start.0.get(series), Some(&0.0), "{series}");
    }

    // An allocation.
    let portal = edge.allocate("portal").await.unwrap();
    let allocated = edge.scrape().await;
    assert_moved(
        "allocate",
        &start,
        &allocated,
        &[(ALLOC_OK, 1.0), (ACTIVE, 1.0), (CTL_ALLOCATE, 1.0)],
    );

    // A refused allocation: the name is taken.
    let taken = edge.allocate("portal").await.unwrap_err();
    assert_eq!(taken.code, ErrorCode::SlugTaken);
    let refused = edge.scrape().await;
    assert_moved(
        "slug_taken",
        &allocated,
        &refused,
        &[(ALLOC_TAKEN, 1.0), (CTL_ALLOCATE, 1.0)],
    );

    // The TLS ask: yes for the lease's host, no for another.
    assert_eq!(edge.ask("portal.t.example").await, StatusCode::OK);
    assert_eq!(edge.ask("nobody.t.example").await, StatusCode::NOT_FOUND);
    let asked = edge.scrape().await;
    assert_moved("ask", &refused, &asked, &[(ASK_YES, 1.0), (ASK_NO, 1.0)]);

    // A release, then a release of a lease that is not there.
    edge.release(&portal).await.unwrap();
    let released = edge.scrape().await;
    assert_moved(
        "release",
        &asked,
        &released,
        &[(RELEASE_OK, 1.0), (ACTIVE, -1.0), (CTL_RELEASE, 1.0)],
    );
    let missing = edge
        .ctl(CtlRequest::Release {
            lease: LeaseRef::Id("lease_abcdefghij234567".parse().unwrap()),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code, ErrorCode::LeaseNotFound);
    let not_found = edge.scrape().await;
    assert_moved(
        "release of a missing lease",
        &released,
        &not_found,
        &[(RELEASE_MISSING, 1.0), (CTL_RELEASE, 1.0)],
    );

    // A delete counts as a release.
    let doomed = edge.allocate("doomed").await.unwrap();
    edge.ctl(CtlRequest::Delete {
        lease: LeaseRef::Id(doomed.lease_id.clone()),
    })
    .await
    .unwrap();
    let deleted = edge.scrape().await;
    assert_moved(
        "allocate and delete",
        &not_found,
        &deleted,
        &[
            (ALLOC_OK, 1.0),
            (RELEASE_OK, 1.0),
            (CTL_ALLOCATE, 1.0),
            (CTL_DELETE, 1.0),
        ],
    );

    // An expiry: the TTL (60 s) runs out, serve's cleanup pass tombstones the lease.
    edge.allocate("short").await.unwrap();
    let before_expiry = edge.scrape().await;
    assert_eq!(before_expiry.get(ACTIVE), 1.0);
    edge.clock.0.fetch_add(61, Ordering::SeqCst);
    // Time alone changes nothing counted in the database until cleanup runs.
    assert_eq!(edge.scrape().await.get(ACTIVE), 1.0);
    assert!(cleanup_once(&edge.service).await);
    let expired = edge.scrape().await;
    assert_moved(
        "expiry",
        &before_expiry,
        &expired,
        &[(EXPIRY_OK, 1.0), (ACTIVE, -1.0), (CLEANUP_PASSES, 1.0)],
    );
    assert!(expired.get("mytunnel_pass_duration_seconds_sum{pass=\"cleanup\"}") >= 0.0);

    // Caddy down: the health probe's one failed admin request, a refused allocation (its
    // route write and the removal of a half-written route: two requests), a failed
    // reconcile pass (its route list: one request).
    edge.fake.set_down(true);
    let health = edge.ctl(CtlRequest::Health).await.unwrap();
    assert!(matches!(health, CtlResponse::Health(h) if !h.caddy.ok));
    let health_only = edge.scrape().await;
    assert_moved("health", &expired, &health_only, &[(CADDY_ERRORS, 1.0)]);
    let unavailable = edge.allocate("later").await.unwrap_err();
    assert_eq!(unavailable.code, ErrorCode::CaddyUnavailable);
    assert!(!reconcile_once(&edge.service).await);
    let down = edge.scrape().await;
    assert_moved(
        "Caddy down",
        &health_only,
        &down,
        &[
            (ALLOC_CADDY, 1.0),
            (CTL_ALLOCATE, 1.0),
            (CADDY_ERRORS, 3.0),
            (RECONCILE_PASSES, 1.0),
            (RECONCILE_FAILURES, 1.0),
        ],
    );
    assert_eq!(down.get(ACTIVE), 0.0);

    // Caddy back: a reconcile pass succeeds and nothing fails.
    edge.fake.set_down(false);
    assert!(reconcile_once(&edge.service).await);
    let up = edge.scrape().await;
    assert_moved("Caddy back", &down, &up, &[(RECONCILE_PASSES, 1.0)]);

    // The gauge is the database's count, whatever recorded what.
    let active = edge
        .service
        .store()
        .list(&OwnerScope::All)
        .await
        .unwrap()
        .iter()
        .filter(|l| l.state == mytunnel_core::LeaseState::Active)
        .count();
    assert_eq!(up.get(ACTIVE), active as f64);
}

#[tokio::test]
async fn the_metrics_answer_get_on_their_path_only() {
    let edge = Edge::start().await;
    let http = reqwest::Client::new();
    let base = edge.metrics_url.trim_end_matches("/metrics").to_owned();
    for (path, status) in [
        ("/metrics", StatusCode::OK),
        ("/metrics?x=1", StatusCode::OK),
        ("/", StatusCode::NOT_FOUND),
        ("/ask?domain=portal.t.example", StatusCode::NOT_FOUND),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
    let post = http.post(&edge.metrics_url).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    let head = http.head(&edge.metrics_url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
}

/// A store whose reads never answer: a database held by something that does not let go.
#[derive(Debug)]
struct StalledStore;

#[async_trait]
impl LeaseStore for StalledStore {
    async fn allocate(&self, _: AllocateSpec) -> Result<Allocation, StoreError> {
        unimplemented!()
    }
    async fn heartbeat(&self, _: &Owner, _: &LeaseId, _: Timestamp) -> Result<Lease, StoreError> {
        unimplemented!()
    }
    async fn release(&self, _: &Owner, _: &LeaseRef, _: Timestamp) -> Result<Lease, StoreError> {
        unimplemented!()
    }
    async fn delete(&self, _: &Owner, _: &LeaseRef) -> Result<Lease, StoreError> {
        unimplemented!()
    }
    async fn get(&self, _: &Owner, _: &LeaseRef) -> Result<Lease, StoreError> {
        unimplemented!()
    }
    async fn find(&self, _: &LeaseId) -> Result<Option<Lease>, StoreError> {
        unimplemented!()
    }
    async fn active_for_host(&self, _: &Host, _: Timestamp) -> Result<Option<Lease>, StoreError> {
        std::future::pending().await
    }
    async fn list(&self, _: &OwnerScope) -> Result<Vec<Lease>, StoreError> {
        unimplemented!()
    }
    async fn expire_stale(&self, _: Timestamp) -> Result<Vec<Lease>, StoreError> {
        unimplemented!()
    }
    async fn purge_tombstones(&self, _: Timestamp) -> Result<u64, StoreError> {
        unimplemented!()
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        std::future::pending().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        unimplemented!()
    }
}

#[tokio::test]
async fn a_stalled_store_gets_a_scrape_error_in_time_never_a_hang() {
    let metrics = Metrics::new();
    let service = LeaseService::new(
        Arc::new(StalledStore),
        Arc::new(MemoryRoutes::new()),
        Arc::new(mytunnel_edge::service::SystemClock),
        service_settings(
            "t.example".parse().unwrap(),
            PortRange::new(21000, 21009).unwrap(),
        ),
    )
    .with_metrics(metrics.clone());
    let limits = LoopbackHttpLimits {
        answer_within: Duration::from_millis(300),
        ..LoopbackHttpLimits::default()
    };
    let (scrapes, _stop_scrapes) = loopback(
        MetricsEndpoint::new(Arc::new(StalledStore), metrics.clone()),
        limits,
    )
    .await;
    let (asks, _stop_asks) = loopback(TlsAsk::new(service), limits).await;

    let started = Instant::now();
    let scrape = reqwest::get(format!("{scrapes}/metrics")).await.unwrap();
    assert_eq!(scrape.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ask = reqwest::get(format!("{asks}/ask?domain=portal.t.example"))
        .await
        .unwrap();
    assert_eq!(ask.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The ask that went unanswered counts as an error.
    let text = metrics.render(0).unwrap();
    let samples = Samples(parse_exposition(&text));
    assert_eq!(samples.get(ASK_ERROR), 1.0);
    assert_eq!(samples.get(ASK_YES) + samples.get(ASK_NO), 0.0);
}
