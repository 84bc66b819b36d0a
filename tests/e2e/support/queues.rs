//! WorkerQueues for the tests: the objects, waits on their status, and their remote queues.

use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use kubiya_operator::resource::{EnvironmentRef, WorkerQueue, WorkerQueueSpec};

use super::{TIMEOUT, TestBed};

/// A queue of the Environment `environment`, with the server's default heartbeat.
pub fn of(environment: &str) -> WorkerQueueSpec {
    WorkerQueueSpec {
        environment_ref: EnvironmentRef { name: environment.into() },
        heartbeat_interval: 60,
        ..Default::default()
    }
}

pub fn api(bed: &TestBed) -> Api<WorkerQueue> {
    Api::namespaced(bed.client.clone(), &bed.namespace)
}

pub async fn create(bed: &TestBed, name: &str, spec: WorkerQueueSpec) -> WorkerQueue {
    api(bed).create(&PostParams::default(), &WorkerQueue::new(name, spec)).await.expect("create WorkerQueue")
}

pub async fn create_annotated(
    queues: &Api<WorkerQueue>,
    name: &str,
    annotations: &[(&str, &str)],
    spec: WorkerQueueSpec,
) -> Result<WorkerQueue, kube::Error> {
    let mut q = WorkerQueue::new(name, spec);
    q.metadata.annotations =
        Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
    queues.create(&PostParams::default(), &q).await
}

/// Waits until `cond` holds for the WorkerQueue `name` of `queues`.
pub async fn wait_in(
    bed: &TestBed,
    queues: &Api<WorkerQueue>,
    name: &str,
    what: &str,
    cond: impl Fn(&WorkerQueue) -> bool + Send + 'static,
) -> WorkerQueue {
    let fut = await_condition(queues.clone(), name, move |o: Option<&WorkerQueue>| o.is_some_and(&cond));
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(Ok(Some(q))) => q,
        other => {
            let now = queues.get_opt(name).await.ok().flatten();
            panic!(
                "timed out waiting for WorkerQueue {name} to be {what} ({other:?}); last seen: {}\noperator log:\n{}",
                serde_json::to_string_pretty(&now.map(|q| q.status)).unwrap_or_default(),
                bed.operator_log()
            );
        }
    }
}

pub async fn wait(
    bed: &TestBed,
    name: &str,
    what: &str,
    cond: impl Fn(&WorkerQueue) -> bool + Send + 'static,
) -> WorkerQueue {
    wait_in(bed, &api(bed), name, what, cond).await
}

/// Waits until the WorkerQueue `name` no longer exists.
pub async fn wait_gone(bed: &TestBed, name: &str) {
    let Some(q) = api(bed).get_opt(name).await.expect("get") else { return };
    let uid = q.metadata.uid.clone().unwrap_or_default();
    let fut = await_condition(api(bed), name, kube::runtime::conditions::is_deleted(&uid));
    if tokio::time::timeout(TIMEOUT, fut).await.is_err() {
        panic!(
            "timed out waiting for WorkerQueue {name} to be deleted\noperator log:\n{}",
            bed.operator_log()
        );
    }
}

pub fn condition(q: &WorkerQueue, type_: &str) -> Option<(String, String)> {
    let c = q.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

pub fn is_ready(q: &WorkerQueue) -> bool {
    condition(q, "Ready").is_some_and(|(s, _)| s == "True")
        && q.status.as_ref().and_then(|s| s.observed_generation) == q.metadata.generation
}

/// Stalled, or Reconciling, with `reason`.
pub fn says(type_: &'static str, reason: &'static str) -> impl Fn(&WorkerQueue) -> bool {
    move |q| condition(q, type_).is_some_and(|(s, r)| s == "True" && r == reason)
}

pub fn message(q: &WorkerQueue) -> String {
    q.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default()
}

pub fn id_of(q: &WorkerQueue) -> String {
    q.status.as_ref().and_then(|s| s.queue_id.clone()).expect("queue id")
}

/// The remote queue `id`, read as this test's organisation: (status code, body).
pub async fn remote(bed: &TestBed, id: &str) -> (u16, serde_json::Value) {
    bed.cp("GET", &format!("/api/v1/worker-queues/{id}"), None).await
}

/// The remote queues of environment `environment_id`.
pub async fn remote_of(bed: &TestBed, environment_id: &str) -> Vec<serde_json::Value> {
    let (code, body) =
        bed.cp("GET", &format!("/api/v1/environments/{environment_id}/worker-queues"), None).await;
    assert_eq!(code, 200, "list queues: {body}");
    body.as_array().cloned().unwrap_or_default()
}
