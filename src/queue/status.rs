//! A WorkerQueue's status after a pass: pure, from the pass's outcome and the old status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::decide::drift_message;
use super::desired::Field;
use super::error::Error;
use crate::controlplane::{RemoteQueue, sanitize};
use crate::k8s::conditions::{Kstatus, READY, Readiness, condition, find, is_true};
use crate::resource::{Phase, WorkerQueue, WorkerQueueStatus};

/// Under managementPolicy Observe: whether the remote queue matches the spec.
pub const SYNCED: &str = "Synced";

/// What a pass came to.
pub enum Outcome<'a> {
    /// The remote queue this resource manages (or observes, with `drift`), as it is after the
    /// pass; `worker_secret`: the Secret with its worker command, if written.
    Seen {
        remote: &'a RemoteQueue,
        worker_secret: Option<&'a str>,
        connection: String,
        drift: Option<&'a [Field]>,
        /// The `kubiya.ai/take-over-from` value this pass took the queue with.
        took_over: Option<&'a str>,
    },
    Deleting,
    DeletionPaused,
    Failed(&'a Error),
    Paused,
}

pub fn next(queue: &WorkerQueue, outcome: &Outcome<'_>, now: &Time) -> WorkerQueueStatus {
    let old = queue.status.clone().unwrap_or_default();
    let deleting = queue.metadata.deletion_timestamp.is_some();
    let mut s = WorkerQueueStatus { observed_generation: queue.metadata.generation, ..old.clone() };
    let was_ready = is_true(&old.conditions, READY);
    let v = Kstatus::new;
    // A take-over is used once: the value it was made with is kept while the annotation stays.
    let took_over = match outcome {
        Outcome::Seen { took_over, .. } => *took_over,
        _ => None,
    };
    s.taken_over_from = queue
        .annotation(crate::resource::TAKE_OVER_ANNOTATION)
        .and_then(|_| took_over.map(str::to_owned).or(old.taken_over_from.clone()));
    let (phase, verdict) = match outcome {
        Outcome::Seen { remote, worker_secret, connection, .. } => {
            s.queue_id = Some(remote.id.clone());
            s.environment_id = Some(remote.environment_id.clone());
            s.remote_name = Some(remote.name.clone());
            s.remote_status = Some(remote.status.clone());
            s.active_workers = Some(remote.active_workers);
            s.max_workers = remote.max_workers;
            s.can_register = Some(remote.can_register());
            s.connection = Some(connection.clone());
            if let Some(secret) = worker_secret {
                s.worker_secret_name = Some((*secret).to_owned());
            }
            if remote.can_register() {
                let secret = s.worker_secret_name.as_deref().unwrap_or("-");
                let message = format!(
                    "queue {} is active: {} worker(s) registered; the worker command is in Secret {secret}",
                    remote.id, remote.active_workers
                );
                (Some(Phase::Ready), v(Readiness::True, false, false, "Ready", message))
            } else {
                let message =
                    format!("the queue is {} in the control plane: workers cannot register", sanitize(&remote.status));
                (Some(Phase::Inactive), v(Readiness::False, false, false, "Inactive", message))
            }
        }
        Outcome::Deleting => (Some(Phase::Deleting), v(Readiness::False, true, false, "Deleting", "deleting".into())),
        Outcome::DeletionPaused => (
            Some(Phase::Deleting),
            v(
                Readiness::False,
                false,
                false,
                "Paused",
                "deletion paused by annotation kubiya.ai/paused: the finalizer stays and nothing is written to the \
                 control plane; remove the annotation, or annotate kubiya.ai/deletion-policy=Orphan"
                    .into(),
            ),
        ),
        Outcome::Paused => {
            s.observed_generation = old.observed_generation.or(queue.metadata.generation);
            (
                old.phase,
                v(
                    if was_ready { Readiness::Kept } else { Readiness::False },
                    false,
                    false,
                    "Paused",
                    "paused by annotation kubiya.ai/paused: nothing is written to the control plane".into(),
                ),
            )
        }
        Outcome::Failed(e) => {
            if let Error::Refused { refusal, .. } = e
                && refusal.loses_ownership()
            {
                s.worker_secret_name = None;
            }
            let message = e.explain();
            let phase = if deleting { Some(Phase::Deleting) } else { old.phase.or(Some(Phase::Pending)) };
            if e.is_permanent() {
                let phase = if deleting { phase } else { Some(Phase::Error) };
                (phase, v(Readiness::False, false, true, e.reason(), message))
            } else {
                let keep = was_ready && old.observed_generation == queue.metadata.generation && !deleting;
                (phase, v(if keep { Readiness::Kept } else { Readiness::False }, true, false, e.reason(), message))
            }
        }
    };
    s.phase = phase;
    s.message = Some(verdict.message.clone());
    s.conditions = verdict.conditions(&old.conditions, s.observed_generation, now);
    match outcome {
        Outcome::Seen { drift: Some(drift), .. } => {
            let message = drift_message(drift);
            let reason = if drift.is_empty() { "InSync" } else { "Drifted" };
            s.conditions.push(condition(
                &old.conditions,
                SYNCED,
                drift.is_empty(),
                reason,
                &message,
                s.observed_generation,
                now,
            ));
        }
        Outcome::Seen { drift: None, .. } => {}
        _ => s.conditions.extend(find(&old.conditions, SYNCED).cloned()),
    }
    s
}

/// Whether the status is worth a write: anything but the sync time changed.
pub fn changed(old: Option<&WorkerQueueStatus>, new: &WorkerQueueStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &WorkerQueueStatus| WorkerQueueStatus { last_synced_time: None, ..s.clone() };
    strip(old) != strip(new)
}

/// Whether this generation was applied to the queue in status: a difference found on it now
/// is drift.
pub fn applied(queue: &WorkerQueue) -> bool {
    queue.status.as_ref().is_some_and(|s| {
        s.observed_generation == queue.metadata.generation
            && is_true(&s.conditions, READY)
            && find(&s.conditions, SYNCED).is_none()
    })
}

/// Whether `queue` has use for the news that its Environment can take queues, in the remote
/// environment `environment_id`: not when it is settled in that environment already. An
/// Environment's every watch event (a label, an annotation) would otherwise cost each of its
/// queues a control-plane read; a settled queue's `activeWorkers` is refreshed at its resync.
pub fn awaits_environment(queue: &WorkerQueue, environment_id: &str) -> bool {
    let settled_there = applied(queue)
        && queue.status.as_ref().and_then(|s| s.environment_id.as_deref()) == Some(environment_id);
    !settled_there
}

/// The `Synced` message when it said the queue drifted.
pub fn last_drift(queue: &WorkerQueue) -> Option<&str> {
    let c = find(&queue.status.as_ref()?.conditions, SYNCED)?;
    (c.status == "False").then_some(c.message.as_str())
}

/// Whether the status records that the queue was observed, not managed.
pub fn was_observed(queue: &WorkerQueue) -> bool {
    queue.status.as_ref().is_some_and(|s| find(&s.conditions, SYNCED).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{EnvironmentRef, WorkerQueueSpec};
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn now() -> Time {
        Time(Timestamp::from_second(1_000).unwrap())
    }

    fn queue() -> WorkerQueue {
        let mut q = WorkerQueue::new(
            "gpu",
            WorkerQueueSpec { environment_ref: EnvironmentRef { name: "prod".into() }, ..Default::default() },
        );
        q.metadata.generation = Some(2);
        q
    }

    fn remote(status: &str) -> RemoteQueue {
        serde_json::from_value(json!({"id": "q1", "environment_id": "e1", "name": "gpu", "status": status,
            "max_workers": 3, "heartbeat_interval": 60, "active_workers": 2}))
        .unwrap()
    }

    /// `remote` seen, settled: no worker Secret, no drift, no take-over.
    fn seen(remote: &RemoteQueue) -> Outcome<'_> {
        Outcome::Seen {
            remote,
            worker_secret: None,
            connection: "operator".into(),
            drift: None,
            took_over: None,
        }
    }

    #[test]
    fn an_active_queue_is_ready_with_its_figures_and_an_inactive_one_is_not() {
        let r = remote("active");
        let with_secret = Outcome::Seen {
            remote: &r,
            worker_secret: Some("gpu-worker"),
            connection: "operator".into(),
            drift: None,
            took_over: None,
        };
        let s = next(&queue(), &with_secret, &now());
        assert_eq!(
            (s.phase, s.queue_id.as_deref(), s.active_workers, s.max_workers),
            (Some(Phase::Ready), Some("q1"), Some(2), Some(3))
        );
        assert_eq!(
            (s.can_register, s.worker_secret_name.as_deref(), s.observed_generation),
            (Some(true), Some("gpu-worker"), Some(2))
        );
        assert!(is_true(&s.conditions, READY));
        assert!(s.message.unwrap().contains("2 worker(s) registered"));
        let r = remote("paused");
        let s = next(&queue(), &seen(&r), &now());
        assert_eq!((s.phase, s.can_register), (Some(Phase::Inactive), Some(false)));
        assert!(!is_true(&s.conditions, READY));
    }

    #[test]
    fn only_a_queue_not_settled_in_that_environment_awaits_its_environment() {
        let mut q = queue();
        assert!(awaits_environment(&q, "e1"), "never reported");
        let r = remote("active");
        q.status = Some(next(&q, &seen(&r), &now()));
        assert!(!awaits_environment(&q, "e1"), "settled there");
        assert!(awaits_environment(&q, "e2"), "its Environment is in another environment now");
        q.metadata.generation = Some(3);
        assert!(awaits_environment(&q, "e1"), "a spec not applied yet");
        let waiting = Error::EnvironmentNotReady { name: "prod".into(), why: "provisioning".into() };
        let mut q = queue();
        q.status = Some(next(&q, &Outcome::Failed(&waiting), &now()));
        assert!(awaits_environment(&q, "e1"), "waiting for it");
    }

    #[test]
    fn observed_drift_is_a_synced_condition_and_marks_the_queue_observed() {
        let r = remote("active");
        let drift = [Field::MaxWorkers];
        let seen = Outcome::Seen {
            remote: &r,
            worker_secret: None,
            connection: "operator".into(),
            drift: Some(&drift),
            took_over: None,
        };
        let mut q = queue();
        q.status = Some(next(&q, &seen, &now()));
        assert!(was_observed(&q) && !applied(&q));
        assert!(last_drift(&q).unwrap().contains("max_workers"));
    }

    #[test]
    fn a_failure_stalls_when_permanent_keeps_ready_when_transient_and_a_lost_queue_loses_its_secret() {
        let r = remote("active");
        let seen = Outcome::Seen {
            remote: &r,
            worker_secret: Some("gpu-worker"),
            connection: "operator".into(),
            drift: None,
            took_over: None,
        };
        let mut q = queue();
        q.status = Some(next(&q, &seen, &now()));
        assert!(applied(&q));
        let transient = Error::EnvironmentNotReady { name: "prod".into(), why: "provisioning".into() };
        let s = next(&q, &Outcome::Failed(&transient), &now());
        assert!(is_true(&s.conditions, READY), "still Ready");
        assert!(is_true(&s.conditions, "Reconciling"));
        let lost = Error::refused(
            super::super::decide::Refusal::OwnedElsewhere {
                which: "q1".into(),
                elsewhere: crate::reconcile::ownership::Elsewhere::Foreign,
            },
            Default::default(),
        );
        let s = next(&q, &Outcome::Failed(&lost), &now());
        assert_eq!((s.phase, s.worker_secret_name.as_deref()), (Some(Phase::Error), None));
        assert!(is_true(&s.conditions, "Stalled"));
        assert!(!changed(Some(&s), &WorkerQueueStatus { last_synced_time: Some(now()), ..s.clone() }));
    }
}
