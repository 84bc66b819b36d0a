//! A restart costs the control plane nothing up front: settled Environments are not fetched at
//! start, the work users wait for goes first, and drift made while the operator was away is
//! still corrected, without an edit.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kubiya_operator::resource::EnvironmentSpec;
use serde_json::json;

use crate::support::{
    TIMEOUT, TestBed, is_ready, metric_sum, ready_now, try_http_get, wait_until, wait_until_within,
};

/// Every control-plane call the emulator answered so far.
fn calls(bed: &TestBed) -> u64 {
    bed.emulator.calls().values().sum()
}

async fn leading(bed: &TestBed) -> bool {
    try_http_get(&bed.log, "/readyz").await.as_deref() == Some("ok: leading")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_during_a_restart_of_1000_settled_environments_goes_before_any_drift_check() {
    const N: usize = 1000;
    let mut bed = TestBed::without_operator("restart-cost", ready_now()).await;
    bed.operator_env.push(("KUBIYA_RESYNC_INTERVAL", "5m".into()));
    bed.start_operator();
    for i in 0..N {
        bed.create(&format!("s-{i:04}"), EnvironmentSpec::default()).await;
    }
    wait_until_within("1,000 Ready", TIMEOUT * 5, || async {
        metric_sum(&bed.metrics().await, "kubiya_operator_environments{phase=\"Ready\"}") == N as f64
    })
    .await;

    let exit = bed.terminate_operator().await;
    assert!(exit.success());
    let before = calls(&bed);
    bed.start_operator();
    // A user's change, made while the new process starts.
    let patch = json!({"spec": {"description": "changed during the restart"}});
    bed.envs.patch("s-0500", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_until("the change to reach the control plane", || async {
        bed.remote_named("s-0500").is_some_and(|r| r["description"] == "changed during the restart")
    })
    .await;
    let after_change = calls(&bed) - before;
    wait_until("the new process to lead with synced caches", || leading(&bed)).await;
    // The 1,000 settled ones wait for their turn: up to the end of the new process's first pass
    // over each (its own count of passes, which starts at 0), nothing else is called.
    wait_until("a pass over each of the 1,000 since the restart", || async {
        metric_sum(&bed.metrics().await, "kubiya_operator_reconciles_total{result=\"ok\"}") >= N as f64
    })
    .await;
    let after_passes = calls(&bed) - before;
    assert!(
        after_passes <= (N / 100) as u64,
        "{after_passes} calls by the first passes over 1,000 settled Environments after the restart"
    );
    assert!(
        after_change <= 3,
        "the change needed {after_change} calls: a GET, a PATCH (and perhaps the worker command)"
    );
    let env = bed
        .wait_for("s-0500", "Ready at the new generation", |e| {
            is_ready(e) && e.status.as_ref().and_then(|s| s.observed_generation) == e.metadata.generation
        })
        .await;
    assert_eq!(env.status.and_then(|s| s.message), Some("environment is ready".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_made_while_the_operator_was_away_is_corrected_within_one_interval() {
    const INTERVAL: Duration = Duration::from_secs(6);
    let mut bed = TestBed::without_operator("away-drift", ready_now()).await;
    bed.operator_env.push(("KUBIYA_RESYNC_INTERVAL", format!("{}s", INTERVAL.as_secs())));
    bed.start_operator();
    bed.create("web", EnvironmentSpec { description: Some("declared".into()), ..Default::default() }).await;
    let env = bed.wait_for("web", "Ready", is_ready).await;
    let id = env.status.and_then(|s| s.environment_id).unwrap();
    let _ = bed.terminate_operator().await;
    let (code, _) =
        bed.cp("PATCH", &format!("/api/v1/environments/{id}"), Some(json!({"description": "by hand"}))).await;
    assert_eq!(code, 200);
    bed.start_operator();
    wait_until("the new process to lead", || leading(&bed)).await;
    // Its first check comes within one interval of the caches syncing; the timeout is generous.
    wait_until_within("the drift to be corrected", INTERVAL * 3, || async {
        bed.remote_named("web").is_some_and(|r| r["description"] == "declared")
    })
    .await;
    bed.wait_event("web", "DriftCorrected").await;
}
