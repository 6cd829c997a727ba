//! TPC-H queries 1, 3, 5, 6 and 10 written with the lazy API (as the
//! peers' Polars versions are), over the `tpchgen-cli` Parquet layout
//! `DIR/{table}/*.parquet`, and the peers' checksum of a result.

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::error::{FrameError, Result};
use crate::expr::{Expr, col, len, lit, lit_date};
use crate::frame::{Frames, LazyFrame};
use crate::join::JoinType::Inner;

/// The queries this module has.
pub const QUERIES: [&str; 5] = ["tpch_q1", "tpch_q3", "tpch_q5", "tpch_q6", "tpch_q10"];

fn table(frames: &Frames, dir: &str, name: &str) -> Result<LazyFrame> {
    frames.read_parquet(&format!("{dir}/{name}/*.parquet"))
}

fn date(s: &str) -> Expr {
    lit_date(s).expect("a valid date literal")
}

fn revenue() -> Expr {
    col("l_extendedprice") * (lit(1) - col("l_discount"))
}

/// The query `name` over the dataset in `dir`.
pub fn query(frames: &Frames, dir: &str, name: &str) -> Result<LazyFrame> {
    let t = |n: &str| table(frames, dir, n);
    Ok(match name {
        "tpch_q1" => t("lineitem")?
            .filter(col("l_shipdate").lt_eq(date("1998-09-02")))
            .group_by([col("l_returnflag"), col("l_linestatus")])
            .agg([
                col("l_quantity").sum().alias("sum_qty"),
                col("l_extendedprice").sum().alias("sum_base_price"),
                revenue().sum().alias("sum_disc_price"),
                (revenue() * (lit(1) + col("l_tax"))).sum().alias("sum_charge"),
                col("l_quantity").mean().alias("avg_qty"),
                col("l_extendedprice").mean().alias("avg_price"),
                col("l_discount").mean().alias("avg_disc"),
                len().alias("count_order"),
            ])
            .sort([col("l_returnflag"), col("l_linestatus")], &[false, false]),
        "tpch_q3" => t("customer")?
            .filter(col("c_mktsegment").eq(lit("BUILDING")))
            .join(
                &t("orders")?.filter(col("o_orderdate").lt(date("1995-03-15"))),
                &["c_custkey"],
                &["o_custkey"],
                Inner,
            )
            .join(
                &t("lineitem")?.filter(col("l_shipdate").gt(date("1995-03-15"))),
                &["o_orderkey"],
                &["l_orderkey"],
                Inner,
            )
            .group_by([col("o_orderkey"), col("o_orderdate"), col("o_shippriority")])
            .agg([revenue().sum().alias("revenue")])
            .select([
                col("o_orderkey").alias("l_orderkey"),
                col("revenue"),
                col("o_orderdate"),
                col("o_shippriority"),
            ])
            .sort([col("revenue"), col("o_orderdate")], &[true, false])
            .head(10),
        "tpch_q5" => t("region")?
            .filter(col("r_name").eq(lit("ASIA")))
            .join(&t("nation")?, &["r_regionkey"], &["n_regionkey"], Inner)
            .join(&t("customer")?, &["n_nationkey"], &["c_nationkey"], Inner)
            .join(
                &t("orders")?.filter(
                    col("o_orderdate")
                        .gt_eq(date("1994-01-01"))
                        .and(col("o_orderdate").lt(date("1995-01-01"))),
                ),
                &["c_custkey"],
                &["o_custkey"],
                Inner,
            )
            .join(&t("lineitem")?, &["o_orderkey"], &["l_orderkey"], Inner)
            .join(
                &t("supplier")?,
                &["l_suppkey", "n_nationkey"],
                &["s_suppkey", "s_nationkey"],
                Inner,
            )
            .group_by([col("n_name")])
            .agg([revenue().sum().alias("revenue")])
            .sort([col("revenue")], &[true]),
        "tpch_q6" => t("lineitem")?
            .filter(
                col("l_shipdate")
                    .gt_eq(date("1994-01-01"))
                    .and(col("l_shipdate").lt(date("1995-01-01")))
                    .and(col("l_discount").is_between(lit(0.05), lit(0.07)))
                    .and(col("l_quantity").lt(lit(24))),
            )
            .select([(col("l_extendedprice") * col("l_discount")).sum().alias("revenue")]),
        "tpch_q10" => t("customer")?
            .join(
                &t("orders")?.filter(
                    col("o_orderdate")
                        .gt_eq(date("1993-10-01"))
                        .and(col("o_orderdate").lt(date("1994-01-01"))),
                ),
                &["c_custkey"],
                &["o_custkey"],
                Inner,
            )
            .join(
                &t("lineitem")?.filter(col("l_returnflag").eq(lit("R"))),
                &["o_orderkey"],
                &["l_orderkey"],
                Inner,
            )
            .join(&t("nation")?, &["c_nationkey"], &["n_nationkey"], Inner)
            .group_by(
                [
                    "c_custkey",
                    "c_name",
                    "c_acctbal",
                    "c_phone",
                    "n_name",
                    "c_address",
                    "c_comment",
                ]
                .map(col),
            )
            .agg([revenue().sum().alias("revenue")])
            .select(
                [
                    "c_custkey",
                    "c_name",
                    "revenue",
                    "c_acctbal",
                    "n_name",
                    "c_address",
                    "c_phone",
                    "c_comment",
                ]
                .map(col),
            )
            .sort([col("revenue")], &[true])
            .head(20),
        other => {
            return Err(FrameError::Plan(format!(
                "no TPC-H query {other:?}; there are {QUERIES:?}"
            )));
        }
    })
}

/// Python's `format(x, ".8g")`.
pub fn format_g8(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return if x == 0.0 { "0".into() } else { format!("{x}") };
    }
    let sci = format!("{x:.7e}");
    let (mantissa, exp) = sci.split_once('e').expect("a formatted exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if (-4..8).contains(&exp) {
        trim(format!("{x:.*}", (7 - exp).max(0) as usize))
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa.to_string()), exp.abs())
    }
}

/// The peers' check: `N rows; s1,s2,...` with the sum of each numeric
/// (integer, float or decimal) column, 8 significant digits.
pub fn checksum(batch: &RecordBatch) -> Result<String> {
    let mut sums = Vec::new();
    for c in batch.columns() {
        let t = c.data_type();
        if t.is_integer() || t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) {
            let f = arrow_cast::cast(c, &DataType::Float64)?;
            let f = f.as_primitive::<Float64Type>();
            let total: f64 = (0..f.len()).filter(|&i| f.is_valid(i)).map(|i| f.value(i)).sum();
            sums.push(format_g8(total));
        }
    }
    Ok(format!("{} rows; {}", batch.num_rows(), sums.join(",")))
}

/// The reference checksums (`tpch_answers.json`, recorded from DuckDB).
pub fn reference(query: &str, sf: f64) -> Option<&'static str> {
    let sf1 = [
        (
            "tpch_q1",
            "4 rows; 1.5092132e+08,2.2634383e+11,2.1503086e+11,2.2363538e+11,102.0465,153057.57,0.20008471,5916591",
        ),
        ("tpch_q3", "10 rows; 26354041,3830997.4,0"),
        ("tpch_q5", "5 rows; 2.6196731e+08"),
        ("tpch_q6", "1 rows; 1.2314108e+08"),
        ("tpch_q10", "20 rows; 1627573,12053383,75601.21"),
    ];
    let sf10 = [
        (
            "tpch_q1",
            "4 rows; 1.5082277e+09,2.2615665e+12,2.1484798e+12,2.2344389e+12,102.02988,152980.08,0.19997755,59142609",
        ),
        ("tpch_q3", "10 rows; 2.6396158e+08,4278340.9,0"),
        ("tpch_q5", "5 rows; 2.6544265e+09"),
        ("tpch_q6", "1 rows; 1.2301136e+09"),
        ("tpch_q10", "20 rows; 21021153,14720420,77583.72"),
    ];
    let table = if sf == 1.0 {
        &sf1
    } else if sf == 10.0 {
        &sf10
    } else {
        return None;
    };
    table.iter().find(|(q, _)| *q == query).map(|(_, a)| *a)
}

/// The peers' `same_answer`: same row count and number of sums, each
/// within `rel` relatively.
pub fn same_answer(a: &str, b: &str, rel: f64) -> bool {
    let parse = |s: &str| -> Option<(String, Vec<f64>)> {
        let (rows, sums) = s.split_once("; ")?;
        let sums = if sums.is_empty() {
            Vec::new()
        } else {
            sums.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<f64>>>()?
        };
        Some((rows.to_string(), sums))
    };
    match (parse(a), parse(b)) {
        (Some((ra, sa)), Some((rb, sb))) => {
            ra == rb
                && sa.len() == sb.len()
                && sa
                    .iter()
                    .zip(&sb)
                    .all(|(x, y)| (x - y).abs() <= rel * x.abs().max(y.abs()).max(1e-12))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_python() {
        for (x, s) in [
            (1.5092132e8, "1.5092132e+08"),
            (102.04650, "102.0465"),
            (5916591.0, "5916591"),
            (0.200084709, "0.20008471"),
            (26354041.0, "26354041"),
            (0.0, "0"),
            (3830997.43, "3830997.4"),
            (1.0e-5, "1e-05"),
            (123456789.0, "1.2345679e+08"),
        ] {
            assert_eq!(format_g8(x), s, "{x}");
        }
        assert!(same_answer("4 rows; 1.5,2", "4 rows; 1.50001,2", 5e-5));
        assert!(!same_answer("4 rows; 1.5,2", "3 rows; 1.5,2", 5e-5));
    }
}
