//! The Kubernetes API server restarted mid-batch, etcd kept: the operator's watches recover and
//! everything converges. This test runs its own API server instance, so that restarting it does
//! not disturb the other tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kubiya_cp_emulator::{Config as EmulatorConfig, Faults};
use kubiya_operator::resource::EnvironmentSpec;

use crate::support::{TestBed, condition, phase};

/// A private test API server (etcd + apiserver) on its own ports and run directory.
struct PrivateCluster {
    run: PathBuf,
    ports: [&'static str; 3],
}

impl PrivateCluster {
    fn script(&self, command: &str) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/apiserver.sh");
        let status = Command::new("bash")
            .args([script, command])
            .env("TA_RUN", &self.run)
            .env("TA_API_PORT", self.ports[0])
            .env("TA_ETCD_PORT", self.ports[1])
            .env("TA_ETCD_PEER_PORT", self.ports[2])
            .status()
            .expect("run apiserver.sh");
        assert!(status.success(), "apiserver.sh {command} failed");
    }

    /// Starts one in `target/tmp/<dir>` on these API, etcd client and etcd peer ports.
    fn start_at(dir: &str, ports: [&'static str; 3]) -> PrivateCluster {
        let run = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
        let cluster = PrivateCluster { run, ports };
        cluster.script("stop"); // a killed earlier run may have left one behind
        cluster.script("start");
        cluster
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.script("stop");
    }
}

const BATCH: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_restarting_mid_batch_is_survived() {
    let cluster = PrivateCluster::start_at("restart-apiserver", ["16643", "12579", "12580"]);
    let emulator = EmulatorConfig {
        provisioning: Duration::ZERO,
        faults: Faults { latency_ms: 20, ..Faults::default() },
        ..EmulatorConfig::default()
    };
    let mut bed = TestBed::on_cluster(cluster.run.join("kubeconfig"), "restart", emulator).await;
    for i in 0..BATCH {
        bed.create(&format!("r-{i:02}"), EnvironmentSpec::default()).await;
    }
    bed.start_operator();
    let posts = |bed: &TestBed| bed.emulator.calls().get("POST /api/v1/environments").copied().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while posts(&bed) < 5 {
        assert!(tokio::time::Instant::now() < deadline, "no progress before the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.script("restart-apiserver");

    for i in 0..BATCH {
        bed.wait_for(&format!("r-{i:02}"), "Ready", |e| {
            phase(e).as_deref() == Some("Ready") && condition(e, "Ready").as_deref() == Some("True")
        })
        .await;
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
    let mut bed =
        TestBed::on_cluster(cluster.run.join("kubeconfig"), "sigterm", EmulatorConfig::default()).await;
    bed.start_operator();
    bed.create("up", EnvironmentSpec::default()).await;
    bed.wait_for("up", "Ready", |e| phase(e).as_deref() == Some("Ready")).await;
    cluster.script("stop");
    let took = bed.terminate_operator().await;
    assert!(took < Duration::from_secs(30), "SIGTERM took {took:?}");
    assert!(bed.operator_log().contains("stopped"));
}
