//! What the remote environment should look like, and what to write to it. Pure: no client.

use serde_json::{Map, Value, json};

use super::ownership::{Marker, OWNER_KEY, Owner, with_marker};
use crate::controlplane::{EnvironmentBody, ExecutionEnvironmentBody, RemoteEnvironment};
use crate::resource::{Environment, RemoteState};

/// What a reconcile pass must write to an existing remote environment.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Nothing to write.
    InSync(RemoteEnvironment),
    /// The remote environment differs: PATCH these fields (name → new value).
    Update { remote: RemoteEnvironment, fields: Map<String, Value> },
}

/// The remote environment the spec asks for, marked as `owner`'s: the create body, and the
/// reference for updates.
pub fn desired(env: &Environment, owner: &Owner) -> EnvironmentBody {
    let spec = &env.spec;
    let name = env.remote_name().to_owned();
    let settings = with_marker(&spec.settings.clone().unwrap_or_default(), &Marker::held_by(owner));
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

/// Decides between an update and nothing. Only fields the server stores and returns are
/// compared: `priority` and `policy_ids` are dropped by today's server and would never converge.
pub fn plan(desired: &EnvironmentBody, remote: RemoteEnvironment) -> Plan {
    let fields = diff(desired, &remote);
    if fields.is_empty() { Plan::InSync(remote) } else { Plan::Update { remote, fields } }
}

/// Whether `fields` only rewrite the owner marker: not a change anyone made to the environment
/// (a claim, or a marker from an older version brought up to date).
pub fn only_the_marker(fields: &Map<String, Value>, remote: &RemoteEnvironment) -> bool {
    let Some(Value::Object(settings)) = fields.get("settings") else { return false };
    let without = |s: &Map<String, Value>| {
        let mut s = s.clone();
        s.remove(OWNER_KEY);
        s
    };
    fields.len() == 1 && without(settings) == without(&remote.settings)
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
pub(crate) fn set(items: &[String]) -> Vec<String> {
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

    fn owner() -> Owner {
        Owner { cluster: "c".into(), uid: "uid-1".into(), namespace: "ns".into(), name: "prod".into() }
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

    fn update_of(plan: Plan) -> Map<String, Value> {
        match plan {
            Plan::Update { fields, .. } => fields,
            Plan::InSync(_) => panic!("expected an update"),
        }
    }

    #[test]
    fn desired_body_is_canonical_and_marked() {
        let d = desired(&env(), &owner());
        assert_eq!(d.name, "PROD");
        assert_eq!(d.display_name.as_deref(), Some("PROD"));
        assert_eq!(d.tags, ["a", "b"]);
        assert_eq!(d.execution_environment.secrets, ["S1", "S2"]);
        assert_eq!(d.priority, Some(3));
        assert_eq!(d.policy_ids, ["p"]);
        assert_eq!(d.status, None);
        assert_eq!(Marker::read(&d.settings), Some(Marker::held_by(&owner())));
    }

    #[test]
    fn a_display_name_is_kept_and_metadata_name_is_the_default_name() {
        let mut e = env();
        e.spec.name = None;
        e.spec.display_name = Some("Production".into());
        let d = desired(&e, &owner());
        assert_eq!((d.name.as_str(), d.display_name.as_deref()), ("prod", Some("Production")));
    }

    #[test]
    fn a_fresh_remote_is_in_sync_and_keeps_the_remote() {
        let d = desired(&env(), &owner());
        let r = created(&d);
        assert_eq!(plan(&d, r.clone()), Plan::InSync(r));
    }

    #[test]
    fn ignored_fields_and_list_order_are_not_drift() {
        let d = desired(&env(), &owner());
        let mut r = created(&d);
        r.tags.reverse();
        r.execution_environment.secrets.reverse();
        assert!(matches!(plan(&d, r), Plan::InSync(_)));
    }

    #[test]
    fn only_differing_fields_are_patched() {
        let d = desired(&env(), &owner());
        let mut r = created(&d);
        r.description = Some("changed by hand".into());
        r.execution_environment.env_vars.insert("X".into(), "1".into());
        let f = update_of(plan(&d, r));
        assert_eq!(f.keys().collect::<Vec<_>>(), ["description", "execution_environment"]);
        assert_eq!(f["description"], Value::Null);
        assert_eq!(
            f["execution_environment"],
            json!({"env_vars": {}, "secrets": ["S1", "S2"], "integration_ids": [], "mcp_servers": {}})
        );
    }

    /// Each field on its own: a difference in it alone is a PATCH of it alone.
    #[test]
    fn every_compared_field_is_patched_on_its_own() {
        let d = desired(&env(), &owner());
        type Change = Box<dyn Fn(&mut RemoteEnvironment)>;
        let cases: Vec<(&str, Change)> = vec![
            ("name", Box::new(|r| r.name = "other".into())),
            ("display_name", Box::new(|r| r.display_name = Some("other".into()))),
            ("description", Box::new(|r| r.description = Some("other".into()))),
            ("tags", Box::new(|r| r.tags.push("z".into()))),
            ("settings", Box::new(|r| drop(r.settings.insert("k".into(), json!(1))))),
            ("execution_environment", Box::new(|r| r.execution_environment.integration_ids.push("i".into()))),
            (
                "execution_environment",
                Box::new(|r| drop(r.execution_environment.mcp_servers.insert("m".into(), json!({})))),
            ),
        ];
        for (field, change) in cases {
            let mut r = created(&d);
            change(&mut r);
            let f = update_of(plan(&d, r));
            assert_eq!(f.keys().collect::<Vec<_>>(), [field]);
        }
    }

    #[test]
    fn a_lost_or_foreign_owner_marker_is_rewritten_and_only_that_is_the_marker_alone() {
        let d = desired(&env(), &owner());
        let mut r = created(&d);
        r.settings.remove(OWNER_KEY);
        let f = update_of(plan(&d, r.clone()));
        assert_eq!(f.keys().collect::<Vec<_>>(), ["settings"]);
        assert!(only_the_marker(&f, &r));
        r.settings.insert("k".into(), json!(1));
        let f = update_of(plan(&d, r.clone()));
        assert!(!only_the_marker(&f, &r), "another settings key changed too");
        r.settings.remove("k");
        r.description = Some("x".into());
        let f = update_of(plan(&d, r.clone()));
        assert!(!only_the_marker(&f, &r), "another field changed too");
    }

    #[test]
    fn the_enabled_state_is_enforced_only_when_settled() {
        let mut e = env();
        e.spec.state = Some(RemoteState::Inactive);
        let d = desired(&e, &owner());
        let mut r = created(&d);
        assert_eq!(update_of(plan(&d, r.clone()))["status"], "inactive");
        r.status = "active".into();
        assert_eq!(update_of(plan(&d, r.clone()))["status"], "inactive");
        r.status = "inactive".into();
        assert!(matches!(plan(&d, r.clone()), Plan::InSync(_)));
        for busy in ["provisioning", "error", "pending"] {
            r.status = busy.into();
            assert!(matches!(plan(&d, r.clone()), Plan::InSync(_)), "{busy}");
        }
    }
}
