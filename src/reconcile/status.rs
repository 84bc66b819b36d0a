//! The status a pass reports: phase, conditions (kstatus: Ready, Reconciling, Stalled; Synced
//! under managementPolicy Observe) and what was observed. Pure: no client.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::error::Error;
use crate::connection::ConnKey;
use crate::controlplane::{RemoteEnvironment, sanitize};
use crate::resource::{Environment, EnvironmentStatus, Phase, RECONCILE_REQUEST_ANNOTATION};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// Under `managementPolicy: Observe` only: whether the remote environment matches the spec.
pub const SYNCED: &str = "Synced";

/// What a pass learnt, from which the status follows.
pub enum Observation<'a> {
    /// First sight of the object: nothing has been sent to the control plane yet.
    Starting,
    /// The remote environment as it is after this pass's writes, through `connection`.
    Remote { remote: &'a RemoteEnvironment, worker_secret: Option<String>, connection: &'a ConnKey },
    /// Under `managementPolicy: Observe`: the remote environment as it is, and the fields where
    /// it differs from the spec (reported, not corrected).
    Observed {
        remote: &'a RemoteEnvironment,
        worker_secret: Option<String>,
        connection: &'a ConnKey,
        drift: &'a [String],
    },
    /// The resource is being deleted.
    Deleting,
    /// The resource is being deleted, and paused: the finalizer stays, nothing remote is written.
    DeletionPaused,
    /// The pass failed.
    Failed(&'a Error),
    /// `kubiya.ai/paused: "true"`: nothing is written to the control plane.
    Paused,
}

/// Appended to a failed deletion's message: the way out when the control plane refuses.
pub const ORPHAN_HINT: &str =
    "; to leave the remote environment and finish deleting, annotate kubiya.ai/deletion-policy=Orphan";

/// What the three conditions say after a pass. They share one reason and one message; the phase
/// message is the same text.
struct Verdict {
    phase: Option<Phase>,
    ready: Ready,
    reconciling: bool,
    stalled: bool,
    reason: &'static str,
    message: String,
}

enum Ready {
    True,
    False,
    /// Left as it was: a Ready environment with transient trouble, or paused, is still Ready.
    Kept,
}

/// The status to report after a pass. `lastTransitionTime` moves only when a condition flips;
/// `lastSyncedTime` is stamped by [`with_sync_time`] only when something else changed.
pub fn next(env: &Environment, obs: Observation<'_>, now: &Time) -> EnvironmentStatus {
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
    let deleting = env.metadata.deletion_timestamp.is_some();
    let was_ready = find(&old.conditions, READY).is_some_and(|c| c.status == "True");
    let mut drift: Option<&[String]> = None;
    let managed = matches!(obs, Observation::Remote { .. });
    let seen = |s: &mut EnvironmentStatus,
                remote: &RemoteEnvironment,
                worker_secret: Option<String>,
                connection: &ConnKey| {
        s.environment_id = Some(remote.id.clone());
        s.connection = Some(connection.label());
        s.remote_name = Some(remote.name.clone());
        s.remote_status = Some(remote.status.clone());
        s.can_register = Some(remote.can_register());
        s.worker_secret_name = worker_secret.or(old.worker_secret_name.clone());
        remote_verdict(remote)
    };
    let v = match obs {
        Observation::Starting => Verdict {
            phase: Some(Phase::Pending),
            ready: Ready::False,
            reconciling: true,
            stalled: false,
            reason: "Creating",
            message: "creating the environment in the control plane".into(),
        },
        Observation::Remote { remote, worker_secret, connection } => {
            seen(&mut s, remote, worker_secret, connection)
        }
        Observation::Observed { remote, worker_secret, connection, drift: fields } => {
            drift = Some(fields);
            seen(&mut s, remote, worker_secret, connection)
        }
        Observation::Deleting => Verdict {
            phase: Some(Phase::Deleting),
            ready: Ready::False,
            reconciling: true,
            stalled: false,
            reason: "Deleting",
            message: "deleting".into(),
        },
        Observation::DeletionPaused => Verdict {
            phase: Some(Phase::Deleting),
            ready: Ready::False,
            reconciling: false,
            stalled: false,
            reason: "Paused",
            message: "deletion paused by annotation kubiya.ai/paused: the finalizer stays and nothing \
                      is written to the control plane; to go on, remove the annotation (the deletion \
                      policy then applies), or annotate kubiya.ai/deletion-policy=Orphan to leave the \
                      remote environment as it is"
                .into(),
        },
        Observation::Paused => {
            // The spec is not acted upon while paused: observedGeneration stays where it was, so
            // that no health check mistakes a paused change for an applied one.
            s.observed_generation = old.observed_generation.or(generation);
            Verdict {
                phase: old.phase,
                ready: if was_ready { Ready::Kept } else { Ready::False },
                reconciling: false,
                stalled: false,
                reason: "Paused",
                message: "paused by annotation kubiya.ai/paused: nothing is written to the control plane"
                    .into(),
            }
        }
        Observation::Failed(e) => {
            let message = e.explain() + if deleting { ORPHAN_HINT } else { "" };
            let phase = if deleting { Some(Phase::Deleting) } else { old.phase.or(Some(Phase::Pending)) };
            if e.is_permanent() {
                let phase = if deleting { phase } else { Some(Phase::Error) };
                Verdict {
                    phase,
                    ready: Ready::False,
                    reconciling: false,
                    stalled: true,
                    reason: e.reason(),
                    message,
                }
            } else {
                // Transient trouble: keep what was known (a Ready environment most likely still
                // is, unless there is a spec change it has not got yet) and say that work is
                // under way.
                let keep = was_ready && old.observed_generation == generation && !deleting;
                let ready = if keep { Ready::Kept } else { Ready::False };
                Verdict { phase, ready, reconciling: true, stalled: false, reason: e.reason(), message }
            }
        }
    };
    s.phase = v.phase;
    s.message = Some(v.message.clone());
    let observed = s.observed_generation;
    let cond =
        |type_: &str, is: bool| condition(&old.conditions, type_, is, v.reason, &v.message, observed, now);
    let ready = match v.ready {
        Ready::True => cond(READY, true),
        Ready::False => cond(READY, false),
        Ready::Kept => match find(&old.conditions, READY) {
            Some(c) => Condition { observed_generation: observed, ..c.clone() },
            None => cond(READY, true),
        },
    };
    s.conditions = vec![ready, cond(RECONCILING, v.reconciling), cond(STALLED, v.stalled)];
    // Synced is also the record that the environment was observed, not managed: a switch to Full
    // takes it over as an adoption. Only a pass that manages it ends the record; one that learnt
    // nothing (failed, paused) keeps it as it was.
    match drift {
        Some(fields) => s.conditions.push(synced(&old.conditions, fields, observed, now)),
        None if !managed => s.conditions.extend(find(&old.conditions, SYNCED).cloned()),
        None => {}
    }
    s
}

/// Observe's own condition: `Synced` True (`InSync`) when the remote environment matches the
/// spec, else False (`Drifted`), naming the fields where it differs.
fn synced(old: &[Condition], drift: &[String], generation: Option<i64>, now: &Time) -> Condition {
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
    let cond = |type_: &str, is: bool| condition(&[], type_, is, "InvalidSpec", message, generation, now);
    let status = EnvironmentStatus {
        phase: Some(Phase::Error),
        observed_generation: generation,
        message: Some(message.to_owned()),
        conditions: vec![cond(READY, false), cond(RECONCILING, false), cond(STALLED, true)],
        ..Default::default()
    };
    serde_json::json!({ "status": status })
}

/// The verdict on a remote environment after a successful pass, from its status.
fn remote_verdict(remote: &RemoteEnvironment) -> Verdict {
    let status = remote.status.as_str();
    match status {
        "ready" | "active" => Verdict {
            phase: Some(Phase::Ready),
            ready: Ready::True,
            reconciling: false,
            stalled: false,
            reason: "Ready",
            message: format!("environment is {status}"),
        },
        "error" => {
            // The server's text, like every error detail, is cut to its first line, bounded, and
            // stripped of anything that looks like a token.
            let why = remote.error_message.as_deref().map(sanitize).filter(|m| !m.is_empty());
            Verdict {
                phase: Some(Phase::Error),
                ready: Ready::False,
                reconciling: false,
                stalled: true,
                reason: "RemoteError",
                message: format!(
                    "the control plane reports an error: {}",
                    why.as_deref().unwrap_or("no error message given")
                ),
            }
        }
        "inactive" | "archived" => Verdict {
            phase: Some(Phase::Inactive),
            ready: Ready::False,
            reconciling: false,
            stalled: false,
            reason: "Inactive",
            message: format!("the environment is {status} in the control plane"),
        },
        other => Verdict {
            phase: Some(Phase::Provisioning),
            ready: Ready::False,
            reconciling: true,
            stalled: false,
            reason: "Provisioning",
            message: format!("the control plane is provisioning the environment ({})", sanitize(other)),
        },
    }
}

/// Whether nothing is waiting on `env`: Ready at its current generation, its last reconcile
/// request handled, not being deleted. A pass over it is a drift check, which yields to the
/// passes users wait for, and at start it is not looked at before its turn.
pub fn settled(env: &Environment) -> bool {
    let Some(s) = env.status.as_ref() else { return false };
    let requested = env.annotation(RECONCILE_REQUEST_ANNOTATION);
    env.metadata.deletion_timestamp.is_none()
        && s.phase == Some(Phase::Ready)
        && find(&s.conditions, READY).is_some_and(|c| c.status == "True")
        && s.observed_generation.is_some()
        && s.observed_generation == env.metadata.generation
        && s.environment_id.is_some()
        && requested.is_none_or(|r| s.last_handled_reconcile_at.as_deref() == Some(r))
}

/// Whether `new` says something `old` did not (the sync time aside).
pub fn changed(old: Option<&EnvironmentStatus>, new: &EnvironmentStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &EnvironmentStatus| EnvironmentStatus { last_synced_time: None, ..s.clone() };
    strip(old) != strip(new)
}

/// A JSON merge patch from `old` to `new` status: every field of `new`, and an explicit null for
/// each field `old` had that `new` has not. (A merge patch costs the API server less than a
/// server-side apply, which matters at thousands of objects; conditions are replaced whole.)
pub fn merge_patch(old: Option<&EnvironmentStatus>, new: &EnvironmentStatus) -> serde_json::Value {
    let mut fields = match serde_json::to_value(new) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    if let Some(Ok(serde_json::Value::Object(old))) = old.map(serde_json::to_value) {
        for key in old.keys() {
            fields.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": fields })
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
pub(super) fn drift_message(drift: &[String]) -> String {
    format!(
        "the remote environment differs from the spec in {} (observed, not corrected: managementPolicy is Observe)",
        drift.join(", ")
    )
}

pub(super) fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A condition of `type_`, whose `lastTransitionTime` moves only when its status flips.
pub(crate) fn condition(
    old: &[Condition],
    type_: &str,
    is: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if is { "True" } else { "False" };
    let last_transition_time = match find(old, type_) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controlplane;
    use crate::resource::EnvironmentSpec;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

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
        next(
            e,
            Observation::Remote { remote: r, worker_secret: None, connection: &ConnKey::Operator },
            &t(at),
        )
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
        e.status = Some(next(
            &e,
            Observation::Remote { remote: &p, worker_secret: None, connection: &ConnKey::Operator },
            &t(40),
        ));
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
            Observation::Remote {
                remote: &r,
                worker_secret: Some("w".into()),
                connection: &ConnKey::Operator,
            },
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
        let s = next(&e, Observation::Failed(&err), &t(2));
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
        assert_eq!(cond(&next(&older, Observation::Failed(&err), &t(2)), READY).observed_generation, Some(2));
        // Not kept: a spec change the remote has not got yet, or a deletion under way.
        let mut stale = e.clone();
        stale.metadata.generation = Some(4);
        assert_eq!(
            cond(&next(&stale, Observation::Failed(&err), &t(3)), READY).status,
            "False",
            "new generation"
        );
        let mut deleting = e.clone();
        deleting.metadata.deletion_timestamp = Some(t(2));
        assert_eq!(
            cond(&next(&deleting, Observation::Failed(&err), &t(3)), READY).status,
            "False",
            "deleting"
        );
        assert_eq!(
            cond(&next(&env(), Observation::Failed(&err), &t(3)), READY).status,
            "False",
            "never Ready"
        );
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
        busy.status = Some(next(
            &e,
            Observation::Remote { remote: &p, worker_secret: None, connection: &ConnKey::Operator },
            &t(3),
        ));
        assert!(!settled(&busy), "not Ready");
        let mut no_id = e.clone();
        no_id.status.as_mut().unwrap().environment_id = None;
        assert!(!settled(&no_id));
    }

    #[test]
    fn merge_patch_clears_what_is_gone() {
        let old = EnvironmentStatus {
            message: Some("m".into()),
            environment_id: Some("id".into()),
            ..Default::default()
        };
        let new = EnvironmentStatus { environment_id: Some("id".into()), ..Default::default() };
        assert_eq!(
            merge_patch(Some(&old), &new),
            json!({"status": {"environmentId": "id", "message": null}})
        );
        assert_eq!(merge_patch(None, &new), json!({"status": {"environmentId": "id"}}));
    }

    #[test]
    fn synced_outlives_passes_that_observe_nothing_and_ends_once_managed() {
        let r = remote("ready");
        let key = ConnKey::Operator;
        let mut e = env();
        let drift = ["description".to_owned()];
        e.status = Some(next(
            &e,
            Observation::Observed { remote: &r, worker_secret: None, connection: &key, drift: &drift },
            &t(1),
        ));
        let observed = cond(e.status.as_ref().unwrap(), SYNCED).clone();
        assert_eq!((observed.status.as_str(), observed.reason.as_str()), ("False", "Drifted"));
        let err = Error::AdoptionNotAllowed { connection: "operator".into(), id: "id-1".into() };
        for obs in [Observation::Failed(&err), Observation::Paused, Observation::Deleting] {
            let mut after = e.clone();
            after.metadata.generation = Some(3);
            let s = next(&after, obs, &t(2));
            assert_eq!(cond(&s, SYNCED), &observed, "kept as it was, with its generation");
        }
        assert!(find(&managed(&e, &r, 3).conditions, SYNCED).is_none(), "managed: no longer observed");
        assert!(find(&next(&env(), Observation::Paused, &t(1)).conditions, SYNCED).is_none());
    }

    #[test]
    fn permanent_failure_is_stalled() {
        let err = Error::NameConflict {
            name: "prod".into(),
            id: "id-1".into(),
            refusal: crate::reconcile::ownership::Refusal::Foreign,
            target: "environment/prod -n ns".into(),
        };
        let s = next(&env(), Observation::Failed(&err), &t(2));
        assert_eq!(s.phase, Some(Phase::Error));
        assert_eq!(cond(&s, STALLED).status, "True");
        assert_eq!(cond(&s, STALLED).reason, "NameConflict");
        assert_eq!(cond(&s, READY).status, "False");
    }
}
