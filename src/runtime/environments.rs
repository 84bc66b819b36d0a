//! The Environment controllers, one per watched scope (all namespaces, or each listed one), each
//! with its own watches and cache (kube's caches hold one list-watch), all sharing the context.
//! Secrets (watched by metadata only) and connection changes wake them too.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::{Future, Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use crate::config::Config;
use crate::k8s::index::Index;
use crate::queue;
use crate::reconcile::{self, Context, worker_secret};
use crate::resource::{Guarded, WorkerQueue};

/// One watched scope.
pub struct Scope {
    envs: Api<Guarded>,
    /// Secrets, by metadata only: none is ever held whole, whoever labels it.
    secrets: Api<PartialObjectMeta<Secret>>,
    pub store: Store<Guarded>,
    writer: reflector::store::Writer<Guarded>,
    /// What is known of the worker Secrets: a settled Environment's is checked there, not
    /// fetched.
    pub secret_index: Arc<worker_secret::Index>,
    /// The resourceVersion of every Secret of the scope: a connection's key is read again only
    /// when its Secret changed.
    pub secret_versions: Arc<Index<String>>,
}

/// The scopes `config` asks for: all namespaces, or each listed one.
pub fn scopes(kube: &Client, config: &Config) -> Vec<Scope> {
    let scope = |namespace: Option<&String>| {
        let (store, writer) = reflector::store();
        let (envs, secrets) = match namespace {
            Some(ns) => (Api::namespaced(kube.clone(), ns), Api::namespaced(kube.clone(), ns)),
            None => (Api::all(kube.clone()), Api::all(kube.clone())),
        };
        Scope { envs, secrets, store, writer, secret_index: Arc::default(), secret_versions: Arc::default() }
    };
    if config.watch_namespaces.is_empty() {
        return vec![scope(None)];
    }
    config.watch_namespaces.iter().map(|ns| scope(Some(ns))).collect()
}

impl Scope {
    pub async fn run(
        self,
        config: &Config,
        ctx: Arc<Context>,
        shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ) {
        let Scope { envs, secrets, store, writer, secret_index, secret_versions } = self;
        let mut selected = super::watched();
        if let Some(selector) = &config.label_selector {
            selected = selected.labels(selector);
        }
        let forget = ctx.clone();
        let settled = ctx.environment_changes.clone();
        // Only changes a user makes wake the controller: our own status writes do not.
        let events = watcher(envs, selected)
            .default_backoff()
            // managedFields and kubectl's copy are most of an object's bytes, never read.
            .modify(|env| crate::resource::slim(env.meta_mut()))
            .reflect(writer)
            // An Environment that can take queues wakes its WorkerQueues, once the cache they read
            // it from holds it (a wake-up sent with our own status write would come too early).
            .inspect(move |event| {
                if let Ok(watcher::Event::Apply(obj)) = event
                    && let Some(id) = obj.decoded().and_then(takes_queues)
                {
                    // Nobody listening (no queues watched) is no failure.
                    let _ =
                        settled.send((obj.namespace().unwrap_or_default(), obj.name_any(), id.to_owned()));
                }
            })
            // Per-object state goes with the object: deleted, or relabelled out of the selector
            // (the watch reports both as deletions). What slips through is pruned periodically.
            .inspect(move |event| {
                if let Ok(watcher::Event::Delete(obj)) = event {
                    forget.forget(&obj.uid().unwrap_or_default());
                }
            });
        let changes = super::applied(events, store.clone()).predicate_filter(user_intent, Default::default());
        let connection_changes = connection_changes(&ctx, store.clone());
        // One watch of the scope's Secrets, by metadata only and not cached: what the operator
        // needs of a Secret is in its metadata, and whatever a tenant puts in a Secret (a
        // megabyte, with our label) is never read. Small pages bound what a relist holds at once.
        let queue_secrets = ctx.queue_secret_changes.clone();
        let key_secrets = ctx.key_secret_changes.clone();
        let users = store.clone();
        let secret_changes = watcher(secrets, watcher::Config::default().page_size(SECRET_PAGE))
            .default_backoff()
            .inspect(move |event| {
                if let Ok(event) = event {
                    secret_versions.apply(event, |s| s.resource_version());
                    secret_index.apply(event, worker_secret::IndexedSecret::of);
                }
            })
            .flat_map(move |event| {
                let event = event.inspect_err(|e| warn!(error = %e, "watching Secrets"));
                let woken = match event.ok() {
                    Some(event) => woken_by(&event, &users, &queue_secrets, &key_secrets),
                    None => Vec::new(),
                };
                futures::stream::iter(woken)
            });
        Controller::for_stream(changes, store)
            .reconcile_on(secret_changes)
            .reconcile_on(connection_changes)
            .with_config(controller::Config::default().concurrency(config.concurrency))
            .graceful_shutdown_on(shutdown)
            .run(reconcile::reconcile, reconcile::error_policy, ctx)
            .for_each(|res| async move {
                match res {
                    Ok((obj, _)) => {
                        tracing::debug!(namespace = obj.namespace, environment = obj.name, "reconciled")
                    }
                    Err(controller::Error::ReconcilerFailed(_, obj)) => {
                        tracing::debug!(namespace = obj.namespace, environment = obj.name, "reconcile failed")
                    }
                    Err(e) => warn!(error = %e, "controller"),
                }
            })
            .await
    }
}

/// The Environments of `store` that use a connection whose state or key changed, as it changes:
/// a fixed key, a Secret created, a connection that came back bring them back without an edit.
fn connection_changes(
    ctx: &Context,
    store: Store<Guarded>,
) -> impl Stream<Item = ObjectRef<Guarded>> + use<> {
    let registry = ctx.connections.clone();
    super::received(registry.subscribe())
        .flat_map(move |key| futures::stream::iter(registry.users_in(&store, &key)))
}

/// How many Secrets a list of the watch holds at most: each may carry up to 256 KiB of
/// annotations and its managedFields, which is all the metadata watch reads.
const SECRET_PAGE: u32 = 100;

/// The Environments a Secret's event wakes, and the WorkerQueue it wakes (sent on `queues`):
/// its controller's, when it was deleted or edited by hand (not on the operator's own writes,
/// each of which would cost a pass); and the Environments that use its values as it changes,
/// appears or goes (a relist's objects are no change: every Environment gets its pass at start).
/// Every change is also sent on `keys`, for queues whose workers' key it may hold.
fn woken_by(
    event: &watcher::Event<PartialObjectMeta<Secret>>,
    store: &Store<Guarded>,
    queues: &tokio::sync::broadcast::Sender<(String, String)>,
    keys: &tokio::sync::broadcast::Sender<(String, String)>,
) -> Vec<ObjectRef<Guarded>> {
    let (secret, changed, relisted) = match event {
        watcher::Event::Delete(s) => (s, true, false),
        watcher::Event::Apply(s) => (s, false, false),
        watcher::Event::InitApply(s) => (s, false, true),
        watcher::Event::Init | watcher::Event::InitDone => return Vec::new(),
    };
    let namespace = secret.namespace().unwrap_or_default();
    if !relisted && worker_secret::controller(secret).is_none() {
        // Nobody listening (no queues watched) is no failure.
        let _ = keys.send((namespace.clone(), secret.name_any()));
    }
    let mut woken = if relisted { Vec::new() } else { users_of_secret(store, secret) };
    let Some(owner) = worker_secret::controller(secret).filter(|o| o.api_version.starts_with("kubiya.ai/"))
    else {
        return woken;
    };
    let keys: &[&str] = match owner.kind.as_str() {
        "Environment" => &worker_secret::KEYS,
        "WorkerQueue" => &queue::secret::KEYS,
        _ => return woken,
    };
    if !changed && worker_secret::is_untouched(&secret.metadata, keys) {
        return woken;
    }
    if owner.kind == "WorkerQueue" {
        // Nobody listening (no queues watched) is no failure.
        let _ = queues.send((namespace, owner.name.clone()));
    } else {
        woken.push(ObjectRef::new(&owner.name).within(&namespace));
    }
    woken
}

/// The Environments of `store` whose spec uses `secret`'s values.
fn users_of_secret(store: &Store<Guarded>, secret: &PartialObjectMeta<Secret>) -> Vec<ObjectRef<Guarded>> {
    let (namespace, name) = (&secret.metadata.namespace, secret.metadata.name.as_deref().unwrap_or_default());
    // Asked for every Secret event, of each Environment: nothing is allocated for one that
    // does not use it.
    store
        .state()
        .iter()
        .filter(|obj| &obj.meta().namespace == namespace)
        .filter(|obj| obj.decoded().is_some_and(|env| env.uses_secret(name)))
        .map(|obj| ObjectRef::from_obj(obj.as_ref()))
        .collect()
}

/// Marks the probe ready once every cache has synced.
pub async fn mark_synced(stores: Vec<Store<Guarded>>, probe: Arc<super::http::Probe>) {
    if synced(&stores).await {
        probe.advance(super::http::Stage::Syncing, super::http::Stage::Running);
    }
}

/// Waits until every cache has synced; false if one never will (its writer is gone).
pub async fn synced<K>(stores: &[Store<K>]) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    for store in stores {
        // Polled again every second: the store's readiness signal wakes only one of its
        // waiters, and the controller waits on it too.
        loop {
            match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return false,
                Err(_) => continue,
            }
        }
    }
    true
}

/// Every so often, forgets the per-object state of objects no longer in any cache. Starts once
/// every cache is synced (before, a cache may not hold objects that are being reconciled).
pub async fn prune(stores: Vec<Store<Guarded>>, queues: Vec<Store<Guarded<WorkerQueue>>>, ctx: Arc<Context>) {
    if !synced(&stores).await || !synced(&queues).await {
        return;
    }
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        let mut present: HashSet<String> =
            stores.iter().flat_map(|s| s.state()).filter_map(|o| o.uid()).collect();
        present.extend(queues.iter().flat_map(|s| s.state()).filter_map(|o| o.uid()));
        ctx.prune(&present);
    }
}

/// How often per-object state is checked against the caches.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// The remote environment `env`'s queues can be in: its id, when it is Ready or Inactive.
fn takes_queues(env: &crate::resource::Environment) -> Option<&str> {
    let status = env.status.as_ref()?;
    let settled =
        matches!(status.phase, Some(crate::resource::Phase::Ready | crate::resource::Phase::Inactive));
    status.environment_id.as_deref().filter(|_| settled)
}

/// What a user can change that needs a pass: spec (generation), deletion, finalizers and our
/// annotations. Status and managed fields are left out.
pub(super) fn user_intent<K: Resource>(env: &K) -> Option<u64> {
    let mut h = DefaultHasher::new();
    env.meta().generation.hash(&mut h);
    env.meta().deletion_timestamp.is_some().hash(&mut h);
    env.finalizers().hash(&mut h);
    for (k, v) in env.annotations() {
        if k.starts_with("kubiya.ai/") {
            (k, v).hash(&mut h);
        }
    }
    Some(h.finish())
}
