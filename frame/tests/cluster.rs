//! End to end on a local cluster of in-process workers: plans with
//! filters, joins, group-bys, sorts and the other operations give the
//! answers a plain single-threaded evaluation gives; I/O round-trips;
//! bad plans fail before anything runs, naming the column.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Date32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use weft_frame::{JoinType, col, len, lit, lit_date, when};

mod common;
use common::cluster;

struct Order {
    id: i64,
    cust: i64,
    amount: f64,
    day: i32,
    status: &'static str,
}

fn orders(n: i64) -> Vec<Order> {
    let mut rng = fastrand::Rng::with_seed(42);
    (0..n)
        .map(|id| Order {
            id,
            cust: rng.i64(0..50),
            amount: f64::from(rng.u32(0..10_000)) / 100.0,
            day: 8766 + rng.i32(0..730), // 1994-01-01 + two years
            status: ["F", "O", "P"][rng.usize(0..3)],
        })
        .collect()
}

fn orders_batch(rows: &[Order]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("cust", DataType::Int64, false),
            Field::new("amount", DataType::Float64, false),
            Field::new("day", DataType::Date32, false),
            Field::new("status", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|o| o.id))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|o| o.cust))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|o| o.amount))),
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|o| o.day))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|o| o.status))),
        ],
    )
    .unwrap()
}

/// Customers 0..40 (10 of the orders' customers have none), region by id.
fn customers_batch() -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("c_id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(0..40)),
            Arc::new(StringArray::from_iter_values(
                (0..40).map(|i| ["ASIA", "EUROPE"][i % 2]),
            )),
        ],
    )
    .unwrap()
}

fn region(cust: i64) -> Option<&'static str> {
    (cust < 40).then(|| ["ASIA", "EUROPE"][cust as usize % 2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_join_group_by_sort_match_a_reference() {
    let (cluster, frames) = cluster().await;
    let rows = orders(5000);
    let o = frames.from_batches(vec![orders_batch(&rows)], 7).await.unwrap();
    let c = frames.from_batches(vec![customers_batch()], 3).await.unwrap();
    let since = lit_date("1994-06-01").unwrap();
    let q = o
        .filter(col("day").gt_eq(since).and(col("status").neq(lit("P"))))
        .join(&c, &["cust"], &["c_id"], JoinType::Inner)
        .with_columns([(col("amount") * lit(2)).alias("twice")])
        .group_by([col("region"), col("status")])
        .agg([
            col("twice").sum().alias("total"),
            len().alias("n"),
            col("amount").max().alias("top"),
            col("amount").mean().alias("avg"),
        ])
        .sort([col("region"), col("status")], &[false, true]);
    let explain = q.explain().unwrap();
    assert!(explain.contains("physical plan"), "{explain}");
    let out = q.collect().await.unwrap();

    let mut reference: BTreeMap<(&str, &str), (f64, i64, f64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.day >= 8917 && r.status != "P") {
        if let Some(reg) = region(r.cust) {
            let e = reference.entry((reg, r.status)).or_insert((0.0, 0, f64::MIN));
            e.0 += r.amount * 2.0;
            e.1 += 1;
            e.2 = e.2.max(r.amount);
        }
    }
    // Sorted by region ascending, status descending.
    let mut expected: Vec<_> = reference.into_iter().collect();
    expected.sort_by(|a, b| a.0.0.cmp(b.0.0).then(b.0.1.cmp(a.0.1)));
    assert_eq!(out.num_rows(), expected.len());
    let schema = out.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["region", "status", "total", "n", "top", "avg"]);
    for (i, ((reg, st), (total, n, top))) in expected.iter().enumerate() {
        assert_eq!(out.column(0).as_string::<i32>().value(i), *reg);
        assert_eq!(out.column(1).as_string::<i32>().value(i), *st);
        assert!((out.column(2).as_primitive::<Float64Type>().value(i) - total).abs() < 1e-6);
        assert_eq!(out.column(3).as_primitive::<Int64Type>().value(i), *n);
        assert_eq!(out.column(4).as_primitive::<Float64Type>().value(i), *top);
        let avg = out.column(5).as_primitive::<Float64Type>().value(i);
        assert!((avg - total / 2.0 / *n as f64).abs() < 1e-9);
    }

    // count, head, distinct, semi/anti/left joins, concat, repartition, shuffle, persist.
    assert_eq!(o.count().await.unwrap(), 5000);
    let top = o
        .sort([col("amount"), col("id")], &[true, false])
        .head(5)
        .collect()
        .await
        .unwrap();
    let mut by_amount: Vec<&Order> = rows.iter().collect();
    by_amount.sort_by(|a, b| b.amount.total_cmp(&a.amount).then(a.id.cmp(&b.id)));
    let ids: Vec<i64> = top.column(0).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(ids, by_amount[..5].iter().map(|o| o.id).collect::<Vec<_>>());
    let statuses = o.select([col("status")]).distinct().count().await.unwrap();
    assert_eq!(statuses, 3);
    let with_customer = rows.iter().filter(|r| r.cust < 40).count() as u64;
    assert_eq!(
        o.join(&c, &["cust"], &["c_id"], JoinType::Semi).count().await.unwrap(),
        with_customer
    );
    assert_eq!(
        o.join(&c, &["cust"], &["c_id"], JoinType::Anti).count().await.unwrap(),
        5000 - with_customer
    );
    let left = o.join(&c, &["cust"], &["c_id"], JoinType::Left);
    assert_eq!(left.count().await.unwrap(), 5000);
    assert_eq!(
        left.filter(col("region").is_null()).count().await.unwrap(),
        5000 - with_customer
    );
    assert_eq!(o.concat(std::slice::from_ref(&o)).count().await.unwrap(), 10_000);
    assert_eq!(o.repartition(3).count().await.unwrap(), 5000);
    assert_eq!(o.repartition(20).count().await.unwrap(), 5000);
    let shuffled = o.shuffle([col("cust")], 4).persist().await.unwrap();
    assert_eq!(shuffled.count().await.unwrap(), 5000);
    // Every customer's orders in one partition: per-partition distinct counts add up.
    let per_cust = shuffled.group_by([col("cust")]).split_out(4).agg([len().alias("n")]);
    assert_eq!(per_cust.count().await.unwrap(), 50);
    let n_unique = o
        .group_by([col("status")])
        .agg([col("cust").n_unique().alias("custs")])
        .sort([col("status")], &[false])
        .collect()
        .await
        .unwrap();
    assert_eq!(n_unique.num_rows(), 3);
    assert_eq!(n_unique.column(1).as_primitive::<Int64Type>().value(0), 50);
    let flagged = o
        .select([
            col("id"),
            when(col("amount").gt(lit(50.0)))
                .then(lit("high"))
                .otherwise(lit("low"))
                .alias("band"),
            col("day").year().alias("y"),
        ])
        .filter(col("band").eq(lit("high")).and(col("y").eq(lit(1995))))
        .count()
        .await
        .unwrap();
    let expected = rows.iter().filter(|r| r.amount > 50.0 && r.day >= 9131).count() as u64;
    assert_eq!(flagged, expected);
    drop(frames);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_and_csv_round_trip_with_pruning() {
    let (cluster, frames) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let rows = orders(3000);
    let o = frames.from_batches(vec![orders_batch(&rows)], 4).await.unwrap();
    let out = dir.path().join("orders").display().to_string();
    assert_eq!(
        o.sort([col("id")], &[false])
            .repartition(3)
            .write_parquet(&out)
            .await
            .unwrap(),
        3000
    );
    let back = frames.read_parquet(&out).unwrap();
    assert_eq!(back.count().await.unwrap(), 3000);
    // Files hold ids in ranges: a filter on id prunes whole files' row groups.
    let q = back.filter(col("id").lt(lit(500))).select([col("amount")]);
    let explain = q.explain().unwrap();
    assert!(explain.contains("physical plan (1 tasks)"), "{explain}");
    let total: f64 = q
        .collect()
        .await
        .unwrap()
        .column(0)
        .as_primitive::<Float64Type>()
        .values()
        .iter()
        .sum();
    let expected: f64 = rows.iter().filter(|r| r.id < 500).map(|r| r.amount).sum();
    assert!((total - expected).abs() < 1e-6);

    let csv = dir.path().join("c.csv");
    std::fs::write(&csv, "k,v\n1,a\n2,b\n3,c\n").unwrap();
    let c = frames.read_csv(&csv.display().to_string()).unwrap();
    assert_eq!(c.filter(col("k").gt_eq(lit(2))).count().await.unwrap(), 2);

    // Bad input: named before anything runs, and the cluster keeps going.
    let err = back
        .filter(col("nope").gt(lit(1)))
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope") && err.contains("amount"), "{err}");
    let err = back
        .select([col("status") + lit(1)])
        .count()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Utf8") && err.contains("Int64"), "{err}");
    let err = frames
        .read_parquet("/nonexistent/dir/*.parquet")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/dir"), "{err}");
    let err = back
        .group_by([col("status")])
        .agg([col("amount")])
        .count()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an aggregate"), "{err}");
    assert_eq!(back.count().await.unwrap(), 3000);
    drop(frames);
    cluster.stop().await;
}

/// The partitions of a persisted frame.
fn partitions(frame: &weft_frame::LazyFrame) -> usize {
    match frame.plan().as_ref() {
        weft_frame::plan::LogicalPlan::Scan {
            source: weft_frame::plan::Source::Partitions { keys, .. },
            ..
        } => keys.len(),
        other => panic!("not a persisted frame: {}", other.display_tree()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_bys_merge_few_groups_in_a_tree_and_shuffle_many() {
    let (cluster, frames) = cluster().await;
    let frames = frames.with_options(weft_frame::PlanOptions {
        group_rows: 500,
        ..Default::default()
    });
    let rows = orders(4000);
    let o = frames.from_batches(vec![orders_batch(&rows)], 6).await.unwrap();
    // Amount totals and row counts per `key`, kept on the workers.
    let totals = |frame: weft_frame::LazyFrame, key: &'static str| async move {
        frame
            .group_by([col(key)])
            .agg([col("amount").sum().alias("total"), len().alias("n")])
            .persist()
            .await
            .unwrap()
    };
    // Few groups (3 statuses x 6 partials): one partition, merged in a tree.
    let few = totals(o.clone(), "status").await;
    assert_eq!(partitions(&few), 1);
    let few = few.sort([col("status")], &[false]).collect().await.unwrap();
    let n: Vec<i64> = few.column(2).as_primitive::<Int64Type>().values().to_vec();
    let count = |s: &str| rows.iter().filter(|r| r.status == s).count() as i64;
    assert_eq!(n, [count("F"), count("O"), count("P")]);
    // Many groups (4000 ids, 4000 partial rows): ceil(4000 / 500) = 8,
    // at most one per partition: 6 partitions, merged in parallel.
    let many = o
        .group_by([col("id")])
        .agg([col("amount").max().alias("top")])
        .persist()
        .await
        .unwrap();
    assert_eq!(partitions(&many), 6);
    assert_eq!(many.count().await.unwrap(), 4000);
    let top: f64 = many
        .select([col("top").sum()])
        .collect()
        .await
        .unwrap()
        .column(0)
        .as_primitive::<Float64Type>()
        .value(0);
    let total: f64 = rows.iter().map(|r| r.amount).sum();
    assert!((top - total).abs() < 1e-6, "{top} {total}");
    // 64 partials of ~62 rows (4000 rows, group_rows 2000): concatenated
    // into 8 partitions where they lie, then shuffled into 2.
    let coarse = frames.clone().with_options(weft_frame::PlanOptions {
        group_rows: 2000,
        ..Default::default()
    });
    assert_eq!(weft_frame::adaptive::coalesce_to(4000, 64, coarse.options()), Some(8));
    let spread = coarse.from_batches(vec![orders_batch(&rows)], 64).await.unwrap();
    let per_id = totals(spread, "id").await;
    assert_eq!(partitions(&per_id), 2);
    let sums = per_id
        .select([col("total").sum(), col("n").sum()])
        .collect()
        .await
        .unwrap();
    assert!((sums.column(0).as_primitive::<Float64Type>().value(0) - total).abs() < 1e-6);
    assert_eq!(sums.column(1).as_primitive::<Int64Type>().value(0), 4000);
    assert_eq!(per_id.count().await.unwrap(), 4000);
    // distinct chooses the same way.
    assert_eq!(
        partitions(&o.select([col("cust")]).distinct().persist().await.unwrap()),
        1
    );
    assert_eq!(
        partitions(&o.select([col("id")]).distinct().persist().await.unwrap()),
        6
    );
    drop(frames);
    cluster.stop().await;
}

/// TPC-H q10's shape, where the optimizer pre-aggregates the lines of the
/// kept orders per customer before meeting the customers: the answer is the
/// one joining everything first gives, with a customer listed twice, lines
/// and orders that meet nothing, a nation missing and null quantities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_bys_over_joins_pre_aggregate_and_match_a_reference() {
    let (cluster, frames) = cluster().await;
    let mut rng = fastrand::Rng::with_seed(7);
    // Customers 0..30, customer 5 twice; nation = id % 4, and nation 3 is missing.
    let custs: Vec<i64> = (0..30).chain([5]).collect();
    let customers = RecordBatch::try_from_iter([
        (
            "c_id",
            Arc::new(Int64Array::from_iter_values(custs.clone())) as arrow_array::ArrayRef,
        ),
        (
            "c_name",
            Arc::new(StringArray::from_iter_values(
                custs.iter().map(|c| format!("customer {c}")),
            )),
        ),
        (
            "c_nation",
            Arc::new(Int64Array::from_iter_values(custs.iter().map(|c| c % 4))),
        ),
    ])
    .unwrap();
    let nations = RecordBatch::try_from_iter([
        (
            "n_id",
            Arc::new(Int64Array::from_iter_values(0..3)) as arrow_array::ArrayRef,
        ),
        ("n_name", Arc::new(StringArray::from_iter_values(["N0", "N1", "N2"]))),
    ])
    .unwrap();
    let orders: Vec<(i64, i64, i64)> = (0..400).map(|id| (id, rng.i64(0..35), rng.i64(0..10))).collect();
    let lines: Vec<(i64, f64, Option<i64>)> = (0..3000)
        .map(|i| {
            (
                rng.i64(0..450),
                f64::from(rng.u32(0..1000)) / 8.0,
                (i % 7 != 0).then(|| rng.i64(1..50)),
            )
        })
        .collect();
    let ints = |f: fn(&(i64, i64, i64)) -> i64| {
        Arc::new(Int64Array::from_iter_values(orders.iter().map(f))) as arrow_array::ArrayRef
    };
    let o = RecordBatch::try_from_iter([
        ("o_id", ints(|o| o.0)),
        ("o_cust", ints(|o| o.1)),
        ("o_day", ints(|o| o.2)),
    ])
    .unwrap();
    let l = RecordBatch::try_from_iter([
        (
            "l_order",
            Arc::new(Int64Array::from_iter_values(lines.iter().map(|l| l.0))) as arrow_array::ArrayRef,
        ),
        (
            "l_amount",
            Arc::new(Float64Array::from_iter_values(lines.iter().map(|l| l.1))),
        ),
        (
            "l_qty",
            Arc::new(Int64Array::from(lines.iter().map(|l| l.2).collect::<Vec<_>>())),
        ),
    ])
    .unwrap();
    let c = frames.from_batches(vec![customers], 2).await.unwrap();
    let n = frames.from_batches(vec![nations], 1).await.unwrap();
    let o = frames.from_batches(vec![o], 3).await.unwrap();
    let l = frames.from_batches(vec![l], 5).await.unwrap();
    let q = c
        .join(
            &o.filter(col("o_day").gt_eq(lit(4))),
            &["c_id"],
            &["o_cust"],
            JoinType::Inner,
        )
        .join(&l, &["o_id"], &["l_order"], JoinType::Inner)
        .join(&n, &["c_nation"], &["n_id"], JoinType::Inner)
        .group_by([col("c_id"), col("c_name"), col("n_name")])
        .agg([
            (col("l_amount") * lit(2)).sum().alias("total"),
            len().alias("n"),
            col("l_qty").count().alias("qtys"),
            col("l_qty").mean().alias("avg_qty"),
            col("l_amount").min().alias("low"),
        ])
        .sort([col("c_id")], &[false]);
    let explain = q.explain().unwrap();
    assert!(explain.contains("Aggregate by [col(o_cust)]"), "{explain}");
    let out = q.collect().await.unwrap();

    // Joined first, then grouped: customer 5's rows count twice.
    let mut want: BTreeMap<i64, (f64, i64, i64, i64, f64)> = BTreeMap::new();
    for &cust in custs.iter().filter(|c| *c % 4 != 3) {
        for order in orders.iter().filter(|o| o.1 == cust && o.2 >= 4) {
            for line in lines.iter().filter(|l| l.0 == order.0) {
                let e = want.entry(cust).or_insert((0.0, 0, 0, 0, f64::MAX));
                e.0 += line.1 * 2.0;
                e.1 += 1;
                e.2 += i64::from(line.2.is_some());
                e.3 += line.2.unwrap_or(0);
                e.4 = e.4.min(line.1);
            }
        }
    }
    assert!(want.len() > 10 && want.contains_key(&5));
    assert_eq!(out.num_rows(), want.len());
    let schema = out.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        ["c_id", "c_name", "n_name", "total", "n", "qtys", "avg_qty", "low"]
    );
    for (i, (cust, (total, rows, qtys, qty_sum, low))) in want.iter().enumerate() {
        assert_eq!(out.column(0).as_primitive::<Int64Type>().value(i), *cust);
        assert_eq!(out.column(1).as_string::<i32>().value(i), format!("customer {cust}"));
        assert_eq!(out.column(2).as_string::<i32>().value(i), format!("N{}", cust % 4));
        assert!((out.column(3).as_primitive::<Float64Type>().value(i) - total).abs() < 1e-9);
        assert_eq!(out.column(4).as_primitive::<Int64Type>().value(i), *rows);
        assert_eq!(out.column(5).as_primitive::<Int64Type>().value(i), *qtys);
        let avg = out.column(6).as_primitive::<Float64Type>().value(i);
        assert!((avg - *qty_sum as f64 / *qtys as f64).abs() < 1e-9, "{avg}");
        assert_eq!(out.column(7).as_primitive::<Float64Type>().value(i), *low);
    }
    drop(frames);
    cluster.stop().await;
}

/// `weft demo`'s check, in CI: a group-by of a filtered frame gives, bit
/// for bit, the rows the unfiltered group-by gives for the kept keys (float
/// sums keep the rows' order whatever the number of groups).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtering_first_gives_the_same_float_sums() {
    let (cluster, frames) = cluster().await;
    let data = frames.random(200_000, 8, 1_000);
    let by_key = |frame: &weft_frame::LazyFrame| {
        frame
            .group_by([col("key")])
            .agg([col("value").sum().alias("total"), len().alias("rows")])
            .sort([col("key")], &[false])
    };
    let all = by_key(&data).collect().await.unwrap();
    assert_eq!(all.num_rows(), 1_000);
    let few = by_key(&data.filter(col("key").lt(lit(10i64)))).collect().await.unwrap();
    assert_eq!(few, all.slice(0, 10));
    drop(frames);
    cluster.stop().await;
}
