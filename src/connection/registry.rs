//! The connections the operator holds: a client for each, its state, and which Environments use
//! it. Shared by the connection controllers (which keep it current) and the Environment passes
//! (which look their connection up). Talks to the Kubernetes API (namespace labels) only.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::broadcast;
use url::Url;

use super::error::Unusable;
use super::resolve::{self, DEFAULT_CONNECTION};
use super::{ConnKey, Place};
use crate::controlplane::{self, ApiKey};
use crate::k8s::namespaces::Namespaces;
use crate::metrics::Metrics;
use crate::resource::{ClusterConnection, Connection, Environment, Guarded};

/// A connection as the operator holds it.
#[derive(Clone, Debug)]
pub struct HeldConnection {
    pub key: ConnKey,
    /// Its own client: its own pool, requests in flight and breaker; its key swapped in place.
    /// None until a usable key was read.
    pub client: Option<controlplane::Client>,
    /// Whether Environments using it may adopt environments made outside Kubernetes.
    pub allow_adoption: bool,
    pub state: State,
    /// The key's `organization` claim: the organisation its Environments live in.
    pub organization: Option<String>,
    /// What the client was built from: base URL, request limit, the Secret's resourceVersion.
    pub built_from: Option<(Url, usize, String)>,
    /// When the key was last checked with the control plane.
    pub checked_at: Option<Instant>,
}

impl HeldConnection {
    pub fn new(key: ConnKey, client: Option<controlplane::Client>, allow_adoption: bool) -> Self {
        HeldConnection {
            key,
            client,
            allow_adoption,
            state: State::Ready,
            organization: None,
            built_from: None,
            checked_at: None,
        }
    }
}

/// A connection an Environment pass can use now.
#[derive(Clone, Debug)]
pub struct ResolvedConnection {
    pub key: ConnKey,
    pub client: controlplane::Client,
    pub allow_adoption: bool,
    /// Where its Environments live.
    pub place: Place,
}

/// Whether a connection can be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Ready,
    /// Not until someone fixes something (the Secret is missing, the key refused): its
    /// Environments are Stalled too, and come back on their own once it is fixed.
    Broken {
        reason: &'static str,
        message: String,
    },
    /// Not yet, or not for the moment (unreachable).
    Waiting {
        reason: &'static str,
        message: String,
    },
}

/// What the operator's own flags say about connections without a URL or limit of their own, and
/// where connections may send their keys.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub base_url: Url,
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub metrics: Arc<Metrics>,
    /// The control planes (origins) connections may name besides `base_url`'s.
    pub allowed: Vec<url::Origin>,
}

impl Defaults {
    /// Whether a connection may send its key to `url`: the operator's own control plane, or one
    /// the administrator listed.
    pub fn allows(&self, url: &Url) -> bool {
        let origin = url.origin();
        origin == self.base_url.origin() || self.allowed.contains(&origin)
    }

    /// The client of connection `key`: the one way the operator builds control-plane clients
    /// (`max_concurrent` None: the flag's).
    pub fn client(
        &self,
        key: &ConnKey,
        base_url: Url,
        api_key: &ApiKey,
        max_concurrent: Option<usize>,
    ) -> Result<controlplane::Client, controlplane::BuildError> {
        let config = controlplane::ClientConfig::new(base_url, api_key.clone(), self.timeout)
            .limited_to(max_concurrent.unwrap_or(self.max_concurrent))
            .counted_in(self.metrics.clone(), key.metric());
        controlplane::Client::new(config)
    }
}

pub struct Registry {
    /// The operator's own key, if it was given one.
    operator: Option<HeldConnection>,
    held: RwLock<HashMap<ConnKey, HeldConnection>>,
    /// The caches of Connections (one per watched scope), ClusterConnections and Environments.
    pub connections: Vec<Store<Connection>>,
    pub cluster_connections: Store<ClusterConnection>,
    pub environments: Vec<Store<Guarded>>,
    /// What was last read of namespaces (shared with the Environment passes).
    pub namespaces: Arc<Namespaces>,
    changed: broadcast::Sender<ConnKey>,
    pub defaults: Defaults,
}

impl Registry {
    pub fn new(
        operator: Option<HeldConnection>,
        connections: Vec<Store<Connection>>,
        cluster_connections: Store<ClusterConnection>,
        environments: Vec<Store<Guarded>>,
        defaults: Defaults,
    ) -> Self {
        Registry {
            operator,
            held: RwLock::default(),
            connections,
            cluster_connections,
            environments,
            namespaces: Arc::default(),
            changed: broadcast::channel(1024).0,
            defaults,
        }
    }

    /// The connection `key`, as last set.
    pub fn get(&self, key: &ConnKey) -> Option<HeldConnection> {
        if *key == ConnKey::Operator {
            return self.operator.clone();
        }
        self.held.read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Records a connection; its Environments are told when its state or client changed.
    pub fn set(&self, held: HeldConnection) {
        let key = held.key.clone();
        let before = self.held.write().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), held.clone());
        // What its Environments see of it: whether it works, whether it allows adoption, and
        // where it leads (a key of another organisation, another control plane).
        let url = |h: &HeldConnection| h.built_from.as_ref().map(|(u, ..)| u.clone());
        let same = before.is_some_and(|b| {
            b.state == held.state
                && b.allow_adoption == held.allow_adoption
                && b.organization == held.organization
                && url(&b) == url(&held)
        });
        if !same {
            let _ = self.changed.send(key);
        }
    }

    /// Forgets a connection that is gone.
    pub fn remove(&self, key: &ConnKey) {
        if self.held.write().unwrap_or_else(|p| p.into_inner()).remove(key).is_some() {
            let _ = self.changed.send(key.clone());
        }
    }

    /// Connections whose state or client changed, as they change.
    pub fn subscribe(&self) -> broadcast::Receiver<ConnKey> {
        self.changed.subscribe()
    }

    fn connection_exists(&self, namespace: &str, name: &str) -> bool {
        let r = ObjectRef::<Connection>::new(name).within(namespace);
        self.connections.iter().any(|s| s.get(&r).is_some())
    }

    /// The connection `env` uses, ready to use.
    pub async fn for_environment(
        &self,
        env: &Environment,
        kube: &kube::Client,
    ) -> Result<ResolvedConnection, Unusable> {
        let namespace = env.namespace().unwrap_or_default();
        let key = resolve::choose(
            env,
            self.connection_exists(&namespace, DEFAULT_CONNECTION),
            self.operator.is_some(),
        )?;
        let exists = match &key {
            ConnKey::Operator => true,
            ConnKey::Namespaced { namespace, name } => self.connection_exists(namespace, name),
            ConnKey::Cluster { name } => {
                let Some(cc) = self.cluster_connections.get(&ObjectRef::new(name)) else {
                    return Err(Unusable::NotFound { connection: key.to_string() });
                };
                let labels = self.namespaces.get(&namespace, None, kube).await?.labels;
                if !resolve::selects(cc.spec.namespace_selector.as_ref(), &labels) {
                    return Err(Unusable::NamespaceNotAllowed { connection: key.to_string(), namespace });
                }
                true
            }
        };
        if !exists {
            return Err(Unusable::NotFound { connection: key.to_string() });
        }
        let not_ready = |why: &str, permanent| Unusable::NotReady {
            connection: key.to_string(),
            why: why.to_owned(),
            permanent,
        };
        let Some(held) = self.get(&key) else { return Err(not_ready("not checked yet", false)) };
        match (&held.state, held.client) {
            (State::Ready, Some(client)) => {
                let place = Place::new(held.organization.clone(), client.base_url());
                Ok(ResolvedConnection { key, client, allow_adoption: held.allow_adoption, place })
            }
            (State::Ready, None) => Err(not_ready("no key read yet", false)),
            (State::Broken { message, .. }, _) => Err(not_ready(message, true)),
            (State::Waiting { message, .. }, _) => Err(not_ready(message, false)),
        }
    }

    /// Whether every cache of Environments has synced: until then, [`Registry::users`] may miss
    /// some (at a leader's start, the Environment watches begin after the connections' own).
    pub fn users_known(&self) -> bool {
        use futures::FutureExt;
        self.environments.iter().all(|s| matches!(s.wait_until_ready().now_or_never(), Some(Ok(()))))
    }

    /// The Environments (`namespace/name`) that use `key`: that name it, or, for a namespace's
    /// `default` Connection and the operator's key, that resolve to it or were managed through it.
    pub fn users(&self, key: &ConnKey) -> Vec<String> {
        let mut users: Vec<String> = self
            .environments
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|g| g.decoded().cloned())
            .filter(|env| self.uses(env, key))
            .map(|env| format!("{}/{}", env.namespace().unwrap_or_default(), env.name_any()))
            .collect();
        users.sort();
        users
    }

    fn uses(&self, env: &Environment, key: &ConnKey) -> bool {
        let namespace = env.meta().namespace.clone().unwrap_or_default();
        let recorded = env.status.as_ref().and_then(|s| s.connection.as_deref());
        if recorded.and_then(|l| ConnKey::from_label(l, &namespace)).as_ref() == Some(key) {
            return true;
        }
        let default_exists = self.connection_exists(&namespace, DEFAULT_CONNECTION);
        resolve::choose(env, default_exists, self.operator.is_some()).is_ok_and(|k| k == *key)
    }

    /// The Environments of `scope` (a store of Environments) that use `key`.
    pub fn users_in(&self, store: &Store<Guarded>, key: &ConnKey) -> Vec<ObjectRef<Guarded>> {
        store
            .state()
            .iter()
            .filter(|g| g.decoded().is_some_and(|env| self.uses(env, key)))
            .map(|g| ObjectRef::from_obj(g.as_ref()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{
        ConnectionKind, ConnectionRef, ConnectionSpec, EnvironmentSpec, EnvironmentStatus, SecretKeyRef,
    };
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn client() -> controlplane::Client {
        let url = Url::parse("http://127.0.0.1:9").unwrap();
        controlplane::Client::new(controlplane::ClientConfig::new(
            url,
            ApiKey::new("k"),
            Duration::from_secs(1),
        ))
        .unwrap()
    }

    fn defaults() -> Defaults {
        Defaults {
            base_url: Url::parse("http://127.0.0.1:9").unwrap(),
            timeout: Duration::from_secs(1),
            max_concurrent: 1,
            metrics: Arc::default(),
            allowed: vec![Url::parse("https://allowed.test").unwrap().origin()],
        }
    }

    #[test]
    fn keys_go_only_to_the_operators_control_plane_and_those_listed() {
        let d = defaults();
        assert!(d.allows(&Url::parse("http://127.0.0.1:9/prefix").unwrap()), "the operator's own");
        assert!(
            d.allows(&Url::parse("https://allowed.test:443/x").unwrap()),
            "listed; the default port is the same"
        );
        assert!(!d.allows(&Url::parse("https://allowed.test:8443").unwrap()), "another port");
        assert!(!d.allows(&Url::parse("http://allowed.test").unwrap()), "another scheme");
        assert!(!d.allows(&Url::parse("http://127.0.0.1:19999").unwrap()));
    }

    fn env(name: &str, connection_ref: Option<&str>, recorded: Option<&str>) -> Environment {
        let spec = EnvironmentSpec {
            connection_ref: connection_ref
                .map(|n| ConnectionRef { kind: ConnectionKind::Connection, name: n.into() }),
            ..Default::default()
        };
        let mut e = Environment::new(name, spec);
        e.metadata.namespace = Some("ns".into());
        e.status = recorded.map(|r| EnvironmentStatus { connection: Some(r.into()), ..Default::default() });
        e
    }

    fn connection(name: &str) -> Connection {
        let mut c = Connection::new(
            name,
            ConnectionSpec {
                api_key_secret_ref: SecretKeyRef { name: "s".into(), key: "api-key".into() },
                ..Default::default()
            },
        );
        c.metadata.namespace = Some("ns".into());
        c
    }

    /// A registry with the operator's key (when `operator`), these Connections, and these
    /// Environments once `synced`.
    fn registry(operator: bool, connections: &[Connection], envs: &[Environment], synced: bool) -> Registry {
        let (cstore, mut cwriter): (Store<Connection>, Writer<Connection>) =
            kube::runtime::reflector::store();
        cwriter.apply_watcher_event(&Event::Init);
        for c in connections {
            cwriter.apply_watcher_event(&Event::InitApply(c.clone()));
        }
        cwriter.apply_watcher_event(&Event::InitDone);
        let (ccstore, mut ccwriter) = kube::runtime::reflector::store();
        ccwriter.apply_watcher_event(&Event::<ClusterConnection>::Init);
        ccwriter.apply_watcher_event(&Event::InitDone);
        let (estore, mut ewriter): (Store<Guarded>, Writer<Guarded>) = kube::runtime::reflector::store();
        ewriter.apply_watcher_event(&Event::Init);
        for e in envs {
            ewriter.apply_watcher_event(&Event::InitApply(Guarded(Ok(e.clone()))));
        }
        if synced {
            ewriter.apply_watcher_event(&Event::InitDone);
        }
        let operator = operator.then(|| HeldConnection::new(ConnKey::Operator, Some(client()), true));
        Registry::new(operator, vec![cstore], ccstore, vec![estore], defaults())
    }

    fn kube_client() -> kube::Client {
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap()
    }

    fn namespaced(name: &str) -> ConnKey {
        ConnKey::Namespaced { namespace: "ns".into(), name: name.into() }
    }

    #[tokio::test]
    async fn an_environment_gets_its_connection_only_when_it_is_ready() {
        let kube = kube_client();
        let r = registry(true, &[connection("org")], &[], true);
        let got = r.for_environment(&env("e", None, None), &kube).await.unwrap();
        assert_eq!((got.key, got.allow_adoption), (ConnKey::Operator, true));
        assert!(matches!(
            r.for_environment(&env("e", Some("missing"), None), &kube).await,
            Err(Unusable::NotFound { connection }) if connection == "Connection ns/missing"
        ));
        let named = env("e", Some("org"), None);
        assert!(matches!(
            r.for_environment(&named, &kube).await,
            Err(Unusable::NotReady { why, permanent: false, .. }) if why == "not checked yet"
        ));
        let mut held = HeldConnection::new(namespaced("org"), None, false);
        r.set(held.clone());
        assert!(matches!(
            r.for_environment(&named, &kube).await,
            Err(Unusable::NotReady { why, permanent: false, .. }) if why == "no key read yet"
        ));
        held.state = State::Broken { reason: "KeyRefused", message: "refused".into() };
        r.set(held.clone());
        assert!(matches!(
            r.for_environment(&named, &kube).await,
            Err(Unusable::NotReady { why, permanent: true, .. }) if why == "refused"
        ));
        held.state = State::Waiting { reason: "Unreachable", message: "down".into() };
        r.set(held.clone());
        assert!(matches!(
            r.for_environment(&named, &kube).await,
            Err(Unusable::NotReady { permanent: false, .. })
        ));
        held.state = State::Ready;
        held.client = Some(client());
        r.set(held);
        let got = r.for_environment(&named, &kube).await.unwrap();
        assert_eq!((got.key, got.allow_adoption), (namespaced("org"), false));
        r.remove(&namespaced("org"));
        assert!(r.get(&namespaced("org")).is_none());
        let keyless = registry(false, &[], &[], true);
        assert!(matches!(
            keyless.for_environment(&env("e", None, None), &kube).await,
            Err(Unusable::NoConnection { .. })
        ));
    }

    #[tokio::test]
    async fn a_connection_change_is_told_once_per_change_of_state() {
        let r = registry(true, &[], &[], true);
        let mut changes = r.subscribe();
        let mut held = HeldConnection::new(namespaced("org"), None, false);
        r.set(held.clone());
        assert_eq!(changes.try_recv().ok(), Some(namespaced("org")), "new");
        r.set(held.clone());
        assert!(changes.try_recv().is_err(), "the same state: not told again");
        held.allow_adoption = true;
        r.set(held.clone());
        assert_eq!(changes.try_recv().ok(), Some(namespaced("org")), "adoption allowed now");
        r.remove(&namespaced("org"));
        assert_eq!(changes.try_recv().ok(), Some(namespaced("org")), "gone");
        r.remove(&namespaced("org"));
        assert!(changes.try_recv().is_err(), "gone already");
    }

    #[test]
    fn users_are_those_that_name_it_resolve_to_it_or_were_managed_through_it() {
        let envs = [
            env("named", Some("org"), None),
            env("defaulted", None, None),
            env("recorded", None, Some("Connection/org")),
            env("elsewhere", Some("other"), None),
        ];
        let r = registry(true, &[connection("default"), connection("org")], &envs, true);
        assert_eq!(r.users(&namespaced("org")), ["ns/named", "ns/recorded"]);
        assert_eq!(r.users(&namespaced("default")), ["ns/defaulted", "ns/recorded"]);
        assert!(r.users(&ConnKey::Operator).is_empty(), "a default Connection comes first");
        assert_eq!(r.users_in(&r.environments[0], &namespaced("org")).len(), 2);
        assert!(r.users_known());
        let unsynced = registry(true, &[], &envs, false);
        assert!(!unsynced.users_known(), "an Environment cache not synced yet");
    }
}
