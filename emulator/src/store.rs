//! The emulator's state and the server's rules: validation, tenancy, names, status lifecycle.
//! Pure in-memory logic; the HTTP layer is in `api`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::faults::Chaos;
use crate::queues::{self, Queue};
use crate::{Config, FirstOutcome};

/// An error answer: status code and JSON body.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub body: Value,
}

pub(crate) fn refuse(status: u16, detail: impl Into<Value>) -> Refusal {
    Refusal { status, body: json!({ "detail": detail.into() }) }
}

const STATUSES: [&str; 7] = ["pending", "provisioning", "ready", "active", "inactive", "error", "archived"];

pub(crate) struct Env {
    /// The object as the API renders it.
    pub(crate) doc: Map<String, Value>,
    /// A provisioning workflow in flight: when it ends, and how.
    workflow: Option<(Instant, FirstOutcome)>,
}

#[derive(Default)]
pub(crate) struct Org {
    pub(crate) envs: Vec<Env>,
    /// The worker queues of all its environments, in creation order.
    pub(crate) queues: Vec<Queue>,
    /// Whether the organization's namespace exists (its first environment provisioned it).
    provisioned: bool,
    /// Every worker token ever handed out, deleted environments' included (for leak checks).
    tokens: Vec<String>,
}

impl Org {
    fn push(&mut self, env: Env) {
        if let Some(t) = env.doc.get("worker_token").and_then(Value::as_str) {
            self.tokens.push(t.to_owned());
        }
        self.envs.push(env);
    }
}

pub struct Store {
    config: Config,
    chaos: Chaos,
    orgs: Mutex<HashMap<String, Org>>,
}

impl Store {
    pub fn new(config: Config) -> Self {
        let chaos = Chaos::new(config.faults.clone());
        Store { config, chaos, orgs: Mutex::new(HashMap::new()) }
    }

    pub fn chaos(&self) -> &Chaos {
        &self.chaos
    }

    pub(crate) fn with_org<T>(&self, org: &str, f: impl FnOnce(&mut Org) -> T) -> T {
        let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        let o = orgs.entry(org.to_owned()).or_default();
        let now = Instant::now();
        for env in &mut o.envs {
            settle(env, now);
        }
        f(o)
    }

    /// Every organization at once (for what tests steer by id alone).
    pub(crate) fn with_orgs<T>(&self, f: impl FnOnce(&mut HashMap<String, Org>) -> T) -> T {
        f(&mut self.orgs.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn worker_tokens(&self, org: &str) -> Vec<String> {
        self.with_org(org, |o| o.tokens.clone())
    }

    pub fn environments(&self, org: &str) -> Vec<Value> {
        self.with_org(org, |o| o.envs.iter().map(|e| Value::Object(e.doc.clone())).collect())
    }

    pub fn set_status(&self, org: &str, id: &str, status: &str, error_message: Option<&str>) -> bool {
        self.with_org(org, |o| match o.envs.iter_mut().find(|e| e.doc["id"] == id) {
            Some(env) => {
                env.workflow = None;
                env.doc.insert("status".into(), json!(status));
                env.doc.insert("error_message".into(), json!(error_message));
                env.doc.insert("updated_at".into(), json!(timestamp()));
                true
            }
            None => false,
        })
    }

    /// `GET /api/v1/environments`: creates `default` first when the organization has none.
    pub fn list(&self, org: &str, user_id: Option<&str>, status_filter: Option<&str>) -> Vec<Value> {
        self.with_org(org, |o| {
            // Whenever no environment is *named* default (even after a rename), a list makes one.
            if !o.envs.iter().any(|e| e.doc["name"] == "default") {
                let mut doc = new_doc(org, user_id, "default", "active");
                doc.insert("display_name".into(), json!("Default Environment"));
                doc.insert("description".into(), json!("Default environment for all workers"));
                o.push(Env { doc, workflow: None });
            }
            o.envs
                .iter()
                .filter(|e| status_filter.is_none_or(|f| e.doc["status"] == f))
                .map(|e| Value::Object(e.doc.clone()))
                .collect()
        })
    }

    pub fn create(&self, org: &str, user_id: Option<&str>, body: &Value) -> Result<Value, Refusal> {
        let body = validate_create(body)?;
        let name = body["name"].as_str().unwrap_or_default().to_owned();
        self.with_org(org, |o| {
            if o.envs.iter().any(|e| e.doc["name"] == name) {
                return Err(refuse(409, format!("Environment with name '{name}' already exists")));
            }
            // The organization's first environment provisions its namespace; later ones are ready.
            let first = !o.provisioned && o.envs.is_empty();
            let mut doc = new_doc(org, user_id, &name, if first { "provisioning" } else { "ready" });
            for key in ["display_name", "description", "tags", "settings"] {
                if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
                    doc.insert(key.into(), v.clone());
                }
            }
            if doc["display_name"].is_null() {
                doc.insert("display_name".into(), json!(name));
            }
            // Given, it gets all four keys with defaults; not given, it stays `{}`.
            if let Some(Value::Object(given)) = body.get("execution_environment") {
                let mut exec = Map::new();
                for (key, default) in [
                    ("env_vars", json!({})),
                    ("secrets", json!([])),
                    ("integration_ids", json!([])),
                    ("mcp_servers", json!({})),
                ] {
                    let v = given.get(key).filter(|v| !v.is_null()).cloned().unwrap_or(default);
                    exec.insert(key.into(), v);
                }
                doc.insert("execution_environment".into(), Value::Object(exec));
            }
            let mut env = Env { doc, workflow: None };
            if first {
                let outcome = self.config.first_outcome.clone();
                if let FirstOutcome::Ready = outcome {
                    env.doc.insert(
                        "provisioning_workflow_id".into(),
                        json!(format!("provision-namespace-{org}")),
                    );
                }
                // A workflow that fails to start fails the create itself; so does a zero delay.
                env.workflow = Some((Instant::now() + self.config.provisioning, outcome));
                settle(&mut env, Instant::now());
            }
            o.provisioned = true;
            let out = Value::Object(env.doc.clone());
            o.push(env);
            Ok(out)
        })
    }

    pub fn get(&self, org: &str, id: &str) -> Result<Value, Refusal> {
        let id = check_uuid("get", id)?;
        let id = id.as_str();
        self.with_org(org, |o| find(o, id).map(|e| Value::Object(e.doc.clone())))
    }

    pub fn worker_command(&self, org: &str, id: &str) -> Result<Value, Refusal> {
        let env = self.get(org, id)?;
        let token = env["worker_token"].as_str().unwrap_or_default();
        let name = env["name"].as_str().unwrap_or_default();
        let status = env["status"].as_str().unwrap_or_default();
        Ok(json!({
            "worker_token": token,
            "environment_name": name,
            "command": format!("kubiya worker start --token {token} --environment {name}"),
            "command_parts": {"binary": "kubiya", "subcommand": "worker start",
                "flags": {"--token": token, "--environment": name}},
            "namespace_status": status,
            "can_register": matches!(status, "ready" | "active"),
            "provisioning_workflow_id": env["provisioning_workflow_id"],
        }))
    }

    pub fn update(&self, org: &str, id: &str, body: &Value) -> Result<Value, Refusal> {
        let id = check_uuid("update", id)?;
        let id = id.as_str();
        let body = validate_update(body)?;
        self.with_org(org, |o| {
            let idx = o.envs.iter().position(|e| e.doc["id"] == id).ok_or_else(not_found)?;
            if let Some(name) = body.get("name") {
                let Some(name) = name.as_str() else {
                    return Err(sql_error(
                        "update",
                        "NotNullViolation",
                        "null value in column \"name\" of relation \"environments\" violates not-null constraint",
                    ));
                };
                if o.envs.iter().enumerate().any(|(i, e)| i != idx && e.doc["name"] == name) {
                    return Err(sql_error(
                        "update",
                        "UniqueViolation",
                        "duplicate key value violates unique constraint \"unique_queue_name_per_org\"",
                    ));
                }
            }
            if let Some(status) = body.get("status")
                && !status.as_str().is_some_and(|s| STATUSES.contains(&s))
            {
                return Err(sql_error(
                    "update",
                    "CheckViolation",
                    "new row for relation \"environments\" violates check constraint \"task_queues_status_check\"",
                ));
            }
            let env = &mut o.envs[idx];
            for (k, v) in body.iter() {
                match k.as_str() {
                    "name" | "display_name" | "description" => {
                        env.doc.insert(k.clone(), v.clone());
                    }
                    // An explicit null empties these rather than nulling them (the server's
                    // columns are NOT NULL with defaults).
                    "tags" | "settings" | "execution_environment" => {
                        let v = match (k.as_str(), v) {
                            ("tags", Value::Null) => json!([]),
                            (_, Value::Null) => json!({}),
                            _ => v.clone(),
                        };
                        env.doc.insert(k.clone(), v);
                    }
                    "status" => {
                        env.workflow = None;
                        env.doc.insert(k.clone(), v.clone());
                    }
                    _ => {}
                }
            }
            env.doc.insert("updated_at".into(), json!(timestamp()));
            Ok(Value::Object(env.doc.clone()))
        })
    }

    pub fn delete(&self, org: &str, id: &str) -> Result<(), Refusal> {
        let id = check_uuid("delete", id)?;
        let id = id.as_str();
        self.with_org(org, |o| {
            let idx = o.envs.iter().position(|e| e.doc["id"] == id).ok_or_else(not_found)?;
            if o.envs[idx].doc["name"] == "default" {
                return Err(refuse(400, "Cannot delete the default environment"));
            }
            o.envs.remove(idx);
            queues::cascade(o, id);
            Ok(())
        })
    }
}

fn find<'a>(o: &'a Org, id: &str) -> Result<&'a Env, Refusal> {
    o.envs.iter().find(|e| e.doc["id"] == id).ok_or_else(not_found)
}

fn not_found() -> Refusal {
    refuse(404, "Environment not found")
}

/// A database error surfacing as a 500, as the server words it. The server goes on with the SQL
/// statement and its parameters; the emulator stops at the first line, which is what the
/// conformance suite compares.
fn sql_error(op: &str, class: &str, what: &str) -> Refusal {
    refuse(500, format!("Failed to {op} environment: (psycopg2.errors.{class}) {what}"))
}

/// Ids are UUID columns: anything else fails inside the database, as a 500.
/// PostgreSQL reads UUIDs leniently (upper case, no hyphens, braces): the canonical form is returned.
fn check_uuid(op: &str, id: &str) -> Result<String, Refusal> {
    Uuid::parse_str(id).map(|u| u.hyphenated().to_string()).map_err(|_| {
        sql_error(op, "InvalidTextRepresentation", &format!("invalid input syntax for type uuid: \"{id}\""))
    })
}

/// Ends a provisioning workflow that is due.
fn settle(env: &mut Env, now: Instant) {
    let Some((at, outcome)) = &env.workflow else {
        return;
    };
    if now < *at {
        return;
    }
    match outcome {
        FirstOutcome::Ready => {
            env.doc.insert("status".into(), json!("ready"));
            env.doc.insert("provisioned_at".into(), json!(timestamp()));
        }
        FirstOutcome::Error(message) => {
            env.doc.insert("status".into(), json!("error"));
            env.doc.insert("error_message".into(), json!(message));
        }
    }
    env.doc.insert("updated_at".into(), json!(timestamp()));
    env.workflow = None;
}

fn new_doc(org: &str, user_id: Option<&str>, name: &str, status: &str) -> Map<String, Value> {
    let now = timestamp();
    let doc = json!({
        "id": Uuid::new_v4().to_string(),
        "organization_id": org,
        "name": name,
        "display_name": null,
        "description": null,
        "tags": [],
        "settings": {},
        "status": status,
        "created_at": now,
        "updated_at": now,
        "created_by": user_id,
        "worker_token": Uuid::new_v4().to_string(),
        "provisioning_workflow_id": null,
        "provisioned_at": null,
        "error_message": null,
        "temporal_namespace_id": null,
        "active_workers": 0,
        "idle_workers": 0,
        "busy_workers": 0,
        "skill_ids": [],
        "skills": [],
        "execution_environment": {},
    });
    match doc {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// ISO 8601 with microseconds (none when zero) and `+00:00`, as Python's `isoformat()` writes it.
pub fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    let s = if now.microsecond() == 0 {
        now.format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00"))
    } else {
        now.format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
        ))
    };
    s.unwrap_or_default()
}

// ---- validation, in pydantic's words ----

struct Problems {
    items: Vec<Value>,
}

impl Problems {
    fn add(&mut self, kind: &str, loc: &[&str], msg: &str, input: &Value, ctx: Option<Value>) {
        let mut loc_v: Vec<Value> = vec![json!("body")];
        // List indices are numbers in pydantic's locations; dict keys are strings.
        loc_v.extend(loc.iter().map(|l| l.parse::<u64>().map_or_else(|_| json!(l), |n| json!(n))));
        let mut item = json!({"type": kind, "loc": loc_v, "msg": msg, "input": input});
        if let (Some(ctx), Some(obj)) = (ctx, item.as_object_mut()) {
            obj.insert("ctx".into(), ctx);
        }
        self.items.push(item);
    }

    fn finish(self) -> Result<(), Refusal> {
        if self.items.is_empty() { Ok(()) } else { Err(refuse(422, Value::Array(self.items))) }
    }
}

fn validate_create(body: &Value) -> Result<&Map<String, Value>, Refusal> {
    let Some(obj) = body.as_object() else {
        return Err(refuse(
            422,
            json!([{"type": "model_attributes_type", "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from", "input": body}]),
        ));
    };
    let mut p = Problems { items: vec![] };
    match obj.get("name") {
        None => p.add("missing", &["name"], "Field required", body, None),
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n < 2 {
                p.add(
                    "string_too_short",
                    &["name"],
                    "String should have at least 2 characters",
                    &json!(s),
                    Some(json!({"min_length": 2})),
                );
            } else if n > 100 {
                p.add(
                    "string_too_long",
                    &["name"],
                    "String should have at most 100 characters",
                    &json!(s),
                    Some(json!({"max_length": 100})),
                );
            }
        }
        Some(v) => p.add("string_type", &["name"], "Input should be a valid string", v, None),
    }
    check_fields(obj, &mut p);
    p.finish()?;
    Ok(obj)
}

fn validate_update(body: &Value) -> Result<&Map<String, Value>, Refusal> {
    let Some(obj) = body.as_object() else {
        return Err(refuse(
            422,
            json!([{"type": "model_attributes_type", "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from", "input": body}]),
        ));
    };
    let mut p = Problems { items: vec![] };
    if let Some(v) = obj.get("name").filter(|v| !v.is_null() && !v.is_string()) {
        p.add("string_type", &["name"], "Input should be a valid string", v, None);
    }
    if let Some(v) = obj.get("status").filter(|v| !v.is_null() && !v.is_string()) {
        p.add("string_type", &["status"], "Input should be a valid string", v, None);
    }
    check_fields(obj, &mut p);
    p.finish()?;
    Ok(obj)
}

fn check_fields(obj: &Map<String, Value>, p: &mut Problems) {
    for key in ["display_name", "description"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null() && !v.is_string()) {
            p.add("string_type", &[key], "Input should be a valid string", v, None);
        }
    }
    if let Some(v) = obj.get("tags").filter(|v| !v.is_null()) {
        string_list(v, &["tags"], p);
    }
    if let Some(v) = obj.get("settings").filter(|v| !v.is_null() && !v.is_object()) {
        p.add("dict_type", &["settings"], "Input should be a valid dictionary", v, None);
    }
    match obj.get("execution_environment") {
        None | Some(Value::Null) => {}
        Some(Value::Object(e)) => {
            if let Some(v) = e.get("env_vars").filter(|v| !v.is_null()) {
                match v.as_object() {
                    Some(m) => {
                        for (k, val) in m {
                            if !val.is_string() {
                                p.add(
                                    "string_type",
                                    &["execution_environment", "env_vars", k],
                                    "Input should be a valid string",
                                    val,
                                    None,
                                );
                            }
                        }
                    }
                    None => p.add(
                        "dict_type",
                        &["execution_environment", "env_vars"],
                        "Input should be a valid dictionary",
                        v,
                        None,
                    ),
                }
            }
            for key in ["secrets", "integration_ids"] {
                if let Some(v) = e.get(key).filter(|v| !v.is_null()) {
                    string_list(v, &["execution_environment", key], p);
                }
            }
            if let Some(v) = e.get("mcp_servers").filter(|v| !v.is_null() && !v.is_object()) {
                p.add(
                    "dict_type",
                    &["execution_environment", "mcp_servers"],
                    "Input should be a valid dictionary",
                    v,
                    None,
                );
            }
        }
        Some(v) => p.add(
            "model_attributes_type",
            &["execution_environment"],
            "Input should be a valid dictionary or object to extract fields from",
            v,
            None,
        ),
    }
}

fn string_list(v: &Value, loc: &[&str], p: &mut Problems) {
    match v.as_array() {
        Some(items) => {
            for (i, item) in items.iter().enumerate() {
                if !item.is_string() {
                    let idx = i.to_string();
                    let mut l = loc.to_vec();
                    l.push(&idx);
                    p.add("string_type", &l, "Input should be a valid string", item, None);
                }
            }
        }
        None => p.add("list_type", loc, "Input should be a valid list", v, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store() -> Store {
        Store::new(Config { provisioning: Duration::ZERO, ..Config::default() })
    }

    #[test]
    fn first_environment_provisions_later_ones_are_ready() {
        let s = Store::new(Config { provisioning: Duration::from_secs(3600), ..Config::default() });
        let a = s.create("o", None, &json!({"name": "aa"})).unwrap();
        assert_eq!(a["status"], "provisioning");
        let b = s.create("o", None, &json!({"name": "bb"})).unwrap();
        assert_eq!(b["status"], "ready");
        assert_eq!(b["display_name"], "bb");
        assert_eq!(b["execution_environment"], json!({}));
        let c =
            s.create("o", None, &json!({"name": "cc", "execution_environment": {"secrets": ["S"]}})).unwrap();
        assert_eq!(
            c["execution_environment"],
            json!({"env_vars": {}, "secrets": ["S"], "integration_ids": [], "mcp_servers": {}})
        );
    }

    #[test]
    fn list_creates_default_which_cannot_be_deleted() {
        let s = store();
        let all = s.list("o", None, None);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0]["name"], "default");
        assert_eq!(all[0]["status"], "active");
        let id = all[0]["id"].as_str().unwrap();
        assert_eq!(s.delete("o", id).unwrap_err().status, 400);
        assert!(s.list("o", None, Some("ready")).is_empty());
        assert!(s.list("o", None, Some("nonsense")).is_empty());
    }

    #[test]
    fn names_are_unique_per_organization() {
        let s = store();
        s.create("o", None, &json!({"name": "aa"})).unwrap();
        assert_eq!(s.create("o", None, &json!({"name": "aa"})).unwrap_err().status, 409);
        assert!(s.create("p", None, &json!({"name": "aa"})).is_ok());
    }

    #[test]
    fn patch_replaces_execution_environment_and_rejects_bad_values_as_500() {
        let s = store();
        let a =
            s.create("o", None, &json!({"name": "aa", "execution_environment": {"secrets": ["X"]}})).unwrap();
        let id = a["id"].as_str().unwrap();
        let b = s
            .update("o", id, &json!({"execution_environment": {"env_vars": {"A": "1"}}, "priority": 3}))
            .unwrap();
        assert_eq!(b["execution_environment"], json!({"env_vars": {"A": "1"}}));
        assert!(b.get("priority").is_none());
        assert_eq!(s.update("o", id, &json!({"status": "bogus"})).unwrap_err().status, 500);
        assert_eq!(s.update("o", id, &json!({"name": null})).unwrap_err().status, 500);
        assert_eq!(s.get("o", "not-a-uuid").unwrap_err().status, 500);
        assert_eq!(s.get("p", id).unwrap_err().status, 404);
    }

    #[test]
    fn validation_errors_are_pydantic_shaped() {
        let s = store();
        let e = s.create("o", None, &json!({"name": "x"})).unwrap_err();
        assert_eq!(e.status, 422);
        assert_eq!(e.body["detail"][0]["type"], "string_too_short");
        assert_eq!(e.body["detail"][0]["loc"], json!(["body", "name"]));
        let e = s.create("o", None, &json!({"tags": "x"})).unwrap_err();
        assert_eq!(e.body["detail"].as_array().unwrap().len(), 2);
    }
}
