//! A small fact about each object of a watch, by namespace and name, kept up to date from the
//! watch's events: what tells a reader what it needs of an object (a Secret's resourceVersion,
//! who controls a worker Secret) without caching the object or reading it again. A relist
//! replaces the whole index once complete, as kube's caches do.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::watcher;

/// By namespace, then name: a namespace's name is kept once, not once per object (a scope of
/// 10,000 worker Secrets in one namespace kept it 10,000 times), and a lookup allocates nothing.
type Map<V> = HashMap<String, HashMap<String, V>>;

#[derive(Debug)]
pub struct Index<V>(Mutex<State<V>>);

#[derive(Debug)]
struct State<V> {
    current: Map<V>,
    /// A relist under way: what it has delivered so far.
    relist: Option<Map<V>>,
}

impl<V> Default for Index<V> {
    fn default() -> Self {
        Index(Mutex::new(State { current: HashMap::new(), relist: None }))
    }
}

fn namespace<K: ResourceExt>(o: &K) -> &str {
    o.meta().namespace.as_deref().unwrap_or_default()
}

fn name<K: ResourceExt>(o: &K) -> &str {
    o.meta().name.as_deref().unwrap_or_default()
}

fn insert<V>(map: &mut Map<V>, namespace: &str, name: String, v: V) {
    match map.get_mut(namespace) {
        Some(names) => {
            names.insert(name, v);
        }
        None => {
            map.insert(namespace.to_owned(), HashMap::from([(name, v)]));
        }
    }
}

fn remove<V>(map: &mut Map<V>, namespace: &str, name: &str) {
    if let Some(names) = map.get_mut(namespace) {
        names.remove(name);
        if names.is_empty() {
            map.remove(namespace);
        }
    }
}

impl<V: Clone> Index<V> {
    /// Follows one watch event; `fact` says what is kept of an object (None: nothing, the
    /// object is left out).
    pub fn apply<K: ResourceExt>(&self, event: &watcher::Event<K>, fact: impl Fn(&K) -> Option<V>) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(o) => match fact(o) {
                Some(v) => insert(&mut state.current, namespace(o), o.name_any(), v),
                None => remove(&mut state.current, namespace(o), name(o)),
            },
            watcher::Event::Delete(o) => remove(&mut state.current, namespace(o), name(o)),
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let listed = state.relist.get_or_insert_default();
                if let Some(v) = fact(o) {
                    insert(listed, namespace(o), o.name_any(), v);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = state.relist.take() {
                    state.current = listed;
                }
            }
        }
    }

    /// What was last watched of `namespace/name`; None when nothing is known (not listed yet,
    /// deleted, left out, or outside this watch).
    pub fn get(&self, namespace: &str, name: &str) -> Option<V> {
        let state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.current.get(namespace)?.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::PartialObjectMeta;

    fn meta(name: &str, version: &str) -> PartialObjectMeta<Secret> {
        let mut m = PartialObjectMeta::<Secret>::default();
        m.metadata.namespace = Some("ns".into());
        m.metadata.name = Some(name.into());
        m.metadata.resource_version = Some(version.into());
        m
    }

    /// Keeps the resourceVersion, and nothing of an object whose version is "skip".
    fn version(m: &PartialObjectMeta<Secret>) -> Option<String> {
        m.resource_version().filter(|v| v != "skip")
    }

    #[test]
    fn facts_follow_the_watch_and_a_relist_replaces_them_once_complete() {
        let v = Index::default();
        v.apply(&watcher::Event::Apply(meta("a", "1")), version);
        v.apply(&watcher::Event::Apply(meta("b", "2")), version);
        v.apply(&watcher::Event::Apply(meta("a", "3")), version);
        assert_eq!(v.get("ns", "a").as_deref(), Some("3"));
        v.apply(&watcher::Event::Delete(meta("b", "2")), version);
        assert_eq!(v.get("ns", "b"), None);
        v.apply(&watcher::Event::Init, version);
        v.apply(&watcher::Event::InitApply(meta("c", "5")), version);
        v.apply(&watcher::Event::InitApply(meta("d", "skip")), version);
        assert_eq!(v.get("ns", "a").as_deref(), Some("3"), "kept until the relist is complete");
        v.apply(&watcher::Event::InitDone, version);
        assert_eq!((v.get("ns", "a"), v.get("ns", "c").as_deref()), (None, Some("5")));
        assert_eq!(v.get("ns", "d"), None, "left out");
        assert_eq!(v.get("other", "c"), None);
        // An InitDone without an Init changes nothing.
        v.apply(&watcher::Event::InitDone, version);
        assert_eq!(v.get("ns", "c").as_deref(), Some("5"));
        // An object that stops qualifying is dropped.
        v.apply(&watcher::Event::Apply(meta("c", "skip")), version);
        assert_eq!(v.get("ns", "c"), None);
    }
}
