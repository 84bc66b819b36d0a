//! One reconcile pass over an `Environment`: observe (control plane) → plan (pure) → act (control
//! plane) → report (status, Events). Talks to the Kubernetes API and the control plane.

mod error;
pub mod plan;
pub mod status;
pub mod worker_secret;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

pub use error::Error;
use plan::Plan;
use status::Observation;

use crate::controlplane::{self, RemoteEnvironment};
use crate::resource::{DeletionPolicy, Environment, EnvironmentStatus, FINALIZER, MANAGER, Phase};

/// Everything a reconcile pass needs, shared by all passes.
pub struct Context {
    /// The Kubernetes client.
    pub kube: kube::Client,
    /// The control-plane client (one connection pool for all passes).
    pub cp: controlplane::Client,
    /// Publishes Events on Environments.
    pub recorder: Recorder,
    /// How often to look again while the control plane provisions.
    pub provisioning_poll: Duration,
    /// How often to compare a settled environment with its spec.
    pub resync: Duration,
    /// Consecutive failures per object, for exponential backoff (kube-runtime has none).
    pub failures: Mutex<HashMap<ObjectRef<Environment>, u32>>,
}

impl Context {
    /// Backoff after the n-th consecutive failure: 1 s, 2 s, 4 s … 5 min, jittered ±25 %.
    fn backoff(&self, env: &Environment) -> Duration {
        let n = {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let n = failures.entry(ObjectRef::from_obj(env)).or_insert(0);
            *n += 1;
            *n
        };
        let secs = (1u64 << (n - 1).min(9)).min(300);
        jitter(Duration::from_secs(secs))
    }

    fn reset_backoff(&self, env: &Environment) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&ObjectRef::from_obj(env));
    }
}

/// The reconcile entry point: the finalizer hand-off, then failures reported in status and Events.
#[instrument(skip_all, fields(namespace = env.namespace().unwrap_or_default(), name = env.name_any()))]
pub async fn reconcile(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = env.namespace().ok_or(Error::Unnamed)?;
    let api: Api<Environment> = Api::namespaced(ctx.kube.clone(), &ns);
    let result = finalizer(&api, FINALIZER, env.clone(), |event| async {
        match event {
            Finalizer::Apply(env) => apply(&env, &ctx).await,
            Finalizer::Cleanup(env) => cleanup(&env, &ctx).await,
        }
    })
    .await
    .map_err(Error::from_finalizer);
    match result {
        Ok(action) => {
            ctx.reset_backoff(&env);
            Ok(action)
        }
        Err(e) => {
            report_failure(&env, &e, &ctx).await;
            Err(e)
        }
    }
}

/// What the controller does after a failed pass: permanent errors wait for a change to the
/// object; transient ones back off exponentially per object, or as long as the server asked.
pub fn error_policy(env: Arc<Environment>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_permanent() {
        return Action::await_change();
    }
    let wait = ctx.backoff(&env);
    Action::requeue(error.retry_after().map_or(wait, |r| r.max(wait)))
}

async fn apply(env: &Environment, ctx: &Context) -> Result<Action, Error> {
    // First sight: say that work has started before talking to the control plane.
    if env.status.is_none() {
        write_status(env, Observation::Starting, ctx).await?;
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
    let worker_secret = if remote.can_register() {
        Some(worker_secret::ensure(env, &remote, ctx).await?)
    } else {
        None
    };

    // Report.
    let phase = write_status(
        env,
        Observation::Remote {
            remote: &remote,
            worker_secret,
        },
        ctx,
    )
    .await?;
    Ok(match phase {
        Some(Phase::Provisioning) => Action::requeue(ctx.provisioning_poll),
        _ => Action::requeue(jitter(ctx.resync)),
    })
}

/// The remote environment this object manages, if it exists.
async fn observe(env: &Environment, ctx: &Context) -> Result<Option<RemoteEnvironment>, Error> {
    let Some(id) = env
        .status
        .as_ref()
        .and_then(|s| s.environment_id.as_deref())
    else {
        return Ok(None);
    };
    match ctx.cp.get(id).await {
        Ok(remote) => Ok(Some(remote)),
        Err(e) if e.is_not_found() => {
            warn!(
                environment_id = id,
                "remote environment is gone; creating it again"
            );
            Ok(None)
        }
        Err(source) => Err(Error::GetRemote { source }),
    }
}

/// Creates the remote environment. A 409 is ours when the same-named environment carries our
/// owner marker (a create whose answer was lost); otherwise it is someone else's: a conflict.
async fn create(
    env: &Environment,
    desired: &controlplane::EnvironmentBody,
    ctx: &Context,
) -> Result<RemoteEnvironment, Error> {
    match ctx.cp.create(desired).await {
        Ok(remote) => {
            info!(environment_id = %remote.id, "created remote environment");
            publish(
                env,
                ctx,
                EventType::Normal,
                "Created",
                format!("created environment {:?} ({})", remote.name, remote.id),
            )
            .await;
            Ok(remote)
        }
        Err(e) if e.is_conflict() => {
            let all = ctx
                .cp
                .list(None)
                .await
                .map_err(|source| Error::FindRemote { source })?;
            let uid = env.uid().unwrap_or_default();
            let ours = all
                .into_iter()
                .find(|r| r.name == desired.name && plan::is_owned_by(r, &uid));
            let Some(remote) = ours else {
                return Err(Error::NameConflict {
                    name: desired.name.clone(),
                });
            };
            info!(environment_id = %remote.id, "recovered remote environment created by an earlier pass");
            match plan::plan(desired, Some(&remote)) {
                Plan::Update(fields) => update(env, &remote, &fields, ctx).await,
                _ => Ok(remote),
            }
        }
        Err(source) => Err(Error::CreateRemote { source }),
    }
}

async fn update(
    env: &Environment,
    remote: &RemoteEnvironment,
    fields: &serde_json::Map<String, serde_json::Value>,
    ctx: &Context,
) -> Result<RemoteEnvironment, Error> {
    let names = fields
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let updated = ctx
        .cp
        .update(&remote.id, fields)
        .await
        .map_err(|source| Error::UpdateRemote { source })?;
    info!(environment_id = %remote.id, fields = %names, "updated remote environment");
    publish(
        env,
        ctx,
        EventType::Normal,
        "Updated",
        format!("updated {names}"),
    )
    .await;
    Ok(updated)
}

async fn cleanup(env: &Environment, ctx: &Context) -> Result<Action, Error> {
    write_status(env, Observation::Deleting, ctx).await?;
    let id = env
        .status
        .as_ref()
        .and_then(|s| s.environment_id.as_deref());
    match (env.spec.deletion_policy, id) {
        (DeletionPolicy::Delete, Some(id)) => {
            ctx.cp
                .delete(id)
                .await
                .map_err(|source| Error::DeleteRemote { source })?;
            info!(environment_id = id, "deleted remote environment");
            publish(
                env,
                ctx,
                EventType::Normal,
                "Deleted",
                format!("deleted environment {id}"),
            )
            .await;
        }
        (DeletionPolicy::Orphan, Some(id)) => {
            info!(
                environment_id = id,
                "deletionPolicy Orphan: leaving the remote environment"
            );
            publish(
                env,
                ctx,
                EventType::Normal,
                "Orphaned",
                format!("left environment {id} in the control plane"),
            )
            .await;
        }
        (_, None) => {}
    }
    Ok(Action::await_change())
}

/// Writes the status that follows from `obs`, only when it changed. Returns the phase.
async fn write_status(
    env: &Environment,
    obs: Observation<'_>,
    ctx: &Context,
) -> Result<Option<Phase>, Error> {
    let now = Time(Timestamp::now());
    let next = status::next(env, obs, &now);
    let phase = next.phase;
    if status::changed(env.status.as_ref(), &next) {
        patch_status(env, status::with_sync_time(next, &now), ctx).await?;
    }
    Ok(phase)
}

async fn patch_status(
    env: &Environment,
    status: EnvironmentStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let ns = env.namespace().ok_or(Error::Unnamed)?;
    let api: Api<Environment> = Api::namespaced(ctx.kube.clone(), &ns);
    let patch = json!({
        "apiVersion": Environment::api_version(&()),
        "kind": Environment::kind(&()),
        "status": status,
    });
    api.patch_status(
        &env.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(|source| Error::WriteStatus { source })?;
    Ok(())
}

/// Puts a failure where users look: status (best effort) and a Warning Event.
async fn report_failure(env: &Environment, error: &Error, ctx: &Context) {
    let message = error.explain();
    warn!(
        reason = error.reason(),
        permanent = error.is_permanent(),
        "{message}"
    );
    if !matches!(error, Error::WriteStatus { .. })
        && let Err(e) = write_status(env, Observation::Failed(error), ctx).await
    {
        warn!(error = %e.explain(), "could not record the failure in status");
    }
    publish(env, ctx, EventType::Warning, error.reason(), message).await;
}

/// Events are best effort: a failed publish is logged, never fails the pass.
async fn publish(env: &Environment, ctx: &Context, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &env.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// ±25 % jitter, so that objects created together do not requeue together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.75 + fastrand::f64() * 0.5)
}
