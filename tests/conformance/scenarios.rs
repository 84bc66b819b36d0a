//! The request scenarios, one fresh organization each. Every route and every status code of the
//! contract in docs/development.md, "Against the real control-plane server", is exercised here.

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
}
