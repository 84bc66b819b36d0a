//! The queues phase: N Environments and `--queues-per-environment` WorkerQueues of each, all
//! applied at once (the queues wait for their Environment). Prints the time until every object is
//! Ready, API-server writes and control-plane calls per object, and the operator's memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubiya_cp_emulator::{Config as EmulatorConfig, Emulator, Faults};
use serde_json::{Value, json};

use crate::{
    Args, Failure, RssSampler, apiserver_requests, environment, is_ready, resource, split, start_operator,
};

fn queue_resource() -> ApiResource {
    ApiResource {
        group: "kubiya.ai".into(),
        version: "v1alpha1".into(),
        api_version: "kubiya.ai/v1alpha1".into(),
        kind: "WorkerQueue".into(),
        plural: "workerqueues".into(),
    }
}

fn queue(name: &str, environment: &str) -> DynamicObject {
    let mut o = DynamicObject::new(name, &queue_resource());
    o.data = json!({"spec": {"environmentRef": {"name": environment}, "maxWorkers": 4, "tags": ["bench"]}});
    o
}

/// Counts the objects of `api` that turn Ready.
fn count_ready(api: Api<DynamicObject>) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let task = tokio::spawn(async move {
        let mut ready = std::collections::HashSet::new();
        let stream = watcher(api, watcher::Config::default()).default_backoff().applied_objects();
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            let Ok(o) = item else { continue };
            if is_ready(&o) && ready.insert(o.metadata.name.clone().unwrap_or_default()) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (count, task)
}

pub async fn queues(args: &Args, client: &Client) -> Result<Value, Failure> {
    let k = args.queues_per_environment;
    let emulator = Emulator::start(EmulatorConfig {
        provisioning: Duration::ZERO,
        faults: Faults { latency_ms: args.latency_ms, ..Faults::default() },
        ..EmulatorConfig::default()
    })
    .await?;
    let envs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "bench", &resource());
    let queues: Api<DynamicObject> = Api::namespaced_with(client.clone(), "bench", &queue_resource());
    let operator = start_operator(args, &emulator)?;
    let (rss, sampler) = RssSampler::start(operator.id().unwrap_or_default());
    let (envs_ready, w1) = count_ready(envs.clone());
    let (queues_ready, w2) = count_ready(queues.clone());

    let api_before = apiserver_requests(client).await?;
    let cp_before = emulator.calls();
    let t0 = Instant::now();
    let objects: Vec<(Api<DynamicObject>, DynamicObject)> = (0..args.n)
        .flat_map(|i| {
            let env = format!("env-{i:05}");
            let mut all = vec![(envs.clone(), environment(&env))];
            all.extend((0..k).map(|j| (queues.clone(), queue(&format!("{env}-q{j}"), &env))));
            all
        })
        .collect();
    let total = objects.len();
    stream::iter(objects)
        .map(|(api, o)| async move { api.create(&PostParams::default(), &o).await.map(drop) })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let apply = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(3600);
    while (envs_ready.load(Ordering::Relaxed) as usize) < args.n
        || (queues_ready.load(Ordering::Relaxed) as usize) < args.n * k
    {
        if Instant::now() > deadline {
            return Err("not all Ready within an hour".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_ready = t0.elapsed();
    let api_after = apiserver_requests(client).await?;
    let cp_after = emulator.calls();
    // The steady state: what settled queues cost when nobody looks (activeWorkers included).
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let cp_steady = emulator.calls();
    let api_steady = apiserver_requests(client).await?;
    // Every Environment relabelled (a watch event for each, no spec change): what that costs
    // the control plane over the same window, activeWorkers refreshes included.
    let label = json!({"metadata": {"labels": {"bench.kubiya.ai/touched": "1"}}});
    stream::iter(0..args.n)
        .map(|i| {
            let (envs, label) = (envs.clone(), label.clone());
            async move {
                envs.patch(&format!("env-{i:05}"), &PatchParams::default(), &Patch::Merge(&label))
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let cp_touched = emulator.calls();
    w1.abort();
    w2.abort();
    sampler.abort();
    drop(operator);

    let per_object = total as f64;
    let (w, r) = split(&api_before, &api_after);
    let by_route: BTreeMap<String, f64> = cp_after
        .iter()
        .map(|(route, v)| (route.clone(), (v - cp_before.get(route).copied().unwrap_or(0)) as f64))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let by_resource: BTreeMap<String, f64> = api_after
        .iter()
        .filter(|(key, _)| key.contains(' '))
        .map(|(key, v)| (key.clone(), v - api_before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let minutes = args.steady_secs as f64 / 60.0;
    let steady_calls: BTreeMap<String, f64> = cp_steady
        .iter()
        .map(|(route, v)| (route.clone(), (v - cp_after.get(route).copied().unwrap_or(0)) as f64 / minutes))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let (steady_writes, steady_reads) = split(&api_after, &api_steady);
    let touched_calls: BTreeMap<String, f64> = cp_touched
        .iter()
        .map(|(route, v)| (route.clone(), (v - cp_steady.get(route).copied().unwrap_or(0)) as f64))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let queues_total = (args.n * k).max(1) as f64;
    let report = json!({
        "environments": args.n,
        "queues_per_environment": k,
        "objects": total,
        "apply_seconds": apply.as_secs_f64(),
        "all_ready_seconds": all_ready.as_secs_f64(),
        // The bench's own creates are one write per object.
        "apiserver_writes_per_object": (w - per_object) / per_object,
        "apiserver_reads_per_object": r / per_object,
        "apiserver_requests_by_verb_and_resource": by_resource,
        "control_plane_calls_per_object": by_route.values().sum::<f64>() / per_object,
        "control_plane_calls_by_route": by_route,
        "operator_peak_rss_mib": rss.peak_mib(),
        "operator_settled_rss_mib": rss.current_mib(),
        "steady_window_seconds": args.steady_secs,
        "steady_control_plane_calls_per_minute_by_route": steady_calls,
        "steady_apiserver_writes_per_minute": steady_writes / minutes,
        "steady_apiserver_reads_per_minute": steady_reads / minutes,
        "relabelled_control_plane_calls_by_route": touched_calls,
        "relabelled_control_plane_calls_per_queue": touched_calls.values().sum::<f64>() / queues_total,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report)
}
