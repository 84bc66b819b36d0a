//! The controller over `Environment`, watching the owned worker Secrets too, and the HTTP server
//! beside it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Future, FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::http::{self, Probe};
use crate::config::Config;
use crate::controlplane;
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, worker_secret};
use crate::resource::Environment;

/// How long in-flight reconciles get after SIGTERM (within Kubernetes' default 30 s).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot build the control-plane client")]
    ControlPlane(#[source] reqwest::Error),
    #[error("cannot reach the Kubernetes API (kubeconfig or in-cluster config)")]
    Kube(#[source] kube::Error),
    #[error("cannot listen on the metrics address")]
    Listen(#[source] std::io::Error),
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), StartError> {
    let cp = controlplane::Client::new(controlplane::ClientConfig {
        base_url: config.control_plane_url.clone(),
        api_key: config.api_key()?,
        timeout: config.request_timeout,
        max_concurrent: usize::from(config.max_concurrent_requests),
    })
    .map_err(StartError::ControlPlane)?;
    let kube = Client::try_default().await.map_err(StartError::Kube)?;
    let metrics = Arc::new(Metrics::default());
    let probe = Arc::new(Probe { metrics: metrics.clone(), ready: AtomicBool::new(false) });
    let server = http::serve(config.metrics_addr, probe.clone()).await.map_err(StartError::Listen)?;
    tokio::spawn(server);

    let reporter =
        Reporter { controller: "kubiya-operator".into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(kube.clone(), reporter),
        kube: kube.clone(),
        cp,
        metrics,
        provisioning_poll: config.provisioning_poll,
        resync: config.resync_interval,
        failures: Mutex::new(HashMap::new()),
        known_ids: Mutex::new(HashMap::new()),
    });

    let (envs, secrets): (Api<Environment>, Api<Secret>) = match &config.watch_namespace {
        Some(ns) => (Api::namespaced(kube.clone(), ns), Api::namespaced(kube.clone(), ns)),
        None => (Api::all(kube.clone()), Api::all(kube.clone())),
    };
    let (reader, writer) = reflector::store();
    let synced = reader.clone();
    tokio::spawn(async move {
        // Polled again every second: the store's readiness signal wakes only one of its waiters,
        // and the controller waits on it too.
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(1), synced.wait_until_ready()).await {
                Ok(Ok(())) => return probe.ready.store(true, Ordering::Relaxed),
                Ok(Err(_)) => return,
                Err(_) => continue,
            }
        }
    });
    // Only changes a user makes wake the controller: our own status writes do not.
    let changes = watcher(envs, watcher::Config::default())
        .default_backoff()
        // managedFields are most of an object's bytes and the operator never reads them.
        .modify(|env| env.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(user_intent, Default::default());
    // Worker Secrets wake their Environment when deleted or edited by hand, not on our own writes
    // (each would cost a pass: a control-plane read and perhaps a status write).
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

    info!(namespace = config.watch_namespace.as_deref().unwrap_or("<all>"), url = %config.control_plane_url, "starting");
    let shutdown = shutdown.shared();
    let controller = Controller::for_stream(changes, reader)
        .owns_stream(secret_changes)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(namespace = obj.namespace, name = obj.name, "reconciled"),
                Err(controller::Error::ReconcilerFailed(_, obj)) => {
                    tracing::debug!(namespace = obj.namespace, name = obj.name, "reconcile failed")
                }
                Err(e) => warn!(error = %e, "controller"),
            }
        });
    // In-flight reconciles finish after the signal; but a controller whose watch is failing
    // (API server unreachable, CRD missing) may not notice it, so the wait is bounded.
    let grace = async {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = controller => info!("stopped"),
        () = grace => warn!(grace = ?SHUTDOWN_GRACE, "stopped without waiting longer for the controller"),
    }
    Ok(())
}

/// What a user can change that needs a pass: spec (generation), deletion, finalizers and our
/// annotations. Status and managed fields are left out.
fn user_intent(env: &Environment) -> Option<u64> {
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
