//! The operator under control-plane faults: it converges, never duplicates (a create whose answer
//! was lost included), never calls transient trouble Stalled, and backs off while the control
//! plane is away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubiya_cp_emulator::{Config as EmulatorConfig, Faults};
use kubiya_operator::resource::{Environment, EnvironmentSpec, Phase};
use serde_json::json;

use crate::support::health::assert_health;
use crate::support::{
    TestBed, condition, id_of, is_ready, metric_sum, phase, ready_now, wait_until, wait_until_within,
};

/// Watches the namespace and raises the flag if any Environment is ever seen Stalled.
fn stalled_watch(bed: &TestBed) -> Arc<AtomicBool> {
    let seen = Arc::new(AtomicBool::new(false));
    let flag = seen.clone();
    let stream = watcher(bed.envs.clone(), watcher::Config::default()).default_backoff().applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        // An error (a watch expired, say) is retried by the watcher: skip it, never stop on it.
        while let Some(item) = stream.next().await {
            let Ok(e) = item else { continue };
            if condition(&e, "Stalled").as_deref() == Some("True") {
                flag.store(true, Ordering::Relaxed);
            }
        }
    });
    seen
}

/// Waits until every Environment in the namespace satisfies `cond` (and there are `n`).
async fn wait_all(
    bed: &TestBed,
    n: usize,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&Environment) -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let list = bed.envs.list(&ListParams::default()).await.expect("list");
        let done = list.items.iter().filter(|e| cond(e)).count();
        if list.items.len() == n && done == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done}/{n} {what} after {timeout:?}; operator log tail:\n{}",
            bed.operator_log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many passes over the Environment `name` failed with `reason`, from its Warning Event: the
/// operator's recorder folds a failure that repeats into one Event and counts it in its series.
async fn failed_passes(bed: &TestBed, name: &str, reason: &str) -> i32 {
    let api: Api<Event> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let lp = ListParams::default().fields(&format!("regarding.name={name}"));
    let events = api.list(&lp).await.expect("list events").items;
    events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

const BATCH: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reaches_ready_through_5xx_429_hangs_and_malformed_bodies() {
    let faults = Faults {
        server_error: 0.2,
        throttle: 0.1,
        retry_after_secs: 1,
        hang: 0.05,
        malformed: 0.05,
        latency_ms: 2,
        ..Faults::default()
    };
    let emulator = EmulatorConfig { provisioning: Duration::ZERO, faults, ..EmulatorConfig::default() };
    let mut bed = TestBed::without_operator("faults", emulator).await;
    bed.operator_env.push(("KUBIYA_REQUEST_TIMEOUT", "1s".into()));
    for i in 0..BATCH {
        bed.create(&format!("f-{i:03}"), EnvironmentSpec::default()).await;
    }
    let stalled = stalled_watch(&bed);
    bed.start_operator();
    // Most converge through the faults. A few unlucky ones fail pass after pass and back off up
    // to minutes (as they should); once the faults clear, a reconcile request, as a user would
    // make, brings each at once.
    let most = || async {
        let list = bed.envs.list(&ListParams::default()).await.expect("list");
        list.items.iter().filter(|e| is_ready(e)).count() >= BATCH * 9 / 10
    };
    let through = "90% of the batch to be Ready through the faults";
    wait_until_within(through, Duration::from_secs(240), most).await;
    bed.emulator.set_faults(Faults::default());
    for env in bed.envs.list(&ListParams::default()).await.expect("list").items {
        if !is_ready(&env) {
            let name = env.metadata.name.clone().unwrap_or_default();
            bed.annotate(&name, "kubiya.ai/reconcile-requested-at", Some("after-the-faults")).await;
        }
    }
    wait_all(&bed, BATCH, "Ready", Duration::from_secs(120), is_ready).await;

    assert!(!stalled.load(Ordering::Relaxed), "transient trouble was reported as Stalled");
    let remote = bed.remote();
    for i in 0..BATCH {
        let name = format!("f-{i:03}");
        assert_eq!(remote.iter().filter(|e| e["name"] == name.as_str()).count(), 1, "{name}");
    }
    assert_eq!(remote.iter().filter(|e| e["name"] != "default").count(), BATCH);
    let calls: u64 = bed.emulator.calls().values().sum();
    let amplification = calls as f64 / BATCH as f64;
    // Without faults a create costs 2–3 calls (create, worker command, one read); bounded retries
    // may multiply that, never without limit.
    assert!(amplification < 12.0, "{calls} control-plane calls for {BATCH} environments");
    bed.assert_no_secret_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_is_recovered_not_duplicated() {
    // Every answer hangs past the client timeout, but the create happens: then the control plane
    // recovers and the next create gets 409, as with the real server under load.
    let emulator = EmulatorConfig { faults: Faults { hang: 1.0, ..Faults::default() }, ..ready_now() };
    let mut bed = TestBed::without_operator("lost", emulator).await;
    bed.operator_env.push(("KUBIYA_REQUEST_TIMEOUT", "1s".into()));
    bed.start_operator();
    bed.create("lost", EnvironmentSpec::default()).await;
    // The first status is the first pass's outcome: a create whose answer was lost, in progress.
    let env = bed
        .wait_for("lost", "Pending and Reconciling", |e| {
            phase(e) == Some(Phase::Pending) && condition(e, "Reconciling").as_deref() == Some("True")
        })
        .await;
    assert_eq!(env.status.as_ref().and_then(|s| s.observed_generation), env.metadata.generation);
    assert_health(&env, "Progressing", "InProgress");
    wait_until("the create to reach the emulator", || async { bed.remote_named("lost").is_some() }).await;
    bed.emulator.set_faults(Faults::default());

    let env = bed.wait_for("lost", "Ready", is_ready).await;
    let named: Vec<_> = bed.remote().into_iter().filter(|e| e["name"] == "lost").collect();
    assert_eq!(named.len(), 1, "exactly one environment: {named:#?}");
    assert_eq!(named[0]["id"].as_str(), Some(id_of(&env).as_str()));
    // Recovered, not found by luck: the operator's own count shows its create answered 409 (the
    // environment was there already), and a list (where it found its owner marker).
    let metrics = bed.metrics().await;
    let requests = |method: &str, code: &str| {
        metric_sum(
            &metrics,
            &format!(
                "kubiya_operator_control_plane_requests_total{{connection=\"operator\",route=\"/api/v1/environments\",method=\"{method}\",code=\"{code}\"}}"
            ),
        )
    };
    assert!(requests("POST", "409") >= 1.0, "no create answered 409:\n{metrics}");
    assert!(requests("GET", "200") >= 1.0, "no list after the 409:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_control_plane_is_down_nothing_is_lost_and_recovery_is_automatic() {
    let mut bed =
        TestBed::start("down", EmulatorConfig { provisioning: Duration::ZERO, ..EmulatorConfig::default() })
            .await;
    for i in 0..6 {
        bed.create(&format!("d-{i}"), EnvironmentSpec::default()).await;
    }
    wait_all(&bed, 6, "Ready", Duration::from_secs(60), is_ready).await;
    let stalled = stalled_watch(&bed);

    bed.emulator.go_down().await;
    // While it is down: a spec change, a deletion and a new resource.
    let patch = json!({"spec": {"description": "changed while down"}});
    bed.envs.patch("d-0", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    bed.envs.delete("d-1", &DeleteParams::default()).await.unwrap();
    bed.create("d-new", EnvironmentSpec::default()).await;
    let busy = ["d-0", "d-1", "d-new"];
    for name in busy {
        bed.wait_for(name, "reporting the outage", |e| {
            e.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Reconciling" && c.status == "True" && c.reason == "ControlPlaneUnavailable"
                })
            })
        })
        .await;
    }
    let env = bed.envs.get("d-1").await.unwrap();
    assert!(env.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default().contains("unreachable"));

    // Backoff caps the rate: counted up to a later event, not over a stretch of time. The three
    // with work to do fail their first passes 1 s, 2 s, 4 s … apart (±25 %, plus the pass): after
    // the 4th, the next comes 6–11 s later, and the one after that at least 12 s later still.
    // Then a fourth resource with work, created now, fails its first 3 passes (at most 7 s),
    // which ends the window. Backing off, each of the three fails at most once in it; retrying
    // at a steady pace, or starting its backoff over, each would fail about as often as the
    // newcomer.
    const BEFORE: i32 = 4;
    const WINDOW: i32 = 3;
    const REASON: &str = "ControlPlaneUnavailable";
    let mut at_start = Vec::new();
    for name in busy {
        wait_until(&format!("{BEFORE} failed passes of {name}"), || async {
            failed_passes(&bed, name, REASON).await >= BEFORE
        })
        .await;
    }
    for name in busy {
        at_start.push(failed_passes(&bed, name, REASON).await);
    }
    bed.create("d-late", EnvironmentSpec::default()).await;
    wait_until(&format!("{WINDOW} failed passes of d-late"), || async {
        failed_passes(&bed, "d-late", REASON).await >= WINDOW
    })
    .await;
    for (name, before) in busy.into_iter().zip(at_start) {
        let during = failed_passes(&bed, name, REASON).await - before;
        assert!(
            during <= 1,
            "{name} failed {during} more passes while d-late, created after it, failed its first {WINDOW}: \
             its retries do not back off"
        );
    }

    let changed = bed.envs.get("d-0").await.unwrap();
    assert_eq!(
        condition(&changed, "Ready").as_deref(),
        Some("False"),
        "a change not yet applied is not Ready"
    );

    bed.emulator.come_up().await.unwrap();
    bed.wait_gone("d-1").await;
    let settled = |e: &Environment| is_ready(e) && condition(e, "Reconciling").as_deref() == Some("False");
    wait_all(&bed, 7, "Ready", Duration::from_secs(120), settled).await;
    assert!(!stalled.load(Ordering::Relaxed), "an outage was reported as Stalled");
    let remote = bed.remote();
    assert!(remote.iter().all(|e| e["name"] != "d-1"), "deleted while down, then deleted remotely");
    for name in ["d-new", "d-late"] {
        assert_eq!(remote.iter().filter(|e| e["name"] == name).count(), 1, "{name}");
    }
    assert_eq!(remote.iter().find(|e| e["name"] == "d-0").unwrap()["description"], "changed while down");
    assert_eq!(remote.iter().filter(|e| e["name"] != "default").count(), 7);
}
