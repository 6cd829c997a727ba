//! The soak: random graphs, one after another, on a scheduler and three
//! worker processes, one of which is SIGKILLed and replaced at a fixed
//! period; every answer must be right, and the scheduler's memory must come
//! back to what it was once the graphs are released (no leak).
//!
//! CI runs a short soak (60 s, a kill every 10 s). The full one is
//! `WEFT_SOAK_SECONDS=600 WEFT_SOAK_KILL_EVERY=30 cargo test --release -p
//! weft-cli --test soak -- --nocapture` (10 minutes, a kill every 30 s;
//! some 10^7 tasks here).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Proc, client, free_address, joined, root, slow_tree, spawn};
use weft::{Client, Graph, graphs};

/// `name`'s value in the environment, in seconds, else `default`.
fn seconds(name: &str, default: u64) -> Duration {
    Duration::from_secs(std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default))
}

/// The scheduler's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One random graph of one of four kinds, at most `scale` times its
/// largest size, and its answer.
fn random_graph(rng: &mut fastrand::Rng, prefix: &str, scale: f64) -> (Graph, i64) {
    let upto = |max: usize| ((max as f64 * scale) as usize).max(2);
    match rng.u8(0..4) {
        0 => {
            let leaves = rng.usize(2..=upto(4000));
            (graphs::tree(prefix, leaves), (leaves * (leaves - 1) / 2) as i64)
        }
        1 => {
            let links = rng.usize(2..=upto(400));
            (graphs::chain(prefix, links), links as i64)
        }
        2 => {
            // Slow leaves: the kills land while work is running.
            let leaves = rng.usize(2..=upto(300));
            (slow_tree(prefix, leaves, 2), (leaves * (leaves - 1) / 2) as i64)
        }
        _ => {
            let n = rng.usize(2..=upto(3000));
            (graphs::map(prefix, n), (n * (n - 1) / 2) as i64)
        }
    }
}

/// Runs `graph` and checks its answer; a map's results are summed.
async fn check(client: &Client, graph: Graph, answer: i64, what: &str) -> usize {
    let tasks = graph.tasks.len();
    let got = if graph.outputs.len() == 1 {
        root(client, graph).await.unwrap()
    } else {
        let futures = client.compute(graph).await.unwrap();
        let values = client.gather(&futures).await.unwrap();
        values.iter().map(|v| v.decode::<i64>().unwrap()).sum()
    };
    assert_eq!(got, answer, "{what}");
    tasks
}

/// Waits until no worker holds a result: every graph released.
async fn released(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held: u64 = client.workers().await.unwrap().iter().map(|w| w.n_held).sum();
        if held == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{held} results still held after the graphs were released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_graphs_with_workers_killed_give_right_answers_and_leak_nothing() {
    let length = seconds("WEFT_SOAK_SECONDS", 60);
    let kill_every = seconds("WEFT_SOAK_KILL_EVERY", 10);
    let address = free_address();
    let scheduler = spawn(&["scheduler", "--listen", &address, "--no-dashboard"]);
    let worker = |name: String| -> Proc {
        spawn(&[
            "worker",
            &address,
            "--nthreads",
            "1",
            "--name",
            &name,
            "--timeout",
            "30",
        ])
    };
    let mut workers: Vec<Proc> = (0..3).map(|i| worker(format!("w{i}"))).collect();
    let client = client(&address).await;
    joined(&client, 3).await;

    // Warm-up: each kind at its largest, so that the scheduler's memory
    // has seen its working set before it is measured.
    let mut rng = fastrand::Rng::with_seed(20261204);
    let mut tasks = 0;
    for kind in 0..8 {
        let (graph, answer) = random_graph(&mut fastrand::Rng::with_seed(kind), &format!("warm{kind}"), 1.0);
        tasks += check(&client, graph, answer, "warm-up").await;
    }
    released(&client).await;
    let warm_rss = rss(scheduler.0.id());
    // The baseline: at the first kill, once graphs, deaths and
    // recomputation have all been through the scheduler.
    let mut start_rss = None;

    let started = Instant::now();
    let mut next_kill = started + kill_every;
    let (mut graphs_run, mut kills) = (0, 0);
    while started.elapsed() < length {
        let prefix = format!("soak{graphs_run}");
        let (graph, answer) = random_graph(&mut rng, &prefix, 1.0);
        let what = format!("graph {graphs_run} ({prefix}) after {kills} kills");
        // While a graph runs, the killer may be due: SIGKILL one worker (no
        // goodbye) and start another in its place.
        let run = check(&client, graph, answer, &what);
        tokio::pin!(run);
        tasks += loop {
            tokio::select! {
                done = &mut run => break done,
                () = tokio::time::sleep_until(next_kill.into()) => {
                    let i = rng.usize(0..workers.len());
                    workers[i].0.kill().unwrap();
                    kills += 1;
                    let now = rss(scheduler.0.id());
                    start_rss.get_or_insert(now);
                    println!("kill {kills}: {tasks} tasks so far, scheduler RSS {:.1} MiB", mib(now));
                    workers[i] = worker(format!("w{i}-{kills}"));
                    next_kill += kill_every;
                }
            }
        };
        graphs_run += 1;
    }
    released(&client).await;
    // Freed memory may take a moment to be returned.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end_rss = rss(scheduler.0.id());
    let start_rss = start_rss.expect("at least one kill");
    println!(
        "soak: {graphs_run} graphs, {tasks} tasks, {kills} workers killed in {:.0?}; scheduler RSS {:.1} MiB after the warm-up, {:.1} MiB at the first kill, {:.1} MiB at the end with everything released",
        started.elapsed(),
        mib(warm_rss),
        mib(start_rss),
        mib(end_rss)
    );
    assert!(kills >= length.as_secs() / kill_every.as_secs() / 2, "kills {kills}");
    assert!(
        end_rss as f64 <= start_rss as f64 * 1.10,
        "scheduler RSS grew from {start_rss} to {end_rss} bytes"
    );
}
