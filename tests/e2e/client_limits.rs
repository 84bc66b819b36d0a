//! The limits the control-plane client keeps, and what it refuses: at most
//! `KUBIYA_MAX_CONCURRENT_REQUESTS` at once, a 429's `Retry-After` honoured (a create never retried
//! blindly) and capped, answers over 16 MiB, answers in flight past their common budget, and
//! redirects, which are never followed; each refusal with a clear reason.

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kubiya_cp_emulator::{Config as EmulatorConfig, Faults};
use kubiya_operator::resource::{Environment, EnvironmentSpec, Phase};

use crate::support::health::assert_health;
use crate::support::{TIMEOUT, TestBed, condition, is_ready, message, phase, ready_now, wait_until};

/// Reconciling, because the control plane is unavailable (here: it answered 429).
fn throttled(e: &Environment) -> bool {
    e.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Reconciling" && c.status == "True" && c.reason == "ControlPlaneUnavailable")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_honoured_post_is_never_retried_blindly_and_calls_are_limited() {
    let emulator = EmulatorConfig { faults: Faults { latency_ms: 100, ..Faults::default() }, ..ready_now() };
    let mut bed = TestBed::without_operator("throttle", emulator).await;
    bed.operator_env.push(("KUBIYA_MAX_CONCURRENT_REQUESTS", "2".into()));
    bed.start_operator();
    for i in 0..8 {
        bed.create(&format!("e{i}"), EnvironmentSpec::default()).await;
    }
    for i in 0..8 {
        bed.wait_for(&format!("e{i}"), "Ready", is_ready).await;
    }
    assert!(bed.emulator.max_in_flight() <= 2, "{} requests in flight at once", bed.emulator.max_in_flight());

    // 429 with a long Retry-After, each answer 3 s late: a create is tried once, reported, and not
    // hammered.
    bed.emulator.set_faults(Faults {
        throttle: 1.0,
        retry_after_secs: 3600,
        latency_ms: 3000,
        ..Faults::default()
    });
    let posts = |bed: &TestBed| bed.emulator.calls().get("POST /api/v1/environments").copied().unwrap_or(0);
    let before = posts(&bed);
    bed.create("slow", EnvironmentSpec::default()).await;
    let env = bed.wait_for("slow", "Reconciling after a 429", throttled).await;
    assert_eq!(condition(&env, "Stalled").as_deref(), Some("False"), "transient trouble is never Stalled");
    assert_health(&env, "Progressing", "InProgress");
    // The window in which nothing more may happen ends with a later create's own 429: made once the
    // first was refused, its answer alone takes 3 s, longer than the backoff (1 s) of a retry
    // that ignored Retry-After. A POST is counted as it arrives, before its answer.
    bed.create("later", EnvironmentSpec::default()).await;
    bed.wait_for("later", "Reconciling after a 429", throttled).await;
    assert_eq!(
        posts(&bed),
        before + 2,
        "one POST each: no retry inside the client, and Retry-After honoured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_answers_redirects_and_endless_retry_after_are_refused_with_a_clear_reason() {
    let mut bed = TestBed::start("bounded", ready_now()).await;
    let reconciling_says = |what: &'static str| {
        move |e: &Environment| {
            e.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| c.type_ == "Reconciling" || c.type_ == "Stalled")
                    && s.message.as_deref().is_some_and(|m| m.contains(what))
            })
        }
    };

    bed.emulator.set_faults(Faults { huge_body: 1.0, huge_body_bytes: 17 << 20, ..Faults::default() });
    bed.create("huge", EnvironmentSpec::default()).await;
    bed.wait_for(
        "huge",
        "refused as too large",
        reconciling_says("the answer is larger than 16777216 bytes"),
    )
    .await;

    bed.emulator.set_faults(Faults {
        redirect_to: Some("http://elsewhere.test:9999/steal?k=v".into()),
        ..Faults::default()
    });
    bed.create("moved", EnvironmentSpec::default()).await;
    let env = bed
        .wait_for(
            "moved",
            "refused as a redirect",
            reconciling_says("a redirect to http://elsewhere.test:9999"),
        )
        .await;
    assert!(!message(&env).contains("steal"), "only the target host is named: {}", message(&env));
    assert_eq!(phase(&env), Some(Phase::Error), "a redirect needs a human: {}", message(&env));

    bed.emulator.set_faults(Faults { throttle: 1.0, retry_after_secs: 100_000_000, ..Faults::default() });
    bed.create("parked", EnvironmentSpec::default()).await;
    bed.wait_for("parked", "told how long it waits", reconciling_says("will retry in 300s")).await;

    bed.emulator.set_faults(Faults::default());
    for name in ["huge", "moved"] {
        bed.annotate(name, "kubiya.ai/reconcile-requested-at", Some("now")).await;
        bed.wait_for(name, "Ready", is_ready).await;
    }
    assert!(bed.operator_alive());
}

/// Reconciling, because answers in flight would have passed the operator's budget for them.
fn over_budget(e: &Environment) -> bool {
    e.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Reconciling" && c.status == "True" && c.reason == "AnswersOverBudget")
    })
}

/// Every answer is 12 MiB and held for 2 s before its last byte: two fit the 32 MiB budget of
/// answers in flight, a third is not read. Its Environment says so (Reconciling, retried, an Event)
/// and the operator goes on; once answers are small again, every Environment is Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_flight_past_their_budget_are_refused_said_and_retried() {
    let bed = TestBed::start("budget", ready_now()).await;
    bed.emulator.set_faults(Faults {
        huge_body: 1.0,
        huge_body_bytes: 12 << 20,
        huge_body_stall_ms: 2000,
        ..Faults::default()
    });
    let names: Vec<String> = (0..4).map(|i| format!("b{i}")).collect();
    for name in &names {
        bed.create(name, EnvironmentSpec::default()).await;
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let env = loop {
        let list = bed.envs.list(&Default::default()).await.expect("list Environments");
        if let Some(env) = list.items.into_iter().find(over_budget) {
            break env;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Environment Reconciling AnswersOverBudget");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(condition(&env, "Stalled").as_deref(), Some("False"), "a crowd of answers is transient");
    assert_health(&env, "Progressing", "InProgress");
    assert!(
        message(&env).contains("budget of 33554432 bytes") && message(&env).contains("trying again shortly"),
        "says what was refused and that it is retried: {}",
        message(&env)
    );
    let events: Api<Event> = Api::namespaced(bed.client.clone(), &bed.namespace);
    wait_until("an AnswersOverBudget Event", || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.expect("list Events");
            list.items.iter().any(|e| {
                e.reason.as_deref() == Some("AnswersOverBudget") && e.type_.as_deref() == Some("Warning")
            })
        }
    })
    .await;

    bed.emulator.set_faults(Faults::default());
    for name in &names {
        bed.wait_for(name, "Ready once answers are small again", is_ready).await;
    }
    // A create whose answer was not read has happened: its retry finds it (409, then by name).
    let remote = bed.remote();
    for name in &names {
        assert_eq!(remote.iter().filter(|e| e["name"] == name.as_str()).count(), 1, "{name} created once");
    }
    bed.assert_no_secret_leaked().await;
}
