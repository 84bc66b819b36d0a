//! The request scenarios, one fresh organization each. Every route and every status code of the
//! contract in docs/development.md, "Against the real control-plane server", is exercised here:
//! the environments, then their worker queues (the `queue-*` scenarios).

use serde_json::json;

use super::harness::{Auth, Scenario, step};

/// The `error_message` of an organization's first environment when the server cannot reach its
/// workflow engine (as in the test bed, where nothing listens on 127.0.0.1:7233).
pub const FIRST_ENVIRONMENT_ERROR: &str = "Failed to start provisioning: Failed client connect: Server connection error: \
    tonic::transport::Error(Transport, ConnectError(ConnectError(\"tcp connect error\", 127.0.0.1:7233, \
    Os { code: 111, kind: ConnectionRefused, message: \"Connection refused\" })))";

const ENVS: &str = "/api/v1/environments";

fn one(id: &str) -> String {
    format!("{ENVS}/{{{id}}}")
}

const QUEUES: &str = "/api/v1/worker-queues";

/// The worker queues of the environment saved as `env`.
fn queues_of(env: &str) -> String {
    format!("{ENVS}/{{{env}}}/worker-queues")
}

/// The worker queue saved as `id`.
fn queue(id: &str) -> String {
    format!("{QUEUES}/{{{id}}}")
}

/// Opens a queue scenario: the list creates `default` (so that the next environment is `ready`
/// rather than the failed first one), then an environment `qe`, saved as `e`.
fn with_environment(mut steps: Vec<super::harness::Step>) -> Vec<super::harness::Step> {
    let mut all = vec![step("GET", ENVS), step("POST", ENVS).json(json!({"name": "qe"})).save("e")];
    all.append(&mut steps);
    all
}

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "health",
            steps: vec![
                step("GET", "/api/health").auth(Auth::None),
                step("GET", "/api/ready").auth(Auth::None),
            ],
        },
        Scenario {
            name: "auth",
            steps: vec![
                step("GET", ENVS).auth(Auth::None),
                step("POST", ENVS).auth(Auth::None).raw("{\"name\":"),
                step("GET", ENVS).auth(Auth::Garbage),
                step("GET", ENVS).auth(Auth::LowercaseBearer),
                step("GET", ENVS).auth(Auth::NoEmailClaim),
                step("GET", ENVS).auth(Auth::Raw),
                step("GET", ENVS).auth(Auth::UserKeyHeader),
                step("GET", ENVS).auth(Auth::Bearer),
                step("GET", ENVS).auth(Auth::UserKey),
            ],
        },
        Scenario {
            name: "first-environment",
            steps: vec![
                step("POST", ENVS).json(json!({"name": "first"})).save("a"),
                step("GET", &one("a")).settle(),
                step("GET", &format!("{}/worker-command", one("a"))),
            ],
        },
        Scenario {
            name: "list-creates-default",
            steps: vec![
                step("GET", ENVS),
                step("GET", &format!("{ENVS}?status_filter=active")),
                step("GET", &format!("{ENVS}?status_filter=ready")),
                step("GET", &format!("{ENVS}?status_filter=bogus")),
                step("POST", ENVS)
                    .json(json!({"name": "second", "display_name": "Second", "description": "d", "tags": ["b", "a"],
                        "settings": {"k": {"n": 1}}, "execution_environment": {"env_vars": {"A": "1"}, "secrets": ["S"]},
                        "priority": 3, "policy_ids": ["p"], "status": "inactive", "unknown": 1}))
                    .save("b"),
                step("GET", &format!("{ENVS}?status_filter=ready")),
                step("GET", ENVS),
                step("GET", &format!("{}/worker-command", one("b"))),
            ],
        },
        Scenario {
            name: "create-validation",
            steps: vec![
                step("GET", ENVS),
                step("POST", ENVS).raw("{\"name\":"),
                step("POST", ENVS).json(json!([])),
                step("POST", ENVS).json(json!("x")),
                step("POST", ENVS).json(json!({})),
                step("POST", ENVS).json(json!({"name": "x"})),
                step("POST", ENVS).json(json!({"name": "n".repeat(101)})),
                step("POST", ENVS).json(json!({"name": 12})),
                step("POST", ENVS).json(json!({"name": "tt", "tags": "prod"})),
                step("POST", ENVS).json(json!({"name": "tt", "tags": ["ok", 1]})),
                step("POST", ENVS).json(json!({"name": "tt", "settings": []})),
                step("POST", ENVS).json(json!({"name": "tt", "execution_environment": "x"})),
                step("POST", ENVS).json(json!({"name": "tt", "execution_environment": {"env_vars": {"A": 1}}})),
                step("POST", ENVS).json(json!({"name": "tt", "execution_environment": {"secrets": "S"}})),
                step("POST", ENVS).json(json!({"name": "n".repeat(100)})),
                step("POST", ENVS).json(json!({"name": "with spaces ünïcødé"})),
            ],
        },
        Scenario {
            name: "names-and-tenancy",
            steps: vec![
                step("GET", ENVS),
                step("POST", ENVS).json(json!({"name": "dup"})).save("a"),
                step("POST", ENVS).json(json!({"name": "dup"})),
                step("GET", &one("a")).auth(Auth::OtherOrg),
                step("PATCH", &one("a")).auth(Auth::OtherOrg).json(json!({"description": "x"})),
                step("DELETE", &one("a")).auth(Auth::OtherOrg),
                step("GET", &format!("{}/worker-command", one("a"))).auth(Auth::OtherOrg),
                step("GET", &format!("{ENVS}/00000000-0000-4000-8000-000000000000")),
                step("GET", &format!("{ENVS}/not-a-uuid")),
                step("PATCH", &format!("{ENVS}/not-a-uuid")).json(json!({"description": "x"})),
                step("DELETE", &format!("{ENVS}/not-a-uuid")),
            ],
        },
        Scenario {
            name: "patch",
            steps: vec![
                step("GET", ENVS),
                step("POST", ENVS).json(json!({"name": "pp", "description": "d",
                    "execution_environment": {"secrets": ["S"], "integration_ids": ["i"]}})).save("a"),
                step("POST", ENVS).json(json!({"name": "other"})),
                step("PATCH", &one("a")).json(json!({"description": "changed", "priority": 5, "unknown": 1,
                    "id": "00000000-0000-4000-8000-000000000000", "organization_id": "x",
                    "worker_token": "00000000-0000-4000-8000-000000000001"})),
                step("PATCH", &one("a")).json(json!({"description": null})),
                step("PATCH", &one("a")).json(json!({"execution_environment": {"env_vars": {"A": "1"}}})),
                step("PATCH", &one("a")).json(json!({"tags": ["x"], "settings": {"a": 1}, "display_name": "D"})),
                // Explicit nulls of the NOT NULL columns: emptied, not nulled.
                step("PATCH", &one("a")).json(json!({"tags": null, "settings": null, "execution_environment": null})),
                // A settings object with the owner marker released, as an Orphan deletion writes it.
                step("PATCH", &one("a")).json(json!({"settings": {"kubiya.ai/owner":
                    {"cluster": "c", "uid": "u", "namespace": "ns", "name": "n", "released": true}}})),
                step("PATCH", &one("a")).json(json!({"status": "inactive"})),
                step("PATCH", &one("a")).json(json!({"status": "bogus"})),
                step("PATCH", &one("a")).json(json!({"name": "other"})),
                step("PATCH", &one("a")).json(json!({"name": null})),
                step("PATCH", &one("a")).json(json!({"name": ""})),
                step("PATCH", &one("a")).raw("{\"name\":"),
                step("GET", &one("a")),
            ],
        },
        Scenario {
            // Each field at the bound the Environment CRD puts on it (src/resource/environment.rs,
            // `limits`): the real server must take them all and give them back unchanged.
            name: "largest-fields",
            steps: vec![
                step("GET", ENVS),
                step("POST", ENVS).json(largest_environment()).save("a"),
                step("GET", &one("a")),
            ],
        },
        Scenario {
            name: "delete",
            steps: vec![
                step("GET", ENVS).save("default"),
                step("POST", ENVS).json(json!({"name": "del"})).save("a"),
                step("DELETE", &one("a")),
                step("DELETE", &one("a")),
                step("GET", &one("a")),
                step("GET", &format!("{}/worker-command", one("a"))),
                step("DELETE", &one("default")),
            ],
        },
        Scenario {
            name: "default-by-name",
            steps: vec![
                step("GET", ENVS).save("d"),
                step("PATCH", &one("d")).json(json!({"name": "renamed"})),
                step("GET", ENVS),
                step("DELETE", &one("d")),
                step("GET", ENVS),
            ],
        },
        Scenario {
            name: "id-forms-and-keys",
            steps: vec![
                step("GET", ENVS).auth(Auth::UnknownSchemeAndUserKeyHeader),
                step("POST", ENVS).auth(Auth::TokenId).json(json!({"name": "ids"})).save("a"),
                step("GET", &format!("{ENVS}/{{a|upper}}")),
                step("GET", &format!("{ENVS}/{{a|simple}}")),
                step("GET", ENVS).auth(Auth::TokenId),
            ],
        },
        Scenario {
            name: "routes",
            steps: vec![
                step("GET", ENVS),
                step("POST", ENVS).json(json!({"name": "rr"})).save("a"),
                step("GET", &format!("{ENVS}/")),
                step("POST", &format!("{ENVS}/")).json(json!({"name": "zz"})),
                step("GET", &format!("{}/", one("a"))),
                step("PUT", &one("a")).json(json!({"name": "rr"})),
                step("PUT", ENVS).json(json!({"name": "rr"})),
                step("DELETE", ENVS),
                step("GET", "/api/v1/nope"),
            ],
        },
    ]
    .into_iter()
    .chain(queue_scenarios())
    .collect()
}

/// An environment with every field at the CRD's bound: 100 characters of name, 255 of display
/// name, 4096 of description; 64 tags, 256 vault secrets and integration ids, one item of each
/// 253 characters long; 256 env vars, one value of 32 KiB; 256 keys of settings and of MCP servers.
fn largest_environment() -> serde_json::Value {
    let list = |prefix: &str, n: usize| -> Vec<String> {
        let mut items: Vec<String> = (1..n).map(|i| format!("{prefix}{i:03}")).collect();
        items.push(prefix.repeat(253 / prefix.len() + 1)[..253].to_owned());
        items
    };
    let keys = |prefix: &str| -> serde_json::Map<String, serde_json::Value> {
        (0..256).map(|i| (format!("{prefix}{i:03}"), json!({"n": i}))).collect()
    };
    let mut env_vars: serde_json::Map<String, serde_json::Value> =
        (1..256).map(|i| (format!("V{i:03}"), json!("v"))).collect();
    env_vars.insert("LONG".to_owned(), json!("x".repeat(32 * 1024)));
    json!({
        "name": "n".repeat(100),
        "display_name": "D".repeat(255),
        "description": "d".repeat(4096),
        "tags": list("t", 64),
        "settings": keys("s"),
        "execution_environment": {
            "env_vars": env_vars,
            "secrets": list("S", 256),
            "integration_ids": list("i", 256),
            "mcp_servers": keys("m"),
        },
    })
}

fn queue_scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "queue-create",
            steps: with_environment(vec![
                // Every field.
                step("POST", &queues_of("e"))
                    .json(json!({"name": "gpu", "display_name": "GPU", "description": "d", "max_workers": 3,
                        "heartbeat_interval": 30, "tags": ["gpu", "a"],
                        "settings": {"k": {"n": 1}, "enable_local_litellm_proxy": false}}))
                    .save("q"),
                // Defaults: display name = name, heartbeat 60, no limit, active.
                step("POST", &queues_of("e")).json(json!({"name": "cpu"})),
                step("POST", &queues_of("e")).json(json!({"name": "cpu"})),
                // Ignored: status, ids, ephemeral, unknown keys; an empty display name is the name.
                step("POST", &queues_of("e")).json(json!({"name": "ign", "display_name": "", "status": "inactive",
                    "id": "00000000-0000-4000-8000-000000000000", "environment_id": "x", "ephemeral": true,
                    "organization_id": "x", "active_workers": 5, "task_queue_name": "t", "unknown": 1})),
                // Lax integers, and the bounds themselves.
                step("POST", &queues_of("e")).json(json!({"name": "lax", "max_workers": "3", "heartbeat_interval": 30.0})),
                step("POST", &queues_of("e")).json(json!({"name": "lo", "max_workers": 1, "heartbeat_interval": 10})),
                step("POST", &queues_of("e")).json(json!({"name": "hi", "max_workers": 2_147_483_647, "heartbeat_interval": 300})),
                step("POST", &queues_of("e")).json(json!({"name": "huge", "max_workers": 2_147_483_648_u64})),
                step("POST", &queues_of("e")).json(json!({"name": "n".repeat(50), "max_workers": null})),
                step("POST", &queues_of("e")).json(json!({"name": "with spaces ünïcødé"})),
                // A valid LiteLLM proxy configuration, with keys QueueSettings does not know.
                step("POST", &queues_of("e")).json(json!({"name": "llm", "settings": {"enable_local_litellm_proxy": true,
                    "litellm_config": {"model_list": [{"model_name": "m", "litellm_params": {"model": "x"}}]},
                    "local_proxy_timeout_seconds": "10", "x": 1}})),
                // The same name in another environment.
                step("POST", ENVS).json(json!({"name": "qf"})).save("f"),
                step("POST", &queues_of("f")).json(json!({"name": "gpu"})),
                step("POST", &queues_of("e")).json(json!({"name": "zz"})).auth(Auth::OtherOrg),
                step("POST", &format!("{ENVS}/00000000-0000-4000-8000-000000000000/worker-queues")).json(json!({"name": "zz"})),
                step("POST", &format!("{ENVS}/not-a-uuid/worker-queues")).json(json!({"name": "zz"})),
                step("POST", &format!("{ENVS}/{{e|upper}}/worker-queues")).json(json!({"name": "up"})),
                step("POST", &queues_of("e")).json(json!({"name": "zz"})).auth(Auth::None),
                step("POST", &queues_of("e")).auth(Auth::None).raw("{\"name\":"),
                step("POST", &queues_of("e")).auth(Auth::TokenId).json(json!({"name": "mine"})),
                step("GET", &queues_of("e")),
            ]),
        },
        Scenario {
            name: "queue-validation",
            steps: with_environment(vec![
                step("POST", &queues_of("e")).raw("{\"name\":"),
                step("POST", &queues_of("e")).json(json!([])),
                step("POST", &queues_of("e")).json(json!({})),
                step("POST", &queues_of("e")).json(json!({"name": "x"})),
                step("POST", &queues_of("e")).json(json!({"name": "n".repeat(51)})),
                step("POST", &queues_of("e")).json(json!({"name": 12})),
                step("POST", &queues_of("e")).json(json!({"name": null})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "display_name": 1, "description": 2})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "max_workers": 0})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "max_workers": -1})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "max_workers": 2.5})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "max_workers": "abc"})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "max_workers": []})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "heartbeat_interval": 5})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "heartbeat_interval": 301})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "heartbeat_interval": null})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "tags": "gpu"})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "tags": ["ok", 1, null]})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "tags": null})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": []})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": null})),
                // Several at once: in the model's field order, whatever the body's.
                step("POST", &queues_of("e")).json(json!({"tags": "x", "settings": 0, "heartbeat_interval": 5, "max_workers": 0, "name": "x"})),
                // The settings validator: QueueSettings, then the LiteLLM rule.
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"enable_local_litellm_proxy": true}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"enable_local_litellm_proxy": "yes", "unknown": 1}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"enable_local_litellm_proxy": true, "litellm_config": null}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"enable_local_litellm_proxy": "nope"}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"enable_local_litellm_proxy": 2}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"enable_local_litellm_proxy": 0.5}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"local_proxy_timeout_seconds": 1}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"local_proxy_timeout_seconds": 61, "local_proxy_max_retries": 0}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"local_proxy_timeout_seconds": 10.5, "local_proxy_max_retries": "x"}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"litellm_config": "a".repeat(88)}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"litellm_config": {}}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"litellm_config": {"model_list": "x"}}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"litellm_config": {"model_list": ["x", {"model_name": 1}]}}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"litellm_config": {"model_list": [],
                    "litellm_settings": [], "environment_variables": "x"}}})),
                step("POST", &queues_of("e")).json(json!({"name": "aa", "settings": {"enable_local_litellm_proxy": {"a": [1, 2.5, null, true, "it's"]}}})),
                // Validation comes before the environment is looked up.
                step("POST", &format!("{ENVS}/not-a-uuid/worker-queues")).json(json!({"name": "a"})),
                step("GET", &queues_of("e")),
            ]),
        },
        Scenario {
            name: "queue-read",
            steps: with_environment(vec![
                step("POST", &queues_of("e")).json(json!({"name": "rr", "max_workers": 2, "tags": ["t"]})).save("q"),
                step("GET", &queue("q")),
                // The id as written is the task queue name.
                step("GET", &format!("{QUEUES}/{{q|upper}}")),
                step("GET", &format!("{QUEUES}/{{q|simple}}")),
                step("GET", &queue("q")).auth(Auth::OtherOrg),
                step("GET", &format!("{QUEUES}/00000000-0000-4000-8000-000000000000")),
                step("GET", &format!("{QUEUES}/not-a-uuid")),
                step("GET", &queue("q")).auth(Auth::None),
                step("GET", &format!("{}/worker-command", queue("q"))),
                step("GET", &format!("{QUEUES}/{{q|upper}}/worker-command")),
                step("GET", &format!("{}/worker-command", queue("q"))).auth(Auth::OtherOrg),
                step("GET", &format!("{QUEUES}/00000000-0000-4000-8000-000000000000/worker-command")),
                step("GET", &format!("{QUEUES}/not-a-uuid/worker-command")),
                step("GET", &queues_of("e")),
                step("GET", &queues_of("e")).auth(Auth::OtherOrg),
                step("GET", &format!("{ENVS}/00000000-0000-4000-8000-000000000000/worker-queues")),
                step("GET", &format!("{ENVS}/not-a-uuid/worker-queues")),
                step("GET", QUEUES),
                step("GET", QUEUES).auth(Auth::OtherOrg),
                step("GET", QUEUES).auth(Auth::Garbage),
                // An environment without queues.
                step("POST", ENVS).json(json!({"name": "empty"})).save("f"),
                step("GET", &queues_of("f")),
                // The routes' edges: trailing slashes, other methods.
                step("GET", &format!("{QUEUES}/")),
                step("GET", &format!("{}/", queue("q"))),
                step("POST", &format!("{}/", queues_of("e"))).json(json!({"name": "zz"})),
                step("PUT", &queue("q")).json(json!({"name": "zz"})),
                step("POST", QUEUES).json(json!({"name": "zz"})),
                step("PUT", &queues_of("e")).json(json!({"name": "zz"})),
                step("DELETE", &queues_of("e")),
                step("POST", &format!("{}/worker-command", queue("q"))),
            ]),
        },
        Scenario {
            name: "queue-patch",
            steps: with_environment(vec![
                step("POST", &queues_of("e"))
                    .json(json!({"name": "pp", "description": "d", "max_workers": 3, "tags": ["t"], "settings": {"a": 1}}))
                    .save("q"),
                step("POST", &queues_of("e")).json(json!({"name": "other"})),
                step("PATCH", &queue("q")).json(json!({"name": "renamed"})),
                step("PATCH", &queue("q")).json(json!({"display_name": "D"})),
                step("PATCH", &queue("q")).json(json!({"description": "dd"})),
                step("PATCH", &queue("q")).json(json!({"max_workers": 7})),
                step("PATCH", &queue("q")).json(json!({"max_workers": "8"})),
                step("PATCH", &queue("q")).json(json!({"heartbeat_interval": 20})),
                step("PATCH", &queue("q")).json(json!({"tags": ["z", "y"]})),
                step("PATCH", &queue("q")).json(json!({"settings": {"b": {"c": 2}}})),
                step("PATCH", &queue("q")).json(json!({"settings": {}})),
                step("PATCH", &queue("q")).json(json!({})),
                // Ignored: what the model does not have.
                step("PATCH", &queue("q")).json(json!({"id": "00000000-0000-4000-8000-000000000000",
                    "environment_id": "00000000-0000-4000-8000-000000000001", "organization_id": "x",
                    "active_workers": 5, "task_queue_name": "t", "created_by": "x", "unknown": 1})),
                // Explicit nulls of the nullable columns the response allows: set to null.
                step("PATCH", &queue("q")).json(json!({"max_workers": null, "description": null, "display_name": null})),
                // Status: any string; only "active" can register workers.
                step("PATCH", &queue("q")).json(json!({"status": "whatever"})),
                step("GET", &format!("{}/worker-command", queue("q"))),
                step("PATCH", &queue("q")).json(json!({"status": "inactive"})),
                step("PATCH", &queue("q")).json(json!({"status": "active"})),
                step("GET", &format!("{}/worker-command", queue("q"))),
                // The database's refusals: a taken name, NOT NULL columns, an integer column.
                step("PATCH", &queue("q")).json(json!({"name": "other"})),
                step("PATCH", &queue("q")).json(json!({"name": null})),
                step("PATCH", &queue("q")).json(json!({"status": null})),
                step("PATCH", &queue("q")).json(json!({"name": null, "status": null, "tags": null})),
                step("PATCH", &queue("q")).json(json!({"max_workers": 2_147_483_648_u64})),
                // The model's.
                step("PATCH", &queue("q")).json(json!({"name": ""})),
                step("PATCH", &queue("q")).json(json!({"name": "n".repeat(51)})),
                step("PATCH", &queue("q")).json(json!({"max_workers": 0})),
                step("PATCH", &queue("q")).json(json!({"heartbeat_interval": 301})),
                step("PATCH", &queue("q")).json(json!({"heartbeat_interval": 5, "status": 5, "tags": "x"})),
                step("PATCH", &queue("q")).json(json!({"settings": {"enable_local_litellm_proxy": true}})),
                step("PATCH", &queue("q")).json(json!({"settings": {"local_proxy_max_retries": 11}})),
                step("PATCH", &queue("q")).json(json!({"settings": []})),
                step("PATCH", &queue("q")).raw("{\"name\":"),
                step("PATCH", &queue("q")).json(json!([])),
                // Other ids.
                step("PATCH", &queue("q")).auth(Auth::OtherOrg).json(json!({"description": "x"})),
                step("PATCH", &format!("{QUEUES}/00000000-0000-4000-8000-000000000000")).json(json!({"description": "x"})),
                step("PATCH", &format!("{QUEUES}/not-a-uuid")).json(json!({"description": "x"})),
                step("PATCH", &format!("{QUEUES}/not-a-uuid")).json(json!({"name": "x"})),
                step("PATCH", &format!("{QUEUES}/{{q|upper}}")).json(json!({"description": "upper"})),
                step("PATCH", &queue("q")).auth(Auth::None).json(json!({"description": "x"})),
                step("GET", &queue("q")),
                step("GET", &queues_of("e")),
            ]),
        },
        Scenario {
            name: "queue-patch-nulls",
            steps: with_environment(vec![
                step("POST", &queues_of("e")).json(json!({"name": "nn", "tags": ["t"], "settings": {"a": 1}})).save("q"),
                step("POST", &queues_of("e")).json(json!({"name": "fine"})),
                // Nullable columns, non-null in the response model: stored, then every read is a 500.
                step("PATCH", &queue("q")).json(json!({"tags": null})),
                step("GET", &queue("q")),
                step("GET", &queues_of("e")),
                step("GET", QUEUES),
                step("GET", &format!("{}/worker-command", queue("q"))),
                step("PATCH", &queue("q")).json(json!({"description": "still"})),
                step("PATCH", &queue("q")).json(json!({"heartbeat_interval": null, "settings": null})),
                step("GET", &queue("q")),
                // Mended by setting them again.
                step("PATCH", &queue("q")).json(json!({"tags": [], "heartbeat_interval": 45})),
                step("GET", &queue("q")),
                step("PATCH", &queue("q")).json(json!({"settings": {}})),
                step("GET", &queue("q")),
                step("GET", &queues_of("e")),
                // A poisoned queue can still be deleted.
                step("PATCH", &queue("q")).json(json!({"tags": null, "settings": null, "heartbeat_interval": null,
                    "max_workers": null, "description": null, "display_name": null})),
                step("DELETE", &queue("q")),
                step("GET", &queue("q")),
                step("GET", &queues_of("e")),
            ]),
        },
        Scenario {
            name: "queue-delete",
            steps: with_environment(vec![
                step("POST", &queues_of("e")).json(json!({"name": "del"})).save("a"),
                step("POST", &queues_of("e")).json(json!({"name": "keep"})).save("b"),
                step("DELETE", &queue("b")).auth(Auth::OtherOrg),
                step("DELETE", &queue("a")),
                step("DELETE", &queue("a")),
                step("GET", &queue("a")),
                step("PATCH", &queue("a")).json(json!({"description": "x"})),
                step("GET", &format!("{}/worker-command", queue("a"))),
                step("DELETE", &format!("{QUEUES}/not-a-uuid")),
                step("DELETE", &format!("{QUEUES}/00000000-0000-4000-8000-000000000000")),
                step("DELETE", &queue("b")).auth(Auth::None),
                // A queue named default can be created, but not deleted while it has that name.
                step("POST", &queues_of("e")).json(json!({"name": "default"})).save("d"),
                step("DELETE", &queue("d")),
                step("PATCH", &queue("d")).json(json!({"name": "was-default"})),
                step("DELETE", &queue("d")),
                // A queue renamed to default cannot be deleted either.
                step("PATCH", &queue("b")).json(json!({"name": "default"})),
                step("DELETE", &queue("b")),
                // The default environment takes queues too.
                step("GET", ENVS).save("default"),
                step("POST", &queues_of("default")).json(json!({"name": "default"})),
                step("GET", &queues_of("default")),
                step("GET", &queues_of("e")),
            ]),
        },
        Scenario {
            name: "queue-ephemeral",
            steps: with_environment(vec![
                step("POST", &queues_of("e")).json(json!({"name": "local-exec"})).save("l"),
                step("POST", &queues_of("e")).json(json!({"name": "local-exec-1"})),
                step("POST", &queues_of("e")).json(json!({"name": "local-execution"})),
                step("POST", &queues_of("e")).json(json!({"name": "Local-Exec"})),
                step("POST", &queues_of("e")).json(json!({"name": "visible"})).save("v"),
                step("GET", &queues_of("e")),
                step("GET", QUEUES),
                // Hidden from the lists only: the queue itself answers.
                step("GET", &queue("l")),
                step("GET", &format!("{}/worker-command", queue("l"))),
                // Ephemeral for good: renamed, it stays hidden.
                step("PATCH", &queue("l")).json(json!({"name": "was-local"})),
                step("GET", &queues_of("e")),
                // Renamed to local-exec…, a queue is hidden too; renamed back, shown again.
                step("PATCH", &queue("v")).json(json!({"name": "local-exec-v"})),
                step("GET", &queues_of("e")),
                step("PATCH", &queue("v")).json(json!({"name": "visible"})),
                step("GET", &queues_of("e")),
                // Hidden names are taken all the same.
                step("POST", &queues_of("e")).json(json!({"name": "local-exec-1"})),
                step("DELETE", &queue("l")),
                step("GET", &queue("l")),
            ]),
        },
        Scenario {
            name: "queue-cascade",
            steps: with_environment(vec![
                step("POST", &queues_of("e")).json(json!({"name": "q1"})).save("q1"),
                step("POST", &queues_of("e")).json(json!({"name": "q2"})).save("q2"),
                step("POST", ENVS).json(json!({"name": "qf"})).save("f"),
                step("POST", &queues_of("f")).json(json!({"name": "q3"})).save("q3"),
                step("GET", QUEUES),
                // The environment goes, and its queues with it (the database's ON DELETE CASCADE).
                step("DELETE", &one("e")),
                step("GET", &queue("q1")),
                step("GET", &format!("{}/worker-command", queue("q2"))),
                step("PATCH", &queue("q2")).json(json!({"description": "x"})),
                step("DELETE", &queue("q1")),
                step("GET", &queues_of("e")),
                step("POST", &queues_of("e")).json(json!({"name": "q1"})),
                step("GET", QUEUES),
                step("GET", &queue("q3")),
                // A new environment of the same name starts without queues.
                step("POST", ENVS).json(json!({"name": "qe"})).save("g"),
                step("GET", &queues_of("g")),
                step("POST", &queues_of("g")).json(json!({"name": "q1"})),
            ]),
        },
    ]
}
