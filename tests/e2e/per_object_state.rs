//! What the operator remembers per object (backoff, recorded ids) goes with its object, however it
//! leaves: deleted, relabelled out of the selector, or its finalizer removed by hand
//! (`kubiya_operator_tracked_objects`).

use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kubiya_operator::resource::{Environment, EnvironmentSpec};
use serde_json::json;

use crate::support::{
    TIMEOUT, TestBed, is_ready, message, metric_sum, ready_now, wait_until, wait_until_within,
};

/// The operator's per-object state (backoff, recorded ids), by its gauge.
async fn tracked(bed: &TestBed) -> f64 {
    metric_sum(&bed.metrics().await, "kubiya_operator_tracked_objects ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_object_state_goes_with_its_object_however_it_leaves() {
    const ROUNDS: usize = 10;
    const BATCH: usize = 100;
    let mut bed = TestBed::without_operator("forget", ready_now()).await;
    bed.operator_env.push(("KUBIYA_LABEL_SELECTOR", "shard=a".into()));
    bed.start_operator();

    let labelled = |name: &str| {
        let mut e = Environment::new(name, EnvironmentSpec::default());
        e.metadata.labels = Some([("shard".to_owned(), "a".to_owned())].into());
        e
    };
    for round in 0..ROUNDS {
        for i in 0..BATCH {
            bed.envs.create(&Default::default(), &labelled(&format!("c-{round}-{i:03}"))).await.unwrap();
        }
        for i in 0..BATCH {
            bed.wait_for(&format!("c-{round}-{i:03}"), "Ready", is_ready).await;
        }
        bed.envs
            .delete_collection(&DeleteParams::default(), &ListParams::default().labels("shard=a"))
            .await
            .unwrap();
        wait_until_within("the batch to be gone", TIMEOUT * 2, || async {
            bed.envs.list(&ListParams::default()).await.unwrap().items.is_empty()
        })
        .await;
    }
    wait_until("per-object state of 1,000 created and deleted objects to be 0", || async {
        tracked(&bed).await == 0.0
    })
    .await;

    // Leaving without a cleanup: relabelled out of the selector, or its finalizer removed by hand
    // (from a paused deletion, which holds it).
    bed.envs.create(&Default::default(), &labelled("relabelled")).await.unwrap();
    bed.envs.create(&Default::default(), &labelled("unhooked")).await.unwrap();
    bed.wait_for("relabelled", "Ready", is_ready).await;
    bed.wait_for("unhooked", "Ready", is_ready).await;
    wait_until("2 tracked", || async { tracked(&bed).await == 2.0 }).await;
    let relabel = json!({"metadata": {"labels": {"shard": "b"}}});
    bed.envs.patch("relabelled", &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    wait_until("relabelled out of the selector: forgotten", || async { tracked(&bed).await == 1.0 }).await;
    bed.annotate("unhooked", "kubiya.ai/paused", Some("true")).await;
    bed.envs.delete("unhooked", &DeleteParams::default()).await.unwrap();
    bed.wait_for("unhooked", "held", |e| message(e).contains("deletion paused")).await;
    let unhook = json!({"metadata": {"finalizers": null}});
    bed.envs.patch("unhooked", &PatchParams::default(), &Patch::Merge(&unhook)).await.unwrap();
    wait_until("gone without a cleanup: forgotten", || async { tracked(&bed).await == 0.0 }).await;
}
