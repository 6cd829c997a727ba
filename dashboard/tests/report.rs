//! `client.performance_report(path)`: a report of a block of work,
//! recorded over the client's connection, written as one HTML file that
//! holds the ops run in the block and not those run before it.

mod common;

use std::time::Duration;

use common::{BOOM, MAP_TASKS, cluster, workload};
use weft_dashboard::PerformanceReports;
use weft_runtime::graph::{Graph, TaskSpec};
use weft_runtime::ops::args;
use weft_runtime::{Key, LocalCluster, LocalOptions, WorkerMode};

/// Tasks of op `sum` run before the block.
const BEFORE: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_holds_the_block_and_nothing_before_it() {
    let (cluster, dashboard) = cluster(Duration::from_millis(100)).await;
    let client = cluster.client().await.expect("client");
    // Before the block: an op the block does not run.
    let tasks: Vec<TaskSpec> = (0..BEFORE)
        .map(|i| {
            let arg = args(&(i as i64)).expect("args");
            TaskSpec::new(format!("early-{i}"), "sum", arg, Vec::new())
        })
        .collect();
    let outputs: Vec<Key> = tasks.iter().map(|t| t.key.clone()).collect();
    let early = client.compute(Graph { tasks, outputs }).await.expect("accepted");
    for f in &early {
        f.result().await.expect("early task");
    }

    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("block.html");
    let report = client.performance_report(&path).await.expect("recording starts");
    let outcome = workload(&client).await;
    let report = report.finish().await.expect("report written");

    let html = std::fs::read_to_string(&path).expect("the report file");
    assert!(html.starts_with("<!doctype html>"));
    assert!(!html.contains("<script src") && !html.contains("<link"), "standalone");
    assert!(
        html.contains(&format!(
            "<tr data-op=\"const\"><td>const</td><td class=\"n\">{MAP_TASKS}</td>"
        )),
        "{html}"
    );
    for op in ["arange_f64", "sum_f64", "fail"] {
        assert!(html.contains(&format!("data-op=\"{op}\"")), "{op} missing");
    }
    assert!(!html.contains("data-op=\"sum\""), "ops of before the block are in it");
    assert!(html.contains(BOOM));
    assert!(html.contains("<td>local-0</td><td>local-1</td><td class=\"n\">8.0 MiB</td>"));
    assert!(!html.contains("id=\"dropped\""), "nothing was dropped");
    assert_eq!(report.ops["const"].finished, MAP_TASKS as u64);
    assert_eq!(report.ops["fail"].failed, 1);
    assert!(!report.ops.contains_key("sum"));
    assert_eq!(report.dropped, (0, 0));
    drop((outcome, early, client));
    dashboard.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_without_a_dashboard_refuses_to_record() {
    let mut options = LocalOptions::for_this_machine();
    options.workers = 1;
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    let cluster = LocalCluster::start(options).await.expect("cluster");
    let client = cluster.client().await.expect("client");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("never.html");
    let report = client.performance_report(&path).await.expect("the request is sent");
    let error = report.finish().await.err().expect("refused");
    assert!(error.to_string().contains("records no task stream"), "{error}");
    assert!(!path.exists());
    drop(client);
    cluster.stop().await;
}
