//! Who owns a remote environment, as it changes hands: Orphan and taking back, a move between
//! namespaces, a restore with a new UID, a status that names someone else's environment, and the
//! CRD deleted and installed again. The rule: an environment belongs to one resource at a time; it
//! changes hands only when its owner lets it go or no longer exists, or when a human says so
//! (adoption by annotation: `adoption.rs`; a paused deletion: `pause.rs`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kubiya_operator::resource::{DeletionPolicy, Environment, EnvironmentSpec, Phase};
use serde_json::{Value, json};

use crate::support::cluster::PrivateCluster;
use crate::support::{
    TIMEOUT, TestBed, id_of, is_ready, message, phase, ready_now, stalled_with, wait_until,
};

fn orphan() -> EnvironmentSpec {
    EnvironmentSpec { deletion_policy: DeletionPolicy::Orphan, ..Default::default() }
}

/// The owner marker of the remote environment named `name`.
fn marker(bed: &TestBed, name: &str) -> Value {
    bed.remote_named(name).map(|r| r["settings"]["kubiya.ai/owner"].clone()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_orphaned_is_released_and_taken_back_by_the_same_manifest() {
    let bed = TestBed::start("take-back", ready_now()).await;
    let first = bed.create("mover", orphan()).await;
    let id = id_of(&bed.wait_for("mover", "Ready", is_ready).await);
    bed.envs.delete("mover", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("mover").await;
    let released = marker(&bed, "mover");
    assert_eq!(released["released"], true, "{released}");
    assert_eq!(released["uid"], json!(first.metadata.uid));

    let second = bed.create("mover", orphan()).await;
    let env = bed.wait_for("mover", "Ready", is_ready).await;
    assert_eq!(id_of(&env), id, "the same environment, not a new one");
    assert_eq!(bed.remote().iter().filter(|r| r["name"] == "mover").count(), 1);
    let held = marker(&bed, "mover");
    assert_eq!(held["uid"], json!(second.metadata.uid));
    assert!(held.get("released").is_none(), "{held}");
    let note = bed.wait_event("mover", "Reclaimed").await;
    assert!(note.contains(&id), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_to_another_namespace_takes_the_annotation_and_says_so() {
    let mut bed = TestBed::without_operator("move", ready_now()).await;
    let target = format!("{}-b", bed.namespace);
    bed.own_namespace(&target).await;
    bed.operator_env.push(("KUBIYA_WATCH_NAMESPACES", format!("{},{target}", bed.namespace)));
    bed.start_operator();
    bed.create("mover", orphan()).await;
    let id = id_of(&bed.wait_for("mover", "Ready", is_ready).await);
    bed.envs.delete("mover", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("mover").await;

    // The same manifest in another namespace: the environment was released by someone else.
    let b: Api<Environment> = Api::namespaced(bed.client.clone(), &target);
    b.create(&PostParams::default(), &Environment::new("mover", orphan())).await.unwrap();
    let env = bed.wait_for_in(&b, "mover", "Stalled with NameConflict", stalled_with("NameConflict")).await;
    let text = message(&env);
    let command = format!("kubectl annotate environment/mover -n {target} kubiya.ai/environment-id={id}");
    assert!(text.contains("released by another resource of this cluster"), "{text}");
    assert!(!text.contains(&format!("{} ", bed.namespace)), "another namespace named to a tenant: {text}");
    assert!(text.contains(&command), "{text}");
    assert_eq!(phase(&env), Some(Phase::Error));

    let patch = json!({"metadata": {"annotations": {"kubiya.ai/environment-id": id}}});
    b.patch("mover", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let env = bed.wait_for_in(&b, "mover", "Ready", is_ready).await;
    assert_eq!(id_of(&env), id);
    assert_eq!(marker(&bed, "mover")["namespace"], json!(target));
    assert_eq!(bed.remote().iter().filter(|r| r["name"] == "mover").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_with_a_new_uid_and_no_status_takes_the_environment_back() {
    let mut bed = TestBed::start("restore", ready_now()).await;
    let first = bed.create("app", EnvironmentSpec::default()).await;
    let id = id_of(&bed.wait_for("app", "Ready", is_ready).await);
    // Lost without a cleanup (a finalizer removed by hand while the operator was down, a
    // namespace force-deleted): the marker still names the dead object.
    bed.kill_operator().await;
    let patch = json!({"metadata": {"finalizers": null}});
    bed.envs.patch("app", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    bed.envs.delete("app", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("app").await;
    assert_eq!(marker(&bed, "app")["uid"], json!(first.metadata.uid));

    // Restored: same namespace and name, new UID, status stripped.
    bed.create("app", EnvironmentSpec::default()).await;
    bed.start_operator();
    let env = bed.wait_for("app", "Ready", is_ready).await;
    assert_eq!(id_of(&env), id);
    assert_eq!(marker(&bed, "app")["uid"], json!(env.metadata.uid));
    bed.wait_event("app", "Reclaimed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_whose_status_names_someone_elses_environment_never_writes_or_deletes_it() {
    let mut bed = TestBed::start("not-mine", ready_now()).await;
    bed.create("owner", EnvironmentSpec { description: Some("owner's".into()), ..Default::default() }).await;
    let owner = bed.wait_for("owner", "Ready", is_ready).await;
    let id = id_of(&owner);

    // A resource restored from a backup, with a status that names the owner's environment (copied
    // from another cluster's backup, or two resources that once adopted the same id).
    bed.kill_operator().await;
    bed.create("copy", EnvironmentSpec { description: Some("copy's".into()), ..Default::default() }).await;
    let status = json!({"status": {"environmentId": id}});
    bed.envs.patch_status("copy", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    bed.start_operator();
    let env = bed.wait_for("copy", "Stalled with OwnedElsewhere", stalled_with("OwnedElsewhere")).await;
    let text = message(&env);
    assert!(text.contains("managed by Environment owner"), "the owner is of the same namespace: {text}");
    let remote = bed.remote().into_iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(remote["description"], "owner's", "never written by the copy");

    // Deleting it deletes nothing remote; the owner stays Ready on its environment.
    bed.envs.delete("copy", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("copy").await;
    assert!(bed.remote().iter().any(|r| r["id"] == id.as_str()), "the owner's environment was deleted");
    let left = bed.events("copy").await;
    assert!(left.iter().any(|(reason, note)| reason == "LeftRemote" && note.contains(&id)), "{left:?}");
    bed.annotate("owner", "kubiya.ai/reconcile-requested-at", Some("after")).await;
    let owner = bed
        .wait_for("owner", "Ready after the request", |e| {
            is_ready(e)
                && e.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some("after")
        })
        .await;
    assert_eq!(id_of(&owner), id);
}

const RESOURCES: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_crd_releases_every_environment_and_reinstalling_takes_them_back() {
    let cluster = PrivateCluster::start_at("crd-delete", ["17143", "13079", "13080"]);
    let mut bed = TestBed::on_cluster(cluster.kubeconfig(), "crd-delete", ready_now()).await;
    bed.start_operator();
    let name = |i: usize| format!("env-{i:02}");
    for i in 0..RESOURCES {
        bed.create(&name(i), EnvironmentSpec::default()).await;
    }
    let mut ids = Vec::new();
    for i in 0..RESOURCES {
        ids.push(id_of(&bed.wait_for(&name(i), "Ready", is_ready).await));
    }

    // An uninstall, or a GitOps prune: the API server deletes every Environment.
    let crds: Api<CustomResourceDefinition> = Api::all(bed.client.clone());
    let uid = crds.get("environments.kubiya.ai").await.unwrap().metadata.uid.unwrap_or_default();
    crds.delete("environments.kubiya.ai", &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(
        TIMEOUT * 2,
        await_condition(crds, "environments.kubiya.ai", conditions::is_deleted(&uid)),
    )
    .await
    .expect("the CRD is deleted once every Environment let go")
    .unwrap();
    for id in &ids {
        let r = bed.remote().into_iter().find(|r| r["id"] == id.as_str());
        let r = r.unwrap_or_else(|| panic!("environment {id} was deleted with the CRD"));
        assert_eq!(r["settings"]["kubiya.ai/owner"]["released"], true, "{r}");
    }
    assert!(bed.operator_alive());

    // Installed again, the same manifests applied: the same environments, none created.
    let others = |bed: &TestBed| bed.remote().into_iter().filter(|r| r["name"] != "default").count();
    let envs_before = others(&bed);
    crate::support::install_crd(bed.client.clone()).await;
    wait_until("the Environments API served again", || async {
        bed.envs.list(&Default::default()).await.is_ok()
    })
    .await;
    for i in 0..RESOURCES {
        bed.create(&name(i), EnvironmentSpec::default()).await;
    }
    for (i, id) in ids.iter().enumerate() {
        let env = bed.wait_for(&name(i), "Ready", is_ready).await;
        assert_eq!(&id_of(&env), id, "{}", name(i));
    }
    assert_eq!(others(&bed), envs_before, "no environment created");
    let events = bed.events(&name(0)).await;
    assert!(events.iter().any(|(r, _)| r == "Reclaimed"), "{events:?}");
}
