//! Act: the executors of a decided plan, each a thin call to the control plane or the Kubernetes
//! API, and the Events a decision says to publish once it is carried out.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::context::Context;
use super::decide::{Cause, Note};
use super::desired::{Changes, Wire, marking};
use super::error::Error;
use super::ownership::{Liveness, Marker, Owner};
use crate::controlplane::{self, EnvironmentBody, RemoteEnvironment};
use crate::k8s::{self, Op, events};
use crate::metrics::FieldLabels;
use crate::resource::{Environment, Guarded};
use kube::Resource;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Creates the remote environment; `None` when its name is taken (409): by this resource (a
/// create whose answer was lost), by one it may take back, or by someone else.
pub async fn create(
    env: &Environment,
    desired: &EnvironmentBody,
    cp: &controlplane::Client,
    ctx: &Context,
) -> Result<Option<RemoteEnvironment>, Error> {
    match cp.create(desired).await {
        Ok(remote) => {
            ctx.remember_id(env, Some(&remote.id));
            // No Event: the status records the new id, and each Event is one more API-server
            // write per environment.
            info!(environment_id = %remote.id, "created remote environment");
            Ok(Some(remote))
        }
        Err(e) if e.is_conflict() => Ok(None),
        Err(source) => Err(Error::CreateRemote { source }),
    }
}

/// One PATCH of `changes`, said in the log and counted as its cause asks.
pub async fn update(
    cp: &controlplane::Client,
    remote: &RemoteEnvironment,
    changes: &Changes,
    cause: &Cause,
    ctx: &Context,
) -> Result<RemoteEnvironment, Error> {
    let updated =
        cp.update(&remote.id, &changes.body()).await.map_err(|source| Error::UpdateRemote { source })?;
    let fields = changes.names();
    match cause {
        Cause::Marker => info!(environment_id = %remote.id, "wrote the owner marker"),
        Cause::Drift => {
            info!(environment_id = %remote.id, fields = %fields, "corrected drift");
            for f in changes.fields() {
                ctx.metrics.drift_corrections.get_or_create(&FieldLabels { field: f.wire() }).inc();
            }
        }
        Cause::Spec => info!(environment_id = %remote.id, fields = %fields, "updated remote environment"),
        Cause::Claim(claim) => info!(environment_id = %remote.id, ?claim, "took the remote environment"),
    }
    Ok(updated)
}

/// Marks the owner marker released (one PATCH of `settings`): the same namespace and name may
/// take it back, anyone else with the adoption annotation.
pub async fn release(cp: &controlplane::Client, remote: &RemoteEnvironment) -> Result<(), Error> {
    let Some(mut marker) = Marker::read(&remote.settings) else { return Ok(()) };
    marker.released = true;
    match cp.update(&remote.id, &marking(remote, &marker).body()).await {
        Ok(_) => {
            info!(environment_id = %remote.id, "released the remote environment");
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(source) => Err(Error::ReleaseRemote { source }),
    }
}

/// Deletes the remote environment ("not found" is success).
pub async fn delete(cp: &controlplane::Client, remote: &RemoteEnvironment) -> Result<(), Error> {
    cp.delete(&remote.id).await.map_err(|source| Error::DeleteRemote { source })?;
    info!(environment_id = %remote.id, "deleted remote environment");
    Ok(())
}

/// Publishes what a decision says about `obj` (an Environment, a WorkerQueue), once it is
/// carried out.
pub async fn publish<K: Resource<DynamicType = ()>>(obj: &K, notes: Vec<Note>, ctx: &Context) {
    for note in notes {
        let type_ = if note.warning { EventType::Warning } else { EventType::Normal };
        events::publish(&ctx.recorder, obj, type_, note.reason, note.message).await;
    }
}

/// This object as an owner marker names it; its namespace's UID is read (at most every few
/// seconds).
pub async fn me(env: &Environment, ctx: &Context) -> Result<Owner, Error> {
    let namespace = env.metadata.namespace.as_deref().ok_or(Error::Unnamed)?;
    let created = env.metadata.creation_timestamp.as_ref();
    let facts = ctx.connections.namespaces.get(namespace, created, &ctx.kube).await?;
    Ok(ctx.owner(env, facts.uid))
}

/// Whether the object of kind `K` (an Environment, a WorkerQueue) a marker names still exists:
/// same namespace and name, same UID.
pub async fn liveness<K>(owner: &Owner, ctx: &Context) -> Result<Liveness, k8s::Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<Guarded<K>> = Api::namespaced(ctx.kube.clone(), &owner.namespace);
    match api.get_metadata_opt(&owner.name).await {
        Ok(Some(found)) if found.metadata.uid.as_deref() == Some(owner.uid.as_str()) => Ok(Liveness::Live),
        Ok(_) => Ok(Liveness::Gone),
        // Not allowed to look in that namespace (a namespaced install): assume it lives.
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(Liveness::Unknown),
        Err(source) => Err(k8s::Error::new(Op::ReadOwner, source)),
    }
}

/// Whether the CRD of `K` is being deleted, or is gone: deletions then release instead of
/// deleting.
pub async fn crd_is_going<K: CustomResourceExt>(ctx: &Context) -> Result<bool, k8s::Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.kube.clone());
    let crd = crds.get_opt(K::crd_name()).await.map_err(k8s::failed(Op::ReadCrd))?;
    if crd.as_ref().is_none_or(|c| c.metadata.deletion_timestamp.is_some()) {
        warn!(
            crd = K::crd_name(),
            "the CRD is being deleted: releasing remote objects instead of deleting them"
        );
        return Ok(true);
    }
    Ok(false)
}
