//! Prometheus metrics, with stable names and bounded `&'static str` labels. Pure: no I/O; the
//! HTTP server in `runtime::http` renders them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// The operator's metrics.
pub struct Metrics {
    pub registry: Registry,
    /// Reconcile passes by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Duration of reconcile passes, in seconds.
    pub reconcile_duration: Histogram,
    /// Remote fields put back to the spec's value after someone changed them outside Kubernetes.
    pub drift_corrections: Family<FieldLabels, Counter>,
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
        Metrics { registry, reconciles, reconcile_duration, drift_corrections }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A control-plane field name as a bounded label.
pub fn field_label(field: &str) -> &'static str {
    match field {
        "name" => "name",
        "display_name" => "display_name",
        "description" => "description",
        "tags" => "tags",
        "settings" => "settings",
        "execution_environment" => "execution_environment",
        "status" => "status",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_named_series() {
        let m = Metrics::default();
        m.reconciles.get_or_create(&ResultLabels { result: "ok" }).inc();
        m.drift_corrections.get_or_create(&FieldLabels { field: field_label("tags") }).inc();
        let text = m.render();
        assert!(text.contains("kubiya_operator_reconciles_total{result=\"ok\"} 1"), "{text}");
        assert!(text.contains("kubiya_operator_drift_corrections_total{field=\"tags\"} 1"), "{text}");
        assert!(text.contains("kubiya_operator_reconcile_duration_seconds_bucket"), "{text}");
    }
}
