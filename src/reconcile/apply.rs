//! The pass for a live resource, managementPolicy Full or Observe: locate the remote environment,
//! decide, act (create, take, correct, or only read it), publish the worker Secret, report.

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::context::Context;
use super::decide::{self, Cause, Decision, Goal, Plan, Situation};
use super::desired::{self, Field, Wire};
use super::error::Error;
use super::locate::{self, Asked, Located, Looking, Search};
use super::ownership::{Claim, Liveness, Owner, Route};
use super::status::{self, Outcome, Seen};
use super::{act, env_vars, report, worker_secret};
use crate::connection::ResolvedConnection;
use crate::controlplane::{RemoteEnvironment, sanitize};
use crate::k8s::events;
use crate::metrics::FieldLabels;
use crate::resource::{ADOPT_ANNOTATION, Environment, ManagementPolicy, Phase, TAKE_OVER_ANNOTATION};

pub async fn apply(env: &Environment, ctx: &Context) -> Result<Action, Error> {
    if env.is_paused() {
        report::status(env, Outcome::Paused, ctx).await?;
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
    // No status is written before the first call's outcome: until then the CRD's default
    // (`observedGeneration: 0`) says that this generation is not yet observed.
    //
    // The Secrets' values first: while one is missing, nothing is sent.
    let env_vars = env_vars::resolve(env, ctx).await?;
    let conn = ctx.connections.for_environment(env, &ctx.kube).await?;
    // A drift check: nobody waits for it, so its requests yield to those of passes someone does.
    let conn = ResolvedConnection { client: conn.client.in_background(settled), ..conn };
    let me = act::me(env, ctx).await?;
    let desired = desired::desired(env, &me, env_vars.vars);
    // Applied means with the Secrets' values of now: once one changed, the difference it makes is
    // an update, not drift.
    let secrets_applied = env_vars.fingerprint.is_none_or(|f| ctx.applied_env_vars(env) == Some(f));
    let goal = match env.spec.management_policy {
        ManagementPolicy::Full => Goal::Manage {
            desired: desired.clone(),
            applied_to: (status::applied(env) && secrets_applied).then(|| ctx.known_id(env)).flatten(),
        },
        ManagementPolicy::Observe => {
            Goal::Observe { desired: desired.clone(), last_drift: status::last_drift(env).map(str::to_owned) }
        }
    };
    let looking = match goal {
        Goal::Observe { .. } => Looking::ToObserve,
        _ => Looking::ToManage,
    };
    let asked = Asked {
        id: env.annotation(ADOPT_ANNOTATION).map(str::trim).filter(|a| !a.is_empty()),
        was_observed: status::was_observed(env),
    };

    // Locate, and decide.
    let search = locate::search(looking, ctx.known_id(env).as_deref(), asked, env.remote_name());
    let located = locate::locate(&conn.client, search).await?;
    let mut decision = decision(env, goal.clone(), &me, located, &conn, ctx).await?;

    // Act. A create is decided on again: what it made (the enabled state is set by a PATCH), or,
    // when its name is taken, what has the name.
    let mut notes = Vec::new();
    if decision.plan == Plan::Create {
        notes = decision.events;
        let located = match act::create(env, &desired, &conn.client, ctx).await? {
            Some(created) => Located::Found { remote: created, route: Route::Status },
            None => {
                info!(name = %desired.name, "the name is taken: looking the environment up by name");
                locate::locate(&conn.client, Search::Name(desired.name.clone())).await?
            }
        };
        decision = self::decision(env, goal, &me, located, &conn, ctx).await?;
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
                took_over = take_over(env);
            }
            (act::update(&conn.client, &remote, &changes, &cause, ctx).await?, None)
        }
        Plan::Observe { remote, release, drift, newly_drifted } => {
            if release {
                act::release(&conn.client, &remote).await?;
            }
            if newly_drifted {
                for f in &drift {
                    ctx.metrics.drift_observed.get_or_create(&FieldLabels { field: f.wire() }).inc();
                }
            }
            (remote, Some(drift))
        }
        Plan::Refuse(refusal) => {
            // The whole refusal (whose resource holds it, its ids) is for the operator's log;
            // the resource's status and Events say only what its namespace may read.
            warn!(refusal = ?refusal, "hands off the remote environment");
            if refusal.loses_ownership() {
                worker_secret::withdraw(env, ctx).await?;
            }
            return Err(refusal.error(&me, &conn.key.to_string()));
        }
        // A second create, after its name was taken: it raced with a deletion. (Removal plans
        // are never decided for a live resource.)
        Plan::Create | Plan::Delete { .. } | Plan::Release { .. } | Plan::Leave | Plan::Hold => {
            return Err(Error::CreateRaced { name: desired.name });
        }
    };
    ctx.remember_id(env, Some(&remote.id));
    ctx.remember_env_vars(env, env_vars.fingerprint);
    act::publish(env, notes, ctx).await;
    finish(env, remote, drift, took_over.as_deref(), &conn, ctx).await
}

/// The `kubiya.ai/take-over-from` value of `env`, trimmed, if set.
fn take_over(env: &Environment) -> Option<String> {
    env.annotation(TAKE_OVER_ANNOTATION).map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned)
}

/// Gathers what the decision needs beyond what was located (whether the marked object lives,
/// what was asked, where the environment lives), and decides.
async fn decision(
    env: &Environment,
    goal: Goal,
    me: &Owner,
    located: Located,
    conn: &ResolvedConnection,
    ctx: &Context,
) -> Result<Decision, Error> {
    let liveness = match decide::needs_liveness(&goal, &located, me) {
        Some(owner) => act::liveness::<Environment>(&owner, ctx).await?,
        None => Liveness::Live,
    };
    if let Located::Missing { route: Route::Status, id: Some(id) } = &located
        && matches!(goal, Goal::Manage { .. })
    {
        ctx.remember_id(env, None);
        warn!(environment_id = %id, "the remote environment is gone");
    }
    // Used once: the value it was last used with is no new request.
    let used = env.status.as_ref().and_then(|s| s.taken_over_from.as_deref());
    Ok(decide::decide(Situation {
        goal,
        me: me.clone(),
        located,
        liveness,
        allow_adoption: conn.allow_adoption,
        take_over: take_over(env).filter(|t| Some(t.as_str()) != used),
        place: conn.place.clone(),
        recorded: status::recorded_place(env),
    }))
}

/// The end of a pass that manages or observes `remote`: the worker Secret, the status, and when
/// to look again. `drift`: observed, with the fields where it differs from the spec.
async fn finish(
    env: &Environment,
    remote: RemoteEnvironment,
    drift: Option<Vec<Field>>,
    took_over: Option<&str>,
    conn: &ResolvedConnection,
    ctx: &Context,
) -> Result<Action, Error> {
    let worker_secret = if remote.can_register() {
        Some(worker_secret::ensure(env, &remote, &conn.client, ctx).await?)
    } else {
        None
    };
    let seen = Seen { remote: &remote, worker_secret, connection: &conn.key, place: &conn.place };
    let outcome = match &drift {
        Some(drift) => Outcome::Observed { seen, drift },
        None => Outcome::Managed { seen, took_over },
    };
    let phase = report::status(env, outcome, ctx).await?;
    let was = env.status.as_ref().and_then(|s| s.phase);
    if drift.is_none() && phase == Some(Phase::Error) && was != Some(Phase::Error) {
        let why = remote.error_message.as_deref().map(sanitize).unwrap_or_default();
        let note = format!("the control plane reports an error for environment {}: {why}", remote.id);
        events::publish(&ctx.recorder, env, EventType::Warning, "RemoteError", note).await;
    }
    Ok(match phase {
        Some(Phase::Provisioning) => Action::requeue(ctx.provisioning_poll),
        _ => ctx.resync_action(),
    })
}
