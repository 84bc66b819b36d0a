//! The worker Secret: the registration command and token that workers use to join the
//! environment. Building it is pure; [`ensure`] reads and writes it through the Kubernetes API.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::error::Error;
use crate::controlplane::{self, RemoteEnvironment, WorkerCommand};
use crate::k8s::{self, Op, events};
use crate::resource::{Environment, MANAGER};

pub const TOKEN_KEY: &str = "KUBIYA_WORKER_TOKEN";
pub const ENVIRONMENT_KEY: &str = "KUBIYA_ENVIRONMENT";
pub const ENVIRONMENT_ID_KEY: &str = "KUBIYA_ENVIRONMENT_ID";
pub const COMMAND_KEY: &str = "KUBIYA_WORKER_COMMAND";
pub(crate) const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kubiya-operator");
/// A hash of the data the operator wrote: a Secret edited by hand no longer matches it and is
/// written again.
pub(crate) const DATA_HASH: &str = "kubiya.ai/data-hash";

/// The Secret for `env`, owned by it, from the control plane's worker command.
pub fn build(env: &Environment, env_id: &str, cmd: &WorkerCommand) -> Secret {
    let data = BTreeMap::from([
        (TOKEN_KEY.to_owned(), bytes(cmd.worker_token.expose())),
        (ENVIRONMENT_KEY.to_owned(), bytes(&cmd.environment_name)),
        (ENVIRONMENT_ID_KEY.to_owned(), bytes(env_id)),
        (COMMAND_KEY.to_owned(), bytes(cmd.command.expose())),
    ]);
    let hash = data_hash(&data);
    Secret {
        metadata: ObjectMeta {
            name: Some(env.worker_secret_name()),
            namespace: env.namespace(),
            annotations: Some(BTreeMap::from([(DATA_HASH.to_owned(), hash)])),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())])),
            owner_references: env.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Whether `existing` already carries what workers of `remote` need, so the control plane need
/// not be asked for the command again.
pub fn is_current(existing: &Secret, env: &Environment, remote: &RemoteEnvironment) -> bool {
    let owned = is_owned(existing, env);
    let data = existing.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.as_slice());
    let token = remote.worker_token.as_ref().map(|t| t.expose().as_bytes());
    owned
        && is_untouched(existing)
        && token.is_some()
        && get(TOKEN_KEY) == token
        && get(ENVIRONMENT_KEY) == Some(remote.name.as_bytes())
        && get(ENVIRONMENT_ID_KEY) == Some(remote.id.as_bytes())
        && get(COMMAND_KEY).is_some()
}

/// Whether the Secret's data is what the operator last wrote (its hash annotation matches). Our
/// own writes are untouched; a hand edit is not.
pub fn is_untouched(secret: &Secret) -> bool {
    secret.data.as_ref().map(data_hash).as_deref() == secret.annotations().get(DATA_HASH).map(String::as_str)
}

/// Whether the worker Secret `env`'s status names is there as the operator wrote it, for the
/// environment in status: what a settled Environment needs no control-plane call to confirm.
pub fn is_in_place(secret: Option<&IndexedSecret>, env: &Environment) -> bool {
    let status = env.status.as_ref();
    if status.and_then(|s| s.can_register) != Some(true) {
        return true;
    }
    let id = status.and_then(|s| s.environment_id.as_deref()).map(str::as_bytes);
    let uid = env.uid();
    secret.is_some_and(|f| {
        f.controller.is_some() && f.controller == uid && f.untouched && f.environment_id.as_deref() == id
    })
}

/// What [`is_in_place`] needs of a worker Secret: a few dozen bytes, where the Secret itself,
/// cached, costs kilobytes per Environment (about 40 MiB more at 10,000, measured).
#[derive(Clone, Debug, PartialEq)]
pub struct IndexedSecret {
    /// The UID of its controlling owner.
    controller: Option<String>,
    /// Its data is what the operator wrote ([`is_untouched`]).
    untouched: bool,
    environment_id: Option<Vec<u8>>,
}

impl IndexedSecret {
    fn of(secret: &Secret) -> IndexedSecret {
        IndexedSecret {
            controller: controller(secret).map(|o| o.uid.clone()),
            untouched: is_untouched(secret),
            environment_id: secret.data.as_ref().and_then(|d| d.get(ENVIRONMENT_ID_KEY)).map(|b| b.0.clone()),
        }
    }
}

/// The worker Secrets of one watched scope, as [`IndexedSecret`] by namespace and name, kept up to date
/// from its watch. A re-list replaces the whole index when it is complete, as kube's caches do.
#[derive(Debug, Default)]
pub struct Index(std::sync::Mutex<IndexState>);

#[derive(Debug, Default)]
struct IndexState {
    current: HashMap<(String, String), IndexedSecret>,
    /// A re-list under way: what it has delivered so far.
    relist: Option<HashMap<(String, String), IndexedSecret>>,
}

impl Index {
    pub fn apply(&self, event: &watcher::Event<Secret>) {
        let key = |s: &Secret| (s.namespace().unwrap_or_default(), s.name_any());
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(s) => {
                state.current.insert(key(s), IndexedSecret::of(s));
            }
            watcher::Event::Delete(s) => {
                state.current.remove(&key(s));
            }
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(s) => {
                state.relist.get_or_insert_default().insert(key(s), IndexedSecret::of(s));
            }
            watcher::Event::InitDone => {
                if let Some(listed) = state.relist.take() {
                    state.current = listed;
                }
            }
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<IndexedSecret> {
        let state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.current.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }
}

/// The owner reference of the object that controls `secret` (there is at most one).
pub(crate) fn controller(secret: &Secret) -> Option<&OwnerReference> {
    secret.owner_references().iter().find(|o| o.controller == Some(true))
}

/// Whether `secret` is controlled by `env`.
pub fn is_owned(secret: &Secret, env: &Environment) -> bool {
    controller(secret).is_some_and(|o| Some(&o.uid) == env.uid().as_ref())
}

/// Whether `secret` was `env`'s before it was deleted and applied again (a restore, a
/// reinstall): controlled by an Environment of the same name with another UID, which no longer
/// exists since this one holds the name. Kubernetes' garbage collector would delete it in time;
/// it is taken over instead.
pub fn was_owned_before(secret: &Secret, env: &Environment) -> bool {
    controller(secret).is_some_and(|o| {
        o.kind == "Environment"
            && o.api_version.starts_with("kubiya.ai/")
            && Some(&o.name) == env.metadata.name.as_ref()
            && Some(&o.uid) != env.uid().as_ref()
    })
}

/// Makes the worker Secret current; returns its name. Asks the control plane for the worker
/// command only when the Secret is missing or stale, and never overwrites a Secret it does not own.
pub async fn ensure(
    env: &Environment,
    remote: &RemoteEnvironment,
    cp: &controlplane::Client,
    ctx: &Context,
) -> Result<String, Error> {
    let ns = env.namespace().ok_or(Error::Unnamed)?;
    let name = env.worker_secret_name();
    let api: Api<Secret> = Api::namespaced(ctx.kube.clone(), &ns);
    let existing = api.get_opt(&name).await.map_err(k8s::failed(Op::ReadSecret))?;
    if let Some(s) = &existing {
        if !is_owned(s, env) && !was_owned_before(s, env) {
            return Err(Error::SecretConflict { name });
        }
        if is_current(s, env, remote) {
            return Ok(name);
        }
    }
    let cmd = cp.worker_command(&remote.id).await.map_err(|source| Error::WorkerCommand { source })?;
    let secret = build(env, &remote.id, &cmd);
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret))
        .await
        .map_err(k8s::failed(Op::WriteSecret))?;
    Ok(name)
}

/// Deletes the worker Secret `env`'s status names, if it is there and `env`'s: a resource that
/// stops being the owner of its environment (taken over, refused) keeps no valid token of it.
/// Says so in an Event.
pub async fn withdraw(env: &Environment, ctx: &Context) -> Result<(), Error> {
    let Some(name) = env.status.as_ref().and_then(|s| s.worker_secret_name.clone()) else { return Ok(()) };
    let ns = env.namespace().ok_or(Error::Unnamed)?;
    if !delete_controlled(&ctx.kube, &ns, &name, env.uid().as_deref()).await? {
        return Ok(());
    }
    tracing::info!(secret = %name, "deleted the worker Secret: no longer the environment's owner");
    let note = format!(
        "deleted worker Secret {name}: this resource no longer manages its environment, so the workers' \
         token is not published here any more"
    );
    events::publish(&ctx.recorder, env, EventType::Warning, "WorkerSecretDeleted", note).await;
    Ok(())
}

/// Deletes the Secret `namespace/name` if the object of UID `owner` controls it; whether it did.
/// Only that Secret: not one written under the same name since (a UID precondition).
pub(crate) async fn delete_controlled(
    kube: &kube::Client,
    namespace: &str,
    name: &str,
    owner: Option<&str>,
) -> Result<bool, k8s::Error> {
    let api: Api<Secret> = Api::namespaced(kube.clone(), namespace);
    let Some(secret) = api.get_opt(name).await.map_err(k8s::failed(Op::ReadSecret))? else {
        return Ok(false);
    };
    if owner.is_none() || controller(&secret).map(|o| o.uid.as_str()) != owner {
        return Ok(false);
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: secret.uid(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(source) => Err(k8s::Error::new(Op::DeleteSecret, source)),
    }
}

/// Stable for a given build (std's SipHash with fixed keys): an upgrade may rewrite each Secret
/// once, which is harmless.
pub(crate) fn data_hash(data: &BTreeMap<String, ByteString>) -> String {
    let mut h = DefaultHasher::new();
    for (k, v) in data {
        (k, &v.0).hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

pub(crate) fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::EnvironmentSpec;
    use serde_json::json;

    fn env() -> Environment {
        let mut e = Environment::new("prod", EnvironmentSpec::default());
        e.metadata.namespace = Some("ns".into());
        e.metadata.uid = Some("uid-1".into());
        e
    }

    fn cmd() -> WorkerCommand {
        serde_json::from_value(json!({"worker_token": "tok", "environment_name": "prod",
            "command": "kubiya worker start --token tok --environment prod", "can_register": true}))
        .unwrap()
    }

    fn remote(token: &str) -> RemoteEnvironment {
        serde_json::from_value(
            json!({"id": "id-1", "name": "prod", "status": "ready", "worker_token": token}),
        )
        .unwrap()
    }

    #[test]
    fn secret_is_owned_and_complete() {
        let s = build(&env(), "id-1", &cmd());
        assert_eq!(s.metadata.name.as_deref(), Some("prod-worker"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        // The operator's watch of worker Secrets selects them by this label.
        assert_eq!(s.labels().get(MANAGED_BY.0).map(String::as_str), Some(MANAGED_BY.1));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Environment", "uid-1", Some(true))
        );
        let data = s.data.as_ref().unwrap();
        assert_eq!(data[TOKEN_KEY].0, b"tok");
        assert_eq!(data[ENVIRONMENT_ID_KEY].0, b"id-1");
        assert!(is_current(&s, &env(), &remote("tok")));
        assert!(!is_current(&s, &env(), &remote("rotated")));
    }

    #[test]
    fn a_secret_edited_by_hand_is_not_current() {
        let mut s = build(&env(), "id-1", &cmd());
        assert!(is_current(&s, &env(), &remote("tok")));
        s.data.as_mut().unwrap().insert(COMMAND_KEY.into(), bytes("something else"));
        assert!(!is_current(&s, &env(), &remote("tok")));
    }

    #[test]
    fn a_settled_environment_needs_its_secret_untouched_and_for_its_environment() {
        let mut e = env();
        e.status = Some(crate::resource::EnvironmentStatus {
            environment_id: Some("id-1".into()),
            can_register: Some(true),
            ..Default::default()
        });
        let s = build(&e, "id-1", &cmd());
        assert!(is_in_place(Some(&IndexedSecret::of(&s)), &e));
        assert!(!is_in_place(None, &e), "deleted while the operator was away");
        let mut edited = s.clone();
        edited.data.as_mut().unwrap().insert(COMMAND_KEY.into(), bytes("x"));
        assert!(!is_in_place(Some(&IndexedSecret::of(&edited)), &e), "edited by hand");
        let other = build(&e, "id-2", &cmd());
        assert!(!is_in_place(Some(&IndexedSecret::of(&other)), &e), "for another environment");
        let mut not_controlled = s.clone();
        not_controlled.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        assert!(!is_in_place(Some(&IndexedSecret::of(&not_controlled)), &e), "only owned, not controlled");
        let mut restored = e.clone();
        restored.metadata.uid = Some("uid-2".into());
        assert!(!is_in_place(Some(&IndexedSecret::of(&s)), &restored), "controlled by an earlier object");
        let mut nameless = e.clone();
        nameless.metadata.uid = None;
        let mut orphan = s.clone();
        orphan.metadata.owner_references = None;
        assert!(!is_in_place(Some(&IndexedSecret::of(&orphan)), &nameless), "no owner, no uid");
        e.status.as_mut().unwrap().can_register = Some(false);
        assert!(is_in_place(None, &e), "none needed");
    }

    #[test]
    fn the_index_follows_the_watch_and_a_relist_replaces_it_whole() {
        let secret = |name: &str, id: &str| {
            let mut e = env();
            e.metadata.name = Some(name.into());
            build(&e, id, &cmd())
        };
        let (a, b, c) = (secret("a", "id-a"), secret("b", "id-b"), secret("c", "id-c"));
        let index = Index::default();
        assert_eq!(index.get("ns", "a-worker"), None);
        index.apply(&watcher::Event::Apply(a.clone()));
        index.apply(&watcher::Event::Apply(b.clone()));
        assert_eq!(index.get("ns", "a-worker"), Some(IndexedSecret::of(&a)));
        assert_eq!(index.get("other", "a-worker"), None);
        index.apply(&watcher::Event::Delete(a.clone()));
        assert_eq!(index.get("ns", "a-worker"), None);
        // A re-list: what was there stays until it is complete, then only what it listed is.
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(c.clone()));
        assert_eq!(index.get("ns", "b-worker"), Some(IndexedSecret::of(&b)));
        assert_eq!(index.get("ns", "c-worker"), None);
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.get("ns", "b-worker"), None);
        assert_eq!(index.get("ns", "c-worker"), Some(IndexedSecret::of(&c)));
        // An InitDone without an Init changes nothing.
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.get("ns", "c-worker"), Some(IndexedSecret::of(&c)));
    }

    #[test]
    fn someone_elses_secret_is_not_ours() {
        let mut s = build(&env(), "id-1", &cmd());
        s.metadata.owner_references = None;
        assert!(!is_owned(&s, &env()));
        assert!(!was_owned_before(&s, &env()));
        assert!(!is_current(&s, &env(), &remote("tok")));
    }

    #[test]
    fn a_secret_of_an_earlier_environment_of_the_same_name_is_taken_over() {
        let s = build(&env(), "id-1", &cmd());
        let mut again = env();
        again.metadata.uid = Some("uid-2".into());
        assert!(!is_owned(&s, &again));
        assert!(was_owned_before(&s, &again));
        assert!(!is_current(&s, &again, &remote("tok")), "rewritten, with the new owner");
        assert!(!was_owned_before(&s, &env()), "its own is not an earlier one");
        let mut other = again.clone();
        other.metadata.name = Some("other".into());
        assert!(!was_owned_before(&s, &other), "another name");
        let mut foreign = s.clone();
        foreign.metadata.owner_references.as_mut().unwrap()[0].kind = "ConfigMap".into();
        assert!(!was_owned_before(&foreign, &again), "another kind");
    }
}
