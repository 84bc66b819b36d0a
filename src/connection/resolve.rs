//! Which connection an Environment uses, and whether it may. Pure: no client.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::ConnKey;
use super::error::Unusable;
use crate::resource::{ConnectionKind, Environment};

/// The `Connection` an Environment uses when it names none.
pub const DEFAULT_CONNECTION: &str = "default";

/// The connection `env` uses: `spec.connectionRef`, else its namespace's `default` Connection,
/// else the operator's own key. Once the environment exists remotely, the connection it was
/// managed through (`status.connection`) must stay the one it resolves to: moving an environment
/// between organisations (a `default` Connection created later, the operator's key changed to
/// another organisation's) would lose it and create it again elsewhere.
pub fn choose(env: &Environment, default_exists: bool, operator_key: bool) -> Result<ConnKey, Unusable> {
    let namespace = env.metadata.namespace.clone().unwrap_or_default();
    let chosen = match &env.spec.connection_ref {
        Some(r) => match r.kind {
            ConnectionKind::Connection => {
                ConnKey::Namespaced { namespace: namespace.clone(), name: r.name.clone() }
            }
            ConnectionKind::ClusterConnection => ConnKey::Cluster { name: r.name.clone() },
        },
        None if default_exists => {
            ConnKey::Namespaced { namespace: namespace.clone(), name: DEFAULT_CONNECTION.to_owned() }
        }
        None if operator_key => ConnKey::Operator,
        None => return Err(Unusable::NoConnection { namespace }),
    };
    let status = env.status.as_ref();
    let exists = status.is_some_and(|s| s.environment_id.is_some());
    match status.and_then(|s| s.connection.as_deref()) {
        Some(was) if exists && was != chosen.label() => {
            Err(Unusable::Changed { was: was.to_owned(), now: chosen.label() })
        }
        _ => Ok(chosen),
    }
}

/// Whether `selector` selects a namespace with these labels (unset or empty: every namespace).
pub fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else { return true };
    let labels_match = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // An operator Kubernetes does not know selects nothing.
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{ConnectionRef, EnvironmentSpec, EnvironmentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn env(connection_ref: Option<ConnectionRef>) -> Environment {
        let mut e = Environment::new("e", EnvironmentSpec { connection_ref, ..Default::default() });
        e.metadata.namespace = Some("team-a".into());
        e
    }

    fn cref(kind: ConnectionKind, name: &str) -> Option<ConnectionRef> {
        Some(ConnectionRef { kind, name: name.into() })
    }

    #[test]
    fn the_reference_then_the_namespace_default_then_the_operator() {
        let ns = |name: &str| ConnKey::Namespaced { namespace: "team-a".into(), name: name.into() };
        let named = env(cref(ConnectionKind::Connection, "org"));
        assert_eq!(choose(&named, true, true).ok(), Some(ns("org")));
        let cluster = env(cref(ConnectionKind::ClusterConnection, "acme"));
        assert_eq!(choose(&cluster, true, true).ok(), Some(ConnKey::Cluster { name: "acme".into() }));
        assert_eq!(choose(&env(None), true, true).ok(), Some(ns("default")));
        assert_eq!(choose(&env(None), false, true).ok(), Some(ConnKey::Operator));
        assert!(matches!(
            choose(&env(None), false, false),
            Err(Unusable::NoConnection { namespace }) if namespace == "team-a"
        ));
        assert_eq!(choose(&named, false, false).ok(), Some(ns("org")), "a named one needs nothing else");
    }

    #[test]
    fn an_existing_environment_keeps_its_connection() {
        let mut e = env(None);
        e.status = Some(EnvironmentStatus { connection: Some("operator".into()), ..Default::default() });
        assert_eq!(
            choose(&e, true, true).ok(),
            Some(ConnKey::Namespaced { namespace: "team-a".into(), name: "default".into() }),
            "not created yet: free to resolve anew"
        );
        e.status.as_mut().unwrap().environment_id = Some("id".into());
        assert!(matches!(
            choose(&e, true, true),
            Err(Unusable::Changed { was, now }) if was == "operator" && now == "Connection/default"
        ));
        assert_eq!(choose(&e, false, true).ok(), Some(ConnKey::Operator));
        e.status.as_mut().unwrap().connection = None;
        assert!(choose(&e, true, true).is_ok(), "recorded by an older version: taken as it resolves");
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> =
            [("kubiya.ai/org".to_owned(), "acme".to_owned()), ("tier".to_owned(), "prod".to_owned())].into();
        assert!(selects(None, &labels));
        assert!(selects(Some(&LabelSelector::default()), &BTreeMap::new()), "empty selects every namespace");
        let by_label = |k: &str, v: &str| LabelSelector {
            match_labels: Some([(k.to_owned(), v.to_owned())].into()),
            ..Default::default()
        };
        assert!(selects(Some(&by_label("kubiya.ai/org", "acme")), &labels));
        assert!(!selects(Some(&by_label("kubiya.ai/org", "other")), &labels));
        assert!(!selects(Some(&by_label("missing", "x")), &labels));
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
            }]),
            ..Default::default()
        };
        assert!(selects(Some(&expr("In", &["prod", "dev"])), &labels));
        assert!(!selects(Some(&expr("In", &["dev"])), &labels));
        assert!(selects(Some(&expr("NotIn", &["dev"])), &labels));
        assert!(!selects(Some(&expr("NotIn", &["prod"])), &labels));
        assert!(selects(Some(&expr("Exists", &[])), &labels));
        assert!(!selects(Some(&expr("DoesNotExist", &[])), &labels));
        assert!(selects(Some(&expr("NotIn", &["prod"])), &BTreeMap::new()), "NotIn holds without the label");
        assert!(!selects(Some(&expr("Bogus", &[])), &labels));
    }
}
