//! The Environment controllers, one per watched scope (all namespaces, or each listed one), each
//! with its own watches and cache (kube's caches hold one list-watch), all sharing the context.
//! Worker Secrets and connection changes wake them too.

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
use crate::k8s::secret_versions::SecretVersions;
use crate::reconcile::{self, Context, worker_secret};
use crate::resource::{Guarded, WorkerQueue};

/// One watched scope.
pub struct Scope {
    envs: Api<Guarded>,
    secrets: Api<Secret>,
    /// The same Secrets by metadata only.
    secret_names: Api<PartialObjectMeta<Secret>>,
    pub store: Store<Guarded>,
    writer: reflector::store::Writer<Guarded>,
    /// What is known of the worker Secrets: a settled Environment's is checked there, not
    /// fetched.
    pub secret_index: Arc<worker_secret::Index>,
    /// The resourceVersion of every Secret of the scope: a connection's key is read again only
    /// when its Secret changed.
    pub secret_versions: Arc<SecretVersions>,
}

/// The scopes `config` asks for: all namespaces, or each listed one.
pub fn scopes(kube: &Client, config: &Config) -> Vec<Scope> {
    let scope = |namespace: Option<&String>| {
        let (store, writer) = reflector::store();
        let (envs, secrets, secret_names) = match namespace {
            Some(ns) => (
                Api::namespaced(kube.clone(), ns),
                Api::namespaced(kube.clone(), ns),
                Api::namespaced(kube.clone(), ns),
            ),
            None => (Api::all(kube.clone()), Api::all(kube.clone()), Api::all(kube.clone())),
        };
        Scope {
            envs,
            secrets,
            secret_names,
            store,
            writer,
            secret_index: Arc::default(),
            secret_versions: Arc::default(),
        }
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
        let Scope { envs, secrets, secret_names, store, writer, secret_index, secret_versions } = self;
        let mut selected = watcher::Config::default();
        if let Some(selector) = &config.label_selector {
            selected = selected.labels(selector);
        }
        let forget = ctx.clone();
        let settled = ctx.environment_changes.clone();
        // Only changes a user makes wake the controller: our own status writes do not.
        let changes = watcher(envs, selected)
            .default_backoff()
            // managedFields are most of an object's bytes and the operator never reads them.
            .modify(|env| env.managed_fields_mut().clear())
            .reflect(writer)
            // An Environment that can take queues wakes its WorkerQueues, once the cache they read
            // it from holds it (a wake-up sent with our own status write would come too early).
            .inspect(move |event| {
                if let Ok(watcher::Event::Apply(obj)) = event
                    && obj.decoded().is_some_and(takes_queues)
                {
                    // Nobody listening (no queues watched) is no failure.
                    let _ = settled.send((obj.namespace().unwrap_or_default(), obj.name_any()));
                }
            })
            // Per-object state goes with the object: deleted, or relabelled out of the selector
            // (the watch reports both as deletions). What slips through is pruned periodically.
            .inspect(move |event| {
                if let Ok(watcher::Event::Delete(obj)) = event {
                    forget.forget(&obj.uid().unwrap_or_default());
                }
            })
            .applied_objects()
            .predicate_filter(user_intent, Default::default());
        // Worker Secrets wake their Environment when deleted or edited by hand, not on our own
        // writes (each would cost a pass: a control-plane read and perhaps a status write).
        let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=kubiya-operator");
        let queue_secrets = ctx.queue_secret_changes.clone();
        let secret_changes = watcher(secrets, owned)
            .default_backoff()
            // Not cached whole: the few facts a settled Environment's check needs.
            .inspect(move |event| {
                if let Ok(event) = event {
                    secret_index.apply(event);
                }
            })
            .filter_map(move |event| {
                let changed = match event {
                    Ok(watcher::Event::Delete(s)) => Some(Ok(s)),
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))
                        if !worker_secret::is_untouched(&s) =>
                    {
                        Some(Ok(s))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                };
                // A WorkerQueue's Secret wakes its queue (the one watch serves both kinds).
                if let Some(Ok(s)) = &changed
                    && let Some(owner) = worker_secret::controller(s).filter(|o| o.kind == "WorkerQueue")
                {
                    let _ = queue_secrets.send((s.namespace().unwrap_or_default(), owner.name.clone()));
                }
                async move { changed }
            });
        let connection_changes = connection_changes(&ctx, store.clone());
        // Secrets whose values Environments use wake them as they change, appear or go. Watched
        // by metadata only, and not cached: any Secret of the namespace may be named, and none is
        // held in memory for it.
        let referenced = watcher(secret_names, watcher::Config::default())
            .default_backoff()
            .inspect(move |event| {
                if let Ok(event) = event {
                    secret_versions.apply(event);
                }
            })
            .filter_map(|event| async move {
                match event {
                    // A relist's objects are no change: every Environment gets its pass at start.
                    Ok(watcher::Event::Apply(s) | watcher::Event::Delete(s)) => Some(Ok(s)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            });
        let users = store.clone();
        Controller::for_stream(changes, store)
            .owns_stream(secret_changes)
            .watches_stream(referenced, move |secret| users_of_secret(&users, &secret))
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

/// The Environments of `store` whose spec uses `secret`'s values.
fn users_of_secret(store: &Store<Guarded>, secret: &PartialObjectMeta<Secret>) -> Vec<ObjectRef<Guarded>> {
    let (namespace, name) = (secret.namespace(), secret.name_any());
    store
        .state()
        .iter()
        .filter(|obj| obj.namespace() == namespace)
        .filter(|obj| obj.decoded().is_some_and(|env| env.uses_secret(&name)))
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

/// Whether `env` is where its queues can be (Ready or Inactive, with an environment id).
fn takes_queues(env: &crate::resource::Environment) -> bool {
    env.status.as_ref().is_some_and(|s| {
        s.environment_id.is_some()
            && matches!(s.phase, Some(crate::resource::Phase::Ready | crate::resource::Phase::Inactive))
    })
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
