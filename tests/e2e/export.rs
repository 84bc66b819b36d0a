//! Bringing an existing organisation under GitOps: `kubiya-operator export --observe`, `kubectl
//! apply`, every environment observed with nothing written; then managed (`Full`) with nothing
//! written but the owner marker.

use std::collections::BTreeMap;

use kube::api::{ListParams, Patch, PatchParams};
use kubiya_operator::resource::Environment;
use serde_json::{Value, json};

use crate::support::cli::{export, kubectl_apply, try_export};
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

/// An environment made outside Kubernetes with a password among its env vars: the export meant
/// for Git carries no value of it. Without `--secrets-out` it refuses and prints nothing; with
/// it, the value goes to a Secret manifest in that file (0600) and the manifest references it;
/// applied together, observing finds nothing drifted and managing writes only the owner marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_never_writes_a_password_into_the_manifests() {
    let mut bed = TestBed::without_operator("export-secrets", ready_now()).await;
    let password = format!("hunter2-{:016x}", fastrand::u64(..));
    let body = json!({"name": "db", "execution_environment": {"env_vars": {"DB_PASSWORD": password, "LOG_LEVEL": "info"}}});
    let (code, _) = bed.cp("POST", "/api/v1/environments", Some(body)).await;
    assert_eq!(code, 201);
    let namespace = bed.namespace.clone();

    let (ok, stdout, stderr) = try_export(&bed, &["--observe", "--namespace", &namespace]).await;
    assert!(!ok && stdout.is_empty(), "refused, nothing printed: {stdout}");
    assert!(stderr.contains("DB_PASSWORD of \"db\"") && stderr.contains("--secrets-out"), "{stderr}");
    assert!(!stderr.contains(&password), "{stderr}");

    let file = std::env::temp_dir().join(format!("{namespace}-secrets.yaml"));
    let out = file.to_string_lossy().into_owned();
    let (ok, manifests, stderr) =
        try_export(&bed, &["--observe", "--namespace", &namespace, "--secrets-out", &out]).await;
    assert!(ok, "{stderr}");
    assert!(!manifests.contains(&password) && !stderr.contains(&password), "{manifests}\n{stderr}");
    assert!(manifests.contains("LOG_LEVEL: info") && manifests.contains("name: db-env"), "{manifests}");
    assert!(stderr.contains(&format!("moved DB_PASSWORD of \"db\" to Secret db-env in {out}")), "{stderr}");
    let secrets = std::fs::read_to_string(&file).unwrap();
    assert!(secrets.contains(&password) && secrets.contains("kind: Secret"), "{secrets}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    let writes_before = writes(&bed);
    kubectl_apply(&bed, &secrets);
    kubectl_apply(&bed, &manifests);
    let _ = std::fs::remove_file(&file);
    bed.start_operator();
    let env = bed.wait_for("db", "observed", |e| condition(e, "Synced").is_some()).await;
    assert_eq!(condition(&env, "Synced").map(|c| c.0), Some("True".into()), "{:?}", env.status);
    let patch = json!({"spec": {"managementPolicy": "Full"}});
    bed.envs.patch("db", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_until("marked", || async {
        bed.remote_named("db").is_some_and(|r| r["settings"].get("kubiya.ai/owner").is_some())
    })
    .await;
    bed.wait_for("db", "settled", |e| {
        e.status.as_ref().and_then(|s| s.observed_generation) == e.metadata.generation
            && condition(e, "Ready").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(writes(&bed) - writes_before, 1, "only the owner marker");
    let remote = bed.remote_named("db").unwrap();
    assert_eq!(remote["execution_environment"]["env_vars"]["DB_PASSWORD"], password.as_str());
    bed.assert_no_secret_leaked_including(&[&password]).await;
}
