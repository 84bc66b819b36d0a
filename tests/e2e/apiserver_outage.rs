//! The Kubernetes API server restarted mid-batch, etcd kept: the operator's watches recover and
//! everything converges; and with the API server gone, SIGTERM still stops the operator cleanly.
//! These tests run their own API server instance, so that stopping it does not disturb the
//! other tests.

use std::time::Duration;

use kubiya_cp_emulator::{Config as EmulatorConfig, Faults};
use kubiya_operator::resource::{EnvironmentSpec, Phase};

use crate::support::cluster::PrivateCluster;
use crate::support::{TestBed, is_ready, phase, wait_until_within};

const BATCH: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_restarting_mid_batch_is_survived() {
    let cluster = PrivateCluster::start_at("restart-apiserver", ["16643", "12579", "12580"]);
    let emulator = EmulatorConfig {
        provisioning: Duration::ZERO,
        faults: Faults { latency_ms: 20, ..Faults::default() },
        ..EmulatorConfig::default()
    };
    let mut bed = TestBed::on_cluster(cluster.kubeconfig(), "restart", emulator).await;
    // A Lease longer than the restart: the API server's stop alone can take 10 s (it waits for
    // open watches), and a leader whose renewals fail that long steps down and exits, by design
    // (a_leader_cut_off_from_the_api_server_steps_down… in ha.rs); here the watches must recover.
    bed.operator_env.push(("KUBIYA_LEASE_DURATION", "60s".into()));
    for i in 0..BATCH {
        bed.create(&format!("r-{i:02}"), EnvironmentSpec::default()).await;
    }
    bed.start_operator();
    wait_until_within("progress before the restart", Duration::from_secs(30), || async {
        bed.calls("POST /api/v1/environments") >= 5
    })
    .await;
    cluster.script("restart-apiserver");

    for i in 0..BATCH {
        bed.wait_for(&format!("r-{i:02}"), "Ready", is_ready).await;
    }
    let remote = bed.remote();
    for i in 0..BATCH {
        let name = format!("r-{i:02}");
        assert_eq!(remote.iter().filter(|e| e["name"] == name.as_str()).count(), 1, "{name}");
    }
    assert!(bed.operator_alive(), "the operator exited when the API server went away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_operator_even_with_the_api_server_gone() {
    let cluster = PrivateCluster::start_at("sigterm-apiserver", ["16943", "12879", "12880"]);
    let mut bed = TestBed::on_cluster(cluster.kubeconfig(), "sigterm", EmulatorConfig::default()).await;
    // A long Lease: with the API server gone, a leader steps down on its own once its Lease
    // could run out; here the signal must come first.
    bed.operator_env.push(("KUBIYA_LEASE_DURATION", "120s".into()));
    bed.start_operator();
    bed.create("up", EnvironmentSpec::default()).await;
    bed.wait_for("up", "Ready", |e| phase(e) == Some(Phase::Ready)).await;
    cluster.script("stop");
    // Within Kubernetes' default grace period (30 s), after which the kubelet would SIGKILL it.
    let exit = bed.terminate_operator_within(Duration::from_secs(30)).await;
    // Success is the signal handled: killed by it, the process has no exit code; having lost
    // its Lease, or failed otherwise, it exits with 1.
    assert!(exit.success(), "the operator exited with {exit:?} on SIGTERM:\n{}", bed.operator_log());
}
