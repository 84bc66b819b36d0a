//! The hostile phase: what a tenant with rights in its own namespace only, and a control plane
//! answering near the largest size the client reads, do to the operator's memory, while another
//! namespace's Environments must keep going Ready. Four steps, each with its own operator
//! process and its own peak RSS:
//! 1. baseline: the operator watching both namespaces; N Environments applied in `ok`;
//! 2. `--hostile-secrets` Secrets of 1 MB in `tenant`, labelled as the operator's own, then the
//!    operator started again (its first list reads every Secret of both namespaces) and N more
//!    Environments applied in `ok`;
//! 3. `--huge-environments` Environments of `--huge-environment-bytes` in `tenant`, the operator
//!    started again, N more Environments applied in `ok`: the tenant's must be refused (reported,
//!    not held) and `ok`'s must go Ready;
//! 4. every control-plane answer padded to `--huge-answer-bytes`, N more Environments applied:
//!    how many calls the operator refused as over its budget for answers in flight (Events
//!    `AnswersOverBudget`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kubiya_cp_emulator::{Config as EmulatorConfig, Emulator, Faults};
use serde_json::{Value, json};

use crate::{Args, Failure, RssSampler, environment, is_ready, resource, spawn_operator};

/// Bytes of data in each hostile Secret: 1 MB (1.33 MB as base64), under etcd's 1.5 MiB.
const SECRET_BYTES: usize = 1_000_000;

pub async fn hostile(args: &Args, client: &Client) -> Result<Value, Failure> {
    // Namespaces of this run's own: the API server's data outlives a run.
    let run = std::process::id();
    let (ok, tenant) = (format!("bench-ok-{run}"), format!("bench-tenant-{run}"));
    for ns in [&ok, &tenant] {
        let obj = Namespace {
            metadata: ObjectMeta { name: Some(ns.clone()), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &obj).await?;
    }
    let emulator = Emulator::start(EmulatorConfig {
        provisioning: Duration::ZERO,
        faults: Faults { latency_ms: args.latency_ms, ..Faults::default() },
        ..EmulatorConfig::default()
    })
    .await?;
    let envs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ok, &resource());
    let scope = format!("{ok},{tenant}");

    let baseline = step(args, &emulator, &envs, None, &scope, "baseline", is_ready).await?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenant);
    let t = Instant::now();
    stream::iter(0..args.hostile_secrets)
        .map(|i| {
            let secrets = secrets.clone();
            async move {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(format!("big-{i:04}")),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_owned(),
                            "kubiya-operator".to_owned(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([("blob".to_owned(), ByteString(vec![b'x'; SECRET_BYTES]))])),
                    ..Default::default()
                };
                secrets.create(&PostParams::default(), &secret).await.map(|_| ())
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<_>>()
        .await?;
    let secrets_seconds = t.elapsed().as_secs_f64();
    let labelled = step(args, &emulator, &envs, None, &scope, "labelled-secrets", is_ready).await?;
    // 200 MB the API server's store need not keep for the next run.
    secrets.delete_collection(&Default::default(), &ListParams::default()).await?;

    let tenant_envs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &tenant, &resource());
    let blob = "x".repeat(args.huge_environment_bytes);
    let t = Instant::now();
    stream::iter(0..args.huge_environments)
        .map(|i| {
            let (tenant_envs, blob) = (tenant_envs.clone(), &blob);
            async move {
                let mut o = environment(&format!("huge-{i:04}"));
                o.data["spec"]["settings"] = json!({ "blob": blob });
                tenant_envs.create(&PostParams::default(), &o).await.map(|_| ())
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<_>>()
        .await?;
    let huge_envs_seconds = t.elapsed().as_secs_f64();
    let huge_envs =
        step(args, &emulator, &envs, Some(&tenant_envs), &scope, "huge-environments", is_ready).await?;
    let tenant_reasons = reasons(&tenant_envs.list(&ListParams::default()).await?.items);
    // Finalizers off (the operator is stopped), then gone: 140 MB the next step must not list.
    for o in tenant_envs.list_metadata(&ListParams::default()).await?.items {
        let name = o.metadata.name.unwrap_or_default();
        let off = json!({"metadata": {"finalizers": null}});
        tenant_envs.patch(&name, &PatchParams::default(), &Patch::Merge(&off)).await?;
    }
    tenant_envs.delete_collection(&Default::default(), &ListParams::default()).await?;

    emulator.set_faults(Faults {
        latency_ms: args.latency_ms,
        huge_body: 1.0,
        huge_body_bytes: args.huge_answer_bytes,
        ..Faults::default()
    });
    // Not all can be Ready: a list of every environment padded past the client's 16 MiB cap is
    // refused as too large. The step waits until each one says what happened to it.
    let huge = step(args, &emulator, &envs, None, &scope, "huge-answers", reported).await?;
    emulator.set_faults(Faults::default());
    let refused = Api::<Event>::namespaced(client.clone(), &ok)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("AnswersOverBudget"))
        .map(|e| e.count.unwrap_or(1))
        .sum::<i32>();

    let growth = |s: &Value| {
        s["peak_rss_mib"].as_f64().unwrap_or(0.0) - baseline["peak_rss_mib"].as_f64().unwrap_or(0.0)
    };
    let report = json!({
        "environments_per_step": args.n,
        "hostile_secrets": args.hostile_secrets,
        "hostile_secret_bytes": SECRET_BYTES,
        "hostile_secrets_created_seconds": secrets_seconds,
        "huge_answer_bytes": args.huge_answer_bytes,
        "baseline": baseline,
        "labelled_secrets": labelled,
        "labelled_secrets_peak_rss_growth_mib": growth(&labelled),
        "huge_environments_count": args.huge_environments,
        "huge_environment_bytes": args.huge_environment_bytes,
        "huge_environments_created_seconds": huge_envs_seconds,
        "huge_environments": huge_envs,
        "huge_environments_peak_rss_growth_mib": growth(&huge_envs),
        "huge_environments_tenant_reasons": tenant_reasons,
        "huge_answers": huge,
        "huge_answers_peak_rss_growth_mib": growth(&huge),
        "answers_refused_over_budget_events": refused,
    });
    println!("{:<44} {:>10}", "measure", "value");
    for (label, value) in [
        ("baseline: all Ready (s)", &report["baseline"]["all_ready_seconds"]),
        ("baseline: peak RSS (MiB)", &report["baseline"]["peak_rss_mib"]),
        ("labelled Secrets: all Ready (s)", &report["labelled_secrets"]["all_ready_seconds"]),
        ("labelled Secrets: peak RSS (MiB)", &report["labelled_secrets"]["peak_rss_mib"]),
        ("labelled Secrets: peak RSS growth (MiB)", &report["labelled_secrets_peak_rss_growth_mib"]),
        ("huge Environments: all reported (s)", &report["huge_environments"]["all_ready_seconds"]),
        ("huge Environments: peak RSS (MiB)", &report["huge_environments"]["peak_rss_mib"]),
        ("huge Environments: peak RSS growth (MiB)", &report["huge_environments_peak_rss_growth_mib"]),
        ("huge Environments: the tenant's, by reason", &report["huge_environments_tenant_reasons"]),
        ("huge answers: all reported (s)", &report["huge_answers"]["all_ready_seconds"]),
        ("huge answers: Ready", &report["huge_answers"]["environments_ready"]),
        ("huge answers: not Ready, by reason", &report["huge_answers"]["not_ready_reasons"]),
        ("huge answers: peak RSS (MiB)", &report["huge_answers"]["peak_rss_mib"]),
        ("huge answers: peak RSS growth (MiB)", &report["huge_answers_peak_rss_growth_mib"]),
        ("huge answers: refused over budget (Events)", &report["answers_refused_over_budget_events"]),
    ] {
        let text = value.as_f64().map_or_else(|| value.to_string(), |v| format!("{v:.1}"));
        println!("{label:<44} {text:>10}");
    }
    Ok(report)
}

/// Whether the operator has reported on the object's generation: Ready, or a status that says why not.
fn reported(o: &DynamicObject) -> bool {
    let observed = o.data["status"]["observedGeneration"].as_i64().unwrap_or(0);
    is_ready(o)
        || (observed >= o.metadata.generation.unwrap_or(1) && o.data["status"]["conditions"].is_array())
}

/// The reason of the Ready condition of each object not Ready, counted.
fn reasons(all: &[DynamicObject]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for o in all.iter().filter(|o| !is_ready(o)) {
        let reason = o.data["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["reason"].as_str())
            .unwrap_or("none");
        *counts.entry(reason.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// One step: an operator started on `scope`, N new Environments applied in `envs`' namespace and
/// waited for until every one (those of earlier steps included) is `settled`, and every one of
/// `others` (if any) is reported, the operator stopped. Its peak RSS, the time to settled, and
/// the reasons of those not Ready.
async fn step(
    args: &Args,
    emulator: &Emulator,
    envs: &Api<DynamicObject>,
    others: Option<&Api<DynamicObject>>,
    scope: &str,
    name: &str,
    settled: fn(&DynamicObject) -> bool,
) -> Result<Value, Failure> {
    let log = std::fs::File::create(args.log.with_extension(format!("{name}.log")))?;
    let key = kubiya_cp_emulator::token("bench");
    let settings =
        [("KUBIYA_API_KEY", key.as_str()), ("KUBIYA_CONTROL_PLANE_BASE_URL", &emulator.base_url())];
    // Its Lease in the first namespace of the scope, that of `envs`.
    let mut operator = spawn_operator(args, log, scope, "127.0.0.1:0", &settings)?;
    let (rss, sampler) = RssSampler::start(operator.id().unwrap_or_default());
    let t0 = Instant::now();
    stream::iter(0..args.n)
        .map(|i| {
            let envs = envs.clone();
            async move {
                envs.create(&PostParams::default(), &environment(&format!("{name}-{i:04}"))).await.map(|_| ())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let deadline = t0 + Duration::from_secs(600);
    let (ready, not_ready) = loop {
        let all = envs.list(&ListParams::default()).await?.items;
        let ready = all.iter().filter(|o| is_ready(o)).count();
        // The others (a megabyte each) are read only once `envs` are settled.
        let others_reported = match others {
            Some(others) if all.iter().all(settled) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                others.list(&ListParams::default()).await?.items.iter().all(reported)
            }
            _ => true,
        };
        if all.iter().all(settled) && others_reported {
            break (ready, reasons(&all));
        }
        let exited = operator.try_wait()?;
        if Instant::now() > deadline || exited.is_some() {
            let _ = operator.kill().await;
            let how = exited.map_or("still running".to_owned(), |status| format!("exited: {status}"));
            return Err(format!("step {name}: {ready} of {} Ready; the operator {how}", all.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let all_ready = t0.elapsed().as_secs_f64();
    sampler.abort();
    let _ = operator.kill().await;
    Ok(json!({
        "environments_ready": ready,
        "not_ready_reasons": not_ready,
        "all_ready_seconds": all_ready,
        "peak_rss_mib": rss.peak_mib(),
    }))
}
