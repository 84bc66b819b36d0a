//! The emulator's fault-injection knobs and call counters do what later tests rely on.

use std::io::Write;
use std::time::Duration;

use kubiya_cp_emulator::{Config, Emulator, Faults};
use serde_json::{Value, json};

async fn get(emulator: &Emulator, timeout: Duration) -> Result<reqwest::Response, reqwest::Error> {
    reqwest::Client::new()
        .get(format!("{}/api/v1/environments", emulator.base_url()))
        .header("Authorization", format!("Bearer {}", kubiya_cp_emulator::token("faults")))
        .timeout(timeout)
        .send()
        .await
}

#[tokio::test]
async fn faults_can_be_switched_on_and_off_and_calls_are_counted() {
    let emulator = Emulator::start(Config::default()).await.unwrap();
    let second = Duration::from_secs(5);

    emulator.set_faults(Faults { throttle: 1.0, retry_after_secs: 7, ..Faults::default() });
    let r = get(&emulator, second).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");

    emulator.set_faults(Faults { server_error: 1.0, ..Faults::default() });
    assert_eq!(get(&emulator, second).await.unwrap().status(), 503);

    emulator.set_faults(Faults { malformed: 1.0, ..Faults::default() });
    let r = get(&emulator, second).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err(), "body should be cut short");

    emulator.set_faults(Faults { hang: 1.0, ..Faults::default() });
    let e = get(&emulator, Duration::from_millis(300)).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");

    emulator.set_faults(Faults::default());
    assert_eq!(get(&emulator, second).await.unwrap().status(), 200);
    assert_eq!(emulator.calls()["GET /api/v1/environments"], 5);

    // The same knobs over HTTP, for a separately running emulator.
    let http = reqwest::Client::new();
    let url = format!("{}/_emulator/faults", emulator.base_url());
    let set = http.put(&url).json(&json!({"latency_ms": 1, "throttle": 1.0})).send().await.unwrap();
    assert_eq!(set.status(), 200);
    assert_eq!(get(&emulator, second).await.unwrap().status(), 429);
    let calls: Value = http
        .get(format!("{}/_emulator/calls", emulator.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls["GET /api/v1/environments"], 6);
}

#[tokio::test]
async fn calls_are_counted_per_key_presented_whatever_the_answer() {
    let emulator = Emulator::start(Config::default()).await.unwrap();
    let a = kubiya_cp_emulator::token("keys");
    let b = kubiya_cp_emulator::token_with_claims(&json!({"organization": "keys", "email": "b@keys.test"}));
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/environments", emulator.base_url());
    let call = |authorization: Option<String>| {
        let mut req = http.get(&url);
        if let Some(value) = authorization {
            req = req.header("Authorization", value);
        }
        req.send()
    };
    assert_eq!(call(Some(format!("UserKey {a}"))).await.unwrap().status(), 200);
    assert_eq!(call(Some(format!("Bearer {a}"))).await.unwrap().status(), 200);
    assert_eq!(call(Some(format!("UserKey {b}"))).await.unwrap().status(), 200);
    assert_eq!(call(Some("UserKey not-a-key".into())).await.unwrap().status(), 401);
    assert_eq!(call(None).await.unwrap().status(), 401);
    emulator.set_faults(Faults { throttle: 1.0, retry_after_secs: 1, ..Faults::default() });
    assert_eq!(call(Some(format!("UserKey {b}"))).await.unwrap().status(), 429);

    assert_eq!(emulator.calls_with_key(&a), 2, "the same key however it is presented");
    assert_eq!(emulator.calls_with_key(&b), 2, "a throttled call counts");
    assert_eq!(emulator.calls_with_key("not-a-key"), 1, "a refused key counts");
    assert_eq!(emulator.calls_with_key(""), 1, "no key at all");
    assert_eq!(emulator.calls_by_key().values().sum::<u64>(), 6);
    assert_eq!(emulator.calls()["GET /api/v1/environments"], 6);
}

#[tokio::test]
async fn queue_routes_are_counted_and_misbehave_like_the_others_and_workers_can_be_faked() {
    let emulator = Emulator::start(Config::default()).await.unwrap();
    let base = emulator.base_url();
    let key = format!("UserKey {}", kubiya_cp_emulator::token("queues"));
    let http = reqwest::Client::new();
    let envs = format!("{base}/api/v1/environments");
    assert_eq!(http.get(&envs).header("Authorization", &key).send().await.unwrap().status(), 200);
    let env: Value = http
        .post(&envs)
        .header("Authorization", &key)
        .json(&json!({"name": "qe"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let queues = format!("{envs}/{}/worker-queues", env["id"].as_str().unwrap());
    let created = http
        .post(&queues)
        .header("Authorization", &key)
        .json(&json!({"name": "gpu", "max_workers": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let q: Value = created.json().await.unwrap();
    let id = q["id"].as_str().unwrap();
    let one = format!("{base}/api/v1/worker-queues/{id}");

    // Workers, as a test fakes them: counted in the answers, and DELETE refuses the queue.
    let set = |n: Value| http.put(format!("{base}/_emulator/queues/{id}/active-workers")).json(&n).send();
    let r = set(json!(3)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"id": id, "active_workers": 3}));
    assert!(emulator.worker_queues("queues")[0]["active_workers"] == 3);
    let got: Value = http.get(&one).header("Authorization", &key).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["active_workers"], 3);
    let command: Value = http
        .get(format!("{one}/worker-command"))
        .header("Authorization", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((command["active_workers"].clone(), command["max_workers"].clone()), (json!(3), json!(2)));
    let refused = http.delete(&one).header("Authorization", &key).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        json!({"detail": "Cannot delete worker queue with 3 active workers"})
    );
    assert_eq!(set(json!("x")).await.unwrap().status(), 400);
    assert_eq!(
        http.put(format!("{base}/_emulator/queues/00000000-0000-4000-8000-000000000000/active-workers"))
            .json(&json!(1))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(emulator.set_active_workers(id, 0));

    // Faults apply to the queue routes as to the environment routes.
    emulator.set_faults(Faults { throttle: 1.0, retry_after_secs: 2, ..Faults::default() });
    let r = http.get(&one).header("Authorization", &key).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()), (429, "2"));
    emulator.set_faults(Faults { server_error: 1.0, ..Faults::default() });
    assert_eq!(
        http.patch(&one).header("Authorization", &key).json(&json!({})).send().await.unwrap().status(),
        500
    );
    emulator.set_faults(Faults::default());
    assert_eq!(http.delete(&one).header("Authorization", &key).send().await.unwrap().status(), 204);

    // Counted per route, labelled with the route's pattern; the control route is not counted.
    let calls = emulator.calls();
    assert_eq!(calls["POST /api/v1/environments/{id}/worker-queues"], 1);
    assert_eq!(calls["GET /api/v1/worker-queues/{id}"], 2);
    assert_eq!(calls["GET /api/v1/worker-queues/{id}/worker-command"], 1);
    assert_eq!(calls["PATCH /api/v1/worker-queues/{id}"], 1);
    assert_eq!(calls["DELETE /api/v1/worker-queues/{id}"], 2);
    assert!(!calls.keys().any(|k| k.contains("_emulator")), "{calls:?}");
    assert_eq!(calls.values().sum::<u64>(), 9);
}

/// A plain `cargo test` does not build the end-to-end tests (they need the test API server that
/// `make test` starts): say so once, on stderr itself, which libtest does not capture.
#[test]
fn say_how_to_run_the_end_to_end_tests() {
    if !cfg!(feature = "e2e") {
        let note =
            "note: the end-to-end tests are not built by a plain `cargo test`; run them with `make test`\n";
        let _ = std::io::stderr().write_all(note.as_bytes());
    }
}
