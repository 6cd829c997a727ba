//! A worker's own dashboard: a small status page, `/metrics`,
//! `/api/state` and `/health`, served on the worker's runtime from its
//! [`WorkerProbe`]; the scheduler's `/workers` page links it.
//!
//! The runtime binds the address and reports it to the scheduler; this
//! module only answers requests ([`WorkerPage`] is the runtime's
//! [`StatusPage`]). Every figure is read when a page asks: the worker
//! pays nothing while nobody looks.

pub mod metrics;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use weft_runtime::worker::{StatusPage, WorkerDashboard, WorkerProbe};

use crate::{Capped, not_found, with_type};

/// Connections a worker's page serves at once.
const MAX_CONNECTIONS: usize = 32;

/// Serves a worker's page; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkerPage;

/// A worker dashboard at `address` (`HOST:PORT` or `:PORT`; `None`: a
/// free port on the host the worker's data server listens on), for
/// [`weft_runtime::WorkerOptions::dashboard`].
pub fn worker_dashboard(address: Option<String>) -> WorkerDashboard {
    WorkerDashboard {
        address,
        server: Arc::new(WorkerPage),
    }
}

impl StatusPage for WorkerPage {
    fn serve(&self, listener: TcpListener, probe: WorkerProbe) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let router = Router::new()
                .route("/", get(page))
                .route("/static/style.css", get(crate::style))
                .route("/health", get(crate::health))
                .route("/metrics", get(metrics_text))
                .route("/api/state", get(api_state))
                .fallback(not_found)
                .with_state(probe);
            if let Err(error) = axum::serve(Capped::new(listener, MAX_CONNECTIONS), router).await {
                tracing::warn!(%error, "the worker's dashboard stopped");
            }
        })
    }
}

const WORKER_HTML: &str = include_str!("../../assets/worker.html");

async fn page() -> Response {
    with_type(WORKER_HTML, "text/html; charset=utf-8")
}

async fn metrics_text(State(probe): State<WorkerProbe>) -> Response {
    let figures = probe.read().await;
    let mut response = metrics::encode(probe.description(), &figures).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `/api/state`: `{worker: {name, address, scheduler, nthreads,
/// memory_limit, device_limit, spill, pause}, figures: {tasks: {waiting,
/// ready, running, fetching, memory, finished, failed, paused} | null,
/// memory: {on_device, in_memory, on_disk, ...}, bytes_in, bytes_out,
/// fetched, served, cpu_seconds, cpu_percent, rss_bytes, uptime_s}}`.
async fn api_state(State(probe): State<WorkerProbe>) -> Response {
    let figures = probe.read().await;
    let body = json!({"worker": probe.description(), "figures": figures});
    let mut response = body.to_string().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
