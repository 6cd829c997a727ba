//! Sort and group keys on the device: each key expression's values as
//! order keys ([`weft_kernels::keys`]: int64 columns whose ascending radix
//! order is the value's order, reversed for a descending key; one per 7
//! bytes of a utf8 key), and the stable permutation that sorts by all of
//! them (nulls last, as the CPU sorts). Runs of equal order keys are the
//! CPU's groups: a null equals a null, floats compare by their bits, and
//! decimals by their unscaled values.

use arrow_schema::DataType;
use weft_kernels::{Column, DType, keys, sort, take};

use super::batch::DeviceBatch;
use super::eval::{Eval, Outcome, evaluate};
use crate::expr::Expr;

/// Key expressions evaluated on the device, with their order keys.
pub(super) struct OrderKeys {
    /// Each expression's value and arrow type.
    pub(super) values: Vec<(Column, DataType)>,
    /// The order keys of all of them, most significant first.
    pub(super) keys: Vec<Column>,
}

/// Evaluates `exprs` and makes their order keys (`descending[i]` reverses
/// key `i`; missing entries are ascending). Types without order keys
/// (booleans, unsigned and 32-bit float columns) run on the host.
pub(super) fn order_keys(batch: &DeviceBatch, exprs: &[Expr], descending: &[bool]) -> Eval<OrderKeys> {
    let mut out = OrderKeys {
        values: Vec::with_capacity(exprs.len()),
        keys: Vec::with_capacity(exprs.len()),
    };
    for (i, e) in exprs.iter().enumerate() {
        let (c, t) = evaluate(e, batch)?;
        out.keys
            .extend(column_keys(&c, &t, descending.get(i).copied().unwrap_or(false))?);
        out.values.push((c, t));
    }
    Ok(out)
}

/// The order keys of one value `c` of arrow type `t`.
pub(super) fn column_keys(c: &Column, t: &DataType, descending: bool) -> Eval<Vec<Column>> {
    let supported = matches!(
        t,
        DataType::Int32
            | DataType::Int64
            | DataType::Float64
            | DataType::Date32
            | DataType::Decimal128(..)
            | DataType::Utf8
    );
    if !supported {
        return Err(Outcome::Host(format!(
            "a sort or group-by key of type {t} (order keys take integers, float64, dates, decimals and utf8)"
        )));
    }
    let chunks = match c.dtype() {
        DType::Utf8 => keys::utf8_chunks(c)?,
        _ => 1,
    };
    Ok((0..chunks)
        .map(|chunk| keys::order_key(c, chunk, descending))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The stable order of the order keys (most significant first), or none
/// without keys: the least significant key first, each later stable pass
/// keeping its order.
pub(super) fn sort_perm(keys: &[Column]) -> Eval<Option<Column>> {
    let Some((last, rest)) = keys.split_last() else {
        return Ok(None);
    };
    let mut perm = sort::argsort(last)?;
    for key in rest.iter().rev() {
        let pass = sort::argsort(&take::take(key, &perm)?)?;
        perm = take::take(&perm, &pass)?;
    }
    Ok(Some(perm))
}
