//! A pass that runs longer than `KUBIYA_RECONCILE_TIMEOUT`: abandoned as transient trouble (never
//! Stalled), retried, and no duplicate from the abandoned passes.

use kubiya_cp_emulator::{Config as EmulatorConfig, Faults};
use kubiya_operator::resource::EnvironmentSpec;

use crate::support::{TestBed, is_ready, message, ready_now};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_that_runs_too_long_is_abandoned_as_transient_and_retried() {
    // Each answer slower than the whole pass may take.
    let emulator = EmulatorConfig { faults: Faults { latency_ms: 1500, ..Faults::default() }, ..ready_now() };
    let mut bed = TestBed::without_operator("timeout", emulator).await;
    bed.operator_env.push(("KUBIYA_RECONCILE_TIMEOUT", "1s".into()));
    bed.start_operator();
    bed.create("slow", EnvironmentSpec::default()).await;
    let env = bed
        .wait_for("slow", "Reconciling after a timeout", |e| {
            e.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Reconciling" && c.status == "True" && c.reason == "Timeout")
            })
        })
        .await;
    assert!(
        message(&env).contains("took longer than 1s and was abandoned (will retry)"),
        "{}",
        message(&env)
    );
    assert_eq!(crate::support::condition(&env, "Stalled").as_deref(), Some("False"), "transient");
    bed.emulator.set_faults(Faults::default());
    bed.wait_for("slow", "Ready", is_ready).await;
    assert_eq!(
        bed.remote().iter().filter(|r| r["name"] == "slow").count(),
        1,
        "no duplicate from the abandoned passes"
    );
}
