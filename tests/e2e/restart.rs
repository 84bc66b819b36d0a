//! The Kubernetes API server restarted mid-batch, etcd kept: the operator's watches recover and
//! everything converges. This test runs its own API server instance, so that restarting it does
//! not disturb the other tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
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
        self.script_with(command, &[]);
    }

    fn script_with(&self, command: &str, env: &[(&str, &str)]) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster/apiserver.sh");
        let status = Command::new("bash")
            .args([script, command])
            .envs(env.iter().copied())
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
    // A long Lease: with the API server gone, a leader steps down on its own once its Lease
    // could run out; here the signal must come first.
    bed.operator_env.push(("KUBIYA_LEASE_DURATION", "120s".into()));
    bed.start_operator();
    bed.create("up", EnvironmentSpec::default()).await;
    bed.wait_for("up", "Ready", |e| phase(e).as_deref() == Some("Ready")).await;
    cluster.script("stop");
    let took = bed.terminate_operator().await;
    assert!(took < Duration::from_secs(30), "SIGTERM took {took:?}");
    assert!(bed.operator_log().contains("stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_steps_down_before_its_lease_could_pass_on() {
    const LEASE: Duration = Duration::from_secs(8);
    let cluster = PrivateCluster::start_at("cutoff-apiserver", ["17043", "12979", "12980"]);
    let mut bed =
        TestBed::on_cluster(cluster.run.join("kubeconfig"), "cutoff", EmulatorConfig::default()).await;
    bed.operator_env.push(("KUBIYA_LEASE_DURATION", format!("{}s", LEASE.as_secs())));
    bed.start_operator();
    bed.create("up", EnvironmentSpec::default()).await;
    bed.wait_for("up", "Ready", |e| phase(e).as_deref() == Some("Ready")).await;
    // The leader must stop before a standby could take its Lease: a Lease duration after its
    // last renewal (which may land while the API server is being stopped).
    cluster.script_with("stop", &[("TA_KEEP_DATA", "1")]);
    let status = bed.wait_operator_exit(LEASE + Duration::from_secs(10)).await;
    assert!(!status.success(), "stepping down is an error exit, so that the kubelet restarts it");
    // When it stopped leading, by its log's clock (the stop script returns later).
    let log = bed.operator_log();
    let line = log
        .lines()
        .find(|l| l.contains("the lease was not renewed in time"))
        .unwrap_or_else(|| panic!("{log}"));
    let stepped_down: k8s_openapi::jiff::Timestamp =
        line.split_whitespace().next().and_then(|t| t.parse().ok()).expect("a timestamp");
    let exited = std::time::SystemTime::from(stepped_down);

    cluster.script_with("start", &[("TA_KEEP_DATA", "1")]);
    let client = crate::support::test_client(&cluster.run.join("kubeconfig")).await;
    let leases: kube::Api<Lease> = kube::Api::namespaced(client, &bed.namespace);
    let lease = leases.get("kubiya-operator").await.expect("the lease, kept with etcd's data");
    let renewed = lease.spec.and_then(|s| s.renew_time).expect("renewTime").0;
    let expiry = std::time::SystemTime::from(renewed) + LEASE;
    let margin = expiry
        .duration_since(exited)
        .unwrap_or_else(|e| panic!("exited {:?} after the lease expired", e.duration()));
    eprintln!(
        "leader cut off from the API server exited {margin:?} before its lease expired (lease {LEASE:?})"
    );
}
