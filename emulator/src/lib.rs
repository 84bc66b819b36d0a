//! An emulator of the Kubiya control plane's Environments API (`/api/v1/environments`) and its
//! worker queues (`/api/v1/environments/{env}/worker-queues`, `/api/v1/worker-queues`) that answers
//! like the real server (PyPI `kubiya-control-plane-api` 1.0.2), quirks included: the status codes,
//! the shapes of `detail`, the organization's first environment provisioning, the `default`
//! environment that every list creates, 409 on duplicate names, PATCH replacing
//! `execution_environment`, 500 for non-UUID ids and constraint violations, 204 on delete, and
//! UserKey/Bearer/raw-token auth with unverified HS256 JWTs. Worker queues: pydantic's 422s
//! (settings checked by `QueueSettings`), PATCH storing explicit nulls (and then failing every
//! read of the queue with a 500), hidden `local-exec` queues, the `default` queue that cannot be
//! deleted, queues deleted with their environment. The emulator has no workers: tests set a
//! queue's count of active workers ([`Emulator::set_active_workers`]).
//!
//! Tests start it in-process ([`Emulator::start`]) and read or steer its state directly (calls
//! are counted per route and per API key); `kubiya-cp-emulator` runs it on its own, steered
//! through `/_emulator/faults` and read through `/_emulator/calls`.

mod api;
mod auth;
mod faults;
mod pydantic;
mod queues;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

pub use auth::{token, token_with_claims};
pub use faults::{Calls, CallsByKey, Faults};
use store::Store;

/// What happens to an organization's first environment, which starts `provisioning`.
#[derive(Clone, Debug)]
pub enum FirstOutcome {
    /// It becomes `ready`.
    Ready,
    /// It becomes `error` with this `error_message`, as when the provisioning workflow fails.
    Error(String),
}

/// Knobs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Latency and failures; changeable later with [`Emulator::set_faults`].
    pub faults: Faults,
    /// How long an organization's first environment stays `provisioning`.
    pub provisioning: Duration,
    /// Where the first environment ends up.
    pub first_outcome: FirstOutcome,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            faults: Faults::default(),
            provisioning: Duration::from_secs(2),
            first_outcome: FirstOutcome::Ready,
        }
    }
}

/// A running emulator on 127.0.0.1. Stops when dropped.
pub struct Emulator {
    addr: SocketAddr,
    store: Arc<Store>,
    task: JoinHandle<()>,
    /// Ends the server gracefully (idle keep-alive connections closed too), for [`Emulator::go_down`].
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Emulator {
    /// Starts on an ephemeral port.
    pub async fn start(config: Config) -> std::io::Result<Emulator> {
        Self::bind(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr`.
    pub async fn bind(config: Config, addr: SocketAddr) -> std::io::Result<Emulator> {
        let store = Arc::new(Store::new(config));
        let (addr, task, stop) = serve(store.clone(), addr).await?;
        Ok(Emulator { addr, store, task, stop: Some(stop) })
    }

    /// Stops answering: the port is closed and connections are refused, as when the control
    /// plane is down. The state is kept for [`Emulator::come_up`].
    pub async fn go_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }

    /// Answers again, on the same address and with the same state.
    pub async fn come_up(&mut self) -> std::io::Result<()> {
        let (_, task, stop) = serve(self.store.clone(), self.addr).await?;
        self.task = task;
        self.stop = Some(stop);
        Ok(())
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The environments of `org`, rendered as the API renders them, in creation order.
    pub fn environments(&self, org: &str) -> Vec<Value> {
        self.store.environments(org)
    }

    /// Every worker token `org` was ever given, for checks that none leaked.
    pub fn worker_tokens(&self, org: &str) -> Vec<String> {
        self.store.worker_tokens(org)
    }

    /// The worker queues of `org`, ephemeral ones included, as stored (an explicit null a PATCH
    /// wrote included), each with `active_workers` and `ephemeral`, in creation order.
    pub fn worker_queues(&self, org: &str) -> Vec<Value> {
        self.store.worker_queues(org)
    }

    /// Sets how many workers heartbeat on a worker queue (of any organization), as the real
    /// server counts them from heartbeats: the queue's `active_workers`, and DELETE answers 400
    /// while it is not zero. Also `PUT /_emulator/queues/{id}/active-workers` with a JSON number.
    /// Returns false when there is no such queue.
    pub fn set_active_workers(&self, queue_id: &str, n: u64) -> bool {
        self.store.set_active_workers(queue_id, n)
    }

    /// Sets an environment's status (and `error_message`) as the control plane's workflows would.
    /// Returns false when there is no such environment.
    pub fn set_status(&self, org: &str, id: &str, status: &str, error_message: Option<&str>) -> bool {
        self.store.set_status(org, id, status, error_message)
    }

    /// Changes latency and failures from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.store.chaos().set_faults(faults);
    }

    /// Calls received so far, per route (`"POST /api/v1/environments"` → count).
    pub fn calls(&self) -> Calls {
        self.store.chaos().calls()
    }

    /// Calls received so far on the API routes, per API key as presented (the raw token, without
    /// `UserKey `/`Bearer `; `""` for none), whatever their answer: refused keys are counted too.
    pub fn calls_by_key(&self) -> CallsByKey {
        self.store.chaos().calls_by_key()
    }

    /// Calls received so far on the API routes with this key (the raw token).
    pub fn calls_with_key(&self, key: &str) -> u64 {
        self.calls_by_key().get(key).copied().unwrap_or(0)
    }

    /// The most API requests that were being handled at once since the start.
    pub fn max_in_flight(&self) -> usize {
        self.store.chaos().max_in_flight()
    }

    /// Waits until the server task ends (for the standalone binary).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

async fn serve(
    store: Arc<Store>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, JoinHandle<()>, tokio::sync::oneshot::Sender<()>)> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    let addr = listener.local_addr()?;
    let app = api::router(store);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "emulator server stopped");
        }
    });
    Ok((addr, task, stop))
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
