//! Env var values from Secrets (`env[].valueFrom.secretKeyRef`, `envFrom`): they reach the remote
//! environment, follow the Secret without an edit (its watch, not a resync), stall the
//! Environment while missing and heal as they appear, come only from the Environment's own
//! namespace, and are never shown in a status, an Event or the operator's log.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kubiya_operator::resource::{Environment, EnvironmentSpec};
use serde_json::{Value, json};

use crate::support::{TestBed, is_ready, message, metric_sum, ready_now, stalled_with, wait_until};

/// A value no other test uses, so that finding it anywhere is this test's leak.
fn secret_value(what: &str) -> String {
    format!("{what}-{:016x}", fastrand::u64(..))
}

fn spec(execution_environment: Value) -> EnvironmentSpec {
    serde_json::from_value(json!({"executionEnvironment": execution_environment})).expect("spec")
}

fn from_secret(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

async fn put(secrets: &Api<Secret>, name: &str, data: &[(&str, &str)]) {
    let string_data: BTreeMap<&str, &str> = data.iter().copied().collect();
    let secret =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data});
    let params = PatchParams::apply("test").force();
    secrets.patch(name, &params, &Patch::Apply(&secret)).await.expect("apply Secret");
}

/// The remote environment's env vars, by name.
fn remote_vars(bed: &TestBed, name: &str) -> Option<Value> {
    bed.remote_named(name).map(|e| e["execution_environment"]["env_vars"].clone())
}

/// A bed whose operator resyncs only every hour: what happens sooner is the watches' doing.
async fn watch_only(name: &str) -> TestBed {
    let mut bed = TestBed::without_operator(name, ready_now()).await;
    bed.operator_env.push(("KUBIYA_RESYNC_INTERVAL", "1h".into()));
    bed.start_operator();
    bed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_secrets_reach_the_environment_and_follow_the_secret_without_an_edit() {
    let bed = watch_only("envsecret").await;
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let (first, second, region) = (secret_value("pw"), secret_value("pw2"), secret_value("region"));
    put(&secrets, "db", &[("password", &first)]).await;
    put(&secrets, "common", &[("REGION", &region), ("tls.crt", "left-out")]).await;
    let exec = json!({
        "envVars": {"LOG": "debug"},
        "env": [from_secret("DB_PASSWORD", "db", "password")],
        "envFrom": [{"secretRef": {"name": "common"}, "prefix": "APP_"}],
    });
    bed.create("app", spec(exec)).await;
    bed.wait_for("app", "Ready", is_ready).await;
    assert_eq!(
        remote_vars(&bed, "app"),
        Some(json!({"LOG": "debug", "DB_PASSWORD": first, "APP_REGION": region})),
        "the merged map, without the key that is no variable name"
    );

    // The Secret changes; the Environment does not: the Secret's watch brings the new value.
    put(&secrets, "db", &[("password", &second)]).await;
    wait_until("the new password remote", || async {
        remote_vars(&bed, "app").is_some_and(|v| v["DB_PASSWORD"] == second.as_str())
    })
    .await;
    let env = bed.envs.get("app").await.unwrap();
    assert_eq!(env.metadata.generation, Some(1), "no edit of the Environment");
    let note = bed.wait_event("app", "Updated").await;
    assert_eq!(note, "updated execution_environment", "an update, named by field, no value");
    let drift = "kubiya_operator_drift_corrections_total{field=\"execution_environment\"}";
    assert_eq!(metric_sum(&bed.metrics().await, drift), 0.0, "a Secret's change is no drift");

    // Changed by hand in the control plane: corrected back to the Secret's value, as drift.
    let id = env.status.as_ref().and_then(|s| s.environment_id.clone()).unwrap();
    let by_hand = json!({"execution_environment": {"env_vars": {"LOG": "debug", "DB_PASSWORD": "guessed"}}});
    let (code, _) = bed.cp("PATCH", &format!("/api/v1/environments/{id}"), Some(by_hand)).await;
    assert_eq!(code, 200);
    bed.annotate("app", "kubiya.ai/reconcile-requested-at", Some("after-hand-edit")).await;
    wait_until("the drift corrected", || async {
        remote_vars(&bed, "app")
            .is_some_and(|v| v["DB_PASSWORD"] == second.as_str() && v["APP_REGION"] == region.as_str())
    })
    .await;
    let note = bed.wait_event("app", "DriftCorrected").await;
    assert!(note.ends_with("execution_environment"), "{note}");

    bed.assert_no_secret_leaked_including(&[&first, &second, &region, "guessed"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_or_key_stalls_with_nothing_sent_and_heals_as_it_appears() {
    let bed = watch_only("envmissing").await;
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let token = secret_value("token");
    bed.create("later", spec(json!({"env": [from_secret("API_TOKEN", "vault", "token")]}))).await;
    let env = bed.wait_for("later", "Stalled SecretNotFound", stalled_with("SecretNotFound")).await;
    let text = message(&env);
    assert!(text.contains("Secret \"vault\"") && text.contains("does not exist"), "{text}");
    let note = bed.wait_event("later", "SecretNotFound").await;
    assert!(note.contains("\"vault\""), "{note}");
    assert!(bed.remote_named("later").is_none(), "nothing created while the Secret is missing");
    assert_eq!(bed.calls("POST /api/v1/environments"), 0);

    // The Secret appears, without the key: still stalled, now naming the key.
    put(&secrets, "vault", &[("other", "x")]).await;
    let env =
        bed.wait_for("later", "stalled on the key", |e| message(e).contains("has no key \"token\"")).await;
    assert!(stalled_with("SecretNotFound")(&env));
    assert!(bed.remote_named("later").is_none());

    // The key appears: Ready with the value, no edit, long before any resync.
    put(&secrets, "vault", &[("other", "x"), ("token", &token)]).await;
    let env = bed.wait_for("later", "Ready", is_ready).await;
    assert_eq!(env.metadata.generation, Some(1));
    assert_eq!(remote_vars(&bed, "later"), Some(json!({"API_TOKEN": token})));

    // The key goes again: stalled, and the remote value stays as it was (nothing sent).
    let remove = json!({"data": {"token": null}});
    secrets.patch("vault", &PatchParams::default(), &Patch::Merge(&remove)).await.unwrap();
    bed.wait_for("later", "stalled again", stalled_with("SecretNotFound")).await;
    assert_eq!(remote_vars(&bed, "later"), Some(json!({"API_TOKEN": token})));
    bed.assert_no_secret_leaked_including(&[&token]).await;
}

/// The attacker has rights in its own namespace only, and names a Secret of another namespace
/// (there is no field to say which namespace: a Secret is always the Environment's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_of_another_namespace_is_never_read() {
    let mut bed = TestBed::without_operator("envsteal", ready_now()).await;
    let victim = format!("victim-{:08x}", fastrand::u32(..));
    bed.own_namespace(&victim).await;
    bed.operator_env.push(("KUBIYA_WATCH_NAMESPACES", format!("{},{victim}", bed.namespace)));
    bed.start_operator();
    let stolen = secret_value("stolen");
    put(&Api::namespaced(bed.client.clone(), &victim), "shared", &[("password", &stolen)]).await;

    // Something Ready, so that the leak scan below has a worker token to look for too.
    bed.create("fine", EnvironmentSpec::default()).await;
    bed.wait_for("fine", "Ready", is_ready).await;

    // Sent as raw JSON: the API server prunes what the schema does not have.
    let mallory = bed.tenant(&bed.namespace, &[]).await;
    let mine: Api<DynamicObject> =
        Api::namespaced_with(mallory, &bed.namespace, &ApiResource::erase::<Environment>(&()));
    let steal = json!({
        "apiVersion": "kubiya.ai/v1alpha1", "kind": "Environment", "metadata": {"name": "steal"},
        "spec": {"executionEnvironment": {
            "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "shared", "key": "password", "namespace": victim}}}],
            "envFrom": [{"secretRef": {"name": "shared", "namespace": victim}}],
        }},
    });
    let steal: DynamicObject = serde_json::from_value(steal).unwrap();
    mine.create(&PostParams::default(), &steal).await.expect("the attacker creates it");
    let env = bed.wait_for("steal", "Stalled SecretNotFound", stalled_with("SecretNotFound")).await;
    assert!(message(&env).contains("does not exist in this namespace"), "{}", message(&env));
    assert!(bed.remote_named("steal").is_none());
    assert!(
        bed.remote().iter().all(|e| !e.to_string().contains(&stolen)),
        "the value reached the control plane"
    );
    bed.assert_no_secret_leaked_including(&[&stolen]).await;
}
