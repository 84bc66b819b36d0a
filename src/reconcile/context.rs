//! What every Environment pass shares ([`Context`]), and what this process remembers of each
//! object between passes. No I/O of its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use super::ownership::Owner;
use super::worker_secret;
use crate::connection;
use crate::metrics::Metrics;
use crate::resource::{Environment, Guarded, WorkerQueue};

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
    /// This cluster's name in owner markers: `--cluster-id`, else the UID of its `kube-system`
    /// namespace.
    pub cluster: String,
    /// How often to look again while the control plane provisions.
    pub provisioning_poll: Duration,
    /// How often to compare a settled environment with its spec, and to retry a permanent
    /// failure; zero turns both off.
    pub resync: Duration,
    /// The longest a pass may take; past it, it is abandoned and retried (a transient error).
    pub pass_timeout: Duration,
    /// What this process remembers per object, by UID; forgotten when the object goes.
    pub objects: Mutex<HashMap<String, Remembered>>,
    /// What is known of the worker Secrets, from their watches (one index per watched scope).
    pub worker_secrets: Vec<Arc<worker_secret::Index>>,
    /// The WorkerQueues, from their watches (one cache per watched scope): an Environment is
    /// not deleted while queues of it remain.
    pub queues: Vec<Store<Guarded<WorkerQueue>>>,
    /// Tells the WorkerQueue controllers that an Environment (`namespace`, `name`) can take
    /// queues now, in the remote environment `id`, as its cache holds it: its queues wait for it
    /// to be Ready.
    pub environment_changes: tokio::sync::broadcast::Sender<EnvironmentChange>,
    /// Tells the WorkerQueue controllers that the worker Secret of a queue (`namespace`, `name`)
    /// was deleted or edited by hand, as the Environments' Secret watch sees it.
    pub queue_secret_changes: tokio::sync::broadcast::Sender<(String, String)>,
    /// Tells the WorkerQueue controllers that a Secret (`namespace`, `name`) was created or
    /// deleted: a queue whose workers' key it holds goes on.
    pub key_secret_changes: tokio::sync::broadcast::Sender<(String, String)>,
    /// The workers' Deployments of the WorkerQueues (one cache per watched scope), without their
    /// pod templates.
    pub deployments: Vec<Store<k8s_openapi::api::apps::v1::Deployment>>,
    /// The image of workers whose spec names none (`--worker-image`).
    pub worker_image: String,
}

/// An Environment that can take queues: `namespace`, `name` and its remote environment's id.
pub type EnvironmentChange = (String, String, String);

/// What this process remembers about one object between passes.
#[derive(Debug, Default)]
pub struct Remembered {
    /// This process has looked at it (a settled object's first look is put off: see
    /// [`Context::first_check`]).
    seen: bool,
    /// Consecutive failures, for exponential backoff (kube-runtime has none).
    failures: u32,
    /// The remote id this process created or adopted. A pass can start from a cached object that
    /// predates the status write recording the id (the watch lags our own writes); this keeps
    /// such a pass from creating again.
    known_id: Option<String>,
    /// The fingerprint of the env vars last applied, when some came from Secrets
    /// ([`super::env_vars::Resolved`]): the pass after a Secret changed updates, it corrects no
    /// drift.
    env_vars: Option<u64>,
    /// The generation of a WorkerQueue's workers' Deployment after this process last wrote it:
    /// the pass its own write wakes may start from a cached queue whose status predates it.
    deployment_generation: Option<i64>,
}

impl Context {
    /// This object as an owner marker names it, in the namespace whose UID is `namespace_uid`.
    pub fn owner<K: Resource>(&self, obj: &K, namespace_uid: String) -> Owner {
        Owner {
            cluster: self.cluster.clone(),
            uid: obj.meta().uid.clone().unwrap_or_default(),
            namespace: obj.meta().namespace.clone().unwrap_or_default(),
            namespace_uid,
            name: obj.meta().name.clone().unwrap_or_default(),
        }
    }

    /// Changes what is remembered of `obj`; `create`: start remembering it if it was not.
    fn remembered<K: Resource, T>(
        &self,
        obj: &K,
        create: bool,
        f: impl FnOnce(&mut Remembered) -> T,
    ) -> Option<T> {
        let uid = obj.meta().uid.clone()?;
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let r = if create { Some(objects.entry(uid).or_default()) } else { objects.get_mut(&uid) };
        let r = r.map(f);
        self.metrics.tracked_objects.set(objects.len() as i64);
        r
    }

    /// One more failure of `obj` in a row; returns how many there have been.
    pub fn failed<K: Resource>(&self, obj: &K) -> u32 {
        self.remembered(obj, true, |r| {
            r.failures = r.failures.saturating_add(1);
            r.failures
        })
        .unwrap_or(1)
    }

    /// A pass succeeded: the backoff starts again from the beginning.
    pub fn succeeded<K: Resource>(&self, obj: &K) {
        self.remembered(obj, false, |r| r.failures = 0);
    }

    /// The remote id of `env`: what this process last recorded (never older than the object it
    /// was handed), else its status.
    pub fn known_id(&self, env: &Environment) -> Option<String> {
        self.recalled_id(env).or_else(|| env.status.as_ref().and_then(|s| s.environment_id.clone()))
    }

    /// The remote id this process last recorded for `obj`, if any.
    pub fn recalled_id<K: Resource>(&self, obj: &K) -> Option<String> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        obj.meta().uid.as_ref().and_then(|uid| objects.get(uid).and_then(|r| r.known_id.clone()))
    }

    /// Records (or, with `None`, forgets) the remote id of `obj`.
    pub fn remember_id<K: Resource>(&self, obj: &K, id: Option<&str>) {
        self.remembered(obj, id.is_some(), |r| r.known_id = id.map(str::to_owned));
    }

    /// The fingerprint of the env vars this process last applied to `env`'s remote environment.
    pub fn applied_env_vars(&self, env: &Environment) -> Option<u64> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        env.uid().and_then(|uid| objects.get(&uid).and_then(|r| r.env_vars))
    }

    /// Records the fingerprint of the env vars just applied to `env`'s remote environment.
    pub fn remember_env_vars(&self, env: &Environment, fingerprint: Option<u64>) {
        self.remembered(env, fingerprint.is_some(), |r| r.env_vars = fingerprint);
    }

    /// The generation of `obj`'s workers' Deployment after this process last wrote it.
    pub fn written_generation<K: Resource>(&self, obj: &K) -> Option<i64> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        obj.meta().uid.as_ref().and_then(|uid| objects.get(uid).and_then(|r| r.deployment_generation))
    }

    /// Records the generation of `obj`'s workers' Deployment just written.
    pub fn remember_generation<K: Resource>(&self, obj: &K, generation: Option<i64>) {
        self.remembered(obj, generation.is_some(), |r| r.deployment_generation = generation);
    }

    /// Whether this is the first time this process looks at `obj` (and, from now on, it is not).
    pub fn first_sight<K: Resource>(&self, obj: &K) -> bool {
        self.remembered(obj, true, |r| !std::mem::replace(&mut r.seen, true)).unwrap_or(false)
    }

    /// What the watch last said of the worker Secret `env`'s status names.
    pub fn cached_worker_secret(&self, env: &Environment) -> Option<worker_secret::IndexedSecret> {
        let name = env.status.as_ref()?.worker_secret_name.as_deref()?;
        let namespace = env.namespace()?;
        self.worker_secrets.iter().find_map(|index| index.get(&namespace, name))
    }

    /// When a settled Environment seen for the first time (at start, after a failover) is first
    /// checked: see [`first_check`].
    pub fn first_check(&self) -> Action {
        first_check(self.resync, fastrand::f64())
    }

    /// When to look at a settled environment, or a permanent failure, again: see [`resync`].
    pub fn resync_action(&self) -> Action {
        resync(self.resync, fastrand::f64())
    }

    /// The WorkerQueues of this namespace that belong to `env` (by `spec.environmentRef`); None
    /// while their caches have not synced.
    pub fn queues_of(&self, env: &Environment) -> Option<Vec<String>> {
        use futures::FutureExt;
        if !self.queues.iter().all(|s| matches!(s.wait_until_ready().now_or_never(), Some(Ok(())))) {
            return None;
        }
        let (namespace, name) = (env.namespace(), env.name_any());
        let mut names: Vec<String> = self
            .queues
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|q| q.decoded().cloned())
            .filter(|q| q.namespace() == namespace && q.spec.environment_ref.name == name)
            .map(|q| q.name_any())
            .collect();
        names.sort();
        Some(names)
    }

    /// The object is gone (deleted, or no longer selected): forget it.
    pub fn forget(&self, uid: &str) {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects.remove(uid);
        self.metrics.tracked_objects.set(objects.len() as i64);
    }

    /// Forgets every object that is no longer in the caches: a deletion missed while a watch was
    /// down (a relist reports none), or one that raced with the end of its last pass.
    pub fn prune(&self, present: &HashSet<String>) {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects.retain(|uid, _| present.contains(uid));
        self.metrics.tracked_objects.set(objects.len() as i64);
    }
}

/// The first check of a settled Environment seen for the first time: at a random point (`dice`,
/// in [0, 1)) of the resync interval, after a grace that leaves the first minute to the work
/// users wait for. A restart costs the control plane nothing up front, and drift checks are
/// spread evenly; each is still within one interval. Never, when resyncs are off.
pub fn first_check(resync: Duration, dice: f64) -> Action {
    if resync.is_zero() {
        return Action::await_change();
    }
    let grace = (resync / 2).min(Duration::from_secs(60));
    Action::requeue(grace + (resync - grace).mul_f64(dice))
}

/// The next look at a settled environment, or a permanent failure: within the resync interval,
/// jittered (by `dice`, in [0, 1)) down to 75 % of it, never beyond, so that drift is corrected
/// within one interval. Never, when resyncs are off.
pub fn resync(resync: Duration, dice: f64) -> Action {
    if resync.is_zero() {
        Action::await_change()
    } else {
        Action::requeue(resync.mul_f64(0.75 + dice * 0.25))
    }
}

/// Backoff after the `n`-th failure in a row: 1 s, 2 s, 4 s … 5 min, jittered ±25 % by `dice`
/// (in [0, 1)), so that objects that failed together do not retry together.
pub fn backoff(n: u32, dice: f64) -> Duration {
    let base = Duration::from_secs((1u64 << n.saturating_sub(1).min(9)).min(300));
    base.mul_f64(0.75 + dice * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_to_five_minutes_within_a_quarter_either_way() {
        let secs = |n, dice| backoff(n, dice).as_secs_f64();
        assert_eq!(secs(1, 0.5), 1.0);
        assert_eq!(secs(2, 0.5), 2.0);
        assert_eq!(secs(3, 0.5), 4.0);
        assert_eq!(secs(9, 0.5), 256.0);
        assert_eq!(secs(10, 0.5), 300.0, "capped");
        assert_eq!(secs(u32::MAX, 0.5), 300.0);
        assert_eq!(secs(0, 0.5), 1.0, "a first failure however counted");
        assert_eq!(secs(3, 0.0), 3.0);
        assert_eq!(secs(3, 1.0), 5.0);
    }

    #[test]
    fn a_resync_falls_in_the_last_quarter_of_the_interval_and_never_beyond() {
        let interval = Duration::from_secs(600);
        assert_eq!(resync(interval, 0.0), Action::requeue(Duration::from_secs(450)));
        assert_eq!(resync(interval, 0.5), Action::requeue(Duration::from_millis(525_000)));
        assert_eq!(resync(interval, 1.0), Action::requeue(interval));
        assert_eq!(resync(Duration::ZERO, 0.5), Action::await_change());
    }

    #[test]
    fn a_first_check_leaves_the_first_minute_and_stays_within_one_interval() {
        let interval = Duration::from_secs(600);
        assert_eq!(first_check(interval, 0.0), Action::requeue(Duration::from_secs(60)));
        assert_eq!(first_check(interval, 1.0), Action::requeue(interval));
        assert_eq!(first_check(interval, 0.5), Action::requeue(Duration::from_secs(330)));
        let short = Duration::from_secs(6);
        assert_eq!(first_check(short, 0.0), Action::requeue(Duration::from_secs(3)), "half of a short one");
        assert_eq!(first_check(short, 1.0), Action::requeue(short));
        assert_eq!(first_check(Duration::ZERO, 0.5), Action::await_change());
    }
}
