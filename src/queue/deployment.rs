//! The workers' Deployment through the Kubernetes API: made what `spec.workers` asks
//! ([`ensure`]), drained before the queue goes ([`drain`]), and removed when the spec no longer
//! asks for workers or the queue is no longer this resource's ([`remove`]). What to write is
//! decided in `queue::workers`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::error::Error;
use super::secret::{is_owned, was_owned_before};
use super::workers::{self, Change, Inputs, Invalid, Progress};
use crate::controlplane::RemoteQueue;
use crate::k8s::{self, Op, events};
use crate::reconcile::Context;
use crate::resource::{MANAGER, WorkerQueue};

/// What a pass saw of the workers, for status.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub deployment: String,
    /// The Deployment's pods and ready pods.
    pub replicas: i32,
    pub ready: i32,
    /// Its generation after the operator's last write.
    pub generation: Option<i64>,
    /// When the operator last rolled out a new template (not a create, nor a scale): the queue's
    /// count may include the replaced workers for [`workers::ACTIVE_WINDOW`] after it.
    pub rolled_out_at: Option<Time>,
    pub standing: Standing,
}

/// Where the workers stand.
#[derive(Clone, Debug, PartialEq)]
pub enum Standing {
    /// `spec.workers` cannot be rendered; the Deployment, if any, is left as it is.
    Invalid(Invalid),
    /// The Secret `apiKeySecretRef` names does not exist in the namespace.
    KeySecretMissing {
        name: String,
        key: String,
    },
    Running(Progress),
}

/// Makes the workers' Deployment what `spec.workers` asks, for the queue `remote`; None when the
/// spec asks for no workers (a Deployment of earlier workers is removed).
pub async fn ensure(
    queue: &WorkerQueue,
    remote: &RemoteQueue,
    control_plane_url: &str,
    ctx: &Context,
) -> Result<Option<Seen>, Error> {
    let Some(spec) = &queue.spec.workers else {
        remove(queue, ctx, None).await?;
        return Ok(None);
    };
    let ns = queue.namespace().ok_or(Error::Unnamed)?;
    let name = workers::deployment_name(queue);
    let mut observed = cached(ctx, &ns, &name);
    let last = queue.status.as_ref().and_then(|s| s.workers.as_ref());
    let written = last.and_then(|w| w.deployment_generation).max(ctx.written_generation(queue));
    let mut rolled_out_at = last.and_then(|w| w.rolled_out_at.clone());
    // Nothing written: the Deployment, if any, stays as it is, and status says why.
    let invalid = |observed: Option<&Deployment>, rolled_out_at, invalid| {
        let (replicas, ready) = workers::counts(observed);
        let standing = Standing::Invalid(invalid);
        Some(Seen { deployment: name.clone(), replicas, ready, generation: written, rolled_out_at, standing })
    };
    let inputs = Inputs { queue_id: &remote.id, control_plane_url, default_image: &ctx.worker_image };
    let desired = match workers::render(queue, spec, &inputs) {
        Ok(d) => d,
        Err(why) => return Ok(invalid(observed.as_ref(), rolled_out_at, why)),
    };
    let api: Api<Deployment> = Api::namespaced(ctx.kube.clone(), &ns);
    // The cache holds labelled Deployments only: one of the name without the label is looked
    // for before a first write, never taken over.
    if observed.is_none() {
        observed = api.get_opt(&name).await.map_err(k8s::failed(Op::ReadDeployment))?;
    }
    if let Some(d) = &observed
        && !is_owned(d, queue)
        && !was_owned_before(d, queue)
    {
        return Err(Error::DeploymentConflict { name });
    }
    let change = workers::change(&desired, observed.as_ref(), written);
    let current = match (&change, observed) {
        (Change::None, Some(d)) => d,
        (change, observed) => {
            let applied = match api
                .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired))
                .await
            {
                Ok(applied) => applied,
                // Refused as invalid (its validation, an admission policy): the spec's to fix.
                Err(kube::Error::Api(s))
                    if s.code == 400
                        || s.code == 422
                        || (s.code == 403 && s.reason == "Forbidden" && s.message.contains("admission")) =>
                {
                    let why = Invalid::Refused(crate::controlplane::sanitize(&s.message));
                    return Ok(invalid(observed.as_ref(), rolled_out_at, why));
                }
                Err(source) => return Err(k8s::Error::new(Op::WriteDeployment, source).into()),
            };
            ctx.remember_generation(queue, applied.metadata.generation);
            if matches!(change, Change::Template | Change::Edited) && observed.is_some() {
                rolled_out_at = Some(Time(Timestamp::now()));
            }
            announce(queue, &name, change, ctx).await;
            applied
        }
    };
    let progress = workers::progress(&current, remote.active_workers);
    let (replicas, ready) = workers::counts(Some(&current));
    let generation = current.metadata.generation;
    let key = spec.api_key_secret_ref.clone().unwrap_or_default();
    // Only while they are not all registered: a missing key is the likeliest cause, worth a read.
    let standing = match progress {
        Progress::Registered { .. } => Standing::Running(progress),
        _ if !key_exists(ctx, &ns, &key.name).await? => {
            Standing::KeySecretMissing { name: key.name, key: key.key }
        }
        _ => Standing::Running(progress),
    };
    Ok(Some(Seen { deployment: name, replicas, ready, generation, rolled_out_at, standing }))
}

/// Says what a write to the Deployment was for, when it puts back someone else's change.
async fn announce(queue: &WorkerQueue, name: &str, change: &Change, ctx: &Context) {
    let note = match change {
        Change::None | Change::Create | Change::Template | Change::Resize => {
            info!(deployment = %name, ?change, "applied the workers' Deployment");
            return;
        }
        Change::Scaled { to } => format!(
            "Deployment {name} was scaled to {to} directly; put back to {}: scale the WorkerQueue instead \
             (kubectl scale workerqueue/{} --replicas={to}), or point an HPA at it",
            queue.spec.workers.as_ref().map_or(0, |w| w.replicas),
            queue.name_any()
        ),
        Change::Edited => format!(
            "Deployment {name} was changed outside its WorkerQueue; the operator's fields were applied again \
             (fields it does not set, such as a rollout restart, stay): change spec.workers instead"
        ),
    };
    info!(deployment = %name, ?change, "put the workers' Deployment back");
    events::publish(&ctx.recorder, queue, EventType::Warning, "DeploymentChanged", note).await;
}

/// Whether the Secret `name` of `namespace` exists (its metadata only is read: never the key).
async fn key_exists(ctx: &Context, namespace: &str, name: &str) -> Result<bool, Error> {
    if name.is_empty() {
        return Ok(false);
    }
    let api: Api<Secret> = Api::namespaced(ctx.kube.clone(), namespace);
    let found = api.get_metadata_opt(name).await.map_err(k8s::failed(Op::ReadSecret))?;
    Ok(found.is_some())
}

/// The Deployment `namespace/name` as the cache holds it (slimmed: no pod template).
fn cached(ctx: &Context, namespace: &str, name: &str) -> Option<Deployment> {
    let key = ObjectRef::<Deployment>::new(name).within(namespace);
    ctx.deployments.iter().find_map(|s| s.get(&key)).map(|d| Deployment::clone(&d))
}

/// Whether the queue's workers are all gone: the Deployment is scaled to 0, and deleted once
/// its pods are (the control plane refuses to delete a queue while workers are active). None
/// yet: `Some(n)` pods still run.
pub async fn drain(queue: &WorkerQueue, ctx: &Context) -> Result<Option<i32>, Error> {
    let ns = queue.namespace().ok_or(Error::Unnamed)?;
    let name = workers::deployment_name(queue);
    if !may_have_workers(queue, ctx, &ns, &name) {
        return Ok(None);
    }
    let api: Api<Deployment> = Api::namespaced(ctx.kube.clone(), &ns);
    let Some(d) = api.get_opt(&name).await.map_err(k8s::failed(Op::ReadDeployment))? else { return Ok(None) };
    if !is_owned(&d, queue) {
        return Ok(None);
    }
    if d.spec.as_ref().and_then(|s| s.replicas) != Some(0) {
        let zero = serde_json::json!({"spec": {"replicas": 0}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&zero))
            .await
            .map_err(k8s::failed(Op::WriteDeployment))?;
        info!(deployment = %name, "scaled the workers to 0 before deleting the queue");
    }
    let (pods, _) = workers::counts(Some(&d));
    if pods > 0 {
        return Ok(Some(pods));
    }
    remove(queue, ctx, Some("the WorkerQueue is being deleted")).await?;
    Ok(None)
}

/// Deletes the workers' Deployment if `queue` controls it (only that one: a UID precondition);
/// `why`, when given, is said in an Event.
pub async fn remove(queue: &WorkerQueue, ctx: &Context, why: Option<&str>) -> Result<(), Error> {
    let ns = queue.namespace().ok_or(Error::Unnamed)?;
    let name = workers::deployment_name(queue);
    if !may_have_workers(queue, ctx, &ns, &name) {
        return Ok(());
    }
    let api: Api<Deployment> = Api::namespaced(ctx.kube.clone(), &ns);
    let Some(d) = api.get_opt(&name).await.map_err(k8s::failed(Op::ReadDeployment))? else { return Ok(()) };
    if !is_owned(&d, queue) {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: d.uid(), resource_version: None }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(()),
        Err(source) => return Err(k8s::Error::new(Op::DeleteDeployment, source).into()),
    }
    let why = why.unwrap_or("spec.workers is gone");
    info!(deployment = %name, why, "deleted the workers' Deployment");
    let note = format!("deleted Deployment {name}: {why}");
    events::publish(&ctx.recorder, queue, EventType::Normal, "WorkersRemoved", note).await;
    Ok(())
}

/// Whether `queue` may have a Deployment of workers: its spec or status says so, or the cache
/// holds one it controls. A queue that never ran workers costs no read.
fn may_have_workers(queue: &WorkerQueue, ctx: &Context, namespace: &str, name: &str) -> bool {
    queue.spec.workers.is_some()
        || queue.status.as_ref().is_some_and(|s| s.workers.is_some())
        || cached(ctx, namespace, name).is_some_and(|d| is_owned(&d, queue))
}

/// What the cache keeps of a workers' Deployment: what [`workers::change`] and
/// [`workers::progress`] read (labels, annotations, owner, generation, replicas, status), not its
/// pod template.
pub fn slim(d: &mut Deployment) {
    crate::resource::slim(d.meta_mut());
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
    }
    // Of a tenant's labelled Deployment, nothing but what these read is kept.
    let meta = d.meta_mut();
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == workers::LABEL);
    }
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k == workers::HASH_ANNOTATION);
    }
    if let Some(owners) = meta.owner_references.as_mut() {
        owners.retain(|o| o.controller == Some(true));
    }
}
