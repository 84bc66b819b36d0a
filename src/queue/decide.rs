//! Decide: what a WorkerQueue's pass does with its remote queue. The same rows as an
//! Environment's (`reconcile::decide`), over the same ownership table (`reconcile::ownership`),
//! plus one of its own: a queue is only ever touched in the environment its Environment manages.
//! One pure function, [`decide`], for managementPolicy Full, Observe and deletion; table tests
//! below cover every row. Pure: no client.

use super::desired::{self, Field};
use crate::controlplane::{QueueBody, RemoteQueue};
use crate::reconcile::decide::{Cause, Note, Removal};
use crate::reconcile::desired::Changes;
use crate::reconcile::ownership::{self, Claim, Elsewhere, Liveness, Marker, Owner, Route};
use crate::resource::DeletionPolicy;

/// What the object asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Goal {
    /// managementPolicy Full. `applied_to`: the queue this generation was last applied to (a
    /// difference found on it is drift).
    Manage {
        desired: QueueBody,
        applied_to: Option<String>,
    },
    /// managementPolicy Observe. `last_drift`: the drift message last reported.
    Observe {
        desired: QueueBody,
        last_drift: Option<String>,
    },
    Remove(Removal),
}

/// What a search found.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per pass, moved on into the decision
pub enum Located {
    NotSought,
    Found { remote: RemoteQueue, route: Route },
    Missing { route: Route, id: Option<String> },
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct Situation {
    pub goal: Goal,
    pub me: Owner,
    pub located: Located,
    /// Whether the WorkerQueue the located queue's marker names still exists.
    pub liveness: Liveness,
    pub allow_adoption: bool,
    /// The cluster `kubiya.ai/take-over-from` names.
    pub take_over: Option<String>,
    /// The remote id of the environment the queue's Environment manages.
    pub environment_id: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub plan: Plan,
    pub events: Vec<Note>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    Create,
    Update { remote: RemoteQueue, changes: Changes<Field>, cause: Cause },
    InSync { remote: RemoteQueue },
    Observe { remote: RemoteQueue, release: bool, drift: Vec<Field>, newly_drifted: bool },
    Delete { remote: RemoteQueue },
    Release { remote: RemoteQueue },
    Leave,
    Hold,
    Refuse(Refusal),
}

/// Why a pass will not act. Messages name nothing outside this namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    NameConflict {
        name: String,
        elsewhere: Elsewhere,
    },
    OwnedElsewhere {
        which: String,
        elsewhere: Elsewhere,
    },
    AdoptionNotAllowed {
        id: String,
    },
    AdoptMissing {
        id: String,
    },
    NothingToObserve {
        name: String,
    },
    CreateRaced {
        name: String,
    },
    /// The queue lives in another environment than the one its Environment manages.
    OtherEnvironment {
        which: String,
    },
}

impl Refusal {
    /// Whether this resource is no longer the queue's owner: its worker Secret goes.
    pub fn loses_ownership(&self) -> bool {
        matches!(self, Refusal::OwnedElsewhere { .. })
    }
}

impl Decision {
    fn plan(plan: Plan) -> Decision {
        Decision { plan, events: Vec::new() }
    }

    fn and(mut self, warning: bool, reason: &'static str, message: String) -> Decision {
        self.events.push(Note { warning, reason, message });
        self
    }
}

/// The marked WorkerQueue whose existence [`decide`] needs to know, if any.
pub fn needs_liveness(goal: &Goal, located: &Located, me: &Owner) -> Option<Owner> {
    let Located::Found { remote, .. } = located else { return None };
    if matches!(goal, Goal::Remove(_)) {
        return None;
    }
    ownership::needs_liveness(Marker::read(&remote.settings).as_ref(), me).cloned()
}

/// The first steps of a deletion, before any remote call: an observed queue is left alone, and a
/// paused deletion holds (unless the CRD is going, or Orphan was asked).
pub fn deletion_start(removal: &Removal) -> Option<Decision> {
    if removal.observed {
        let note = "observed only (managementPolicy Observe): the remote queue is left as it is";
        return Some(Decision::plan(Plan::Leave).and(false, "Orphaned", note.to_owned()));
    }
    (removal.paused && !removal.crd_going && !removal.orphan_asked).then(|| Decision::plan(Plan::Hold))
}

/// A deletion that cannot reach the control plane (its Environment or connection is gone or
/// unusable): done when nothing remote was to be written, else it waits (None).
pub fn deletion_without_connection(removal: &Removal, why: &str) -> Option<Decision> {
    (removal.orphan_asked || removal.crd_going || removal.policy == DeletionPolicy::Orphan).then(|| {
        let note = format!("left the remote queue as it is: {why}");
        Decision::plan(Plan::Leave).and(true, "LeftRemote", note)
    })
}

pub fn decide(s: Situation) -> Decision {
    // A queue in another environment is never this one's, whoever marked it.
    if let Located::Found { remote, route } = &s.located
        && remote.environment_id != s.environment_id
        && !matches!(s.goal, Goal::Remove(_))
    {
        return Decision::plan(Plan::Refuse(Refusal::OtherEnvironment { which: which(remote, *route) }));
    }
    match s.goal {
        Goal::Manage { desired, applied_to } => manage(
            s.located,
            &s.me,
            s.liveness,
            s.allow_adoption,
            s.take_over.as_deref(),
            &desired,
            applied_to.as_deref(),
        ),
        Goal::Observe { desired, last_drift } => {
            observe(s.located, &s.me, s.liveness, s.allow_adoption, &desired, last_drift.as_deref())
        }
        Goal::Remove(removal) => remove(s.located, &s.me, &removal, &s.environment_id),
    }
}

/// The queue as this resource may name it: its id, or `named "x"` when found by name (an id the
/// tenant never had is not told).
fn which(remote: &RemoteQueue, route: Route) -> String {
    if route == Route::Name { format!("named {:?}", remote.name) } else { remote.id.clone() }
}

fn manage(
    located: Located,
    me: &Owner,
    liveness: Liveness,
    allow_adoption: bool,
    take_over: Option<&str>,
    desired: &QueueBody,
    applied_to: Option<&str>,
) -> Decision {
    let (remote, route) = match located {
        Located::NotSought => return Decision::plan(Plan::Create),
        Located::Missing { route: Route::Status, id } => {
            let id = id.unwrap_or_default();
            let note = format!("queue {id} no longer exists in the control plane; created it again");
            return Decision::plan(Plan::Create).and(true, "Recreating", note);
        }
        Located::Missing { route: Route::Annotation, id } => {
            return Decision::plan(Plan::Refuse(Refusal::AdoptMissing { id: id.unwrap_or_default() }));
        }
        Located::Missing { route: Route::Name, .. } => {
            return Decision::plan(Plan::Refuse(Refusal::CreateRaced { name: desired.name.clone() }));
        }
        Located::Found { remote, route } => (remote, route),
    };
    let marker = Marker::read(&remote.settings);
    match ownership::decide(marker.as_ref(), me, route, liveness, take_over) {
        ownership::Decision::Manage => update(remote, desired, applied_to),
        ownership::Decision::Claim(Claim::Adopted { .. }) if !allow_adoption => {
            Decision::plan(Plan::Refuse(Refusal::AdoptionNotAllowed { id: remote.id }))
        }
        ownership::Decision::Claim(claim) => {
            let (reason, note) = match &claim {
                Claim::Reclaimed => (
                    "Reclaimed",
                    format!(
                        "took back queue {:?} ({}): its previous holder of this name released it or no longer exists",
                        remote.name, remote.id
                    ),
                ),
                Claim::Adopted { .. } => (
                    "Adopted",
                    format!(
                        "adopted queue {:?} ({}); the spec is now enforced on it",
                        remote.name, remote.id
                    ),
                ),
            };
            let changes = desired::diff(desired, &remote);
            Decision::plan(Plan::Update { remote, changes, cause: Cause::Claim(claim) })
                .and(false, reason, note)
        }
        ownership::Decision::Refuse(elsewhere) => Decision::plan(Plan::Refuse(match route {
            Route::Name => Refusal::NameConflict { name: desired.name.clone(), elsewhere },
            Route::Status | Route::Annotation => Refusal::OwnedElsewhere { which: remote.id, elsewhere },
        })),
    }
}

fn update(remote: RemoteQueue, desired: &QueueBody, applied_to: Option<&str>) -> Decision {
    let changes = desired::diff(desired, &remote);
    if changes.is_empty() {
        return Decision::plan(Plan::InSync { remote });
    }
    let names = changes.names();
    if changes.only_the_marker(&remote.settings) {
        Decision::plan(Plan::Update { remote, changes, cause: Cause::Marker })
    } else if applied_to == Some(remote.id.as_str()) {
        let note = format!("corrected fields changed outside Kubernetes: {names}");
        Decision::plan(Plan::Update { remote, changes, cause: Cause::Drift }).and(
            false,
            "DriftCorrected",
            note,
        )
    } else {
        Decision::plan(Plan::Update { remote, changes, cause: Cause::Spec }).and(
            false,
            "Updated",
            format!("updated {names}"),
        )
    }
}

fn observe(
    located: Located,
    me: &Owner,
    liveness: Liveness,
    allow_adoption: bool,
    desired: &QueueBody,
    last_drift: Option<&str>,
) -> Decision {
    let Located::Found { remote, route } = located else {
        return Decision::plan(Plan::Refuse(Refusal::NothingToObserve { name: desired.name.clone() }));
    };
    let marker = Marker::read(&remote.settings);
    if let Err(elsewhere) = ownership::may_observe(marker.as_ref(), me, liveness) {
        return Decision::plan(Plan::Refuse(Refusal::OwnedElsewhere {
            which: which(&remote, route),
            elsewhere,
        }));
    }
    let release = ownership::may_delete(marker.as_ref(), me);
    if !release && !allow_adoption && !ownership::names(marker.as_ref(), me) {
        return Decision::plan(Plan::Refuse(Refusal::AdoptionNotAllowed { id: remote.id }));
    }
    let drift = desired::drift(desired, &remote);
    let message = drift_message(&drift);
    let newly_drifted = !drift.is_empty() && last_drift != Some(message.as_str());
    let mut d = Decision::plan(Plan::Observe { remote: remote.clone(), release, drift, newly_drifted });
    if release {
        let note = format!("now only observing queue {:?} ({}): released it", remote.name, remote.id);
        d = d.and(false, "Released", note);
    }
    if newly_drifted {
        d = d.and(true, "Drifted", message);
    }
    d
}

/// What the `Synced` condition says of `drift`.
pub fn drift_message(drift: &[Field]) -> String {
    use crate::reconcile::desired::Wire;
    if drift.is_empty() {
        return "the remote queue matches the spec".to_owned();
    }
    let names = drift.iter().map(|f| f.wire()).collect::<Vec<_>>().join(", ");
    format!("the remote queue differs from the spec in: {names} (observed only: not corrected)")
}

fn remove(located: Located, me: &Owner, removal: &Removal, environment_id: &str) -> Decision {
    let Located::Found { remote, route } = located else { return Decision::plan(Plan::Leave) };
    let marker = Marker::read(&remote.settings);
    if !ownership::may_delete(marker.as_ref(), me) || remote.environment_id != environment_id {
        if route == Route::Name {
            return Decision::plan(Plan::Leave);
        }
        let note = format!(
            "left queue {:?} ({}) in the control plane: its owner marker does not name this resource",
            remote.name, remote.id
        );
        return Decision::plan(Plan::Leave).and(true, "LeftRemote", note);
    }
    let (name, id) = (remote.name.clone(), remote.id.clone());
    if removal.paused {
        let note = format!("left queue {name:?} ({id}) as it is: the resource is paused");
        return Decision::plan(Plan::Leave).and(false, "Orphaned", note);
    }
    if removal.crd_going {
        let note = format!(
            "the WorkerQueue CustomResourceDefinition is being deleted: released queue {name:?} ({id}) \
             instead of deleting it; re-install the CRD and apply this resource again to manage it again"
        );
        return Decision::plan(Plan::Release { remote }).and(true, "Orphaned", note);
    }
    match removal.policy {
        DeletionPolicy::Orphan => {
            let note = format!(
                "released queue {name:?} ({id}) and left it in the control plane (deletion policy Orphan)"
            );
            Decision::plan(Plan::Release { remote }).and(false, "Orphaned", note)
        }
        DeletionPolicy::Delete => {
            Decision::plan(Plan::Delete { remote }).and(false, "Deleted", format!("deleted queue {id}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::desired::marking_settings;
    use crate::resource::{EnvironmentRef, WorkerQueue, WorkerQueueSpec};
    use serde_json::json;

    const ENV: &str = "e1";

    fn me() -> Owner {
        Owner {
            cluster: "c1".into(),
            uid: "u1".into(),
            namespace: "ns".into(),
            namespace_uid: "nsu".into(),
            name: "gpu".into(),
        }
    }

    fn other() -> Owner {
        Owner { uid: "u2".into(), namespace: "ns2".into(), namespace_uid: "nsu2".into(), ..me() }
    }

    fn desired() -> QueueBody {
        let mut q = WorkerQueue::new(
            "gpu",
            WorkerQueueSpec {
                environment_ref: EnvironmentRef { name: "prod".into() },
                heartbeat_interval: 60,
                description: Some("declared".into()),
                ..Default::default()
            },
        );
        q.metadata.namespace = Some("ns".into());
        desired::desired(&q, &me())
    }

    fn remote(marker: Option<Marker>) -> RemoteQueue {
        let d = desired();
        let mut r: RemoteQueue = serde_json::from_value(json!({
            "id": "q1", "environment_id": ENV, "name": d.name, "display_name": d.display_name,
            "description": d.description, "status": "active", "heartbeat_interval": 60,
        }))
        .unwrap();
        if let Some(m) = marker {
            let c: Changes<Field> = marking_settings(&r.settings, &m);
            r.settings = c.body()["settings"].as_object().unwrap().clone();
        }
        r
    }

    fn mine() -> Option<Marker> {
        Some(Marker::held_by(&me()))
    }

    fn situation(goal: Goal, located: Located) -> Situation {
        Situation {
            goal,
            me: me(),
            located,
            liveness: Liveness::Live,
            allow_adoption: false,
            take_over: None,
            environment_id: ENV.into(),
        }
    }

    fn manage(applied_to: Option<&str>) -> Goal {
        Goal::Manage { desired: desired(), applied_to: applied_to.map(str::to_owned) }
    }

    fn removal(policy: DeletionPolicy) -> Removal {
        Removal { policy, paused: false, crd_going: false, orphan_asked: false, observed: false }
    }

    fn found(marker: Option<Marker>, route: Route) -> Located {
        Located::Found { remote: remote(marker), route }
    }

    fn plan_name(d: &Decision) -> String {
        match &d.plan {
            Plan::Update { cause, .. } => format!("Update({cause:?})"),
            Plan::Refuse(r) => format!("Refuse({})", format!("{r:?}").split([' ', '{']).next().unwrap_or("")),
            p => format!("{p:?}").split([' ', '{', '(']).next().unwrap_or("").to_owned(),
        }
    }

    #[test]
    fn the_manage_rows() {
        let mut changed = remote(mine());
        changed.description = Some("edited".into());
        let mut elsewhere_env = remote(mine());
        elsewhere_env.environment_id = "e2".into();
        let rows: Vec<(&str, Located, Option<&str>, bool, &str)> = vec![
            ("nothing recorded: create", Located::NotSought, None, false, "Create"),
            (
                "recorded and gone: create again",
                Located::Missing { route: Route::Status, id: Some("q1".into()) },
                None,
                false,
                "Create",
            ),
            (
                "annotation names nothing",
                Located::Missing { route: Route::Annotation, id: Some("q9".into()) },
                None,
                false,
                "Refuse(AdoptMissing)",
            ),
            (
                "409, then nothing by that name",
                Located::Missing { route: Route::Name, id: None },
                None,
                false,
                "Refuse(CreateRaced)",
            ),
            ("ours and in sync", found(mine(), Route::Status), None, false, "InSync"),
            ("our lost create, found by name", found(mine(), Route::Name), None, false, "InSync"),
            (
                "changed outside after it was applied: drift",
                Located::Found { remote: changed.clone(), route: Route::Status },
                Some("q1"),
                false,
                "Update(Drift)",
            ),
            (
                "changed before it was applied: spec",
                Located::Found { remote: changed, route: Route::Status },
                None,
                false,
                "Update(Spec)",
            ),
            ("marker lost: put back", found(None, Route::Status), None, false, "Update(Marker)"),
            (
                "unmarked, by name: someone else's",
                found(None, Route::Name),
                None,
                false,
                "Refuse(NameConflict)",
            ),
            (
                "held by a live queue elsewhere",
                found(Some(Marker::held_by(&other())), Route::Annotation),
                None,
                true,
                "Refuse(OwnedElsewhere)",
            ),
            (
                "unmarked, by annotation, adoption not allowed",
                found(None, Route::Annotation),
                None,
                false,
                "Refuse(AdoptionNotAllowed)",
            ),
            (
                "unmarked, by annotation, adoption allowed",
                found(None, Route::Annotation),
                None,
                true,
                "Update(Claim(Adopted { previous: None }))",
            ),
            (
                "in another environment",
                Located::Found { remote: elsewhere_env, route: Route::Annotation },
                None,
                true,
                "Refuse(OtherEnvironment)",
            ),
        ];
        for (row, located, applied_to, allow, want) in rows {
            let mut s = situation(manage(applied_to), located);
            s.allow_adoption = allow;
            assert_eq!(plan_name(&decide(s)), want, "{row}");
        }
    }

    #[test]
    fn a_released_queue_of_the_same_name_is_taken_back_and_said_so() {
        let d = decide(situation(
            manage(None),
            found(Some(Marker { owner: Owner { uid: "old".into(), ..me() }, released: true }), Route::Name),
        ));
        assert_eq!(plan_name(&d), "Update(Claim(Reclaimed))");
        assert_eq!(d.events[0].reason, "Reclaimed");
    }

    #[test]
    fn the_observe_rows() {
        let observe = || Goal::Observe { desired: desired(), last_drift: None };
        let d = decide(situation(observe(), Located::Missing { route: Route::Name, id: None }));
        assert_eq!(plan_name(&d), "Refuse(NothingToObserve)");
        let mut s = situation(observe(), found(Some(Marker::held_by(&other())), Route::Name));
        s.allow_adoption = true;
        assert_eq!(plan_name(&decide(s)), "Refuse(OwnedElsewhere)", "a live owner elsewhere");
        let d = decide(situation(observe(), found(mine(), Route::Status)));
        assert!(matches!(d.plan, Plan::Observe { release: true, .. }), "Full → Observe releases it");
        let d = decide(situation(observe(), found(None, Route::Name)));
        assert_eq!(plan_name(&d), "Refuse(AdoptionNotAllowed)");
        let mut drifted = remote(None);
        drifted.max_workers = Some(4);
        let mut s = situation(observe(), Located::Found { remote: drifted, route: Route::Name });
        s.allow_adoption = true;
        let d = decide(s.clone());
        assert!(
            matches!(&d.plan, Plan::Observe { drift, newly_drifted: true, release: false, .. } if drift == &[Field::MaxWorkers])
        );
        assert_eq!(d.events[0].reason, "Drifted");
        s.goal = Goal::Observe { desired: desired(), last_drift: Some(drift_message(&[Field::MaxWorkers])) };
        assert!(decide(s).events.is_empty(), "said once");
    }

    #[test]
    fn the_removal_rows() {
        let rm = |policy, located| decide(situation(Goal::Remove(removal(policy)), located));
        assert_eq!(plan_name(&rm(DeletionPolicy::Delete, found(mine(), Route::Status))), "Delete");
        assert_eq!(plan_name(&rm(DeletionPolicy::Orphan, found(mine(), Route::Status))), "Release");
        assert_eq!(
            plan_name(&rm(DeletionPolicy::Delete, Located::Missing { route: Route::Status, id: None })),
            "Leave"
        );
        let theirs = rm(DeletionPolicy::Delete, found(Some(Marker::held_by(&other())), Route::Status));
        assert_eq!((plan_name(&theirs).as_str(), theirs.events[0].reason), ("Leave", "LeftRemote"));
        assert!(
            rm(DeletionPolicy::Delete, found(None, Route::Name)).events.is_empty(),
            "someone else's, by name"
        );
        let mut going = removal(DeletionPolicy::Delete);
        going.crd_going = true;
        let d = decide(situation(Goal::Remove(going), found(mine(), Route::Status)));
        assert_eq!(plan_name(&d), "Release");
        let mut paused = removal(DeletionPolicy::Delete);
        paused.paused = true;
        assert_eq!(deletion_start(&paused).map(|d| d.plan), Some(Plan::Hold));
        paused.orphan_asked = true;
        assert_eq!(deletion_start(&paused), None, "Orphan asked: goes on");
        let observed = Removal { observed: true, ..removal(DeletionPolicy::Delete) };
        assert_eq!(deletion_start(&observed).map(|d| d.plan), Some(Plan::Leave));
        assert!(deletion_without_connection(&removal(DeletionPolicy::Delete), "x").is_none(), "waits");
        assert!(deletion_without_connection(&removal(DeletionPolicy::Orphan), "x").is_some());
    }
}
