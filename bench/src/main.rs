//! kubiya-bench: applies N Environments at once to a test API server with the release operator
//! running against the control-plane emulator, and prints figures (not verdicts): time to Ready
//! (all, p50, p95), API-server writes and reads per Environment (from the API server's own
//! `apiserver_request_total`), control-plane calls per Environment by route (the emulator's
//! counters), the steady state afterwards, the operator's peak and settled RSS, process start →
//! first reconcile, and the floor: the API server's throughput for plain writes.
//!
//! Run it with `make bench` (hack/bench.sh starts a dedicated API server and builds the release
//! binaries); `--help` lists the knobs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kubiya_cp_emulator::{Config as EmulatorConfig, Emulator, Faults};
use serde_json::{Value, json};

mod connections;
mod hostile;
mod isolation;
mod queues;

/// Which measurement to run.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Phase {
    /// N Environments at once: time to Ready, API economy, steady state, memory.
    Load,
    /// N Environments over three connections, once with all answering, once with one hanging.
    Isolation,
    /// N Environments with `--queues-per-environment` WorkerQueues each, applied at once.
    Queues,
    /// N Connections, each with its own key Secret: the API server's requests at steady state.
    Connections,
    /// N Environments at a time, with a tenant's labelled 1 MB Secrets, then with huge answers:
    /// the operator's memory.
    Hostile,
}

#[derive(Parser)]
#[command(name = "kubiya-bench", about = "Load benchmark of kubiya-operator on the local test bed")]
pub(crate) struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Phase::Load)]
    phase: Phase,
    /// Environments applied at once.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// WorkerQueues per Environment (phase `queues`).
    #[arg(long, default_value_t = 3)]
    queues_per_environment: usize,
    /// Kubeconfig of the test API server (a dedicated one: the bench reads its global metrics).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The operator binary (release build).
    #[arg(long)]
    operator: PathBuf,
    /// Emulator latency per call, in milliseconds (the real server: 4–10 ms).
    #[arg(long, default_value_t = 5)]
    latency_ms: u64,
    /// Length of the steady-state window after all are Ready, in seconds.
    #[arg(long, default_value_t = 30)]
    steady_secs: u64,
    /// Drift-check interval given to the operator (its --resync-interval).
    #[arg(long, default_value = "10m")]
    resync: String,
    /// Concurrent writes of the bench itself (applying, and the floor).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = ".bench/bench.json")]
    out: PathBuf,
    /// Operator log file.
    #[arg(long, default_value = ".bench/operator.log")]
    log: PathBuf,
    /// Labelled 1 MB Secrets a tenant creates (phase `hostile`).
    #[arg(long, default_value_t = 200)]
    hostile_secrets: usize,
    /// Environments of `--huge-environment-bytes` a tenant creates (phase `hostile`).
    #[arg(long, default_value_t = 100)]
    huge_environments: usize,
    /// Size of each of them: 1.4 MB of `settings`, near the largest object etcd stores (1.5 MiB),
    /// which is the only bound the API server puts on a free-form field.
    #[arg(long, default_value_t = 1_400_000)]
    huge_environment_bytes: usize,
    /// Size of every control-plane answer in the last step of phase `hostile` (15.9 MiB: just
    /// under what the client reads).
    #[arg(long, default_value_t = 16_672_358)]
    huge_answer_bytes: usize,
    /// After the steady state, restart the operator (SIGTERM, start again) and measure what the
    /// restart costs the control plane, over one resync interval.
    #[arg(long)]
    restart: bool,
}

/// Where the bench's operator serves /readyz (the restart phase polls it).
const METRICS_ADDR: &str = "127.0.0.1:18791";

pub(crate) type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let client = client(&args.kubeconfig).await?;
    install_crd(&client).await?;
    if let Phase::Isolation = args.phase {
        let report = isolation::isolation(&args, &client).await?;
        std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
        return Ok(());
    }
    if let Phase::Connections = args.phase {
        let report = connections::connections(&args, &client).await?;
        std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
        return Ok(());
    }
    if let Phase::Hostile = args.phase {
        let report = hostile::hostile(&args, &client).await?;
        std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
        return Ok(());
    }
    if let Phase::Queues = args.phase {
        create_namespaces(&client).await;
        let report = queues::queues(&args, &client).await?;
        std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
        return Ok(());
    }
    let report = load(&args, &client).await?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    print_table(&report);
    Ok(())
}

/// The load phase, in order: the floors, the operator started on a canary, N applied at once, the
/// steady state, and the restart if asked. Returns the report.
async fn load(args: &Args, client: &Client) -> Result<Value, Failure> {
    create_namespaces(client).await;
    let floors = floors(args, client).await?;

    // The control plane.
    let emulator = Emulator::start(EmulatorConfig {
        provisioning: Duration::ZERO,
        faults: Faults { latency_ms: args.latency_ms, ..Faults::default() },
        ..EmulatorConfig::default()
    })
    .await?;
    let envs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "bench", &resource());

    let Started { mut operator, rss, sampler, first_reconcile, canary_kib } =
        start_on_a_canary(args, &emulator, &envs).await?;
    let applied = apply_at_once(args, client, &emulator, &envs).await?;
    let steady = steady_state(args, client, &emulator).await?;
    let memory = Memory {
        canary_kib,
        settled_kib: rss.current.load(Ordering::Relaxed),
        peak_kib: rss.peak.load(Ordering::Relaxed),
    };
    sampler.abort();
    let restart = if args.restart {
        Some(restart(args, operator, &emulator, &envs).await?)
    } else {
        let _ = operator.kill().await;
        None
    };
    Ok(load_report(args, &floors, first_reconcile, &applied, &steady, &memory, restart))
}

/// The bench's namespaces (kept if they exist): `bench-floor` for the floors, `bench` for the
/// operator.
async fn create_namespaces(client: &Client) {
    for ns in ["bench-floor", "bench"] {
        let obj = Namespace {
            metadata: ObjectMeta { name: Some(ns.into()), ..Default::default() },
            ..Default::default()
        };
        let _ = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &obj).await;
    }
}

/// The API server's own throughput for writes, the floor the operator's figures are read against.
struct Floors {
    /// Plain writes (ConfigMap creates) per second.
    plain: f64,
    /// Environment creates, in a namespace the operator does not watch, per second.
    custom_resource: f64,
}

/// Both floors, at the bench's concurrency.
async fn floors(args: &Args, client: &Client) -> Result<Floors, Failure> {
    // The floor: plain writes (ConfigMap creates) at the same concurrency.
    let floor_n = args.n.max(100);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-floor");
    let t = Instant::now();
    stream::iter(0..floor_n)
        .map(|i| {
            let cms = cms.clone();
            async move {
                let cm = ConfigMap {
                    metadata: ObjectMeta { name: Some(format!("floor-{i}")), ..Default::default() },
                    data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
                    ..Default::default()
                };
                cms.create(&PostParams::default(), &cm).await.map(|_| ())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let floor_secs = t.elapsed().as_secs_f64();
    let plain = floor_n as f64 / floor_secs;

    // A second floor in the operator's own kind: Environment creates in a namespace it does not
    // watch (custom-resource writes cost the API server more: schema, CEL, managedFields).
    let cr_floor: Api<DynamicObject> = Api::namespaced_with(client.clone(), "bench-floor", &resource());
    let t = Instant::now();
    stream::iter(0..floor_n)
        .map(|i| {
            let api = cr_floor.clone();
            async move {
                api.create(&PostParams::default(), &environment(&format!("floor-{i}"))).await.map(|_| ())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let custom_resource = floor_n as f64 / t.elapsed().as_secs_f64();
    Ok(Floors { plain, custom_resource })
}

/// The operator, started with one canary applied before it; its memory sampled from then on.
struct Started {
    operator: tokio::process::Child,
    rss: Arc<RssSampler>,
    sampler: tokio::task::JoinHandle<()>,
    /// Process start → the canary's first status.
    first_reconcile: Duration,
    /// The resident set once the canary is Ready: the operator's own, before the N.
    canary_kib: u64,
}

/// Process start → first reconcile, on one canary applied before the start; returns once the
/// canary is Ready.
async fn start_on_a_canary(
    args: &Args,
    emulator: &Emulator,
    envs: &Api<DynamicObject>,
) -> Result<Started, Failure> {
    envs.create(&PostParams::default(), &environment("canary")).await?;
    let started = Instant::now();
    let operator = start_operator(args, emulator)?;
    let pid = operator.id().unwrap_or_default();
    let (rss, sampler) = RssSampler::start(pid);
    // The CRD's default status (`observedGeneration: 0`) is there from the start: the first the
    // operator writes carries conditions.
    await_condition(envs.clone(), "canary", |o: Option<&DynamicObject>| {
        o.is_some_and(|o| o.data["status"]["conditions"].as_array().is_some_and(|c| !c.is_empty()))
    })
    .await?;
    let first_reconcile = started.elapsed();
    await_condition(envs.clone(), "canary", |o: Option<&DynamicObject>| o.is_some_and(is_ready)).await?;
    let canary_kib = vm_rss_kib(pid).unwrap_or(0);
    Ok(Started { operator, rss, sampler, first_reconcile, canary_kib })
}

/// What applying N at once measured.
struct Applied {
    /// The bench's own creates.
    apply: Duration,
    /// From the first create to the last Ready.
    all_ready: Duration,
    /// Apply → Ready of each Environment, in seconds, sorted.
    latencies: Vec<f64>,
    api_before: BTreeMap<String, f64>,
    api_after: BTreeMap<String, f64>,
    cp_before: BTreeMap<String, u64>,
    cp_after: BTreeMap<String, u64>,
}

/// Applies N at once and times each to Ready, counting the API server's requests and the
/// control plane's calls over it.
async fn apply_at_once(
    args: &Args,
    client: &Client,
    emulator: &Emulator,
    envs: &Api<DynamicObject>,
) -> Result<Applied, Failure> {
    let api_before = apiserver_requests(client).await?;
    let cp_before = emulator.calls();
    let created: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let ready: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let ready_count = Arc::new(AtomicU64::new(0));
    let watch = {
        let (ready, ready_count) = (ready.clone(), ready_count.clone());
        let stream = watcher(envs.clone(), watcher::Config::default()).default_backoff().applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            // An error (a watch expired, say) is retried by the watcher: skip it, never stop on it.
            while let Some(item) = stream.next().await {
                let Ok(o) = item else { continue };
                let name = o.metadata.name.clone().unwrap_or_default();
                if name != "canary"
                    && is_ready(&o)
                    && !ready.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&name)
                {
                    ready.lock().unwrap_or_else(|p| p.into_inner()).insert(name, Instant::now());
                    ready_count.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let t0 = Instant::now();
    stream::iter(0..args.n)
        .map(|i| {
            let (envs, created) = (envs.clone(), created.clone());
            async move {
                let name = format!("env-{i:05}");
                envs.create(&PostParams::default(), &environment(&name)).await?;
                created.lock().unwrap_or_else(|p| p.into_inner()).insert(name, Instant::now());
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let apply = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(3600);
    while (ready_count.load(Ordering::Relaxed) as usize) < args.n {
        if Instant::now() > deadline {
            return Err("not all Ready within an hour".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_ready = t0.elapsed();
    watch.abort();
    let api_after = apiserver_requests(client).await?;
    let cp_after = emulator.calls();

    let mut latencies: Vec<f64> = {
        let (created, ready) = (
            created.lock().unwrap_or_else(|p| p.into_inner()),
            ready.lock().unwrap_or_else(|p| p.into_inner()),
        );
        ready
            .iter()
            .filter_map(|(k, r)| created.get(k).map(|c| r.saturating_duration_since(*c).as_secs_f64()))
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    Ok(Applied { apply, all_ready, latencies, api_before, api_after, cp_before, cp_after })
}

/// The steady state: what the operator does when there is nothing to do, over `--steady-secs`.
struct Steady {
    api_before: BTreeMap<String, f64>,
    api_after: BTreeMap<String, f64>,
    cp_before: BTreeMap<String, u64>,
    cp_after: BTreeMap<String, u64>,
}

/// Counts the API server's requests and the control plane's calls over `--steady-secs` with
/// nothing to do.
async fn steady_state(args: &Args, client: &Client, emulator: &Emulator) -> Result<Steady, Failure> {
    let api_before = apiserver_requests(client).await?;
    let cp_before = emulator.calls();
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let api_after = apiserver_requests(client).await?;
    let cp_after = emulator.calls();
    Ok(Steady { api_before, api_after, cp_before, cp_after })
}

/// The operator's resident set, sampled every 100 ms: with the canary only, and after the steady
/// state.
struct Memory {
    canary_kib: u64,
    settled_kib: u64,
    peak_kib: u64,
}

/// The figures of the load phase, as the JSON report holds them.
fn load_report(
    args: &Args,
    floors: &Floors,
    first_reconcile: Duration,
    applied: &Applied,
    steady: &Steady,
    memory: &Memory,
    restart: Option<Value>,
) -> Value {
    let latencies = &applied.latencies;
    let pct =
        |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    // The bench's own traffic during the apply: n creates, and its watch.
    let n = args.n as f64;
    let (w, r) = split(&applied.api_before, &applied.api_after);
    let operator_writes = (w - n) / n;
    let operator_reads = r / n;
    let per_route: BTreeMap<String, f64> = applied
        .cp_after
        .iter()
        .map(|(k, v)| (k.clone(), (v - applied.cp_before.get(k).copied().unwrap_or(0)) as f64 / n))
        .collect();
    let cp_total: f64 = per_route.values().sum();
    let minutes = args.steady_secs as f64 / 60.0;
    let (sw, sr) = split(&steady.api_before, &steady.api_after);
    let steady_calls: BTreeMap<String, f64> = steady
        .cp_after
        .iter()
        .map(|(k, v)| (k.clone(), (v - steady.cp_before.get(k).copied().unwrap_or(0)) as f64 / minutes))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let by_resource: BTreeMap<String, f64> = applied
        .api_after
        .iter()
        .filter(|(k, _)| k.contains(' '))
        .map(|(k, v)| (k.clone(), (v - applied.api_before.get(k).copied().unwrap_or(0.0)) / n))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let needed_writes = operator_writes * n;
    let floor_for_needed = needed_writes / floors.plain;
    let all_ready = applied.all_ready;

    json!({
        "n": args.n,
        "emulator_latency_ms": args.latency_ms,
        "apply_seconds": applied.apply.as_secs_f64(),
        "all_ready_seconds": all_ready.as_secs_f64(),
        "apply_to_ready_p50_seconds": pct(0.5),
        "apply_to_ready_p95_seconds": pct(0.95),
        "apiserver_writes_per_environment": operator_writes,
        "apiserver_reads_per_environment": operator_reads,
        "apiserver_requests_per_environment_by_verb_and_resource": by_resource,
        "control_plane_calls_per_environment": cp_total,
        "control_plane_calls_per_environment_by_route": per_route,
        "steady_window_seconds": args.steady_secs,
        "steady_apiserver_writes_per_minute": sw / minutes,
        "steady_apiserver_reads_per_minute": sr / minutes,
        "steady_control_plane_calls_per_minute_by_route": steady_calls,
        "operator_peak_rss_mib": memory.peak_kib as f64 / 1024.0,
        "operator_settled_rss_mib": memory.settled_kib as f64 / 1024.0,
        "operator_canary_rss_mib": memory.canary_kib as f64 / 1024.0,
        "operator_rss_per_environment_kib": memory.settled_kib.saturating_sub(memory.canary_kib) as f64 / n,
        "start_to_first_reconcile_seconds": first_reconcile.as_secs_f64(),
        "floor_plain_writes_per_second": floors.plain,
        "floor_seconds_for_the_operators_writes": floor_for_needed,
        "all_ready_over_floor": all_ready.as_secs_f64() / floor_for_needed,
        "floor_custom_resource_writes_per_second": floors.custom_resource,
        "all_ready_over_custom_resource_floor": all_ready.as_secs_f64() / (needed_writes / floors.custom_resource),
        "restart": restart,
    })
}

/// The operator, as the load phase runs it: the emulator's `bench` organization, the `bench`
/// namespace.
pub(crate) fn start_operator(args: &Args, emulator: &Emulator) -> Result<tokio::process::Child, Failure> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&args.log)?;
    let key = kubiya_cp_emulator::token("bench");
    let settings = [
        ("KUBIYA_API_KEY", key.as_str()),
        ("KUBIYA_CONTROL_PLANE_BASE_URL", &emulator.base_url()),
        ("KUBIYA_RESYNC_INTERVAL", &args.resync),
    ];
    spawn_operator(args, log, "bench", METRICS_ADDR, &settings)
}

/// The operator as every phase starts it: watching `namespaces` (comma-separated; its Lease in
/// the first), serving metrics on `metrics`, logging warnings to `log`, with `settings` added to
/// its environment. Killed when dropped.
pub(crate) fn spawn_operator(
    args: &Args,
    log: std::fs::File,
    namespaces: &str,
    metrics: &str,
    settings: &[(&str, &str)],
) -> Result<tokio::process::Child, Failure> {
    let lease = namespaces.split(',').next().unwrap_or(namespaces);
    Ok(tokio::process::Command::new(&args.operator)
        .arg("run")
        .env("KUBECONFIG", &args.kubeconfig)
        .env("KUBIYA_WATCH_NAMESPACES", namespaces)
        .env("KUBIYA_LEASE_NAMESPACE", lease)
        .env("KUBIYA_METRICS_ADDR", metrics)
        .env("RUST_LOG", "warn")
        .envs(settings.iter().copied())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?)
}

/// The restart phase: SIGTERM, a new process, a user's change right away; then one resync
/// interval of drift checks, counted per minute.
async fn restart(
    args: &Args,
    mut old: tokio::process::Child,
    emulator: &Emulator,
    envs: &Api<DynamicObject>,
) -> Result<Value, Failure> {
    if let Some(pid) = old.id() {
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    }
    old.wait().await?;
    let interval = humantime_secs(&args.resync)?;
    let total = |calls: &BTreeMap<String, u64>| calls.values().sum::<u64>();
    let checks =
        |calls: &BTreeMap<String, u64>| calls.get("GET /api/v1/environments/{id}").copied().unwrap_or(0);
    let before = emulator.calls();
    let restarted = Instant::now();
    let mut operator = start_operator(args, emulator)?;
    let patch = json!({"spec": {"description": "changed during the restart"}});
    envs.patch("env-00000", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let mut synced = None;
    let mut change = None;
    let mut first_minute_calls = None;
    let mut samples: Vec<(f64, u64)> = Vec::new();
    while restarted.elapsed().as_secs_f64() < interval + 10.0 {
        let now = restarted.elapsed().as_secs_f64();
        if synced.is_none() && http_get(METRICS_ADDR, "/readyz").await.as_deref() == Some("ok: leading") {
            synced = Some(now);
        }
        if change.is_none()
            && emulator
                .environments("bench")
                .iter()
                .any(|e| e["name"] == "env-00000" && e["description"] == "changed during the restart")
        {
            change = Some(now);
        }
        let calls = emulator.calls();
        if first_minute_calls.is_none() && now >= 60.0 {
            first_minute_calls = Some(total(&calls) - total(&before));
        }
        samples.push((now, checks(&calls) - checks(&before)));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = operator.kill().await;
    // The highest number of drift checks in any 60 s window of the interval.
    let per_minute = samples
        .iter()
        .map(|(t, c)| {
            let start = samples.iter().rev().find(|(u, _)| *u <= t - 60.0).map_or(0, |(_, c0)| *c0);
            c - start
        })
        .max()
        .unwrap_or(0);
    Ok(json!({
        "resync_interval_seconds": interval,
        "control_plane_calls_first_60s": first_minute_calls,
        "control_plane_calls_first_60s_share_of_n": first_minute_calls.map(|c| c as f64 / args.n as f64),
        "max_drift_checks_per_minute": per_minute,
        "limit_drift_checks_per_minute": 2.0 * args.n as f64 / (interval / 60.0),
        "restart_to_caches_synced_seconds": synced,
        "restart_to_user_change_at_control_plane_seconds": change,
        "caches_synced_to_user_change_seconds": change.zip(synced).map(|(c, s)| c - s),
    }))
}

/// "3m", "600s", "1h" as seconds.
fn humantime_secs(text: &str) -> Result<f64, Failure> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: f64 = number.parse()?;
    Ok(n * match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}").into()),
    })
}

/// GET `path` from a local HTTP server, without a client library: the answer's body, if any.
async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

fn print_table(r: &Value) {
    let rows: [(&str, &str, &str); 20] = [
        ("environments", "n", ""),
        ("emulator latency", "emulator_latency_ms", "ms"),
        ("apply (bench writes)", "apply_seconds", "s"),
        ("all Ready after apply", "all_ready_seconds", "s"),
        ("apply → Ready p50", "apply_to_ready_p50_seconds", "s"),
        ("apply → Ready p95", "apply_to_ready_p95_seconds", "s"),
        ("API-server writes / env", "apiserver_writes_per_environment", ""),
        ("API-server reads / env", "apiserver_reads_per_environment", ""),
        ("control-plane calls / env", "control_plane_calls_per_environment", ""),
        ("steady writes / min", "steady_apiserver_writes_per_minute", ""),
        ("steady reads / min", "steady_apiserver_reads_per_minute", ""),
        ("operator RSS peak", "operator_peak_rss_mib", "MiB"),
        ("operator RSS settled", "operator_settled_rss_mib", "MiB"),
        ("operator RSS, canary only", "operator_canary_rss_mib", "MiB"),
        ("operator RSS / env", "operator_rss_per_environment_kib", "KiB"),
        ("start → first reconcile", "start_to_first_reconcile_seconds", "s"),
        ("floor: plain writes / s", "floor_plain_writes_per_second", ""),
        ("all Ready / floor time", "all_ready_over_floor", "×"),
        ("floor: CR writes / s", "floor_custom_resource_writes_per_second", ""),
        ("all Ready / CR floor time", "all_ready_over_custom_resource_floor", "×"),
    ];
    println!("{:<28} {:>12}", "measure", "value");
    for (label, key, unit) in rows {
        let v = &r[key];
        let text = v.as_f64().map_or_else(
            || v.to_string(),
            |f| if f.fract() == 0.0 { format!("{f}") } else { format!("{f:.3}") },
        );
        println!("{label:<28} {text:>12} {unit}");
    }
    for (what, v) in
        r["apiserver_requests_per_environment_by_verb_and_resource"].as_object().into_iter().flatten()
    {
        println!("  API {what:<36} {:>8.3} / env", v.as_f64().unwrap_or(0.0));
    }
    for (route, v) in r["control_plane_calls_per_environment_by_route"].as_object().into_iter().flatten() {
        println!("  {route:<40} {:>8.3} / env", v.as_f64().unwrap_or(0.0));
    }
    for (route, v) in r["steady_control_plane_calls_per_minute_by_route"].as_object().into_iter().flatten() {
        println!("  steady {route:<33} {:>8.3} / min", v.as_f64().unwrap_or(0.0));
    }
    let restart = &r["restart"];
    if restart.is_object() {
        let rows = [
            ("restart: resync interval", "resync_interval_seconds", "s"),
            ("restart: calls in first 60 s", "control_plane_calls_first_60s", ""),
            ("restart: … as a share of N", "control_plane_calls_first_60s_share_of_n", ""),
            ("restart: max drift checks / min", "max_drift_checks_per_minute", ""),
            ("restart: limit 2 × N / interval", "limit_drift_checks_per_minute", "/ min"),
            ("restart: → caches synced", "restart_to_caches_synced_seconds", "s"),
            ("restart: → user change at CP", "restart_to_user_change_at_control_plane_seconds", "s"),
            ("restart: synced → change at CP", "caches_synced_to_user_change_seconds", "s"),
        ];
        for (label, key, unit) in rows {
            let v = &restart[key];
            let text = v.as_f64().map_or_else(
                || v.to_string(),
                |f| if f.fract() == 0.0 { format!("{f}") } else { format!("{f:.3}") },
            );
            println!("{label:<32} {text:>8} {unit}");
        }
    }
}

pub(crate) fn resource() -> ApiResource {
    ApiResource {
        group: "kubiya.ai".into(),
        version: "v1alpha1".into(),
        api_version: "kubiya.ai/v1alpha1".into(),
        kind: "Environment".into(),
        plural: "environments".into(),
    }
}

pub(crate) fn environment(name: &str) -> DynamicObject {
    let mut o = DynamicObject::new(name, &resource());
    o.data = json!({"spec": {"description": "bench", "tags": ["bench"]}});
    o
}

pub(crate) fn is_ready(o: &DynamicObject) -> bool {
    o.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

async fn client(kubeconfig: &std::path::Path) -> Result<Client, Failure> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn install_crd(client: &Client) -> Result<(), Failure> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for text in [
        include_str!("../../crds/environment.yaml"),
        include_str!("../../crds/connection.yaml"),
        include_str!("../../crds/clusterconnection.yaml"),
        include_str!("../../crds/workerqueue.yaml"),
    ] {
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(text)?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &PatchParams::apply("kubiya-bench").force(), &Patch::Apply(&crd)).await?;
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await??;
    }
    Ok(())
}

/// `apiserver_request_total` summed by verb.
pub(crate) async fn apiserver_requests(client: &Client) -> Result<BTreeMap<String, f64>, Failure> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut by_verb = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            line.split(&format!("{name}=\"")).nth(1).and_then(|v| v.split('"').next()).unwrap_or("")
        };
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *by_verb.entry(label("verb").to_owned()).or_insert(0.0) += value;
        let what = format!(
            "{} {}{}",
            label("verb"),
            label("resource"),
            match label("subresource") {
                "" => String::new(),
                s => format!("/{s}"),
            }
        );
        *by_verb.entry(what).or_insert(0.0) += value;
    }
    Ok(by_verb)
}

/// (writes, reads) between two snapshots.
pub(crate) fn split(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> (f64, f64) {
    let delta =
        |verb: &str| after.get(verb).copied().unwrap_or(0.0) - before.get(verb).copied().unwrap_or(0.0);
    let writes =
        ["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"].iter().map(|v| delta(v)).sum();
    let reads = ["GET", "LIST", "WATCH", "WATCHLIST"].iter().map(|v| delta(v)).sum();
    (writes, reads)
}

/// Samples the operator's resident set size from /proc every 100 ms.
#[derive(Default)]
pub(crate) struct RssSampler {
    pub(crate) current: AtomicU64,
    pub(crate) peak: AtomicU64,
}

impl RssSampler {
    /// Samples process `pid` from now until the returned task is aborted.
    pub(crate) fn start(pid: u32) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let rss = Arc::new(RssSampler::default());
        (rss.clone(), tokio::spawn(rss.run(pid)))
    }

    pub(crate) fn peak_mib(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }

    pub(crate) fn current_mib(&self) -> f64 {
        self.current.load(Ordering::Relaxed) as f64 / 1024.0
    }

    async fn run(self: Arc<Self>, pid: u32) {
        loop {
            if let Some(kib) = vm_rss_kib(pid) {
                self.current.store(kib, Ordering::Relaxed);
                self.peak.fetch_max(kib, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The resident set of process `pid` now, in KiB (`VmRSS`).
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}
