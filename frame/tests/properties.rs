//! Property tests: random frames (nulls, empty partitions, skewed keys,
//! integer and utf8 keys, several partitions) through filter, group-by,
//! join, sort and distinct on a local cluster, each compared with the
//! same operation done here on all the rows at once with plain loops.
//! Seeds are fixed, so a failure names a case that reruns the same way.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use weft_frame::{Expr, Frames, JoinType, LazyFrame, PlanOptions, col, len, lit};

mod common;

/// Cases per property (each a fresh random frame).
const CASES: u64 = 24;

/// One cell of a result, comparable across the cluster's answer and the
/// reference (floats by their total order; the data keeps sums exact).
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
}

impl Eq for Cell {}

impl Ord for Cell {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use Cell::*;
        let rank = |c: &Cell| match c {
            Null => 0,
            Int(_) => 1,
            Float(_) => 2,
            Str(_) => 3,
        };
        match (self, other) {
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Str(a), Str(b)) => a.cmp(b),
            (a, b) => rank(a).cmp(&rank(b)),
        }
    }
}

impl PartialOrd for Cell {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl From<Option<i64>> for Cell {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Cell::Null, Cell::Int)
    }
}

impl From<Option<f64>> for Cell {
    fn from(v: Option<f64>) -> Self {
        v.map_or(Cell::Null, Cell::Float)
    }
}

impl From<Option<&str>> for Cell {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Cell::Null, |s| Cell::Str(s.to_string()))
    }
}

type Table = Vec<Vec<Cell>>;

/// Which rows a filter keeps, by a loop.
type Keep = Box<dyn Fn(&Row) -> bool>;

/// The group key of a row.
type KeyOf = fn(&Row) -> Vec<Cell>;

/// The rows of `batch` as cells (the column types the tests produce).
fn cells(batch: &RecordBatch) -> Table {
    (0..batch.num_rows())
        .map(|row| {
            batch
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(row) {
                        return Cell::Null;
                    }
                    match c.data_type() {
                        DataType::Int64 => Cell::Int(c.as_primitive::<Int64Type>().value(row)),
                        DataType::Int32 => Cell::Int(c.as_primitive::<Int32Type>().value(row).into()),
                        DataType::Float64 => Cell::Float(c.as_primitive::<Float64Type>().value(row)),
                        DataType::Utf8 => Cell::Str(c.as_string::<i32>().value(row).to_string()),
                        other => panic!("a result column of type {other}"),
                    }
                })
                .collect()
        })
        .collect()
}

fn sorted(mut t: Table) -> Table {
    t.sort();
    t
}

/// One row of the random frame: `k` a skewed integer key, `s` a utf8 key,
/// `v` an integer value, `x` an integer-valued float (sums stay exact).
#[derive(Clone, Debug)]
struct Row {
    k: Option<i64>,
    s: Option<&'static str>,
    v: Option<i64>,
    x: Option<f64>,
}

impl Row {
    fn cells(&self) -> Vec<Cell> {
        vec![self.k.into(), self.s.into(), self.v.into(), self.x.into()]
    }
}

const WORDS: [&str; 7] = ["", "a", "b", "ab", "zeta", "émile", "a\u{0}b"];

/// A random frame: its partitions' rows (some partitions empty).
struct Case {
    seed: u64,
    parts: Vec<Vec<Row>>,
}

impl Case {
    fn new(seed: u64) -> Case {
        let mut rng = fastrand::Rng::with_seed(seed);
        let nparts = rng.usize(1..7);
        let keys = [1, 3, 20, 500][rng.usize(0..4)];
        let null_rate = [0, 10, 40][rng.usize(0..3)];
        let maybe = |rng: &mut fastrand::Rng| rng.u32(0..100) >= null_rate;
        let parts = (0..nparts)
            .map(|_| {
                let rows = match rng.u8(0..8) {
                    0 | 1 => 0,
                    2 => rng.usize(1000..3000),
                    _ => rng.usize(0..300),
                };
                (0..rows)
                    .map(|_| Row {
                        // Skewed: half the rows share key 0.
                        k: maybe(&mut rng).then(|| if rng.bool() { 0 } else { rng.i64(0..keys) }),
                        s: maybe(&mut rng).then(|| WORDS[rng.usize(0..WORDS.len())]),
                        v: maybe(&mut rng).then(|| rng.i64(-1000..1000)),
                        x: maybe(&mut rng).then(|| f64::from(rng.i32(-500..500))),
                    })
                    .collect()
            })
            .collect();
        Case { seed, parts }
    }

    fn rows(&self) -> Vec<Row> {
        self.parts.iter().flatten().cloned().collect()
    }

    /// The frame on the cluster: one partition per part, in order.
    async fn frame(&self, frames: &Frames) -> LazyFrame {
        let mut parts = Vec::new();
        for rows in &self.parts {
            parts.push(frames.from_batches(vec![batch(rows)], 1).await.unwrap());
        }
        parts[0].concat(&parts[1..])
    }
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
        Field::new("x", DataType::Float64, true),
    ]))
}

fn batch(rows: &[Row]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.k))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.s))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.v))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.x))),
        ],
    )
    .unwrap()
}

async fn collect(frame: &LazyFrame, what: &str, seed: u64) -> RecordBatch {
    match frame.collect().await {
        Ok(b) => b,
        Err(e) => panic!("case {seed}, {what}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_keep_the_rows_a_loop_keeps() {
    let (cluster, frames) = common::cluster().await;
    for seed in 0..CASES {
        let case = Case::new(seed);
        let frame = case.frame(&frames).await;
        let rows = case.rows();
        // (predicate, what it keeps): Kleene logic, a row is kept where true.
        let t = [-500, 0, 500][seed as usize % 3];
        let filters: Vec<(Expr, Keep)> = vec![
            (col("v").gt(lit(t)), Box::new(move |r| r.v.is_some_and(|v| v > t))),
            (
                col("v").lt_eq(lit(t)).or(col("s").eq(lit("a"))),
                Box::new(move |r| r.v.is_some_and(|v| v <= t) || r.s == Some("a")),
            ),
            (
                col("k").is_null().and(col("x").gt_eq(lit(0.0))),
                Box::new(|r| r.k.is_none() && r.x.is_some_and(|x| x >= 0.0)),
            ),
            (
                col("s").starts_with("a").and(!col("k").eq(lit(0))),
                Box::new(|r| r.s.is_some_and(|s| s.starts_with('a')) && r.k.is_some_and(|k| k != 0)),
            ),
            (
                (col("v") + col("k")).gt(col("x")),
                Box::new(|r| match (r.v, r.k, r.x) {
                    (Some(v), Some(k), Some(x)) => (v + k) as f64 > x,
                    _ => false,
                }),
            ),
        ];
        for (i, (predicate, keep)) in filters.into_iter().enumerate() {
            let what = format!("filter {i} {predicate}");
            let got = sorted(cells(&collect(&frame.filter(predicate.clone()), &what, seed).await));
            let want = sorted(rows.iter().filter(|r| keep(r)).map(Row::cells).collect());
            assert_eq!(got, want, "case {seed}, {what}");
            let n = frame.filter(predicate).count().await.unwrap();
            assert_eq!(n as usize, want.len(), "case {seed}, count of {what}");
        }
    }
    drop(frames);
    cluster.stop().await;
}

/// The aggregates of a group-by, in this order; `n_unique` (last) does
/// not decompose into partial results, so without it the group-by runs
/// in two phases and with it on whole groups.
fn aggregates(n_unique: bool) -> Vec<Expr> {
    let mut aggs = vec![
        col("v").sum().alias("sum_v"),
        col("x").mean().alias("mean_x"),
        col("v").count().alias("count_v"),
        len().alias("rows"),
        col("v").min().alias("min_v"),
        col("x").max().alias("max_x"),
        col("s").min().alias("min_s"),
    ];
    if n_unique {
        aggs.push(col("v").n_unique().alias("distinct_v"));
    }
    aggs
}

/// [`aggregates`] of the rows of one group, by loops.
fn reference_aggregates(rows: &[&Row], n_unique: bool) -> Vec<Cell> {
    let vs: Vec<i64> = rows.iter().filter_map(|r| r.v).collect();
    let xs: Vec<f64> = rows.iter().filter_map(|r| r.x).collect();
    let distinct: BTreeSet<Option<i64>> = rows.iter().map(|r| r.v).collect();
    let mut cells = vec![
        (!vs.is_empty()).then(|| vs.iter().sum::<i64>()).into(),
        (!xs.is_empty())
            .then(|| xs.iter().sum::<f64>() / xs.len() as f64)
            .into(),
        Cell::Int(vs.len() as i64),
        Cell::Int(rows.len() as i64),
        vs.iter().min().copied().into(),
        xs.iter().copied().reduce(f64::max).into(),
        rows.iter().filter_map(|r| r.s).min().into(),
    ];
    if n_unique {
        cells.push(Cell::Int(distinct.len() as i64));
    }
    cells
}

/// The reference group-by: key cells of each row, then the aggregates.
fn reference_group_by(rows: &[Row], key: impl Fn(&Row) -> Vec<Cell>, n_unique: bool) -> Table {
    let mut groups: BTreeMap<Vec<Cell>, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        groups.entry(key(r)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(mut k, g)| {
            k.extend(reference_aggregates(&g, n_unique));
            k
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_bys_match_a_loop_by_int_utf8_and_two_keys() {
    let (cluster, frames) = common::cluster().await;
    let keyings: [(Vec<Expr>, KeyOf); 4] = [
        (vec![col("k")], |r| vec![r.k.into()]),
        (vec![col("s")], |r| vec![r.s.into()]),
        (vec![col("s"), col("k")], |r| vec![r.s.into(), r.k.into()]),
        // An expression key: the remainder keeps the dividend's sign, as in Rust.
        (vec![(col("v") % lit(7)).alias("m")], |r| {
            vec![r.v.map(|v| v % 7).into()]
        }),
    ];
    // Partial results above 20 rows in all shuffle when split_out is not given.
    let small_groups = frames.clone().with_options(PlanOptions {
        group_rows: 20,
        ..PlanOptions::default()
    });
    for seed in 0..CASES {
        let case = Case::new(seed);
        let frame = case.frame(&frames).await;
        let eager = case.frame(&small_groups).await;
        let rows = case.rows();
        for ((keys, key), n_unique) in keyings.iter().zip([false, true, false, true]) {
            let want = reference_group_by(&rows, key, n_unique);
            for (strategy, frame, split_out) in [
                ("chosen", &frame, None),
                ("split_out", &frame, Some(3)),
                ("chosen with 20 group rows", &eager, None),
            ] {
                let what = format!("group_by {keys:?} {strategy} {split_out:?} n_unique {n_unique}");
                let mut g = frame.group_by(keys.clone());
                if let Some(n) = split_out {
                    g = g.split_out(n);
                }
                let got = sorted(cells(&collect(&g.agg(aggregates(n_unique)), &what, case.seed).await));
                assert_eq!(got, want, "case {seed}, {what}");
            }
        }
        // No keys: one row over the whole frame, even when it is empty.
        let all: Vec<&Row> = rows.iter().collect();
        for n_unique in [false, true] {
            let what = format!("global aggregates, n_unique {n_unique}");
            let global = collect(&frame.select(aggregates(n_unique)), &what, seed).await;
            assert_eq!(
                cells(&global),
                [reference_aggregates(&all, n_unique)],
                "case {seed}, {what}"
            );
        }
    }
    drop(frames);
    cluster.stop().await;
}

/// A row of the right-hand frame for joins: `rk` int32 keys (the left's
/// are int64), `rs` utf8 keys, `w` values (the row's number).
#[derive(Clone, Debug)]
struct RightRow {
    rk: Option<i64>,
    rs: Option<&'static str>,
    w: i64,
}

fn right_rows(seed: u64) -> Vec<RightRow> {
    let mut rng = fastrand::Rng::with_seed(seed + 1000);
    let n = rng.usize(0..60);
    (0..n)
        .map(|i| RightRow {
            rk: (rng.u8(0..10) > 0).then(|| rng.i64(-2..25)),
            rs: (rng.u8(0..10) > 0).then(|| WORDS[rng.usize(0..WORDS.len())]),
            w: i as i64,
        })
        .collect()
}

fn right_batch(rows: &[RightRow]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("rk", DataType::Int32, true),
            Field::new("rs", DataType::Utf8, true),
            Field::new("w", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.rk.map(|k| k as i32)))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.rs))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.w))),
        ],
    )
    .unwrap()
}

/// Join keys: left column, right column.
type On = &'static [(&'static str, &'static str)];

const JOIN_KEYS: [On; 3] = [&[("k", "rk")], &[("s", "rs")], &[("s", "rs"), ("k", "rk")]];

/// The join by nested loops: left columns, then (inner and left joins)
/// the right columns that are not keys; null keys match nothing.
fn reference_join(left: &[Row], right: &[RightRow], on: On, how: JoinType) -> Table {
    let left_key = |r: &Row, c: &str| -> Cell { if c == "k" { r.k.into() } else { r.s.into() } };
    let right_key = |r: &RightRow, c: &str| -> Cell { if c == "rk" { r.rk.into() } else { r.rs.into() } };
    let matches = |l: &Row, r: &RightRow| {
        on.iter().all(|(a, b)| {
            let k = left_key(l, a);
            k != Cell::Null && k == right_key(r, b)
        })
    };
    let is_key = |c: &str| on.iter().any(|(_, b)| *b == c);
    let rest = |r: Option<&RightRow>| -> Vec<Cell> {
        let mut out = Vec::new();
        if !is_key("rk") {
            out.push(r.map_or(Cell::Null, |r| r.rk.into()));
        }
        if !is_key("rs") {
            out.push(r.map_or(Cell::Null, |r| r.rs.into()));
        }
        out.push(r.map_or(Cell::Null, |r| Cell::Int(r.w)));
        out
    };
    let mut out = Vec::new();
    for l in left {
        let hits: Vec<&RightRow> = right.iter().filter(|r| matches(l, r)).collect();
        match how {
            JoinType::Inner | JoinType::Left => {
                for h in &hits {
                    out.push([l.cells(), rest(Some(h))].concat());
                }
                if hits.is_empty() && how == JoinType::Left {
                    out.push([l.cells(), rest(None)].concat());
                }
            }
            JoinType::Semi if !hits.is_empty() => out.push(l.cells()),
            JoinType::Anti if hits.is_empty() => out.push(l.cells()),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_match_nested_loops_broadcast_and_shuffled() {
    let (cluster, frames) = common::cluster().await;
    // Broadcast below 2 * 10^6 rows; shuffle both sides above 0.
    let strategies = [
        ("broadcast", frames.clone()),
        (
            "shuffle",
            // Into as many partitions as the inputs have, so pieces are routed.
            frames.clone().with_options(PlanOptions {
                broadcast_rows: 0,
                join_rows: 1,
                ..PlanOptions::default()
            }),
        ),
    ];
    for seed in 0..CASES {
        let case = Case::new(seed);
        let left = case.rows();
        let right = right_rows(seed);
        for (strategy, frames) in &strategies {
            let l = case.frame(frames).await;
            let r = frames
                .from_batches(vec![right_batch(&right)], 1 + seed as usize % 3)
                .await
                .unwrap();
            for on in JOIN_KEYS {
                let lon: Vec<&str> = on.iter().map(|k| k.0).collect();
                let ron: Vec<&str> = on.iter().map(|k| k.1).collect();
                for how in [JoinType::Inner, JoinType::Left, JoinType::Semi, JoinType::Anti] {
                    let what = format!("{strategy} {how:?} join on {on:?}");
                    let joined = l.join(&r, &lon, &ron, how);
                    let got = sorted(cells(&collect(&joined, &what, seed).await));
                    assert_eq!(
                        got,
                        sorted(reference_join(&left, &right, on, how)),
                        "case {seed}, {what}"
                    );
                }
            }
        }
    }
    drop(frames);
    cluster.stop().await;
}

/// A join whose right side is filtered, so its row estimate (the
/// unfiltered count) is loose: the run computes that side first and
/// broadcasts it when it is small enough, else shuffles it from the
/// computed partitions. Both give the nested loops' answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_of_a_side_measured_first_match_nested_loops() {
    let (cluster, frames) = common::cluster().await;
    for seed in 0..CASES {
        let case = Case::new(seed);
        let left = case.rows();
        let right = right_rows(seed);
        // Even rows of the right side: the filter halves it.
        let kept: Vec<RightRow> = right.iter().filter(|r| r.w % 2 == 0).cloned().collect();
        let strategies = [
            (
                "measured, then broadcast",
                frames.clone().with_options(PlanOptions {
                    broadcast_rows: kept.len() as u64,
                    ..PlanOptions::default()
                }),
            ),
            (
                "measured, then shuffled",
                frames.clone().with_options(PlanOptions {
                    broadcast_rows: 0,
                    join_rows: 1,
                    ..PlanOptions::default()
                }),
            ),
        ];
        for (strategy, frames) in &strategies {
            let l = case.frame(frames).await;
            let r = frames
                .from_batches(vec![right_batch(&right)], 1 + seed as usize % 3)
                .await
                .unwrap()
                .filter((col("w") % lit(2i64)).eq(lit(0i64)));
            for on in JOIN_KEYS {
                let lon: Vec<&str> = on.iter().map(|k| k.0).collect();
                let ron: Vec<&str> = on.iter().map(|k| k.1).collect();
                for how in [JoinType::Inner, JoinType::Left, JoinType::Semi, JoinType::Anti] {
                    let what = format!("{strategy} {how:?} join on {on:?}");
                    let got = sorted(cells(&collect(&l.join(&r, &lon, &ron, how), &what, seed).await));
                    assert_eq!(
                        got,
                        sorted(reference_join(&left, &kept, on, how)),
                        "case {seed}, {what}"
                    );
                }
            }
        }
    }
    drop(frames);
    cluster.stop().await;
}

/// Filters above joins, group-bys and new columns, which the optimizer
/// moves down where they stay correct (not below a left join's nulls,
/// not below an aggregate they read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_moved_down_keep_their_meaning() {
    let (cluster, frames) = common::cluster().await;
    for seed in 0..CASES {
        let case = Case::new(seed);
        let l = case.frame(&frames).await;
        let left = case.rows();
        let right = right_rows(seed);
        let r = frames.from_batches(vec![right_batch(&right)], 2).await.unwrap();
        let t = [-300, 0, 300][seed as usize % 3];
        let keep =
            |t: Table, f: &dyn Fn(&[Cell]) -> bool| -> Table { sorted(t.into_iter().filter(|r| f(r)).collect()) };
        let gt = |c: &Cell, t: i64| matches!(c, Cell::Int(v) if *v > t);

        // Left join, then conditions on right columns (w at 5, rs at 4) and a left one.
        let on: On = &[("k", "rk")];
        let joined = reference_join(&left, &right, on, JoinType::Left);
        let q = l
            .join(&r, &["k"], &["rk"], JoinType::Left)
            .filter(col("w").is_null().or(col("w").gt(lit(10))).and(col("v").gt(lit(t))));
        let want = keep(joined.clone(), &|r| {
            (r[5] == Cell::Null || gt(&r[5], 10)) && gt(&r[2], t)
        });
        assert_eq!(
            sorted(cells(&collect(&q, "left join filter", seed).await)),
            want,
            "case {seed}"
        );
        let q = l
            .join(&r, &["k"], &["rk"], JoinType::Inner)
            .filter(col("rs").eq(lit("a")).and(col("x").lt(lit(100.0))));
        let inner = reference_join(&left, &right, on, JoinType::Inner);
        let want = keep(inner, &|r| {
            r[4] == Cell::Str("a".into()) && matches!(r[3], Cell::Float(x) if x < 100.0)
        });
        assert_eq!(
            sorted(cells(&collect(&q, "inner join filter", seed).await)),
            want,
            "case {seed}"
        );

        // A group-by, then a condition on its key (moves below) and one on an aggregate (stays).
        let q = l
            .group_by([col("k")])
            .agg([col("v").sum().alias("sum_v"), len().alias("n")])
            .filter(col("k").gt(lit(2)).and(col("sum_v").gt(lit(t))));
        let grouped = reference_group_by(&left, |r| vec![r.k.into()], false);
        let want = keep(
            grouped
                .into_iter()
                .map(|g| vec![g[0].clone(), g[1].clone(), g[4].clone()])
                .collect(),
            &|r| gt(&r[0], 2) && gt(&r[1], t),
        );
        assert_eq!(
            sorted(cells(&collect(&q, "group-by filter", seed).await)),
            want,
            "case {seed}"
        );

        // New columns replacing and adding, conditions on both, then a projection.
        let q = l
            .with_columns([
                (col("v") * lit(2)).alias("v"),
                col("x").cast(DataType::Int64).alias("xi"),
            ])
            .filter(col("v").gt(lit(t)).and(col("xi").is_between(lit(-100), lit(100))))
            .select([col("xi"), col("v"), col("s")]);
        let want: Table = left
            .iter()
            .filter_map(|r| {
                let v = r.v.map(|v| v * 2);
                let xi = r.x.map(|x| x as i64);
                (v.is_some_and(|v| v > t) && xi.is_some_and(|x| (-100..=100).contains(&x)))
                    .then(|| vec![xi.into(), v.into(), r.s.into()])
            })
            .collect();
        assert_eq!(
            sorted(cells(&collect(&q, "with_columns filter", seed).await)),
            sorted(want),
            "case {seed}"
        );
        // head: the first rows of some order, as many as there are.
        let n = seed as usize * 13 % 50;
        assert_eq!(
            l.head(n).count().await.unwrap() as usize,
            n.min(left.len()),
            "case {seed}, head {n}"
        );
    }
    drop(frames);
    cluster.stop().await;
}

/// The reference order: by each key, nulls last whatever the direction.
fn compare_keys(a: &[Cell], b: &[Cell], descending: &[bool]) -> std::cmp::Ordering {
    for ((x, y), &desc) in a.iter().zip(b).zip(descending) {
        let o = match (x, y) {
            (Cell::Null, Cell::Null) => std::cmp::Ordering::Equal,
            (Cell::Null, _) => std::cmp::Ordering::Greater,
            (_, Cell::Null) => std::cmp::Ordering::Less,
            (x, y) if desc => y.cmp(x),
            (x, y) => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorts_put_the_keys_in_order_with_nulls_last() {
    let (cluster, frames) = common::cluster().await;
    // Column positions in the frame: k 0, s 1, v 2, x 3.
    let orders: [(&[usize], &[bool]); 5] = [
        (&[0], &[false]),
        (&[2], &[true]),
        (&[1, 2], &[true, false]),
        (&[0, 1, 3], &[false, true, true]),
        (&[3, 1], &[false, false]),
    ];
    let names = ["k", "s", "v", "x"];
    for seed in 0..CASES {
        let case = Case::new(seed);
        let frame = case.frame(&frames).await;
        let rows: Table = case.rows().iter().map(Row::cells).collect();
        for (by, descending) in orders {
            let what = format!(
                "sort by {:?} descending {descending:?}",
                by.iter().map(|&i| names[i]).collect::<Vec<_>>()
            );
            let key = |row: &[Cell]| by.iter().map(|&i| row[i].clone()).collect::<Vec<_>>();
            let mut want = rows.clone();
            want.sort_by(|a, b| compare_keys(&key(a), &key(b), descending));
            let sorted_frame = frame.sort(by.iter().map(|&i| col(names[i])), descending);
            let got = cells(&collect(&sorted_frame, &what, seed).await);
            // Ties may come in any order: the keys in order, the rows as a multiset.
            let keys = |t: &Table| t.iter().map(|r| key(r)).collect::<Vec<_>>();
            assert_eq!(keys(&got), keys(&want), "case {seed}, {what}");
            assert_eq!(sorted(got), sorted(want.clone()), "case {seed}, {what}: rows");
            // Top-k: the first rows' keys.
            let n = seed as usize * 7 % 40;
            let top = cells(&collect(&sorted_frame.head(n), &format!("{what} head {n}"), seed).await);
            assert_eq!(
                keys(&top),
                keys(&want)[..n.min(want.len())],
                "case {seed}, {what} head {n}"
            );
        }
    }
    drop(frames);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_rows_are_the_set_of_rows() {
    let (cluster, frames) = common::cluster().await;
    let small_groups = frames.clone().with_options(PlanOptions {
        group_rows: 20,
        ..PlanOptions::default()
    });
    for seed in 0..CASES {
        let case = Case::new(seed);
        let rows = case.rows();
        for (cols, frames) in [
            (&["k"][..], &frames),
            (&["s", "k"], &frames),
            (&["k", "s", "v", "x"], &frames),
            (&["k", "s", "v", "x"], &small_groups),
        ] {
            let frame = case.frame(frames).await;
            let what = format!("distinct of {cols:?} with {:?}", frames.options());
            let picked = frame.select(cols.iter().map(|c| col(*c))).distinct();
            let got = sorted(cells(&collect(&picked, &what, seed).await));
            let positions: Vec<usize> = cols
                .iter()
                .map(|c| ["k", "s", "v", "x"].iter().position(|n| n == c).unwrap())
                .collect();
            let want: BTreeSet<Vec<Cell>> = rows
                .iter()
                .map(|r| {
                    let all = r.cells();
                    positions.iter().map(|&i| all[i].clone()).collect()
                })
                .collect();
            assert_eq!(got, want.into_iter().collect::<Table>(), "case {seed}, {what}");
        }
    }
    drop(frames);
    cluster.stop().await;
}
