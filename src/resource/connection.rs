//! `Connection` and `ClusterConnection`: a control plane and the Secret holding its API key, for
//! the Environments of one namespace or of the namespaces a selector picks. Pure types: no client.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kubiya control plane and organization, for the Environments of this namespace.
// kube's `printcolumn(…)` attributes repeat `type_ = "string"`, which clippy takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubiya.ai",
    version = "v1alpha1",
    kind = "Connection",
    namespaced,
    status = "ConnectionStatus",
    shortname = "kconn",
    category = "kubiya",
    doc = "A Kubiya control plane and the API key of one organization, for the Environments of this namespace.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Organization", type_ = "string", json_path = ".status.organization"),
    printcolumn(name = "Environments", type_ = "integer", json_path = ".status.environments"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.baseUrl", priority = 1),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// Base URL of the control plane. Default: the operator's `--control-plane-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+(/[^?#]*)?$')")
        .message("baseUrl must be an http(s) URL without query or fragment"))]
    #[schemars(length(max = 2048))]
    pub base_url: Option<String>,

    /// The key of a Secret in this namespace that holds the API key.
    pub api_key_secret_ref: SecretKeyRef,

    /// Control-plane requests in flight at once through this connection (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_requests: Option<i32>,
}

/// A Kubiya control plane and organization, for the Environments of the namespaces it selects.
#[allow(clippy::duplicated_attributes)] // as above
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubiya.ai",
    version = "v1alpha1",
    kind = "ClusterConnection",
    status = "ConnectionStatus",
    shortname = "kcconn",
    category = "kubiya",
    doc = "A Kubiya control plane and the API key of one organization, for the Environments of the namespaces it selects.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Organization", type_ = "string", json_path = ".status.organization"),
    printcolumn(name = "Environments", type_ = "integer", json_path = ".status.environments"),
    printcolumn(name = "Adoption", type_ = "boolean", json_path = ".spec.allowAdoption", priority = 1),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.baseUrl", priority = 1),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConnectionSpec {
    /// Base URL of the control plane. Default: the operator's `--control-plane-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+(/[^?#]*)?$')")
        .message("baseUrl must be an http(s) URL without query or fragment"))]
    #[schemars(length(max = 2048))]
    pub base_url: Option<String>,

    /// The key of a Secret, in any namespace, that holds the API key.
    pub api_key_secret_ref: NamespacedSecretKeyRef,

    /// The namespaces whose Environments may use this connection. Unset or empty: every
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Whether Environments using it may adopt, with `kubiya.ai/environment-id`, environments
    /// made outside Kubernetes (or released by another resource). Off by default: whoever may
    /// create an Environment in a selected namespace would otherwise be able to take over any
    /// environment of the organization and receive its worker token.
    #[serde(default)]
    pub allow_adoption: bool,

    /// Control-plane requests in flight at once through this connection (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_requests: Option<i32>,
}

/// A key of a Secret in the same namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data. Default: `api-key`.
    #[serde(default = "api_key", skip_serializing_if = "is_api_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A key of a Secret in a given namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespacedSecretKeyRef {
    /// Secret namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data. Default: `api-key`.
    #[serde(default = "api_key", skip_serializing_if = "is_api_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn api_key() -> String {
    "api-key".to_owned()
}

fn is_api_key(k: &str) -> bool {
    k == "api-key"
}

/// Observed state of a connection, written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The organization the key belongs to (its `organization` claim; for display).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The control plane it reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// How many Environments use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<i32>,
    /// When the key was last checked against the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_time: Option<Time>,
    /// Human-readable explanation of the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Ready, Reconciling and Stalled, in the kstatus convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Which kind of connection an Environment refers to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionKind {
    Connection,
    ClusterConnection,
}

/// An Environment's choice of connection.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRef {
    /// `Connection` (in the Environment's namespace) or `ClusterConnection`.
    pub kind: ConnectionKind,
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}
