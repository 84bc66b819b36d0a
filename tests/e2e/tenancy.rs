//! Trust between tenants, each tried as its attacker: a user with rights in one namespace only
//! (the test API server's tenant authorizer; the admin impersonates the tenant). The operator
//! holds powerful keys and acts for every namespace; it must never act for one tenant against
//! another: no worker token handed out by Observe, no Secret sent to a URL the administrator did
//! not allow, nothing created or deleted when a connection now leads elsewhere, no connection
//! let go before every Environment is known, and nothing a namespace released reclaimed by a
//! namespace of the same name created later.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kubiya_cp_emulator::Emulator;
use kubiya_operator::resource::{
    Connection, ConnectionKind, ConnectionSpec, DeletionPolicy, Environment, EnvironmentSpec,
    ManagementPolicy, SecretKeyRef,
};
use serde_json::json;

use crate::support::connections::{
    condition_is, connection, keyless, put_secret, using, wait_connection, wait_connection_in,
};
use crate::support::{
    TestBed, create_namespace, id_of, is_ready, message, ready_now, stalled_with, wait_until,
};

/// A namespace name of this test's own, not containing the bed's (so that a message that names
/// one cannot pass for naming the other).
fn another_namespace(prefix: &str) -> String {
    format!("{prefix}-{:08x}", fastrand::u32(..))
}

/// A test bed whose operator watches its namespace and a second one, of the name returned.
async fn with_second_namespace(name: &str, prefix: &str) -> (TestBed, String) {
    let mut bed = TestBed::without_operator(name, ready_now()).await;
    let second = another_namespace(prefix);
    bed.own_namespace(&second).await;
    bed.operator_env.push(("KUBIYA_WATCH_NAMESPACES", format!("{},{second}", bed.namespace)));
    bed.start_operator();
    (bed, second)
}

fn forbidden<T: std::fmt::Debug>(answer: Result<T, kube::Error>) -> bool {
    matches!(answer, Err(kube::Error::Api(s)) if s.code == 403)
}

/// Observe found the environment another namespace manages, by its name: it must not publish
/// that environment's worker token here, nor say whose or which it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observing_cannot_hand_out_another_namespaces_worker_token() {
    let (bed, team) = with_second_namespace("observe-attack", "team").await;
    bed.create("production", EnvironmentSpec { name: Some("PRODUCTION".into()), ..Default::default() }).await;
    let id = id_of(&bed.wait_for("production", "Ready", is_ready).await);

    // The attacker: everything of its own namespace but Secrets, nothing elsewhere.
    let mallory = bed.tenant(&team, &["secrets"]).await;
    assert!(forbidden(Api::<Secret>::namespaced(mallory.clone(), &team).list(&Default::default()).await));
    assert!(forbidden(
        Api::<Environment>::namespaced(mallory.clone(), &bed.namespace).list(&Default::default()).await
    ));
    let peek = Environment::new(
        "peek",
        EnvironmentSpec {
            name: Some("PRODUCTION".into()),
            management_policy: ManagementPolicy::Observe,
            ..Default::default()
        },
    );
    Api::<Environment>::namespaced(mallory, &team).create(&PostParams::default(), &peek).await.expect("peek");

    let theirs: Api<Environment> = Api::namespaced(bed.client.clone(), &team);
    let env =
        bed.wait_for_in(&theirs, "peek", "Stalled with OwnedElsewhere", stalled_with("OwnedElsewhere")).await;
    let text = message(&env);
    assert!(text.contains("managed by another resource of this cluster"), "{text}");
    assert!(!text.contains(&bed.namespace) && !text.contains(&id) && !text.contains("production"), "{text}");
    let status = serde_json::to_string(&env.status).unwrap();
    assert!(!status.contains(&id), "the owner's environment id in the attacker's status: {status}");
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &team);
    assert!(
        secrets.get_opt("peek-worker").await.unwrap().is_none(),
        "a worker Secret was published to the attacker"
    );
    let tokens = bed.emulator.worker_tokens(&bed.org);
    assert!(!tokens.is_empty());
    for s in secrets.list(&Default::default()).await.unwrap().items {
        let data = serde_json::to_string(&s.data).unwrap();
        assert!(
            !tokens.iter().any(|t| data.contains(t.as_str())),
            "a worker token in Secret {:?}",
            s.metadata.name
        );
    }
    assert!(is_ready(&bed.envs.get("production").await.unwrap()), "the owner is untouched");
    bed.assert_no_secret_leaked().await;
}

/// A Connection naming an unrelated Secret and a URL of its choosing: the Secret is never read,
/// nothing is sent there, and the Connection says which flag would allow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_sends_no_secret_to_a_control_plane_not_allowed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    let (bed, team) = with_second_namespace("url-attack", "team").await;
    // An unrelated Secret of the attacker's namespace, which the attacker may not read.
    put_secret(&bed, &team, "registry", "registry-password-hunter2").await;
    let mallory = bed.tenant(&team, &["secrets"]).await;
    assert!(forbidden(Api::<Secret>::namespaced(mallory.clone(), &team).get("registry").await));
    let spec = ConnectionSpec {
        base_url: Some(format!("http://127.0.0.1:{port}")),
        api_key_secret_ref: SecretKeyRef { name: "registry".into(), key: "api-key".into() },
        max_concurrent_requests: None,
    };
    let connections: Api<Connection> = Api::namespaced(mallory, &team);
    connections
        .create(&PostParams::default(), &Connection::new("exfil", spec))
        .await
        .expect("the attacker may create Connections");

    let c = wait_connection_in(&bed, &team, "exfil", "Stalled with UrlNotAllowed", |c| {
        c.status.as_ref().is_some_and(|s| condition_is(&s.conditions, "Stalled", "True", "UrlNotAllowed"))
    })
    .await;
    let text = c.status.and_then(|s| s.message).unwrap_or_default();
    assert!(text.contains("--allowed-control-planes") && text.contains("not read"), "{text}");
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "the operator connected to the attacker's URL");
    assert!(!bed.operator_log().contains("hunter2"));
}

/// A connection whose key now answers for another organisation, or whose baseUrl now names
/// another control plane: its Environments are Stalled, nothing is created there and nothing is
/// deleted here; putting the old key or URL back heals them without an edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_now_leads_elsewhere_creates_and_deletes_nothing() {
    let other_plane = Emulator::start(ready_now()).await.unwrap();
    let mut bed = TestBed::without_operator("moved", ready_now()).await;
    bed.operator_env.push(("KUBIYA_API_KEY", String::new()));
    bed.operator_env.push(("KUBIYA_ALLOWED_CONTROL_PLANES", other_plane.base_url()));
    bed.start_operator();
    let (org_a, org_b) = (bed.org.clone(), format!("{}-b", bed.org));
    put_secret(&bed, &bed.namespace, "key", &kubiya_cp_emulator::token(&org_a)).await;
    connection(&bed, "org", "key").await;
    for name in ["e1", "e2"] {
        bed.create(name, using(ConnectionKind::Connection, "org")).await;
    }
    let ids: Vec<String> =
        [bed.wait_for("e1", "Ready", is_ready).await, bed.wait_for("e2", "Ready", is_ready).await]
            .iter()
            .map(id_of)
            .collect();
    let names = |org: &str| {
        let mut names: Vec<String> = bed
            .emulator
            .environments(org)
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    };

    // Another organisation's key in the Secret.
    put_secret(&bed, &bed.namespace, "key", &kubiya_cp_emulator::token(&org_b)).await;
    for name in ["e1", "e2"] {
        let env =
            bed.wait_for(name, "Stalled with ConnectionChanged", stalled_with("ConnectionChanged")).await;
        assert!(message(&env).contains(&format!("organisation {org_b}")), "{}", message(&env));
    }
    assert!(names(&org_b).is_empty(), "created again in the other organisation: {:?}", names(&org_b));
    assert_eq!(names(&org_a), ["e1", "e2"], "deleted in the first");
    // The old key back: healed, the same environments.
    put_secret(&bed, &bed.namespace, "key", &kubiya_cp_emulator::token(&org_a)).await;
    for (name, id) in ["e1", "e2"].iter().zip(&ids) {
        let env = bed.wait_for(name, "Ready again", is_ready).await;
        assert_eq!(&id_of(&env), id);
    }

    // Another control plane, allowed, in the Connection.
    let connections: Api<Connection> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let to = |url: &str| json!({"spec": {"baseUrl": url}});
    connections
        .patch("org", &PatchParams::default(), &Patch::Merge(&to(&other_plane.base_url())))
        .await
        .unwrap();
    let env = bed.wait_for("e1", "Stalled with ConnectionChanged", stalled_with("ConnectionChanged")).await;
    assert!(message(&env).contains(&other_plane.base_url()), "{}", message(&env));
    assert!(other_plane.environments(&org_a).is_empty(), "created on the other control plane");
    connections
        .patch("org", &PatchParams::default(), &Patch::Merge(&to(&bed.control_plane_url)))
        .await
        .unwrap();
    let env = bed.wait_for("e1", "Ready again", is_ready).await;
    assert_eq!(id_of(&env), ids[0]);
    assert_eq!(names(&org_a), ["e1", "e2"]);
    let s = bed.envs.get("e1").await.unwrap().status.unwrap();
    assert_eq!(s.organization.as_deref(), Some(org_a.as_str()));
    assert_eq!(s.control_plane.as_deref(), Some(bed.control_plane_url.as_str()));
}

/// A Connection in use, being deleted, across a restart of the operator: the new leader counts
/// its users only once every Environment cache has synced, so it keeps the finalizer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_in_use_keeps_its_finalizer_across_a_leader_start() {
    let mut bed = keyless("in-use-restart").await;
    put_secret(&bed, &bed.namespace, "k", &kubiya_cp_emulator::token(&bed.org)).await;
    connection(&bed, "team-b", "k").await;
    bed.create("user", using(ConnectionKind::Connection, "team-b")).await;
    bed.wait_for("user", "Ready", is_ready).await;
    let api: Api<Connection> = Api::namespaced(bed.client.clone(), &bed.namespace);
    api.delete("team-b", &DeleteParams::default()).await.unwrap();
    wait_connection(&bed, "team-b", "held", |c| {
        c.status.as_ref().is_some_and(|s| condition_is(&s.conditions, "Stalled", "True", "InUse"))
    })
    .await;

    bed.kill_operator().await;
    bed.start_operator();
    // A pass of the new leader over the Environment: by then its cache has synced, and the
    // connection's first passes are behind it.
    bed.annotate("user", "kubiya.ai/reconcile-requested-at", Some("after-restart")).await;
    let env = bed
        .wait_for("user", "handled by the new leader", |e| {
            e.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some("after-restart")
        })
        .await;
    assert!(is_ready(&env), "its connection was let go: {}", message(&env));
    let c =
        api.get_opt("team-b").await.unwrap().expect("the Connection in use was let go at the leader's start");
    assert!(c.metadata.finalizers.unwrap_or_default().iter().any(|f| f == "kubiya.ai/connection"));
    // Once its user is gone, it goes.
    bed.envs.delete("user", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("user").await;
    wait_until("the Connection to go", || async { api.get_opt("team-b").await.unwrap().is_none() }).await;
}

/// A namespace deleted and created again (for someone else, perhaps) under the same name is
/// another namespace: what the old one's resource released is not taken back by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_created_again_does_not_take_back_what_the_old_one_released() {
    let (bed, reborn) = with_second_namespace("reborn", "reborn").await;
    let envs: Api<Environment> = Api::namespaced(bed.client.clone(), &reborn);
    let spec = || EnvironmentSpec { deletion_policy: DeletionPolicy::Orphan, ..Default::default() };
    envs.create(&PostParams::default(), &Environment::new("app", spec())).await.unwrap();
    let id = id_of(&bed.wait_for_in(&envs, "app", "Ready", is_ready).await);
    envs.delete("app", &DeleteParams::default()).await.unwrap();
    wait_until("app to go", || async { envs.get_opt("app").await.unwrap().is_none() }).await;
    assert_eq!(bed.remote_named("app").unwrap()["settings"]["kubiya.ai/owner"]["released"], json!(true));

    let namespaces: Api<Namespace> = Api::all(bed.client.clone());
    let old_uid = namespaces.get(&reborn).await.unwrap().metadata.uid;
    namespaces.delete(&reborn, &DeleteParams::default()).await.unwrap();
    wait_until("the namespace to go", || async { namespaces.get_opt(&reborn).await.unwrap().is_none() })
        .await;
    create_namespace(&bed.client, &reborn).await;
    assert_ne!(namespaces.get(&reborn).await.unwrap().metadata.uid, old_uid);

    envs.create(&PostParams::default(), &Environment::new("app", spec())).await.unwrap();
    let env = bed.wait_for_in(&envs, "app", "Stalled with NameConflict", stalled_with("NameConflict")).await;
    assert!(message(&env).contains("released by another resource of this cluster"), "{}", message(&env));
    assert_eq!(bed.remote_named("app").unwrap()["settings"]["kubiya.ai/owner"]["released"], json!(true));
    // Taking it needs the annotation: a human says so.
    let patch = json!({"metadata": {"annotations": {"kubiya.ai/environment-id": id}}});
    envs.patch("app", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let env = bed.wait_for_in(&envs, "app", "Ready", is_ready).await;
    assert_eq!(id_of(&env), id);
    let annotated: BTreeMap<String, String> = env.metadata.annotations.unwrap_or_default();
    assert_eq!(annotated.get("kubiya.ai/environment-id"), Some(&id));
}
