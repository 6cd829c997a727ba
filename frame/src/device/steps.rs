//! The per-partition steps that run on device columns: filter (mask and
//! compaction), select, with_columns, limit, sort (ascending int64/float64
//! keys, by successive stable radix sorts) and hash split (the CPU's row
//! hash, so pieces match a CPU worker's). Each returns
//! [`Outcome::Host`] with the reason where a kernel is missing.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use weft_kernels::{Column, DType, filter, frame_hash, logic, sort, take};

use super::batch::DeviceBatch;
use super::eval::{Eval, Outcome, evaluate};
use crate::error::FrameError;
use crate::expr::Expr;

fn host<T>(why: impl Into<String>) -> Eval<T> {
    Err(Outcome::Host(why.into()))
}

/// Filter and gather kernels take fixed-width numeric columns only.
fn check_compactable(batch: &DeviceBatch, what: &str) -> Eval<()> {
    for (c, f) in batch.columns().iter().zip(batch.schema().fields()) {
        if !matches!(c.dtype(), DType::I32 | DType::I64 | DType::F32 | DType::F64) {
            return host(format!("{what} of the {} column {:?}", f.data_type(), f.name()));
        }
    }
    if batch.columns().is_empty() {
        return host(format!("{what} of a batch without columns"));
    }
    Ok(())
}

/// The rows where `mask` is true (null counts as false).
fn compact(batch: &DeviceBatch, mask: &Column) -> Eval<DeviceBatch> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| filter::filter(c, mask))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = columns.first().map_or(0, Column::len);
    Ok(DeviceBatch::new(batch.schema().clone(), columns, rows)?)
}

/// Rows where `predicate` holds.
pub fn filter_rows(batch: &DeviceBatch, predicate: &Expr) -> Eval<DeviceBatch> {
    check_compactable(batch, "a filter")?;
    let (mask, t) = evaluate(predicate, batch)?;
    if t != DataType::Boolean {
        return Err(Outcome::Failed(FrameError::TypeMismatch {
            op: format!("filter {predicate}"),
            left: t,
            right: DataType::Boolean,
        }));
    }
    compact(batch, &mask)
}

/// The columns computed by `exprs` (nullability as [`crate::ops::select`]).
pub fn select(batch: &DeviceBatch, exprs: &[Expr]) -> Eval<DeviceBatch> {
    let mut fields = Vec::with_capacity(exprs.len());
    let mut columns = Vec::with_capacity(exprs.len());
    for e in exprs {
        let (c, t) = evaluate(e, batch)?;
        let nullable = match e.unaliased() {
            Expr::Column(name) => batch
                .schema()
                .field_with_name(name)
                .map(|f| f.is_nullable())
                .unwrap_or(true),
            _ => true,
        };
        fields.push(Field::new(e.output_name(), t, nullable));
        columns.push(c);
    }
    Ok(DeviceBatch::new(
        Arc::new(Schema::new(fields)),
        columns,
        batch.num_rows(),
    )?)
}

/// The columns, replaced or extended by `exprs`.
pub fn with_columns(batch: &DeviceBatch, exprs: &[Expr]) -> Eval<DeviceBatch> {
    let schema = crate::plan::with_columns_schema(batch.schema(), exprs)?;
    let mut columns = batch.columns().to_vec();
    for e in exprs {
        let (c, _) = evaluate(e, batch)?;
        match batch.schema().index_of(&e.output_name()) {
            Ok(i) => columns[i] = c,
            Err(_) => columns.push(c),
        }
    }
    Ok(DeviceBatch::new(Arc::new(schema), columns, batch.num_rows())?)
}

/// The first `n` rows.
pub fn limit(batch: &DeviceBatch, n: usize) -> Eval<DeviceBatch> {
    if n >= batch.num_rows() {
        return Ok(batch.clone());
    }
    check_compactable(batch, "a limit")?;
    compact(batch, &logic::prefix_mask(&batch.columns()[0], n)?)
}

/// Sorted by `by` (ascending, nulls last, stable), cut to `limit` rows.
pub fn sort_rows(
    batch: &DeviceBatch,
    by: &[Expr],
    descending: &[bool],
    limit_rows: Option<usize>,
) -> Eval<DeviceBatch> {
    if descending.iter().any(|d| *d) {
        return host("a descending sort (the radix argsort is ascending)");
    }
    check_compactable(batch, "a sort")?;
    let mut keys = Vec::with_capacity(by.len());
    for e in by {
        let (c, t) = evaluate(e, batch)?;
        if !matches!(c.dtype(), DType::I64 | DType::F64) {
            return host(format!("a sort key of type {t} (the argsort takes int64 and float64)"));
        }
        keys.push(c);
    }
    let Some((last, rest)) = keys.split_last() else {
        return Ok(batch.clone());
    };
    // Least significant key first; each later stable pass keeps its order.
    let mut perm = sort::argsort(last)?;
    for key in rest.iter().rev() {
        let pass = sort::argsort(&take::take(key, &perm)?)?;
        perm = take::take(&perm, &pass)?;
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| take::take(c, &perm))
        .collect::<Result<Vec<_>, _>>()?;
    let sorted = DeviceBatch::new(batch.schema().clone(), columns, batch.num_rows())?;
    match limit_rows {
        Some(n) => limit(&sorted, n),
        None => Ok(sorted),
    }
}

/// `n` pieces by the hash of `keys`, rows in their order within each.
pub fn hash_split(batch: &DeviceBatch, keys: &[Expr], n: usize) -> Eval<Vec<DeviceBatch>> {
    if n <= 1 {
        return Ok(vec![batch.clone()]);
    }
    check_compactable(batch, "a hash split")?;
    let mut columns = Vec::with_capacity(keys.len());
    for k in keys {
        let (c, t) = evaluate(k, batch)?;
        if !matches!(
            c.dtype(),
            DType::I32 | DType::I64 | DType::F32 | DType::F64 | DType::Bool | DType::Utf8
        ) {
            return host(format!("hashing a key of type {t}"));
        }
        columns.push(c);
    }
    let refs: Vec<&Column> = columns.iter().collect();
    let hashes = frame_hash::row_hash(&refs)?;
    let parts = u32::try_from(n).map_err(|_| Outcome::Failed(FrameError::Plan(format!("{n} pieces"))))?;
    let ids = frame_hash::buckets(&hashes, parts)?;
    (0..parts).map(|j| compact(batch, &logic::eq_mask(&ids, j)?)).collect()
}
