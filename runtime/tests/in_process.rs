//! A scheduler and workers in one process, over real TCP: graphs give the
//! right answers, failures reach the client with the key, op and worker;
//! scattered values are inputs, gather back and are released; the blocking
//! client does the same without an async runtime.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use weft_runtime::ops::args;
use weft_runtime::{
    Client, ClientOptions, Graph, Key, LocalCluster, LocalOptions, Registry, RuntimeError, TaskError, TaskSpec, Value,
    WorkerMode,
};

async fn cluster(workers: usize) -> LocalCluster {
    let mut options = LocalOptions::for_this_machine();
    options.workers = workers;
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    let mut registry = Registry::builtin();
    registry.op("double", |_: (), inputs: Vec<i64>| Ok(inputs[0] * 2));
    // 1 when it ran on a compute thread, 0 elsewhere; panics when asked.
    registry.op("where", |panic: bool, _: Vec<i64>| {
        assert!(!panic, "asked to panic");
        let name = std::thread::current().name().map(str::to_owned).unwrap_or_default();
        Ok(i64::from(name.starts_with("weft-compute")))
    });
    options.registry = Arc::new(registry);
    LocalCluster::start(options).await.unwrap()
}

/// Submits one task and waits for its `i64` result.
async fn run(client: &weft_runtime::Client, key: &str, op: &str, a: bytes::Bytes, deps: Vec<weft_runtime::Key>) -> i64 {
    let future = client.submit(TaskSpec::new(key, op, a, deps)).await.unwrap();
    future.result().await.unwrap().decode::<i64>().unwrap()
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
            error,
        }) = &err
        else {
            panic!("{err}")
        };
        assert_eq!((k.as_str(), o.as_str(), worker.as_str()), (key, op, "local-0"));
        assert!(error.to_string().contains(expected), "{error}");
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
    assert_eq!(run(&client, "ok", "const", args(&5i64).unwrap(), vec![]).await, 5);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ops_move_to_the_event_loop_and_still_fail_alone() {
    let cluster = cluster(1).await;
    let client = cluster.client().await.unwrap();
    // The first runs of an op go to a compute thread; once it has shown
    // itself short it runs on the worker's event loop. Batches until then
    // (a run preempted often enough could delay it on a busy machine).
    let (mut pooled, mut inline) = (0, 0);
    for _ in 0..50 {
        let futures = client
            .map("where", (0..100).map(|_| args(&false).unwrap()))
            .await
            .unwrap();
        for value in client.gather(&futures).await.unwrap() {
            match value.decode::<i64>().unwrap() {
                1 => pooled += 1,
                _ => inline += 1,
            }
        }
        if inline > 0 {
            break;
        }
    }
    assert!(
        pooled >= 3 && inline > 0,
        "{pooled} runs on compute threads, {inline} inline"
    );
    // A panic there fails its task with the message, and only that task.
    let future = client
        .submit(TaskSpec::new("boom", "where", args(&true).unwrap(), vec![]))
        .await
        .unwrap();
    let err = future.result().await.unwrap_err();
    assert!(err.to_string().contains("asked to panic"), "{err}");
    assert!(run(&client, "fine", "where", args(&false).unwrap(), vec![]).await <= 1);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_graphs_and_lost_schedulers_are_clear_errors() {
    let cluster = cluster(1).await;
    // Fails at once when the scheduler goes (by default it reconnects for
    // 30 s: see restart.rs).
    let options = ClientOptions {
        reconnect_timeout: Duration::ZERO,
        ..ClientOptions::default()
    };
    let client = Client::connect_with(cluster.address(), &options).await.unwrap();
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

fn values(range: std::ops::RangeInclusive<i64>) -> Vec<Value> {
    range.map(|i| Value::encode(&i).unwrap()).collect()
}

/// Waits until the scheduler lists `n` workers (a condition, polled).
async fn until_workers(client: &Client, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.workers().await.unwrap().len() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scattered_values_are_inputs_and_gather_back() {
    let cluster = cluster(2).await;
    let client = cluster.client().await.unwrap();
    let scattered = client.scatter(values(1..=10)).await.unwrap();
    assert_eq!(scattered.len(), 10);
    assert!(scattered[0].key().starts_with("scatter-"), "{}", scattered[0].key());
    // Gathered back in order.
    let back: Vec<i64> = client
        .gather(&scattered)
        .await
        .unwrap()
        .iter()
        .map(|v| v.decode().unwrap())
        .collect();
    assert_eq!(back, (1..=10).collect::<Vec<_>>());
    // Spread over both workers.
    let keys: Vec<Key> = scattered.iter().map(|f| f.key().clone()).collect();
    let holders: std::collections::BTreeSet<_> = client
        .who_has(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(|peers| {
            assert_eq!(peers.len(), 1);
            peers[0].worker
        })
        .collect();
    assert_eq!(holders.len(), 2);
    // Tasks use them as inputs, wherever they run.
    assert_eq!(
        run(&client, "total", "sum", args(&100i64).unwrap(), keys.clone()).await,
        155
    );
    assert_eq!(
        run(&client, "doubled", "double", args(&()).unwrap(), vec![keys[6].clone()]).await,
        14
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_scattered_future_releases_it() {
    let cluster = cluster(1).await;
    let client = cluster.client().await.unwrap();
    let mut scattered = client.scatter(values(1..=2)).await.unwrap();
    let kept = scattered.pop().unwrap();
    let dropped = scattered.pop().unwrap();
    let key = dropped.key().clone();
    assert_eq!(client.who_has(std::slice::from_ref(&key)).await.unwrap()[0].len(), 1);
    assert_eq!(client.workers().await.unwrap()[0].n_held, 2);
    // A clone keeps it wanted; the last drop releases it. The release and the
    // query travel in order on one connection, so the answer sees the release.
    let clone = dropped.clone();
    drop(dropped);
    assert_eq!(client.workers().await.unwrap()[0].n_held, 2);
    drop(clone);
    assert!(client.who_has(std::slice::from_ref(&key)).await.unwrap()[0].is_empty());
    let status = &client.workers().await.unwrap()[0];
    let kept_bytes = Value::encode(&2i64).unwrap().nbytes();
    assert_eq!((status.n_held, status.nbytes_held), (1, kept_bytes));
    // The scheduler forgot it: a graph naming it is refused.
    let graph = Graph {
        tasks: vec![TaskSpec::new("late", "sum", args(&0i64).unwrap(), vec![key.clone()])],
        outputs: vec!["late".into()],
    };
    let err = client.compute(graph).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::GraphRejected(reason) if reason.contains(key.as_str())),
        "{err}"
    );
    assert_eq!(kept.result().await.unwrap().decode::<i64>().unwrap(), 2);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scatter_to_a_dead_or_unknown_worker_is_an_error_and_keeps_nothing() {
    let mut cluster = cluster(2).await;
    let client = cluster.client().await.unwrap();
    let workers = client.workers().await.unwrap();
    let by_name = |name: &str| workers.iter().find(|w| w.name.as_str() == name).unwrap();
    let (live, dead) = (by_name("local-0"), by_name("local-1"));
    // A worker id the scheduler does not know, at a live address: the push
    // lands, the scheduler refuses, the client drops what it pushed.
    let mut stranger = live.clone();
    stranger.worker = weft_runtime::WorkerId::new(9_999);
    let err = client.scatter_to(&stranger, values(1..=3)).await.unwrap_err();
    let RuntimeError::Scatter { reason, .. } = &err else {
        panic!("{err}")
    };
    assert!(reason.contains("not (or no longer) registered"), "{err}");
    // A worker that died: its data server is gone.
    cluster.kill_worker(1).await.unwrap();
    until_workers(&client, 1).await;
    let err = client.scatter_to(dead, values(1..=3)).await.unwrap_err();
    let RuntimeError::Scatter { worker, reason } = &err else {
        panic!("{err}")
    };
    assert_eq!(worker, "local-1");
    assert!(reason.contains("pushing the values failed"), "{err}");
    // Nothing was registered anywhere, and scatter still works.
    let status = client.workers().await.unwrap();
    assert_eq!(status.iter().map(|w| w.n_held).sum::<u64>(), 0);
    let again = client.scatter(values(5..=5)).await.unwrap();
    assert_eq!(client.gather(&again).await.unwrap()[0].decode::<i64>().unwrap(), 5);
    cluster.stop().await;
}

#[test]
fn the_blocking_client_round_trips_and_refuses_to_run_inside_a_runtime() {
    use weft_runtime::blocking;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(cluster(2));
    let client = blocking::Client::connect(cluster.address(), &Default::default()).unwrap();
    assert_eq!(client.workers().unwrap().len(), 2);
    let scattered = client.scatter(values(1..=4)).unwrap();
    let keys: Vec<Key> = scattered.iter().map(|f| f.key().clone()).collect();
    let total = client
        .submit(TaskSpec::new("total", "sum", args(&0i64).unwrap(), keys))
        .unwrap();
    assert_eq!(client.result(&total).unwrap().decode::<i64>().unwrap(), 10);
    let mapped = client.map("const", (0..20i64).map(|i| args(&i).unwrap())).unwrap();
    client.wait(&mapped).unwrap();
    let sum: i64 = client
        .gather(&mapped)
        .unwrap()
        .iter()
        .map(|v| v.decode::<i64>().unwrap())
        .sum();
    assert_eq!(sum, 190);
    let completed: Vec<_> = client
        .as_completed(mapped.clone())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(completed.len(), 20);
    let graph = weft_runtime::graphs::tree("bt", 16);
    let root = client.compute(graph).unwrap();
    assert_eq!(client.gather(&root).unwrap()[0].decode::<i64>().unwrap(), 120);
    let slow = client
        .submit(TaskSpec::new(
            "slow",
            "delay",
            args(&(10_000u64, 0i64)).unwrap(),
            vec![],
        ))
        .unwrap();
    client.cancel(std::slice::from_ref(&slow));
    assert!(matches!(client.result(&slow), Err(RuntimeError::Cancelled { .. })));

    // Inside a runtime every blocking call is a clear error, never a stall.
    runtime.block_on(async {
        let err = client.workers().unwrap_err();
        assert!(matches!(err, RuntimeError::InsideRuntime { call: "workers" }), "{err}");
        assert!(err.to_string().contains("async"), "{err}");
        assert!(matches!(client.gather(&root), Err(RuntimeError::InsideRuntime { .. })));
        let mut iter = client.as_completed(Vec::new()).err().into_iter();
        assert!(matches!(iter.next(), Some(RuntimeError::InsideRuntime { .. })));
        let err = blocking::Client::connect(cluster.address(), &Default::default())
            .err()
            .unwrap();
        assert!(matches!(err, RuntimeError::InsideRuntime { call: "connect" }), "{err}");
        // Its async half works there.
        assert_eq!(client.as_async().workers().await.unwrap().len(), 2);
    });
    // Dropping one inside a runtime neither blocks nor panics.
    let other = blocking::Client::connect(cluster.address(), &Default::default()).unwrap();
    runtime.block_on(async move { drop(other) });
    drop((scattered, total, mapped, completed, root, slow));
    drop(client);
    runtime.block_on(cluster.stop());
}
