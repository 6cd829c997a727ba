//! Weft's dashboard: what a scheduler is doing, over HTTP.
//!
//! [`serve`] starts an HTTP server (axum, HTTP/1) on the scheduler's
//! tokio runtime that reads an [`Observer`] from `weft-runtime` and never
//! touches the scheduler itself:
//!
//! - `/` and `/status`, `/workers`, `/tasks`, `/graph`: the pages (one
//!   embedded HTML file with its script and style; no network needed);
//! - `/api/events`: server-sent events, one message per observation (four
//!   a second while open) with the aggregated state and the new task-stream
//!   entries;
//! - `/api/state`: the aggregated state as JSON ([`state`]);
//! - `/metrics`: Prometheus text format ([`metrics`]);
//! - `/health`: `ok`, for load balancers and probes;
//! - `/report?seconds=N`: a performance report of the last N seconds (at
//!   most the last minute; [`report`]).
//!
//! Connections are capped ([`DashboardOptions::max_connections`]); a
//! malformed request is answered by hyper with a 4xx and costs the
//! scheduler nothing.
//!
//! Each worker serves a page of its own ([`worker`]), which the
//! scheduler's pages link; [`PerformanceReports::performance_report`]
//! records a block of work from a client into a report file.

#![warn(missing_docs)]

mod client_report;
pub mod metrics;
pub mod report;
pub mod state;
mod stream;
pub mod viewer;
pub mod worker;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinHandle;
use weft_runtime::observe::Observer;

pub use client_report::{ClientReport, PerformanceReports, ReportError};
pub use stream::History;
pub use worker::{WorkerPage, worker_dashboard};

/// The dashboard's default address (Dask's port).
pub const DEFAULT_ADDRESS: &str = ":8787";

/// How long a request for fresh data waits for the scheduler's next
/// observation before it answers with the latest one.
const FRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// What can go wrong starting the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The address does not parse.
    #[error(
        "bad dashboard address {address:?}: {reason} (expected HOST:PORT or :PORT, as in --dashboard-address :8787)"
    )]
    Address {
        /// The address given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address is taken or not ours.
    #[error(
        "cannot serve the dashboard on {address}: {source} (choose another with --dashboard-address, \
         or turn it off with --no-dashboard)"
    )]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: io::Error,
    },
}

/// How the dashboard runs.
#[derive(Clone, Debug)]
pub struct DashboardOptions {
    /// `HOST:PORT` or `:PORT` (all interfaces); port 0 picks a free one.
    pub address: String,
    /// Connections served at once; more wait until one closes.
    pub max_connections: usize,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions {
            address: DEFAULT_ADDRESS.to_string(),
            max_connections: 256,
        }
    }
}

/// A running dashboard.
pub struct Dashboard {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    history: JoinHandle<()>,
}

impl Dashboard {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Its base URL, such as `http://127.0.0.1:8787`.
    pub fn url(&self) -> String {
        let host = match self.address.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!("http://{host}:{}", self.address.port())
    }

    /// Stops serving; open event streams end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Event streams would keep a graceful shutdown waiting.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.task).await;
        self.task.abort();
        self.history.abort();
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.task.abort();
        self.history.abort();
    }
}

/// Parses `HOST:PORT` or `:PORT` (all interfaces).
pub fn parse_address(address: &str) -> Result<SocketAddr, DashboardError> {
    let full = match address.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => address.to_string(),
    };
    let bad = |reason: String| DashboardError::Address {
        address: address.to_string(),
        reason,
    };
    if let Ok(addr) = full.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // A host name: resolve it once, now.
    use std::net::ToSocketAddrs;
    full.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("the host resolves to no address".into()))
}

#[derive(Clone)]
struct App {
    observer: Observer,
    history: History,
}

/// Starts the dashboard on the current tokio runtime.
pub async fn serve(observer: Observer, options: DashboardOptions) -> Result<Dashboard, DashboardError> {
    let addr = parse_address(&options.address)?;
    let listener = TcpListener::bind(addr).await.map_err(|source| DashboardError::Bind {
        address: options.address.clone(),
        source,
    })?;
    let address = listener.local_addr().map_err(|source| DashboardError::Bind {
        address: options.address.clone(),
        source,
    })?;
    let (history, history_task) = History::start(&observer);
    let app = App { observer, history };
    let router = router(app);
    let listener = Capped::new(listener, options.max_connections);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(error) = server.await {
            tracing::warn!(%error, "the dashboard stopped");
        }
    });
    tracing::info!(url = %format!("http://{address}"), "dashboard listening");
    Ok(Dashboard {
        address,
        stop: Some(stop),
        task,
        history: history_task,
    })
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/status", get(page))
        .route("/workers", get(page))
        .route("/tasks", get(page))
        .route("/graph", get(page))
        .route("/static/app.js", get(script))
        .route("/static/style.css", get(style))
        .route("/health", get(health))
        .route("/report", get(report_page))
        .route("/metrics", get(metrics_text))
        .route("/api/state", get(api_state))
        .route("/api/events", get(events))
        .fallback(not_found)
        .with_state(app)
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

pub(crate) fn with_type(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn page() -> Response {
    with_type(INDEX_HTML, "text/html; charset=utf-8")
}

async fn script() -> Response {
    with_type(APP_JS, "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    with_type(STYLE_CSS, "text/css; charset=utf-8")
}

pub(crate) async fn health() -> &'static str {
    "ok\n"
}

pub(crate) async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

async fn metrics_text(State(app): State<App>) -> Response {
    let observation = app.observer.fresh(FRESH_TIMEOUT).await;
    let mut response = metrics::encode(&observation).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `/report?seconds=N`: the last N seconds (at most the minute kept).
async fn report_page(State(app): State<App>, uri: axum::http::Uri) -> Response {
    let seconds = uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("seconds=")))
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0);
    let observation = app.observer.fresh(FRESH_TIMEOUT).await;
    let since = seconds.map_or(f64::NEG_INFINITY, |s| observation.unix_ms - s * 1e3);
    let events = app
        .history
        .recent()
        .iter()
        .flat_map(|b| b.iter())
        .filter(|e| e.at_ms() >= since)
        .cloned()
        .collect();
    let html = report::Report::new(events, vec![observation.report_sample()]).to_html();
    let mut response = html.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

async fn api_state(State(app): State<App>) -> Response {
    let observation = app.observer.fresh(FRESH_TIMEOUT).await;
    let mut response = state::to_json(&observation).to_string().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn events(State(app): State<App>) -> impl IntoResponse {
    let feed = stream::Feed::new(&app.observer, &app.history);
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        let message = feed.next().await?;
        Some((Ok::<_, std::convert::Infallible>(Event::default().data(message)), feed))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// A listener that serves at most a fixed number of connections at once.
pub(crate) struct Capped {
    listener: TcpListener,
    permits: Arc<Semaphore>,
}

impl Capped {
    /// `listener`, serving at most `max` connections at once.
    pub(crate) fn new(listener: TcpListener, max: usize) -> Capped {
        Capped {
            listener,
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }
}

impl axum::serve::Listener for Capped {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; wait like a full one.
                std::future::pending::<()>().await;
                continue;
            };
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        CappedStream {
                            stream,
                            _permit: permit,
                        },
                        addr,
                    );
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off.
                    tracing::debug!(%error, "dashboard accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection holding its slot until it closes.
pub(crate) struct CappedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for CappedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
