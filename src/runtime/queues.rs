//! The WorkerQueue controllers, one per watched scope like the Environment controllers, sharing
//! their context. An Environment's status change wakes its queues (a queue waits for its
//! Environment to be Ready), as do their worker Secrets' and their Environments' connections'
//! changes. Without
//! the WorkerQueue CRD (an upgrade that did not apply it) the kind is served as empty.

use std::sync::Arc;

use futures::{Future, Stream, StreamExt};
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
}

/// The scopes `config` asks for: all namespaces, or each listed one.
pub fn scopes(kube: &Client, config: &Config) -> Vec<Scope> {
    let scope = |namespace: Option<&String>| {
        let (store, writer) = reflector::store();
        let queues = match namespace {
            Some(ns) => Api::namespaced(kube.clone(), ns),
            None => Api::all(kube.clone()),
        };
        Scope { queues, store, writer }
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
        let Scope { queues, store, writer } = self;
        // An upgrade that did not apply the new CRD: served as empty, with a warning.
        if !super::connections::installed::<WorkerQueue>(&ctx.kube).await {
            super::connections::empty(writer);
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
        Controller::for_stream(changes, store)
            .reconcile_on(environment_changes)
            .reconcile_on(secret_changes)
            .reconcile_on(connection_changes)
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
        let queues: Vec<ObjectRef<GuardedQueue>> = store
            .state()
            .iter()
            .filter(|q| {
                q.decoded().is_some_and(|q| {
                    users.contains(&(q.namespace().unwrap_or_default(), q.spec.environment_ref.name.clone()))
                })
            })
            .map(|q| ObjectRef::from_obj(q.as_ref()))
            .collect();
        futures::stream::iter(queues)
    })
}

/// The queues of `store` that wait for their Environment, as it can take them.
fn environment_changes(
    ctx: &Context,
    store: Store<GuardedQueue>,
) -> impl Stream<Item = ObjectRef<GuardedQueue>> + use<> {
    super::received(ctx.environment_changes.subscribe()).flat_map(
        move |(namespace, name, id): crate::reconcile::EnvironmentChange| {
            let queues: Vec<ObjectRef<GuardedQueue>> = store
                .state()
                .iter()
                .filter(|q| {
                    q.decoded().is_some_and(|q| {
                        q.namespace().as_deref() == Some(namespace.as_str())
                            && q.spec.environment_ref.name == name
                            && queue::status::awaits_environment(q, &id)
                    })
                })
                .map(|q| ObjectRef::from_obj(q.as_ref()))
                .collect();
            futures::stream::iter(queues)
        },
    )
}
