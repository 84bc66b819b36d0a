//! The pass for a resource being deleted: delete the remote environment, or release it (Orphan),
//! or hold the finalizer while paused. Nothing is deleted unless its owner marker names this
//! resource. Idempotent: "not found" is success.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::ownership::{self, Marker, with_marker};
use super::report::{self, publish};
use super::status::Observation;
use super::{Context, Error, find_named};
use crate::controlplane::{self, RemoteEnvironment};
use crate::resource::{DELETION_POLICY_ANNOTATION, DeletionPolicy, Environment, ManagementPolicy};

/// How a cleanup ended.
pub enum Outcome {
    /// The remote side is settled: the finalizer may go.
    Done,
    /// Keep the finalizer (paused); look again as the action says.
    Hold(Action),
}

pub async fn cleanup(env: &Environment, ctx: &Context) -> Result<Outcome, Error> {
    // The deletion defender: while the CRD is going, every Environment is being deleted by the
    // API server, not by anyone who wants the remote environments gone.
    let defended = crd_is_going(ctx).await?;
    let orphan_asked = env.annotation(DELETION_POLICY_ANNOTATION) == Some("Orphan");
    let paused = env.is_paused();
    if env.spec.management_policy == ManagementPolicy::Observe {
        // Only ever read: nothing to delete or release.
        let note =
            "observed only (managementPolicy Observe): the remote environment is left as it is".to_owned();
        publish(env, ctx, EventType::Normal, "Orphaned", note).await;
        return Ok(Outcome::Done);
    }
    if paused && !defended && !orphan_asked {
        report::status(env, Observation::DeletionPaused, ctx).await?;
        return Ok(Outcome::Hold(Action::await_change()));
    }
    report::status(env, Observation::Deleting, ctx).await?;

    let conn = match ctx.connections.for_environment(env, &ctx.kube).await {
        Ok(conn) => conn,
        // Asked to leave it (or the CRD is going): no connection is needed for that.
        Err(e) if orphan_asked || defended => {
            let note = format!("left the remote environment as it is: {}", e.explain());
            publish(env, ctx, EventType::Warning, "LeftRemote", note).await;
            return Ok(Outcome::Done);
        }
        Err(e) => return Err(e),
    };
    let cp = &conn.client;
    let me = ctx.owner(env);
    let Some(remote) = find(env, cp, ctx).await? else { return Ok(Outcome::Done) };
    let marker = Marker::read(&remote.settings);
    if !ownership::may_delete(marker.as_ref(), &me) {
        let holder = marker.map_or_else(|| "no owner".to_owned(), |m| m.owner.to_string());
        warn!(environment_id = %remote.id, "not this resource's: left in the control plane");
        let note = format!(
            "left environment {:?} ({}) in the control plane: its owner marker names {holder}, not this resource",
            remote.name, remote.id
        );
        publish(env, ctx, EventType::Warning, "LeftRemote", note).await;
        return Ok(Outcome::Done);
    }
    if paused {
        let note = format!(
            "left environment {:?} ({}) as it is: the resource is paused, so nothing was written to the control plane",
            remote.name, remote.id
        );
        publish(env, ctx, EventType::Normal, "Orphaned", note).await;
        return Ok(Outcome::Done);
    }
    if defended {
        warn!(environment_id = %remote.id, "the Environment CRD is being deleted: releasing the remote environment instead of deleting it");
        release(&remote, cp).await?;
        let note = format!(
            "the Environment CustomResourceDefinition is being deleted: released environment {:?} ({}) \
             instead of deleting it; re-install the CRD and apply this resource again to manage it again",
            remote.name, remote.id
        );
        publish(env, ctx, EventType::Warning, "Orphaned", note).await;
        return Ok(Outcome::Done);
    }
    match env.deletion_policy() {
        DeletionPolicy::Orphan => {
            release(&remote, cp).await?;
            info!(environment_id = %remote.id, "deletion policy Orphan: released the remote environment");
            let note = format!(
                "released environment {:?} ({}) and left it in the control plane (deletion policy Orphan)",
                remote.name, remote.id
            );
            publish(env, ctx, EventType::Normal, "Orphaned", note).await;
        }
        DeletionPolicy::Delete => {
            cp.delete(&remote.id).await.map_err(|source| Error::DeleteRemote { source })?;
            info!(environment_id = %remote.id, "deleted remote environment");
            publish(env, ctx, EventType::Normal, "Deleted", format!("deleted environment {}", remote.id))
                .await;
        }
    }
    Ok(Outcome::Done)
}

/// The remote environment as it is now: by the recorded id, else (a create whose answer was
/// lost before the status write) by name, if its marker names this resource.
async fn find(
    env: &Environment,
    cp: &controlplane::Client,
    ctx: &Context,
) -> Result<Option<RemoteEnvironment>, Error> {
    match ctx.known_id(env) {
        Some(id) => match cp.get(&id).await {
            Ok(remote) => Ok(Some(remote)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(source) => Err(Error::GetRemote { source }),
        },
        None => {
            let me = ctx.owner(env);
            let named = find_named(cp, env.remote_name()).await?;
            Ok(named.filter(|r| ownership::may_delete(Marker::read(&r.settings).as_ref(), &me)))
        }
    }
}

/// Marks the owner marker released (one PATCH of `settings`): the same namespace and name may
/// take it back, anyone else with the adoption annotation.
pub(super) async fn release(remote: &RemoteEnvironment, cp: &controlplane::Client) -> Result<(), Error> {
    let Some(mut marker) = Marker::read(&remote.settings) else { return Ok(()) };
    marker.released = true;
    let settings = with_marker(&remote.settings, &marker);
    let fields = Map::from_iter([("settings".to_owned(), Value::Object(settings))]);
    match cp.update(&remote.id, &fields).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(source) => Err(Error::ReleaseRemote { source }),
    }
}

/// Whether the Environment CRD is being deleted, or is gone.
async fn crd_is_going(ctx: &Context) -> Result<bool, Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.kube.clone());
    let crd = crds.get_opt(Environment::crd_name()).await.map_err(|source| Error::ReadCrd { source })?;
    Ok(crd.is_none_or(|crd| crd.metadata.deletion_timestamp.is_some()))
}
