//! The isolation phase: N Environments over three connections (three organisations, each on its
//! own emulator), once with every control plane answering and once with the third one hanging on
//! every request. Prints how long the Environments of the two healthy connections take to be Ready
//! in each run: one organisation's outage must not slow the others.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubiya_cp_emulator::{Config as EmulatorConfig, Emulator, Faults};
use serde_json::{Value, json};

use crate::{Args, Failure, environment, is_ready, resource};

const CONNECTIONS: usize = 3;

/// The Connection kind, for the bench's untyped clients.
pub(crate) fn connection_resource() -> ApiResource {
    ApiResource {
        group: "kubiya.ai".into(),
        version: "v1alpha1".into(),
        api_version: "kubiya.ai/v1alpha1".into(),
        kind: "Connection".into(),
        plural: "connections".into(),
    }
}

/// One run: seconds until every Environment of the healthy connections is Ready, and how many of
/// the hanging connection's are Ready by then.
async fn run(args: &Args, client: &Client, run: usize, hang: bool) -> Result<(f64, usize), Failure> {
    let ns = format!("bench-isolation-{run}");
    let obj = Namespace {
        metadata: ObjectMeta { name: Some(ns.clone()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &obj).await?;
    let mut emulators = Vec::new();
    for _ in 0..CONNECTIONS {
        emulators.push(
            Emulator::start(EmulatorConfig {
                provisioning: Duration::ZERO,
                faults: Faults { latency_ms: args.latency_ms, ..Faults::default() },
                ..EmulatorConfig::default()
            })
            .await?,
        );
    }
    if hang {
        emulators[CONNECTIONS - 1].set_faults(Faults { hang: 1.0, ..Faults::default() });
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let connections: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &connection_resource());
    for (k, emulator) in emulators.iter().enumerate() {
        let secret = Secret {
            metadata: ObjectMeta { name: Some(format!("org-{k}")), ..Default::default() },
            string_data: Some(BTreeMap::from([(
                "api-key".to_owned(),
                kubiya_cp_emulator::token(&format!("org-{k}")),
            )])),
            ..Default::default()
        };
        secrets.create(&PostParams::default(), &secret).await?;
        let mut c = DynamicObject::new(&format!("org-{k}"), &connection_resource());
        c.data = json!({"spec": {"baseUrl": emulator.base_url(), "apiKeySecretRef": {"name": format!("org-{k}")}}});
        connections.create(&PostParams::default(), &c).await?;
    }
    let log = std::fs::File::create(args.log.with_extension(format!("isolation-{run}.log")))?;
    let mut operator = crate::spawn_operator(args, log, &ns, "127.0.0.1:0", &[])?;

    let envs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource());
    // Without the fault every Environment counts; with it, those of the two healthy connections.
    let healthy: HashSet<String> =
        (0..args.n).filter(|i| !hang || i % CONNECTIONS != CONNECTIONS - 1).map(name).collect();
    let ready: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    let watch = {
        let ready = ready.clone();
        let stream = watcher(envs.clone(), watcher::Config::default()).default_backoff().applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            // An error (a watch expired, say) is retried by the watcher: skip it, never stop on it.
            while let Some(item) = stream.next().await {
                let Ok(o) = item else { continue };
                if is_ready(&o) {
                    ready
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(o.metadata.name.clone().unwrap_or_default());
                }
            }
        })
    };
    let t0 = Instant::now();
    stream::iter(0..args.n)
        .map(|i| {
            let envs = envs.clone();
            async move {
                let mut o = environment(&name(i));
                o.data["spec"]["connectionRef"] =
                    json!({"kind": "Connection", "name": format!("org-{}", i % CONNECTIONS)});
                envs.create(&PostParams::default(), &o).await.map(drop)
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let done = healthy.iter().all(|n| ready.lock().unwrap_or_else(|p| p.into_inner()).contains(n));
        if done {
            break;
        }
        if Instant::now() > deadline {
            return Err("the healthy connections' Environments were not Ready within 30 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed().as_secs_f64();
    let hanging_ready = if hang {
        let ready = ready.lock().unwrap_or_else(|p| p.into_inner());
        (0..args.n)
            .filter(|i| i % CONNECTIONS == CONNECTIONS - 1)
            .filter(|i| ready.contains(&name(*i)))
            .count()
    } else {
        0
    };
    watch.abort();
    let _ = operator.kill().await;
    Ok((took, hanging_ready))
}

fn name(i: usize) -> String {
    format!("iso-{i:05}")
}

/// Both runs; prints and returns the report.
pub async fn isolation(args: &Args, client: &Client) -> Result<Value, Failure> {
    let (healthy_alone, _) = run(args, client, 0, false).await?;
    let (healthy_beside_hang, hanging_ready) = run(args, client, 1, true).await?;
    let healthy = args.n - args.n / CONNECTIONS;
    let report = json!({
        "n": args.n,
        "connections": CONNECTIONS,
        "emulator_latency_ms": args.latency_ms,
        "all_ready_seconds_no_fault": healthy_alone,
        "healthy_connections_ready_seconds_with_one_hanging": healthy_beside_hang,
        "healthy_environments": healthy,
        "hanging_connection_environments_ready": hanging_ready,
    });
    println!("{:<58} {:>10}", "measure", "value");
    println!("{:<58} {:>10}", "environments over 3 connections", args.n);
    println!("{:<58} {:>10.3} s", "all Ready, every control plane answering", healthy_alone);
    println!(
        "{:<58} {:>10.3} s",
        format!("{healthy} of the 2 healthy connections Ready, the 3rd hanging"),
        healthy_beside_hang
    );
    println!("{:<58} {:>10}", "Environments of the hanging connection Ready by then", hanging_ready);
    Ok(report)
}
