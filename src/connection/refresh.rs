//! Keeping a connection's client current: read its Secret, build its client or swap the rotated
//! key into the one it has, and check the key with the control plane when it is new, rotated,
//! not working, or not checked for a while. Talks to the Kubernetes API and the control plane.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use tracing::info;
use url::Url;

use super::error::Error;
use super::pass::{Context, Declared};
use super::{HeldConnection, State};
use crate::controlplane::{self, ApiKey};
use crate::k8s::{self, Op};

/// How often a key that works is checked again with the control plane.
const CHECK_EVERY: Duration = Duration::from_secs(300);

/// The connection `declared` describes, brought up to date, and when its key was checked, if it
/// was now.
pub async fn refresh(declared: &Declared, ctx: &Context) -> Result<(HeldConnection, Option<Time>), Error> {
    let existing = ctx.registry.get(&declared.key);
    let broken = |reason: &'static str, message: String| {
        let mut held = existing
            .clone()
            .unwrap_or_else(|| HeldConnection::new(declared.key.clone(), None, declared.allow_adoption));
        held.allow_adoption = declared.allow_adoption;
        held.state = State::Broken { reason, message };
        (held, None)
    };
    let base_url = match &declared.base_url {
        Some(u) => match Url::parse(u) {
            Ok(u) => u,
            Err(e) => return Ok(broken("InvalidSpec", format!("baseUrl {u:?} is not a URL: {e}"))),
        },
        None => ctx.registry.defaults.base_url.clone(),
    };
    // Checked before the Secret is read: whoever may create a connection must not be able to
    // send a Secret of the namespace (or the operator's key) anywhere else.
    if !ctx.registry.defaults.allows(&base_url) {
        return Ok(broken("UrlNotAllowed", not_allowed(&base_url)));
    }
    let max_concurrent = declared.max_concurrent.and_then(|m| usize::try_from(m).ok());
    let limit = max_concurrent.unwrap_or(ctx.registry.defaults.max_concurrent);
    // The Secret is read again only when its watched version moved (or is not known): a steady
    // connection costs the API server nothing.
    let watched = ctx.secret_version(&declared.secret_namespace, &declared.secret_name);
    if let Some(same) = existing.as_ref().filter(|e| unchanged(e, &base_url, limit, watched.as_deref())) {
        let mut held = same.clone();
        held.allow_adoption = declared.allow_adoption;
        return Ok(check_if_due(held, declared).await);
    }
    let (key, version) = match read_key(declared, ctx).await? {
        Ok(read) => read,
        Err(message) => return Ok(broken("SecretNotFound", message)),
    };
    let built_from = (base_url.clone(), limit, version);
    let (client, fresh) = match current_client(existing.as_ref(), &built_from, &key) {
        Some(Ok(reused)) => reused,
        Some(Err(e)) => return Ok(broken("InvalidKey", format!("{}: {e}", declared.secret()))),
        None => match ctx.registry.defaults.client(&declared.key, base_url, &key, max_concurrent) {
            Ok(client) => (client, true),
            Err(e) => return Ok(broken("InvalidKey", format!("{}: {e}", declared.secret()))),
        },
    };
    let mut held = HeldConnection::new(declared.key.clone(), Some(client.clone()), declared.allow_adoption);
    held.built_from = Some(built_from);
    held.organization = key.organization();
    // A new key is checked now; a reused one keeps its state until its check is due.
    if !fresh && let Some(e) = existing {
        held.state = e.state;
        held.checked_at = e.checked_at;
    }
    Ok(check_if_due(held, declared).await)
}

/// Whether `held` was built from the Secret version now watched, for the same control plane and
/// limit, and has its client (a connection that was broken before reading its key has none).
fn unchanged(held: &HeldConnection, base_url: &Url, limit: usize, watched: Option<&str>) -> bool {
    held.client.is_some()
        && held.built_from.as_ref().is_some_and(|(url, l, version)| {
            url == base_url && *l == limit && watched == Some(version.as_str())
        })
}

/// `held`, with its key checked with the control plane if that is due; and when, if it was now.
async fn check_if_due(mut held: HeldConnection, declared: &Declared) -> (HeldConnection, Option<Time>) {
    let Some(client) = held.client.clone().filter(|_| check_due(&held, Instant::now())) else {
        return (held, None);
    };
    held.state = check(&client, declared).await;
    held.checked_at = Some(Instant::now());
    (held, Some(Time(Timestamp::now())))
}

/// What a connection whose `baseUrl` is not allowed says.
fn not_allowed(url: &Url) -> String {
    format!(
        "baseUrl {} is not a control plane this operator sends keys to, so its Secret was not read: \
         an administrator allows it with --allowed-control-planes (KUBIYA_ALLOWED_CONTROL_PLANES; \
         Helm value allowedControlPlanes)",
        url.origin().ascii_serialization()
    )
}

/// The API key in the connection's Secret and the Secret's resourceVersion; or, when there is
/// none, what to tell the user.
async fn read_key(declared: &Declared, ctx: &Context) -> Result<Result<(ApiKey, String), String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), &declared.secret_namespace);
    let found = secrets.get_opt(&declared.secret_name).await.map_err(k8s::failed(Op::ReadSecret))?;
    let Some(secret) = found else {
        return Ok(Err(format!(
            "{} not found: create it, with the API key under {:?}",
            declared.secret(),
            declared.secret_key
        )));
    };
    let Some(value) = secret.data.as_ref().and_then(|d| d.get(&declared.secret_key)) else {
        return Ok(Err(format!("{} has no key {:?}", declared.secret(), declared.secret_key)));
    };
    let version = secret.resource_version().unwrap_or_default();
    Ok(Ok((ApiKey::new(String::from_utf8_lossy(&value.0)), version)))
}

/// The client `existing` has, if it talks to the same control plane with the same limit, with
/// `key` swapped in when the Secret changed (so that no request goes out with the old key once
/// the change is seen), and whether the key is new to it. None: a new client is needed.
fn current_client(
    existing: Option<&HeldConnection>,
    built_from: &(Url, usize, String),
    key: &ApiKey,
) -> Option<Result<(controlplane::Client, bool), controlplane::BuildError>> {
    let existing = existing?;
    let (url, limit, version) = existing.built_from.as_ref()?;
    if *url != built_from.0 || *limit != built_from.1 {
        return None;
    }
    let client = existing.client.clone()?;
    let rotated = *version != built_from.2;
    if rotated {
        if let Err(e) = client.set_key(key) {
            return Some(Err(e));
        }
        info!("the API key changed: using the new one");
    }
    Some(Ok((client, rotated)))
}

/// Whether a held connection's key is due for a check: not working, never checked, or checked
/// [`CHECK_EVERY`] ago.
fn check_due(held: &HeldConnection, now: Instant) -> bool {
    held.state != State::Ready || held.checked_at.is_none_or(|t| now.duration_since(t) >= CHECK_EVERY)
}

/// What the control plane says of the key.
async fn check(client: &controlplane::Client, declared: &Declared) -> State {
    match client.check_key().await {
        Ok(()) => State::Ready,
        Err(e) if matches!(e.status(), Some(401 | 403)) => State::Broken {
            reason: "KeyRefused",
            message: format!(
                "the control plane refused the key in {}: {e}; put a valid key there",
                declared.secret()
            ),
        },
        Err(e) => State::Waiting {
            reason: "Unreachable",
            message: format!("checking the key failed: {e} (will retry)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::ConnKey;

    fn held(state: State, checked: Option<Instant>) -> HeldConnection {
        let mut h = HeldConnection::new(ConnKey::Operator, None, false);
        h.state = state;
        h.checked_at = checked;
        h
    }

    #[test]
    fn a_url_not_allowed_is_named_with_the_flag_that_allows_it() {
        let text = not_allowed(&Url::parse("http://127.0.0.1:19999/steal?x=1").unwrap());
        assert!(text.starts_with("baseUrl http://127.0.0.1:19999 is not a control plane"), "{text}");
        assert!(text.contains("Secret was not read") && text.contains("--allowed-control-planes"), "{text}");
        assert!(!text.contains("steal"), "the origin only: {text}");
    }

    #[test]
    fn a_working_key_is_checked_again_only_after_a_while_and_a_broken_one_at_once() {
        let now = Instant::now();
        let Some(long_ago) = now.checked_sub(CHECK_EVERY) else { return };
        assert!(!check_due(&held(State::Ready, Some(now)), now), "just checked");
        assert!(check_due(&held(State::Ready, Some(long_ago)), now), "checked long ago");
        assert!(check_due(&held(State::Ready, None), now), "never checked");
        let broken = State::Broken { reason: "KeyRefused", message: "m".into() };
        assert!(check_due(&held(broken, Some(now)), now), "broken");
        let waiting = State::Waiting { reason: "Unreachable", message: "m".into() };
        assert!(check_due(&held(waiting, Some(now)), now), "unreachable");
    }

    #[test]
    fn a_client_is_reused_for_the_same_control_plane_and_limit_and_takes_a_rotated_key() {
        let url = Url::parse("http://cp.test").unwrap();
        let key = ApiKey::new("k1");
        let client = controlplane::Client::new(controlplane::ClientConfig::new(
            url.clone(),
            key.clone(),
            Duration::from_secs(1),
        ))
        .unwrap();
        let mut h = HeldConnection::new(ConnKey::Operator, Some(client), false);
        h.built_from = Some((url.clone(), 8, "v1".into()));
        let same = current_client(Some(&h), &(url.clone(), 8, "v1".into()), &key).unwrap().unwrap();
        assert!(!same.1, "the same Secret: not a new key");
        let rotated =
            current_client(Some(&h), &(url.clone(), 8, "v2".into()), &ApiKey::new("k2")).unwrap().unwrap();
        assert!(rotated.1, "a new Secret version: a new key");
        assert!(
            current_client(Some(&h), &(url.clone(), 8, "v3".into()), &ApiKey::new("bad key"))
                .unwrap()
                .is_err()
        );
        assert!(current_client(Some(&h), &(url.clone(), 4, "v1".into()), &key).is_none(), "another limit");
        let other = Url::parse("http://else.test").unwrap();
        assert!(current_client(Some(&h), &(other, 8, "v1".into()), &key).is_none(), "another control plane");
        assert!(current_client(None, &(url, 8, "v1".into()), &key).is_none());
    }
}
