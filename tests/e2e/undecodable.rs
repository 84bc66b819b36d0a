//! An Environment the operator cannot decode (nested deeper than serde_json's recursion limit,
//! which the API server accepts), or will not read (a spec over 256 KiB): reported where a status
//! can carry it, never stopping the others, across a restart; and it can be deleted.

use kube::api::{DeleteParams, Patch, PatchParams};
use kubiya_operator::resource::{EnvironmentSpec, MAX_SPEC_BYTES};
use serde_json::{Value, json};

use crate::support::{TestBed, is_ready, metric_sum, ready_now, stalled_with, wait_until};

/// `settings` nested `depth` levels deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!({ "a": inner }))
}

/// Creates an Environment from raw JSON without decoding the answer (kube's client decodes with
/// serde_json's recursion limit, which is the very thing under test).
async fn create_raw(bed: &TestBed, body: &Value) {
    let uri = format!("/apis/kubiya.ai/v1alpha1/namespaces/{}/environments", bed.namespace);
    let request = http::Request::post(uri)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .unwrap();
    bed.client.request_text(request).await.expect("the API server accepts the object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_nested_too_deep_to_decode_never_stops_the_others_across_a_restart() {
    const OTHERS: usize = 100;
    let mut bed = TestBed::start("deep", ready_now()).await;
    let deep = json!({
        "apiVersion": "kubiya.ai/v1alpha1", "kind": "Environment",
        "metadata": {"name": "deep"}, "spec": {"settings": nested(200)},
    });
    create_raw(&bed, &deep).await;
    for i in 0..OTHERS {
        bed.create(&format!("ok-{i:03}"), EnvironmentSpec::default()).await;
    }
    for i in 0..OTHERS {
        bed.wait_for(&format!("ok-{i:03}"), "Ready", is_ready).await;
    }
    // The bad one is reported, where a merge patch of status can carry it (read back raw).
    let stalled = || async {
        let uri = format!("/apis/kubiya.ai/v1alpha1/namespaces/{}/environments/deep", bed.namespace);
        let text = bed.client.request_text(http::Request::get(uri).body(Vec::new()).unwrap()).await.unwrap();
        text.contains("\"reason\":\"InvalidSpec\"") && text.contains("recursion limit exceeded")
    };
    wait_until("the undecodable Environment to be Stalled InvalidSpec", stalled).await;
    let note = bed.wait_event("deep", "InvalidSpec").await;
    assert!(note.contains("cannot be decoded"), "{note}");

    // Across a restart: the caches sync, everything else is still reconciled, deletions work.
    let _ = bed.terminate_operator().await;
    bed.start_operator();
    wait_until("/readyz after the restart", || async {
        crate::support::try_http_get(&bed.log, "/readyz").await.as_deref() == Some("ok: leading")
    })
    .await;
    bed.envs.delete("ok-000", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("ok-000").await;
    assert!(bed.remote_named("ok-000").is_none(), "deleted remotely");
    bed.create("after", EnvironmentSpec::default()).await;
    bed.wait_for("after", "Ready", is_ready).await;
    // The phase gauge is read from the caches, which follow the API server by a watch event: wait
    // for it rather than read it once.
    let ready = || async {
        metric_sum(&bed.metrics().await, "kubiya_operator_environments{phase=\"Ready\"}") == OTHERS as f64
    };
    wait_until("the Ready gauge to count 99 left and the new one", ready).await;

    // And the undecodable one can be deleted.
    bed.envs.delete("deep", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("deep").await;
    assert!(bed.operator_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_too_large_to_read_is_stalled_creates_nothing_and_goes_on_once_smaller() {
    let bed = TestBed::start("huge", ready_now()).await;
    // Well within what the API server stores (etcd: 1.5 MiB), over what the operator reads.
    let blob = "x".repeat(MAX_SPEC_BYTES + 1024);
    let settings = json!({ "blob": blob }).as_object().cloned();
    bed.create("huge", EnvironmentSpec { settings, ..Default::default() }).await;
    bed.create("small", EnvironmentSpec::default()).await;
    bed.wait_for("small", "Ready", is_ready).await;
    let huge = bed.wait_for("huge", "Stalled InvalidSpec", stalled_with("InvalidSpec")).await;
    let message = huge.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("KiB of JSON, over the 256 KiB the operator reads"), "{message}");
    let note = bed.wait_event("huge", "InvalidSpec").await;
    assert!(note.contains("fix or delete it"), "{note}");
    assert!(bed.remote_named("huge").is_none(), "nothing created for a spec the operator did not read");

    // Made smaller, it is read, created and Ready, with no restart.
    let smaller = json!({"spec": {"settings": {"blob": "small"}}});
    bed.envs.patch("huge", &PatchParams::default(), &Patch::Merge(&smaller)).await.unwrap();
    bed.wait_for("huge", "Ready", is_ready).await;
    assert_eq!(bed.remote_named("huge").map(|e| e["settings"]["blob"].clone()), Some(json!("small")));
}
