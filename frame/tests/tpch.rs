//! TPC-H queries 1, 3, 5, 6 and 10 at scale factor 0.01 give DuckDB's
//! answer on the same files. The data and DuckDB come from the peers' kit
//! (`tpchgen-cli` and `duckdb` in its venv, `../shared/peers/tpch.py`);
//! without them the test says so and passes.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use weft_frame::tpch::{QUERIES, checksum, query, same_answer};

mod common;

fn kit() -> Option<(PathBuf, PathBuf)> {
    let venv = common::peers::venv()?;
    let peers = common::peers::kit()?;
    venv.join("bin/tpchgen-cli").exists().then_some((venv, peers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_queries_match_duckdb_at_sf_0_01() {
    let Some((venv, peers)) = kit() else {
        println!("skipped: no peers' kit (venv with tpchgen-cli and duckdb, ../shared/peers/tpch.py)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let generated = Command::new(venv.join("bin/tpchgen-cli"))
        .args(["parquet", "-s", "0.01", "--parts", "2", "-o", &d])
        .status()
        .unwrap();
    assert!(generated.success());
    // Plain strings as the kit's data has them, and DuckDB's checksums.
    let script = format!(
        "import sys; sys.path.insert(0, {peers:?}); import tpch\n\
         tpch.plain_strings({d:?})\n\
         for q in {queries:?}:\n    t = tpch.sql_system('duckdb', {d:?}, q)()\n    \
         print(q + '=' + tpch.checksum(t.num_rows, tpch.numeric_columns(t)))\n",
        peers = peers.display().to_string(),
        queries = QUERIES,
    );
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answers = String::from_utf8(out.stdout).unwrap();

    let (cluster, frames) = common::cluster().await;
    for line in answers.lines() {
        let (q, reference) = line.split_once('=').unwrap();
        let result = query(&frames, &d, q).unwrap().collect().await.unwrap();
        let ours = checksum(&result).unwrap();
        println!("{q}: weft {ours} | duckdb {reference}");
        assert!(
            same_answer(&ours, reference, 5e-5),
            "{q}: weft {ours}, duckdb {reference}"
        );
    }
    drop(frames);
    cluster.stop().await;
}
