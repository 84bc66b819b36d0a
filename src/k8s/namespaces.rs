//! What the operator reads of namespaces: their UID (owner markers name it, so that a namespace
//! deleted and created again for someone else is not taken for the old one) and their labels (a
//! ClusterConnection's `namespaceSelector`). Read at most every few seconds per namespace.
//! Talks to the Kubernetes API.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

use super::{Error, Op};

/// How long what was read of a namespace is taken as it was. A namespace deleted and created
/// again in less than this (its objects deleted first) would be taken for the old one: the
/// window is this short, and the old one's Environments are gone by then.
const TTL: Duration = Duration::from_secs(10);

/// What the operator needs of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceFacts {
    pub uid: String,
    pub labels: BTreeMap<String, String>,
}

/// Namespaces as last read.
#[derive(Debug, Default)]
pub struct Namespaces(Mutex<HashMap<String, (Instant, NamespaceFacts)>>);

impl Namespaces {
    /// The namespace `name`, read again when what was read is older than [`TTL`].
    pub async fn get(&self, name: &str, kube: &kube::Client) -> Result<NamespaceFacts, Error> {
        if let Some((at, facts)) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(name)
            && at.elapsed() < TTL
        {
            return Ok(facts.clone());
        }
        let ns = Api::<Namespace>::all(kube.clone())
            .get_metadata(name)
            .await
            .map_err(super::failed(Op::ReadNamespace))?;
        let facts = NamespaceFacts {
            uid: ns.metadata.uid.unwrap_or_default(),
            labels: ns.metadata.labels.unwrap_or_default(),
        };
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), (Instant::now(), facts.clone()));
        Ok(facts)
    }
}
