//! The operator killed (SIGKILL) at many points during a batch of creates: afterwards the
//! control plane holds exactly one environment per resource, and every resource is Ready.

use std::time::Duration;

use kubiya_cp_emulator::{Config as EmulatorConfig, Faults};
use kubiya_operator::resource::EnvironmentSpec;

use crate::support::{TestBed, condition, phase};

const RESOURCES: usize = 16;
const KILLS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_operator_during_creates_never_duplicates_or_leaks() {
    // Some latency so that kills land between a create and the status write that records it.
    let emulator = EmulatorConfig {
        provisioning: Duration::ZERO,
        faults: Faults { latency_ms: 15, ..Faults::default() },
        ..EmulatorConfig::default()
    };
    let mut bed = TestBed::without_operator("crash", emulator).await;
    for i in 0..RESOURCES {
        bed.create(&format!("env-{i:02}"), EnvironmentSpec::default()).await;
    }
    let posts = |bed: &TestBed| bed.emulator.calls().get("POST /api/v1/environments").copied().unwrap_or(0);
    for round in 0..KILLS {
        bed.start_operator();
        // Let this incarnation get some way (a few more creates), then kill it mid-flight.
        let target = posts(&bed) + 1 + fastrand::u64(0..3);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while posts(&bed) < target && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(1..20))).await;
        }
        bed.kill_operator().await;
        if bed.remote().len() >= RESOURCES && round >= KILLS / 2 {
            break;
        }
    }
    bed.start_operator();
    for i in 0..RESOURCES {
        bed.wait_for(&format!("env-{i:02}"), "Ready", |e| {
            phase(e).as_deref() == Some("Ready") && condition(e, "Ready").as_deref() == Some("True")
        })
        .await;
    }
    let remote = bed.remote();
    for i in 0..RESOURCES {
        let name = format!("env-{i:02}");
        let n = remote.iter().filter(|e| e["name"] == name.as_str()).count();
        assert_eq!(n, 1, "{name}: {n} remote environments");
    }
    let ours = remote.iter().filter(|e| e["name"] != "default").count();
    assert_eq!(ours, RESOURCES, "exactly one environment per resource, nothing else");
    bed.assert_no_secret_leaked().await;
}
