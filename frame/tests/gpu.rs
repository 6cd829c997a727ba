//! Partitions on GPU workers: every step kind and expression kind run by
//! the `frame.task` op on an emulated GPU site (and on a CUDA GPU when
//! there is one) gives the CPU's answer on random small frames (nulls,
//! an empty partition, skewed int keys, utf8 keys, dates); hash-split
//! pieces are the CPU's piece for piece (so a mixed cluster routes rows
//! alike); the steps the kernels cover run on the device and the others
//! say why they fall back; and a device partition feeds the next task
//! without coming back to the host.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use weft_frame::device::{self, Placement};
use weft_frame::groupby::AggSpec;
use weft_frame::join::{JoinSpec, join_schema};
use weft_frame::ops::{Input, Step, TaskArgs};
use weft_frame::{Expr, JoinType, col, lit, lit_date, partition, when};
use weft_gpu::Gpu;
use weft_runtime::ops::{OpContext, Site};
use weft_runtime::{Key, Registry, Value};

mod common;

/// The GPU sites: an emulated GPU, and a CUDA GPU if there is one.
fn gpu_sites() -> &'static [(String, Site)] {
    static SITES: OnceLock<Vec<(String, Site)>> = OnceLock::new();
    SITES.get_or_init(|| {
        weft_gpu::testing::test_gpus("the frame tests")
            .into_iter()
            .map(|(name, gpu)| (name, Site::with_gpu(gpu)))
            .collect()
    })
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry::empty();
        weft_frame::register(&mut r);
        r
    })
}

fn copies(gpu: &Gpu) -> weft_gpu::CopyCounters {
    match gpu.backend() {
        weft_gpu::GpuBackend::Emulated(e) => e.copies(),
        other => panic!("not an emulated GPU: {other:?}"),
    }
}

/// Runs `frame.task` with `args` on `site`.
fn task(site: &Site, args: &TaskArgs, inputs: &[Arc<Value>]) -> Result<Value, String> {
    let key = Key::from("t");
    let ctx = OpContext::new(site, &key);
    let op = registry().get(weft_frame::ops::TASK_OP).unwrap();
    op(&ctx, &weft_runtime::ops::args(args).unwrap(), inputs).map_err(|e| e.to_string())
}

/// A random frame of `rows` rows: `id` (unique), `k` (skewed int64 keys
/// with nulls), `i` (int32), `x` (float64 with nulls), `d` (dates), `s`
/// (utf8 keys with nulls).
fn frame(rows: usize, seed: u64) -> RecordBatch {
    let mut rng = fastrand::Rng::with_seed(seed);
    let k: Int64Array = (0..rows)
        .map(|_| (rng.u8(..10) != 0).then(|| if rng.bool() { 7 } else { rng.i64(-20..20) }))
        .collect();
    let i: Int32Array = (0..rows).map(|_| Some(rng.i32(-100..100))).collect();
    let x: Float64Array = (0..rows)
        .map(|_| (rng.u8(..8) != 0).then(|| (rng.f64() * 200.0 - 100.0).round() / 4.0))
        .collect();
    let d: Date32Array = (0..rows).map(|_| Some(rng.i32(9000..11000))).collect();
    let s: StringArray = (0..rows)
        .map(|_| (rng.u8(..9) != 0).then(|| format!("{}key{}", ["a", "b", "ab"][rng.usize(..3)], rng.u8(..6))))
        .collect();
    let id: Int64Array = (0..rows as i64).map(Some).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id),
        Arc::new(k),
        Arc::new(i),
        Arc::new(x),
        Arc::new(d),
        Arc::new(s),
    ];
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("k", DataType::Int64, true),
        Field::new("i", DataType::Int32, false),
        Field::new("x", DataType::Float64, true),
        Field::new("d", DataType::Date32, false),
        Field::new("s", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

/// The frame without its utf8 column (every step of it fits the kernels).
fn numeric(rows: usize, seed: u64) -> RecordBatch {
    let b = frame(rows, seed);
    b.project(&[0, 1, 2, 3, 4]).unwrap()
}

/// One cell, comparable across devices (floats to 1e-9 relative).
#[derive(Clone, Debug, PartialEq, PartialOrd)]
enum Cell {
    Null,
    B(bool),
    I(i64),
    F(f64),
    S(String),
}

fn cells(b: &RecordBatch) -> Vec<Vec<Cell>> {
    let cell = |a: &ArrayRef, r: usize| -> Cell {
        if a.is_null(r) {
            return Cell::Null;
        }
        match a.data_type() {
            DataType::Boolean => Cell::B(a.as_boolean().value(r)),
            DataType::Int32 => Cell::I(i64::from(a.as_primitive::<Int32Type>().value(r))),
            DataType::Int64 => Cell::I(a.as_primitive::<Int64Type>().value(r)),
            DataType::Date32 => Cell::I(i64::from(a.as_primitive::<Date32Type>().value(r))),
            DataType::Float64 => Cell::F(a.as_primitive::<Float64Type>().value(r)),
            _ => Cell::S(arrow_cast::display::array_value_to_string(a, r).unwrap()),
        }
    };
    let mut rows: Vec<Vec<Cell>> = (0..b.num_rows())
        .map(|r| b.columns().iter().map(|a| cell(a, r)).collect())
        .collect();
    rows.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
    rows
}

fn assert_same(what: &str, got: &RecordBatch, want: &RecordBatch) {
    let names = |b: &RecordBatch| -> Vec<(String, DataType)> {
        b.schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    };
    assert_eq!(names(got), names(want), "{what}: schema");
    let (g, w) = (cells(got), cells(want));
    assert_eq!(g.len(), w.len(), "{what}: rows");
    for (r, (gr, wr)) in g.iter().zip(&w).enumerate() {
        for (gc, wc) in gr.iter().zip(wr) {
            let ok = match (gc, wc) {
                (Cell::F(a), Cell::F(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
                _ => gc == wc,
            };
            assert!(ok, "{what}: row {r}: {gr:?} vs {wr:?} on the CPU");
        }
    }
}

/// The task on the CPU and on every GPU site over `batches` (one input
/// value each); the pieces agree one by one. Returns the GPU results.
fn agree(what: &str, batches: &[RecordBatch], steps: Vec<Step>) -> Vec<Value> {
    let inputs: Vec<Arc<Value>> = batches
        .iter()
        .map(|b| Arc::new(partition::encode(std::slice::from_ref(b)).unwrap()))
        .collect();
    let args = TaskArgs {
        input: Input::Deps,
        steps,
    };
    agree_task(what, &args, &inputs)
}

/// Task `args` over `inputs` on the CPU and on every GPU site; the pieces
/// agree one by one. Returns the GPU results.
fn agree_task(what: &str, args: &TaskArgs, inputs: &[Arc<Value>]) -> Vec<Value> {
    let cpu = task(&Site::default(), args, inputs);
    let mut out = Vec::new();
    for (name, site) in gpu_sites() {
        let gpu = task(site, args, inputs);
        match (&cpu, gpu) {
            (Ok(c), Ok(g)) => {
                let c = partition::decode(c).unwrap();
                let gd = partition::decode(&g).unwrap_or_else(|e| panic!("{what} on the {name}: {e}"));
                assert_eq!(gd.len(), c.len(), "{what} on the {name}: pieces");
                for (j, (x, y)) in gd.iter().zip(&c).enumerate() {
                    assert_same(&format!("{what} on the {name}, piece {j}"), x, y);
                }
                out.push(g);
            }
            (Err(c), Err(g)) => assert_eq!(&g, c, "{what} on the {name}: the same error"),
            (c, g) => panic!("{what} on the {name}: {g:?} vs {c:?} on the CPU"),
        }
    }
    out
}

/// Random frames: small, one row, empty, and one with only utf8 keys skewed.
fn frames() -> Vec<RecordBatch> {
    vec![frame(300, 1), frame(1, 2), frame(0, 3), frame(1000, 4)]
}

fn predicates() -> Vec<Expr> {
    vec![
        col("k").gt(lit(3)),
        col("k").eq(lit(7)).or(col("x").lt(lit(0.5))),
        col("x").gt_eq(lit(-10)).and(!col("k").is_null()),
        col("k").is_not_null().and(col("i").lt_eq(col("i") * lit(1))),
        col("d").lt(lit_date("1997-06-01").unwrap()),
        col("d").gt_eq(lit("1995-01-01")),
        col("i").neq(lit(12)),
        col("x").is_null().or(col("x").gt(col("x") * lit(0.5))),
        // The host's share: strings, casts, year(), when/then.
        col("s").starts_with("ab"),
        col("s").ends_with("3").or(col("s").contains("key1")),
        col("s").eq(lit("akey2")),
        col("s").lt_eq(lit("akey3")).and(lit("ab").gt(col("s"))),
        col("i").cast(DataType::Float64).gt(lit(10.5)),
        col("d").year().eq(lit(1996)),
        when(col("k").gt(lit(0))).then(lit(true)).otherwise(col("x").lt(lit(0))),
    ]
}

#[test]
fn filters_agree_with_the_cpu() {
    for b in frames() {
        for p in predicates() {
            agree(
                &format!("filter {p} of {} rows", b.num_rows()),
                std::slice::from_ref(&b),
                vec![Step::Filter(p)],
            );
        }
    }
}

#[test]
fn selects_and_with_columns_agree_with_the_cpu() {
    let exprs = vec![
        col("id"),
        (col("k") + lit(5)).alias("k5"),
        (col("k") * col("k") - col("id")).alias("kk"),
        (col("x") / lit(3)).alias("x3"),
        (col("x") * col("x") + lit(1.5)).alias("xx"),
        col("k").lt(col("id")).alias("lt"),
        col("s").is_null().alias("snull"),
        (col("i") + lit(1)).alias("i1"),
        (col("k") / lit(2)).alias("kdiv"),
        (col("k") % lit(3)).alias("kmod"),
        (col("x") % lit(1.5)).alias("xmod"),
        col("s").gt_eq(col("s")).alias("sb"),
        col("s").lt(lit("b")).alias("slt"),
        lit("akey3").lt(col("s")).alias("sgt"),
        col("s"),
        when(col("k").gt(lit(3)))
            .then(col("x"))
            .when(col("i").lt(lit(0)))
            .then(lit(1.5))
            .otherwise(col("x") * lit(2))
            .alias("w"),
        when(col("s").eq(lit("akey1")))
            .then(col("i"))
            .otherwise(col("k"))
            .alias("wi"),
        when(col("x").is_null())
            .then(col("d"))
            .otherwise(lit_date("1996-01-01").unwrap())
            .alias("wd"),
    ];
    // Comparing two utf8 columns runs on the host, and with it its whole
    // step: the rest once more, as one step on the device.
    let on_device: Vec<Expr> = exprs.iter().filter(|e| e.output_name() != "sb").cloned().collect();
    let gpu = Gpu::emulated(6, 1 << 26, true);
    for b in frames() {
        agree("select", std::slice::from_ref(&b), vec![Step::Select(exprs.clone())]);
        agree(
            "with_columns",
            std::slice::from_ref(&b),
            vec![Step::WithColumns(exprs.clone())],
        );
        let args = TaskArgs {
            input: Input::Deps,
            steps: vec![Step::WithColumns(on_device.clone())],
        };
        agree(
            "with_columns on the device",
            std::slice::from_ref(&b),
            args.steps.clone(),
        );
        let input = Arc::new(partition::encode(std::slice::from_ref(&b)).unwrap());
        let (_, placements) = device::run(&gpu, &args, std::slice::from_ref(&input)).unwrap();
        assert_eq!(placements[1], Placement::Device, "{placements:?}");
        // A zero divisor: the CPU's error, from the host.
        let by_zero = vec![Step::Select(vec![(col("k") / (col("i") - col("i"))).alias("z")])];
        agree("integer division by zero", std::slice::from_ref(&b), by_zero.clone());
        let args = TaskArgs {
            input: Input::Deps,
            steps: by_zero,
        };
        if b.num_rows() > 0 {
            assert!(device::run(&gpu, &args, &[input]).is_err());
        }
    }
}

#[test]
fn sorts_limits_and_splits_agree_with_the_cpu() {
    for b in frames() {
        let n = b.num_rows();
        agree("limit", std::slice::from_ref(&b), vec![Step::Limit(n / 2)]);
        for (by, desc) in [
            (vec![col("k"), col("id")], vec![false, false]),
            (vec![col("x"), col("k"), col("id")], vec![false, false, false]),
            (vec![col("k"), col("id")], vec![true, false]),
            (vec![col("s"), col("id")], vec![false, false]),
            (vec![col("s"), col("d"), col("id")], vec![true, false, true]),
        ] {
            agree(
                "sort",
                std::slice::from_ref(&b),
                vec![Step::Sort {
                    by: by.clone(),
                    descending: desc.clone(),
                    limit: Some(n / 3),
                }],
            );
        }
        for keys in [
            vec![col("k")],
            vec![col("s"), col("k")],
            vec![col("x"), col("d"), col("i")],
        ] {
            agree(
                "hash split",
                std::slice::from_ref(&b),
                vec![Step::HashSplit { keys, n: 5 }],
            );
        }
        agree("slice split", std::slice::from_ref(&b), vec![Step::SliceSplit(3)]);
    }
}

#[test]
fn aggregates_and_multi_input_tasks_agree_with_the_cpu() {
    let aggs = [
        col("x").sum().alias("sx"),
        col("x").mean().alias("mx"),
        col("i").min().alias("mi"),
        col("k").max().alias("mk"),
        col("x").count().alias("cx"),
        col("i").n_unique().alias("ui"),
    ]
    .iter()
    .map(|e| AggSpec::from_expr(e).unwrap())
    .collect::<Vec<_>>();
    let steps = vec![
        Step::Filter(col("id").gt(lit(3))),
        Step::Aggregate {
            keys: vec![col("s"), col("k")],
            aggs: aggs.clone(),
        },
    ];
    agree("aggregate by utf8 keys, n_unique", &frames(), steps);
    let numeric_aggs: Vec<AggSpec> = aggs
        .into_iter()
        .chain([
            AggSpec::from_expr(&col("s").n_unique().alias("us")).unwrap(),
            AggSpec::from_expr(&weft_frame::len().alias("n")).unwrap(),
            AggSpec::from_expr(&col("s").count().alias("cs")).unwrap(),
            AggSpec::from_expr(&col("d").min().alias("first")).unwrap(),
            AggSpec::from_expr(&col("d").max().alias("last")).unwrap(),
        ])
        .collect();
    for keys in [vec![col("s"), col("k"), col("d")], vec![]] {
        agree(
            &format!("aggregate by {keys:?}"),
            &frames(),
            vec![Step::Aggregate {
                keys,
                aggs: numeric_aggs.clone(),
            }],
        );
    }
    // Numeric keys, partition by partition and over all of them (without
    // n_unique, whose extra sorts the emulation makes slow).
    let simple: Vec<AggSpec> = numeric_aggs
        .into_iter()
        .filter(|a| a.func != weft_frame::AggFunc::NUnique)
        .collect();
    for keys in [vec![col("k")], vec![col("x"), col("id")], vec![col("k"), col("x")]] {
        for b in frames() {
            agree(
                "aggregate by numeric keys",
                std::slice::from_ref(&b),
                vec![Step::Aggregate {
                    keys: keys.clone(),
                    aggs: simple.clone(),
                }],
            );
        }
        agree(
            "aggregate of several inputs",
            &frames(),
            vec![Step::Aggregate {
                keys: keys.clone(),
                aggs: simple.clone(),
            }],
        );
    }
}

/// The right side of the joins: `rk` (int64 keys with duplicates and
/// nulls), `id` (a name the left side has too), `rv` (float64), `rk2`
/// (int32 keys in a small range, with nulls).
fn right_side(rows: usize, seed: u64) -> RecordBatch {
    let mut rng = fastrand::Rng::with_seed(seed);
    let rk: Int64Array = (0..rows)
        .map(|_| (rng.u8(..8) != 0).then(|| rng.i64(-20..20)))
        .collect();
    let id: Int64Array = (0..rows as i64).map(|i| Some(1000 + i)).collect();
    let rv: Float64Array = (0..rows).map(|_| (rng.u8(..5) != 0).then(|| rng.f64())).collect();
    let rk2: Int32Array = (0..rows).map(|_| (rng.u8(..9) != 0).then(|| rng.i32(-3..3))).collect();
    let schema = Schema::new(vec![
        Field::new("rk", DataType::Int64, true),
        Field::new("id", DataType::Int64, false),
        Field::new("rv", DataType::Float64, true),
        Field::new("rk2", DataType::Int32, true),
    ]);
    let columns: Vec<ArrayRef> = vec![Arc::new(rk), Arc::new(id), Arc::new(rv), Arc::new(rk2)];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

fn join_args(
    left: &RecordBatch,
    right: &RecordBatch,
    on: (&[&str], &[&str]),
    how: JoinType,
    probe_is_left: bool,
) -> TaskArgs {
    let spec = JoinSpec {
        left_on: on.0.iter().map(|s| s.to_string()).collect(),
        right_on: on.1.iter().map(|s| s.to_string()).collect(),
        how,
        build_left: !probe_is_left,
    };
    let schema = join_schema(left.schema_ref(), right.schema_ref(), &spec).unwrap();
    TaskArgs {
        input: Input::Join {
            probe: Box::new(TaskArgs {
                input: Input::Deps,
                steps: vec![],
            }),
            probe_deps: 1,
            probe_is_left,
            spec,
            schema,
        },
        steps: vec![],
    }
}

#[test]
fn joins_agree_with_the_cpu_and_integer_keys_join_on_the_device() {
    let gpu = Gpu::emulated(4, 1 << 28, true);
    for (l_rows, r_rows) in [(300, 40), (0, 10), (50, 0), (700, 300)] {
        for how in [JoinType::Inner, JoinType::Left, JoinType::Semi, JoinType::Anti] {
            for probe_is_left in [true, false] {
                if !probe_is_left && how != JoinType::Inner {
                    continue;
                }
                let on_k: (&[&str], &[&str]) = (&["k"], &["rk"]);
                let on_two: (&[&str], &[&str]) = (&["k", "i"], &["rk", "rk2"]);
                let on_float: (&[&str], &[&str]) = (&["x"], &["rv"]);
                let mut cases = vec![(numeric(l_rows, 5), on_k, true), (frame(l_rows, 6), on_k, true)];
                // Other keys at one size (the emulated joins are slow).
                if l_rows == 300 {
                    cases.extend([
                        (numeric(l_rows, 7), (&["i"][..], &["rk"][..]), true),
                        (frame(l_rows, 8), on_two, true),
                        (numeric(l_rows, 9), on_float, false),
                    ]);
                }
                for (left, on, on_device) in cases {
                    let right = right_side(r_rows, 8);
                    let args = join_args(&left, &right, on, how, probe_is_left);
                    let (probe, build) = if probe_is_left {
                        (&left, &right)
                    } else {
                        (&right, &left)
                    };
                    let what = format!("{how:?} join of {l_rows} x {r_rows} on {on:?}, probe left {probe_is_left}");
                    let inputs: Vec<Arc<Value>> = [probe, build]
                        .iter()
                        .map(|b| Arc::new(partition::encode(std::slice::from_ref(*b)).unwrap()))
                        .collect();
                    agree_task(&what, &args, &inputs);
                    let (_, placements) = device::run(&gpu, &args, &inputs).unwrap();
                    assert_eq!(placements[0] == Placement::Device, on_device, "{what}: {placements:?}");
                }
            }
        }
    }
    // A left join's utf8 right column: nulls for the unmatched rows, on the
    // device; from an empty right side, on the host.
    for (l_rows, r_rows) in [(300, 40), (50, 0)] {
        let (left, right) = (numeric(l_rows, 10), frame(r_rows, 11));
        let args = join_args(&left, &right, (&["k"], &["k"]), JoinType::Left, true);
        let inputs: Vec<Arc<Value>> = [&left, &right]
            .iter()
            .map(|b| Arc::new(partition::encode(std::slice::from_ref(*b)).unwrap()))
            .collect();
        agree_task(
            &format!("left join of utf8 columns, {l_rows} x {r_rows}"),
            &args,
            &inputs,
        );
        let (_, placements) = device::run(&gpu, &args, &inputs).unwrap();
        assert_eq!(placements[0] == Placement::Device, r_rows > 0, "{placements:?}");
    }
    // Two int64 keys whose ranges multiply past int64: on the host, saying why.
    let wide = |a: Vec<i64>, b: Vec<i64>, names: [&str; 2]| {
        RecordBatch::try_from_iter([
            (names[0], Arc::new(Int64Array::from(a)) as ArrayRef),
            (names[1], Arc::new(Int64Array::from(b)) as ArrayRef),
        ])
        .unwrap()
    };
    let left = wide(vec![i64::MIN, 0, i64::MAX], vec![0, 1, 2], ["a", "b"]);
    let right = wide(vec![0, i64::MAX], vec![1, 2], ["ra", "rb"]);
    let args = join_args(&left, &right, (&["a", "b"], &["ra", "rb"]), JoinType::Inner, true);
    let inputs: Vec<Arc<Value>> = [&left, &right]
        .iter()
        .map(|b| Arc::new(partition::encode(std::slice::from_ref(*b)).unwrap()))
        .collect();
    let (value, placements) = device::run(&gpu, &args, &inputs).unwrap();
    assert!(
        matches!(&placements[0], Placement::Host(why) if why.contains("ranges")),
        "{placements:?}"
    );
    assert_eq!(partition::decode(&value).unwrap()[0].num_rows(), 2);
}

#[test]
fn covered_steps_run_on_the_device_and_the_rest_say_why() {
    let gpu = Gpu::emulated(1, 1 << 28, true);
    let input = Arc::new(partition::encode(&[numeric(400, 9)]).unwrap());
    let args = TaskArgs {
        input: Input::Deps,
        steps: vec![
            Step::Filter(col("k").gt(lit(-5)).and(col("x").is_not_null())),
            Step::WithColumns(vec![(col("x") * lit(2.0)).alias("x2")]),
            Step::Sort {
                by: vec![col("k"), col("x2")],
                descending: vec![false, false],
                limit: Some(100),
            },
            Step::Select(vec![col("k"), col("x2"), col("d")]),
            Step::HashSplit {
                keys: vec![col("k")],
                n: 4,
            },
        ],
    };
    let (value, placements) = device::run(&gpu, &args, std::slice::from_ref(&input)).unwrap();
    // The input was a host piece: decoded and uploaded once.
    assert!(matches!(&placements[0], Placement::Host(_)), "{placements:?}");
    assert!(
        placements[1..].iter().all(|p| *p == Placement::Device),
        "{placements:?}"
    );
    let h = partition::header(&value).unwrap();
    assert_eq!(h.pieces.len(), 4);
    assert!(h.pieces.iter().all(|p| p.layout == partition::Layout::Columns));
    assert!(value.frames.iter().all(|f| f.location() == gpu.device()));

    // Strings and dates: utf8 predicates, year(), utf8 columns compacted.
    let strings = TaskArgs {
        input: Input::Deps,
        steps: vec![
            Step::Filter(
                col("s")
                    .starts_with("ab")
                    .or(col("s").eq(lit("akey2")))
                    .and(col("d").year().gt_eq(lit(1996))),
            ),
            Step::Sort {
                by: vec![col("k"), col("id")],
                descending: vec![false, false],
                limit: Some(50),
            },
        ],
    };
    let with_strings = Arc::new(partition::encode(&[frame(400, 10)]).unwrap());
    let (_, placements) = device::run(&gpu, &strings, &[with_strings]).unwrap();
    assert!(
        placements[1..].iter().all(|p| *p == Placement::Device),
        "{placements:?}"
    );

    let agg = |e: Expr| TaskArgs {
        input: Input::Deps,
        steps: vec![Step::Aggregate {
            keys: vec![col("k")],
            aggs: vec![AggSpec::from_expr(&e).unwrap()],
        }],
    };
    let (_, placements) = device::run(&gpu, &agg(col("x").sum().alias("sx")), std::slice::from_ref(&input)).unwrap();
    assert_eq!(placements[1], Placement::Device);
    let (_, placements) = device::run(
        &gpu,
        &agg(col("x").n_unique().alias("ux")),
        std::slice::from_ref(&input),
    )
    .unwrap();
    assert_eq!(placements[1], Placement::Device);
    let (_, placements) = device::run(
        &gpu,
        &agg(col("x").cast(DataType::Float32).sum().alias("x32")),
        &[input],
    )
    .unwrap();
    assert!(
        matches!(&placements[1], Placement::Host(why) if why.contains("Float32")),
        "{placements:?}"
    );

    // Utf8 and several keys, no keys, decimals, descending sorts by utf8
    // and numbers: on the device.
    let with_strings = Arc::new(partition::encode(&[frame(300, 11)]).unwrap());
    let aggs = |list: &[Expr]| list.iter().map(|e| AggSpec::from_expr(e).unwrap()).collect::<Vec<_>>();
    let on_device = TaskArgs {
        input: Input::Deps,
        steps: vec![
            Step::WithColumns(vec![
                when(col("k").gt(lit(0))).then(col("x")).otherwise(lit(0.0)).alias("wx"),
            ]),
            Step::Aggregate {
                keys: vec![col("s"), col("k"), col("d")],
                aggs: aggs(&[
                    col("wx").sum().alias("sx"),
                    col("s").count().alias("cs"),
                    col("i").mean().alias("mi"),
                    weft_frame::len().alias("n"),
                ]),
            },
            Step::Sort {
                by: vec![col("s"), col("sx"), col("k"), col("d")],
                descending: vec![true, false, true, false],
                limit: Some(40),
            },
            Step::Aggregate {
                keys: vec![],
                aggs: aggs(&[col("sx").sum().alias("total"), col("n").max().alias("most")]),
            },
        ],
    };
    let (_, placements) = device::run(&gpu, &on_device, &[with_strings]).unwrap();
    assert!(
        placements[1..].iter().all(|p| *p == Placement::Device),
        "{placements:?}"
    );
    let priced = Arc::new(partition::encode(&[decimals(200, 3).project(&[0, 1, 2]).unwrap()]).unwrap());
    let by_decimal = TaskArgs {
        input: Input::Deps,
        steps: vec![Step::Aggregate {
            keys: vec![col("disc")],
            aggs: decimal_aggs(),
        }],
    };
    let (_, placements) = device::run(&gpu, &by_decimal, &[priced]).unwrap();
    assert_eq!(placements[1], Placement::Device, "{placements:?}");
}

#[test]
fn a_device_partition_feeds_the_next_task_without_leaving_the_device() {
    let gpu = Gpu::emulated(2, 1 << 28, true);
    let site = Site {
        worker: "gpu".into(),
        gpu: Some(gpu.clone()),
        ..Site::default()
    };
    let rows = 20_000;
    let first = TaskArgs {
        input: Input::Random {
            rows,
            keys: 50,
            seed: 4,
        },
        steps: vec![Step::Filter(col("key").lt(lit(40)))],
    };
    let value = Arc::new(task(&site, &first, &[]).unwrap());
    assert!(value.frames.iter().all(|f| f.location() == gpu.device()));
    let before = copies(&gpu);
    let second = TaskArgs {
        input: Input::Deps,
        steps: vec![
            Step::Filter(col("value").gt(lit(0.25))),
            Step::WithColumns(vec![(col("value") * col("value")).alias("sq")]),
            Step::Sort {
                by: vec![col("key"), col("sq")],
                descending: vec![false, false],
                limit: None,
            },
        ],
    };
    let out = task(&site, &second, std::slice::from_ref(&value)).unwrap();
    let after = copies(&gpu);
    // Only control words cross (the filters' kept-row counts, the radix
    // sort's digit histograms, about 25 KB whatever the rows): the input's
    // 2 x 8 bytes x 16,000 rows stay put.
    let data = value.frames.iter().map(|f| f.len() as u64).sum::<u64>();
    assert!(
        after.bytes - before.bytes < data / 4,
        "{before:?} -> {after:?} for {data} bytes"
    );
    let want = weft_frame::ops::run(
        &second,
        &[Arc::new(
            partition::encode(&partition::decode(&value).unwrap()).unwrap(),
        )],
    )
    .unwrap();
    assert_same("chained tasks", &partition::decode(&out).unwrap()[0], &want[0]);
}

#[test]
fn device_pieces_concatenate_on_the_device() {
    let gpu = Gpu::emulated(5, 1 << 28, true);
    // Split on the device (utf8 columns too), then one task over all pieces.
    let split = TaskArgs {
        input: Input::Deps,
        steps: vec![Step::HashSplit {
            keys: vec![col("k")],
            n: 3,
        }],
    };
    let both = [frame(500, 12), frame(0, 13)];
    let mut values = Vec::new();
    for b in &both {
        let input = Arc::new(partition::encode(std::slice::from_ref(b)).unwrap());
        let (v, _) = device::run(&gpu, &split, &[input]).unwrap();
        values.push(Arc::new(v));
    }
    let numeric_input = Arc::new(partition::encode(&[numeric(300, 14)]).unwrap());
    let (v, placements) = device::run(&gpu, &split, &[numeric_input]).unwrap();
    assert_eq!(placements.last(), Some(&Placement::Device));
    let concat = TaskArgs {
        input: Input::Deps,
        steps: vec![Step::Sort {
            by: vec![col("id")],
            descending: vec![false],
            limit: None,
        }],
    };
    let numeric_value = Arc::new(v);
    for inputs in [values.clone(), vec![numeric_value.clone(), numeric_value.clone()]] {
        let (out, _) = device::run(&gpu, &concat, &inputs).unwrap();
        let host_inputs: Vec<Arc<Value>> = inputs
            .iter()
            .map(|v| Arc::new(partition::encode(&partition::decode(v).unwrap()).unwrap()))
            .collect();
        let want = weft_frame::ops::run(&concat, &host_inputs).unwrap();
        assert_same("concatenated pieces", &partition::decode(&out).unwrap()[0], &want[0]);
    }
    // Three device pieces: concatenated without leaving the device.
    let (_, placements) = device::run(&gpu, &concat, &[numeric_value]).unwrap();
    assert_eq!(placements[0], Placement::Device);
    // Host pieces: uploaded, then concatenated on the device.
    let host_pieces = Arc::new(partition::encode(&[frame(50, 15), frame(30, 16)]).unwrap());
    let (_, placements) = device::run(&gpu, &concat, &[host_pieces]).unwrap();
    assert!(
        matches!(&placements[0], Placement::Host(why) if why.contains("uploaded")),
        "{placements:?}"
    );
}

/// Decimals of up to 18 digits (TPC-H's prices) and a wider one, with
/// nulls, and a discount column.
fn decimals(rows: usize, seed: u64) -> RecordBatch {
    let mut rng = fastrand::Rng::with_seed(seed);
    let dec = |p: u8, v: Vec<Option<i128>>| Arc::new(Decimal128Array::from(v).with_precision_and_scale(p, 2).unwrap());
    let price: Vec<Option<i128>> = (0..rows)
        .map(|_| (rng.u8(..8) != 0).then(|| i128::from(rng.i64(-99_999..9_999_999))))
        .collect();
    let disc: Vec<Option<i128>> = (0..rows).map(|_| Some(i128::from(rng.i64(0..11)))).collect();
    let wide: Vec<Option<i128>> = (0..rows).map(|_| Some(i128::from(rng.i64(..)))).collect();
    let k: Int32Array = (0..rows).map(|_| Some(rng.i32(0..7))).collect();
    RecordBatch::try_from_iter([
        ("price", dec(15, price) as ArrayRef),
        ("disc", dec(15, disc) as ArrayRef),
        ("k", Arc::new(k) as ArrayRef),
        ("wide", dec(38, wide) as ArrayRef),
    ])
    .unwrap()
}

/// Decimal aggregates: sums (decimal128(38, s)), min and max (the input's
/// type), means (float64) and counts.
fn decimal_aggs() -> Vec<AggSpec> {
    [
        col("price").sum().alias("s"),
        col("price").min().alias("lo"),
        col("disc").max().alias("hi"),
        col("price").mean().alias("mp"),
        (col("price") * col("disc")).mean().alias("m"),
        col("price").count().alias("c"),
    ]
    .iter()
    .map(|e| AggSpec::from_expr(e).unwrap())
    .collect()
}

#[test]
fn decimals_agree_with_the_cpu_and_wide_ones_stay_on_the_host() {
    let gpu = Gpu::emulated(3, 1 << 26, true);
    for rows in [0, 1, 300] {
        let b = decimals(rows, rows as u64);
        let narrow = b.project(&[0, 1, 2]).unwrap();
        let steps = [
            Step::Filter(col("price").gt(lit(1)).and(col("disc").lt_eq(lit(0.05)))),
            Step::Filter(col("price").lt(col("disc"))),
            Step::WithColumns(vec![
                (col("price") * (lit(1) - col("disc"))).alias("net"),
                col("price").cast(DataType::Float64).alias("f"),
                (col("k") + col("k")).alias("kk"),
                col("k").cast(DataType::Float64).alias("kf"),
            ]),
            Step::Sort {
                by: vec![col("price"), col("k")],
                descending: vec![false, false],
                limit: Some(rows / 2),
            },
            Step::HashSplit {
                keys: vec![col("price")],
                n: 3,
            },
            Step::Aggregate {
                keys: vec![col("k").cast(DataType::Int64).alias("k64")],
                aggs: decimal_aggs(),
            },
            Step::Aggregate {
                keys: vec![col("disc"), col("k")],
                aggs: decimal_aggs(),
            },
            Step::Aggregate {
                keys: vec![],
                aggs: decimal_aggs(),
            },
        ];
        for step in steps {
            agree(
                &format!("{step:?} of {rows} decimal rows"),
                std::slice::from_ref(&narrow),
                vec![step.clone()],
            );
        }
        // Up to 18 digits on the device; the wider one keeps its partition on the host.
        let input = |b: &RecordBatch| Arc::new(partition::encode(std::slice::from_ref(b)).unwrap());
        let filter = TaskArgs {
            input: Input::Deps,
            steps: vec![Step::Filter(col("price").gt(lit(1)))],
        };
        let arithmetic = TaskArgs {
            input: Input::Deps,
            steps: vec![
                Step::Filter(col("price").gt(lit(1))),
                Step::WithColumns(vec![(col("price") * (lit(1) - col("disc"))).alias("net")]),
            ],
        };
        let (_, placements) = device::run(&gpu, &arithmetic, &[input(&narrow)]).unwrap();
        assert!(
            placements[1..].iter().all(|p| *p == Placement::Device),
            "{placements:?}"
        );
        let split = TaskArgs {
            input: Input::Deps,
            steps: vec![Step::HashSplit {
                keys: vec![col("price"), col("k")],
                n: 4,
            }],
        };
        let (_, placements) = device::run(&gpu, &split, &[input(&narrow)]).unwrap();
        assert_eq!(placements[1], Placement::Device, "{placements:?}");
        // A join on decimal keys of one scale, by their unscaled values.
        let right = decimals(20, 99).project(&[1, 2]).unwrap();
        let join = join_args(&narrow, &right, (&["disc"], &["disc"]), JoinType::Inner, true);
        let inputs = [input(&narrow), input(&right)];
        agree_task(&format!("a join on decimals of {rows} rows"), &join, &inputs);
        let (_, placements) = device::run(&gpu, &join, &inputs).unwrap();
        assert_eq!(placements[0], Placement::Device, "{placements:?}");
        agree(
            "a filter of a wide decimal",
            std::slice::from_ref(&b),
            filter.steps.clone(),
        );
        let (value, placements) = device::run(&gpu, &filter, &[input(&b)]).unwrap();
        assert!(
            matches!(&placements[0], Placement::Host(why) if why.contains("Decimal128(38, 2)")),
            "{placements:?}"
        );
        assert_eq!(
            partition::header(&value).unwrap().pieces[0].layout,
            partition::Layout::Arrow
        );
    }
}

/// Two in-process workers with the frame's ops: on the CPU, or each on an
/// emulated GPU.
async fn cluster(gpus: bool) -> (weft_runtime::LocalCluster, weft_frame::Frames) {
    match gpus {
        false => common::cluster().await,
        true => common::cluster_on((10..12).map(|i| Gpu::emulated(i, 256 << 20, true)).collect()).await,
    }
}

/// Orders (`id`, `cust`, `amount`, `day`) and customers (`c_id`, `region`;
/// a fifth of the orders' customers missing).
fn orders_and_customers() -> (RecordBatch, RecordBatch) {
    let mut rng = fastrand::Rng::with_seed(77);
    let n = 6000;
    let orders = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef),
        (
            "cust",
            Arc::new(Int64Array::from_iter_values((0..n).map(|_| rng.i64(0..60)))) as _,
        ),
        (
            "amount",
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|_| f64::from(rng.u32(0..10_000)) / 100.0),
            )) as _,
        ),
        (
            "day",
            Arc::new(Date32Array::from_iter_values((0..n).map(|_| 8766 + rng.i32(0..730)))) as _,
        ),
    ])
    .unwrap();
    let customers = RecordBatch::try_from_iter([
        ("c_id", Arc::new(Int64Array::from_iter_values(0..48)) as ArrayRef),
        (
            "region",
            Arc::new(Int64Array::from_iter_values((0..48).map(|c| c % 5))) as _,
        ),
    ])
    .unwrap();
    (orders, customers)
}

/// A filter, join, group-by and sort pipeline gives the CPU cluster's
/// answer on a cluster of emulated GPU workers, and a persisted frame's
/// partitions stay in device memory there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_on_gpu_workers_gives_the_cpu_clusters_answer() {
    let (orders, customers) = orders_and_customers();
    let mut answers = Vec::new();
    for gpus in [false, true] {
        let (cluster, frames) = cluster(gpus).await;
        let o = frames.from_batches(vec![orders.clone()], 6).await.unwrap();
        let c = frames.from_batches(vec![customers.clone()], 2).await.unwrap();
        let kept = o
            .filter(
                col("day")
                    .gt_eq(lit_date("1994-06-01").unwrap())
                    .and(col("amount").gt(lit(5))),
            )
            .persist()
            .await
            .unwrap();
        let on_device: u64 = cluster.memory().iter().map(|m| m.on_device).sum();
        if gpus {
            // About 4,700 kept rows x 4 columns x 8 bytes, less the int32 days' half.
            assert!(
                on_device > 100_000,
                "persisted partitions in device memory: {on_device} bytes"
            );
        } else {
            assert_eq!(on_device, 0);
        }
        let q = kept
            .join(&c, &["cust"], &["c_id"], JoinType::Inner)
            .with_columns([(col("amount") * lit(2)).alias("twice")])
            .group_by([col("region")])
            .agg([
                col("twice").sum().alias("total"),
                weft_frame::len().alias("n"),
                col("amount").max().alias("top"),
                col("amount").mean().alias("avg"),
            ])
            .sort([col("region")], &[false]);
        answers.push(q.collect().await.unwrap());
        drop(frames);
        cluster.stop().await;
    }
    assert_eq!(answers[0].num_rows(), 5);
    assert_same("the pipeline on GPU workers", &answers[1], &answers[0]);
}

/// Runs the tasks of `frame`'s plan one by one on `gpu`, each once its
/// inputs are done, and returns where each task's stages ran.
fn task_placements(gpu: &Arc<Gpu>, frame: &weft_frame::LazyFrame) -> Vec<(String, Vec<Placement>)> {
    use weft_frame::physical::{Action, Lowering};
    let plan = weft_frame::optimize::optimize(frame.plan()).unwrap();
    let lowered = Lowering::lower(&plan, "q", weft_frame::PlanOptions::default(), Action::Collect).unwrap();
    let mut pending = lowered.graph.tasks;
    let mut done: std::collections::HashMap<Key, Arc<Value>> = std::collections::HashMap::new();
    let mut out = Vec::new();
    while !pending.is_empty() {
        let i = pending
            .iter()
            .position(|t| t.deps.iter().all(|d| done.contains_key(d)))
            .expect("a task whose inputs are done");
        let t = pending.remove(i);
        assert_eq!(t.op.split_once('#').unwrap().0, weft_frame::ops::TASK_OP, "{:?}", t.key);
        let args: TaskArgs = weft_runtime::ops::decode_args(&t.args).unwrap();
        let inputs: Vec<Arc<Value>> = t.deps.iter().map(|d| done[d].clone()).collect();
        let (value, placements) = device::run(gpu, &args, &inputs).unwrap();
        out.push((t.key.to_string(), placements));
        done.insert(t.key, Arc::new(value));
    }
    out
}

/// TPC-H at scale factor 0.01 (the peers' kit's data, decimals and utf8
/// columns as Parquet has them) gives the same answers on emulated GPU
/// workers as on CPU workers; without the kit the test says so and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_on_gpu_workers_gives_the_cpu_clusters_answers() {
    use weft_frame::tpch::{QUERIES, checksum, query, same_answer};
    let (Some(venv), Some(peers)) = (common::peers::venv(), common::peers::kit()) else {
        println!("skipped: no peers' kit (venv with tpchgen-cli, ../shared/peers/tpch.py)");
        return;
    };
    if !venv.join("bin/tpchgen-cli").exists() {
        println!("skipped: no tpchgen-cli in the peers' venv");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let generated = std::process::Command::new(venv.join("bin/tpchgen-cli"))
        .args(["parquet", "-s", "0.01", "--parts", "2", "-o", &d])
        .status()
        .unwrap();
    assert!(generated.success());
    let script = format!(
        "import sys; sys.path.insert(0, {peers:?}); import tpch\ntpch.plain_strings({d:?})\n",
        peers = peers.display().to_string(),
    );
    let out = std::process::Command::new(venv.join("bin/python"))
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut answers: Vec<Vec<String>> = Vec::new();
    for gpus in [false, true] {
        let (cluster, frames) = cluster(gpus).await;
        let mut sums = Vec::new();
        for q in QUERIES {
            let result = query(&frames, &d, q).unwrap().collect().await.unwrap();
            sums.push(checksum(&result).unwrap());
        }
        answers.push(sums);
        drop(frames);
        cluster.stop().await;
    }
    // q1 (utf8 keys, decimal sums, means) and q6 (no keys), task by task
    // on an emulated GPU: every step after the Parquet read on the device.
    let (cluster, frames) = cluster(false).await;
    let gpu = Gpu::emulated(20, 256 << 20, true);
    for q in ["tpch_q1", "tpch_q6"] {
        for (task, placements) in task_placements(&gpu, &query(&frames, &d, q).unwrap()) {
            println!("{q} {task}: {placements:?}");
            assert!(
                placements[1..].iter().all(|p| *p == Placement::Device),
                "{q} {task}: {placements:?}"
            );
        }
    }
    drop(frames);
    cluster.stop().await;
    for ((q, cpu), gpu) in QUERIES.iter().zip(&answers[0]).zip(&answers[1]) {
        println!("{q}: CPU workers {cpu} | emulated GPU workers {gpu}");
        assert!(
            same_answer(gpu, cpu, 1e-9),
            "{q}: {gpu} on GPU workers, {cpu} on CPU workers"
        );
    }
}
