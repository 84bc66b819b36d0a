//! The pass for a resource being deleted: delete the remote environment (or leave it, with
//! `Orphan`), then let the finalizer go. Idempotent: "not found" is success.

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::info;

use super::report::{self, publish};
use super::status::Observation;
use super::{Context, Error, plan};
use crate::resource::{DeletionPolicy, Environment};

pub async fn cleanup(env: &Environment, ctx: &Context) -> Result<Action, Error> {
    if env.is_paused() {
        // Paused means no remote writes, deletion included; the finalizer stays until unpaused.
        report::status(env, Observation::Paused, ctx).await?;
        return Ok(Action::await_change());
    }
    report::status(env, Observation::Deleting, ctx).await?;
    if env.deletion_policy() == DeletionPolicy::Orphan {
        if let Some(id) = ctx.known_id(env).as_deref() {
            info!(environment_id = id, "deletion policy Orphan: leaving the remote environment");
            let note = format!("left environment {id} in the control plane (deletion policy Orphan)");
            publish(env, ctx, EventType::Normal, "Orphaned", note).await;
        }
        ctx.remember_id(env, None);
        return Ok(Action::await_change());
    }
    let id = match ctx.known_id(env) {
        Some(id) => id,
        // No id recorded: a create may still have happened (its answer lost before the status
        // write). Look for our own environment by name and owner marker so that nothing leaks.
        None => {
            let all = ctx.cp.list(None).await.map_err(|source| Error::FindRemote { source })?;
            let uid = env.uid().unwrap_or_default();
            match all.into_iter().find(|r| r.name == env.remote_name() && plan::is_owned_by(r, &uid)) {
                Some(r) => r.id,
                None => return Ok(Action::await_change()),
            }
        }
    };
    ctx.cp.delete(&id).await.map_err(|source| Error::DeleteRemote { source })?;
    ctx.remember_id(env, None);
    info!(environment_id = %id, "deleted remote environment");
    publish(env, ctx, EventType::Normal, "Deleted", format!("deleted environment {id}")).await;
    Ok(Action::await_change())
}
