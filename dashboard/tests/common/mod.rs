//! Shared by the dashboard's tests: a local cluster of in-process workers
//! with a dashboard, a plain HTTP/1.1 client over a socket (so tests can
//! also send what no client library would), and the workload the tests
//! check the pages against.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_dashboard::{Dashboard, DashboardOptions};
use weft_runtime::graph::{Annotations, Graph, TaskSpec};
use weft_runtime::observe::ObserveConfig;
use weft_runtime::ops::args;
use weft_runtime::{Client, Key, LocalCluster, LocalOptions, TaskFuture, WorkerMode};

/// Bytes the large transfer moves (1 Mi float64s).
pub const TRANSFER_BYTES: u64 = 8 << 20;

/// The message of the task that fails.
pub const BOOM: &str = "boom: the input file is corrupt";

/// Tasks of the map in the workload.
pub const MAP_TASKS: usize = 200;

/// Two in-process workers of one thread each (each serving its own page
/// on a free loopback port), their scheduler publishing every `interval`,
/// and a dashboard on a free loopback port.
pub async fn cluster(interval: Duration) -> (LocalCluster, Dashboard) {
    cluster_of(2, interval).await
}

/// [`cluster`] with `workers` workers.
pub async fn cluster_of(workers: usize, interval: Duration) -> (LocalCluster, Dashboard) {
    let mut options = LocalOptions::for_this_machine();
    options.workers = workers;
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    options.memory.limit = 1 << 30;
    options.worker_dashboard = Some(weft_dashboard::worker_dashboard(None));
    options.scheduler.observe = Some(ObserveConfig {
        interval,
        ..ObserveConfig::default()
    });
    let cluster = LocalCluster::start(options).await.expect("cluster starts");
    let observer = cluster.observer().expect("the scheduler publishes");
    let dashboard = weft_dashboard::serve(
        observer,
        DashboardOptions {
            address: "127.0.0.1:0".into(),
            ..DashboardOptions::default()
        },
    )
    .await
    .expect("dashboard starts");
    (cluster, dashboard)
}

fn task(key: &str, op: &str, arg: Vec<u8>, deps: &[&str], worker: Option<&str>) -> TaskSpec {
    let mut spec = TaskSpec::new(key, op, arg.into(), deps.iter().map(|d| Key::from(*d)).collect());
    if let Some(worker) = worker {
        spec.annotations = Annotations {
            workers: vec![worker.into()],
            ..Annotations::default()
        };
    }
    spec
}

/// What the workload leaves behind.
pub struct Outcome {
    /// Futures still held (the map's results, the transfer's sum, the
    /// failed task).
    pub futures: Vec<TaskFuture>,
}

/// A map of [`MAP_TASKS`] `const` tasks (`load-*`), a task that fails
/// with [`BOOM`], and [`TRANSFER_BYTES`] made on `local-0` and summed on
/// `local-1` (the only transfer). Waits for all of it.
pub async fn workload(client: &Client) -> Outcome {
    let mut tasks: Vec<TaskSpec> = (0..MAP_TASKS)
        .map(|i| {
            task(
                &format!("load-{i}"),
                "const",
                args(&(i as i64)).expect("args").to_vec(),
                &[],
                None,
            )
        })
        .collect();
    tasks.push(task(
        "boom-1",
        "fail",
        args(&BOOM.to_string()).expect("args").to_vec(),
        &[],
        None,
    ));
    tasks.push(task(
        "big-1",
        "arange_f64",
        args(&(TRANSFER_BYTES / 8)).expect("args").to_vec(),
        &[],
        Some("local-0"),
    ));
    tasks.push(task("total-1", "sum_f64", Vec::new(), &["big-1"], Some("local-1")));
    let mut outputs: Vec<Key> = (0..MAP_TASKS).map(|i| Key::from(format!("load-{i}"))).collect();
    outputs.push("boom-1".into());
    outputs.push("total-1".into());
    let futures = client.compute(Graph { tasks, outputs }).await.expect("graph accepted");
    for f in &futures {
        let result = tokio::time::timeout(Duration::from_secs(60), f.result())
            .await
            .expect("in time");
        if f.key().as_str() == "boom-1" {
            let error = result.expect_err("boom fails");
            assert!(error.to_string().contains(BOOM), "{error}");
        } else {
            result.expect("task succeeds");
        }
    }
    Outcome { futures }
}

/// A response: status, headers (lower-case names) and body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as is and reads the response until the server closes.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<Response> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await?;
        Ok::<_, std::io::Error>(bytes)
    };
    let bytes = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| std::io::Error::other("no answer within 20 s"))??;
    parse(&bytes).ok_or_else(|| std::io::Error::other(format!("not HTTP: {:?}", String::from_utf8_lossy(&bytes))))
}

/// A GET with `Connection: close`.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    raw(addr, request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn parse(bytes: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_string() };
    Some(Response { status, headers, body })
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}

/// Each worker's name and the address of its own page, as the
/// scheduler's `/api/state` links them.
pub async fn worker_pages(dashboard: SocketAddr) -> Vec<(String, SocketAddr)> {
    let state: serde_json::Value = serde_json::from_str(&get(dashboard, "/api/state").await.body).expect("JSON state");
    state["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| {
            let url = w["dashboard"].as_str().unwrap_or_else(|| panic!("no page linked: {w}"));
            let addr = url
                .strip_prefix("http://")
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("not http://HOST:PORT: {url}"));
            (w["name"].as_str().expect("name").to_string(), addr)
        })
        .collect()
}
