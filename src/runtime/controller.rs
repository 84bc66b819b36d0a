//! The controller over `Environment`, watching the owned worker Secrets too, the HTTP server
//! beside it, and the leader election in front of it.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Future, FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::http::{self, Probe, Stage};
use super::leader::{self, Candidate, LeaseConfig};
use crate::config::Config;
use crate::controlplane;
use crate::metrics::{Metrics, PhaseCounts};
use crate::reconcile::{self, Context, worker_secret};
use crate::resource::Guarded;

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

/// Runs until `shutdown` resolves: joins the leader election, and while leading runs the
/// controllers. On `shutdown`, in-flight reconciles finish and the Lease is released.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), StartError> {
    let shutdown = shutdown.shared();
    let kube_config =
        kube::Config::infer().await.map_err(|e| StartError::Kube(kube::Error::InferConfig(e)))?;
    // Three clients: watches (no read timeout: they are long polls), the operator's requests
    // (bounded: no pass waits forever on a dead connection), and the election's (tighter still:
    // a renewal stuck on a dead connection must not keep a leader believing it leads).
    let watch_kube = Client::try_from(kube_config.clone()).map_err(StartError::Kube)?;
    let with_timeout = |timeout| {
        let mut c = kube_config.clone();
        c.read_timeout = Some(timeout);
        c.reset_reader_on_write = true;
        Client::try_from(c).map_err(StartError::Kube)
    };
    let kube = with_timeout(REQUEST_READ_TIMEOUT)?;
    let lease_kube = with_timeout(LEASE_READ_TIMEOUT)?;
    let scopes = scopes(&watch_kube, &config);
    let stores: Vec<Store<Guarded>> = scopes.iter().map(|s| s.store.clone()).collect();
    let mut metrics = Metrics::default();
    let counted = stores.clone();
    metrics.count_phases(PhaseCounts(Box::new(move || {
        counted
            .iter()
            .flat_map(|s| s.state())
            .map(|g| g.decoded().and_then(|e| e.status.as_ref()).and_then(|s| s.phase))
            .collect()
    })));
    let metrics = Arc::new(metrics);
    let cp = controlplane::Client::new(controlplane::ClientConfig {
        base_url: config.control_plane_url.clone(),
        api_key: config.api_key()?,
        timeout: config.request_timeout,
        max_concurrent: usize::from(config.max_concurrent_requests),
        metrics: metrics.clone(),
    })
    .map_err(StartError::ControlPlane)?;
    let cluster = Api::<Namespace>::all(kube.clone())
        .get(CLUSTER_NAMESPACE)
        .await
        .map_err(StartError::Cluster)?
        .metadata
        .uid
        .unwrap_or_default();
    let probe = Arc::new(Probe::new(metrics.clone()));
    let server = http::serve(config.metrics_addr, probe.clone()).await.map_err(StartError::Listen)?;
    tokio::spawn(server);

    let identity = leader::identity(config.pod_name.as_deref());
    let lease = LeaseConfig {
        name: config.lease_name.clone(),
        namespace: config.lease_namespace.clone().unwrap_or_else(|| kube.default_namespace().to_owned()),
        identity: identity.clone(),
        duration: config.lease_duration,
    };
    let candidate = Candidate::new(lease_kube, lease);
    probe.set(Stage::Standby);
    let mut leader = tokio::select! {
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
    let ctx = Arc::new(Context {
        recorder: Recorder::new(kube.clone(), reporter),
        kube: kube.clone(),
        cp,
        metrics: metrics.clone(),
        cluster,
        provisioning_poll: config.provisioning_poll,
        resync: config.resync_interval,
        pass_timeout: config.request_timeout * PASS_TIMEOUT_REQUESTS,
        objects: Mutex::new(HashMap::new()),
    });
    info!(
        namespaces = %if config.watch_namespaces.is_empty() { "<all>".to_owned() } else { config.watch_namespaces.join(",") },
        selector = config.label_selector.as_deref().unwrap_or("<none>"),
        url = %config.control_plane_url,
        "starting"
    );
    tokio::spawn(mark_synced(stores.clone(), probe.clone()));
    tokio::spawn(prune(stores, ctx.clone()));
    let controllers = futures::future::join_all(
        scopes.into_iter().map(|scope| scope.run(&config, ctx.clone(), shutdown.clone())),
    );
    // In-flight reconciles finish after the signal; but a controller whose watch is failing
    // (API server unreachable, CRD missing) may not notice it, so the wait is bounded.
    let grace = async {
        shutdown.clone().await;
        info!("shutting down: finishing in-flight reconciles");
        probe.set(Stage::Stopping);
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = controllers => info!("stopped"),
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

/// A pass may take as long as this many control-plane requests (each with its own timeout and
/// retries): a get, a list, a create, an update, the worker command, with room to spare.
const PASS_TIMEOUT_REQUESTS: u32 = 8;

/// One watched scope: all namespaces, or one of the listed ones. Each has its own watches and
/// cache (kube's caches hold one list-watch), all share the context.
struct Scope {
    envs: Api<Guarded>,
    secrets: Api<Secret>,
    store: Store<Guarded>,
    writer: reflector::store::Writer<Guarded>,
}

fn scopes(kube: &Client, config: &Config) -> Vec<Scope> {
    let scope = |namespace: Option<&String>| {
        let (store, writer) = reflector::store();
        let (envs, secrets) = match namespace {
            Some(ns) => (Api::namespaced(kube.clone(), ns), Api::namespaced(kube.clone(), ns)),
            None => (Api::all(kube.clone()), Api::all(kube.clone())),
        };
        Scope { envs, secrets, store, writer }
    };
    if config.watch_namespaces.is_empty() {
        return vec![scope(None)];
    }
    config.watch_namespaces.iter().map(|ns| scope(Some(ns))).collect()
}

impl Scope {
    async fn run(
        self,
        config: &Config,
        ctx: Arc<Context>,
        shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    ) {
        let Scope { envs, secrets, store, writer } = self;
        let mut selected = watcher::Config::default();
        if let Some(selector) = &config.label_selector {
            selected = selected.labels(selector);
        }
        let forget = ctx.clone();
        // Only changes a user makes wake the controller: our own status writes do not.
        let changes = watcher(envs, selected)
            .default_backoff()
            // managedFields are most of an object's bytes and the operator never reads them.
            .modify(|env| env.managed_fields_mut().clear())
            .reflect(writer)
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
        let secret_changes = watcher(secrets, owned).default_backoff().filter_map(|event| async move {
            match event {
                Ok(watcher::Event::Delete(s)) => Some(Ok(s)),
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))
                    if !worker_secret::is_untouched(&s) =>
                {
                    Some(Ok(s))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        });
        Controller::for_stream(changes, store)
            .owns_stream(secret_changes)
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

/// Marks the probe ready once every cache has synced.
async fn mark_synced(stores: Vec<Store<Guarded>>, probe: Arc<Probe>) {
    if synced(&stores).await {
        probe.advance(Stage::Syncing, Stage::Running);
    }
}

/// Waits until every cache has synced; false if one never will (its writer is gone).
async fn synced(stores: &[Store<Guarded>]) -> bool {
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
async fn prune(stores: Vec<Store<Guarded>>, ctx: Arc<Context>) {
    if !synced(&stores).await {
        return;
    }
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        let present: HashSet<String> =
            stores.iter().flat_map(|s| s.state()).filter_map(|o| o.uid()).collect();
        ctx.prune(&present);
    }
}

/// How often per-object state is checked against the caches.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// What a user can change that needs a pass: spec (generation), deletion, finalizers and our
/// annotations. Status and managed fields are left out.
fn user_intent(env: &Guarded) -> Option<u64> {
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
