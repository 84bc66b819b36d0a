//! A name taken in the control plane by an environment this resource may not take: a conflict,
//! never an adoption, and it heals without an edit once the name is free.

use kubiya_operator::resource::{EnvironmentSpec, Phase};
use serde_json::json;

use crate::support::health::assert_health;
use crate::support::{TestBed, is_ready, message, phase, ready_now, stalled_with};

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
async fn a_name_conflict_heals_without_an_edit_once_the_foreign_environment_is_gone() {
    let mut bed = TestBed::without_operator("heal", ready_now()).await;
    bed.operator_env.push(("KUBIYA_RESYNC_INTERVAL", "1s".into()));
    bed.start_operator();
    let (_, foreign) = bed.cp("POST", "/api/v1/environments", Some(json!({"name": "taken"}))).await;
    bed.create("mine", EnvironmentSpec { name: Some("taken".into()), ..Default::default() }).await;
    let env = bed.wait_for("mine", "Stalled with NameConflict", stalled_with("NameConflict")).await;
    assert!(message(&env).contains("kubectl annotate environment/mine"), "{}", message(&env));
    let generation = env.metadata.generation;

    let (code, _) =
        bed.cp("DELETE", &format!("/api/v1/environments/{}", foreign["id"].as_str().unwrap()), None).await;
    assert_eq!(code, 204);
    let env = bed.wait_for("mine", "Ready", is_ready).await;
    assert_eq!(env.metadata.generation, generation, "no edit");
}
