//! `/metrics` during an end-to-end run: the named series move, and the shipped dashboard and
//! alerts query only series the operator exports.

use std::collections::BTreeSet;
use std::time::Duration;

use kubiya_cp_emulator::Config as EmulatorConfig;
use kubiya_operator::resource::EnvironmentSpec;
use serde_json::json;

use crate::support::{TestBed, is_ready, metric_sum, try_http_get, wait_until};

/// The metric names of the samples in a scrape.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect()
}

/// The `kubiya_operator_*` names a dashboard or rule file queries.
fn queried_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("kubiya_operator_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_named_series_move_and_the_dashboard_and_alerts_use_only_exported_ones() {
    let emulator = EmulatorConfig { provisioning: Duration::from_millis(500), ..EmulatorConfig::default() };
    let mut bed = TestBed::without_operator("metrics", emulator).await;
    bed.operator_env.push(("KUBIYA_RESYNC_INTERVAL", "300ms".into()));
    bed.operator_env.push(("KUBIYA_LOG_FORMAT", "json".into()));
    bed.start_operator();
    wait_until("the operator to lead", || async {
        try_http_get(&bed.log, "/metrics").await.is_some_and(|m| m.contains("kubiya_operator_leader 1"))
    })
    .await;
    let before = bed.metrics().await;

    for name in ["m-1", "m-2", "m-3"] {
        bed.create(name, EnvironmentSpec::default()).await;
    }
    for name in ["m-1", "m-2", "m-3"] {
        bed.wait_for(name, "Ready", is_ready).await;
    }
    let id = bed.remote_named("m-1").expect("m-1")["id"].as_str().expect("id").to_owned();
    let (code, _) =
        bed.cp("PATCH", &format!("/api/v1/environments/{id}"), Some(json!({"description": "by hand"}))).await;
    assert_eq!(code, 200);
    // The phase gauge is read from the caches, one watch event behind the API server: wait for it too.
    wait_until("the drift to be corrected and the Ready gauge to count 3", || async {
        let metrics = bed.metrics().await;
        metric_sum(&metrics, "kubiya_operator_drift_corrections_total{field=\"description\"}") >= 1.0
            && metric_sum(&metrics, "kubiya_operator_environments{phase=\"Ready\"}") == 3.0
    })
    .await;
    let after = bed.metrics().await;

    let moved = |series: &str, by: f64| {
        let (b, a) = (metric_sum(&before, series), metric_sum(&after, series));
        assert!(a - b >= by, "{series} went from {b} to {a}, expected +{by}\n{after}");
    };
    moved("kubiya_operator_reconciles_total{result=\"ok\"}", 3.0);
    moved("kubiya_operator_reconcile_duration_seconds_count", 3.0);
    moved(
        "kubiya_operator_control_plane_requests_total{connection=\"operator\",route=\"/api/v1/environments\",method=\"POST\",code=\"201\"}",
        3.0,
    );
    moved(
        "kubiya_operator_control_plane_request_duration_seconds_count{connection=\"operator\",route=\"/api/v1/environments\",method=\"POST\"}",
        3.0,
    );
    moved(
        "kubiya_operator_control_plane_requests_total{connection=\"operator\",route=\"/api/v1/environments/{id}\",method=\"PATCH\",code=\"200\"}",
        1.0,
    );
    moved("kubiya_operator_time_to_ready_seconds_count", 3.0);
    moved("kubiya_operator_drift_corrections_total{field=\"description\"}", 1.0);
    assert_eq!(metric_sum(&after, "kubiya_operator_environments{phase=\"Ready\"}"), 3.0, "{after}");
    assert_eq!(metric_sum(&after, "kubiya_operator_leader "), 1.0);

    // JSON logs: every line, and every line of a reconcile says which Environment it is about.
    let log = bed.operator_log();
    let mut reconcile_lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let spans = v["spans"].as_array().cloned().unwrap_or_default();
        if let Some(span) = spans.iter().find(|s| s["name"] == "reconcile") {
            reconcile_lines += 1;
            assert_eq!(span["namespace"], bed.namespace.as_str(), "{line}");
            assert!(span["environment"].as_str().is_some_and(|n| n.starts_with("m-")), "{line}");
            // serde_json keeps the last of duplicate keys: the span's own name must survive.
            assert!(!line.contains(r#""name":"m-"#), "a field named `name` shadows the span name: {line}");
        }
    }
    assert!(reconcile_lines > 0, "no log line of a reconcile:\n{log}");

    let exported = sample_names(&after);
    let root = env!("CARGO_MANIFEST_DIR");
    for file in [
        "deploy/helm/kubiya-operator/dashboards/kubiya-operator.json",
        "deploy/helm/kubiya-operator/templates/prometheusrule.yaml",
        "deploy/kustomize/monitoring/prometheusrule.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).expect("read");
        let queried = queried_names(&text);
        assert!(!queried.is_empty(), "{file} queries nothing");
        let unknown: Vec<_> = queried.difference(&exported).collect();
        assert!(unknown.is_empty(), "{file} queries series the operator does not export: {unknown:?}");
    }
}
