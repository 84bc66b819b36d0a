//! A WorkerQueue's status after a pass: pure, from the pass's outcome and the old status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::decide::drift_message;
use super::deployment::{Seen as WorkersSeen, Standing};
use super::desired::Field;
use super::error::Error;
use super::workers::{self, Progress};
use crate::controlplane::{RemoteQueue, sanitize};
use crate::k8s::conditions::{Kstatus, READY, Readiness, condition, find, is_true};
use crate::resource::{Phase, WorkerQueue, WorkerQueueStatus, WorkersStatus};

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
        /// The workers the operator runs for it (`spec.workers`).
        workers: Option<&'a WorkersSeen>,
    },
    Deleting,
    /// Deleting, once `pods` worker pods have stopped.
    Draining {
        pods: i32,
    },
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
        Outcome::Seen { remote, worker_secret, connection, workers, .. } => {
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
            s.workers = workers.map(|w| workers_status(queue, w, old.workers.as_ref(), remote.active_workers, now));
            if remote.can_register() {
                let secret = s.worker_secret_name.as_deref().unwrap_or("-");
                let queue_part = format!("queue {} is active: {} worker(s) registered", remote.id, remote.active_workers);
                match workers.map(|w| workers_verdict(queue, w, s.workers.as_ref(), now)) {
                    Some(Some((phase, verdict))) => (Some(phase), verdict),
                    Some(None) => {
                        let runs = workers.map_or(String::new(), |w| {
                            format!(", all {} of Deployment {}", queue.spec.workers.as_ref().map_or(0, |x| x.replicas), w.deployment)
                        });
                        let message = format!("{queue_part}{runs}; the worker command is in Secret {secret}");
                        (Some(Phase::Ready), v(Readiness::True, false, false, "Ready", message))
                    }
                    None => {
                        let message = format!("{queue_part}; the worker command is in Secret {secret}");
                        (Some(Phase::Ready), v(Readiness::True, false, false, "Ready", message))
                    }
                }
            } else {
                let message =
                    format!("the queue is {} in the control plane: workers cannot register", sanitize(&remote.status));
                (Some(Phase::Inactive), v(Readiness::False, false, false, "Inactive", message))
            }
        }
        Outcome::Deleting => (Some(Phase::Deleting), v(Readiness::False, true, false, "Deleting", "deleting".into())),
        Outcome::Draining { pods } => (
            Some(Phase::Deleting),
            v(
                Readiness::False,
                true,
                false,
                "Draining",
                format!(
                    "deleting: the workers' Deployment is scaled to 0 and {pods} pod(s) still run; the queue is deleted \
                     once they have stopped"
                ),
            ),
        ),
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

/// What status says of the workers: the Deployment's counts, the queue's count of registered
/// workers, and since when available workers have gone unregistered.
fn workers_status(
    queue: &WorkerQueue,
    seen: &WorkersSeen,
    old: Option<&WorkersStatus>,
    registered: i64,
    now: &Time,
) -> WorkersStatus {
    // Kept while not all are available and registered (a crash loop goes in and out of
    // available); a rollout starts it again.
    let settled = matches!(seen.standing, Standing::Running(Progress::Registered { .. }));
    let rolled =
        seen.rolled_out_at.is_some() && seen.rolled_out_at != old.and_then(|o| o.rolled_out_at.clone());
    let since = old.and_then(|o| o.unregistered_since.clone()).filter(|_| !rolled);
    WorkersStatus {
        deployment: Some(seen.deployment.clone()),
        replicas: seen.replicas,
        ready_replicas: seen.ready,
        registered,
        selector: Some(workers::selector(queue)),
        deployment_generation: seen.generation,
        unregistered_since: (!settled).then(|| since.unwrap_or_else(|| now.clone())),
        rolled_out_at: seen.rolled_out_at.clone(),
    }
}

/// Whether the queue's count may still include workers a rollout replaced.
pub fn just_rolled_out(seen: &WorkersSeen, now: &Time) -> bool {
    seen.rolled_out_at.as_ref().is_some_and(|at| workers::waited(at, now) < workers::ACTIVE_WINDOW)
}

/// The phase and conditions of an active queue whose workers are not all running and registered
/// (None: they are).
fn workers_verdict(
    queue: &WorkerQueue,
    seen: &WorkersSeen,
    status: Option<&WorkersStatus>,
    now: &Time,
) -> Option<(Phase, Kstatus)> {
    let stalled =
        |reason, message| Some((Phase::Error, Kstatus::new(Readiness::False, false, true, reason, message)));
    let waiting = |reason, message| {
        Some((Phase::Pending, Kstatus::new(Readiness::False, true, false, reason, message)))
    };
    let name = &seen.deployment;
    match &seen.standing {
        Standing::Invalid(invalid @ workers::Invalid::KeyMissing) => {
            stalled("WorkerKeyMissing", invalid.explain())
        }
        Standing::Invalid(invalid) => stalled("InvalidWorkers", invalid.explain()),
        Standing::KeySecretMissing { name: secret, key } => stalled(
            "WorkerKeyMissing",
            format!(
                "Secret {secret:?} of spec.workers.apiKeySecretRef does not exist in this namespace: create it with \
                 the API key the workers register with under key {key:?}"
            ),
        ),
        Standing::Running(Progress::Starting { want, available, ready, stuck }) => {
            let since = status.and_then(|s| s.unregistered_since.as_ref()).unwrap_or(now);
            let late = workers::waited(since, now) >= workers::start_grace(queue);
            if *stuck || late {
                stalled(
                    "WorkersNotAvailable",
                    format!(
                        "Deployment {name}: {available} of {want} worker(s) available ({ready} ready) after {} s: see \
                         kubectl describe deployment/{name} and its pods' events (an image that cannot be pulled, pods \
                         that cannot be scheduled, or workers that exit: kubectl logs deployment/{name})",
                        workers::waited(since, now).as_secs()
                    ),
                )
            } else {
                waiting(
                    "WorkersNotAvailable",
                    format!("Deployment {name}: {available} of {want} worker(s) available ({ready} ready)"),
                )
            }
        }
        Standing::Running(Progress::Unregistered { want, registered }) => {
            let since = status.and_then(|s| s.unregistered_since.as_ref()).unwrap_or(now);
            let grace = workers::grace(queue).as_secs();
            if workers::overdue(queue, since, now) {
                stalled(
                    "WorkersNotRegistered",
                    format!(
                        "the {want} worker(s) of Deployment {name} are available, but the queue has counted only \
                         {registered} registered for over {grace} s (two heartbeat intervals): see their logs \
                         (kubectl logs deployment/{name}); the key of spec.workers.apiKeySecretRef must be one of \
                         the queue's organization, and the control plane must be reachable from the pods"
                    ),
                )
            } else {
                waiting(
                    "WorkersNotRegistered",
                    format!(
                        "the {want} worker(s) of Deployment {name} are available; the queue counts {registered} \
                         registered so far (waiting up to {grace} s, two heartbeat intervals)"
                    ),
                )
            }
        }
        Standing::Running(Progress::Registered { want, .. }) if just_rolled_out(seen, now) => waiting(
            "WorkersNotRegistered",
            format!(
                "Deployment {name} rolled out a new template: the queue's count may still include the {want} worker(s) \
                 it replaced for up to {} s, so the new ones are not taken as registered yet",
                workers::ACTIVE_WINDOW.as_secs()
            ),
        ),
        Standing::Running(Progress::Registered { .. }) => None,
    }
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
            workers: None,
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
            workers: None,
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

    fn running(progress: Progress) -> WorkersSeen {
        WorkersSeen {
            deployment: "gpu-workers".into(),
            replicas: 2,
            ready: 2,
            generation: Some(4),
            rolled_out_at: None,
            standing: Standing::Running(progress),
        }
    }

    fn with_workers<'a>(r: &'a RemoteQueue, w: &'a WorkersSeen) -> Outcome<'a> {
        Outcome::Seen {
            remote: r,
            worker_secret: Some("gpu-worker"),
            connection: "operator".into(),
            drift: None,
            took_over: None,
            workers: Some(w),
        }
    }

    fn reason(s: &WorkerQueueStatus, condition: &str) -> Option<String> {
        find(&s.conditions, condition).filter(|c| c.status == "True").map(|c| c.reason.clone())
    }

    #[test]
    fn workers_are_ready_once_available_and_registered_and_stuck_after_two_heartbeats() {
        let mut q = queue();
        q.spec.workers = Some(crate::resource::Workers { replicas: 2, ..Default::default() });
        q.spec.heartbeat_interval = 30;
        let mut r = remote("active");
        r.active_workers = 0;
        let at = |s| Time(Timestamp::from_second(s).unwrap());

        let starting = running(Progress::Starting { want: 2, available: 1, ready: 1, stuck: false });
        let s = next(&q, &with_workers(&r, &starting), &at(1_000));
        assert_eq!(
            (s.phase, reason(&s, "Reconciling")),
            (Some(Phase::Pending), Some("WorkersNotAvailable".into()))
        );
        assert!(!is_true(&s.conditions, READY));
        assert!(s.message.as_deref().unwrap().contains("1 of 2 worker(s) available"), "{:?}", s.message);
        let w = s.workers.clone().unwrap();
        assert_eq!((w.replicas, w.ready_replicas, w.registered), (2, 2, 0));
        assert_eq!(w.selector.as_deref(), Some("kubiya.ai/worker-queue=gpu"));
        assert_eq!((w.deployment.as_deref(), w.deployment_generation), (Some("gpu-workers"), Some(4)));
        assert_eq!(w.unregistered_since, Some(at(1_000)), "not all running and registered since");

        let unregistered = running(Progress::Unregistered { want: 2, registered: 0 });
        q.status = Some(next(&q, &with_workers(&r, &unregistered), &at(1_010)));
        let s = q.status.clone().unwrap();
        assert_eq!(reason(&s, "Reconciling"), Some("WorkersNotRegistered".into()));
        assert_eq!(s.workers.as_ref().unwrap().unregistered_since, Some(at(1_010)));
        // A crash loop, in and out of available, keeps the time it started.
        let mut looping = q.clone();
        looping.status = Some(next(&looping, &with_workers(&r, &starting), &at(1_040)));
        let s = next(&looping, &with_workers(&r, &unregistered), &at(1_070));
        assert_eq!(
            reason(&s, "Stalled"),
            Some("WorkersNotRegistered".into()),
            "60 s since 1_010, through a restart"
        );
        let s = next(&q, &with_workers(&r, &unregistered), &at(1_069));
        assert_eq!(reason(&s, "Reconciling"), Some("WorkersNotRegistered".into()), "within 60 s");
        assert_eq!(s.workers.as_ref().unwrap().unregistered_since, Some(at(1_010)), "kept");
        let s = next(&q, &with_workers(&r, &unregistered), &at(1_070));
        assert_eq!(
            (s.phase, reason(&s, "Stalled")),
            (Some(Phase::Error), Some("WorkersNotRegistered".into()))
        );
        assert!(
            s.message.as_deref().unwrap().contains("kubectl logs deployment/gpu-workers"),
            "{:?}",
            s.message
        );

        r.active_workers = 2;
        let registered = running(Progress::Registered { want: 2, registered: 2 });
        let s = next(&q, &with_workers(&r, &registered), &at(1_080));
        assert_eq!(s.phase, Some(Phase::Ready));
        assert!(is_true(&s.conditions, READY));
        assert_eq!(s.workers.as_ref().unwrap().unregistered_since, None);
        assert!(s.message.as_deref().unwrap().contains("all 2 of Deployment gpu-workers"), "{:?}", s.message);

        // Just after a rollout, the count may be the replaced workers': not Ready until it cannot.
        let mut rolled = registered.clone();
        rolled.rolled_out_at = Some(at(1_000));
        let s = next(&q, &with_workers(&r, &rolled), &at(1_149));
        assert_eq!(reason(&s, "Reconciling"), Some("WorkersNotRegistered".into()));
        assert!(s.message.as_deref().unwrap().contains("rolled out"), "{:?}", s.message);
        let s = next(&q, &with_workers(&r, &rolled), &at(1_150));
        assert!(is_true(&s.conditions, READY), "150 s after the rollout");
        // Workers that never become available: Stalled after the start grace (600 s).
        let starting = running(Progress::Starting { want: 2, available: 0, ready: 0, stuck: false });
        let mut fresh = queue();
        fresh.status = Some(next(&fresh, &with_workers(&r, &starting), &at(2_000)));
        let s = next(&fresh, &with_workers(&r, &starting), &at(2_599));
        assert_eq!(reason(&s, "Reconciling"), Some("WorkersNotAvailable".into()));
        let s = next(&fresh, &with_workers(&r, &starting), &at(2_600));
        assert_eq!(reason(&s, "Stalled"), Some("WorkersNotAvailable".into()));
    }

    #[test]
    fn a_missing_key_or_a_broken_template_stalls_the_queue() {
        let q = queue();
        let r = remote("active");
        let mut w = running(Progress::Starting { want: 2, available: 0, ready: 0, stuck: false });
        w.standing = Standing::Invalid(workers::Invalid::KeyMissing);
        let s = next(&q, &with_workers(&r, &w), &now());
        assert_eq!((s.phase, reason(&s, "Stalled")), (Some(Phase::Error), Some("WorkerKeyMissing".into())));
        w.standing = Standing::KeySecretMissing { name: "k".into(), key: "api-key".into() };
        let s = next(&q, &with_workers(&r, &w), &now());
        assert_eq!(reason(&s, "Stalled"), Some("WorkerKeyMissing".into()));
        assert!(s.message.as_deref().unwrap().contains("Secret \"k\""), "{:?}", s.message);
        w.standing = Standing::Running(Progress::Starting { want: 2, available: 0, ready: 0, stuck: true });
        let s = next(&q, &with_workers(&r, &w), &now());
        assert_eq!(reason(&s, "Stalled"), Some("WorkersNotAvailable".into()), "past its progress deadline");
        w.standing = Standing::Invalid(workers::Invalid::Template("bad".into()));
        let s = next(&q, &with_workers(&r, &w), &now());
        assert_eq!(reason(&s, "Stalled"), Some("InvalidWorkers".into()));
        let s = next(&q, &Outcome::Draining { pods: 2 }, &now());
        assert_eq!((s.phase, reason(&s, "Reconciling")), (Some(Phase::Deleting), Some("Draining".into())));
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
            workers: None,
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
            workers: None,
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
