//! The operator end to end with the real control-plane server behind it (`make conformance`
//! installs and starts one and sets KUBIYA_CONFORMANCE_REAL_URL).

use std::collections::BTreeMap;

use crate::support::{TestBed, is_ready};
use kube::api::{DeleteParams, Patch, PatchParams};
use kubiya_cp_emulator::Config as EmulatorConfig;
use kubiya_operator::resource::{DeletionPolicy, EnvironmentSpec, ExecutionEnvironment};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real control-plane server: run `make conformance`"]
async fn operator_creates_updates_and_deletes_on_the_real_server() {
    let url = std::env::var("KUBIYA_CONFORMANCE_REAL_URL").expect("KUBIYA_CONFORMANCE_REAL_URL");
    let url = url.trim_end_matches('/').to_owned();
    let mut bed = TestBed::without_operator("real", EmulatorConfig::default()).await;
    bed.control_plane_url = url.clone();
    let http = reqwest::Client::new();
    let auth = format!("UserKey {}", kubiya_cp_emulator::token(&bed.org));
    let get = |path: String| http.get(format!("{url}{path}")).header("Authorization", &auth).send();

    // Without a workflow engine the real server fails an organization's first environment; a list
    // first creates `default`, as on any organization in use, so ours is the second.
    assert_eq!(get("/api/v1/environments".into()).await.unwrap().status(), 200);
    bed.start_operator();

    let spec = EnvironmentSpec {
        description: Some("one".into()),
        tags: vec!["a".into()],
        execution_environment: Some(ExecutionEnvironment {
            env_vars: BTreeMap::from([("LOG_LEVEL".into(), "info".into())]),
            secrets: vec!["S".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    bed.create("real-env", spec).await;
    let env = bed.wait_for("real-env", "Ready", is_ready).await;
    let id = env.status.as_ref().and_then(|s| s.environment_id.clone()).expect("environment id");
    let remote: Value = get(format!("/api/v1/environments/{id}")).await.unwrap().json().await.unwrap();
    assert_eq!(remote["name"], "real-env");
    assert_eq!(remote["description"], "one");
    assert_eq!(remote["execution_environment"]["env_vars"], json!({"LOG_LEVEL": "info"}));
    assert_eq!(remote["settings"]["kubiya.ai/owner"]["uid"], json!(env.metadata.uid));

    let patch = json!({"spec": {"description": "two", "tags": ["a", "b"]}});
    let edited = bed.envs.patch("real-env", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let generation = edited.metadata.generation;
    bed.wait_for("real-env", "Ready at the new generation", move |e| {
        is_ready(e) && e.status.as_ref().and_then(|s| s.observed_generation) == generation
    })
    .await;
    let remote: Value = get(format!("/api/v1/environments/{id}")).await.unwrap().json().await.unwrap();
    assert_eq!(remote["description"], "two");
    assert_eq!(remote["tags"], json!(["a", "b"]));

    bed.envs.delete("real-env", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("real-env").await;
    assert_eq!(get(format!("/api/v1/environments/{id}")).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real control-plane server: run `make conformance`"]
async fn ownership_moves_on_the_real_server_orphan_release_take_back_and_a_paused_deletion() {
    let url = std::env::var("KUBIYA_CONFORMANCE_REAL_URL").expect("KUBIYA_CONFORMANCE_REAL_URL");
    let url = url.trim_end_matches('/').to_owned();
    let mut bed = TestBed::without_operator("real-owner", EmulatorConfig::default()).await;
    bed.control_plane_url = url.clone();
    let http = reqwest::Client::new();
    let auth = format!("UserKey {}", kubiya_cp_emulator::token(&bed.org));
    let get = |path: String| http.get(format!("{url}{path}")).header("Authorization", &auth).send();
    assert_eq!(get("/api/v1/environments".into()).await.unwrap().status(), 200);
    bed.start_operator();
    let orphan = || EnvironmentSpec { deletion_policy: DeletionPolicy::Orphan, ..Default::default() };

    // Orphan releases: the marker says so, on the real server's jsonb settings.
    let first = bed.create("mover", orphan()).await;
    let env = bed.wait_for("mover", "Ready", is_ready).await;
    let id = env.status.as_ref().and_then(|s| s.environment_id.clone()).expect("environment id");
    bed.envs.delete("mover", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("mover").await;
    let remote: Value = get(format!("/api/v1/environments/{id}")).await.unwrap().json().await.unwrap();
    let marker = &remote["settings"]["kubiya.ai/owner"];
    assert_eq!((marker["uid"].clone(), marker["released"].clone()), (json!(first.metadata.uid), json!(true)));

    // The same manifest takes it back (the real server's 409, then its list).
    let second = bed.create("mover", orphan()).await;
    let env = bed.wait_for("mover", "Ready", is_ready).await;
    assert_eq!(env.status.as_ref().and_then(|s| s.environment_id.as_deref()), Some(id.as_str()));
    let remote: Value = get(format!("/api/v1/environments/{id}")).await.unwrap().json().await.unwrap();
    assert_eq!(remote["settings"]["kubiya.ai/owner"]["uid"], json!(second.metadata.uid));
    assert!(remote["settings"]["kubiya.ai/owner"].get("released").is_none());
    bed.wait_event("mover", "Reclaimed").await;

    // A paused deletion holds; unpaused, it releases again.
    bed.annotate("mover", "kubiya.ai/paused", Some("true")).await;
    bed.envs.delete("mover", &DeleteParams::default()).await.unwrap();
    bed.wait_for("mover", "Deleting, paused", |e| {
        e.status.as_ref().and_then(|s| s.message.as_deref()).is_some_and(|m| m.contains("deletion paused"))
    })
    .await;
    bed.annotate("mover", "kubiya.ai/paused", None).await;
    bed.wait_gone("mover").await;
    let remote: Value = get(format!("/api/v1/environments/{id}")).await.unwrap().json().await.unwrap();
    assert_eq!(remote["settings"]["kubiya.ai/owner"]["released"], true);
    let deleted =
        http.delete(format!("{url}/api/v1/environments/{id}")).header("Authorization", &auth).send();
    assert_eq!(deleted.await.unwrap().status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real control-plane server: run `make conformance`"]
async fn two_organisations_through_connections_on_the_real_server() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    use kubiya_operator::resource::{
        Connection, ConnectionKind, ConnectionRef, ConnectionSpec, SecretKeyRef,
    };

    let url = std::env::var("KUBIYA_CONFORMANCE_REAL_URL").expect("KUBIYA_CONFORMANCE_REAL_URL");
    let url = url.trim_end_matches('/').to_owned();
    let mut bed = TestBed::without_operator("real-orgs", EmulatorConfig::default()).await;
    bed.control_plane_url = url.clone();
    // No key of its own: each Environment through its organisation's Connection.
    bed.operator_env.push(("KUBIYA_API_KEY", String::new()));
    bed.start_operator();
    let http = reqwest::Client::new();
    let orgs = [format!("{}-a", bed.org), format!("{}-b", bed.org)];
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let connections: Api<Connection> = Api::namespaced(bed.client.clone(), &bed.namespace);
    for org in &orgs {
        let key = kubiya_cp_emulator::token(org);
        // The real server fails an organization's first environment without a workflow engine; a
        // list creates `default` first, as on any organization in use.
        let listed =
            http.get(format!("{url}/api/v1/environments")).header("Authorization", format!("UserKey {key}"));
        assert_eq!(listed.send().await.unwrap().status(), 200);
        let secret = Secret {
            metadata: kube::api::ObjectMeta { name: Some(org.clone()), ..Default::default() },
            string_data: Some(BTreeMap::from([("api-key".to_owned(), key)])),
            ..Default::default()
        };
        secrets.create(&PostParams::default(), &secret).await.unwrap();
        let spec = ConnectionSpec {
            base_url: Some(url.clone()),
            api_key_secret_ref: SecretKeyRef { name: org.clone(), key: "api-key".into() },
            max_concurrent_requests: None,
        };
        connections.create(&PostParams::default(), &Connection::new(org, spec)).await.unwrap();
        let spec = EnvironmentSpec {
            connection_ref: Some(ConnectionRef { kind: ConnectionKind::Connection, name: org.clone() }),
            ..Default::default()
        };
        bed.create(&format!("env-of-{org}"), spec).await;
    }
    for (i, org) in orgs.iter().enumerate() {
        let env = bed.wait_for(&format!("env-of-{org}"), "Ready", is_ready).await;
        let id = env.status.as_ref().and_then(|s| s.environment_id.clone()).expect("environment id");
        let get = |who: &str| {
            http.get(format!("{url}/api/v1/environments/{id}"))
                .header("Authorization", format!("UserKey {}", kubiya_cp_emulator::token(who)))
                .send()
        };
        let own: Value = get(org).await.unwrap().json().await.unwrap();
        assert_eq!(own["organization_id"], org.as_str(), "in its own organisation");
        assert_eq!(get(&orgs[1 - i]).await.unwrap().status(), 404, "invisible to the other");
    }
    for org in &orgs {
        bed.envs.delete(&format!("env-of-{org}"), &DeleteParams::default()).await.unwrap();
        bed.wait_gone(&format!("env-of-{org}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real control-plane server: run `make conformance`"]
async fn an_organisation_exported_observed_then_managed_on_the_real_server() {
    use kube::api::ListParams;

    let url = std::env::var("KUBIYA_CONFORMANCE_REAL_URL").expect("KUBIYA_CONFORMANCE_REAL_URL");
    let url = url.trim_end_matches('/').to_owned();
    let mut bed = TestBed::without_operator("real-export", EmulatorConfig::default()).await;
    bed.control_plane_url = url.clone();
    let http = reqwest::Client::new();
    let auth = format!("UserKey {}", kubiya_cp_emulator::token(&bed.org));
    let list = || async {
        let all: Vec<Value> = http
            .get(format!("{url}/api/v1/environments"))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.into_iter().filter(|e| e["name"] != "default").collect::<Vec<_>>()
    };
    assert!(list().await.is_empty(), "a fresh organisation (the list made its default)");
    for body in [
        json!({"name": "Team A", "description": "d", "tags": ["b", "a"], "settings": {"n": 1.5, "x": "y", "deep": {"l": [1, {"k": "v"}]}},
               "execution_environment": {"env_vars": {"A": "1"}, "secrets": ["S"], "integration_ids": ["i"], "mcp_servers": {"m": {"c": "x"}}}}),
        json!({"name": "prod eu", "display_name": "Production EU"}),
        json!({"name": "Prod EU"}),
    ] {
        let created = http
            .post(format!("{url}/api/v1/environments"))
            .header("Authorization", &auth)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let before = list().await;

    let manifests =
        crate::support::cli::export(&bed, &["--observe", "--namespace", &bed.namespace.clone()]).await;
    assert_eq!(manifests.matches("kind: Environment").count(), 3, "{manifests}");
    crate::support::cli::kubectl_apply(&bed, &manifests);
    bed.start_operator();
    let synced = |e: &kubiya_operator::resource::Environment, status: &str| {
        e.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Synced" && c.status == status))
    };
    crate::support::wait_until("all 3 observed, in sync", || async {
        let all = bed.envs.list(&ListParams::default()).await.unwrap().items;
        all.len() == 3 && all.iter().all(|e| synced(e, "True"))
    })
    .await;
    assert_eq!(list().await, before, "observing changed the real server (updated_at included)");

    for e in bed.envs.list(&ListParams::default()).await.unwrap().items {
        let patch = json!({"spec": {"managementPolicy": "Full"}});
        bed.envs
            .patch(e.metadata.name.as_deref().unwrap(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    crate::support::wait_until("all 3 marked", || async {
        list().await.iter().all(|e| e["settings"].get("kubiya.ai/owner").is_some())
    })
    .await;
    let strip = |mut all: Vec<Value>| {
        for e in &mut all {
            let o = e.as_object_mut().unwrap();
            o.remove("updated_at");
            o.get_mut("settings").and_then(Value::as_object_mut).map(|s| s.remove("kubiya.ai/owner"));
        }
        all
    };
    assert_eq!(strip(list().await), strip(before), "managing wrote more than the owner marker");
}

/// Tenancy on the real server: one manifest on two clusters moves nothing until a take-over moves
/// it once (the first lets go, its worker Secret deleted), and a Connection whose Secret now holds
/// another organisation's key creates nothing there and deletes nothing here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real control-plane server: run `make conformance`"]
async fn tenancy_on_the_real_server_two_clusters_and_a_key_of_another_organisation() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::Api;
    use kubiya_operator::resource::ConnectionKind;

    use crate::support::cluster::PrivateCluster;
    use crate::support::connections::{connection, put_secret, using};
    use crate::support::{id_of, message, stalled_with};

    let url = std::env::var("KUBIYA_CONFORMANCE_REAL_URL").expect("KUBIYA_CONFORMANCE_REAL_URL");
    let url = url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    let list = |org: &str| {
        http.get(format!("{url}/api/v1/environments"))
            .header("Authorization", format!("UserKey {}", kubiya_cp_emulator::token(org)))
            .send()
    };
    let suffix = format!("{:08x}", fastrand::u32(..));
    let mut old = TestBed::without_operator("real-two", EmulatorConfig::default()).await;
    old.control_plane_url = url.clone();
    old.operator_env.push(("KUBIYA_CLUSTER_ID", format!("real-a-{suffix}")));
    // The real server fails an organization's first environment without a workflow engine.
    assert_eq!(list(&old.org).await.unwrap().status(), 200);
    old.start_operator();
    old.create("app", EnvironmentSpec { description: Some("blue".into()), ..Default::default() }).await;
    let id = id_of(&old.wait_for("app", "Ready", is_ready).await);

    let cluster = PrivateCluster::start_at("real-new-cluster", ["17253", "13189", "13190"]);
    let mut new = TestBed::on_cluster(cluster.kubeconfig(), "real-new", EmulatorConfig::default()).await;
    new.control_plane_url = url.clone();
    new.org = old.org.clone();
    new.operator_env.push(("KUBIYA_CLUSTER_ID", format!("real-b-{suffix}")));
    new.start_operator();
    let green = EnvironmentSpec { description: Some("green".into()), ..Default::default() };
    new.create_annotated("app", &[("kubiya.ai/environment-id", &id)], green).await;
    let env = new.wait_for("app", "Stalled with OwnedElsewhere", stalled_with("OwnedElsewhere")).await;
    assert!(message(&env).contains(&format!("managed from cluster real-a-{suffix}")), "{}", message(&env));
    let remote = |bed: &TestBed| {
        let (http, url, token) = (http.clone(), url.clone(), kubiya_cp_emulator::token(&bed.org));
        let id = id.clone();
        async move {
            let r = http
                .get(format!("{url}/api/v1/environments/{id}"))
                .header("Authorization", format!("UserKey {token}"));
            r.send().await.unwrap().json::<Value>().await.unwrap()
        }
    };
    assert_eq!(remote(&old).await["description"], "blue", "the second never writes its spec");
    new.annotate("app", "kubiya.ai/take-over-from", Some(&format!("real-a-{suffix}"))).await;
    assert_eq!(id_of(&new.wait_for("app", "Ready", is_ready).await), id);
    assert_eq!(remote(&old).await["description"], "green");
    old.annotate("app", "kubiya.ai/reconcile-requested-at", Some("after")).await;
    old.wait_for("app", "Stalled with OwnedElsewhere", stalled_with("OwnedElsewhere")).await;
    old.wait_event("app", "WorkerSecretDeleted").await;
    let secrets: Api<Secret> = Api::namespaced(old.client.clone(), &old.namespace);
    assert!(secrets.get_opt("app-worker").await.unwrap().is_none());
    assert_eq!(remote(&old).await["description"], "green", "the first never writes back");
    drop(new);
    drop(cluster);

    // A key of another organisation in a Connection's Secret.
    let org_b = format!("{}-b", old.org);
    assert_eq!(list(&org_b).await.unwrap().status(), 200);
    put_secret(&old, &old.namespace, "key", &kubiya_cp_emulator::token(&old.org)).await;
    connection(&old, "org", "key").await;
    old.create("through", using(ConnectionKind::Connection, "org")).await;
    let through = id_of(&old.wait_for("through", "Ready", is_ready).await);
    put_secret(&old, &old.namespace, "key", &kubiya_cp_emulator::token(&org_b)).await;
    old.wait_for("through", "Stalled with ConnectionChanged", stalled_with("ConnectionChanged")).await;
    let in_b: Vec<Value> = list(&org_b).await.unwrap().json().await.unwrap();
    assert!(in_b.iter().all(|e| e["name"] != "through"), "created again in the other organisation");
    put_secret(&old, &old.namespace, "key", &kubiya_cp_emulator::token(&old.org)).await;
    assert_eq!(id_of(&old.wait_for("through", "Ready again", is_ready).await), through);
}

/// A WorkerQueue on the real server: created with every field in the Environment's environment,
/// its worker Secret holding the server's own command, corrected after an edit outside, the
/// Environment's deletion held while it remains, then both deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real control-plane server: run `make conformance`"]
async fn a_worker_queue_on_the_real_server() {
    use crate::support::queues;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::Api;
    use kubiya_operator::resource::{Phase, WorkerQueueSpec};

    let url = std::env::var("KUBIYA_CONFORMANCE_REAL_URL").expect("KUBIYA_CONFORMANCE_REAL_URL");
    let url = url.trim_end_matches('/').to_owned();
    let mut bed = TestBed::without_operator("real-queue", EmulatorConfig::default()).await;
    bed.control_plane_url = url.clone();
    // The organisation's first environment fails without a workflow engine: `default` first.
    assert_eq!(bed.cp("GET", "/api/v1/environments", None).await.0, 200);
    bed.start_operator();
    bed.create("qenv", EnvironmentSpec::default()).await;
    let spec = WorkerQueueSpec {
        description: Some("real".into()),
        max_workers: Some(3),
        heartbeat_interval: 30,
        tags: vec!["gpu".into()],
        ..queues::of("qenv")
    };
    queues::create(&bed, "gpu", spec).await;
    let env = bed.wait_for("qenv", "Ready", is_ready).await;
    let q = queues::wait(&bed, "gpu", "Ready", queues::is_ready).await;
    let id = queues::id_of(&q);
    let (code, r) = queues::remote(&bed, &id).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["environment_id"].as_str(), env.status.as_ref().and_then(|s| s.environment_id.as_deref()));
    assert_eq!((r["max_workers"].clone(), r["heartbeat_interval"].clone()), (json!(3), json!(30)));
    assert_eq!(r["settings"]["kubiya.ai/owner"]["uid"], json!(q.metadata.uid));
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let data = secrets.get("gpu-worker").await.expect("worker Secret").data.unwrap_or_default();
    let command = String::from_utf8(data["KUBIYA_WORKER_COMMAND"].0.clone()).unwrap();
    assert_eq!(command, format!("kubiya worker start --queue-id {id}"), "the real server's command");
    assert_eq!(data["QUEUE_ID"].0, id.as_bytes());

    // Edited outside: put back (max_workers null is unlimited, sent as an explicit null).
    let (code, _) = bed
        .cp("PATCH", &format!("/api/v1/worker-queues/{id}"), Some(json!({"max_workers": null, "tags": []})))
        .await;
    assert_eq!(code, 200);
    let patch = json!({"metadata": {"annotations": {"kubiya.ai/reconcile-requested-at": "1"}}});
    queues::api(&bed).patch("gpu", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    bed.wait_event("gpu", "DriftCorrected").await;
    let (_, r) = queues::remote(&bed, &id).await;
    assert_eq!((r["max_workers"].clone(), r["tags"].clone()), (json!(3), json!(["gpu"])));

    // The Environment waits for its queue; then both go, on the real server too.
    bed.envs.delete("qenv", &DeleteParams::default()).await.unwrap();
    bed.wait_for("qenv", "held by its queue", |e| {
        e.status.as_ref().is_some_and(|s| {
            s.phase == Some(Phase::Deleting) && s.message.as_deref().is_some_and(|m| m.contains("gpu"))
        })
    })
    .await;
    queues::api(&bed).delete("gpu", &DeleteParams::default()).await.unwrap();
    queues::wait_gone(&bed, "gpu").await;
    bed.wait_gone("qenv").await;
    assert_eq!(queues::remote(&bed, &id).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real control-plane server: run `make conformance`"]
async fn env_vars_from_a_secret_on_the_real_server() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::Api;

    let url = std::env::var("KUBIYA_CONFORMANCE_REAL_URL").expect("KUBIYA_CONFORMANCE_REAL_URL");
    let mut bed = TestBed::without_operator("real-envsecret", EmulatorConfig::default()).await;
    bed.control_plane_url = url.trim_end_matches('/').to_owned();
    // The organisation's first environment fails without a workflow engine: `default` first.
    assert_eq!(bed.cp("GET", "/api/v1/environments", None).await.0, 200);
    bed.operator_env.push(("KUBIYA_RESYNC_INTERVAL", "1h".into()));
    bed.start_operator();
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let put = |value: String| {
        let secrets = secrets.clone();
        async move {
            let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                "stringData": {"password": value, "HOST": "db.internal"}});
            let params = PatchParams::apply("test").force();
            secrets.patch("db", &params, &Patch::Apply(&secret)).await.expect("apply Secret");
        }
    };
    let (first, second) =
        (format!("pw-{:016x}", fastrand::u64(..)), format!("pw-{:016x}", fastrand::u64(..)));
    put(first.clone()).await;
    let spec: EnvironmentSpec = serde_json::from_value(json!({"executionEnvironment": {
        "envVars": {"LOG_LEVEL": "info"},
        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
        "envFrom": [{"secretRef": {"name": "db"}, "prefix": "DB_"}],
    }}))
    .unwrap();
    bed.create("real-envsecret", spec).await;
    let env = bed.wait_for("real-envsecret", "Ready", is_ready).await;
    let id = env.status.as_ref().and_then(|s| s.environment_id.clone()).expect("environment id");
    let path = format!("/api/v1/environments/{id}");
    let vars = || async { bed.cp("GET", &path, None).await.1["execution_environment"]["env_vars"].clone() };
    assert_eq!(
        vars().await,
        json!({"LOG_LEVEL": "info", "DB_PASSWORD": first, "DB_password": first, "DB_HOST": "db.internal"})
    );

    put(second.clone()).await;
    crate::support::wait_until("the new value on the real server", || async {
        vars().await["DB_PASSWORD"] == second.as_str()
    })
    .await;
    bed.envs.delete("real-envsecret", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("real-envsecret").await;
    let log = bed.operator_log();
    assert!(!log.contains(&first) && !log.contains(&second), "a value in the operator's log");
}

/// The real worker, run with exactly the env of the pod the operator renders for a WorkerQueue's
/// `spec.workers` (the key resolved from the namespace's Secret, as the kubelet would), against
/// the real server with Redis and a Temporal dev server (`make conformance` starts a second
/// server with both, sets KUBIYA_CONFORMANCE_WORKERS_URL and KUBIYA_CONFORMANCE_WORKER). The test
/// plays the Deployment controller. The worker registers, and the queue is Ready only once the
/// server counts its heartbeat; a deletion drains it, and the server then refuses to delete the
/// queue while the heartbeat is fresh (150 s), which the queue says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real control-plane server and worker: run `make conformance`"]
async fn the_real_worker_runs_as_rendered_and_registers_with_the_real_server() {
    use crate::support::{queues, wait_until_within};
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::Api;
    use kubiya_operator::resource::{SecretKeySelector, WorkerQueueSpec, Workers};
    use std::time::Duration;

    let url = std::env::var("KUBIYA_CONFORMANCE_WORKERS_URL").expect("KUBIYA_CONFORMANCE_WORKERS_URL");
    let worker_bin = std::env::var("KUBIYA_CONFORMANCE_WORKER").expect("KUBIYA_CONFORMANCE_WORKER");
    let mut bed = TestBed::without_operator("real-worker", EmulatorConfig::default()).await;
    bed.control_plane_url = url.trim_end_matches('/').to_owned();
    assert_eq!(bed.cp("GET", "/api/v1/environments", None).await.0, 200);
    bed.start_operator();
    bed.create("wenv", EnvironmentSpec::default()).await;
    bed.wait_for("wenv", "Ready", is_ready).await;
    // The workers' own key: of the same organisation, never the operator's.
    let key = kubiya_cp_emulator::token_with_claims(
        &json!({"organization": bed.org, "email": format!("workers@{}.test", bed.org)}),
    );
    crate::support::connections::put_secret(&bed, &bed.namespace.clone(), "worker-key", &key).await;
    // A Temporal without TLS is the worker's to know (it decides TLS from its own TEMPORAL_HOST);
    // this server has no WebSocket route.
    let template = json!({"spec": {"containers": [{"name": "worker", "env": [
        {"name": "TEMPORAL_HOST", "value": "temporal:dev-server-without-tls"},
        {"name": "WEBSOCKET_ENABLED", "value": "false"},
        {"name": "KUBIYA_LOG_FORMAT", "value": "text"}]}]}});
    let spec = WorkerQueueSpec {
        heartbeat_interval: 10,
        workers: Some(Workers {
            replicas: 1,
            api_key_secret_ref: Some(SecretKeySelector { name: "worker-key".into(), key: "api-key".into() }),
            template: template.as_object().cloned(),
            ..Default::default()
        }),
        ..queues::of("wenv")
    };
    queues::create(&bed, "real", spec).await;
    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), &bed.namespace);
    wait_until_within("the workers' Deployment", Duration::from_secs(60), || async {
        deployments.get_opt("real-workers").await.ok().flatten().is_some()
    })
    .await;
    let d = deployments.get("real-workers").await.unwrap();
    let id = queues::id_of(&queues::api(&bed).get("real").await.unwrap());

    // The pod's env, as the kubelet gives it: secretKeyRef resolved from the namespace's Secret.
    let pod = d.spec.clone().unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let mut env = Vec::new();
    for v in container.env.clone().unwrap_or_default() {
        let value = match (v.value, v.value_from.and_then(|f| f.secret_key_ref)) {
            (Some(value), _) => value,
            (None, Some(r)) => {
                let data = secrets.get(&r.name).await.expect("the key Secret").data.unwrap_or_default();
                String::from_utf8(data[&r.key].0.clone()).unwrap()
            }
            (None, None) => panic!("{} has no value", v.name),
        };
        env.push((v.name, value));
    }
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    eprintln!("the rendered worker env: {names:?}; workingDir {:?}", container.working_dir);
    let dir = std::env::temp_dir().join(format!("real-worker-{}", bed.namespace));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("worker.log");
    let mut worker = std::process::Command::new(&worker_bin)
        .env_clear()
        .envs(env.iter().map(|(n, v)| (n, v)))
        // What an image brings: a PATH, a HOME; the pod's /tmp is an emptyDir.
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &dir)
        .env("TMPDIR", &dir)
        .current_dir(&dir)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::from(std::fs::File::options().append(true).open(&log).unwrap()))
        .spawn()
        .expect("start the real worker");
    // Its pod runs: what the Deployment controller would report.
    let running = json!({"status": {"observedGeneration": d.metadata.generation, "replicas": 1,
        "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
    deployments.patch_status("real-workers", &PatchParams::default(), &Patch::Merge(&running)).await.unwrap();

    let registered = || async {
        let q = queues::api(&bed).get("real").await.unwrap();
        queues::is_ready(&q) && q.status.and_then(|s| s.workers).is_some_and(|w| w.registered == 1)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while !registered().await {
        if let Some(exit) = worker.try_wait().unwrap() {
            panic!("the real worker exited ({exit}):\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not register: queue {:?}\nworker log:\n{}",
            queues::api(&bed).get("real").await.unwrap().status,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (code, r) = queues::remote(&bed, &id).await;
    assert_eq!((code, r["active_workers"].clone()), (200, json!(1)), "{r}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains(&key), "the worker's key in its own log");
    eprintln!("the real worker's log:\n{}", text.lines().take(60).collect::<Vec<_>>().join("\n"));

    // Deleted: drained first; the worker stops as its pod would (SIGTERM), and the server refuses
    // to delete the queue while its last heartbeat is fresh.
    queues::api(&bed).delete("real", &DeleteParams::default()).await.unwrap();
    queues::wait(&bed, "real", "draining", queues::says("Reconciling", "Draining")).await;
    // SIGTERM, as the kubelet stops a pod.
    let _ = std::process::Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status();
    let exit = worker.wait().unwrap();
    eprintln!("the real worker after SIGTERM: {exit}");
    let stopped =
        json!({"status": {"replicas": 0, "updatedReplicas": 0, "readyReplicas": 0, "availableReplicas": 0}});
    deployments.patch_status("real-workers", &PatchParams::default(), &Patch::Merge(&stopped)).await.unwrap();
    wait_until_within("the Deployment deleted", Duration::from_secs(60), || async {
        deployments.get_opt("real-workers").await.ok().flatten().is_none()
    })
    .await;
    let q = queues::wait(
        &bed,
        "real",
        "refused while the heartbeat is fresh",
        queues::says("Reconciling", "DeletionRefused"),
    )
    .await;
    assert!(queues::message(&q).contains("active"), "{}", queues::message(&q));
    let orphan = json!({"metadata": {"annotations": {"kubiya.ai/deletion-policy": "Orphan"}}});
    queues::api(&bed).patch("real", &PatchParams::default(), &Patch::Merge(&orphan)).await.unwrap();
    queues::wait_gone(&bed, "real").await;
}
