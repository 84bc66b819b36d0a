//! The `Environment` custom resource: spec, status and the CRD they generate.
//!
//! Pure types: no client. Validation lives in the schema (lengths, enums, bounds, CEL rules) so
//! that `kubectl apply` of a bad manifest fails before the operator ever sees it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConnectionRef, object};

/// The limits of the Environment schema, in one place: the CRD enforces them and `export` checks
/// remote environments against them.
pub mod limits {
    /// Characters of the control-plane name (`spec.name`, else `metadata.name`), at least and at most.
    pub const NAME_MIN: usize = 2;
    pub const NAME_MAX: usize = 100;
    pub const DISPLAY_NAME: usize = 255;
    pub const DESCRIPTION: usize = 4096;
    /// Tags, and policy ids.
    pub const TAGS: usize = 64;
    /// Env vars, vault secrets and integration ids, each.
    pub const EXECUTION_ITEMS: usize = 256;
    /// What an env var name must match (a shell variable name).
    pub const ENV_VAR_NAME: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
    /// Secrets in `envFrom`.
    pub const ENV_FROM: usize = 16;
    /// Bytes of one env var value taken from a Secret: a Secret holds up to 1 MiB, which is no
    /// value for an environment variable. Characters of one in `envVars`, likewise.
    pub const ENV_VALUE_BYTES: usize = 32 * 1024;
    /// Characters of one tag, policy id, vault secret name or integration id.
    pub const ITEM: usize = 253;
    /// Top-level keys of `settings` and of `mcpServers`: their bytes are bounded by the operator
    /// (`resource::MAX_SPEC_BYTES`), since a free-form field has no size bound in a schema.
    pub const FREE_FORM_KEYS: usize = 256;

    /// Whether `name` matches [`ENV_VAR_NAME`].
    pub fn is_env_var_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }
}

/// Desired state of a Kubiya control-plane environment.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubiya.ai",
    version = "v1alpha1",
    kind = "Environment",
    namespaced,
    status = "EnvironmentStatus",
    shortname = "kenv",
    category = "kubiya",
    doc = "A Kubiya control-plane environment, created, updated and deleted by kubiya-operator.",
    printcolumn(name = "Remote", type_ = "string", description = "Name in the control plane", json_path = ".status.remoteName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Policy", type_ = "string", description = "Full: managed; Observe: only read", json_path = ".spec.managementPolicy", priority = 1),
    printcolumn(name = "Environment ID", type_ = "string", json_path = ".status.environmentId", priority = 1),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".status.phase",
    validation = Rule::new("has(self.spec.name) || (size(self.metadata.name) >= 2 && size(self.metadata.name) <= 100)")
        .message("metadata.name is used as the control-plane name and must be 2..100 characters; set spec.name"),
    validation = Rule::new("has(self.spec.connectionRef) == has(oldSelf.spec.connectionRef) && (!has(self.spec.connectionRef) || self.spec.connectionRef == oldSelf.spec.connectionRef)")
        .message("spec.connectionRef cannot change: an environment cannot move between organisations; create another Environment instead"),
)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// Name in the control plane (unique per organization). Defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = limits::NAME_MIN, max = limits::NAME_MAX))]
    pub name: Option<String>,

    /// Human-readable name. The control plane defaults it to the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::DISPLAY_NAME))]
    pub display_name: Option<String>,

    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::DESCRIPTION))]
    pub description: Option<String>,

    /// Tags, as a set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(max = limits::TAGS), inner(length(max = limits::ITEM)))]
    pub tags: Vec<String>,

    /// Scheduling priority, as documented by the Kubiya SDK. Today's control plane ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub priority: Option<i32>,

    /// Policy ids, as documented by the Kubiya SDK. Today's control plane ignores them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(max = limits::TAGS), inner(length(max = limits::ITEM)))]
    pub policy_ids: Vec<String>,

    /// Free-form settings, passed through to the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,

    /// What workers of this environment run with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_environment: Option<ExecutionEnvironment>,

    /// Enable or disable the environment in the control plane (its `active` / `inactive`
    /// status). Unset: leave it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RemoteState>,

    /// What happens to the remote environment when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// `Full`: the operator creates, corrects and deletes the remote environment. `Observe`: it
    /// only reads it: status mirrors it, differences from the spec are reported (condition
    /// Synced), nothing is ever written to it.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// The Secret that receives the worker registration command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_secret: Option<WorkerSecretRef>,

    /// The connection (control plane and API key) to manage it with. Unset: the `Connection`
    /// named `default` in this namespace, else the operator's own key. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_ref: Option<ConnectionRef>,
}

/// Settings of the workers' execution environment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.env) || !has(self.envVars) || self.env.all(e, !(e.name in self.envVars))")
        .message("a variable is named both in envVars and in env: keep one")
)]
pub struct ExecutionEnvironment {
    /// Environment variables for workers, with their values; names must be valid shell variable
    /// names. Values kept in Git belong here; those that are secret belong in `env` or `envFrom`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(
        extend("maxProperties" = limits::EXECUTION_ITEMS),
        extend("additionalProperties" = {"type": "string", "maxLength": limits::ENV_VALUE_BYTES})
    )]
    #[x_kube(validation = Rule::new(format!("self.all(k, k.matches('{}'))", limits::ENV_VAR_NAME))
        .message("envVars names must match [A-Za-z_][A-Za-z0-9_]*"))]
    pub env_vars: BTreeMap<String, String>,

    /// Environment variables whose values come from a key of a Secret in this namespace, as a
    /// Pod's `env[].valueFrom.secretKeyRef`: read at each pass and when the Secret changes, sent
    /// to the control plane, never written to status, Events or logs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]),
        length(max = limits::EXECUTION_ITEMS)
    )]
    pub env: Vec<EnvVar>,

    /// Every key of these Secrets of this namespace as an environment variable (with `prefix`
    /// before its name), as a Pod's `envFrom`. A later Secret wins over an earlier one, and
    /// `envVars` and `env` over all; keys that are no shell variable name are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::ENV_FROM))]
    pub env_from: Vec<EnvFromSource>,

    /// Names of secrets in the Kubiya vault to expose to workers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        extend("x-kubernetes-list-type" = "set"),
        length(max = limits::EXECUTION_ITEMS),
        inner(length(max = limits::ITEM))
    )]
    pub secrets: Vec<String>,

    /// Integration ids to attach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        extend("x-kubernetes-list-type" = "set"),
        length(max = limits::EXECUTION_ITEMS),
        inner(length(max = limits::ITEM))
    )]
    pub integration_ids: Vec<String>,

    /// MCP server definitions, passed through as-is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub mcp_servers: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An environment variable whose value is a key of a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// The variable's name: a shell variable name.
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", limits::ENV_VAR_NAME))
        .message("env names must match [A-Za-z_][A-Za-z0-9_]*"))]
    #[schemars(length(max = 253))]
    pub name: String,
    /// Where its value comes from.
    pub value_from: EnvVarSource,
}

/// Where an environment variable's value comes from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a Secret in this namespace.
    pub secret_key_ref: SecretKeySelector,
}

/// A key of a Secret in the resource's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretKeySelector {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Every key of a Secret as an environment variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    /// Put before each key to make the variable's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", limits::ENV_VAR_NAME))
        .message("envFrom prefixes must match [A-Za-z_][A-Za-z0-9_]*"))]
    #[schemars(length(max = 253))]
    pub prefix: Option<String>,
    /// The Secret, in this namespace.
    pub secret_ref: WorkerSecretRef,
}

/// What deleting the resource does to the remote environment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete the remote environment.
    #[default]
    Delete,
    /// Leave the remote environment in the control plane.
    Orphan,
}

/// How much of the remote environment the operator manages.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ManagementPolicy {
    /// Create it, keep it as the spec says, delete it by the deletion policy.
    #[default]
    Full,
    /// Only read it: never create, update or delete it, write no owner marker.
    Observe,
}

/// The enabled state of a remote environment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteState {
    /// Enabled: remote status `active`.
    Active,
    /// Disabled: remote status `inactive`.
    Inactive,
}

impl RemoteState {
    /// The control plane's status value.
    pub fn remote_status(self) -> &'static str {
        match self {
            RemoteState::Active => "active",
            RemoteState::Inactive => "inactive",
        }
    }
}

/// Reference to a Secret in the resource's namespace (the worker Secret, or one of `envFrom`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct WorkerSecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Observed state, written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// Summary of where the environment is: Pending, Provisioning, Ready, Inactive, Error or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The control plane's id of the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
    /// The connection the environment is managed through (`Connection/<name>`,
    /// `ClusterConnection/<name>`, or `operator` for the operator's own key); it stays the same
    /// for the environment's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The organisation the environment lives in (the connection's key names it), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The control plane the environment lives on (scheme, host and port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<String>,
    /// The environment's name in the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_name: Option<String>,
    /// The control plane's raw status (pending, provisioning, ready, active, inactive, error, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_status: Option<String>,
    /// Whether workers can register with the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_register: Option<bool>,
    /// The Secret holding the worker registration command, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_secret_name: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed as the result of a sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_time: Option<Time>,
    /// The `kubiya.ai/take-over-from` value this resource took the environment with: the same
    /// value again is not a new request. Cleared when the annotation goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_from: Option<String>,
    /// The last `kubiya.ai/reconcile-requested-at` annotation value a pass handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Human-readable explanation of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Ready, Reconciling and Stalled, in the kstatus convention; Synced under managementPolicy
    /// Observe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The phase shown by `kubectl get` (`-o wide` for a WorkerQueue).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Provisioning,
    Ready,
    /// Disabled in the control plane (remote status `inactive` or `archived`).
    Inactive,
    Error,
    Deleting,
}

impl Phase {
    pub const ALL: [Phase; 6] =
        [Phase::Pending, Phase::Provisioning, Phase::Ready, Phase::Inactive, Phase::Error, Phase::Deleting];

    /// The name as serialized, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Ready => "Ready",
            Phase::Inactive => "Inactive",
            Phase::Error => "Error",
            Phase::Deleting => "Deleting",
        }
    }
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": limits::FREE_FORM_KEYS,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

impl ExecutionEnvironment {
    /// Whether it uses values of the Secret `name` (asked for every Secret change the watch
    /// sees, of every Environment: allocates nothing).
    pub fn uses_secret(&self, name: &str) -> bool {
        self.env.iter().any(|e| e.value_from.secret_key_ref.name == name)
            || self.env_from.iter().any(|f| f.secret_ref.name == name)
    }

    /// The names of the Secrets whose values it uses, sorted, each once.
    pub fn secret_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .env
            .iter()
            .map(|e| e.value_from.secret_key_ref.name.as_str())
            .chain(self.env_from.iter().map(|f| f.secret_ref.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl Environment {
    /// Whether its spec uses values of the Secret `name` of its namespace.
    pub fn uses_secret(&self, name: &str) -> bool {
        self.spec.execution_environment.as_ref().is_some_and(|e| e.uses_secret(name))
    }

    /// The control-plane name: `spec.name`, else `metadata.name`.
    pub fn remote_name(&self) -> &str {
        object::remote_name(&self.metadata, self.spec.name.as_deref())
    }

    /// The value of one of our annotations.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        object::annotation(&self.metadata, key)
    }

    /// Whether `kubiya.ai/paused: "true"` is set.
    pub fn is_paused(&self) -> bool {
        object::is_paused(&self.metadata)
    }

    /// The deletion policy in force: the annotation, else the spec.
    pub fn deletion_policy(&self) -> DeletionPolicy {
        object::deletion_policy(&self.metadata, self.spec.deletion_policy)
    }

    /// The worker Secret's name: `spec.workerSecret.name`, else `<metadata.name>-worker`.
    pub fn worker_secret_name(&self) -> String {
        object::worker_secret_name(&self.metadata, self.spec.worker_secret.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_rule_of_the_crd_says_the_same_as_the_limits() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&Environment::crd()).unwrap();
        let rule = format!(
            "size(self.metadata.name) >= {} && size(self.metadata.name) <= {}",
            limits::NAME_MIN,
            limits::NAME_MAX
        );
        assert!(crd.contains(&rule), "the CEL rule on metadata.name drifted from limits::NAME_MIN/NAME_MAX");
        for (name, ok) in [("LOG_LEVEL", true), ("_x1", true), ("1X", false), ("A-B", false), ("", false)] {
            assert_eq!(limits::is_env_var_name(name), ok, "{name:?}");
        }
    }

    #[test]
    fn remote_name_defaults_to_metadata_name() {
        let mut env = Environment::new("web", EnvironmentSpec::default());
        assert_eq!(env.remote_name(), "web");
        assert_eq!(env.worker_secret_name(), "web-worker");
        env.spec.name = Some("WEB".into());
        env.spec.worker_secret = Some(WorkerSecretRef { name: "w".into() });
        assert_eq!(env.remote_name(), "WEB");
        assert_eq!(env.worker_secret_name(), "w");
    }
}
