//! Prometheus metrics (`GET /metrics`, text format), process-wide. No user data in labels:
//! only route names, status classes, fixed reasons and endpoint names. Per-route request
//! counters and latency histograms are created once at start, so counting a request is one
//! atomic add and timing it two (`LatencyHistogram`), no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// A latency histogram with fixed buckets and no lock: one `AtomicU64` per bucket and the
/// sum in nanoseconds, all `Relaxed` (each is a counter on its own; nothing is published
/// through them). prometheus-client's `Histogram` takes a write lock on every `observe`,
/// which every proxied request would contend on.
///
/// The exposition is the one prometheus-client's `Histogram` gives for the same
/// observations: `_sum` in seconds, `_count`, cumulative `_bucket{le=...}` up to `+Inf`.
/// `_count` is the sum of the buckets as read by the scrape, so it always equals the
/// `+Inf` bucket (a separate count atomic could be read one observation apart from them).
/// A scrape racing an observation may see the sum without that observation's bucket or
/// the other way round; the next scrape has both.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds in seconds, ascending; the last is `f64::MAX`, which the text encoder
    /// writes as `+Inf` (as for prometheus-client's own histogram).
    bounds: Box<[f64]>,
    /// Per bucket, not cumulative: an observation counts in the first bucket whose bound
    /// is at least its value.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// `bounds`: the finite upper bounds in seconds, ascending (`+Inf` is added).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Box<[f64]> = bounds
            .into_iter()
            .chain(std::iter::once(f64::MAX))
            .collect();
        let buckets = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        LatencyHistogram {
            inner: Arc::new(HistogramInner {
                bounds,
                buckets,
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let inner = &*self.inner;
        let seconds = elapsed.as_secs_f64();
        // The first bound >= the value; the `f64::MAX` bound takes anything finite.
        let i = inner
            .bounds
            .partition_point(|bound| *bound < seconds)
            .min(inner.buckets.len() - 1);
        inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// `(sum in seconds, count, per-bucket counts)`, as the encoder takes them.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .zip(inner.buckets.iter())
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = Duration::from_nanos(inner.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        (sum, count, buckets)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    result: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

/// Counters and histograms for one route, fetched once.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    /// 1xx..5xx.
    by_class: [Counter; 5],
    upstream_seconds: LatencyHistogram,
}

impl RouteMetrics {
    pub fn count(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
    }

    pub fn observe_upstream(&self, elapsed: Duration) {
        self.upstream_seconds.observe(elapsed);
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    upstream_seconds: Family<RouteLabel, LatencyHistogram>,
    logins: Family<LoginLabels, Counter>,
    refreshes: Family<ResultLabel, Counter>,
    idp_seconds: Family<EndpointLabel, LatencyHistogram>,
    store_errors: Counter,
    sessions_active: Gauge,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn latency_histogram() -> LatencyHistogram {
    // 0.5 ms .. ~16 s
    LatencyHistogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests served, by route and status class",
            requests.clone(),
        );
        let upstream_seconds = Family::<RouteLabel, LatencyHistogram>::new_with_constructor(
            latency_histogram as fn() -> LatencyHistogram,
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from forwarding a request to the upstream's response headers",
            upstream_seconds.clone(),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "logins",
            "Logins started, completed and failed (by reason)",
            logins.clone(),
        );
        let refreshes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "refreshes",
            "Access token refreshes at the IdP, by result",
            refreshes.clone(),
        );
        let idp_seconds = Family::<EndpointLabel, LatencyHistogram>::new_with_constructor(
            latency_histogram as fn() -> LatencyHistogram,
        );
        registry.register(
            "idp_request_duration_seconds",
            "Latency of calls to the identity provider, by endpoint",
            idp_seconds.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "session_store_errors",
            "Session store operations that failed",
            store_errors.clone(),
        );
        let sessions_active = Gauge::default();
        registry.register(
            "sessions_active",
            "Sessions held by the in-memory store",
            sessions_active.clone(),
        );
        Metrics {
            registry,
            requests,
            upstream_seconds,
            logins,
            refreshes,
            idp_seconds,
            store_errors,
            sessions_active,
        }
    }

    /// The counters of one route (or pseudo-route such as "oauth2"), created on first use.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let by_class = CLASSES.map(|class| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.to_string(),
                    class,
                })
                .clone()
        });
        let upstream_seconds = self
            .upstream_seconds
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .clone();
        RouteMetrics {
            by_class,
            upstream_seconds,
        }
    }

    pub fn login(&self, result: &'static str, reason: &'static str) {
        self.logins
            .get_or_create(&LoginLabels { result, reason })
            .inc();
    }

    pub fn refresh(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.refreshes.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn idp_call(&self, endpoint: &'static str, elapsed: Duration) {
        self.idp_seconds
            .get_or_create(&EndpointLabel { endpoint })
            .observe(elapsed);
    }

    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// The exposition text; `sessions` is the memory store's count, if known.
    pub fn render(&self, sessions: Option<u64>) -> String {
        if let Some(n) = sessions {
            self.sessions_active
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_exposition() {
        let m = get();
        m.route("route[9]").count(204);
        // A label no other test uses: the registry is process-wide and in-process login
        // tests count real logins in it.
        m.login("completed", "metrics_test");
        let text = m.render(Some(3));
        assert!(
            text.contains("portcullis_requests_total{route=\"route[9]\",class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "portcullis_logins_total{result=\"completed\",reason=\"metrics_test\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("portcullis_sessions_active 3"));
        assert!(text.ends_with("# EOF\n"));
    }

    /// The exposition of one histogram family registered as `Metrics::new` does.
    fn exposition<M>(family: Family<RouteLabel, M, fn() -> M>) -> String
    where
        M: EncodeMetric + TypedMetric + Clone + std::fmt::Debug + Send + Sync + 'static,
    {
        let mut registry = Registry::with_prefix("portcullis");
        registry.register(
            "upstream_duration_seconds",
            "Time from forwarding a request to the upstream's response headers",
            family,
        );
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    /// Observations in the first bucket, on a bound, between bounds and past the last
    /// bound. (One label set: a family writes its label sets in hash order.)
    const OBSERVATIONS: [Duration; 4] = [
        Duration::from_micros(200),
        Duration::from_millis(4),
        Duration::from_millis(3),
        Duration::from_secs(20),
    ];

    /// What prometheus-client's own `Histogram` (behind a lock) wrote for `OBSERVATIONS`
    /// before `LatencyHistogram` replaced it: the same names, labels, bounds and counts.
    const OLD_TEXT: &str = "\
# HELP portcullis_upstream_duration_seconds Time from forwarding a request to the upstream's response headers.
# TYPE portcullis_upstream_duration_seconds histogram
portcullis_upstream_duration_seconds_sum{route=\"app\"} 20.0072
portcullis_upstream_duration_seconds_count{route=\"app\"} 4
portcullis_upstream_duration_seconds_bucket{le=\"0.0005\",route=\"app\"} 1
portcullis_upstream_duration_seconds_bucket{le=\"0.001\",route=\"app\"} 1
portcullis_upstream_duration_seconds_bucket{le=\"0.002\",route=\"app\"} 1
portcullis_upstream_duration_seconds_bucket{le=\"0.004\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"0.008\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"0.016\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"0.032\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"0.064\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"0.128\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"0.256\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"0.512\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"1.024\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"2.048\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"4.096\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"8.192\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"16.384\",route=\"app\"} 3
portcullis_upstream_duration_seconds_bucket{le=\"+Inf\",route=\"app\"} 4
# EOF
";

    #[test]
    fn the_lock_free_histogram_writes_what_prometheus_clients_histogram_wrote() {
        let new = Family::<RouteLabel, LatencyHistogram>::new_with_constructor(
            latency_histogram as fn() -> LatencyHistogram,
        );
        let old = Family::<RouteLabel, prometheus_client::metrics::histogram::Histogram>::new_with_constructor(
            (|| prometheus_client::metrics::histogram::Histogram::new(exponential_buckets(0.0005, 2.0, 16)))
                as fn() -> prometheus_client::metrics::histogram::Histogram,
        );
        let label = RouteLabel {
            route: "app".to_string(),
        };
        for elapsed in OBSERVATIONS {
            new.get_or_create(&label).observe(elapsed);
            old.get_or_create(&label).observe(elapsed.as_secs_f64());
        }
        let old_text = exposition(old);
        assert_eq!(old_text, OLD_TEXT, "the old histogram's text changed");
        assert_eq!(exposition(new), OLD_TEXT);
    }

    #[test]
    fn concurrent_observations_all_count() {
        const THREADS: u64 = 8;
        const EACH: u64 = 20_000;
        // Spread over the buckets, 0.1 ms .. ~33 s.
        let value = |n: u64| Duration::from_micros(100 << (n % 19));
        let shared = latency_histogram();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let h = shared.clone();
                scope.spawn(move || {
                    for i in 0..EACH {
                        h.observe(value(t * EACH + i));
                    }
                });
            }
        });
        let serial = latency_histogram();
        let mut nanos = 0u64;
        for n in 0..THREADS * EACH {
            serial.observe(value(n));
            nanos += u64::try_from(value(n).as_nanos()).unwrap();
        }
        let (sum, count, buckets) = shared.snapshot();
        assert_eq!(count, THREADS * EACH);
        assert_eq!(shared.inner.sum_nanos.load(Ordering::Relaxed), nanos);
        assert_eq!(sum, Duration::from_nanos(nanos).as_secs_f64());
        assert_eq!(buckets, serial.snapshot().2);
        // Only 100 µs << 18 (26 s) is past the last bound (16.384 s).
        let past_the_last = (0..THREADS * EACH).filter(|n| n % 19 == 18).count() as u64;
        assert_eq!(buckets.last(), Some(&(f64::MAX, past_the_last)));
    }
}
