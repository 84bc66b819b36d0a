//! How GitOps tools see an Environment's health, for the end-to-end tests to check on the objects
//! they produce: the Argo CD health script (run by a real Lua interpreter, which `tests/run.sh`
//! installs) and the kstatus rules that Flux applies.

use std::process::Command;

use kubiya_operator::resource::Environment;
use serde_json::Value;

/// What kstatus (cli-utils `pkg/kstatus/status`, `Compute`: Flux's health checks, `kubectl
/// wait`-style tools) computes for a custom resource, as JSON (`obj`: an Environment, a
/// WorkerQueue, a Connection): Terminating while deleting; InProgress while
/// `status.observedGeneration` is there and is not `metadata.generation`, or while `Reconciling`
/// is True; Failed when `Stalled` is True; Current otherwise, **a resource with no status
/// included** (which is why the CRDs default it to `{observedGeneration: 0}`).
pub fn kstatus_of(obj: &Value) -> &'static str {
    if obj["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating";
    }
    let observed = &obj["status"]["observedGeneration"];
    if let (Some(generation), Some(observed)) = (obj["metadata"]["generation"].as_i64(), observed.as_i64())
        && observed != generation
    {
        return "InProgress";
    }
    let conditions = obj["status"]["conditions"].as_array().cloned().unwrap_or_default();
    for c in &conditions {
        match (c["type"].as_str(), c["status"].as_str()) {
            (Some("Reconciling"), Some("True")) => return "InProgress",
            (Some("Stalled"), Some("True")) => return "Failed",
            _ => {}
        }
    }
    "Current"
}

/// [`kstatus_of`] an Environment.
pub fn kstatus(env: &Environment) -> &'static str {
    kstatus_of(&serde_json::to_value(env).expect("serialise"))
}

/// The Argo CD health (status, message) of `obj` (an Environment or a WorkerQueue), from `deploy/argocd/health.lua` run by `lua5.4`.
pub fn argo<T: serde::Serialize>(obj: &T) -> (String, String) {
    let obj = lua_literal(&serde_json::to_value(obj).expect("serialise"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/argocd/health.lua");
    let driver = format!(
        "obj = {obj}\nlocal hs = dofile({script:?})\nio.write(hs.status, \"\\t\", hs.message or \"\")"
    );
    let out = Command::new("lua5.4")
        .args(["-e", &driver])
        .output()
        .expect("run lua5.4 (Debian package lua5.4; tests/run.sh installs it)");
    assert!(out.status.success(), "health.lua failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, message) = text.split_once('\t').unwrap_or((&text, ""));
    (status.to_owned(), message.to_owned())
}

/// Asserts both views of `env`'s health.
pub fn assert_health(env: &Environment, argo_status: &str, kstatus_status: &str) {
    let (status, message) = argo(env);
    assert_eq!(status, argo_status, "Argo CD health of {:?} (message {message:?})", env.status);
    assert_eq!(kstatus(env), kstatus_status, "kstatus of {:?}", env.status);
}

/// JSON as a Lua table constructor; `null` becomes an absent key, as Argo CD's conversion does.
fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("{{{}}}", a.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{k:?}] = {}", lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
