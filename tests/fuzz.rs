//! Property tests (bounded fuzzing, run by `make test`): parsing whatever the control plane might
//! answer never panics, and the spec → request mapping is total and converges.

use kubiya_operator::controlplane::{RemoteEnvironment, WorkerCommand, error_detail};
use kubiya_operator::reconcile::plan::{self, Plan};
use kubiya_operator::resource::{
    DeletionPolicy, Environment, EnvironmentSpec, ExecutionEnvironment, RemoteState,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Field names of the API's objects, so that generated JSON often hits the typed paths.
const KEYS: &[&str] = &[
    "id",
    "name",
    "display_name",
    "description",
    "tags",
    "settings",
    "status",
    "error_message",
    "execution_environment",
    "env_vars",
    "secrets",
    "integration_ids",
    "mcp_servers",
    "worker_token",
    "environment_name",
    "command",
    "can_register",
    "detail",
    "loc",
    "msg",
    "message",
    "error",
    "hint",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => proptest::sample::select(KEYS).prop_map(str::to_owned), 1 => ".{0,12}"]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..10)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn responses_of_any_shape_parse_or_fail_cleanly(v in json()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(env) = serde_json::from_slice::<RemoteEnvironment>(&bytes) {
            let _ = env.can_register();
            let _ = plan::owner_uid(&env);
        }
        let _ = serde_json::from_slice::<WorkerCommand>(&bytes);
        let _ = error_detail(&bytes);
        let _ = serde_json::from_slice::<Vec<RemoteEnvironment>>(&bytes);
    }

    #[test]
    fn arbitrary_bytes_parse_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<RemoteEnvironment>(&bytes);
        let _ = error_detail(&bytes);
    }
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,40}"
}

fn spec() -> impl Strategy<Value = EnvironmentSpec> {
    let exec = (
        prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,12}", text(), 0..5),
        prop::collection::vec(text(), 0..5),
        prop::collection::vec(text(), 0..5),
        prop::option::of(prop::collection::vec((key(), json()), 0..4)),
    )
        .prop_map(|(env_vars, secrets, integration_ids, mcp)| ExecutionEnvironment {
            env_vars,
            secrets,
            integration_ids,
            mcp_servers: mcp.map(|kv| kv.into_iter().collect::<Map<_, _>>()),
        });
    (
        prop::option::of("\\PC{2,100}"),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::collection::vec(text(), 0..6),
        prop::option::of(1i32..=10),
        prop::option::of(prop::collection::vec((key(), json()), 0..4)),
        prop::option::of(exec),
        prop::option::of(prop_oneof![Just(RemoteState::Active), Just(RemoteState::Inactive)]),
    )
        .prop_map(
            |(name, display_name, description, tags, priority, settings, execution_environment, state)| {
                EnvironmentSpec {
                    name,
                    display_name,
                    description,
                    tags,
                    priority,
                    policy_ids: vec![],
                    settings: settings.map(|kv| kv.into_iter().collect::<Map<_, _>>()),
                    execution_environment,
                    state,
                    deletion_policy: DeletionPolicy::Delete,
                    worker_secret: None,
                }
            },
        )
}

/// What the server stores and returns for a create body (reordered lists and keys included).
fn stored(body: &Value) -> RemoteEnvironment {
    let mut doc = body.as_object().cloned().unwrap_or_default();
    doc.insert("id".into(), json!("00000000-0000-4000-8000-000000000000"));
    doc.insert("status".into(), json!("ready"));
    if let Some(Value::Array(tags)) = doc.get_mut("tags") {
        tags.reverse();
    }
    serde_json::from_value(Value::Object(doc)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_spec_maps_to_a_request_that_converges(spec in spec()) {
        let mut env = Environment::new("fuzz", spec);
        env.metadata.namespace = Some("ns".into());
        env.metadata.uid = Some("uid".into());
        let desired = plan::desired(&env);
        let body = serde_json::to_value(&desired).unwrap();
        prop_assert!(body.get("status").is_none(), "a create never carries the enabled state");
        let mut remote = stored(&body);
        // A created environment differs at most by the enabled state, which one PATCH sets.
        match plan::plan(&desired, Some(&remote)) {
            Plan::InSync => prop_assert!(env.spec.state.is_none()),
            Plan::Update(fields) => {
                prop_assert_eq!(fields.keys().collect::<Vec<_>>(), vec!["status"]);
                remote.status = fields["status"].as_str().unwrap().to_owned();
                prop_assert_eq!(plan::plan(&desired, Some(&remote)), Plan::InSync);
            }
            Plan::Create => prop_assert!(false, "an existing environment is never created again"),
        }
    }
}
