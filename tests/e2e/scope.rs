//! Scope: a list of namespaces and a label selector. Environments outside either are left
//! alone: no status, no remote environment.

use std::time::Duration;

use kube::api::{Api, PostParams};
use kubiya_cp_emulator::Config as EmulatorConfig;
use kubiya_operator::resource::{Environment, EnvironmentSpec, EnvironmentStatus};

use crate::support::{TestBed, is_ready, metric_sum};

fn labelled(name: &str, shard: Option<&str>) -> Environment {
    let mut env = Environment::new(name, EnvironmentSpec::default());
    env.metadata.labels = shard.map(|s| [("shard".to_owned(), s.to_owned())].into());
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_environments_in_the_listed_namespaces_and_matching_the_selector_are_reconciled() {
    let emulator = EmulatorConfig { provisioning: Duration::ZERO, ..EmulatorConfig::default() };
    let mut bed = TestBed::without_operator("scope", emulator).await;
    let (second, outside) = (format!("{}-b", bed.namespace), format!("{}-c", bed.namespace));
    for ns in [&second, &outside] {
        bed.own_namespace(ns).await;
    }
    bed.operator_env.push(("KUBIYA_WATCH_NAMESPACES", format!("{},{second}", bed.namespace)));
    bed.operator_env.push(("KUBIYA_LABEL_SELECTOR", "shard=a".into()));
    bed.start_operator();

    let pp = PostParams::default();
    let second_api: Api<Environment> = Api::namespaced(bed.client.clone(), &second);
    let outside_api: Api<Environment> = Api::namespaced(bed.client.clone(), &outside);
    bed.envs.create(&pp, &labelled("first-a", Some("a"))).await.expect("create");
    bed.envs.create(&pp, &labelled("first-b", Some("b"))).await.expect("create");
    bed.envs.create(&pp, &labelled("first-none", None)).await.expect("create");
    second_api.create(&pp, &labelled("second-a", Some("a"))).await.expect("create");
    outside_api.create(&pp, &labelled("outside-a", Some("a"))).await.expect("create");

    bed.wait_for("first-a", "Ready", is_ready).await;
    let fut =
        kube::runtime::wait::await_condition(second_api.clone(), "second-a", |e: Option<&Environment>| {
            e.is_some_and(is_ready)
        });
    tokio::time::timeout(crate::support::TIMEOUT, fut).await.expect("second-a Ready in time").expect("watch");

    // Passes over first-a and second-a are done; had the others been picked up, they would have
    // been created in about the same time. One more pass on first-a gives them longer still; the
    // phase gauge below, read from the caches, is the exact check.
    bed.annotate("first-a", "kubiya.ai/reconcile-requested-at", Some("now")).await;
    bed.wait_for("first-a", "the request handled", |e| {
        e.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some("now")
    })
    .await;
    // What the operator watches is what its caches hold: two Environments.
    let metrics = bed.metrics().await;
    assert_eq!(metric_sum(&metrics, "kubiya_operator_environments{"), 2.0, "{metrics}");
    for (api, name) in [(&bed.envs, "first-b"), (&bed.envs, "first-none"), (&outside_api, "outside-a")] {
        let env = api.get(name).await.expect("get");
        // What the API server serves for an object nobody has looked at: the CRD's default.
        let untouched = EnvironmentStatus { observed_generation: Some(0), ..Default::default() };
        assert_eq!(env.status, Some(untouched), "{name} is out of scope but was reconciled");
        assert!(env.metadata.finalizers.is_none(), "{name} got a finalizer");
        assert!(bed.remote_named(name).is_none(), "{name} was created remotely");
    }
    let mut names: Vec<_> =
        bed.remote().iter().filter_map(|e| e["name"].as_str().map(str::to_owned)).collect();
    names.sort();
    names.retain(|n| n != "default");
    assert_eq!(names, ["first-a", "second-a"]);
}
