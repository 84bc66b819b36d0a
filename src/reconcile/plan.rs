//! What the remote environment should look like, and what to do about it. Pure: no client.

use serde_json::{Map, Value, json};

use crate::controlplane::{EnvironmentBody, ExecutionEnvironmentBody, RemoteEnvironment};
use crate::resource::{Environment, RemoteState};

/// Key in the remote `settings` under which the operator stamps the environments it creates, so
/// that a crash between the create call and the status write is recovered, never duplicated, and
/// a same-named environment that is not ours is recognised as a conflict.
pub const OWNER_KEY: &str = "kubiya.ai/owner";

/// What a reconcile pass must do to the control plane.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// No remote environment: create it.
    Create,
    /// The remote environment differs: PATCH these fields (name → new value).
    Update(Map<String, Value>),
    /// Nothing to write.
    InSync,
}

/// The owner marker for `env`: the object's UID, namespace and name.
pub fn owner_marker(env: &Environment) -> Value {
    json!({
        "uid": env.metadata.uid.as_deref().unwrap_or_default(),
        "namespace": env.metadata.namespace.as_deref().unwrap_or_default(),
        "name": env.metadata.name.as_deref().unwrap_or_default(),
    })
}

/// The UID in `remote`'s owner marker, if it has one.
pub fn owner_uid(remote: &RemoteEnvironment) -> Option<&str> {
    remote.settings.get(OWNER_KEY)?.get("uid")?.as_str().filter(|u| !u.is_empty())
}

/// The `namespace/name` in `remote`'s owner marker, for messages.
pub fn owner_name(remote: &RemoteEnvironment) -> String {
    let m = remote.settings.get(OWNER_KEY);
    let field = |k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_str).unwrap_or("?");
    format!("{}/{}", field("namespace"), field("name"))
}

/// Whether `remote` carries the marker of the object with this UID.
pub fn is_owned_by(remote: &RemoteEnvironment, uid: &str) -> bool {
    owner_uid(remote).is_some_and(|u| u == uid)
}

/// The remote environment the spec asks for: the create body, and the reference for updates.
pub fn desired(env: &Environment) -> EnvironmentBody {
    let spec = &env.spec;
    let name = env.remote_name().to_owned();
    let mut settings = spec.settings.clone().unwrap_or_default();
    settings.insert(OWNER_KEY.to_owned(), owner_marker(env));
    let exec = spec.execution_environment.clone().unwrap_or_default();
    EnvironmentBody {
        // The server defaults display_name to the name; so do we, so that removing
        // displayName from the spec resets it instead of leaving the old one behind.
        display_name: Some(spec.display_name.clone().unwrap_or_else(|| name.clone())),
        name,
        description: spec.description.clone(),
        tags: set(&spec.tags),
        settings,
        execution_environment: ExecutionEnvironmentBody {
            env_vars: exec.env_vars,
            secrets: set(&exec.secrets),
            integration_ids: set(&exec.integration_ids),
            mcp_servers: exec.mcp_servers.unwrap_or_default(),
        },
        priority: spec.priority,
        policy_ids: set(&spec.policy_ids),
        status: spec.state.map(RemoteState::remote_status),
    }
}

/// Decides between create, update and nothing. Only fields the server stores and returns are
/// compared: `priority` and `policy_ids` are dropped by today's server and would never converge.
pub fn plan(desired: &EnvironmentBody, remote: Option<&RemoteEnvironment>) -> Plan {
    let Some(remote) = remote else {
        return Plan::Create;
    };
    let fields = diff(desired, remote);
    if fields.is_empty() { Plan::InSync } else { Plan::Update(fields) }
}

/// The fields of `desired` that `remote` does not match, as a PATCH body.
pub fn diff(desired: &EnvironmentBody, remote: &RemoteEnvironment) -> Map<String, Value> {
    let mut fields = Map::new();
    if desired.name != remote.name {
        fields.insert("name".into(), json!(desired.name));
    }
    if desired.display_name != remote.display_name {
        fields.insert("display_name".into(), json!(desired.display_name));
    }
    if desired.description != remote.description {
        fields.insert("description".into(), json!(desired.description));
    }
    if desired.tags != set(&remote.tags) {
        fields.insert("tags".into(), json!(desired.tags));
    }
    if desired.settings != remote.settings {
        fields.insert("settings".into(), Value::Object(desired.settings.clone()));
    }
    let r = &remote.execution_environment;
    let remote_exec = ExecutionEnvironmentBody {
        env_vars: r.env_vars.clone(),
        secrets: set(&r.secrets),
        integration_ids: set(&r.integration_ids),
        mcp_servers: r.mcp_servers.clone(),
    };
    if desired.execution_environment != remote_exec {
        // PATCH replaces the whole object with the keys sent: always send all four.
        fields.insert("execution_environment".into(), json!(desired.execution_environment));
    }
    // The enabled state is enforced only on a settled environment: never over provisioning or
    // an error, which are the control plane's to report.
    if let Some(want) = desired.status
        && matches!(remote.status.as_str(), "ready" | "active" | "inactive")
        && remote.status != want
    {
        fields.insert("status".into(), json!(want));
    }
    fields
}

/// A list with set semantics, in a canonical order.
fn set(items: &[String]) -> Vec<String> {
    let mut v = items.to_vec();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{EnvironmentSpec, ExecutionEnvironment};

    fn env() -> Environment {
        let mut e = Environment::new(
            "prod",
            EnvironmentSpec {
                name: Some("PROD".into()),
                tags: vec!["b".into(), "a".into(), "a".into()],
                priority: Some(3),
                policy_ids: vec!["p".into()],
                execution_environment: Some(ExecutionEnvironment {
                    secrets: vec!["S2".into(), "S1".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        e.metadata.namespace = Some("ns".into());
        e.metadata.uid = Some("uid-1".into());
        e
    }

    /// What the server would return right after creating `body`.
    fn created(body: &EnvironmentBody) -> RemoteEnvironment {
        serde_json::from_value(json!({
            "id": "id-1", "name": body.name, "display_name": body.display_name,
            "description": body.description, "tags": body.tags, "settings": body.settings,
            "status": "ready", "execution_environment": body.execution_environment,
        }))
        .unwrap()
    }

    #[test]
    fn desired_body_is_canonical_and_marked() {
        let d = desired(&env());
        assert_eq!(d.name, "PROD");
        assert_eq!(d.display_name.as_deref(), Some("PROD"));
        assert_eq!(d.tags, ["a", "b"]);
        assert_eq!(d.execution_environment.secrets, ["S1", "S2"]);
        assert_eq!(d.settings[OWNER_KEY]["uid"], "uid-1");
        assert_eq!(d.settings[OWNER_KEY]["namespace"], "ns");
    }

    #[test]
    fn missing_remote_is_created_and_fresh_remote_is_in_sync() {
        let d = desired(&env());
        assert_eq!(plan(&d, None), Plan::Create);
        assert_eq!(plan(&d, Some(&created(&d))), Plan::InSync);
    }

    #[test]
    fn ignored_fields_and_list_order_are_not_drift() {
        let d = desired(&env());
        let mut r = created(&d);
        r.tags.reverse();
        r.execution_environment.secrets.reverse();
        assert_eq!(plan(&d, Some(&r)), Plan::InSync);
    }

    #[test]
    fn only_differing_fields_are_patched() {
        let d = desired(&env());
        let mut r = created(&d);
        r.description = Some("changed by hand".into());
        r.execution_environment.env_vars.insert("X".into(), "1".into());
        let Plan::Update(f) = plan(&d, Some(&r)) else { panic!("expected an update") };
        assert_eq!(f.keys().collect::<Vec<_>>(), ["description", "execution_environment"]);
        assert_eq!(f["description"], Value::Null);
        assert_eq!(
            f["execution_environment"],
            json!({"env_vars": {}, "secrets": ["S1", "S2"], "integration_ids": [], "mcp_servers": {}})
        );
    }

    #[test]
    fn a_lost_owner_marker_is_restored() {
        let d = desired(&env());
        let mut r = created(&d);
        r.settings.remove(OWNER_KEY);
        assert!(!is_owned_by(&r, "uid-1"));
        let Plan::Update(f) = plan(&d, Some(&r)) else { panic!("expected an update") };
        assert!(f.contains_key("settings"));
    }

    #[test]
    fn the_enabled_state_is_enforced_only_when_settled() {
        let mut e = env();
        e.spec.state = Some(RemoteState::Inactive);
        let d = desired(&e);
        let mut r = created(&d);
        let Plan::Update(f) = plan(&d, Some(&r)) else { panic!("expected an update") };
        assert_eq!(f["status"], "inactive");
        r.status = "inactive".into();
        assert_eq!(plan(&d, Some(&r)), Plan::InSync);
        for busy in ["provisioning", "error"] {
            r.status = busy.into();
            assert_eq!(plan(&d, Some(&r)), Plan::InSync, "{busy}");
        }
    }

    #[test]
    fn ownership_needs_the_same_uid() {
        let d = desired(&env());
        let r = created(&d);
        assert!(is_owned_by(&r, "uid-1"));
        assert!(!is_owned_by(&r, "uid-2"));
        assert!(!is_owned_by(&r, ""));
    }
}
