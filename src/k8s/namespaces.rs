//! What the operator reads of namespaces: their UID (owner markers name it, so that a namespace
//! deleted and created again for someone else is not taken for the old one) and their labels (a
//! ClusterConnection's `namespaceSelector`). Read at most every few seconds per namespace.
//! Talks to the Kubernetes API.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{self, Timestamp};
use kube::api::Api;

use super::{Error, Op};

/// How long what was read of a namespace is taken as it was (for objects older than the read).
const TTL: Duration = Duration::from_secs(10);
/// The precision of `creationTimestamp` (whole seconds).
const TIMESTAMP_PRECISION: Duration = Duration::from_secs(1);

/// What the operator needs of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceFacts {
    pub uid: String,
    pub labels: BTreeMap<String, String>,
}

/// Namespaces as last read: when (monotonic, and by the wall clock), and what.
#[derive(Debug, Default)]
pub struct Namespaces(Mutex<HashMap<String, (Instant, Timestamp, NamespaceFacts)>>);

impl Namespaces {
    /// The namespace `name`, as read less than [`TTL`] ago and after `object_created` (the
    /// creation of the object asking): an object created since the last read may be in a
    /// namespace deleted and created again meanwhile, which must not pass for the old one.
    pub async fn get(
        &self,
        name: &str,
        object_created: Option<&Time>,
        kube: &kube::Client,
    ) -> Result<NamespaceFacts, Error> {
        if let Some((at, read, facts)) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(name)
            && fresh(*at, *read, object_created)
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
        let now = (Instant::now(), Timestamp::now(), facts.clone());
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), now);
        Ok(facts)
    }
}

/// Whether a read at `at` (wall clock: `read`) still stands for an object created at `created`.
fn fresh(at: Instant, read: Timestamp, created: Option<&Time>) -> bool {
    let after_the_object = created.is_none_or(|c| {
        let created = c.0 + jiff::SignedDuration::try_from(TIMESTAMP_PRECISION).unwrap_or_default();
        read > created
    });
    at.elapsed() < TTL && after_the_object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_stands_for_a_while_and_only_for_objects_older_than_it() {
        let now = Timestamp::now();
        let second = jiff::SignedDuration::from_secs(1);
        let at = |d: jiff::SignedDuration| Time(now - d);
        assert!(fresh(Instant::now(), now, None));
        assert!(fresh(Instant::now(), now, Some(&at(second * 5))), "an object of before the read");
        assert!(!fresh(Instant::now(), now, Some(&Time(now))), "created in the second of the read");
        assert!(!fresh(Instant::now(), now, Some(&at(second))), "a second before: the same second, perhaps");
        assert!(fresh(Instant::now(), now, Some(&at(second + jiff::SignedDuration::from_millis(1)))));
        assert!(!fresh(Instant::now(), now, Some(&Time(now + second))), "created after it");
        if let Some(long_ago) = Instant::now().checked_sub(TTL) {
            assert!(!fresh(long_ago, now, None), "read too long ago");
        }
    }
}
