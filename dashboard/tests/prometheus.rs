//! A real Prometheus scrapes the scheduler's `/metrics` and one worker's
//! during a run; its query API then returns the `weft_` series of both
//! with the run's values.
//! Skips, saying why, without a `prometheus` binary (`ci/setup.sh`
//! installs Debian's; `WEFT_PROMETHEUS` names another).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{MAP_TASKS, TRANSFER_BYTES, cluster, get, worker_pages, workload};
use serde_json::Value;
use tokio::process::Command;

fn prometheus() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WEFT_PROMETHEUS") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
}

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_run() {
    let Some(binary) = prometheus() else {
        println!(
            "skipping: no prometheus binary on PATH (ci/setup.sh installs Debian's prometheus; WEFT_PROMETHEUS names one)"
        );
        return;
    };
    let (cluster, dashboard) = cluster(Duration::from_millis(100)).await;
    // local-1: the worker that fetches the large input.
    let worker = worker_pages(dashboard.local_addr())
        .await
        .into_iter()
        .find(|(name, _)| name == "local-1")
        .map(|(_, addr)| addr)
        .expect("local-1 serves its page");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: weft-scheduler\n    static_configs:\n      - targets: ['{}']\n  - job_name: weft-worker\n    static_configs:\n      - targets: ['{worker}']\n",
            dashboard.local_addr()
        ),
    )
    .expect("config written");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut server = Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let prom: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");

    let client = cluster.client().await.expect("client");
    let outcome = workload(&client).await;

    // Polls a query until its single value passes `check` (scrapes are
    // every second; Prometheus needs a few seconds to start).
    async fn value_of(prom: std::net::SocketAddr, query: &str, check: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        loop {
            let request = format!(
                "GET /api/v1/query?query={} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                encode(query)
            );
            if let Ok(response) = common::raw(prom, request.as_bytes()).await {
                last = response.body.clone();
                if let Ok(json) = serde_json::from_str::<Value>(&response.body)
                    && let Some(v) = json["data"]["result"][0]["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                    && check(v)
                {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{query}: no fitting value within 60 s; last answer {last}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let finished = value_of(prom, r#"weft_tasks_finished_total{op="const"}"#, |v| {
        v >= MAP_TASKS as f64
    })
    .await;
    assert_eq!(finished, MAP_TASKS as f64);
    let moved = value_of(prom, "weft_transfer_bytes_total", |v| v > 0.0).await;
    assert!(moved >= TRANSFER_BYTES as f64, "{moved}");
    let erred = value_of(prom, r#"weft_tasks{state="erred"}"#, |v| v > 0.0).await;
    assert_eq!(erred, 1.0);
    let workers = value_of(prom, r#"weft_workers{status="running"}"#, |v| v > 0.0).await;
    assert_eq!(workers, 2.0);
    let count = value_of(prom, r#"sum(weft_task_duration_seconds_count)"#, |v| {
        v >= MAP_TASKS as f64
    })
    .await;
    assert_eq!(count, MAP_TASKS as f64 + 2.0, "const, arange_f64 and sum_f64 tasks");
    // The scrape target is healthy.
    let up = value_of(prom, r#"up{job="weft-scheduler"}"#, |v| v > 0.0).await;
    assert_eq!(up, 1.0);

    // The worker's own series: what it fetched is what the scheduler saw
    // it fetch; its ops, counted by both, agree.
    let up = value_of(prom, r#"up{job="weft-worker"}"#, |v| v > 0.0).await;
    assert_eq!(up, 1.0);
    let received = value_of(
        prom,
        r#"weft_worker_received_bytes_total{job="weft-worker",worker="local-1"}"#,
        |v| v > 0.0,
    )
    .await;
    let booked = value_of(
        prom,
        r#"weft_worker_transfer_bytes_total{job="weft-scheduler",worker="local-1",direction="in"}"#,
        |v| v > 0.0,
    )
    .await;
    assert_eq!(received, booked);
    assert!(received >= TRANSFER_BYTES as f64, "{received}");
    let ran = value_of(
        prom,
        r#"weft_worker_tasks_executed_total{job="weft-worker",outcome="finished"}"#,
        |v| v > 0.0,
    )
    .await;
    assert!(ran >= 1.0 && ran <= MAP_TASKS as f64 + 2.0, "{ran}");
    let cpu = value_of(prom, r#"weft_worker_cpu_seconds_total{job="weft-worker"}"#, |v| v > 0.0).await;
    assert!(cpu > 0.0);
    assert_eq!(get(dashboard.local_addr(), "/health").await.status, 200);

    let _ = server.kill().await;
    drop(outcome);
    drop(client);
    dashboard.stop().await;
    cluster.stop().await;
}
