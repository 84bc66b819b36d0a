//! Events: best effort. A failed publish is logged and never fails a pass.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

/// The Events API takes at most 1 kB of note.
const MAX_NOTE: usize = 1000;

/// Publishes an Event about `obj`.
pub async fn publish<K>(recorder: &Recorder, obj: &K, type_: EventType, reason: &str, mut note: String)
where
    K: Resource<DynamicType = ()>,
{
    crate::truncate_at_char_boundary(&mut note, MAX_NOTE);
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, namespace = obj.meta().namespace.as_deref().unwrap_or_default(), "could not publish event");
    }
}
