//! Connection errors: why an Environment has no connection to use (what its pass reports), and
//! why a pass over a connection failed. Messages never carry an API key.

use crate::k8s;

/// Why an Environment cannot use a connection now.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error(
        "no connection to manage it with: set spec.connectionRef, create a Connection named default in \
         namespace {namespace}, or give the operator an API key"
    )]
    NoConnection { namespace: String },
    #[error(
        "the environment is managed through {was}, but the Environment now resolves to {now}: an \
         environment cannot move between organisations; remove what changed the resolution (a new \
         default Connection, say), or delete this resource and create another"
    )]
    Changed { was: String, now: String },
    #[error("{connection} does not exist: create it, or change spec.connectionRef")]
    NotFound { connection: String },
    #[error("{connection} is not ready: {why}")]
    NotReady { connection: String, why: String, permanent: bool },
    #[error(
        "{connection} does not select namespace {namespace} (its namespaceSelector): label the \
         namespace, or use another connection"
    )]
    NamespaceNotAllowed { connection: String, namespace: String },
    #[error(transparent)]
    Kube(#[from] k8s::Error),
}

impl Unusable {
    /// The CamelCase reason in conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Unusable::NoConnection { .. } => "NoConnection",
            Unusable::Changed { .. } => "ConnectionChanged",
            Unusable::NotFound { .. } => "ConnectionNotFound",
            Unusable::NotReady { .. } => "ConnectionNotReady",
            Unusable::NamespaceNotAllowed { .. } => "NamespaceNotAllowed",
            Unusable::Kube(_) => "KubernetesApiError",
        }
    }

    /// A bounded metric label.
    pub fn metric(&self) -> &'static str {
        match self {
            Unusable::NoConnection { .. } => "no_connection",
            Unusable::Changed { .. } => "connection_changed",
            Unusable::NotFound { .. } => "connection_not_found",
            Unusable::NotReady { .. } => "connection_not_ready",
            Unusable::NamespaceNotAllowed { .. } => "namespace_not_allowed",
            Unusable::Kube(e) => e.op.metric(),
        }
    }

    /// Whether it waits for a human: everything but a connection on its way, or the API server.
    pub fn is_permanent(&self) -> bool {
        match self {
            Unusable::NotReady { permanent, .. } => *permanent,
            Unusable::Kube(_) => false,
            _ => true,
        }
    }

    /// Waiting for the connection itself: its next change wakes the Environment.
    pub fn waits_for_connection(&self) -> bool {
        matches!(self, Unusable::NotReady { .. })
    }
}

/// Why a pass over a Connection or ClusterConnection failed (the Kubernetes API); retried shortly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] k8s::Error),
    #[error("the object has no name or namespace")]
    Unnamed,
}
