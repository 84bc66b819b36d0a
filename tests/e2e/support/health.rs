//! How GitOps tools see an Environment's health, for the end-to-end tests to check on the objects
//! they produce: the Argo CD health script (run by a real Lua interpreter, which `tests/run.sh`
//! installs) and the kstatus rules that Flux applies.

use std::process::Command;

use kubiya_operator::resource::Environment;
use serde_json::Value;

/// What kstatus (Flux's health checks, `kubectl wait`-style tools) computes for a custom resource:
/// Terminating while deleting; InProgress until the current generation is observed or while
/// `Reconciling` is True; Failed when `Stalled` is True; Current otherwise.
pub fn kstatus(env: &Environment) -> &'static str {
    if env.metadata.deletion_timestamp.is_some() {
        return "Terminating";
    }
    let Some(status) = &env.status else { return "InProgress" };
    if status.observed_generation.is_some() && status.observed_generation != env.metadata.generation {
        return "InProgress";
    }
    let is_true = |t: &str| status.conditions.iter().any(|c| c.type_ == t && c.status == "True");
    if is_true("Reconciling") {
        "InProgress"
    } else if is_true("Stalled") {
        "Failed"
    } else {
        "Current"
    }
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
