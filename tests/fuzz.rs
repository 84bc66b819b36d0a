//! Property tests (bounded fuzzing, run by `make test`): whatever the control plane might answer
//! is read as sent or refused, an error answer is quoted as one bounded line, and the spec →
//! request mapping is total and converges.

use std::sync::Arc;
use std::time::Duration;

use kubiya_operator::controlplane::{
    ApiKey, Client, ClientConfig, Error, RemoteEnvironment, WorkerCommand, error_detail, sanitize,
};
use kubiya_operator::reconcile::desired;
use kubiya_operator::reconcile::ownership;
use kubiya_operator::resource::{
    DeletionPolicy, Environment, EnvironmentSpec, ExecutionEnvironment, RemoteState,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
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
    "kubiya.ai/owner",
    "uid",
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

/// A worker token put into generated answers: it must never show in a `Debug` (a log line, an
/// error). No generated string contains it by chance.
const SENTINEL: &str = "wt-sentinel-5ec2e7-worker-token";

/// The value of `key` in `o`, `null` when absent (where the wire types take their default).
fn at<'a>(o: &'a Map<String, Value>, key: &str) -> &'a Value {
    o.get(key).unwrap_or(&Value::Null)
}

/// `v`, or `empty` for `null`: what a field read with `null_as_default` holds.
fn or_empty(v: &Value, empty: Value) -> Value {
    if v.is_null() { empty } else { v.clone() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the control plane answers, parsing either fails or yields exactly what was sent:
    /// nothing invented, nothing dropped, no secret in a `Debug`.
    #[test]
    fn responses_of_any_shape_parse_to_what_was_sent_or_fail_cleanly(mut v in json()) {
        if let Value::Object(o) = &mut v {
            for key in ["worker_token", "command"] {
                if let Some(t @ Value::String(_)) = o.get_mut(key) {
                    *t = json!(SENTINEL);
                }
            }
        }
        let bytes = serde_json::to_vec(&v).unwrap();
        // What was sent, as read back (floats as the parser reads them).
        let sent: Value = serde_json::from_slice(&bytes).unwrap();

        let env = serde_json::from_slice::<RemoteEnvironment>(&bytes);
        // (serde also reads a struct from an array of its fields in order: not checked here.)
        prop_assert!(env.is_err() || sent.is_object() || sent.is_array(), "parsed from {sent}");
        if let (Ok(env), Value::Object(o)) = (&env, &sent) {
            prop_assert_eq!(at(o, "id"), &json!(env.id));
            prop_assert_eq!(at(o, "name"), &json!(env.name));
            prop_assert_eq!(at(o, "display_name"), &json!(env.display_name));
            prop_assert_eq!(at(o, "description"), &json!(env.description));
            prop_assert_eq!(at(o, "error_message"), &json!(env.error_message));
            prop_assert_eq!(or_empty(at(o, "status"), json!("")), json!(env.status));
            prop_assert_eq!(or_empty(at(o, "tags"), json!([])), json!(env.tags));
            prop_assert_eq!(or_empty(at(o, "settings"), json!({})), Value::Object(env.settings.clone()));
            if let Value::Object(e) = or_empty(at(o, "execution_environment"), json!({})) {
                let got = serde_json::to_value(&env.execution_environment).unwrap();
                prop_assert_eq!(or_empty(at(&e, "env_vars"), json!({})), got["env_vars"].clone());
                prop_assert_eq!(or_empty(at(&e, "secrets"), json!([])), got["secrets"].clone());
                prop_assert_eq!(or_empty(at(&e, "integration_ids"), json!([])), got["integration_ids"].clone());
                prop_assert_eq!(or_empty(at(&e, "mcp_servers"), json!({})), got["mcp_servers"].clone());
            }
            prop_assert_eq!(at(o, "worker_token").as_str(), env.worker_token.as_ref().map(|t| t.expose()));
            prop_assert_eq!(env.can_register(), matches!(env.status.as_str(), "ready" | "active"));
            let marker = env.settings.get("kubiya.ai/owner").and_then(|m| m.get("uid")).and_then(Value::as_str);
            let read = ownership::Marker::read(&env.settings);
            prop_assert!(read.is_none() || marker.is_some_and(|u| !u.is_empty()), "a marker needs a uid");
        }
        if let Ok(env) = &env {
            prop_assert!(!format!("{env:?}").contains(SENTINEL), "the worker token in {env:?}");
        }

        let command = serde_json::from_slice::<WorkerCommand>(&bytes);
        prop_assert!(command.is_err() || sent.is_object() || sent.is_array(), "parsed from {sent}");
        if let (Ok(c), Value::Object(o)) = (&command, &sent) {
            prop_assert_eq!(at(o, "worker_token").as_str(), Some(c.worker_token.expose()));
            prop_assert_eq!(at(o, "command").as_str(), Some(c.command.expose()));
            prop_assert_eq!(at(o, "environment_name"), &json!(c.environment_name));
            prop_assert_eq!(or_empty(at(o, "can_register"), json!(false)), json!(c.can_register));
        }
        if let Ok(c) = &command {
            prop_assert!(!format!("{c:?}").contains(SENTINEL), "the worker token in {c:?}");
        }

        // A list holds exactly its elements, each read as it would be alone.
        if let Ok(list) = serde_json::from_slice::<Vec<RemoteEnvironment>>(&bytes) {
            let alone: Option<Vec<RemoteEnvironment>> = sent
                .as_array()
                .and_then(|a| a.iter().map(|e| serde_json::from_value(e.clone()).ok()).collect());
            prop_assert_eq!(Some(list), alone);
        }

        // The server's `{"detail": "…"}` is read as it is; a string, number, … has no detail.
        match &sent {
            Value::Object(o) => {
                if let Value::String(detail) = at(o, "detail") {
                    prop_assert_eq!(error_detail(&bytes), Some(detail.clone()));
                }
            }
            Value::Array(_) => {}
            _ => prop_assert_eq!(error_detail(&bytes), None),
        }
    }

    /// Bytes that are not JSON are never taken for an answer, nor quoted as an error's detail.
    #[test]
    fn arbitrary_bytes_parse_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if serde_json::from_slice::<Value>(&bytes).is_err() {
            prop_assert!(serde_json::from_slice::<RemoteEnvironment>(&bytes).is_err());
            prop_assert!(serde_json::from_slice::<WorkerCommand>(&bytes).is_err());
            prop_assert_eq!(error_detail(&bytes), None);
        }
    }
}

/// Longest detail an error quotes, plus the `…` marking a cut.
const MAX_QUOTED: usize = kubiya_operator::controlplane::MAX_DETAIL + '…'.len_utf8();

/// Text as the real server puts in `detail`: often several lines (a database error is followed by
/// its SQL statement and the failing row) and long.
fn detail_text() -> impl Strategy<Value = String> {
    prop_oneof!["(?s).{0,400}", "[a-z \\n\\r\\t]{0,700}", Just("é".repeat(400))]
}

/// An error answer's body: the server's `{"detail": …}` in each of its shapes, or anything.
fn error_body() -> impl Strategy<Value = Vec<u8>> {
    let detail = prop_oneof![
        detail_text().prop_map(Value::String),
        (detail_text(), detail_text()).prop_map(|(m, h)| json!({"message": m, "hint": h})),
        prop::collection::vec((prop::collection::vec(detail_text(), 0..3), detail_text()), 0..4).prop_map(
            |items| json!(
                items.into_iter().map(|(loc, msg)| json!({"loc": loc, "msg": msg})).collect::<Vec<_>>()
            )
        ),
        json(),
    ];
    prop_oneof![
        3 => detail.prop_map(|d| serde_json::to_vec(&json!({"detail": d})).unwrap()),
        1 => json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// A server that answers `GET …/{status}-{hex of the body}` with that status and body.
async fn echo_server() -> url::Url {
    async fn answer(uri: axum::http::Uri) -> (axum::http::StatusCode, Vec<u8>) {
        let last = uri.path().rsplit('/').next().unwrap_or_default();
        let (status, hex) = last.split_once('-').unwrap();
        let body =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        (status.parse().unwrap(), body)
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap()).parse().unwrap();
    tokio::spawn(axum::serve(listener, axum::Router::new().fallback(answer)).into_future());
    url
}

/// Whatever the body of an error answer, the error quotes at most one bounded line of it: it
/// goes into status, Events and logs, and the lines after the first can hold SQL and the worker
/// token. Checked through the client, on non-retried statuses.
#[test]
fn error_answers_quote_one_bounded_line_of_any_body() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        Client::new(ClientConfig {
            base_url: echo_server().await,
            api_key: ApiKey::new("k"),
            timeout: Duration::from_secs(5),
            max_concurrent: 1,
            metrics: Arc::default(),
            connection: "operator".into(),
        })
        .unwrap()
    });
    let statuses = proptest::sample::select(vec![400u16, 401, 403, 404, 409, 422]);
    let config = ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() };
    TestRunner::new(config)
        .run(&(statuses, error_body()), |(status, body)| {
            let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
            let Err(error) = rt.block_on(client.get(&format!("{status}-{hex}"))) else {
                panic!("a {status} answer taken for an environment");
            };
            let text = error.to_string();
            prop_assert!(!text.contains('\n'), "{text:?}");
            let Error::Api { status: got, detail, .. } = error else { panic!("not an answer: {text}") };
            prop_assert_eq!(got, status);
            prop_assert!(!detail.contains('\n') && detail.len() <= MAX_QUOTED, "{detail:?}");
            match serde_json::from_slice::<Value>(&body) {
                // A one-line detail that fits is quoted as it is.
                // A string detail is quoted through the sanitiser (first line, no control
                // characters, tokens redacted, bounded), or the status reason if nothing is left.
                Ok(sent) => {
                    if let Some(line) = sent["detail"].as_str() {
                        let clean = sanitize(line);
                        if clean.trim().is_empty() {
                            let reason = axum::http::StatusCode::from_u16(status).unwrap().canonical_reason();
                            prop_assert_eq!(Some(detail.as_str()), reason);
                        } else {
                            prop_assert_eq!(&detail, &clean);
                        }
                    }
                }
                // Anything else is not quoted: the status says what happened.
                Err(_) => {
                    let reason = axum::http::StatusCode::from_u16(status).unwrap().canonical_reason();
                    prop_assert_eq!(Some(detail.as_str()), reason);
                }
            }
            Ok(())
        })
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the server's text: one line, no control character, bounded; plain words kept as
    /// they are, and anything token-shaped (UUIDs, JWT parts, keys) never shown.
    #[test]
    fn the_sanitiser_keeps_plain_words_and_nothing_token_shaped(
        words in prop::collection::vec("[a-z]{1,12}|[A-Z][a-z]{0,10}|[0-9]{1,4}|[(),.:;\"'!?/]", 0..30),
        noise in "\\PC{0,60}|[\\x00-\\x1f\\u{2028}\\u{2029}]{1,3}",
        token in "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}|eyJ[A-Za-z0-9_-]{20,40}",
    ) {
        let plain = words.join(" ");
        let clean = sanitize(&plain);
        prop_assert!(!clean.chars().any(char::is_control));
        if plain.len() <= MAX_QUOTED - '…'.len_utf8() {
            prop_assert_eq!(&clean, plain.trim());
        }
        let dirty = format!("{plain} {token} {noise}");
        let clean = sanitize(&dirty);
        prop_assert!(!clean.contains(&token), "{clean:?}");
        prop_assert!(!clean.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'), "{clean:?}");
        prop_assert!(clean.len() <= MAX_QUOTED, "{} bytes", clean.len());
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
                    management_policy: Default::default(),
                    worker_secret: None,
                    connection_ref: None,
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
        let owner = ownership::Owner {
            cluster: "c".into(),
            uid: "uid".into(),
            namespace: "ns".into(),
            name: "fuzz".into(),
        };
        let desired = desired::desired(&env, &owner);
        let body = serde_json::to_value(&desired).unwrap();
        prop_assert!(body.get("status").is_none(), "a create never carries the enabled state");
        let mut remote = stored(&body);
        // A created environment differs at most by the enabled state, which one PATCH sets.
        let changes = desired::diff(&desired, &remote);
        if changes.is_empty() {
            prop_assert!(env.spec.state.is_none());
        } else {
            prop_assert_eq!(changes.names(), "status");
            remote.status = changes.body()["status"].as_str().unwrap().to_owned();
            prop_assert!(desired::diff(&desired, &remote).is_empty());
        }
    }
}
