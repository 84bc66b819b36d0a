//! Reconcile semantics platform teams rely on: no duplicates, no leaks, adoption, drift, deletion
//! that can end, pause, reconcile requests, the enabled state, throttling, the worker Secret.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kubiya_cp_emulator::{Config as EmulatorConfig, Faults};
use kubiya_operator::resource::{EnvironmentSpec, Phase, RemoteState};
use serde_json::json;

use crate::gitops::assert_health;
use crate::support::{
    TestBed, condition, id_of, is_ready, metric_sum, phase, ready_now, stalled_with, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_environment_with_the_same_name_is_a_conflict_not_adopted() {
    let bed = TestBed::start("conflict", ready_now()).await;
    let (code, _) = bed.cp("POST", "/api/v1/environments", Some(json!({"name": "taken"}))).await;
    assert_eq!(code, 201);
    bed.create("mine", EnvironmentSpec { name: Some("taken".into()), ..Default::default() }).await;

    let env = bed.wait_for("mine", "Stalled with NameConflict", stalled_with("NameConflict")).await;
    assert_eq!(phase(&env), Some(Phase::Error));
    assert!(
        env.status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default()
            .contains("choose another spec.name")
    );
    assert_health(&env, "Degraded", "Failed");
    let note = bed.wait_event("mine", "NameConflict").await;
    assert!(note.contains("\"taken\""), "{note}");
    let same_name = bed.remote().into_iter().filter(|e| e["name"] == "taken").count();
    assert_eq!(same_name, 1, "no second environment, and the foreign one is untouched");
    assert!(bed.remote_named("taken").unwrap()["settings"].get("kubiya.ai/owner").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_is_recovered_not_duplicated() {
    // Every answer hangs past the client timeout, but the create happens: then the control plane
    // recovers and the next create gets 409, as with the real server under load.
    let emulator = EmulatorConfig { faults: Faults { hang: 1.0, ..Faults::default() }, ..ready_now() };
    let mut bed = TestBed::without_operator("lost", emulator).await;
    bed.operator_env.push(("KUBIYA_REQUEST_TIMEOUT", "1s".into()));
    bed.start_operator();
    bed.create("lost", EnvironmentSpec::default()).await;
    // The first pass says work has started before any control-plane call has been answered.
    let env = bed
        .wait_for("lost", "Pending and Reconciling", |e| {
            phase(e) == Some(Phase::Pending) && condition(e, "Reconciling").as_deref() == Some("True")
        })
        .await;
    assert_eq!(env.status.as_ref().and_then(|s| s.observed_generation), env.metadata.generation);
    assert_health(&env, "Progressing", "InProgress");
    wait_until("the create to reach the emulator", || async { bed.remote_named("lost").is_some() }).await;
    bed.emulator.set_faults(Faults::default());

    let env = bed.wait_for("lost", "Ready", is_ready).await;
    let named: Vec<_> = bed.remote().into_iter().filter(|e| e["name"] == "lost").collect();
    assert_eq!(named.len(), 1, "exactly one environment: {named:#?}");
    assert_eq!(named[0]["id"].as_str(), Some(id_of(&env).as_str()));
    // Recovered, not found by luck: the operator's own count shows its create answered 409 (the
    // environment was there already), and a list (where it found its owner marker).
    let metrics = bed.metrics().await;
    let requests = |method: &str, code: &str| {
        metric_sum(
            &metrics,
            &format!(
                "kubiya_operator_control_plane_requests_total{{connection=\"operator\",route=\"/api/v1/environments\",method=\"{method}\",code=\"{code}\"}}"
            ),
        )
    };
    assert!(requests("POST", "409") >= 1.0, "no create answered 409:\n{metrics}");
    assert!(requests("GET", "200") >= 1.0, "no list after the 409:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_by_annotation_enforces_the_spec_on_the_existing_environment() {
    let bed = TestBed::start("adopt", ready_now()).await;
    let (_, legacy) =
        bed.cp("POST", "/api/v1/environments", Some(json!({"name": "legacy", "description": "old"}))).await;
    let legacy_id = legacy["id"].as_str().unwrap().to_owned();

    bed.create_annotated(
        "legacy",
        &[("kubiya.ai/environment-id", &legacy_id)],
        EnvironmentSpec { description: Some("new".into()), ..Default::default() },
    )
    .await;
    let env = bed.wait_for("legacy", "Ready", is_ready).await;
    assert_eq!(id_of(&env), legacy_id);
    let remote = bed.remote_named("legacy").unwrap();
    assert_eq!(remote["description"], "new");
    assert_eq!(remote["settings"]["kubiya.ai/owner"]["uid"], json!(env.metadata.uid));
    assert_eq!(bed.remote().iter().filter(|e| e["name"] == "legacy").count(), 1);
    bed.wait_event("legacy", "Adopted").await;

    // A missing id is a clear, permanent error.
    let missing = "00000000-0000-4000-8000-000000000000";
    bed.create_annotated("ghost", &[("kubiya.ai/environment-id", missing)], EnvironmentSpec::default()).await;
    let env = bed.wait_for("ghost", "Stalled with AdoptionFailed", stalled_with("AdoptionFailed")).await;
    let message = env.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("kubiya.ai/environment-id") && message.contains("does not exist"), "{message}");
    assert!(bed.remote_named("ghost").is_none(), "nothing created for a failed adoption");
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_deletion_explains_itself_and_the_orphan_annotation_ends_it_even_for_a_namespace() {
    let bed = TestBed::start("refused", ready_now()).await;
    // The organization's `default` environment cannot be deleted (400): adopt it.
    let (_, all) = bed.cp("GET", "/api/v1/environments", None).await;
    let default_id = all[0]["id"].as_str().unwrap().to_owned();
    bed.create_annotated(
        "default-env",
        &[("kubiya.ai/environment-id", &default_id)],
        EnvironmentSpec { name: Some("default".into()), ..Default::default() },
    )
    .await;
    bed.wait_for("default-env", "Ready", is_ready).await;

    // The whole namespace goes: the Environment stays, saying why and what to do.
    Api::<Namespace>::all(bed.client.clone()).delete(&bed.namespace, &DeleteParams::default()).await.unwrap();
    let env = bed
        .wait_for("default-env", "blocked deletion explained", |e| {
            e.status.as_ref().and_then(|s| s.message.as_deref()).is_some_and(|m| {
                m.contains("Cannot delete the default environment")
                    && m.contains("kubiya.ai/deletion-policy=Orphan")
            })
        })
        .await;
    assert_eq!(phase(&env), Some(Phase::Deleting));
    assert_eq!(condition(&env, "Stalled").as_deref(), Some("True"));

    bed.annotate("default-env", "kubiya.ai/deletion-policy", Some("Orphan")).await;
    bed.wait_gone("default-env").await;
    let namespaces = Api::<Namespace>::all(bed.client.clone());
    wait_until("the namespace to be gone", || async {
        namespaces.get_opt(&bed.namespace).await.unwrap().is_none()
    })
    .await;
    assert!(bed.remote().iter().any(|e| e["id"] == default_id.as_str()), "orphaned, not deleted");
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
    let (argo, _) = crate::gitops::argo(&env);
    assert_eq!(argo, "Suspended");
    assert_eq!(crate::gitops::kstatus(&env), "InProgress", "a paused change is not applied");
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
async fn the_enabled_state_is_enforced_and_phase_is_selectable() {
    let bed = TestBed::start("state", ready_now()).await;
    bed.create("off", EnvironmentSpec { state: Some(RemoteState::Inactive), ..Default::default() }).await;
    bed.create("on", EnvironmentSpec::default()).await;
    let off = bed.wait_for("off", "Inactive", |e| phase(e) == Some(Phase::Inactive)).await;
    assert_eq!(bed.remote_named("off").unwrap()["status"], "inactive");
    assert_health(&off, "Suspended", "Current");
    bed.wait_for("on", "Ready", is_ready).await;

    // `kubectl get kenv --field-selector status.phase=Ready`
    let ready = bed.envs.list(&ListParams::default().fields("status.phase=Ready")).await.unwrap();
    let names: Vec<_> = ready.items.iter().filter_map(|e| e.metadata.name.clone()).collect();
    assert_eq!(names, ["on"]);

    let patch = json!({"spec": {"state": "Active"}});
    bed.envs.patch("off", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let on = bed.wait_for("off", "Ready", is_ready).await;
    assert_eq!(bed.remote_named("off").unwrap()["status"], "active");
    assert_health(&on, "Healthy", "Current");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_honoured_post_is_never_retried_blindly_and_calls_are_limited() {
    let emulator = EmulatorConfig { faults: Faults { latency_ms: 100, ..Faults::default() }, ..ready_now() };
    let mut bed = TestBed::without_operator("throttle", emulator).await;
    bed.operator_env.push(("KUBIYA_MAX_CONCURRENT_REQUESTS", "2".into()));
    bed.start_operator();
    for i in 0..8 {
        bed.create(&format!("e{i}"), EnvironmentSpec::default()).await;
    }
    for i in 0..8 {
        bed.wait_for(&format!("e{i}"), "Ready", is_ready).await;
    }
    assert!(bed.emulator.max_in_flight() <= 2, "{} requests in flight at once", bed.emulator.max_in_flight());

    // 429 with a long Retry-After: the create is tried once, reported, and not hammered.
    bed.emulator.set_faults(Faults { throttle: 1.0, retry_after_secs: 3600, ..Faults::default() });
    let posts = |bed: &TestBed| bed.emulator.calls().get("POST /api/v1/environments").copied().unwrap_or(0);
    let before = posts(&bed);
    bed.create("slow", EnvironmentSpec::default()).await;
    let env = bed
        .wait_for("slow", "Reconciling after a 429", |e| {
            e.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Reconciling" && c.status == "True" && c.reason == "ControlPlaneUnavailable"
                })
            })
        })
        .await;
    assert_eq!(condition(&env, "Stalled").as_deref(), Some("False"), "transient trouble is never Stalled");
    assert_health(&env, "Progressing", "InProgress");
    // An observation window, not a synchronisation: nothing may happen in it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(posts(&bed), before + 1, "one POST, no retry inside the client, and Retry-After honoured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_secret_is_rewritten_when_deleted_or_edited_and_the_token_stays_secret() {
    let bed = TestBed::start("secret", ready_now()).await;
    bed.create("wk", EnvironmentSpec::default()).await;
    bed.wait_for("wk", "Ready", is_ready).await;
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let token = bed.remote_named("wk").unwrap()["worker_token"].as_str().unwrap().to_owned();
    let current = |s: &Secret| {
        s.data.as_ref().and_then(|d| d.get("KUBIYA_WORKER_TOKEN")).map(|b| b.0.clone())
            == Some(token.clone().into_bytes())
            && s.data
                .as_ref()
                .and_then(|d| d.get("KUBIYA_WORKER_COMMAND"))
                .is_some_and(|b| b.0.starts_with(b"kubiya worker start"))
    };
    let restored = || async { secrets.get_opt("wk-worker").await.unwrap().is_some_and(|s| current(&s)) };
    wait_until("the worker Secret", restored).await;

    secrets.delete("wk-worker", &DeleteParams::default()).await.unwrap();
    wait_until("the deleted worker Secret restored", restored).await;

    let edit = json!({"stringData": {"KUBIYA_WORKER_COMMAND": "rm -rf /"}});
    secrets.patch("wk-worker", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    wait_until("the edited worker Secret restored", restored).await;

    let events = bed.events("wk").await;
    assert!(events.iter().all(|(_, note)| !note.contains(&token)), "token in an Event");
    let env = bed.envs.get("wk").await.unwrap();
    assert!(!serde_json::to_string(&env.status).unwrap().contains(&token), "token in status");
    assert!(!bed.operator_log().contains(&token), "token in the operator log");
}
