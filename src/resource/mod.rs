//! The custom resources the operator serves, their annotations and the CRDs they generate.
//!
//! Pure types: no client.

mod environment;
mod guard;

pub use environment::*;
pub use guard::{Guarded, Undecodable};

use kube::CustomResourceExt;

/// The finalizer that guards the remote environment.
pub const FINALIZER: &str = "kubiya.ai/environment";
/// Field manager for everything this operator writes.
pub const MANAGER: &str = "kubiya-operator";

/// Adopts an existing remote environment by id; while it equals `status.environmentId`, it is
/// also a standing consent to take that environment over (see `reconcile::ownership`).
pub const ADOPT_ANNOTATION: &str = "kubiya.ai/environment-id";
/// `"true"` stops every remote write for this resource, deletion included.
pub const PAUSED_ANNOTATION: &str = "kubiya.ai/paused";
/// Any new value asks for a pass now; the value handled is echoed in `status.lastHandledReconcileAt`.
pub const RECONCILE_REQUEST_ANNOTATION: &str = "kubiya.ai/reconcile-requested-at";
/// `Orphan` or `Delete`, overriding `spec.deletionPolicy`: the way out of a deletion the control
/// plane refuses, or of a paused one.
pub const DELETION_POLICY_ANNOTATION: &str = "kubiya.ai/deletion-policy";

/// The CRD as YAML, as shipped in `crds/environment.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&Environment::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/environment.yaml` must be what the types generate.
    #[test]
    fn committed_crd_is_current() {
        let committed = include_str!("../../crds/environment.yaml");
        let generated = crd_yaml().unwrap();
        assert!(committed == generated, "crds/environment.yaml is stale: run `make crd`");
    }
}
