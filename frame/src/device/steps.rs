//! The per-partition steps that run on device columns: filter (mask and
//! compaction), select, with_columns, limit, sort (order keys, by
//! successive stable radix sorts), equi-joins on integer keys (one int64
//! key, or several combined into one; sorted search) and
//! hash split (the CPU's row hash, so pieces match a CPU worker's);
//! aggregation is in [`super::aggregate`]. Each returns
//! [`Outcome::Host`] with the reason where a kernel is missing.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use weft_kernels::elementwise::{self, BinaryOp};
use weft_kernels::reduce::{self, Scalar};
use weft_kernels::{Column, DType, cast, frame_hash, logic, rows, select};

use super::batch::DeviceBatch;
use super::eval::{Eval, Outcome, evaluate};
use super::order::{order_keys, sort_perm};
use crate::error::FrameError;
use crate::expr::Expr;
use crate::join::{JoinSpec, JoinType};

fn host<T>(why: impl Into<String>) -> Eval<T> {
    Err(Outcome::Host(why.into()))
}

/// A batch without columns has rows the kernels cannot count from a mask.
fn check_has_columns(batch: &DeviceBatch, what: &str) -> Eval<()> {
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
        .map(|c| rows::compact(c, mask))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = columns.first().map_or(0, Column::len);
    Ok(DeviceBatch::new(batch.schema().clone(), columns, rows)?)
}

/// Rows where `predicate` holds.
pub fn filter_rows(batch: &DeviceBatch, predicate: &Expr) -> Eval<DeviceBatch> {
    check_has_columns(batch, "a filter")?;
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
    check_has_columns(batch, "a limit")?;
    compact(batch, &logic::prefix_mask(&batch.columns()[0], n)?)
}

/// Sorted by `by` (each key ascending or descending, nulls last, stable;
/// see `super::order`), cut to `limit` rows.
pub fn sort_rows(
    batch: &DeviceBatch,
    by: &[Expr],
    descending: &[bool],
    limit_rows: Option<usize>,
) -> Eval<DeviceBatch> {
    check_has_columns(batch, "a sort")?;
    let order = order_keys(batch, by, descending)?;
    let Some(perm) = sort_perm(&order.keys)? else {
        return Ok(batch.clone());
    };
    let columns = batch
        .columns()
        .iter()
        .map(|c| rows::gather(c, &perm))
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
    check_has_columns(batch, "a hash split")?;
    let mut columns = Vec::with_capacity(keys.len());
    for k in keys {
        let (c, t) = evaluate(k, batch)?;
        if !matches!(
            c.dtype(),
            DType::I32 | DType::I64 | DType::F32 | DType::F64 | DType::Bool | DType::Utf8
        ) {
            return host(format!("hashing a key of type {t}"));
        }
        // Decimals hash by their 128-bit values, as on the CPU.
        columns.push(match t {
            DataType::Decimal128(..) => frame_hash::decimal_words(&c)?,
            _ => c,
        });
    }
    let refs: Vec<&Column> = columns.iter().collect();
    let hashes = frame_hash::row_hash(&refs)?;
    let parts = u32::try_from(n).map_err(|_| Outcome::Failed(FrameError::Plan(format!("{n} pieces"))))?;
    let ids = frame_hash::buckets(&hashes, parts)?;
    (0..parts).map(|j| compact(batch, &logic::eq_mask(&ids, j)?)).collect()
}

/// A left join's right column `c` at the rows `idx`, null where a row is
/// [`weft_kernels::join::NO_ROW`] (unmatched): fixed-width columns
/// through `take_or_null`; utf8 and booleans gathered with row 0 standing
/// in for the missing rows, then masked (an empty right side has no row 0:
/// that join runs on the host).
fn take_right(c: &Column, idx: &Column) -> Eval<Column> {
    if !matches!(c.dtype(), DType::Bool | DType::Utf8) {
        return Ok(weft_kernels::join::take_or_null(c, idx)?);
    }
    if c.is_empty() {
        return host("a left join's utf8 or boolean columns of an empty right side");
    }
    let unmatched = logic::eq_mask(idx, weft_kernels::join::NO_ROW)?;
    let some_row = select::select(&unmatched, &logic::fill(idx, DType::U32, 0)?, idx)?;
    let got = rows::gather(c, &some_row)?;
    let valid = logic::and(&logic::is_null(&got, true)?, &logic::not(&unmatched)?)?;
    Ok(Column::new(
        c.dtype(),
        idx.len(),
        got.values().clone(),
        Some(valid.values().clone()),
        got.offsets().cloned(),
    )
    .map_err(super::batch::kernel_error)?)
}

/// A join key as int64: integer and date keys widen (the CPU joins them
/// as int64); decimals of one scale on both sides (`other`) join by their
/// unscaled values; other types run on the host.
fn int64_key(c: Column, t: &DataType, other: &DataType) -> Eval<Column> {
    match (t, other) {
        (DataType::Int64, _) => Ok(c),
        (DataType::Int32 | DataType::Date32, _) => Ok(cast::widen(&c)?),
        (DataType::Decimal128(_, s), DataType::Decimal128(_, o)) if s == o => Ok(c),
        (t, other) => host(format!(
            "a join key of types {t} and {other} (the device joins integer, date and same-scale decimal keys)"
        )),
    }
}

/// The join keys of each side as one int64 column: one key as it is;
/// several as `sum((k_i - lo_i) * stride_i)`, a mixed-radix number over
/// each key's range on both sides, where the ranges' product fits int64
/// (otherwise the join runs on the host). A null in any key stays null,
/// and null keys match nothing, as on the CPU.
fn join_keys(left: &DeviceBatch, right: &DeviceBatch, spec: &JoinSpec) -> Eval<(Column, Column)> {
    let mut pairs = Vec::with_capacity(spec.left_on.len());
    for (l, r) in spec.left_on.iter().zip(&spec.right_on) {
        let (lk, lt) = evaluate(&Expr::Column(l.clone()), left)?;
        let (rk, rt) = evaluate(&Expr::Column(r.clone()), right)?;
        pairs.push((int64_key(lk, &lt, &rt)?, int64_key(rk, &rt, &lt)?));
    }
    if pairs.len() == 1 {
        return Ok(pairs.swap_remove(0));
    }
    let mut ranges = Vec::with_capacity(pairs.len());
    let mut product: u128 = 1;
    for (lk, rk) in &pairs {
        let (a, b) = (reduce::reduce(lk)?, reduce::reduce(rk)?);
        let ints = |v: [Option<Scalar>; 2]| {
            v.into_iter().flatten().filter_map(|s| match s {
                Scalar::Int(i) => Some(i),
                Scalar::Float(_) => None,
            })
        };
        let lo = ints([a.min, b.min]).min().unwrap_or(0);
        let hi = ints([a.max, b.max]).max().unwrap_or(0);
        let range = (i128::from(hi) - i128::from(lo) + 1) as u128;
        product = product.saturating_mul(range);
        ranges.push((lo, range));
    }
    if product > i64::MAX as u128 {
        return host("a join on several keys whose value ranges do not fit one int64 together");
    }
    let mut stride: u128 = 1;
    let mut combined: Option<(Column, Column)> = None;
    for ((lk, rk), (lo, range)) in pairs.iter().zip(&ranges).rev() {
        let digit = |k: &Column| -> Eval<Column> {
            let shifted = elementwise::binary(k, &logic::fill(k, DType::I64, *lo as u64)?, BinaryOp::Sub)?;
            Ok(elementwise::binary(
                &shifted,
                &logic::fill(k, DType::I64, stride as u64)?,
                BinaryOp::Mul,
            )?)
        };
        let (l, r) = (digit(lk)?, digit(rk)?);
        combined = Some(match combined {
            None => (l, r),
            Some((al, ar)) => (
                elementwise::binary(&al, &l, BinaryOp::Add)?,
                elementwise::binary(&ar, &r, BinaryOp::Add)?,
            ),
        });
        stride *= range;
    }
    combined.ok_or_else(|| Outcome::Failed(FrameError::Plan("a join without keys".into())))
}

/// An equi-join, as [`crate::join::hash_join`] into `schema`, on integer,
/// date or decimal keys made one int64 key (`join_keys`): the right side
/// sorted and searched ([`weft_kernels::join`]); left columns gathered by
/// the pairs' left rows, right non-key columns by their right rows (null for a left
/// join's unmatched rows); semi and anti joins compact the left side by
/// its match counts. Keys of other types and several keys whose ranges do
/// not fit one int64 run on the host.
pub fn join(left: &DeviceBatch, right: &DeviceBatch, spec: &JoinSpec, schema: &Schema) -> Eval<DeviceBatch> {
    let (lk, rk) = join_keys(left, right, spec)?;
    let schema = Arc::new(schema.clone());
    if matches!(spec.how, JoinType::Semi | JoinType::Anti) {
        check_has_columns(left, "a semi or anti join")?;
        let unmatched = logic::eq_mask(&weft_kernels::join::counts(&rk, &lk)?, 0)?;
        let keep = if spec.how == JoinType::Anti {
            unmatched
        } else {
            logic::not(&unmatched)?
        };
        let out = compact(left, &keep)?;
        return Ok(DeviceBatch::new(schema, out.columns().to_vec(), out.num_rows())?);
    }
    let keep_unmatched = spec.how == JoinType::Left;
    let (p, b) = weft_kernels::join::pairs(&rk, &lk, keep_unmatched)?;
    let mut columns = left
        .columns()
        .iter()
        .map(|c| rows::gather(c, &p))
        .collect::<Result<Vec<_>, _>>()?;
    for (c, f) in right.columns().iter().zip(right.schema().fields()) {
        if spec.right_on.contains(f.name()) {
            continue;
        }
        columns.push(if keep_unmatched {
            take_right(c, &b)?
        } else {
            rows::gather(c, &b)?
        });
    }
    Ok(DeviceBatch::new(schema, columns, p.len())?)
}
