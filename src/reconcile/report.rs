//! Report: the status a pass came to, written through the status subresource only when it
//! changed, and failures put where users look (status and a Warning Event). Talks to the
//! Kubernetes API.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::Api;
use kube::runtime::events::EventType;
use tracing::warn;

use super::context::Context;
use super::error::Error;
use super::status::{self, Outcome};
use crate::k8s;
use crate::resource::{Environment, Guarded, Phase};

/// Writes the status that follows from `outcome`, only when it changed. Returns the phase.
pub async fn status(env: &Environment, outcome: Outcome<'_>, ctx: &Context) -> Result<Option<Phase>, Error> {
    let now = Time(Timestamp::now());
    let next = status::next(env, outcome, &now);
    let phase = next.phase;
    let took = status::time_to_ready(env, &next, &now);
    if status::changed(env.status.as_ref(), &next) {
        let patch = k8s::status::merge_patch(env.status.as_ref(), &status::with_sync_time(next, &now));
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
        _ if matches!(error, Error::Kube(k8s::Error { op: k8s::Op::WriteStatus, .. })) => Ok(()),
        Ok(env) => status(env, Outcome::Failed(error), ctx).await.map(drop),
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
    k8s::events::publish(&ctx.recorder, obj, EventType::Warning, error.reason(), message).await;
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
    Ok(k8s::status::patch(&api, &name, patch).await?)
}
