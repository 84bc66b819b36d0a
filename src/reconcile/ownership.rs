//! Who may manage a remote environment. Pure: no client.
//!
//! The rule: a remote environment belongs to one resource at a time; it changes hands only when
//! its owner lets it go or no longer exists, or when a human says so.
//!
//! The operator stamps each environment it manages with an owner marker in the remote `settings`:
//! the cluster (`--cluster-id`, by default the `kube-system` namespace's UID), the object's UID,
//! namespace, namespace UID and name, and `released` once its owner let it go (an Orphan
//! deletion, `Full → Observe`, or the Environment CRD being deleted). [`decide`] turns (marker,
//! this object, how the environment was found, whether the marked object still exists, a
//! take-over request) into what this resource may do; the reconcile only gathers those inputs.
//! Consent is explicit and used once: the adoption annotation (`Route::Annotation`) only when it
//! names another id than the one recorded, `kubiya.ai/take-over-from` only when it names another
//! cluster than the one it was last used on.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Key in the remote `settings` under which the owner marker lives.
pub const OWNER_KEY: &str = "kubiya.ai/owner";

/// A Kubernetes object that manages remote environments, as the marker names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The cluster: its `kube-system` namespace's UID. Empty in markers written before clusters
    /// were named, which are treated as coming from an unknown cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    pub uid: String,
    pub namespace: String,
    /// The namespace's UID: a namespace deleted and created again (for someone else, perhaps)
    /// is another one. Empty in markers written before namespaces were named so.
    #[serde(default, rename = "namespaceUid", skip_serializing_if = "String::is_empty")]
    pub namespace_uid: String,
    pub name: String,
}

/// How a marker that names no cluster is named, in messages and in `kubiya.ai/take-over-from`.
pub const UNKNOWN_CLUSTER: &str = "unknown";

impl Owner {
    /// The cluster as messages and `kubiya.ai/take-over-from` name it.
    pub fn cluster_name(&self) -> &str {
        if self.cluster.is_empty() { UNKNOWN_CLUSTER } else { &self.cluster }
    }

    /// This owner as a tenant, `me`, may read of it: its name when it is of the same namespace,
    /// else no more than where it is. (The operator's log has the rest.)
    pub fn seen_from(&self, me: &Owner) -> String {
        if self.cluster != me.cluster {
            format!("a resource of cluster {}", self.cluster_name())
        } else if self.namespace == me.namespace && self.namespace_uid == me.namespace_uid {
            format!("Environment {}", self.name)
        } else {
            "another resource of this cluster".to_owned()
        }
    }

    /// Whether this names the same object as `other`: same UID, in the same cluster (a marker
    /// that names no cluster counts, by UID alone: UIDs are unique).
    fn is(&self, other: &Owner) -> bool {
        self.uid == other.uid && (self.cluster == other.cluster || self.cluster.is_empty())
    }

    /// Whether this names `namespace/name` of the same cluster as `other`, in the same namespace
    /// (its UID, which a marker without one cannot show).
    fn same_name_as(&self, other: &Owner) -> bool {
        self.cluster == other.cluster
            && self.namespace == other.namespace
            && self.name == other.name
            && !self.namespace_uid.is_empty()
            && self.namespace_uid == other.namespace_uid
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Environment {}/{}", self.namespace, self.name)
    }
}

/// The owner marker in a remote environment's `settings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    #[serde(flatten)]
    pub owner: Owner,
    /// Its owner let it go: the same namespace and name takes it back without asking, anyone
    /// else with the adoption annotation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

impl Marker {
    /// The marker in `settings`, if there is a well-formed one (anything else counts as none).
    pub fn read(settings: &Map<String, Value>) -> Option<Marker> {
        serde_json::from_value(settings.get(OWNER_KEY)?.clone())
            .ok()
            .filter(|m: &Marker| !m.owner.uid.is_empty())
    }

    /// The marker of an environment managed by `owner`.
    pub fn held_by(owner: &Owner) -> Marker {
        Marker { owner: owner.clone(), released: false }
    }

    /// As JSON, for `settings`.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `settings` with the marker set to `marker`, everything else kept.
pub fn with_marker(settings: &Map<String, Value>, marker: &Marker) -> Map<String, Value> {
    let mut s = settings.clone();
    s.insert(OWNER_KEY.to_owned(), marker.to_value());
    s
}

/// How the reconcile came to this remote environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// By the id this resource recorded: it managed the environment before.
    Status,
    /// By the `kubiya.ai/environment-id` annotation: a human asks to take it over.
    Annotation,
    /// By its name, after a create answered 409.
    Name,
}

/// Whether the object a marker names (in this cluster) still exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Live,
    Gone,
    /// It could not be read (no permission in its namespace): treated as live.
    Unknown,
}

/// What this resource may do with the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It is this resource's: write to it, delete it.
    Manage,
    /// Take it: write this resource's marker, then manage it.
    Claim(Claim),
    /// Hands off: it belongs to someone else.
    Refuse(Elsewhere),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Taken back by the same namespace and name: its previous holder released it or no longer
    /// exists (delete and apply again, reinstall, restore, a removed finalizer).
    Reclaimed,
    /// Taken over by annotation; `previous` is the marker it carried, if any.
    Adopted { previous: Option<Marker> },
}

/// Why an environment is someone else's. Each case has its own way out (see the error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Elsewhere {
    /// No marker: made outside Kubernetes, or its marker was removed.
    Foreign,
    /// Its owner let it go; taking it needs the annotation.
    Released(Owner),
    /// Managed by an object of this cluster that exists (or could not be read).
    LiveOwner(Owner),
    /// Managed by an object of this cluster that no longer exists, in another namespace or
    /// under another name; taking it needs the annotation.
    GoneOwner(Owner),
    /// Managed from another cluster (or by an operator too old to name clusters).
    OtherCluster(Owner),
}

/// The marked object whose existence [`decide`] needs to know, if any: one of this cluster,
/// under another namespace or name, that has not released the environment.
pub fn needs_liveness<'a>(marker: Option<&'a Marker>, me: &Owner) -> Option<&'a Owner> {
    let m = marker?;
    let o = &m.owner;
    (!m.released && !o.is(me) && o.cluster == me.cluster && !o.same_name_as(me)).then_some(o)
}

/// The decision, for every combination (see the table test below). `take_over`: the cluster
/// that `kubiya.ai/take-over-from` names, unless it was used on it already.
pub fn decide(
    marker: Option<&Marker>,
    me: &Owner,
    route: Route,
    liveness: Liveness,
    take_over: Option<&str>,
) -> Decision {
    let Some(m) = marker else {
        return match route {
            // It was ours and the marker was lost: nobody else claimed it; put it back.
            Route::Status => Decision::Manage,
            Route::Annotation => Decision::Claim(Claim::Adopted { previous: None }),
            Route::Name => Decision::Refuse(Elsewhere::Foreign),
        };
    };
    let o = &m.owner;
    if o.is(me) {
        return if m.released { Decision::Claim(Claim::Reclaimed) } else { Decision::Manage };
    }
    // This namespace and name in this cluster is this object now: whoever held it before is gone.
    if o.same_name_as(me) {
        return Decision::Claim(Claim::Reclaimed);
    }
    let other_cluster = o.cluster != me.cluster;
    let gone = liveness == Liveness::Gone;
    // Another cluster's: only when a human names that cluster.
    let taken_over = other_cluster && take_over == Some(o.cluster_name());
    if taken_over || (route == Route::Annotation && (m.released || (gone && !other_cluster))) {
        return Decision::Claim(Claim::Adopted { previous: Some(m.clone()) });
    }
    Decision::Refuse(if m.released {
        Elsewhere::Released(o.clone())
    } else if other_cluster {
        Elsewhere::OtherCluster(o.clone())
    } else if gone {
        Elsewhere::GoneOwner(o.clone())
    } else {
        Elsewhere::LiveOwner(o.clone())
    })
}

/// Whether `me` may observe (read, and publish the worker token of) the environment: not when a
/// live resource of this cluster in another namespace manages it. (Whether the connection allows
/// taking what is not its own is the caller's to ask.)
pub fn may_observe(marker: Option<&Marker>, me: &Owner, liveness: Liveness) -> Result<(), Elsewhere> {
    let Some(m) = marker else { return Ok(()) };
    let o = &m.owner;
    let elsewhere = !m.released
        && !o.is(me)
        && o.cluster == me.cluster
        && (o.namespace != me.namespace || o.namespace_uid != me.namespace_uid)
        && liveness != Liveness::Gone;
    if elsewhere { Err(Elsewhere::LiveOwner(o.clone())) } else { Ok(()) }
}

/// Whether the marker names `me`, released or not.
pub fn names(marker: Option<&Marker>, me: &Owner) -> bool {
    marker.is_some_and(|m| m.owner.is(me))
}

/// Whether `env`'s remote environment may be deleted by `me`: only if its marker names `me` and
/// was not released.
pub fn may_delete(marker: Option<&Marker>, me: &Owner) -> bool {
    marker.is_some_and(|m| m.owner.is(me) && !m.released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn me() -> Owner {
        Owner {
            cluster: "c1".into(),
            uid: "u1".into(),
            namespace: "ns".into(),
            namespace_uid: "nsu".into(),
            name: "env".into(),
        }
    }

    /// A marker; the namespace `ns` has the UID `nsu` (this test's namespace) unless it is
    /// `ns2`, whose UID is `nsu2`.
    fn marker(cluster: &str, uid: &str, ns: &str, name: &str, released: bool) -> Marker {
        let namespace_uid = if ns == "ns" { "nsu" } else { "nsu2" };
        Marker {
            owner: Owner {
                cluster: cluster.into(),
                uid: uid.into(),
                namespace: ns.into(),
                namespace_uid: namespace_uid.into(),
                name: name.into(),
            },
            released,
        }
    }

    fn in_namespace_uid(mut m: Marker, namespace_uid: &str) -> Marker {
        m.owner.namespace_uid = namespace_uid.into();
        m
    }

    /// Every row of the ownership table: (marker, route, liveness) → decision.
    #[test]
    fn the_ownership_table() {
        use Decision::*;
        use Liveness::*;
        use Route::*;
        let mine = marker("c1", "u1", "ns", "env", false);
        let mine_released = marker("c1", "u1", "ns", "env", true);
        let mine_before_clusters = marker("", "u1", "ns", "env", false);
        let same_name_dead_uid = marker("c1", "u0", "ns", "env", false);
        let same_name_released = marker("c1", "u0", "ns", "env", true);
        let other = marker("c1", "u2", "ns2", "other", false);
        let other_released = marker("c1", "u2", "ns2", "other", true);
        let other_cluster = marker("c2", "u3", "ns", "env", false);
        let old_format_other = marker("", "u4", "ns", "env", false);
        let other_cluster_released = marker("c2", "u3", "ns", "env", true);
        let adopted = |m: &Marker| Claim(super::Claim::Adopted { previous: Some(m.clone()) });
        let reused_namespace = in_namespace_uid(marker("c1", "u0", "ns", "env", true), "old-nsu");
        let before_namespace_uids = in_namespace_uid(marker("c1", "u0", "ns", "env", true), "");
        let rows: Vec<(Option<&Marker>, Route, Liveness, Decision)> = vec![
            // No marker.
            (None, Status, Live, Manage),
            (None, Annotation, Live, Claim(super::Claim::Adopted { previous: None })),
            (None, Name, Live, Refuse(Elsewhere::Foreign)),
            // Its own marker, by any route.
            (Some(&mine), Status, Live, Manage),
            (Some(&mine), Annotation, Live, Manage),
            (Some(&mine), Name, Live, Manage),
            (Some(&mine_before_clusters), Name, Live, Manage),
            (Some(&mine_released), Status, Live, Claim(super::Claim::Reclaimed)),
            (Some(&mine_released), Name, Live, Claim(super::Claim::Reclaimed)),
            // Same namespace and name, another UID: the earlier holder is gone.
            (Some(&same_name_dead_uid), Name, Live, Claim(super::Claim::Reclaimed)),
            (Some(&same_name_dead_uid), Status, Live, Claim(super::Claim::Reclaimed)),
            (Some(&same_name_released), Name, Live, Claim(super::Claim::Reclaimed)),
            (Some(&same_name_released), Annotation, Live, Claim(super::Claim::Reclaimed)),
            // The same namespace and name in a namespace created again (or not named by UID):
            // another namespace's, taken only by annotation.
            (
                Some(&reused_namespace),
                Name,
                Live,
                Refuse(Elsewhere::Released(reused_namespace.owner.clone())),
            ),
            (Some(&reused_namespace), Annotation, Live, adopted(&reused_namespace)),
            (
                Some(&before_namespace_uids),
                Name,
                Live,
                Refuse(Elsewhere::Released(before_namespace_uids.owner.clone())),
            ),
            // Another object of this cluster.
            (Some(&other), Status, Live, Refuse(Elsewhere::LiveOwner(other.owner.clone()))),
            (Some(&other), Name, Live, Refuse(Elsewhere::LiveOwner(other.owner.clone()))),
            (Some(&other), Annotation, Live, Refuse(Elsewhere::LiveOwner(other.owner.clone()))),
            (Some(&other), Annotation, Unknown, Refuse(Elsewhere::LiveOwner(other.owner.clone()))),
            (Some(&other), Name, Unknown, Refuse(Elsewhere::LiveOwner(other.owner.clone()))),
            (Some(&other), Annotation, Gone, adopted(&other)),
            (Some(&other), Status, Gone, Refuse(Elsewhere::GoneOwner(other.owner.clone()))),
            (Some(&other), Name, Gone, Refuse(Elsewhere::GoneOwner(other.owner.clone()))),
            (Some(&other_released), Annotation, Live, adopted(&other_released)),
            (Some(&other_released), Name, Live, Refuse(Elsewhere::Released(other_released.owner.clone()))),
            (Some(&other_released), Status, Live, Refuse(Elsewhere::Released(other_released.owner.clone()))),
            // Another cluster (a marker naming no cluster is one too, unless its UID is ours):
            // never by the id alone (the next table has take-overs).
            (
                Some(&other_cluster),
                Annotation,
                Live,
                Refuse(Elsewhere::OtherCluster(other_cluster.owner.clone())),
            ),
            (
                Some(&other_cluster),
                Annotation,
                Gone,
                Refuse(Elsewhere::OtherCluster(other_cluster.owner.clone())),
            ),
            (
                Some(&other_cluster),
                Status,
                Live,
                Refuse(Elsewhere::OtherCluster(other_cluster.owner.clone())),
            ),
            (Some(&other_cluster), Name, Live, Refuse(Elsewhere::OtherCluster(other_cluster.owner.clone()))),
            (
                Some(&old_format_other),
                Name,
                Live,
                Refuse(Elsewhere::OtherCluster(old_format_other.owner.clone())),
            ),
            (
                Some(&old_format_other),
                Annotation,
                Live,
                Refuse(Elsewhere::OtherCluster(old_format_other.owner.clone())),
            ),
            // Released from another cluster: the id alone takes it.
            (Some(&other_cluster_released), Annotation, Live, adopted(&other_cluster_released)),
            (
                Some(&other_cluster_released),
                Status,
                Live,
                Refuse(Elsewhere::Released(other_cluster_released.owner.clone())),
            ),
        ];
        for (i, (m, route, liveness, want)) in rows.into_iter().enumerate() {
            assert_eq!(
                decide(m, &me(), route, liveness, None),
                want,
                "row {i}: {m:?} {route:?} {liveness:?}"
            );
        }
    }

    /// `kubiya.ai/take-over-from` naming the marker's cluster takes another cluster's environment,
    /// by any route; naming another cluster, or this one's environments, it does nothing.
    #[test]
    fn the_take_over_table() {
        use Decision::*;
        use Route::*;
        let theirs = marker("c2", "u3", "ns", "env", false);
        let legacy = marker("", "u4", "ns", "env", false);
        let local = marker("c1", "u2", "ns2", "other", false);
        let adopted = |m: &Marker| Claim(super::Claim::Adopted { previous: Some(m.clone()) });
        let other = |m: &Marker| Refuse(Elsewhere::OtherCluster(m.owner.clone()));
        let rows: Vec<(&Marker, Route, Option<&str>, Decision)> = vec![
            (&theirs, Annotation, Some("c2"), adopted(&theirs)),
            (&theirs, Status, Some("c2"), adopted(&theirs)),
            (&theirs, Name, Some("c2"), adopted(&theirs)),
            (&theirs, Annotation, Some("c3"), other(&theirs)),
            (&theirs, Annotation, Some("c1"), other(&theirs)),
            (&theirs, Status, None, other(&theirs)),
            (&legacy, Annotation, Some(UNKNOWN_CLUSTER), adopted(&legacy)),
            (&legacy, Annotation, Some(""), other(&legacy)),
            (&local, Annotation, Some("c1"), Refuse(Elsewhere::LiveOwner(local.owner.clone()))),
        ];
        for (i, (m, route, take_over, want)) in rows.into_iter().enumerate() {
            assert_eq!(decide(Some(m), &me(), route, Liveness::Live, take_over), want, "row {i}");
        }
        assert_eq!(decide(None, &me(), Name, Liveness::Live, Some("c2")), Refuse(Elsewhere::Foreign));
    }

    #[test]
    fn observing_is_refused_only_what_a_live_resource_of_another_namespace_manages() {
        let live_elsewhere = marker("c1", "u2", "ns2", "other", false);
        assert_eq!(
            may_observe(Some(&live_elsewhere), &me(), Liveness::Live),
            Err(Elsewhere::LiveOwner(live_elsewhere.owner.clone()))
        );
        assert!(
            may_observe(Some(&live_elsewhere), &me(), Liveness::Unknown).is_err(),
            "unknown counts as live"
        );
        let reused = in_namespace_uid(marker("c1", "u2", "ns", "other", false), "old-nsu");
        assert!(
            may_observe(Some(&reused), &me(), Liveness::Live).is_err(),
            "a namespace of the same name before"
        );
        for (m, liveness) in [
            (None, Liveness::Live),
            (Some(marker("c1", "u1", "ns", "env", false)), Liveness::Live),
            (Some(marker("c1", "u2", "ns", "other", false)), Liveness::Live),
            (Some(marker("c1", "u2", "ns2", "other", true)), Liveness::Live),
            (Some(marker("c1", "u2", "ns2", "other", false)), Liveness::Gone),
            (Some(marker("c2", "u2", "ns2", "other", false)), Liveness::Live),
        ] {
            assert_eq!(may_observe(m.as_ref(), &me(), liveness), Ok(()), "{m:?} {liveness:?}");
        }
    }

    #[test]
    fn an_owner_is_named_to_a_tenant_only_when_it_is_of_the_same_namespace() {
        let same = marker("c1", "u2", "ns", "other", false).owner;
        assert_eq!(same.seen_from(&me()), "Environment other");
        let elsewhere = marker("c1", "u2", "ns2", "other", false).owner;
        assert_eq!(elsewhere.seen_from(&me()), "another resource of this cluster");
        let reused = in_namespace_uid(marker("c1", "u2", "ns", "other", false), "old-nsu").owner;
        assert_eq!(reused.seen_from(&me()), "another resource of this cluster");
        assert_eq!(
            marker("c2", "u2", "ns", "other", false).owner.seen_from(&me()),
            "a resource of cluster c2"
        );
        assert_eq!(
            marker("", "u2", "ns", "other", false).owner.seen_from(&me()),
            "a resource of cluster unknown"
        );
    }

    #[test]
    fn liveness_is_needed_only_for_another_unreleased_object_of_this_cluster() {
        let other = marker("c1", "u2", "ns2", "other", false);
        assert_eq!(needs_liveness(Some(&other), &me()), Some(&other.owner));
        for m in [
            marker("c1", "u1", "ns", "env", false),
            marker("c1", "u0", "ns", "env", false),
            marker("c1", "u2", "ns2", "other", true),
            marker("c2", "u2", "ns2", "other", false),
        ] {
            assert_eq!(needs_liveness(Some(&m), &me()), None, "{m:?}");
        }
        assert_eq!(needs_liveness(None, &me()), None);
    }

    #[test]
    fn only_the_named_unreleased_owner_may_delete() {
        assert!(may_delete(Some(&marker("c1", "u1", "ns", "env", false)), &me()));
        assert!(may_delete(Some(&marker("", "u1", "ns", "env", false)), &me()));
        assert!(!may_delete(Some(&marker("c1", "u1", "ns", "env", true)), &me()));
        assert!(!may_delete(Some(&marker("c1", "u0", "ns", "env", false)), &me()), "same name, other UID");
        assert!(!may_delete(Some(&marker("c2", "u1", "ns", "env", false)), &me()), "same UID, other cluster");
        assert!(!may_delete(None, &me()));
    }

    #[test]
    fn markers_round_trip_and_malformed_ones_count_as_none() {
        let m = marker("c1", "u1", "ns", "env", true);
        let settings = with_marker(&Map::new(), &m);
        assert_eq!(
            settings[OWNER_KEY],
            json!({"cluster": "c1", "uid": "u1", "namespace": "ns", "namespaceUid": "nsu", "name": "env", "released": true})
        );
        assert_eq!(Marker::read(&settings), Some(m));
        let held = with_marker(&Map::new(), &Marker::held_by(&me()));
        assert!(held[OWNER_KEY].get("released").is_none(), "released is written only when true");
        let old: Map<String, Value> =
            serde_json::from_value(json!({OWNER_KEY: {"uid": "u1", "namespace": "ns", "name": "env"}}))
                .unwrap();
        assert_eq!(Marker::read(&old).map(|m| m.owner.cluster), Some(String::new()));
        for bad in [json!("x"), json!({"uid": ""}), json!({"namespace": "ns"}), json!(null)] {
            let s: Map<String, Value> = serde_json::from_value(json!({OWNER_KEY: bad})).unwrap();
            assert_eq!(Marker::read(&s), None, "{bad}");
        }
    }
}
