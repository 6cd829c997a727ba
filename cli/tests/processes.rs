//! Real `weft` processes on TCP: a scheduler and workers started from the
//! command line, killed with SIGKILL, restarted, and fed bad settings.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, client, free_address, joined, root, slow_tree, spawn, spawn_with, weft, worker_names};
use weft::ops::args;
use weft::transport::Config;
use weft::{Client, Graph, Key, RuntimeError, TaskFuture, TaskSpec, Value, graphs};

/// A scheduler and `workers` single-threaded worker processes.
fn cluster(workers: usize) -> (String, Proc, Vec<Proc>) {
    cluster_with(workers, &[])
}

/// [`cluster`] with environment variables set for the workers.
fn cluster_with(workers: usize, env: &[(&str, &str)]) -> (String, Proc, Vec<Proc>) {
    let address = free_address();
    let scheduler = spawn(&["scheduler", "--listen", &address]);
    let workers = (0..workers)
        .map(|i| {
            spawn_with(
                &[
                    "worker",
                    &address,
                    "--nthreads",
                    "1",
                    "--name",
                    &format!("w{i}"),
                    "--timeout",
                    "30",
                ],
                env,
            )
        })
        .collect();
    (address, scheduler, workers)
}

/// `n` independent `delay` tasks of `ms` milliseconds (task `i` gives
/// `i`), each asking for `gpus` GPUs.
fn delays(prefix: &str, n: u64, ms: u64, gpus: u32) -> Graph {
    let tasks: Vec<TaskSpec> = (0..n)
        .map(|i| {
            let mut task = TaskSpec::new(format!("{prefix}-{i}"), "delay", args(&(ms, i as i64)).unwrap(), vec![]);
            if gpus > 0 {
                task.annotations.resources = vec![weft::ResourceAmount {
                    name: "gpu".into(),
                    amount: gpus,
                }];
            }
            task
        })
        .collect();
    let outputs = tasks.iter().map(|t| t.key.clone()).collect();
    Graph { tasks, outputs }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tasks_over_processes() {
    let (address, _scheduler, _workers) = cluster(2);
    let client = client(&address).await;
    let leaves = 5000;
    assert_eq!(
        root(&client, graphs::tree("big", leaves)).await.unwrap(),
        (leaves * (leaves - 1) / 2) as i64
    );
    let chain = graphs::chain("chain", 1000);
    assert_eq!(root(&client, chain).await.unwrap(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_mid_run_still_gives_the_right_answer() {
    let (address, _scheduler, mut workers) = cluster(3);
    let client = client(&address).await;
    let leaves = 600;
    joined(&client, 3).await;
    let futures = client.compute(slow_tree("resilient", leaves, 4)).await.unwrap();
    // The kill must land while w0 has work, or the test proves nothing.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let statuses = client.workers().await.unwrap();
        let w0 = statuses
            .iter()
            .find(|w| w.name.as_str() == "w0")
            .expect("w0 registered");
        if w0.processing > 0 && w0.n_held > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "w0 never got work: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    workers[0].0.kill().unwrap(); // SIGKILL: no goodbye
    let value = futures[0].result().await.unwrap().decode::<i64>().unwrap();
    assert_eq!(value, (leaves * (leaves - 1) / 2) as i64);
    let left = worker_names(&client).await;
    assert_eq!(left, ["w1", "w2"], "the scheduler saw the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_op_fails_only_its_task() {
    let (address, _scheduler, mut workers) = cluster(1);
    let client = client(&address).await;
    let panic = client
        .submit(TaskSpec::new("explode", "panic", args("kaboom").unwrap(), vec![]))
        .await
        .unwrap();
    let err = panic.result().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("explode") && text.contains("panic") && text.contains("kaboom") && text.contains("w0"),
        "{text}"
    );
    assert!(
        workers[0].0.try_wait().unwrap().is_none(),
        "the worker process lives on"
    );
    assert_eq!(root(&client, graphs::tree("after", 64)).await.unwrap(), 64 * 63 / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_has_its_keys_released() {
    let (address, _scheduler, _workers) = cluster(1);
    let first = client(&address).await;
    let x = first
        .submit(TaskSpec::new("x", "const", args(&1i64).unwrap(), vec![]))
        .await
        .unwrap();
    x.wait().await.unwrap();
    drop(x);
    drop(first);
    // Once the scheduler has released "x", a graph that depends on it is
    // refused as naming an unknown key.
    let second = client(&address).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for attempt in 0.. {
        assert!(Instant::now() < deadline, "x was never released");
        let graph = Graph {
            tasks: vec![TaskSpec::new(
                format!("y{attempt}"),
                "sum",
                args(&0i64).unwrap(),
                vec!["x".into()],
            )],
            outputs: vec![format!("y{attempt}").into()],
        };
        match second.compute(graph).await {
            Err(RuntimeError::GraphRejected(reason)) => {
                assert!(reason.contains('x'), "{reason}");
                break;
            }
            Ok(futures) => {
                futures[0].wait().await.unwrap();
                drop(futures);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
}

/// Issue 15 item 4 with real processes: the scheduler is killed with
/// SIGKILL while a 1 s task that needs four finished 5 s leaves runs, and
/// started again on the same address; the workers register again with
/// the leaves they kept, the client (the same futures) reconnects and
/// resubmits, and only the running task is computed again: the result
/// comes 1-2 s after the restart (the task, after what is left of its
/// interrupted run on its thread), where computing the leaves again on
/// the two single-threaded workers would take 10 s more. The new
/// scheduler logs the claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_killed_and_restarted_resumes_the_run_without_recomputing() {
    let (address, mut scheduler, _workers) = cluster(2);
    let client = client(&address).await;
    joined(&client, 2).await;
    let leaves = 4;
    let futures = common::leaves_done_last_running(&client, "resume", leaves).await;
    // The scheduler dies under the last task.
    scheduler.0.kill().unwrap();
    let _ = scheduler.0.wait();

    let log = std::env::temp_dir().join(format!("weft-restart-{}.log", std::process::id()));
    let restarted_at = Instant::now();
    let _restarted = common::spawn_logged(&["scheduler", "--listen", &address], &log);
    let last = tokio::time::timeout(Duration::from_secs(60), futures[0].result())
        .await
        .expect("the run resumed")
        .unwrap()
        .decode::<i64>()
        .unwrap();
    let recovery = restarted_at.elapsed();
    assert_eq!(last, (leaves * (leaves - 1) / 2) as i64);
    for (i, leaf) in futures[1..].iter().enumerate() {
        assert_eq!(leaf.result().await.unwrap().decode::<i64>().unwrap(), i as i64);
    }
    println!("scheduler restart to result: {recovery:?} (the last task alone takes 1 s)");
    assert!(
        recovery < Duration::from_secs(8),
        "the kept leaves were computed again: {recovery:?} from restart to result"
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(logs.contains("kept results from an earlier scheduler"), "{logs}");
}

/// A task on `w0` making `n` float64s, and a task on `w1` summing them.
async fn make_and_sum(client: &Client, tag: &str, n: u64, producer_anywhere: bool) -> (TaskFuture, TaskSpec) {
    // Both workers are up before anything is placed (a task held strictly
    // to a worker waits for it).
    for worker in ["w0", "w1"] {
        let mut up = TaskSpec::new(format!("{tag}-{worker}-up"), "const", args(&0i64).unwrap(), vec![]);
        up.annotations.workers = vec![worker.into()];
        client.submit(up).await.unwrap().wait().await.unwrap();
    }
    let mut make = TaskSpec::new(format!("{tag}-make"), "arange_f64", args(&n).unwrap(), vec![]);
    make.annotations.workers = vec!["w0".into()];
    make.annotations.allow_other_workers = producer_anywhere;
    let made = client.submit(make).await.unwrap();
    made.wait().await.unwrap();
    let mut sum = TaskSpec::new(
        format!("{tag}-sum"),
        "sum_f64",
        Default::default(),
        vec![made.key().clone()],
    );
    sum.annotations.workers = vec!["w1".into()];
    (made, sum)
}

/// A field of /proc/PID/status in bytes, such as `RssShmem`.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_one_host_share_a_large_result_without_copying() {
    let (address, _scheduler, workers) = cluster(2);
    let client = client(&address).await;
    let n = 8u64 << 20; // 64 MiB
    let (_made, sum) = make_and_sum(&client, "shared", n, false).await;
    let consumer = workers[1].0.id();
    let before = status_bytes(consumer, "RssShmem");
    let total = client.submit(sum).await.unwrap().result().await.unwrap();
    assert_eq!(total.decode::<f64>().unwrap(), (n * (n - 1) / 2) as f64);
    // The consumer mapped the producer's pages rather than receiving a copy.
    let mapped = status_bytes(consumer, "RssShmem") - before;
    assert!(mapped >= 8 * n, "worker w1 maps {mapped} bytes of shared memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_transfer_has_its_result_recomputed() {
    // Over the socket: a mapping of shared memory outlives its producer, so
    // there would be no transfer to cut.
    let (address, _scheduler, mut workers) = cluster_with(2, &[("WEFT_SAME_HOST_SHM", "0")]);
    let client = client(&address).await;
    let n = 64u64 << 20; // 512 MiB, a transfer of a good fraction of a second
    let (_made, sum) = make_and_sum(&client, "cut", n, true).await;
    let consumer = workers[1].0.id();
    let before = status_bytes(consumer, "RssAnon");
    let total = client.submit(sum).await.unwrap();
    // The consumer's receive buffer is fresh memory: its resident size grows
    // as the bytes arrive. Kill the producer once they have started to.
    let deadline = Instant::now() + Duration::from_secs(30);
    let received = loop {
        let received = status_bytes(consumer, "RssAnon").saturating_sub(before);
        if received >= 16 << 20 {
            break received;
        }
        assert!(Instant::now() < deadline, "the transfer never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    workers[0].0.kill().unwrap(); // SIGKILL: the socket closes mid-reply
    eprintln!("killed the producer after {received} bytes had arrived");
    assert!(received < 8 * n, "killed after {received} of {} bytes", 8 * n);
    // The fetch fails, the scheduler hears the holder is gone and recomputes
    // the array on the survivor, and the sum is right.
    let value = tokio::time::timeout(Duration::from_secs(60), total.result())
        .await
        .expect("recovered in time")
        .unwrap();
    assert_eq!(value.decode::<f64>().unwrap(), (n * (n - 1) / 2) as f64);
}

fn run_to_end(args: &[&str], limit: Duration) -> Output {
    let mut child = weft(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < limit, "weft {args:?} still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn clear_errors_for_bad_settings() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("tcp://{}", taken.local_addr().unwrap());
    let cases: [(&[&str], &str); 4] = [
        (&["scheduler", "--listen", &address], "already in use"),
        (&["worker", "localhost:8786"], "invalid address"),
        (&["worker", &free_address(), "--timeout", "1"], "cannot connect"),
        (&["worker", &address, "--memory-limit", "lots"], "is not a size"),
    ];
    for (args, expected) in cases {
        let output = run_to_end(args, Duration::from_secs(15));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "weft {args:?} succeeded");
        assert!(stderr.contains(expected), "weft {args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scattered_data_feeds_tasks_over_tcp() {
    let (address, _scheduler, _workers) = cluster(2);
    let client = client(&address).await;
    joined(&client, 2).await;
    let values: Vec<Value> = (1..=1000i64).map(|i| Value::encode(&i).unwrap()).collect();
    let scattered = client.scatter(values).await.unwrap();
    let keys: Vec<Key> = scattered.iter().map(|f| f.key().clone()).collect();
    let held: Vec<u64> = client.workers().await.unwrap().iter().map(|w| w.n_held).collect();
    assert_eq!(held, vec![500, 500], "spread evenly");
    // One task on every value: half of them come from the other worker.
    let total = client
        .submit(TaskSpec::new("total", "sum", args(&0i64).unwrap(), keys.clone()))
        .await
        .unwrap();
    assert_eq!(total.result().await.unwrap().decode::<i64>().unwrap(), 500_500);
    let back = client.gather(&scattered[..3]).await.unwrap();
    assert_eq!(
        back.iter().map(|v| v.decode::<i64>().unwrap()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    drop(scattered);
    drop(total);
    assert!(
        client.who_has(&keys).await.unwrap().iter().all(Vec::is_empty),
        "released"
    );
}

#[test]
fn the_blocking_client_scatters_and_computes_over_tcp() {
    let (address, _scheduler, _workers) = cluster(1);
    let client = weft::blocking::Client::connect(&address, &Config::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.workers().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no worker joined");
        std::thread::sleep(Duration::from_millis(20));
    }
    let scattered = client.scatter([Value::encode(&20i64).unwrap()]).unwrap();
    let y = client
        .submit(TaskSpec::new(
            "y",
            "sum",
            args(&1i64).unwrap(),
            vec![scattered[0].key().clone()],
        ))
        .unwrap();
    assert_eq!(client.result(&y).unwrap().decode::<i64>().unwrap(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_one_gpu_runs_gpu_tasks_one_at_a_time_whatever_its_threads() {
    let address = free_address();
    let _scheduler = spawn(&["scheduler", "--listen", &address]);
    let _worker = spawn(&[
        "worker",
        &address,
        "--nthreads",
        "8",
        "--name",
        "gpu-worker",
        "--resources",
        "gpu=1",
        "--timeout",
        "30",
    ]);
    let client = client(&address).await;
    joined(&client, 1).await;
    let (n, ms) = (6u64, 150u64);
    let started = Instant::now();
    let futures = client.compute(delays("gpu", n, ms, 1)).await.unwrap();
    for (i, future) in futures.iter().enumerate() {
        assert_eq!(future.result().await.unwrap().decode::<i64>().unwrap(), i as i64);
    }
    // One at a time: at least n x ms, though eight threads were idle.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(n * ms),
        "{n} GPU tasks of {ms} ms took {took:?}"
    );
    // Tasks that need no GPU still run side by side.
    let started = Instant::now();
    let futures = client.compute(delays("cpu", n, ms, 0)).await.unwrap();
    client.wait(&futures).await;
    assert!(
        started.elapsed() < Duration::from_millis(n * ms),
        "plain tasks ran in parallel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_all_starts_one_worker_per_gpu_each_offering_one() {
    let address = free_address();
    let _scheduler = spawn(&["scheduler", "--listen", &address]);
    let emulated = [("WEFT_EMULATED_GPUS", "2"), ("WEFT_EMULATED_GPU_MEMORY", "64MiB")];
    let _workers = spawn_with(
        &[
            "worker",
            &address,
            "--gpus",
            "all",
            "--nthreads",
            "4",
            "--name",
            "g",
            "--timeout",
            "30",
        ],
        &emulated,
    );
    let client = client(&address).await;
    joined(&client, 2).await;
    let names = worker_names(&client).await;
    assert_eq!(names, ["g-gpu0", "g-gpu1"]);
    // Four GPU tasks of 150 ms on two one-GPU workers: two rounds at least.
    let (n, ms) = (4u64, 150u64);
    let started = Instant::now();
    let futures = client.compute(delays("on-gpu", n, ms, 1)).await.unwrap();
    client.wait(&futures).await;
    assert!(
        started.elapsed() >= Duration::from_millis(2 * ms),
        "{:?}",
        started.elapsed()
    );
    for (i, future) in futures.iter().enumerate() {
        assert_eq!(future.result().await.unwrap().decode::<i64>().unwrap(), i as i64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_a_token_refuses_peers_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("token"), dir.path().join("wrong"));
    std::fs::write(&good, "s3cret\n").unwrap();
    std::fs::write(&bad, "guess").unwrap();
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());
    let address = free_address();
    let _scheduler = spawn(&["scheduler", "--listen", &address, "--token-file", good]);
    let _worker = spawn(&[
        "worker",
        &address,
        "--name",
        "member",
        "--token-file",
        good,
        "--timeout",
        "30",
    ]);
    // A worker with the wrong secret is refused at the handshake and says
    // so; it never joins.
    let output = run_to_end(
        &[
            "worker",
            &address,
            "--name",
            "intruder",
            "--token-file",
            bad,
            "--timeout",
            "30",
        ],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.to_lowercase().contains("token"), "{stderr}");
    // So is a client without it; one with it computes.
    assert!(Client::connect(&address, &Config::default()).await.is_err());
    let config = Config {
        token: Some(b"s3cret".to_vec()),
        ..Config::default()
    };
    let client = Client::connect(&address, &config).await.unwrap();
    joined(&client, 1).await;
    assert_eq!(worker_names(&client).await, ["member"]);
    assert_eq!(root(&client, graphs::tree("secured", 64)).await.unwrap(), 64 * 63 / 2);
}

/// Certificates from `weft tls generate` in a temporary directory.
struct Pki(tempfile::TempDir);

impl Pki {
    fn generate() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let output = run_to_end(
            &["tls", "generate", dir.path().to_str().unwrap()],
            Duration::from_secs(20),
        );
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        Pki(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.path().join(name).to_str().unwrap().to_string()
    }

    /// The TLS flags of a node with `role`'s certificate.
    fn flags(&self, role: &str) -> Vec<String> {
        vec![
            "--tls-ca-file".to_string(),
            self.file("ca.pem"),
            "--tls-cert".to_string(),
            self.file(&format!("{role}.pem")),
            "--tls-key".to_string(),
            self.file(&format!("{role}.key")),
        ]
    }

    /// A client's settings: the CA, and the client certificate if `cert`.
    fn client(&self, cert: bool) -> Config {
        let files = weft::transport::TlsFiles {
            ca: self.file("ca.pem").into(),
            cert: cert.then(|| self.file("client.pem").into()),
            key: cert.then(|| self.file("client.key").into()),
            require_client_cert: true,
        };
        Config {
            tls: Some(weft::transport::TlsConfig::load(&files).unwrap()),
            ..Config::default()
        }
    }
}

fn spawn_owned(args: Vec<String>) -> Proc {
    spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_mutual_tls_from_generated_certificates() {
    let pki = Pki::generate();
    let address = free_address().replace("tcp://", "tls://");
    let mut args = vec!["scheduler".to_string(), "--listen".to_string(), address.clone()];
    args.extend(pki.flags("scheduler"));
    let _scheduler = spawn_owned(args);
    let mut args = vec![
        "worker".to_string(),
        address.clone(),
        "--name".to_string(),
        "tls-worker".to_string(),
    ];
    args.extend(pki.flags("worker"));
    let _worker = spawn_owned(args);
    // A client without a certificate is refused; one with it computes,
    // gathering from the worker over TLS too.
    assert!(Client::connect(&address, &pki.client(false)).await.is_err());
    let client = Client::connect(&address, &pki.client(true)).await.unwrap();
    joined(&client, 1).await;
    let workers = client.workers().await.unwrap();
    assert!(workers[0].address.starts_with("tls://"), "{workers:?}");
    assert_eq!(root(&client, graphs::tree("tls", 64)).await.unwrap(), 64 * 63 / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_local_with_mutual_tls_gives_its_worker_processes_the_certificates() {
    let pki = Pki::generate();
    let address = free_address().replace("tcp://", "tls://");
    let mut args = [
        "local",
        "--listen",
        &address,
        "--workers",
        "2",
        "--nthreads",
        "1",
        "--no-dashboard",
    ]
    .map(String::from)
    .to_vec();
    args.extend(pki.flags("scheduler"));
    let _local = spawn_owned(args);
    let client = Client::connect(&address, &pki.client(true)).await.unwrap();
    joined(&client, 2).await;
    for worker in client.workers().await.unwrap() {
        assert!(worker.address.starts_with("tls://"), "{worker:?}");
    }
    assert_eq!(
        root(&client, graphs::tree("tls-local", 200)).await.unwrap(),
        200 * 199 / 2
    );
}

#[test]
fn config_show_names_each_value_and_its_source_and_unknown_keys_stop_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weft.toml");
    std::fs::write(&file, "[worker]\nnthreads = 3\nmemory-limit = \"2GiB\"\n").unwrap();
    let out = weft(&["config", "show", "--config", file.to_str().unwrap()])
        .env("WEFT_SCHEDULER_HEARTBEAT_TIMEOUT", "25s")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8(out.stdout).unwrap();
    let line = |key: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("nthreads = \"3\"").contains(file.to_str().unwrap()), "{shown}");
    assert!(
        line("heartbeat-timeout = \"25s\"").contains("$WEFT_SCHEDULER_HEARTBEAT_TIMEOUT"),
        "{shown}"
    );
    assert!(line("max-frame").contains("# default"), "{shown}");
    std::fs::write(&file, "[worker]\nthreads = 3\n").unwrap();
    let out = weft(&["scheduler", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("unknown key `worker.threads`") && err.contains("weft.toml"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_worker_processes_run_dataframe_and_array_ops() {
    let (address, _scheduler, _workers) = cluster(2);
    let client = client(&address).await;
    let frames = weft::frame::Frames::new(client.clone());
    let rows = frames.random(10_000, 4, 10).count().await.unwrap();
    assert_eq!(rows, 10_000);
    let x = weft::array::ones(&[300, 300], &[100, 100], weft::array::DType::F64).unwrap();
    let total = x.sum(None).unwrap().to_host(&client).await.unwrap().to_f64()[0];
    assert_eq!(total, 90_000.0);
}

/// `weft bench transfer --device emulated`: a device result made on one
/// worker process is summed on the other from its own (emulated) device
/// memory, copied there by device IPC; with same-host sharing off it comes
/// over the socket, still into device memory, and the check says it was
/// not the IPC path.
#[test]
fn the_device_transfer_bench_moves_a_device_result_by_ipc() {
    let run = |env: &[(&str, &str)]| {
        let output = weft(&[
            "bench",
            "transfer",
            "--device",
            "emulated",
            "--mib",
            "4",
            "--reps",
            "2",
            "--timeout",
            "120",
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
        let line: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&output.stdout).lines().last().unwrap()).unwrap();
        (line, String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (line, stderr) = run(&[]);
    assert_eq!(line["check"], "ok", "{line}\n{stderr}");
    assert_eq!(line["params"]["device"], "emulated");
    assert!(stderr.contains("path ipc copy"), "{stderr}");
    let (line, stderr) = run(&[("WEFT_SAME_HOST_SHM", "0")]);
    assert!(stderr.contains("path socket into device memory"), "{stderr}");
    assert_eq!(line["check"], "moved by socket into device memory, not by device IPC");
}

/// `weft bench kernels --device emulated`: every kernel line (the GEMM
/// among them) agrees with the CPU, and each names its work and rate.
#[test]
fn the_kernel_bench_checks_every_kernel_against_the_cpu() {
    let output = weft(&[
        "bench",
        "kernels",
        "--json",
        "--device",
        "emulated",
        "--rows",
        "3000",
        "--parts",
        "8",
        "--copy-mib",
        "1",
        "--gemm",
        "48",
        "--reps",
        "1",
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let workloads: Vec<&str> = lines.iter().map(|l| l["workload"].as_str().unwrap()).collect();
    for w in [
        "kernel_sum_f64",
        "kernel_argsort_i64",
        "kernel_gemm_f64",
        "copy_h2d",
        "copy_d2h",
    ] {
        assert!(workloads.contains(&w), "{w} missing from {workloads:?}");
    }
    for l in &lines {
        assert_eq!(l["check"], "ok", "{l}");
        assert!(l["rate"].as_f64().unwrap() > 0.0, "{l}");
    }
    let gemm = lines.iter().find(|l| l["workload"] == "kernel_gemm_f64").unwrap();
    assert_eq!(gemm["work"], 2.0 * 48f64.powi(3));
}
