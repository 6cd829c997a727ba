//! The array workloads of `weft bench` (`../shared/peers`): `array_sum`
//! (`x.sum()`), `array_add_t` (`(x + x.T).sum()`) and `matmul`
//! (`(y @ y.T).sum()`), with `x`, `y` random `n x n` float64 in
//! `chunk x chunk` blocks generated on the workers inside the timing, and
//! the peers' checks; and `rechunk` (`x.rechunk((n, chunk)).sum()`, `x` in
//! row blocks of `chunk` rows; the peers have no such workload), checked
//! against `x.sum()`.

use std::sync::Arc;
use std::time::Instant;

use weft_runtime::{Client, LocalCluster, LocalOptions, WorkerMode};

use crate::array::Array;
use crate::create::random;
use crate::error::{ArrayError, Result};

/// The workloads this module runs.
pub const WORKLOADS: [&str; 4] = ["array_sum", "array_add_t", "matmul", "rechunk"];

/// The peers' default `(n, chunk)` of a workload.
pub fn defaults(workload: &str) -> (usize, usize) {
    if workload == "matmul" {
        (8_000, 1_000)
    } else if workload == "rechunk" {
        (8_000, 200)
    } else {
        (20_000, 2_000)
    }
}

/// Work per repetition and its unit, as the peers count them.
pub fn work(workload: &str, n: usize) -> (f64, &'static str) {
    if workload == "matmul" {
        (2.0 * (n as f64).powi(3), "flop")
    } else {
        ((n * n) as f64, "elements")
    }
}

/// A running array workload: its cluster and client.
pub struct ArrayBench {
    workload: String,
    n: usize,
    chunk: usize,
    cluster: LocalCluster,
    client: Client,
    last: Option<(u64, f64)>,
}

fn seed(workload: &str, tag: &str) -> u64 {
    // FNV-1a of "{workload}-{tag}", as the peers derive theirs from a hash.
    format!("{workload}-{tag}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
}

impl ArrayBench {
    /// Starts `workers` workers of `nthreads` threads: worker processes
    /// (`mode`'s program, or this executable, which must register the
    /// array's ops in its `worker_main`), or in this process with the
    /// array's ops.
    pub async fn start(
        workload: &str,
        (n, chunk): (usize, usize),
        workers: usize,
        nthreads: usize,
        mode: WorkerMode,
    ) -> Result<ArrayBench> {
        if !WORKLOADS.contains(&workload) {
            return Err(ArrayError::Invalid(format!("unknown array workload {workload:?}")));
        }
        let mut options = LocalOptions::for_this_machine();
        options.workers = workers;
        options.nthreads = nthreads;
        options.mode = mode;
        options.registry = Arc::new(crate::registry());
        if workers > 0 {
            options.memory.limit = weft_runtime::store::machine_memory() / workers as u64;
        }
        let cluster = LocalCluster::start(options).await?;
        let client = cluster.client().await?;
        client.set_progress(false);
        Ok(ArrayBench {
            workload: workload.to_string(),
            n,
            chunk,
            cluster,
            client,
            last: None,
        })
    }

    /// The worker processes' ids (none for in-process workers).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.cluster.worker_pids()
    }

    fn input(&self, seed: u64, n: usize) -> Result<Array> {
        let rows = if self.workload == "rechunk" { n } else { self.chunk };
        random::random(seed, &[n, n], &[self.chunk, rows])
    }

    fn expr(&self, x: &Array) -> Result<Array> {
        match self.workload.as_str() {
            "array_sum" => x.sum(None),
            "array_add_t" => (x + &x.t())?.sum(None),
            "rechunk" => x.rechunk(&[x.shape()[0], self.chunk])?.sum(None),
            _ => x.matmul(&x.t())?.sum(None),
        }
    }

    async fn scalar(&self, a: &Array) -> Result<f64> {
        let host = a.to_host(&self.client).await?;
        host.to_f64()
            .first()
            .copied()
            .ok_or_else(|| ArrayError::Data("an empty result".into()))
    }

    /// One untimed run at a small size (`min(n, 2 * chunk)`, as the peers).
    pub async fn warm(&mut self) -> Result<()> {
        let x = self.input(seed(&self.workload, "warm"), self.n.min(2 * self.chunk))?;
        self.scalar(&self.expr(&x)?).await.map(drop)
    }

    /// One timed repetition: builds the plan and computes it; seconds.
    pub async fn rep(&mut self, i: usize) -> Result<f64> {
        let started = Instant::now();
        let seed = seed(&self.workload, &format!("rep{i}"));
        let x = self.input(seed, self.n)?;
        let r = self.scalar(&self.expr(&x)?).await?;
        let elapsed = started.elapsed().as_secs_f64();
        self.last = Some((seed, r));
        Ok(elapsed)
    }

    /// The peers' check of the last repetition: `"ok"` or a mismatch.
    pub async fn check(&self) -> Result<String> {
        let Some((seed, r)) = self.last else {
            return Ok("not run".into());
        };
        let n = self.n as f64;
        let ok_if = |ok: bool, want: f64| {
            if ok {
                "ok".to_string()
            } else {
                format!("mismatch: got {r}, expected {want}")
            }
        };
        if self.workload == "array_sum" {
            // E = n^2 / 2, sd = n / sqrt(12); allow 8 sd.
            return Ok(ok_if((r - n * n / 2.0).abs() <= 8.0 * n / 12f64.sqrt(), n * n / 2.0));
        }
        // Independent identities: sum(x + x.T) = 2 sum(x); a rechunk keeps
        // the sum; sum(y @ y.T) = |column sums of y|^2.
        let x = self.input(seed, self.n)?;
        let want = if self.workload == "array_add_t" {
            2.0 * self.scalar(&x.sum(None)?).await?
        } else if self.workload == "rechunk" {
            self.scalar(&x.sum(None)?).await?
        } else {
            self.scalar(&x.sum(Some(&[0]))?.powf(2.0)?.sum(None)?).await?
        };
        Ok(ok_if((r - want).abs() <= 1e-9 * r.abs().max(want.abs()).max(1.0), want))
    }

    /// Stops the cluster.
    pub async fn stop(self) {
        drop(self.client);
        self.cluster.stop().await;
    }
}
