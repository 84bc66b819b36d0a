//! HTTP layer: routes, auth before anything else, JSON bodies parsed by hand so that malformed
//! JSON gets the server's 422 rather than axum's own rejection.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use serde_json::{Value, json};

use crate::auth::{self, Caller};
use crate::faults::{self, Faults};
use crate::store::{self, Refusal, Store};

type Shared = State<Arc<Store>>;

pub fn router(store: Arc<Store>) -> Router {
    let method_not_allowed = || async { reply(405, json!({"detail": "Method Not Allowed"})) };
    let api = Router::new()
        .route("/api/v1/environments", get(list).post(create).fallback(method_not_allowed))
        .route("/api/v1/environments/", any(redirect_without_slash))
        .route(
            "/api/v1/environments/{id}",
            get(get_one).patch(update).delete(delete).fallback(method_not_allowed),
        )
        .route("/api/v1/environments/{id}/", any(redirect_without_slash))
        .route("/api/v1/environments/{id}/worker-command", get(worker_command).fallback(method_not_allowed))
        .route(
            "/api/v1/environments/{id}/worker-queues",
            get(list_queues).post(create_queue).fallback(method_not_allowed),
        )
        .route("/api/v1/environments/{id}/worker-queues/", any(redirect_without_slash))
        .route("/api/v1/worker-queues", get(list_all_queues).fallback(method_not_allowed))
        .route("/api/v1/worker-queues/", any(redirect_without_slash))
        .route(
            "/api/v1/worker-queues/{id}",
            get(get_queue).patch(update_queue).delete(delete_queue).fallback(method_not_allowed),
        )
        .route("/api/v1/worker-queues/{id}/", any(redirect_without_slash))
        .route(
            "/api/v1/worker-queues/{id}/worker-command",
            get(queue_worker_command).fallback(method_not_allowed),
        )
        .route_layer(middleware::from_fn_with_state(store.clone(), faults::layer));
    Router::new()
        .merge(api)
        .route("/api/health", get(health))
        .route(
            "/api/ready",
            get(|| async { reply(200, json!({"status": "ready", "timestamp": store::timestamp()})) }),
        )
        .route("/_emulator/faults", get(get_faults).put(put_faults))
        .route("/_emulator/calls", get(get_calls).delete(reset_calls))
        .route("/_emulator/queues/{id}/active-workers", put(put_active_workers))
        .fallback(|| async { reply(404, json!({"detail": "Not Found"})) })
        .with_state(store)
}

async fn health() -> Response {
    reply(
        200,
        json!({"status": "healthy", "service": "agent-control-plane", "timestamp": store::timestamp(),
            "services": {"cognitive_memory": "healthy", "context_graph": "healthy", "kubiya_api": "healthy"}}),
    )
}

async fn get_faults(State(store): Shared) -> Response {
    reply(200, json!(store.chaos().faults()))
}

async fn put_faults(State(store): Shared, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            store.chaos().set_faults(f.clone());
            reply(200, json!(f))
        }
        Err(e) => reply(400, json!({"detail": e.to_string()})),
    }
}

async fn get_calls(State(store): Shared) -> Response {
    reply(200, json!(store.chaos().calls()))
}

async fn reset_calls(State(store): Shared) -> Response {
    store.chaos().reset_calls();
    reply(204, Value::Null)
}

/// `PUT /_emulator/queues/{id}/active-workers` with a JSON number: how many workers heartbeat on
/// the queue (its `active_workers`, and DELETE's 400 while not zero).
async fn put_active_workers(State(store): Shared, Path(id): Path<String>, body: Bytes) -> Response {
    match serde_json::from_slice::<u64>(&body) {
        Ok(n) if store.set_active_workers(&id, n) => reply(200, json!({"id": id, "active_workers": n})),
        Ok(_) => reply(404, json!({"detail": "Worker queue not found"})),
        Err(e) => reply(400, json!({"detail": format!("expected a number of workers: {e}")})),
    }
}

fn reply(status: u16, body: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code == StatusCode::NO_CONTENT {
        return code.into_response();
    }
    (code, axum::Json(body)).into_response()
}

/// Runs a request's logic and renders its answer or refusal.
fn answer(logic: impl FnOnce() -> Result<(u16, Value), Refusal>) -> Response {
    match logic() {
        Ok((status, body)) => reply(status, body),
        Err(r) => reply(r.status, r.body),
    }
}

fn authenticate(headers: &HeaderMap) -> Result<Caller, Refusal> {
    auth::caller(headers).map_err(|d| Refusal { status: 401, body: d.body() })
}

/// Parses a JSON body; malformed JSON is a 422 `json_invalid` at the character offset where
/// Python's decoder stopped, as FastAPI answers.
fn json_body(bytes: &Bytes) -> Result<Value, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| {
        let text = String::from_utf8_lossy(bytes);
        let before: usize =
            text.split('\n').take(e.line().saturating_sub(1)).map(|l| l.chars().count() + 1).sum();
        let column = if e.is_eof() { e.column() } else { e.column().saturating_sub(1) };
        Refusal {
            status: 422,
            body: json!({"detail": [{"type": "json_invalid", "loc": ["body", before + column],
                "msg": "JSON decode error", "input": {}, "ctx": {"error": "Expecting value"}}]}),
        }
    })
}

/// FastAPI's `redirect_slashes`: a trailing slash gets a 307 to the path without it.
async fn redirect_without_slash(uri: Uri) -> Response {
    let path = uri.path().trim_end_matches('/');
    let location = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]).into_response()
}

async fn list(
    State(store): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    answer(|| {
        let caller = authenticate(&headers)?;
        let filter = q.get("status_filter").map(String::as_str);
        Ok((200, Value::Array(store.list(&caller.organization, caller.user_id.as_deref(), filter))))
    })
}

async fn create(State(store): Shared, headers: HeaderMap, body: Bytes) -> Response {
    // FastAPI parses the body before the auth dependency runs: malformed JSON is a 422 even
    // without a key, while a well-formed but invalid body without a key is a 401.
    answer(|| {
        let body = json_body(&body)?;
        let caller = authenticate(&headers)?;
        store.create(&caller.organization, caller.user_id.as_deref(), &body).map(|e| (201, e))
    })
}

async fn get_one(State(store): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(|| store.get(&authenticate(&headers)?.organization, &id).map(|e| (200, e)))
}

async fn update(State(store): Shared, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    answer(|| {
        let body = json_body(&body)?;
        let caller = authenticate(&headers)?;
        store.update(&caller.organization, &id, &body).map(|e| (200, e))
    })
}

async fn delete(State(store): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(|| store.delete(&authenticate(&headers)?.organization, &id).map(|()| (204, Value::Null)))
}

async fn worker_command(State(store): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(|| store.worker_command(&authenticate(&headers)?.organization, &id).map(|e| (200, e)))
}

// ---- worker queues ----

async fn create_queue(
    State(store): Shared,
    headers: HeaderMap,
    Path(env): Path<String>,
    body: Bytes,
) -> Response {
    answer(|| {
        let body = json_body(&body)?;
        let caller = authenticate(&headers)?;
        store.create_queue(&caller.organization, caller.user_id.as_deref(), &env, &body).map(|q| (201, q))
    })
}

async fn list_queues(State(store): Shared, headers: HeaderMap, Path(env): Path<String>) -> Response {
    answer(|| store.list_queues(&authenticate(&headers)?.organization, &env).map(|l| (200, l)))
}

async fn list_all_queues(State(store): Shared, headers: HeaderMap) -> Response {
    answer(|| store.list_all_queues(&authenticate(&headers)?.organization).map(|l| (200, l)))
}

async fn get_queue(State(store): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(|| store.get_queue(&authenticate(&headers)?.organization, &id).map(|q| (200, q)))
}

async fn update_queue(
    State(store): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    answer(|| {
        let body = json_body(&body)?;
        let caller = authenticate(&headers)?;
        store.update_queue(&caller.organization, &id, &body).map(|q| (200, q))
    })
}

async fn delete_queue(State(store): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(|| store.delete_queue(&authenticate(&headers)?.organization, &id).map(|()| (204, Value::Null)))
}

async fn queue_worker_command(State(store): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(|| store.queue_worker_command(&authenticate(&headers)?.organization, &id).map(|c| (200, c)))
}
