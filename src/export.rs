//! `kubiya-operator export`: an organisation's environments as Environment manifests, ready for
//! `kubectl apply` and a Git repository. Each manifest is exactly what the server stores, so that
//! applying it changes nothing remotely; names are derived from remote names, the same on every
//! run. Building manifests is pure; [`run`] lists and prints.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use k8s_openapi::api::core::v1::Secret;

use kube::api::ObjectMeta;
use serde_json::Value;

use crate::controlplane::{self, RemoteEnvironment, RemoteQueue};
use crate::reconcile::desired::set;
use crate::reconcile::ownership::{Marker, OWNER_KEY};
use crate::resource::{
    ADOPT_ANNOTATION, DeletionPolicy, EnvVar, EnvVarSource, Environment, EnvironmentRef, EnvironmentSpec,
    ExecutionEnvironment, ManagementPolicy, QUEUE_ADOPT_ANNOTATION, RemoteState, SecretKeySelector,
    WorkerQueue, WorkerQueueSpec, limits, queue_limits,
};

/// What the manifests say beyond the remote environments themselves.
#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: Option<String>,
    pub observe: bool,
    pub deletion_policy: DeletionPolicy,
    pub include_managed: bool,
    pub include_default: bool,
    /// Every env var's value goes to a Secret manifest, not only those that look secret.
    pub env_to_secrets: bool,
}

/// Why an environment was left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// The organisation's `default` environment (without `--include-default`).
    Default,
    /// Managed from a cluster already (without `--include-managed`).
    Managed(String),
    /// Something the Environment schema cannot hold.
    Inexpressible(String),
}

/// The manifest of `remote`, or why there is none.
pub fn manifest(remote: &RemoteEnvironment, opts: &Options) -> Result<Environment, Skipped> {
    if remote.name == "default" && !opts.include_default {
        return Err(Skipped::Default);
    }
    if let Some(m) = Marker::read(&remote.settings).filter(|m| !m.released)
        && !opts.include_managed
    {
        return Err(Skipped::Managed(m.owner.to_string()));
    }
    check(remote).map_err(Skipped::Inexpressible)?;
    let mut settings = remote.settings.clone();
    settings.remove(OWNER_KEY);
    let exec = &remote.execution_environment;
    let execution_environment = ExecutionEnvironment {
        env_vars: exec.env_vars.clone(),
        env: Vec::new(),
        env_from: Vec::new(),
        secrets: set(&exec.secrets),
        integration_ids: set(&exec.integration_ids),
        mcp_servers: Some(exec.mcp_servers.clone()).filter(|m| !m.is_empty()),
    };
    let spec = EnvironmentSpec {
        name: Some(remote.name.clone()),
        // The server defaults it to the name, and so does the operator.
        display_name: remote.display_name.clone().filter(|d| *d != remote.name),
        description: remote.description.clone(),
        tags: set(&remote.tags),
        settings: Some(settings).filter(|s| !s.is_empty()),
        execution_environment: Some(execution_environment).filter(|e| *e != ExecutionEnvironment::default()),
        state: match remote.status.as_str() {
            "active" => Some(RemoteState::Active),
            "inactive" => Some(RemoteState::Inactive),
            _ => None,
        },
        deletion_policy: opts.deletion_policy,
        management_policy: if opts.observe { ManagementPolicy::Observe } else { ManagementPolicy::Full },
        ..Default::default()
    };
    let mut env = Environment::new(&metadata_name(&remote.name), spec);
    env.metadata = ObjectMeta {
        name: env.metadata.name.take(),
        namespace: opts.namespace.clone(),
        annotations: Some(BTreeMap::from([(ADOPT_ANNOTATION.to_owned(), remote.id.clone())])),
        ..Default::default()
    };
    Ok(env)
}

/// The WorkerQueue manifest of `queue`, a queue of the environment exported as `env`, or why
/// there is none. Its name is the environment's and the queue's (queue names are unique per
/// environment only).
pub fn queue_manifest(
    queue: &RemoteQueue,
    env: &Environment,
    opts: &Options,
) -> Result<WorkerQueue, Skipped> {
    if let Some(m) = Marker::read(&queue.settings).filter(|m| !m.released)
        && !opts.include_managed
    {
        return Err(Skipped::Managed(format!("WorkerQueue {}/{}", m.owner.namespace, m.owner.name)));
    }
    check_queue(queue).map_err(Skipped::Inexpressible)?;
    let mut settings = queue.settings.clone();
    settings.remove(OWNER_KEY);
    let env_name = env.metadata.name.clone().unwrap_or_default();
    let spec = WorkerQueueSpec {
        environment_ref: EnvironmentRef { name: env_name.clone() },
        name: Some(queue.name.clone()),
        display_name: queue.display_name.clone().filter(|d| *d != queue.name),
        description: queue.description.clone(),
        max_workers: queue.max_workers.and_then(|m| i32::try_from(m).ok()),
        heartbeat_interval: queue
            .heartbeat_interval
            .and_then(|h| i32::try_from(h).ok())
            .unwrap_or(queue_limits::HEARTBEAT_DEFAULT),
        tags: set(&queue.tags),
        settings: Some(settings).filter(|s| !s.is_empty()),
        deletion_policy: opts.deletion_policy,
        management_policy: if opts.observe { ManagementPolicy::Observe } else { ManagementPolicy::Full },
        worker_secret: None,
        workers: None,
    };
    let name = metadata_name(&format!("{env_name}-{}", queue.name));
    let mut q = WorkerQueue::new(&name, spec);
    q.metadata = ObjectMeta {
        name: Some(name),
        namespace: opts.namespace.clone(),
        annotations: Some(BTreeMap::from([(QUEUE_ADOPT_ANNOTATION.to_owned(), queue.id.clone())])),
        ..Default::default()
    };
    Ok(q)
}

/// What the WorkerQueue schema refuses ([`queue_limits`]), said once.
fn check_queue(queue: &RemoteQueue) -> Result<(), String> {
    let chars = queue.name.chars().count();
    if !(queue_limits::NAME_MIN..=queue_limits::NAME_MAX).contains(&chars)
        || queue.name.starts_with("local-exec")
    {
        return Err(format!("its name {:?} is not one a WorkerQueue can hold", queue.name));
    }
    let longer = |text: &Option<String>, max: usize| text.as_ref().is_some_and(|t| t.chars().count() > max);
    if longer(&queue.display_name, queue_limits::DISPLAY_NAME)
        || longer(&queue.description, queue_limits::DESCRIPTION)
    {
        return Err("its display name or description is too long".to_owned());
    }
    if set(&queue.tags).len() > queue_limits::TAGS || queue.settings.len() > queue_limits::SETTINGS {
        return Err("it has too many tags or settings".to_owned());
    }
    if queue.max_workers.is_some_and(|m| m < 1 || m > i64::from(i32::MAX)) {
        return Err("its max_workers is out of range".to_owned());
    }
    Ok(())
}

/// What the Environment schema refuses ([`limits`]), said once.
fn check(remote: &RemoteEnvironment) -> Result<(), String> {
    let chars = remote.name.chars().count();
    if !(limits::NAME_MIN..=limits::NAME_MAX).contains(&chars) {
        return Err(format!(
            "its name has {chars} characters ({} to {} can be managed)",
            limits::NAME_MIN,
            limits::NAME_MAX
        ));
    }
    let longer = |text: &Option<String>, max: usize| text.as_ref().is_some_and(|t| t.chars().count() > max);
    if longer(&remote.display_name, limits::DISPLAY_NAME) {
        return Err(format!("its display name is longer than {} characters", limits::DISPLAY_NAME));
    }
    if longer(&remote.description, limits::DESCRIPTION) {
        return Err(format!("its description is longer than {} characters", limits::DESCRIPTION));
    }
    if set(&remote.tags).len() > limits::TAGS {
        return Err(format!("it has more than {} tags", limits::TAGS));
    }
    let exec = &remote.execution_environment;
    if let Some(bad) = exec.env_vars.keys().find(|k| !limits::is_env_var_name(k)) {
        return Err(format!("its env var {bad:?} is not a shell variable name"));
    }
    let max = limits::EXECUTION_ITEMS;
    if exec.env_vars.len() > max || set(&exec.secrets).len() > max || set(&exec.integration_ids).len() > max {
        return Err(format!(
            "its execution environment has more than {max} env vars, secrets or integrations"
        ));
    }
    Ok(())
}

/// A DNS-1123 label for the remote name, the same on every run and whatever else the
/// organisation holds: the name itself when it is one; otherwise the name lowercased, with runs
/// of other characters as one `-`, plus a hash of the exact name, so that names that differ only
/// in case or punctuation stay apart.
pub fn metadata_name(remote: &str) -> String {
    let lowered: String = remote
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let words: Vec<&str> = lowered.split('-').filter(|w| !w.is_empty()).collect();
    let joined = words.join("-");
    let starts = joined.starts_with(|c: char| c.is_ascii_lowercase());
    if joined == remote && starts && joined.len() <= 63 {
        return joined;
    }
    let mut base = if joined.is_empty() || !starts { format!("env-{joined}") } else { joined };
    base.truncate(54);
    let base = base.trim_end_matches('-');
    format!("{base}-{:08x}", crate::k8s::fields::fnv1a(remote.as_bytes()) as u32)
}

/// Writes `text` to `path`, readable by its owner only (created so: never readable by others,
/// not even for a moment).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

/// What the export did, for the summary on stderr.
#[derive(Debug, Default)]
pub struct Summary {
    pub written: usize,
    /// Env vars whose values went to a Secret manifest: (remote name, Secret, variables).
    pub moved: Vec<(String, String, Vec<String>)>,
    /// WorkerQueue manifests written.
    pub queues_written: usize,
    pub skipped: Vec<(String, Skipped)>,
    /// Exported, with a caveat: (remote name, what).
    pub caveats: Vec<(String, String)>,
}

/// Where `v` holds a null: Kubernetes drops nulls inside free-form fields, so a manifest cannot
/// carry them, and managing the environment would remove those keys.
fn nulls(v: &Value, path: &str, found: &mut Vec<String>) {
    match v {
        Value::Null => found.push(path.to_owned()),
        Value::Object(o) => o.iter().for_each(|(k, v)| nulls(v, &format!("{path}.{k}"), found)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| nulls(v, &format!("{path}[{i}]"), found)),
        _ => {}
    }
}

/// Whether an env var's name says that its value is a secret (case-insensitive).
pub fn looks_secret(name: &str) -> bool {
    const WORDS: [&str; 6] = ["PASSWORD", "PASSWD", "TOKEN", "SECRET", "KEY", "CREDENTIAL"];
    let upper = name.to_ascii_uppercase();
    WORDS.iter().any(|w| upper.contains(w))
}

/// Moves the env vars of `env` whose names look secret (every one, with `all`) into a Secret
/// manifest `<name>-env` of the same namespace, which `env` then references (`env[].valueFrom`):
/// the Environment's manifest carries none of their values. None when nothing moved.
pub fn split_secrets(env: &mut Environment, all: bool) -> Option<Secret> {
    let secret_name = format!("{}-env", env.metadata.name.as_deref().unwrap_or_default());
    let exec = env.spec.execution_environment.as_mut()?;
    let (moved, kept): (BTreeMap<_, _>, BTreeMap<_, _>) =
        std::mem::take(&mut exec.env_vars).into_iter().partition(|(k, _)| all || looks_secret(k));
    exec.env_vars = kept;
    if moved.is_empty() {
        return None;
    }
    exec.env = moved
        .keys()
        .map(|name| EnvVar {
            name: name.clone(),
            value_from: EnvVarSource {
                secret_key_ref: SecretKeySelector { name: secret_name.clone(), key: name.clone() },
            },
        })
        .collect();
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(secret_name),
            namespace: env.metadata.namespace.clone(),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        string_data: Some(moved),
        ..Default::default()
    })
}

/// What [`render`] made: the manifests for Git, and the Secret manifests that must not go there.
#[derive(Debug)]
pub struct Rendered {
    pub text: String,
    /// The Secret manifests, in the same format; None when no value was moved.
    pub secrets: Option<String>,
    pub summary: Summary,
}

/// Values as multi-document YAML, or a JSON `List`.
fn documents(values: &[Value], json: bool) -> Result<String, serde_json::Error> {
    Ok(if json {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values});
        serde_json::to_string_pretty(&list)? + "\n"
    } else {
        values.iter().map(yaml).collect::<Vec<_>>().join("---\n")
    })
}

/// The manifests of `remotes` as multi-document YAML, or a JSON `List`; sorted by name, each
/// Environment followed by the WorkerQueues of its environment (`queues`, by environment id).
/// Env var values that look secret (all, with `env_to_secrets`) go to Secret manifests apart.
pub fn render(
    remotes: &[RemoteEnvironment],
    queues: &BTreeMap<String, Vec<RemoteQueue>>,
    opts: &Options,
    json: bool,
) -> Result<Rendered, serde_json::Error> {
    let mut summary = Summary::default();
    let mut envs = Vec::new();
    let mut secrets = Vec::new();
    for r in remotes {
        match manifest(r, opts) {
            Ok(mut env) => {
                if let Some(secret) = split_secrets(&mut env, opts.env_to_secrets) {
                    let vars = secret.string_data.iter().flat_map(|d| d.keys().cloned()).collect();
                    summary.moved.push((
                        r.name.clone(),
                        secret.metadata.name.clone().unwrap_or_default(),
                        vars,
                    ));
                    secrets.push(serde_json::to_value(&secret)?);
                }
                let mut found = Vec::new();
                nulls(&Value::Object(r.settings.clone()), "settings", &mut found);
                nulls(
                    &Value::Object(r.execution_environment.mcp_servers.clone()),
                    "execution_environment.mcp_servers",
                    &mut found,
                );
                if !found.is_empty() {
                    let what = format!(
                        "null at {} cannot be kept in Kubernetes: managing it (Full) removes those keys",
                        found.join(", ")
                    );
                    summary.caveats.push((r.name.clone(), what));
                }
                let mut of_env = Vec::new();
                for q in queues.get(&r.id).into_iter().flatten() {
                    match queue_manifest(q, &env, opts) {
                        Ok(q) => of_env.push(q),
                        Err(why) => summary.skipped.push((format!("{}/{}", r.name, q.name), why)),
                    }
                }
                of_env.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                envs.push((env, of_env));
            }
            Err(why) => summary.skipped.push((r.name.clone(), why)),
        }
    }
    envs.sort_by(|a, b| a.0.metadata.name.cmp(&b.0.metadata.name));
    summary.written = envs.len();
    summary.queues_written = envs.iter().map(|(_, q)| q.len()).sum();
    let mut values: Vec<Value> = Vec::new();
    for (env, of_env) in &envs {
        values.push(serde_json::to_value(env)?);
        for q in of_env {
            values.push(serde_json::to_value(q)?);
        }
    }
    let secrets = if secrets.is_empty() { None } else { Some(documents(&secrets, json)?) };
    Ok(Rendered { text: documents(&values, json)?, secrets, summary })
}

/// `v` as block YAML that every YAML reader takes the same way. kubectl reads YAML 1.1, where a
/// plain `y`, `n`, `on` or `off` is a boolean (`x: y` arrives as `x: true`): every string that is
/// not plainly a word is quoted (JSON's escaping is YAML's double-quoted style).
pub fn yaml(v: &Value) -> String {
    let mut out = String::new();
    block(v, 0, &mut out);
    out
}

fn block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, v) in o {
                out.push_str(&format!("{pad}{}:", scalar(&Value::String(k.clone()))));
                nested(v, indent + 2, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                match item {
                    // `- name: x` and the object's other keys under it, as kubectl prints lists.
                    Value::Object(o) if !o.is_empty() => {
                        let mut inner = String::new();
                        block(item, indent + 2, &mut inner);
                        out.push_str(&format!("{pad}- {}", &inner[indent + 2..]));
                    }
                    _ => {
                        out.push_str(&format!("{pad}-"));
                        nested(item, indent + 2, out);
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

/// What follows a `key:` or a `-`: a scalar on the same line, else a block below.
fn nested(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            out.push('\n');
            block(v, indent, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            block(v, indent, out);
        }
        other => out.push_str(&format!(" {}\n", scalar(other))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if is_plain_word(s) => s.clone(),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// A string no YAML reader takes for anything else: a word of letters, digits, `_`, `.`, `-`,
/// `/`, starting with a letter, that is not a YAML 1.1 boolean or null.
fn is_plain_word(s: &str) -> bool {
    const SPECIAL: [&str; 12] =
        ["y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf", "infinity"];
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
        && !SPECIAL.contains(&s.to_ascii_lowercase().as_str())
}

/// Why an export printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the environments failed")]
    List(#[source] controlplane::Error),
    #[error(
        "env vars whose names look secret would be written into the manifests: {}; pass \
         --secrets-out FILE to write their values to Secret manifests there instead (referenced \
         with valueFrom); nothing was printed",
        .0.join(", ")
    )]
    SecretsInline(Vec<String>),
    #[error("cannot write the Secret manifests to {path}")]
    WriteSecrets {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Lists the organisation's environments and prints their manifests on stdout, the Secret
/// manifests of the values moved out of them to `secrets_out` (written first: the Git output
/// never appears without them); progress and the summary on stderr.
pub async fn run(
    client: &controlplane::Client,
    opts: &Options,
    json: bool,
    secrets_out: Option<&Path>,
) -> Result<Summary, Error> {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "listing the environments of {} …", client.base_url());
    let remotes = client.list(None).await.map_err(Error::List)?;
    let _ = writeln!(err, "{} found", remotes.len());
    let mut queues = BTreeMap::new();
    for r in remotes.iter().filter(|r| manifest(r, opts).is_ok()) {
        // One environment whose queues cannot be listed (the real server answers 500 once a
        // queue's tags or settings were set to null) costs its queues, not the export.
        match client.list_queues(&r.id).await {
            Ok(of_env) => {
                queues.insert(r.id.clone(), of_env);
            }
            Err(e) => {
                let _ = writeln!(err, "skipped the queues of {:?}: listing them failed: {e}", r.name);
            }
        }
    }
    let Rendered { text, secrets, summary } = render(&remotes, &queues, opts, json).map_err(|source| {
        Error::List(controlplane::Error::Decode { method: "GET", route: "/api/v1/environments", source })
    })?;
    // The file says what this export moved: empty when nothing was.
    match secrets_out {
        Some(path) => write_private(path, secrets.as_deref().unwrap_or_default())
            .map_err(|source| Error::WriteSecrets { path: path.display().to_string(), source })?,
        None if secrets.is_some() => {
            let named = summary
                .moved
                .iter()
                .flat_map(|(env, _, vars)| vars.iter().map(move |v| format!("{v} of {env:?}")));
            return Err(Error::SecretsInline(named.collect()));
        }
        None => {}
    }
    print!("{text}");
    for (env, secret, vars) in &summary.moved {
        let to = secrets_out.map(|p| p.display().to_string()).unwrap_or_default();
        let _ = writeln!(err, "moved {} of {env:?} to Secret {secret} in {to}", vars.join(", "));
    }
    let _ = writeln!(
        err,
        "wrote {} Environment and {} WorkerQueue manifest(s)",
        summary.written, summary.queues_written
    );
    for (name, what) in &summary.caveats {
        let _ = writeln!(err, "note {name:?}: {what}");
    }
    for (name, why) in &summary.skipped {
        let why = match why {
            Skipped::Default => {
                "the organisation's default environment (--include-default to export it)".to_owned()
            }
            Skipped::Managed(owner) => {
                format!("managed already, by {owner} (--include-managed to export it)")
            }
            Skipped::Inexpressible(reason) => format!("cannot be managed: {reason}"),
        };
        let _ = writeln!(err, "skipped {name:?}: {why}");
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn remote(v: Value) -> RemoteEnvironment {
        serde_json::from_value(v).unwrap()
    }

    fn opts() -> Options {
        Options {
            namespace: Some("imported".into()),
            observe: true,
            deletion_policy: DeletionPolicy::Orphan,
            include_managed: false,
            include_default: false,
            env_to_secrets: false,
        }
    }

    #[test]
    fn names_are_dns_labels_stable_and_apart() {
        assert_eq!(metadata_name("prod-eu-1"), "prod-eu-1", "a DNS label stays as it is");
        let a = metadata_name("Prod EU");
        let b = metadata_name("prod eu");
        let c = metadata_name("prod-eu");
        assert!(a.starts_with("prod-eu-") && b.starts_with("prod-eu-"), "{a} {b}");
        assert_ne!(a, b, "case apart");
        assert_ne!(a, c);
        assert_ne!(b, c);
        assert_eq!(a, metadata_name("Prod EU"), "the same on every run");
        assert_eq!(a, "prod-eu-aac6180a", "the same in every version");
        for odd in ["生产", "9lives", "-x-", "a".repeat(200).as_str(), "__", "ÄÖÜ team"] {
            let n = metadata_name(odd);
            let label = n.len() <= 63
                && n.starts_with(|c: char| c.is_ascii_lowercase())
                && !n.ends_with('-')
                && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            assert!(label, "{odd:?} → {n:?}");
        }
    }

    #[test]
    fn a_manifest_is_what_the_server_stores() {
        let r = remote(json!({
            "id": "id-1", "name": "Team A", "display_name": "Team A", "description": "d", "tags": ["b", "a"],
            "settings": {"k": {"n": 1}}, "status": "inactive",
            "execution_environment": {"env_vars": {"A": "1"}, "secrets": ["S"], "integration_ids": [], "mcp_servers": {}},
        }));
        let env = manifest(&r, &opts()).unwrap();
        let v = serde_json::to_value(&env).unwrap();
        assert_eq!(v["metadata"]["annotations"]["kubiya.ai/environment-id"], "id-1");
        assert_eq!(v["metadata"]["namespace"], "imported");
        assert_eq!(
            v["spec"],
            json!({"name": "Team A", "description": "d", "tags": ["a", "b"], "settings": {"k": {"n": 1}},
                   "executionEnvironment": {"envVars": {"A": "1"}, "secrets": ["S"]}, "state": "Inactive",
                   "deletionPolicy": "Orphan", "managementPolicy": "Observe"})
        );
        assert!(v.get("status").is_none());
        // Managed as is, the operator would write nothing but its marker.
        let owner = crate::reconcile::ownership::Owner {
            namespace_uid: "nsu".into(),
            cluster: "c".into(),
            uid: "u".into(),
            namespace: "imported".into(),
            name: env.metadata.name.clone().unwrap(),
        };
        let plain = env.spec.execution_environment.clone().unwrap_or_default().env_vars;
        let desired = crate::reconcile::desired::desired(&env, &owner, plain);
        let changes = crate::reconcile::desired::diff(&desired, &r);
        assert_eq!(changes.names(), "settings");
        assert!(changes.only_the_marker(&r.settings));
    }

    #[test]
    fn values_that_look_secret_go_to_a_secret_apart_and_the_operator_would_send_the_same() {
        let r = remote(json!({
            "id": "id-1", "name": "db", "status": "ready",
            "execution_environment": {"env_vars": {"DB_PASSWORD": "hunter2", "api_key": "k-1", "LOG": "debug"}},
        }));
        let Rendered { text, secrets, summary } =
            render(std::slice::from_ref(&r), &BTreeMap::new(), &opts(), false).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("k-1"), "{text}");
        assert!(text.contains("LOG: debug"), "{text}");
        let secrets = secrets.expect("a Secret manifest");
        assert!(
            secrets.contains("hunter2") && secrets.contains("k-1") && !secrets.contains("debug"),
            "{secrets}"
        );
        assert_eq!(
            summary.moved,
            [("db".to_owned(), "db-env".to_owned(), vec!["DB_PASSWORD".to_owned(), "api_key".to_owned()])]
        );

        // Applied together, the operator resolves the references to what the server holds.
        let env: Environment = serde_yaml_ng::from_str(&text).unwrap();
        let secret: Secret = serde_yaml_ng::from_str(&secrets).unwrap();
        assert_eq!(secret.metadata.namespace.as_deref(), Some("imported"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let data = secret
            .string_data
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())));
        let read = BTreeMap::from([("db-env".to_owned(), Some(data.collect()))]);
        let exec = env.spec.execution_environment.clone().unwrap();
        let vars = crate::reconcile::env_vars::merge(&exec, &read).unwrap();
        assert_eq!(vars, r.execution_environment.env_vars);

        // Every value, when asked; none moved, no Secret.
        let all = render(
            std::slice::from_ref(&r),
            &BTreeMap::new(),
            &Options { env_to_secrets: true, ..opts() },
            false,
        )
        .unwrap();
        assert!(!all.text.contains("debug") && all.secrets.unwrap().contains("debug"));
        let plain = remote(json!({"id": "2", "name": "plain", "status": "ready",
            "execution_environment": {"env_vars": {"LOG": "debug"}}}));
        assert!(render(&[plain], &BTreeMap::new(), &opts(), false).unwrap().secrets.is_none());
        for (name, secret) in [
            ("PGPASSWD", true),
            ("Session_Token", true),
            ("CREDENTIALS_FILE", true),
            ("SSH_KEY", true),
            ("client_secret", true),
            ("REGION", false),
            ("LOG_LEVEL", false),
        ] {
            assert_eq!(looks_secret(name), secret, "{name}");
        }
    }

    #[test]
    fn default_managed_and_inexpressible_ones_are_left_out_unless_asked() {
        let default = remote(json!({"id": "d", "name": "default", "status": "active"}));
        assert_eq!(manifest(&default, &opts()).unwrap_err(), Skipped::Default);
        assert!(manifest(&default, &Options { include_default: true, ..opts() }).is_ok());
        let managed = remote(json!({"id": "m", "name": "m1", "status": "ready",
            "settings": {"kubiya.ai/owner": {"cluster": "c", "uid": "u", "namespace": "ns", "name": "x"}}}));
        assert!(matches!(manifest(&managed, &opts()), Err(Skipped::Managed(o)) if o == "Environment ns/x"));
        assert!(manifest(&managed, &Options { include_managed: true, ..opts() }).is_ok());
        let released = remote(json!({"id": "r", "name": "r1", "status": "ready",
            "settings": {"kubiya.ai/owner": {"cluster": "c", "uid": "u", "namespace": "ns", "name": "x", "released": true}}}));
        let env = manifest(&released, &opts()).unwrap();
        assert!(env.spec.settings.is_none(), "the marker is not part of the spec");
        let named = remote(json!({"id": "n", "name": "n1", "display_name": "Name One", "status": "ready"}));
        assert_eq!(manifest(&named, &opts()).unwrap().spec.display_name.as_deref(), Some("Name One"));
        for (bad, why) in [
            (json!({"id": "x", "name": "x", "status": "ready"}), "1 characters"),
            (
                json!({"id": "x", "name": "ok", "status": "ready", "execution_environment": {"env_vars": {"1-BAD": "v"}}}),
                "not a shell variable name",
            ),
        ] {
            match manifest(&remote(bad), &opts()) {
                Err(Skipped::Inexpressible(reason)) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn yaml_reads_back_the_same_and_quotes_what_yaml_1_1_would_misread() {
        let v = json!({"apiVersion": "kubiya.ai/v1alpha1", "metadata": {"annotations": {"kubiya.ai/environment-id": "5da3"}},
            "spec": {"settings": {"n": 1.5, "y": "n", "on": "off", "list": [1, {"x": "y", "deep": [[1, 2], []]}, "plain"],
                "empty": {}, "none": null, "flag": true, "text": "two words: and # more", "num": "0123", "e": ""}}});
        let text = yaml(&v);
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, v, "{text}");
        for quoted in ["\"n\": 1.5", "\"y\": \"n\"", "\"on\": \"off\"", "x: \"y\"", "num: \"0123\""] {
            assert!(text.contains(quoted), "{quoted} in\n{text}");
        }
        assert!(text.contains("apiVersion: kubiya.ai/v1alpha1\n"), "{text}");
        assert!(
            text.contains("\n      - 1\n      - deep:\n"),
            "an object in a list starts on its dash: {text}"
        );
        assert!(text.contains("\n          - []\n        x: \"y\"\n"), "{text}");
    }

    #[test]
    fn output_is_sorted_and_the_same_twice() {
        let rs = vec![
            remote(json!({"id": "2", "name": "zeta", "status": "ready"})),
            remote(json!({"id": "1", "name": "alpha", "status": "ready"})),
        ];
        let Rendered { text: yaml, summary, .. } = render(&rs, &BTreeMap::new(), &opts(), false).unwrap();
        assert_eq!(summary.written, 2);
        assert!(yaml.find("name: alpha").unwrap() < yaml.find("name: zeta").unwrap());
        assert_eq!(render(&rs, &BTreeMap::new(), &opts(), false).unwrap().text, yaml);
        let json = render(&rs, &BTreeMap::new(), &opts(), true).unwrap().text;
        let with_null = vec![remote(
            json!({"id": "3", "name": "nully", "status": "ready", "settings": {"a": {"b": [null]}}}),
        )];
        let summary = render(&with_null, &BTreeMap::new(), &opts(), false).unwrap().summary;
        assert_eq!(summary.written, 1);
        assert!(summary.caveats[0].1.contains("settings.a.b[0]"), "{:?}", summary.caveats);
        let list: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn each_environment_is_followed_by_its_queues_and_a_managed_queue_is_left_out() {
        let rs = vec![remote(json!({"id": "e1", "name": "prod", "status": "ready"}))];
        let queue = |v: Value| serde_json::from_value::<RemoteQueue>(v).unwrap();
        let marker =
            json!({"kubiya.ai/owner": {"cluster": "c", "uid": "u", "namespace": "ns", "name": "held"}});
        let queues = BTreeMap::from([(
            "e1".to_owned(),
            vec![
                queue(json!({"id": "q2", "environment_id": "e1", "name": "zz", "status": "active",
                    "heartbeat_interval": 30, "max_workers": 4, "settings": {}})),
                queue(json!({"id": "q1", "environment_id": "e1", "name": "aa", "status": "active",
                    "heartbeat_interval": 60, "display_name": "aa", "tags": ["b", "a"]})),
                queue(json!({"id": "q3", "environment_id": "e1", "name": "mine", "settings": marker})),
            ],
        )]);
        let Rendered { text, summary, .. } = render(&rs, &queues, &opts(), true).unwrap();
        assert_eq!((summary.written, summary.queues_written), (1, 2));
        assert!(
            matches!(&summary.skipped[..], [(name, Skipped::Managed(_))] if name == "prod/mine"),
            "{:?}",
            summary.skipped
        );
        let list: Value = serde_json::from_str(&text).unwrap();
        let items = list["items"].as_array().unwrap();
        let kinds: Vec<_> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Environment", "WorkerQueue", "WorkerQueue"]);
        let (aa, zz) = (&items[1], &items[2]);
        assert_eq!(aa["metadata"]["name"], "prod-aa");
        assert_eq!(aa["metadata"]["namespace"], "imported", "beside its Environment");
        assert_eq!(aa["metadata"]["annotations"]["kubiya.ai/worker-queue-id"], "q1");
        assert_eq!(aa["spec"]["environmentRef"]["name"], "prod");
        assert_eq!(aa["spec"]["tags"], json!(["a", "b"]));
        assert!(aa["spec"].get("displayName").is_none(), "the default display name is not repeated");
        assert_eq!(
            (zz["spec"]["maxWorkers"].clone(), zz["spec"]["heartbeatInterval"].clone()),
            (json!(4), json!(30))
        );
        assert_eq!(zz["spec"]["name"], "zz");
    }
}
