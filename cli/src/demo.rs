//! `weft demo`: the README's main job. A local cluster runs a map over
//! 100,000 tasks and a tree reduction over 65,536 leaves, sums values the
//! client scattered to the workers, checks every answer and prints how fast
//! it went. On a terminal the long waits show a progress bar on stderr
//! (`WEFT_PROGRESS=0` hides it).

use std::time::Instant;

use anyhow::{Result, ensure};
use weft::{LocalCluster, LocalOptions, TaskSpec, Value, graphs, ops};

/// Runs the demo; `dashboard` serves the cluster's dashboard (and says
/// where) once the cluster is up.
pub async fn run<F, D>(
    options: LocalOptions,
    dashboard: impl FnOnce(Option<weft_runtime::observe::Observer>) -> F,
) -> Result<()>
where
    F: std::future::Future<Output = Result<Option<D>>>,
{
    let started = Instant::now();
    let devices = match options.gpus {
        0 => match weft::gpu::probe_cuda().reason {
            Some(reason) => format!("CPU only: {reason}"),
            None => "CPU only".to_string(),
        },
        n => format!("{n} of them on a GPU each"),
    };
    println!(
        "starting a local cluster: {} workers x {} threads ({devices})",
        options.workers, options.nthreads
    );
    let cluster = LocalCluster::start(options).await?;
    // Kept alive until the demo ends.
    let _dashboard = dashboard(cluster.observer()).await?;
    let client = cluster.client().await?;
    println!(
        "cluster up at {} in {:.2} s",
        cluster.address(),
        started.elapsed().as_secs_f64()
    );

    let n = 100_000;
    println!("map: {n} tasks, each returning its index; gathering every result ...");
    let started = Instant::now();
    let futures = client.compute(graphs::map("demo-map", n)).await?;
    let values = client.gather(&futures).await?;
    let seconds = started.elapsed().as_secs_f64();
    let mut sum = 0i64;
    for value in &values {
        sum += value.decode::<i64>().map_err(anyhow::Error::msg)?;
    }
    let expected = (n as i64) * (n as i64 - 1) / 2;
    ensure!(sum == expected, "map: sum {sum}, expected {expected}");
    println!(
        "map: sum of results = {sum} (correct) in {seconds:.2} s, {:.0} tasks/s",
        n as f64 / seconds
    );
    drop(futures);

    let leaves = 65_536;
    println!(
        "tree: binary sum reduction over {leaves} leaves ({} tasks) ...",
        2 * leaves - 1
    );
    let started = Instant::now();
    let futures = client.compute(graphs::tree("demo-tree", leaves)).await?;
    let root = client.gather(&futures).await?[0]
        .decode::<i64>()
        .map_err(anyhow::Error::msg)?;
    let seconds = started.elapsed().as_secs_f64();
    let expected = (leaves as i64) * (leaves as i64 - 1) / 2;
    ensure!(root == expected, "tree: root {root}, expected {expected}");
    println!(
        "tree: root = {root} (correct) in {seconds:.2} s, {:.0} tasks/s",
        (2 * leaves - 1) as f64 / seconds
    );
    drop(futures);

    let n = 10_000i64;
    println!("scatter: {n} values pushed to the workers, summed by one task ...");
    let started = Instant::now();
    let values = (0..n).map(|i| Value::encode(&i)).collect::<Result<Vec<_>, _>>();
    let scattered = client.scatter(values.map_err(anyhow::Error::msg)?).await?;
    let keys = scattered.iter().map(|f| f.key().clone()).collect();
    let args = ops::args(&0i64).map_err(anyhow::Error::msg)?;
    let total = client
        .submit(TaskSpec::new(client.unique_key("demo-scatter-sum"), "sum", args, keys))
        .await?;
    let total = total.result().await?.decode::<i64>().map_err(anyhow::Error::msg)?;
    let expected = n * (n - 1) / 2;
    ensure!(total == expected, "scatter: sum {total}, expected {expected}");
    println!(
        "scatter: sum = {total} (correct) in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    drop(scattered);
    drop(client);
    cluster.stop().await;
    Ok(())
}
