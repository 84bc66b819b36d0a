//! Reporting: status written through the status subresource only when it changed, and Events,
//! which are best effort.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::status::{self, Observation};
use super::{Context, Error};
use crate::resource::{Environment, Guarded, Phase};

/// Writes the status that follows from `obs`, only when it changed. Returns the phase.
pub async fn status(env: &Environment, obs: Observation<'_>, ctx: &Context) -> Result<Option<Phase>, Error> {
    let now = Time(Timestamp::now());
    let next = status::next(env, obs, &now);
    let phase = next.phase;
    let took = status::time_to_ready(env, &next, &now);
    if status::changed(env.status.as_ref(), &next) {
        let patch = status::merge_patch(env.status.as_ref(), &status::with_sync_time(next, &now));
        write(env, ctx, patch).await?;
    }
    if let Some(took) = took {
        ctx.metrics.time_to_ready.observe(took.as_secs_f64());
    }
    Ok(phase)
}

/// Puts a failure where users look: status (best effort) and a Warning Event.
pub async fn failure(obj: &Guarded, error: &Error, ctx: &Context) {
    let message = error.explain();
    warn!(reason = error.reason(), permanent = error.is_permanent(), "{message}");
    let written = match &obj.0 {
        _ if matches!(error, Error::WriteStatus { .. }) => Ok(()),
        Ok(env) => status(env, Observation::Failed(error), ctx).await.map(drop),
        // No old status to compare with: written on each failed pass, which only a change to
        // the object (or the slow retry of permanent errors) starts.
        Err(_) => {
            write(obj, ctx, status::undecodable(obj.meta().generation, &message, &Time(Timestamp::now())))
                .await
        }
    };
    if let Err(e) = written {
        warn!(error = %e.explain(), "could not record the failure in status");
    }
    publish(obj, ctx, EventType::Warning, error.reason(), message).await;
}

async fn write<K: Resource<DynamicType = ()>>(
    obj: &K,
    ctx: &Context,
    patch: serde_json::Value,
) -> Result<(), Error> {
    let ns = obj.meta().namespace.clone().ok_or(Error::Unnamed)?;
    let name = obj.meta().name.clone().ok_or(Error::Unnamed)?;
    // As `Guarded`: the answer is the whole object, which need not decode.
    let api: Api<Guarded> = Api::namespaced(ctx.kube.clone(), &ns);
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
        .map_err(|source| Error::WriteStatus { source })
}

/// Events are best effort: a failed publish is logged, never fails the pass.
pub async fn publish<K>(obj: &K, ctx: &Context, type_: EventType, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    publish_with(&ctx.recorder, obj, type_, reason, note).await
}

/// [`publish`] with any recorder (the connection controllers have their own context).
pub async fn publish_with<K>(recorder: &Recorder, obj: &K, type_: EventType, reason: &str, mut note: String)
where
    K: Resource<DynamicType = ()>,
{
    // The Events API takes at most 1 kB of note.
    crate::truncate_at_char_boundary(&mut note, 1000);
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, namespace = obj.namespace().unwrap_or_default(), "could not publish event");
    }
}
