//! Reporting: status written through the status subresource only when it changed, and Events,
//! which are best effort.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::status::{self, Observation};
use super::{Context, Error};
use crate::resource::{Environment, Phase};

/// Writes the status that follows from `obs`, only when it changed. Returns the phase.
pub async fn status(env: &Environment, obs: Observation<'_>, ctx: &Context) -> Result<Option<Phase>, Error> {
    let now = Time(Timestamp::now());
    let next = status::next(env, obs, &now);
    let phase = next.phase;
    let took = status::time_to_ready(env, &next, &now);
    if status::changed(env.status.as_ref(), &next) {
        let ns = env.namespace().ok_or(Error::Unnamed)?;
        let api: Api<Environment> = Api::namespaced(ctx.kube.clone(), &ns);
        let patch = status::merge_patch(env.status.as_ref(), &status::with_sync_time(next, &now));
        api.patch_status(&env.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|source| Error::WriteStatus { source })?;
    }
    if let Some(took) = took {
        ctx.metrics.time_to_ready.observe(took.as_secs_f64());
    }
    Ok(phase)
}

/// Puts a failure where users look: status (best effort) and a Warning Event.
pub async fn failure(env: &Environment, error: &Error, ctx: &Context) {
    let message = error.explain();
    warn!(reason = error.reason(), permanent = error.is_permanent(), "{message}");
    if !matches!(error, Error::WriteStatus { .. })
        && let Err(e) = status(env, Observation::Failed(error), ctx).await
    {
        warn!(error = %e.explain(), "could not record the failure in status");
    }
    publish(env, ctx, EventType::Warning, error.reason(), message).await;
}

/// Events are best effort: a failed publish is logged, never fails the pass.
pub async fn publish(env: &Environment, ctx: &Context, type_: EventType, reason: &str, mut note: String) {
    // The Events API takes at most 1 kB of note.
    crate::truncate_at_char_boundary(&mut note, 1000);
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &env.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}
