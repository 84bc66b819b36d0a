//! Deleting an Environment: by its deletion policy, Delete removes the remote environment and then
//! the object, Orphan keeps it; a deletion the control plane refuses explains itself, and the
//! Orphan annotation ends it, even when the whole namespace goes.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use kubiya_operator::resource::{DeletionPolicy, EnvironmentSpec, Phase};

use crate::support::{TestBed, condition, is_ready, phase, ready_now, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_remote_environment_and_then_the_object() {
    let bed = TestBed::start("delete", ready_now()).await;
    bed.create("gone", EnvironmentSpec::default()).await;
    bed.wait_for("gone", "Ready", is_ready).await;
    assert!(bed.remote_named("gone").is_some());

    bed.envs.delete("gone", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("gone").await;
    assert!(bed.remote_named("gone").is_none(), "remote environment left behind: {:#?}", bed.remote());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_policy_keeps_the_remote_environment() {
    let bed = TestBed::start("orphan", ready_now()).await;
    bed.create("kept", EnvironmentSpec { deletion_policy: DeletionPolicy::Orphan, ..Default::default() })
        .await;
    let env = bed.wait_for("kept", "Ready", is_ready).await;

    bed.envs.delete("kept", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("kept").await;
    let remote = bed.remote_named("kept").expect("remote environment kept");
    assert_eq!(remote["id"].as_str(), env.status.and_then(|s| s.environment_id).as_deref());
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
