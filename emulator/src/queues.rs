//! Worker queues, as the real server keeps them (`routers/worker_queues.py` and the
//! `worker_queues` table of kubiya-control-plane-api 1.0.2):
//!
//! - a queue belongs to one environment of the organization, its name unique in that environment
//!   (409 on create; a rename onto a taken name is the database's 500), and goes with it
//!   (`ON DELETE CASCADE`);
//! - a queue whose name starts with `local-exec` when created is ephemeral: hidden from the lists
//!   for good (a rename does not change that); a queue renamed to `local-exec…` is hidden too;
//! - PATCH sets exactly the keys sent, explicit nulls included: `heartbeat_interval`, `tags` and
//!   `settings` are nullable columns that the response model does not allow to be null, so such a
//!   PATCH is stored and answered 500, and so is every later read of the queue (GET, the lists)
//!   until a PATCH sets them again; `name` and `status` are NOT NULL (500);
//! - `status` is a free string; only `active` lets workers register;
//! - DELETE refuses a queue *named* `default` and one with active workers (400). The emulator has
//!   no workers: tests set a queue's count of active workers ([`Store::set_active_workers`]).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::pydantic::{self, Errors, loc};
use crate::store::{Org, Refusal, Store, refuse};

/// A queue: its row as the API renders the columns (nulls where the database holds them).
pub struct Queue {
    doc: Map<String, Value>,
    /// Set once, at creation, from the name.
    ephemeral: bool,
    /// Workers heartbeating on the queue (set by tests).
    active_workers: u64,
}

impl Queue {
    fn id(&self) -> &str {
        self.doc["id"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.doc["name"].as_str().unwrap_or_default()
    }

    fn environment_id(&self) -> &str {
        self.doc["environment_id"].as_str().unwrap_or_default()
    }

    /// Shown by the list routes.
    fn listed(&self) -> bool {
        !self.ephemeral && !self.name().starts_with("local-exec")
    }

    /// `WorkerQueueResponse`: the row plus `active_workers` and `task_queue_name`, which is the
    /// id as the request wrote it (the create and the lists: the canonical id). The response
    /// model refuses nulls in `heartbeat_interval`, `tags` and `settings`.
    fn render(&self, task_queue_name: &str) -> Result<Value, Errors> {
        let mut errors = Errors::default();
        for (key, kind, msg) in [
            ("heartbeat_interval", "int_type", "Input should be a valid integer"),
            ("tags", "list_type", "Input should be a valid list"),
            ("settings", "dict_type", "Input should be a valid dictionary"),
        ] {
            if self.doc[key].is_null() {
                errors.add(kind, &loc(&[key]), msg, &Value::Null, None);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut doc = self.doc.clone();
        doc.insert("active_workers".into(), json!(self.active_workers));
        doc.insert("task_queue_name".into(), json!(task_queue_name));
        Ok(Value::Object(doc))
    }
}

/// A 500 as the server words an exception: `Failed to <op>: <the exception>`.
fn failed(op: &str, what: impl std::fmt::Display) -> Refusal {
    refuse(500, format!("Failed to {op}: {what}"))
}

/// A database error's first line (the server goes on with the SQL; the conformance suite compares
/// the first line).
fn db_error(op: &str, class: &str, what: &str) -> Refusal {
    failed(op, format!("(psycopg2.errors.{class}) {what}"))
}

fn response_error(op: &str, errors: &Errors) -> Refusal {
    failed(op, errors.text("WorkerQueueResponse"))
}

/// Ids are UUID columns: anything else fails in the database (500). PostgreSQL reads UUIDs
/// leniently (upper case, no hyphens): the canonical form is returned.
fn uuid(op: &str, id: &str) -> Result<String, Refusal> {
    Uuid::parse_str(id).map(|u| u.hyphenated().to_string()).map_err(|_| {
        db_error(op, "InvalidTextRepresentation", &format!("invalid input syntax for type uuid: \"{id}\""))
    })
}

fn queue_not_found() -> Refusal {
    refuse(404, "Worker queue not found")
}

fn env_not_found() -> Refusal {
    refuse(404, "Environment not found")
}

fn has_env(o: &Org, env_id: &str) -> bool {
    o.envs.iter().any(|e| e.doc["id"] == env_id)
}

/// `max_workers` is an `integer` column.
fn out_of_range(fields: &Map<String, Value>) -> bool {
    fields.get("max_workers").and_then(Value::as_i64).is_some_and(|n| i32::try_from(n).is_err())
        || fields.get("max_workers").is_some_and(|v| v.is_f64())
}

fn render_all<'a>(op: &str, queues: impl Iterator<Item = &'a Queue>) -> Result<Value, Refusal> {
    queues
        .map(|q| q.render(q.id()).map_err(|e| response_error(op, &e)))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

impl Store {
    /// `POST /api/v1/environments/{env}/worker-queues`.
    pub fn create_queue(
        &self,
        org: &str,
        user_id: Option<&str>,
        env_id: &str,
        body: &Value,
    ) -> Result<Value, Refusal> {
        const OP: &str = "create worker queue";
        let fields = validate(body, Model::Create)?;
        let env_id = uuid(OP, env_id)?;
        self.with_org(org, |o| {
            if !has_env(o, &env_id) {
                return Err(env_not_found());
            }
            let name = fields["name"].as_str().unwrap_or_default().to_owned();
            if o.queues.iter().any(|q| q.environment_id() == env_id && q.name() == name) {
                return Err(refuse(409, format!("Worker queue '{name}' already exists in this environment")));
            }
            if out_of_range(&fields) {
                return Err(db_error(OP, "NumericValueOutOfRange", "integer out of range"));
            }
            let display_name =
                fields.get("display_name").filter(|v| pydantic::truthy(v)).unwrap_or(&fields["name"]);
            let now = queue_timestamp();
            let id = Uuid::new_v4().to_string();
            let doc = json!({
                "id": id,
                "organization_id": org,
                "environment_id": env_id,
                "name": name,
                "display_name": display_name,
                "description": fields.get("description").cloned().unwrap_or(Value::Null),
                "status": "active",
                "max_workers": fields.get("max_workers").cloned().unwrap_or(Value::Null),
                "heartbeat_interval": fields.get("heartbeat_interval").cloned().unwrap_or(json!(60)),
                "tags": fields.get("tags").cloned().unwrap_or(json!([])),
                "settings": fields.get("settings").cloned().unwrap_or(json!({})),
                "created_at": now,
                "updated_at": now,
                "created_by": user_id,
            });
            let Value::Object(doc) = doc else { unreachable!("a JSON object") };
            let queue = Queue { doc, ephemeral: name.starts_with("local-exec"), active_workers: 0 };
            let out = queue.render(&id).map_err(|e| response_error(OP, &e));
            o.queues.push(queue);
            out
        })
    }

    /// `GET /api/v1/environments/{env}/worker-queues`: created first, first; ephemeral ones hidden.
    pub fn list_queues(&self, org: &str, env_id: &str) -> Result<Value, Refusal> {
        const OP: &str = "list worker queues";
        let env_id = uuid(OP, env_id)?;
        self.with_org(org, |o| {
            if !has_env(o, &env_id) {
                return Err(env_not_found());
            }
            render_all(OP, o.queues.iter().filter(|q| q.environment_id() == env_id && q.listed()))
        })
    }

    /// `GET /api/v1/worker-queues`: the organization's queues of every environment.
    pub fn list_all_queues(&self, org: &str) -> Result<Value, Refusal> {
        self.with_org(org, |o| render_all("list all worker queues", o.queues.iter().filter(|q| q.listed())))
    }

    /// `GET /api/v1/worker-queues/{id}`.
    pub fn get_queue(&self, org: &str, id: &str) -> Result<Value, Refusal> {
        const OP: &str = "get worker queue";
        let canonical = uuid(OP, id)?;
        self.with_org(org, |o| {
            let q = o.queues.iter().find(|q| q.id() == canonical).ok_or_else(queue_not_found)?;
            q.render(id).map_err(|e| response_error(OP, &e))
        })
    }

    /// `PATCH /api/v1/worker-queues/{id}`: the keys sent, as sent (explicit nulls too).
    pub fn update_queue(&self, org: &str, id: &str, body: &Value) -> Result<Value, Refusal> {
        const OP: &str = "update worker queue";
        let fields = validate(body, Model::Update)?;
        let canonical = uuid(OP, id)?;
        self.with_org(org, |o| {
            let idx = o.queues.iter().position(|q| q.id() == canonical).ok_or_else(queue_not_found)?;
            // The database's checks, in its order: the parameters, NOT NULL (in column order),
            // then the unique (environment, name).
            if out_of_range(&fields) {
                return Err(db_error(OP, "NumericValueOutOfRange", "integer out of range"));
            }
            for column in ["name", "status"] {
                if fields.get(column).is_some_and(Value::is_null) {
                    return Err(db_error(
                        OP,
                        "NotNullViolation",
                        &format!(
                            "null value in column \"{column}\" of relation \"worker_queues\" violates not-null constraint"
                        ),
                    ));
                }
            }
            if let Some(name) = fields.get("name").and_then(Value::as_str) {
                let env = o.queues[idx].environment_id().to_owned();
                if o.queues.iter().enumerate().any(|(i, q)| i != idx && q.environment_id() == env && q.name() == name) {
                    return Err(db_error(
                        OP,
                        "UniqueViolation",
                        "duplicate key value violates unique constraint \"worker_queues_environment_id_name_key\"",
                    ));
                }
            }
            let q = &mut o.queues[idx];
            for (k, v) in fields {
                q.doc.insert(k, v);
            }
            q.doc.insert("updated_at".into(), json!(queue_timestamp()));
            q.render(id).map_err(|e| response_error(OP, &e))
        })
    }

    /// `DELETE /api/v1/worker-queues/{id}`.
    pub fn delete_queue(&self, org: &str, id: &str) -> Result<(), Refusal> {
        let id = uuid("delete worker queue", id)?;
        self.with_org(org, |o| {
            let idx = o.queues.iter().position(|q| q.id() == id).ok_or_else(queue_not_found)?;
            if o.queues[idx].name() == "default" {
                return Err(refuse(400, "Cannot delete the default worker queue"));
            }
            let active = o.queues[idx].active_workers;
            if active > 0 {
                return Err(refuse(400, format!("Cannot delete worker queue with {active} active workers")));
            }
            o.queues.remove(idx);
            Ok(())
        })
    }

    /// `GET /api/v1/worker-queues/{id}/worker-command` (`WorkerQueueCommandResponse`; the id as
    /// the request wrote it).
    pub fn queue_worker_command(&self, org: &str, id: &str) -> Result<Value, Refusal> {
        let canonical = uuid("get worker queue command", id)?;
        self.with_org(org, |o| {
            let q = o.queues.iter().find(|q| q.id() == canonical).ok_or_else(queue_not_found)?;
            let status = q.doc["status"].as_str().unwrap_or("unknown");
            Ok(json!({
                "queue_id": id,
                "command": format!("kubiya worker start --queue-id {id}"),
                "command_parts": {"binary": "kubiya", "subcommand": "worker start", "flags": {"--queue-id": id}},
                "can_register": status == "active",
                "queue_status": status,
                "active_workers": q.active_workers,
                "max_workers": q.doc["max_workers"],
            }))
        })
    }

    /// Sets how many workers heartbeat on a queue (of any organization). False when there is no
    /// such queue.
    pub fn set_active_workers(&self, id: &str, n: u64) -> bool {
        let Ok(id) = Uuid::parse_str(id).map(|u| u.hyphenated().to_string()) else {
            return false;
        };
        self.with_orgs(|orgs: &mut HashMap<String, Org>| {
            match orgs.values_mut().flat_map(|o| o.queues.iter_mut()).find(|q| q.id() == id) {
                Some(q) => {
                    q.active_workers = n;
                    true
                }
                None => false,
            }
        })
    }

    /// The organization's queues, ephemeral ones included, as stored (nulls included), with
    /// `active_workers`, in creation order.
    pub fn worker_queues(&self, org: &str) -> Vec<Value> {
        self.with_org(org, |o| {
            o.queues
                .iter()
                .map(|q| {
                    let mut doc = q.doc.clone();
                    doc.insert("active_workers".into(), json!(q.active_workers));
                    doc.insert("ephemeral".into(), json!(q.ephemeral));
                    Value::Object(doc)
                })
                .collect()
        })
    }
}

/// Removes an environment's queues, as the foreign key's `ON DELETE CASCADE` does.
pub fn cascade(o: &mut Org, env_id: &str) {
    o.queues.retain(|q| q.environment_id() != env_id);
}

/// Timestamps as pydantic serialises an aware UTC datetime: microseconds (none when zero) and `Z`.
pub fn queue_timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    let s = if now.microsecond() == 0 {
        now.format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"))
    } else {
        now.format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
    };
    s.unwrap_or_default()
}

// ---- the request models ----

#[derive(Clone, Copy, PartialEq)]
enum Model {
    /// `WorkerQueueCreate`: `name` required, defaults for the rest, no nulls but the optional ones.
    Create,
    /// `WorkerQueueUpdate`: every field optional and nullable; `status` too.
    Update,
}

/// Validates a body against the model; returns the fields it sets, coerced as pydantic coerces
/// them (`"3"` → 3), in the model's order.
fn validate(body: &Value, model: Model) -> Result<Map<String, Value>, Refusal> {
    let Some(obj) = body.as_object() else {
        let mut e = Errors::default();
        e.add(
            "model_attributes_type",
            &[],
            "Input should be a valid dictionary or object to extract fields from",
            body,
            None,
        );
        return Err(refuse(422, e.detail()));
    };
    let create = model == Model::Create;
    let mut e = Errors::default();
    let mut out = Map::new();
    let nullable = |key: &str| !create || matches!(key, "display_name" | "description" | "max_workers");
    let fields: &[&str] = if create {
        &["name", "display_name", "description", "max_workers", "heartbeat_interval", "tags", "settings"]
    } else {
        &[
            "name",
            "display_name",
            "description",
            "status",
            "max_workers",
            "heartbeat_interval",
            "tags",
            "settings",
        ]
    };
    if create && !obj.contains_key("name") {
        e.add("missing", &loc(&["name"]), "Field required", body, None);
    }
    for &key in fields {
        let Some(v) = obj.get(key) else { continue };
        if v.is_null() && nullable(key) {
            out.insert(key.into(), Value::Null);
            continue;
        }
        let at = loc(&[key]);
        let before = e.0.len();
        let value = match key {
            "name" | "display_name" | "description" | "status" => match v {
                Value::String(s) => {
                    let n = s.chars().count();
                    if key == "name" && n < 2 {
                        e.add(
                            "string_too_short",
                            &at,
                            "String should have at least 2 characters",
                            v,
                            Some(json!({"min_length": 2})),
                        );
                    } else if key == "name" && n > 50 {
                        e.add(
                            "string_too_long",
                            &at,
                            "String should have at most 50 characters",
                            v,
                            Some(json!({"max_length": 50})),
                        );
                    }
                    v.clone()
                }
                _ => {
                    e.add("string_type", &at, "Input should be a valid string", v, None);
                    Value::Null
                }
            },
            "max_workers" => bounded_int(v, &at, Some(1), None, &mut e),
            "heartbeat_interval" => bounded_int(v, &at, Some(10), Some(300), &mut e),
            "tags" => match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if !item.is_string() {
                            e.add(
                                "string_type",
                                &loc(&[key, &i.to_string()]),
                                "Input should be a valid string",
                                item,
                                None,
                            );
                        }
                    }
                    v.clone()
                }
                None => {
                    e.add("list_type", &at, "Input should be a valid list", v, None);
                    Value::Null
                }
            },
            "settings" => match v.as_object() {
                Some(settings) => {
                    if let Err(msg) = validate_settings(settings) {
                        e.add(
                            "value_error",
                            &at,
                            format!("Value error, {msg}"),
                            v,
                            Some(json!({"error": {}})),
                        );
                    }
                    v.clone()
                }
                None => {
                    e.add("dict_type", &at, "Input should be a valid dictionary", v, None);
                    Value::Null
                }
            },
            _ => Value::Null,
        };
        if e.0.len() == before {
            out.insert(key.into(), value);
        }
    }
    if e.is_empty() { Ok(out) } else { Err(refuse(422, e.detail())) }
}

/// An integer with `ge`/`le`; the error's input is the value as sent.
fn bounded_int(v: &Value, at: &[Value], ge: Option<i128>, le: Option<i128>, e: &mut Errors) -> Value {
    match pydantic::int(v) {
        Err((kind, msg)) => {
            e.add(kind, at, msg, v, None);
            Value::Null
        }
        Ok(n) if ge.is_some_and(|g| n < g) => {
            let g = ge.unwrap_or_default();
            e.add(
                "greater_than_equal",
                at,
                format!("Input should be greater than or equal to {g}"),
                v,
                Some(json!({"ge": g as i64})),
            );
            Value::Null
        }
        Ok(n) if le.is_some_and(|l| n > l) => {
            let l = le.unwrap_or_default();
            e.add(
                "less_than_equal",
                at,
                format!("Input should be less than or equal to {l}"),
                v,
                Some(json!({"le": l as i64})),
            );
            Value::Null
        }
        // Past 64 bits the database refuses it as out of range anyway: a float stands for it.
        Ok(n) => i64::try_from(n).map_or_else(|_| json!(n as f64), |n| json!(n)),
    }
}

/// The `settings` validator: an empty dict passes; otherwise `QueueSettings(**settings)` must
/// validate (unknown keys pass), and a truthy `enable_local_litellm_proxy` needs a truthy
/// `litellm_config` (judged on the values as sent, not as coerced).
fn validate_settings(s: &Map<String, Value>) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    let mut e = Errors::default();
    if let Some(v) = s.get("enable_local_litellm_proxy")
        && let Err((kind, msg)) = pydantic::boolean(v)
    {
        e.add(kind, &loc(&["enable_local_litellm_proxy"]), msg, v, None);
    }
    match s.get("litellm_config") {
        None | Some(Value::Null) => {}
        Some(Value::Object(c)) => litellm_config(c, &mut e),
        Some(v) => e.add(
            "model_type",
            &loc(&["litellm_config"]),
            "Input should be a valid dictionary or instance of LiteLLMConfig",
            v,
            None,
        ),
    }
    for (key, ge, le) in [("local_proxy_timeout_seconds", 5, 60), ("local_proxy_max_retries", 1, 10)] {
        if let Some(v) = s.get(key) {
            bounded_int(v, &loc(&[key]), Some(ge), Some(le), &mut e);
        }
    }
    if !e.is_empty() {
        return Err(format!("Invalid settings: {}", e.text("QueueSettings")));
    }
    let given = |k: &str| s.get(k).is_some_and(pydantic::truthy);
    if given("enable_local_litellm_proxy") && !given("litellm_config") {
        return Err("litellm_config is required when enable_local_litellm_proxy is true".into());
    }
    Ok(())
}

/// `LiteLLMConfig`: `model_list` of `{model_name: str, litellm_params: dict}`, and two optional dicts.
fn litellm_config(c: &Map<String, Value>, e: &mut Errors) {
    let whole = Value::Object(c.clone());
    match c.get("model_list") {
        None => e.add("missing", &loc(&["litellm_config", "model_list"]), "Field required", &whole, None),
        Some(Value::Array(models)) => {
            for (i, m) in models.iter().enumerate() {
                let i = i.to_string();
                let Some(model) = m.as_object() else {
                    e.add(
                        "model_type",
                        &loc(&["litellm_config", "model_list", &i]),
                        "Input should be a valid dictionary or instance of LiteLLMModelConfig",
                        m,
                        None,
                    );
                    continue;
                };
                let at = |k: &str| loc(&["litellm_config", "model_list", &i, k]);
                match model.get("model_name") {
                    None => e.add("missing", &at("model_name"), "Field required", m, None),
                    Some(Value::String(_)) => {}
                    Some(v) => {
                        e.add("string_type", &at("model_name"), "Input should be a valid string", v, None)
                    }
                }
                match model.get("litellm_params") {
                    None => e.add("missing", &at("litellm_params"), "Field required", m, None),
                    Some(Value::Object(_)) => {}
                    Some(v) => e.add(
                        "dict_type",
                        &at("litellm_params"),
                        "Input should be a valid dictionary",
                        v,
                        None,
                    ),
                }
            }
        }
        Some(v) => e.add(
            "list_type",
            &loc(&["litellm_config", "model_list"]),
            "Input should be a valid list",
            v,
            None,
        ),
    }
    for key in ["litellm_settings", "environment_variables"] {
        if let Some(v) = c.get(key).filter(|v| !v.is_null() && !v.is_object()) {
            e.add("dict_type", &loc(&["litellm_config", key]), "Input should be a valid dictionary", v, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn store_with_env() -> (Store, String) {
        let s = Store::new(Config::default());
        s.list("o", None, None);
        let env = s.create("o", None, &json!({"name": "qe"})).unwrap();
        (s, env["id"].as_str().unwrap().to_owned())
    }

    fn detail(r: Result<impl std::fmt::Debug, Refusal>) -> (u16, Value) {
        let r = r.unwrap_err();
        (r.status, r.body["detail"].clone())
    }

    #[test]
    fn create_fills_the_defaults_and_names_are_unique_per_environment() {
        let (s, env) = store_with_env();
        let q = s.create_queue("o", Some("u"), &env, &json!({"name": "gpu", "display_name": ""})).unwrap();
        assert_eq!(q["display_name"], "gpu");
        assert_eq!(q["status"], "active");
        assert_eq!(q["heartbeat_interval"], 60);
        assert_eq!(q["max_workers"], Value::Null);
        assert_eq!(q["tags"], json!([]));
        assert_eq!(q["settings"], json!({}));
        assert_eq!(q["task_queue_name"], q["id"]);
        assert_eq!(q["environment_id"], env.as_str());
        assert_eq!(q["created_by"], "u");
        assert!(q["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(detail(s.create_queue("o", None, &env, &json!({"name": "gpu"}))).0, 409);
        let other = s.create("o", None, &json!({"name": "qf"})).unwrap();
        assert!(s.create_queue("o", None, other["id"].as_str().unwrap(), &json!({"name": "gpu"})).is_ok());
        assert_eq!(detail(s.create_queue("p", None, &env, &json!({"name": "gpu"}))).0, 404);
        assert_eq!(detail(s.create_queue("o", None, "not-a-uuid", &json!({"name": "gpu"}))).0, 500);
        // The body is validated first.
        assert_eq!(detail(s.create_queue("o", None, "not-a-uuid", &json!({"name": "g"}))).0, 422);
    }

    #[test]
    fn validation_errors_come_in_the_models_field_order() {
        let (s, env) = store_with_env();
        let (status, d) = s
            .create_queue(
                "o",
                None,
                &env,
                &json!({"tags": "x", "heartbeat_interval": 5, "max_workers": 0, "name": "x"}),
            )
            .map(|_| ())
            .map_err(|r| (r.status, r.body["detail"].clone()))
            .unwrap_err();
        assert_eq!(status, 422);
        let kinds: Vec<_> = d.as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["string_too_short", "greater_than_equal", "greater_than_equal", "list_type"]);
        assert_eq!(
            d[1],
            json!({"type": "greater_than_equal", "loc": ["body", "max_workers"],
            "msg": "Input should be greater than or equal to 1", "input": 0, "ctx": {"ge": 1}})
        );
        let (_, d) =
            detail(s.create_queue("o", None, &env, &json!({"name": "hh", "heartbeat_interval": null})));
        assert_eq!(d[0]["type"], "int_type");
        let q = s
            .create_queue(
                "o",
                None,
                &env,
                &json!({"name": "co", "max_workers": "3", "heartbeat_interval": 30.0}),
            )
            .unwrap();
        assert_eq!((q["max_workers"].clone(), q["heartbeat_interval"].clone()), (json!(3), json!(30)));
    }

    #[test]
    fn settings_are_checked_by_queue_settings() {
        assert!(validate_settings(&Map::new()).is_ok());
        let ok = |v: Value| validate_settings(v.as_object().unwrap());
        assert!(ok(json!({"unknown": 1, "enable_local_litellm_proxy": false})).is_ok());
        assert!(ok(json!({"enable_local_litellm_proxy": 0})).is_ok());
        assert!(
            ok(json!({"enable_local_litellm_proxy": true, "litellm_config": {"model_list": []}})).is_ok()
        );
        let required = "litellm_config is required when enable_local_litellm_proxy is true";
        assert_eq!(ok(json!({"enable_local_litellm_proxy": true})).unwrap_err(), required);
        // Truthiness of the value sent: "false" is a true string.
        assert_eq!(ok(json!({"enable_local_litellm_proxy": "false"})).unwrap_err(), required);
        assert_eq!(
            ok(json!({"local_proxy_timeout_seconds": 1})).unwrap_err(),
            "Invalid settings: 1 validation error for QueueSettings\nlocal_proxy_timeout_seconds\n  Input should be \
             greater than or equal to 5 [type=greater_than_equal, input_value=1, input_type=int]\n    For further \
             information visit https://errors.pydantic.dev/2.14/v/greater_than_equal"
        );
        let two = ok(json!({"litellm_config": {"model_list": [{"model_name": 1}]}})).unwrap_err();
        assert!(two.starts_with("Invalid settings: 2 validation errors for QueueSettings\nlitellm_config.model_list.0.model_name\n"), "{two}");
        assert!(
            two.contains("Field required [type=missing, input_value={'model_name': 1}, input_type=dict]"),
            "{two}"
        );
    }

    #[test]
    fn patch_sets_what_is_sent_and_nulls_poison_the_reads() {
        let (s, env) = store_with_env();
        let q = s
            .create_queue("o", None, &env, &json!({"name": "pp", "max_workers": 3, "description": "d"}))
            .unwrap();
        s.create_queue("o", None, &env, &json!({"name": "other"})).unwrap();
        let id = q["id"].as_str().unwrap();
        let p = s
            .update_queue(
                "o",
                id,
                &json!({"max_workers": null, "description": null, "display_name": null,
            "status": "whatever", "unknown": 1, "environment_id": "x"}),
            )
            .unwrap();
        assert_eq!(
            (p["max_workers"].clone(), p["description"].clone(), p["display_name"].clone()),
            (Value::Null, Value::Null, Value::Null)
        );
        assert_eq!(p["status"], "whatever");
        assert_eq!(p["environment_id"], env.as_str());
        assert_eq!(s.queue_worker_command("o", id).unwrap()["can_register"], false);
        assert_eq!(detail(s.update_queue("o", id, &json!({"name": "other"}))).0, 500);
        assert_eq!(detail(s.update_queue("o", id, &json!({"name": null}))).0, 500);
        assert_eq!(detail(s.update_queue("o", id, &json!({"status": null}))).0, 500);
        assert_eq!(detail(s.update_queue("o", id, &json!({"name": ""}))).0, 422);
        let (status, d) = detail(s.update_queue("o", id, &json!({"tags": null, "settings": null})));
        assert_eq!(status, 500);
        assert!(d.as_str().unwrap().starts_with(
            "Failed to update worker queue: 2 validation errors for WorkerQueueResponse\ntags\n"
        ));
        // Stored all the same: reads fail, the command does not, a PATCH mends.
        assert_eq!(detail(s.get_queue("o", id)).0, 500);
        assert_eq!(detail(s.list_queues("o", &env)).0, 500);
        assert_eq!(detail(s.list_all_queues("o")).0, 500);
        assert!(s.queue_worker_command("o", id).is_ok());
        assert!(s.update_queue("o", id, &json!({"tags": [], "settings": {}})).is_ok());
        // The id as written is the task queue name.
        assert_eq!(s.get_queue("o", &id.to_uppercase()).unwrap()["task_queue_name"], id.to_uppercase());
    }

    #[test]
    fn delete_refuses_default_and_busy_queues_and_environments_take_their_queues() {
        let (s, env) = store_with_env();
        let d = s.create_queue("o", None, &env, &json!({"name": "default"})).unwrap();
        let d = d["id"].as_str().unwrap();
        assert_eq!(detail(s.delete_queue("o", d)), (400, json!("Cannot delete the default worker queue")));
        let b = s.create_queue("o", None, &env, &json!({"name": "busy"})).unwrap();
        let b = b["id"].as_str().unwrap();
        assert!(s.set_active_workers(b, 2));
        assert_eq!(s.get_queue("o", b).unwrap()["active_workers"], 2);
        assert_eq!(
            detail(s.delete_queue("o", b)),
            (400, json!("Cannot delete worker queue with 2 active workers"))
        );
        assert!(s.set_active_workers(b, 0));
        s.delete_queue("o", b).unwrap();
        assert_eq!(detail(s.delete_queue("o", b)).0, 404);
        assert!(!s.set_active_workers(b, 1));
        s.delete("o", &env).unwrap();
        assert_eq!(detail(s.get_queue("o", d)).0, 404);
        assert_eq!(detail(s.list_queues("o", &env)).0, 404);
        assert!(s.worker_queues("o").is_empty());
    }

    #[test]
    fn ephemeral_queues_stay_hidden_from_the_lists() {
        let (s, env) = store_with_env();
        let l = s.create_queue("o", None, &env, &json!({"name": "local-exec"})).unwrap();
        s.create_queue("o", None, &env, &json!({"name": "local-execution"})).unwrap();
        let v = s.create_queue("o", None, &env, &json!({"name": "Local-Exec"})).unwrap();
        s.update_queue("o", l["id"].as_str().unwrap(), &json!({"name": "renamed"})).unwrap();
        let names = |list: Value| -> Vec<String> {
            list.as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(names(s.list_queues("o", &env).unwrap()), ["Local-Exec"]);
        s.update_queue("o", v["id"].as_str().unwrap(), &json!({"name": "local-exec-v"})).unwrap();
        assert!(names(s.list_all_queues("o").unwrap()).is_empty());
        assert_eq!(s.worker_queues("o").len(), 3);
        // The name is taken all the same.
        assert_eq!(detail(s.create_queue("o", None, &env, &json!({"name": "local-execution"}))).0, 409);
    }
}
