//! The worker Secret an Environment gets: written back when deleted or edited, and its token never
//! shown in an Event, a status or the operator's log.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kubiya_operator::resource::EnvironmentSpec;
use serde_json::json;

use crate::support::{TestBed, is_ready, ready_now, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_secret_is_rewritten_when_deleted_or_edited_and_the_token_stays_secret() {
    let bed = TestBed::start("secret", ready_now()).await;
    bed.create("wk", EnvironmentSpec::default()).await;
    bed.wait_for("wk", "Ready", is_ready).await;
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let token = bed.remote_named("wk").unwrap()["worker_token"].as_str().unwrap().to_owned();
    let current = |s: &Secret| {
        s.data.as_ref().and_then(|d| d.get("KUBIYA_WORKER_TOKEN")).map(|b| b.0.clone())
            == Some(token.clone().into_bytes())
            && s.data
                .as_ref()
                .and_then(|d| d.get("KUBIYA_WORKER_COMMAND"))
                .is_some_and(|b| b.0.starts_with(b"kubiya worker start"))
    };
    let restored = || async { secrets.get_opt("wk-worker").await.unwrap().is_some_and(|s| current(&s)) };
    wait_until("the worker Secret", restored).await;

    secrets.delete("wk-worker", &DeleteParams::default()).await.unwrap();
    wait_until("the deleted worker Secret restored", restored).await;

    let edit = json!({"stringData": {"KUBIYA_WORKER_COMMAND": "rm -rf /"}});
    secrets.patch("wk-worker", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    wait_until("the edited worker Secret restored", restored).await;

    // A key deleted by hand: nobody's field any more, which the operator's watch of Secrets by
    // metadata sees too.
    let remove = json!([{"op": "remove", "path": "/data/KUBIYA_WORKER_COMMAND"}]);
    let patch: json_patch::Patch = serde_json::from_value(remove).unwrap();
    secrets.patch("wk-worker", &PatchParams::default(), &Patch::Json::<()>(patch)).await.unwrap();
    wait_until("the worker Secret restored after a key was deleted", restored).await;

    let events = bed.events("wk").await;
    assert!(events.iter().all(|(_, note)| !note.contains(&token)), "token in an Event");
    let env = bed.envs.get("wk").await.unwrap();
    assert!(!serde_json::to_string(&env.status).unwrap().contains(&token), "token in status");
    assert!(!bed.operator_log().contains(&token), "token in the operator log");
}
