//! The lifecycle of an Environment against the emulator: applied (provisioning, then Ready with
//! every field remote and a worker Secret), edited (one PATCH), disabled and enabled again, and a
//! remote error. Deletion is in `deletion.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::health::assert_health;
use crate::support::{TestBed, condition, is_ready, phase, ready_now};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kubiya_cp_emulator::{Config as EmulatorConfig, FirstOutcome};
use kubiya_operator::resource::{
    DeletionPolicy, EnvironmentSpec, ExecutionEnvironment, Phase, RemoteState, WorkerSecretRef,
};
use serde_json::json;

fn full_spec() -> EnvironmentSpec {
    EnvironmentSpec {
        name: Some("PRODUCTION".into()),
        display_name: Some("Production".into()),
        description: Some("Production execution environment".into()),
        tags: vec!["prod".into(), "critical".into()],
        priority: Some(10),
        policy_ids: vec!["policy-1".into()],
        settings: Some(
            serde_json::from_value(json!({"region": "eu-west-1", "nested": {"a": [1, 2]}})).unwrap(),
        ),
        execution_environment: Some(ExecutionEnvironment {
            env_vars: BTreeMap::from([("LOG_LEVEL".into(), "info".into())]),
            secrets: vec!["GITHUB_TOKEN".into()],
            integration_ids: vec!["int-1".into()],
            mcp_servers: Some(serde_json::from_value(json!({"fs": {"command": "mcp-fs"}})).unwrap()),
            ..Default::default()
        }),
        state: None,
        deletion_policy: DeletionPolicy::Delete,
        management_policy: Default::default(),
        worker_secret: Some(WorkerSecretRef { name: "production-worker".into() }),
        connection_ref: None,
    }
}

/// The organization's first environment provisions for a while, then becomes ready.
fn provisioning(ms: u64) -> EmulatorConfig {
    EmulatorConfig { provisioning: Duration::from_millis(ms), ..EmulatorConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_goes_provisioning_then_ready_with_every_field_remote_and_a_worker_secret() {
    let bed = TestBed::start("apply", provisioning(3000)).await;
    bed.create("production", full_spec()).await;

    let env = bed.wait_for("production", "Provisioning", |e| phase(e) == Some(Phase::Provisioning)).await;
    assert_eq!(condition(&env, "Reconciling").as_deref(), Some("True"));
    assert_eq!(condition(&env, "Ready").as_deref(), Some("False"));
    assert_health(&env, "Progressing", "InProgress");
    let env = bed.wait_for("production", "Ready", is_ready).await;
    assert_health(&env, "Healthy", "Current");
    assert_eq!(bed.readyz().await, "ok: leading", "/readyz once the caches are synced");

    // Status: identity, kstatus conditions, top-level observedGeneration.
    let status = env.status.clone().unwrap();
    assert_eq!(status.observed_generation, env.metadata.generation);
    assert_eq!(condition(&env, "Reconciling").as_deref(), Some("False"));
    assert_eq!(condition(&env, "Stalled").as_deref(), Some("False"));
    assert_eq!(status.remote_status.as_deref(), Some("ready"));
    assert_eq!(status.can_register, Some(true));
    assert_eq!(status.worker_secret_name.as_deref(), Some("production-worker"));

    // The remote environment holds every field of the spec.
    let remote = bed.remote();
    assert_eq!(remote.len(), 1, "exactly one remote environment: {remote:#?}");
    let r = &remote[0];
    assert_eq!(status.environment_id.as_deref(), r["id"].as_str());
    assert_eq!(r["name"], "PRODUCTION");
    assert_eq!(r["display_name"], "Production");
    assert_eq!(r["description"], "Production execution environment");
    assert_eq!(r["tags"], json!(["critical", "prod"]));
    assert_eq!(r["settings"]["region"], "eu-west-1");
    assert_eq!(r["settings"]["nested"], json!({"a": [1, 2]}));
    assert_eq!(r["settings"]["kubiya.ai/owner"]["uid"], json!(env.metadata.uid));
    assert_eq!(r["settings"]["kubiya.ai/owner"]["namespace"], json!(bed.namespace));
    assert_eq!(
        r["execution_environment"],
        json!({"env_vars": {"LOG_LEVEL": "info"}, "secrets": ["GITHUB_TOKEN"],
               "integration_ids": ["int-1"], "mcp_servers": {"fs": {"command": "mcp-fs"}}})
    );

    // The worker Secret: owned by the Environment, with the control plane's token and command.
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let secret = secrets.get("production-worker").await.expect("worker secret");
    let owner = &secret.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid), owner.controller),
        ("Environment", env.metadata.uid.as_ref(), Some(true))
    );
    let data = secret.data.unwrap_or_default();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    let token = r["worker_token"].as_str().unwrap();
    assert_eq!(text("KUBIYA_WORKER_TOKEN"), token);
    assert_eq!(text("KUBIYA_ENVIRONMENT"), "PRODUCTION");
    assert_eq!(text("KUBIYA_ENVIRONMENT_ID"), r["id"].as_str().unwrap());
    assert_eq!(
        text("KUBIYA_WORKER_COMMAND"),
        format!("kubiya worker start --token {token} --environment PRODUCTION")
    );

    // The token is a secret: not in status, and not in the operator's log.
    assert!(!serde_json::to_string(&env.status).unwrap().contains(token));
    assert!(!bed.operator_log().contains(token), "worker token leaked into the operator log");
    bed.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_edit_patches_the_remote_environment_and_moves_observed_generation() {
    let bed = TestBed::start("edit", provisioning(0)).await;
    bed.create("web", EnvironmentSpec { description: Some("one".into()), ..Default::default() }).await;
    let before = bed.wait_for("web", "Ready", is_ready).await;
    let id = before.status.as_ref().and_then(|s| s.environment_id.clone());

    let patch = json!({"spec": {"description": "two", "tags": ["t"],
        "executionEnvironment": {"envVars": {"A": "1"}}}});
    let edited = bed.envs.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let generation = edited.metadata.generation;
    assert!(generation > before.metadata.generation);
    let after = bed
        .wait_for("web", "Ready at the new generation", move |e| {
            is_ready(e) && e.status.as_ref().and_then(|s| s.observed_generation) == generation
        })
        .await;

    assert_eq!(after.status.and_then(|s| s.environment_id), id, "updated in place, not recreated");
    let remote = bed.remote();
    assert_eq!(remote.len(), 1);
    assert_eq!(remote[0]["description"], "two");
    assert_eq!(remote[0]["tags"], json!(["t"]));
    assert_eq!(remote[0]["execution_environment"]["env_vars"], json!({"A": "1"}));
    // PATCH replaces execution_environment: the operator sends every key.
    assert_eq!(remote[0]["execution_environment"]["secrets"], json!([]));
    // One PATCH of the changed fields, said in an Event; no second create.
    assert_eq!(bed.calls("PATCH /api/v1/environments/{id}"), 1);
    assert_eq!(bed.calls("POST /api/v1/environments"), 1);
    let note = bed.wait_event("web", "Updated").await;
    for field in ["description", "tags", "execution_environment"] {
        assert!(note.contains(field), "{note:?} does not name {field}");
    }
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
async fn remote_error_ends_in_phase_error_stalled_with_the_servers_message() {
    let emulator = EmulatorConfig {
        provisioning: Duration::from_millis(500),
        first_outcome: FirstOutcome::Error(
            "Failed to provision Temporal namespace: connection refused".into(),
        ),
        ..EmulatorConfig::default()
    };
    let bed = TestBed::start("remote-error", emulator).await;
    bed.create("broken", EnvironmentSpec::default()).await;

    let env = bed.wait_for("broken", "Stalled", |e| condition(e, "Stalled").as_deref() == Some("True")).await;
    assert_eq!(phase(&env), Some(Phase::Error));
    assert_eq!(condition(&env, "Ready").as_deref(), Some("False"));
    assert_eq!(condition(&env, "Reconciling").as_deref(), Some("False"));
    assert_health(&env, "Degraded", "Failed");
    let status = env.status.unwrap();
    assert_eq!(status.remote_status.as_deref(), Some("error"));
    let message = status.message.unwrap_or_default();
    assert!(message.contains("Failed to provision Temporal namespace: connection refused"), "{message}");
    let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.reason, "RemoteError");
    assert!(stalled.message.contains("connection refused"));
}
