//! The P2P shuffle across real `weft` worker processes: a worker killed
//! with SIGKILL in the middle of a shuffle restarts it, and the answer
//! stays right.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{client, free_address, joined, spawn, worker_names};
use weft::frame::{Frames, LazyFrame, PlanOptions, col, lit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_shuffle_restarts_it_and_the_answer_stays_right() {
    let address = free_address();
    let _scheduler = spawn(&["scheduler", "--listen", &address]);
    let mut workers: Vec<_> = (0..3)
        .map(|i| spawn(&["worker", &address, "--nthreads", "1", "--name", &format!("w{i}")]))
        .collect();
    let watcher = client(&address).await;
    joined(&watcher, 3).await;
    let frames = Frames::new(client(&address).await).with_options(PlanOptions {
        p2p_min_pieces: 1,
        ..PlanOptions::default()
    });
    let input = frames.random(600_000, 24, 1_000);
    let few = |f: &LazyFrame| f.filter(col("key").lt(lit(100)));
    let expected = (input.count().await.unwrap(), few(&input).count().await.unwrap());
    let shuffled = input.shuffle([col("key")], 24);
    let (all, some) = (shuffled.clone(), few(&shuffled));
    let run = tokio::spawn(async move { (all.count().await, some.count().await) });
    // Kill w0 once it runs a task of the shuffle (its first tasks are).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = watcher.workers().await.unwrap();
        let w0 = statuses
            .iter()
            .find(|w| w.name.as_str() == "w0")
            .expect("w0 registered");
        if w0.processing > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "w0 never got work: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    workers[0].0.kill().unwrap(); // SIGKILL: no goodbye, pushes to it fail
    let (all, some) = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!((all.unwrap(), some.unwrap()), expected);
    assert_eq!(worker_names(&watcher).await, ["w1", "w2"], "the scheduler saw the kill");
}
