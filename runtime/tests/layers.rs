//! Layered graphs on a local cluster: every dependency pattern gives the
//! right results, bad layers are rejected with a clear reason (and the
//! scheduler goes on serving), and a timing of a 10^6-task graph in the
//! per-task and the layered form (ignored by default; see its doc).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use weft_runtime::codec::{self, ClientUp};
use weft_runtime::graph::TaskSpec;
use weft_runtime::layer::{Layer, LayerArgs, LayerGraph, Pattern, Source};
use weft_runtime::ops::args;
use weft_runtime::scheduler::{Config, Event, Scheduler};
use weft_runtime::{ClientId, FromClient, Graph, LocalCluster, LocalOptions, RuntimeError, TaskFuture, WorkerMode};

async fn cluster() -> LocalCluster {
    let mut options = LocalOptions::for_this_machine();
    options.workers = 2;
    options.nthreads = 1;
    options.mode = WorkerMode::InProcess;
    LocalCluster::start(options).await.unwrap()
}

/// `const` tasks with values `0..n`.
fn consts(name: &str, n: u32) -> Layer {
    Layer::new(name, "const", n).args(LayerArgs::per_task((0..n).map(|i| args(&i64::from(i)).unwrap())))
}

/// `sum` tasks that add `add` to their inputs.
fn sums(name: &str, n: u32, add: i64) -> Layer {
    Layer::new(name, "sum", n).args(LayerArgs::Shared(args(&add).unwrap()))
}

/// The outputs' values, and their futures (which keep them in memory).
async fn values(client: &weft_runtime::Client, graph: LayerGraph) -> (Vec<i64>, Vec<TaskFuture>) {
    let futures = client.compute_layers(graph).await.unwrap();
    let gathered = client.gather(&futures).await.unwrap();
    (gathered.iter().map(|v| v.decode::<i64>().unwrap()).collect(), futures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pattern_gives_the_right_results() {
    let cluster = cluster().await;
    let client = cluster.client().await.unwrap();
    // Blockwise chain: x_i = i, y_i = x_i + 10, z_i = y_i + 100.
    let mut graph = LayerGraph::default();
    graph.layers.push(consts("x", 50));
    graph.layers.push(sums("y", 50, 10).input("x", Pattern::Blockwise));
    graph.layers.push(sums("z", 50, 100).input("y", Pattern::Blockwise));
    graph.output_layers.push("z".into());
    let expected: Vec<i64> = (0..50).map(|i| i + 110).collect();
    assert_eq!(values(&client, graph).await.0, expected);

    // All-to-all, fan-in, explicit lists, and keys as a source (a per-task
    // spec of the same graph), mixed.
    let mut graph = LayerGraph::default();
    graph
        .tasks
        .push(TaskSpec::new("base", "const", args(&1000i64).unwrap(), vec![]));
    graph.layers.push(consts("a", 7));
    graph.layers.push(
        sums("all", 3, 1)
            .input("a", Pattern::AllToAll)
            .input(Source::Keys(vec!["base".into()]), Pattern::AllToAll),
    );
    graph.layers.push(sums("pairs", 4, 0).input("a", Pattern::FanIn(2)));
    graph
        .layers
        .push(sums("picked", 2, 0).input("a", Pattern::Explicit(vec![vec![6, 0, 6], vec![]])));
    let root = graph.tree("t", "sum", args(&0i64).unwrap(), "a", 3);
    graph.outputs.extend([root, "base".into()]);
    graph
        .output_layers
        .extend(["all".into(), "pairs".into(), "picked".into()]);
    let (got, _held) = values(&client, graph).await;
    // root, base; all x3; pairs x4; picked x2
    assert_eq!(got, [21, 1000, 1022, 1022, 1022, 1, 5, 9, 6, 12, 0]);

    // A layer over keys known from an earlier graph.
    let mut graph = LayerGraph::default();
    graph
        .layers
        .push(sums("again", 2, 5).input(Source::Keys(vec!["base".into()]), Pattern::AllToAll));
    graph.output_layers.push("again".into());
    assert_eq!(values(&client, graph).await.0, [1005, 1005]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_layers_are_rejected_with_the_reason() {
    let cluster = cluster().await;
    let client = cluster.client().await.unwrap();
    let cases: Vec<(Layer, &str)> = vec![
        (
            sums("u", 2, 0).input("nope", Pattern::Blockwise),
            "input nope is not an earlier layer",
        ),
        (
            sums("u", 1, 0).input("x", Pattern::Explicit(vec![vec![0, 9]])),
            "index 9 out of range of 4 tasks",
        ),
        (
            sums("u", 3, 0).input("x", Pattern::Blockwise),
            "blockwise over 4 tasks, but the layer has 3",
        ),
        (
            sums("u", 3, 0).input("x", Pattern::FanIn(2)),
            "fan-in 2 over 4 tasks makes 2 tasks",
        ),
        (
            sums("u", 1, 0).input(Source::Keys(vec!["missing".into()]), Pattern::AllToAll),
            "depends on unknown key missing",
        ),
        (
            sums("u", 2, 0)
                .args(LayerArgs::per_task([b"x"]))
                .input("x", Pattern::FanIn(2)),
            "arguments for 1 tasks, but the layer has 2",
        ),
    ];
    for (layer, reason) in cases {
        let mut graph = LayerGraph::default();
        graph.layers.push(consts("x", 4));
        graph.layers.push(layer);
        graph.output_layers.push("u".into());
        match client.compute_layers(graph).await {
            Err(RuntimeError::GraphRejected(r)) => assert!(r.contains(reason), "{r:?} lacks {reason:?}"),
            other => panic!("expected a rejection for {reason:?}, got {:?}", other.map(|f| f.len())),
        }
    }
    // A layer referring to a later one is refused too (no cycles through
    // layers), and the scheduler still serves.
    let mut graph = LayerGraph::default();
    graph
        .layers
        .push(sums("first", 1, 0).input("second", Pattern::Blockwise));
    graph.layers.push(consts("second", 1));
    graph.output_layers.push("first".into());
    assert!(matches!(
        client.compute_layers(graph).await,
        Err(RuntimeError::GraphRejected(r)) if r.contains("input second is not an earlier layer")
    ));
    let mut graph = LayerGraph::default();
    graph.layers.push(consts("ok", 3));
    graph.output_layers.push("ok".into());
    assert_eq!(values(&client, graph).await.0, [0, 1, 2]);
    cluster.stop().await;
}

/// `n` loads, a blockwise chain of `depth` layers over them, and a tree
/// with fan-in 8 over the last: per-task specs.
fn per_task_form(n: u32, depth: u32) -> Graph {
    let zero = args(&0i64).unwrap();
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(TaskSpec::new(
            format!("l0-{i}"),
            "const",
            args(&i64::from(i)).unwrap(),
            vec![],
        ));
    }
    for d in 1..depth {
        for i in 0..n {
            let dep = format!("l{}-{i}", d - 1).into();
            tasks.push(TaskSpec::new(format!("l{d}-{i}"), "sum", zero.clone(), vec![dep]));
        }
    }
    let (mut m, mut prefix, mut level) = (n, format!("l{}", depth - 1), 0);
    while m > 1 {
        let next = m.div_ceil(8);
        for i in 0..next {
            let deps = (8 * i..(8 * i + 8).min(m))
                .map(|j| format!("{prefix}-{j}").into())
                .collect();
            tasks.push(TaskSpec::new(format!("t.{level}-{i}"), "sum", zero.clone(), deps));
        }
        (m, prefix, level) = (next, format!("t.{level}"), level + 1);
    }
    let outputs = vec![format!("{prefix}-0").into()];
    Graph { tasks, outputs }
}

/// The same graph as layers.
fn layered_form(n: u32, depth: u32) -> LayerGraph {
    let zero = args(&0i64).unwrap();
    let mut graph = LayerGraph::default();
    graph
        .layers
        .push(Layer::new("l0", "const", n).args(LayerArgs::per_task((0..n).map(|i| args(&i64::from(i)).unwrap()))));
    for d in 1..depth {
        let layer = Layer::new(format!("l{d}"), "sum", n)
            .args(LayerArgs::Shared(zero.clone()))
            .input(format!("l{}", d - 1).as_str(), Pattern::Blockwise);
        graph.layers.push(layer);
    }
    let root = graph.tree("t", "sum", zero, &format!("l{}", depth - 1), 8);
    graph.outputs.push(root);
    graph
}

/// CPU time of this thread so far (from `/proc/thread-self/schedstat`;
/// zero where there is none): on a shared machine, wall time says little.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat.split_whitespace().next().and_then(|f| f.parse().ok()).unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Runs `f`, returning its result, wall time and CPU time.
fn timed<T>(f: impl FnOnce() -> T) -> (T, [Duration; 2]) {
    let (t, c) = (Instant::now(), cpu_time());
    let r = f();
    (r, [t.elapsed(), cpu_time() - c])
}

/// Build (client), encode and decode (the wire), and ingest (the
/// scheduler, one `submit` event) of one graph message: wall and CPU time.
fn time_submit(build: impl Fn() -> FromClient) -> [[Duration; 2]; 4] {
    let (msg, built) = timed(build);
    let (wire, encoded) = timed(|| codec::encode(&vec![msg]).unwrap());
    let (mut batch, decoded) = timed(|| codec::decode::<ClientUp>(&wire).unwrap());
    let mut sched = Scheduler::new(Config::default());
    let client = ClientId::new(0);
    sched.handle_to_vec(Event::ClientConnected { client });
    let msg = batch.pop().unwrap();
    let (out, ingested) = timed(|| sched.handle_to_vec(Event::Client { client, msg }));
    assert!(sched.n_tasks() > 1_000_000, "{out:?}");
    [built, encoded, decoded, ingested]
}

/// A 10^6-task graph (5 blockwise layers of 200,000 tasks and a tree of
/// fan-in 8 over the last) built, sent and ingested, in the per-task and
/// in the layered form: the median of 3 runs of each stage, wall and CPU
/// time, printed.
/// `cargo test --release -p weft-runtime --test layers -- --ignored --nocapture`
#[test]
#[ignore = "a timing to run in release; it asserts no time"]
fn million_task_graph_build_and_submit_timing() {
    let (n, depth) = (200_000, 5);
    for (form, build) in [
        (
            "per-task",
            &(|| FromClient::SubmitGraph(per_task_form(n, depth))) as &dyn Fn() -> FromClient,
        ),
        ("layered", &|| FromClient::SubmitLayers(layered_form(n, depth))),
    ] {
        let runs: Vec<[[Duration; 2]; 4]> = (0..3).map(|_| time_submit(build)).collect();
        let median = |stage: usize, clock: usize| {
            let mut v: Vec<Duration> = runs.iter().map(|r| r[stage][clock]).collect();
            v.sort();
            v[1]
        };
        let line = |clock: usize| {
            let m: Vec<Duration> = (0..4).map(|s| median(s, clock)).collect();
            let total: Duration = m.iter().sum();
            format!(
                "build {:.2?}, encode {:.2?}, decode {:.2?}, ingest {:.2?}; total {total:.2?}",
                m[0], m[1], m[2], m[3]
            )
        };
        println!("{form:>8} wall: {} (medians of 3)", line(0));
        println!("{form:>8} cpu:  {}", line(1));
    }
}

#[test]
fn layered_and_per_task_forms_make_the_same_tasks() {
    let (n, depth) = (100, 3);
    let graph = per_task_form(n, depth);
    let layered = layered_form(n, depth);
    assert_eq!(graph.tasks.len(), layered.n_tasks());
    let mut a = Scheduler::new(Config::default());
    let mut b = Scheduler::new(Config::default());
    let client = ClientId::new(0);
    for (s, msg) in [
        (&mut a, FromClient::SubmitGraph(graph.clone())),
        (&mut b, FromClient::SubmitLayers(layered)),
    ] {
        s.handle_to_vec(Event::ClientConnected { client });
        s.handle_to_vec(Event::Client { client, msg });
        s.check_all().unwrap();
    }
    assert_eq!(a.n_tasks(), b.n_tasks());
    for t in &graph.tasks {
        let (ia, ib) = (a.task_id(&t.key).unwrap(), b.task_id(&t.key).unwrap());
        let (va, vb) = (a.task_view(ia).unwrap(), b.task_view(ib).unwrap());
        assert_eq!((va.op, va.state), (vb.op, vb.state), "{}", t.key);
    }
    // Same edges: the same tasks are ready, in the same order.
    assert_eq!(a.explain("l0-7"), b.explain("l0-7"));
    assert_eq!(a.explain("t.0-3"), b.explain("t.0-3"));
}
