//! What every kind with a remote object (Environment, WorkerQueue) reads the same way from its
//! metadata: our annotations, and the names and policies they override. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{DELETION_POLICY_ANNOTATION, DeletionPolicy, PAUSED_ANNOTATION, WorkerSecretRef};

/// `spec.name`, else `metadata.name`.
pub fn remote_name<'a>(meta: &'a ObjectMeta, spec_name: Option<&'a str>) -> &'a str {
    spec_name.or(meta.name.as_deref()).unwrap_or_default()
}

/// The value of one of our annotations.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Whether `kubiya.ai/paused: "true"` is set.
pub fn is_paused(meta: &ObjectMeta) -> bool {
    annotation(meta, PAUSED_ANNOTATION) == Some("true")
}

/// The deletion policy in force: the annotation, else the spec's.
pub fn deletion_policy(meta: &ObjectMeta, spec: DeletionPolicy) -> DeletionPolicy {
    match annotation(meta, DELETION_POLICY_ANNOTATION) {
        Some("Orphan") => DeletionPolicy::Orphan,
        Some("Delete") => DeletionPolicy::Delete,
        _ => spec,
    }
}

/// `spec.workerSecret.name`, else `<metadata.name>-worker`.
pub fn worker_secret_name(meta: &ObjectMeta, spec: Option<&WorkerSecretRef>) -> String {
    match spec {
        Some(r) => r.name.clone(),
        None => format!("{}-worker", meta.name.as_deref().unwrap_or_default()),
    }
}
