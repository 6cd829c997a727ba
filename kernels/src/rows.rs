//! Row selection of a column of any kernel type: [`gather`] (fixed-width
//! values through [`crate::take`], booleans through bit gathers, utf8
//! through [`crate::strings::take_utf8`]) and [`compact`] (the rows where a
//! mask is true: [`crate::filter`] for numeric columns, otherwise the kept
//! row numbers gathered).

use crate::{Column, DType, KernelError, filter, logic, strings, take};

/// The rows `idx` (U32, no nulls) of `x`, in that order.
pub fn gather(x: &Column, idx: &Column) -> Result<Column, KernelError> {
    match x.dtype() {
        DType::Utf8 => strings::take_utf8(x, idx),
        DType::Bool => {
            let values = logic::take_bits(x, Some(x.values()), idx)?;
            let validity = x.validity().map(|v| logic::take_bits(x, Some(v), idx)).transpose()?;
            Column::new(DType::Bool, idx.len(), values, validity, None)
        }
        _ => take::take(x, idx),
    }
}

/// The row numbers where `mask` is true (null counts as false).
pub fn kept_rows(mask: &Column) -> Result<Column, KernelError> {
    let rows = logic::iota(mask, mask.len())?;
    // filter takes numeric columns: the row numbers travel as i32 bits.
    let as_i32 = Column::new(DType::I32, rows.len(), rows.values().clone(), None, None)?;
    let kept = filter::filter(&as_i32, mask)?;
    Column::new(DType::U32, kept.len(), kept.values().clone(), None, None)
}

/// The rows of `x` where `mask` is true (null counts as false).
pub fn compact(x: &Column, mask: &Column) -> Result<Column, KernelError> {
    match x.dtype() {
        DType::I32 | DType::I64 | DType::F32 | DType::F64 => filter::filter(x, mask),
        _ => gather(x, &kept_rows(mask)?),
    }
}
