//! What the remote worker queue should look like, and where it differs from that. Pure: no
//! client.

use serde_json::{Map, Value, json};

use crate::controlplane::{QueueBody, RemoteQueue};
use crate::reconcile::desired::{Changes, Wire, set, without_marker};
use crate::reconcile::ownership::{Marker, Owner, with_marker};
use crate::resource::WorkerQueue;

/// A field of a remote queue that the operator compares and writes: the one list behind the
/// diff, the Events that name what changed, and the metrics' `field` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Name,
    DisplayName,
    Description,
    MaxWorkers,
    HeartbeatInterval,
    Tags,
    Settings,
}

impl Wire for Field {
    const SETTINGS: Field = Field::Settings;

    fn wire(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::DisplayName => "display_name",
            Field::Description => "description",
            Field::MaxWorkers => "max_workers",
            Field::HeartbeatInterval => "heartbeat_interval",
            Field::Tags => "tags",
            Field::Settings => "settings",
        }
    }
}

/// The queue the spec asks for, marked as `owner`'s: the create body, and the reference for
/// updates (Observe compares it with the marker left out).
pub fn desired(queue: &WorkerQueue, owner: &Owner) -> QueueBody {
    let spec = &queue.spec;
    let name = queue.remote_name().to_owned();
    QueueBody {
        // The server defaults display_name to the name; so do we, so that removing displayName
        // from the spec resets it.
        display_name: Some(spec.display_name.clone().unwrap_or_else(|| name.clone())),
        name,
        description: spec.description.clone(),
        max_workers: spec.max_workers.map(i64::from),
        heartbeat_interval: i64::from(spec.heartbeat_interval),
        tags: set(&spec.tags),
        settings: with_marker(&spec.settings.clone().unwrap_or_default(), &Marker::held_by(owner)),
    }
}

/// The fields of `desired` that `remote` does not match, with their desired values.
pub fn diff(desired: &QueueBody, remote: &RemoteQueue) -> Changes<Field> {
    let mut c = Changes::default();
    if desired.name != remote.name {
        c.set(Field::Name, json!(desired.name));
    }
    if desired.display_name != remote.display_name {
        c.set(Field::DisplayName, json!(desired.display_name));
    }
    if desired.description != remote.description {
        c.set(Field::Description, json!(desired.description));
    }
    // An explicit null sets it unlimited (the server's PATCH keeps what is sent, nulls too).
    if desired.max_workers != remote.max_workers {
        c.set(Field::MaxWorkers, json!(desired.max_workers));
    }
    if Some(desired.heartbeat_interval) != remote.heartbeat_interval {
        c.set(Field::HeartbeatInterval, json!(desired.heartbeat_interval));
    }
    if desired.tags != set(&remote.tags) {
        c.set(Field::Tags, json!(desired.tags));
    }
    if desired.settings != remote.settings {
        c.set(Field::Settings, Value::Object(desired.settings.clone()));
    }
    c
}

/// The fields where `remote` differs from `desired`, owner markers aside: what Observe reports.
pub fn drift(desired: &QueueBody, remote: &RemoteQueue) -> Vec<Field> {
    let mut desired = desired.clone();
    desired.settings = without_marker(&desired.settings);
    let mut seen = remote.clone();
    seen.settings = without_marker(&seen.settings);
    diff(&desired, &seen).fields().collect()
}

/// The settings of `remote` with its owner marker released: what an Orphan deletion writes.
pub fn released(settings: &Map<String, Value>) -> Option<Changes<Field>> {
    let mut marker = Marker::read(settings)?;
    marker.released = true;
    Some(crate::reconcile::desired::marking_settings(settings, &marker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{EnvironmentRef, WorkerQueueSpec};
    use serde_json::json;

    fn owner() -> Owner {
        Owner {
            cluster: "c".into(),
            uid: "u".into(),
            namespace: "ns".into(),
            namespace_uid: "nsu".into(),
            name: "gpu".into(),
        }
    }

    fn queue() -> WorkerQueue {
        let mut q = WorkerQueue::new(
            "gpu",
            WorkerQueueSpec {
                environment_ref: EnvironmentRef { name: "prod".into() },
                heartbeat_interval: 60,
                tags: vec!["b".into(), "a".into(), "a".into()],
                ..Default::default()
            },
        );
        q.metadata.namespace = Some("ns".into());
        q
    }

    /// The queue as the server answers a create of `body`.
    fn created(body: &QueueBody) -> RemoteQueue {
        serde_json::from_value(json!({
            "id": "q1", "environment_id": "e1", "name": body.name, "display_name": body.display_name,
            "description": body.description, "status": "active", "max_workers": body.max_workers,
            "heartbeat_interval": body.heartbeat_interval, "tags": body.tags, "settings": body.settings,
            "active_workers": 0,
        }))
        .unwrap()
    }

    fn keys(c: &Changes<Field>) -> Vec<&'static str> {
        c.fields().map(Field::wire).collect()
    }

    #[test]
    fn the_desired_queue_is_canonical_marked_and_named_after_the_object() {
        let d = desired(&queue(), &owner());
        assert_eq!((d.name.as_str(), d.display_name.as_deref()), ("gpu", Some("gpu")));
        assert_eq!(d.tags, ["a", "b"]);
        assert_eq!((d.max_workers, d.heartbeat_interval), (None, 60));
        assert_eq!(Marker::read(&d.settings), Some(Marker::held_by(&owner())));
        assert!(diff(&d, &created(&d)).is_empty(), "a fresh queue is in sync");
    }

    #[test]
    fn every_compared_field_is_patched_on_its_own_and_unlimited_is_an_explicit_null() {
        let d = desired(&queue(), &owner());
        let base = created(&d);
        let cases: Vec<(&str, RemoteQueue)> = vec![
            ("name", RemoteQueue { name: "other".into(), ..base.clone() }),
            ("display_name", RemoteQueue { display_name: Some("G".into()), ..base.clone() }),
            ("description", RemoteQueue { description: Some("x".into()), ..base.clone() }),
            ("max_workers", RemoteQueue { max_workers: Some(3), ..base.clone() }),
            ("heartbeat_interval", RemoteQueue { heartbeat_interval: Some(30), ..base.clone() }),
            ("tags", RemoteQueue { tags: vec!["z".into()], ..base.clone() }),
            ("settings", RemoteQueue { settings: Map::new(), ..base.clone() }),
        ];
        for (field, remote) in cases {
            let c = diff(&d, &remote);
            assert_eq!(keys(&c), [field], "{field}");
        }
        let c = diff(&d, &RemoteQueue { max_workers: Some(3), ..base.clone() });
        assert_eq!(c.body()["max_workers"], Value::Null, "unlimited is sent as null");
        let reordered = RemoteQueue { tags: vec!["b".into(), "a".into()], ..base };
        assert!(diff(&d, &reordered).is_empty(), "tags are a set");
    }

    #[test]
    fn drift_ignores_the_marker_and_a_release_marks_it_released() {
        let d = desired(&queue(), &owner());
        let mut unmarked = created(&d);
        unmarked.settings = Map::new();
        assert!(drift(&d, &unmarked).is_empty());
        unmarked.description = Some("changed".into());
        assert_eq!(drift(&d, &unmarked), [Field::Description]);
        let release = released(&d.settings).unwrap();
        let marker = Marker::read(release.body()["settings"].as_object().unwrap()).unwrap();
        assert!(marker.released && marker.owner == owner());
        assert!(released(&Map::new()).is_none(), "no marker, nothing to release");
    }
}
