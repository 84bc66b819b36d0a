//! The install paths render to valid objects: the kustomize bases (with kubectl's kustomize) and
//! the Helm chart (with helm) for the value sets users pick. Kinds the test API server serves are
//! applied with server-side dry-run; the others (Deployment, Service, RBAC) are decoded with
//! k8s-openapi and must round-trip unchanged, which catches unknown and misspelt fields; the
//! alert rules pass `promtool check rules`.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::support::{TestBed, ensure_namespace};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = "deploy/helm/kubiya-operator";

/// A tool `tests/run.sh` provides, by its variable.
fn tool(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) => PathBuf::from(p),
        None => panic!("{var} is not set: run the tests with `make test` (tests/run.sh), which installs it"),
    }
}

/// Runs a command in the repository; its stdout, or its stderr as the error.
fn run(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).current_dir(ROOT).output().expect("run");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kustomize(dir: &str) -> Vec<Value> {
    let out = run(&tool("KUBIYA_TEST_KUBECTL"), &["kustomize", dir])
        .unwrap_or_else(|e| panic!("kustomize {dir}: {e}"));
    documents(&out)
}

fn helm(args: &[&str]) -> Result<Vec<Value>, String> {
    let mut all =
        vec!["template", "kubiya-operator", CHART, "--namespace", "kubiya-system", "--include-crds"];
    all.extend_from_slice(args);
    run(&tool("KUBIYA_TEST_HELM"), &all).map(|out| documents(&out))
}

/// Drops nulls (YAML's empty values), which a typed round trip leaves out.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Decodes `obj` as `T` and back: anything not in the Kubernetes schema of `T` is lost, and fails.
fn round_trips<T: DeserializeOwned + Serialize>(obj: &Value) -> T {
    let what = format!("{} {}", obj["kind"], obj["metadata"]["name"]);
    let typed: T = serde_json::from_value(obj.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).expect("serialize");
    assert_eq!(without_nulls(&back), without_nulls(obj), "{what} has fields its schema does not know");
    typed
}

fn no_wildcards(rules: &[PolicyRule], what: &str) {
    for r in rules {
        let words = r.verbs.iter().chain(r.resources.iter().flatten()).chain(r.api_groups.iter().flatten());
        assert!(words.clone().all(|w| w != "*"), "{what} has a wildcard: {r:?}");
    }
}

/// What the operator does in the watched namespaces: (group, resource, verbs). Checked against
/// what the suite's operators did, by [`rbac_grants_exactly_what_the_suite_used`].
const NEEDS: &[(&str, &str, &[&str])] = &[
    ("kubiya.ai", "environments", &["get", "list", "watch", "patch"]),
    ("kubiya.ai", "environments/status", &["patch"]),
    ("kubiya.ai", "workerqueues", &["get", "list", "watch", "patch"]),
    ("kubiya.ai", "workerqueues/status", &["patch"]),
    ("", "secrets", &["get", "list", "watch", "patch", "delete"]),
    ("apps", "deployments", &["get", "list", "watch", "patch", "delete"]),
    ("events.k8s.io", "events", &["create", "patch"]),
    ("kubiya.ai", "connections", &["list", "watch", "patch"]),
    ("kubiya.ai", "connections/status", &["patch"]),
];

/// What it does with cluster objects: (group, resource, verb, name if only that one).
const CLUSTER_NEEDS: &[(&str, &str, &str, Option<&str>)] = &[
    ("", "namespaces", "get", None),
    ("apiextensions.k8s.io", "customresourcedefinitions", "get", Some("environments.kubiya.ai")),
    ("apiextensions.k8s.io", "customresourcedefinitions", "get", Some("connections.kubiya.ai")),
    ("apiextensions.k8s.io", "customresourcedefinitions", "get", Some("clusterconnections.kubiya.ai")),
    ("apiextensions.k8s.io", "customresourcedefinitions", "get", Some("workerqueues.kubiya.ai")),
    ("kubiya.ai", "clusterconnections", "list", None),
    ("kubiya.ai", "clusterconnections", "watch", None),
    ("kubiya.ai", "clusterconnections", "patch", None),
    ("kubiya.ai", "clusterconnections/status", "patch", None),
];

fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str, name: Option<&str>) -> bool {
    rules.iter().any(|r| {
        let has = |list: &Option<Vec<String>>, x: &str| list.iter().flatten().any(|v| v == x);
        has(&r.api_groups, group)
            && has(&r.resources, resource)
            && r.verbs.iter().any(|v| v == verb)
            && (r.resource_names.as_ref().is_none_or(|n| n.is_empty())
                || name.is_some_and(|name| has(&r.resource_names, name)))
    })
}

/// The RBAC of a rendering lets its ServiceAccount do what the operator does, where it does
/// it: Environments, Secrets and Events in every watched namespace (or cluster-wide), and its
/// Lease in its own namespace.
fn rbac_covers_the_operator(objects: &[Value], source: &str) {
    let of_kind = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind);
    let deployment = of_kind("Deployment").next().expect("a Deployment");
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let pod = &deployment["spec"]["template"]["spec"];
    let account = pod["serviceAccountName"].as_str().unwrap_or("default").to_owned();
    let env = |name: &str| {
        pod["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
    };
    let lease = env("KUBIYA_LEASE_NAME").unwrap_or("kubiya-operator").to_owned();
    let watched: Vec<String> =
        env("KUBIYA_WATCH_NAMESPACES").map(|n| n.split(',').map(str::to_owned).collect()).unwrap_or_default();

    // The rules granted to the ServiceAccount in `ns` (None: cluster-wide).
    let granted = |ns: Option<&str>| -> Vec<PolicyRule> {
        let (binding_kind, role_kind) =
            if ns.is_some() { ("RoleBinding", "Role") } else { ("ClusterRoleBinding", "ClusterRole") };
        let mut rules = Vec::new();
        for b in of_kind(binding_kind).filter(|b| ns.is_none() || b["metadata"]["namespace"].as_str() == ns) {
            let bound = b["subjects"].as_array().into_iter().flatten().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == account.as_str()
                    && s["namespace"] == namespace.as_str()
            });
            if !bound || b["roleRef"]["kind"] != role_kind {
                continue;
            }
            let role = of_kind(role_kind).find(|r| {
                r["metadata"]["name"] == b["roleRef"]["name"]
                    && (ns.is_none() || r["metadata"]["namespace"].as_str() == ns)
            });
            if let Some(role) = role {
                rules
                    .extend(serde_json::from_value::<Vec<PolicyRule>>(role["rules"].clone()).expect("rules"));
            }
        }
        rules
    };
    let scopes: Vec<Option<&str>> =
        if watched.is_empty() { vec![None] } else { watched.iter().map(|n| Some(n.as_str())).collect() };
    for scope in scopes {
        let rules = granted(scope);
        for (group, resource, verbs) in NEEDS {
            for verb in *verbs {
                assert!(
                    allows(&rules, group, resource, verb, None),
                    "{source}: no {verb} on {group}/{resource} in {}",
                    scope.unwrap_or("all namespaces")
                );
            }
        }
    }
    let cluster = granted(None);
    for (group, resource, verb, name) in CLUSTER_NEEDS {
        assert!(allows(&cluster, group, resource, verb, *name), "{source}: no {verb} on {resource} {name:?}");
    }
    if !watched.is_empty() {
        // Cluster-wide, only cluster objects: nothing of the namespaced kinds.
        for r in &cluster {
            for res in r.resources.iter().flatten() {
                assert!(
                    [
                        "namespaces",
                        "customresourcedefinitions",
                        "clusterconnections",
                        "clusterconnections/status"
                    ]
                    .contains(&res.as_str()),
                    "{source}: cluster-wide access to {res}: {r:?}"
                );
            }
        }
    }
    let rules = granted(Some(&namespace));
    assert!(
        allows(&rules, "coordination.k8s.io", "leases", "create", None),
        "{source}: cannot create its Lease"
    );
    for verb in ["get", "patch", "list", "watch"] {
        assert!(
            allows(&rules, "coordination.k8s.io", "leases", verb, Some(&lease)),
            "{source}: no {verb} on its Lease {lease} in {namespace}"
        );
    }
}

/// Checks one rendering: returns the kinds it held.
async fn check(client: &kube::Client, objects: &[Value], source: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    for obj in objects {
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let what = format!("{source}: {kind} {name}");
        match kind.as_str() {
            "Deployment" => {
                let d: Deployment = round_trips(obj);
                let pod = d.spec.and_then(|s| s.template.spec).expect("pod spec");
                let psc = pod.security_context.expect("pod securityContext");
                assert_eq!(psc.run_as_non_root, Some(true), "{what}");
                assert_eq!(psc.seccomp_profile.map(|p| p.type_).as_deref(), Some("RuntimeDefault"), "{what}");
                for c in &pod.containers {
                    let sc = c.security_context.clone().expect("container securityContext");
                    assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
                    assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
                    assert_eq!(sc.capabilities.and_then(|c| c.drop), Some(vec!["ALL".into()]), "{what}");
                    assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some(), "{what}: probes");
                    assert!(
                        c.resources.as_ref().and_then(|r| r.requests.as_ref()).is_some(),
                        "{what}: requests"
                    );
                }
            }
            "Service" => drop(round_trips::<Service>(obj)),
            "PodDisruptionBudget" => drop(round_trips::<PodDisruptionBudget>(obj)),
            "ClusterRole" => no_wildcards(&round_trips::<ClusterRole>(obj).rules.unwrap_or_default(), &what),
            "Role" => no_wildcards(&round_trips::<Role>(obj).rules.unwrap_or_default(), &what),
            "ClusterRoleBinding" => drop(round_trips::<ClusterRoleBinding>(obj)),
            "RoleBinding" => drop(round_trips::<RoleBinding>(obj)),
            "PrometheusRule" => {
                let rules = std::env::temp_dir().join(format!("kubiya-rules-{}.yaml", fastrand::u32(..)));
                std::fs::write(&rules, serde_yaml_ng::to_string(&obj["spec"]).expect("yaml")).expect("write");
                let checked =
                    run(&tool("KUBIYA_TEST_PROMTOOL"), &["check", "rules", rules.to_str().expect("path")]);
                let _ = std::fs::remove_file(&rules);
                checked.unwrap_or_else(|e| panic!("{what}: promtool check rules: {e}"));
            }
            "ServiceMonitor" => {
                let port = obj["spec"]["endpoints"][0]["port"].as_str();
                assert_eq!(port, Some("metrics"), "{what}: scrapes the Service's metrics port");
            }
            _ => dry_run(client, obj, &what).await,
        }
        kinds.push(kind);
    }
    kinds
}

/// Server-side apply with dry-run: the API server validates the object (schema, CRD schema for
/// Environments) and stores nothing.
async fn dry_run(client: &kube::Client, obj: &Value, what: &str) {
    let (group, version) = match obj["apiVersion"].as_str().unwrap_or_default().split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), obj["apiVersion"].as_str().unwrap_or_default().to_owned()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, obj["kind"].as_str().unwrap_or_default());
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{what}: the test API server does not serve this kind ({e})"));
    let api: Api<DynamicObject> = match (caps.scope, obj["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        (kube::discovery::Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let params = PatchParams::apply("kubiya-install-test").dry_run().force();
    if let Err(e) = api.patch(name, &params, &Patch::Apply(obj)).await {
        panic!("{what}: rejected by the API server: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_bases_render_valid_objects() {
    // The bed installs the CRD, which the example Environments need.
    let bed = TestBed::without_operator("install", Default::default()).await;
    ensure_namespace(&bed.client, "kubiya-system").await;
    let base = kustomize("deploy/kustomize/base");
    let kinds = check(&bed.client, &base, "kustomize base").await;
    rbac_covers_the_operator(&base, "kustomize base");
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "the base has no {kind}: {kinds:?}");
    }
    let monitoring =
        check(&bed.client, &kustomize("deploy/kustomize/monitoring"), "kustomize monitoring").await;
    assert!(
        monitoring.iter().any(|k| k == "PrometheusRule") && monitoring.iter().any(|k| k == "ServiceMonitor")
    );

    // The dashboard's queries are valid PromQL: promtool checks them as recording rules, with
    // Grafana's variables filled in.
    let dashboard = std::fs::read_to_string(format!(
        "{ROOT}/deploy/helm/kubiya-operator/dashboards/kubiya-operator.json"
    ))
    .expect("dashboard");
    let dashboard: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(|e| e.replace("$__rate_interval", "5m").replace('$', "")))
        .collect();
    assert!(exprs.len() >= 9, "the dashboard has {} queries", exprs.len());
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": e}))
        .collect();
    let file = std::env::temp_dir().join(format!("kubiya-dashboard-{}.yaml", fastrand::u32(..)));
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, serde_yaml_ng::to_string(&groups).expect("yaml")).expect("write");
    let checked = run(&tool("KUBIYA_TEST_PROMTOOL"), &["check", "rules", file.to_str().expect("path")]);
    let _ = std::fs::remove_file(&file);
    checked.unwrap_or_else(|e| panic!("dashboard queries: {e}"));

    // The CRD copies are the generated ones.
    for kind in ["environment", "connection", "clusterconnection", "workerqueue"] {
        let crd = std::fs::read_to_string(format!("{ROOT}/crds/{kind}.yaml")).expect("crd");
        for copy in [
            format!("deploy/kustomize/base/{kind}-crd.yaml"),
            format!("deploy/helm/kubiya-operator/crds/{kind}.yaml"),
        ] {
            let text = std::fs::read_to_string(format!("{ROOT}/{copy}")).expect("copy");
            assert!(text == crd, "{copy} differs from crds/{kind}.yaml: run `make crd`");
        }
    }

    // Both install paths pin the worker image the operator defaults to.
    let image = kubiya_operator::config::DEFAULT_WORKER_IMAGE;
    for file in ["deploy/helm/kubiya-operator/values.yaml", "deploy/kustomize/base/deployment.yaml"] {
        let text = std::fs::read_to_string(format!("{ROOT}/{file}")).expect("install file");
        assert!(text.contains(image), "{file} does not pin the worker image {image}");
    }

    // The examples are valid Environments (the CRD's schema, server side).
    for entry in std::fs::read_dir(format!("{ROOT}/deploy/examples")).expect("examples") {
        let path = entry.expect("entry").path();
        if path.ends_with("kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for mut obj in documents(&text) {
            if obj["kind"] != "ClusterConnection" {
                obj["metadata"]["namespace"] = bed.namespace.clone().into();
            }
            dry_run(&bed.client, &obj, &path.display().to_string()).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helm_chart_renders_valid_objects_for_each_value_set() {
    let bed = TestBed::without_operator("helm", Default::default()).await;
    for ns in ["kubiya-system", "team-a", "team-b"] {
        ensure_namespace(&bed.client, ns).await;
    }
    let sets: [&[&str]; 4] = [
        &["--set", "apiKey.existingSecret=kubiya-api-key"],
        &[
            "--set",
            "apiKey.existingSecret=kubiya-api-key",
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "labelSelector=shard=a",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "dashboards.enabled=true",
        ],
        &["--set", "apiKey.create=true", "--set", "apiKey.value=not-a-real-key", "--set", "replicaCount=3"],
        // No key of its own: organisations through ClusterConnections only.
        &[
            "--set",
            "clusterConnections[0].name=acme",
            "--set",
            "clusterConnections[0].apiKeySecretRef.name=acme-key",
            "--set",
            "clusterConnections[0].namespaceSelector.matchLabels.kubiya\\.ai/org=acme",
        ],
    ];
    for set in sets {
        let source = format!("helm template {}", set.join(" "));
        let objects = helm(set).unwrap_or_else(|e| panic!("{source}: {e}"));
        let kinds = check(&bed.client, &objects, &source).await;
        rbac_covers_the_operator(&objects, &source);
        let keyless = set.iter().any(|s| s.starts_with("clusterConnections"));
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").expect("a Deployment");
        let has_key = deployment.to_string().contains("KUBIYA_API_KEY_FILE");
        assert_eq!(
            has_key, !keyless,
            "{source}: the operator's own key is mounted when, and only when, given"
        );
        assert_eq!(kinds.iter().any(|k| k == "ClusterConnection"), keyless, "{source}");
        assert!(kinds.iter().any(|k| k == "Deployment"), "{source}: {kinds:?}");
        let scoped = set.iter().any(|s| s.starts_with("watchNamespaces"));
        assert!(kinds.iter().any(|k| k == "ClusterRole"), "{source}: the cluster reads, by name");
        assert_eq!(
            kinds.iter().any(|k| k == "RoleBinding")
                && kinds.iter().filter(|k| *k == "ClusterRoleBinding").count() == 1,
            scoped,
            "{source}: access to namespaced objects cluster-wide only without a namespace list"
        );
        if scoped {
            for k in ["PrometheusRule", "ServiceMonitor", "ConfigMap"] {
                assert!(kinds.iter().any(|x| x == k), "{source}: no {k}");
            }
        }
    }
    let refused = helm(&[]).expect_err("rendering without an API key must fail");
    assert!(refused.contains("no Kubiya API key") && refused.contains("clusterConnections"), "{refused}");
}

/// One request the operator made: (API group, resource[/subresource], verb, object name).
type Request = (String, String, String, Option<String>);

/// What the operators of the whole suite did, from the test API server's audit log (it records
/// the operator's identity only).
fn audited(log: &Path) -> std::collections::BTreeSet<Request> {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["stage"] == "ResponseComplete" && e["responseStatus"]["code"].as_u64().is_some_and(|c| c != 403)
        })
        .filter_map(|e| {
            let o = &e["objectRef"];
            let resource = o["resource"].as_str()?;
            let resource = match o["subresource"].as_str() {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.to_owned(),
            };
            let group = o["apiGroup"].as_str().unwrap_or_default().to_owned();
            Some((group, resource, e["verb"].as_str()?.to_owned(), o["name"].as_str().map(str::to_owned)))
        })
        .collect()
}

/// Least privilege, both ways: each rendering grants every verb the operator used in the suite,
/// and none it never used. Run by `tests/run.sh` after the suite, on its audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs after the whole suite (tests/run.sh), on its audit log"]
async fn rbac_grants_exactly_what_the_suite_used() {
    let log = std::env::var_os("KUBIYA_TEST_AUDIT_LOG").expect("KUBIYA_TEST_AUDIT_LOG");
    let used = audited(Path::new(&log));
    assert!(used.len() > 10, "the audit log holds {} kinds of request: was the suite run?", used.len());
    // The named rules' lists match what was done.
    let kinds: std::collections::BTreeSet<(String, String, String)> =
        used.iter().map(|(g, r, v, _)| (g.clone(), r.clone(), v.clone())).collect();
    let mut expected: std::collections::BTreeSet<(String, String, String)> = NEEDS
        .iter()
        .flat_map(|(g, r, verbs)| verbs.iter().map(|v| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned())))
        .collect();
    expected
        .extend(CLUSTER_NEEDS.iter().map(|(g, r, v, _)| ((*g).to_owned(), (*r).to_owned(), (*v).to_owned())));
    let leases: Vec<_> = kinds.iter().filter(|(g, ..)| g == "coordination.k8s.io").cloned().collect();
    expected.extend(leases);
    assert_eq!(kinds, expected, "what the operator did (left) against what the RBAC checks assume (right)");

    let renderings = [
        ("kustomize base", kustomize("deploy/kustomize/base")),
        ("helm", helm(&["--set", "apiKey.existingSecret=kubiya-api-key"]).expect("helm")),
    ];
    for (source, objects) in renderings {
        let rules: Vec<PolicyRule> = objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
            .flat_map(|o| serde_json::from_value::<Vec<PolicyRule>>(o["rules"].clone()).expect("rules"))
            .collect();
        for (group, resource, verb, name) in &used {
            assert!(
                allows(&rules, group, resource, verb, name.as_deref()),
                "{source}: the operator did {verb} on {group}/{resource} {name:?}, which its RBAC does not grant: {rules:#?}"
            );
        }
        for rule in &rules {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        let done = used.iter().any(|(g, r, v, n)| {
                            g == group
                                && r == resource
                                && v == verb
                                && rule.resource_names.as_ref().is_none_or(|names| {
                                    names.is_empty() || n.as_ref().is_some_and(|n| names.contains(n))
                                })
                        });
                        assert!(
                            done,
                            "{source} grants {verb} on {group}/{resource}, which the operator never did"
                        );
                    }
                }
            }
        }
    }
}
