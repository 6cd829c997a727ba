//! Many hosts on one machine: one network namespace per host, each joined
//! by a veth link to a bridge in this test's namespace, and real `weft`
//! processes in them. The test process is the client, on the bridge.
//!
//! Namespaces need root (CI runs as root); elsewhere each test prints why
//! it skips. Packet loss uses an nftables rule (`ci/setup.sh` installs
//! `nftables`); without `nft` that test skips likewise.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{client, root, slow_tree, worker_names};
use weft::transport::Config;
use weft::{Client, TaskFuture, graphs};

/// Hosts on a private network, torn down when dropped.
struct Net {
    /// Namespace of host `i`.
    hosts: Vec<String>,
    bridge: String,
    /// `10.213.N.` (host `i` is `.i+1`, the bridge `.254`).
    prefix: String,
    /// The `weft` processes, killed first on drop.
    procs: Vec<Child>,
}

/// Runs `ip ARGS`; the error says what failed and why.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// `n` hosts, or why they cannot be made here (printed: the test skips).
    fn new(n: usize) -> Option<Net> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        match Net::try_new(n, NEXT.fetch_add(1, Ordering::Relaxed)) {
            Ok(net) => Some(net),
            Err(reason) => {
                println!("skipped: no network namespaces here ({reason})");
                None
            }
        }
    }

    fn try_new(n: usize, seq: u32) -> Result<Net, String> {
        let pid = std::process::id();
        let tag = format!("{}{seq}", pid % 100_000);
        let mut net = Net {
            hosts: Vec::new(),
            bridge: format!("wb{tag}"),
            prefix: format!("10.213.{}.", (pid + seq * 37) % 250),
            procs: Vec::new(),
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}254/24", net.prefix), "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for i in 0..n {
            let ns = format!("weft-{tag}-{i}");
            ip(&["netns", "add", &ns])?;
            net.hosts.push(ns.clone());
            let veth = format!("wv{tag}x{i}");
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &net.bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}{}/24", net.prefix, i + 1),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Host `i`'s address.
    fn addr(&self, i: usize) -> String {
        format!("{}{}", self.prefix, i + 1)
    }

    /// Starts `weft ARGS` on host `i` with `env`; returns its index in
    /// [`Net::procs`]. Its logs show with `WEFT_LOG` set for the test run.
    fn spawn(&mut self, i: usize, args: &[&str], env: &[(&str, &str)]) -> usize {
        let logs = if std::env::var_os("WEFT_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i], env!("CARGO_BIN_EXE_weft")])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(logs)
            .spawn()
            .unwrap();
        self.procs.push(child);
        self.procs.len() - 1
    }

    /// Sets host `i`'s link down (cut off) or up (healed).
    fn link(&self, i: usize, up: bool) {
        ip(&[
            "-n",
            &self.hosts[i],
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ])
        .unwrap();
    }

    /// A scheduler on host 0 (heartbeat timeout `heartbeat`) and a worker
    /// on each other host; returns the scheduler's address.
    fn cluster(&mut self, heartbeat: &str) -> String {
        let address = self.scheduler(heartbeat);
        self.workers(&address);
        address
    }

    /// A scheduler on host 0; returns its address.
    fn scheduler(&mut self, heartbeat: &str) -> String {
        let address = format!("tcp://{}:8786", self.addr(0));
        let env = [("WEFT_SCHEDULER_HEARTBEAT_TIMEOUT", heartbeat)];
        self.spawn(0, &["scheduler", "--listen", &address], &env);
        address
    }

    /// A worker on each host but the first, joining `scheduler`.
    fn workers(&mut self, scheduler: &str) {
        for i in 1..self.hosts.len() {
            let name = format!("h{i}");
            let args = [
                "worker",
                scheduler,
                "--nthreads",
                "1",
                "--name",
                &name,
                "--timeout",
                "90",
            ];
            self.spawn(i, &args, &[("WEFT_WORKER_HEARTBEAT", "500ms")]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for child in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.hosts {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Listens on `listen` (`HOST:PORT`) and forwards each connection to
/// `target`, holding every segment back `delay` in each direction, in
/// order: latency on a link, where this kernel has no `netem` qdisc.
async fn delaying_relay(listen: &str, target: String, delay: Duration) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
        let writer = tokio::spawn(async move {
            while let Some((due, bytes)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = to.shutdown().await;
        });
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
        drop(tx);
        let _ = writer.await;
    }
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::spawn(pipe(in_read, out_write, delay));
            tokio::spawn(pipe(out_read, in_write, delay));
        }
    })
}

/// Waits until exactly the workers `names` are registered.
async fn workers_are(client: &Client, names: &[&str], within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = worker_names(client).await;
        if now == names {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "workers {now:?}, waited for {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until worker `name` runs a task and holds a result, so that a
/// fault injected next lands mid-run.
async fn busy(client: &Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let statuses = client.workers().await.unwrap();
        if statuses
            .iter()
            .any(|w| w.name.as_str() == name && w.processing > 0 && w.n_held > 0)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never got work: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_move_between_workers_on_different_hosts() {
    let Some(mut net) = Net::new(4) else { return };
    let address = net.cluster("5s");
    let client = client(&address).await;
    workers_are(&client, &["h1", "h2", "h3"], Duration::from_secs(20)).await;
    // Each worker listens on every interface and advertises its host's
    // address on the route to the scheduler, not loopback.
    let mut advertised: Vec<String> = client
        .workers()
        .await
        .unwrap()
        .iter()
        .map(|w| w.address.to_string())
        .collect();
    advertised.sort_unstable();
    for (i, address) in advertised.iter().enumerate() {
        assert!(
            address.starts_with(&format!("tcp://{}:", net.addr(i + 1))),
            "{advertised:?}"
        );
    }
    // A tree over three hosts moves partial sums between them.
    let leaves = 3000;
    assert_eq!(
        root(&client, graphs::tree("hosts", leaves)).await.unwrap(),
        (leaves * (leaves - 1) / 2) as i64
    );
    assert_eq!(root(&client, slow_tree("spread", 300, 2)).await.unwrap(), 300 * 299 / 2);
}

/// A scheduler with a 3 s heartbeat timeout and three workers running a
/// slow tree of `leaves` (keys `tag`), with host `host` cut off while its
/// worker computes: the client, the tree's root, when the link went down,
/// and how long the scheduler took to declare the host dead.
async fn cut_mid_run(net: &mut Net, host: usize, tag: &str, leaves: usize) -> (Client, TaskFuture, Instant, Duration) {
    let address = net.cluster("3s");
    let client = client(&address).await;
    workers_are(&client, &["h1", "h2", "h3"], Duration::from_secs(20)).await;
    let futures = client.compute(slow_tree(tag, leaves, 5)).await.unwrap();
    busy(&client, &format!("h{host}")).await;
    net.link(host, false);
    let cut = Instant::now();
    let others: Vec<String> = (1..4).filter(|&i| i != host).map(|i| format!("h{i}")).collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    // Declared dead within the heartbeat timeout (3 s), plus one liveness
    // check (a quarter of it) and slack for this busy machine.
    let lost_after = workers_are(&client, &others, Duration::from_secs(10)).await;
    let root = futures.into_iter().next().unwrap();
    assert_eq!(
        root.result().await.unwrap().decode::<i64>().unwrap(),
        (leaves * (leaves - 1) / 2) as i64
    );
    (client, root, cut, lost_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_mid_run_is_declared_dead_and_its_results_recomputed() {
    let Some(mut net) = Net::new(4) else { return };
    let (_, _, _, lost_after) = cut_mid_run(&mut net, 1, "cut", 600).await;
    println!("cut-off host declared dead after {lost_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_host_rejoins_when_healed_and_answers_stay_right() {
    let Some(mut net) = Net::new(4) else { return };
    let leaves = 400;
    let (client, _, partitioned, _) = cut_mid_run(&mut net, 2, "part", leaves).await;
    // Healed after 30 s: the host's worker finds its old connection dead,
    // registers afresh, and works again; nothing it held from before the
    // partition is taken for current.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(partitioned.elapsed())).await;
    net.link(2, true);
    let rejoined = workers_are(&client, &["h1", "h2", "h3"], Duration::from_secs(60)).await;
    println!("healed host rejoined {rejoined:?} after its link came back");
    let again = client.compute(slow_tree("part", leaves, 1)).await.unwrap();
    assert_eq!(
        again[0].result().await.unwrap().decode::<i64>().unwrap(),
        (leaves * (leaves - 1) / 2) as i64,
        "same keys as before the partition"
    );
    let leaves = 3000;
    assert_eq!(
        root(&client, graphs::tree("after", leaves)).await.unwrap(),
        (leaves * (leaves - 1) / 2) as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_that_drop_one_packet_in_a_hundred_and_lag_still_give_right_answers() {
    if Command::new("nft").arg("--version").output().is_err() {
        println!("skipped: no `nft` here (ci/setup.sh installs nftables)");
        return;
    }
    let Some(mut net) = Net::new(4) else { return };
    // Every host drops 1% of the packets it receives.
    let rules = "table inet lossy {\n chain input {\n  type filter hook input priority 0;\n  counter\n  numgen random mod 100 == 0 counter drop\n }\n}\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lossy.nft");
    std::fs::write(&file, rules).unwrap();
    for ns in &net.hosts {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Workers reach the scheduler through a relay on the bridge that adds
    // 20 ms each way; results move between workers directly.
    let address = net.scheduler("10s");
    let relay_at = format!("{}254:8787", net.prefix);
    let relay = delaying_relay(&relay_at, address.replace("tcp://", ""), Duration::from_millis(20)).await;
    net.workers(&format!("tcp://{relay_at}"));
    let client = client(&address).await;
    workers_are(&client, &["h1", "h2", "h3"], Duration::from_secs(30)).await;
    let leaves = 2000;
    assert_eq!(
        root(&client, graphs::tree("lossy", leaves)).await.unwrap(),
        (leaves * (leaves - 1) / 2) as i64
    );
    // Results of a few MiB each cross the lossy links too.
    let big = client.compute(slow_tree("lossy-slow", 200, 2)).await.unwrap();
    assert_eq!(big[0].result().await.unwrap().decode::<i64>().unwrap(), 200 * 199 / 2);
    relay.abort();
    // The rule did drop packets: the proof that the links were lossy.
    let (mut seen, mut dropped) = (0u64, 0u64);
    for ns in &net.hosts {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "list", "table", "inet", "lossy"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        // Two counters: every packet, then those dropped.
        let counts: Vec<u64> = listing
            .split("packets ")
            .skip(1)
            .filter_map(|rest| rest.split(' ').next()?.parse().ok())
            .collect();
        seen += counts.first().copied().unwrap_or(0);
        dropped += counts.get(1).copied().unwrap_or(0);
    }
    println!("dropped {dropped} of {seen} packets");
    assert!(dropped > 0, "the 1% rule dropped nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_across_hosts_and_a_worker_with_a_foreign_certificate_is_refused() {
    let Some(mut net) = Net::new(4) else { return };
    let dir = tempfile::tempdir().unwrap();
    // Certificates valid for every host's address.
    let hosts: Vec<String> = (0..4).map(|i| net.addr(i)).collect();
    let hosts = hosts.join(",");
    for pki in ["pki", "foreign"] {
        let out = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args([
                "tls",
                "generate",
                dir.path().join(pki).to_str().unwrap(),
                "--hosts",
                &hosts,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let file = |pki: &str, name: &str| dir.path().join(pki).join(name).to_str().unwrap().to_string();
    let tls = |pki: &str, role: &str| {
        vec![
            "--tls-ca-file".to_string(),
            file("pki", "ca.pem"),
            "--tls-cert".to_string(),
            file(pki, &format!("{role}.pem")),
            "--tls-key".to_string(),
            file(pki, &format!("{role}.key")),
        ]
    };
    let address = format!("tls://{}:8786", net.addr(0));
    let mut args = vec!["scheduler".to_string(), "--listen".to_string(), address.clone()];
    args.extend(tls("pki", "scheduler"));
    net.spawn(0, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    for (host, pki) in [(1, "pki"), (2, "pki"), (3, "foreign")] {
        let name = format!("h{host}");
        let mut args = vec!["worker".to_string(), address.clone(), "--name".to_string(), name];
        args.extend(tls(pki, "worker"));
        net.spawn(host, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    }
    let config = Config {
        tls: Some(
            weft::transport::TlsConfig::load(&weft::transport::TlsFiles {
                ca: file("pki", "ca.pem").into(),
                cert: Some(file("pki", "client.pem").into()),
                key: Some(file("pki", "client.key").into()),
                require_client_cert: true,
            })
            .unwrap(),
        ),
        ..Config::default()
    };
    let client = Client::connect(&address, &config).await.unwrap();
    workers_are(&client, &["h1", "h2"], Duration::from_secs(20)).await;
    // The worker whose certificate another CA signed never registers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    workers_are(&client, &["h1", "h2"], Duration::from_secs(1)).await;
    for worker in client.workers().await.unwrap() {
        assert!(worker.address.starts_with("tls://10.213."), "{worker:?}");
    }
    let leaves = 500;
    assert_eq!(
        root(&client, graphs::tree("tls-hosts", leaves)).await.unwrap(),
        (leaves * (leaves - 1) / 2) as i64
    );
}

/// Issue 15 item 4 across hosts: the scheduler's process is killed in its
/// namespace while a 1 s task that needs six finished 5 s leaves runs on
/// one of three hosts, and started again there on the same address; the
/// workers and the client (same futures) reconnect, the leaves are
/// claimed, not run again (that would take 10 s more on the three
/// single-threaded workers), and the answer is right 1-2 s after the
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_killed_and_restarted_in_its_namespace_resumes_the_run() {
    let Some(mut net) = Net::new(4) else { return };
    let address = net.scheduler("5s");
    let scheduler = net.procs.len() - 1;
    net.workers(&address);
    let client = client(&address).await;
    workers_are(&client, &["h1", "h2", "h3"], Duration::from_secs(20)).await;
    let leaves = 6;
    let futures = common::leaves_done_last_running(&client, "ns-resume", leaves).await;
    let _ = net.procs[scheduler].kill();
    let _ = net.procs[scheduler].wait();
    let restarted = Instant::now();
    net.spawn(
        0,
        &["scheduler", "--listen", &address],
        &[("WEFT_SCHEDULER_HEARTBEAT_TIMEOUT", "5s")],
    );
    let last = tokio::time::timeout(Duration::from_secs(60), futures[0].result())
        .await
        .expect("the run resumed")
        .unwrap();
    let recovery = restarted.elapsed();
    assert_eq!(last.decode::<i64>().unwrap(), (leaves * (leaves - 1) / 2) as i64);
    println!("scheduler restart to result across hosts: {recovery:?} (the last task alone takes 1 s)");
    assert!(
        recovery < Duration::from_secs(8),
        "the leaves were computed again: {recovery:?}"
    );
}
