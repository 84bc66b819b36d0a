//! The WorkerQueue controllers, one per watched scope like the Environment controllers, sharing
//! their context. An Environment's status change wakes its queues (a queue waits for its
//! Environment to be Ready), as do their worker Secrets' and their Environments' connections'
//! changes, their workers' Deployments' changes, and the creation or deletion of a Secret that
//! holds their workers' key. Without the WorkerQueue CRD (an upgrade that did not apply it) the
//! kind is served as empty.

use std::sync::Arc;

use futures::{Future, Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Client, ResourceExt};
use tracing::warn;

use crate::config::Config;
use crate::queue::{self, GuardedQueue};
use crate::reconcile::Context;
use crate::resource::WorkerQueue;

/// One watched scope.
pub struct Scope {
    queues: Api<GuardedQueue>,
    pub store: Store<GuardedQueue>,
    writer: reflector::store::Writer<GuardedQueue>,
    deployments: Api<Deployment>,
    /// The workers' Deployments, without their pod templates.
    pub deployments_store: Store<Deployment>,
    deployments_writer: reflector::store::Writer<Deployment>,
}

/// The scopes `config` asks for: all namespaces, or each listed one.
pub fn scopes(kube: &Client, config: &Config) -> Vec<Scope> {
    let scope = |namespace: Option<&String>| {
        let (store, writer) = reflector::store();
        let (deployments_store, deployments_writer) = reflector::store();
        let (queues, deployments) = match namespace {
            Some(ns) => (Api::namespaced(kube.clone(), ns), Api::namespaced(kube.clone(), ns)),
            None => (Api::all(kube.clone()), Api::all(kube.clone())),
        };
        Scope { queues, store, writer, deployments, deployments_store, deployments_writer }
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
        let Scope { queues, store, writer, deployments, deployments_store: _, deployments_writer } = self;
        // An upgrade that did not apply the new CRD: served as empty, with a warning.
        if !super::connections::installed::<WorkerQueue>(&ctx.kube).await {
            super::connections::empty(writer);
            super::connections::empty(deployments_writer);
            return;
        }
        let mut selected = super::watched();
        if let Some(selector) = &config.label_selector {
            selected = selected.labels(selector);
        }
        let forget = ctx.clone();
        let events = watcher(queues, selected)
            .default_backoff()
            .modify(|q| crate::resource::slim(kube::Resource::meta_mut(q)))
            .reflect(writer)
            .inspect(move |event| {
                if let Ok(watcher::Event::Delete(obj)) = event {
                    forget.forget(&obj.uid().unwrap_or_default());
                }
            });
        let changes = super::applied(events, store.clone())
            .predicate_filter(super::environments::user_intent, Default::default());
        let environment_changes = environment_changes(&ctx, store.clone());
        let secret_changes = super::received(ctx.queue_secret_changes.subscribe())
            .map(|(namespace, name)| ObjectRef::<GuardedQueue>::new(&name).within(&namespace));
        let connection_changes = connection_changes(&ctx, store.clone());
        let key_changes = key_changes(&ctx, store.clone());
        // The workers' Deployments, by the label only the operator's Deployments carry; a
        // tenant's Deployment with that label costs its metadata, replicas and status, no more.
        let workers = watcher(deployments, super::watched().labels(queue::workers::LABEL))
            .default_backoff()
            .modify(queue::deployment::slim)
            .reflect(deployments_writer)
            .touched_objects();
        Controller::for_stream(changes, store)
            .owns_stream(workers)
            .reconcile_on(environment_changes)
            .reconcile_on(secret_changes)
            .reconcile_on(connection_changes)
            .reconcile_on(key_changes)
            .with_config(controller::Config::default().concurrency(config.concurrency))
            .graceful_shutdown_on(shutdown)
            .run(queue::reconcile, queue::error_policy, ctx)
            .for_each(|res| async move {
                match res {
                    Ok((obj, _)) => {
                        tracing::debug!(namespace = obj.namespace, worker_queue = obj.name, "reconciled")
                    }
                    Err(controller::Error::ReconcilerFailed(_, obj)) => {
                        tracing::debug!(
                            namespace = obj.namespace,
                            worker_queue = obj.name,
                            "reconcile failed"
                        )
                    }
                    Err(e) => warn!(error = %e, "worker queue controller"),
                }
            })
            .await
    }
}

/// The queues of `store` whose Environment uses a connection whose state or key changed: a
/// queue waiting for its connection (a deletion, say) goes on without an edit.
fn connection_changes(
    ctx: &Context,
    store: Store<GuardedQueue>,
) -> impl Stream<Item = ObjectRef<GuardedQueue>> + use<> {
    let registry = ctx.connections.clone();
    super::received(registry.subscribe()).flat_map(move |key| {
        let users: std::collections::HashSet<(String, String)> = registry
            .environments
            .iter()
            .flat_map(|s| registry.users_in(s, &key))
            .map(|r| (r.namespace.unwrap_or_default(), r.name))
            .collect();
        futures::stream::iter(matching(&store, |q| {
            users.contains(&(q.namespace().unwrap_or_default(), q.spec.environment_ref.name.clone()))
        }))
    })
}

/// The decoded queues of `store` for which `wanted` holds.
fn matching(
    store: &Store<GuardedQueue>,
    wanted: impl Fn(&WorkerQueue) -> bool,
) -> Vec<ObjectRef<GuardedQueue>> {
    store
        .state()
        .iter()
        .filter(|q| q.decoded().is_some_and(&wanted))
        .map(|q| ObjectRef::from_obj(q.as_ref()))
        .collect()
}

/// The queues of `store` not Ready whose workers' key is in the Secret a change names: one
/// waiting for its key goes on once the Secret is created.
fn key_changes(
    ctx: &Context,
    store: Store<GuardedQueue>,
) -> impl Stream<Item = ObjectRef<GuardedQueue>> + use<> {
    super::received(ctx.key_secret_changes.subscribe()).flat_map(
        move |(namespace, name): (String, String)| {
            futures::stream::iter(matching(&store, |q| {
                q.namespace().as_deref() == Some(namespace.as_str())
                    && q.spec.workers.as_ref().and_then(|w| w.api_key_secret_ref.as_ref()).map(|k| &k.name)
                        == Some(&name)
                    && !queue::status::applied(q)
            }))
        },
    )
}

/// The queues of `store` that wait for their Environment, as it can take them.
fn environment_changes(
    ctx: &Context,
    store: Store<GuardedQueue>,
) -> impl Stream<Item = ObjectRef<GuardedQueue>> + use<> {
    super::received(ctx.environment_changes.subscribe()).flat_map(
        move |(namespace, name, id): crate::reconcile::EnvironmentChange| {
            futures::stream::iter(matching(&store, |q| {
                q.namespace().as_deref() == Some(namespace.as_str())
                    && q.spec.environment_ref.name == name
                    && queue::status::awaits_environment(q, &id)
            }))
        },
    )
}
