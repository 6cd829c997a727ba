//! Group-by aggregation on the device, with the CPU's result types
//! ([`crate::groupby::agg_type`]). With keys it is sort-based: rows ordered
//! by the keys' order keys (`super::order`: integers, float64, dates,
//! decimals, utf8, several of them), runs of equal keys
//! ([`segment::segments`]), one value per run ([`segment::segment_reduce`],
//! rows in their order, so float sums add as the CPU's do). Without keys
//! it is one reduction ([`reduce::reduce`]; float sums add in a tree, so
//! they may differ from the CPU's in the last bits). Decimals aggregate
//! their unscaled int64 values: sum, min and max exactly (a sum that could
//! pass 18 digits runs on the host), mean through float64 as on the CPU.
//! `n_unique` sorts by the keys and the value and counts the distinct
//! pairs per group. Dates take min, max, count and `n_unique`; inputs of
//! other types (booleans, unsigned, float32) run on the host.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use weft_gpu::Gpu;
use weft_kernels::reduce::{self, Scalar};
use weft_kernels::segment::{self, SegmentOp};
use weft_kernels::{Column, DType, cast, logic, rows, take};

use super::batch::{DeviceBatch, kernel_error};
use super::eval::{Eval, Outcome, evaluate};
use super::order::{column_keys, order_keys, sort_perm};
use crate::error::FrameError;
use crate::expr::{AggFunc, Expr};
use crate::groupby::{AggSpec, agg_type};

fn host<T>(why: impl Into<String>) -> Eval<T> {
    Err(Outcome::Host(why.into()))
}

/// An aggregate ready for the kernels.
enum Prepared {
    /// `len()`: rows per group.
    Rows,
    /// `op` over `column` (int32, int64 or float64 storage), giving the
    /// CPU's type `out`.
    Values {
        op: SegmentOp,
        column: Column,
        out: DataType,
    },
    /// `n_unique`: distinct values (null is one) by these order keys.
    Distinct(Vec<Column>),
}

/// `agg`'s input on the device, or why it runs on the host.
fn prepare(batch: &DeviceBatch, agg: &AggSpec) -> Eval<Prepared> {
    let op = match agg.func {
        AggFunc::NUnique => {
            let (c, t) = evaluate(&agg.input, batch)?;
            return Ok(Prepared::Distinct(column_keys(&c, &t, false)?));
        }
        AggFunc::Len => return Ok(Prepared::Rows),
        AggFunc::Sum => SegmentOp::Sum,
        AggFunc::Min => SegmentOp::Min,
        AggFunc::Max => SegmentOp::Max,
        AggFunc::Count => SegmentOp::Count,
        AggFunc::Mean => SegmentOp::Mean,
    };
    let (c, t) = evaluate(&agg.input, batch)?;
    // Where the CPU has no such aggregate, it reports the error.
    let Ok(out) = agg_type(agg.func, &t) else {
        return host(format!("{:?} of {t}", agg.func));
    };
    let column = match (op, &t) {
        (SegmentOp::Count, _) => valid_rows(&c)?,
        (SegmentOp::Mean, DataType::Int32 | DataType::Int64) => cast::to_f64(&c, 1.0)?,
        (SegmentOp::Mean, DataType::Decimal128(_, scale)) => cast::to_f64(&c, 10f64.powi(i32::from(*scale)))?,
        (SegmentOp::Sum, DataType::Decimal128(..)) => {
            exact_in_i64(&c)?;
            c
        }
        (_, DataType::Int32 | DataType::Int64 | DataType::Float64 | DataType::Decimal128(..)) => c,
        (SegmentOp::Min | SegmentOp::Max, DataType::Date32) => c,
        _ => return host(format!("{:?} of {t} on the device", agg.func)),
    };
    Ok(Prepared::Values { op, column, out })
}

/// A column whose valid rows are `c`'s, of a type the reductions take.
fn valid_rows(c: &Column) -> Eval<Column> {
    if matches!(c.dtype(), DType::I32 | DType::I64 | DType::F64) {
        return Ok(c.clone());
    }
    let zeros = logic::fill(c, DType::I64, 0)?;
    Ok(Column::new(DType::I64, c.len(), zeros.values().clone(), c.validity().cloned(), None).map_err(kernel_error)?)
}

/// Checks that no sum of `c`'s values (unscaled decimals) can leave int64,
/// where the CPU sums in 128 bits: the widest value times the count.
fn exact_in_i64(c: &Column) -> Eval<()> {
    let s = reduce::reduce(c)?;
    let widest = [s.min, s.max]
        .into_iter()
        .flatten()
        .map(|v| match v {
            Scalar::Int(i) => u128::from(i.unsigned_abs()),
            Scalar::Float(_) => u128::MAX,
        })
        .max()
        .unwrap_or(0);
    if widest.saturating_mul(u128::from(s.count)) > i64::MAX as u128 {
        return host("a decimal sum that could pass 18 digits");
    }
    Ok(())
}

/// `group_by(keys).agg(aggs)` of the batch, one row per group (in key
/// order, where the CPU gives them in order of first appearance); without
/// keys one row, made on `gpu`.
pub fn aggregate(batch: &DeviceBatch, keys: &[Expr], aggs: &[AggSpec], gpu: &Arc<Gpu>) -> Eval<DeviceBatch> {
    let order = order_keys(batch, keys, &[])?;
    let prepared = aggs.iter().map(|a| prepare(batch, a)).collect::<Eval<Vec<_>>>()?;
    let Some(perm) = sort_perm(&order.keys)? else {
        return global(batch, aggs, prepared, gpu);
    };
    let sorted = order
        .keys
        .iter()
        .map(|k| take::take(k, &perm))
        .collect::<Result<Vec<_>, _>>()?;
    let starts = segment::segments(&sorted.iter().collect::<Vec<_>>())?;
    let firsts = take::take(&perm, &starts)?;
    let mut fields = Vec::with_capacity(keys.len() + aggs.len());
    let mut columns = Vec::with_capacity(keys.len() + aggs.len());
    for (k, (c, t)) in keys.iter().zip(&order.values) {
        fields.push(Field::new(k.output_name(), t.clone(), true));
        columns.push(rows::gather(c, &firsts)?);
    }
    for (p, a) in prepared.into_iter().zip(aggs) {
        let (column, t) = match p {
            Prepared::Rows => (
                segment::segment_reduce(&sorted[0], &starts, SegmentOp::Rows)?,
                DataType::Int64,
            ),
            Prepared::Values { op, column, out } => {
                let reduced = segment::segment_reduce(&take::take(&column, &perm)?, &starts, op)?;
                // Min and max of dates come back as int64 days.
                match out {
                    DataType::Date32 => (cast::narrow(&reduced)?, out),
                    _ => (reduced, out),
                }
            }
            Prepared::Distinct(value_keys) => (distinct_per_group(&order.keys, value_keys)?, DataType::Int64),
        };
        fields.push(Field::new(a.name.clone(), t, true));
        columns.push(column);
    }
    Ok(DeviceBatch::new(Arc::new(Schema::new(fields)), columns, starts.len())?)
}

/// Where each run of equal rows starts once sorted by `keys` (order keys),
/// and the keys sorted; none without keys.
fn sorted_runs(keys: &[Column]) -> Eval<Option<(Column, Vec<Column>)>> {
    let Some(perm) = sort_perm(keys)? else {
        return Ok(None);
    };
    let sorted = keys
        .iter()
        .map(|k| take::take(k, &perm))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((segment::segments(&sorted.iter().collect::<Vec<_>>())?, sorted)))
}

/// `n_unique` per group: the distinct (group, value) pairs, sorted by the
/// group keys then the value, counted per group. Both sorts order the
/// groups by their keys, so the counts line up with the other aggregates.
fn distinct_per_group(group_keys: &[Column], value_keys: Vec<Column>) -> Eval<Column> {
    let groups = group_keys.len();
    let mut all = group_keys.to_vec();
    all.extend(value_keys);
    let Some((pairs, sorted)) = sorted_runs(&all)? else {
        return host("n_unique without keys or value");
    };
    let pair_groups = sorted[..groups]
        .iter()
        .map(|k| take::take(k, &pairs))
        .collect::<Result<Vec<_>, _>>()?;
    let starts = segment::segments(&pair_groups.iter().collect::<Vec<_>>())?;
    Ok(segment::segment_reduce(&pair_groups[0], &starts, SegmentOp::Rows)?)
}

/// The aggregates of the whole batch: one row.
fn global(batch: &DeviceBatch, aggs: &[AggSpec], prepared: Vec<Prepared>, gpu: &Arc<Gpu>) -> Eval<DeviceBatch> {
    let mut fields = Vec::with_capacity(aggs.len());
    let mut columns = Vec::with_capacity(aggs.len());
    for (p, a) in prepared.into_iter().zip(aggs) {
        let (value, t) = match p {
            Prepared::Rows => (Some(Scalar::Int(batch.num_rows() as i64)), DataType::Int64),
            Prepared::Values { op, column, out } => {
                let s = reduce::reduce(&column)?;
                let value = match op {
                    SegmentOp::Count => Some(Scalar::Int(s.count as i64)),
                    SegmentOp::Sum => (s.count > 0).then_some(s.sum),
                    SegmentOp::Min => s.min,
                    SegmentOp::Max => s.max,
                    SegmentOp::Mean => s.mean().map(Scalar::Float),
                    SegmentOp::Rows => Some(Scalar::Int(column.len() as i64)),
                };
                (value, out)
            }
            Prepared::Distinct(value_keys) => {
                let runs = sorted_runs(&value_keys)?.map_or(0, |(starts, _)| starts.len());
                (Some(Scalar::Int(runs as i64)), DataType::Int64)
            }
        };
        let host = match (&t, value) {
            (DataType::Float64, v) => Column::from_options(&[v.map(Scalar::as_f64)]),
            // The min or max of int32 days.
            (DataType::Date32, Some(Scalar::Int(i))) => Column::from_options(&[Some(i as i32)]),
            (DataType::Date32, None) => Column::from_options::<i32>(&[None]),
            (_, None) => Column::from_options::<i64>(&[None]),
            (_, Some(Scalar::Int(i))) => Column::from_options(&[Some(i)]),
            (_, Some(Scalar::Float(_))) => {
                return Err(Outcome::Failed(FrameError::Partition(format!(
                    "{}: a float result for {t}",
                    a.name
                ))));
            }
        };
        fields.push(Field::new(a.name.clone(), t, true));
        columns.push(host.to_device(gpu)?);
    }
    Ok(DeviceBatch::new(Arc::new(Schema::new(fields)), columns, 1)?)
}
