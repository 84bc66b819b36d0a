//! Taking over an environment that exists already, by the annotation `kubiya.ai/environment-id`:
//! the spec is enforced on it, a missing id is a clear error, an environment a live resource
//! manages is refused, and one repository synced to two clusters moves nothing until an explicit
//! take-over moves it once.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use kubiya_operator::resource::EnvironmentSpec;
use serde_json::json;

use crate::support::cluster::PrivateCluster;
use crate::support::{
    TestBed, condition, id_of, is_ready, message, metric_sum, ready_now, stalled_with, wait_until,
};

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

/// One Git repository synced to two clusters of the same organisation: the same exported
/// manifest (the id annotation) on both. The second cluster is refused, and says which cluster
/// holds the environment and what to run; over its resyncs nothing changes hands and it never
/// writes its spec. Then the explicit take-over moves it, once: the first cluster lets go (its
/// worker Secret is deleted) and never takes it back without its own take-over annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_repo_on_two_clusters_moves_nothing_until_a_take_over_moves_it_once() {
    let suffix = format!("{:08x}", fastrand::u32(..));
    let (cluster_a, cluster_b) = (format!("cluster-a-{suffix}"), format!("cluster-b-{suffix}"));
    let mut old = TestBed::without_operator("old-cluster", ready_now()).await;
    old.operator_env.push(("KUBIYA_CLUSTER_ID", cluster_a.clone()));
    old.operator_env.push(("KUBIYA_RESYNC_INTERVAL", "1s".into()));
    old.start_operator();
    let blue = || EnvironmentSpec { description: Some("blue".into()), ..Default::default() };
    old.create("app", blue()).await;
    let id = id_of(&old.wait_for("app", "Ready", is_ready).await);
    let secrets: Api<Secret> = Api::namespaced(old.client.clone(), &old.namespace);
    assert!(secrets.get_opt("app-worker").await.unwrap().is_some());

    // The second cluster, on the same organisation, with the manifest as exported: the id.
    let cluster = PrivateCluster::start_at("new-cluster", ["17243", "13179", "13180"]);
    let mut new = TestBed::on_cluster(cluster.kubeconfig(), "new-cluster", ready_now()).await;
    new.control_plane_url = old.control_plane_url.clone();
    new.org = old.org.clone();
    new.operator_env.push(("KUBIYA_CLUSTER_ID", cluster_b.clone()));
    new.operator_env.push(("KUBIYA_RESYNC_INTERVAL", "1s".into()));
    new.start_operator();
    let green = EnvironmentSpec { description: Some("green".into()), ..Default::default() };
    new.create_annotated("app", &[("kubiya.ai/environment-id", &id)], green).await;
    let env = new.wait_for("app", "Stalled with OwnedElsewhere", stalled_with("OwnedElsewhere")).await;
    let text = message(&env);
    let take_over =
        format!("kubectl annotate environment/app -n {} kubiya.ai/take-over-from={cluster_a}", new.namespace);
    assert!(
        text.contains(&format!("managed from cluster {cluster_a}")) && text.contains(&take_over),
        "{text}"
    );

    // Three resyncs of the second: refused each time, nothing written.
    let patches = |bed: &TestBed| bed.calls("PATCH /api/v1/environments/{id}");
    let before = patches(&old);
    let refused =
        |text: &str| metric_sum(text, "kubiya_operator_reconciles_total{result=\"owned_elsewhere\"}");
    let at_first = refused(&new.metrics().await);
    wait_until("three more refused passes", || async { refused(&new.metrics().await) >= at_first + 3.0 })
        .await;
    assert_eq!(patches(&old), before, "nothing was written while the second was refused");
    assert_eq!(old.remote_named("app").unwrap()["description"], "blue");
    assert_eq!(old.remote_named("app").unwrap()["settings"]["kubiya.ai/owner"]["cluster"], json!(cluster_a));
    assert!(is_ready(&old.envs.get("app").await.unwrap()), "the first still manages it");

    assert!(old.operator_log().contains(&cluster_a), "the operator logs its cluster id at start");

    // The explicit take-over moves it once.
    new.annotate("app", "kubiya.ai/take-over-from", Some(&cluster_a)).await;
    let env = new.wait_for("app", "Ready", is_ready).await;
    assert_eq!(id_of(&env), id);
    assert_eq!(env.status.as_ref().and_then(|s| s.taken_over_from.as_deref()), Some(cluster_a.as_str()));
    let note = new.wait_event("app", "Adopted").await;
    assert!(note.contains(&format!("taken over from cluster {cluster_a}")), "{note}");
    assert_eq!(old.remote_named("app").unwrap()["description"], "green");
    assert_eq!(old.remote_named("app").unwrap()["settings"]["kubiya.ai/owner"]["cluster"], json!(cluster_b));

    // The first lets go: Stalled, its worker Secret deleted, nothing written back.
    let env = old.wait_for("app", "Stalled with OwnedElsewhere", stalled_with("OwnedElsewhere")).await;
    assert!(message(&env).contains(&format!("managed from cluster {cluster_b}")), "{}", message(&env));
    assert_eq!(condition(&env, "Ready").as_deref(), Some("False"));
    old.wait_event("app", "WorkerSecretDeleted").await;
    assert!(secrets.get_opt("app-worker").await.unwrap().is_none(), "the old holder keeps no token");
    let env = old
        .wait_for("app", "naming no worker Secret", |e| {
            e.status.as_ref().is_some_and(|s| s.worker_secret_name.is_none())
        })
        .await;
    assert!(stalled_with("OwnedElsewhere")(&env));
    let after = refused(&old.metrics().await);
    wait_until("three refused passes of the first", || async {
        refused(&old.metrics().await) >= after + 3.0
    })
    .await;
    assert_eq!(
        old.remote_named("app").unwrap()["description"],
        "green",
        "the old spec is never written back"
    );
    assert_eq!(old.remote_named("app").unwrap()["settings"]["kubiya.ai/owner"]["cluster"], json!(cluster_b));
    assert!(is_ready(&new.envs.get("app").await.unwrap()), "the take-over is not undone");

    // Deleting the first's resource deletes nothing.
    old.envs.delete("app", &DeleteParams::default()).await.unwrap();
    old.wait_gone("app").await;
    assert!(old.remote().iter().any(|r| r["id"] == id.as_str()), "deleted by the old cluster");
    new.annotate("app", "kubiya.ai/reconcile-requested-at", Some("after")).await;
    new.wait_for("app", "still Ready", |e| {
        is_ready(e) && e.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some("after")
    })
    .await;
}
