//! The HTTP client. Talks to the control plane; every call is one `#[instrument]`ed method.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tracing::instrument;
use url::Url;

use super::error::Error;
use super::wire::{
    EnvironmentBody, QueueBody, QueueCommand, RemoteEnvironment, RemoteQueue, WorkerCommand, error_detail,
};
use crate::metrics::Metrics;

const LIST: &str = "/api/v1/environments";
const ONE: &str = "/api/v1/environments/{id}";
const WORKER_COMMAND: &str = "/api/v1/environments/{id}/worker-command";
const QUEUES_OF: &str = "/api/v1/environments/{id}/worker-queues";
const QUEUES: &str = "/api/v1/worker-queues";
const QUEUE: &str = "/api/v1/worker-queues/{id}";
const QUEUE_COMMAND: &str = "/api/v1/worker-queues/{id}/worker-command";

/// Attempts for idempotent calls (GET, PATCH, DELETE) on retryable errors. POST is never retried
/// blindly: a create whose answer was lost may have succeeded (the reconcile recovers it).
const ATTEMPTS: u32 = 3;
/// Longest `Retry-After` waited inside a call; longer ones go back to the reconcile's backoff.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(5);
/// Largest answer read: about 10,000 environments in one (unpaginated) list. A bigger one, from a
/// huge organization or something hostile in between, is refused rather than risking the
/// operator's memory limit.
pub const MAX_BODY: usize = 16 << 20;
/// What the answers being read and decoded may hold at once, over every connection: two of the
/// largest, or many small ones. An answer that would pass it is refused (and its call tried
/// again later), so that sixteen passes and every connection's checks, against a control plane
/// answering near [`MAX_BODY`] to each, stay within the operator's memory limit.
pub const ANSWERS_IN_FLIGHT: usize = 32 << 20;
/// The budget, in KiB.
static IN_FLIGHT: Semaphore = Semaphore::const_new(ANSWERS_IN_FLIGHT >> 10);

/// The Kubiya API key. `Debug` is redacted; the only way out is the Authorization header.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into().trim().to_owned())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The organization the key names (its JWT's `organization` claim, read without verifying
    /// anything, as the control plane reads it): for display only.
    pub fn organization(&self) -> Option<String> {
        use base64::Engine;
        let payload = self.0.split('.').nth(1)?;
        let bytes =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let org = claims.get("organization")?.as_str()?;
        // A claim is whatever the key's maker put there: shown only if it looks like a name.
        let plain = !org.is_empty()
            && org.len() <= 100
            && org.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        plain.then(|| org.to_owned())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How to reach the control plane.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub base_url: Url,
    pub api_key: ApiKey,
    /// Timeout of one request, connect included.
    pub timeout: Duration,
    /// Requests in flight at once, across all reconciles: the control plane serves one request
    /// at a time at its database, and more concurrency only queues there.
    pub max_concurrent: usize,
    /// Where each request is counted and timed.
    pub metrics: Arc<Metrics>,
    /// The connection this client serves, as metrics label it (`operator`, `Connection/ns/name`,
    /// `ClusterConnection/name`).
    pub connection: String,
}

impl ClientConfig {
    /// One request at a time, counted nowhere: what a one-shot command needs.
    pub fn new(base_url: Url, api_key: ApiKey, timeout: Duration) -> Self {
        ClientConfig {
            base_url,
            api_key,
            timeout,
            max_concurrent: 1,
            metrics: Arc::default(),
            connection: String::new(),
        }
    }

    /// At most `n` requests in flight at once.
    pub fn limited_to(self, n: usize) -> Self {
        ClientConfig { max_concurrent: n, ..self }
    }

    /// Requests counted and timed in `metrics`, labelled as `connection`'s.
    pub fn counted_in(self, metrics: Arc<Metrics>, connection: String) -> Self {
        ClientConfig { metrics, connection, ..self }
    }
}

/// After this many requests in a row got no answer, the control plane is taken as down: requests
/// fail at once for [`BREAKER_PAUSE`], then one is let through to see. Without it, passes waiting
/// on a control plane that hangs hold the controller's reconcile slots, and one organisation's
/// outage slows every other's.
const BREAKER_FAILURES: u32 = 3;
const BREAKER_PAUSE: Duration = Duration::from_secs(5);

/// Why a client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "the API key is empty or holds a space, a line break or a character that is not printable \
         ASCII: check the Secret or file it comes from"
    )]
    InvalidKey,
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// A typed client for `/api/v1/environments`. Cheap to clone (one key; the process's one
/// connection pool).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// Swapped in place when the key rotates: no request goes out with the old key after.
    auth: Arc<RwLock<HeaderValue>>,
    limit: Arc<Limit>,
    /// Requests of passes nobody waits for (drift checks) yield to the others.
    background: bool,
    timeout: Duration,
    metrics: Arc<Metrics>,
    connection: Arc<str>,
    breaker: Arc<Breaker>,
}

/// Requests in a row without an answer, and until when requests are refused.
#[derive(Debug, Default)]
struct Breaker {
    failures: AtomicU32,
    open_until: Mutex<Option<Instant>>,
}

/// The `Authorization` header for `key`. Keys are JWTs: printable ASCII without spaces; anything
/// else is a mistake (a line break inside the file, a pasted typographic quote) better told at
/// once than as 401s.
fn authorization(key: &ApiKey) -> Result<HeaderValue, BuildError> {
    if key.is_empty() || !key.0.chars().all(|c| c.is_ascii_graphic()) {
        return Err(BuildError::InvalidKey);
    }
    let mut auth =
        HeaderValue::from_str(&format!("UserKey {}", key.0)).map_err(|_| BuildError::InvalidKey)?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// The one HTTP client of the process, built at the first call and shared by every [`Client`]:
/// each `reqwest::Client` holds its own TLS root store and connection pool, about 39 KiB: with one
/// each, 2,000 Connections were 104 MiB resident, 28.5 MiB with this one. Nothing in it is a
/// connection's: the key goes in each request's header, the timeout on each request, and pooled
/// connections are per host.
fn shared_http() -> Result<reqwest::Client, BuildError> {
    static HTTP: Mutex<Option<reqwest::Client>> = Mutex::new(None);
    let mut http = HTTP.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(client) = &*http {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        // A request's own timeout covers a shorter connect.
        .connect_timeout(Duration::from_secs(5))
        // A redirect would re-send the body, and the key, to wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("kubiya-operator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(BuildError::Http)?;
    *http = Some(client.clone());
    Ok(client)
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, BuildError> {
        let auth = authorization(&config.api_key)?;
        Ok(Client {
            http: shared_http()?,
            base: config.base_url,
            auth: Arc::new(RwLock::new(auth)),
            limit: Arc::new(Limit::new(config.max_concurrent.max(1))),
            background: false,
            timeout: config.timeout,
            metrics: config.metrics,
            connection: config.connection.into(),
            breaker: Arc::default(),
        })
    }

    /// The same client, for a pass nobody waits for (a drift check), or not: its requests take a
    /// request slot only while no other request waits for one.
    pub fn in_background(&self, background: bool) -> Client {
        Client { background, ..self.clone() }
    }

    /// Sends `key` from now on (a rotated key).
    pub fn set_key(&self, key: &ApiKey) -> Result<(), BuildError> {
        let auth = authorization(key)?;
        *self.auth.write().unwrap_or_else(|p| p.into_inner()) = auth;
        Ok(())
    }

    /// The control plane this client talks to.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Whether the control plane accepts the key, with a request that creates nothing: a GET
    /// of an id that does not exist answers 404 to a good key, 401 to a bad one. (A list would
    /// create the organization's `default` environment.)
    #[instrument(skip(self), level = "debug")]
    pub async fn check_key(&self) -> Result<(), Error> {
        match self.get("00000000-0000-4000-8000-000000000000").await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /api/v1/environments[?status_filter=…]`. Beware: the server creates the organization's
    /// `default` environment on every list when there is none.
    #[instrument(skip(self), level = "debug")]
    pub async fn list(&self, status_filter: Option<&str>) -> Result<Vec<RemoteEnvironment>, Error> {
        let mut url = self.url(LIST, &[]);
        if let Some(f) = status_filter {
            url.query_pairs_mut().append_pair("status_filter", f);
        }
        self.idempotent(Method::GET, LIST, url, None).await?.json_as().await
    }

    #[instrument(skip(self), level = "debug")]
    pub async fn get(&self, id: &str) -> Result<RemoteEnvironment, Error> {
        let url = self.url(LIST, &[id]);
        self.idempotent(Method::GET, ONE, url, None).await?.json_as().await
    }

    /// `POST`, answered 201. Not retried: see [`ATTEMPTS`].
    #[instrument(skip_all, fields(name = %body.name), level = "debug")]
    pub async fn create(&self, body: &EnvironmentBody) -> Result<RemoteEnvironment, Error> {
        let req = self.http.post(self.url(LIST, &[])).json(body);
        let resp = self.send("POST", LIST, req).await?;
        resp.json_as().await
    }

    /// `PATCH` with only the given fields; an explicit `null` clears a field.
    #[instrument(skip(self, fields), level = "debug")]
    pub async fn update(&self, id: &str, fields: &Map<String, Value>) -> Result<RemoteEnvironment, Error> {
        let url = self.url(LIST, &[id]);
        let body = Value::Object(fields.clone());
        self.idempotent(Method::PATCH, ONE, url, Some(&body)).await?.json_as().await
    }

    /// `DELETE`, answered 204. "Not found" is success: the environment is gone either way.
    #[instrument(skip(self), level = "debug")]
    pub async fn delete(&self, id: &str) -> Result<(), Error> {
        let url = self.url(LIST, &[id]);
        match self.idempotent(Method::DELETE, ONE, url, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    #[instrument(skip(self), level = "debug")]
    pub async fn worker_command(&self, id: &str) -> Result<WorkerCommand, Error> {
        let url = self.url(LIST, &[id, "worker-command"]);
        self.idempotent(Method::GET, WORKER_COMMAND, url, None).await?.json_as().await
    }

    /// `GET /api/v1/environments/{env}/worker-queues`: its queues (not the ephemeral ones).
    #[instrument(skip(self), level = "debug")]
    pub async fn list_queues(&self, environment_id: &str) -> Result<Vec<RemoteQueue>, Error> {
        let url = self.url(LIST, &[environment_id, "worker-queues"]);
        self.idempotent(Method::GET, QUEUES_OF, url, None).await?.json_as().await
    }

    #[instrument(skip(self), level = "debug")]
    pub async fn get_queue(&self, id: &str) -> Result<RemoteQueue, Error> {
        let url = self.url(QUEUES, &[id]);
        self.idempotent(Method::GET, QUEUE, url, None).await?.json_as().await
    }

    /// `POST`, answered 201; 404 when the environment does not exist, 409 when the name is
    /// taken in it. Not retried: see [`ATTEMPTS`].
    #[instrument(skip_all, fields(name = %body.name), level = "debug")]
    pub async fn create_queue(&self, environment_id: &str, body: &QueueBody) -> Result<RemoteQueue, Error> {
        let req = self.http.post(self.url(LIST, &[environment_id, "worker-queues"])).json(body);
        self.send("POST", QUEUES_OF, req).await?.json_as().await
    }

    /// `PATCH` with only the given fields; an explicit `null` clears a field.
    #[instrument(skip(self, fields), level = "debug")]
    pub async fn update_queue(&self, id: &str, fields: &Map<String, Value>) -> Result<RemoteQueue, Error> {
        let url = self.url(QUEUES, &[id]);
        let body = Value::Object(fields.clone());
        self.idempotent(Method::PATCH, QUEUE, url, Some(&body)).await?.json_as().await
    }

    /// `DELETE`, answered 204; 400 while workers are active. "Not found" is success.
    #[instrument(skip(self), level = "debug")]
    pub async fn delete_queue(&self, id: &str) -> Result<(), Error> {
        let url = self.url(QUEUES, &[id]);
        match self.idempotent(Method::DELETE, QUEUE, url, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    #[instrument(skip(self), level = "debug")]
    pub async fn queue_command(&self, id: &str) -> Result<QueueCommand, Error> {
        let url = self.url(QUEUES, &[id, "worker-command"]);
        self.idempotent(Method::GET, QUEUE_COMMAND, url, None).await?.json_as().await
    }

    fn url(&self, route: &str, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{}", self.base.path().trim_end_matches('/'), route));
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        url
    }

    /// Sends an idempotent request, retrying transport errors, 429 and 5xx with jittered
    /// exponential backoff (or the server's `Retry-After`, when short).
    async fn idempotent(
        &self,
        method: Method,
        route: &'static str,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Answer, Error> {
        let name = method_name(&method);
        let mut attempt = 0;
        loop {
            let mut req = self.http.request(method.clone(), url.clone());
            if let Some(b) = body {
                req = req.json(b);
            }
            match self.send(name, route, req).await {
                Err(e) if e.is_retryable() && attempt + 1 < ATTEMPTS => {
                    let wait = match e.retry_after() {
                        Some(w) if w > MAX_INLINE_WAIT => return Err(e),
                        Some(w) => w,
                        None => backoff(attempt),
                    };
                    tracing::debug!(error = %e, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn send(
        &self,
        method: &'static str,
        route: &'static str,
        req: RequestBuilder,
    ) -> Result<Answer, Error> {
        if self.breaker.is_open() {
            return Err(Error::Down { method, route });
        }
        // Waiting longer than a request may take means the control plane is saturated: give the
        // reconcile slot back rather than queue (the semaphore is never closed).
        let Ok(Some(_permit)) = tokio::time::timeout(self.timeout, self.limit.acquire(self.background)).await
        else {
            return Err(Error::Busy { method, route });
        };
        let started = Instant::now();
        // Timed and counted once the whole body is in: a body cut short is a transport error,
        // not a success.
        let answer = async {
            let auth = self.auth.read().unwrap_or_else(|p| p.into_inner()).clone();
            let resp = req.header(AUTHORIZATION, auth).timeout(self.timeout).send().await?;
            let (status, retry_after, location) = (resp.status(), retry_after(&resp), location(&resp));
            Ok::<_, reqwest::Error>((status, retry_after, location, read_capped(resp).await?))
        }
        .await;
        let code = answer.as_ref().ok().map(|(status, ..)| status.as_u16());
        self.metrics.cp_request(&self.connection, route, method, code, started.elapsed());
        self.breaker.record(code.is_some());
        let (status, retry_after, location, body) =
            answer.map_err(|source| Error::Transport { method, route, source })?;
        let (body, held) = match body {
            Read::Whole(body, held) => (body, held),
            Read::TooLarge => return Err(Error::TooLarge { method, route, limit: MAX_BODY }),
            Read::OverBudget => return Err(Error::OverBudget { method, route, limit: ANSWERS_IN_FLIGHT }),
        };
        if status.is_redirection() {
            let target = location.unwrap_or_else(|| "nowhere (no Location header)".to_owned());
            return Err(Error::Redirect { method, route, status: status.as_u16(), target });
        }
        if status.is_success() {
            return Ok(Answer { body, status, method, route, _held: held });
        }
        Err(Error::api(method, route, status.as_u16(), error_detail(&body).unwrap_or_default(), retry_after))
    }
}

/// Request slots, with a priority: a background request takes one only while no other waits.
/// Not a second queue: background requests use what the others leave, and go on as soon as none
/// waits.
#[derive(Debug)]
struct Limit {
    permits: Semaphore,
    urgent_waiting: AtomicUsize,
    calm: Notify,
}

impl Limit {
    fn new(n: usize) -> Self {
        Limit { permits: Semaphore::new(n), urgent_waiting: AtomicUsize::new(0), calm: Notify::new() }
    }

    /// A slot (`None` only if the semaphore were closed, which it never is).
    async fn acquire(&self, background: bool) -> Option<SemaphorePermit<'_>> {
        if !background {
            self.urgent_waiting.fetch_add(1, Ordering::SeqCst);
            let permit = self.permits.acquire().await.ok();
            if self.urgent_waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.calm.notify_waiters();
            }
            return permit;
        }
        loop {
            // Registered before the check, so that a notification in between is not missed.
            let calm = self.calm.notified();
            if self.urgent_waiting.load(Ordering::SeqCst) > 0 {
                calm.await;
                continue;
            }
            let permit = self.permits.acquire().await.ok()?;
            // Someone urgent queued meanwhile: the slot is theirs.
            if self.urgent_waiting.load(Ordering::SeqCst) == 0 {
                return Some(permit);
            }
        }
    }
}

impl Breaker {
    fn is_open(&self) -> bool {
        let mut until = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        match *until {
            Some(t) if Instant::now() < t => true,
            // Half open: this request goes through; another failure opens it again.
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// Records whether a request got an answer (any status).
    fn record(&self, answered: bool) {
        if answered {
            self.failures.store(0, Ordering::Relaxed);
            return;
        }
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= BREAKER_FAILURES {
            *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + BREAKER_PAUSE);
        }
    }
}

/// A successful response, with what is needed to describe a decoding failure.
struct Answer {
    body: Bytes,
    status: StatusCode,
    method: &'static str,
    route: &'static str,
    /// Its share of [`ANSWERS_IN_FLIGHT`], given back once it is decoded.
    _held: Option<SemaphorePermit<'static>>,
}

impl Answer {
    async fn json_as<T: DeserializeOwned>(self) -> Result<T, Error> {
        let Answer { body, method, route, .. } = self;
        serde_json::from_slice(&body).map_err(|source| Error::Decode { method, route, source })
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.method, self.route, self.status)
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::POST => "POST",
        _ => "OTHER",
    }
}

fn retry_after(resp: &Response) -> Option<Duration> {
    if !matches!(resp.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        return None;
    }
    let secs: u64 = resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// An answer's body, as far as it was read.
enum Read {
    /// All of it, with its share of [`ANSWERS_IN_FLIGHT`] (none for an empty body).
    Whole(Bytes, Option<SemaphorePermit<'static>>),
    /// It passed [`MAX_BODY`]: the rest is not read.
    TooLarge,
    /// The answers in flight would have passed [`ANSWERS_IN_FLIGHT`] with it: the rest is not read.
    OverBudget,
}

/// The whole body, unless it passes [`MAX_BODY`] or the budget of all answers in flight.
async fn read_capped(mut resp: Response) -> Result<Read, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Ok(Read::TooLarge);
    }
    // The budget holds what the buffer takes (its capacity, not its length): one allocation of the
    // announced length, or, without one, a doubling the budget pays for before it is made.
    let mut held = Held::default();
    let mut body = Vec::new();
    if let Some(n) = resp.content_length() {
        if !held.grow(n as usize) {
            return Ok(Read::OverBudget);
        }
        body.reserve_exact(n as usize);
    }
    while let Some(chunk) = resp.chunk().await? {
        let len = body.len() + chunk.len();
        if len > MAX_BODY {
            return Ok(Read::TooLarge);
        }
        if len > body.capacity() {
            let capacity = len.max(body.capacity() * 2).min(MAX_BODY);
            if !held.grow(capacity) {
                return Ok(Read::OverBudget);
            }
            body.reserve_exact(capacity - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Read::Whole(Bytes::from(body), held.permit))
}

/// The share of [`ANSWERS_IN_FLIGHT`] one answer holds, in whole KiB.
#[derive(Default)]
struct Held {
    permit: Option<SemaphorePermit<'static>>,
    kib: u32,
}

impl Held {
    /// Holds enough for `bytes` in all; false if the budget has not that much left (nothing is
    /// waited for: an answer waiting on others could wait on one that waits on it).
    fn grow(&mut self, bytes: usize) -> bool {
        let want = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        if want <= self.kib {
            return true;
        }
        let Ok(more) = IN_FLIGHT.try_acquire_many(want - self.kib) else { return false };
        match &mut self.permit {
            Some(p) => p.merge(more),
            None => self.permit = Some(more),
        }
        self.kib = want;
        true
    }
}

/// Where a redirect points: scheme, host and port only (a path or query could carry anything).
fn location(resp: &Response) -> Option<String> {
    let value = resp.headers().get(reqwest::header::LOCATION)?.to_str().ok()?;
    let url = resp.url().join(value).ok()?;
    Some(
        format!("{}://{}", url.scheme(), url.host_str()?)
            + &url.port().map(|p| format!(":{p}")).unwrap_or_default(),
    )
}

/// 200 ms, 400 ms, … with ±50 % jitter so that many objects don't retry in lockstep.
fn backoff(attempt: u32) -> Duration {
    let base = 200u64 << attempt.min(6);
    Duration::from_millis(base / 2 + fastrand::u64(0..=base))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client::new(ClientConfig::new(Url::parse(base).unwrap(), ApiKey::new("k"), Duration::from_secs(1)))
            .unwrap()
    }

    #[test]
    fn answers_in_flight_hold_their_size_until_dropped_and_none_passes_the_budget() {
        let budget = ANSWERS_IN_FLIGHT >> 10;
        let mut big = Held::default();
        assert!(big.grow(ANSWERS_IN_FLIGHT - 4096), "one answer can have almost all of it");
        assert!(big.grow(1), "already held");
        assert_eq!(IN_FLIGHT.available_permits(), 4);
        let mut small = Held::default();
        assert!(small.grow(1), "a byte takes a whole KiB");
        assert!(small.grow(3 * 1024));
        assert!(!small.grow(4 * 1024 + 1), "past the budget");
        assert_eq!(IN_FLIGHT.available_permits(), 1, "what it held is kept");
        drop(big);
        drop(small);
        assert_eq!(IN_FLIGHT.available_permits(), budget, "all given back");
    }

    #[test]
    fn urls_have_no_trailing_slash_and_escape_ids() {
        let c = client("http://cp.test/");
        assert_eq!(c.url(LIST, &[]).as_str(), "http://cp.test/api/v1/environments");
        assert_eq!(c.url(LIST, &["a/b"]).as_str(), "http://cp.test/api/v1/environments/a%2Fb");
        let c = client("http://cp.test/prefix/");
        assert_eq!(
            c.url(LIST, &["id", "worker-command"]).as_str(),
            "http://cp.test/prefix/api/v1/environments/id/worker-command"
        );
    }

    #[test]
    fn a_key_that_cannot_be_a_header_is_refused() {
        for bad in ["", "line\nbreak", "caf\u{e9}", "two words", "\u{201c}quoted\u{201d}"] {
            let config = ClientConfig::new(
                Url::parse("http://cp.test").unwrap(),
                ApiKey::new(bad),
                Duration::from_secs(1),
            );
            let built = Client::new(config);
            assert!(matches!(built, Err(BuildError::InvalidKey)), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn background_requests_wait_while_urgent_ones_wait() {
        let limit = Arc::new(Limit::new(1));
        let held = limit.acquire(false).await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let background = tokio::spawn({
            let (limit, order) = (limit.clone(), order.clone());
            async move {
                let _p = limit.acquire(true).await;
                order.lock().unwrap().push("background");
            }
        });
        tokio::task::yield_now().await;
        let urgent = tokio::spawn({
            let (limit, order) = (limit.clone(), order.clone());
            async move {
                let _p = limit.acquire(false).await;
                order.lock().unwrap().push("urgent");
                tokio::task::yield_now().await;
            }
        });
        // Both wait now; the background one queued first.
        while limit.urgent_waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        urgent.await.unwrap();
        background.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["urgent", "background"]);
        assert!(limit.acquire(true).await.is_some(), "alone, a background request goes at once");
    }

    #[test]
    fn the_breaker_opens_after_requests_in_a_row_got_no_answer_and_half_opens_after_a_pause() {
        let b = Breaker::default();
        b.record(false);
        b.record(false);
        assert!(!b.is_open(), "two are not enough");
        b.record(true);
        b.record(false);
        b.record(false);
        assert!(!b.is_open(), "an answer in between starts the count again");
        b.record(false);
        assert!(b.is_open());
        *b.open_until.lock().unwrap() = Some(Instant::now());
        assert!(!b.is_open(), "half open once the pause is over");
        b.record(false);
        assert!(b.is_open(), "one more failure opens it again");
        b.record(true);
        *b.open_until.lock().unwrap() = None;
        assert!(!b.is_open());
    }

    #[test]
    fn the_organization_claim_is_read_for_display() {
        let jwt = |claims: &str| {
            use base64::Engine;
            let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!("{}.{}.sig", e.encode("{}"), e.encode(claims))
        };
        assert_eq!(
            ApiKey::new(jwt(r#"{"organization":"acme-1"}"#)).organization().as_deref(),
            Some("acme-1")
        );
        assert_eq!(ApiKey::new(jwt(r#"{"email":"a@b"}"#)).organization(), None);
        assert_eq!(ApiKey::new(jwt(r#"{"organization":"<script>"}"#)).organization(), None);
        assert_eq!(ApiKey::new("not-a-jwt").organization(), None);
    }

    #[test]
    fn api_key_debug_is_redacted() {
        assert_eq!(format!("{:?}", ApiKey::new("secret")), "ApiKey(<redacted>)");
        assert!(!format!("{:?}", client("http://cp.test")).contains("UserKey k"));
    }
}
