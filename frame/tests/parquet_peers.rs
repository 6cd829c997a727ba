//! Parquet written by `write_parquet` reads back in pyarrow, Polars and
//! DuckDB (the peers' venv): each file's row count and per-column sums
//! (integers, floats, utf8 lengths, dates, decimals, booleans, with
//! nulls, and an empty partition) are what was written. Without the venv
//! or one of the three, the test says why and passes.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;

use arrow_array::{BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

mod common;

/// One partition: `rows` rows from generator `seed`.
fn partition(rows: usize, seed: u64) -> RecordBatch {
    let mut rng = fastrand::Rng::with_seed(seed);
    let some = |rng: &mut fastrand::Rng| rng.u8(0..10) > 1;
    let words = ["", "a", "émile", "日本", "zeta"];
    let k: Vec<Option<i64>> = (0..rows)
        .map(|_| some(&mut rng).then(|| rng.i64(-1_000_000..1_000_000)))
        .collect();
    let x: Vec<Option<f64>> = (0..rows)
        .map(|_| some(&mut rng).then(|| f64::from(rng.i32(-9999..9999))))
        .collect();
    let s: Vec<Option<&str>> = (0..rows)
        .map(|_| some(&mut rng).then(|| words[rng.usize(0..5)]))
        .collect();
    let d: Vec<Option<i32>> = (0..rows)
        .map(|_| some(&mut rng).then(|| rng.i32(8000..11000)))
        .collect();
    let cents: Vec<Option<i128>> = (0..rows)
        .map(|_| some(&mut rng).then(|| i128::from(rng.i64(-10_000_000..10_000_000))))
        .collect();
    let flag: Vec<Option<bool>> = (0..rows).map(|_| some(&mut rng).then(|| rng.bool())).collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("d", DataType::Date32, true),
            Field::new("amount", DataType::Decimal128(15, 2), true),
            Field::new("flag", DataType::Boolean, true),
        ])),
        vec![
            Arc::new(Int64Array::from(k)),
            Arc::new(Float64Array::from(x)),
            Arc::new(StringArray::from(s)),
            Arc::new(Date32Array::from(d)),
            Arc::new(Decimal128Array::from(cents).with_precision_and_scale(15, 2).unwrap()),
            Arc::new(BooleanArray::from(flag)),
        ],
    )
    .unwrap()
}

/// What the Python script prints for a file: rows, sum of k, sum of x,
/// non-null s, characters of s, days of d, cents of amount, true flags.
fn summary(b: &RecordBatch) -> String {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Decimal128Type, Float64Type, Int64Type};
    let c = |i: usize| b.column(i);
    let k: i64 = c(0).as_primitive::<Int64Type>().iter().flatten().sum();
    let x: f64 = c(1).as_primitive::<Float64Type>().iter().flatten().sum();
    let s = c(2).as_string::<i32>();
    let chars: usize = s.iter().flatten().map(|v| v.chars().count()).sum();
    let d: i64 = c(3).as_primitive::<Date32Type>().iter().flatten().map(i64::from).sum();
    let cents: i128 = c(4).as_primitive::<Decimal128Type>().iter().flatten().sum();
    let trues = c(5).as_boolean().iter().filter(|f| *f == Some(true)).count();
    format!(
        "{} {k} {} {} {chars} {d} {cents} {trues}",
        b.num_rows(),
        x as i64,
        s.len() - s.null_count()
    )
}

/// Prints `file system summary` for each file and system.
const SCRIPT: &str = r#"
import sys, glob, os
import pyarrow.parquet as pq, pyarrow.compute as pc, polars as pl, duckdb
def n(v):
    return 0 if v is None else v
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.parquet"))):
    name = os.path.basename(f)
    t = pq.read_table(f)
    print(name, "pyarrow", t.num_rows, n(pc.sum(t["k"]).as_py()), int(n(pc.sum(t["x"]).as_py())),
          t["s"].length() - t["s"].null_count, n(pc.sum(pc.utf8_length(t["s"])).as_py()),
          n(pc.sum(t["d"].cast("int32")).as_py()), int(n(pc.sum(t["amount"]).as_py()) * 100),
          n(pc.sum(t["flag"].cast("int64")).as_py()))
    df = pl.read_parquet(f)
    print(name, "polars", df.height, n(df["k"].sum()), int(n(df["x"].sum())), df["s"].count(),
          n(df["s"].str.len_chars().sum()), n(df["d"].cast(pl.Int32).sum()),
          int(n(df["amount"].sum()) * 100), n(df["flag"].sum()))
    r = duckdb.sql(f"""select count(*), sum(k), sum(x), count(s), sum(length(s)),
        sum(d - date '1970-01-01'), sum(amount), sum(flag::int) from read_parquet('{f}')""").fetchall()[0]
    print(name, "duckdb", r[0], n(r[1]), int(n(r[2])), r[3], n(r[4]), n(r[5]), int(n(r[6]) * 100), n(r[7]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_read_back_in_pyarrow_polars_and_duckdb() {
    let Some(venv) = common::peers::venv() else {
        println!(
            "skipped: no peers' venv (WEFT_PEERS_VENV or ~/.cache/weft-peers/venv; ../shared/peers/setup.sh makes it)"
        );
        return;
    };
    let python = venv.join("bin/python");
    let probe = Command::new(&python)
        .args(["-c", "import pyarrow, polars, duckdb"])
        .output()
        .unwrap();
    if !probe.status.success() {
        println!(
            "skipped: the venv lacks pyarrow, polars or duckdb: {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        return;
    }

    let (cluster, frames) = common::cluster().await;
    let sizes = [700, 0, 1500, 3];
    let batches: Vec<RecordBatch> = sizes.iter().zip(0..).map(|(&n, seed)| partition(n, seed)).collect();
    let mut parts = Vec::new();
    for b in &batches {
        parts.push(frames.from_batches(vec![b.clone()], 1).await.unwrap());
    }
    let frame = parts[0].concat(&parts[1..]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let written = frame.write_parquet(&out).await.unwrap();
    assert_eq!(written, sizes.iter().sum::<usize>() as u64);

    let run = Command::new(&python).args(["-c", SCRIPT, &out]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8(run.stdout).unwrap();
    let mut lines = 0;
    for line in stdout.lines() {
        let mut words = line.splitn(3, ' ');
        let (file, system, got) = (words.next().unwrap(), words.next().unwrap(), words.next().unwrap());
        let i: usize = file
            .trim_start_matches("part-")
            .trim_end_matches(".parquet")
            .parse()
            .unwrap();
        assert_eq!(got, summary(&batches[i]), "{system} reading {file}");
        lines += 1;
    }
    assert_eq!(lines, 3 * sizes.len(), "{stdout}");
    drop(frames);
    cluster.stop().await;
}
