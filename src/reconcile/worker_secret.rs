//! The worker Secret: the registration command and token that workers use to join the
//! environment. Building it is pure; [`ensure`] reads and writes it through the Kubernetes API.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PartialObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
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
/// The keys of the Secret, each of which the operator writes.
pub const KEYS: [&str; 4] = [TOKEN_KEY, ENVIRONMENT_KEY, ENVIRONMENT_ID_KEY, COMMAND_KEY];
pub(crate) const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kubiya-operator");
/// The environment the Secret is for, in its metadata too: what the operator's watch of Secrets,
/// which reads metadata only, knows of it.
pub(crate) const ENVIRONMENT_ID_ANNOTATION: &str = "kubiya.ai/environment-id";

/// The Secret for `env`, owned by it, from the control plane's worker command.
pub fn build(env: &Environment, env_id: &str, cmd: &WorkerCommand) -> Secret {
    let data = BTreeMap::from([
        (TOKEN_KEY.to_owned(), bytes(cmd.worker_token.expose())),
        (ENVIRONMENT_KEY.to_owned(), bytes(&cmd.environment_name)),
        (ENVIRONMENT_ID_KEY.to_owned(), bytes(env_id)),
        (COMMAND_KEY.to_owned(), bytes(cmd.command.expose())),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(env.worker_secret_name()),
            namespace: env.namespace(),
            annotations: Some(BTreeMap::from([(ENVIRONMENT_ID_ANNOTATION.to_owned(), env_id.to_owned())])),
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
        && is_untouched(&existing.metadata, &KEYS)
        && existing.annotations().get(ENVIRONMENT_ID_ANNOTATION) == Some(&remote.id)
        && token.is_some()
        && get(TOKEN_KEY) == token
        && get(ENVIRONMENT_KEY) == Some(remote.name.as_bytes())
        && get(ENVIRONMENT_ID_KEY) == Some(remote.id.as_bytes())
        && get(COMMAND_KEY).is_some()
}

/// Whether the Secret's data is what the operator last applied, each of `keys` included (from
/// its managedFields: a metadata-only watch tells). Our own writes are untouched; a hand edit
/// is not.
pub fn is_untouched(meta: &ObjectMeta, keys: &[&str]) -> bool {
    k8s::fields::applied_untouched(meta, MANAGER, "data", keys)
}

/// Whether the worker Secret `env`'s status names is there as the operator wrote it, for the
/// environment in status: what a settled Environment needs no control-plane call to confirm.
pub fn is_in_place(secret: Option<&IndexedSecret>, env: &Environment) -> bool {
    let status = env.status.as_ref();
    if status.and_then(|s| s.can_register) != Some(true) {
        return true;
    }
    let id = status.and_then(|s| s.environment_id.as_deref());
    let uid = env.uid();
    secret.is_some_and(|f| {
        f.controller.is_some() && f.controller == uid && f.untouched && f.environment_id.as_deref() == id
    })
}

/// What [`is_in_place`] needs of a worker Secret, from its metadata: a few dozen bytes, where
/// the Secret itself, cached, costs kilobytes per Environment (about 40 MiB more at 10,000,
/// measured).
#[derive(Clone, Debug, PartialEq)]
pub struct IndexedSecret {
    /// The UID of its controlling owner.
    controller: Option<String>,
    /// Its data is what the operator wrote ([`is_untouched`]).
    untouched: bool,
    environment_id: Option<String>,
}

impl IndexedSecret {
    /// What is kept of `secret`: something for an Environment's worker Secret only (labelled as
    /// ours and controlled by an Environment); any other Secret of the namespace costs nothing.
    pub fn of(secret: &PartialObjectMeta<Secret>) -> Option<IndexedSecret> {
        let owner = controller(secret).filter(|o| o.kind == "Environment")?;
        if secret.labels().get(MANAGED_BY.0).map(String::as_str) != Some(MANAGED_BY.1) {
            return None;
        }
        Some(IndexedSecret {
            controller: Some(owner.uid.clone()),
            untouched: is_untouched(&secret.metadata, &KEYS),
            environment_id: secret.annotations().get(ENVIRONMENT_ID_ANNOTATION).cloned(),
        })
    }
}

/// The worker Secrets of one watched scope, by namespace and name.
pub type Index = k8s::index::Index<IndexedSecret>;

/// The owner reference of the object that controls `secret` (there is at most one).
pub(crate) fn controller<K: Resource>(secret: &K) -> Option<&OwnerReference> {
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

pub(crate) fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

#[cfg(test)]
/// `secret` as the API server holds it once the operator applied it: its managedFields say
/// the operator wrote each key of its data.
pub(crate) fn applied(mut secret: Secret) -> Secret {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    let keys: serde_json::Map<String, serde_json::Value> =
        secret.data.iter().flatten().map(|(k, _)| (format!("f:{k}"), serde_json::json!({}))).collect();
    secret.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
        manager: Some(MANAGER.into()),
        operation: Some("Apply".into()),
        fields_v1: Some(FieldsV1(serde_json::json!({"f:data": keys}))),
        ..Default::default()
    }]);
    secret
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::EnvironmentSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
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

    /// `secret` with `key` set by hand, as the API server records it.
    fn edited(mut secret: Secret, key: &str) -> Secret {
        secret.data.get_or_insert_default().insert(key.into(), bytes("something else"));
        let fields = secret.metadata.managed_fields.get_or_insert_default();
        for entry in fields.iter_mut() {
            if let Some(FieldsV1(f)) = &mut entry.fields_v1
                && let Some(data) = f.get_mut("f:data").and_then(|d| d.as_object_mut())
            {
                data.remove(&format!("f:{key}"));
            }
        }
        fields.push(ManagedFieldsEntry {
            manager: Some("kubectl-edit".into()),
            operation: Some("Update".into()),
            fields_v1: Some(FieldsV1(json!({"f:data": {format!("f:{key}"): {}}}))),
            ..Default::default()
        });
        secret
    }

    fn meta(secret: &Secret) -> PartialObjectMeta<Secret> {
        PartialObjectMeta { metadata: secret.metadata.clone(), ..Default::default() }
    }

    fn indexed(secret: &Secret) -> Option<IndexedSecret> {
        IndexedSecret::of(&meta(secret))
    }

    fn remote(token: &str) -> RemoteEnvironment {
        serde_json::from_value(
            json!({"id": "id-1", "name": "prod", "status": "ready", "worker_token": token}),
        )
        .unwrap()
    }

    #[test]
    fn secret_is_owned_and_complete() {
        let built = build(&env(), "id-1", &cmd());
        assert!(!is_current(&built, &env(), &remote("tok")), "not written yet");
        let s = applied(built);
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
        assert_eq!(s.annotations()[ENVIRONMENT_ID_ANNOTATION], "id-1", "what the metadata watch reads");
        assert!(is_current(&s, &env(), &remote("tok")));
        assert!(!is_current(&s, &env(), &remote("rotated")));
    }

    #[test]
    fn a_secret_edited_by_hand_is_not_current() {
        let s = applied(build(&env(), "id-1", &cmd()));
        assert!(is_current(&s, &env(), &remote("tok")));
        assert!(!is_current(&edited(s.clone(), COMMAND_KEY), &env(), &remote("tok")));
        let mut removed = s.clone();
        removed.data.as_mut().unwrap().remove(COMMAND_KEY);
        let ours = removed.metadata.managed_fields.as_mut().unwrap();
        ours[0].fields_v1.as_mut().unwrap().0["f:data"]
            .as_object_mut()
            .unwrap()
            .remove("f:KUBIYA_WORKER_COMMAND");
        assert!(!is_current(&removed, &env(), &remote("tok")), "a key deleted by hand");
        let mut before_upgrade = s.clone();
        before_upgrade.metadata.annotations = None;
        assert!(
            !is_current(&before_upgrade, &env(), &remote("tok")),
            "written once more with its annotation"
        );
    }

    #[test]
    fn a_settled_environment_needs_its_secret_untouched_and_for_its_environment() {
        let mut e = env();
        e.status = Some(crate::resource::EnvironmentStatus {
            environment_id: Some("id-1".into()),
            can_register: Some(true),
            ..Default::default()
        });
        let s = applied(build(&e, "id-1", &cmd()));
        assert!(is_in_place(indexed(&s).as_ref(), &e));
        assert!(!is_in_place(None, &e), "deleted while the operator was away");
        assert!(!is_in_place(indexed(&edited(s.clone(), COMMAND_KEY)).as_ref(), &e), "edited by hand");
        let other = applied(build(&e, "id-2", &cmd()));
        assert!(!is_in_place(indexed(&other).as_ref(), &e), "for another environment");
        let mut restored = e.clone();
        restored.metadata.uid = Some("uid-2".into());
        assert!(!is_in_place(indexed(&s).as_ref(), &restored), "controlled by an earlier object");
        let mut nameless = e.clone();
        nameless.metadata.uid = None;
        assert!(!is_in_place(None, &nameless), "no owner, no uid");
        e.status.as_mut().unwrap().can_register = Some(false);
        assert!(is_in_place(None, &e), "none needed");
    }

    #[test]
    fn only_an_environments_worker_secret_is_indexed() {
        let s = applied(build(&env(), "id-1", &cmd()));
        assert!(indexed(&s).is_some());
        let mut not_controlled = s.clone();
        not_controlled.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        assert_eq!(indexed(&not_controlled), None, "only owned, not controlled");
        let mut orphan = s.clone();
        orphan.metadata.owner_references = None;
        assert_eq!(indexed(&orphan), None, "no owner");
        let mut unlabelled = s.clone();
        unlabelled.metadata.labels = None;
        assert_eq!(indexed(&unlabelled), None, "not labelled as ours");
        let mut queue = s.clone();
        queue.metadata.owner_references.as_mut().unwrap()[0].kind = "WorkerQueue".into();
        assert_eq!(indexed(&queue), None, "a queue's");
    }

    #[test]
    fn someone_elses_secret_is_not_ours() {
        let mut s = applied(build(&env(), "id-1", &cmd()));
        s.metadata.owner_references = None;
        assert!(!is_owned(&s, &env()));
        assert!(!was_owned_before(&s, &env()));
        assert!(!is_current(&s, &env(), &remote("tok")));
    }

    #[test]
    fn a_secret_of_an_earlier_environment_of_the_same_name_is_taken_over() {
        let s = applied(build(&env(), "id-1", &cmd()));
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
