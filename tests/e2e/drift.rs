//! Changes made in the control plane behind the operator's back: an edited environment is put back
//! in one PATCH (reported and counted), nothing is written while in sync, and one deleted out of
//! band is created again on a reconcile request.

use kube::api::DeleteParams;
use kubiya_operator::resource::EnvironmentSpec;
use serde_json::json;

use crate::support::{TestBed, id_of, is_ready, ready_now, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_corrected_in_one_patch_reported_and_counted_and_nothing_is_written_in_sync() {
    let mut bed = TestBed::without_operator("drift", ready_now()).await;
    bed.operator_env.push(("KUBIYA_RESYNC_INTERVAL", "300ms".into()));
    bed.start_operator();
    bed.create(
        "web",
        EnvironmentSpec {
            description: Some("declared".into()),
            tags: vec!["a".into()],
            ..Default::default()
        },
    )
    .await;
    let env = bed.wait_for("web", "Ready", is_ready).await;
    let id = id_of(&env);

    // In sync: periodic checks read, and write nothing (no PATCH, no status write).
    let gets_before = bed.calls("GET /api/v1/environments/{id}");
    let patches_before = bed.calls("PATCH /api/v1/environments/{id}");
    wait_until("three periodic checks", || async {
        bed.calls("GET /api/v1/environments/{id}") >= gets_before + 3
    })
    .await;
    assert_eq!(bed.calls("PATCH /api/v1/environments/{id}"), patches_before);
    let now = bed.envs.get("web").await.unwrap();
    assert_eq!(now.metadata.resource_version, env.metadata.resource_version, "no status write while in sync");

    // Someone edits the environment in the control plane.
    let (code, _) = bed
        .cp(
            "PATCH",
            &format!("/api/v1/environments/{id}"),
            Some(json!({"description": "by hand", "tags": ["x"]})),
        )
        .await;
    assert_eq!(code, 200);
    let note = bed.wait_event("web", "DriftCorrected").await;
    assert!(note.contains("description") && note.contains("tags"), "{note}");
    let remote = bed.remote_named("web").unwrap();
    assert_eq!(remote["description"], "declared");
    assert_eq!(remote["tags"], json!(["a"]));
    let metrics = bed.metrics().await;
    assert!(
        metrics.contains("kubiya_operator_drift_corrections_total{field=\"description\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kubiya_operator_drift_corrections_total{field=\"tags\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_deleted_out_of_band_is_recreated_on_a_reconcile_request() {
    let bed = TestBed::start("recreate", ready_now()).await;
    bed.create("phoenix", EnvironmentSpec::default()).await;
    let env = bed.wait_for("phoenix", "Ready", is_ready).await;
    let old = id_of(&env);
    let (code, _) = bed.cp("DELETE", &format!("/api/v1/environments/{old}"), None).await;
    assert_eq!(code, 204);

    bed.annotate("phoenix", "kubiya.ai/reconcile-requested-at", Some("2026-11-28T12:00:00Z")).await;
    let env = bed
        .wait_for("phoenix", "Ready with a new id", move |e| {
            is_ready(e)
                && e.status.as_ref().and_then(|s| s.environment_id.as_deref()) != Some(old.as_str())
                && e.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref())
                    == Some("2026-11-28T12:00:00Z")
        })
        .await;
    assert_eq!(bed.remote().iter().filter(|e| e["name"] == "phoenix").count(), 1);
    assert_eq!(bed.remote_named("phoenix").unwrap()["id"].as_str(), Some(id_of(&env).as_str()));
    bed.wait_event("phoenix", "Recreating").await;

    // Deleting a resource whose remote environment is already gone does not block.
    let (code, _) = bed.cp("DELETE", &format!("/api/v1/environments/{}", id_of(&env)), None).await;
    assert_eq!(code, 204);
    bed.envs.delete("phoenix", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("phoenix").await;
}
