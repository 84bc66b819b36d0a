//! The Connection controllers (one per watched scope) and the ClusterConnection controller, and
//! their caches, which Environment passes read to resolve their connection.

use std::sync::Arc;

use futures::{Future, StreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Client, CustomResourceExt, Resource};
use tracing::warn;

use crate::config::Config;
use crate::connection::pass::{self, Context};
use crate::resource::{ClusterConnection, Connection};

/// The watches and caches of connections, made before the controllers run so that the
/// Environment side can hold the caches.
pub struct Watches {
    connections: Vec<(Api<Connection>, reflector::store::Writer<Connection>)>,
    cluster: (Api<ClusterConnection>, reflector::store::Writer<ClusterConnection>),
    pub connection_stores: Vec<Store<Connection>>,
    pub cluster_store: Store<ClusterConnection>,
}

pub fn watches(kube: &Client, config: &Config) -> Watches {
    let apis: Vec<Api<Connection>> = if config.watch_namespaces.is_empty() {
        vec![Api::all(kube.clone())]
    } else {
        config.watch_namespaces.iter().map(|ns| Api::namespaced(kube.clone(), ns)).collect()
    };
    let mut connections = Vec::new();
    let mut connection_stores = Vec::new();
    for api in apis {
        let (store, writer) = reflector::store();
        connection_stores.push(store);
        connections.push((api, writer));
    }
    let (cluster_store, writer) = reflector::store();
    Watches { connections, cluster: (Api::all(kube.clone()), writer), connection_stores, cluster_store }
}

impl Watches {
    /// Runs every connection controller until `shutdown`. A kind whose CRD is not installed (an
    /// upgrade that did not apply the new CRDs) is served as empty, with a warning, rather than
    /// holding every Environment back.
    pub async fn run(
        self,
        ctx: Arc<Context>,
        concurrency: u16,
        shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
    ) {
        let Watches { connections, cluster, connection_stores, cluster_store } = self;
        let namespaced = async {
            if !installed::<Connection>(&ctx.kube).await {
                connections.into_iter().for_each(|(_, writer)| empty(writer));
                return;
            }
            let controllers = connections.into_iter().zip(connection_stores).map(|((api, writer), store)| {
                let run = (ctx.clone(), concurrency, shutdown.clone());
                controller(api, writer, store, pass::reconcile_namespaced, run)
            });
            futures::future::join_all(controllers).await;
        };
        let cluster = async {
            if !installed::<ClusterConnection>(&ctx.kube).await {
                empty(cluster.1);
                return;
            }
            let run = (ctx.clone(), concurrency, shutdown.clone());
            controller(cluster.0, cluster.1, cluster_store, pass::reconcile_cluster, run).await;
        };
        futures::future::join(namespaced, cluster).await;
    }
}

/// Whether the CRD of `K` is installed (if it cannot be told, it is taken as installed).
pub(super) async fn installed<K: CustomResourceExt>(kube: &Client) -> bool {
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    match crds.get_opt(K::crd_name()).await {
        Ok(Some(_)) => true,
        Ok(None) => {
            warn!(
                crd = K::crd_name(),
                "CRD not installed: apply the operator's CRDs (crds/ or the install manifests) and restart it to use this kind"
            );
            false
        }
        Err(_) => true,
    }
}

/// Makes a cache that will never be filled ready, and empty.
pub(super) fn empty<K: Resource + Clone>(mut writer: reflector::store::Writer<K>)
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
}

async fn controller<K, F, Fut>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    store: Store<K>,
    reconcile: F,
    (ctx, concurrency, shutdown): (Arc<Context>, u16, impl Future<Output = ()> + Send + Sync + 'static),
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut,
    Fut:
        Future<Output = Result<kube::runtime::controller::Action, crate::connection::Error>> + Send + 'static,
{
    let events = watcher(api, super::watched())
        .default_backoff()
        .modify(|c| crate::resource::slim(c.meta_mut()))
        .reflect(writer);
    let changes = super::applied(events, store.clone());
    // Bounded like the Environments' passes: thousands of connections starting at once would
    // otherwise flood the API server, the leader's Lease renewal among the requests held up.
    Controller::for_stream(changes, store)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, pass::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res
                && !matches!(e, kube::runtime::controller::Error::ReconcilerFailed(..))
            {
                warn!(error = %e, "connection controller");
            }
        })
        .await
}
