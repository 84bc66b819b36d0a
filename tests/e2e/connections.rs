//! Several organisations in one cluster: Connections and ClusterConnections, each Environment in
//! its own organisation, a refused key and a rotated one taken up without a restart (the old key
//! never sent again), namespaces a ClusterConnection does not select, adoption only where
//! allowed, connections kept while in use, and an Environment that cannot move between
//! organisations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kubiya_operator::resource::{ClusterConnection, Connection, ConnectionKind, EnvironmentSpec};
use serde_json::json;

use crate::support::connections::{
    cluster_connection, condition_is, connection, connection_ready, keyless, put_secret, using,
    wait_connection,
};
use crate::support::{TestBed, is_ready, message, ready_now, stalled_with, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_organisations_each_environment_lands_in_its_own() {
    let bed = keyless("two-orgs").await;
    let (org_a, org_b) = (bed.org.clone(), format!("{}-b", bed.org));
    put_secret(&bed, &bed.namespace, "key-a", &kubiya_cp_emulator::token(&org_a)).await;
    put_secret(&bed, &bed.namespace, "key-b", &kubiya_cp_emulator::token(&org_b)).await;
    connection(&bed, "org-a", "key-a").await;
    connection(&bed, "org-b", "key-b").await;
    bed.create("in-a", using(ConnectionKind::Connection, "org-a")).await;
    bed.create("in-b", using(ConnectionKind::Connection, "org-b")).await;
    let a = bed.wait_for("in-a", "Ready", is_ready).await;
    let b = bed.wait_for("in-b", "Ready", is_ready).await;
    assert_eq!(a.status.as_ref().and_then(|s| s.connection.as_deref()), Some("Connection/org-a"));
    let names = |org: &str| -> Vec<String> {
        bed.emulator.environments(org).iter().filter_map(|e| e["name"].as_str().map(str::to_owned)).collect()
    };
    assert_eq!(names(&org_a), ["in-a"], "org a holds only its own");
    assert_eq!(names(&org_b), ["in-b"], "org b holds only its own");
    assert_ne!(a.status.and_then(|s| s.environment_id), b.status.and_then(|s| s.environment_id));

    let c = wait_connection(&bed, "org-a", "Ready with its user counted", |c| {
        connection_ready(c) && c.status.as_ref().and_then(|s| s.environments) == Some(1)
    })
    .await;
    let status = c.status.unwrap();
    assert_eq!(status.organization.as_deref(), Some(org_a.as_str()));
    assert!(status.last_checked_time.is_some());
    // Metrics say which connection each request went through.
    let metrics = bed.metrics().await;
    let series = format!("connection=\"Connection/{}/org-b\"", bed.namespace);
    assert!(metrics.contains(&series), "{metrics}");
    // Without a key of its own, an Environment that names no connection says what to do.
    bed.create("nowhere", EnvironmentSpec::default()).await;
    let env = bed.wait_for("nowhere", "Stalled with NoConnection", stalled_with("NoConnection")).await;
    assert!(message(&env).contains("create a Connection named default"), "{}", message(&env));
}

/// A refused key, then a key rotated to another of the same organisation, both taken up without a
/// restart; once the new key has been sent, the old one never is again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_to_another_valid_key_is_used_without_a_restart_and_the_old_is_never_sent_again() {
    let mut bed = keyless("rotate").await;
    let key_a = kubiya_cp_emulator::token(&bed.org);
    // A second user key of the same organisation: the same environments, another token.
    let key_b = kubiya_cp_emulator::token_with_claims(
        &json!({"organization": bed.org, "email": format!("rotated@{}.test", bed.org)}),
    );
    assert_ne!(key_a, key_b);
    put_secret(&bed, &bed.namespace, "kubiya-api-key", &key_a).await;
    connection(&bed, "default", "kubiya-api-key").await;
    // The namespace's `default` Connection serves Environments that name none.
    bed.create("app", EnvironmentSpec::default()).await;
    let env = bed.wait_for("app", "Ready", is_ready).await;
    assert_eq!(env.status.as_ref().and_then(|s| s.connection.as_deref()), Some("Connection/default"));

    // A refused key: the connection and its Environments say so, and the process goes on.
    put_secret(&bed, &bed.namespace, "kubiya-api-key", "not-a-key").await;
    let c = wait_connection(&bed, "default", "Stalled KeyRefused", |c| {
        c.status.as_ref().is_some_and(|s| condition_is(&s.conditions, "Stalled", "True", "KeyRefused"))
    })
    .await;
    assert!(!serde_json::to_string(&c.status).unwrap().contains("not-a-key"), "the key shows in status");
    let env = bed.wait_for("app", "Stalled ConnectionNotReady", stalled_with("ConnectionNotReady")).await;
    assert!(
        message(&env).contains(&format!("Connection {}/default is not ready", bed.namespace)),
        "{}",
        message(&env)
    );
    assert!(bed.operator_alive(), "no crash loop");
    put_secret(&bed, &bed.namespace, "kubiya-api-key", &key_a).await;
    wait_connection(&bed, "default", "Ready again", connection_ready).await;
    bed.wait_for("app", "Ready again without an edit", is_ready).await;

    // Rotated to B. The emulator counts the requests made with each key: from the first with B
    // (the check of the new key), none may come with A.
    put_secret(&bed, &bed.namespace, "kubiya-api-key", &key_b).await;
    wait_until("a request with the new key", || async { bed.emulator.calls_with_key(&key_b) > 0 }).await;
    let (a_at_switch, b_at_switch) =
        (bed.emulator.calls_with_key(&key_a), bed.emulator.calls_with_key(&key_b));
    // Work after the switch, which ends the window: an edit applied by a pass (a read and a
    // PATCH), besides the periodic checks every 2 s.
    let patch = json!({"spec": {"description": "after the rotation"}});
    let edited = bed.envs.patch("app", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let generation = edited.metadata.generation;
    bed.wait_for("app", "Ready at the edit's generation", move |e| {
        is_ready(e) && e.status.as_ref().and_then(|s| s.observed_generation) == generation
    })
    .await;
    assert_eq!(bed.remote_named("app").expect("app")["description"], "after the rotation");
    assert_eq!(bed.emulator.calls_with_key(&key_a), a_at_switch, "the old key was sent after the new one");
    assert!(
        bed.emulator.calls_with_key(&key_b) > b_at_switch,
        "the edit did not go out with the new key: {:?}",
        bed.emulator.calls()
    );
    assert!(bed.operator_alive(), "the same process throughout");
    bed.assert_no_secret_leaked_including(&[key_b.as_str()]).await;
    bed.kill_operator().await;
    assert!(!bed.operator_log().contains("not-a-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_connection_serves_only_the_namespaces_it_selects_and_adopts_only_if_allowed() {
    let bed = keyless("cluster-conn").await;
    let name = format!("{}-acme", bed.namespace);
    put_secret(&bed, &bed.namespace, "acme-key", &kubiya_cp_emulator::token(&bed.org)).await;
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([("kubiya.ai/org".to_owned(), name.clone())])),
        ..Default::default()
    };
    let clusters = cluster_connection(&bed, &name, "acme-key", Some(selector), false).await;

    // Not selected: nothing is created.
    bed.create("shared", using(ConnectionKind::ClusterConnection, &name)).await;
    let env =
        bed.wait_for("shared", "Stalled NamespaceNotAllowed", stalled_with("NamespaceNotAllowed")).await;
    assert!(message(&env).contains("label the namespace"), "{}", message(&env));
    assert!(bed.remote_named("shared").is_none());
    let label = json!({"metadata": {"labels": {"kubiya.ai/org": name}}});
    Api::<Namespace>::all(bed.client.clone())
        .patch(&bed.namespace, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    bed.wait_for("shared", "Ready once selected", is_ready).await;

    // Adoption through it: refused, until the ClusterConnection allows it.
    let (_, legacy) = bed.cp("POST", "/api/v1/environments", Some(json!({"name": "legacy"}))).await;
    let id = legacy["id"].as_str().unwrap().to_owned();
    bed.create_annotated(
        "legacy",
        &[("kubiya.ai/environment-id", &id)],
        using(ConnectionKind::ClusterConnection, &name),
    )
    .await;
    let env = bed.wait_for("legacy", "Stalled AdoptionNotAllowed", stalled_with("AdoptionNotAllowed")).await;
    assert!(message(&env).contains("allowAdoption: true"), "{}", message(&env));
    assert!(
        bed.remote_named("legacy").unwrap()["settings"].get("kubiya.ai/owner").is_none(),
        "nothing written"
    );
    let allow = json!({"spec": {"allowAdoption": true}});
    clusters.patch(&name, &PatchParams::default(), &Patch::Merge(&allow)).await.unwrap();
    let env = bed.wait_for("legacy", "Ready, adopted", is_ready).await;
    assert_eq!(env.status.and_then(|s| s.environment_id), Some(id));

    // Clean up the cluster-scoped object: it goes once its Environments are gone.
    bed.envs.delete("shared", &DeleteParams::default()).await.unwrap();
    bed.envs.delete("legacy", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("shared").await;
    bed.wait_gone("legacy").await;
    clusters.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_until("the ClusterConnection to go", || async { clusters.get_opt(&name).await.unwrap().is_none() })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_in_use_is_kept_until_its_environments_are_gone() {
    let bed = keyless("in-use").await;
    put_secret(&bed, &bed.namespace, "k", &kubiya_cp_emulator::token(&bed.org)).await;
    connection(&bed, "org", "k").await;
    bed.create("user", using(ConnectionKind::Connection, "org")).await;
    bed.wait_for("user", "Ready", is_ready).await;
    let api: Api<Connection> = Api::namespaced(bed.client.clone(), &bed.namespace);
    api.delete("org", &DeleteParams::default()).await.unwrap();
    let c = wait_connection(&bed, "org", "held, naming its user", |c| {
        c.status.as_ref().is_some_and(|s| condition_is(&s.conditions, "Stalled", "True", "InUse"))
    })
    .await;
    let text = c.status.and_then(|s| s.message).unwrap_or_default();
    assert!(text.contains(&format!("{}/user", bed.namespace)), "{text}");
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(bed.client.clone(), &bed.namespace);
    wait_until("a Warning Event InUse", || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("InUse"))
    })
    .await;
    // Its Environment still works through it meanwhile, and deleting it lets the connection go.
    bed.envs.delete("user", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("user").await;
    assert!(bed.remote_named("user").is_none(), "deleted remotely through the connection being deleted");
    wait_until("the Connection to go", || async { api.get_opt("org").await.unwrap().is_none() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_cannot_move_between_organisations() {
    let bed = TestBed::start("no-move", ready_now()).await;
    bed.create("app", EnvironmentSpec::default()).await;
    let env = bed.wait_for("app", "Ready", is_ready).await;
    assert_eq!(env.status.as_ref().and_then(|s| s.connection.as_deref()), Some("operator"));

    // The reference cannot change (the schema refuses it).
    let patch = json!({"spec": {"connectionRef": {"kind": "Connection", "name": "other"}}});
    let refused = bed.envs.patch("app", &PatchParams::default(), &Patch::Merge(&patch)).await;
    match refused {
        Err(kube::Error::Api(s)) => {
            assert!(s.message.contains("cannot move between organisations"), "{}", s.message)
        }
        other => panic!("a changed connectionRef was accepted: {other:?}"),
    }
    // Nor can a `default` Connection created later take it to another organisation.
    put_secret(&bed, &bed.namespace, "other", &kubiya_cp_emulator::token(&format!("{}-x", bed.org))).await;
    connection(&bed, "default", "other").await;
    bed.annotate("app", "kubiya.ai/reconcile-requested-at", Some("now")).await;
    let env = bed.wait_for("app", "Stalled ConnectionChanged", stalled_with("ConnectionChanged")).await;
    assert!(message(&env).contains("managed through operator"), "{}", message(&env));
    assert_eq!(
        bed.emulator.environments(&format!("{}-x", bed.org)).len(),
        0,
        "nothing created in the other organisation"
    );
}

/// Going from Observe to Full is an adoption, however the passes between went: a pass that
/// observed nothing (paused here; a failed one drops the same record) must not turn it into a
/// silent take-over, past a ClusterConnection that no longer allows adoption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_then_full_is_an_adoption_even_after_a_pass_that_observed_nothing() {
    let bed = keyless("observe-full").await;
    let name = format!("{}-watch", bed.namespace);
    put_secret(&bed, &bed.namespace, "watch-key", &kubiya_cp_emulator::token(&bed.org)).await;
    let clusters = cluster_connection(&bed, &name, "watch-key", None, true).await;
    let settled = |c: &ClusterConnection| {
        c.status.as_ref().is_some_and(|s| {
            s.observed_generation == c.metadata.generation && condition_is(&s.conditions, "Ready", "True", "")
        })
    };
    let (code, _) = bed.cp("POST", "/api/v1/environments", Some(json!({"name": "watched"}))).await;
    assert_eq!(code, 201);

    let observe = EnvironmentSpec {
        management_policy: kubiya_operator::resource::ManagementPolicy::Observe,
        ..using(ConnectionKind::ClusterConnection, &name)
    };
    bed.create("watched", observe).await;
    bed.wait_for("watched", "observed, Synced", |e| {
        e.status.as_ref().is_some_and(|s| condition_is(&s.conditions, "Synced", "True", "InSync"))
    })
    .await;

    // A pass that observes nothing, then the connection stops allowing adoption, then Full.
    bed.annotate("watched", "kubiya.ai/paused", Some("true")).await;
    bed.wait_for("watched", "paused", |e| {
        e.status.as_ref().is_some_and(|s| condition_is(&s.conditions, "Reconciling", "False", "Paused"))
    })
    .await;
    let deny = json!({"spec": {"allowAdoption": false}});
    clusters.patch(&name, &PatchParams::default(), &Patch::Merge(&deny)).await.unwrap();
    wait_until("the ClusterConnection to settle", || async {
        clusters.get(&name).await.is_ok_and(|c| settled(&c))
    })
    .await;
    let full = json!({"spec": {"managementPolicy": "Full"}});
    bed.envs.patch("watched", &PatchParams::default(), &Patch::Merge(&full)).await.unwrap();
    bed.annotate("watched", "kubiya.ai/paused", None).await;
    bed.wait_for("watched", "Stalled AdoptionNotAllowed", stalled_with("AdoptionNotAllowed")).await;
    // And it stays refused on the passes that follow.
    bed.annotate("watched", "kubiya.ai/reconcile-requested-at", Some("again")).await;
    let env = bed
        .wait_for("watched", "handled again", |e| {
            e.status.as_ref().is_some_and(|s| s.last_handled_reconcile_at.as_deref() == Some("again"))
        })
        .await;
    assert!(stalled_with("AdoptionNotAllowed")(&env), "{:?}", env.status);
    assert!(
        bed.remote_named("watched").unwrap()["settings"].get("kubiya.ai/owner").is_none(),
        "taken over without consent"
    );

    // Allowed again: taken over as an adoption, with its Event.
    let allow = json!({"spec": {"allowAdoption": true}});
    clusters.patch(&name, &PatchParams::default(), &Patch::Merge(&allow)).await.unwrap();
    bed.wait_for("watched", "Ready, managed", is_ready).await;
    bed.wait_event("watched", "Adopted").await;
    assert!(bed.remote_named("watched").unwrap()["settings"].get("kubiya.ai/owner").is_some());

    bed.envs.delete("watched", &DeleteParams::default()).await.unwrap();
    bed.wait_gone("watched").await;
    clusters.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_until("the ClusterConnection to go", || async { clusters.get_opt(&name).await.unwrap().is_none() })
        .await;
}
