//! Two replicas: exactly one reconciles; when it dies (SIGKILL) or is stopped (SIGTERM, mid
//! batch) the other takes over and converges, losing no update and creating nothing twice. And a
//! leader cut off from the API server stops before its Lease could pass to another replica.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kubiya_cp_emulator::{Config as EmulatorConfig, Faults};
use kubiya_operator::resource::EnvironmentSpec;
use serde_json::json;
use tokio::process::Child;

use crate::support::cluster::PrivateCluster;
use crate::support::{TIMEOUT, TestBed, is_ready, try_http_get, wait_until, wait_until_within};

fn provisioning(ms: u64) -> EmulatorConfig {
    EmulatorConfig { provisioning: Duration::from_millis(ms), ..EmulatorConfig::default() }
}

/// The identity holding the operator's Lease in the test's namespace.
async fn holder(bed: &TestBed) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(bed.client.clone(), &bed.namespace);
    leases.get_opt("kubiya-operator").await.ok().flatten()?.spec?.holder_identity
}

/// The value of a sample without labels (`kubiya_operator_leader`), if the operator answers.
async fn gauge(log: &std::path::Path, name: &str) -> Option<f64> {
    let text = try_http_get(log, "/metrics").await?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn leads(bed: &TestBed, identity: &str, log: &std::path::Path) -> bool {
    holder(bed).await.as_deref() == Some(identity)
        && gauge(log, "kubiya_operator_leader").await == Some(1.0)
        && try_http_get(log, "/readyz").await.as_deref() == Some("ok: leading")
}

/// Two operator processes: `a` leads, `b` stands by.
struct Pair {
    a: Child,
    b: Child,
    log_b: PathBuf,
}

impl Pair {
    async fn start(bed: &TestBed) -> Pair {
        let (log_a, log_b) = (bed.log_named("a"), bed.log_named("b"));
        let a = bed.spawn_operator("a", &log_a);
        wait_until("a to lead", || leads(bed, "a", &log_a)).await;
        let b = bed.spawn_operator("b", &log_b);
        wait_until("b to stand by", || async {
            try_http_get(&log_b, "/readyz").await.as_deref() == Some("ok: standby")
        })
        .await;
        Pair { a, b, log_b }
    }
}

/// Names of the remote environments, failing on a duplicate.
fn remote_names(bed: &TestBed) -> BTreeSet<String> {
    let remote = bed.remote();
    let names: BTreeSet<String> =
        remote.iter().filter_map(|e| e["name"].as_str().map(str::to_owned)).collect();
    assert_eq!(names.len(), remote.len(), "a remote environment was created twice: {remote:#?}");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_reconciles_and_the_other_takes_over_within_the_lease_losing_nothing() {
    const LEASE: Duration = Duration::from_secs(8);
    let mut bed = TestBed::without_operator("ha-kill", provisioning(300)).await;
    bed.operator_env.push(("KUBIYA_LEASE_DURATION", format!("{}s", LEASE.as_secs())));
    let Pair { mut a, b: _b, log_b } = Pair::start(&bed).await;

    bed.create("one", EnvironmentSpec { description: Some("v1".into()), ..Default::default() }).await;
    bed.create("two", EnvironmentSpec::default()).await;
    bed.wait_for("one", "Ready", is_ready).await;
    bed.wait_for("two", "Ready", is_ready).await;
    let standby = try_http_get(&log_b, "/metrics").await.unwrap_or_default();
    assert!(standby.contains("kubiya_operator_leader 0"), "{standby}");
    for series in ["kubiya_operator_reconciles_total{", "kubiya_operator_control_plane_requests_total{"] {
        assert!(!standby.contains(series), "the standby reconciled ({series}):\n{standby}");
    }

    // The leader dies without releasing its Lease; meanwhile users go on changing things.
    let _ = a.start_kill();
    let _ = a.wait().await;
    let patch = json!({"spec": {"description": "v2"}});
    let changed = bed.envs.patch("one", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    bed.create("three", EnvironmentSpec::default()).await;

    // Within the lease: it can have been renewed just before the kill; the standby looks every
    // 2 s, then waits up to 1 s (jitter against a race with another standby), then syncs its
    // caches.
    let within = LEASE + Duration::from_secs(6);
    wait_until_within("b to lead within the lease", within, || leads(&bed, "b", &log_b)).await;

    let generation = changed.metadata.generation;
    bed.wait_for("one", "Ready at the new generation", move |e| {
        is_ready(e) && e.status.as_ref().and_then(|s| s.observed_generation) == generation
    })
    .await;
    bed.wait_for("three", "Ready", is_ready).await;
    assert_eq!(
        bed.remote_named("one").expect("one")["description"],
        "v2",
        "the update made without a leader"
    );
    assert_eq!(remote_names(&bed), ["one", "three", "two"].map(String::from).into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_batch_releases_the_lease_and_the_next_leader_converges() {
    const N: usize = 30;
    let mut bed = TestBed::without_operator("ha-term", provisioning(500)).await;
    // The default lease (15 s): a standby taking over sooner shows the Lease was released.
    bed.operator_env.push(("KUBIYA_MAX_CONCURRENT_REQUESTS", "2".into()));
    let Pair { mut a, b: _b, log_b } = Pair::start(&bed).await;

    // Slow answers keep the batch in flight when the signal comes.
    bed.emulator.set_faults(Faults { latency_ms: 100, ..Faults::default() });
    let names: Vec<String> = (0..N).map(|i| format!("env-{i:02}")).collect();
    futures::future::join_all(names.iter().map(|n| bed.create(n, EnvironmentSpec::default()))).await;
    let posts = |bed: &TestBed| bed.emulator.calls().get("POST /api/v1/environments").copied().unwrap_or(0);
    wait_until("the batch to be under way", || async { posts(&bed) >= 3 }).await;
    assert!(posts(&bed) < N as u64, "the batch finished before the signal; the test would prove nothing");

    let pid = a.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let exit = tokio::time::timeout(TIMEOUT, a.wait()).await.expect("a exits on SIGTERM").expect("wait");
    assert!(exit.success(), "a exited with {exit:?}");
    let after_exit = holder(&bed).await;
    assert!(after_exit.as_deref() != Some("a"), "a exited without releasing the lease");
    // Released, the Lease is taken at the standby's next look (every 2 s), well before it could
    // expire (15 s).
    let released = Duration::from_secs(8);
    wait_until_within("b to lead, the lease released", released, || leads(&bed, "b", &log_b)).await;

    bed.emulator.set_faults(Faults::default());
    for name in &names {
        bed.wait_for(name, "Ready", is_ready).await;
    }
    assert_eq!(remote_names(&bed), names.iter().cloned().collect());
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    for name in &names {
        let env = bed.envs.get(name).await.expect("get");
        let id = env.status.as_ref().and_then(|s| s.environment_id.clone());
        assert_eq!(
            id.as_deref(),
            bed.remote_named(name).and_then(|r| r["id"].as_str().map(str::to_owned)).as_deref()
        );
        assert!(secrets.get_opt(&format!("{name}-worker")).await.expect("get").is_some(), "{name}-worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_steps_down_before_its_lease_could_pass_on() {
    const LEASE: Duration = Duration::from_secs(8);
    // Its own API server, to stop it.
    let cluster = PrivateCluster::start_at("cutoff-apiserver", ["17043", "12979", "12980"]);
    let mut bed = TestBed::on_cluster(cluster.kubeconfig(), "cutoff", EmulatorConfig::default()).await;
    bed.operator_env.push(("KUBIYA_LEASE_DURATION", format!("{}s", LEASE.as_secs())));
    bed.start_operator();
    bed.create("up", EnvironmentSpec::default()).await;
    bed.wait_for("up", "Ready", is_ready).await;
    // The leader must stop before a standby could take its Lease: a Lease duration after its
    // last renewal (which may land while the API server is being stopped). Its exit is timed
    // here while the stop script runs (which returns later); it comes after stepping down.
    let keep_data = [("TA_KEEP_DATA", "1")];
    let ((status, exited), ()) = tokio::join!(
        async {
            let status = bed.wait_operator_exit(LEASE + Duration::from_secs(10)).await;
            (status, SystemTime::now())
        },
        cluster.script_async("stop", &keep_data),
    );
    // A leader can only fail by losing its Lease (no other replica here: by the renewals not
    // landing). That is an error exit, so that the kubelet restarts it; a panic would be 101.
    assert_eq!(status.code(), Some(1), "stepping down exits with 1:\n{}", bed.operator_log());

    cluster.script_with("start", &keep_data);
    let client = crate::support::test_client(&cluster.kubeconfig()).await;
    let leases: Api<Lease> = Api::namespaced(client, &bed.namespace);
    let lease = leases.get("kubiya-operator").await.expect("the lease, kept with etcd's data");
    let renewed = lease.spec.and_then(|s| s.renew_time).expect("renewTime").0;
    let expiry = SystemTime::from(renewed) + LEASE;
    // The safety property itself, an order of two instants (not a speed): the exit came first.
    assert!(
        exited < expiry,
        "exited {:?} after the lease expired (lease {LEASE:?})",
        exited.duration_since(expiry).unwrap_or_default()
    );
}
