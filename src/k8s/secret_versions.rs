//! The resourceVersion of every Secret of a watched scope, from a watch of their metadata only:
//! what tells a reader whether a Secret it read before has changed, without reading it again
//! (and without ever holding a Secret's data). A relist replaces the whole index once complete,
//! as kube's caches do.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;
use kube::runtime::watcher;

type Key = (String, String);

#[derive(Debug, Default)]
pub struct SecretVersions(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    current: HashMap<Key, String>,
    /// A relist under way: what it has delivered so far.
    relist: Option<HashMap<Key, String>>,
}

impl SecretVersions {
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let entry = |s: &PartialObjectMeta<Secret>| {
            ((s.namespace().unwrap_or_default(), s.name_any()), s.resource_version().unwrap_or_default())
        };
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(s) => {
                let (k, v) = entry(s);
                state.current.insert(k, v);
            }
            watcher::Event::Delete(s) => {
                state.current.remove(&entry(s).0);
            }
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(s) => {
                let (k, v) = entry(s);
                state.relist.get_or_insert_default().insert(k, v);
            }
            watcher::Event::InitDone => {
                if let Some(listed) = state.relist.take() {
                    state.current = listed;
                }
            }
        }
    }

    /// The Secret's resourceVersion as last watched; None when it is not known (not listed yet,
    /// deleted, or outside this scope).
    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        let state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.current.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, version: &str) -> PartialObjectMeta<Secret> {
        let mut m = PartialObjectMeta::<Secret>::default();
        m.metadata.namespace = Some("ns".into());
        m.metadata.name = Some(name.into());
        m.metadata.resource_version = Some(version.into());
        m
    }

    #[test]
    fn versions_follow_the_watch_and_a_relist_replaces_them_once_complete() {
        let v = SecretVersions::default();
        v.apply(&watcher::Event::Apply(meta("a", "1")));
        v.apply(&watcher::Event::Apply(meta("b", "2")));
        v.apply(&watcher::Event::Apply(meta("a", "3")));
        assert_eq!(v.get("ns", "a").as_deref(), Some("3"));
        v.apply(&watcher::Event::Delete(meta("b", "2")));
        assert_eq!(v.get("ns", "b"), None);
        v.apply(&watcher::Event::Init);
        v.apply(&watcher::Event::InitApply(meta("c", "5")));
        assert_eq!(v.get("ns", "a").as_deref(), Some("3"), "kept until the relist is complete");
        v.apply(&watcher::Event::InitDone);
        assert_eq!((v.get("ns", "a"), v.get("ns", "c").as_deref()), (None, Some("5")));
        assert_eq!(v.get("other", "c"), None);
    }
}
