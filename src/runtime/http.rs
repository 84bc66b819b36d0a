//! The HTTP server for Prometheus and probes: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Where this replica is, for `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// Joining the leader election.
    Starting = 0,
    /// Another replica leads; this one is ready to take over.
    Standby = 1,
    /// Leading, caches not synced yet.
    Syncing = 2,
    /// Leading, caches synced, the controller running.
    Running = 3,
    /// Shutting down.
    Stopping = 4,
}

/// What the probes and the scrape read.
pub struct Probe {
    pub metrics: Arc<Metrics>,
    stage: AtomicU8,
}

impl Probe {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Probe { metrics, stage: AtomicU8::new(Stage::Starting as u8) }
    }

    pub fn set(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Relaxed);
    }

    /// Moves from `from` to `to`, only if nothing else moved it meanwhile (shutdown).
    pub fn advance(&self, from: Stage, to: Stage) {
        let _ = self.stage.compare_exchange(from as u8, to as u8, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn stage(&self) -> Stage {
        match self.stage.load(Ordering::Relaxed) {
            1 => Stage::Standby,
            2 => Stage::Syncing,
            3 => Stage::Running,
            4 => Stage::Stopping,
            _ => Stage::Starting,
        }
    }
}

/// Serves until the process ends; binding errors are returned at once.
pub async fn serve(addr: SocketAddr, probe: Arc<Probe>) -> std::io::Result<impl Future<Output = ()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(probe);
    Ok(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    })
}

async fn metrics(State(p): State<Arc<Probe>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        p.metrics.render(),
    )
}

/// Ready: the leader once its caches synced and its controller runs; a standby, which has
/// nothing to sync until it leads, as soon as it stands.
async fn readyz(State(p): State<Arc<Probe>>) -> impl IntoResponse {
    match p.stage() {
        Stage::Running => (StatusCode::OK, "ok: leading"),
        Stage::Standby => (StatusCode::OK, "ok: standby"),
        Stage::Starting => (StatusCode::SERVICE_UNAVAILABLE, "joining the leader election"),
        Stage::Syncing => (StatusCode::SERVICE_UNAVAILABLE, "leading, caches not synced"),
        Stage::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}
