//! A corpus of malformed and hostile manifests: each is rejected by the API server with a clear
//! message, or accepted and then reported in status with a clear message. None crashes or wedges
//! the operator, and nothing secret shows up anywhere.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kubiya_cp_emulator::Config as EmulatorConfig;
use kubiya_operator::resource::{Environment, EnvironmentSpec, Phase};
use serde_json::{Value, json};

use crate::support::{TestBed, condition, phase};

/// What must become of a manifest.
enum Outcome {
    /// The API server refuses it as invalid (422); its message contains this.
    Rejected(&'static str),
    /// Accepted and Ready.
    Ready,
    /// Accepted, then Stalled with this reason; the status message contains the text.
    Stalled(&'static str, &'static str),
}
use Outcome::*;

fn corpus() -> Vec<(&'static str, Value, Value, Outcome)> {
    let no = json!({});
    let long = "n".repeat(101);
    let many_tags: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let many_vars: serde_json::Map<String, Value> = (0..257).map(|i| (format!("V{i}"), json!("x"))).collect();
    let settings = |n: usize| -> serde_json::Map<String, Value> {
        (0..n).map(|i| (format!("k{i}"), json!({"v": i}))).collect()
    };
    let chars = |n: usize| "x".repeat(n);
    vec![
        ("tags-string", json!({"tags": "prod"}), no.clone(), Rejected("spec.tags")),
        ("tags-number", json!({"tags": [1, 2]}), no.clone(), Rejected("spec.tags")),
        ("tags-dup", json!({"tags": ["a", "a"]}), no.clone(), Rejected("spec.tags")),
        ("tags-too-many", json!({"tags": many_tags}), no.clone(), Rejected("spec.tags")),
        ("priority-string", json!({"priority": "high"}), no.clone(), Rejected("spec.priority")),
        ("priority-zero", json!({"priority": 0}), no.clone(), Rejected("spec.priority")),
        ("priority-eleven", json!({"priority": 11}), no.clone(), Rejected("spec.priority")),
        ("priority-float", json!({"priority": 1.5}), no.clone(), Rejected("spec.priority")),
        ("settings-string", json!({"settings": "x"}), no.clone(), Rejected("spec.settings")),
        ("settings-list", json!({"settings": [1]}), no.clone(), Rejected("spec.settings")),
        ("name-short", json!({"name": "x"}), no.clone(), Rejected("spec.name")),
        ("name-empty", json!({"name": ""}), no.clone(), Rejected("spec.name")),
        ("name-long", json!({"name": long}), no.clone(), Rejected("spec.name")),
        ("name-number", json!({"name": 42}), no.clone(), Rejected("spec.name")),
        ("y", json!({}), no.clone(), Rejected("metadata.name is used as the control-plane name")),
        ("policy-bogus", json!({"deletionPolicy": "Keep"}), no.clone(), Rejected("spec.deletionPolicy")),
        ("policy-number", json!({"deletionPolicy": 1}), no.clone(), Rejected("spec.deletionPolicy")),
        ("state-bogus", json!({"state": "On"}), no.clone(), Rejected("spec.state")),
        ("exec-list", json!({"executionEnvironment": []}), no.clone(), Rejected("spec.executionEnvironment")),
        (
            "envvar-digit",
            json!({"executionEnvironment": {"envVars": {"1A": "x"}}}),
            no.clone(),
            Rejected("envVars names must match"),
        ),
        (
            "envvar-dash",
            json!({"executionEnvironment": {"envVars": {"A-B": "x"}}}),
            no.clone(),
            Rejected("envVars names must match"),
        ),
        (
            "envvar-space",
            json!({"executionEnvironment": {"envVars": {"A B": "x"}}}),
            no.clone(),
            Rejected("envVars names must match"),
        ),
        (
            "envvar-unicode",
            json!({"executionEnvironment": {"envVars": {"ÄB": "x"}}}),
            no.clone(),
            Rejected("envVars names must match"),
        ),
        (
            "envvar-value-number",
            json!({"executionEnvironment": {"envVars": {"A": 1}}}),
            no.clone(),
            Rejected("envVars"),
        ),
        (
            "envvar-too-many",
            json!({"executionEnvironment": {"envVars": many_vars}}),
            no.clone(),
            Rejected("envVars"),
        ),
        (
            "secrets-dup",
            json!({"executionEnvironment": {"secrets": ["S", "S"]}}),
            no.clone(),
            Rejected("secrets"),
        ),
        (
            "env-and-envvars-same-name",
            json!({"executionEnvironment": {"envVars": {"P": "x"},
                "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}}),
            no.clone(),
            Rejected("named both in envVars and in env"),
        ),
        (
            "env-bad-name",
            json!({"executionEnvironment": {"env": [{"name": "A-B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}}),
            no.clone(),
            Rejected("env names must match"),
        ),
        (
            "env-twice",
            json!({"executionEnvironment": {"env": [
                {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "j"}}}]}}),
            no.clone(),
            Rejected("env"),
        ),
        (
            "env-no-key",
            json!({"executionEnvironment": {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}}),
            no.clone(),
            Rejected("key"),
        ),
        (
            "envfrom-bad-prefix",
            json!({"executionEnvironment": {"envFrom": [{"prefix": "1-", "secretRef": {"name": "s"}}]}}),
            no.clone(),
            Rejected("envFrom prefixes must match"),
        ),
        (
            "envfrom-missing-secret",
            json!({"executionEnvironment": {"envFrom": [{"secretRef": {"name": "nowhere"}}]}}),
            no.clone(),
            Stalled("SecretNotFound", "\"nowhere\""),
        ),
        ("worker-secret-string", json!({"workerSecret": "w"}), no.clone(), Rejected("spec.workerSecret")),
        (
            "worker-secret-empty",
            json!({"workerSecret": {"name": ""}}),
            no.clone(),
            Rejected("spec.workerSecret.name"),
        ),
        // Accepted: unknown fields are pruned, odd but valid values pass through.
        ("unknown-field", json!({"bogus": true, "description": "pruned"}), no.clone(), Ready),
        ("unicode-name", json!({"name": "ünïcødé 环境 ✓", "description": "名前"}), no.clone(), Ready),
        ("many-settings", json!({"settings": settings(256)}), no.clone(), Ready),
        ("too-many-settings", json!({"settings": settings(257)}), no.clone(), Rejected("spec.settings")),
        ("long-tag", json!({"tags": [chars(254)]}), no.clone(), Rejected("spec.tags[0]")),
        (
            "long-env-value",
            json!({"executionEnvironment": {"envVars": {"A": chars(32 * 1024 + 1)}}}),
            no.clone(),
            Rejected("spec.executionEnvironment.envVars.A"),
        ),
        (
            "huge-settings",
            json!({"settings": {"blob": chars(300 * 1024)}}),
            no.clone(),
            Stalled("InvalidSpec", "over the 256 KiB the operator reads"),
        ),
        ("paused-not-true", json!({}), json!({"kubiya.ai/paused": "yes"}), Ready),
        ("policy-annotation-bogus", json!({}), json!({"kubiya.ai/deletion-policy": "Bogus"}), Ready),
        (
            "adopt-not-a-uuid",
            json!({}),
            json!({"kubiya.ai/environment-id": "not-a-uuid"}),
            Stalled("AdoptionFailed", "kubiya.ai/environment-id"),
        ),
        (
            "adopt-missing",
            json!({}),
            json!({"kubiya.ai/environment-id": "11111111-1111-4111-8111-111111111111"}),
            Stalled("AdoptionFailed", "does not exist"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_of_bad_manifests_is_rejected_or_reported_and_never_wedges_the_operator() {
    let mut bed = TestBed::start(
        "badinput",
        EmulatorConfig { provisioning: Duration::ZERO, ..EmulatorConfig::default() },
    )
    .await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(bed.client.clone(), &bed.namespace, &ApiResource::erase::<Environment>(&()));
    let corpus = corpus();
    assert!(corpus.len() >= 30, "{} manifests", corpus.len());
    let mut accepted = Vec::new();
    for (name, spec, annotations, outcome) in corpus {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kubiya.ai/v1alpha1", "kind": "Environment",
            "metadata": {"name": name, "annotations": annotations}, "spec": spec,
        }))
        .unwrap();
        match (api.create(&PostParams::default(), &obj).await, outcome) {
            (Err(kube::Error::Api(s)), Rejected(text)) => {
                assert_eq!(s.code, 422, "{name}: {s:?}");
                assert!(s.message.contains(text), "{name}: {:?} does not mention {text:?}", s.message);
            }
            (Ok(_), Rejected(text)) => panic!("{name}: accepted, expected a rejection mentioning {text:?}"),
            (Ok(_), outcome) => accepted.push((name, outcome)),
            (Err(e), _) => panic!("{name}: rejected, expected acceptance: {e}"),
        }
    }
    for (name, outcome) in accepted {
        match outcome {
            Ready => {
                bed.wait_for(name, "Ready", |e| phase(e) == Some(Phase::Ready)).await;
            }
            Stalled(reason, text) => {
                let env = bed
                    .wait_for(name, reason, move |e| {
                        e.status.as_ref().is_some_and(|s| {
                            s.conditions
                                .iter()
                                .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == reason)
                        })
                    })
                    .await;
                let message = env.status.and_then(|s| s.message).unwrap_or_default();
                assert!(message.contains(text), "{name}: {message:?} does not mention {text:?}");
            }
            Rejected(_) => unreachable!(),
        }
    }

    // The control plane's own refusals end in Stalled with its message, internals redacted: a
    // rename onto a taken name is a 500 carrying SQL (and the failing row) from the real server.
    bed.create("first", EnvironmentSpec { name: Some("first-name".into()), ..Default::default() }).await;
    bed.create("second", EnvironmentSpec { name: Some("second-name".into()), ..Default::default() }).await;
    bed.wait_for("second", "Ready", |e| phase(e) == Some(Phase::Ready)).await;
    let patch = json!({"spec": {"name": "first-name"}});
    bed.envs.patch("second", &Default::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    let env = bed
        .wait_for("second", "Stalled on the rename", |e| condition(e, "Stalled").as_deref() == Some("True"))
        .await;
    let message = env.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("duplicate key value violates unique constraint"), "{message}");
    assert!(!message.contains("SQL") && !message.contains("Failing row"), "internals leaked: {message}");

    // Still alive and still working.
    assert!(bed.operator_alive(), "the operator died:\n{}", bed.operator_log());
    bed.create("after", EnvironmentSpec::default()).await;
    bed.wait_for("after", "Ready", |e| phase(e) == Some(Phase::Ready)).await;
    bed.assert_no_secret_leaked().await;
}
