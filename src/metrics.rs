//! Prometheus metrics (`GET /metrics`, text format), process-wide. No user data in labels:
//! only route names, status classes, fixed reasons and endpoint names. Per-route request
//! counters are created once at start, so counting a request is one atomic add, no lock.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
    upstream_seconds: Histogram,
}

impl RouteMetrics {
    pub fn count(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
    }

    pub fn observe_upstream(&self, elapsed: Duration) {
        self.upstream_seconds.observe(elapsed.as_secs_f64());
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    upstream_seconds: Family<RouteLabel, Histogram>,
    logins: Family<LoginLabels, Counter>,
    refreshes: Family<ResultLabel, Counter>,
    idp_seconds: Family<EndpointLabel, Histogram>,
    store_errors: Counter,
    sessions_active: Gauge,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
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
        let upstream_seconds = Family::<RouteLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
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
        let idp_seconds = Family::<EndpointLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
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
            .observe(elapsed.as_secs_f64());
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
}
