//! `kubiya.ai/paused`: nothing is written to the control plane until it is lifted, edits and
//! deletions included; a paused deletion holds the finalizer, and the Orphan annotation ends it
//! without a write.

use kube::api::{DeleteParams, Patch, PatchParams};
use kubiya_operator::resource::{EnvironmentSpec, Phase};
use serde_json::json;

use crate::support::health::assert_health;
use crate::support::{TestBed, id_of, is_ready, message, phase, ready_now};

/// The control plane's writes so far: creates, updates and deletions.
fn remote_writes(bed: &TestBed) -> u64 {
    bed.calls("POST /api/v1/environments")
        + bed.calls("PATCH /api/v1/environments/{id}")
        + bed.calls("DELETE /api/v1/environments/{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_remote_writes_until_lifted() {
    let bed = TestBed::start("pause", ready_now()).await;
    bed.create("quiet", EnvironmentSpec { description: Some("one".into()), ..Default::default() }).await;
    let before = bed.wait_for("quiet", "Ready", is_ready).await;

    bed.annotate("quiet", "kubiya.ai/paused", Some("true")).await;
    bed.wait_for("quiet", "paused", |e| {
        e.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Reconciling" && c.reason == "Paused"))
    })
    .await;
    // The edit comes with a reconcile request, in the same write: every pass echoes the request
    // in status (a paused one too), so the echo shows that a pass has seen the edit.
    let patch = json!({
        "metadata": {"annotations": {"kubiya.ai/reconcile-requested-at": "edit"}},
        "spec": {"description": "two"},
    });
    let edited = bed.envs.patch("quiet", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let generation = edited.metadata.generation;
    // That pass writes nothing to the control plane, and no new observedGeneration.
    let env = bed
        .wait_for("quiet", "the edit seen by a pass", |e| {
            e.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some("edit")
        })
        .await;
    assert_eq!(env.metadata.generation, generation, "the echo came with the edit");
    assert_eq!(env.status.as_ref().and_then(|s| s.observed_generation), before.metadata.generation);
    assert!(env.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default().contains("paused"));
    let (argo, _) = crate::support::health::argo(&env);
    assert_eq!(argo, "Suspended");
    assert_eq!(crate::support::health::kstatus(&env), "InProgress", "a paused change is not applied");
    assert_eq!(bed.remote_named("quiet").unwrap()["description"], "one", "nothing written while paused");
    assert_eq!(bed.emulator.calls().get("PATCH /api/v1/environments/{id}"), None);

    bed.annotate("quiet", "kubiya.ai/paused", None).await;
    let env = bed
        .wait_for("quiet", "Ready at the new generation", move |e| {
            is_ready(e) && e.status.as_ref().and_then(|s| s.observed_generation) == generation
        })
        .await;
    assert_eq!(bed.remote_named("quiet").unwrap()["description"], "two");
    assert_health(&env, "Healthy", "Current");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deletion_holds_the_finalizer_and_writes_nothing_until_unpaused() {
    let bed = TestBed::start("pause-delete", ready_now()).await;
    bed.create("held", EnvironmentSpec::default()).await;
    let env = bed.wait_for("held", "Ready", is_ready).await;
    let id = id_of(&env);
    bed.annotate("held", "kubiya.ai/paused", Some("true")).await;
    bed.wait_for("held", "paused", |e| {
        e.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "Paused"))
    })
    .await;
    let writes = remote_writes(&bed);

    bed.envs.delete("held", &DeleteParams::default()).await.unwrap();
    let env = bed
        .wait_for("held", "Deleting and paused", |e| {
            phase(e) == Some(Phase::Deleting) && message(e).contains("deletion paused")
        })
        .await;
    assert!(env.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == "kubiya.ai/environment")));
    let text = message(&env);
    assert!(
        text.contains("remove the annotation") && text.contains("kubiya.ai/deletion-policy=Orphan"),
        "{text}"
    );
    assert_eq!(crate::support::health::argo(&env).0, "Suspended");
    // Held, not just slow: a reconcile request gets a pass, which still writes nothing.
    bed.annotate("held", "kubiya.ai/reconcile-requested-at", Some("r1")).await;
    bed.wait_for("held", "the request handled", |e| {
        e.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some("r1")
    })
    .await;
    assert!(bed.envs.get_opt("held").await.unwrap().is_some(), "the paused resource stays");
    assert_eq!(remote_writes(&bed), writes, "nothing written while paused");
    assert!(bed.remote().iter().any(|r| r["id"] == id.as_str()));

    // Unpaused, the deletion goes on by its policy (Delete).
    bed.annotate("held", "kubiya.ai/paused", None).await;
    bed.wait_gone("held").await;
    assert!(!bed.remote().iter().any(|r| r["id"] == id.as_str()), "deleted once unpaused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deletion_ends_with_the_orphan_annotation_and_still_writes_nothing() {
    let bed = TestBed::start("pause-orphan", ready_now()).await;
    bed.create("held", EnvironmentSpec::default()).await;
    let id = id_of(&bed.wait_for("held", "Ready", is_ready).await);
    bed.annotate("held", "kubiya.ai/paused", Some("true")).await;
    bed.envs.delete("held", &DeleteParams::default()).await.unwrap();
    bed.wait_for("held", "Deleting and paused", |e| {
        phase(e) == Some(Phase::Deleting) && message(e).contains("paused")
    })
    .await;
    let writes = remote_writes(&bed);
    bed.annotate("held", "kubiya.ai/deletion-policy", Some("Orphan")).await;
    bed.wait_gone("held").await;
    assert_eq!(remote_writes(&bed), writes, "paused: not even the release is written");
    assert!(bed.remote().iter().any(|r| r["id"] == id.as_str()), "left in the control plane");
}
