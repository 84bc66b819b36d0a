//! The WorkerQueue controller's pass: the Environment's pipeline (locate → decide → act →
//! report) for a worker queue of an Environment of the same namespace. It shares the
//! Environment's context (connections, namespaces, what is remembered per object), its search
//! (`reconcile::locate::search`) and its ownership table (`reconcile::ownership`); what differs is
//! in `decide` (a queue lives in one environment) and `desired`. Talks to the Kubernetes API and
//! the control plane.

mod apply;
pub mod decide;
pub mod deployment;
pub mod desired;
mod error;
pub mod secret;
pub mod status;
pub mod workers;

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{instrument, warn};

pub use error::Error;

use crate::k8s::{self, finalizer};
use crate::metrics::ResultLabels;
use crate::reconcile::Context;
use crate::resource::{Guarded, QUEUE_FINALIZER, Undecodable, WorkerQueue};

/// How long a queue waiting for its Environment waits, at most, for a look of its own (jittered
/// up to twice that).
const ENVIRONMENT_POLL: std::time::Duration = std::time::Duration::from_secs(15);

/// A WorkerQueue as read from the API server (one that cannot be decoded stops no other).
pub type GuardedQueue = Guarded<WorkerQueue>;

/// The reconcile entry point: one bounded pass, then failures reported in status and Events.
#[instrument(skip_all, fields(namespace = obj.namespace().unwrap_or_default(), worker_queue = obj.name_any()))]
pub async fn reconcile(obj: Arc<GuardedQueue>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match tokio::time::timeout(ctx.pass_timeout, pass(&obj, &ctx)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(ctx.pass_timeout)),
    };
    ctx.metrics.queue_reconcile_duration.observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind().metric,
    };
    ctx.metrics.queue_reconciles.get_or_create(&ResultLabels { result: label }).inc();
    match result {
        Ok(action) => {
            ctx.succeeded(obj.as_ref());
            Ok(action)
        }
        Err(e) => {
            failure(&obj, &e, &ctx).await;
            Err(e)
        }
    }
}

async fn pass(obj: &GuardedQueue, ctx: &Context) -> Result<Action, Error> {
    let api: Api<GuardedQueue> = Api::namespaced(ctx.kube.clone(), &obj.namespace().ok_or(Error::Unnamed)?);
    let queue = match &obj.0 {
        Ok(queue) => queue,
        Err(bad) => return undecodable(&api, obj, bad, ctx).await,
    };
    if queue.metadata.deletion_timestamp.is_some() {
        if !finalizer::present(obj, QUEUE_FINALIZER) {
            return Ok(Action::await_change());
        }
        return match apply::cleanup(queue, ctx).await? {
            None => {
                finalizer::remove(&api, obj, QUEUE_FINALIZER).await?;
                ctx.forget(&queue.uid().unwrap_or_default());
                Ok(Action::await_change())
            }
            Some(action) => Ok(action),
        };
    }
    if !finalizer::present(obj, QUEUE_FINALIZER) {
        finalizer::add(&api, obj, QUEUE_FINALIZER).await?;
        return Ok(Action::await_change());
    }
    apply::apply(queue, ctx).await
}

/// A WorkerQueue that cannot be decoded is reported and never touched remotely; deleting it lets
/// its finalizer go, leaving its remote queue, if any, where it is.
async fn undecodable(
    api: &Api<GuardedQueue>,
    obj: &GuardedQueue,
    bad: &Undecodable,
    ctx: &Context,
) -> Result<Action, Error> {
    if bad.metadata.deletion_timestamp.is_some() {
        if finalizer::present(obj, QUEUE_FINALIZER) {
            finalizer::remove(api, obj, QUEUE_FINALIZER).await?;
            let note =
                "deleted without touching the control plane: the WorkerQueue could not be decoded, so \
                        its remote queue (if any) was left as it is"
                    .to_owned();
            k8s::events::publish(&ctx.recorder, obj, EventType::Warning, "LeftRemote", note).await;
        }
        return Ok(Action::await_change());
    }
    Err(Error::Undecodable { error: bad.error.clone() })
}

/// What the controller does after a failed pass: as an Environment's (`reconcile::error_policy`).
pub fn error_policy(obj: Arc<GuardedQueue>, error: &Error, ctx: Arc<Context>) -> Action {
    let deleting = obj.meta().deletion_timestamp.is_some();
    // The Environment's status changes wake the queue; this is only the net under a missed one
    // (a look at the caches, no remote call).
    if let Error::EnvironmentNotReady { .. } = error
        && !deleting
    {
        return Action::requeue(ENVIRONMENT_POLL.mul_f64(1.0 + fastrand::f64()));
    }
    if (error.is_permanent() && !deleting) || error.waits_for_connection() {
        return ctx.resync_action();
    }
    let backoff = crate::reconcile::backoff(ctx.failed(obj.as_ref()), fastrand::f64());
    Action::requeue(error.retry_after().map_or(backoff, |asked| asked.max(backoff)))
}

/// Puts a failure where users look: status (best effort) and a Warning Event.
async fn failure(obj: &GuardedQueue, error: &Error, ctx: &Context) {
    let message = error.explain();
    warn!(reason = error.reason(), permanent = error.is_permanent(), "{message}");
    let written = match &obj.0 {
        _ if matches!(error, Error::Kube(k8s::Error { op: k8s::Op::WriteStatus, .. })) => Ok(()),
        Ok(queue) => apply::report(queue, status::Outcome::Failed(error), ctx).await,
        // The same fields as an undecodable Environment's status.
        Err(_) => {
            let now = Time(Timestamp::now());
            apply::write(
                obj,
                ctx,
                crate::reconcile::status::undecodable(obj.meta().generation, &message, &now),
            )
            .await
        }
    };
    if let Err(e) = written {
        warn!(error = %e.explain(), "could not record the failure in status");
    }
    // Waiting for its Environment is no failure anyone need be told of twice: status says it.
    if !matches!(error, Error::EnvironmentNotReady { .. }) {
        k8s::events::publish(&ctx.recorder, obj, EventType::Warning, error.reason(), message).await;
    }
}
