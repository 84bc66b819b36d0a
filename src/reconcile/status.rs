//! The status a pass reports: phase, conditions (kstatus: Ready, Reconciling, Stalled; Synced
//! under managementPolicy Observe) and what was seen. Pure: no client.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::desired::{Field, Wire};
use super::error::Error;
use crate::connection::{ConnKey, Place};
use crate::controlplane::{RemoteEnvironment, sanitize};
use crate::k8s::conditions::{Kstatus, READY, Readiness, condition, find, is_true};
use crate::resource::{
    Environment, EnvironmentStatus, Phase, RECONCILE_REQUEST_ANNOTATION, TAKE_OVER_ANNOTATION,
};

pub use crate::k8s::conditions::{RECONCILING, STALLED};

/// Under `managementPolicy: Observe` only: whether the remote environment matches the spec.
pub const SYNCED: &str = "Synced";

/// The remote environment as a pass left it, and what it was reached through.
pub struct Seen<'a> {
    pub remote: &'a RemoteEnvironment,
    /// The worker Secret, when it was published.
    pub worker_secret: Option<String>,
    pub connection: &'a ConnKey,
    pub place: &'a Place,
}

/// What a pass came to, from which the status follows.
pub enum Outcome<'a> {
    /// The remote environment this resource manages, as it is after this pass's writes;
    /// `took_over`: the `kubiya.ai/take-over-from` value this pass took it with.
    Managed { seen: Seen<'a>, took_over: Option<&'a str> },
    /// Under `managementPolicy: Observe`: the remote environment as it is, and the fields where
    /// it differs from the spec (reported, not corrected).
    Observed { seen: Seen<'a>, drift: &'a [Field] },
    /// The resource is being deleted.
    Deleting,
    /// The resource is being deleted, and paused: the finalizer stays, nothing remote is written.
    DeletionPaused,
    /// The resource is being deleted, and WorkerQueues of it (named) still exist: the remote
    /// environment is deleted once they are gone (the control plane would take their queues with it).
    QueuesRemain(&'a [String]),
    /// The pass failed.
    Failed(&'a Error),
    /// `kubiya.ai/paused: "true"`: nothing is written to the control plane.
    Paused,
}

/// Appended to a failed deletion's message: the way out when the control plane refuses.
pub const ORPHAN_HINT: &str =
    "; to leave the remote environment and finish deleting, annotate kubiya.ai/deletion-policy=Orphan";

const DELETION_PAUSED: &str = "deletion paused by annotation kubiya.ai/paused: the finalizer stays and \
    nothing is written to the control plane; to go on, remove the annotation (the deletion policy then \
    applies), or annotate kubiya.ai/deletion-policy=Orphan to leave the remote environment as it is";

/// The status to report after a pass. `lastTransitionTime` moves only when a condition flips;
/// `lastSyncedTime` is stamped by [`with_sync_time`] only when something else changed.
pub fn next(env: &Environment, outcome: Outcome<'_>, now: &Time) -> EnvironmentStatus {
    let old = env.status.clone().unwrap_or_default();
    let generation = env.metadata.generation;
    let mut s = EnvironmentStatus {
        observed_generation: generation,
        // Every pass handles the latest reconcile request (Flux's requestedAt convention).
        last_handled_reconcile_at: env
            .annotation(RECONCILE_REQUEST_ANNOTATION)
            .map(str::to_owned)
            .or(old.last_handled_reconcile_at.clone()),
        ..old.clone()
    };
    if let Outcome::Paused = outcome {
        // The spec is not acted upon while paused: observedGeneration stays where it was, so that
        // no health check mistakes a paused change for an applied one.
        s.observed_generation = old.observed_generation.or(generation);
    }
    if let Outcome::Managed { seen, .. } | Outcome::Observed { seen, .. } = &outcome {
        record(&mut s, seen);
    }
    // A take-over is used once: the value it was made with is kept while the annotation stays.
    let took_over = match &outcome {
        Outcome::Managed { took_over, .. } => *took_over,
        _ => None,
    };
    s.taken_over_from = env
        .annotation(TAKE_OVER_ANNOTATION)
        .and_then(|_| took_over.map(str::to_owned).or(old.taken_over_from.clone()));
    // No longer the owner: its worker Secret is gone (see `worker_secret::withdraw`).
    if let Outcome::Failed(e) = &outcome
        && e.loses_ownership()
    {
        s.worker_secret_name = None;
    }
    let (phase, verdict) = verdict(env, &outcome, &old);
    s.phase = phase;
    s.message = Some(verdict.message.clone());
    s.conditions = verdict.conditions(&old.conditions, s.observed_generation, now);
    // Synced is also the record that the environment was observed, not managed: a switch to Full
    // takes it over as an adoption. Only a pass that manages it ends the record; one that learnt
    // nothing (failed, paused) keeps it as it was.
    match outcome {
        Outcome::Observed { drift, .. } => {
            s.conditions.push(synced(&old.conditions, drift, s.observed_generation, now));
        }
        Outcome::Managed { .. } => {}
        _ => s.conditions.extend(find(&old.conditions, SYNCED).cloned()),
    }
    s
}

/// What a pass saw of the remote environment, into `s`.
fn record(s: &mut EnvironmentStatus, seen: &Seen<'_>) {
    let remote = seen.remote;
    s.environment_id = Some(remote.id.clone());
    s.connection = Some(seen.connection.label());
    s.organization = seen.place.organization.clone();
    s.control_plane = Some(seen.place.control_plane.clone());
    s.remote_name = Some(remote.name.clone());
    s.remote_status = Some(remote.status.clone());
    s.can_register = Some(remote.can_register());
    if seen.worker_secret.is_some() {
        s.worker_secret_name = seen.worker_secret.clone();
    }
}

/// Where the status says the environment lives, if it records an environment and where.
pub fn recorded_place(env: &Environment) -> Option<Place> {
    let s = env.status.as_ref()?;
    s.environment_id.as_ref()?;
    Some(Place { organization: s.organization.clone(), control_plane: s.control_plane.clone()? })
}

/// The phase and the three kstatus conditions after `outcome`.
fn verdict(env: &Environment, outcome: &Outcome<'_>, old: &EnvironmentStatus) -> (Option<Phase>, Kstatus) {
    let deleting = env.metadata.deletion_timestamp.is_some();
    let was_ready = is_true(&old.conditions, READY);
    let v = Kstatus::new;
    match outcome {
        Outcome::Managed { seen, .. } | Outcome::Observed { seen, .. } => remote_verdict(seen.remote),
        Outcome::Deleting => {
            (Some(Phase::Deleting), v(Readiness::False, true, false, "Deleting", "deleting".into()))
        }
        Outcome::DeletionPaused => {
            (Some(Phase::Deleting), v(Readiness::False, false, false, "Paused", DELETION_PAUSED.into()))
        }
        Outcome::QueuesRemain(queues) => (
            Some(Phase::Deleting),
            v(
                Readiness::False,
                true,
                false,
                "QueuesRemain",
                format!(
                    "waiting for its WorkerQueues to be deleted first: {}; delete them, or annotate \
                     kubiya.ai/deletion-policy=Orphan to leave the environment and its queues in the control plane",
                    queues.join(", ")
                ),
            ),
        ),
        Outcome::Paused => (
            old.phase,
            v(
                if was_ready { Readiness::Kept } else { Readiness::False },
                false,
                false,
                "Paused",
                "paused by annotation kubiya.ai/paused: nothing is written to the control plane".into(),
            ),
        ),
        Outcome::Failed(e) => {
            let message = e.explain() + if deleting { ORPHAN_HINT } else { "" };
            let phase = if deleting { Some(Phase::Deleting) } else { old.phase.or(Some(Phase::Pending)) };
            if e.is_permanent() {
                let phase = if deleting { phase } else { Some(Phase::Error) };
                (phase, v(Readiness::False, false, true, e.reason(), message))
            } else {
                // Transient trouble: keep what was known (a Ready environment most likely still
                // is, unless there is a spec change it has not got yet) and say that work is
                // under way.
                let keep = was_ready && old.observed_generation == env.metadata.generation && !deleting;
                let ready = if keep { Readiness::Kept } else { Readiness::False };
                (phase, v(ready, true, false, e.reason(), message))
            }
        }
    }
}

/// Observe's own condition: `Synced` True (`InSync`) when the remote environment matches the
/// spec, else False (`Drifted`), naming the fields where it differs.
fn synced(old: &[Condition], drift: &[Field], generation: Option<i64>, now: &Time) -> Condition {
    if drift.is_empty() {
        let message = "the remote environment matches the spec (observed, not managed)";
        condition(old, SYNCED, true, "InSync", message, generation, now)
    } else {
        condition(old, SYNCED, false, "Drifted", &drift_message(drift), generation, now)
    }
}

/// The status patch for an Environment that cannot be decoded: Stalled `InvalidSpec`, with the
/// decoder's message. A merge patch, since the old status could not be read either.
pub fn undecodable(generation: Option<i64>, message: &str, now: &Time) -> serde_json::Value {
    let verdict = Kstatus {
        ready: Readiness::False,
        reconciling: false,
        stalled: true,
        reason: "InvalidSpec",
        message: message.to_owned(),
    };
    let status = EnvironmentStatus {
        phase: Some(Phase::Error),
        observed_generation: generation,
        message: Some(message.to_owned()),
        conditions: verdict.conditions(&[], generation, now),
        ..Default::default()
    };
    serde_json::json!({ "status": status })
}

/// The phase and verdict on a remote environment after a successful pass, from its status.
fn remote_verdict(remote: &RemoteEnvironment) -> (Option<Phase>, Kstatus) {
    let status = remote.status.as_str();
    let v = Kstatus::new;
    match status {
        "ready" | "active" => (
            Some(Phase::Ready),
            v(Readiness::True, false, false, "Ready", format!("environment is {status}")),
        ),
        "error" => {
            // The server's text, like every error detail, is cut to its first line, bounded, and
            // stripped of anything that looks like a token.
            let why = remote.error_message.as_deref().map(sanitize).filter(|m| !m.is_empty());
            let message = format!(
                "the control plane reports an error: {}",
                why.as_deref().unwrap_or("no error message given")
            );
            (Some(Phase::Error), v(Readiness::False, false, true, "RemoteError", message))
        }
        "inactive" | "archived" => (
            Some(Phase::Inactive),
            v(
                Readiness::False,
                false,
                false,
                "Inactive",
                format!("the environment is {status} in the control plane"),
            ),
        ),
        other => (
            Some(Phase::Provisioning),
            v(
                Readiness::False,
                true,
                false,
                "Provisioning",
                format!("the control plane is provisioning the environment ({})", sanitize(other)),
            ),
        ),
    }
}

/// Whether the spec of this generation is in place on the environment in status: Ready at the
/// current generation, not being deleted. A difference found then is drift: someone changed the
/// environment outside Kubernetes.
pub fn applied(env: &Environment) -> bool {
    let Some(s) = env.status.as_ref() else { return false };
    env.metadata.deletion_timestamp.is_none()
        && s.phase == Some(Phase::Ready)
        && is_true(&s.conditions, READY)
        && s.observed_generation.is_some()
        && s.observed_generation == env.metadata.generation
        && s.environment_id.is_some()
}

/// Whether nothing is waiting on `env`: its spec [`applied`], its last reconcile request handled.
/// A pass over it is a drift check, which yields to the passes users wait for, and at start it
/// is not looked at before its turn.
pub fn settled(env: &Environment) -> bool {
    let requested = env.annotation(RECONCILE_REQUEST_ANNOTATION);
    let handled = env.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref());
    applied(env) && requested.is_none_or(|r| handled == Some(r))
}

/// Whether `new` says something `old` did not (the sync time aside).
pub fn changed(old: Option<&EnvironmentStatus>, new: &EnvironmentStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &EnvironmentStatus| EnvironmentStatus { last_synced_time: None, ..s.clone() };
    strip(old) != strip(new)
}

/// How long `env` took to become Ready, when `next` is the status that makes it so: from when its
/// Reconciling condition turned True (at creation, or when it left Ready: re-provisioning or an
/// error), else from its creation if it had not got further than Pending. `None` for anything
/// but a transition to Ready (a spec change applied while Ready stays Ready and is not timed).
pub fn time_to_ready(env: &Environment, next: &EnvironmentStatus, now: &Time) -> Option<std::time::Duration> {
    let old = env.status.as_ref();
    let old_phase = old.and_then(|s| s.phase);
    if next.phase != Some(Phase::Ready) || old_phase == Some(Phase::Ready) {
        return None;
    }
    let reconciling = old.and_then(|s| find(&s.conditions, RECONCILING)).filter(|c| c.status == "True");
    let since = match reconciling {
        Some(c) => &c.last_transition_time,
        None if old_phase.is_none_or(|p| p == Phase::Pending) => env.metadata.creation_timestamp.as_ref()?,
        None => return None,
    };
    std::time::Duration::try_from(now.0.duration_since(since.0)).ok()
}

/// Stamps `lastSyncedTime`: the status is about to be written because it changed.
pub fn with_sync_time(mut s: EnvironmentStatus, now: &Time) -> EnvironmentStatus {
    s.last_synced_time = Some(now.clone());
    s
}

/// The message of `Synced` False: also the Drifted Event's, which is published only when it
/// changes.
pub fn drift_message(drift: &[Field]) -> String {
    let names = drift.iter().map(|f| f.wire()).collect::<Vec<_>>().join(", ");
    format!(
        "the remote environment differs from the spec in {names} (observed, not corrected: managementPolicy is Observe)"
    )
}

/// The message of the `Synced` condition when it says False, if it does.
pub fn last_drift(env: &Environment) -> Option<&str> {
    let s = env.status.as_ref()?;
    find(&s.conditions, SYNCED).filter(|c| c.status == "False").map(|c| c.message.as_str())
}

/// Whether the status still records that the environment was observed (see [`next`]).
pub fn was_observed(env: &Environment) -> bool {
    env.status.as_ref().is_some_and(|s| find(&s.conditions, SYNCED).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controlplane;
    use crate::resource::EnvironmentSpec;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn place() -> Place {
        Place { organization: Some("acme".into()), control_plane: "https://cp.test".into() }
    }

    fn seen<'a>(remote: &'a RemoteEnvironment, worker_secret: Option<String>, place: &'a Place) -> Seen<'a> {
        Seen { remote, worker_secret, connection: &ConnKey::Operator, place }
    }

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn env() -> Environment {
        let mut e = Environment::new("prod", EnvironmentSpec::default());
        e.metadata.generation = Some(2);
        e
    }

    fn remote(status: &str) -> RemoteEnvironment {
        serde_json::from_value(json!({"id": "id-1", "name": "prod", "status": status,
            "error_message": "namespace provisioning failed"}))
        .unwrap()
    }

    /// The status after a pass that manages `r`, at second `at`.
    fn managed(e: &Environment, r: &RemoteEnvironment, at: i64) -> EnvironmentStatus {
        next(e, Outcome::Managed { seen: seen(r, None, &place()), took_over: None }, &t(at))
    }

    fn cond<'a>(s: &'a EnvironmentStatus, t: &str) -> &'a Condition {
        find(&s.conditions, t).unwrap()
    }

    #[test]
    fn time_to_ready_counts_from_the_start_of_reconciling_or_creation() {
        let r = remote("ready");
        let ready = |e: &Environment| managed(e, &r, 100);
        let mut e = env();
        e.metadata.creation_timestamp = Some(t(10));
        assert_eq!(time_to_ready(&e, &ready(&e), &t(100)), Some(std::time::Duration::from_secs(90)));
        let p = remote("provisioning");
        e.status =
            Some(next(&e, Outcome::Managed { seen: seen(&p, None, &place()), took_over: None }, &t(40)));
        assert_eq!(time_to_ready(&e, &ready(&e), &t(100)), Some(std::time::Duration::from_secs(60)));
        assert_eq!(time_to_ready(&e, e.status.as_ref().unwrap(), &t(100)), None, "not Ready yet");
        e.status = Some(ready(&e));
        assert_eq!(time_to_ready(&e, &ready(&e), &t(200)), None, "already Ready");
        // Without a Reconciling=True to count from: from creation only if it never got further
        // than Pending.
        let mut pending = env();
        pending.metadata.creation_timestamp = Some(t(10));
        pending.status = Some(EnvironmentStatus { phase: Some(Phase::Pending), ..Default::default() });
        assert_eq!(
            time_to_ready(&pending, &ready(&pending), &t(100)),
            Some(std::time::Duration::from_secs(90))
        );
        let mut failed = pending.clone();
        failed.status = Some(EnvironmentStatus { phase: Some(Phase::Error), ..Default::default() });
        assert_eq!(time_to_ready(&failed, &ready(&failed), &t(100)), None, "from an error with no record");
    }

    #[test]
    fn the_sync_time_is_stamped_on_what_is_written_and_nothing_else_changes() {
        let s = EnvironmentStatus { environment_id: Some("id".into()), ..Default::default() };
        let stamped = with_sync_time(s.clone(), &t(7));
        assert_eq!(stamped.last_synced_time, Some(t(7)));
        assert_eq!(EnvironmentStatus { last_synced_time: None, ..stamped }, s);
    }

    #[test]
    fn ready_remote_is_ready_and_not_reconciling() {
        let r = remote("ready");
        let s = next(
            &env(),
            Outcome::Managed { seen: seen(&r, Some("w".into()), &place()), took_over: None },
            &t(1),
        );
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.environment_id.as_deref(), Some("id-1"));
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, RECONCILING).status, "False");
        assert_eq!(cond(&s, STALLED).status, "False");
        assert_eq!(cond(&s, READY).observed_generation, Some(2));
    }

    #[test]
    fn provisioning_is_reconciling_and_remote_error_is_stalled() {
        let r = remote("provisioning");
        let s = managed(&env(), &r, 1);
        assert_eq!(s.phase, Some(Phase::Provisioning));
        assert_eq!(cond(&s, RECONCILING).status, "True");
        let r = remote("error");
        let s = managed(&env(), &r, 1);
        assert_eq!(s.phase, Some(Phase::Error));
        assert_eq!(cond(&s, STALLED).status, "True");
        assert!(cond(&s, STALLED).message.contains("namespace provisioning failed"));
    }

    #[test]
    fn transition_time_moves_only_when_a_condition_flips() {
        let r = remote("provisioning");
        let mut e = env();
        e.status = Some(managed(&e, &r, 1));
        let same = managed(&e, &r, 5);
        assert!(!changed(e.status.as_ref(), &same));
        // The sync time alone is no change: stamping it must not cause a write on every pass.
        assert!(!changed(Some(&with_sync_time(same.clone(), &t(5))), &same));
        assert_eq!(cond(&same, READY).last_transition_time, t(1));
        let r = remote("ready");
        let s = managed(&e, &r, 9);
        assert!(changed(e.status.as_ref(), &s));
        assert_eq!(cond(&s, READY).last_transition_time, t(9));
        assert_eq!(cond(&s, STALLED).last_transition_time, t(1));
    }

    #[test]
    fn transient_failure_keeps_ready_and_reports_reconciling() {
        let r = remote("ready");
        let mut e = env();
        e.status = Some(managed(&e, &r, 1));
        let err = Error::GetRemote {
            source: controlplane::Error::Api {
                method: "GET",
                route: "/r",
                status: 503,
                detail: "down".into(),
                retry_after: None,
            },
        };
        let s = next(&e, Outcome::Failed(&err), &t(2));
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, RECONCILING).status, "True");
        assert_eq!(cond(&s, STALLED).status, "False");
        assert_eq!(s.environment_id.as_deref(), Some("id-1"));
        assert_eq!(cond(&s, READY).last_transition_time, t(1));
        // The kept condition speaks for the generation just handled, whatever an older writer
        // left in it.
        let mut older = e.clone();
        older.status.as_mut().unwrap().conditions[0].observed_generation = Some(1);
        assert_eq!(cond(&next(&older, Outcome::Failed(&err), &t(2)), READY).observed_generation, Some(2));
        // Not kept: a spec change the remote has not got yet, or a deletion under way.
        let mut stale = e.clone();
        stale.metadata.generation = Some(4);
        assert_eq!(
            cond(&next(&stale, Outcome::Failed(&err), &t(3)), READY).status,
            "False",
            "new generation"
        );
        let mut deleting = e.clone();
        deleting.metadata.deletion_timestamp = Some(t(2));
        assert_eq!(cond(&next(&deleting, Outcome::Failed(&err), &t(3)), READY).status, "False", "deleting");
        assert_eq!(cond(&next(&env(), Outcome::Failed(&err), &t(3)), READY).status, "False", "never Ready");
    }

    #[test]
    fn a_reconcile_request_is_marked_handled_and_stays_so() {
        let r = remote("ready");
        let seen = |e: &Environment| managed(e, &r, 1);
        let mut e = env();
        e.metadata.annotations = Some([(RECONCILE_REQUEST_ANNOTATION.to_owned(), "r1".to_owned())].into());
        e.status = Some(seen(&e));
        assert_eq!(e.status.as_ref().unwrap().last_handled_reconcile_at.as_deref(), Some("r1"));
        e.metadata.annotations = None;
        assert_eq!(
            seen(&e).last_handled_reconcile_at.as_deref(),
            Some("r1"),
            "kept once the annotation goes"
        );
    }

    #[test]
    fn an_undecodable_object_is_stalled_with_the_decoders_message() {
        let patch = undecodable(Some(7), "recursion limit exceeded at line 1", &t(5));
        let s: EnvironmentStatus = serde_json::from_value(patch["status"].clone()).unwrap();
        assert_eq!(s.phase, Some(Phase::Error));
        assert_eq!(s.observed_generation, Some(7));
        assert_eq!(s.message.as_deref(), Some("recursion limit exceeded at line 1"));
        for (type_, status) in [(READY, "False"), (RECONCILING, "False"), (STALLED, "True")] {
            let c = cond(&s, type_);
            assert_eq!((c.status.as_str(), c.reason.as_str()), (status, "InvalidSpec"), "{type_}");
            assert_eq!(c.observed_generation, Some(7));
        }
    }

    #[test]
    fn settled_means_nothing_waits() {
        let r = remote("ready");
        let mut e = env();
        assert!(!settled(&e), "never reconciled");
        e.status = Some(managed(&e, &r, 1));
        assert!(settled(&e));
        let mut newer = e.clone();
        newer.metadata.generation = Some(3);
        assert!(!settled(&newer), "a new generation");
        let mut asked = e.clone();
        asked.metadata.annotations =
            Some([(RECONCILE_REQUEST_ANNOTATION.to_owned(), "now".to_owned())].into());
        assert!(!settled(&asked), "a reconcile request not handled");
        asked.status.as_mut().unwrap().last_handled_reconcile_at = Some("now".into());
        assert!(settled(&asked), "handled");
        let mut deleting = e.clone();
        deleting.metadata.deletion_timestamp = Some(t(2));
        assert!(!settled(&deleting));
        let p = remote("provisioning");
        let mut busy = e.clone();
        busy.status =
            Some(next(&e, Outcome::Managed { seen: seen(&p, None, &place()), took_over: None }, &t(3)));
        assert!(!settled(&busy), "not Ready");
        let mut no_id = e.clone();
        no_id.status.as_mut().unwrap().environment_id = None;
        assert!(!settled(&no_id));
    }

    #[test]
    fn synced_outlives_passes_that_observe_nothing_and_ends_once_managed() {
        let r = remote("ready");
        let key = ConnKey::Operator;
        let mut e = env();
        let drift = [Field::Description];
        e.status = Some(next(
            &e,
            Outcome::Observed {
                seen: Seen { remote: &r, worker_secret: None, connection: &key, place: &place() },
                drift: &drift,
            },
            &t(1),
        ));
        let observed = cond(e.status.as_ref().unwrap(), SYNCED).clone();
        assert_eq!((observed.status.as_str(), observed.reason.as_str()), ("False", "Drifted"));
        let err = Error::AdoptionNotAllowed { connection: "operator".into(), id: "id-1".into() };
        for obs in [Outcome::Failed(&err), Outcome::Paused, Outcome::Deleting] {
            let mut after = e.clone();
            after.metadata.generation = Some(3);
            let s = next(&after, obs, &t(2));
            assert_eq!(cond(&s, SYNCED), &observed, "kept as it was, with its generation");
        }
        assert!(find(&managed(&e, &r, 3).conditions, SYNCED).is_none(), "managed: no longer observed");
        assert!(find(&next(&env(), Outcome::Paused, &t(1)).conditions, SYNCED).is_none());
    }

    #[test]
    fn where_the_environment_lives_is_recorded_with_it() {
        let r = remote("ready");
        let mut e = env();
        assert_eq!(recorded_place(&e), None);
        e.status = Some(managed(&e, &r, 1));
        let s = e.status.as_ref().unwrap();
        assert_eq!(
            (s.organization.as_deref(), s.control_plane.as_deref()),
            (Some("acme"), Some("https://cp.test"))
        );
        assert_eq!(recorded_place(&e), Some(place()));
        e.status.as_mut().unwrap().control_plane = None;
        assert_eq!(recorded_place(&e), None, "recorded by an older version");
        e.status.as_mut().unwrap().control_plane = Some("https://cp.test".into());
        e.status.as_mut().unwrap().environment_id = None;
        assert_eq!(recorded_place(&e), None, "no environment");
    }

    #[test]
    fn a_take_over_is_recorded_while_its_annotation_stays() {
        let r = remote("ready");
        let mut e = env();
        e.metadata.annotations = Some([(TAKE_OVER_ANNOTATION.to_owned(), "c2".to_owned())].into());
        let took =
            next(&e, Outcome::Managed { seen: seen(&r, None, &place()), took_over: Some("c2") }, &t(1));
        assert_eq!(took.taken_over_from.as_deref(), Some("c2"));
        e.status = Some(took);
        assert_eq!(managed(&e, &r, 2).taken_over_from.as_deref(), Some("c2"), "kept");
        let err = Error::SecretConflict { name: "s".into() };
        assert_eq!(
            next(&e, Outcome::Failed(&err), &t(2)).taken_over_from.as_deref(),
            Some("c2"),
            "kept on failure"
        );
        e.metadata.annotations = None;
        assert_eq!(managed(&e, &r, 3).taken_over_from, None, "the annotation went");
    }

    #[test]
    fn a_resource_that_is_no_longer_the_owner_names_no_worker_secret() {
        let r = remote("ready");
        let mut e = env();
        e.status = Some(next(
            &e,
            Outcome::Managed { seen: seen(&r, Some("w".into()), &place()), took_over: None },
            &t(1),
        ));
        assert_eq!(e.status.as_ref().unwrap().worker_secret_name.as_deref(), Some("w"));
        let transient =
            Error::GetRemote { source: controlplane::Error::api("GET", "/r", 503, "down".into(), None) };
        assert_eq!(next(&e, Outcome::Failed(&transient), &t(2)).worker_secret_name.as_deref(), Some("w"));
        let lost = Error::OwnedElsewhere {
            which: "id-1".into(),
            elsewhere: crate::reconcile::ownership::Elsewhere::OtherCluster(Default::default()),
            me: Default::default(),
        };
        let s = next(&e, Outcome::Failed(&lost), &t(2));
        assert_eq!(s.worker_secret_name, None);
        assert_eq!(
            s.environment_id.as_deref(),
            Some("id-1"),
            "the id stays: the annotation equal to it is no new request"
        );
    }

    #[test]
    fn the_drift_recorded_is_read_back_and_observing_is_remembered() {
        let r = remote("ready");
        let mut e = env();
        assert!(!was_observed(&e) && last_drift(&e).is_none());
        let drift = [Field::Description, Field::Tags];
        let seen = Seen { remote: &r, worker_secret: None, connection: &ConnKey::Operator, place: &place() };
        e.status = Some(next(&e, Outcome::Observed { seen, drift: &drift }, &t(1)));
        assert!(was_observed(&e));
        let message = drift_message(&drift);
        assert!(
            message.starts_with("the remote environment differs from the spec in description, tags"),
            "{message}"
        );
        assert_eq!(last_drift(&e), Some(message.as_str()));
        let seen = Seen { remote: &r, worker_secret: None, connection: &ConnKey::Operator, place: &place() };
        e.status = Some(next(&e, Outcome::Observed { seen, drift: &[] }, &t(2)));
        assert!(was_observed(&e));
        assert_eq!(last_drift(&e), None, "in sync: no drift to say again");
        e.status = Some(managed(&e, &r, 3));
        assert!(!was_observed(&e), "managed now");
    }

    #[test]
    fn permanent_failure_is_stalled() {
        let err = Error::NameConflict {
            name: "prod".into(),
            id: "id-1".into(),
            elsewhere: crate::reconcile::ownership::Elsewhere::Foreign,
            me: Default::default(),
        };
        let s = next(&env(), Outcome::Failed(&err), &t(2));
        assert_eq!(s.phase, Some(Phase::Error));
        assert_eq!(cond(&s, STALLED).status, "True");
        assert_eq!(cond(&s, STALLED).reason, "NameConflict");
        assert_eq!(cond(&s, READY).status, "False");
    }
}
