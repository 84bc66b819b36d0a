//! One bad object, one bad answer, one bad minute never stop the operator: an Environment it
//! cannot decode, failures that heal without an edit, secrets in the server's error text, huge
//! answers, redirects, endless `Retry-After`, an unusable key, a pass that hangs, and per-object
//! state that must go with its object.

use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kubiya_cp_emulator::{Config as EmulatorConfig, Faults};
use kubiya_operator::resource::{Environment, EnvironmentSpec, Phase};
use serde_json::{Value, json};

use crate::support::{
    TIMEOUT, TestBed, is_ready, message, metric_sum, phase, ready_now, stalled_with, wait_until,
    wait_until_within,
};

/// `settings` nested `depth` levels deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!({ "a": inner }))
}

/// Creates an Environment from raw JSON without decoding the answer (kube's client decodes with
/// serde_json's recursion limit, which is the very thing under test).
async fn create_raw(bed: &TestBed, body: &Value) {
    let uri = format!("/apis/kubiya.ai/v1alpha1/namespaces/{}/environments", bed.namespace);
    let request = http::Request::post(uri)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .unwrap();
    bed.client.request_text(request).await.expect("the API server accepts the object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_nested_too_deep_to_decode_never_stops_the_others_across_a_restart() {
    const OTHERS: usize = 100;
    let mut bed = TestBed::start("deep", ready_now()).await;
    let deep = json!({
        "apiVersion": "kubiya.ai/v1alpha1", "kind": "Environment",
        "metadata": {"name": "deep"}, "spec": {"settings": nested(200)},
    });
    create_raw(&bed, &deep).await;
    for i in 0..OTHERS {
        bed.create(&format!("ok-{i:03}"), EnvironmentSpec::default()).await;
    }
    for i in 0..OTHERS {
        bed.wait_for(&format!("ok-{i:03}"), "Ready", is_ready).await;
    }
    // The bad one is reported, where a merge patch of status can carry it (read back raw).
    let stalled = || async {
        let uri = format!("/apis/kubiya.ai/v1alpha1/namespaces/{}/environments/deep", bed.namespace);
        let text = bed.client.request_text(http::Request::get(uri).body(Vec::new()).unwrap()).await.unwrap();
        text.contains("\"reason\":\"InvalidSpec\"") && text.contains("recursion limit exceeded")
    };
    wait_until("the undecodable Environment to be Stalled InvalidSpec", stalled).await;
    let note = bed.wait_event("deep", "InvalidSpec").await;
    assert!(note.contains("cannot be decoded"), "{note}");

    // Across a restart: the caches sync, everything else is still reconciled, deletions work.
    bed.terminate_operator().await;
    bed.start_operator();
    wait_until("/readyz after the restart", || async {
        crate::support::try_http_get(&bed.log, "/readyz").await.as_deref() == Some("ok: leading")
    })
    .await;
    bed.envs.delete("ok-000", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("ok-000").await;
    assert!(bed.remote_named("ok-000").is_none(), "deleted remotely");
    bed.create("after", EnvironmentSpec::default()).await;
    bed.wait_for("after", "Ready", is_ready).await;
    let ready = metric_sum(&bed.metrics().await, "kubiya_operator_environments{phase=\"Ready\"}");
    assert_eq!(ready, OTHERS as f64, "{OTHERS} Ready: 99 left and the new one");

    // And the undecodable one can be deleted.
    bed.envs.delete("deep", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("deep").await;
    assert!(bed.operator_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_conflict_heals_without_an_edit_once_the_foreign_environment_is_gone() {
    let mut bed = TestBed::without_operator("heal", ready_now()).await;
    bed.operator_env.push(("KUBIYA_RESYNC_INTERVAL", "1s".into()));
    bed.start_operator();
    let (_, foreign) = bed.cp("POST", "/api/v1/environments", Some(json!({"name": "taken"}))).await;
    bed.create("mine", EnvironmentSpec { name: Some("taken".into()), ..Default::default() }).await;
    let env = bed.wait_for("mine", "Stalled with NameConflict", stalled_with("NameConflict")).await;
    assert!(message(&env).contains("kubectl annotate environment/mine"), "{}", message(&env));
    let generation = env.metadata.generation;

    let (code, _) =
        bed.cp("DELETE", &format!("/api/v1/environments/{}", foreign["id"].as_str().unwrap()), None).await;
    assert_eq!(code, 204);
    let env = bed.wait_for("mine", "Ready", is_ready).await;
    assert_eq!(env.metadata.generation, generation, "no edit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_the_servers_error_message_never_reach_status_events_or_logs() {
    let bed = TestBed::start("error-text", ready_now()).await;
    bed.create("leaky", EnvironmentSpec::default()).await;
    let env = bed.wait_for("leaky", "Ready", is_ready).await;
    let id = env.status.as_ref().and_then(|s| s.environment_id.clone()).unwrap();
    let token = bed.remote_named("leaky").unwrap()["worker_token"].as_str().unwrap().to_owned();
    let key = kubiya_cp_emulator::token(&bed.org);
    // What a database error looks like: the failing row, the worker token and the key in it.
    let text = format!(
        "Failed to provision: Failing row contains ({id}, {token}) auth={key}\n[SQL: UPDATE ...] {token}"
    );
    assert!(bed.emulator.set_status(&bed.org, &id, "error", Some(&text)));
    bed.annotate("leaky", "kubiya.ai/reconcile-requested-at", Some("now")).await;
    let env = bed.wait_for("leaky", "Stalled with RemoteError", stalled_with("RemoteError")).await;
    let shown = message(&env);
    assert!(
        shown.starts_with("the control plane reports an error: Failed to provision: Failing row contains"),
        "{shown}"
    );
    assert!(shown.contains("<redacted>") && !shown.contains("SQL"), "{shown}");
    let note = bed.wait_event("leaky", "RemoteError").await;
    assert!(note.contains("<redacted>"), "{note}");
    bed.assert_no_secret_leaked().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_that_cannot_be_sent_stops_the_start_with_the_reason() {
    let mut bed = TestBed::without_operator("bad-key", ready_now()).await;
    bed.operator_env.push(("KUBIYA_API_KEY", "eyJhbGciOi\nJIUzI1NiJ9".into()));
    bed.start_operator();
    let status = bed.wait_operator_exit(TIMEOUT).await;
    assert!(!status.success());
    let log = bed.operator_log();
    assert!(log.contains("the API key is empty or holds a space, a line break"), "{log}");
    assert!(!log.contains("JIUzI1NiJ9"), "the key itself is never printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_that_runs_too_long_is_abandoned_as_transient_and_retried() {
    // Each answer slower than the whole pass may take.
    let emulator = EmulatorConfig { faults: Faults { latency_ms: 1500, ..Faults::default() }, ..ready_now() };
    let mut bed = TestBed::without_operator("timeout", emulator).await;
    bed.operator_env.push(("KUBIYA_RECONCILE_TIMEOUT", "1s".into()));
    bed.start_operator();
    bed.create("slow", EnvironmentSpec::default()).await;
    let env = bed
        .wait_for("slow", "Reconciling after a timeout", |e| {
            e.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Reconciling" && c.status == "True" && c.reason == "Timeout")
            })
        })
        .await;
    assert!(
        message(&env).contains("took longer than 1s and was abandoned (will retry)"),
        "{}",
        message(&env)
    );
    assert_eq!(crate::support::condition(&env, "Stalled").as_deref(), Some("False"), "transient");
    bed.emulator.set_faults(Faults::default());
    bed.wait_for("slow", "Ready", is_ready).await;
    assert_eq!(
        bed.remote().iter().filter(|r| r["name"] == "slow").count(),
        1,
        "no duplicate from the abandoned passes"
    );
}

/// The operator's per-object state (backoff, recorded ids), by its gauge.
async fn tracked(bed: &TestBed) -> f64 {
    metric_sum(&bed.metrics().await, "kubiya_operator_tracked_objects ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_object_state_goes_with_its_object_however_it_leaves() {
    const ROUNDS: usize = 10;
    const BATCH: usize = 100;
    let mut bed = TestBed::without_operator("forget", ready_now()).await;
    bed.operator_env.push(("KUBIYA_LABEL_SELECTOR", "shard=a".into()));
    bed.start_operator();

    let labelled = |name: &str| {
        let mut e = Environment::new(name, EnvironmentSpec::default());
        e.metadata.labels = Some([("shard".to_owned(), "a".to_owned())].into());
        e
    };
    for round in 0..ROUNDS {
        for i in 0..BATCH {
            bed.envs.create(&Default::default(), &labelled(&format!("c-{round}-{i:03}"))).await.unwrap();
        }
        for i in 0..BATCH {
            bed.wait_for(&format!("c-{round}-{i:03}"), "Ready", is_ready).await;
        }
        bed.envs
            .delete_collection(&DeleteParams::default(), &ListParams::default().labels("shard=a"))
            .await
            .unwrap();
        wait_until_within("the batch to be gone", TIMEOUT * 2, || async {
            bed.envs.list(&ListParams::default()).await.unwrap().items.is_empty()
        })
        .await;
    }
    wait_until("per-object state of 1,000 created and deleted objects to be 0", || async {
        tracked(&bed).await == 0.0
    })
    .await;

    // Leaving without a cleanup: relabelled out of the selector, or its finalizer removed by hand
    // (from a paused deletion, which holds it).
    bed.envs.create(&Default::default(), &labelled("relabelled")).await.unwrap();
    bed.envs.create(&Default::default(), &labelled("unhooked")).await.unwrap();
    bed.wait_for("relabelled", "Ready", is_ready).await;
    bed.wait_for("unhooked", "Ready", is_ready).await;
    wait_until("2 tracked", || async { tracked(&bed).await == 2.0 }).await;
    let relabel = json!({"metadata": {"labels": {"shard": "b"}}});
    bed.envs.patch("relabelled", &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    wait_until("relabelled out of the selector: forgotten", || async { tracked(&bed).await == 1.0 }).await;
    bed.annotate("unhooked", "kubiya.ai/paused", Some("true")).await;
    bed.envs.delete("unhooked", &DeleteParams::default()).await.unwrap();
    bed.wait_for("unhooked", "held", |e| message(e).contains("deletion paused")).await;
    let unhook = json!({"metadata": {"finalizers": null}});
    bed.envs.patch("unhooked", &PatchParams::default(), &Patch::Merge(&unhook)).await.unwrap();
    wait_until("gone without a cleanup: forgotten", || async { tracked(&bed).await == 0.0 }).await;
}
