//! The data plane's Prometheus metrics (`prometheus-client`), served by the admin listener's
//! `/metrics`. No label holds a key: requests are counted by API, stage, route template, method
//! and status class, key decisions by outcome only.
//!
//! Cost per request: every label set a request can need is made when the routing table is built
//! ([`RouteMetrics`] on each route), so serving a request only adds to atomics and observes two
//! histograms it already holds; nothing is hashed or allocated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Status classes a request is counted under (`1xx` is never answered).
const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Latency buckets in seconds: 50 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: String,
    stage: String,
    route: String,
    method: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    api: String,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

type Histograms = Family<StageLabels, Histogram, fn() -> Histogram>;

/// The gateway's metrics, registered once in the process's registry.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    overhead: Histograms,
    integration: Histograms,
    /// Requests no route took (unknown stage or path, method not allowed, preflights).
    unrouted: [Counter; 4],
    unrouted_overhead: Histogram,
    allowed: Counter,
    forbidden: Counter,
    throttled: Counter,
    quota_exceeded: Counter,
    /// Requests report-only routes let through that enforcement would refuse, by reason.
    would_refuse: Family<ReasonLabels, Counter>,
    refresh_failures: Counter,
    last_refresh: Gauge,
    table_version: Gauge,
}

/// What a request was decided on its key (a private route only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDecision {
    Allowed,
    Forbidden,
    Throttled,
    QuotaExceeded,
}

impl Metrics {
    /// The gateway's metrics, registered in `registry` under `keygate_`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let requests = Family::<RequestLabels, Counter>::default();
        let overhead = Histograms::new_with_constructor(histogram);
        let integration = Histograms::new_with_constructor(histogram);
        let decisions = Family::<DecisionLabels, Counter>::default();
        let unrouted = CLASSES.map(|status| {
            requests
                .get_or_create(&RequestLabels {
                    api: String::new(),
                    stage: String::new(),
                    route: String::new(),
                    method: String::new(),
                    status,
                })
                .clone()
        });
        let unrouted_overhead = overhead
            .get_or_create(&StageLabels { api: String::new(), stage: String::new() })
            .clone();
        let decision = |d| decisions.get_or_create(&DecisionLabels { decision: d }).clone();
        let metrics = Self {
            allowed: decision("allowed"),
            forbidden: decision("forbidden"),
            throttled: decision("throttled"),
            quota_exceeded: decision("quota_exceeded"),
            would_refuse: Family::default(),
            requests,
            overhead,
            integration,
            unrouted,
            unrouted_overhead,
            refresh_failures: Counter::default(),
            last_refresh: Gauge::default(),
            table_version: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("keygate");
        r.register(
            "requests",
            "Requests answered, by API, stage, route template, method and status class (empty \
             labels: no route took the request)",
            metrics.requests.clone(),
        );
        r.register(
            "gateway_duration_seconds",
            "Time keygate itself spent on a request: from its head to its answer, less the \
             integration's time",
            metrics.overhead.clone(),
        );
        r.register(
            "integration_duration_seconds",
            "Time the integration (function, HTTP upstream, mock) took to answer",
            metrics.integration.clone(),
        );
        r.register(
            "key_decisions",
            "Decisions on the API key of requests to private routes",
            decisions,
        );
        r.register(
            "would_refuse",
            "Requests to report-only routes (private: report) let through that the key check or \
             the usage plan would have refused, by the reason",
            metrics.would_refuse.clone(),
        );
        r.register(
            "store_refresh_failures",
            "Times the gateway could not read the store (it keeps serving its last table)",
            metrics.refresh_failures.clone(),
        );
        r.register(
            "store_last_refresh_timestamp_seconds",
            "When the gateway last read the store successfully (unix seconds)",
            metrics.last_refresh.clone(),
        );
        r.register(
            "table_version",
            "The store version of the routing table served",
            metrics.table_version.clone(),
        );
        Arc::new(metrics)
    }

    /// A registry of its own, for a gateway whose metrics nobody scrapes (tests, tools).
    pub fn unregistered() -> Arc<Self> {
        Self::register(&mut Registry::default())
    }

    /// The handles a route's requests are counted with.
    pub(crate) fn route(&self, api: &str, stage: &str, route: &str, method: &str) -> RouteMetrics {
        let requests = CLASSES.map(|status| {
            self.requests
                .get_or_create(&RequestLabels {
                    api: api.to_owned(),
                    stage: stage.to_owned(),
                    route: route.to_owned(),
                    method: method.to_owned(),
                    status,
                })
                .clone()
        });
        let labels = StageLabels { api: api.to_owned(), stage: stage.to_owned() };
        RouteMetrics {
            requests,
            overhead: self.overhead.get_or_create(&labels).clone(),
            integration: self.integration.get_or_create(&labels).clone(),
        }
    }

    /// Counts a request no route took.
    pub(crate) fn unrouted(&self, status: u16, took: Duration) {
        if let Some(c) = class(status).map(|i| &self.unrouted[i]) {
            c.inc();
        }
        self.unrouted_overhead.observe(took.as_secs_f64());
    }

    /// Counts a key decision.
    pub(crate) fn key_decision(&self, decision: KeyDecision) {
        match decision {
            KeyDecision::Allowed => &self.allowed,
            KeyDecision::Forbidden => &self.forbidden,
            KeyDecision::Throttled => &self.throttled,
            KeyDecision::QuotaExceeded => &self.quota_exceeded,
        }
        .inc();
    }

    /// Counts a request a report-only route let through that enforcement would refuse.
    pub(crate) fn would_refuse(&self, reason: &'static str) {
        self.would_refuse.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A refresh read the store at `now_unix_ms`, serving table `version`.
    pub(crate) fn refreshed(&self, now_unix_ms: i64, version: i64) {
        self.last_refresh.set(now_unix_ms / 1000);
        self.table_version.set(version);
    }

    /// A refresh could not read the store.
    pub(crate) fn refresh_failed(&self) {
        self.refresh_failures.inc();
    }
}

/// Log lines dropped because their writer could not keep up, read at each scrape:
/// `keygate_log_lines_dropped_total{log="access"}` (the access log's queue) and
/// `{log="other"}` (every other line, the function output included).
pub struct LogDrops {
    access: Option<Arc<AtomicU64>>,
    other: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for LogDrops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogDrops").finish_non_exhaustive()
    }
}

impl LogDrops {
    /// Registers the counters in `registry` under `keygate_`: `access` is the access log's
    /// (`None`: the log is off), `other` reads the other lines' count.
    pub fn register(
        registry: &mut Registry,
        access: Option<Arc<AtomicU64>>,
        other: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let drops = Self { access, other: Box::new(other) };
        registry.sub_registry_with_prefix("keygate").register_collector(Box::new(drops));
    }
}

impl Collector for LogDrops {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because their writer could not keep up (log=access: access-log \
             lines; log=other: every other line, function output included)",
            None,
            MetricType::Counter,
        )?;
        let access = self.access.as_ref().map_or(0, |a| a.load(Ordering::Relaxed));
        for (log, n) in [("access", access), ("other", (self.other)())] {
            ConstCounter::new(n).encode(family.encode_family(&[("log", log)])?)?;
        }
        Ok(())
    }
}

/// A shared limiter's figures (`--redis-url`), read at each scrape: `keygate_limiter_up`
/// (1 while Redis answers), `keygate_limiter_round_trips_total`, and
/// `keygate_limiter_fallback_total{policy="local|refuse"}` (requests decided by the policy while
/// Redis did not answer). Nothing without a shared limiter.
pub struct LimiterMetrics(Arc<dyn crate::limiter::Limiter>);

impl std::fmt::Debug for LimiterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LimiterMetrics").field(&self.0).finish()
    }
}

impl LimiterMetrics {
    /// Registers `limiter`'s figures in `registry` under `keygate_limiter_`.
    pub fn register(registry: &mut Registry, limiter: Arc<dyn crate::limiter::Limiter>) {
        registry.sub_registry_with_prefix("keygate").register_collector(Box::new(Self(limiter)));
    }
}

impl Collector for LimiterMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = self.0.stats() else { return Ok(()) };
        let up = encoder.encode_descriptor(
            "limiter_up",
            "1 while the shared limiter (Redis) answers, 0 while requests are decided by the \
             policy for when it does not",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(stats.up)).encode(up)?;
        let trips = encoder.encode_descriptor(
            "limiter_round_trips",
            "Round trips to the shared limiter (each decides a request or takes a lease)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(stats.round_trips).encode(trips)?;
        let mut family = encoder.encode_descriptor(
            "limiter_fallback",
            "Requests decided by the policy for when the shared limiter does not answer",
            None,
            MetricType::Counter,
        )?;
        for (policy, n) in [("local", stats.fallback_local), ("refuse", stats.fallback_refuse)] {
            ConstCounter::new(n).encode(family.encode_family(&[("policy", policy)])?)?;
        }
        Ok(())
    }
}

/// The function host's figures, read at each scrape (`FunctionHost::stats`), by
/// `function` (`AWS_LAMBDA_FUNCTION_NAME`): `keygate_function_processes`,
/// `keygate_function_busy_slots`, and the counters `keygate_function_invocations_total`,
/// `_errors_total`, `_timeouts_total`, `_cold_starts_total`.
#[derive(Debug)]
pub struct FunctionMetrics(keygate_functions::FunctionHost);

impl FunctionMetrics {
    /// Registers `host`'s figures in `registry` under `keygate_function_`.
    pub fn register(registry: &mut Registry, host: keygate_functions::FunctionHost) {
        registry.sub_registry_with_prefix("keygate").register_collector(Box::new(Self(host)));
    }
}

impl Collector for FunctionMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use keygate_functions::FunctionStats;
        let stats = self.0.stats();
        type Field = fn(&FunctionStats) -> u64;
        let gauges: [(&str, &str, Field); 2] = [
            ("function_processes", "Function processes running (warm or busy)", |s| s.processes),
            (
                "function_busy_slots",
                "Invocations holding a function slot (running, or starting their process)",
                |s| s.busy,
            ),
        ];
        let counters: [(&str, &str, Field); 4] = [
            ("function_invocations", "Function invocations answered, failed or timed out", |s| {
                s.invocations
            }),
            (
                "function_errors",
                "Function invocations that failed: handler error, crash, or a process that \
                 could not start (timeouts are counted apart)",
                |s| s.errors,
            ),
            ("function_timeouts", "Function invocations past their timeout", |s| s.timeouts),
            ("function_cold_starts", "Function processes started for an invocation", |s| {
                s.cold_starts
            }),
        ];
        for (name, help, field) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &stats {
                let labels = [("function", s.function.as_str())];
                let value = i64::try_from(field(s)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, field) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &stats {
                let labels = [("function", s.function.as_str())];
                ConstCounter::new(field(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

fn class(status: u16) -> Option<usize> {
    match status {
        200..=299 => Some(0),
        300..=399 => Some(1),
        400..=499 => Some(2),
        500..=599 => Some(3),
        _ => None,
    }
}

/// One route's counters and histograms, made when the table is built.
#[derive(Debug, Clone)]
pub(crate) struct RouteMetrics {
    requests: [Counter; 4],
    overhead: Histogram,
    integration: Histogram,
}

impl RouteMetrics {
    /// Counts one answer of the route: its status, keygate's own time and the integration's
    /// (`None`: refused before the integration ran).
    pub(crate) fn answered(&self, status: u16, total: Duration, integration: Option<Duration>) {
        if let Some(c) = class(status).map(|i| &self.requests[i]) {
            c.inc();
        }
        let spent = integration.map_or(total, |i| total.saturating_sub(i));
        self.overhead.observe(spent.as_secs_f64());
        if let Some(i) = integration {
            self.integration.observe(i.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_class_and_never_by_key() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let r = m.route("api1", "dev", "/candidates", "GET");
        r.answered(200, Duration::from_micros(300), Some(Duration::from_micros(200)));
        r.answered(403, Duration::from_micros(20), None);
        m.unrouted(403, Duration::from_micros(5));
        m.key_decision(KeyDecision::Allowed);
        m.key_decision(KeyDecision::Forbidden);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains(r#"keygate_requests_total{api="api1",stage="dev",route="/candidates",method="GET",status="2xx"} 1"#), "{out}");
        assert!(out.contains(r#"keygate_requests_total{api="api1",stage="dev",route="/candidates",method="GET",status="4xx"} 1"#), "{out}");
        assert!(
            out.contains(
                r#"keygate_requests_total{api="",stage="",route="",method="",status="4xx"} 1"#
            ),
            "{out}"
        );
        assert!(out.contains(r#"keygate_key_decisions_total{decision="forbidden"} 1"#), "{out}");
        assert!(
            out.contains(r#"keygate_integration_duration_seconds_count{api="api1",stage="dev"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"keygate_gateway_duration_seconds_count{api="api1",stage="dev"} 2"#),
            "{out}"
        );
    }

    #[test]
    fn dropped_log_lines_are_read_at_each_scrape() {
        let mut registry = Registry::default();
        let access = Arc::new(AtomicU64::new(0));
        LogDrops::register(&mut registry, Some(Arc::clone(&access)), || 7);
        access.store(3, Ordering::Relaxed);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("# TYPE keygate_log_lines_dropped counter"), "{out}");
        assert!(out.contains(r#"keygate_log_lines_dropped_total{log="access"} 3"#), "{out}");
        assert!(out.contains(r#"keygate_log_lines_dropped_total{log="other"} 7"#), "{out}");
    }
}
