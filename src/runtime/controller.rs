//! Running the operator: the leader election in front, the HTTP server beside, and while leading
//! the connection controllers and then the Environment controllers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Future, FutureExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use tracing::{info, warn};

use super::connections;
use super::environments::{self, mark_synced, prune, synced};
use super::http::{self, Probe, Stage};
use super::leader::{self, Candidate, LeaseConfig};
use super::queues;
use crate::config::Config;
use crate::connection::{self, ConnKey, HeldConnection, Registry};
use crate::controlplane;
use crate::metrics::{Metrics, PhaseCounts};
use crate::reconcile::Context;
use crate::resource::{Guarded, Phase, WorkerQueue};

/// How long in-flight reconciles get after SIGTERM (within Kubernetes' default 30 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Longest wait for an answer on the leader election's requests.
const LEASE_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for an answer on the operator's own Kubernetes requests (not watches).
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The namespace whose UID names this cluster in owner markers: every cluster has it, and it
/// cannot be deleted, so the name is stable for the cluster's life.
const CLUSTER_NAMESPACE: &str = "kube-system";

/// Why the operator could not start, or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot use the control plane")]
    ControlPlane(#[source] controlplane::BuildError),
    #[error("cannot reach the Kubernetes API (kubeconfig or in-cluster config)")]
    Kube(#[source] kube::Error),
    #[error(
        "cannot read the namespace kube-system, whose UID names this cluster in owner markers \
         (can the ServiceAccount get namespaces/kube-system?)"
    )]
    Cluster(#[source] kube::Error),
    #[error("cannot listen on the metrics address")]
    Listen(#[source] std::io::Error),
    #[error("cannot join the leader election (can the ServiceAccount get, create and patch Leases?)")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    #[error(
        "lost the leader lease (taken by another replica, or not renewed in time); exiting so that only one replica reconciles"
    )]
    Deposed,
}

/// The operator's Kubernetes clients: watches (no read timeout: they are long polls), its own
/// requests (bounded: no pass waits forever on a dead connection), and the election's (tighter
/// still: a renewal stuck on a dead connection must not keep a leader believing it leads).
struct Clients {
    watch: Client,
    requests: Client,
    lease: Client,
}

impl Clients {
    async fn new() -> Result<Clients, StartError> {
        let config =
            kube::Config::infer().await.map_err(|e| StartError::Kube(kube::Error::InferConfig(e)))?;
        let with_timeout = |timeout| {
            let mut c = config.clone();
            c.read_timeout = Some(timeout);
            c.reset_reader_on_write = true;
            Client::try_from(c).map_err(StartError::Kube)
        };
        Ok(Clients {
            watch: Client::try_from(config.clone()).map_err(StartError::Kube)?,
            requests: with_timeout(REQUEST_READ_TIMEOUT)?,
            lease: with_timeout(LEASE_READ_TIMEOUT)?,
        })
    }
}

/// Runs until `shutdown` resolves: joins the leader election, and while leading runs the
/// controllers. On `shutdown`, in-flight reconciles finish and the Lease is released.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), StartError> {
    let shutdown = shutdown.shared();
    let clients = Clients::new().await?;
    let scopes = environments::scopes(&clients.watch, &config);
    let queue_scopes = queues::scopes(&clients.watch, &config);
    let connection_watches = connections::watches(&clients.watch, &config);
    let stores: Vec<Store<Guarded>> = scopes.iter().map(|s| s.store.clone()).collect();
    let metrics = Arc::new(metrics(stores.clone(), queue_scopes.iter().map(|s| s.store.clone()).collect()));
    let registry = Arc::new(registry(&config, &metrics, &connection_watches, stores.clone())?);
    let cluster = match &config.cluster_id {
        Some(id) => id.clone(),
        None => cluster_id(&clients.requests).await?,
    };
    info!(cluster = %cluster, "this cluster's id in owner markers (kubiya.ai/take-over-from names it)");
    let probe = Arc::new(Probe::new(metrics.clone()));
    let server = http::serve(config.metrics_addr, probe.clone()).await.map_err(StartError::Listen)?;
    tokio::spawn(server);

    let identity = leader::identity(config.pod_name.as_deref());
    let lease = LeaseConfig {
        name: config.lease_name.clone(),
        namespace: config
            .lease_namespace
            .clone()
            .unwrap_or_else(|| clients.requests.default_namespace().to_owned()),
        identity: identity.clone(),
        duration: config.lease_duration,
    };
    let candidate = Candidate::new(clients.lease, clients.watch.clone(), lease);
    probe.set(Stage::Standby);
    let leader = tokio::select! {
        elected = candidate.elected() => elected.map_err(StartError::Lease)?,
        () = shutdown.clone() => {
            probe.set(Stage::Stopping);
            candidate.withdraw().await;
            return Ok(());
        }
    };
    info!("leading");
    metrics.leader.set(1);
    probe.set(Stage::Syncing);

    let reporter = Reporter { controller: "kubiya-operator".into(), instance: Some(identity) };
    let recorder = Recorder::new(clients.requests.clone(), reporter);
    let connection_ctx = Arc::new(connection::pass::Context {
        kube: clients.requests.clone(),
        registry: registry.clone(),
        recorder: recorder.clone(),
        secret_versions: scopes.iter().map(|s| s.secret_versions.clone()).collect(),
    });
    let ctx = Arc::new(Context {
        recorder,
        kube: clients.requests,
        connections: registry,
        metrics: metrics.clone(),
        cluster,
        provisioning_poll: config.provisioning_poll,
        resync: config.resync_interval,
        pass_timeout: config.reconcile_timeout,
        objects: Mutex::new(HashMap::new()),
        worker_secrets: scopes.iter().map(|s| s.secret_index.clone()).collect(),
        queues: queue_scopes.iter().map(|s| s.store.clone()).collect(),
        environment_changes: tokio::sync::broadcast::channel(1024).0,
        queue_secret_changes: tokio::sync::broadcast::channel(1024).0,
        key_secret_changes: tokio::sync::broadcast::channel(1024).0,
        deployments: queue_scopes.iter().map(|s| s.deployments_store.clone()).collect(),
        worker_image: config.worker_image.clone(),
    });
    info!(
        namespaces = %if config.watch_namespaces.is_empty() { "<all>".to_owned() } else { config.watch_namespaces.join(",") },
        selector = config.label_selector.as_deref().unwrap_or("<none>"),
        url = %config.control_plane.url,
        "starting"
    );
    tokio::spawn(mark_synced(stores.clone(), probe.clone()));
    let queue_stores = queue_scopes.iter().map(|s| s.store.clone()).collect();
    tokio::spawn(prune(stores, queue_stores, ctx.clone()));
    let controllers =
        controllers(&config, scopes, queue_scopes, connection_watches, connection_ctx, ctx, shutdown.clone());
    lead(leader, controllers, &probe, &metrics, shutdown).await
}

/// Leads while `controllers` run, until they stop, `shutdown` has given in-flight reconciles
/// their grace, or another replica took the Lease.
async fn lead(
    mut leader: leader::Leader,
    controllers: impl Future<Output = ()>,
    probe: &Probe,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()> + Clone,
) -> Result<(), StartError> {
    // In-flight reconciles finish after the signal; but a controller whose watch is failing
    // (API server unreachable, CRD missing) may not notice it, so the wait is bounded.
    let grace = async {
        shutdown.clone().await;
        info!("shutting down: finishing in-flight reconciles");
        probe.set(Stage::Stopping);
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = controllers => info!("stopped"),
        () = grace => warn!(grace = ?SHUTDOWN_GRACE, "stopped without waiting longer for the controller"),
        // Another replica leads now: stop at once, mid-pass if need be (a pass is safe to cut
        // anywhere, as a crash would), rather than reconcile beside it.
        () = leader.deposed() => {
            metrics.leader.set(0);
            // During shutdown with the API server unreachable, the Lease runs out too: that is
            // the end asked for, not a lost election.
            if shutdown.clone().now_or_never().is_some() {
                warn!("stopped: the lease could not be renewed during shutdown");
                return Ok(());
            }
            return Err(StartError::Deposed);
        }
    }
    metrics.leader.set(0);
    leader.resign().await;
    Ok(())
}

/// The metrics, with the phase gauges counted from the Environment and WorkerQueue caches.
fn metrics(stores: Vec<Store<Guarded>>, queues: Vec<Store<Guarded<WorkerQueue>>>) -> Metrics {
    let mut metrics = Metrics::default();
    metrics.count_phases(phases(
        "environments",
        "Environments watched by this replica, by status.phase (only the leader watches; a standby shows 0)",
        stores,
        |e| e.status.as_ref().and_then(|s| s.phase),
    ));
    metrics.count_phases(phases(
        "worker_queues",
        "WorkerQueues watched by this replica, by status.phase (only the leader watches; a standby shows 0)",
        queues,
        |q| q.status.as_ref().and_then(|s| s.phase),
    ));
    metrics
}

/// A by-phase gauge of the objects of `stores`, read at each scrape.
fn phases<K>(
    name: &'static str,
    help: &'static str,
    stores: Vec<Store<Guarded<K>>>,
    phase: fn(&K) -> Option<Phase>,
) -> PhaseCounts
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let phases = move || stores.iter().flat_map(|s| s.state()).map(|g| g.decoded().and_then(phase)).collect();
    PhaseCounts { name, help, phases: Box::new(phases) }
}

/// The connections: the operator's own key, if it has one (for Environments without a
/// connection of their own), and the caches of Connections and ClusterConnections.
fn registry(
    config: &Config,
    metrics: &Arc<Metrics>,
    watches: &connections::Watches,
    environments: Vec<Store<Guarded>>,
) -> Result<Registry, StartError> {
    let defaults = connection::Defaults {
        base_url: config.control_plane.url.clone(),
        timeout: config.request_timeout,
        max_concurrent: usize::from(config.max_concurrent_requests),
        metrics: metrics.clone(),
        allowed: config.allowed_control_planes.clone(),
    };
    let operator = match config.control_plane.api_key()? {
        Some(api_key) => {
            let client = defaults
                .client(&ConnKey::Operator, defaults.base_url.clone(), &api_key, None)
                .map_err(StartError::ControlPlane)?;
            let mut held = HeldConnection::new(ConnKey::Operator, Some(client), config.allow_adoption);
            held.organization = api_key.organization();
            Some(held)
        }
        None => {
            info!("no API key of its own: Environments need a Connection or ClusterConnection");
            None
        }
    };
    Ok(Registry::new(
        operator,
        watches.connection_stores.clone(),
        watches.cluster_store.clone(),
        environments,
        defaults,
    ))
}

/// This cluster's name in owner markers: the UID of its `kube-system` namespace.
async fn cluster_id(kube: &Client) -> Result<String, StartError> {
    let namespace =
        Api::<Namespace>::all(kube.clone()).get(CLUSTER_NAMESPACE).await.map_err(StartError::Cluster)?;
    Ok(namespace.metadata.uid.unwrap_or_default())
}

/// The connection controllers, and once their caches hold every connection, the Environment
/// controllers: an Environment resolved before would fall back to the operator's key, and to
/// another organisation.
async fn controllers(
    config: &Config,
    scopes: Vec<environments::Scope>,
    queue_scopes: Vec<queues::Scope>,
    connection_watches: connections::Watches,
    connection_ctx: Arc<connection::pass::Context>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let connection_stores: (Vec<Store<_>>, Store<_>) =
        (connection_watches.connection_stores.clone(), connection_watches.cluster_store.clone());
    let connection_controllers = connection_watches.run(connection_ctx, config.concurrency, shutdown.clone());
    let environment_controllers = async {
        if synced(&connection_stores.0).await && synced(std::slice::from_ref(&connection_stores.1)).await {
            let environments = futures::future::join_all(
                scopes.into_iter().map(|scope| scope.run(config, ctx.clone(), shutdown.clone())),
            );
            // Queues read their Environment from its cache: one not there yet is not missing.
            let queues = async {
                if synced(&ctx.connections.environments).await {
                    futures::future::join_all(
                        queue_scopes
                            .into_iter()
                            .map(|scope| scope.run(config, ctx.clone(), shutdown.clone())),
                    )
                    .await;
                }
            };
            futures::future::join(environments, queues).await;
        }
    };
    futures::future::join(connection_controllers, environment_controllers).await;
}
