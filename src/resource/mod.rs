//! The custom resources the operator serves, their annotations and the CRDs they generate.
//!
//! Pure types: no client.

mod connection;
mod environment;
mod guard;
mod object;
mod worker_queue;

pub use connection::*;
pub use environment::*;
pub use guard::{Guarded, MAX_SPEC_BYTES, Undecodable, slim};
pub use worker_queue::{
    EnvironmentRef, WorkerQueue, WorkerQueueSpec, WorkerQueueStatus, Workers, WorkersStatus,
};

/// The limits of the WorkerQueue schema.
pub mod queue_limits {
    pub use super::worker_queue::limits::*;
}

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The finalizer that guards the remote environment.
pub const FINALIZER: &str = "kubiya.ai/environment";
/// The finalizer that guards the remote worker queue.
pub const QUEUE_FINALIZER: &str = "kubiya.ai/worker-queue";
/// The finalizer that keeps a connection while Environments use it.
pub const CONNECTION_FINALIZER: &str = "kubiya.ai/connection";
/// Field manager for everything this operator writes.
pub const MANAGER: &str = "kubiya-operator";

/// Adopts an existing remote environment by id (see `reconcile::ownership`). A value equal to
/// `status.environmentId` is not a new request: consent is used once.
pub const ADOPT_ANNOTATION: &str = "kubiya.ai/environment-id";
/// Adopts an existing remote worker queue by id, as [`ADOPT_ANNOTATION`] does environments.
pub const QUEUE_ADOPT_ANNOTATION: &str = "kubiya.ai/worker-queue-id";
/// Takes an environment managed from another cluster, named by its cluster id (what the
/// operator logs at start, and what `OwnedElsewhere` messages say). Used once: a value equal to
/// `status.takenOverFrom` is not a new request.
pub const TAKE_OVER_ANNOTATION: &str = "kubiya.ai/take-over-from";
/// `"true"` stops every remote write for this resource, deletion included.
pub const PAUSED_ANNOTATION: &str = "kubiya.ai/paused";
/// Any new value asks for a pass now; the value handled is echoed in `status.lastHandledReconcileAt`.
pub const RECONCILE_REQUEST_ANNOTATION: &str = "kubiya.ai/reconcile-requested-at";
/// `Orphan` or `Delete`, overriding `spec.deletionPolicy`: the way out of a deletion the control
/// plane refuses, or of a paused one.
pub const DELETION_POLICY_ANNOTATION: &str = "kubiya.ai/deletion-policy";

/// Every CRD the operator serves, with the file it is shipped as in `crds/`.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("environment.yaml", unobserved_at_first(Environment::crd())),
        ("connection.yaml", unobserved_at_first(Connection::crd())),
        ("clusterconnection.yaml", unobserved_at_first(ClusterConnection::crd())),
        ("workerqueue.yaml", unobserved_at_first(WorkerQueue::crd())),
    ]
}

/// `crd` with `status` defaulted to `{observedGeneration: 0}`: the API server then serves a
/// just-created object as not yet observed (generation 1, observed 0), which kstatus reads as
/// InProgress and Argo CD as Progressing, before the operator has written anything. Without it,
/// kstatus reads an object with no status as Current: a `flux ... --wait` or `kubectl wait` on
/// health could pass before the operator even looked (and the operator would have to write a
/// first status only to say so).
fn unobserved_at_first(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON;
    for version in &mut crd.spec.versions {
        let root = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut());
        let Some(status) = root.and_then(|r| r.properties.as_mut()).and_then(|p| p.get_mut("status")) else {
            continue;
        };
        status.default = Some(JSON(serde_json::json!({})));
        if let Some(observed) = status.properties.as_mut().and_then(|p| p.get_mut("observedGeneration")) {
            observed.default = Some(JSON(serde_json::json!(0)));
        }
    }
    crd
}

/// A CRD as YAML, as shipped in `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(crd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` must hold what the types generate.
    #[test]
    fn committed_crds_are_current() {
        let committed = [
            include_str!("../../crds/environment.yaml"),
            include_str!("../../crds/connection.yaml"),
            include_str!("../../crds/clusterconnection.yaml"),
            include_str!("../../crds/workerqueue.yaml"),
        ];
        for ((file, crd), committed) in crds().into_iter().zip(committed) {
            assert!(committed == crd_yaml(&crd).unwrap(), "crds/{file} is stale: run `make crd`");
            let text = serde_json::to_value(&crd).unwrap();
            let status = &text["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
            assert_eq!(status["default"], serde_json::json!({}), "{file}");
            assert_eq!(status["properties"]["observedGeneration"]["default"], 0, "{file}");
        }
    }
}
