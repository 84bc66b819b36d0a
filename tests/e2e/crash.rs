//! The operator killed (SIGKILL) at random moments during batches of creates, updates and
//! deletes, several rounds each: afterwards the control plane holds exactly one environment per
//! live resource and none for deleted ones, and every resource has converged.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use kubiya_cp_emulator::{Config as EmulatorConfig, Faults};
use kubiya_operator::resource::EnvironmentSpec;
use serde_json::json;

use crate::support::{TestBed, condition, is_ready, wait_until};

const RESOURCES: usize = 16;
const ROUNDS: usize = 6;
/// Kills per phase that must land mid-batch (see [`kill_rounds`]), for the phase to be tested.
const MIN_LANDED: usize = 2;

/// Starts the operator and kills it once it has made 1–3 more calls on `route`, `rounds` times;
/// returns how many kills landed mid-batch, that is right after such a call. A round in which
/// the calls do not come within 5 s (the batch is done) kills an idle operator: not counted.
async fn kill_rounds(bed: &mut TestBed, route: &str, rounds: usize) -> usize {
    let mut landed = 0;
    for _ in 0..rounds {
        bed.start_operator();
        let target = bed.calls(route) + 1 + fastrand::u64(0..3);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        // Polled at random intervals, so that kills fall at varied points of a pass.
        while bed.calls(route) < target && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(1..20))).await;
        }
        let mid_batch = bed.calls(route) >= target;
        bed.kill_operator().await;
        landed += usize::from(mid_batch);
    }
    landed
}

/// Fails unless enough kills of a phase landed mid-batch: otherwise it proved little.
fn assert_landed(phase: &str, landed: usize) {
    assert!(
        landed >= MIN_LANDED,
        "only {landed} of {ROUNDS} kills during the {phase} landed mid-batch (at least {MIN_LANDED} must)"
    );
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
    // Two calls at a time: a batch lasts long enough that a kill lands in it, not after it, even
    // on a busy machine where the kill comes well after the call it waited for.
    bed.operator_env.push(("KUBIYA_MAX_CONCURRENT_REQUESTS", "2".into()));

    // Creates.
    for i in 0..RESOURCES {
        bed.create(&name(i), EnvironmentSpec::default()).await;
    }
    assert_landed("creates", kill_rounds(&mut bed, "POST /api/v1/environments", ROUNDS).await);

    // Updates, while creates may still be pending. Half the creates recorded first: a create still
    // pending carries the new spec and needs no PATCH, so without them there might be no update
    // to kill the operator in.
    bed.start_operator();
    wait_until("half the creates recorded in status", || async {
        let list = bed.envs.list(&Default::default()).await.expect("list");
        let recorded =
            list.items.iter().filter(|e| e.status.as_ref().is_some_and(|s| s.environment_id.is_some()));
        recorded.count() >= RESOURCES / 2
    })
    .await;
    bed.kill_operator().await;
    for i in 0..RESOURCES {
        let patch = json!({"spec": {"description": format!("v2 of {i}")}});
        bed.envs.patch(&name(i), &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    assert_landed("updates", kill_rounds(&mut bed, "PATCH /api/v1/environments/{id}", ROUNDS).await);

    // Deletes of every other resource.
    for i in (0..RESOURCES).step_by(2) {
        bed.envs.delete(&name(i), &DeleteParams::default()).await.unwrap();
    }
    assert_landed("deletes", kill_rounds(&mut bed, "DELETE /api/v1/environments/{id}", ROUNDS).await);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_operator_during_orphan_releases_and_take_backs_never_duplicates_or_loses_one() {
    let emulator = EmulatorConfig {
        provisioning: Duration::ZERO,
        faults: Faults { latency_ms: 15, ..Faults::default() },
        ..EmulatorConfig::default()
    };
    let mut bed = TestBed::without_operator("crash-owner", emulator).await;
    bed.operator_env.push(("KUBIYA_MAX_CONCURRENT_REQUESTS", "2".into()));
    let orphan = || EnvironmentSpec {
        deletion_policy: kubiya_operator::resource::DeletionPolicy::Orphan,
        ..Default::default()
    };
    bed.start_operator();
    for i in 0..RESOURCES {
        bed.create(&name(i), orphan()).await;
    }
    let mut ids = Vec::new();
    for i in 0..RESOURCES {
        let env = bed.wait_for(&name(i), "Ready", is_ready).await;
        ids.push(env.status.and_then(|s| s.environment_id).expect("id"));
    }
    bed.kill_operator().await;

    // Orphan deletions (each a release: one PATCH), killed at random.
    for i in 0..RESOURCES {
        bed.envs.delete(&name(i), &DeleteParams::default()).await.unwrap();
    }
    assert_landed("releases", kill_rounds(&mut bed, "PATCH /api/v1/environments/{id}", ROUNDS).await);
    bed.start_operator();
    for i in 0..RESOURCES {
        bed.wait_gone(&name(i)).await;
    }
    bed.kill_operator().await;
    for r in bed.remote().iter().filter(|r| r["name"] != "default") {
        assert_eq!(
            r["settings"]["kubiya.ai/owner"]["released"], true,
            "released before the finalizer went: {r}"
        );
    }

    // The same manifests again (each a 409, a list and a PATCH of the marker), killed at random.
    for i in 0..RESOURCES {
        bed.create(&name(i), orphan()).await;
    }
    assert_landed("take-backs", kill_rounds(&mut bed, "PATCH /api/v1/environments/{id}", ROUNDS).await);
    bed.start_operator();
    for (i, id) in ids.iter().enumerate() {
        let env = bed.wait_for(&name(i), "Ready", is_ready).await;
        assert_eq!(env.status.as_ref().and_then(|s| s.environment_id.as_ref()), Some(id), "{}", name(i));
        let marker = &bed.remote_named(&name(i)).unwrap()["settings"]["kubiya.ai/owner"];
        assert_eq!(marker["uid"], json!(env.metadata.uid), "{}", name(i));
        assert!(marker.get("released").is_none(), "{marker}");
    }
    let remote = bed.remote();
    assert_eq!(
        remote.iter().filter(|e| e["name"] != "default").count(),
        RESOURCES,
        "no duplicate, none lost"
    );
}
