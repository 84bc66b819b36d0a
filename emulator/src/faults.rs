//! Fault injection and call counting, for tests and benchmarks: latency, a share of 5xx, 429 with
//! `Retry-After`, requests that never answer, malformed or huge bodies, redirects. Applies to the API routes only
//! (`/api/v1/...`), never to health checks or the emulator's own `/_emulator/...` routes. Calls are
//! counted per route and per API key presented.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::store::Store;

/// What goes wrong, as shares of API requests (each 0.0..=1.0, drawn independently in this order:
/// hang, 429, 5xx, malformed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Extra latency on every API answer, in milliseconds.
    pub latency_ms: u64,
    /// Requests that are carried out but never answered (the client's timeout fires; a create
    /// that "timed out" has in fact happened, as with the real server under load).
    pub hang: f64,
    /// Requests refused with 429 and `Retry-After: retry_after_secs`, before being carried out.
    pub throttle: f64,
    /// Seconds in the `Retry-After` of a 429.
    pub retry_after_secs: u64,
    /// Requests refused with 500 (or 503 when the share is drawn for a GET), before being carried out.
    pub server_error: f64,
    /// Requests carried out whose answer body is cut short (invalid JSON).
    pub malformed: f64,
    /// Requests carried out whose answer is padded past `huge_body_bytes` (as a huge organization's
    /// unpaginated list, or something hostile in between, would).
    pub huge_body: f64,
    /// Size of a huge answer, in bytes.
    pub huge_body_bytes: usize,
    /// A huge answer's length is announced and all but its last byte sent at once; the last byte
    /// comes this much later (the client holds the answer meanwhile, as it would a slow one).
    pub huge_body_stall_ms: u64,
    /// Requests refused with `307 Temporary Redirect` to this URL (a moved or hijacked endpoint).
    pub redirect_to: Option<String>,
}

/// Calls per route: `"POST /api/v1/environments"` → count.
pub type Calls = BTreeMap<String, u64>;

/// Calls per API key, as presented (the raw token; `""` for a request without one) → count.
pub type CallsByKey = HashMap<String, u64>;

/// Fault settings and counters, changeable while the emulator runs.
#[derive(Default)]
pub struct Chaos {
    faults: Mutex<Faults>,
    calls: Mutex<Calls>,
    by_key: Mutex<CallsByKey>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Chaos {
    pub fn new(faults: Faults) -> Self {
        Chaos { faults: Mutex::new(faults), ..Chaos::default() }
    }

    pub fn faults(&self) -> Faults {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    pub fn calls(&self) -> Calls {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Calls per API key presented, whatever their answer (refused ones too).
    pub fn calls_by_key(&self) -> CallsByKey {
        self.by_key.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn reset_calls(&self) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.by_key.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The most API requests that were being handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    fn count(&self, route: String, token: &str) {
        *self.calls.lock().unwrap_or_else(|p| p.into_inner()).entry(route).or_default() += 1;
        *self.by_key.lock().unwrap_or_else(|p| p.into_inner()).entry(token.to_owned()).or_default() += 1;
    }
}

/// Middleware on the API routes: count (by route and by the key presented, before anything can
/// refuse the request), then misbehave as configured.
pub async fn layer(State(store): State<Arc<Store>>, path: MatchedPath, req: Request, next: Next) -> Response {
    let chaos = store.chaos();
    let method = req.method().clone();
    chaos.count(format!("{method} {}", path.as_str()), crate::auth::presented(req.headers()));
    let _in_flight = InFlight::enter(chaos);
    let f = chaos.faults();
    let wait = Duration::from_millis(f.latency_ms);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    if draw(f.throttle) {
        let mut r =
            (StatusCode::TOO_MANY_REQUESTS, axum::Json(serde_json::json!({"detail": "Too Many Requests"})))
                .into_response();
        if let Ok(v) = HeaderValue::from_str(&f.retry_after_secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    if let Some(to) = &f.redirect_to {
        let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
        if let Ok(v) = HeaderValue::from_str(to) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    if draw(f.server_error) {
        let code = if method == axum::http::Method::GET {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return (code, "Internal Server Error").into_response();
    }
    let hang = draw(f.hang);
    let malformed = draw(f.malformed);
    let huge = draw(f.huge_body);
    let response = next.run(req).await;
    if huge {
        // Valid JSON, just big: whitespace before the real body.
        let (mut parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let mut padded = vec![b' '; f.huge_body_bytes];
        padded.extend_from_slice(&bytes);
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(padded.len()));
        if f.huge_body_stall_ms == 0 || padded.is_empty() {
            return Response::from_parts(parts, Body::from(padded));
        }
        let stall = Duration::from_millis(f.huge_body_stall_ms);
        let last = padded.split_off(padded.len() - 1);
        let chunks = futures::stream::iter([padded, last]).enumerate().then(move |(i, chunk)| async move {
            if i == 1 {
                tokio::time::sleep(stall).await;
            }
            Ok::<_, std::convert::Infallible>(chunk)
        });
        return Response::from_parts(parts, Body::from_stream(chunks));
    }
    if hang {
        std::future::pending::<()>().await;
    }
    if malformed {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let cut = bytes.slice(..bytes.len() / 2);
        let mut parts = parts;
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(cut));
    }
    response
}

/// Counts a request as in flight until dropped (also when a hanging request is abandoned).
struct InFlight<'a>(&'a Chaos);

impl<'a> InFlight<'a> {
    fn enter(chaos: &'a Chaos) -> Self {
        let now = chaos.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        chaos.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(chaos)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn draw(share: f64) -> bool {
    share > 0.0 && fastrand::f64() < share
}
