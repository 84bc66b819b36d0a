//! End-to-end test harness: the test API server (started once per run by `tests/run.sh`), one
//! namespace, one control-plane emulator organization and one operator process per test.
//!
//! Refuses to run against anything but the local test API server, so that a test can never touch
//! the cluster a developer's kubeconfig points at. A test's namespaces are its own: a name taken
//! already fails the test, and they are deleted when its [`TestBed`] is dropped.
//!
//! Beside it: [`cluster`], a private test API server for the tests that stop or replace theirs;
//! [`health`], how Argo CD and kstatus see an Environment; [`cli`], the command lines a user runs
//! (`kubiya-operator export`, `kubectl apply`).

pub mod cli;
pub mod cluster;
pub mod connections;
pub mod health;
pub mod queues;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kubiya_cp_emulator::{Config as EmulatorConfig, Emulator};
use kubiya_operator::resource::{Environment, EnvironmentSpec, Phase};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

/// Set by `tests/run.sh` to the kubeconfig of the test API server it started.
const KUBECONFIG_VAR: &str = "KUBIYA_TEST_KUBECONFIG";
/// Set by `tests/run.sh` to the kubectl that came with the test API server.
const KUBECTL_VAR: &str = "KUBIYA_TEST_KUBECTL";
/// The context name `tests/cluster/apiserver.sh` writes; anything else is refused.
const TEST_CONTEXT: &str = "test-apiserver";
/// Generous: CI machines are slow and the API server pauses 2 s after a CRD is established.
pub const TIMEOUT: Duration = Duration::from_secs(60);

static CRD: OnceCell<()> = OnceCell::const_new();

/// One test's world.
pub struct TestBed {
    pub client: Client,
    pub namespace: String,
    pub emulator: Emulator,
    /// The emulator organization of this test (its API key is what the operator runs with).
    pub org: String,
    /// Where the operator finds the control plane: the emulator unless a test points it elsewhere.
    pub control_plane_url: String,
    pub envs: Api<Environment>,
    operator: Option<Child>,
    /// Extra environment for the operator process (set before [`TestBed::start_operator`]).
    pub operator_env: Vec<(&'static str, String)>,
    /// The kubeconfig of the test API server this bed is on.
    kubeconfig: PathBuf,
    /// The namespaces this test created: `namespace`, then any from [`TestBed::own_namespace`].
    owned_namespaces: Vec<String>,
    pub log: PathBuf,
}

impl TestBed {
    /// A fresh namespace and emulator organization, with the operator running on them.
    pub async fn start(name: &str, emulator: EmulatorConfig) -> TestBed {
        let mut bed = TestBed::without_operator(name, emulator).await;
        bed.start_operator();
        bed
    }

    /// Same, but the operator is not started (see [`TestBed::start_operator`]).
    pub async fn without_operator(name: &str, emulator: EmulatorConfig) -> TestBed {
        let kubeconfig = kubeconfig_path();
        let client = test_client(&kubeconfig).await;
        CRD.get_or_init(|| install_crd(client.clone())).await;
        TestBed::on(client, kubeconfig, name, emulator).await
    }

    /// A test bed on another test API server (one the test started itself), without operator.
    pub async fn on_cluster(kubeconfig: PathBuf, name: &str, emulator: EmulatorConfig) -> TestBed {
        let client = test_client(&kubeconfig).await;
        install_crd(client.clone()).await;
        TestBed::on(client, kubeconfig, name, emulator).await
    }

    async fn on(client: Client, kubeconfig: PathBuf, name: &str, emulator: EmulatorConfig) -> TestBed {
        // 32 random bits: a collision is unlikely, and fails the test (see `create_namespace`).
        let namespace = format!("{name}-{:08x}", fastrand::u32(..));
        create_namespace(&client, &namespace).await;
        let emulator = Emulator::start(emulator).await.expect("start emulator");
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        TestBed {
            envs: Api::namespaced(client.clone(), &namespace),
            client,
            org: namespace.clone(),
            namespace: namespace.clone(),
            control_plane_url: emulator.base_url(),
            emulator,
            operator: None,
            operator_env: Vec::new(),
            log: log_dir.join(format!("{namespace}.log")),
            owned_namespaces: vec![namespace],
            kubeconfig,
        }
    }

    /// A client that acts as a tenant with rights in `namespace` only, and none there on the
    /// `denied` resources (`"secrets"`, say): what RBAC gives such a user. The test API server's
    /// tenant authorizer decides; the admin impersonates the tenant.
    pub async fn tenant(&self, namespace: &str, denied: &[&str]) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read test kubeconfig");
        let options = KubeConfigOptions::default();
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.expect("kubeconfig");
        config.auth_info.impersonate = Some(format!("tenant-of-{namespace}"));
        let groups = std::iter::once(format!("tenant:{namespace}"))
            .chain(denied.iter().map(|r| format!("tenant-deny:{r}")));
        config.auth_info.impersonate_groups = Some(groups.collect());
        Client::try_from(config).expect("client")
    }

    /// Creates one more namespace of this test (failing if the name is taken), deleted with the
    /// bed's own.
    pub async fn own_namespace(&mut self, name: &str) {
        create_namespace(&self.client, name).await;
        self.owned_namespaces.push(name.to_owned());
    }

    /// Starts the operator binary, watching only this test's namespace.
    pub fn start_operator(&mut self) {
        self.operator = Some(self.spawn_operator("operator", &self.log.clone()));
    }

    /// Starts one more operator process with its own identity in the leader election (the pod
    /// name), logging to `log`. The Lease is in this test's namespace; a restarted process with
    /// the same identity takes its Lease back at once, as a restarted container does.
    pub fn spawn_operator(&self, identity: &str, log: &std::path::Path) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("operator log");
        Command::new(env!("CARGO_BIN_EXE_kubiya-operator"))
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // As the operator's own identity (a token, as a Pod's service account), whose
            // requests the test API server audits for the least-privilege check of the RBAC.
            .env("KUBECONFIG", operator_kubeconfig(&self.kubeconfig))
            .env("KUBIYA_API_KEY", kubiya_cp_emulator::token(&self.org))
            .env("KUBIYA_CONTROL_PLANE_BASE_URL", &self.control_plane_url)
            .env("KUBIYA_WATCH_NAMESPACES", &self.namespace)
            .env("KUBIYA_LEASE_NAMESPACE", &self.namespace)
            .env("POD_NAME", identity)
            .env("KUBIYA_PROVISIONING_POLL", "300ms")
            .env("KUBIYA_REQUEST_TIMEOUT", "5s")
            .env("KUBIYA_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info,kubiya_operator=debug")
            .env("NO_COLOR", "1")
            .envs(self.operator_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start operator")
    }

    /// A log file for another operator process of this test.
    pub fn log_named(&self, identity: &str) -> PathBuf {
        self.log.with_file_name(format!("{}-{identity}.log", self.namespace))
    }

    /// Kills the operator with SIGKILL: no graceful shutdown, as in a node failure or an OOM kill.
    pub async fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Fails if the API key or any worker token this test's organization was given appears in
    /// the operator's log, in an Event or in a status of this test's namespace.
    pub async fn assert_no_secret_leaked(&self) {
        self.assert_no_secret_leaked_including(&[]).await;
    }

    /// Same, for these other keys too (one a test rotated to, say).
    pub async fn assert_no_secret_leaked_including(&self, keys: &[&str]) {
        let mut secrets = self.emulator.worker_tokens(&self.org);
        let issued = secrets.len();
        secrets.push(kubiya_cp_emulator::token(&self.org));
        secrets.extend(keys.iter().map(|k| (*k).to_owned()));
        let mut places = vec![("operator log".to_owned(), self.operator_log())];
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        for e in events.list(&Default::default()).await.expect("events").items {
            places.push((
                format!("Event {}", e.metadata.name.unwrap_or_default()),
                serde_json::to_string(&e.note).unwrap_or_default(),
            ));
        }
        for env in self.envs.list(&Default::default()).await.expect("environments").items {
            let where_ = format!("status of {}", env.metadata.name.clone().unwrap_or_default());
            places.push((where_, serde_json::to_string(&env.status).unwrap_or_default()));
        }
        let queues: Api<kubiya_operator::resource::WorkerQueue> =
            Api::namespaced(self.client.clone(), &self.namespace);
        for q in queues.list(&Default::default()).await.expect("worker queues").items {
            let where_ = format!("status of WorkerQueue {}", q.metadata.name.clone().unwrap_or_default());
            places.push((where_, serde_json::to_string(&q.status).unwrap_or_default()));
        }
        for secret in &secrets {
            for (place, text) in &places {
                assert!(!text.contains(secret.as_str()), "a secret leaked into the {place}");
            }
        }
        assert!(issued > 0, "no worker token was issued: the check would be vacuous");
    }

    /// Whether the operator process is still running (it must never crash on bad input).
    pub fn operator_alive(&mut self) -> bool {
        self.operator.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the operator to exit on its own; fails the test after `timeout`.
    pub async fn wait_operator_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.operator.as_mut().expect("operator running");
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            other => panic!("the operator did not exit in {timeout:?}: {other:?}\n{}", self.operator_log()),
        }
    }

    /// Sends SIGTERM and waits for the operator to exit, failing the test after [`TIMEOUT`];
    /// returns how it exited.
    pub async fn terminate_operator(&mut self) -> std::process::ExitStatus {
        self.terminate_operator_within(TIMEOUT).await
    }

    /// Same, failing the test unless the operator exits within `timeout` of the signal.
    pub async fn terminate_operator_within(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.operator.take().expect("operator running");
        let pid = child.id().expect("pid").to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success());
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(exit)) => exit,
            other => panic!(
                "the operator did not exit within {timeout:?} of SIGTERM: {other:?}\n{}",
                self.operator_log()
            ),
        }
    }

    /// A call to the control plane as this test's organization: (status, JSON body or null).
    pub async fn cp(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let http = reqwest::Client::new();
        let mut req = http
            .request(method.parse().expect("method"), format!("{}{path}", self.control_plane_url))
            .header("Authorization", format!("UserKey {}", kubiya_cp_emulator::token(&self.org)));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("control-plane call");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// Sets (or, with `None`, removes) an annotation on the named Environment.
    pub async fn annotate(&self, name: &str, key: &str, value: Option<&str>) {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        self.envs.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    }

    /// The Events recorded for the named Environment, as (reason, note).
    pub async fn events(&self, name: &str) -> Vec<(String, String)> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = kube::api::ListParams::default().fields(&format!("regarding.name={name}"));
        let list = api.list(&lp).await.expect("list events");
        list.items.into_iter().map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default())).collect()
    }

    /// Waits until an Event with this reason is recorded for the named Environment; returns its note.
    pub async fn wait_event(&self, name: &str, reason: &str) -> String {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some((_, note)) = self.events(name).await.into_iter().find(|(r, _)| r == reason) {
                return note;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {reason} Event for {name}: {:?}\noperator log:\n{}",
                self.events(name).await,
                self.operator_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operator's `/metrics`, at the address it logged.
    pub async fn metrics(&self) -> String {
        self.http_get("/metrics").await
    }

    /// The operator's `/readyz` answer.
    pub async fn readyz(&self) -> String {
        self.http_get("/readyz").await
    }

    async fn http_get(&self, path: &str) -> String {
        http_get(&self.log, path).await
    }

    /// The operator's log so far (for assertions on what it printed).
    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Creates an Environment in this test's namespace.
    pub async fn create(&self, name: &str, spec: EnvironmentSpec) -> Environment {
        self.envs
            .create(&PostParams::default(), &Environment::new(name, spec))
            .await
            .expect("create Environment")
    }

    /// Creates an Environment with annotations in this test's namespace.
    pub async fn create_annotated(
        &self,
        name: &str,
        annotations: &[(&str, &str)],
        spec: EnvironmentSpec,
    ) -> Environment {
        let mut env = Environment::new(name, spec);
        env.metadata.annotations =
            Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        self.envs.create(&PostParams::default(), &env).await.expect("create Environment")
    }

    /// Waits until `cond` holds for the named Environment, failing the test after [`TIMEOUT`] with
    /// the object's last state and the operator's log.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        cond: impl Fn(&Environment) -> bool + Send + 'static,
    ) -> Environment {
        self.wait_for_in(&self.envs, name, what, cond).await
    }

    /// [`TestBed::wait_for`] for an Environment of `envs` (another namespace of the test).
    pub async fn wait_for_in(
        &self,
        envs: &Api<Environment>,
        name: &str,
        what: &str,
        cond: impl Fn(&Environment) -> bool + Send + 'static,
    ) -> Environment {
        let fut = await_condition(envs.clone(), name, move |o: Option<&Environment>| o.is_some_and(&cond));
        match tokio::time::timeout(TIMEOUT, fut).await {
            Ok(Ok(Some(env))) => env,
            other => {
                let now = envs.get_opt(name).await.ok().flatten();
                panic!(
                    "timed out waiting for {name} to be {what} ({other:?}); last seen: {}\noperator log:\n{}",
                    serde_json::to_string_pretty(&now.map(|e| e.status)).unwrap_or_default(),
                    self.operator_log()
                );
            }
        }
    }

    /// Waits until the named Environment no longer exists.
    pub async fn wait_gone(&self, name: &str) {
        let Some(env) = self.envs.get_opt(name).await.expect("get") else {
            return;
        };
        let uid = env.metadata.uid.clone().unwrap_or_default();
        let fut = await_condition(self.envs.clone(), name, conditions::is_deleted(&uid));
        if tokio::time::timeout(TIMEOUT, fut).await.is_err() {
            panic!("timed out waiting for {name} to be deleted\noperator log:\n{}", self.operator_log());
        }
    }

    /// How many calls the emulator has answered on `route` (e.g. `PATCH /api/v1/environments/{id}`).
    pub fn calls(&self, route: &str) -> u64 {
        self.emulator.calls().get(route).copied().unwrap_or(0)
    }

    /// The emulator's environments of this test's organization.
    pub fn remote(&self) -> Vec<serde_json::Value> {
        self.emulator.environments(&self.org)
    }

    /// The emulator's environment with this name, if any.
    pub fn remote_named(&self, name: &str) -> Option<serde_json::Value> {
        self.remote().into_iter().find(|e| e["name"] == name)
    }
}

impl Drop for TestBed {
    /// Deletes the test's namespaces, best effort and without waiting: `kubectl delete` goes on
    /// after the test, and its process, ended. (Environments still holding the operator's
    /// finalizer keep their namespace Terminating; the API server of the run is stopped anyway.)
    fn drop(&mut self) {
        let Some(kubectl) = std::env::var_os(KUBECTL_VAR) else { return };
        let _ = std::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "namespace", "--wait=false", "--ignore-not-found", "--request-timeout=10s"])
            .args(&self.owned_namespaces)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

/// GET `path` from the HTTP server of the operator that logs to `log`, at the address it logged.
pub async fn http_get(log: &std::path::Path, path: &str) -> String {
    try_http_get(log, path).await.expect("the operator logs its metrics address and answers")
}

/// Same, `None` while the operator has not started serving.
pub async fn try_http_get(log: &std::path::Path, path: &str) -> Option<String> {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let addr = log
        .lines()
        // The newest: a restarted operator appends to the same log.
        .rfind(|l| l.contains("serving /metrics"))
        // `address=…` in human logs, `"address":"…"` in JSON ones.
        .and_then(|l| l.split("address=").nth(1).or_else(|| l.split("\"address\":\"").nth(1)))
        .and_then(|a| a.split([' ', '"']).next())?
        .to_owned();
    reqwest::get(format!("http://{addr}{path}")).await.ok()?.text().await.ok()
}

/// Waits until `check` holds, polling every 100 ms, failing the test after [`TIMEOUT`].
pub async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until_within(what, TIMEOUT, check).await
}

/// Same, with another timeout.
pub async fn wait_until_within<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a namespace that must not exist yet: a test's namespace is its own, and a name
/// collision would silently share it with another test.
pub async fn create_namespace(client: &Client, name: &str) {
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace(name)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            panic!("namespace {name} exists already: another test has the same name")
        }
        Err(e) => panic!("create namespace {name}: {e}"),
    }
}

/// Creates a namespace with a fixed name that tests share on purpose (`kubiya-system` of the
/// install manifests); one that exists already is fine. It is never deleted.
pub async fn ensure_namespace(client: &Client, name: &str) {
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace(name)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create namespace {name}: {e}"),
    }
}

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: kube::api::ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
        ..Default::default()
    }
}

/// The sum of the samples in a `/metrics` text whose series starts with `series` (name and
/// leading labels).
pub fn metric_sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Phase Ready with condition Ready=True.
pub fn is_ready(env: &Environment) -> bool {
    phase(env) == Some(Phase::Ready) && condition(env, "Ready").as_deref() == Some("True")
}

/// The phase in the status, if any.
pub fn phase(env: &Environment) -> Option<Phase> {
    env.status.as_ref().and_then(|s| s.phase)
}

/// The status of the condition `type_`, if present.
pub fn condition(env: &Environment, type_: &str) -> Option<String> {
    env.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

/// The kubeconfig the operator runs with: the test API server's operator identity, beside the
/// admin kubeconfig the tests use.
pub fn operator_kubeconfig(admin: &std::path::Path) -> PathBuf {
    admin.with_file_name("operator-kubeconfig")
}

pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os(KUBECONFIG_VAR) {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "{KUBECONFIG_VAR} is not set: end-to-end tests run only against the local test API \
             server; run them with `make test` (tests/run.sh)"
        ),
    }
}

/// A client for a test API server, after checking that it is one.
pub async fn test_client(path: &std::path::Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read test kubeconfig");
    let context = kubeconfig.current_context.clone().unwrap_or_default();
    let server = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_default();
    assert!(
        context == TEST_CONTEXT && server.starts_with("https://127.0.0.1:"),
        "refusing to run: {path:?} is not the local test API server (context {context:?}, server {server:?})"
    );
    let options = KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Installs the CRDs users install, from `crds/`, once per test process.
pub async fn install_crd(client: Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for text in [
        include_str!("../../../crds/environment.yaml"),
        include_str!("../../../crds/connection.yaml"),
        include_str!("../../../crds/clusterconnection.yaml"),
        include_str!("../../../crds/workerqueue.yaml"),
    ] {
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(text).expect("a CRD of crds/");
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &PatchParams::apply("kubiya-operator-tests").force(), &Patch::Apply(&crd))
            .await
            .expect("install CRD");
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(TIMEOUT, established)
            .await
            .expect("CRD established in time")
            .expect("watch CRD");
    }
}

/// An emulator whose environments are ready at once (no provisioning).
pub fn ready_now() -> kubiya_cp_emulator::Config {
    kubiya_cp_emulator::Config { provisioning: Duration::ZERO, ..kubiya_cp_emulator::Config::default() }
}

/// Stalled with this reason.
pub fn stalled_with(reason: &'static str) -> impl Fn(&Environment) -> bool {
    move |e| {
        e.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == reason)
        })
    }
}

/// `status.message`, or empty.
pub fn message(e: &Environment) -> String {
    e.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default()
}

/// `status.environmentId`; fails the test without one.
pub fn id_of(e: &Environment) -> String {
    e.status.as_ref().and_then(|s| s.environment_id.clone()).expect("environment id")
}
