//! Prometheus metrics, with stable names and bounded `&'static str` labels. Pure: no I/O; the
//! HTTP server in `runtime::http` renders them.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::resource::Phase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok`, or the error's metric label.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabels {
    /// A control-plane field name (`description`, `tags`, ...).
    pub field: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The connection: `operator`, `Connection/<namespace>/<name>` or `ClusterConnection/<name>`.
    pub connection: String,
    /// The route template, `/api/v1/environments/{id}`: never an id.
    pub route: &'static str,
    pub method: &'static str,
    /// The HTTP status code, or `transport` when no answer came (connection error, timeout).
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub connection: String,
    pub route: &'static str,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// Counts objects of a kind by phase at scrape time, from what the caller's closure returns (the
/// controller's caches), so the gauge never drifts from the objects.
pub struct PhaseCounts {
    /// The gauge's name (`environments`, `worker_queues`) and help.
    pub name: &'static str,
    pub help: &'static str,
    pub phases: Box<dyn Fn() -> Vec<Option<Phase>> + Send + Sync>,
}

impl std::fmt::Debug for PhaseCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PhaseCounts")
    }
}

impl Collector for PhaseCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<PhaseLabels, Gauge>::default();
        // Every phase, at zero when empty: a series that vanishes reads as "no data", not 0.
        for phase in Phase::ALL {
            let _ = family.get_or_create(&PhaseLabels { phase: phase.as_str() });
        }
        for phase in (self.phases)() {
            // An object not reconciled yet has no phase: it is pending.
            let phase = phase.unwrap_or(Phase::Pending);
            family.get_or_create(&PhaseLabels { phase: phase.as_str() }).inc();
        }
        let metric = encoder.encode_descriptor(self.name, self.help, None, family.metric_type())?;
        family.encode(metric)
    }
}

/// The operator's metrics.
pub struct Metrics {
    pub registry: Registry,
    /// Reconcile passes by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Duration of reconcile passes, in seconds.
    pub reconcile_duration: Histogram,
    /// Remote fields put back to the spec's value after someone changed them outside Kubernetes.
    pub drift_corrections: Family<FieldLabels, Counter>,
    /// Remote fields found to differ from the spec of an observed (not managed) Environment.
    pub drift_observed: Family<FieldLabels, Counter>,
    /// Control-plane requests (each attempt) by route, method and status code.
    pub cp_requests: Family<RequestLabels, Counter>,
    /// Control-plane request latency until the whole answer is in, in seconds.
    pub cp_request_duration: Family<RouteLabels, Histogram>,
    /// From an Environment's creation, or from when it left Ready, to Ready.
    pub time_to_ready: Histogram,
    /// 1 while this replica holds the Lease and reconciles.
    pub leader: Gauge,
    /// WorkerQueue reconcile passes by result.
    pub queue_reconciles: Family<ResultLabels, Counter>,
    /// Duration of WorkerQueue reconcile passes, in seconds.
    pub queue_reconcile_duration: Histogram,
    /// Objects this process keeps per-object state for (backoff, recorded ids): it must fall back
    /// when objects go.
    pub tracked_objects: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kubiya_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register("reconciles", "Reconcile passes by result", reconciles.clone());
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes",
            reconcile_duration.clone(),
        );
        let drift_corrections = Family::<FieldLabels, Counter>::default();
        registry.register(
            "drift_corrections",
            "Remote fields corrected back to the spec after an out-of-band change",
            drift_corrections.clone(),
        );
        let drift_observed = Family::<FieldLabels, Counter>::default();
        registry.register(
            "drift_observed",
            "Remote fields found to differ from the spec of an Environment with managementPolicy Observe (reported, not corrected)",
            drift_observed.clone(),
        );
        let cp_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "control_plane_requests",
            "Control-plane HTTP requests by route, method and status code (`transport`: no answer)",
            cp_requests.clone(),
        );
        let cp_request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 12))) as fn() -> Histogram,
        );
        registry.register(
            "control_plane_request_duration_seconds",
            "Control-plane request latency, until the whole answer is in",
            cp_request_duration.clone(),
        );
        let time_to_ready = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "time_to_ready_seconds",
            "From an Environment's creation, or from leaving Ready (Provisioning, Error), back to Ready",
            time_to_ready.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the Lease and reconciles", leader.clone());
        let queue_reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "worker_queue_reconciles",
            "WorkerQueue reconcile passes by result",
            queue_reconciles.clone(),
        );
        let queue_reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "worker_queue_reconcile_duration_seconds",
            "Duration of WorkerQueue reconcile passes",
            queue_reconcile_duration.clone(),
        );
        let tracked_objects = Gauge::default();
        registry.register(
            "tracked_objects",
            "Environments this process keeps per-object state for (backoff, recorded remote ids)",
            tracked_objects.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            drift_corrections,
            drift_observed,
            cp_requests,
            cp_request_duration,
            time_to_ready,
            leader,
            queue_reconciles,
            queue_reconcile_duration,
            tracked_objects,
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Adds a by-phase gauge, read from its closure at each scrape.
    pub fn count_phases(&mut self, phases: PhaseCounts) {
        self.registry.register_collector(Box::new(phases));
    }

    /// Records one control-plane request: `code` is the HTTP status, `None` when none came.
    pub fn cp_request(
        &self,
        connection: &str,
        route: &'static str,
        method: &'static str,
        code: Option<u16>,
        took: Duration,
    ) {
        let code = code.map_or_else(|| "transport".to_owned(), |c| c.to_string());
        let connection = connection.to_owned();
        self.cp_requests
            .get_or_create(&RequestLabels { connection: connection.clone(), route, method, code })
            .inc();
        self.cp_request_duration
            .get_or_create(&RouteLabels { connection, route, method })
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_named_series() {
        let m = Metrics::default();
        m.reconciles.get_or_create(&ResultLabels { result: "ok" }).inc();
        m.drift_corrections.get_or_create(&FieldLabels { field: "tags" }).inc();
        m.cp_request("operator", "/api/v1/environments/{id}", "GET", Some(404), Duration::from_millis(3));
        m.cp_request("operator", "/api/v1/environments", "POST", None, Duration::from_millis(3));
        let mut m = m;
        m.count_phases(PhaseCounts {
            name: "environments",
            help: "Environments",
            phases: Box::new(|| vec![Some(Phase::Ready), None, Some(Phase::Ready)]),
        });
        m.count_phases(PhaseCounts {
            name: "worker_queues",
            help: "WorkerQueues",
            phases: Box::new(|| vec![Some(Phase::Inactive)]),
        });
        let text = m.render();
        assert!(text.contains("kubiya_operator_environments{phase=\"Ready\"} 2"), "{text}");
        assert!(text.contains("kubiya_operator_environments{phase=\"Pending\"} 1"), "{text}");
        assert!(text.contains("kubiya_operator_environments{phase=\"Error\"} 0"), "{text}");
        assert!(text.contains("kubiya_operator_worker_queues{phase=\"Inactive\"} 1"), "{text}");
        assert!(text.contains("kubiya_operator_worker_queues{phase=\"Ready\"} 0"), "{text}");
        assert!(
            text.contains("kubiya_operator_control_plane_requests_total{connection=\"operator\",route=\"/api/v1/environments/{id}\",method=\"GET\",code=\"404\"} 1"),
            "{text}"
        );
        assert!(text.contains("code=\"transport\"} 1"), "{text}");
        assert!(text.contains("kubiya_operator_control_plane_request_duration_seconds_count{"), "{text}");
        assert!(text.contains("kubiya_operator_leader 0"), "{text}");
        assert!(text.contains("kubiya_operator_reconciles_total{result=\"ok\"} 1"), "{text}");
        assert!(text.contains("kubiya_operator_drift_corrections_total{field=\"tags\"} 1"), "{text}");
        assert!(text.contains("kubiya_operator_reconcile_duration_seconds_bucket"), "{text}");
    }
}
