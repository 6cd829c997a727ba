//! The dashboard's HTTP endpoints against a live local cluster: `/metrics`
//! parses and its values match the run, `/api/state` matches the
//! scheduler's books, `/health` answers under load, the event stream
//! updates at least twice a second, and malformed requests change nothing.
//! Each worker's own page and `/metrics`, linked from the scheduler's
//! state, agree with the scheduler about the run.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{BOOM, MAP_TASKS, TRANSFER_BYTES, cluster, get, raw, worker_pages, workload};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_dashboard::{DashboardError, DashboardOptions};

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A strict reader of Prometheus' text format 0.0.4: every sample's family
/// declared by `# TYPE` before it and once, names and labels well formed,
/// label values escaped, no series twice, histogram buckets cumulative
/// with `+Inf` equal to `_count`. Panics with the offending line.
fn parse_strict(text: &str) -> Vec<Sample> {
    fn name_ok(s: &str) -> bool {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut seen_samples: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(name_ok(name), "bad name in {line:?}");
            match kind {
                "HELP" => assert!(parts.next().is_some_and(|h| !h.is_empty()), "empty help: {line:?}"),
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line:?}"
                    );
                    assert!(
                        types.insert(name.to_string(), t.to_string()).is_none(),
                        "TYPE twice: {line:?}"
                    );
                    assert!(
                        !seen_samples.iter().any(|s| s.starts_with(name)),
                        "TYPE after samples: {line:?}"
                    );
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert!(name_ok(&key) && !key.contains(':'), "bad label name in {line:?}");
                    assert_eq!(chars.next(), Some('"'), "unquoted label value in {line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                other => panic!("bad escape {other:?} in {line:?}"),
                            },
                            Some('"') => break,
                            Some('\n') | None => panic!("unterminated label value in {line:?}"),
                            Some(c) => value.push(c),
                        }
                    }
                    assert!(labels.insert(key, value).is_none(), "label twice in {line:?}");
                    match chars.next() {
                        Some(',') | None => {}
                        other => panic!("unexpected {other:?} in {line:?}"),
                    }
                }
                (name, labels)
            }
        };
        assert!(name_ok(name), "bad name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no TYPE before {line:?}");
        assert!(seen_samples.insert(series.to_string()), "series twice: {line:?}");
        samples.push((name.to_string(), labels, value));
    }
    // Histograms: cumulative buckets ending in +Inf == _count.
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let mut by_series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for (name, labels, value) in &samples {
            if *name == format!("{family}_bucket") {
                let mut rest = labels.clone();
                let le = rest
                    .remove("le")
                    .unwrap_or_else(|| panic!("bucket without le in {family}"));
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le is a number")
                };
                by_series.entry(rest).or_default().push((le, *value));
            }
        }
        for (labels, buckets) in by_series {
            assert!(
                buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family} {labels:?}"
            );
            let inf = buckets.last().filter(|b| b.0.is_infinite()).expect("+Inf bucket").1;
            let count = samples
                .iter()
                .find(|(n, l, _)| *n == format!("{family}_count") && *l == labels)
                .expect("_count")
                .2;
            assert_eq!(inf, count, "{family} {labels:?}: +Inf bucket != count");
        }
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
        .2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_match_the_run() {
    let (cluster, dashboard) = cluster(Duration::from_millis(100)).await;
    let client = cluster.client().await.expect("client");
    let outcome = workload(&client).await;
    let response = get(dashboard.local_addr(), "/metrics").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4"))
    );
    let samples = parse_strict(&response.body);

    // A second, independent parser agrees on the number of samples.
    let lines = response.body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("prometheus-parse reads it");
    let histogram_lines = samples
        .iter()
        .filter(|(n, _, _)| n.starts_with("weft_task_duration_seconds"))
        .count();
    let histograms = scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("weft_task_duration_seconds"))
        .count();
    assert_eq!(scrape.samples.len() + histogram_lines - histograms, samples.len());

    assert_eq!(
        value(&samples, "weft_tasks_finished_total", &[("op", "const")]),
        MAP_TASKS as f64
    );
    assert_eq!(
        value(&samples, "weft_tasks_finished_total", &[("op", "arange_f64")]),
        1.0
    );
    assert_eq!(value(&samples, "weft_task_failures_total", &[("op", "fail")]), 1.0);
    assert_eq!(
        value(&samples, "weft_task_duration_seconds_count", &[("op", "const")]),
        MAP_TASKS as f64
    );
    assert_eq!(value(&samples, "weft_transfers_total", &[]), 1.0);
    let moved = value(&samples, "weft_transfer_bytes_total", &[]);
    assert!(moved >= TRANSFER_BYTES as f64, "{moved}");
    assert_eq!(
        value(
            &samples,
            "weft_worker_transfer_bytes_total",
            &[("worker", "local-1"), ("direction", "in")]
        ),
        moved
    );
    assert_eq!(value(&samples, "weft_tasks", &[("state", "erred")]), 1.0);
    // The map's results and the sum are held; the big input was released.
    assert_eq!(
        value(&samples, "weft_tasks", &[("state", "memory")]),
        MAP_TASKS as f64 + 1.0
    );
    assert_eq!(value(&samples, "weft_workers", &[("status", "running")]), 2.0);
    assert_eq!(value(&samples, "weft_clients", &[]), 1.0);
    let threads: f64 = samples
        .iter()
        .filter(|(n, _, _)| n == "weft_worker_threads")
        .map(|s| s.2)
        .sum();
    assert_eq!(threads, 2.0);
    assert!(value(&samples, "weft_scheduler_event_loop_lag_seconds", &[]) >= 0.0);

    // The performance report of the last minute holds the same run.
    let report = get(dashboard.local_addr(), "/report?seconds=60").await;
    assert_eq!(report.status, 200);
    assert!(
        report.body.contains(&format!(
            "<tr data-op=\"const\"><td>const</td><td class=\"n\">{MAP_TASKS}</td>"
        )),
        "{}",
        report.body
    );
    assert!(report.body.contains(BOOM));
    assert!(
        report
            .body
            .contains("<td>local-0</td><td>local-1</td><td class=\"n\">8.0 MiB</td>")
    );
    drop(outcome);
    drop(client);
    dashboard.stop().await;
    cluster.stop().await;
}

/// A worker's `/metrics`, parsed strictly.
async fn worker_metrics(addr: std::net::SocketAddr) -> Vec<Sample> {
    let response = get(addr, "/metrics").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4"))
    );
    let samples = parse_strict(&response.body);
    let lines = response.body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("prometheus-parse reads it");
    assert_eq!(scrape.samples.len(), samples.len());
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_parse_and_match_the_run() {
    let (cluster, dashboard) = cluster(Duration::from_millis(100)).await;
    let client = cluster.client().await.expect("client");
    let outcome = workload(&client).await;
    let scheduler = parse_strict(&get(dashboard.local_addr(), "/metrics").await.body);
    let pages = worker_pages(dashboard.local_addr()).await;
    assert_eq!(pages.len(), 2);
    let by_name: HashMap<String, Vec<Sample>> = {
        let mut by_name = HashMap::new();
        for (name, addr) in &pages {
            by_name.insert(name.clone(), worker_metrics(*addr).await);
        }
        by_name
    };
    let sum = |name: &str, labels: &[(&str, &str)]| -> f64 { by_name.values().map(|s| value(s, name, labels)).sum() };

    // Every op run is counted once, on the worker that ran it, as the
    // scheduler counted it: the map, the big input, its sum; one failure.
    let finished_by_scheduler: f64 = scheduler
        .iter()
        .filter(|(n, _, _)| n == "weft_tasks_finished_total")
        .map(|s| s.2)
        .sum();
    assert_eq!(finished_by_scheduler, MAP_TASKS as f64 + 2.0);
    let finished = sum("weft_worker_tasks_executed_total", &[("outcome", "finished")]);
    assert_eq!(finished, finished_by_scheduler);
    assert_eq!(sum("weft_worker_tasks_executed_total", &[("outcome", "failed")]), 1.0);
    assert_eq!(sum("weft_worker_task_states", &[("state", "running")]), 0.0);
    assert_eq!(sum("weft_worker_task_states", &[("state", "waiting")]), 0.0);

    // The one transfer: local-1 fetched what the scheduler saw it fetch,
    // from local-0, which served at least that (clients gather from both).
    let moved = value(
        &scheduler,
        "weft_worker_transfer_bytes_total",
        &[("worker", "local-1"), ("direction", "in")],
    );
    assert!(moved >= TRANSFER_BYTES as f64, "{moved}");
    let local0 = &by_name["local-0"];
    let local1 = &by_name["local-1"];
    assert_eq!(
        value(local1, "weft_worker_received_bytes_total", &[("worker", "local-1")]),
        moved
    );
    assert_eq!(
        value(local1, "weft_worker_received_results_total", &[("worker", "local-1")]),
        1.0
    );
    assert_eq!(
        value(local0, "weft_worker_received_bytes_total", &[("worker", "local-0")]),
        0.0
    );
    let sent = value(local0, "weft_worker_sent_bytes_total", &[("worker", "local-0")]);
    assert!(sent >= moved, "local-0 sent {sent}, local-1 fetched {moved}");

    // Results held, as the scheduler's books have them (the released big
    // input leaves local-0's store when its free arrives).
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, addr) in &pages {
        loop {
            let samples = worker_metrics(*addr).await;
            let held = value(
                &samples,
                "weft_worker_task_states",
                &[("worker", name), ("state", "memory")],
            );
            let stored = value(
                &samples,
                "weft_worker_stored_bytes",
                &[("worker", name), ("tier", "host")],
            );
            let books = parse_strict(&get(dashboard.local_addr(), "/metrics").await.body);
            let booked = value(
                &books,
                "weft_worker_memory_bytes",
                &[("worker", name), ("tier", "host")],
            );
            let booked_held = value(&books, "weft_worker_tasks", &[("worker", name), ("state", "memory")]);
            if held == booked_held && stored == booked {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: holds {held} results of {stored} B; the scheduler says {booked_held} of {booked} B"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let samples = worker_metrics(*addr).await;
        assert_eq!(value(&samples, "weft_worker_compute_threads", &[("worker", name)]), 1.0);
        assert_eq!(
            value(
                &samples,
                "weft_worker_stored_limit_bytes",
                &[("worker", name), ("tier", "host")]
            ),
            (1u64 << 30) as f64
        );
        assert!(value(&samples, "weft_worker_cpu_seconds_total", &[("worker", name)]) > 0.0);
        assert!(value(&samples, "weft_worker_resident_memory_bytes", &[("worker", name)]) > 0.0);
        assert_eq!(value(&samples, "weft_worker_paused", &[("worker", name)]), 0.0);
        let info = samples
            .iter()
            .find(|(n, _, _)| n == "weft_worker_info")
            .expect("weft_worker_info");
        assert!(info.1["address"].starts_with("tcp://127.0.0.1:"), "{info:?}");
        assert_eq!(info.1["worker"], *name);
    }
    drop(outcome);
    drop(client);
    dashboard.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_state_links_each_worker_page() {
    let (cluster, dashboard) = cluster(Duration::from_millis(100)).await;
    let client = cluster.client().await.expect("client");
    let outcome = workload(&client).await;
    let pages = worker_pages(dashboard.local_addr()).await;
    let names: HashSet<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, HashSet::from(["local-0", "local-1"]));
    let mut finished = 0;
    for (name, addr) in &pages {
        let page = get(*addr, "/").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("<title>Weft worker</title>"), "{}", page.body);
        assert_eq!(get(*addr, "/static/style.css").await.status, 200);
        assert_eq!(get(*addr, "/health").await.body, "ok\n");
        assert_eq!(get(*addr, "/nowhere").await.status, 404);
        let state: Value = serde_json::from_str(&get(*addr, "/api/state").await.body).expect("JSON");
        assert_eq!(state["worker"]["name"], name.as_str());
        assert_eq!(state["worker"]["scheduler"], cluster.address());
        assert_eq!(state["worker"]["nthreads"], 1);
        let tasks = &state["figures"]["tasks"];
        assert_eq!(tasks["running"], 0, "{state}");
        finished += tasks["finished"].as_u64().expect("finished");
    }
    assert_eq!(finished, MAP_TASKS as u64 + 2);

    // Each heartbeat (every second) carries the worker's CPU use and
    // resident memory to the scheduler's state.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state: Value = serde_json::from_str(&get(dashboard.local_addr(), "/api/state").await.body).expect("JSON");
        let workers = state["workers"].as_array().expect("workers");
        if workers.iter().all(|w| w["cpu_percent"].is_number()) {
            assert!(workers.iter().all(|w| w["rss_bytes"].as_u64().is_some_and(|b| b > 0)));
            // The scheduler's /metrics carries the same figures.
            let metrics = parse_strict(&get(dashboard.local_addr(), "/metrics").await.body);
            for name in ["local-0", "local-1"] {
                assert!(value(&metrics, "weft_worker_cpu_ratio", &[("worker", name)]) >= 0.0);
                assert!(value(&metrics, "weft_worker_resident_bytes", &[("worker", name)]) > 0.0);
            }
            break;
        }
        assert!(Instant::now() < deadline, "no CPU figures: {workers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(outcome);
    drop(client);
    dashboard.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_state_matches_the_scheduler() {
    let (cluster, dashboard) = cluster(Duration::from_millis(100)).await;
    let client = cluster.client().await.expect("client");
    let outcome = workload(&client).await;
    let response = get(dashboard.local_addr(), "/api/state").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let state: Value = serde_json::from_str(&response.body).expect("JSON");

    // The scheduler's own account of its workers, over the protocol.
    let workers = client.workers().await.expect("workers");
    let listed = state["workers"].as_array().expect("workers");
    assert_eq!(listed.len(), workers.len());
    for w in &workers {
        let s = listed
            .iter()
            .find(|s| s["name"] == w.name.as_str())
            .unwrap_or_else(|| panic!("{} missing", w.name));
        assert_eq!(s["address"], w.address.as_str());
        assert_eq!(s["nthreads"], w.nthreads);
        assert_eq!(s["held"], w.n_held);
        assert_eq!(s["processing"], w.processing);
        let m = &s["memory"];
        let bytes =
            m["device"].as_u64().unwrap_or(0) + m["host"].as_u64().unwrap_or(0) + m["disk"].as_u64().unwrap_or(0);
        assert_eq!(bytes, w.nbytes_held, "{}", w.name);
    }
    let tasks = &state["tasks"];
    assert_eq!(tasks["memory"], MAP_TASKS as u64 + 1);
    assert_eq!(tasks["erred"], 1);
    assert_eq!(tasks["processing"], 0);
    assert_eq!(tasks["waiting"], 0);
    // The big input is released but kept for its dependent's lineage.
    assert_eq!(tasks["released"], 1);
    assert_eq!(tasks["total"], MAP_TASKS as u64 + 3);
    assert_eq!(state["clients"], 1);
    let erred = state["erred"].as_array().expect("erred");
    assert_eq!(erred.len(), 1);
    assert_eq!(erred[0]["key"], "boom-1");
    assert_eq!(erred[0]["op"], "fail");
    assert!(
        erred[0]["message"].as_str().is_some_and(|m| m.contains(BOOM)),
        "{erred:?}"
    );
    let groups = state["groups"].as_array().expect("groups");
    let load = groups.iter().find(|g| g["name"] == "load").expect("load group");
    assert_eq!(load["states"]["memory"], MAP_TASKS as u64);
    assert_eq!(load["op"], "const");
    let total = groups.iter().find(|g| g["name"] == "total").expect("total group");
    assert_eq!(total["states"]["memory"], 1);
    let ops = state["ops"].as_array().expect("ops");
    let fail = ops.iter().find(|o| o["name"] == "fail").expect("fail op");
    assert_eq!(fail["failed"], 1);
    assert!(
        state["transfers"]["bytes"]
            .as_u64()
            .is_some_and(|b| b >= TRANSFER_BYTES)
    );

    // After the client lets go, everything is released and forgotten.
    drop(outcome);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state: Value = serde_json::from_str(&get(dashboard.local_addr(), "/api/state").await.body).expect("JSON");
        if state["tasks"]["total"] == 0 {
            assert!(
                state["workers"]
                    .as_array()
                    .expect("workers")
                    .iter()
                    .all(|w| w["held"] == 0)
            );
            break;
        }
        assert!(Instant::now() < deadline, "tasks left: {}", state["tasks"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
    dashboard.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_under_load() {
    let (cluster, dashboard) = cluster(Duration::from_millis(100)).await;
    let client = cluster.client().await.expect("client");
    client.set_progress(false);
    let addr = dashboard.local_addr();
    // Someone watches (the scheduler takes snapshots all along).
    let _viewer = tokio::spawn(async move {
        let _ = raw(addr, b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n").await;
    });
    let n = 30_000;
    let run = tokio::spawn(async move {
        let futures = client
            .compute(weft_runtime::graphs::map("heavy", n))
            .await
            .expect("accepted");
        let values = client.gather(&futures).await.expect("gathered");
        values.len()
    });
    let mut answers = 0;
    let mut slowest = Duration::ZERO;
    while !run.is_finished() {
        let started = Instant::now();
        let response = get(addr, "/health").await;
        assert_eq!((response.status, response.body.as_str()), (200, "ok\n"));
        slowest = slowest.max(started.elapsed());
        answers += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(run.await.expect("run"), n);
    assert!(answers >= 3, "only {answers} health checks during the run");
    assert!(slowest < Duration::from_secs(2), "slowest /health took {slowest:?}");
    dashboard.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_do_not_disturb_the_scheduler() {
    let (cluster, dashboard) = cluster(Duration::from_millis(100)).await;
    let addr = dashboard.local_addr();
    // Bad paths and methods.
    assert_eq!(get(addr, "/nope").await.status, 404);
    assert_eq!(get(addr, "/api/state/../../etc/passwd").await.status, 404);
    let post = raw(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("answer");
    assert_eq!(post.status, 405);
    // Garbage instead of HTTP, and a 1 MiB header: refused with 400/431
    // or cut off, never served.
    for request in [
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(),
        format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .into_bytes(),
    ] {
        if let Ok(response) = raw(addr, &request).await {
            assert!([400, 431].contains(&response.status), "got {}", response.status);
        }
    }
    // Many connections at once: idle ones, half-sent requests, and full ones.
    let mut idle = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
        }
        idle.push(s);
    }
    let busy: Vec<_> = (0..100)
        .map(|i| {
            let path = if i % 2 == 0 { "/metrics" } else { "/api/state" };
            tokio::spawn(async move { get(addr, path).await.status })
        })
        .collect();
    // Meanwhile the scheduler runs a graph at its usual pace.
    let client = cluster.client().await.expect("client");
    let outcome = tokio::time::timeout(Duration::from_secs(60), workload(&client))
        .await
        .expect("the workload finishes despite the load on the dashboard");
    for b in busy {
        assert_eq!(b.await.expect("joined"), 200);
    }
    // The dashboard still answers, and its numbers are right.
    assert_eq!(get(addr, "/health").await.status, 200);
    let state: Value = serde_json::from_str(&get(addr, "/api/state").await.body).expect("JSON");
    assert_eq!(state["tasks"]["memory"], MAP_TASKS as u64 + 1);
    // A half-sent request completes normally.
    let mut s = idle.swap_remove(0);
    s.write_all(b"Connection: close\r\n\r\n").await.expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(idle);
    drop(outcome);
    drop(client);
    dashboard.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_updates_at_least_twice_a_second() {
    let (cluster, dashboard) = cluster(Duration::from_millis(250)).await;
    let mut s = TcpStream::connect(dashboard.local_addr()).await.expect("connect");
    s.write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let mut messages: Vec<(Instant, Value)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut chunk = [0u8; 65536];
    while messages.len() < 10 {
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut chunk))
            .await
            .expect("ten messages within 30 s")
            .expect("read");
        assert!(n > 0, "stream closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        for line in text.lines() {
            if let Some(data) = line.strip_prefix("data: ")
                && let Ok(v) = serde_json::from_str::<Value>(data)
                && !messages.iter().any(|(_, m)| m["state"]["seq"] == v["state"]["seq"])
            {
                messages.push((Instant::now(), v));
            }
        }
    }
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    assert!(String::from_utf8_lossy(&buf).contains("text/event-stream"));
    for (_, m) in &messages {
        assert_eq!(m["state"]["workers"].as_array().map(Vec::len), Some(2));
    }
    // Messages 2..10: eight intervals of 250 ms; twice a second allows 4 s.
    let span = messages[9].0 - messages[1].0;
    assert!(span <= Duration::from_secs(4), "eight updates took {span:?}");
    dashboard.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_clear_error() {
    let (cluster, dashboard) = cluster(Duration::from_millis(250)).await;
    let address = dashboard.local_addr().to_string();
    let observer = cluster.observer().expect("observer");
    let error = weft_dashboard::serve(
        observer,
        DashboardOptions {
            address: address.clone(),
            ..DashboardOptions::default()
        },
    )
    .await
    .err()
    .expect("the port is taken");
    assert!(matches!(error, DashboardError::Bind { .. }));
    let message = error.to_string();
    assert!(
        message.contains(&address) && message.contains("--dashboard-address"),
        "{message}"
    );
    let bad = weft_dashboard::parse_address("no-port").expect_err("no port");
    assert!(bad.to_string().contains("--dashboard-address"), "{bad}");
    assert_eq!(
        weft_dashboard::parse_address(":8787").expect("parses").to_string(),
        "0.0.0.0:8787"
    );
    dashboard.stop().await;
    cluster.stop().await;
}
