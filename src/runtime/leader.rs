//! Leader election on a `coordination.k8s.io/v1` Lease, so that several replicas are safe: one
//! reconciles, the others stand by and take over when its Lease runs out.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long resigning may take on shutdown before the process exits anyway (the Lease then
/// simply expires).
const RESIGN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the Lease lives and who this replica is.
#[derive(Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

/// How often a standby reads the Lease again. The Lease library re-reads it only when its copy
/// expires, so a standby would not see a Lease released early; a fresh manager reads it anew.
const RETRY: Duration = Duration::from_secs(2);
/// How long a failed renewal waits before the next try, and how long the leader's read of its
/// Lease at the renew deadline may take.
const POLL: Duration = Duration::from_secs(1);

/// The last moment a leader may go on after renewing its Lease at `renewed`: before a standby
/// may take the Lease (at `renewed + duration` by its clock), with a margin for clock skew and
/// the time it takes to stop. The library renews at half the duration, so a renewal or two can
/// fail or be slow before this is reached.
pub fn renew_deadline(renewed: SystemTime, duration: Duration) -> SystemTime {
    renewed + duration - (duration / 5).max(Duration::from_secs(1))
}

/// A replica in the election.
pub struct Candidate {
    kube: Client,
    /// Without a read timeout: the leader's watch of its Lease is quiet between renewals.
    watch: Client,
    lease: LeaseConfig,
}

/// The replica holding the Lease; renews it in the background while this lives.
pub struct Leader {
    manager: Arc<LeaseManager>,
    holding: JoinHandle<()>,
    lost: watch::Receiver<bool>,
    identity: String,
}

impl Candidate {
    /// `kube` should time out reads: a renewal stuck on a dead connection must not hold the
    /// election up. `watch` should not: a read timeout would cut the Lease's watch between
    /// renewals and make it a poll again.
    pub fn new(kube: Client, watch: Client, lease: LeaseConfig) -> Self {
        Candidate { kube, watch, lease }
    }

    async fn manager(&self) -> Result<LeaseManager, LeaseManagerError> {
        let secs = self.lease.duration.as_secs();
        LeaseManagerBuilder::new(self.kube.clone(), &self.lease.name)
            .with_namespace(&self.lease.namespace)
            .with_identity(&self.lease.identity)
            .with_duration(secs)
            // Renew at half the duration: several tries fit before the deadline.
            .with_grace(secs / 2)
            .build()
            .await
    }

    /// Waits until this replica holds the Lease (creating the Lease if there is none). Errors
    /// from the API server are logged and retried; the first one is returned if the Lease could
    /// never be read, which is a setup problem (RBAC, namespace) rather than a passing one.
    pub async fn elected(&self) -> Result<Leader, LeaseManagerError> {
        let mut read_once = false;
        info!(lease = %self.lease.name, namespace = %self.lease.namespace, identity = %self.lease.identity, "standing for leader");
        loop {
            let manager = match tokio::time::timeout(RETRY, self.manager()).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) if !read_once => return Err(e),
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot read the lease; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                Err(_) => continue,
            };
            read_once = true;
            // Cancelling a take-over half way is harmless: the Lease is ours once the write that
            // names us lands, and the next fresh manager sees that.
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

    /// Gives the Lease up if this replica took it just as it was told to stop.
    pub async fn withdraw(&self) {
        if let Ok(Ok(manager)) = tokio::time::timeout(RETRY, self.manager()).await {
            let _ = tokio::time::timeout(RESIGN_TIMEOUT, manager.release()).await;
        }
    }

    fn lead(&self, manager: LeaseManager) -> Leader {
        let manager = Arc::new(manager);
        let (tx, lost) = watch::channel(false);
        let leases = Leases {
            watched: Api::namespaced(self.watch.clone(), &self.lease.namespace),
            read: Api::namespaced(self.kube.clone(), &self.lease.namespace),
        };
        let lease = self.lease.clone();
        let holding = tokio::spawn({
            let manager = manager.clone();
            async move {
                let why = hold(&manager, &leases, &lease).await;
                warn!(identity = %lease.identity, "no longer leading: {why}");
                let _ = tx.send(true);
            }
        });
        Leader { manager, holding, lost, identity: self.lease.identity.clone() }
    }
}

/// The Lease, watched (no read timeout: the watch is quiet between renewals) and read (with the
/// lease client's short timeout).
struct Leases {
    watched: Api<Lease>,
    read: Api<Lease>,
}

/// What the Lease says of this replica: `Err` if another holds it, else its renew deadline.
fn deadline_of(current: Lease, lease: &LeaseConfig) -> Result<Option<SystemTime>, &'static str> {
    let spec = current.spec.unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(lease.identity.as_str()) {
        return Err("another replica holds the lease");
    }
    Ok(spec.renew_time.map(|renewed| renew_deadline(SystemTime::from(renewed.0), lease.duration)))
}

/// Keeps the Lease renewed (the library's loop) and watches that renewals land: returns why
/// this replica must stop leading.
async fn hold(manager: &LeaseManager, leases: &Leases, lease: &LeaseConfig) -> &'static str {
    let renew = async {
        loop {
            match manager.changed().await {
                Ok(true) => {}
                Ok(false) => return "another replica holds the lease",
                Err(e) => {
                    warn!(error = %e, "cannot renew the lease");
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    };
    // The Lease watched, not polled: each renewal arrives as an event (one every half duration).
    // Lists are of the most recent version (a cached copy could still name the last holder).
    // At the deadline, one read decides, so that a watch connection that died quietly is not
    // mistaken for renewals that did not land (nor a Role without list/watch).
    let watchdog = async {
        let mut deadline = renew_deadline(SystemTime::now(), lease.duration);
        let only_ours = watcher::Config::default()
            .fields(&format!("metadata.name={}", lease.name))
            .list_semantic(watcher::ListSemantic::MostRecent);
        let mut renewals =
            std::pin::pin!(watcher(leases.watched.clone(), only_ours).default_backoff().applied_objects());
        loop {
            let left = deadline.duration_since(SystemTime::now()).unwrap_or_default();
            let current = tokio::select! {
                () = tokio::time::sleep(left) => {
                    match tokio::time::timeout(POLL, leases.read.get_opt(&lease.name)).await {
                        Ok(Ok(Some(current))) => current,
                        _ => return "the lease was not renewed in time",
                    }
                }
                read = renewals.next() => match read {
                    Some(Ok(current)) => current,
                    Some(Err(e)) => {
                        warn!(error = %e, "watching the lease");
                        continue;
                    }
                    None => return "the watch of the lease ended",
                },
            };
            match deadline_of(current, lease) {
                Err(why) => return why,
                // Only forward: an older copy never brings the deadline closer.
                Ok(Some(next)) if next > deadline => deadline = next,
                Ok(_) if deadline <= SystemTime::now() => return "the lease was not renewed in time",
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        why = renew => why,
        why = watchdog => why,
    }
}

impl Leader {
    /// Resolves when this replica must stop leading: another holds the Lease, or it could not
    /// be renewed in time (a standby may take it).
    pub async fn deposed(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Gives the Lease up, so that a standby takes over at its next look instead of after it
    /// expires.
    pub async fn resign(self) {
        self.holding.abort();
        let _ = self.holding.await;
        match tokio::time::timeout(RESIGN_TIMEOUT, self.manager.release()).await {
            Ok(Ok(())) => info!(identity = %self.identity, "released the lease"),
            Ok(Err(e)) => warn!(error = %e, "could not release the lease; it expires on its own"),
            Err(_) => warn!("releasing the lease timed out; it expires on its own"),
        }
    }
}

/// This replica's name in the Lease: the pod name in a cluster, else host and process id.
pub fn identity(pod_name: Option<&str>) -> String {
    if let Some(pod) = pod_name.filter(|p| !p.is_empty()) {
        return pod.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "kubiya-operator".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_falls_between_the_renewal_and_the_expiry() {
        let t0 = SystemTime::UNIX_EPOCH;
        for secs in [8, 15, 60] {
            let d = Duration::from_secs(secs);
            let renews_at = t0 + d - Duration::from_secs(secs / 2);
            let deadline = renew_deadline(t0, d);
            assert!(deadline > renews_at + Duration::from_secs(2), "{secs}s: room to retry a renewal");
            assert!(
                deadline + Duration::from_secs(1) <= t0 + d,
                "{secs}s: a second before a standby may take over"
            );
        }
    }
}
