//! The `WorkerQueue` custom resource: a worker queue of an Environment of the same namespace,
//! which workers register with (`kubiya worker start --queue-id …`). Pure types: no client.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DeletionPolicy, ManagementPolicy, SecretKeySelector, WorkerSecretRef, object};

/// The limits of the WorkerQueue schema, as the control plane checks them.
pub mod limits {
    /// Characters of the queue's name in the control plane.
    pub const NAME_MIN: usize = 2;
    pub const NAME_MAX: usize = 50;
    pub const DISPLAY_NAME: usize = 255;
    pub const DESCRIPTION: usize = 4096;
    pub const TAGS: usize = 64;
    /// Seconds between worker heartbeats, at least and at most; the server's default.
    pub const HEARTBEAT_MIN: i32 = 10;
    pub const HEARTBEAT_MAX: i32 = 300;
    pub const HEARTBEAT_DEFAULT: i32 = 60;
    /// Settings keys.
    pub const SETTINGS: usize = 64;
    /// Workers one queue runs, at most (a bound on what one resource can ask of the cluster).
    pub const REPLICAS_MAX: i32 = 1000;
    /// Characters of the name of a queue that runs workers: its name is a label value of theirs.
    pub const WORKERS_NAME_MAX: usize = 63;
    /// Characters of an image reference.
    pub const IMAGE: usize = 1024;
}

/// A worker queue of a Kubiya environment, created, updated and deleted by kubiya-operator.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubiya.ai",
    version = "v1alpha1",
    kind = "WorkerQueue",
    namespaced,
    status = "WorkerQueueStatus",
    shortname = "kwq",
    category = "kubiya",
    doc = "A worker queue of a Kubiya environment, which workers register with; created, updated and deleted by kubiya-operator.",
    printcolumn(name = "Environment", type_ = "string", json_path = ".spec.environmentRef.name"),
    printcolumn(name = "Queue ID", type_ = "string", json_path = ".status.queueId"),
    printcolumn(name = "Active", type_ = "integer", description = "Workers that sent a heartbeat lately", json_path = ".status.activeWorkers"),
    printcolumn(name = "Max", type_ = "integer", description = "Empty: unlimited", json_path = ".status.maxWorkers"),
    printcolumn(name = "Workers", type_ = "integer", description = "Workers the operator runs (empty: none)", json_path = ".spec.workers.replicas"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Ready Workers", type_ = "integer", description = "Worker pods ready", json_path = ".status.workers.readyReplicas", priority = 1),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", priority = 1),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.name) || (size(self.metadata.name) >= 2 && size(self.metadata.name) <= 50)")
        .message("metadata.name is used as the queue's name in the control plane and must be 2..50 characters; set spec.name"),
    validation = Rule::new("has(self.spec.name) || !self.metadata.name.startsWith('local-exec')")
        .message("names starting local-exec are the control plane's ephemeral queues, which it does not list; set spec.name"),
    validation = Rule::new("has(self.spec.name) || self.metadata.name != 'default'")
        .message("the control plane never deletes a queue named default; set spec.name"),
    validation = Rule::new("!has(self.spec.workers) || size(self.metadata.name) <= 63")
        .message("a WorkerQueue that runs workers labels them with its name, which must then be at most 63 characters"),
    validation = Rule::new("!has(self.spec.workers) || self.spec.heartbeatInterval <= 120")
        .message("a WorkerQueue that runs workers needs heartbeatInterval of at most 120 s: the control plane counts a worker as active for 150 s after its heartbeat"),
    validation = Rule::new("!has(self.spec.workers) || !has(self.spec.maxWorkers) || self.spec.workers.replicas <= self.spec.maxWorkers")
        .message("spec.workers.replicas cannot exceed spec.maxWorkers: raise maxWorkers, or scale the queue down"),
    scale(
        spec_replicas_path = ".spec.workers.replicas",
        status_replicas_path = ".status.workers.replicas",
        label_selector_path = ".status.workers.selector"
    ),
    validation = Rule::new("self.spec.environmentRef.name == oldSelf.spec.environmentRef.name")
        .message("spec.environmentRef cannot change: a queue cannot move between environments; create another WorkerQueue instead"),
)]
#[serde(rename_all = "camelCase")]
pub struct WorkerQueueSpec {
    /// The Environment of this namespace the queue belongs to; its connection is used.
    pub environment_ref: EnvironmentRef,

    /// The queue's name in the control plane (unique per environment). Defaults to
    /// `metadata.name`. Names starting `local-exec` are the control plane's ephemeral queues,
    /// which it does not list, and it never deletes one named `default`: neither is allowed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = limits::NAME_MIN, max = limits::NAME_MAX))]
    #[x_kube(validation = Rule::new("!self.startsWith('local-exec') && self != 'default'")
        .message("local-exec… names are the control plane's ephemeral queues, and it never deletes one named default; choose another name"))]
    pub name: Option<String>,

    /// Human-readable name. The control plane defaults it to the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::DISPLAY_NAME))]
    pub display_name: Option<String>,

    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::DESCRIPTION))]
    pub description: Option<String>,

    /// The most workers the queue is meant for. Omitted: unlimited. (The control plane reports
    /// it to workers; it does not enforce it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_workers: Option<i32>,

    /// Seconds between worker heartbeats.
    #[serde(default = "default_heartbeat")]
    #[schemars(range(min = limits::HEARTBEAT_MIN, max = limits::HEARTBEAT_MAX))]
    pub heartbeat_interval: i32,

    /// Tags, as a set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        extend("x-kubernetes-list-type" = "set"),
        length(max = limits::TAGS),
        inner(length(max = super::limits::ITEM))
    )]
    pub tags: Vec<String>,

    /// Queue settings, passed through to the control plane (which checks
    /// `enable_local_litellm_proxy`, `litellm_config`, `local_proxy_timeout_seconds` and
    /// `local_proxy_max_retries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_settings")]
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,

    /// What happens to the remote queue when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// `Full`: the operator creates, corrects and deletes the remote queue. `Observe`: it only
    /// reads it.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// The Secret that receives the queue's worker command. Default `<metadata.name>-worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_secret: Option<WorkerSecretRef>,

    /// Workers the operator runs for this queue, as one Deployment it owns. Absent: it runs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Workers>,
}

/// The workers of a queue: one Deployment, `<metadata.name>-workers`, whose pods register with
/// the queue. Scaled through the WorkerQueue (`kubectl scale workerqueue/<name>`, or an HPA or
/// KEDA on its `/scale` subresource): a Deployment scaled directly is put back.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Workers {
    /// How many workers to run; at most `maxWorkers` when that is set.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = limits::REPLICAS_MAX))]
    pub replicas: i32,

    /// The worker image. Default: the operator's `--worker-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::IMAGE))]
    pub image: Option<String>,

    /// The API key the workers register with: a key of a Secret in this namespace, which the
    /// pods read by `secretKeyRef` (it is never copied). Required: without it the queue is
    /// `Stalled` (`WorkerKeyMissing`). Never the operator's own key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeySelector>,

    /// The worker container's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// A PodTemplateSpec fragment (`metadata` and `spec`) the operator's fields go over:
    /// labels, annotations, nodeSelector, tolerations, affinity, volumes, a `worker` container's
    /// env and volumeMounts, sidecars. The operator sets the worker container's image, its
    /// `QUEUE_ID`, `CONTROL_PLANE_URL`, `HEARTBEAT_INTERVAL` and `KUBIYA_API_KEY`, and a restricted
    /// security context on every container; the host's namespaces, ports and paths are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pod_template_fragment")]
    pub template: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers { replicas: one(), image: None, api_key_secret_ref: None, resources: None, template: None }
    }
}

fn one() -> i32 {
    1
}

/// A pod template's two fields, each free-form (a PodTemplateSpec's full schema would be most of
/// the CRD); the operator decodes them, and a spec that does not decode is `InvalidWorkers`.
fn pod_template_fragment(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
    })
}

fn default_heartbeat() -> i32 {
    limits::HEARTBEAT_DEFAULT
}

/// An Environment of the same namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct EnvironmentRef {
    /// Its `metadata.name`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Observed state, written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerQueueStatus {
    /// Pending, Ready, Inactive, Error or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<super::Phase>,
    /// The control plane's id of the queue (what `kubiya worker start --queue-id` takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    /// The control plane's id of the queue's environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
    /// The queue's name in the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_name: Option<String>,
    /// The control plane's status of the queue (`active`, or what was set there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_status: Option<String>,
    /// Workers that sent a heartbeat in the last 150 s, as of the last pass (a settled queue is
    /// read once per resync interval, and on any change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_workers: Option<i64>,
    /// The queue's `max_workers` (empty: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<i64>,
    /// Whether workers can register with the queue (its status is `active`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_register: Option<bool>,
    /// The Secret holding the worker command, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_secret_name: Option<String>,
    /// The `kubiya.ai/take-over-from` value this resource took the queue with: the same value
    /// again is not a new request. Cleared when the annotation goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_from: Option<String>,
    /// The connection of the queue's Environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the status last changed as the result of a sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_time: Option<Time>,
    /// Human-readable explanation of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The workers the operator runs for the queue (`spec.workers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkersStatus>,
    /// Ready, Reconciling and Stalled, in the kstatus convention; Synced under managementPolicy
    /// Observe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The workers' Deployment as last seen, and how many registered with the queue.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkersStatus {
    /// The Deployment that runs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Its pods (the Deployment's `status.replicas`): what `/scale` reports.
    #[serde(default)]
    pub replicas: i32,
    /// Its ready pods.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Workers registered with the queue (its `active_workers`: a heartbeat in the last 150 s).
    #[serde(default)]
    pub registered: i64,
    /// The label selector of the worker pods, for `/scale` (an HPA reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The Deployment's `metadata.generation` after the operator's last write: a later one means
    /// it was changed by someone else, and it is put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_generation: Option<i64>,
    /// Since when not all the workers have been available and registered, if so (a crash loop,
    /// which goes in and out of available, keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unregistered_since: Option<Time>,
    /// When the operator last rolled out a new template to the Deployment: for 150 s after it, the
    /// queue's count may include the workers it replaced, and is not taken for the new ones'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_out_at: Option<Time>,
}

fn free_form_settings(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": limits::SETTINGS,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

impl WorkerQueue {
    /// The queue's name in the control plane: `spec.name`, else `metadata.name`.
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
