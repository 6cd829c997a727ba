//! The pages in a real browser: headless Chromium driven over the DevTools
//! protocol (a small client over a WebSocket). A local cluster runs a graph
//! with a failing task and a large transfer; each page is loaded, the test
//! waits for the live data and checks the DOM against the scheduler, and
//! saves a screenshot per page under `target/dashboard-screenshots/`; then
//! a worker's own page, reached by the link on the workers page.
//!
//! Skips, saying why, when no Chromium is installed (`ci/setup.sh`
//! installs Debian's `chromium`); `WEFT_CHROMIUM` names another binary.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{BOOM, MAP_TASKS, cluster, cluster_of, get, workload};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use weft_dashboard::report::PerformanceReport;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WEFT_CHROMIUM") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("dashboard-screenshots")
}

/// A browser and one page of it, over the DevTools protocol.
struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch(binary: &PathBuf) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("chromium's stderr") {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("chromium exited without a DevTools address");
        })
        .await
        .expect("chromium's DevTools address within 60 s");
        // Keep draining stderr so chromium never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("DevTools connects");
        let mut browser = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"})).await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser
            .call("Target.attachToTarget", json!({"targetId": target_id, "flatten": true}))
            .await;
        browser.session = attached["sessionId"].as_str().expect("sessionId").to_string();
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser
    }

    /// Sends a command (to the page once attached) and waits for its answer.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(message.to_string())).await.expect("send");
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let frame = self.ws.next().await.expect("DevTools open").expect("frame");
                let Message::Text(text) = frame else { continue };
                let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if value["id"] == id {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer within 30 s"));
        assert!(answer.get("error").is_none(), "{method}: {}", answer["error"]);
        answer["result"].clone()
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is `true`; panics after 30 s with
    /// `what` and the value of `show`.
    async fn wait_for(&mut self, expression: &str, what: &str, show: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(expression).await != json!(true) {
            if Instant::now() > deadline {
                let shown = self.eval(show).await;
                panic!("{what}: not so within 30 s; {show} = {shown}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn open(&mut self, url: &str) {
        self.call("Page.enable", json!({})).await;
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for(
            "document.readyState === 'complete'",
            "page loaded",
            "document.readyState",
        )
        .await;
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = self.child.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_the_cluster_in_chromium() {
    let Some(binary) = chromium() else {
        println!(
            "skipping: no chromium binary on PATH (ci/setup.sh installs Debian's chromium; WEFT_CHROMIUM names one)"
        );
        return;
    };
    let (cluster, dashboard) = cluster(Duration::from_millis(250)).await;
    let client = cluster.client().await.expect("client");
    let observer = cluster.observer().expect("observer");
    let recording = PerformanceReport::start(&observer);
    let outcome = workload(&client).await;
    let report = recording.finish().await;
    let report_path = screenshot_dir().join("report.html");
    std::fs::create_dir_all(screenshot_dir()).expect("dir");
    report.write(&report_path).expect("report written");
    let base = dashboard.url();
    let state: Value = serde_json::from_str(&get(dashboard.local_addr(), "/api/state").await.body).expect("JSON");
    let workers = client.workers().await.expect("workers");
    assert_eq!(workers.len(), 2);

    let mut browser = Browser::launch(&binary).await;
    let mut shots = Vec::new();

    // Status: a non-empty task stream, progress per group, memory per worker.
    browser.open(&format!("{base}/status")).await;
    browser
        .wait_for(
            "Number(document.getElementById('task-stream').dataset.bars) > 0",
            "task stream drawn",
            "document.getElementById('task-stream').dataset.bars",
        )
        .await;
    browser
        .wait_for(
            "document.querySelectorAll('#memory [data-worker]').length === 2",
            "memory of both workers",
            "document.getElementById('memory').innerText",
        )
        .await;
    let load = browser
        .eval("document.querySelector('#progress [data-group=\"load\"] .value').textContent")
        .await;
    assert_eq!(load, json!(format!("{MAP_TASKS} / {MAP_TASKS}")));
    // Bars of every op, the first tasks of the run included, and the failure.
    let legend = browser.eval("document.getElementById('stream-legend').innerText").await;
    for op in ["const", "arange_f64", "sum_f64"] {
        assert!(
            legend.as_str().is_some_and(|l| l.contains(op)),
            "{op} not in the stream: {legend}"
        );
    }
    let failed = browser
        .eval("Number(document.getElementById('task-stream').dataset.failed)")
        .await;
    assert_eq!(failed, json!(1));
    // Two workers of one thread each: both labelled in the task stream.
    let labels = browser
        .eval("Number(document.getElementById('task-stream').dataset.labels)")
        .await;
    assert_eq!(labels, json!(2));
    let live = browser.eval("document.getElementById('live').className").await;
    assert_eq!(live, json!("live on"));
    let transfers = browser.eval("document.getElementById('transfers').innerText").await;
    assert!(transfers.as_str().is_some_and(|t| t.contains("MiB")), "{transfers}");
    shots.push(browser.screenshot("status").await);

    // Workers: both listed, sortable.
    browser.open(&format!("{base}/workers")).await;
    browser
        .wait_for(
            "document.querySelectorAll('#workers-table tbody tr').length === 2",
            "both workers listed",
            "document.querySelector('#workers-table tbody').innerText",
        )
        .await;
    let names = "[...document.querySelectorAll('#workers-table tbody td[data-key=name]')].map(td => td.textContent)";
    assert_eq!(browser.eval(names).await, json!(["local-0", "local-1"]));
    browser
        .eval("document.querySelector('#workers-table th[data-key=name]').click(); true")
        .await;
    browser
        .wait_for(
            &format!("JSON.stringify({names}) === JSON.stringify(['local-1', 'local-0'])"),
            "sorted by name, descending",
            names,
        )
        .await;
    for w in &workers {
        let held = browser
            .eval(&format!(
                "[...document.querySelectorAll('#workers-table tbody tr')].find(tr => tr.querySelector('td[data-key=name]').textContent === '{}').querySelector('td[data-key=held]').textContent",
                w.name
            ))
            .await;
        assert_eq!(held, json!(w.n_held.to_string()), "{}", w.name);
    }
    shots.push(browser.screenshot("workers").await);

    // Tasks: counts as the scheduler has them; the erred task's message.
    browser.open(&format!("{base}/tasks")).await;
    browser
        .wait_for(
            "document.getElementById('count-total') !== null",
            "task counts",
            "document.body.innerText",
        )
        .await;
    for s in [
        "waiting",
        "queued",
        "processing",
        "memory",
        "erred",
        "released",
        "total",
    ] {
        let shown = browser
            .eval(&format!("document.getElementById('count-{s}').textContent"))
            .await;
        assert_eq!(shown, json!(state["tasks"][s].to_string()), "{s}");
    }
    assert_eq!(state["tasks"]["memory"], MAP_TASKS as u64 + 1);
    assert_eq!(state["tasks"]["erred"], 1);
    let erred = browser.eval("document.getElementById('erred-list').innerText").await;
    assert!(
        erred.as_str().is_some_and(|t| t.contains(BOOM) && t.contains("boom-1")),
        "{erred}"
    );
    shots.push(browser.screenshot("tasks").await);

    // Graph: one box per group, the transfer's two groups joined by an edge.
    browser.open(&format!("{base}/graph")).await;
    let groups = state["groups"].as_array().map_or(0, Vec::len);
    browser
        .wait_for(
            &format!("document.querySelectorAll('#graph g.group').length === {groups}"),
            "a box per group",
            "document.querySelectorAll('#graph g.group').length",
        )
        .await;
    let edges = browser
        .eval("document.querySelectorAll('#graph path[marker-end]').length")
        .await;
    assert_eq!(edges, json!(state["group_edges"].as_array().map_or(0, Vec::len)));
    assert!(edges.as_u64().is_some_and(|e| e >= 1));
    let boxes = browser.eval("document.getElementById('graph').textContent").await;
    assert!(
        boxes
            .as_str()
            .is_some_and(|t| t.contains("load") && t.contains("big") && t.contains("total"))
    );
    shots.push(browser.screenshot("graph").await);

    // A worker's own page, by the link on the scheduler's workers page.
    browser.open(&format!("{base}/workers")).await;
    browser
        .wait_for(
            "document.querySelectorAll('#workers-table a.worker-page').length === 2",
            "both workers link their pages",
            "document.querySelector('#workers-table tbody').innerHTML",
        )
        .await;
    let cpu = browser
        .eval("[...document.querySelectorAll('#workers-table td[data-key=cpu]')].map(td => td.textContent)")
        .await;
    assert_eq!(cpu.as_array().map(Vec::len), Some(2), "{cpu}");
    let link = browser
        .eval("[...document.querySelectorAll('#workers-table a.worker-page')].find(a => a.textContent === 'local-1').href")
        .await;
    let link = link.as_str().expect("a link").to_string();
    let page = link
        .trim_end_matches('/')
        .trim_start_matches("http://")
        .parse()
        .expect("HOST:PORT");
    let own: Value = serde_json::from_str(&get(page, "/api/state").await.body).expect("JSON");
    let finished = own["figures"]["tasks"]["finished"].as_u64().expect("finished");
    assert!(finished >= 1, "local-1 ran the sum at least: {own}");
    browser.open(&link).await;
    browser
        .wait_for(
            "document.getElementById('worker-name').textContent === 'local-1'",
            "the worker's name",
            "document.getElementById('worker-name').textContent",
        )
        .await;
    browser
        .wait_for(
            &format!("document.querySelector('#tasks tr[data-key=finished] td.n')?.textContent === '{finished}'"),
            "its finished tasks",
            "document.getElementById('tasks').innerText",
        )
        .await;
    let tiers = browser
        .eval("[...document.querySelectorAll('#memory tbody tr')].map(tr => tr.dataset.key)")
        .await;
    assert_eq!(tiers, json!(["device", "host", "disk"]));
    let received = browser
        .eval("document.querySelector('#process tr[data-key=bytes_in] td.n').textContent")
        .await;
    assert_eq!(received, json!("8.0 MiB"), "local-1 fetched the large input");
    let live = browser.eval("document.getElementById('live').className").await;
    assert_eq!(live, json!("live on"));
    shots.push(browser.screenshot("worker").await);

    // The performance report, opened from its file.
    browser.open(&format!("file://{}", report_path.display())).await;
    let const_row = browser
        .eval("[...document.querySelectorAll('#ops tr[data-op=const] td')].map(td => td.textContent)")
        .await;
    assert_eq!(const_row[1], json!(MAP_TASKS.to_string()), "{const_row}");
    let fail_row = browser
        .eval("[...document.querySelectorAll('#ops tr[data-op=fail] td')].map(td => td.textContent)")
        .await;
    assert_eq!(fail_row[2], json!("1"), "{fail_row}");
    let failures = browser.eval("document.getElementById('failures').innerText").await;
    assert!(failures.as_str().is_some_and(|f| f.contains(BOOM)), "{failures}");
    let transfers = browser.eval("document.getElementById('transfers').innerText").await;
    assert!(
        transfers
            .as_str()
            .is_some_and(|t| t.contains("local-0\tlocal-1\t8.0 MiB")),
        "{transfers}"
    );
    let bars = browser
        .eval("Number(document.getElementById('stream').dataset.bars)")
        .await;
    assert!(bars.as_u64().is_some_and(|b| b >= MAP_TASKS as u64 + 3), "{bars}");
    shots.push(browser.screenshot("report").await);

    for shot in &shots {
        println!("screenshot: {}", shot.display());
    }
    browser.close().await;
    drop(outcome);
    drop(client);
    dashboard.stop().await;
    cluster.stop().await;
}

/// The status page under load: 100 workers and one graph of 10^5 tasks
/// (each sleeping 5 ms, so that the run lasts seconds). The page keeps
/// answering (every evaluation in it within 2 s), reaches the end of the
/// graph and lists the workers in order; the task stream fits its 100
/// rows and thins their labels. How often its progress moved is printed,
/// not asserted: the scheduler spends at most about 3% of its time on
/// snapshots, so a loaded debug build publishes far fewer than the 4 a
/// second its 250 ms period allows (1.2 a second here; 3.2-3.5 in a
/// release build, `cargo test --release -p weft-dashboard --test browser`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_stays_live_with_a_hundred_workers_and_a_hundred_thousand_tasks() {
    let Some(binary) = chromium() else {
        println!("skipping: no chromium binary on PATH (ci/setup.sh installs Debian's chromium)");
        return;
    };
    const TASKS: usize = 100_000;
    let (cluster, dashboard) = cluster_of(100, Duration::from_millis(250)).await;
    let client = cluster.client().await.expect("client");
    let mut browser = Browser::launch(&binary).await;
    browser.open(&format!("{}/status", dashboard.url())).await;
    browser
        .wait_for(
            "document.querySelectorAll('#memory [data-worker]').length === 100",
            "memory of 100 workers",
            "document.querySelectorAll('#memory [data-worker]').length",
        )
        .await;
    let mut graph = weft_runtime::graphs::map("load", TASKS);
    for (i, task) in graph.tasks.iter_mut().enumerate() {
        task.op = "delay".into();
        task.args = weft_runtime::ops::args(&(5u64, i as i64)).expect("args");
    }
    let futures = client.compute(graph).await.expect("submitted");
    let progress = "document.querySelector('#progress [data-group=\"load\"] .value')?.textContent ?? ''";
    let started = Instant::now();
    let (mut changes, mut last, mut slowest) = (Vec::new(), json!(""), Duration::ZERO);
    loop {
        let asked = Instant::now();
        let now = browser.eval(progress).await;
        slowest = slowest.max(asked.elapsed());
        if now != last {
            changes.push(started.elapsed());
            last = now;
        }
        if last == json!(format!("{TASKS} / {TASKS}")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "progress stuck at {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let rate = changes.len() as f64 / took.as_secs_f64();
    println!(
        "10^5 tasks on 100 workers in {took:.1?}: the page's progress changed {} times ({rate:.1}/s), slowest evaluation {slowest:?}",
        changes.len()
    );
    assert!(slowest < Duration::from_secs(2), "the page hung for {slowest:?}");
    // A hundred workers read in order of their numbers.
    let order = browser
        .eval("[...document.querySelectorAll('#memory [data-worker]')].map(r => r.dataset.worker)")
        .await;
    let expected: Vec<String> = (0..100).map(|i| format!("local-{i}")).collect();
    assert_eq!(order, json!(expected));
    // The task stream fits 100 rows in under 500 px, and its labels are
    // thinned to one per 13 px (no two overlap) rather than one per row.
    let layout = browser
        .eval("(c => [Number(c.dataset.labels), Number(c.dataset.rowHeight)])(document.getElementById('task-stream'))")
        .await;
    let (labels, row) = (layout[0].as_f64().unwrap_or(0.0), layout[1].as_f64().unwrap_or(0.0));
    assert!((3.0..=5.0).contains(&row), "row height {row} px for 100 rows");
    let (room, every) = ((100.0 * row / 13.0).ceil(), (13.0 / row).ceil());
    assert!(
        labels <= room && labels >= 100.0 / every,
        "{labels} labels in {} px",
        100.0 * row
    );
    let shot = browser.screenshot("status-load").await;
    println!("screenshot: {}", shot.display());
    browser.close().await;
    drop(futures);
    drop(client);
    dashboard.stop().await;
    cluster.stop().await;
}
