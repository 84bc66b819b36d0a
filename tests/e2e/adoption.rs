//! Taking over an environment that exists already, by the annotation `kubiya.ai/environment-id`:
//! the spec is enforced on it, a missing id is a clear error, an environment a live resource
//! manages is refused, and another cluster takes one over while the first lets go.

use kube::api::DeleteParams;
use kubiya_operator::resource::EnvironmentSpec;
use serde_json::json;

use crate::support::cluster::PrivateCluster;
use crate::support::{TestBed, condition, id_of, is_ready, message, ready_now, stalled_with};

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
async fn adopting_an_environment_a_live_resource_manages_is_refused() {
    let bed = TestBed::start("live-owner", ready_now()).await;
    bed.create("owner", EnvironmentSpec::default()).await;
    let id = id_of(&bed.wait_for("owner", "Ready", is_ready).await);
    bed.create_annotated(
        "thief",
        &[("kubiya.ai/environment-id", &id)],
        EnvironmentSpec {
            name: Some("owner".into()),
            description: Some("stolen".into()),
            ..Default::default()
        },
    )
    .await;
    let env = bed.wait_for("thief", "Stalled with OwnedElsewhere", stalled_with("OwnedElsewhere")).await;
    assert!(message(&env).contains("two resources must not manage one environment"), "{}", message(&env));
    assert!(bed.remote_named("owner").unwrap()["description"].is_null(), "not written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cluster_takes_over_with_the_annotation_and_the_first_lets_go() {
    let old = TestBed::start("old-cluster", ready_now()).await;
    old.create("app", EnvironmentSpec { description: Some("blue".into()), ..Default::default() }).await;
    let id = id_of(&old.wait_for("app", "Ready", is_ready).await);

    // A second cluster, on the same control-plane organization, told to take it over.
    let cluster = PrivateCluster::start_at("new-cluster", ["17243", "13179", "13180"]);
    let mut new = TestBed::on_cluster(cluster.kubeconfig(), "new-cluster", ready_now()).await;
    new.control_plane_url = old.control_plane_url.clone();
    new.org = old.org.clone();
    new.start_operator();
    new.create_annotated(
        "app",
        &[("kubiya.ai/environment-id", &id)],
        EnvironmentSpec { description: Some("green".into()), ..Default::default() },
    )
    .await;
    let env = new.wait_for("app", "Ready", is_ready).await;
    assert_eq!(id_of(&env), id);
    let note = new.wait_event("app", "Adopted").await;
    assert!(note.contains("in another cluster"), "{note}");
    assert_eq!(old.remote_named("app").unwrap()["description"], "green");

    // The old cluster's resource lets go: Stalled, no writes, and its deletion deletes nothing.
    old.annotate("app", "kubiya.ai/reconcile-requested-at", Some("later")).await;
    let env = old.wait_for("app", "Stalled with OwnedElsewhere", stalled_with("OwnedElsewhere")).await;
    assert!(message(&env).contains("managed from another cluster"), "{}", message(&env));
    assert_eq!(condition(&env, "Ready").as_deref(), Some("False"));
    assert_eq!(old.remote_named("app").unwrap()["description"], "green", "the old spec is not written back");
    old.envs.delete("app", &DeleteParams::default()).await.unwrap();
    old.wait_gone("app").await;
    assert!(old.remote().iter().any(|r| r["id"] == id.as_str()), "deleted by the old cluster");
    new.annotate("app", "kubiya.ai/reconcile-requested-at", Some("after")).await;
    new.wait_for("app", "still Ready", |e| {
        is_ready(e) && e.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some("after")
    })
    .await;
}
