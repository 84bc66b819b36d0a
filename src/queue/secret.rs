//! A queue's worker Secret: what a worker of the queue needs to join it, under the names both
//! worker generations read (`kubiya worker start --queue-id`, and the Python worker's
//! `QUEUE_ID` and `CONTROL_PLANE_URL`). No secret value in it (a worker brings its own API key),
//! but a Secret all the same, so that workers mount it as they mount an Environment's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::events::{EventType, Recorder};
use kube::{Resource, ResourceExt};

use super::error::Error;
use crate::controlplane::{self, QueueCommand, RemoteQueue};
use crate::k8s::{self, Op, events};
use crate::reconcile::worker_secret::{MANAGED_BY, bytes, controller, delete_controlled, is_untouched};
use crate::resource::{MANAGER, WorkerQueue};

pub const QUEUE_ID_KEY: &str = "KUBIYA_QUEUE_ID";
/// The name the Python worker (`kubiya-control-plane-worker`) reads.
pub const PYTHON_QUEUE_ID_KEY: &str = "QUEUE_ID";
pub const CONTROL_PLANE_URL_KEY: &str = "CONTROL_PLANE_URL";
pub const COMMAND_KEY: &str = crate::reconcile::worker_secret::COMMAND_KEY;
/// The keys of the Secret, each of which the operator writes.
pub const KEYS: [&str; 4] = [QUEUE_ID_KEY, PYTHON_QUEUE_ID_KEY, CONTROL_PLANE_URL_KEY, COMMAND_KEY];

/// The Secret for `queue`, owned by it.
pub fn build(queue: &WorkerQueue, cmd: &QueueCommand, control_plane: &str) -> Secret {
    let data = BTreeMap::from([
        (QUEUE_ID_KEY.to_owned(), bytes(&cmd.queue_id)),
        (PYTHON_QUEUE_ID_KEY.to_owned(), bytes(&cmd.queue_id)),
        (CONTROL_PLANE_URL_KEY.to_owned(), bytes(control_plane)),
        (COMMAND_KEY.to_owned(), bytes(&cmd.command)),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(queue.worker_secret_name()),
            namespace: queue.namespace(),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())])),
            owner_references: queue.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Whether `existing` already carries what workers of `remote` need, from `control_plane`.
pub fn is_current(existing: &Secret, queue: &WorkerQueue, remote: &RemoteQueue, control_plane: &str) -> bool {
    let get = |k: &str| existing.data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.as_slice());
    is_owned(existing, queue)
        && is_untouched(&existing.metadata, &KEYS)
        && get(QUEUE_ID_KEY) == Some(remote.id.as_bytes())
        && get(PYTHON_QUEUE_ID_KEY) == Some(remote.id.as_bytes())
        && get(CONTROL_PLANE_URL_KEY) == Some(control_plane.as_bytes())
        && get(COMMAND_KEY).is_some()
}

/// The control plane's URL as workers get it: no user, password, query or fragment (an
/// administrator's URL may carry them; a tenant's namespace gets none of it).
pub fn public_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.as_str().trim_end_matches('/').to_owned()
}

/// Whether `obj` (its worker Secret, its workers' Deployment) is controlled by `queue`.
pub fn is_owned<K: Resource>(obj: &K, queue: &WorkerQueue) -> bool {
    controller(obj).is_some_and(|o| Some(&o.uid) == queue.uid().as_ref())
}

/// Whether `obj` was `queue`'s before it was deleted and applied again (a restore): controlled
/// by a WorkerQueue of the same name, which no longer exists since this one holds the name. It is
/// taken over rather than left to the garbage collector.
pub fn was_owned_before<K: Resource>(obj: &K, queue: &WorkerQueue) -> bool {
    controller(obj).is_some_and(|o| {
        o.kind == "WorkerQueue"
            && o.api_version.starts_with("kubiya.ai/")
            && Some(&o.name) == queue.metadata.name.as_ref()
            && Some(&o.uid) != queue.uid().as_ref()
    })
}

/// Makes the worker Secret current; returns its name. Asks the control plane for the queue's
/// command only when the Secret is missing or stale, and never overwrites a Secret it does not own.
pub async fn ensure(
    queue: &WorkerQueue,
    remote: &RemoteQueue,
    cp: &controlplane::Client,
    kube: &kube::Client,
) -> Result<String, Error> {
    let ns = queue.namespace().ok_or(Error::Unnamed)?;
    let name = queue.worker_secret_name();
    let control_plane = public_url(cp.base_url());
    let api: Api<Secret> = Api::namespaced(kube.clone(), &ns);
    let existing = api.get_opt(&name).await.map_err(k8s::failed(Op::ReadSecret))?;
    if let Some(s) = &existing {
        if !is_owned(s, queue) && !was_owned_before(s, queue) {
            return Err(Error::SecretConflict { name });
        }
        if is_current(s, queue, remote, &control_plane) {
            return Ok(name);
        }
    }
    let cmd = cp.queue_command(&remote.id).await.map_err(|source| Error::QueueCommand { source })?;
    let secret = build(queue, &cmd, &control_plane);
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret))
        .await
        .map_err(k8s::failed(Op::WriteSecret))?;
    Ok(name)
}

/// Deletes the worker Secret `queue`'s status names, if it is `queue`'s: a resource that stops
/// being the queue's owner publishes nothing of it. Says so in an Event.
pub async fn withdraw(queue: &WorkerQueue, kube: &kube::Client, recorder: &Recorder) -> Result<(), Error> {
    let Some(name) = queue.status.as_ref().and_then(|s| s.worker_secret_name.clone()) else { return Ok(()) };
    let ns = queue.namespace().ok_or(Error::Unnamed)?;
    if !delete_controlled(kube, &ns, &name, queue.uid().as_deref()).await? {
        return Ok(());
    }
    let note = format!("deleted worker Secret {name}: this resource no longer manages its queue");
    events::publish(recorder, queue, EventType::Warning, "WorkerSecretDeleted", note).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{EnvironmentRef, WorkerQueueSpec};
    use serde_json::json;

    fn queue(uid: &str) -> WorkerQueue {
        let mut q = WorkerQueue::new(
            "gpu",
            WorkerQueueSpec { environment_ref: EnvironmentRef { name: "prod".into() }, ..Default::default() },
        );
        q.metadata.namespace = Some("ns".into());
        q.metadata.uid = Some(uid.into());
        q
    }

    #[test]
    fn the_secret_carries_the_queue_for_both_worker_generations_and_goes_stale_with_it() {
        let cmd: QueueCommand = serde_json::from_value(json!({"queue_id": "q1",
            "command": "kubiya worker start --queue-id q1", "can_register": true}))
        .unwrap();
        let built = build(&queue("u1"), &cmd, "https://cp.test");
        let remote: RemoteQueue =
            serde_json::from_value(json!({"id": "q1", "environment_id": "e", "name": "gpu"})).unwrap();
        assert!(!is_current(&built, &queue("u1"), &remote, "https://cp.test"), "not written yet");
        let s = crate::reconcile::worker_secret::applied(built);
        let data = s.data.as_ref().unwrap();
        for (k, v) in [
            (QUEUE_ID_KEY, "q1"),
            (PYTHON_QUEUE_ID_KEY, "q1"),
            (CONTROL_PLANE_URL_KEY, "https://cp.test"),
            (COMMAND_KEY, "kubiya worker start --queue-id q1"),
        ] {
            assert_eq!(data[k].0, v.as_bytes(), "{k}");
        }
        assert_eq!(s.metadata.name.as_deref(), Some("gpu-worker"));
        assert!(is_current(&s, &queue("u1"), &remote, "https://cp.test"));
        assert!(!is_current(&s, &queue("u1"), &remote, "https://elsewhere.test"), "another control plane");
        assert!(!is_current(
            &s,
            &queue("u1"),
            &RemoteQueue { id: "q2".into(), ..remote.clone() },
            "https://cp.test"
        ));
        assert!(!is_current(&s, &queue("u2"), &remote, "https://cp.test"), "another owner");
        assert!(was_owned_before(&s, &queue("u2")) && !was_owned_before(&s, &queue("u1")));
        let url = url::Url::parse("https://user:pw@cp.test:8443/base/?token=x#f").unwrap();
        assert_eq!(public_url(&url), "https://cp.test:8443/base");
    }
}
