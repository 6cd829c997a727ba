//! Range partitioning, the exchange of a distributed sort. Each partition
//! gives a sample of its sort keys ([`sample`]); one task picks boundaries
//! from all the samples ([`boundaries`]); each partition then splits its
//! rows by them ([`range_split`]), so that output partition `j` holds the
//! keys after boundary `j - 1` up to boundary `j`, and the outputs, each
//! sorted locally and read in order, are the sorted frame.
//!
//! Keys compare as arrow-row encodings made with each key's direction and
//! nulls last, so multi-key, descending and null rows all order by one
//! byte comparison, the same one the local sort's order agrees with.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_ord::sort::SortOptions;
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{Field, Schema};

use crate::error::{FrameError, Result};
use crate::eval::evaluate;
use crate::expr::Expr;

/// Sort-key rows sampled from each partition.
pub const SAMPLE_ROWS: usize = 64;

/// The byte-comparable rows of `keys` ordered as `descending` says, nulls last.
fn encode(keys: &[ArrayRef], descending: &[bool]) -> Result<Rows> {
    let fields = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let options = SortOptions {
                descending: descending.get(i).copied().unwrap_or(false),
                nulls_first: false,
            };
            SortField::new_with_options(k.data_type().clone(), options)
        })
        .collect();
    Ok(RowConverter::new(fields)?.convert_columns(keys)?)
}

/// The key columns as a batch of columns `key0`, `key1`, ...
fn key_batch(keys: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    let fields: Vec<Field> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Field::new(format!("key{i}"), k.data_type().clone(), true))
        .collect();
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        keys,
        &options,
    )?)
}

/// The sort keys `by` of at most `n` rows of `batch`, evenly spaced (so a
/// sorted partition gives its quantiles), as columns `key0`, `key1`, ...
pub fn sample(batch: &RecordBatch, by: &[Expr], n: usize) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let picked: Vec<u32> = if rows <= n {
        (0..rows as u32).collect()
    } else {
        (0..n).map(|i| (i * rows / n) as u32).collect()
    };
    let idx = UInt32Array::from(picked);
    let keys = by
        .iter()
        .map(|e| Ok(arrow_select::take::take(&evaluate(e, batch)?, &idx, None)?))
        .collect::<Result<Vec<_>>>()?;
    key_batch(keys, idx.len())
}

/// At most `n - 1` strictly increasing boundaries among `samples` (the
/// concatenated [`sample`]s), at even quantiles; a batch like the samples.
pub fn boundaries(samples: &RecordBatch, descending: &[bool], n: usize) -> Result<RecordBatch> {
    let rows = encode(samples.columns(), descending)?;
    let mut order: Vec<usize> = (0..samples.num_rows()).collect();
    order.sort_unstable_by(|&a, &b| rows.row(a).cmp(&rows.row(b)));
    let mut picked: Vec<u32> = Vec::with_capacity(n.saturating_sub(1));
    for i in 1..n {
        let Some(&row) = order.get(i * order.len() / n) else {
            break;
        };
        if picked
            .last()
            .is_none_or(|&last| rows.row(last as usize) < rows.row(row))
        {
            picked.push(row as u32);
        }
    }
    Ok(arrow_select::take::take_record_batch(
        samples,
        &UInt32Array::from(picked),
    )?)
}

/// Splits `batch` into `n` pieces by its sort keys `by`: piece `i` holds
/// the rows after boundary `i - 1` and up to boundary `i` (rows equal to
/// a boundary go with it); pieces past the last boundary are empty.
pub fn range_split(
    batch: &RecordBatch,
    by: &[Expr],
    descending: &[bool],
    boundaries: &RecordBatch,
    n: usize,
) -> Result<Vec<RecordBatch>> {
    if boundaries.num_columns() != by.len() || boundaries.num_rows() >= n.max(1) {
        return Err(FrameError::Partition(format!(
            "{} boundaries of {} keys for {n} ranges of {} keys",
            boundaries.num_rows(),
            boundaries.num_columns(),
            by.len()
        )));
    }
    let keys = by.iter().map(|e| evaluate(e, batch)).collect::<Result<Vec<_>>>()?;
    // Boundaries and rows encoded together, so one converter orders both.
    let bounds = boundaries.num_rows();
    let both = keys
        .iter()
        .zip(boundaries.columns())
        .map(|(k, b)| {
            let b = arrow_cast::cast(b, k.data_type())?;
            Ok(arrow_select::concat::concat(&[b.as_ref(), k.as_ref()])?)
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = encode(&both, descending)?;
    let bound_rows: Vec<_> = (0..bounds).map(|b| rows.row(b)).collect();
    let mut pieces: Vec<Vec<u32>> = vec![Vec::new(); n.max(1)];
    for row in 0..batch.num_rows() {
        let r = rows.row(bounds + row);
        pieces[bound_rows.partition_point(|b| *b < r)].push(row as u32);
    }
    pieces
        .into_iter()
        .map(|p| crate::shuffle::take_rows(batch, p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::col;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Array, Int64Array, StringArray};
    use arrow_schema::DataType;

    fn batch(k: Vec<Option<i64>>, s: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, true),
                Field::new("s", DataType::Utf8, true),
            ])),
            vec![Arc::new(Int64Array::from(k)), Arc::new(StringArray::from(s))],
        )
        .unwrap()
    }

    #[test]
    fn ranges_cover_the_rows_in_order_with_nulls_last() {
        let mut rng = fastrand::Rng::with_seed(5);
        let n = 500;
        let k: Vec<Option<i64>> = (0..n).map(|_| (rng.u8(0..10) > 0).then(|| rng.i64(0..40))).collect();
        let s: Vec<Option<&str>> = (0..n).map(|_| Some(["a", "b", "c"][rng.usize(0..3)])).collect();
        let b = batch(k, s);
        for descending in [[false, false], [true, false], [true, true]] {
            let by = [col("k"), col("s")];
            let samples = sample(&b, &by, 50).unwrap();
            assert_eq!(samples.num_rows(), 50);
            let bounds = boundaries(&samples, &descending, 4).unwrap();
            assert!(bounds.num_rows() <= 3 && bounds.num_rows() > 0);
            let pieces = range_split(&b, &by, &descending, &bounds, 4).unwrap();
            assert_eq!(pieces.len(), 4);
            assert_eq!(pieces.iter().map(|p| p.num_rows()).sum::<usize>(), n);
            // The pieces, each sorted and put one after the other, are sorted.
            let sorted: Vec<RecordBatch> = pieces
                .iter()
                .map(|p| crate::ops::sort(p, &by, &descending, None).unwrap())
                .collect();
            let all = arrow_select::concat::concat_batches(&b.schema(), &sorted).unwrap();
            let whole = crate::ops::sort(&b, &by, &descending, None).unwrap();
            assert_eq!(all.column(0), whole.column(0), "{descending:?}");
            assert_eq!(all.column(1), whole.column(1), "{descending:?}");
            let nulls = all.column(0).as_primitive::<Int64Type>();
            assert!(nulls.is_null(n - 1), "nulls last, {descending:?}");
        }
    }

    #[test]
    fn one_repeated_key_makes_no_boundary_twice() {
        let b = batch(vec![Some(7); 100], vec![Some("x"); 100]);
        let samples = sample(&b, &[col("k")], 10).unwrap();
        let bounds = boundaries(&samples, &[false], 5).unwrap();
        assert_eq!(bounds.num_rows(), 1);
        let pieces = range_split(&b, &[col("k")], &[false], &bounds, 5).unwrap();
        assert_eq!(
            pieces.iter().map(|p| p.num_rows()).collect::<Vec<_>>(),
            [100, 0, 0, 0, 0]
        );
        let none = boundaries(&sample(&b.slice(0, 0), &[col("k")], 10).unwrap(), &[false], 5).unwrap();
        assert_eq!(none.num_rows(), 0);
        let err = range_split(&b, &[col("k"), col("s")], &[false], &bounds, 5).unwrap_err();
        assert!(err.to_string().contains("boundaries"), "{err}");
    }
}
