//! The dataframe workloads of `../shared/peers` (`groupby`, `join`,
//! `shuffle`, `tpch_q1`..`tpch_q10`) as `weft bench` runs them: the same
//! parameters, work and checks as the peers' scripts.

use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use std::sync::Arc;

use crate::error::{FrameError, Result};
use crate::expr::col;
use crate::frame::{Frames, LazyFrame};
use crate::join::JoinType;

/// A workload and its parameters (defaults filled in).
#[derive(Debug, Clone)]
pub struct Workload {
    /// Its name, as the peers spell it.
    pub name: String,
    /// Rows of the left frame (dataframe workloads).
    pub rows: u64,
    /// Partitions of the left frame.
    pub parts: usize,
    /// Distinct keys.
    pub keys: i64,
    /// Rows of the join's right frame.
    pub right_rows: u64,
    /// TPC-H scale factor.
    pub sf: f64,
}

impl Workload {
    /// The workload `name` with the peers' defaults where a value is
    /// `None`; `None` for names this module does not run.
    pub fn new(
        name: &str,
        rows: Option<u64>,
        parts: Option<usize>,
        keys: Option<i64>,
        right_rows: Option<u64>,
        sf: Option<f64>,
    ) -> Option<Workload> {
        let known = matches!(name, "groupby" | "join" | "shuffle") || crate::tpch::QUERIES.contains(&name);
        known.then(|| Workload {
            name: name.into(),
            rows: rows.unwrap_or(20_000_000),
            parts: parts.unwrap_or(16),
            keys: keys.unwrap_or(100_000),
            right_rows: right_rows.unwrap_or(100_000),
            sf: sf.unwrap_or(1.0),
        })
    }

    /// A TPC-H query.
    pub fn is_tpch(&self) -> bool {
        self.name.starts_with("tpch_")
    }

    /// The parameters as the JSON line's `params` lists them:
    /// (name, value) pairs.
    pub fn params(&self) -> Vec<(&'static str, f64)> {
        if self.is_tpch() {
            return vec![("sf", self.sf)];
        }
        let mut p = vec![
            ("rows", self.rows as f64),
            ("parts", self.parts as f64),
            ("keys", self.keys as f64),
        ];
        if self.name == "join" {
            p.push(("right_rows", self.right_rows as f64));
        }
        p
    }

    /// Work per repetition (rows; lineitem rows for TPC-H).
    pub fn work(&self) -> u64 {
        if self.is_tpch() {
            (6_001_215.0 * self.sf) as u64
        } else {
            self.rows
        }
    }

    /// The TPC-H data directory: `${WEFT_TPCH_DIR:-~/.cache/weft-peers/tpch}/sf{sf}`.
    pub fn tpch_dir(&self) -> String {
        let base = std::env::var("WEFT_TPCH_DIR").unwrap_or_else(|_| {
            format!(
                "{}/.cache/weft-peers/tpch",
                std::env::var("HOME").unwrap_or_else(|_| ".".into())
            )
        });
        let sf = if self.sf.fract() == 0.0 {
            format!("{}", self.sf as u64)
        } else {
            format!("{}", self.sf)
        };
        format!("{base}/sf{sf}")
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Seconds of each timed repetition.
    pub times: Vec<f64>,
    /// `ok`, a mismatch, or the TPC-H checksum.
    pub check: String,
    /// The answer agrees with the reference (TPC-H: where one is known).
    pub agrees: bool,
}

/// Rows of partition `i` of `parts` (the peers' `part_rows`).
fn part_rows(i: usize, rows: u64, parts: usize) -> u64 {
    rows / parts as u64 + u64::from((i as u64) < rows % parts as u64)
}

/// Partition `i` of the join's right frame: keys `lo..hi`, random `rvalue`.
fn right_part(i: u64, right_rows: u64, parts: u64) -> RecordBatch {
    let (lo, hi) = (i * right_rows / parts, (i + 1) * right_rows / parts);
    let mut rng = fastrand::Rng::with_seed(1_000_000 + i);
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, false),
            Field::new("rvalue", DataType::Float64, false),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(lo as i64..hi as i64)),
            Arc::new(Float64Array::from_iter_values((lo..hi).map(|_| rng.f64()))),
        ],
    )
    .expect("two columns of the schema's types and one length")
}

/// Expected groups, value total and join matches, from regenerating the data here.
fn expected(w: &Workload) -> (u64, f64, u64) {
    let mut seen = vec![false; w.keys.max(1) as usize];
    let (mut total, mut joined) = (0.0, 0u64);
    for i in 0..w.parts {
        let b = crate::ops::random_batch(part_rows(i, w.rows, w.parts), w.keys, i as u64);
        for &k in b.column(0).as_primitive::<Int64Type>().values() {
            seen[k as usize] = true;
            joined += u64::from((k as u64) < w.right_rows);
        }
        total += b.column(1).as_primitive::<Float64Type>().values().iter().sum::<f64>();
    }
    (seen.iter().filter(|s| **s).count() as u64, total, joined)
}

/// Runs the workload: data prepared (persisted, untimed), one warm-up,
/// `reps` timed repetitions, the check on the last result.
pub async fn measure(frames: &Frames, w: &Workload, reps: usize) -> Result<Outcome> {
    if w.is_tpch() {
        let dir = w.tpch_dir();
        if !std::path::Path::new(&dir).join(".complete").exists() {
            return Err(FrameError::file(
                &dir,
                "no TPC-H data: generate it with `python ../shared/peers/tpch.py SF`",
            ));
        }
        let run = || async {
            let q = crate::tpch::query(frames, &dir, &w.name)?;
            q.collect().await
        };
        let (times, last) = timed(reps, run).await?;
        let check = match &last {
            Some(b) => crate::tpch::checksum(b)?,
            None => "no repetitions".into(),
        };
        let agrees = crate::tpch::reference(&w.name, w.sf).is_none_or(|r| crate::tpch::same_answer(&check, r, 5e-5));
        return Ok(Outcome { times, check, agrees });
    }
    let left = frames.random(w.rows, w.parts, w.keys).persist().await?;
    let right: Option<LazyFrame> = if w.name == "join" {
        let parts = (0..4).map(|i| right_part(i, w.right_rows, 4)).collect::<Vec<_>>();
        Some(frames.from_batches(parts, 4).await?)
    } else {
        None
    };
    let (groups, total, joined) = expected(w);
    enum Answer {
        Rows(u64),
        Groups(RecordBatch),
    }
    let run = || async {
        Ok::<_, FrameError>(match w.name.as_str() {
            "groupby" => Answer::Groups(
                left.group_by([col("key")])
                    .agg([col("value").sum().alias("value")])
                    .collect()
                    .await?,
            ),
            "join" => Answer::Rows(
                left.join(
                    right.as_ref().expect("a right frame"),
                    &["key"],
                    &["key"],
                    JoinType::Inner,
                )
                .count()
                .await?,
            ),
            _ => Answer::Rows(left.shuffle([col("key")], w.parts).count().await?),
        })
    };
    let (times, last) = timed(reps, run).await?;
    let check = match last {
        None => "no repetitions".to_string(),
        Some(Answer::Rows(n)) => {
            let want = if w.name == "join" { joined } else { w.rows };
            if n == want {
                "ok".into()
            } else {
                format!("mismatch: got {n}, expected {want}")
            }
        }
        Some(Answer::Groups(b)) => {
            let got_total: f64 = b.column(1).as_primitive::<Float64Type>().values().iter().sum();
            let close = (got_total - total).abs() <= 1e-9 * got_total.abs().max(total.abs()).max(1.0);
            if b.num_rows() as u64 == groups && close {
                "ok".into()
            } else {
                format!(
                    "mismatch: got ({}, {got_total}), expected ({groups}, {total})",
                    b.num_rows()
                )
            }
        }
    };
    let agrees = check == "ok";
    Ok(Outcome { times, check, agrees })
}

/// One untimed warm-up run, then `reps` timed ones: their seconds and the
/// last answer (`None` when `reps` is 0).
async fn timed<T, F, Fut>(reps: usize, run: F) -> Result<(Vec<f64>, Option<T>)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    run().await?;
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..reps {
        let t = Instant::now();
        last = Some(run().await?);
        times.push(t.elapsed().as_secs_f64());
    }
    Ok((times, last))
}
