//! Leader election on a `coordination.k8s.io/v1` Lease, so that several replicas are safe: one
//! reconciles, the others stand by and take over when its Lease runs out.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long resigning may take on shutdown before the process exits anyway (the Lease then
/// simply expires).
const RESIGN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the Lease lives and who this replica is.
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

/// How often a standby reads the Lease again. The Lease library re-reads it only when its copy
/// expires, so a standby would not see a Lease released early; a fresh manager reads it anew.
const RETRY: Duration = Duration::from_secs(2);

/// A replica in the election.
pub struct Candidate {
    kube: Client,
    lease: LeaseConfig,
}

/// The replica holding the Lease; renews it in the background while this lives.
pub struct Leader {
    manager: Arc<LeaseManager>,
    renewing: JoinHandle<()>,
    lost: watch::Receiver<bool>,
    identity: String,
}

impl Candidate {
    pub fn new(kube: Client, lease: LeaseConfig) -> Self {
        Candidate { kube, lease }
    }

    async fn manager(&self) -> Result<LeaseManager, LeaseManagerError> {
        let secs = self.lease.duration.as_secs();
        LeaseManagerBuilder::new(self.kube.clone(), &self.lease.name)
            .with_namespace(&self.lease.namespace)
            .with_identity(&self.lease.identity)
            .with_duration(secs)
            // Renew a third of the way before expiry, as client-go does (renew deadline 2/3).
            .with_grace((secs / 3).max(1))
            .build()
            .await
    }

    /// Waits until this replica holds the Lease (creating the Lease if there is none). Errors
    /// from the API server are logged and retried; the first one is returned if the Lease could
    /// never be read, which is a setup problem (RBAC, namespace) rather than a passing one.
    pub async fn elected(self) -> Result<Leader, LeaseManagerError> {
        let mut read_once = false;
        info!(lease = %self.lease.name, namespace = %self.lease.namespace, identity = %self.lease.identity, "standing for leader");
        loop {
            let manager = match self.manager().await {
                Ok(m) => m,
                Err(e) if !read_once => return Err(e),
                Err(e) => {
                    warn!(error = %e, "cannot read the lease; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            read_once = true;
            match tokio::time::timeout(RETRY, manager.changed()).await {
                Ok(Ok(true)) => return Ok(self.lead(manager)),
                Ok(Ok(false)) | Err(_) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, "leader election");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    fn lead(self, manager: LeaseManager) -> Leader {
        let manager = Arc::new(manager);
        let (tx, lost) = watch::channel(false);
        let renewer = manager.clone();
        let duration = self.lease.duration;
        let renewing = tokio::spawn(async move {
            // `changed` renews the Lease and returns when holding it changes, or on an error. A
            // leader that cannot renew for a whole Lease duration must assume a standby took
            // over, and stop.
            let mut failing_since: Option<Instant> = None;
            loop {
                let call = Instant::now();
                match renewer.changed().await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        if call.elapsed() > RETRY {
                            failing_since = None; // it held the Lease for a while before failing
                        }
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        warn!(error = %e, "cannot renew the lease");
                        if since.elapsed() >= duration {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            let _ = tx.send(true);
        });
        Leader { manager, renewing, lost, identity: self.lease.identity }
    }
}

impl Leader {
    /// Resolves when another replica holds the Lease.
    pub async fn deposed(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Gives the Lease up, so that a standby takes over at its next look instead of after it
    /// expires.
    pub async fn resign(self) {
        self.renewing.abort();
        let _ = self.renewing.await;
        match tokio::time::timeout(RESIGN_TIMEOUT, self.manager.release()).await {
            Ok(Ok(())) => info!(identity = %self.identity, "released the lease"),
            Ok(Err(e)) => warn!(error = %e, "could not release the lease; it expires on its own"),
            Err(_) => warn!("releasing the lease timed out; it expires on its own"),
        }
    }
}

/// This replica's name in the Lease: the pod name in a cluster, else host and process id.
pub fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "kubiya-operator".to_owned());
    format!("{host}-{}", std::process::id())
}
