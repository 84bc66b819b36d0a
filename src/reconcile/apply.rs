//! The pass for a live resource: find the remote environment (and whether this resource may
//! manage it), create or correct it, publish the worker Secret, report.

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::ownership::{self, Claim, Decision, Liveness, Marker, Owner, Route};
use super::plan::{self, Plan};
use super::report::{self, publish};
use super::status::{self, Observation};
use super::{Context, Error, find_named, kubectl_target, observe, worker_secret};
use crate::connection::Usable;
use crate::controlplane::{self, EnvironmentBody, RemoteEnvironment, sanitize};
use crate::metrics::{FieldLabels, field_label};
use crate::resource::{ADOPT_ANNOTATION, Environment, Guarded, ManagementPolicy, Phase};

/// A remote environment this resource may write to, and whether it takes it in this pass.
struct Found {
    remote: RemoteEnvironment,
    claim: Option<Claim>,
}

pub async fn apply(env: &Environment, ctx: &Context) -> Result<Action, Error> {
    if env.is_paused() {
        report::status(env, Observation::Paused, ctx).await?;
        return Ok(Action::await_change());
    }
    // A settled Environment at start (or after a failover) is not fetched now: its turn comes
    // within the resync interval, and the passes users wait for go first.
    let settled = status::settled(env);
    if ctx.first_sight(env)
        && settled
        && worker_secret::is_in_place(ctx.cached_worker_secret(env).as_ref(), env)
    {
        return Ok(ctx.first_check());
    }
    // First sight: say that work has started before talking to the control plane.
    if env.status.is_none() && ctx.known_id(env).is_none() {
        report::status(env, Observation::Starting, ctx).await?;
    }
    let conn = ctx.connections.for_environment(env, &ctx.kube).await?;
    // A drift check: nobody waits for it, so its requests yield to those of passes someone does.
    let conn = Usable { client: conn.client.in_background(settled), ..conn };
    let me = ctx.owner(env);
    if env.spec.management_policy == ManagementPolicy::Observe {
        return observe::observe(env, &conn, &me, ctx).await;
    }
    let desired = plan::desired(env, &me);

    // Observe: the environment this resource manages, or may take; else create it.
    let found = match observe(env, &me, &conn, ctx).await? {
        Some(found) => found,
        None => create(env, &desired, &me, &conn, ctx).await?,
    };

    // Plan, and act on it.
    let cp = &conn.client;
    let remote = match plan::plan(&desired, found.remote) {
        Plan::InSync(remote) => remote,
        Plan::Update { remote, fields } => update(env, cp, &remote, &fields, ctx).await?,
    };
    if let Some(claim) = found.claim {
        announce(env, &remote, claim, ctx).await;
    }
    let worker_secret =
        if remote.can_register() { Some(worker_secret::ensure(env, &remote, cp, ctx).await?) } else { None };

    // Report.
    let obs = Observation::Remote { remote: &remote, worker_secret, connection: &conn.key };
    let phase = report::status(env, obs, ctx).await?;
    let was = env.status.as_ref().and_then(|s| s.phase);
    if phase == Some(Phase::Error) && was != Some(Phase::Error) {
        let why = remote.error_message.as_deref().map(sanitize).unwrap_or_default();
        let note = format!("the control plane reports an error for environment {}: {why}", remote.id);
        publish(env, ctx, EventType::Warning, "RemoteError", note).await;
    }
    Ok(match phase {
        Some(Phase::Provisioning) => Action::requeue(ctx.provisioning_poll),
        _ => ctx.resync_action(),
    })
}

/// The remote environment this object manages or is asked to adopt, if it exists: by the id in
/// status, else by the adoption annotation. Without either, there is none yet (a lost create is
/// recovered in [`create`], by the owner marker).
async fn observe(
    env: &Environment,
    me: &Owner,
    conn: &Usable,
    ctx: &Context,
) -> Result<Option<Found>, Error> {
    let known = ctx.known_id(env);
    let annotation = env.annotation(ADOPT_ANNOTATION).map(str::trim).filter(|a| !a.is_empty());
    // Observed until now (its status keeps Observe's condition until a pass manages it): taking
    // it over is an adoption.
    let was_observing =
        env.status.as_ref().is_some_and(|s| status::find(&s.conditions, status::SYNCED).is_some());
    let (id, route) = match (known.as_deref(), annotation) {
        // The annotation naming the recorded id is a standing consent to take it over.
        (Some(id), Some(a)) if a == id => (id, Route::Annotation),
        (Some(id), _) if was_observing => (id, Route::Annotation),
        (Some(id), _) => (id, Route::Status),
        (None, Some(a)) => (a, Route::Annotation),
        (None, None) => return Ok(None),
    };
    let remote = match conn.client.get(id).await {
        Ok(remote) => remote,
        // Not found, or an id the database cannot even read: nothing to adopt.
        Err(e) if known.is_none() && (e.is_not_found() || !e.is_retryable()) => {
            return Err(Error::AdoptMissing { id: id.to_owned() });
        }
        Err(e) if e.is_not_found() => {
            ctx.remember_id(env, None);
            warn!(environment_id = id, "remote environment is gone; creating it again");
            let note = format!("environment {id} no longer exists in the control plane; creating it again");
            publish(env, ctx, EventType::Warning, "Recreating", note).await;
            return Ok(None);
        }
        Err(source) => return Err(Error::GetRemote { source }),
    };
    let found = decide(env, me, remote, route, conn, ctx, |refusal, remote| Error::OwnedElsewhere {
        id: remote.id,
        refusal,
        target: kubectl_target(env),
    })
    .await?;
    ctx.remember_id(env, Some(&found.remote.id));
    Ok(Some(found))
}

/// Creates the remote environment. A 409 means the name is taken: by this resource (a create
/// whose answer was lost), by one it may take back, or by someone else (a conflict).
async fn create(
    env: &Environment,
    desired: &EnvironmentBody,
    me: &Owner,
    conn: &Usable,
    ctx: &Context,
) -> Result<Found, Error> {
    let conflict = match conn.client.create(desired).await {
        Ok(remote) => {
            ctx.remember_id(env, Some(&remote.id));
            // No Event: the status records the new id, and each Event is one more API-server
            // write per environment.
            info!(environment_id = %remote.id, "created remote environment");
            return Ok(Found { remote, claim: None });
        }
        Err(e) if e.is_conflict() => e,
        Err(source) => return Err(Error::CreateRemote { source }),
    };
    // Gone again between the two calls: the next pass creates it.
    let Some(remote) = find_named(&conn.client, &desired.name).await? else {
        return Err(Error::CreateRemote { source: conflict });
    };
    let found = decide(env, me, remote, Route::Name, conn, ctx, |refusal, remote| Error::NameConflict {
        name: desired.name.clone(),
        id: remote.id,
        refusal,
        target: kubectl_target(env),
    })
    .await?;
    if found.claim.is_none() {
        info!(environment_id = %found.remote.id, "recovered remote environment created by an earlier pass");
    }
    ctx.remember_id(env, Some(&found.remote.id));
    Ok(found)
}

/// Gathers what the ownership decision needs (whether the marked object still exists) and
/// applies it; a refusal becomes the error `refused` makes of it.
async fn decide(
    env: &Environment,
    me: &Owner,
    remote: RemoteEnvironment,
    route: Route,
    conn: &Usable,
    ctx: &Context,
    refused: impl FnOnce(ownership::Refusal, RemoteEnvironment) -> Error,
) -> Result<Found, Error> {
    let marker = Marker::read(&remote.settings);
    let liveness = match ownership::needs_liveness(marker.as_ref(), me) {
        Some(owner) => liveness(owner, ctx).await?,
        None => Liveness::Live,
    };
    match ownership::decide(marker.as_ref(), me, route, liveness) {
        Decision::Manage => Ok(Found { remote, claim: None }),
        // Whoever may create an Environment where this connection serves could otherwise take any
        // environment of the organization, and its worker token.
        Decision::Claim(Claim::Adopted { .. }) if !conn.allow_adoption => {
            Err(Error::AdoptionNotAllowed { connection: conn.key.to_string(), id: remote.id })
        }
        Decision::Claim(claim) => {
            info!(environment_id = %remote.id, ?claim, namespace = %env.metadata.namespace.as_deref().unwrap_or_default(), "taking the remote environment");
            Ok(Found { remote, claim: Some(claim) })
        }
        Decision::Refuse(refusal) => Err(refused(refusal, remote)),
    }
}

/// Whether the Environment a marker names still exists: same namespace and name, same UID.
async fn liveness(owner: &Owner, ctx: &Context) -> Result<Liveness, Error> {
    let api: Api<Guarded> = Api::namespaced(ctx.kube.clone(), &owner.namespace);
    match api.get_metadata_opt(&owner.name).await {
        Ok(Some(found)) if found.metadata.uid.as_deref() == Some(owner.uid.as_str()) => Ok(Liveness::Live),
        Ok(_) => Ok(Liveness::Gone),
        // Not allowed to look in that namespace (a namespaced install): assume it lives.
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(Liveness::Unknown),
        Err(source) => Err(Error::ReadOwner { source }),
    }
}

/// Says, once the marker is written, that this resource took the environment.
async fn announce(env: &Environment, remote: &RemoteEnvironment, claim: Claim, ctx: &Context) {
    let (reason, note) = match claim {
        Claim::Reclaimed => (
            "Reclaimed",
            format!(
                "took back environment {:?} ({}): its previous holder of this name released it or no longer exists",
                remote.name, remote.id
            ),
        ),
        Claim::Adopted { previous } => {
            let from = match previous {
                None => String::new(),
                Some(m) if m.released => format!(" (released by {})", m.owner),
                Some(m) => {
                    format!(" (it was managed by {}{})", m.owner, cluster_note(&m.owner, &ctx.cluster))
                }
            };
            (
                "Adopted",
                format!(
                    "adopted environment {:?} ({}){from}; the spec is now enforced on it",
                    remote.name, remote.id
                ),
            )
        }
    };
    publish(env, ctx, EventType::Normal, reason, note).await;
}

fn cluster_note(owner: &Owner, cluster: &str) -> &'static str {
    if owner.cluster == cluster { ", which no longer exists" } else { " in another cluster" }
}

/// One PATCH of the differing fields. When the spec did not change since the last successful
/// pass, the difference is drift (someone changed the environment outside Kubernetes): said so in
/// an Event and counted per field. A write of the owner marker alone is neither.
async fn update(
    env: &Environment,
    cp: &controlplane::Client,
    remote: &RemoteEnvironment,
    fields: &Map<String, Value>,
    ctx: &Context,
) -> Result<RemoteEnvironment, Error> {
    let names = fields.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
    let updated = cp.update(&remote.id, fields).await.map_err(|source| Error::UpdateRemote { source })?;
    let settled = env.status.as_ref().is_some_and(|s| {
        s.environment_id.as_deref() == Some(remote.id.as_str())
            && s.observed_generation == env.metadata.generation
    });
    if plan::only_the_marker(fields, remote) {
        info!(environment_id = %remote.id, "wrote the owner marker");
    } else if settled {
        info!(environment_id = %remote.id, fields = %names, "corrected drift");
        for f in fields.keys() {
            ctx.metrics.drift_corrections.get_or_create(&FieldLabels { field: field_label(f) }).inc();
        }
        let note = format!("corrected fields changed outside Kubernetes: {names}");
        publish(env, ctx, EventType::Normal, "DriftCorrected", note).await;
    } else {
        info!(environment_id = %remote.id, fields = %names, "updated remote environment");
        publish(env, ctx, EventType::Normal, "Updated", format!("updated {names}")).await;
    }
    Ok(updated)
}
