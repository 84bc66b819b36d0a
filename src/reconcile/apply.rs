//! The pass for a live resource: find the remote environment, create or correct it, publish the
//! worker Secret, report.

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::plan::{self, Plan};
use super::report::{self, publish};
use super::status::Observation;
use super::{Context, Error, worker_secret};
use crate::controlplane::{EnvironmentBody, RemoteEnvironment};
use crate::metrics::{FieldLabels, field_label};
use crate::resource::{ADOPT_ANNOTATION, Environment, Phase};

pub async fn apply(env: &Environment, ctx: &Context) -> Result<Action, Error> {
    if env.is_paused() {
        info!(generation = env.metadata.generation, "paused: nothing written to the control plane");
        report::status(env, Observation::Paused, ctx).await?;
        return Ok(Action::await_change());
    }
    // First sight: say that work has started before talking to the control plane.
    if env.status.is_none() && ctx.known_id(env).is_none() {
        report::status(env, Observation::Starting, ctx).await?;
    }

    // Observe.
    let remote = observe(env, ctx).await?;

    // Plan.
    let desired = plan::desired(env);
    let plan = plan::plan(&desired, remote.as_ref());

    // Act.
    let remote = match (plan, remote) {
        (Plan::InSync, Some(remote)) => remote,
        (Plan::Update(fields), Some(remote)) => update(env, &remote, &fields, ctx).await?,
        (_, _) => create(env, &desired, ctx).await?,
    };
    let worker_secret =
        if remote.can_register() { Some(worker_secret::ensure(env, &remote, ctx).await?) } else { None };

    // Report.
    let phase = report::status(env, Observation::Remote { remote: &remote, worker_secret }, ctx).await?;
    Ok(match phase {
        Some(Phase::Provisioning) => Action::requeue(ctx.provisioning_poll),
        _ => ctx.resync_action(),
    })
}

/// The remote environment this object manages, if it exists: by the id in status, else by the
/// adoption annotation. Without either, there is none yet (a lost create is recovered in
/// [`create`], by the owner marker).
async fn observe(env: &Environment, ctx: &Context) -> Result<Option<RemoteEnvironment>, Error> {
    let known = ctx.known_id(env);
    let (id, adopting) = match (known.as_deref(), env.annotation(ADOPT_ANNOTATION)) {
        (Some(id), _) => (id, false),
        (None, Some(id)) => (id.trim(), true),
        (None, None) => return Ok(None),
    };
    match ctx.cp.get(id).await {
        Ok(remote) => {
            let uid = env.uid().unwrap_or_default();
            if plan::owner_uid(&remote).is_some_and(|o| o != uid) {
                return Err(Error::OwnedElsewhere {
                    id: remote.id.clone(),
                    owner: plan::owner_name(&remote),
                });
            }
            if adopting {
                ctx.remember_id(env, Some(&remote.id));
                info!(environment_id = %remote.id, "adopting remote environment");
                let note = format!(
                    "adopted environment {:?} ({}); the spec is now enforced on it",
                    remote.name, remote.id
                );
                publish(env, ctx, EventType::Normal, "Adopted", note).await;
            }
            Ok(Some(remote))
        }
        // Not found, or an id the database cannot even read: nothing to adopt.
        Err(e) if adopting && (e.is_not_found() || !e.is_retryable()) => {
            Err(Error::AdoptMissing { id: id.to_owned() })
        }
        Err(e) if e.is_not_found() => {
            ctx.remember_id(env, None);
            warn!(environment_id = id, "remote environment is gone; creating it again");
            let note = format!("environment {id} no longer exists in the control plane; creating it again");
            publish(env, ctx, EventType::Warning, "Recreating", note).await;
            Ok(None)
        }
        Err(source) => Err(Error::GetRemote { source }),
    }
}

/// Creates the remote environment. A 409 is ours when the same-named environment carries our
/// owner marker (a create whose answer was lost); otherwise it is someone else's: a conflict.
async fn create(
    env: &Environment,
    desired: &EnvironmentBody,
    ctx: &Context,
) -> Result<RemoteEnvironment, Error> {
    match ctx.cp.create(desired).await {
        Ok(remote) => {
            ctx.remember_id(env, Some(&remote.id));
            // No Event: the status records the new id, and each Event is one more API-server
            // write per environment.
            info!(environment_id = %remote.id, "created remote environment");
            // The create body cannot carry the enabled state; a follow-up PATCH sets it.
            match plan::plan(desired, Some(&remote)) {
                Plan::Update(fields) => update(env, &remote, &fields, ctx).await,
                _ => Ok(remote),
            }
        }
        Err(e) if e.is_conflict() => {
            let all = ctx.cp.list(None).await.map_err(|source| Error::FindRemote { source })?;
            let uid = env.uid().unwrap_or_default();
            let ours = all.into_iter().find(|r| r.name == desired.name && plan::is_owned_by(r, &uid));
            let Some(remote) = ours else {
                return Err(Error::NameConflict { name: desired.name.clone() });
            };
            ctx.remember_id(env, Some(&remote.id));
            info!(environment_id = %remote.id, "recovered remote environment created by an earlier pass");
            match plan::plan(desired, Some(&remote)) {
                Plan::Update(fields) => update(env, &remote, &fields, ctx).await,
                _ => Ok(remote),
            }
        }
        Err(source) => Err(Error::CreateRemote { source }),
    }
}

/// One PATCH of the differing fields. When the spec did not change since the last successful
/// pass, the difference is drift (someone changed the environment outside Kubernetes): said so in
/// an Event and counted per field.
async fn update(
    env: &Environment,
    remote: &RemoteEnvironment,
    fields: &Map<String, Value>,
    ctx: &Context,
) -> Result<RemoteEnvironment, Error> {
    let names = fields.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
    let updated = ctx.cp.update(&remote.id, fields).await.map_err(|source| Error::UpdateRemote { source })?;
    let settled = env.status.as_ref().is_some_and(|s| {
        s.environment_id.as_deref() == Some(remote.id.as_str())
            && s.observed_generation == env.metadata.generation
    });
    if settled {
        info!(environment_id = %remote.id, fields = %names, "corrected drift");
        for f in fields.keys() {
            ctx.metrics.drift_corrections.get_or_create(&FieldLabels { field: field_label(f) }).inc();
        }
        let note = format!("corrected fields changed outside Kubernetes: {names}");
        publish(env, ctx, EventType::Normal, "DriftCorrected", note).await;
    } else {
        info!(environment_id = %remote.id, fields = %names, "updated remote environment");
        publish(env, ctx, EventType::Normal, "Updated", format!("updated {names}")).await;
    }
    Ok(updated)
}
