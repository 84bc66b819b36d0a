//! WorkerQueues against the emulator: a queue waits for its Environment, then is Ready with every
//! field remote and a worker Secret holding the command today's CLI accepts; drift is corrected;
//! a lost create is recovered, not duplicated; each deletion policy; an Environment deleted with
//! its queues waits for them; a deletion the server refuses while workers are active; Observe;
//! pause; and, tried as the attacker, no queue of someone else is taken or reached.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kubiya_cp_emulator::Faults;
use kubiya_operator::resource::{DeletionPolicy, EnvironmentSpec, ManagementPolicy, Phase, WorkerQueueSpec};
use serde_json::json;

use crate::support::queues::{self, condition, is_ready as queue_ready, says};
use std::time::Duration;

use crate::support::{TestBed, id_of, is_ready, phase, ready_now, wait_until};

const ENV: &str = "production";

/// A bed whose Environment `production` is Ready; returns its remote id.
async fn with_environment(name: &str) -> (TestBed, String) {
    let bed = TestBed::start(name, ready_now()).await;
    let id = environment(&bed).await;
    (bed, id)
}

async fn environment(bed: &TestBed) -> String {
    bed.create(ENV, EnvironmentSpec::default()).await;
    id_of(&bed.wait_for(ENV, "Ready", is_ready).await)
}

fn full() -> WorkerQueueSpec {
    WorkerQueueSpec {
        name: Some("gpu-queue".into()),
        display_name: Some("GPU workers".into()),
        description: Some("Workers with GPUs".into()),
        max_workers: Some(10),
        heartbeat_interval: 30,
        tags: vec!["gpu".into(), "a100".into()],
        settings: Some(serde_json::from_value(json!({"local_proxy_timeout_seconds": 20})).unwrap()),
        ..queues::of(ENV)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_waits_for_its_environment_then_is_ready_with_every_field_remote_and_its_worker_secret() {
    let bed = TestBed::start("queue-apply", ready_now()).await;
    queues::create(&bed, "gpu", full()).await;
    let waiting =
        queues::wait(&bed, "gpu", "waiting for its Environment", says("Stalled", "EnvironmentNotFound"))
            .await;
    assert!(queues::message(&waiting).contains("\"production\""), "{}", queues::message(&waiting));

    let env_id = environment(&bed).await;
    let q = queues::wait(&bed, "gpu", "Ready", queue_ready).await;
    let status = q.status.clone().unwrap();
    let id = queues::id_of(&q);
    assert_eq!(status.environment_id.as_deref(), Some(env_id.as_str()));
    assert_eq!(
        (status.active_workers, status.max_workers, status.can_register),
        (Some(0), Some(10), Some(true))
    );
    assert_eq!((status.phase, status.remote_name.as_deref()), (Some(Phase::Ready), Some("gpu-queue")));
    assert_eq!(condition(&q, "Reconciling").map(|c| c.0).as_deref(), Some("False"));
    assert_eq!(condition(&q, "Stalled").map(|c| c.0).as_deref(), Some("False"));
    assert_eq!(crate::support::health::argo(&q).0, "Healthy");
    assert_eq!(crate::support::health::argo(&waiting).0, "Degraded");

    let (code, r) = queues::remote(&bed, &id).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["environment_id"], env_id);
    assert_eq!(r["name"], "gpu-queue");
    assert_eq!(r["display_name"], "GPU workers");
    assert_eq!(r["description"], "Workers with GPUs");
    assert_eq!((r["max_workers"].clone(), r["heartbeat_interval"].clone()), (json!(10), json!(30)));
    assert_eq!(r["tags"], json!(["a100", "gpu"]));
    assert_eq!(r["settings"]["local_proxy_timeout_seconds"], 20);
    assert_eq!(r["settings"]["kubiya.ai/owner"]["uid"], json!(q.metadata.uid));
    assert_eq!(queues::remote_of(&bed, &env_id).await.len(), 1, "exactly one queue");
    // The phase gauge follows the cache by a watch event: waited for, not read once.
    let gauge = || async {
        crate::support::metric_sum(&bed.metrics().await, "kubiya_operator_worker_queues{phase=\"Ready\"}")
            == 1.0
    };
    wait_until("the WorkerQueue gauge to count it Ready", gauge).await;

    // The worker Secret: owned by the queue, with what both worker generations read.
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let secret = secrets.get("gpu-worker").await.expect("the queue's worker Secret");
    let owner = &secret.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("WorkerQueue", q.metadata.uid.as_deref().unwrap())
    );
    let data = secret.data.unwrap_or_default();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    assert_eq!(text("KUBIYA_QUEUE_ID"), id);
    assert_eq!(text("QUEUE_ID"), id);
    assert_eq!(text("CONTROL_PLANE_URL"), bed.control_plane_url.trim_end_matches('/'));
    assert_eq!(text("KUBIYA_WORKER_COMMAND"), format!("kubiya worker start --queue-id {id}"));

    // Deleted by hand: written again at once, not at the next resync.
    let uid = secret.metadata.uid.clone();
    secrets.delete("gpu-worker", &DeleteParams::default()).await.unwrap();
    wait_until("the worker Secret written again", || async {
        secrets.get_opt("gpu-worker").await.ok().flatten().is_some_and(|s| s.metadata.uid != uid)
    })
    .await;
    bed.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_changed_outside_kubernetes_is_put_back_and_a_spec_edit_reaches_it() {
    let (bed, _) = with_environment("queue-drift").await;
    queues::create(&bed, "batch", WorkerQueueSpec { max_workers: Some(3), ..queues::of(ENV) }).await;
    let id = queues::id_of(&queues::wait(&bed, "batch", "Ready", queue_ready).await);

    let (code, _) = bed
        .cp(
            "PATCH",
            &format!("/api/v1/worker-queues/{id}"),
            Some(json!({"max_workers": 99, "description": "edited"})),
        )
        .await;
    assert_eq!(code, 200);
    let patch = json!({"metadata": {"annotations": {"kubiya.ai/reconcile-requested-at": "now"}}});
    queues::api(&bed).patch("batch", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let note = bed.wait_event("batch", "DriftCorrected").await;
    assert!(note.contains("description") && note.contains("max_workers"), "{note}");
    let (_, r) = queues::remote(&bed, &id).await;
    assert_eq!((r["max_workers"].clone(), r["description"].clone()), (json!(3), json!(null)));

    // Unlimited: the spec drops maxWorkers, and the queue's max_workers goes back to null.
    let patch = json!({"spec": {"maxWorkers": null}});
    queues::api(&bed).patch("batch", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let q = queues::wait(&bed, "batch", "Ready at generation 2", |q| {
        queue_ready(q) && q.metadata.generation == Some(2)
    })
    .await;
    assert_eq!(q.status.and_then(|s| s.max_workers), None);
    assert_eq!(queues::remote(&bed, &id).await.1["max_workers"], json!(null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_create_whose_answer_was_lost_is_recovered_not_duplicated() {
    let mut bed = TestBed::without_operator("queue-lost", ready_now()).await;
    bed.operator_env.push(("KUBIYA_REQUEST_TIMEOUT", "1s".into()));
    bed.start_operator();
    let env_id = environment(&bed).await;
    // Every answer hangs past the client's timeout, but the create happens.
    bed.emulator.set_faults(Faults { hang: 1.0, ..Faults::default() });
    queues::create(&bed, "lost", queues::of(ENV)).await;
    wait_until("the create to reach the emulator", || async {
        bed.emulator.worker_queues(&bed.org).iter().any(|q| q["name"] == "lost")
    })
    .await;
    bed.emulator.set_faults(Faults::default());
    let q = queues::wait(&bed, "lost", "Ready", queue_ready).await;
    let named: Vec<_> =
        queues::remote_of(&bed, &env_id).await.into_iter().filter(|q| q["name"] == "lost").collect();
    assert_eq!(named.len(), 1, "exactly one queue: {named:#?}");
    assert_eq!(named[0]["id"].as_str(), Some(queues::id_of(&q).as_str()));
    assert!(bed.calls("POST /api/v1/environments/{id}/worker-queues") >= 2, "{:?}", bed.emulator.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_deletes_it_or_with_orphan_releases_it_and_leaves_it() {
    let (bed, _) = with_environment("queue-delete").await;
    queues::create(&bed, "gone", queues::of(ENV)).await;
    queues::create(
        &bed,
        "kept",
        WorkerQueueSpec { deletion_policy: DeletionPolicy::Orphan, ..queues::of(ENV) },
    )
    .await;
    let gone = queues::id_of(&queues::wait(&bed, "gone", "Ready", queue_ready).await);
    let kept = queues::id_of(&queues::wait(&bed, "kept", "Ready", queue_ready).await);
    for name in ["gone", "kept"] {
        queues::api(&bed).delete(name, &DeleteParams::default()).await.unwrap();
    }
    queues::wait_gone(&bed, "gone").await;
    queues::wait_gone(&bed, "kept").await;
    assert_eq!(queues::remote(&bed, &gone).await.0, 404, "deleted");
    let (code, r) = queues::remote(&bed, &kept).await;
    assert_eq!(code, 200, "orphaned: still there");
    assert_eq!(r["settings"]["kubiya.ai/owner"]["released"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_deleted_with_its_queues_waits_until_they_are_gone() {
    let (bed, env_id) = with_environment("queue-env-delete").await;
    queues::create(&bed, "jobs", queues::of(ENV)).await;
    let id = queues::id_of(&queues::wait(&bed, "jobs", "Ready", queue_ready).await);

    bed.envs.delete(ENV, &DeleteParams::default()).await.unwrap();
    let env = bed
        .wait_for(ENV, "held by its queues", |e| {
            e.status.as_ref().is_some_and(|s| {
                s.phase == Some(Phase::Deleting)
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Reconciling" && c.status == "True" && c.reason == "QueuesRemain")
            })
        })
        .await;
    assert!(
        crate::support::message(&env).contains("jobs"),
        "names the queue: {}",
        crate::support::message(&env)
    );
    assert_eq!(
        bed.cp("GET", &format!("/api/v1/environments/{env_id}"), None).await.0,
        200,
        "not deleted yet"
    );
    assert_eq!(queues::remote(&bed, &id).await.0, 200);

    queues::api(&bed).delete("jobs", &DeleteParams::default()).await.unwrap();
    queues::wait_gone(&bed, "jobs").await;
    bed.wait_gone(ENV).await;
    assert_eq!(bed.cp("GET", &format!("/api/v1/environments/{env_id}"), None).await.0, 404);
    assert_eq!(queues::remote(&bed, &id).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_refused_while_workers_are_active_says_so_and_ends_once_they_stop() {
    let (bed, _) = with_environment("queue-busy").await;
    queues::create(&bed, "busy", queues::of(ENV)).await;
    let id = queues::id_of(&queues::wait(&bed, "busy", "Ready", queue_ready).await);
    assert!(bed.emulator.set_active_workers(&id, 2));
    queues::api(&bed).delete("busy", &DeleteParams::default()).await.unwrap();
    let q = queues::wait(&bed, "busy", "refused", says("Reconciling", "DeletionRefused")).await;
    let text = queues::message(&q);
    assert!(text.contains("2 active workers") && text.contains("deletion-policy=Orphan"), "{text}");
    assert_eq!(queues::remote(&bed, &id).await.0, 200);
    assert!(bed.emulator.set_active_workers(&id, 0));
    queues::wait_gone(&bed, "busy").await;
    assert_eq!(queues::remote(&bed, &id).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_a_provisioning_environment_waits_reconciling_and_goes_on_once_it_is_ready() {
    // The organization's first environment provisions until the test says it is done.
    let provisioning =
        kubiya_cp_emulator::Config { provisioning: Duration::from_secs(3600), ..Default::default() };
    let bed = TestBed::start("queue-provisioning", provisioning).await;
    bed.create(ENV, EnvironmentSpec::default()).await;
    let env = bed.wait_for(ENV, "Provisioning", |e| phase(e) == Some(Phase::Provisioning)).await;
    let env_id = id_of(&env);

    queues::create(&bed, "gpu", queues::of(ENV)).await;
    let q =
        queues::wait(&bed, "gpu", "waiting, Reconciling", says("Reconciling", "EnvironmentNotReady")).await;
    assert_eq!(condition(&q, "Stalled").map(|c| c.0).as_deref(), Some("False"), "a wait, not a failure");
    assert_eq!(crate::support::health::argo(&q).0, "Progressing");
    let text = queues::message(&q);
    assert!(text.contains("\"production\"") && text.contains("provision"), "{text}");
    assert_eq!(bed.calls("POST /api/v1/environments/{id}/worker-queues"), 0, "nothing created yet");
    let events = bed.events("gpu").await;
    assert!(!events.iter().any(|(r, _)| r == "EnvironmentNotReady"), "a wait is no Warning: {events:?}");

    let (code, body) =
        bed.cp("PATCH", &format!("/api/v1/environments/{env_id}"), Some(json!({"status": "ready"}))).await;
    assert_eq!(code, 200, "{body}");
    bed.wait_for(ENV, "Ready", is_ready).await;
    let q = queues::wait(&bed, "gpu", "Ready", queue_ready).await;
    assert_eq!(q.status.and_then(|s| s.environment_id).as_deref(), Some(env_id.as_str()));
    assert_eq!(queues::remote_of(&bed, &env_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_queue_is_refused_in_an_environment_that_is_only_observed() {
    let bed = TestBed::start("queue-in-observed", ready_now()).await;
    let (code, made) = bed.cp("POST", "/api/v1/environments", Some(json!({"name": "shared"}))).await;
    assert_eq!(code, 201, "{made}");
    let observed = EnvironmentSpec {
        name: Some("shared".into()),
        management_policy: ManagementPolicy::Observe,
        ..EnvironmentSpec::default()
    };
    bed.create(ENV, observed).await;
    bed.wait_for(ENV, "Ready", is_ready).await;

    queues::create(&bed, "gpu", queues::of(ENV)).await;
    let q = queues::wait(&bed, "gpu", "Stalled", says("Stalled", "EnvironmentObserved")).await;
    let text = queues::message(&q);
    assert!(text.contains("observe"), "says what to do: {text}");
    assert_eq!(bed.calls("POST /api/v1/environments/{id}/worker-queues"), 0, "nothing written");
    assert!(queues::remote_of(&bed, made["id"].as_str().unwrap()).await.is_empty());
    bed.wait_event("gpu", "EnvironmentObserved").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observed_queue_is_read_reported_and_never_written() {
    let (bed, env_id) = with_environment("queue-observe").await;
    let (code, made) = bed
        .cp(
            "POST",
            &format!("/api/v1/environments/{env_id}/worker-queues"),
            Some(json!({"name": "shared", "max_workers": 4})),
        )
        .await;
    assert_eq!(code, 201, "{made}");
    let spec = WorkerQueueSpec {
        management_policy: ManagementPolicy::Observe,
        max_workers: Some(2),
        ..queues::of(ENV)
    };
    queues::create(&bed, "shared", spec).await;
    let q = queues::wait(&bed, "shared", "Ready and Synced False", |q| {
        queue_ready(q) && condition(q, "Synced").is_some_and(|(s, _)| s == "False")
    })
    .await;
    assert_eq!(queues::id_of(&q), made["id"].as_str().unwrap());
    bed.wait_event("shared", "Drifted").await;
    let (_, r) = queues::remote(&bed, made["id"].as_str().unwrap()).await;
    assert_eq!(r["max_workers"], 4, "not corrected");
    assert!(r["settings"].get("kubiya.ai/owner").is_none(), "no marker written: {r}");
    assert_eq!(bed.calls("PATCH /api/v1/worker-queues/{id}"), 0);
}

/// Tried as the attacker: a user with rights in one namespace only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_queue_is_taken_from_its_owner_nor_reached_from_another_namespace() {
    let mut bed = TestBed::without_operator("queue-tenancy", ready_now()).await;
    let team = format!("team-{:08x}", fastrand::u32(..));
    bed.own_namespace(&team).await;
    bed.operator_env.push(("KUBIYA_WATCH_NAMESPACES", format!("{},{team}", bed.namespace)));
    bed.start_operator();
    environment(&bed).await;
    queues::create(&bed, "gpu", queues::of(ENV)).await;
    let q = queues::wait(&bed, "gpu", "Ready", queue_ready).await;
    let id = queues::id_of(&q);

    // In the same namespace, a second resource pointed at the live queue: refused.
    queues::create_annotated(
        &queues::api(&bed),
        "copy",
        &[("kubiya.ai/worker-queue-id", &id)],
        queues::of(ENV),
    )
    .await
    .unwrap();
    let copy = queues::wait(&bed, "copy", "refused", says("Stalled", "OwnedElsewhere")).await;
    assert!(queues::message(&copy).contains("WorkerQueue gpu"), "{}", queues::message(&copy));

    // Mallory, in her own namespace: her own Environment, and queues pointed at ours.
    let mallory = bed.tenant(&team, &[]).await;
    let envs: Api<kubiya_operator::resource::Environment> = Api::namespaced(mallory.clone(), &team);
    envs.create(
        &Default::default(),
        &kubiya_operator::resource::Environment::new("mine", EnvironmentSpec::default()),
    )
    .await
    .unwrap();
    let theirs: Api<kubiya_operator::resource::WorkerQueue> = Api::namespaced(mallory.clone(), &team);
    queues::create_annotated(&theirs, "steal", &[("kubiya.ai/worker-queue-id", &id)], queues::of("mine"))
        .await
        .unwrap();
    queues::create_annotated(&theirs, "reach", &[], queues::of(ENV)).await.unwrap();
    let steal = queues::wait_in(&bed, &theirs, "steal", "refused", says("Stalled", "OtherEnvironment")).await;
    let reach =
        queues::wait_in(&bed, &theirs, "reach", "not found", says("Stalled", "EnvironmentNotFound")).await;
    for q in [&steal, &reach] {
        let text = serde_json::to_string(&q.status).unwrap();
        assert!(!text.contains(&bed.namespace), "names the other namespace: {text}");
        assert!(q.status.as_ref().and_then(|s| s.worker_secret_name.as_ref()).is_none());
    }
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &team);
    assert!(secrets.get_opt("steal-worker").await.unwrap().is_none(), "no worker Secret for her");
    let (_, r) = queues::remote(&bed, &id).await;
    assert_eq!(r["settings"]["kubiya.ai/owner"]["uid"], json!(q.metadata.uid), "still ours");
    assert_eq!(bed.calls("PATCH /api/v1/worker-queues/{id}"), 0, "nothing written to it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_deleted_with_orphan_leaves_its_queues_with_it() {
    let (bed, env_id) = with_environment("queue-env-orphan").await;
    queues::create(&bed, "kept", queues::of(ENV)).await;
    let id = queues::id_of(&queues::wait(&bed, "kept", "Ready", queue_ready).await);
    bed.annotate(ENV, "kubiya.ai/deletion-policy", Some("Orphan")).await;
    // Both deleted at once, as a prune or a namespace deletion does.
    bed.envs.delete(ENV, &DeleteParams::default()).await.unwrap();
    queues::api(&bed).delete("kept", &DeleteParams::default()).await.unwrap();
    queues::wait_gone(&bed, "kept").await;
    bed.wait_gone(ENV).await;
    assert_eq!(bed.cp("GET", &format!("/api/v1/environments/{env_id}"), None).await.0, 200);
    let (code, r) = queues::remote(&bed, &id).await;
    assert_eq!(code, 200, "the queue stays with its environment");
    assert_eq!(r["settings"]["kubiya.ai/owner"]["released"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_the_control_plane_reserves_are_refused_by_the_schema() {
    let bed = TestBed::without_operator("queue-names", ready_now()).await;
    for (name, spec_name) in
        [("default", None), ("x1", Some("default")), ("local-exec-1", None), ("x2", Some("local-exec"))]
    {
        let spec = WorkerQueueSpec { name: spec_name.map(str::to_owned), ..queues::of(ENV) };
        let refused = queues::create_annotated(&queues::api(&bed), name, &[], spec).await;
        assert!(
            matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422),
            "{name}/{spec_name:?}: {refused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_onto_a_name_taken_in_the_environment_is_a_name_conflict_not_an_outage() {
    let (bed, _) = with_environment("queue-rename").await;
    queues::create(&bed, "one", queues::of(ENV)).await;
    queues::create(&bed, "two", queues::of(ENV)).await;
    queues::wait(&bed, "one", "Ready", queue_ready).await;
    let id = queues::id_of(&queues::wait(&bed, "two", "Ready", queue_ready).await);
    let patch = json!({"spec": {"name": "one"}});
    queues::api(&bed).patch("two", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let q = queues::wait(&bed, "two", "refused", says("Stalled", "NameConflict")).await;
    assert!(queues::message(&q).contains("\"one\""), "{}", queues::message(&q));
    assert_eq!(queues::remote(&bed, &id).await.1["name"], "two", "not renamed");
}

/// A queue nested too deep to decode (the API server takes it; no schema bounds the depth) is
/// reported and stops no other queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_cannot_be_decoded_is_reported_and_stops_no_other() {
    let (bed, _) = with_environment("queue-deep").await;
    let settings = (0..200).fold(json!(1), |inner, _| json!({ "a": inner }));
    let deep = json!({"apiVersion": "kubiya.ai/v1alpha1", "kind": "WorkerQueue", "metadata": {"name": "deep"},
        "spec": {"environmentRef": {"name": ENV}, "settings": settings}});
    let path = format!("/apis/kubiya.ai/v1alpha1/namespaces/{}/workerqueues", bed.namespace);
    let post = http::Request::post(&path)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&deep).unwrap())
        .unwrap();
    bed.client.request_text(post).await.expect("the API server accepts it");
    queues::create(&bed, "fine", queues::of(ENV)).await;
    queues::wait(&bed, "fine", "Ready", queue_ready).await;
    // Read as text: decoding it is the very thing that fails.
    wait_until("the undecodable queue reported InvalidSpec", || async {
        let get = http::Request::get(format!("{path}/deep")).body(Vec::new()).unwrap();
        bed.client.request_text(get).await.is_ok_and(|t| t.contains("\"reason\":\"InvalidSpec\""))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_writes_nothing_holds_its_deletion_and_goes_on_once_unpaused() {
    let (bed, _) = with_environment("queue-pause").await;
    queues::create(&bed, "held", queues::of(ENV)).await;
    let id = queues::id_of(&queues::wait(&bed, "held", "Ready", queue_ready).await);
    let annotate = |value: Option<&str>| json!({"metadata": {"annotations": {"kubiya.ai/paused": value}}});
    let api = queues::api(&bed);
    api.patch("held", &PatchParams::default(), &Patch::Merge(&annotate(Some("true")))).await.unwrap();
    let q = queues::wait(&bed, "held", "paused", |q| {
        q.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "Paused"))
    })
    .await;
    assert_eq!(crate::support::health::argo(&q).0, "Suspended");
    let writes =
        || bed.calls("PATCH /api/v1/worker-queues/{id}") + bed.calls("DELETE /api/v1/worker-queues/{id}");
    let before = writes();

    // An edit, then a deletion: the deletion holds the finalizer, and neither reaches the
    // control plane (the edit is written by no pass that takes it before the deletion; the
    // deletion's pass writes nothing either).
    let edit = json!({"spec": {"description": "while paused"}});
    api.patch("held", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let q = queues::wait(&bed, "held", "deletion paused", |q| {
        q.metadata.deletion_timestamp.is_some() && queues::message(q).contains("deletion paused")
    })
    .await;
    assert!(q.metadata.finalizers.unwrap_or_default().iter().any(|f| f == "kubiya.ai/worker-queue"));
    let (code, r) = queues::remote(&bed, &id).await;
    assert_eq!(code, 200, "{r}");
    assert_ne!(r["description"], "while paused", "nothing written while paused");
    assert_eq!(writes(), before, "{:?}", bed.emulator.calls());

    // Unpaused, the deletion goes on by its policy (Delete).
    api.patch("held", &PatchParams::default(), &Patch::Merge(&annotate(None))).await.unwrap();
    queues::wait_gone(&bed, "held").await;
    assert_eq!(queues::remote(&bed, &id).await.0, 404, "deleted once unpaused");
}
