//! The pass for a resource being deleted: locate the remote environment, decide (delete it,
//! release it, leave it, or hold the finalizer while paused), act. Nothing is deleted unless its
//! owner marker names this resource. Idempotent: "not found" is success.

use kube::runtime::controller::Action;

use super::context::Context;
use super::decide::{self, Decision, Goal, Plan, Removal, Situation};
use super::error::Error;
use super::locate::{self, Asked, Looking};
use super::ownership::Liveness;
use super::{act, report, status};
use crate::resource::{DELETION_POLICY_ANNOTATION, DeletionPolicy, Environment, ManagementPolicy};

/// How often an Environment whose deletion waits for its WorkerQueues looks again (no
/// control-plane call: the queues are read from their cache; a status write only when it changed).
const QUEUES_POLL: std::time::Duration = std::time::Duration::from_secs(3);

/// How a cleanup ended.
pub enum Outcome {
    /// The remote side is settled: the finalizer may go.
    Done,
    /// Keep the finalizer (paused); look again as the action says.
    Hold(Action),
}

pub async fn cleanup(env: &Environment, ctx: &Context) -> Result<Outcome, Error> {
    let removal = Removal {
        policy: env.deletion_policy(),
        paused: env.is_paused(),
        crd_going: act::crd_is_going::<Environment>(ctx).await?,
        orphan_asked: env.annotation(DELETION_POLICY_ANNOTATION) == Some("Orphan"),
        observed: env.spec.management_policy == ManagementPolicy::Observe,
    };
    if let Some(decision) = decide::deletion_start(&removal) {
        return carry_out(env, decision, ctx).await;
    }
    // The control plane deletes an environment's queues with it: its WorkerQueues go first
    // (and while their caches are not synced, which there are is not known). Asked before any
    // remote call: a held deletion costs none.
    let deletes = removal.policy == DeletionPolicy::Delete && !removal.crd_going;
    if deletes {
        let queues = ctx.queues_of(env).unwrap_or_else(|| vec!["(not known yet)".to_owned()]);
        if !queues.is_empty() {
            report::status(env, status::Outcome::QueuesRemain(&queues), ctx).await?;
            // Their deletion does not wake this Environment: look again shortly.
            return Ok(Outcome::Hold(Action::requeue(QUEUES_POLL)));
        }
    }
    report::status(env, status::Outcome::Deleting, ctx).await?;
    let conn = match ctx.connections.for_environment(env, &ctx.kube).await {
        Ok(conn) => conn,
        Err(e) => {
            let e = Error::from(e);
            return match decide::deletion_without_connection(&removal, &e.explain()) {
                Some(decision) => carry_out(env, decision, ctx).await,
                None => Err(e),
            };
        }
    };
    let me = act::me(env, ctx).await?;
    let asked = Asked { id: None, was_observed: false };
    let search = locate::search(Looking::ToDelete, ctx.known_id(env).as_deref(), asked, env.remote_name());
    let located = locate::locate(&conn.client, search).await?;
    let decision = decide::decide(Situation {
        goal: Goal::Remove(removal),
        me: me.clone(),
        located,
        liveness: Liveness::Live,
        allow_adoption: conn.allow_adoption,
        take_over: None,
        place: conn.place.clone(),
        recorded: status::recorded_place(env),
    });
    let Decision { plan, events } = decision;
    match plan {
        Plan::Delete { remote } => act::delete(&conn.client, &remote).await?,
        Plan::Release { remote } => act::release(&conn.client, &remote).await?,
        Plan::Refuse(refusal) => {
            tracing::warn!(refusal = ?refusal, "left the remote environment alone");
            return Err(refusal.error(&me, &conn.key.to_string()));
        }
        // Leave: nothing remote to do. (Nothing else is decided for a deletion.)
        _ => {}
    }
    act::publish(env, events, ctx).await;
    Ok(Outcome::Done)
}

/// A decision made before any remote call: leave, or hold.
async fn carry_out(env: &Environment, decision: Decision, ctx: &Context) -> Result<Outcome, Error> {
    if decision.plan == Plan::Hold {
        report::status(env, status::Outcome::DeletionPaused, ctx).await?;
        return Ok(Outcome::Hold(Action::await_change()));
    }
    act::publish(env, decision.events, ctx).await;
    Ok(Outcome::Done)
}
