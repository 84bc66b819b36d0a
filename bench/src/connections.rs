//! The connections phase: N Connections, each with its own key Secret, on one emulator; once all
//! are Ready, the API server's requests over the steady window, per minute: what N connections
//! cost the API server while nothing changes (their Secrets are read only when they change).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use kubiya_cp_emulator::{Config as EmulatorConfig, Emulator, Faults};
use serde_json::{Value, json};

use crate::isolation::connection_resource;
use crate::{Args, Failure, RssSampler, apiserver_requests, is_ready, spawn_operator, split};

pub async fn connections(args: &Args, client: &Client) -> Result<Value, Failure> {
    // A namespace of this run's own: the API server's data outlives a run.
    let ns = &format!("bench-connections-{}", std::process::id());
    let obj = Namespace {
        metadata: ObjectMeta { name: Some(ns.into()), ..Default::default() },
        ..Default::default()
    };
    let _ = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &obj).await;
    let emulator = Emulator::start(EmulatorConfig {
        provisioning: Duration::ZERO,
        faults: Faults { latency_ms: args.latency_ms, ..Faults::default() },
        ..EmulatorConfig::default()
    })
    .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let conns: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &connection_resource());
    let base_url = emulator.base_url();
    stream::iter(0..args.n)
        .map(|i| {
            let (secrets, conns, base_url) = (secrets.clone(), conns.clone(), base_url.clone());
            async move {
                let name = format!("c-{i:05}");
                let secret = Secret {
                    metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
                    string_data: Some(BTreeMap::from([(
                        "api-key".to_owned(),
                        kubiya_cp_emulator::token(&format!("org-{i}")),
                    )])),
                    ..Default::default()
                };
                secrets.create(&PostParams::default(), &secret).await?;
                let mut c = DynamicObject::new(&name, &connection_resource());
                c.data = json!({"spec": {"baseUrl": base_url, "apiKeySecretRef": {"name": name}}});
                conns.create(&PostParams::default(), &c).await?;
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;

    let log = std::fs::File::create(args.log.with_extension("connections.log"))?;
    let mut operator =
        spawn_operator(args, log, ns, "127.0.0.1:0", &[("KUBIYA_CONTROL_PLANE_BASE_URL", &base_url)])?;
    let (rss, sampler) = RssSampler::start(operator.id().unwrap_or_default());
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(1800);
    loop {
        let all = conns.list(&Default::default()).await?.items;
        if all.len() == args.n && all.iter().all(is_ready) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the Connections were not Ready within 30 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ready = t0.elapsed().as_secs_f64();

    // Steady: nothing changes; what does the API server see? (The bench's own reads are two:
    // the snapshots.)
    let before = apiserver_requests(client).await?;
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let after = apiserver_requests(client).await?;
    let (writes, reads) = split(&before, &after);
    let minutes = args.steady_secs as f64 / 60.0;
    let (peak, settled) = (rss.peak_mib(), rss.current_mib());
    sampler.abort();
    let _ = operator.kill().await;
    let by_what: BTreeMap<String, f64> = after
        .iter()
        .filter(|(k, _)| k.contains(' '))
        .map(|(k, v)| (k.clone(), (v - before.get(k).copied().unwrap_or(0.0)) / minutes))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    println!("{:<40} {:>10}", "connections", args.n);
    println!("{:<40} {:>10.1} s", "all Ready after operator start", ready);
    println!("{:<40} {:>10.1}", "steady API-server reads / min", reads / minutes);
    println!("{:<40} {:>10.1}", "steady API-server writes / min", writes / minutes);
    println!("{:<40} {:>10.1} MiB", "operator RSS peak", peak);
    println!("{:<40} {:>10.1} MiB", "operator RSS settled", settled);
    for (what, per_minute) in &by_what {
        println!("  {what:<38} {per_minute:>10.1} / min");
    }
    Ok(json!({
        "connections": args.n,
        "all_ready_seconds": ready,
        "steady_seconds": args.steady_secs,
        "steady_apiserver_reads_per_minute": reads / minutes,
        "steady_apiserver_writes_per_minute": writes / minutes,
        "steady_by_request_per_minute": by_what,
        "operator_peak_rss_mib": peak,
        "operator_settled_rss_mib": settled,
    }))
}
