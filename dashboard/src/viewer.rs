//! A synthetic viewer: keeps the live event stream open and scrapes
//! `/metrics` on a period, as a browser tab and a Prometheus server would.
//! `weft bench --dashboard` runs one beside a workload to measure what
//! watching costs the scheduler.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What a viewer got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewerStats {
    /// Event-stream messages received.
    pub messages: u64,
    /// `/metrics` scrapes answered with 200.
    pub scrapes: u64,
    /// Scrapes that failed.
    pub failures: u64,
}

/// A running viewer.
pub struct Viewer {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<ViewerStats>,
}

impl Viewer {
    /// Starts watching the dashboard at `addr`, scraping every `period`.
    pub fn start(addr: SocketAddr, period: Duration) -> Viewer {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut stats = ViewerStats::default();
            let mut stream = open_events(addr).await.ok();
            let mut buf = vec![0u8; 1 << 16];
            let mut scrape = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = &mut stopped => return stats,
                    _ = scrape.tick() => match get_status(addr, "/metrics").await {
                        Ok(200) => stats.scrapes += 1,
                        _ => stats.failures += 1,
                    },
                    read = async {
                        match stream.as_mut() {
                            Some(s) => s.read(&mut buf).await,
                            None => std::future::pending().await,
                        }
                    } => match read {
                        Ok(n) if n > 0 => {
                            stats.messages += count(&buf[..n], b"data: ");
                        }
                        _ => stream = None,
                    },
                }
            }
        });
        Viewer { stop: Some(stop), task }
    }

    /// Stops and says what it got.
    pub async fn stop(mut self) -> ViewerStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap_or_default()
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> u64 {
    haystack.windows(needle.len()).filter(|w| *w == needle).count() as u64
}

async fn open_events(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /api/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .await?;
    Ok(stream)
}

/// GETs `path` and returns the status (reads the whole response).
async fn get_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    Ok(fetch(addr, path).await?.0)
}

/// GETs `path` from the dashboard at `addr` (HTTP/1.1, `Connection:
/// close`): the status and the body. The body of a chunked answer is not
/// decoded; the dashboard's pages, `/metrics`, `/api/state` and
/// `/report` are not chunked.
pub async fn fetch(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let status = response
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
        let body = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or_else(Vec::new, |at| response[at + 4..].to_vec());
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))?
}
