//! Bad input: missing files, corrupt Parquet files (a bad footer, found
//! when the plan is made; bad pages, found by the worker that reads
//! them), columns that do not exist and mismatched types. Each error
//! names the file or the column, plan errors come before anything runs,
//! and the cluster answers the next query.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use weft_frame::{Frames, JoinType, LazyFrame, col, lit, when};

mod common;

fn batch(n: i64) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("s{i}")))),
        ],
    )
    .unwrap()
}

/// The cluster still runs queries: a fresh frame's rows are counted.
async fn still_answers(frames: &Frames) {
    let f = frames.from_batches(vec![batch(10)], 2).await.unwrap();
    assert_eq!(f.filter(col("k").lt(lit(4))).count().await.unwrap(), 4);
}

fn plan_error(frame: &LazyFrame) -> String {
    frame.schema().unwrap_err().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_corrupt_files_are_named() {
    let (cluster, frames) = common::cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();

    // Missing: a file, a directory, a pattern matching nothing.
    for path in [
        format!("{d}/none.parquet"),
        format!("{d}/none/"),
        format!("{d}/*.parquet"),
    ] {
        let err = frames.read_parquet(&path).err().unwrap().to_string();
        assert!(err.contains(path.trim_end_matches('/')), "{path}: {err}");
    }
    let err = frames.read_csv(&format!("{d}/none.csv")).err().unwrap().to_string();
    assert!(err.contains("none.csv"), "{err}");

    // A good dataset of two files.
    let good = format!("{d}/good");
    let f = frames.from_batches(vec![batch(1000)], 2).await.unwrap();
    assert_eq!(f.write_parquet(&good).await.unwrap(), 1000);
    assert_eq!(frames.read_parquet(&good).unwrap().count().await.unwrap(), 1000);

    // A file that is not Parquet at all, among good ones: its footer is
    // read when the frame is made.
    let mixed = format!("{d}/mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::copy(format!("{good}/part-00000.parquet"), format!("{mixed}/a.parquet")).unwrap();
    std::fs::write(format!("{mixed}/b.parquet"), b"PAR1 this is not parquet").unwrap();
    let err = frames.read_parquet(&mixed).err().unwrap().to_string();
    assert!(err.contains("b.parquet") && err.contains("Parquet"), "{err}");

    // A good footer over corrupt pages: the worker that reads it names it.
    let torn = format!("{d}/torn");
    std::fs::create_dir(&torn).unwrap();
    let mut bytes = std::fs::read(format!("{good}/part-00001.parquet")).unwrap();
    bytes[4..100].fill(0xff);
    std::fs::write(format!("{torn}/part-00001.parquet"), &bytes).unwrap();
    let frame = frames.read_parquet(&torn).unwrap();
    let err = frame.count().await.unwrap_err().to_string();
    assert!(err.contains("torn/part-00001.parquet"), "{err}");
    still_answers(&frames).await;

    // A file removed after the frame was made.
    let gone = format!("{d}/gone");
    std::fs::create_dir(&gone).unwrap();
    std::fs::copy(format!("{good}/part-00000.parquet"), format!("{gone}/x.parquet")).unwrap();
    let frame = frames.read_parquet(&gone).unwrap();
    std::fs::remove_file(format!("{gone}/x.parquet")).unwrap();
    let err = frame.collect().await.unwrap_err().to_string();
    assert!(err.contains("gone/x.parquet"), "{err}");
    still_answers(&frames).await;

    drop(frames);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_columns_and_mismatched_types_fail_at_plan_time() {
    let (cluster, frames) = common::cluster().await;
    let f = frames.from_batches(vec![batch(100)], 3).await.unwrap();
    let other = frames.from_batches(vec![batch(10)], 1).await.unwrap();

    // A column that does not exist: the error names it and the columns there are.
    let missing = [
        f.filter(col("nope").gt(lit(1))),
        f.select([col("k"), col("nope")]),
        f.with_columns([(col("nope") * lit(2)).alias("y")]),
        f.group_by([col("nope")]).agg([col("k").sum()]),
        f.group_by([col("s")]).agg([col("nope").sum()]),
        f.sort([col("nope")], &[false]),
        f.join(&other, &["nope"], &["k"], JoinType::Inner),
        f.join(&other, &["k"], &["nope"], JoinType::Left),
        f.select([col("k")]).filter(col("s").eq(lit("x"))),
    ];
    for (i, frame) in missing.iter().enumerate() {
        let err = plan_error(frame);
        assert!(err.contains("\"nope\"") || err.contains("\"s\""), "{i}: {err}");
        assert!(err.contains("k: Int64"), "{i}: {err}");
        // collect and count fail the same way, before anything runs.
        assert_eq!(frame.count().await.unwrap_err().to_string(), err, "{i}");
    }

    // Types that do not fit: the error names the expression (so its
    // columns) and the types.
    let mismatched = [
        (f.select([col("s") + lit(1)]), ["(col(s) + 1)", "Utf8", "Int64"]),
        (f.filter(col("k")), ["col(k)", "Int64", "Boolean"]),
        (f.filter(col("s").gt(lit(3))), ["(col(s) > 3)", "Utf8", "Int64"]),
        (
            f.filter(col("k").starts_with("a")),
            ["col(k).StartsWith", "Int64", "Int64"],
        ),
        (
            f.join(&other, &["k"], &["s"], JoinType::Inner),
            ["k = s", "Int64", "Utf8"],
        ),
        (
            f.group_by([col("k")]).agg([col("s").sum()]),
            ["col(s).sum()", "Utf8", "Utf8"],
        ),
        (
            f.group_by([col("k")]).agg([col("s").mean()]),
            ["col(s).mean()", "Utf8", "Utf8"],
        ),
        (
            f.select([when(col("k").gt(lit(1))).then(lit("big")).otherwise(lit(0))]),
            ["when((col(k) > 1))", "Utf8", "Int64"],
        ),
        (
            f.select([when(col("s")).then(lit(1)).otherwise(lit(0))]),
            ["when(col(s))", "Utf8", "Boolean"],
        ),
        (f.select([!col("k")]), ["not(col(k))", "Int64", "Boolean"]),
        (f.select([col("s").year()]), ["col(s).year()", "Utf8", "Utf8"]),
    ];
    for (i, (frame, names)) in mismatched.iter().enumerate() {
        let err = plan_error(frame);
        assert!(names.iter().all(|n| err.contains(n)), "{i}: {err}");
        assert_eq!(frame.collect().await.unwrap_err().to_string(), err, "{i}");
    }
    still_answers(&frames).await;
    drop(frames);
    cluster.stop().await;
}
