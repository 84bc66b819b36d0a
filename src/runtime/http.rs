//! The HTTP server for Prometheus and probes: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the probes and the scrape read.
pub struct Probe {
    pub metrics: Arc<Metrics>,
    /// Set once the controller's caches have synced.
    pub ready: AtomicBool,
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

async fn readyz(State(p): State<Arc<Probe>>) -> impl IntoResponse {
    if p.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}
