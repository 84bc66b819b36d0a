//! A WorkerQueue's `spec.workers`: the operator runs them as one Deployment it owns, whose pods
//! read the namespace's key by `secretKeyRef`. Scaled through the queue's `/scale` (kubectl
//! scale, as an HPA would), a direct scale of the Deployment put back, Ready only once the
//! workers are available *and* registered, and drained before the queue is deleted. The test
//! API server stores Deployments but runs no controller: the tests write the Deployment's status
//! as its controller would, and the emulator's count of registered workers as heartbeats would.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kubiya_operator::resource::{SecretKeySelector, WorkerQueueSpec, Workers};
use serde_json::json;

use crate::support::queues::{self, is_ready as queue_ready, says};
use crate::support::{TestBed, id_of, is_ready, ready_now, wait_until};

const ENV: &str = "production";
const KEY: &str = "team-a-worker-key";
const KEY_VALUE: &str = "the-workers-own-key-value";

async fn bed(name: &str) -> TestBed {
    let bed = TestBed::start(name, ready_now()).await;
    bed.create(ENV, Default::default()).await;
    id_of(&bed.wait_for(ENV, "Ready", is_ready).await);
    bed
}

async fn key_secret(bed: &TestBed, name: &str) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        string_data: Some([("api-key".to_owned(), KEY_VALUE.to_owned())].into()),
        ..Default::default()
    };
    secrets(bed).create(&PostParams::default(), &secret).await.expect("create the key Secret");
}

fn secrets(bed: &TestBed) -> Api<Secret> {
    Api::namespaced(bed.client.clone(), &bed.namespace)
}

fn deployments(bed: &TestBed) -> Api<Deployment> {
    Api::namespaced(bed.client.clone(), &bed.namespace)
}

/// A queue running `replicas` workers with the key of Secret [`KEY`]; heartbeats every 10 s, so
/// that registrations are looked for every 5 s.
fn with_workers(replicas: i32, template: serde_json::Value) -> WorkerQueueSpec {
    WorkerQueueSpec {
        max_workers: Some(5),
        heartbeat_interval: 10,
        workers: Some(Workers {
            replicas,
            api_key_secret_ref: Some(SecretKeySelector { name: KEY.into(), key: "api-key".into() }),
            template: template.as_object().cloned(),
            ..Default::default()
        }),
        ..queues::of(ENV)
    }
}

/// The Deployment `name` once `cond` holds for it.
async fn wait_deployment(
    bed: &TestBed,
    name: &str,
    what: &str,
    cond: impl Fn(&Deployment) -> bool,
) -> Deployment {
    let api = deployments(bed);
    wait_until(what, || async { api.get_opt(name).await.ok().flatten().is_some_and(|d| cond(&d)) }).await;
    api.get(name).await.expect("the Deployment")
}

fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas)
}

/// Plays the Deployment controller: `pods` pods of the current generation, all available.
async fn run_pods(bed: &TestBed, name: &str, pods: i32) {
    let api = deployments(bed);
    let d = api.get(name).await.expect("the Deployment");
    let status = json!({"status": {"observedGeneration": d.metadata.generation, "replicas": pods,
        "updatedReplicas": pods, "readyReplicas": pods, "availableReplicas": pods}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("write the status");
}

/// `kubectl scale <target> --replicas=<n>` on the bed: what an HPA does through `/scale`.
fn kubectl_scale(bed: &TestBed, target: &str, n: i32) -> (bool, String) {
    crate::support::cli::kubectl(bed, &["scale", target, &format!("--replicas={n}")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queues_workers_are_its_deployment_scaled_through_the_queue_and_ready_once_registered() {
    let bed = bed("workers-run").await;
    key_secret(&bed, KEY).await;
    let template = json!({"spec": {"nodeSelector": {"gpu": "true"},
        "containers": [{"name": "worker", "env": [{"name": "LOG_LEVEL", "value": "debug"}]}]}});
    queues::create(&bed, "gpu", with_workers(2, template)).await;

    // The Deployment: owned by the queue, with the env the real worker reads, the key by reference.
    let d = wait_deployment(&bed, "gpu-workers", "the workers' Deployment", |_| true).await;
    let q = queues::wait(&bed, "gpu", "waiting for its workers", says("Reconciling", "WorkersNotAvailable"))
        .await;
    let id = queues::id_of(&q);
    let owner = &d.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("WorkerQueue", q.metadata.uid.as_deref().unwrap())
    );
    assert_eq!(d.metadata.labels.as_ref().unwrap()["kubiya.ai/worker-queue"], "gpu");
    assert_eq!(replicas(&d), Some(2));
    let pod = d.spec.clone().unwrap().template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["gpu"], "true");
    let worker = &pod.containers[0];
    assert_eq!(worker.image.as_deref(), Some(kubiya_operator::config::DEFAULT_WORKER_IMAGE));
    let env = worker.env.clone().unwrap();
    let value = |n: &str| env.iter().find(|v| v.name == n).and_then(|v| v.value.clone());
    assert_eq!(value("QUEUE_ID"), Some(id.clone()));
    assert_eq!(value("CONTROL_PLANE_URL").as_deref(), Some(bed.control_plane_url.trim_end_matches('/')));
    assert_eq!(value("LOG_LEVEL").as_deref(), Some("debug"));
    let key = env.iter().find(|v| v.name == "KUBIYA_API_KEY").unwrap();
    let by_ref = key.value_from.clone().unwrap().secret_key_ref.unwrap();
    assert_eq!((key.value.as_deref(), by_ref.name.as_str(), by_ref.key.as_str()), (None, KEY, "api-key"));
    let text = serde_json::to_string(&d).unwrap();
    assert!(!text.contains(KEY_VALUE), "the workers' key is never copied into the Deployment");
    assert!(!text.contains(&kubiya_cp_emulator::token(&bed.org)), "nor the operator's");
    let security = worker.security_context.clone().unwrap();
    assert_eq!((security.allow_privilege_escalation, security.run_as_non_root), (Some(false), Some(true)));
    assert_eq!(security.read_only_root_filesystem, Some(true));

    // Available, not registered: not Ready, and it says so with the count.
    run_pods(&bed, "gpu-workers", 2).await;
    let q =
        queues::wait(&bed, "gpu", "available, not registered", says("Reconciling", "WorkersNotRegistered"))
            .await;
    let w = q.status.clone().unwrap().workers.unwrap();
    assert_eq!((w.replicas, w.ready_replicas, w.registered), (2, 2, 0));
    assert!(queues::message(&q).contains("counts 0 registered"), "{}", queues::message(&q));
    assert_eq!(crate::support::health::argo(&q).0, "Progressing");
    // Registered (the queue's heartbeat count): Ready, without an edit.
    assert!(bed.emulator.set_active_workers(&id, 2));
    let q = queues::wait(&bed, "gpu", "Ready with its workers registered", queue_ready).await;
    assert_eq!(q.status.clone().unwrap().workers.unwrap().registered, 2);
    assert_eq!(crate::support::health::argo(&q).0, "Healthy");

    // Scaled through the queue, as an HPA or KEDA would: the Deployment follows.
    let (ok, out) = kubectl_scale(&bed, "workerqueue/gpu", 3);
    assert!(ok, "{out}");
    wait_deployment(&bed, "gpu-workers", "scaled to 3", |d| replicas(d) == Some(3)).await;
    let q = queues::api(&bed).get("gpu").await.unwrap();
    assert_eq!(q.status.unwrap().workers.unwrap().rolled_out_at, None, "a scale is no rollout");
    let scale = queues::api(&bed).get_scale("gpu").await.expect("the queue's /scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(scale.status.and_then(|s| s.selector).as_deref(), Some("kubiya.ai/worker-queue=gpu"));
    // Never past maxWorkers: the API server refuses it.
    let (ok, out) = kubectl_scale(&bed, "workerqueue/gpu", 6);
    assert!(!ok && out.contains("maxWorkers"), "{out}");

    // Scaled directly: put back, with an Event that says what to do instead (and none before:
    // the operator's own writes are not mistaken for someone else's).
    let events = bed.events("gpu").await;
    assert!(events.iter().all(|(reason, _)| reason != "DeploymentChanged"), "{events:?}");
    let seven = json!({"spec": {"replicas": 7}});
    deployments(&bed).patch("gpu-workers", &PatchParams::default(), &Patch::Merge(&seven)).await.unwrap();
    let note = bed.wait_event("gpu", "DeploymentChanged").await;
    assert!(note.contains("scaled to 7") && note.contains("kubectl scale workerqueue/gpu"), "{note}");
    wait_deployment(&bed, "gpu-workers", "put back to 3", |d| replicas(d) == Some(3)).await;
    // Its label taken off (the watch then no longer sees it): put back, as what wakes the queue.
    let unlabel = json!({"metadata": {"labels": {"kubiya.ai/worker-queue": null}}});
    deployments(&bed).patch("gpu-workers", &PatchParams::default(), &Patch::Merge(&unlabel)).await.unwrap();
    wait_deployment(&bed, "gpu-workers", "its label put back", |d| {
        d.metadata.labels.as_ref().and_then(|l| l.get("kubiya.ai/worker-queue")).map(String::as_str)
            == Some("gpu")
    })
    .await;

    // A spec edit reaches the Deployment.
    let image = json!({"spec": {"workers": {"image": "registry.test/kubiya-worker:2"}}});
    queues::api(&bed).patch("gpu", &PatchParams::default(), &Patch::Merge(&image)).await.unwrap();
    wait_deployment(&bed, "gpu-workers", "the new image", |d| {
        d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).map(|p| p.containers[0].image.clone())
            == Some(Some("registry.test/kubiya-worker:2".into()))
    })
    .await;
    // Rolled out: the queue's count may be the replaced workers' for 150 s, so it is not taken
    // for the new ones' (the emulator counts 3, as it would while the old ones' heartbeats last).
    assert!(bed.emulator.set_active_workers(&id, 3));
    run_pods(&bed, "gpu-workers", 3).await;
    let q = queues::wait(&bed, "gpu", "not Ready on the replaced workers' count", |q| {
        says("Reconciling", "WorkersNotRegistered")(q) && queues::message(q).contains("rolled out")
    })
    .await;
    assert!(q.status.unwrap().workers.unwrap().rolled_out_at.is_some());

    // No more workers asked for: the Deployment goes, the queue stays.
    let none = json!({"spec": {"workers": null}});
    queues::api(&bed).patch("gpu", &PatchParams::default(), &Patch::Merge(&none)).await.unwrap();
    wait_until("the Deployment removed", || async {
        deployments(&bed).get_opt("gpu-workers").await.ok().flatten().is_none()
    })
    .await;
    let q = queues::wait(&bed, "gpu", "Ready without workers", |q| {
        queue_ready(q) && q.status.as_ref().is_some_and(|s| s.workers.is_none())
    })
    .await;
    assert_eq!(queues::remote(&bed, &queues::id_of(&q)).await.0, 200);
    bed.assert_no_secret_leaked_including(&[KEY_VALUE]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_drains_its_workers_before_the_queue_is_deleted() {
    let bed = bed("workers-drain").await;
    key_secret(&bed, KEY).await;
    queues::create(&bed, "batch", with_workers(2, json!(null))).await;
    wait_deployment(&bed, "batch-workers", "the workers' Deployment", |_| true).await;
    run_pods(&bed, "batch-workers", 2).await;
    let id = queues::id_of(
        &queues::wait(
            &bed,
            "batch",
            "waiting for registrations",
            says("Reconciling", "WorkersNotRegistered"),
        )
        .await,
    );
    assert!(bed.emulator.set_active_workers(&id, 2));
    queues::wait(&bed, "batch", "Ready", queue_ready).await;

    queues::api(&bed).delete("batch", &DeleteParams::default()).await.unwrap();
    // Scaled to 0 first; the queue waits for the pods, and the remote queue is still there.
    wait_deployment(&bed, "batch-workers", "scaled to 0", |d| replicas(d) == Some(0)).await;
    let q = queues::wait(&bed, "batch", "draining", says("Reconciling", "Draining")).await;
    assert!(queues::message(&q).contains("2 pod(s) still run"), "{}", queues::message(&q));
    assert_eq!(queues::remote(&bed, &id).await.0, 200, "the queue outlives its workers");
    // The pods stop, and their heartbeats with them: the Deployment goes, then the queue.
    run_pods(&bed, "batch-workers", 0).await;
    wait_until("the Deployment deleted", || async {
        deployments(&bed).get_opt("batch-workers").await.ok().flatten().is_none()
    })
    .await;
    assert!(bed.emulator.set_active_workers(&id, 0));
    queues::wait_gone(&bed, "batch").await;
    assert_eq!(queues::remote(&bed, &id).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_need_a_key_of_their_namespace_and_no_queue_is_a_way_around_pod_rights() {
    let bed = bed("workers-key").await;
    // No key: Stalled, and no Deployment made.
    let mut spec = with_workers(1, json!(null));
    spec.workers.as_mut().unwrap().api_key_secret_ref = None;
    queues::create(&bed, "nokey", spec).await;
    let q = queues::wait(&bed, "nokey", "stalled without a key", says("Stalled", "WorkerKeyMissing")).await;
    assert!(queues::message(&q).contains("apiKeySecretRef"), "{}", queues::message(&q));
    assert!(deployments(&bed).get_opt("nokey-workers").await.unwrap().is_none());

    // A key in a Secret that does not exist yet: said so; created, the queue goes on by itself.
    queues::create(&bed, "later", with_workers(1, json!(null))).await;
    let q =
        queues::wait(&bed, "later", "waiting for its key Secret", says("Stalled", "WorkerKeyMissing")).await;
    assert!(queues::message(&q).contains(&format!("Secret {KEY:?}")), "{}", queues::message(&q));
    key_secret(&bed, KEY).await;
    queues::wait(&bed, "later", "going on with its key", says("Reconciling", "WorkersNotAvailable")).await;

    // As a tenant allowed WorkerQueues but not Deployments: the host is not reachable through one.
    let tenant = bed.tenant(&bed.namespace, &["deployments"]).await;
    let theirs: Api<kubiya_operator::resource::WorkerQueue> = Api::namespaced(tenant.clone(), &bed.namespace);
    let denied = Api::<Deployment>::namespaced(tenant, &bed.namespace).list(&Default::default()).await;
    assert!(matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403), "{denied:?}");
    let host =
        json!({"spec": {"hostNetwork": true, "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}});
    let q = kubiya_operator::resource::WorkerQueue::new("escape", with_workers(1, host));
    theirs.create(&PostParams::default(), &q).await.expect("the tenant may create WorkerQueues");
    let q = queues::wait(&bed, "escape", "refused", says("Stalled", "InvalidWorkers")).await;
    assert!(queues::message(&q).contains("host"), "{}", queues::message(&q));
    assert!(deployments(&bed).get_opt("escape-workers").await.unwrap().is_none());

    // A Deployment of that name that is not the queue's is never taken.
    let foreign = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "taken-workers"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "x", "image": "x:1"}]}}}});
    let foreign: Deployment = serde_json::from_value(foreign).unwrap();
    deployments(&bed).create(&PostParams::default(), &foreign).await.unwrap();
    queues::create(&bed, "taken", with_workers(1, json!(null))).await;
    let q = queues::wait(&bed, "taken", "refused", says("Stalled", "DeploymentConflict")).await;
    assert!(queues::message(&q).contains("taken-workers"), "{}", queues::message(&q));
    let d = deployments(&bed).get("taken-workers").await.unwrap();
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0].image.as_deref(),
        Some("x:1"),
        "untouched"
    );
}
