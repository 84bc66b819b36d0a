//! The pass over a Connection or ClusterConnection: keep its client current ([`refresh`]), count
//! its Environments, report; and keep it, with a finalizer, while Environments use it. Talks to
//! the Kubernetes API and (through `refresh`) the control plane.
//!
//! [`refresh`]: super::refresh

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, instrument, warn};

use super::error::Error;
use super::status::{self, Findings};
use super::{ConnKey, Registry, State, refresh};
use crate::k8s::index::Index;
use crate::k8s::{events, finalizer};
use crate::resource::{CONNECTION_FINALIZER, ClusterConnection, Connection, ConnectionStatus};

/// How often a connection's Secret is read again: a rotated key is in use within this.
pub const POLL: Duration = Duration::from_secs(5);

/// What the connection passes share.
pub struct Context {
    pub kube: kube::Client,
    pub registry: Arc<Registry>,
    pub recorder: Recorder,
    /// The resourceVersions of the Secrets of every watched scope (from their metadata watch):
    /// a connection's Secret is read only when it changed.
    pub secret_versions: Vec<Arc<Index<String>>>,
}

impl Context {
    /// The Secret's resourceVersion as watched, if known.
    pub fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.secret_versions.iter().find_map(|v| v.get(namespace, name))
    }
}

/// What a Connection or a ClusterConnection declares, said once for both kinds.
pub struct Declared {
    pub key: ConnKey,
    pub base_url: Option<String>,
    pub secret_namespace: String,
    pub secret_name: String,
    pub secret_key: String,
    pub max_concurrent: Option<i32>,
    pub allow_adoption: bool,
}

impl Declared {
    /// `Secret <namespace>/<name>`, for messages.
    pub fn secret(&self) -> String {
        format!("Secret {}/{}", self.secret_namespace, self.secret_name)
    }
}

#[instrument(skip_all, fields(connection = %conn.name_any(), namespace = conn.namespace().unwrap_or_default()))]
pub async fn reconcile_namespaced(conn: Arc<Connection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = conn.namespace().ok_or(Error::Unnamed)?;
    let declared = Declared {
        key: ConnKey::Namespaced { namespace: namespace.clone(), name: conn.name_any() },
        base_url: conn.spec.base_url.clone(),
        secret_namespace: namespace.clone(),
        secret_name: conn.spec.api_key_secret_ref.name.clone(),
        secret_key: conn.spec.api_key_secret_ref.key.clone(),
        max_concurrent: conn.spec.max_concurrent_requests,
        // The namespace brought its own key: adopting with it is its own business.
        allow_adoption: true,
    };
    let api: Api<Connection> = Api::namespaced(ctx.kube.clone(), &namespace);
    pass(conn.as_ref(), &api, conn.status.as_ref(), declared, &ctx).await
}

#[instrument(skip_all, fields(connection = %conn.name_any()))]
pub async fn reconcile_cluster(conn: Arc<ClusterConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let r = &conn.spec.api_key_secret_ref;
    let declared = Declared {
        key: ConnKey::Cluster { name: conn.name_any() },
        base_url: conn.spec.base_url.clone(),
        secret_namespace: r.namespace.clone(),
        secret_name: r.name.clone(),
        secret_key: r.key.clone(),
        max_concurrent: conn.spec.max_concurrent_requests,
        allow_adoption: conn.spec.allow_adoption,
    };
    let api: Api<ClusterConnection> = Api::all(ctx.kube.clone());
    pass(conn.as_ref(), &api, conn.status.as_ref(), declared, &ctx).await
}

/// A failed pass (the Kubernetes API): look again shortly.
pub fn error_policy<K>(_: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    warn!(error = %crate::error_chain(error), "connection");
    Action::requeue(POLL)
}

async fn pass<K>(
    obj: &K,
    api: &Api<K>,
    old: Option<&ConnectionStatus>,
    declared: Declared,
    ctx: &Context,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    if obj.meta().deletion_timestamp.is_some() {
        return deletion(obj, api, old, &declared, ctx).await;
    }
    if !finalizer::present(obj, CONNECTION_FINALIZER) {
        finalizer::add(api, obj, CONNECTION_FINALIZER).await?;
        return Ok(Action::await_change());
    }
    let users = ctx.registry.users(&declared.key);
    let (held, checked) = refresh::refresh(&declared, ctx).await?;
    let state = held.state.clone();
    let was = ctx.registry.get(&declared.key).map(|h| h.state);
    if was.as_ref() != Some(&state) {
        info!(state = ?state, "connection state");
    }
    ctx.registry.set(held);
    let next = status::next(old, &findings(obj, &declared, &state, &users, checked, ctx, false), &now());
    if let (State::Broken { reason, message }, false) = (&state, was.as_ref() == Some(&state)) {
        events::publish(&ctx.recorder, obj, EventType::Warning, reason, message.clone()).await;
    }
    write_status(api, obj, old, next).await?;
    Ok(Action::requeue(POLL))
}

/// A connection being deleted goes once no Environment uses it, as counted from caches that have
/// all synced; until then it is held, and says by whom.
async fn deletion<K>(
    obj: &K,
    api: &Api<K>,
    old: Option<&ConnectionStatus>,
    declared: &Declared,
    ctx: &Context,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    if !finalizer::present(obj, CONNECTION_FINALIZER) {
        return Ok(Action::await_change());
    }
    let users = ctx.registry.users(&declared.key);
    if may_let_go(&users, ctx.registry.users_known()) {
        finalizer::remove(api, obj, CONNECTION_FINALIZER).await?;
        ctx.registry.remove(&declared.key);
        info!("deleted: no Environment uses it");
        return Ok(Action::await_change());
    }
    // Held: its Environments still use it (their own deletions among them), so it is kept
    // current as a live one is; after a restart, this is what gives it a client at all.
    let (held, _) = refresh::refresh(declared, ctx).await?;
    let state = held.state.clone();
    ctx.registry.set(held);
    if !ctx.registry.users_known() {
        // At a leader's start the Environment caches fill after the connections' own: until
        // then, nobody can tell it is unused.
        info!("deletion waits: the Environments that use it are not all known yet");
        return Ok(Action::requeue(POLL));
    }
    let next = status::next(old, &findings(obj, declared, &state, &users, None, ctx, true), &now());
    let note = next.message.clone().unwrap_or_default();
    write_status(api, obj, old, next).await?;
    events::publish(&ctx.recorder, obj, EventType::Warning, "InUse", note).await;
    // Its users' deletions do not wake it: look again.
    Ok(Action::requeue(POLL))
}

/// Whether a connection being deleted may go: no Environment uses it, as counted from caches
/// that have all synced.
fn may_let_go(users: &[String], users_known: bool) -> bool {
    users_known && users.is_empty()
}

fn findings<'a, K: Resource>(
    obj: &K,
    declared: &Declared,
    state: &'a State,
    users: &'a [String],
    checked: Option<Time>,
    ctx: &Context,
    deleting: bool,
) -> Findings<'a> {
    let base_url = declared.base_url.clone().unwrap_or_else(|| ctx.registry.defaults.base_url.to_string());
    let organization = ctx.registry.get(&declared.key).and_then(|h| h.organization);
    Findings { state, organization, base_url, users, checked, generation: obj.meta().generation, deleting }
}

fn now() -> Time {
    Time(Timestamp::now())
}

async fn write_status<K>(
    api: &Api<K>,
    obj: &K,
    old: Option<&ConnectionStatus>,
    next: ConnectionStatus,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    if old == Some(&next) {
        return Ok(());
    }
    crate::k8s::status::patch(api, &obj.name_any(), serde_json::json!({ "status": next })).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_only_when_nothing_uses_it_as_counted_from_synced_caches() {
        assert!(may_let_go(&[], true));
        assert!(!may_let_go(&[], false), "the caches are not all synced: perhaps used");
        assert!(!may_let_go(&["ns/e".to_owned()], true));
        assert!(!may_let_go(&["ns/e".to_owned()], false));
    }
}
