//! Connections and ClusterConnections for the tests: their Secrets, the objects, and waits on
//! their status.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubiya_operator::resource::{
    ClusterConnection, ClusterConnectionSpec, Connection, ConnectionKind, ConnectionRef, ConnectionSpec,
    EnvironmentSpec, NamespacedSecretKeyRef, SecretKeyRef,
};

use super::{TIMEOUT, TestBed, ready_now};

/// An operator with no API key of its own: every Environment needs a connection.
pub async fn keyless(name: &str) -> TestBed {
    let mut bed = TestBed::without_operator(name, ready_now()).await;
    bed.operator_env.push(("KUBIYA_API_KEY", String::new()));
    bed.operator_env.push(("KUBIYA_RESYNC_INTERVAL", "2s".into()));
    bed.start_operator();
    bed
}

pub async fn put_secret(bed: &TestBed, namespace: &str, name: &str, key: &str) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        string_data: Some(BTreeMap::from([("api-key".to_owned(), key.to_owned())])),
        ..Default::default()
    };
    let api: Api<Secret> = Api::namespaced(bed.client.clone(), namespace);
    api.patch(name, &PatchParams::apply("tests").force(), &Patch::Apply(&secret)).await.expect("secret");
}

pub async fn connection(bed: &TestBed, name: &str, secret: &str) {
    let spec = ConnectionSpec {
        base_url: Some(bed.control_plane_url.clone()),
        api_key_secret_ref: SecretKeyRef { name: secret.into(), key: "api-key".into() },
        max_concurrent_requests: None,
    };
    let api: Api<Connection> = Api::namespaced(bed.client.clone(), &bed.namespace);
    api.create(&PostParams::default(), &Connection::new(name, spec)).await.expect("connection");
}

/// Creates a ClusterConnection to the test's control plane, with the key in the Secret `secret`
/// of the test's namespace; returns the API to reach it.
pub async fn cluster_connection(
    bed: &TestBed,
    name: &str,
    secret: &str,
    namespace_selector: Option<LabelSelector>,
    allow_adoption: bool,
) -> Api<ClusterConnection> {
    let spec = ClusterConnectionSpec {
        base_url: Some(bed.control_plane_url.clone()),
        api_key_secret_ref: NamespacedSecretKeyRef {
            namespace: bed.namespace.clone(),
            name: secret.into(),
            key: "api-key".into(),
        },
        namespace_selector,
        allow_adoption,
        max_concurrent_requests: None,
    };
    let api: Api<ClusterConnection> = Api::all(bed.client.clone());
    api.create(&PostParams::default(), &ClusterConnection::new(name, spec))
        .await
        .expect("cluster connection");
    api
}

pub fn using(kind: ConnectionKind, name: &str) -> EnvironmentSpec {
    EnvironmentSpec { connection_ref: Some(ConnectionRef { kind, name: name.into() }), ..Default::default() }
}

pub fn condition_is(
    c: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
    status: &str,
    reason: &str,
) -> bool {
    c.iter().any(|c| c.type_ == type_ && c.status == status && (reason.is_empty() || c.reason == reason))
}

/// Waits until the Connection `name` satisfies `cond`.
pub async fn wait_connection(
    bed: &TestBed,
    name: &str,
    what: &str,
    cond: impl Fn(&Connection) -> bool,
) -> Connection {
    wait_connection_in(bed, &bed.namespace, name, what, cond).await
}

/// [`wait_connection`] for a Connection of `namespace` (another namespace of the test).
pub async fn wait_connection_in(
    bed: &TestBed,
    namespace: &str,
    name: &str,
    what: &str,
    cond: impl Fn(&Connection) -> bool,
) -> Connection {
    let api: Api<Connection> = Api::namespaced(bed.client.clone(), namespace);
    let mut last = None;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let now = api.get_opt(name).await.expect("get connection");
        if let Some(c) = now.as_ref().filter(|c| cond(c)) {
            return c.clone();
        }
        last = now.or(last);
        assert!(
            tokio::time::Instant::now() < deadline,
            "Connection {name} never {what}: {:?}\n{}",
            last.and_then(|c| c.status),
            bed.operator_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn connection_ready(c: &Connection) -> bool {
    c.status.as_ref().is_some_and(|s| condition_is(&s.conditions, "Ready", "True", ""))
}
