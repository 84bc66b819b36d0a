//! One reconcile pass over an `Environment`: observe (control plane) → plan (pure) → act (control
//! plane) → report (status, Events). Talks to the Kubernetes API and the control plane.

mod apply;
mod cleanup;
mod error;
pub mod plan;
mod report;
pub mod status;
pub mod worker_secret;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::instrument;

pub use error::Error;

use crate::controlplane;
use crate::metrics::{Metrics, ResultLabels};
use crate::resource::{Environment, FINALIZER};

/// Everything a reconcile pass needs, shared by all passes.
pub struct Context {
    /// The Kubernetes client.
    pub kube: kube::Client,
    /// The control-plane client (one connection pool, one limit on concurrent calls).
    pub cp: controlplane::Client,
    /// Publishes Events on Environments.
    pub recorder: Recorder,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// How often to look again while the control plane provisions.
    pub provisioning_poll: Duration,
    /// How often to compare a settled environment with its spec; zero turns the check off.
    pub resync: Duration,
    /// Consecutive failures per object, for exponential backoff (kube-runtime has none).
    pub failures: Mutex<HashMap<ObjectRef<Environment>, u32>>,
    /// Remote ids this process created or adopted, by object UID. A pass can start from a cached
    /// object that predates the status write recording the id (the watch lags our own writes);
    /// this keeps such a pass from creating again.
    pub known_ids: Mutex<HashMap<String, String>>,
}

impl Context {
    /// Backoff after the n-th consecutive failure: 1 s, 2 s, 4 s … 5 min, jittered ±25 %.
    fn backoff(&self, env: &Environment) -> Duration {
        let n = {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let n = failures.entry(ObjectRef::from_obj(env)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        jitter(Duration::from_secs((1u64 << (n - 1).min(9)).min(300)))
    }

    /// The remote id of `env`: what this process last recorded (never older than the object it
    /// was handed), else its status.
    fn known_id(&self, env: &Environment) -> Option<String> {
        let ids = self.known_ids.lock().unwrap_or_else(|p| p.into_inner());
        env.metadata
            .uid
            .as_ref()
            .and_then(|uid| ids.get(uid).cloned())
            .or_else(|| env.status.as_ref().and_then(|s| s.environment_id.clone()))
    }

    /// Records (or, with `None`, forgets) the remote id of `env`.
    fn remember_id(&self, env: &Environment, id: Option<&str>) {
        let Some(uid) = env.metadata.uid.clone() else { return };
        let mut ids = self.known_ids.lock().unwrap_or_else(|p| p.into_inner());
        match id {
            Some(id) => ids.insert(uid, id.to_owned()),
            None => ids.remove(&uid),
        };
    }

    fn reset_backoff(&self, env: &Environment) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&ObjectRef::from_obj(env));
    }

    /// When to look at a settled environment again: the jittered resync interval, or never.
    fn resync_action(&self) -> Action {
        if self.resync.is_zero() { Action::await_change() } else { Action::requeue(jitter(self.resync)) }
    }
}

/// The reconcile entry point: the finalizer hand-off, then failures reported in status and Events.
// `environment`, not `name`: JSON logs put the span's own name under `name`.
#[instrument(skip_all, fields(namespace = env.namespace().unwrap_or_default(), environment = env.name_any()))]
pub async fn reconcile(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = env.namespace().ok_or(Error::Unnamed)?;
    let api: Api<Environment> = Api::namespaced(ctx.kube.clone(), &ns);
    let result = finalizer(&api, FINALIZER, env.clone(), |event| async {
        match event {
            Finalizer::Apply(env) => apply::apply(&env, &ctx).await,
            Finalizer::Cleanup(env) => cleanup::cleanup(&env, &ctx).await,
        }
    })
    .await
    .map_err(Error::from_finalizer);
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.metric_label(),
    };
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: label }).inc();
    match result {
        Ok(action) => {
            ctx.reset_backoff(&env);
            Ok(action)
        }
        Err(e) => {
            report::failure(&env, &e, &ctx).await;
            Err(e)
        }
    }
}

/// What the controller does after a failed pass. Permanent errors wait for a change to the object,
/// except during deletion, which must be able to end and so keeps retrying; transient errors back
/// off exponentially per object, or as long as the server asked.
pub fn error_policy(env: Arc<Environment>, error: &Error, ctx: Arc<Context>) -> Action {
    let deleting = env.meta().deletion_timestamp.is_some();
    if error.is_permanent() && !deleting {
        return Action::await_change();
    }
    let wait = ctx.backoff(&env);
    Action::requeue(error.retry_after().map_or(wait, |r| r.max(wait)))
}

/// ±25 % jitter, so that objects created together do not requeue together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.75 + fastrand::f64() * 0.5)
}
