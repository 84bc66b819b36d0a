//! The operator killed (SIGKILL) at random moments during batches of creates, updates and
//! deletes, several rounds each: afterwards the control plane holds exactly one environment per
//! live resource and none for deleted ones, and every resource has converged.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use kubiya_cp_emulator::{Config as EmulatorConfig, Faults};
use kubiya_operator::resource::EnvironmentSpec;
use serde_json::json;

use crate::support::{TestBed, condition, is_ready};

const RESOURCES: usize = 16;
const ROUNDS: usize = 6;

fn calls(bed: &TestBed, route: &str) -> u64 {
    bed.emulator.calls().get(route).copied().unwrap_or(0)
}

/// Starts the operator and kills it once it has made 1–3 more calls on `route` (or after a
/// while), `rounds` times; returns how many kills landed.
async fn kill_rounds(bed: &mut TestBed, route: &str, rounds: usize) -> usize {
    let mut kills = 0;
    for _ in 0..rounds {
        bed.start_operator();
        let target = calls(bed, route) + 1 + fastrand::u64(0..3);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while calls(bed, route) < target && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(1..20))).await;
        }
        bed.kill_operator().await;
        kills += 1;
    }
    kills
}

fn name(i: usize) -> String {
    format!("env-{i:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_operator_during_creates_updates_and_deletes_never_duplicates_or_leaks() {
    // Some latency so that kills land between a remote call and the status write after it.
    let emulator = EmulatorConfig {
        provisioning: Duration::ZERO,
        faults: Faults { latency_ms: 15, ..Faults::default() },
        ..EmulatorConfig::default()
    };
    let mut bed = TestBed::without_operator("crash", emulator).await;

    // Creates.
    for i in 0..RESOURCES {
        bed.create(&name(i), EnvironmentSpec::default()).await;
    }
    let mut kills = kill_rounds(&mut bed, "POST /api/v1/environments", ROUNDS).await;

    // Updates, while creates may still be pending.
    for i in 0..RESOURCES {
        let patch = json!({"spec": {"description": format!("v2 of {i}")}});
        bed.envs.patch(&name(i), &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    kills += kill_rounds(&mut bed, "PATCH /api/v1/environments/{id}", ROUNDS).await;

    // Deletes of every other resource.
    for i in (0..RESOURCES).step_by(2) {
        bed.envs.delete(&name(i), &DeleteParams::default()).await.unwrap();
    }
    kills += kill_rounds(&mut bed, "DELETE /api/v1/environments/{id}", ROUNDS).await;
    assert!(kills >= 3 * ROUNDS);

    bed.start_operator();
    for i in 0..RESOURCES {
        if i % 2 == 0 {
            bed.wait_gone(&name(i)).await;
        } else {
            let generation_done = move |e: &kubiya_operator::resource::Environment| {
                is_ready(e)
                    && e.status.as_ref().and_then(|s| s.observed_generation) == e.metadata.generation
                    && condition(e, "Reconciling").as_deref() == Some("False")
            };
            bed.wait_for(&name(i), "Ready at its last generation", generation_done).await;
        }
    }
    let remote = bed.remote();
    for i in 0..RESOURCES {
        let n = remote.iter().filter(|e| e["name"] == name(i).as_str()).count();
        let want = if i % 2 == 0 { 0 } else { 1 };
        assert_eq!(n, want, "{}: {n} remote environments", name(i));
        if want == 1 {
            let e = remote.iter().find(|e| e["name"] == name(i).as_str()).unwrap();
            assert_eq!(e["description"], format!("v2 of {i}"));
        }
    }
    assert_eq!(remote.iter().filter(|e| e["name"] != "default").count(), RESOURCES / 2);
    bed.assert_no_secret_leaked().await;
}
