//! What the tests of `weft` processes share: processes killed when
//! dropped, free addresses, and a client's usual waits and graphs.
#![allow(dead_code, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use weft::ops::args;
use weft::transport::Config;
use weft::{Client, Graph, RuntimeError, graphs};

/// A child process killed when the test is done with it.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn weft(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    command.args(args);
    command
}

/// A background process; its logs show with `WEFT_LOG=debug` (or any level)
/// set for the test run, and are dropped otherwise.
pub fn spawn(args: &[&str]) -> Proc {
    spawn_with(args, &[])
}

/// [`spawn`] with environment variables set.
pub fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let logs = if std::env::var_os("WEFT_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    let mut command = weft(args);
    command.envs(env.iter().copied());
    Proc(command.stdout(Stdio::null()).stderr(logs).spawn().unwrap())
}

/// [`spawn`] with info-level logs written to `log`.
pub fn spawn_logged(args: &[&str], log: &std::path::Path) -> Proc {
    let file = std::fs::File::create(log).unwrap();
    let mut command = weft(args);
    command.env("WEFT_LOG", "info");
    Proc(command.stdout(Stdio::null()).stderr(file).spawn().unwrap())
}

/// A free port below the kernel's ephemeral range (32768 and up by
/// default), so that no worker's port-0 listener can take it over while a
/// test has its scheduler down.
pub fn free_address() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() * 7;
    loop {
        let port = 20_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return format!("tcp://127.0.0.1:{port}");
        }
    }
}

pub async fn client(address: &str) -> Client {
    Client::connect(address, &Config::default()).await.unwrap()
}

pub async fn root(client: &Client, graph: Graph) -> Result<i64, RuntimeError> {
    let futures = client.compute(graph).await?;
    Ok(futures[0].result().await?.decode::<i64>().unwrap())
}

/// A tree reduction whose leaves each take `ms` milliseconds.
pub fn slow_tree(prefix: &str, leaves: usize, ms: u64) -> Graph {
    let mut graph = graphs::tree(prefix, leaves);
    for (i, task) in graph.tasks.iter_mut().take(leaves).enumerate() {
        task.op = "delay".into();
        task.args = args(&(ms, i as i64)).unwrap();
    }
    graph
}

/// Submits `leaves` tasks of 5 s (leaf `i` gives `i`) and a last one of
/// 1 s that sums them; returns the futures (the last's first, then the
/// leaves') once every leaf is done and the last has started.
pub async fn leaves_done_last_running(client: &Client, prefix: &str, leaves: usize) -> Vec<weft::TaskFuture> {
    use weft::TaskSpec;
    let mut tasks: Vec<TaskSpec> = (0..leaves)
        .map(|i| {
            TaskSpec::new(
                format!("{prefix}-{i}"),
                "delay",
                args(&(5_000u64, i as i64)).unwrap(),
                vec![],
            )
        })
        .collect();
    let keys: Vec<weft::Key> = tasks.iter().map(|t| t.key.clone()).collect();
    let last = format!("{prefix}-last");
    tasks.push(TaskSpec::new(
        last.clone(),
        "delay",
        args(&(1_000u64, 0i64)).unwrap(),
        keys.clone(),
    ));
    let mut outputs = vec![last.into()];
    outputs.extend(keys);
    let futures = client.compute(Graph { tasks, outputs }).await.unwrap();
    for leaf in &futures[1..] {
        tokio::time::timeout(Duration::from_secs(30), leaf.wait())
            .await
            .unwrap()
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    futures
}

/// The names of the scheduler's workers, sorted.
pub async fn worker_names(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .workers()
        .await
        .unwrap()
        .iter()
        .map(|w| w.name.to_string())
        .collect();
    names.sort_unstable();
    names
}

/// Waits until `n` workers have joined the scheduler.
pub async fn joined(client: &Client, n: usize) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while client.workers().await.unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
}
