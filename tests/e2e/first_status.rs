//! GitOps is told the truth from the first moment: a just-applied object of every kind reads as
//! in progress to kstatus (Flux) and to the Argo CD script before the operator has written
//! anything (the CRDs default `status` to `{observedGeneration: 0}`), so no status write is
//! needed to say so; an Environment then costs three writes: its finalizer, the status carrying
//! the first call's outcome, its worker Secret.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use kubiya_operator::resource::{Connection, Environment, EnvironmentSpec, WorkerQueue};
use serde_json::{Value, json};

use crate::support::connections::{connection, put_secret};
use crate::support::health::{argo, kstatus_of};
use crate::support::{TestBed, is_ready, queues, ready_now, wait_until};

/// The object as the API server serves it, raw.
async fn raw<K: Resource<DynamicType = ()>>(bed: &TestBed, name: &str) -> Value {
    let api: Api<DynamicObject> =
        Api::namespaced_with(bed.client.clone(), &bed.namespace, &ApiResource::erase::<K>(&()));
    serde_json::to_value(api.get(name).await.expect("get")).expect("JSON")
}

/// The resource versions `api`'s watch reports for `name` from now on: one per write.
fn writes_to<K>(api: Api<K>, name: &str) -> Arc<Mutex<Vec<String>>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = watcher(api, config).boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) = event
                && let Some(rv) = obj.resource_version()
            {
                let mut seen = into.lock().unwrap();
                if !seen.contains(&rv) {
                    seen.push(rv);
                }
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_just_applied_object_reads_in_progress_before_any_write_and_an_environment_costs_three() {
    let mut bed = TestBed::without_operator("firststatus", ready_now()).await;
    bed.create("web", EnvironmentSpec::default()).await;
    queues::create(&bed, "gpu", queues::of("web")).await;
    put_secret(&bed, &bed.namespace, "spare-key", &kubiya_cp_emulator::token(&bed.org)).await;
    connection(&bed, "spare", "spare-key").await;

    // Nothing has run: the API server alone says "not yet observed".
    for (kind, obj) in [
        ("Environment", raw::<Environment>(&bed, "web").await),
        ("WorkerQueue", raw::<WorkerQueue>(&bed, "gpu").await),
        ("Connection", raw::<Connection>(&bed, "spare").await),
    ] {
        assert_eq!(obj["status"], json!({"observedGeneration": 0}), "{kind}: {obj}");
        assert_eq!(obj["metadata"]["generation"], 1, "{kind}");
        assert_eq!(kstatus_of(&obj), "InProgress", "{kind} to kstatus");
        assert_eq!(
            kstatus_of(&json!({"metadata": obj["metadata"]})),
            "Current",
            "without the default, kstatus would say Current"
        );
        if kind != "Connection" {
            let (status, message) = argo(&obj);
            assert_eq!(
                (status.as_str(), message.as_str()),
                ("Progressing", "Waiting for kubiya-operator to pick it up"),
                "{kind} to Argo CD"
            );
        }
    }

    // Then the operator: the Environment's writes, counted by its watch.
    let env_writes = writes_to(bed.envs.clone(), "web");
    let secret_writes =
        writes_to(Api::<Secret>::namespaced(bed.client.clone(), &bed.namespace), "web-worker");
    wait_until("the watches to see the Environment", || async { env_writes.lock().unwrap().len() == 1 })
        .await;
    bed.start_operator();
    let ready = bed.wait_for("web", "Ready", is_ready).await;
    queues::wait(&bed, "gpu", "Ready", queues::is_ready).await;
    let ready_rv = ready.resource_version().unwrap_or_default();
    wait_until("the watch to see the Ready status", || async {
        env_writes.lock().unwrap().contains(&ready_rv)
    })
    .await;
    wait_until("the worker Secret", || async { !secret_writes.lock().unwrap().is_empty() }).await;
    let env_writes = env_writes.lock().unwrap().len() - 1;
    let secret_writes = secret_writes.lock().unwrap().len();
    assert_eq!((env_writes, secret_writes), (2, 1), "the finalizer and one status; one worker Secret");
    let status = ready.status.as_ref().unwrap();
    assert_eq!(status.observed_generation, Some(1));
}
