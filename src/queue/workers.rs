//! A queue's workers: the Deployment the operator runs for `spec.workers`, and what its state
//! and the queue's registrations say of them. Pure: no client (`queue::deployment` reads and
//! writes it).
//!
//! Three rules shape it. The workers' key is the namespace's own, read by `secretKeyRef` and
//! never copied (nor ever the operator's key). Scaling has one owner, the WorkerQueue's `/scale`
//! subresource: the Deployment carries `spec.workers.replicas`, and a Deployment scaled directly
//! is put back. And the workers are Ready only once the queue counts them registered: pods that
//! run but never register are what nobody notices otherwise.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use crate::reconcile::worker_secret::MANAGED_BY;
use crate::resource::{WorkerQueue, Workers};

/// The label of a queue's worker pods and Deployment: the queue's `metadata.name`.
pub const LABEL: &str = "kubiya.ai/worker-queue";
/// The name of the worker container, which `spec.workers.template` may also name to add to it.
pub const CONTAINER: &str = "worker";
/// The fingerprint of what the operator last applied to the Deployment.
pub const HASH_ANNOTATION: &str = "kubiya.ai/workers-hash";
/// The variables the Python worker (`kubiya-control-plane-worker`) reads, set by the operator
/// over anything of the same name in the template.
pub const QUEUE_ID_VAR: &str = "QUEUE_ID";
pub const CONTROL_PLANE_URL_VAR: &str = "CONTROL_PLANE_URL";
pub const API_KEY_VAR: &str = "KUBIYA_API_KEY";
/// Seconds between the worker's heartbeats: the queue's `heartbeatInterval` (the worker reads this,
/// not the interval the server tells it).
pub const HEARTBEAT_VAR: &str = "HEARTBEAT_INTERVAL";
/// Seconds a worker's pod must run before it counts as available.
pub const MIN_READY_SECONDS: i32 = 30;
/// How long the control plane counts a worker as active after its last heartbeat: registrations
/// of replaced workers count that long after a rollout.
pub const ACTIVE_WINDOW: std::time::Duration = std::time::Duration::from_secs(150);
/// A writable directory on a read-only root filesystem.
const TMP_VOLUME: &str = "kubiya-worker-tmp";
const TMP_PATH: &str = "/tmp";

/// The Deployment's name: `<metadata.name>-workers`.
pub fn deployment_name(queue: &WorkerQueue) -> String {
    format!("{}-workers", queue.name_any())
}

/// The label selector of the worker pods, as `/scale` reports it.
pub fn selector(queue: &WorkerQueue) -> String {
    format!("{LABEL}={}", queue.name_any())
}

/// Why `spec.workers` cannot be rendered: each is the user's to fix, in the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// No `apiKeySecretRef`.
    KeyMissing,
    /// The template does not decode as a PodTemplateSpec, or asks for what the workers' pods may
    /// not have (the host's namespaces, ports or paths).
    Template(String),
    /// The API server refused the Deployment (its validation, or an admission policy).
    Refused(String),
}

impl Invalid {
    pub fn explain(&self) -> String {
        match self {
            Invalid::KeyMissing => "spec.workers has no apiKeySecretRef: name a key of a Secret of this namespace that \
                                    holds the API key the workers register with (the operator never gives them its \
                                    own)"
                .to_owned(),
            Invalid::Template(why) => format!("spec.workers.template is not a pod template: {why}"),
            Invalid::Refused(why) => {
                format!("the API server refused the workers' Deployment: {why}; fix spec.workers (its template or resources)")
            }
        }
    }
}

/// What the rendering needs beyond the spec.
pub struct Inputs<'a> {
    /// The control plane's id of the queue.
    pub queue_id: &'a str,
    /// The control plane's URL as workers get it (`queue::secret::public_url`).
    pub control_plane_url: &'a str,
    /// The image when the spec names none (`--worker-image`).
    pub default_image: &'a str,
}

/// The Deployment for `queue`'s `workers`, owned by the queue, with [`HASH_ANNOTATION`] set.
pub fn render(queue: &WorkerQueue, workers: &Workers, inputs: &Inputs<'_>) -> Result<Deployment, Invalid> {
    let key = workers.api_key_secret_ref.as_ref().ok_or(Invalid::KeyMissing)?;
    let mut template: PodTemplateSpec = match &workers.template {
        Some(t) => serde_json::from_value(serde_json::Value::Object(t.clone()))
            .map_err(|e| Invalid::Template(crate::controlplane::sanitize(&e.to_string())))?,
        None => PodTemplateSpec::default(),
    };
    let labels = labels(queue);
    let meta = template.metadata.get_or_insert_with(Default::default);
    if meta
        .annotations
        .iter()
        .flatten()
        .any(|(k, v)| k.starts_with("container.apparmor.security.beta.kubernetes.io/") && v == "unconfined")
    {
        return Err(Invalid::Template(
            "an unconfined AppArmor profile is not allowed for workers".to_owned(),
        ));
    }
    meta.labels.get_or_insert_with(Default::default).extend(labels.clone());
    meta.name = None;
    meta.namespace = None;
    let mut pod: PodSpec = template.spec.take().unwrap_or_default();
    forbid_host(&pod)?;

    let at = pod.containers.iter().position(|c| c.name == CONTAINER);
    let mut worker = match at {
        Some(i) => pod.containers.remove(i),
        None => Container { name: CONTAINER.to_owned(), ..Default::default() },
    };
    worker.image = Some(workers.image.clone().unwrap_or_else(|| inputs.default_image.to_owned()));
    let mut env = vec![
        plain(QUEUE_ID_VAR, inputs.queue_id),
        plain(CONTROL_PLANE_URL_VAR, inputs.control_plane_url),
        plain(HEARTBEAT_VAR, &queue.spec.heartbeat_interval.to_string()),
        EnvVar {
            name: API_KEY_VAR.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: key.name.clone(),
                    key: key.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        },
    ];
    let reserved = [QUEUE_ID_VAR, CONTROL_PLANE_URL_VAR, HEARTBEAT_VAR, API_KEY_VAR];
    env.extend(
        worker.env.take().unwrap_or_default().into_iter().filter(|v| !reserved.contains(&v.name.as_str())),
    );
    worker.env = Some(env);
    worker.resources =
        workers.resources.clone().or(worker.resources.take()).or_else(|| Some(default_resources()));
    // The worker makes its task workspaces under its working directory.
    worker.working_dir.get_or_insert_with(|| TMP_PATH.to_owned());
    worker.security_context = Some(harden(worker.security_context.take()));
    // Sidecars and init containers get the same profile: a WorkerQueue is no way around the
    // rights to run pods in the namespace.
    for c in pod.containers.iter_mut().chain(pod.init_containers.iter_mut().flatten()) {
        c.security_context = Some(harden(c.security_context.take()));
    }
    let mounts = worker.volume_mounts.get_or_insert_with(Vec::new);
    if !mounts.iter().any(|m| m.mount_path == TMP_PATH) {
        mounts.push(VolumeMount {
            name: TMP_VOLUME.to_owned(),
            mount_path: TMP_PATH.to_owned(),
            ..Default::default()
        });
    }
    pod.containers.insert(0, worker);
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    if !volumes.iter().any(|v| v.name == TMP_VOLUME) {
        volumes.push(Volume {
            name: TMP_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    let mut pod_security = pod.security_context.take().unwrap_or_default();
    pod_security.run_as_non_root = Some(true);
    if pod_security.seccomp_profile.as_ref().is_none_or(|p| p.type_ == "Unconfined") {
        pod_security.seccomp_profile = Some(runtime_default());
    }
    pod.security_context = Some(pod_security);
    // The workers talk to the control plane, not to Kubernetes.
    pod.automount_service_account_token.get_or_insert(false);
    template.spec = Some(pod);

    let mut deployment = Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(queue)),
            namespace: queue.namespace(),
            labels: Some(labels),
            owner_references: queue.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(workers.replicas),
            // A worker registers about 15 s after it starts, and one that cannot (a refused key)
            // exits then: available only after this, a crash-looping worker never counts as one.
            min_ready_seconds: Some(MIN_READY_SECONDS),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(LABEL.to_owned(), queue.name_any())])),
                ..Default::default()
            },
            template,
            ..Default::default()
        }),
        status: None,
    };
    let hash = fingerprint(&deployment);
    deployment.metadata.annotations = Some(BTreeMap::from([(HASH_ANNOTATION.to_owned(), hash)]));
    Ok(deployment)
}

/// Refuses what the restricted pod security profile refuses of a pod: the host's namespaces,
/// paths and ports.
fn forbid_host(pod: &PodSpec) -> Result<(), Invalid> {
    let forbidden = |what: &str| Err(Invalid::Template(format!("{what} is not allowed for workers")));
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        return forbidden("sharing the host's network, PID or IPC namespace");
    }
    if pod.volumes.iter().flatten().any(|v| v.host_path.is_some()) {
        return forbidden("a hostPath volume");
    }
    // The volume types the restricted profile allows; any other (a node's disk, a network
    // filesystem mounted by the node) is the cluster's to grant, not a queue's.
    let allowed = |v: &Volume| {
        v.config_map.is_some()
            || v.csi.is_some()
            || v.downward_api.is_some()
            || v.empty_dir.is_some()
            || v.ephemeral.is_some()
            || v.persistent_volume_claim.is_some()
            || v.projected.is_some()
            || v.secret.is_some()
    };
    if let Some(v) = pod.volumes.iter().flatten().find(|v| !allowed(v)) {
        return forbidden(&format!(
            "volume {:?} (only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected and secret volumes are)",
            v.name
        ));
    }
    let containers: Vec<&Container> =
        pod.containers.iter().chain(pod.init_containers.iter().flatten()).collect();
    if containers.iter().flat_map(|c| c.ports.iter().flatten()).any(|p| p.host_port.is_some_and(|h| h != 0)) {
        return forbidden("a hostPort");
    }
    // What else the restricted profile refuses: an SELinux type or user of one's choosing, an
    // unconfined AppArmor profile, an unmasked /proc, sysctls beyond the safe ones.
    let pod_security = pod.security_context.as_ref();
    let selinux = containers
        .iter()
        .filter_map(|c| c.security_context.as_ref()?.se_linux_options.as_ref())
        .chain(pod_security.and_then(|s| s.se_linux_options.as_ref()));
    for o in selinux {
        let typed = o
            .type_
            .as_deref()
            .is_none_or(|t| ["", "container_t", "container_init_t", "container_kvm_t"].contains(&t));
        if !typed
            || o.user.as_deref().is_some_and(|u| !u.is_empty())
            || o.role.as_deref().is_some_and(|r| !r.is_empty())
        {
            return forbidden("an SELinux type, user or role other than the container's");
        }
    }
    let apparmor = containers
        .iter()
        .filter_map(|c| c.security_context.as_ref()?.app_armor_profile.as_ref())
        .chain(pod_security.and_then(|s| s.app_armor_profile.as_ref()));
    if apparmor.into_iter().any(|p| p.type_ == "Unconfined") {
        return forbidden("an unconfined AppArmor profile");
    }
    if containers.iter().any(|c| {
        c.security_context.as_ref().and_then(|s| s.proc_mount.as_deref()).is_some_and(|m| m != "Default")
    }) {
        return forbidden("a procMount other than Default");
    }
    const SAFE_SYSCTLS: [&str; 8] = [
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
    ];
    if pod_security
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .any(|s| !SAFE_SYSCTLS.contains(&s.name.as_str()))
    {
        return forbidden("a sysctl outside the safe set");
    }
    Ok(())
}

/// The labels of the Deployment and its pods.
fn labels(queue: &WorkerQueue) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL.to_owned(), queue.name_any()),
        ("app.kubernetes.io/name".to_owned(), "kubiya-worker".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), queue.name_any()),
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
    ])
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.to_owned()), value_from: None }
}

/// What the Python worker needs: it idles at about 350 MiB once its imports are done (measured).
fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".to_owned(), q("250m")), ("memory".to_owned(), q("512Mi"))])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("1Gi"))])),
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }
}

/// The worker container's security context: the template's, under the restricted profile
/// (non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp). A read-only root
/// filesystem unless the template says the image needs it writable.
fn harden(given: Option<SecurityContext>) -> SecurityContext {
    let mut s = given.unwrap_or_default();
    s.allow_privilege_escalation = Some(false);
    s.privileged = Some(false);
    s.run_as_non_root = Some(true);
    s.capabilities = Some(Capabilities { add: None, drop: Some(vec!["ALL".to_owned()]) });
    s.read_only_root_filesystem.get_or_insert(true);
    if s.seccomp_profile.as_ref().is_none_or(|p| p.type_ == "Unconfined") {
        s.seccomp_profile = Some(runtime_default());
    }
    s
}

/// What the operator applies, fingerprinted (its replicas aside: a scale is not a new template).
pub fn fingerprint(deployment: &Deployment) -> String {
    let mut d = deployment.clone();
    if let Some(spec) = d.spec.as_mut() {
        spec.replicas = None;
    }
    d.metadata.annotations = None;
    let bytes = serde_json::to_vec(&d).unwrap_or_default();
    format!("{:016x}", crate::k8s::fields::fnv1a(&bytes))
}

/// What the operator must write to the Deployment it observed, if anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing: it is as last applied.
    None,
    /// Not there: create it.
    Create,
    /// The spec's template or the operator's rendering changed: roll it out.
    Template,
    /// Only the replicas differ, by the WorkerQueue's own scale (or a write of the operator's the
    /// cache does not hold yet), or the label the operator watches the Deployment by is gone (its
    /// changes would wake the queue no more): apply them.
    Resize,
    /// Scaled directly, to `to`: put back (an Event says to scale the WorkerQueue).
    Scaled { to: i32 },
    /// Changed by someone else (its generation moved past the operator's last write): put back.
    Edited,
}

/// What the observed Deployment (as the cache holds it) needs so that it is `desired`.
/// `written`: its generation after the operator's last write, from status. Only a generation
/// past that one is someone else's change: an older one is the cache lagging behind a write.
pub fn change(desired: &Deployment, observed: Option<&Deployment>, written: Option<i64>) -> Change {
    let Some(observed) = observed else { return Change::Create };
    let hash = |d: &Deployment| d.annotations().get(HASH_ANNOTATION).cloned();
    let theirs = matches!((observed.metadata.generation, written), (Some(now), Some(then)) if now > then);
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas);
    match () {
        () if hash(observed) != hash(desired) => Change::Template,
        () if replicas(observed) != replicas(desired) && theirs => {
            Change::Scaled { to: replicas(observed).unwrap_or(1) }
        }
        () if replicas(observed) != replicas(desired) => Change::Resize,
        () if observed.labels().get(LABEL) != desired.labels().get(LABEL) => Change::Resize,
        () if theirs => Change::Edited,
        () => Change::None,
    }
}

/// How far the workers are, from their Deployment and the queue's count of registered workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not all of them are running the current template and available yet; `stuck`: the
    /// Deployment's controller gave up waiting (its progress deadline passed: pods crash-loop,
    /// cannot pull their image, or cannot be scheduled).
    Starting { want: i32, available: i32, ready: i32, stuck: bool },
    /// All available; `registered` of `want` registered with the queue so far.
    Unregistered { want: i32, registered: i64 },
    /// All available and registered (zero included).
    Registered { want: i32, registered: i64 },
}

/// Counts of the Deployment's status, as kstatus reads a Deployment: current once its controller
/// has seen this generation and every pod runs the current template and is available.
pub fn progress(deployment: &Deployment, registered: i64) -> Progress {
    let want = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = deployment.status.clone().unwrap_or_default();
    let seen = st.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let all = seen
        && st.updated_replicas.unwrap_or(0) >= want
        && available >= want
        && st.replicas.unwrap_or(0) == want;
    if want > 0 && !all {
        let stuck = seen
            && st.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            });
        return Progress::Starting { want, available, ready, stuck };
    }
    if registered < i64::from(want) {
        return Progress::Unregistered { want, registered };
    }
    Progress::Registered { want, registered }
}

/// The Deployment's pods and ready pods, for status.
pub fn counts(deployment: Option<&Deployment>) -> (i32, i32) {
    let st = deployment.and_then(|d| d.status.as_ref());
    (st.and_then(|s| s.replicas).unwrap_or(0), st.and_then(|s| s.ready_replicas).unwrap_or(0))
}

/// How long available workers may go unregistered before the queue says they are stuck: two
/// heartbeat intervals (a worker registers at start and then beats at that interval), and at
/// least [`GRACE_MIN`]: the pod is available once its container runs (the worker has no port to
/// probe), and the worker takes about 15 s of imports before it registers.
pub fn grace(queue: &WorkerQueue) -> std::time::Duration {
    let two = std::time::Duration::from_secs(2 * u64::try_from(queue.spec.heartbeat_interval).unwrap_or(60));
    two.max(GRACE_MIN)
}

/// The least grace for workers to register; see [`grace`].
pub const GRACE_MIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether workers unregistered since `since` have had their grace by `now`.
pub fn overdue(queue: &WorkerQueue, since: &Time, now: &Time) -> bool {
    waited(since, now) >= grace(queue)
}

/// How long workers may take to become available (an image pulled, nodes added) before the
/// queue says they are stuck: as the Deployment's default progress deadline, and never less than
/// the registration grace.
pub fn start_grace(queue: &WorkerQueue) -> std::time::Duration {
    grace(queue).max(std::time::Duration::from_secs(600))
}

/// The time from `since` to `now` (none for a clock that went back).
pub fn waited(since: &Time, now: &Time) -> std::time::Duration {
    let secs = now.0.as_second().saturating_sub(since.0.as_second());
    std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{EnvironmentRef, SecretKeySelector as KeyRef, WorkerQueueSpec};
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use serde_json::json;

    fn queue(workers: Workers) -> WorkerQueue {
        let mut q = WorkerQueue::new(
            "gpu",
            WorkerQueueSpec {
                environment_ref: EnvironmentRef { name: "prod".into() },
                workers: Some(workers),
                heartbeat_interval: 30,
                ..Default::default()
            },
        );
        q.metadata.namespace = Some("team-a".into());
        q.metadata.uid = Some("u1".into());
        q
    }

    fn workers(template: serde_json::Value) -> Workers {
        Workers {
            replicas: 2,
            api_key_secret_ref: Some(KeyRef { name: "team-a-worker-key".into(), key: "api-key".into() }),
            template: template.as_object().cloned(),
            ..Default::default()
        }
    }

    const INPUTS: Inputs<'static> =
        Inputs { queue_id: "q1", control_plane_url: "https://cp.test", default_image: "img:1" };

    fn rendered(template: serde_json::Value) -> Deployment {
        let w = workers(template);
        render(&queue(w.clone()), &w, &INPUTS).unwrap()
    }

    fn worker(d: &Deployment) -> &Container {
        &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
    }

    #[test]
    fn the_deployment_carries_the_queue_and_reads_the_key_from_the_namespaces_secret() {
        let d = rendered(json!(null));
        assert_eq!(d.metadata.name.as_deref(), Some("gpu-workers"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("team-a"));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("WorkerQueue", "u1", Some(true))
        );
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.selector.match_labels.as_ref().unwrap()[LABEL], "gpu");
        assert_eq!(spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap()[LABEL], "gpu");
        let c = worker(&d);
        assert_eq!((c.name.as_str(), c.image.as_deref()), (CONTAINER, Some("img:1")));
        let env = c.env.as_ref().unwrap();
        assert_eq!(env[0], plain(QUEUE_ID_VAR, "q1"));
        assert_eq!(env[1], plain(CONTROL_PLANE_URL_VAR, "https://cp.test"));
        assert_eq!(env[2], plain(HEARTBEAT_VAR, "30"));
        assert_eq!(env[3].name, API_KEY_VAR);
        assert_eq!(env[3].value, None, "the key is never copied into the Deployment");
        let r = env[3].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("team-a-worker-key", "api-key"));
        assert_eq!(selector(&queue(workers(json!(null)))), "kubiya.ai/worker-queue=gpu");
    }

    #[test]
    fn the_pod_is_hardened_whatever_the_template_asks() {
        let d = rendered(json!({"spec": {
            "securityContext": {"runAsNonRoot": false, "runAsUser": 1000, "seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "worker", "securityContext": {"privileged": true,
                "allowPrivilegeEscalation": true, "capabilities": {"add": ["NET_ADMIN"]},
                "seccompProfile": {"type": "Unconfined"}}}]}}));
        let s = worker(&d).security_context.clone().unwrap();
        assert_eq!(s.privileged, Some(false));
        assert_eq!(s.allow_privilege_escalation, Some(false));
        assert_eq!(s.run_as_non_root, Some(true));
        assert_eq!(s.read_only_root_filesystem, Some(true));
        assert_eq!(s.capabilities, Some(Capabilities { add: None, drop: Some(vec!["ALL".into()]) }));
        assert_eq!(s.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let pod = d.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let ps = pod.security_context.unwrap();
        assert_eq!(ps.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert_eq!(
            (ps.run_as_non_root, ps.run_as_user),
            (Some(true), Some(1000)),
            "a user id of the template stays"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        let tmp = &worker(&d).volume_mounts.as_ref().unwrap()[0];
        assert_eq!(tmp.mount_path, "/tmp", "a writable /tmp on the read-only root");
        // An image that needs its root writable may say so; nothing else is given back.
        let d = rendered(json!({"spec": {"containers": [{"name": "worker",
            "securityContext": {"readOnlyRootFilesystem": false}}]}}));
        assert_eq!(worker(&d).security_context.as_ref().unwrap().read_only_root_filesystem, Some(false));
    }

    #[test]
    fn the_template_goes_under_the_operators_fields() {
        let d = rendered(json!({
            "metadata": {"labels": {"team": "a", "kubiya.ai/worker-queue": "other"}, "annotations": {"x": "y"}},
            "spec": {"nodeSelector": {"gpu": "true"}, "tolerations": [{"key": "gpu", "operator": "Exists"}],
                "containers": [
                    {"name": "worker", "image": "ignored:1", "env": [{"name": "LOG_LEVEL", "value": "debug"},
                        {"name": "QUEUE_ID", "value": "someone-elses"}, {"name": "KUBIYA_API_KEY", "value": "leak"}]},
                    {"name": "sidecar", "image": "proxy:2"}],
                "volumes": [{"name": "cache", "emptyDir": {}}]}}));
        let tpl = &d.spec.as_ref().unwrap().template;
        let labels = tpl.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!((labels["team"].as_str(), labels[LABEL].as_str()), ("a", "gpu"), "ours win");
        assert_eq!(tpl.metadata.as_ref().unwrap().annotations.as_ref().unwrap()["x"], "y");
        let pod = tpl.spec.as_ref().unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()["gpu"], "true");
        assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
        let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["worker", "sidecar"]);
        let sidecar = pod.containers[1].security_context.as_ref().unwrap();
        assert_eq!(sidecar.allow_privilege_escalation, Some(false), "sidecars are hardened too");
        let c = worker(&d);
        assert_eq!(c.image.as_deref(), Some("img:1"), "the image is spec.workers.image or the default");
        let env: Vec<(&str, Option<&str>)> =
            c.env.as_ref().unwrap().iter().map(|v| (v.name.as_str(), v.value.as_deref())).collect();
        assert_eq!(
            env,
            [
                (QUEUE_ID_VAR, Some("q1")),
                (CONTROL_PLANE_URL_VAR, Some("https://cp.test")),
                (HEARTBEAT_VAR, Some("30")),
                (API_KEY_VAR, None),
                ("LOG_LEVEL", Some("debug"))
            ]
        );
        let volumes: Vec<&str> = pod.volumes.as_ref().unwrap().iter().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["cache", TMP_VOLUME]);
    }

    #[test]
    fn a_spec_without_a_key_or_with_a_broken_template_is_the_users_to_fix() {
        let mut w = workers(json!(null));
        w.api_key_secret_ref = None;
        assert_eq!(render(&queue(w.clone()), &w, &INPUTS), Err(Invalid::KeyMissing));
        let w = workers(json!({"spec": {"containers": "not a list"}}));
        let Err(Invalid::Template(why)) = render(&queue(w.clone()), &w, &INPUTS) else { panic!("decoded") };
        assert!(why.contains("sequence"), "{why}");
        for (spec, what) in [
            (json!({"hostNetwork": true}), "namespace"),
            (json!({"hostPID": true}), "namespace"),
            (json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}), "hostPath"),
            (
                json!({"containers": [{"name": "x", "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
                "hostPort",
            ),
        ] {
            let w = workers(json!({ "spec": spec }));
            let Err(Invalid::Template(why)) = render(&queue(w.clone()), &w, &INPUTS) else {
                panic!("{spec}")
            };
            assert!(why.contains(what), "{why}");
        }
        assert!(Invalid::KeyMissing.explain().contains("apiKeySecretRef"));
        let w = workers(
            json!({"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/worker": "unconfined"}}}),
        );
        assert!(
            matches!(render(&queue(w.clone()), &w, &INPUTS), Err(Invalid::Template(why)) if why.contains("AppArmor"))
        );
        let w = workers(
            json!({"spec": {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}],
            "seLinuxOptions": {"type": "container_t", "level": "s0:c1"}}}}),
        );
        assert!(
            render(&queue(w.clone()), &w, &INPUTS).is_ok(),
            "a safe sysctl and the container's SELinux type"
        );
    }

    #[test]
    fn a_direct_scale_an_edit_and_a_new_template_each_call_for_a_write() {
        let desired = rendered(json!(null));
        let mut seen = desired.clone();
        seen.metadata.generation = Some(3);
        assert_eq!(change(&desired, None, None), Change::Create);
        assert_eq!(change(&desired, Some(&seen), Some(3)), Change::None);
        assert_eq!(
            change(&desired, Some(&seen), None),
            Change::None,
            "no write recorded: nothing to compare"
        );
        let mut scaled = seen.clone();
        scaled.spec.as_mut().unwrap().replicas = Some(5);
        scaled.metadata.generation = Some(4);
        assert_eq!(change(&desired, Some(&scaled), Some(3)), Change::Scaled { to: 5 });
        let mut edited = seen.clone();
        edited.metadata.generation = Some(4);
        assert_eq!(change(&desired, Some(&edited), Some(3)), Change::Edited);
        let mut unlabelled = seen.clone();
        unlabelled.metadata.labels.as_mut().unwrap().remove(LABEL);
        assert_eq!(
            change(&desired, Some(&unlabelled), Some(3)),
            Change::Resize,
            "the watched label put back"
        );
        let other = rendered(json!({"spec": {"nodeSelector": {"a": "b"}}}));
        assert_eq!(change(&other, Some(&seen), Some(3)), Change::Template);
        let mut rescaled = desired.clone();
        rescaled.spec.as_mut().unwrap().replicas = Some(7);
        assert_eq!(fingerprint(&rescaled), fingerprint(&desired), "a scale is no new template");
        assert_eq!(change(&rescaled, Some(&seen), Some(3)), Change::Resize, "scaled through the queue");
        assert_eq!(
            change(&desired, Some(&scaled), None),
            Change::Resize,
            "no write recorded: applied quietly"
        );
    }

    fn status(generation: i64, observed: i64, replicas: i32, updated: i32, available: i32) -> Deployment {
        let mut d = rendered(json!(null));
        d.metadata.generation = Some(generation);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ready_replicas: Some(available),
            ..Default::default()
        });
        d
    }

    #[test]
    fn workers_are_registered_only_once_all_are_available_and_counted_by_the_queue() {
        let starting = |available, ready| Progress::Starting { want: 2, available, ready, stuck: false };
        assert_eq!(progress(&rendered(json!(null)), 0), starting(0, 0), "no status yet");
        assert_eq!(progress(&status(2, 1, 2, 2, 2), 2), starting(2, 2), "this generation not seen yet");
        assert_eq!(progress(&status(2, 2, 3, 2, 2), 2), starting(2, 2), "an old pod still runs");
        assert_eq!(progress(&status(2, 2, 2, 1, 2), 2), starting(2, 2), "one runs the old template");
        assert_eq!(progress(&status(2, 2, 2, 2, 1), 2), starting(1, 1));
        let mut crashing = status(2, 2, 2, 2, 1);
        let deadline =
            json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"});
        crashing.status.as_mut().unwrap().conditions = Some(vec![serde_json::from_value(deadline).unwrap()]);
        assert_eq!(
            progress(&crashing, 0),
            Progress::Starting { want: 2, available: 1, ready: 1, stuck: true }
        );
        assert_eq!(progress(&status(2, 2, 2, 2, 2), 1), Progress::Unregistered { want: 2, registered: 1 });
        assert_eq!(progress(&status(2, 2, 2, 2, 2), 2), Progress::Registered { want: 2, registered: 2 });
        let mut none = status(2, 2, 0, 0, 0);
        none.spec.as_mut().unwrap().replicas = Some(0);
        assert_eq!(progress(&none, 0), Progress::Registered { want: 0, registered: 0 }, "scaled to zero");
        assert_eq!(counts(Some(&status(2, 2, 3, 2, 1))), (3, 1));
        assert_eq!(counts(None), (0, 0));
    }

    #[test]
    fn unregistered_workers_have_two_heartbeats_of_grace() {
        let q = queue(workers(json!(null)));
        let at = |s| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        assert_eq!(grace(&q).as_secs(), 60, "two intervals of 30 s");
        assert!(!overdue(&q, &at(1_000), &at(1_059)));
        assert!(overdue(&q, &at(1_000), &at(1_060)));
        let mut fast = q.clone();
        fast.spec.heartbeat_interval = 10;
        assert_eq!(grace(&fast), GRACE_MIN, "never less than the worker's start");
        let mut slow = q.clone();
        slow.spec.heartbeat_interval = 300;
        assert_eq!(grace(&slow).as_secs(), 600);
        assert!(!overdue(&q, &at(1_000), &at(900)), "a clock that went back is no overdue");
    }
}
