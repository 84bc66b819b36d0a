//! One reconcile pass over an `Environment`: observe (control plane) → plan (pure) → act (control
//! plane) → report (status, Events). Talks to the Kubernetes API and the control plane.

mod apply;
mod cleanup;
mod error;
pub mod finalizer;
mod observe;
pub mod ownership;
pub mod plan;
pub(crate) mod report;
pub mod status;
pub mod worker_secret;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::{Resource, ResourceExt};
use tracing::instrument;

pub use error::{Error, Kind, MAX_RETRY_AFTER};

use self::ownership::Owner;
use crate::connection;
use crate::controlplane::{self, RemoteEnvironment};
use crate::metrics::{Metrics, ResultLabels};
use crate::resource::{Environment, FINALIZER, Guarded, Undecodable};

/// Everything a reconcile pass needs, shared by all passes.
pub struct Context {
    /// The Kubernetes client for requests (reads time out; watches use their own client).
    pub kube: kube::Client,
    /// The connections: a control-plane client for each, and which one each Environment uses.
    pub connections: Arc<connection::Registry>,
    /// Publishes Events on Environments.
    pub recorder: Recorder,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// This cluster's name in owner markers: the UID of its `kube-system` namespace.
    pub cluster: String,
    /// How often to look again while the control plane provisions.
    pub provisioning_poll: Duration,
    /// How often to compare a settled environment with its spec, and to retry a permanent
    /// failure; zero turns both off.
    pub resync: Duration,
    /// The longest a pass may take; past it, it is abandoned and retried (a transient error).
    pub pass_timeout: Duration,
    /// What this process remembers per object, by UID; forgotten when the object goes.
    pub objects: Mutex<HashMap<String, Tracked>>,
    /// What is known of the worker Secrets, from their watches (one index per watched scope).
    pub worker_secrets: Vec<Arc<worker_secret::Index>>,
}

/// What this process remembers about one object between passes.
#[derive(Debug, Default)]
pub struct Tracked {
    /// This process has looked at it (a settled object's first look is put off: see
    /// [`Context::first_check`]).
    seen: bool,
    /// Consecutive failures, for exponential backoff (kube-runtime has none).
    failures: u32,
    /// The remote id this process created or adopted. A pass can start from a cached object that
    /// predates the status write recording the id (the watch lags our own writes); this keeps
    /// such a pass from creating again.
    known_id: Option<String>,
}

impl Context {
    /// This object as an owner marker names it.
    fn owner(&self, env: &Environment) -> Owner {
        Owner {
            cluster: self.cluster.clone(),
            uid: env.uid().unwrap_or_default(),
            namespace: env.namespace().unwrap_or_default(),
            name: env.name_any(),
        }
    }

    /// Changes what is remembered of `obj`; `create`: start remembering it if it was not.
    fn tracked<K: Resource, T>(&self, obj: &K, create: bool, f: impl FnOnce(&mut Tracked) -> T) -> Option<T> {
        let uid = obj.meta().uid.clone()?;
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let t = if create { Some(objects.entry(uid).or_default()) } else { objects.get_mut(&uid) };
        let t = t.map(f);
        self.metrics.tracked_objects.set(objects.len() as i64);
        t
    }

    /// Backoff after the n-th consecutive failure: 1 s, 2 s, 4 s … 5 min, jittered ±25 %.
    fn backoff<K: Resource>(&self, obj: &K) -> Duration {
        let n = self
            .tracked(obj, true, |t| {
                t.failures = t.failures.saturating_add(1);
                t.failures
            })
            .unwrap_or(1);
        jitter(Duration::from_secs((1u64 << (n - 1).min(9)).min(300)))
    }

    /// The remote id of `env`: what this process last recorded (never older than the object it
    /// was handed), else its status.
    fn known_id(&self, env: &Environment) -> Option<String> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        env.uid()
            .and_then(|uid| objects.get(&uid).and_then(|t| t.known_id.clone()))
            .or_else(|| env.status.as_ref().and_then(|s| s.environment_id.clone()))
    }

    /// Records (or, with `None`, forgets) the remote id of `env`.
    fn remember_id(&self, env: &Environment, id: Option<&str>) {
        self.tracked(env, id.is_some(), |t| t.known_id = id.map(str::to_owned));
    }

    /// Whether this is the first time this process looks at `env` (and, from now on, it is not).
    fn first_sight(&self, env: &Environment) -> bool {
        self.tracked(env, true, |t| !std::mem::replace(&mut t.seen, true)).unwrap_or(false)
    }

    /// What the watch last said of the worker Secret `env`'s status names.
    fn cached_worker_secret(&self, env: &Environment) -> Option<worker_secret::Facts> {
        let name = env.status.as_ref()?.worker_secret_name.as_deref()?;
        let namespace = env.namespace()?;
        self.worker_secrets.iter().find_map(|index| index.get(&namespace, name))
    }

    /// When a settled Environment seen for the first time (at start, after a failover) is first
    /// checked: at a random point of the resync interval, after a grace that leaves the first
    /// minute to the work users wait for. A restart costs the control plane nothing up front, and
    /// drift checks are spread evenly; each is still within one interval.
    fn first_check(&self) -> Action {
        if self.resync.is_zero() {
            return Action::await_change();
        }
        let grace = (self.resync / 2).min(Duration::from_secs(60));
        Action::requeue(grace + (self.resync - grace).mul_f64(fastrand::f64()))
    }

    /// A pass succeeded: the backoff starts again from the beginning.
    fn succeeded<K: Resource>(&self, obj: &K) {
        self.tracked(obj, false, |t| t.failures = 0);
    }

    /// The object is gone (deleted, or no longer selected): forget it.
    pub fn forget(&self, uid: &str) {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects.remove(uid);
        self.metrics.tracked_objects.set(objects.len() as i64);
    }

    /// Forgets every object that is no longer in the caches: a deletion missed while a watch was
    /// down (a relist reports none), or one that raced with the end of its last pass.
    pub fn prune(&self, present: &std::collections::HashSet<String>) {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects.retain(|uid, _| present.contains(uid));
        self.metrics.tracked_objects.set(objects.len() as i64);
    }

    /// When to look at a settled environment, or a permanent failure, again: within the resync
    /// interval (jittered down to 75 % of it, never beyond, so that drift is corrected within
    /// one interval), or never.
    fn resync_action(&self) -> Action {
        if self.resync.is_zero() {
            Action::await_change()
        } else {
            Action::requeue(self.resync.mul_f64(0.75 + fastrand::f64() * 0.25))
        }
    }
}

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
            report::publish(obj, ctx, EventType::Warning, "LeftRemote", note).await;
        }
        return Ok(Action::await_change());
    }
    Err(Error::Undecodable { error: bad.error.clone() })
}

/// What the controller does after a failed pass. Permanent errors are tried again at the resync
/// interval, so that a cause that went away (a foreign environment deleted, a key fixed) heals
/// without an edit; during deletion, which must be able to end, and for transient errors, back
/// off exponentially per object, or as long as the server asked (capped). An object waiting for
/// its connection is looked at again at the resync interval too, even during deletion: the
/// connection's change wakes it sooner.
pub fn error_policy(obj: Arc<Guarded>, error: &Error, ctx: Arc<Context>) -> Action {
    let deleting = obj.meta().deletion_timestamp.is_some();
    // Waiting for its connection: the connection's next change wakes it (retrying meanwhile
    // would only write Events, hundreds at a time when an organisation is down).
    let waits_for_connection = matches!(error, Error::ConnectionNotReady { .. });
    if (error.is_permanent() && !deleting) || waits_for_connection {
        return ctx.resync_action();
    }
    let wait = ctx.backoff(obj.as_ref());
    Action::requeue(error.retry_after().map_or(wait, |r| r.max(wait)))
}

/// The environment named `name`, if there is one (names are unique per organization).
async fn find_named(cp: &controlplane::Client, name: &str) -> Result<Option<RemoteEnvironment>, Error> {
    let all = cp.list(None).await.map_err(|source| Error::FindRemote { source })?;
    Ok(all.into_iter().find(|r| r.name == name))
}

/// `environment/<name> -n <namespace>`, for commands in messages.
fn kubectl_target(env: &Environment) -> String {
    format!("environment/{} -n {}", env.name_any(), env.namespace().unwrap_or_default())
}

/// ±25 % jitter, so that objects created together do not requeue together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.75 + fastrand::f64() * 0.5)
}
