//! Hash partitioning: the split side of a shuffle. Every key column is
//! hashed with a fixed function (the same in every process and on every
//! machine, so both sides of a join agree), integers and dates as int64.

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::DataType;

use crate::error::{FrameError, Result};
use crate::eval::evaluate;
use crate::expr::Expr;

/// splitmix64's finaliser: a fixed, well-mixed 64-bit hash of a word.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    h
}

/// Combines each row's hash of `array` into `hashes`.
fn hash_column(array: &ArrayRef, hashes: &mut [u64]) -> Result<()> {
    let t = array.data_type();
    let combine = |h: &mut u64, v: u64| *h = mix(*h ^ v).wrapping_add(0x9e37_79b9);
    if t.is_integer() || *t == DataType::Date32 || *t == DataType::Boolean {
        let ints = arrow_cast::cast(array, &DataType::Int64)?;
        for (h, v) in hashes.iter_mut().zip(ints.as_primitive::<Int64Type>().iter()) {
            combine(h, v.map_or(0, |v| v as u64));
        }
    } else if t.is_floating() {
        let f = arrow_cast::cast(array, &DataType::Float64)?;
        for (h, v) in hashes.iter_mut().zip(f.as_primitive::<Float64Type>().iter()) {
            combine(h, v.map_or(0, |v| (v + 0.0).to_bits()));
        }
    } else if let DataType::Decimal128(..) = t {
        for (h, v) in hashes.iter_mut().zip(array.as_primitive::<Decimal128Type>().iter()) {
            let v = v.unwrap_or(0) as u128;
            combine(h, mix(v as u64) ^ (v >> 64) as u64);
        }
    } else if matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        let s = arrow_cast::cast(array, &DataType::Utf8)?;
        for (h, v) in hashes.iter_mut().zip(s.as_string::<i32>().iter()) {
            combine(h, v.map_or(0, |v| hash_bytes(v.as_bytes())));
        }
    } else {
        return Err(FrameError::Unsupported {
            op: "hash partitioning".into(),
            data_type: t.clone(),
        });
    }
    Ok(())
}

/// Each row's partition among `n` by the hash of `keys`.
pub fn partition_ids(batch: &RecordBatch, keys: &[Expr], n: usize) -> Result<Vec<u32>> {
    let mut hashes = vec![0u64; batch.num_rows()];
    for k in keys {
        hash_column(&evaluate(k, batch)?, &mut hashes)?;
    }
    Ok(hashes.iter().map(|h| ((*h >> 16) % n as u64) as u32).collect())
}

/// Splits `batch` into `n` batches by the hash of `keys`; rows keep their
/// order within each piece.
pub fn hash_split(batch: &RecordBatch, keys: &[Expr], n: usize) -> Result<Vec<RecordBatch>> {
    if n <= 1 {
        return Ok(vec![batch.clone()]);
    }
    let ids = partition_ids(batch, keys, n)?;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (row, &p) in ids.iter().enumerate() {
        rows[p as usize].push(row as u32);
    }
    rows.into_iter().map(|r| take_rows(batch, r)).collect()
}

/// The rows `rows` of `batch`, in that order.
pub fn take_rows(batch: &RecordBatch, rows: Vec<u32>) -> Result<RecordBatch> {
    let idx = UInt32Array::from(rows);
    Ok(arrow_select::take::take_record_batch(batch, &idx)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::col;
    use arrow_array::{Int32Array, Int64Array, StringArray};
    use arrow_schema::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn pieces_cover_the_rows_and_equal_keys_meet_whatever_the_int_type() {
        let n = 1000;
        let keys64: Vec<i64> = (0..n).map(|i| (i * 7919) % 97).collect();
        let b64 = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new("s", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int64Array::from(keys64.clone())),
                Arc::new(StringArray::from_iter_values(keys64.iter().map(|k| format!("key{k}")))),
            ],
        )
        .unwrap();
        let b32 = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int32, false)])),
            vec![Arc::new(Int32Array::from_iter_values(keys64.iter().map(|&k| k as i32)))],
        )
        .unwrap();
        let pieces = hash_split(&b64, &[col("k")], 7).unwrap();
        assert_eq!(pieces.iter().map(|p| p.num_rows()).sum::<usize>(), n as usize);
        assert!(pieces.iter().all(|p| p.num_rows() > 0));
        assert_eq!(
            partition_ids(&b64, &[col("k")], 7).unwrap(),
            partition_ids(&b32, &[col("k")], 7).unwrap()
        );
        let by_string = partition_ids(&b64, &[col("s"), col("k")], 5).unwrap();
        for (i, a) in by_string.iter().enumerate() {
            for (j, b) in by_string.iter().enumerate().skip(i) {
                if keys64[i] == keys64[j] {
                    assert_eq!(a, b);
                }
            }
        }
    }
}
