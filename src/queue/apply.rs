//! The pipelines of a WorkerQueue: [`apply`] for a live one (Full or Observe), [`cleanup`] for
//! one being deleted, and the thin executors they share.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::decide::{self, Decision, Goal, Located, Plan, Situation};
use super::error::Error;
use super::status::{self, Outcome};
use super::{GuardedQueue, deployment, desired, secret, workers};
use crate::connection::ResolvedConnection;
use crate::controlplane::{self, RemoteQueue};
use crate::k8s;
use crate::reconcile::decide::{Cause, Note, Removal};
use crate::reconcile::desired::Wire;
use crate::reconcile::locate::{self, Asked, Looking, Search, is_uuid};
use crate::reconcile::ownership::{Claim, Elsewhere, Liveness, Marker, Owner, Route};
use crate::reconcile::{Context, act, desired::Changes};
use crate::resource::{
    DELETION_POLICY_ANNOTATION, DeletionPolicy, Environment, Guarded, ManagementPolicy, Phase,
    QUEUE_ADOPT_ANNOTATION, TAKE_OVER_ANNOTATION, WorkerQueue,
};

pub async fn apply(queue: &WorkerQueue, ctx: &Context) -> Result<Action, Error> {
    if queue.is_paused() {
        report(queue, Outcome::Paused, ctx).await?;
        return Ok(Action::await_change());
    }
    // A settled queue seen for the first time (at start, after a failover) is looked at within
    // the resync interval, as a settled Environment is: a restart costs the control plane nothing.
    if ctx.first_sight(queue) && status::applied(queue) {
        return Ok(ctx.first_check());
    }
    let (env, environment_id) = environment(queue, ctx)?;
    let observing = queue.spec.management_policy == ManagementPolicy::Observe;
    if !observing && env.spec.management_policy == ManagementPolicy::Observe {
        return Err(Error::EnvironmentObserved { name: env.name_any() });
    }
    let conn = ctx.connections.for_environment(&env, &ctx.kube).await?;
    let me = me(queue, ctx).await?;
    let desired = desired::desired(queue, &me);
    let known = ctx.recalled_id(queue).or_else(|| queue.status.as_ref().and_then(|s| s.queue_id.clone()));
    let goal = if observing {
        Goal::Observe { desired: desired.clone(), last_drift: status::last_drift(queue).map(str::to_owned) }
    } else {
        Goal::Manage {
            desired: desired.clone(),
            applied_to: status::applied(queue).then(|| known.clone()).flatten(),
        }
    };
    let looking = if observing { Looking::ToObserve } else { Looking::ToManage };
    let asked = Asked {
        id: queue.annotation(QUEUE_ADOPT_ANNOTATION).map(str::trim).filter(|a| !a.is_empty()),
        was_observed: status::was_observed(queue),
    };
    let search = locate::search(looking, known.as_deref(), asked, queue.remote_name());
    let located = locate(&conn.client, search, &environment_id).await?;
    let mut decision = decision(queue, goal.clone(), &me, located, &conn, &environment_id, ctx).await?;

    let mut notes = Vec::new();
    if decision.plan == Plan::Create {
        notes = decision.events;
        let located = match conn.client.create_queue(&environment_id, &desired).await {
            Ok(created) => {
                ctx.remember_id(queue, Some(&created.id));
                info!(queue_id = %created.id, "created remote queue");
                Located::Found { remote: created, route: Route::Status }
            }
            Err(e) if e.is_conflict() => {
                info!(name = %desired.name, "the name is taken: looking the queue up by name");
                locate(&conn.client, Search::Name(desired.name.clone()), &environment_id).await?
            }
            Err(source) => return Err(Error::CreateRemote { source }),
        };
        decision = self::decision(queue, goal, &me, located, &conn, &environment_id, ctx).await?;
    }
    let Decision { plan, events } = decision;
    notes.extend(events);
    let mut took_over = None;
    let (remote, drift) = match plan {
        Plan::InSync { remote } => (remote, None),
        Plan::Update { remote, changes, cause } => {
            if let Cause::Claim(Claim::Adopted { previous: Some(m) }) = &cause
                && m.owner.cluster != me.cluster
            {
                took_over = take_over(queue);
            }
            if changes.fields().any(|f| f == desired::Field::Name) {
                // The server does not check a rename against the environment's other queues
                // (its database refuses it with a 500, which reads as an outage): asked first.
                let all = conn
                    .client
                    .list_queues(&environment_id)
                    .await
                    .map_err(|source| Error::FindRemote { source })?;
                if let Some(taken) = all.iter().find(|q| q.name == desired.name && q.id != remote.id) {
                    let marker = Marker::read(&taken.settings);
                    let elsewhere = marker.map_or(Elsewhere::Foreign, |m| Elsewhere::LiveOwner(m.owner));
                    return Err(Error::refused(
                        decide::Refusal::NameConflict { name: desired.name, elsewhere },
                        me,
                    ));
                }
            }
            (update(&conn.client, &remote, &changes, &cause, ctx).await?, None)
        }
        Plan::Observe { remote, release, drift, newly_drifted } => {
            if release {
                self::release(&conn.client, &remote).await?;
            }
            if newly_drifted {
                for f in &drift {
                    ctx.metrics
                        .drift_observed
                        .get_or_create(&crate::metrics::FieldLabels { field: f.wire() })
                        .inc();
                }
            }
            (remote, Some(drift))
        }
        Plan::Refuse(refusal) => {
            warn!(refusal = ?refusal, "hands off the remote queue");
            if refusal.loses_ownership() {
                secret::withdraw(queue, &ctx.kube, &ctx.recorder).await?;
                deployment::remove(queue, ctx, Some("this resource no longer manages its queue")).await?;
            }
            return Err(Error::refused(refusal, me));
        }
        Plan::Create | Plan::Delete { .. } | Plan::Release { .. } | Plan::Leave | Plan::Hold => {
            return Err(Error::refused(decide::Refusal::CreateRaced { name: desired.name }, me));
        }
    };
    ctx.remember_id(queue, Some(&remote.id));
    act::publish(queue, notes, ctx).await;
    let worker_secret = if remote.can_register() {
        Some(secret::ensure(queue, &remote, &conn.client, &ctx.kube).await?)
    } else {
        None
    };
    let control_plane = secret::public_url(conn.client.base_url());
    let workers = deployment::ensure(queue, &remote, &control_plane, ctx).await?;
    let outcome = Outcome::Seen {
        remote: &remote,
        worker_secret: worker_secret.as_deref(),
        connection: conn.key.label(),
        drift: drift.as_deref(),
        took_over: took_over.as_deref(),
        workers: workers.as_ref(),
    };
    report(queue, outcome, ctx).await?;
    Ok(recheck(queue, workers.as_ref()).unwrap_or_else(|| ctx.resync_action()))
}

/// How soon the queue is read again for its workers' registrations, when they are awaited: the
/// Deployment's changes wake the queue, but a registration is seen in the queue's count only.
fn recheck(queue: &WorkerQueue, workers: Option<&deployment::Seen>) -> Option<Action> {
    let seen = workers?;
    let now = Time(Timestamp::now());
    let every = (workers::grace(queue) / 4).clamp(REGISTRATION_POLL_MIN, REGISTRATION_POLL_MAX);
    match seen.standing {
        deployment::Standing::Running(workers::Progress::Unregistered { .. }) => Some(Action::requeue(every)),
        deployment::Standing::Running(workers::Progress::Registered { .. })
            if status::just_rolled_out(seen, &now) =>
        {
            Some(Action::requeue(every))
        }
        // The Deployment's changes wake the queue; this is for the start grace to run out.
        deployment::Standing::Running(workers::Progress::Starting { .. }) => {
            Some(Action::requeue(REGISTRATION_POLL_MAX))
        }
        _ => None,
    }
}

/// How often awaited registrations are looked for: a quarter of the grace, within these bounds.
const REGISTRATION_POLL_MIN: std::time::Duration = std::time::Duration::from_secs(5);
const REGISTRATION_POLL_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// How often a drain looks at the pods left, beside the Deployment's watch.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// The `kubiya.ai/take-over-from` value of `queue`, trimmed, if set.
fn take_over(queue: &WorkerQueue) -> Option<String> {
    queue.annotation(TAKE_OVER_ANNOTATION).map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned)
}

/// The queue's Environment and the remote id of its environment, once the Environment is Ready
/// (`settled`; a deletion takes it in any phase, its own deletion included, once it has an id):
/// a queue is created only in an environment its Environment manages (or observes).
fn environment(queue: &WorkerQueue, ctx: &Context) -> Result<(Arc<Environment>, String), Error> {
    let name = queue.spec.environment_ref.name.clone();
    let env = match cached_environment(queue, ctx)? {
        Some(Ok(env)) => env,
        Some(Err(why)) => return Err(Error::EnvironmentNotReady { name, why }),
        None => return Err(Error::EnvironmentNotFound { name }),
    };
    let status = env.status.as_ref();
    let id = status.and_then(|s| s.environment_id.clone());
    let ready = matches!(status.and_then(|s| s.phase), Some(Phase::Ready | Phase::Inactive));
    match id {
        Some(id) if ready => Ok((env, id)),
        _ => {
            let why = status
                .and_then(|s| s.message.clone())
                .unwrap_or_else(|| "the operator has not reported on it yet".to_owned());
            Err(Error::EnvironmentNotReady { name, why })
        }
    }
}

/// The queue's Environment as the cache holds it (the queue controllers start once it has
/// synced): None when there is none, an error text when it cannot be decoded.
fn cached_environment(
    queue: &WorkerQueue,
    ctx: &Context,
) -> Result<Option<Result<Arc<Environment>, String>>, Error> {
    let namespace = queue.namespace().ok_or(Error::Unnamed)?;
    let key = ObjectRef::<Guarded>::new(&queue.spec.environment_ref.name).within(&namespace);
    let found = ctx.connections.environments.iter().find_map(|s| s.get(&key));
    Ok(found.map(|g| match &g.0 {
        Ok(env) => Ok(Arc::new(env.clone())),
        Err(_) => Err("the Environment cannot be decoded".to_owned()),
    }))
}

/// Carries out `search` with `cp`, in the environment `environment_id` (names are unique there).
async fn locate(cp: &controlplane::Client, search: Search, environment_id: &str) -> Result<Located, Error> {
    match search {
        Search::Nowhere => Ok(Located::NotSought),
        Search::Id { id, route } if route == Route::Annotation && !is_uuid(&id) => {
            Ok(Located::Missing { route, id: Some(id) })
        }
        Search::Id { id, route } => match cp.get_queue(&id).await {
            Ok(remote) => Ok(Located::Found { remote, route }),
            Err(e) if e.is_not_found() => Ok(Located::Missing { route, id: Some(id) }),
            Err(source) => Err(Error::GetRemote { source }),
        },
        Search::Name(name) => {
            let all = match cp.list_queues(environment_id).await {
                Ok(all) => all,
                // The environment itself is gone: so is every queue of it.
                Err(e) if e.is_not_found() => Vec::new(),
                Err(source) => return Err(Error::FindRemote { source }),
            };
            Ok(match all.into_iter().find(|q| q.name == name) {
                Some(remote) => Located::Found { remote, route: Route::Name },
                None => Located::Missing { route: Route::Name, id: None },
            })
        }
    }
}

/// Gathers what the decision needs beyond what was located, and decides.
async fn decision(
    queue: &WorkerQueue,
    goal: Goal,
    me: &Owner,
    located: Located,
    conn: &ResolvedConnection,
    environment_id: &str,
    ctx: &Context,
) -> Result<Decision, Error> {
    let used = queue.status.as_ref().and_then(|s| s.taken_over_from.as_deref());
    let liveness = match decide::needs_liveness(&goal, &located, me) {
        Some(owner) => act::liveness::<WorkerQueue>(&owner, ctx).await?,
        None => Liveness::Live,
    };
    if let Located::Missing { route: Route::Status, id: Some(id) } = &located
        && matches!(goal, Goal::Manage { .. })
    {
        ctx.remember_id(queue, None);
        warn!(queue_id = %id, "the remote queue is gone");
    }
    Ok(decide::decide(Situation {
        goal,
        me: me.clone(),
        located,
        liveness,
        allow_adoption: conn.allow_adoption,
        // Used once: the value it was last used with is no new request.
        take_over: take_over(queue).filter(|t| Some(t.as_str()) != used),
        environment_id: environment_id.to_owned(),
    }))
}

pub async fn cleanup(queue: &WorkerQueue, ctx: &Context) -> Result<Option<Action>, Error> {
    let env = cached_environment(queue, ctx)?;
    let decoded = env.as_ref().and_then(|e| e.as_ref().ok());
    // An Environment deleted with Orphan (or while its CRD goes) leaves its queues with it.
    let orphaned_with = decoded.is_some_and(|e| {
        e.metadata.deletion_timestamp.is_some() && e.deletion_policy() == DeletionPolicy::Orphan
    });
    let removal = Removal {
        policy: if orphaned_with { DeletionPolicy::Orphan } else { queue.deletion_policy() },
        paused: queue.is_paused(),
        crd_going: act::crd_is_going::<WorkerQueue>(ctx).await?,
        orphan_asked: queue.annotation(DELETION_POLICY_ANNOTATION) == Some("Orphan"),
        observed: queue.spec.management_policy == ManagementPolicy::Observe,
    };
    let start = decide::deletion_start(&removal);
    // The workers go first, whatever happens to the remote queue (which the server will not
    // delete while they are active); a paused deletion holds them too.
    let held = removal.paused && !removal.crd_going && !removal.orphan_asked;
    if !held && let Some(pods) = deployment::drain(queue, ctx).await? {
        report(queue, Outcome::Draining { pods }, ctx).await?;
        return Ok(Some(Action::requeue(DRAIN_POLL)));
    }
    if let Some(decision) = start {
        return carry_out(queue, decision, ctx).await;
    }
    // Said once: a failed pass records its own reason, which this would otherwise overwrite.
    if queue.status.as_ref().and_then(|s| s.phase) != Some(Phase::Deleting) {
        report(queue, Outcome::Deleting, ctx).await?;
    }
    let known = ctx.recalled_id(queue).or_else(|| queue.status.as_ref().and_then(|s| s.queue_id.clone()));
    let recorded_env = queue.status.as_ref().and_then(|s| s.environment_id.clone());
    let Some(env) = decoded else {
        // No Environment any more: it was orphaned (its queues stay with it), or deleted with
        // its remote environment, which took its queues along. (One that cannot be decoded is
        // left as it is, too.)
        let note = format!(
            "left the remote queue as it is: Environment {:?} is gone or cannot be read, and the queue stays \
             with its environment (or went with it)",
            queue.spec.environment_ref.name
        );
        return carry_out(
            queue,
            Decision { plan: Plan::Leave, events: vec![warning("LeftRemote", note)] },
            ctx,
        )
        .await;
    };
    // Where the queue was made, else where it would have been: nothing was ever made when
    // neither is known (an Environment that never got an id).
    let env_id = env.status.as_ref().and_then(|s| s.environment_id.clone());
    let Some(environment_id) = recorded_env.or(env_id) else {
        return carry_out(queue, Decision { plan: Plan::Leave, events: Vec::new() }, ctx).await;
    };
    let conn = match ctx.connections.for_environment(env, &ctx.kube).await {
        Ok(conn) => conn,
        Err(e) => {
            let e = Error::from(e);
            return match decide::deletion_without_connection(&removal, &e.explain()) {
                Some(decision) => carry_out(queue, decision, ctx).await,
                None => Err(e),
            };
        }
    };
    let me = me(queue, ctx).await?;
    let search = locate::search(
        Looking::ToDelete,
        known.as_deref(),
        Asked { id: None, was_observed: false },
        queue.remote_name(),
    );
    let located = locate(&conn.client, search, &environment_id).await?;
    let Decision { plan, events } = decide::decide(Situation {
        goal: Goal::Remove(removal),
        me: me.clone(),
        located,
        liveness: Liveness::Live,
        allow_adoption: conn.allow_adoption,
        take_over: None,
        environment_id,
    });
    match plan {
        Plan::Delete { remote } => {
            conn.client.delete_queue(&remote.id).await.map_err(|source| Error::DeleteRemote { source })?;
            info!(queue_id = %remote.id, "deleted remote queue");
        }
        Plan::Release { remote } => release(&conn.client, &remote).await?,
        Plan::Refuse(refusal) => return Err(Error::refused(refusal, me)),
        _ => {}
    }
    act::publish(queue, events, ctx).await;
    Ok(None)
}

/// A deletion decided before any remote call: leave (done), or hold.
async fn carry_out(queue: &WorkerQueue, decision: Decision, ctx: &Context) -> Result<Option<Action>, Error> {
    if decision.plan == Plan::Hold {
        report(queue, Outcome::DeletionPaused, ctx).await?;
        return Ok(Some(Action::await_change()));
    }
    act::publish(queue, decision.events, ctx).await;
    Ok(None)
}

fn warning(reason: &'static str, message: String) -> Note {
    Note { warning: true, reason, message }
}

async fn update(
    cp: &controlplane::Client,
    remote: &RemoteQueue,
    changes: &Changes<desired::Field>,
    cause: &Cause,
    ctx: &Context,
) -> Result<RemoteQueue, Error> {
    let updated = cp
        .update_queue(&remote.id, &changes.body())
        .await
        .map_err(|source| Error::UpdateRemote { source })?;
    let fields = changes.names();
    match cause {
        Cause::Drift => {
            info!(queue_id = %remote.id, fields = %fields, "corrected drift");
            for f in changes.fields() {
                ctx.metrics
                    .drift_corrections
                    .get_or_create(&crate::metrics::FieldLabels { field: f.wire() })
                    .inc();
            }
        }
        _ => info!(queue_id = %remote.id, fields = %fields, ?cause, "updated remote queue"),
    }
    Ok(updated)
}

/// Marks the owner marker released (one PATCH of `settings`).
async fn release(cp: &controlplane::Client, remote: &RemoteQueue) -> Result<(), Error> {
    let Some(changes) = desired::released(&remote.settings) else { return Ok(()) };
    match cp.update_queue(&remote.id, &changes.body()).await {
        Ok(_) => {
            info!(queue_id = %remote.id, "released the remote queue");
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(source) => Err(Error::ReleaseRemote { source }),
    }
}

/// This queue as an owner marker names it.
async fn me(queue: &WorkerQueue, ctx: &Context) -> Result<Owner, Error> {
    let namespace = queue.metadata.namespace.as_deref().ok_or(Error::Unnamed)?;
    let created = queue.metadata.creation_timestamp.as_ref();
    let facts = ctx.connections.namespaces.get(namespace, created, &ctx.kube).await.map_err(Error::from)?;
    Ok(ctx.owner(queue, facts.uid))
}

/// Writes the status `outcome` leads to, only when it changed.
pub async fn report(queue: &WorkerQueue, outcome: Outcome<'_>, ctx: &Context) -> Result<(), Error> {
    let now = Time(Timestamp::now());
    let mut next = status::next(queue, &outcome, &now);
    if status::changed(queue.status.as_ref(), &next) {
        next.last_synced_time = Some(now);
        let patch = k8s::status::merge_patch(queue.status.as_ref(), &next);
        write(queue, ctx, patch).await?;
    }
    Ok(())
}

pub async fn write<K: Resource<DynamicType = ()>>(
    obj: &K,
    ctx: &Context,
    patch: serde_json::Value,
) -> Result<(), Error> {
    let ns = obj.meta().namespace.clone().ok_or(Error::Unnamed)?;
    let name = obj.meta().name.clone().ok_or(Error::Unnamed)?;
    let api: Api<GuardedQueue> = Api::namespaced(ctx.kube.clone(), &ns);
    Ok(k8s::status::patch(&api, &name, patch).await?)
}
