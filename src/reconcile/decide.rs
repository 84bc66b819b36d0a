//! Decide: what a pass does with the remote environment, from what was located and what this
//! object says. One pure function, [`decide`], for every pass (managementPolicy Full, Observe,
//! deletion), returning a [`Plan`] and the Events to publish once it is carried out; the pass
//! gathers the inputs, and the executors carry the plan out. Table tests below cover every row.
//! Pure: no client.

use super::desired::{self, Changes, Field};
use super::error::Error;
use super::locate::Located;
use super::ownership::{self, Claim, Elsewhere, Liveness, Marker, Owner, Route};
use super::status::drift_message;
use crate::connection::Place;
use crate::controlplane::{EnvironmentBody, RemoteEnvironment};
use crate::resource::DeletionPolicy;

/// What the object asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Goal {
    /// managementPolicy Full: the remote environment as the spec says.
    Manage {
        desired: EnvironmentBody,
        /// The id of the environment this object's spec of this generation was last applied to
        /// (status: Ready at the current generation): a difference found on it is drift.
        applied_to: Option<String>,
    },
    /// managementPolicy Observe: read it and report it, write nothing to it.
    Observe {
        desired: EnvironmentBody,
        /// The message of the `Synced` condition when it said the environment drifted.
        last_drift: Option<String>,
    },
    /// The object is being deleted.
    Remove(Removal),
}

/// What a deletion must do, from the object and the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    /// The deletion policy in force (the annotation, else the spec).
    pub policy: DeletionPolicy,
    /// `kubiya.ai/paused: "true"`.
    pub paused: bool,
    /// The Environment CRD is being deleted: the API server deletes every Environment, not
    /// anyone who wants the remote environments gone.
    pub crd_going: bool,
    /// `kubiya.ai/deletion-policy: Orphan` was set: leave it, even without a connection.
    pub orphan_asked: bool,
    /// managementPolicy Observe: only ever read, so nothing to delete or release.
    pub observed: bool,
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct Situation {
    pub goal: Goal,
    /// This object, as an owner marker names it.
    pub me: Owner,
    pub located: Located,
    /// Whether the object the located environment's marker names still exists; asked only
    /// when [`needs_liveness`] says it matters, else `Live`.
    pub liveness: Liveness,
    /// Whether the connection lets Environments take environments they did not create.
    pub allow_adoption: bool,
    /// The cluster `kubiya.ai/take-over-from` names, unless this resource used it on it already.
    pub take_over: Option<String>,
    /// Where the connection leads now.
    pub place: Place,
    /// Where the status says the environment lives (None: no environment recorded yet, or
    /// recorded by an older version).
    pub recorded: Option<Place>,
}

/// A plan and what to say once it is carried out.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub plan: Plan,
    pub events: Vec<Note>,
}

/// An Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// There is none: create it.
    Create,
    /// Write `changes` to `remote`, and manage it from then on.
    Update {
        remote: RemoteEnvironment,
        changes: Changes,
        cause: Cause,
    },
    /// It is as the spec says.
    InSync {
        remote: RemoteEnvironment,
    },
    /// Report it as it is; `release` its owner marker first when it was this resource's.
    Observe {
        remote: RemoteEnvironment,
        release: bool,
        drift: Vec<Field>,
        newly_drifted: bool,
    },
    Delete {
        remote: RemoteEnvironment,
    },
    /// Mark its owner marker released, and leave it.
    Release {
        remote: RemoteEnvironment,
    },
    /// Leave the remote side as it is: the deletion is done.
    Leave,
    /// Keep the finalizer and write nothing: a paused deletion.
    Hold,
    /// Hands off: the pass ends in this refusal (Stalled).
    Refuse(Refusal),
}

/// Why an update is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The spec changed.
    Spec,
    /// Someone changed the environment outside Kubernetes.
    Drift,
    /// Only the owner marker is rewritten (lost, or from an older version).
    Marker,
    /// This resource takes the environment.
    Claim(Claim),
}

/// Why a pass will not act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Creating answered 409, and the environment of that name is someone else's.
    NameConflict { name: String, id: String, elsewhere: Elsewhere },
    /// The environment this resource recorded, was pointed at, or observes by name, is someone
    /// else's. `which`: the environment as this resource knows it (its id, or `named "x"` when it
    /// was found by name: an id the tenant never had is not told).
    OwnedElsewhere { which: String, elsewhere: Elsewhere },
    /// Taking it needs a connection that allows adoption.
    AdoptionNotAllowed { id: String },
    /// The annotation names no environment.
    AdoptMissing { id: String },
    /// Observe found nothing to read.
    NothingToObserve { name: String },
    /// Creating answered 409, and then nothing had the name: try again.
    CreateRaced { name: String },
    /// The connection leads to another organisation or control plane than the one the
    /// environment lives in.
    Moved { was: String, now: String },
}

impl Refusal {
    /// The error the pass ends with: `me` is this object, `connection` names its connection.
    pub fn error(self, me: &Owner, connection: &str) -> Error {
        let me = me.clone();
        match self {
            Refusal::NameConflict { name, id, elsewhere } => Error::NameConflict { name, id, elsewhere, me },
            Refusal::OwnedElsewhere { which, elsewhere } => Error::OwnedElsewhere { which, elsewhere, me },
            Refusal::AdoptionNotAllowed { id } => {
                Error::AdoptionNotAllowed { connection: connection.to_owned(), id }
            }
            Refusal::AdoptMissing { id } => Error::AdoptMissing { id },
            Refusal::NothingToObserve { name } => Error::NothingToObserve { name },
            Refusal::CreateRaced { name } => Error::CreateRaced { name },
            Refusal::Moved { was, now } => Error::Moved { was, now },
        }
    }

    /// Whether this resource is no longer the environment's owner (taken over, refused): its
    /// worker Secret goes, so that the last holder keeps no valid token.
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

/// The first steps of a deletion, before any connection or remote call: an observed environment
/// is left alone, and a paused deletion holds (unless the CRD is going, or Orphan was asked).
pub fn deletion_start(removal: &Removal) -> Option<Decision> {
    if removal.observed {
        let note = "observed only (managementPolicy Observe): the remote environment is left as it is";
        return Some(Decision::plan(Plan::Leave).and(false, "Orphaned", note.to_owned()));
    }
    (removal.paused && !removal.crd_going && !removal.orphan_asked).then(|| Decision::plan(Plan::Hold))
}

/// A deletion whose connection cannot be used: done, when nothing remote was to be written
/// anyway (Orphan asked, or the CRD is going); else it waits for the connection (None).
pub fn deletion_without_connection(removal: &Removal, why: &str) -> Option<Decision> {
    (removal.orphan_asked || removal.crd_going).then(|| {
        let note = format!("left the remote environment as it is: {why}");
        Decision::plan(Plan::Leave).and(true, "LeftRemote", note)
    })
}

/// The marked object whose existence [`decide`] needs to know, if any.
pub fn needs_liveness(goal: &Goal, located: &Located, me: &Owner) -> Option<Owner> {
    let Located::Found { remote, .. } = located else { return None };
    if matches!(goal, Goal::Remove(_)) {
        return None;
    }
    ownership::needs_liveness(Marker::read(&remote.settings).as_ref(), me).cloned()
}

/// The decision, for every goal and everything locate can find.
pub fn decide(s: Situation) -> Decision {
    // An environment lives in one organisation, on one control plane: a connection that now
    // leads elsewhere is never a reason to create (or delete) anything.
    let moved = s
        .recorded
        .as_ref()
        .filter(|r| moved(r, &s.place))
        .map(|r| Refusal::Moved { was: r.to_string(), now: s.place.to_string() });
    match (s.goal, moved) {
        (Goal::Remove(removal), Some(moved)) if removal.orphan_asked || removal.crd_going => {
            let note = format!("left the remote environment as it is: {}", moved.clone().error(&s.me, ""));
            Decision::plan(Plan::Leave).and(true, "LeftRemote", note)
        }
        (_, Some(moved)) => Decision::plan(Plan::Refuse(moved)),
        (Goal::Manage { desired, applied_to }, None) => manage(
            s.located,
            &s.me,
            s.liveness,
            s.allow_adoption,
            s.take_over.as_deref(),
            &desired,
            applied_to.as_deref(),
        ),
        (Goal::Observe { desired, last_drift }, None) => {
            observe(s.located, &s.me, s.liveness, s.allow_adoption, &desired, last_drift.as_deref())
        }
        (Goal::Remove(removal), None) => remove(s.located, &s.me, &removal),
    }
}

/// Whether `now` leads elsewhere than where the environment lives: another control plane, or a
/// key of another organisation (or of none it names).
fn moved(recorded: &Place, now: &Place) -> bool {
    recorded.control_plane != now.control_plane
        || (recorded.organization.is_some() && recorded.organization != now.organization)
}

fn manage(
    located: Located,
    me: &Owner,
    liveness: Liveness,
    allow_adoption: bool,
    take_over: Option<&str>,
    desired: &EnvironmentBody,
    applied_to: Option<&str>,
) -> Decision {
    let (remote, route) = match located {
        Located::NotSought => return Decision::plan(Plan::Create),
        Located::Missing { route: Route::Status, id } => {
            let id = id.unwrap_or_default();
            let note = format!("environment {id} no longer exists in the control plane; created it again");
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
        // Whoever may create an Environment where this connection serves could otherwise take any
        // environment of the organization, and its worker token.
        ownership::Decision::Claim(Claim::Adopted { .. }) if !allow_adoption => {
            Decision::plan(Plan::Refuse(Refusal::AdoptionNotAllowed { id: remote.id }))
        }
        ownership::Decision::Claim(claim) => {
            let (reason, note) = announce(&remote, &claim, me);
            let changes = desired::diff(desired, &remote);
            Decision::plan(Plan::Update { remote, changes, cause: Cause::Claim(claim) })
                .and(false, reason, note)
        }
        ownership::Decision::Refuse(elsewhere) => {
            let id = remote.id;
            Decision::plan(Plan::Refuse(match route {
                Route::Name => Refusal::NameConflict { name: desired.name.clone(), id, elsewhere },
                Route::Status | Route::Annotation => Refusal::OwnedElsewhere { which: id, elsewhere },
            }))
        }
    }
}

/// The write that brings an environment this resource manages to the spec, if one is needed.
fn update(remote: RemoteEnvironment, desired: &EnvironmentBody, applied_to: Option<&str>) -> Decision {
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

/// The Event that says this resource took the environment.
fn announce(remote: &RemoteEnvironment, claim: &Claim, me: &Owner) -> (&'static str, String) {
    match claim {
        Claim::Reclaimed => (
            "Reclaimed",
            format!(
                "took back environment {:?} ({}): its previous holder of this name released it or no longer exists",
                remote.name, remote.id
            ),
        ),
        Claim::Adopted { previous } => {
            let from = match previous {
                None => String::new(),
                Some(m) if m.released => format!(" (released by {})", m.owner.seen_from(me)),
                Some(m) if m.owner.cluster == me.cluster => {
                    format!(" (it was managed by {}, which no longer exists)", m.owner.seen_from(me))
                }
                Some(m) => format!(
                    " (taken over from cluster {}, whose resource no longer writes to it)",
                    m.owner.cluster_name()
                ),
            };
            (
                "Adopted",
                format!(
                    "adopted environment {:?} ({}){from}; the spec is now enforced on it",
                    remote.name, remote.id
                ),
            )
        }
    }
}

fn observe(
    located: Located,
    me: &Owner,
    liveness: Liveness,
    allow_adoption: bool,
    desired: &EnvironmentBody,
    last_drift: Option<&str>,
) -> Decision {
    let Located::Found { remote, route } = located else {
        return Decision::plan(Plan::Refuse(Refusal::NothingToObserve { name: desired.name.clone() }));
    };
    let marker = Marker::read(&remote.settings);
    // Worker tokens go only to the owner's namespace.
    if let Err(elsewhere) = ownership::may_observe(marker.as_ref(), me, liveness) {
        let which = if route == Route::Name { format!("named {:?}", remote.name) } else { remote.id };
        return Decision::plan(Plan::Refuse(Refusal::OwnedElsewhere { which, elsewhere }));
    }
    // Managed by this resource until now (Full → Observe): let it go, as an Orphan deletion would.
    let release = ownership::may_delete(marker.as_ref(), me);
    if !release && !allow_adoption && !ownership::names(marker.as_ref(), me) {
        // Observing shows its status and publishes its worker token here: the same as adopting.
        return Decision::plan(Plan::Refuse(Refusal::AdoptionNotAllowed { id: remote.id }));
    }
    let drift = desired::drift(desired, &remote);
    let message = drift_message(&drift);
    let newly_drifted = !drift.is_empty() && last_drift != Some(message.as_str());
    let mut d = Decision::plan(Plan::Observe { remote: remote.clone(), release, drift, newly_drifted });
    if release {
        let note = format!("now only observing environment {:?} ({}): released it", remote.name, remote.id);
        d = d.and(false, "Released", note);
    }
    if newly_drifted {
        d = d.and(true, "Drifted", message);
    }
    d
}

fn remove(located: Located, me: &Owner, removal: &Removal) -> Decision {
    let Located::Found { remote, route } = located else { return Decision::plan(Plan::Leave) };
    let marker = Marker::read(&remote.settings);
    if !ownership::may_delete(marker.as_ref(), me) {
        // Found by name, after a create whose answer may have been lost: only another
        // environment of that name, nothing this resource ever had.
        if route == Route::Name {
            return Decision::plan(Plan::Leave);
        }
        let holder = marker.map_or_else(|| "no owner".to_owned(), |m| m.owner.seen_from(me));
        let note = format!(
            "left environment {:?} ({}) in the control plane: its owner marker names {holder}, not this resource",
            remote.name, remote.id
        );
        return Decision::plan(Plan::Leave).and(true, "LeftRemote", note);
    }
    let (name, id) = (remote.name.clone(), remote.id.clone());
    if removal.paused {
        let note = format!(
            "left environment {name:?} ({id}) as it is: the resource is paused, so nothing was written to the control plane"
        );
        return Decision::plan(Plan::Leave).and(false, "Orphaned", note);
    }
    if removal.crd_going {
        let note = format!(
            "the Environment CustomResourceDefinition is being deleted: released environment {name:?} ({id}) \
             instead of deleting it; re-install the CRD and apply this resource again to manage it again"
        );
        return Decision::plan(Plan::Release { remote }).and(true, "Orphaned", note);
    }
    match removal.policy {
        DeletionPolicy::Orphan => {
            let note = format!(
                "released environment {name:?} ({id}) and left it in the control plane (deletion policy Orphan)"
            );
            Decision::plan(Plan::Release { remote }).and(false, "Orphaned", note)
        }
        DeletionPolicy::Delete => {
            Decision::plan(Plan::Delete { remote }).and(false, "Deleted", format!("deleted environment {id}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::desired::marking;
    use crate::resource::{Environment, EnvironmentSpec};
    use serde_json::json;

    const ID: &str = "5da3f05e-0000-4000-8000-000000000001";

    fn me() -> Owner {
        Owner {
            cluster: "c1".into(),
            uid: "u1".into(),
            namespace: "ns".into(),
            namespace_uid: "nsu".into(),
            name: "prod".into(),
        }
    }

    fn other(cluster: &str) -> Owner {
        Owner {
            cluster: cluster.into(),
            uid: "u2".into(),
            namespace: "ns2".into(),
            namespace_uid: "nsu2".into(),
            name: "else".into(),
        }
    }

    fn place(org: &str) -> Place {
        Place { organization: Some(org.into()), control_plane: "https://cp.test".into() }
    }

    fn desired() -> EnvironmentBody {
        let mut env = Environment::new(
            "prod",
            EnvironmentSpec { description: Some("declared".into()), ..Default::default() },
        );
        env.metadata.namespace = Some("ns".into());
        env.metadata.uid = Some("u1".into());
        desired::desired(&env, &me(), Default::default())
    }

    /// The environment as `desired()` would be created, then marked by `marker` (None: unmarked).
    fn remote(marker: Option<Marker>) -> RemoteEnvironment {
        let d = desired();
        let mut r: RemoteEnvironment = serde_json::from_value(json!({
            "id": ID, "name": d.name, "display_name": d.display_name, "description": d.description,
            "status": "ready", "execution_environment": d.execution_environment,
        }))
        .unwrap();
        if let Some(m) = marker {
            r.settings = marking(&r, &m).body()["settings"].as_object().unwrap().clone();
        }
        r
    }

    fn mine() -> Option<Marker> {
        Some(Marker::held_by(&me()))
    }

    fn released(owner: Owner) -> Option<Marker> {
        Some(Marker { owner, released: true })
    }

    fn found(remote: RemoteEnvironment, route: Route) -> Located {
        Located::Found { remote, route }
    }

    fn manage(applied_to: Option<&str>) -> Goal {
        Goal::Manage { desired: desired(), applied_to: applied_to.map(str::to_owned) }
    }

    fn observe(last_drift: Option<&str>) -> Goal {
        Goal::Observe { desired: desired(), last_drift: last_drift.map(str::to_owned) }
    }

    fn removal(policy: DeletionPolicy) -> Removal {
        Removal { policy, paused: false, crd_going: false, orphan_asked: false, observed: false }
    }

    fn decide_with(goal: Goal, located: Located, liveness: Liveness, allow_adoption: bool) -> Decision {
        let (take_over, recorded) = (None, Some(place("acme")));
        decide(Situation {
            goal,
            me: me(),
            located,
            liveness,
            allow_adoption,
            take_over,
            place: place("acme"),
            recorded,
        })
    }

    fn reasons(d: &Decision) -> Vec<(&'static str, bool)> {
        d.events.iter().map(|n| (n.reason, n.warning)).collect()
    }

    fn refused(d: &Decision) -> Refusal {
        match &d.plan {
            Plan::Refuse(r) => r.clone(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn cause(d: &Decision) -> Cause {
        match &d.plan {
            Plan::Update { cause, .. } => cause.clone(),
            other => panic!("expected an update, got {other:?}"),
        }
    }

    #[test]
    fn managing_without_an_environment_creates_it_or_says_why_not() {
        let d = decide_with(manage(None), Located::NotSought, Liveness::Live, false);
        assert_eq!((d.plan.clone(), reasons(&d)), (Plan::Create, vec![]));
        let gone = Located::Missing { route: Route::Status, id: Some(ID.into()) };
        let d = decide_with(manage(Some(ID)), gone, Liveness::Live, false);
        assert_eq!((d.plan.clone(), reasons(&d)), (Plan::Create, vec![("Recreating", true)]));
        assert!(d.events[0].message.contains(ID) && d.events[0].message.contains("no longer exists"));
        let asked = Located::Missing { route: Route::Annotation, id: Some(ID.into()) };
        let d = decide_with(manage(None), asked, Liveness::Live, true);
        assert_eq!(refused(&d), Refusal::AdoptMissing { id: ID.into() });
        let raced = Located::Missing { route: Route::Name, id: None };
        let d = decide_with(manage(None), raced, Liveness::Live, true);
        assert_eq!(refused(&d), Refusal::CreateRaced { name: "prod".into() });
        assert!(d.events.is_empty());
    }

    #[test]
    fn an_environment_of_its_own_is_left_in_sync_or_corrected_and_the_cause_said() {
        let d = decide_with(manage(Some(ID)), found(remote(mine()), Route::Status), Liveness::Live, false);
        assert_eq!(d.plan, Plan::InSync { remote: remote(mine()) });
        assert!(d.events.is_empty());

        let mut edited = remote(mine());
        edited.description = Some("by hand".into());
        let d = decide_with(manage(Some(ID)), found(edited.clone(), Route::Status), Liveness::Live, false);
        assert_eq!(cause(&d), Cause::Drift);
        assert_eq!(reasons(&d), [("DriftCorrected", false)]);
        assert_eq!(d.events[0].message, "corrected fields changed outside Kubernetes: description");
        let Plan::Update { changes, remote: r, .. } = &d.plan else { unreachable!() };
        assert_eq!((changes.names(), r), ("description".to_owned(), &edited));

        for applied_to in [None, Some("another-id")] {
            let d =
                decide_with(manage(applied_to), found(edited.clone(), Route::Status), Liveness::Live, false);
            assert_eq!(cause(&d), Cause::Spec, "{applied_to:?}");
            assert_eq!(reasons(&d), [("Updated", false)]);
            assert_eq!(d.events[0].message, "updated description");
        }

        // Its marker lost (or written by an older version): put back, and nothing said.
        let d = decide_with(manage(Some(ID)), found(remote(None), Route::Status), Liveness::Live, false);
        assert_eq!(cause(&d), Cause::Marker);
        assert!(d.events.is_empty());
    }

    #[test]
    fn taking_an_environment_needs_the_ownership_rules_and_for_adoption_the_connections_leave() {
        let adopted = |d: &Decision| matches!(cause(d), Cause::Claim(Claim::Adopted { .. }));
        // No marker, by annotation.
        let d = decide_with(manage(None), found(remote(None), Route::Annotation), Liveness::Live, true);
        assert!(adopted(&d));
        assert_eq!(reasons(&d), [("Adopted", false)]);
        assert_eq!(
            d.events[0].message,
            format!("adopted environment \"prod\" ({ID}); the spec is now enforced on it")
        );
        let Plan::Update { changes, .. } = &d.plan else { unreachable!() };
        assert_eq!(changes.names(), "settings", "the marker, and nothing else differs");
        let d = decide_with(manage(None), found(remote(None), Route::Annotation), Liveness::Live, false);
        assert_eq!(refused(&d), Refusal::AdoptionNotAllowed { id: ID.into() });

        // The same namespace and name, released: taken back, whatever the connection allows.
        let earlier = Owner { uid: "u0".into(), ..me() };
        let d =
            decide_with(manage(None), found(remote(released(earlier)), Route::Name), Liveness::Live, false);
        assert_eq!(cause(&d), Cause::Claim(Claim::Reclaimed));
        assert_eq!(reasons(&d), [("Reclaimed", false)]);
        assert!(d.events[0].message.starts_with("took back environment \"prod\""));

        // Adopted from someone: the Event says from whom, and how it let go.
        let same_namespace = Owner { namespace: "ns".into(), namespace_uid: "nsu".into(), ..other("c1") };
        let rows = [
            (released(other("c1")), Liveness::Live, " (released by another resource of this cluster)"),
            (released(same_namespace), Liveness::Live, " (released by Environment else)"),
            (
                Some(Marker::held_by(&other("c1"))),
                Liveness::Gone,
                " (it was managed by another resource of this cluster, which no longer exists)",
            ),
            (released(other("c2")), Liveness::Live, " (released by a resource of cluster c2)"),
        ];
        for (marker, liveness, says) in rows {
            let d = decide_with(manage(None), found(remote(marker), Route::Annotation), liveness, true);
            assert!(adopted(&d), "{says}");
            assert_eq!(
                d.events[0].message,
                format!("adopted environment \"prod\" ({ID}){says}; the spec is now enforced on it")
            );
        }
        // Another cluster's, only with kubiya.ai/take-over-from naming it.
        let theirs = Some(Marker::held_by(&other("c2")));
        let d =
            decide_with(manage(None), found(remote(theirs.clone()), Route::Annotation), Liveness::Live, true);
        assert_eq!(
            refused(&d),
            Refusal::OwnedElsewhere { which: ID.into(), elsewhere: Elsewhere::OtherCluster(other("c2")) }
        );
        let take = |take_over: &str, allow_adoption| {
            decide(Situation {
                goal: manage(None),
                me: me(),
                located: found(remote(theirs.clone()), Route::Annotation),
                liveness: Liveness::Live,
                allow_adoption,
                take_over: Some(take_over.into()),
                place: place("acme"),
                recorded: None,
            })
        };
        let d = take("c2", true);
        assert!(adopted(&d));
        assert_eq!(
            d.events[0].message,
            format!(
                "adopted environment \"prod\" ({ID}) (taken over from cluster c2, whose resource no \
                 longer writes to it); the spec is now enforced on it"
            )
        );
        assert_eq!(refused(&take("c2", false)), Refusal::AdoptionNotAllowed { id: ID.into() });
        assert!(matches!(refused(&take("c3", true)), Refusal::OwnedElsewhere { .. }));
    }

    #[test]
    fn someone_elses_environment_is_a_name_conflict_when_found_by_name_else_owned_elsewhere() {
        let d = decide_with(manage(None), found(remote(None), Route::Name), Liveness::Live, true);
        assert_eq!(
            refused(&d),
            Refusal::NameConflict { name: "prod".into(), id: ID.into(), elsewhere: Elsewhere::Foreign }
        );
        let live = Some(Marker::held_by(&other("c1")));
        for route in [Route::Status, Route::Annotation] {
            let d = decide_with(manage(Some(ID)), found(remote(live.clone()), route), Liveness::Live, true);
            assert_eq!(
                refused(&d),
                Refusal::OwnedElsewhere { which: ID.into(), elsewhere: Elsewhere::LiveOwner(other("c1")) }
            );
            assert!(d.events.is_empty());
        }
    }

    #[test]
    fn observing_reads_releases_what_was_its_own_and_reports_drift_once() {
        for located in [Located::NotSought, Located::Missing { route: Route::Name, id: None }] {
            let d = decide_with(observe(None), located, Liveness::Live, true);
            assert_eq!(refused(&d), Refusal::NothingToObserve { name: "prod".into() });
        }
        let d = decide_with(observe(None), found(remote(mine()), Route::Status), Liveness::Live, false);
        assert_eq!(
            d.plan,
            Plan::Observe { remote: remote(mine()), release: true, drift: vec![], newly_drifted: false }
        );
        assert_eq!(reasons(&d), [("Released", false)]);
        assert_eq!(
            d.events[0].message,
            format!("now only observing environment \"prod\" ({ID}): released it")
        );
        let mine_released = released(me());
        let d = decide_with(
            observe(None),
            found(remote(mine_released.clone()), Route::Status),
            Liveness::Live,
            false,
        );
        assert_eq!(
            d.plan,
            Plan::Observe {
                remote: remote(mine_released),
                release: false,
                drift: vec![],
                newly_drifted: false
            }
        );
        assert!(d.events.is_empty());

        let d = decide_with(observe(None), found(remote(None), Route::Name), Liveness::Live, false);
        assert_eq!(refused(&d), Refusal::AdoptionNotAllowed { id: ID.into() });

        let mut edited = remote(None);
        edited.description = Some("by hand".into());
        let d = decide_with(observe(None), found(edited.clone(), Route::Name), Liveness::Live, true);
        let drift = vec![Field::Description];
        assert_eq!(
            d.plan,
            Plan::Observe {
                remote: edited.clone(),
                release: false,
                drift: drift.clone(),
                newly_drifted: true
            }
        );
        assert_eq!(reasons(&d), [("Drifted", true)]);
        assert_eq!(d.events[0].message, drift_message(&drift));
        let d = decide_with(
            observe(Some(&drift_message(&drift))),
            found(edited.clone(), Route::Name),
            Liveness::Live,
            true,
        );
        assert_eq!(d.plan, Plan::Observe { remote: edited, release: false, drift, newly_drifted: false });
        assert!(d.events.is_empty(), "said once");
    }

    #[test]
    fn a_deletion_deletes_or_releases_only_its_own_and_says_what_it_did() {
        let rm = |r: Removal, located| decide_with(Goal::Remove(r), located, Liveness::Live, false);
        let delete = removal(DeletionPolicy::Delete);
        for located in [Located::NotSought, Located::Missing { route: Route::Status, id: Some(ID.into()) }] {
            let d = rm(delete, located);
            assert_eq!((d.plan.clone(), d.events.len()), (Plan::Leave, 0));
        }
        let d = rm(delete, found(remote(None), Route::Name));
        assert_eq!((d.plan.clone(), d.events.len()), (Plan::Leave, 0), "another environment of the name");
        let theirs = Some(Marker::held_by(&other("c1")));
        let d = rm(delete, found(remote(theirs), Route::Status));
        assert_eq!((d.plan.clone(), reasons(&d)), (Plan::Leave, vec![("LeftRemote", true)]));
        assert!(
            d.events[0]
                .message
                .contains("its owner marker names another resource of this cluster, not this resource")
        );
        let d = rm(delete, found(remote(None), Route::Status));
        assert!(d.events[0].message.contains("its owner marker names no owner"));

        let d = rm(delete, found(remote(mine()), Route::Status));
        assert_eq!(
            (d.plan.clone(), reasons(&d)),
            (Plan::Delete { remote: remote(mine()) }, vec![("Deleted", false)])
        );
        assert_eq!(d.events[0].message, format!("deleted environment {ID}"));
        let d = rm(removal(DeletionPolicy::Orphan), found(remote(mine()), Route::Status));
        assert_eq!(
            (d.plan.clone(), reasons(&d)),
            (Plan::Release { remote: remote(mine()) }, vec![("Orphaned", false)])
        );
        assert!(d.events[0].message.contains("(deletion policy Orphan)"));
        let d = rm(Removal { crd_going: true, ..delete }, found(remote(mine()), Route::Status));
        assert_eq!(
            (d.plan.clone(), reasons(&d)),
            (Plan::Release { remote: remote(mine()) }, vec![("Orphaned", true)])
        );
        assert!(d.events[0].message.contains("CustomResourceDefinition is being deleted"));
        let d =
            rm(Removal { paused: true, orphan_asked: true, ..delete }, found(remote(mine()), Route::Status));
        assert_eq!((d.plan.clone(), reasons(&d)), (Plan::Leave, vec![("Orphaned", false)]));
        assert!(d.events[0].message.contains("the resource is paused"));
        let d = rm(Removal { paused: true, crd_going: true, ..delete }, found(remote(mine()), Route::Status));
        assert_eq!(d.plan, Plan::Leave, "paused wins over the CRD going: nothing written");
    }

    #[test]
    fn a_deletion_starts_by_leaving_what_is_only_observed_and_holding_while_paused() {
        let base = removal(DeletionPolicy::Delete);
        assert_eq!(deletion_start(&base), None);
        let d = deletion_start(&Removal { observed: true, paused: true, ..base }).unwrap();
        assert_eq!((d.plan.clone(), reasons(&d)), (Plan::Leave, vec![("Orphaned", false)]));
        assert!(d.events[0].message.starts_with("observed only"));
        assert_eq!(deletion_start(&Removal { paused: true, ..base }).map(|d| d.plan), Some(Plan::Hold));
        assert_eq!(deletion_start(&Removal { paused: true, crd_going: true, ..base }), None);
        assert_eq!(deletion_start(&Removal { paused: true, orphan_asked: true, ..base }), None);

        assert_eq!(deletion_without_connection(&base, "gone"), None, "waits for the connection");
        for r in [Removal { orphan_asked: true, ..base }, Removal { crd_going: true, ..base }] {
            let d = deletion_without_connection(&r, "no key").unwrap();
            assert_eq!((d.plan.clone(), reasons(&d)), (Plan::Leave, vec![("LeftRemote", true)]));
            assert_eq!(d.events[0].message, "left the remote environment as it is: no key");
        }
    }

    #[test]
    fn only_a_live_resource_asks_whether_the_marked_object_lives() {
        let theirs = found(remote(Some(Marker::held_by(&other("c1")))), Route::Annotation);
        assert_eq!(needs_liveness(&manage(None), &theirs, &me()), Some(other("c1")));
        assert_eq!(needs_liveness(&observe(None), &theirs, &me()), Some(other("c1")));
        assert_eq!(needs_liveness(&Goal::Remove(removal(DeletionPolicy::Delete)), &theirs, &me()), None);
        assert_eq!(needs_liveness(&manage(None), &found(remote(mine()), Route::Status), &me()), None);
        assert_eq!(needs_liveness(&manage(None), &Located::NotSought, &me()), None);
    }

    #[test]
    fn observing_what_a_live_resource_of_another_namespace_manages_is_refused() {
        let theirs = Some(Marker::held_by(&other("c1")));
        for liveness in [Liveness::Live, Liveness::Unknown] {
            let d = decide_with(observe(None), found(remote(theirs.clone()), Route::Name), liveness, true);
            let which = "named \"prod\"".to_owned();
            assert_eq!(
                refused(&d),
                Refusal::OwnedElsewhere { which, elsewhere: Elsewhere::LiveOwner(other("c1")) }
            );
            assert!(refused(&d).loses_ownership(), "its worker Secret goes, if it had one");
        }
        let d =
            decide_with(observe(None), found(remote(theirs.clone()), Route::Status), Liveness::Live, true);
        assert!(
            matches!(refused(&d), Refusal::OwnedElsewhere { which, .. } if which == ID),
            "its own record: the id"
        );
        let d = decide_with(observe(None), found(remote(theirs), Route::Name), Liveness::Gone, true);
        assert!(matches!(d.plan, Plan::Observe { release: false, .. }));
    }

    #[test]
    fn a_connection_that_leads_elsewhere_creates_and_deletes_nothing() {
        let at = |goal: Goal, located: Located, now: Place, recorded: Option<Place>| {
            decide(Situation {
                goal,
                me: me(),
                located,
                liveness: Liveness::Live,
                allow_adoption: true,
                take_over: None,
                place: now,
                recorded,
            })
        };
        let gone = || Located::Missing { route: Route::Status, id: Some(ID.into()) };
        let moved = Refusal::Moved {
            was: "organisation acme at https://cp.test".into(),
            now: "organisation other at https://cp.test".into(),
        };
        let d = at(manage(Some(ID)), gone(), place("other"), Some(place("acme")));
        assert_eq!(refused(&d), moved, "never created again in another organisation");
        let elsewhere = Place { control_plane: "https://else.test".into(), ..place("acme") };
        let d = at(manage(Some(ID)), gone(), elsewhere, Some(place("acme")));
        assert!(
            matches!(refused(&d), Refusal::Moved { now, .. } if now == "organisation acme at https://else.test")
        );
        let keyless = Place { organization: None, ..place("acme") };
        assert!(matches!(
            refused(&at(manage(Some(ID)), gone(), keyless, Some(place("acme")))),
            Refusal::Moved { .. }
        ));
        let d = at(observe(None), found(remote(None), Route::Status), place("other"), Some(place("acme")));
        assert_eq!(refused(&d), moved);
        let delete = Removal {
            policy: DeletionPolicy::Delete,
            paused: false,
            crd_going: false,
            orphan_asked: false,
            observed: false,
        };
        let d = at(
            Goal::Remove(delete),
            found(remote(mine()), Route::Status),
            place("other"),
            Some(place("acme")),
        );
        assert_eq!(refused(&d), moved, "nothing deleted");
        for r in [Removal { orphan_asked: true, ..delete }, Removal { crd_going: true, ..delete }] {
            let d = at(Goal::Remove(r), gone(), place("other"), Some(place("acme")));
            assert_eq!((d.plan.clone(), reasons(&d)), (Plan::Leave, vec![("LeftRemote", true)]));
            assert!(d.events[0].message.contains("organisation other"), "{}", d.events[0].message);
        }
        // Nothing recorded (no environment yet, or an older version's status): nothing to compare.
        let d = at(manage(None), Located::NotSought, place("other"), None);
        assert_eq!(d.plan, Plan::Create);
        let unnamed = Place { organization: None, ..place("acme") };
        let d = at(manage(Some(ID)), found(remote(mine()), Route::Status), place("acme"), Some(unnamed));
        assert!(
            matches!(d.plan, Plan::InSync { .. }),
            "recorded without an organisation: its control plane only"
        );
    }

    #[test]
    fn each_refusal_becomes_its_error() {
        let t = &me();
        let rows: Vec<(Refusal, &str)> = vec![
            (
                Refusal::NameConflict { name: "prod".into(), id: ID.into(), elsewhere: Elsewhere::Foreign },
                "NameConflict",
            ),
            (Refusal::OwnedElsewhere { which: ID.into(), elsewhere: Elsewhere::Foreign }, "OwnedElsewhere"),
            (Refusal::AdoptionNotAllowed { id: ID.into() }, "AdoptionNotAllowed"),
            (Refusal::AdoptMissing { id: ID.into() }, "AdoptionFailed"),
            (Refusal::NothingToObserve { name: "prod".into() }, "NotFound"),
            (Refusal::CreateRaced { name: "prod".into() }, "CreateRaced"),
            (Refusal::Moved { was: "a".into(), now: "b".into() }, "ConnectionChanged"),
        ];
        for (refusal, reason) in rows {
            assert_eq!(refusal.loses_ownership(), reason == "OwnedElsewhere");
            let e = refusal.error(t, "ClusterConnection acme");
            assert_eq!(e.reason(), reason);
        }
        let e = Refusal::AdoptionNotAllowed { id: ID.into() }.error(t, "ClusterConnection acme");
        assert!(e.to_string().starts_with("ClusterConnection acme does not allow adopting"), "{e}");
        let e = Refusal::OwnedElsewhere { which: ID.into(), elsewhere: Elsewhere::Foreign }.error(t, "c");
        assert!(
            e.to_string().contains("kubectl annotate environment/prod -n ns kubiya.ai/environment-id="),
            "{e}"
        );
    }
}
