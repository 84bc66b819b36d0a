//! Bringing an existing organisation under GitOps: `kubiya-operator export --observe`, `kubectl
//! apply`, every environment observed with nothing written; then managed (`Full`) with nothing
//! written but the owner marker.

use std::collections::BTreeMap;

use kube::api::{ListParams, Patch, PatchParams};
use kubiya_operator::resource::Environment;
use serde_json::{Value, json};

use crate::support::cli::{export, kubectl_apply};
use crate::support::{TestBed, ready_now, wait_until};

/// The organisation: every kind of field, names that are not DNS names, two that are the same
/// once lowercased, one in error, one disabled. 20 in all.
fn bodies() -> Vec<Value> {
    let mut v = vec![
        json!({"name": "full", "display_name": "Full One", "description": "every field", "tags": ["b", "a"],
               "settings": {"region": "eu", "nested": {"list": [1, {"x": "y"}], "flag": true, "n": 1.5}},
               "execution_environment": {"env_vars": {"LOG_LEVEL": "debug", "_X": ""}, "secrets": ["S2", "S1"],
                   "integration_ids": ["i-1"], "mcp_servers": {"fs": {"command": "mcp-fs", "args": ["-v"]}}}}),
        json!({"name": "Team A"}),
        json!({"name": "Prod EU"}),
        json!({"name": "prod eu"}),
        json!({"name": "with.dots_and_underscores"}),
        json!({"name": "Ünïcödé name"}),
        json!({"name": "9 starts with a digit"}),
        json!({"name": "broken", "description": "will be in error"}),
        json!({"name": "disabled"}),
        json!({"name": "only-tags", "tags": ["x"]}),
        json!({"name": "only-settings", "settings": {"a": 1}}),
        json!({"name": "only-env", "execution_environment": {"env_vars": {"A": "1"}}}),
        json!({"name": "only-mcp", "execution_environment": {"mcp_servers": {"m": {}}}}),
        json!({"name": "display-differs", "display_name": "Something Else"}),
    ];
    for i in v.len()..20 {
        v.push(json!({"name": format!("plain-{i}"), "description": format!("number {i}")}));
    }
    v
}

fn writes(bed: &TestBed) -> u64 {
    bed.calls("POST /api/v1/environments")
        + bed.calls("PATCH /api/v1/environments/{id}")
        + bed.calls("DELETE /api/v1/environments/{id}")
}

/// The remote environments by id, without what changes on every write.
fn snapshot(bed: &TestBed) -> BTreeMap<String, Value> {
    bed.remote()
        .into_iter()
        .filter(|e| e["name"] != "default")
        .map(|mut e| {
            let id = e["id"].as_str().unwrap_or_default().to_owned();
            if let Some(o) = e.as_object_mut() {
                o.remove("updated_at");
                if let Some(s) = o.get_mut("settings").and_then(Value::as_object_mut) {
                    s.remove("kubiya.ai/owner");
                }
            }
            (id, e)
        })
        .collect()
}

fn condition(e: &Environment, type_: &str) -> Option<(String, String)> {
    let c = e.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_organisation_is_observed_with_nothing_written_then_managed_with_only_markers() {
    let mut bed = TestBed::without_operator("export", ready_now()).await;
    for body in bodies() {
        let (code, created) = bed.cp("POST", "/api/v1/environments", Some(body)).await;
        assert_eq!(code, 201);
        match created["name"].as_str() {
            Some("broken") => {
                assert!(bed.emulator.set_status(
                    &bed.org,
                    created["id"].as_str().unwrap(),
                    "error",
                    Some("quota exceeded")
                ));
            }
            Some("disabled") => {
                assert!(bed.emulator.set_status(&bed.org, created["id"].as_str().unwrap(), "inactive", None))
            }
            _ => {}
        }
    }

    let namespace = bed.namespace.clone();
    let manifests = export(&bed, &["--observe", "--namespace", &namespace]).await;
    assert_eq!(export(&bed, &["--observe", "--namespace", &namespace]).await, manifests, "the same twice");
    assert_eq!(manifests.matches("kind: Environment").count(), 20, "every one but `default`:\n{manifests}");
    let json = export(&bed, &["--observe", "--namespace", &namespace, "-o", "json"]).await;
    let list: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(20));

    let before = snapshot(&bed);
    let writes_before = writes(&bed);
    kubectl_apply(&bed, &manifests);
    bed.start_operator();
    let observed = |e: &Environment| {
        e.status.as_ref().is_some_and(|s| s.environment_id.is_some()) && condition(e, "Synced").is_some()
    };
    wait_until("all 20 observed", || async {
        let all = bed.envs.list(&ListParams::default()).await.unwrap().items;
        all.len() == 20 && all.iter().all(observed)
    })
    .await;
    let all = bed.envs.list(&ListParams::default()).await.unwrap().items;
    for e in &all {
        let name = e.metadata.name.clone().unwrap_or_default();
        assert_eq!(
            condition(e, "Synced").map(|c| c.0),
            Some("True".into()),
            "{name} drifted: {:?}",
            e.status
        );
        let remote = e.status.as_ref().and_then(|s| s.remote_status.clone()).unwrap_or_default();
        let want = match remote.as_str() {
            "error" => ("False", "RemoteError"),
            "inactive" => ("False", "Inactive"),
            _ => ("True", "Ready"),
        };
        assert_eq!(condition(e, "Ready"), Some((want.0.into(), want.1.into())), "{name}");
    }
    assert_eq!(writes(&bed), writes_before, "observing wrote to the control plane");
    assert_eq!(snapshot(&bed), before);

    // Managed: only the owner marker is written, one PATCH each.
    for e in &all {
        let patch = json!({"spec": {"managementPolicy": "Full"}});
        bed.envs
            .patch(e.metadata.name.as_deref().unwrap(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    wait_until("all 20 marked", || async {
        let remote = bed.remote();
        remote
            .iter()
            .filter(|r| r["name"] != "default")
            .all(|r| r["settings"].get("kubiya.ai/owner").is_some())
    })
    .await;
    wait_until("all 20 settled at the new generation", || async {
        bed.envs.list(&ListParams::default()).await.unwrap().items.iter().all(|e| {
            e.status.as_ref().and_then(|s| s.observed_generation) == e.metadata.generation
                && condition(e, "Reconciling").is_some_and(|c| c.0 == "False")
        })
    })
    .await;
    assert_eq!(writes(&bed) - writes_before, 20, "one PATCH each: the owner marker");
    assert_eq!(snapshot(&bed), before, "no other field changed");
    let adopted = bed.events("full").await;
    assert!(adopted.iter().any(|(r, _)| r == "Adopted"), "{adopted:?}");
}
