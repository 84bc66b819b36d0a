//! The connections the operator holds: a client for each, its state, and which Environments use
//! it. Shared by the connection controllers (which keep it current) and the Environment passes
//! (which look their connection up). Talks to the Kubernetes API (namespace labels) only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::broadcast;
use url::Url;

use super::ConnKey;
use super::resolve::{self, DEFAULT_CONNECTION, Unusable};
use crate::controlplane;
use crate::metrics::Metrics;
use crate::reconcile::Error;
use crate::resource::{ClusterConnection, Connection, Environment, Guarded};

type Labels = BTreeMap<String, String>;

/// How long a namespace's labels are taken as they were read (a ClusterConnection's
/// `namespaceSelector` is checked against them).
const NAMESPACE_LABELS_TTL: Duration = Duration::from_secs(10);

/// A connection as the operator holds it.
#[derive(Clone, Debug)]
pub struct Live {
    pub key: ConnKey,
    /// Its own client: its own pool, requests in flight and breaker; its key swapped in place.
    /// None until a usable key was read.
    pub client: Option<controlplane::Client>,
    /// Whether Environments using it may adopt environments made outside Kubernetes.
    pub allow_adoption: bool,
    pub state: State,
    /// The key's organization claim, for display.
    pub organization: Option<String>,
    /// What the client was built from: base URL, request limit, the Secret's resourceVersion.
    pub built_from: Option<(Url, usize, String)>,
    /// When the key was last checked with the control plane.
    pub checked_at: Option<Instant>,
}

impl Live {
    pub fn new(key: ConnKey, client: Option<controlplane::Client>, allow_adoption: bool) -> Self {
        Live {
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
pub struct Usable {
    pub key: ConnKey,
    pub client: controlplane::Client,
    pub allow_adoption: bool,
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

/// What the operator's own flags say about connections without a URL or limit of their own.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub base_url: Url,
    pub timeout: Duration,
    pub max_concurrent: usize,
    pub metrics: Arc<Metrics>,
}

pub struct Registry {
    /// The operator's own key, if it was given one.
    operator: Option<Live>,
    live: RwLock<HashMap<ConnKey, Live>>,
    /// The caches of Connections (one per watched scope), ClusterConnections and Environments.
    pub connections: Vec<Store<Connection>>,
    pub cluster_connections: Store<ClusterConnection>,
    pub environments: Vec<Store<Guarded>>,
    namespaces: Mutex<HashMap<String, (Instant, Labels)>>,
    changed: broadcast::Sender<ConnKey>,
    pub defaults: Defaults,
}

impl Registry {
    pub fn new(
        operator: Option<Live>,
        connections: Vec<Store<Connection>>,
        cluster_connections: Store<ClusterConnection>,
        environments: Vec<Store<Guarded>>,
        defaults: Defaults,
    ) -> Self {
        Registry {
            operator,
            live: RwLock::default(),
            connections,
            cluster_connections,
            environments,
            namespaces: Mutex::default(),
            changed: broadcast::channel(1024).0,
            defaults,
        }
    }

    /// The connection `key`, as last set.
    pub fn get(&self, key: &ConnKey) -> Option<Live> {
        if *key == ConnKey::Operator {
            return self.operator.clone();
        }
        self.live.read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Records a connection; its Environments are told when its state or client changed.
    pub fn set(&self, live: Live) {
        let key = live.key.clone();
        let before = self.live.write().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), live.clone());
        let same = before.is_some_and(|b| b.state == live.state && b.allow_adoption == live.allow_adoption);
        if !same {
            let _ = self.changed.send(key);
        }
    }

    /// Tells the Environments of `key` to look again (its key rotated).
    pub fn touch(&self, key: &ConnKey) {
        let _ = self.changed.send(key.clone());
    }

    /// Forgets a connection that is gone.
    pub fn remove(&self, key: &ConnKey) {
        if self.live.write().unwrap_or_else(|p| p.into_inner()).remove(key).is_some() {
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
    pub async fn for_environment(&self, env: &Environment, kube: &kube::Client) -> Result<Usable, Error> {
        let namespace = env.namespace().unwrap_or_default();
        let key = resolve::choose(
            env,
            self.connection_exists(&namespace, DEFAULT_CONNECTION),
            self.operator.is_some(),
        )
        .map_err(|u| match u {
            Unusable::NoConnection { namespace } => Error::NoConnection { namespace },
            Unusable::Changed { was, now } => Error::ConnectionChanged { was, now },
        })?;
        let exists = match &key {
            ConnKey::Operator => true,
            ConnKey::Namespaced { namespace, name } => self.connection_exists(namespace, name),
            ConnKey::Cluster { name } => {
                let Some(cc) = self.cluster_connections.get(&ObjectRef::new(name)) else {
                    return Err(Error::ConnectionNotFound { connection: key.to_string() });
                };
                let labels = self.namespace_labels(&namespace, kube).await?;
                if !resolve::selects(cc.spec.namespace_selector.as_ref(), &labels) {
                    return Err(Error::NamespaceNotAllowed { connection: key.to_string(), namespace });
                }
                true
            }
        };
        if !exists {
            return Err(Error::ConnectionNotFound { connection: key.to_string() });
        }
        let Some(live) = self.get(&key) else {
            return Err(Error::ConnectionNotReady {
                connection: key.to_string(),
                why: "not checked yet".into(),
                permanent: false,
            });
        };
        match (&live.state, live.client) {
            (State::Ready, Some(client)) => Ok(Usable { key, client, allow_adoption: live.allow_adoption }),
            (State::Ready, None) => Err(Error::ConnectionNotReady {
                connection: key.to_string(),
                why: "no key read yet".into(),
                permanent: false,
            }),
            (State::Broken { message, .. }, _) => Err(Error::ConnectionNotReady {
                connection: key.to_string(),
                why: message.clone(),
                permanent: true,
            }),
            (State::Waiting { message, .. }, _) => Err(Error::ConnectionNotReady {
                connection: key.to_string(),
                why: message.clone(),
                permanent: false,
            }),
        }
    }

    /// The labels of a namespace, read at most every few seconds.
    async fn namespace_labels(
        &self,
        namespace: &str,
        kube: &kube::Client,
    ) -> Result<BTreeMap<String, String>, Error> {
        if let Some((at, labels)) = self.namespaces.lock().unwrap_or_else(|p| p.into_inner()).get(namespace)
            && at.elapsed() < NAMESPACE_LABELS_TTL
        {
            return Ok(labels.clone());
        }
        let ns = Api::<Namespace>::all(kube.clone())
            .get_metadata(namespace)
            .await
            .map_err(|source| Error::ReadNamespace { source })?;
        let labels = ns.metadata.labels.unwrap_or_default();
        self.namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(namespace.to_owned(), (Instant::now(), labels.clone()));
        Ok(labels)
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
