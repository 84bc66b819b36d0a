//! The Environment controller's pass. Each pass is a pipeline: **locate** the remote environment
//! (`locate`, the one remote finder) → **decide** what to do (`decide`, pure, over `ownership`,
//! `desired` and the object) → **act** (`act`: thin calls to the control plane) → **report**
//! (`status`, pure, written by `report`). `apply` runs it for a live resource (Full or Observe),
//! `cleanup` for one being deleted. Talks to the Kubernetes API and the control plane.

pub mod act;
mod apply;
mod cleanup;
mod context;
pub mod decide;
pub mod desired;
pub mod env_vars;
mod error;
pub mod locate;
pub mod ownership;
mod report;
pub mod status;
pub mod worker_secret;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::instrument;

pub use context::{Context, EnvironmentChange, Remembered, backoff};
pub use error::{Error, Kind, MAX_RETRY_AFTER};

use crate::k8s::{self, finalizer};
use crate::metrics::ResultLabels;
use crate::resource::{FINALIZER, Guarded, Undecodable};

/// The reconcile entry point: one bounded pass, then failures reported in status and Events.
// `environment`, not `name`: JSON logs put the span's own name under `name`.
#[instrument(skip_all, fields(namespace = obj.namespace().unwrap_or_default(), environment = obj.name_any()))]
pub async fn reconcile(obj: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match tokio::time::timeout(ctx.pass_timeout, pass(&obj, &ctx)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(ctx.pass_timeout)),
    };
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind().metric,
    };
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: label }).inc();
    match result {
        Ok(action) => {
            ctx.succeeded(obj.as_ref());
            Ok(action)
        }
        Err(e) => {
            report::failure(&obj, &e, &ctx).await;
            Err(e)
        }
    }
}

/// The finalizer hand-off: deletion runs the cleanup, which may hold the finalizer (paused);
/// anything else first makes sure the finalizer is there, then applies.
async fn pass(obj: &Guarded, ctx: &Context) -> Result<Action, Error> {
    let api: Api<Guarded> = Api::namespaced(ctx.kube.clone(), &obj.namespace().ok_or(Error::Unnamed)?);
    let env = match &obj.0 {
        Ok(env) => env,
        Err(bad) => return undecodable(&api, obj, bad, ctx).await,
    };
    if env.metadata.deletion_timestamp.is_some() {
        if !finalizer::present(obj, FINALIZER) {
            return Ok(Action::await_change());
        }
        return match cleanup::cleanup(env, ctx).await? {
            cleanup::Outcome::Done => {
                finalizer::remove(&api, obj, FINALIZER).await?;
                ctx.forget(&env.uid().unwrap_or_default());
                Ok(Action::await_change())
            }
            cleanup::Outcome::Hold(action) => Ok(action),
        };
    }
    if !finalizer::present(obj, FINALIZER) {
        // The finalizer is in place before the first remote write. Its watch event starts the
        // next pass (and would start one anyway, right after this one, if this went on).
        finalizer::add(&api, obj, FINALIZER).await?;
        return Ok(Action::await_change());
    }
    apply::apply(env, ctx).await
}

/// An Environment that cannot be decoded is reported (status, Event) and never touched remotely;
/// deleting it lets its finalizer go, leaving its remote environment, if any, where it is.
async fn undecodable(
    api: &Api<Guarded>,
    obj: &Guarded,
    bad: &Undecodable,
    ctx: &Context,
) -> Result<Action, Error> {
    if bad.metadata.deletion_timestamp.is_some() {
        if finalizer::present(obj, FINALIZER) {
            finalizer::remove(api, obj, FINALIZER).await?;
            let note = "deleted without touching the control plane: the Environment could not be \
                        decoded, so its remote environment (if any) was left as it is"
                .to_owned();
            k8s::events::publish(&ctx.recorder, obj, EventType::Warning, "LeftRemote", note).await;
        }
        return Ok(Action::await_change());
    }
    Err(Error::Undecodable { error: bad.error.clone() })
}

/// What the controller does after a failed pass: see [`retries_slowly`] and [`retry_delay`].
pub fn error_policy(obj: Arc<Guarded>, error: &Error, ctx: Arc<Context>) -> Action {
    let deleting = obj.meta().deletion_timestamp.is_some();
    if retries_slowly(error, deleting) {
        return ctx.resync_action();
    }
    let backoff = context::backoff(ctx.failed(obj.as_ref()), fastrand::f64());
    Action::requeue(retry_delay(error, backoff))
}

/// Whether a failure is tried again only at the resync interval. Permanent errors are, so that a
/// cause that went away (a foreign environment deleted, a key fixed) heals without an edit;
/// but not during deletion, which must be able to end. An object waiting for its connection is
/// too, even during deletion: the connection's next change wakes it sooner (retrying meanwhile
/// would only write Events, hundreds at a time when an organisation is down).
fn retries_slowly(error: &Error, deleting: bool) -> bool {
    (error.is_permanent() && !deleting) || error.waits_for_connection()
}

/// How long to wait before the next try: the per-object `backoff`, or as long as the server
/// asked if that is longer (capped at [`MAX_RETRY_AFTER`]).
fn retry_delay(error: &Error, backoff: Duration) -> Duration {
    error.retry_after().map_or(backoff, |asked| asked.max(backoff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Unusable;
    use crate::controlplane;

    fn throttled(secs: u64) -> Error {
        Error::CreateRemote {
            source: controlplane::Error::api(
                "POST",
                "/x",
                429,
                "slow down".into(),
                Some(Duration::from_secs(secs)),
            ),
        }
    }

    #[test]
    fn the_server_is_waited_for_as_long_as_it_asks_up_to_the_cap_and_never_less_than_the_backoff() {
        let backoff = Duration::from_secs(4);
        assert_eq!(retry_delay(&throttled(7), backoff), Duration::from_secs(7));
        assert_eq!(retry_delay(&throttled(1), backoff), backoff, "the backoff is longer");
        assert_eq!(retry_delay(&throttled(100_000_000), backoff), MAX_RETRY_AFTER, "capped");
        let down =
            Error::GetRemote { source: controlplane::Error::api("GET", "/x", 503, "down".into(), None) };
        assert_eq!(retry_delay(&down, backoff), backoff);
    }

    #[test]
    fn permanent_failures_wait_for_the_resync_except_during_deletion_and_connections_are_waited_for() {
        let conflict = Error::SecretConflict { name: "s".into() };
        assert!(retries_slowly(&conflict, false));
        assert!(!retries_slowly(&conflict, true), "a deletion must be able to end");
        assert!(!retries_slowly(&throttled(1), false), "transient: backoff");
        let waiting = Error::Connection(Unusable::NotReady {
            connection: "c".into(),
            why: "w".into(),
            permanent: false,
        });
        assert!(retries_slowly(&waiting, false) && retries_slowly(&waiting, true));
        let missing = Error::Connection(Unusable::NotFound { connection: "c".into() });
        assert!(retries_slowly(&missing, false));
        assert!(!retries_slowly(&missing, true));
    }
}
