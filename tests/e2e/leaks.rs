//! Secrets never shown: worker tokens and the API key in the server's error text never reach a
//! status, an Event or the operator's log; an API key that cannot be sent stops the start with the
//! reason, and is never printed.

use kubiya_operator::resource::EnvironmentSpec;

use crate::support::{TIMEOUT, TestBed, is_ready, message, ready_now, stalled_with};

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
