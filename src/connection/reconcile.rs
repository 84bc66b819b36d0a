//! The pass over a Connection or ClusterConnection: read its Secret, keep its client current (a
//! rotated key is swapped in place), check the key, count its Environments, report; and keep it,
//! with a finalizer, while Environments use it. Talks to the Kubernetes API and the control plane.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, instrument, warn};
use url::Url;

use super::status::{self, Observed};
use super::{ConnKey, Live, Registry, State};
use crate::controlplane::{self, ApiKey};
use crate::reconcile::report::publish_with;
use crate::reconcile::{Error, finalizer};
use crate::resource::{CONNECTION_FINALIZER, ClusterConnection, Connection, ConnectionStatus};

/// How often a connection's Secret is read again: a rotated key is in use within this.
pub const POLL: Duration = Duration::from_secs(5);
/// How often a key that works is checked again with the control plane.
const CHECK_EVERY: Duration = Duration::from_secs(300);

/// What the connection passes share.
pub struct Context {
    pub kube: kube::Client,
    pub registry: Arc<Registry>,
    pub recorder: Recorder,
}

/// What both kinds say, said once.
struct Source {
    key: ConnKey,
    base_url: Option<String>,
    secret_namespace: String,
    secret_name: String,
    secret_key: String,
    max_concurrent: Option<i32>,
    allow_adoption: bool,
}

#[instrument(skip_all, fields(connection = %conn.name_any(), namespace = conn.namespace().unwrap_or_default()))]
pub async fn reconcile_namespaced(conn: Arc<Connection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = conn.namespace().ok_or(Error::Unnamed)?;
    let source = Source {
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
    pass(conn.as_ref(), &api, conn.status.as_ref(), source, &ctx).await
}

#[instrument(skip_all, fields(connection = %conn.name_any()))]
pub async fn reconcile_cluster(conn: Arc<ClusterConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let r = &conn.spec.api_key_secret_ref;
    let source = Source {
        key: ConnKey::Cluster { name: conn.name_any() },
        base_url: conn.spec.base_url.clone(),
        secret_namespace: r.namespace.clone(),
        secret_name: r.name.clone(),
        secret_key: r.key.clone(),
        max_concurrent: conn.spec.max_concurrent_requests,
        allow_adoption: conn.spec.allow_adoption,
    };
    let api: Api<ClusterConnection> = Api::all(ctx.kube.clone());
    pass(conn.as_ref(), &api, conn.status.as_ref(), source, &ctx).await
}

/// A failed pass (the Kubernetes API): look again shortly.
pub fn error_policy<K>(_: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    warn!(error = %error.explain(), "connection");
    Action::requeue(POLL)
}

async fn pass<K>(
    obj: &K,
    api: &Api<K>,
    old: Option<&ConnectionStatus>,
    source: Source,
    ctx: &Context,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let users = ctx.registry.users(&source.key);
    if obj.meta().deletion_timestamp.is_some() {
        if !finalizer::present(obj, CONNECTION_FINALIZER) {
            return Ok(Action::await_change());
        }
        if users.is_empty() {
            finalizer::remove(api, obj, CONNECTION_FINALIZER).await?;
            ctx.registry.remove(&source.key);
            info!("deleted: no Environment uses it");
            return Ok(Action::await_change());
        }
        let state = ctx.registry.get(&source.key).map_or(State::Ready, |l| l.state);
        let observed = observed(obj, &source, &state, &users, None, ctx, true);
        let next = status::next(old, &observed, &Time(Timestamp::now()));
        let note = next.message.clone().unwrap_or_default();
        write_status(api, obj, old, next).await?;
        publish_with(&ctx.recorder, obj, EventType::Warning, "InUse", note).await;
        // Its users' deletions do not wake it: look again.
        return Ok(Action::requeue(POLL));
    }
    if !finalizer::present(obj, CONNECTION_FINALIZER) {
        finalizer::add(api, obj, CONNECTION_FINALIZER).await?;
        return Ok(Action::await_change());
    }

    let (live, checked) = refresh(&source, ctx).await?;
    let state = live.state.clone();
    let was = ctx.registry.get(&source.key).map(|l| l.state);
    if was.as_ref() != Some(&state) {
        info!(state = ?state, "connection state");
    }
    ctx.registry.set(live);
    let observed = observed(obj, &source, &state, &users, checked, ctx, false);
    let next = status::next(old, &observed, &Time(Timestamp::now()));
    if let (State::Broken { reason, message }, false) = (&state, was.as_ref() == Some(&state)) {
        publish_with(&ctx.recorder, obj, EventType::Warning, reason, message.clone()).await;
    }
    write_status(api, obj, old, next).await?;
    Ok(Action::requeue(POLL))
}

fn observed<'a, K: Resource>(
    obj: &K,
    source: &Source,
    state: &'a State,
    users: &'a [String],
    checked: Option<Time>,
    ctx: &Context,
    deleting: bool,
) -> Observed<'a> {
    let base_url = source.base_url.clone().unwrap_or_else(|| ctx.registry.defaults.base_url.to_string());
    let organization = ctx.registry.get(&source.key).and_then(|l| l.organization);
    Observed { state, organization, base_url, users, checked, generation: obj.meta().generation, deleting }
}

/// Reads the Secret and brings the connection's client up to date; checks the key when it is
/// new, rotated, not working, or not checked for a while. Returns the connection and when its key
/// was checked, if it was now.
async fn refresh(source: &Source, ctx: &Context) -> Result<(Live, Option<Time>), Error> {
    let existing = ctx.registry.get(&source.key);
    let broken = |reason: &'static str, message: String| {
        let mut live =
            existing.clone().unwrap_or_else(|| Live::new(source.key.clone(), None, source.allow_adoption));
        live.allow_adoption = source.allow_adoption;
        live.state = State::Broken { reason, message };
        (live, None)
    };
    let where_ = format!("Secret {}/{}", source.secret_namespace, source.secret_name);
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), &source.secret_namespace);
    let Some(secret) =
        secrets.get_opt(&source.secret_name).await.map_err(|source| Error::ReadSecret { source })?
    else {
        return Ok(broken(
            "SecretNotFound",
            format!("{where_} not found: create it, with the API key under {:?}", source.secret_key),
        ));
    };
    let Some(value) = secret.data.as_ref().and_then(|d| d.get(&source.secret_key)) else {
        return Ok(broken("SecretNotFound", format!("{where_} has no key {:?}", source.secret_key)));
    };
    let key = ApiKey::new(String::from_utf8_lossy(&value.0));
    let defaults = &ctx.registry.defaults;
    let base_url = match &source.base_url {
        Some(u) => match Url::parse(u) {
            Ok(u) => u,
            Err(e) => return Ok(broken("InvalidSpec", format!("baseUrl {u:?} is not a URL: {e}"))),
        },
        None => defaults.base_url.clone(),
    };
    let max_concurrent =
        source.max_concurrent.and_then(|m| usize::try_from(m).ok()).unwrap_or(defaults.max_concurrent);
    let version = secret.resource_version().unwrap_or_default();

    // The same control plane and limit: the key is swapped in place, so that no request goes
    // out with the old one once the change is seen. Otherwise a new client.
    let reusable = existing.as_ref().and_then(|l| {
        let same = l.built_from.as_ref().is_some_and(|(u, m, _)| *u == base_url && *m == max_concurrent);
        l.client.clone().filter(|_| same)
    });
    let (client, fresh) = match reusable {
        Some(client) => {
            let rotated =
                existing.as_ref().and_then(|l| l.built_from.as_ref()).is_some_and(|(_, _, v)| *v != version);
            if rotated {
                if let Err(e) = client.set_key(&key) {
                    return Ok(broken("InvalidKey", format!("{where_}: {e}")));
                }
                info!("the API key changed: using the new one");
            }
            (client, rotated)
        }
        None => {
            let built = controlplane::Client::new(controlplane::ClientConfig {
                base_url: base_url.clone(),
                api_key: key.clone(),
                timeout: defaults.timeout,
                max_concurrent,
                metrics: defaults.metrics.clone(),
                connection: source.key.metric(),
            });
            match built {
                Ok(client) => (client, true),
                Err(e) => return Ok(broken("InvalidKey", format!("{where_}: {e}"))),
            }
        }
    };
    let mut live = Live::new(source.key.clone(), Some(client.clone()), source.allow_adoption);
    live.built_from = Some((base_url, max_concurrent, version));
    live.organization = key.organization();
    let due = fresh
        || existing.as_ref().is_none_or(|l| {
            l.state != State::Ready || l.checked_at.is_none_or(|t| t.elapsed() >= CHECK_EVERY)
        });
    if !due {
        if let Some(e) = existing {
            live.state = e.state;
            live.checked_at = e.checked_at;
        }
        return Ok((live, None));
    }
    live.state = match client.check_key().await {
        Ok(()) => State::Ready,
        Err(e) if matches!(e.status(), Some(401 | 403)) => State::Broken {
            reason: "KeyRefused",
            message: format!("the control plane refused the key in {where_}: {e}; put a valid key there"),
        },
        Err(e) => State::Waiting {
            reason: "Unreachable",
            message: format!("checking the key failed: {e} (will retry)"),
        },
    };
    live.checked_at = Some(Instant::now());
    Ok((live, Some(Time(Timestamp::now()))))
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
    let patch = serde_json::json!({ "status": next });
    api.patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
        .map_err(|source| Error::WriteStatus { source })
}
