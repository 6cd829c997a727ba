//! A scheduler and workers in one process, over real TCP: graphs give the
//! right answers, failures reach the client with the key, op and worker.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use weft_runtime::ops::args;
use weft_runtime::{Graph, LocalCluster, LocalOptions, Registry, RuntimeError, TaskError, TaskSpec, WorkerMode};

async fn cluster(workers: usize) -> LocalCluster {
    let mut options = LocalOptions::for_this_machine();
    options.workers = workers;
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    let mut registry = Registry::builtin();
    registry.op("double", |_: (), inputs: Vec<i64>| Ok(inputs[0] * 2));
    options.registry = Arc::new(registry);
    LocalCluster::start(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_and_gather() {
    let cluster = cluster(2).await;
    let client = cluster.client().await.unwrap();
    let n = 2000i64;
    let futures = client.map("const", (0..n).map(|i| args(&i).unwrap())).await.unwrap();
    let values = client.gather(&futures).await.unwrap();
    let sum: i64 = values.iter().map(|v| v.decode::<i64>().unwrap()).sum();
    assert_eq!(sum, n * (n - 1) / 2);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_reduction_moves_data_between_workers() {
    let cluster = cluster(2).await;
    let client = cluster.client().await.unwrap();
    let graph = weft_runtime::graphs::tree("t", 1024);
    let futures = client.compute(graph).await.unwrap();
    let root = futures[0].result().await.unwrap().decode::<i64>().unwrap();
    assert_eq!(root, 1024 * 1023 / 2);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_ops_and_dependencies() {
    let cluster = cluster(2).await;
    let client = cluster.client().await.unwrap();
    let graph = Graph {
        tasks: vec![
            TaskSpec::new("x", "const", args(&21i64).unwrap(), vec![]),
            TaskSpec::new("y", "double", args(&()).unwrap(), vec!["x".into()]),
        ],
        outputs: vec!["y".into()],
    };
    let y = client.compute(graph).await.unwrap().pop().unwrap();
    assert_eq!(y.result().await.unwrap().decode::<i64>().unwrap(), 42);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_key_op_and_worker_and_spare_the_worker() {
    let cluster = cluster(1).await;
    let client = cluster.client().await.unwrap();
    let cases = [
        ("boom", "fail", args("it broke").unwrap(), "it broke"),
        (
            "bang",
            "panic",
            args("it panicked").unwrap(),
            "op panicked: it panicked",
        ),
        ("nope", "no-such-op", args(&()).unwrap(), "unknown op \"no-such-op\""),
    ];
    for (key, op, a, expected) in cases {
        let future = client.submit(TaskSpec::new(key, op, a, vec![])).await.unwrap();
        let err = future.result().await.unwrap_err();
        let RuntimeError::Task(TaskError::OpFailed {
            key: k,
            op: o,
            worker,
            message,
        }) = &err
        else {
            panic!("{err}")
        };
        assert_eq!((k.as_str(), o.as_str(), worker.as_str()), (key, op, "local-0"));
        assert!(message.contains(expected), "{message}");
    }
    // Dependents of a failed task fail with the cause.
    let graph = Graph {
        tasks: vec![
            TaskSpec::new("bad", "fail", args("root cause").unwrap(), vec![]),
            TaskSpec::new("after", "sum", args(&0i64).unwrap(), vec!["bad".into()]),
        ],
        outputs: vec!["after".into()],
    };
    let after = client.compute(graph).await.unwrap().pop().unwrap();
    let err = after.wait().await.unwrap_err();
    assert!(err.to_string().contains("root cause"), "{err}");
    // The worker still runs tasks.
    let ok = client
        .submit(TaskSpec::new("ok", "const", args(&5i64).unwrap(), vec![]))
        .await
        .unwrap();
    assert_eq!(ok.result().await.unwrap().decode::<i64>().unwrap(), 5);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_graphs_and_lost_schedulers_are_clear_errors() {
    let cluster = cluster(1).await;
    let client = cluster.client().await.unwrap();
    let graph = Graph {
        tasks: vec![TaskSpec::new("a", "sum", args(&0i64).unwrap(), vec!["missing".into()])],
        outputs: vec!["a".into()],
    };
    let err = client.compute(graph).await.unwrap_err();
    assert!(matches!(err, RuntimeError::GraphRejected(_)), "{err}");
    let slow = client
        .submit(TaskSpec::new(
            "slow",
            "delay",
            args(&(10_000u64, 0i64)).unwrap(),
            vec![],
        ))
        .await
        .unwrap();
    cluster.stop().await;
    let err = tokio::time::timeout(Duration::from_secs(5), slow.wait())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RuntimeError::SchedulerLost { .. }), "{err}");
}
