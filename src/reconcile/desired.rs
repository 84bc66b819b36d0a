//! What the remote environment should look like, and where it differs from that. Pure: no client.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::ownership::{Marker, OWNER_KEY, Owner, with_marker};
use crate::controlplane::{EnvironmentBody, ExecutionEnvironmentBody, RemoteEnvironment};
use crate::resource::{Environment, RemoteState};

/// A field of a remote environment that the operator compares and writes. The one list behind
/// the diff, the Events that name what changed, and the metrics' `field` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Name,
    DisplayName,
    Description,
    Tags,
    Settings,
    ExecutionEnvironment,
    /// The enabled state (`active` / `inactive`).
    Status,
}

/// A field of a remote object: its key in the control plane's bodies (also its metric label),
/// and which one holds the `settings` (the owner marker's place).
pub trait Wire: Copy + Ord {
    const SETTINGS: Self;
    fn wire(self) -> &'static str;
}

impl Wire for Field {
    const SETTINGS: Field = Field::Settings;

    fn wire(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::DisplayName => "display_name",
            Field::Description => "description",
            Field::Tags => "tags",
            Field::Settings => "settings",
            Field::ExecutionEnvironment => "execution_environment",
            Field::Status => "status",
        }
    }
}

/// The fields to write, each with its new value: a PATCH body.
#[derive(Clone, Debug, PartialEq)]
pub struct Changes<F = Field>(BTreeMap<F, Value>);

impl<F> Default for Changes<F> {
    fn default() -> Self {
        Changes(BTreeMap::new())
    }
}

impl<F: Wire> Changes<F> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields, in [`Field`] order.
    pub fn fields(&self) -> impl Iterator<Item = F> + '_ {
        self.0.keys().copied()
    }

    /// "description, tags", for messages.
    pub fn names(&self) -> String {
        self.fields().map(F::wire).collect::<Vec<_>>().join(", ")
    }

    /// As the PATCH body.
    pub fn body(&self) -> Map<String, Value> {
        self.0.iter().map(|(f, v)| (f.wire().to_owned(), v.clone())).collect()
    }

    /// Whether these only rewrite the owner marker in `remote_settings`: not a change anyone made
    /// to the object (a claim, or a marker from an older version brought up to date).
    pub fn only_the_marker(&self, remote_settings: &Map<String, Value>) -> bool {
        let Some(Value::Object(settings)) = self.0.get(&F::SETTINGS) else { return false };
        self.0.len() == 1 && without_marker(settings) == without_marker(remote_settings)
    }

    pub(crate) fn set(&mut self, field: F, value: Value) {
        self.0.insert(field, value);
    }
}

/// The changes that put the owner marker `marker` on `remote`, and nothing else.
pub fn marking(remote: &RemoteEnvironment, marker: &Marker) -> Changes {
    marking_settings(&remote.settings, marker)
}

/// The changes that put the owner marker `marker` into `settings`, and nothing else.
pub fn marking_settings<F: Wire>(settings: &Map<String, Value>, marker: &Marker) -> Changes<F> {
    let mut c = Changes::default();
    c.set(F::SETTINGS, Value::Object(with_marker(settings, marker)));
    c
}

pub(crate) fn without_marker(settings: &Map<String, Value>) -> Map<String, Value> {
    let mut s = settings.clone();
    s.remove(OWNER_KEY);
    s
}

/// The remote environment the spec asks for, marked as `owner`'s, with `env_vars` (the spec's
/// own and those from its Secrets, [`super::env_vars`]): the create body, and the reference for
/// updates.
pub fn desired(env: &Environment, owner: &Owner, env_vars: BTreeMap<String, String>) -> EnvironmentBody {
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
            env_vars,
            secrets: set(&exec.secrets),
            integration_ids: set(&exec.integration_ids),
            mcp_servers: exec.mcp_servers.unwrap_or_default(),
        },
        priority: spec.priority,
        policy_ids: set(&spec.policy_ids),
        status: spec.state.map(RemoteState::remote_status),
    }
}

/// The fields of `desired` that `remote` does not match, with their desired values. Only fields
/// the server stores and returns are compared: `priority` and `policy_ids` are dropped by today's
/// server and would never converge.
pub fn diff(desired: &EnvironmentBody, remote: &RemoteEnvironment) -> Changes {
    let mut c = Changes::default();
    if desired.name != remote.name {
        c.set(Field::Name, json!(desired.name));
    }
    if desired.display_name != remote.display_name {
        c.set(Field::DisplayName, json!(desired.display_name));
    }
    if desired.description != remote.description {
        c.set(Field::Description, json!(desired.description));
    }
    if desired.tags != set(&remote.tags) {
        c.set(Field::Tags, json!(desired.tags));
    }
    if desired.settings != remote.settings {
        c.set(Field::Settings, Value::Object(desired.settings.clone()));
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
        c.set(Field::ExecutionEnvironment, json!(desired.execution_environment));
    }
    // The enabled state is enforced only on a settled environment: never over provisioning or
    // an error, which are the control plane's to report.
    if let Some(want) = desired.status
        && matches!(remote.status.as_str(), "ready" | "active" | "inactive")
        && remote.status != want
    {
        c.set(Field::Status, json!(want));
    }
    c
}

/// The fields where `remote` differs from `desired`, owner markers aside: what Observe reports.
pub fn drift(desired: &EnvironmentBody, remote: &RemoteEnvironment) -> Vec<Field> {
    let mut desired = desired.clone();
    desired.settings = without_marker(&desired.settings);
    let mut seen = remote.clone();
    seen.settings = without_marker(&seen.settings);
    diff(&desired, &seen).fields().collect()
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
        Owner {
            cluster: "c".into(),
            uid: "uid-1".into(),
            namespace: "ns".into(),
            namespace_uid: "nsu".into(),
            name: "prod".into(),
        }
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

    fn keys(c: &Changes) -> Vec<&'static str> {
        c.fields().map(Field::wire).collect()
    }

    #[test]
    fn desired_body_is_canonical_and_marked() {
        let d = desired(&env(), &owner(), BTreeMap::new());
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
        let d = desired(&e, &owner(), BTreeMap::new());
        assert_eq!((d.name.as_str(), d.display_name.as_deref()), ("prod", Some("Production")));
    }

    #[test]
    fn a_fresh_remote_is_in_sync_and_keeps_the_remote() {
        let d = desired(&env(), &owner(), BTreeMap::new());
        let r = created(&d);
        assert!(diff(&d, &r).is_empty());
    }

    #[test]
    fn ignored_fields_and_list_order_are_not_drift() {
        let d = desired(&env(), &owner(), BTreeMap::new());
        let mut r = created(&d);
        r.tags.reverse();
        r.execution_environment.secrets.reverse();
        assert!(diff(&d, &r).is_empty());
    }

    #[test]
    fn only_differing_fields_are_patched() {
        let d = desired(&env(), &owner(), BTreeMap::new());
        let mut r = created(&d);
        r.description = Some("changed by hand".into());
        r.execution_environment.env_vars.insert("X".into(), "1".into());
        let c = diff(&d, &r);
        assert_eq!(keys(&c), ["description", "execution_environment"]);
        let f = c.body();
        assert_eq!(f["description"], Value::Null);
        assert_eq!(
            f["execution_environment"],
            json!({"env_vars": {}, "secrets": ["S1", "S2"], "integration_ids": [], "mcp_servers": {}})
        );
    }

    /// Each field on its own: a difference in it alone is a PATCH of it alone.
    #[test]
    fn every_compared_field_is_patched_on_its_own() {
        let d = desired(&env(), &owner(), BTreeMap::new());
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
            assert_eq!(keys(&diff(&d, &r)), [field]);
        }
    }

    #[test]
    fn a_lost_or_foreign_owner_marker_is_rewritten_and_only_that_is_the_marker_alone() {
        let d = desired(&env(), &owner(), BTreeMap::new());
        let mut r = created(&d);
        r.settings.remove(OWNER_KEY);
        let c = diff(&d, &r);
        assert_eq!(keys(&c), ["settings"]);
        assert!(c.only_the_marker(&r.settings));
        assert!(drift(&d, &r).is_empty(), "the marker is not drift");
        r.settings.insert("k".into(), json!(1));
        assert!(!diff(&d, &r).only_the_marker(&r.settings), "another settings key changed too");
        assert_eq!(drift(&d, &r), [Field::Settings]);
        r.settings.remove("k");
        r.description = Some("x".into());
        assert!(!diff(&d, &r).only_the_marker(&r.settings), "another field changed too");
        assert_eq!(drift(&d, &r), [Field::Description]);
        let marked = marking(&r, &Marker::held_by(&owner()));
        assert_eq!(keys(&marked), ["settings"]);
        assert!(marked.only_the_marker(&r.settings));
        assert_eq!(marked.names(), "settings");
    }

    #[test]
    fn the_enabled_state_is_enforced_only_when_settled() {
        let mut e = env();
        e.spec.state = Some(RemoteState::Inactive);
        let d = desired(&e, &owner(), BTreeMap::new());
        let mut r = created(&d);
        assert_eq!(diff(&d, &r).body()["status"], "inactive");
        r.status = "active".into();
        assert_eq!(diff(&d, &r).body()["status"], "inactive");
        r.status = "inactive".into();
        assert!(diff(&d, &r).is_empty());
        for busy in ["provisioning", "error", "pending"] {
            r.status = busy.into();
            assert!(diff(&d, &r).is_empty(), "{busy}");
        }
    }
}

#[cfg(test)]
mod field_tests {
    use super::*;

    #[test]
    fn every_field_has_its_own_wire_name() {
        let all = [
            Field::Name,
            Field::DisplayName,
            Field::Description,
            Field::Tags,
            Field::Settings,
            Field::ExecutionEnvironment,
            Field::Status,
        ];
        let names: std::collections::BTreeSet<_> = all.iter().map(|f| f.wire()).collect();
        assert_eq!(names.len(), all.len());
        assert!(names.contains("execution_environment") && names.contains("display_name"));
    }
}
