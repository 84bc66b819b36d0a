//! The pass for `managementPolicy: Observe`: read the remote environment and report it, never
//! write to it. Differences from the spec are reported (condition Synced, an Event, a metric),
//! not corrected; the worker Secret is still published. Talks to the Kubernetes API and reads the
//! control plane (its one write: releasing an environment this resource managed until now).

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{Map, Value};
use tracing::info;

use super::ownership::{self, Marker, OWNER_KEY, Owner};
use super::report::{self, publish};
use super::status::{self, Observation};
use super::{Context, Error, find_named, plan, worker_secret};
use crate::connection::Usable;
use crate::controlplane::RemoteEnvironment;
use crate::metrics::{FieldLabels, field_label};
use crate::resource::{ADOPT_ANNOTATION, Environment, Phase};

pub async fn observe(env: &Environment, conn: &Usable, me: &Owner, ctx: &Context) -> Result<Action, Error> {
    let cp = &conn.client;
    let remote = find(env, conn, ctx).await?;
    let marker = Marker::read(&remote.settings);
    if ownership::may_delete(marker.as_ref(), me) {
        // Full until now: let it go, as an Orphan deletion would.
        super::cleanup::release(&remote, cp).await?;
        info!(environment_id = %remote.id, "managementPolicy Observe: released the remote environment");
        let note = format!("now only observing environment {:?} ({}): released it", remote.name, remote.id);
        publish(env, ctx, EventType::Normal, "Released", note).await;
    } else if !conn.allow_adoption && !ownership::names(marker.as_ref(), me) {
        // Observing shows its status and publishes its worker token here: the same as adopting.
        return Err(Error::AdoptionNotAllowed { connection: conn.key.to_string(), id: remote.id });
    }
    ctx.remember_id(env, Some(&remote.id));

    let drift = drifted_fields(env, me, &remote);
    let before = env.status.as_ref().and_then(|s| status::find(&s.conditions, status::SYNCED));
    let was = before.filter(|c| c.status == "False").map(|c| c.message.clone());
    if !drift.is_empty() {
        let message = status::drift_message(&drift);
        if was.as_deref() != Some(message.as_str()) {
            for f in &drift {
                ctx.metrics.drift_observed.get_or_create(&FieldLabels { field: field_label(f) }).inc();
            }
            publish(env, ctx, EventType::Warning, "Drifted", message).await;
        }
    }
    let worker_secret =
        if remote.can_register() { Some(worker_secret::ensure(env, &remote, cp, ctx).await?) } else { None };
    let obs = Observation::Observed { remote: &remote, worker_secret, connection: &conn.key, drift: &drift };
    let phase = report::status(env, obs, ctx).await?;
    Ok(match phase {
        Some(Phase::Provisioning) => Action::requeue(ctx.provisioning_poll),
        _ => ctx.resync_action(),
    })
}

/// The environment to observe: by the recorded id, else the annotation's, else by name.
async fn find(env: &Environment, conn: &Usable, ctx: &Context) -> Result<RemoteEnvironment, Error> {
    let annotation = env.annotation(ADOPT_ANNOTATION).map(str::trim).filter(|a| !a.is_empty());
    let id = ctx.known_id(env).or(annotation.map(str::to_owned));
    let found = match id {
        Some(id) => match conn.client.get(&id).await {
            Ok(remote) => Some(remote),
            Err(e) if e.is_not_found() || !e.is_retryable() => None,
            Err(source) => return Err(Error::GetRemote { source }),
        },
        None => find_named(&conn.client, env.remote_name()).await?,
    };
    found.ok_or_else(|| Error::ObservedMissing { name: env.remote_name().to_owned() })
}

/// The fields where the remote environment differs from the spec, owner markers aside.
fn drifted_fields(env: &Environment, me: &Owner, remote: &RemoteEnvironment) -> Vec<String> {
    let mut desired = plan::desired(env, me);
    desired.settings.remove(OWNER_KEY);
    let mut seen = remote.clone();
    seen.settings.remove(OWNER_KEY);
    let fields: Map<String, Value> = plan::diff(&desired, &seen);
    fields.keys().cloned().collect()
}
