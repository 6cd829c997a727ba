//! `weft demo`: the README's main job. A local cluster runs a map over
//! 100,000 tasks and a tree reduction over 65,536 leaves, sums values the
//! client scattered to the workers, then a dataframe pipeline (group-by
//! over rows made on the workers) and an array pipeline (a fused
//! `(x + x.T).sum()`), checks every answer and prints how fast it went. On a terminal the long waits show a progress bar on stderr
//! (`WEFT_PROGRESS=0` hides it).

use std::time::Instant;

use anyhow::{Result, ensure};
use arrow_array::cast::AsArray;
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

    dataframe(&client).await?;
    array(&client).await?;
    drop(client);
    cluster.stop().await;
    Ok(())
}

/// A dataframe made on the workers, grouped and aggregated, sorted and
/// collected; then the same for a filtered part of it, which must agree
/// with the first answer row by row.
async fn dataframe(client: &weft::Client) -> Result<()> {
    use weft::frame::{Frames, col, len, lit};
    let (rows, parts, keys) = (4_000_000u64, 8, 1_000i64);
    println!("dataframe: {rows} rows (key, value) in {parts} partitions made on the workers; group by key ...");
    let started = Instant::now();
    let frames = Frames::new(client.clone());
    let data = frames.random(rows, parts, keys);
    let by_key = |frame: &weft::frame::LazyFrame| {
        frame
            .group_by([col("key")])
            .agg([col("value").sum().alias("total"), len().alias("rows")])
            .sort([col("key")], &[false])
    };
    let all = by_key(&data).collect().await?;
    let seconds = started.elapsed().as_secs_f64();
    let counts = all
        .column_by_name("rows")
        .and_then(|c| c.as_primitive_opt::<arrow_array::types::Int64Type>())
        .ok_or_else(|| anyhow::anyhow!("no int64 column rows in {:?}", all.schema()))?
        .values();
    ensure!(
        all.num_rows() as i64 == keys,
        "dataframe: {} groups, expected {keys}",
        all.num_rows()
    );
    let held: i64 = counts.iter().sum();
    ensure!(
        held as u64 == rows,
        "dataframe: the groups hold {held} rows, expected {rows}"
    );
    println!(
        "dataframe: {keys} groups holding all {rows} rows (correct) in {seconds:.2} s, {:.1}M rows/s",
        rows as f64 / seconds / 1e6
    );
    let few = by_key(&data.filter(col("key").lt(lit(10i64)))).collect().await?;
    ensure!(
        few == all.slice(0, 10),
        "dataframe: filtering first changed the groups' answers"
    );
    println!("dataframe: filter then group by agrees with group by then filter (correct)");
    Ok(())
}

/// A random array made on the workers, `(x + x.T).sum()` as one fused task
/// per chunk and a tree, checked against twice `x.sum()`.
async fn array(client: &weft::Client) -> Result<()> {
    use weft::array::random::random;
    let (n, chunk) = (8_000usize, 1_000usize);
    println!("array: random {n} x {n} float64 in {chunk} x {chunk} chunks; (x + x.T).sum() ...");
    let started = Instant::now();
    let x = random(7, &[n, n], &[chunk, chunk])?;
    let both = (&x + &x.t())?.sum(None)?.to_host(client).await?.to_f64()[0];
    let seconds = started.elapsed().as_secs_f64();
    let once = x.sum(None)?.to_host(client).await?.to_f64()[0];
    ensure!(
        (both - 2.0 * once).abs() <= 1e-9 * both.abs(),
        "array: (x + x.T).sum() = {both}, twice x.sum() = {}",
        2.0 * once
    );
    println!(
        "array: (x + x.T).sum() = {both:.1} = 2 x.sum() (correct) in {seconds:.2} s, {:.0}M elements/s",
        (n * n) as f64 / seconds / 1e6
    );
    Ok(())
}
