//! A scheduler stopped in the middle of a computation and started again on
//! the same address: the workers register again with the results they
//! kept, the client reconnects and resubmits what it waits for, and the
//! computation completes with the same futures, without computing again
//! any result a worker kept; a scattered value comes back too.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use weft_runtime::ops::args;
use weft_runtime::{
    Client, ClientOptions, Graph, Registry, SchedulerHandle, SchedulerOptions, TaskSpec, Value, WorkerOptions,
    run_worker, start_scheduler,
};

const N: i64 = 20;

/// Counts the runs of `made`; `gate` blocks (one thread) until it opens.
fn registry(made: Arc<AtomicU64>, gate: Arc<AtomicBool>) -> Registry {
    let mut registry = Registry::builtin();
    registry.op("made", move |i: i64, _: Vec<i64>| {
        made.fetch_add(1, Ordering::SeqCst);
        Ok(i)
    });
    registry.op("gate", move |(): (), _: Vec<i64>| {
        while !gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(0i64)
    });
    registry
}

/// `a-i` made (= i), `b-i` = 2i once the gate opened, `total` their sum
/// plus a scattered value.
fn graph(scattered: &str) -> Graph {
    let mut tasks = vec![TaskSpec::new("gate", "gate", args(&()).unwrap(), vec![])];
    let mut deps = vec![scattered.into()];
    for i in 0..N {
        tasks.push(TaskSpec::new(format!("a-{i}"), "made", args(&i).unwrap(), vec![]));
        tasks.push(TaskSpec::new(
            format!("b-{i}"),
            "sum",
            args(&i).unwrap(),
            vec![format!("a-{i}").into(), "gate".into()],
        ));
        deps.push(format!("b-{i}").into());
    }
    tasks.push(TaskSpec::new("total", "sum", args(&0i64).unwrap(), deps));
    Graph {
        tasks,
        outputs: vec!["total".into()],
    }
}

/// A scheduler on `listen`, retried while the old one's port is released.
async fn scheduler(listen: &str) -> SchedulerHandle {
    for _ in 0..100 {
        if let Ok(handle) = start_scheduler(SchedulerOptions::new(listen)).await {
            return handle;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot listen on {listen} again");
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_scheduler_resumes_the_computation_without_recomputing() {
    let first = scheduler("tcp://127.0.0.1:0").await;
    let address = first.address().to_string();
    let (made, gate) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let registry = Arc::new(registry(made.clone(), gate.clone()));
    let mut workers = Vec::new();
    for i in 0..2 {
        let mut options = WorkerOptions::new(address.clone(), 2);
        options.name = Some(format!("w{i}"));
        options.registry = registry.clone();
        workers.push(tokio::spawn(run_worker(options, std::future::pending())));
    }
    wait_for("two workers", || first.workers_registered() == 2).await;
    let client = Client::connect_with(&address, &ClientOptions::default()).await.unwrap();
    let scattered = client.scatter([Value::encode(&1000i64).unwrap()]).await.unwrap();
    let futures = client.compute(graph(scattered[0].key())).await.unwrap();
    wait_for("every a-i made", || made.load(Ordering::SeqCst) == N as u64).await;
    // Let the workers report them, then stop the scheduler mid-run: the
    // b-i wait for the gate.
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.stop().await;

    let second = scheduler(&address).await;
    gate.store(true, Ordering::SeqCst);
    let total = tokio::time::timeout(Duration::from_secs(60), futures[0].result())
        .await
        .expect("the computation resumed")
        .unwrap()
        .decode::<i64>()
        .unwrap();
    assert_eq!(total, 1000 + 2 * N * (N - 1) / 2);
    assert_eq!(
        made.load(Ordering::SeqCst),
        N as u64,
        "results the workers kept were computed again"
    );
    let value = scattered[0].result().await.unwrap().decode::<i64>().unwrap();
    assert_eq!(value, 1000, "the scattered value came back");
    assert_eq!(second.workers_registered(), 2);
    drop(client);
    second.stop().await;
    workers.iter().for_each(|w| w.abort());
}
