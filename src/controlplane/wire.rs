//! Wire types of `/api/v1/environments`, tolerant of unknown fields and of nulls where the server
//! may send them. Pure: no client.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A worker registration token: a secret. Its `Debug` is redacted and it has no `Display`, so it
/// cannot end up in a log line or an error message by accident.
#[derive(Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct WorkerToken(String);

impl WorkerToken {
    /// The token itself, for the one place that needs it: the worker Secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkerToken(<redacted>)")
    }
}

/// An environment as the control plane returns it (only the fields the operator reads).
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct RemoteEnvironment {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub settings: Map<String, Value>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub execution_environment: ExecutionEnvironmentBody,
    #[serde(default)]
    pub worker_token: Option<WorkerToken>,
}

impl RemoteEnvironment {
    /// Workers can register only with a ready or active environment (the server's rule).
    pub fn can_register(&self) -> bool {
        matches!(self.status.as_str(), "ready" | "active")
    }
}

/// `execution_environment` in requests and responses. After a PATCH the server keeps only the
/// keys that were sent, so every key is optional on the way in and always sent on the way out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ExecutionEnvironmentBody {
    #[serde(default, deserialize_with = "null_as_default")]
    pub env_vars: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub secrets: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub integration_ids: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub mcp_servers: Map<String, Value>,
}

/// The body of a create call; also the desired state that updates are computed from.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct EnvironmentBody {
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub settings: Map<String, Value>,
    pub execution_environment: ExecutionEnvironmentBody,
    /// Documented by the SDK, dropped by today's server: sent, never compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Documented by the SDK, dropped by today's server: sent, never compared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_ids: Vec<String>,
    /// The enabled state to enforce (`active` / `inactive`), if any. Not part of a create (the
    /// server ignores it there); compared and PATCHed once the environment is settled.
    #[serde(skip)]
    pub status: Option<&'static str>,
}

/// The answer of `GET /{id}/worker-command`.
#[derive(Deserialize, Clone, Debug)]
pub struct WorkerCommand {
    pub worker_token: WorkerToken,
    pub environment_name: String,
    /// The full command line; it contains the token, so it is as secret as the token.
    pub command: WorkerToken,
    #[serde(default)]
    pub can_register: bool,
}

/// A worker queue as the control plane returns it (only the fields the operator reads).
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct RemoteQueue {
    pub id: String,
    pub environment_id: String,
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub max_workers: Option<i64>,
    #[serde(default)]
    pub heartbeat_interval: Option<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub settings: Map<String, Value>,
    #[serde(default)]
    pub active_workers: i64,
}

impl RemoteQueue {
    /// Workers can register only with an active queue (the server's rule).
    pub fn can_register(&self) -> bool {
        self.status == "active"
    }
}

/// The body of a queue's create call; also the desired state that updates are computed from.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct QueueBody {
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// `None`: unlimited.
    pub max_workers: Option<i64>,
    pub heartbeat_interval: i64,
    pub tags: Vec<String>,
    pub settings: Map<String, Value>,
}

/// The answer of `GET /worker-queues/{id}/worker-command`. No secret in it: the command names
/// the queue, and a worker brings its own API key.
#[derive(Deserialize, Clone, Debug)]
pub struct QueueCommand {
    pub queue_id: String,
    pub command: String,
    #[serde(default)]
    pub can_register: bool,
    #[serde(default)]
    pub active_workers: i64,
}

/// One readable line from an error answer's body, if it is the server's JSON `{"detail": …}`.
pub fn error_detail(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body).ok().map(|b| b.message())
}

/// Error bodies: `detail` is a string (400/404/409/500), an object (401) or a list (422).
#[derive(Deserialize, Debug, Default)]
struct ErrorBody {
    #[serde(default)]
    pub detail: Value,
}

impl ErrorBody {
    /// One readable line from any shape of `detail`.
    pub fn message(&self) -> String {
        match &self.detail {
            Value::String(s) => s.clone(),
            Value::Object(o) => ["message", "error", "hint"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str))
                .map(str::to_owned)
                .unwrap_or_else(|| Value::Object(o.clone()).to_string()),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    let loc = i
                        .get("loc")
                        .and_then(Value::as_array)
                        .map(|l| {
                            l.iter()
                                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .unwrap_or_default();
                    let msg = i.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                    if loc.is_empty() { msg.to_owned() } else { format!("{loc}: {msg}") }
                })
                .collect::<Vec<_>>()
                .join("; "),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_full_response_and_tolerates_nulls_and_unknown_fields() {
        let env: RemoteEnvironment = serde_json::from_value(json!({
            "id": "5da3f05e-0000-4000-8000-000000000000", "organization_id": "acme", "name": "prod",
            "display_name": "Prod", "description": null, "tags": null, "settings": null,
            "status": "ready", "created_at": "2026-11-28T00:00:00+00:00", "worker_token": "tok",
            "execution_environment": {"env_vars": {"A": "1"}}, "skills": [], "whatever": 1
        }))
        .unwrap();
        assert_eq!(env.tags, Vec::<String>::new());
        assert_eq!(env.execution_environment.env_vars["A"], "1");
        assert!(env.execution_environment.secrets.is_empty());
        assert!(env.can_register());
        assert_eq!(format!("{:?}", env.worker_token), "Some(WorkerToken(<redacted>))");
    }

    #[test]
    fn error_detail_of_every_shape_reads_as_one_line() {
        let s: ErrorBody = serde_json::from_value(json!({"detail": "Environment not found"})).unwrap();
        assert_eq!(s.message(), "Environment not found");
        let o: ErrorBody = serde_json::from_value(json!({"detail": {"error": "Unauthorized",
            "message": "Invalid or expired authentication token", "hint": "h"}}))
        .unwrap();
        assert_eq!(o.message(), "Invalid or expired authentication token");
        let l: ErrorBody = serde_json::from_value(json!({"detail": [
            {"type": "string_too_short", "loc": ["body", "name"], "msg": "String should have at least 2 characters"},
            {"type": "json_invalid", "loc": ["body", 3], "msg": "JSON decode error"}]}))
        .unwrap();
        assert_eq!(
            l.message(),
            "body.name: String should have at least 2 characters; body.3: JSON decode error"
        );
    }
}
