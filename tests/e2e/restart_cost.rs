//! A restart costs the control plane nothing up front: settled Environments are not fetched at
//! start, the work users wait for goes first, and drift made while the operator was away is
//! still corrected within one resync interval.

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

    let (_, exit) = bed.terminate_operator().await;
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
    let synced = tokio::time::Instant::now();
    // The 1,000 settled ones wait for their turn: for a while, nothing else is called.
    while synced.elapsed() < Duration::from_secs(20) {
        assert!(
            calls(&bed) - before <= (N / 100) as u64,
            "{} calls soon after the restart",
            calls(&bed) - before
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    bed.terminate_operator().await;
    let (code, _) =
        bed.cp("PATCH", &format!("/api/v1/environments/{id}"), Some(json!({"description": "by hand"}))).await;
    assert_eq!(code, 200);
    bed.start_operator();
    wait_until("the new process to lead", || leading(&bed)).await;
    let started = tokio::time::Instant::now();
    wait_until_within("the drift to be corrected", INTERVAL * 3, || async {
        bed.remote_named("web").is_some_and(|r| r["description"] == "declared")
    })
    .await;
    let took = started.elapsed();
    // Within one interval of the caches syncing (a second of slack for the pass itself).
    assert!(took <= INTERVAL + Duration::from_secs(1), "corrected {took:?} after the restart");
    bed.wait_event("web", "DriftCorrected").await;
}
