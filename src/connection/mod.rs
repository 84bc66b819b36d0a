//! Connections: which control plane, with which API key, manages an Environment.
//!
//! A `Connection` (namespaced) or `ClusterConnection` names a control plane and the Secret
//! holding an organization's key; the operator's own key (flags) is the last resort. Each has
//! its own control-plane client (its own requests in flight, its own breaker), built from the
//! Secret's current value and kept up to date in place, so that a rotated key is used within
//! seconds and one organisation's outage never slows another's.

mod error;
pub mod pass;
mod refresh;
mod registry;
pub mod resolve;
mod status;

use std::fmt;

pub use error::{Error, Unusable};
pub use registry::{Defaults, HeldConnection, Registry, ResolvedConnection, State};

/// Where an Environment lives: the organisation its connection's key answers for, and the
/// control plane's origin. Recorded in status; a connection that now leads elsewhere
/// (another key, another `baseUrl`) is a change the Environment refuses, never a reason to
/// create it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The key's `organization` claim, which is what the control plane reads; None when the key
    /// names none (the control plane then refuses it).
    pub organization: Option<String>,
    /// Scheme, host and port.
    pub control_plane: String,
}

impl Place {
    pub fn new(organization: Option<String>, base_url: &url::Url) -> Place {
        Place { organization, control_plane: base_url.origin().ascii_serialization() }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.organization {
            Some(org) => write!(f, "organisation {org} at {}", self.control_plane),
            None => write!(f, "an organisation its key does not name, at {}", self.control_plane),
        }
    }
}

/// A connection, as status, metrics and messages name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnKey {
    /// The operator's own key, from its flags.
    Operator,
    /// A `Connection`, in the namespace of the Environments that use it.
    Namespaced { namespace: String, name: String },
    /// A `ClusterConnection`.
    Cluster { name: String },
}

impl ConnKey {
    /// As `status.connection` of an Environment records it (its own namespace implied).
    pub fn label(&self) -> String {
        match self {
            ConnKey::Operator => "operator".to_owned(),
            ConnKey::Namespaced { name, .. } => format!("Connection/{name}"),
            ConnKey::Cluster { name } => format!("ClusterConnection/{name}"),
        }
    }

    /// The key an Environment in `namespace` recorded as `label`, if it is one.
    pub fn from_label(label: &str, namespace: &str) -> Option<ConnKey> {
        match label.split_once('/') {
            None if label == "operator" => Some(ConnKey::Operator),
            Some(("Connection", name)) => {
                Some(ConnKey::Namespaced { namespace: namespace.to_owned(), name: name.to_owned() })
            }
            Some(("ClusterConnection", name)) => Some(ConnKey::Cluster { name: name.to_owned() }),
            _ => None,
        }
    }

    /// As the `connection` label of control-plane metrics: unique across namespaces.
    pub fn metric(&self) -> String {
        match self {
            ConnKey::Namespaced { namespace, name } => format!("Connection/{namespace}/{name}"),
            other => other.label(),
        }
    }
}

impl fmt::Display for ConnKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnKey::Operator => f.write_str("the operator's own API key"),
            ConnKey::Namespaced { namespace, name } => write!(f, "Connection {namespace}/{name}"),
            ConnKey::Cluster { name } => write!(f, "ClusterConnection {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_an_origin_and_an_organisation() {
        let url = url::Url::parse("https://cp.example:443/prefix/").unwrap();
        let place = Place::new(Some("acme".into()), &url);
        assert_eq!(place.control_plane, "https://cp.example");
        assert_eq!(place.to_string(), "organisation acme at https://cp.example");
        let other = Place::new(None, &url::Url::parse("http://127.0.0.1:8080").unwrap());
        assert_eq!(other.to_string(), "an organisation its key does not name, at http://127.0.0.1:8080");
    }

    #[test]
    fn labels_round_trip_within_a_namespace() {
        let keys = [
            ConnKey::Operator,
            ConnKey::Namespaced { namespace: "ns".into(), name: "default".into() },
            ConnKey::Cluster { name: "acme".into() },
        ];
        for k in keys {
            assert_eq!(ConnKey::from_label(&k.label(), "ns"), Some(k.clone()), "{k}");
        }
        assert_eq!(ConnKey::from_label("Secret/x", "ns"), None);
        assert_eq!(ConnKey::from_label("", "ns"), None);
        assert_eq!(
            ConnKey::Namespaced { namespace: "a".into(), name: "b".into() }.metric(),
            "Connection/a/b"
        );
    }
}
