//! Property tests (bounded fuzzing, run by `make test`): whatever the control plane might answer
//! is read as sent or refused, an answer cut short, followed by more or of another shape is
//! refused whole and never quoted, an error answer is quoted as one bounded line with no secret
//! in it, and the spec → request mapping is total and converges.

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

/// How a field of a generated answer is drawn.
#[derive(Clone, Copy)]
enum Shape {
    /// Always there, of its type (`id`, `name`).
    Required,
    /// Absent or of its type: a default when absent, but null is refused (`status`).
    Defaulted,
    /// Absent, null or of its type (the fields read with a default for null).
    Nullable,
    /// Absent, null, of its type, or any JSON at all, often of another type.
    Any,
}

/// One field of a generated answer; `None` when absent.
fn field(typed: BoxedStrategy<Value>, shape: Shape) -> BoxedStrategy<Option<Value>> {
    match shape {
        Shape::Required => typed.prop_map(Some).boxed(),
        Shape::Defaulted => prop_oneof![1 => Just(None::<Value>), 3 => typed.prop_map(Some)].boxed(),
        Shape::Nullable => prop_oneof![
            2 => Just(None::<Value>),
            1 => Just(Some(Value::Null)),
            5 => typed.prop_map(Some),
        ]
        .boxed(),
        Shape::Any => prop_oneof![
            2 => Just(None::<Value>),
            1 => Just(Some(Value::Null)),
            6 => typed.prop_map(Some),
            1 => json().prop_map(Some),
        ]
        .boxed(),
    }
}

/// An object of the fields that are there, beside `unknown` ones (which never take a field's name).
fn object_of(fields: Vec<(&str, Option<Value>)>, unknown: Vec<(String, Value)>) -> Value {
    let mut o: Map<String, Value> = unknown.into_iter().collect();
    for (k, v) in fields {
        match v {
            Some(v) => o.insert(k.to_owned(), v),
            None => o.remove(k),
        };
    }
    Value::Object(o)
}

fn a_string() -> BoxedStrategy<Value> {
    ".{0,24}".prop_map(Value::String).boxed()
}

fn strings() -> BoxedStrategy<Value> {
    prop::collection::vec(".{0,12}", 0..4).prop_map(|v| json!(v)).boxed()
}

fn an_object() -> BoxedStrategy<Value> {
    prop::collection::vec((key(), json()), 0..4)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()))
        .boxed()
}

/// Unknown fields, which every answer may carry.
fn unknown() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec(("[a-z_]{1,12}", json()), 0..3)
}

/// An environment as the API answers it. With `valid`, every field is what the API promises (the
/// operator must read it as sent); without, any field may be of another type (read as sent, or
/// refused).
fn environment(valid: bool) -> BoxedStrategy<Value> {
    let (required, defaulted, nullable) = if valid {
        (Shape::Required, Shape::Defaulted, Shape::Nullable)
    } else {
        (Shape::Any, Shape::Any, Shape::Any)
    };
    let status = proptest::sample::select(vec!["ready", "active", "provisioning", "error", "inactive"])
        .prop_map(|s| json!(s))
        .boxed();
    let env_vars = prop::collection::btree_map("[A-Z_]{1,8}", ".{0,12}", 0..4).prop_map(|m| json!(m)).boxed();
    let execution_environment = (
        field(env_vars, nullable),
        field(strings(), nullable),
        field(strings(), nullable),
        field(an_object(), nullable),
    )
        .prop_map(|(env_vars, secrets, integration_ids, mcp_servers)| {
            object_of(
                vec![
                    ("env_vars", env_vars),
                    ("secrets", secrets),
                    ("integration_ids", integration_ids),
                    ("mcp_servers", mcp_servers),
                ],
                vec![],
            )
        })
        .boxed();
    (
        (field(a_string(), required), field(a_string(), required)),
        (field(a_string(), nullable), field(a_string(), nullable), field(a_string(), nullable)),
        (field(strings(), nullable), field(an_object(), nullable), field(status, defaulted)),
        (field(execution_environment, nullable), field(Just(json!(SENTINEL)).boxed(), nullable)),
        unknown(),
    )
        .prop_map(
            |(
                (id, name),
                (display_name, description, error_message),
                (tags, settings, status),
                (exec, token),
                extra,
            )| {
                object_of(
                    vec![
                        ("id", id),
                        ("name", name),
                        ("display_name", display_name),
                        ("description", description),
                        ("error_message", error_message),
                        ("tags", tags),
                        ("settings", settings),
                        ("status", status),
                        ("execution_environment", exec),
                        ("worker_token", token),
                    ],
                    extra,
                )
            },
        )
        .boxed()
}

/// A worker command as the API answers it (with `valid`, as promised; else any field may be off).
fn worker_command(valid: bool) -> BoxedStrategy<Value> {
    let (required, defaulted) =
        if valid { (Shape::Required, Shape::Defaulted) } else { (Shape::Any, Shape::Any) };
    let command = Just(json!(format!("kubiya worker start --token {SENTINEL} --environment e"))).boxed();
    (
        field(Just(json!(SENTINEL)).boxed(), required),
        field(a_string(), required),
        field(command, required),
        field(any::<bool>().prop_map(Value::Bool).boxed(), defaulted),
        unknown(),
    )
        .prop_map(|(worker_token, environment_name, command, can_register, extra)| {
            object_of(
                vec![
                    ("worker_token", worker_token),
                    ("environment_name", environment_name),
                    ("command", command),
                    ("can_register", can_register),
                ],
                extra,
            )
        })
        .boxed()
}

/// Whatever the control plane might answer: any JSON, and (more often) things shaped like its
/// answers, some fields of another type.
fn any_answer() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => json(),
        3 => environment(false),
        1 => worker_command(false),
        1 => prop::collection::vec(environment(false), 0..4).prop_map(Value::Array),
    ]
}

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
    fn responses_of_any_shape_parse_to_what_was_sent_or_fail_cleanly(mut v in any_answer()) {
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
            // Workers can register with what the server calls ready or active, and nothing else.
            prop_assert_eq!(env.can_register(), matches!(at(o, "status").as_str(), Some("ready" | "active")));
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
}

/// What the client must make of a success answer's body.
#[derive(Clone, Debug)]
enum Expect {
    /// Read as this value says.
    Read(Value),
    /// Refused as a whole: not what the API promises.
    Refused,
}

/// Which call is answered.
#[derive(Clone, Copy, Debug)]
enum Call {
    Get,
    WorkerCommand,
}

/// A value that is not a string, nor null: for a field that must be a string.
fn not_a_string() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(Value::Bool),
        Just(json!(["x"])),
        Just(json!({"a": "b"})),
    ]
    .boxed()
}

/// A value that is not a list of strings, nor null: for `tags`.
fn not_strings() -> BoxedStrategy<Value> {
    prop_oneof![
        ".{0,8}".prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!([1])),
        Just(json!({"a": "b"})),
    ]
    .boxed()
}

/// A value that is not an object, nor null (nor a list, which serde reads as a struct's fields in
/// order): for `settings` and `execution_environment`.
fn not_an_object() -> BoxedStrategy<Value> {
    prop_oneof![
        ".{0,8}".prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(Value::Bool),
    ]
    .boxed()
}

/// One field of a valid environment made wrong: gone (`None`) where it is required, or of a type
/// the API never sends there.
fn a_wrong_field() -> BoxedStrategy<(&'static str, Option<Value>)> {
    prop_oneof![
        proptest::sample::select(vec!["id", "name"]).prop_map(|k| (k, None::<Value>)),
        proptest::sample::select(vec!["id", "name", "status"]).prop_map(|k| (k, Some(Value::Null))),
        (
            proptest::sample::select(vec![
                "id",
                "name",
                "display_name",
                "description",
                "error_message",
                "status",
                "worker_token"
            ]),
            not_a_string()
        )
            .prop_map(|(k, v)| (k, Some(v))),
        not_strings().prop_map(|v| ("tags", Some(v))),
        (proptest::sample::select(vec!["settings", "execution_environment"]), not_an_object())
            .prop_map(|(k, v)| (k, Some(v))),
    ]
    .boxed()
}

/// JSON whitespace, which may surround an answer.
fn whitespace() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,8}"
}

/// A success answer's body and what the client must make of it: a valid answer, perhaps wrapped
/// in whitespace (read); cut short, followed by anything that is not whitespace (a second answer
/// included), or valid JSON of another shape (refused).
fn success_body() -> impl Strategy<Value = (Call, Vec<u8>, Expect)> {
    let valid = prop_oneof![
        3 => environment(true).prop_map(|v| (Call::Get, v)),
        1 => worker_command(true).prop_map(|v| (Call::WorkerCommand, v)),
    ]
    .boxed();
    let wrapped = (valid.clone(), whitespace(), whitespace()).prop_map(|((call, v), before, after)| {
        let body = format!("{before}{v}{after}");
        // What was sent, as read back (floats as the parser reads them).
        let sent = serde_json::from_str(&body).unwrap();
        (call, body.into_bytes(), Expect::Read(sent))
    });
    let cut = (valid.clone(), any::<prop::sample::Index>()).prop_map(|((call, v), at)| {
        let mut body = serde_json::to_vec(&v).unwrap();
        body.truncate(at.index(body.len()));
        (call, body, Expect::Refused)
    });
    let garbage = prop::collection::vec(any::<u8>(), 1..32)
        .prop_filter("not only whitespace", |g| g.iter().any(|b| !b" \t\r\n".contains(b)));
    let followed = (
        valid.clone(),
        prop_oneof![garbage.boxed(), valid.prop_map(|(_, v)| v.to_string().into_bytes()).boxed()],
    )
        .prop_map(|((call, v), after)| {
            let mut body = serde_json::to_vec(&v).unwrap();
            body.extend_from_slice(&after);
            (call, body, Expect::Refused)
        });
    let wrong_field = (environment(true), a_wrong_field()).prop_map(|(v, (k, wrong))| {
        let Value::Object(mut o) = v else { unreachable!("an environment is an object") };
        match wrong {
            Some(w) => o.insert(k.to_owned(), w),
            None => o.remove(k),
        };
        (Call::Get, serde_json::to_vec(&Value::Object(o)).unwrap(), Expect::Refused)
    });
    let not_an_answer = (
        prop_oneof![Just(Call::Get), Just(Call::WorkerCommand)],
        prop_oneof![not_an_object(), Just(Value::Null)],
    )
        .prop_map(|(call, v)| (call, serde_json::to_vec(&v).unwrap(), Expect::Refused));
    prop_oneof![
        2 => wrapped,
        2 => cut,
        2 => followed,
        3 => wrong_field,
        1 => not_an_answer,
    ]
}

/// Longest detail an error quotes, plus the `…` marking a cut.
const MAX_QUOTED: usize = kubiya_operator::controlplane::MAX_DETAIL + '…'.len_utf8();

/// An API key (a JWT: three parts, each redacted alone) and a worker token (a UUID), as a
/// server's error text may quote them.
const SECRET_KEY: &str =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJvcmdhbml6YXRpb24iOiJmdXp6In0.c2lnbmF0dXJlLW5vdC12ZXJpZmllZA";
const SECRET_TOKEN: &str = "3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f";

/// The parts of the secrets that must never be quoted.
fn secret_parts() -> impl Iterator<Item = &'static str> {
    SECRET_KEY.split('.').chain([SECRET_TOKEN])
}

/// Text as the real server puts in `detail`: often several lines (a database error is followed by
/// its SQL statement and the failing row) and long.
fn detail_text() -> impl Strategy<Value = String> {
    prop_oneof!["(?s).{0,400}", "[a-z \\n\\r\\t]{0,700}", Just("é".repeat(400))]
}

/// Such text with a secret in it, between two words.
fn detail_with_a_secret() -> impl Strategy<Value = String> {
    (detail_text(), proptest::sample::select(vec![SECRET_KEY, SECRET_TOKEN]), detail_text())
        .prop_map(|(before, secret, after)| format!("{before} {secret} {after}"))
}

/// An error answer's body: the server's `{"detail": …}` in each of its shapes, or anything.
fn error_body() -> impl Strategy<Value = Vec<u8>> {
    let detail = prop_oneof![
        detail_text().prop_map(Value::String),
        detail_with_a_secret().prop_map(Value::String),
        (detail_text(), detail_text()).prop_map(|(m, h)| json!({"message": m, "hint": h})),
        (detail_with_a_secret(), detail_text()).prop_map(|(m, h)| json!({"message": m, "hint": h})),
        prop::collection::vec((prop::collection::vec(detail_text(), 0..3), detail_text()), 0..4).prop_map(
            |items| json!(
                items.into_iter().map(|(loc, msg)| json!({"loc": loc, "msg": msg})).collect::<Vec<_>>()
            )
        ),
        (detail_text(), detail_with_a_secret())
            .prop_map(|(loc, msg)| json!([{"loc": ["body", loc], "msg": msg}])),
        json(),
    ];
    prop_oneof![
        3 => detail.prop_map(|d| serde_json::to_vec(&json!({"detail": d})).unwrap()),
        1 => json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// A server that answers `GET …/{status}-{hex of the body}` (and `…/worker-command` below it)
/// with that status and body.
async fn echo_server() -> url::Url {
    async fn answer(uri: axum::http::Uri) -> (axum::http::StatusCode, Vec<u8>) {
        let path = uri.path().trim_end_matches("/worker-command");
        let last = path.rsplit('/').next().unwrap_or_default();
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

/// A client of the echo server, and the runtime it runs on.
fn echo_client() -> (tokio::runtime::Runtime, Client) {
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
    (rt, client)
}

/// The id that makes the echo server answer `status` with `body`.
fn echo(status: u16, body: &[u8]) -> String {
    let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
    format!("{status}-{hex}")
}

/// A success answer that is not what the API promises, cut short, followed by more, or valid JSON
/// of another shape, is refused as a whole, and the refusal quotes nothing of it (the worker token
/// in it least of all); a valid one is read as it is, whitespace around it or not. Checked
/// through the client.
#[test]
fn success_answers_cut_short_followed_by_more_or_of_another_shape_are_refused_and_never_quoted() {
    let (rt, client) = echo_client();
    let config = ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() };
    TestRunner::new(config)
        .run(&success_body(), |(call, body, expect)| {
            let id = echo(200, &body);
            let refused = match (call, expect) {
                (Call::Get, Expect::Read(sent)) => {
                    let want: RemoteEnvironment = serde_json::from_value(sent).unwrap();
                    let got = rt.block_on(client.get(&id)).map_err(|e| {
                        TestCaseError::fail(format!("a valid answer refused: {e}: {:?}", body_text(&body)))
                    })?;
                    prop_assert_eq!(got, want);
                    return Ok(());
                }
                (Call::WorkerCommand, Expect::Read(sent)) => {
                    let want: WorkerCommand = serde_json::from_value(sent).unwrap();
                    let got = rt.block_on(client.worker_command(&id)).map_err(|e| {
                        TestCaseError::fail(format!("a valid answer refused: {e}: {:?}", body_text(&body)))
                    })?;
                    prop_assert_eq!(worker_command_facts(&got), worker_command_facts(&want));
                    return Ok(());
                }
                (Call::Get, Expect::Refused) => rt.block_on(client.get(&id)).map(|e| format!("{e:?}")),
                (Call::WorkerCommand, Expect::Refused) => {
                    rt.block_on(client.worker_command(&id)).map(|c| format!("{c:?}"))
                }
            };
            let error = match refused {
                Ok(got) => {
                    let body = body_text(&body);
                    return Err(TestCaseError::fail(format!("{body:?} taken for an answer: {got}")));
                }
                Err(error) => error,
            };
            prop_assert!(matches!(error, Error::Decode { .. }), "{error:?}");
            let text = format!("{error} {error:?}{}", sources(&error));
            prop_assert!(!text.contains(SENTINEL), "the worker token quoted: {text}");
            Ok(())
        })
        .unwrap();
}

/// A body as text, for a failure's message.
fn body_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// A worker command's fields, its secrets exposed, for comparing two reads of one answer.
fn worker_command_facts(c: &WorkerCommand) -> String {
    format!("{} {} {} {}", c.worker_token.expose(), c.command.expose(), c.environment_name, c.can_register)
}

/// An error's sources, one after the other, as the operator's messages chain them.
fn sources(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// Whatever the body of an error answer, the error quotes at most one bounded line of it, and no
/// secret in it: it goes into status, Events and logs, and the lines after the first can hold SQL
/// and the worker token. Checked through the client, on non-retried statuses.
#[test]
fn error_answers_quote_one_bounded_line_of_any_body() {
    let (rt, client) = echo_client();
    let statuses = proptest::sample::select(vec![400u16, 401, 403, 404, 409, 422]);
    let config = ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() };
    TestRunner::new(config)
        .run(&(statuses, error_body()), |(status, body)| {
            let Err(error) = rt.block_on(client.get(&echo(status, &body))) else {
                panic!("a {status} answer taken for an environment");
            };
            let text = error.to_string();
            prop_assert!(!text.contains('\n'), "{text:?}");
            for part in secret_parts() {
                prop_assert!(!text.contains(part), "a secret quoted: {text:?}");
            }
            let Error::Api { status: got, detail, .. } = error else { panic!("not an answer: {text}") };
            prop_assert_eq!(got, status);
            prop_assert!(!detail.contains('\n') && detail.len() <= MAX_QUOTED, "{detail:?}");
            let reason = axum::http::StatusCode::from_u16(status).unwrap().canonical_reason();
            match serde_json::from_slice::<Value>(&body) {
                // A string detail, or the message of an object one, is quoted through the
                // sanitiser (first line, no control characters, tokens redacted, bounded), or the
                // status reason if nothing is left.
                Ok(sent) => {
                    let line = sent["detail"].as_str().or_else(|| sent["detail"]["message"].as_str());
                    if let Some(line) = line {
                        let clean = sanitize(line);
                        if clean.trim().is_empty() {
                            prop_assert_eq!(Some(detail.as_str()), reason);
                        } else {
                            prop_assert_eq!(&detail, &clean);
                        }
                    }
                }
                // Anything else is not quoted: the status says what happened.
                Err(_) => prop_assert_eq!(Some(detail.as_str()), reason),
            }
            Ok(())
        })
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the server's text: one line, no control character, bounded; plain words kept as
    /// they are (a long text cut after them, marked), and anything token-shaped (UUIDs, JWT parts,
    /// keys) never shown.
    #[test]
    fn the_sanitiser_keeps_plain_words_and_nothing_token_shaped(
        words in prop::collection::vec("[a-z]{1,12}|[A-Z][a-z]{0,10}|[0-9]{1,4}|[(),.:;\"'!?/]", 0..30),
        noise in "\\PC{0,60}|[\\x00-\\x1f\\u{2028}\\u{2029}]{1,3}",
        token in "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}|eyJ[A-Za-z0-9_-]{20,40}",
    ) {
        let plain = words.join(" ");
        let clean = sanitize(&plain);
        if plain.len() <= MAX_QUOTED - '…'.len_utf8() {
            prop_assert_eq!(&clean, plain.trim());
        } else {
            let kept = clean.strip_suffix('…');
            prop_assert!(kept.is_some_and(|k| !k.is_empty() && plain.starts_with(k)), "{clean:?} of {plain:?}");
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
            ..Default::default()
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
            namespace_uid: "nsu".into(),
            cluster: "c".into(),
            uid: "uid".into(),
            namespace: "ns".into(),
            name: "fuzz".into(),
        };
        let plain = env.spec.execution_environment.clone().unwrap_or_default().env_vars;
        let desired = desired::desired(&env, &owner, plain);
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
