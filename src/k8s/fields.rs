//! Who wrote which field of an object, from its managedFields: what tells the operator, from an
//! object's metadata alone, whether anyone else changed what it applied (a metadata-only watch
//! never sees the values themselves).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// FNV-1a: a hash that is the same in every build and version, unlike std's: what a name or an
/// annotation derived from content can rely on across upgrades.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Whether the map `field` of the object (`"data"` of a Secret) is as `manager` last applied it:
/// no other writer holds any of it, and `manager`'s apply still holds each of `keys`.
///
/// The API server moves a field to whoever changes it (an update, a forced apply) and drops a
/// removed key from every writer, so an edit by hand shows as another writer's field and a
/// deleted key as one missing from ours. A write that sets a value already there changes
/// nothing, and is no edit.
pub fn applied_untouched(meta: &ObjectMeta, manager: &str, field: &str, keys: &[&str]) -> bool {
    let field = format!("f:{field}");
    let mut ours = None;
    for entry in meta.managed_fields.iter().flatten() {
        let held = entry.fields_v1.as_ref().and_then(|f| f.0.get(&field));
        let is_ours =
            entry.manager.as_deref() == Some(manager) && entry.operation.as_deref() == Some("Apply");
        if is_ours {
            ours = held;
        } else if held.and_then(|h| h.as_object()).is_some_and(|h| !h.is_empty()) {
            return false;
        }
    }
    let ours = ours.and_then(|o| o.as_object());
    keys.iter().all(|k| ours.is_some_and(|o| o.contains_key(&format!("f:{k}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;

    fn entry(manager: &str, operation: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn meta(entries: Vec<ManagedFieldsEntry>) -> ObjectMeta {
        ObjectMeta { managed_fields: Some(entries), ..Default::default() }
    }

    fn applied() -> ManagedFieldsEntry {
        entry("op", "Apply", json!({"f:data": {"f:A": {}, "f:B": {}}, "f:metadata": {"f:labels": {}}}))
    }

    #[test]
    fn only_our_apply_holding_every_key_is_untouched() {
        let keys = ["A", "B"];
        assert!(applied_untouched(&meta(vec![applied()]), "op", "data", &keys));
        // Another writer of other fields is no edit of the data.
        let labels = entry("kubectl-label", "Update", json!({"f:metadata": {"f:labels": {"f:x": {}}}}));
        assert!(applied_untouched(&meta(vec![applied(), labels]), "op", "data", &keys));
        // A key changed by hand is the editor's.
        let edit = entry("kubectl-edit", "Update", json!({"f:data": {"f:B": {}}}));
        let ours_without_b = entry("op", "Apply", json!({"f:data": {"f:A": {}}}));
        assert!(!applied_untouched(&meta(vec![ours_without_b.clone(), edit]), "op", "data", &keys));
        // A key deleted by hand is nobody's.
        assert!(!applied_untouched(&meta(vec![ours_without_b]), "op", "data", &keys));
        // Our own update (not an apply) or another apply is another writer.
        let ours_by_update = entry("op", "Update", json!({"f:data": {"f:A": {}}}));
        assert!(!applied_untouched(&meta(vec![applied(), ours_by_update]), "op", "data", &keys));
        // Never applied by us, or no managedFields at all.
        assert!(!applied_untouched(&meta(vec![]), "op", "data", &keys));
        assert!(!applied_untouched(&ObjectMeta::default(), "op", "data", &keys));
        let theirs = entry("other", "Apply", json!({"f:data": {"f:A": {}, "f:B": {}}}));
        assert!(!applied_untouched(&meta(vec![theirs]), "op", "data", &keys));
        // An empty map held by another writer holds nothing.
        let empty = entry("other", "Update", json!({"f:data": {}}));
        assert!(applied_untouched(&meta(vec![applied(), empty]), "op", "data", &keys));
    }
}
