//! Arrow record batches and kernel columns as a task's `Value`: a small
//! postcard header plus one frame per buffer, in both directions, without
//! copying a buffer.
//!
//! A host batch becomes its arrays' buffers (any arrow type, nested ones
//! included); columns on a device keep their device buffers as frames, so a
//! partition on a GPU worker never leaves the device to become a value.
//! Decoding checks every length against the header and validates the
//! arrays, so a malformed value is an error, never a misread.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Int64Array, RecordBatch, StringArray};
//! use weft_kernels::codec::{decode_batch, encode_batch};
//!
//! let batch = RecordBatch::try_from_iter([
//!     ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
//!     ("name", Arc::new(StringArray::from(vec!["a", "b", "c"])) as _),
//! ])?;
//! let (header, frames) = encode_batch(&batch)?;
//! assert_eq!(decode_batch(&header, &frames)?, batch);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, make_array};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use arrow_data::transform::MutableArrayData;
use arrow_data::{ArrayData, ArrayDataBuilder};
use arrow_schema::{DataType, Schema};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weft_gpu::Buffer;

use crate::{Column, DType, KernelError};

/// How one array's buffers follow in the frames (depth first: its null
/// bitmap if any, its buffers, then its children).
#[derive(Serialize, Deserialize)]
struct ArrayHeader {
    data_type: DataType,
    len: usize,
    offset: usize,
    /// Bit offset of the null bitmap, when there is one.
    nulls: Option<usize>,
    buffers: usize,
    children: Vec<ArrayHeader>,
}

#[derive(Serialize, Deserialize)]
struct BatchHeader {
    schema: Schema,
    rows: usize,
    columns: Vec<ArrayHeader>,
}

#[derive(Serialize, Deserialize)]
struct ColumnHeader {
    dtype: DType,
    len: usize,
    validity: bool,
    offsets: bool,
}

fn bad(reason: String) -> KernelError {
    KernelError::InvalidArgument {
        kernel: "codec",
        reason,
    }
}

fn encode_header<T: Serialize>(header: &T) -> Result<Bytes, KernelError> {
    postcard::to_stdvec(header)
        .map(Bytes::from)
        .map_err(|e| bad(format!("cannot write the header: {e}")))
}

fn decode_header<'a, T: Deserialize<'a>>(header: &'a [u8], what: &str) -> Result<T, KernelError> {
    postcard::from_bytes(header).map_err(|e| bad(format!("not a {what} header ({} bytes): {e}", header.len())))
}

/// A batch as a header and its buffers as frames (no copy, except arrays
/// that are small slices of much larger buffers, which are compacted so a
/// `head(10)` does not ship the whole column).
pub fn encode_batch(batch: &RecordBatch) -> Result<(Bytes, Vec<Buffer>), KernelError> {
    let mut frames = Vec::new();
    let columns = batch
        .columns()
        .iter()
        .map(|c| Ok(encode_array(&compact(c.to_data())?, &mut frames)))
        .collect::<Result<_, KernelError>>()?;
    let header = BatchHeader {
        schema: batch.schema().as_ref().clone(),
        rows: batch.num_rows(),
        columns,
    };
    Ok((encode_header(&header)?, frames))
}

/// The batch [`encode_batch`] wrote. Host frames at an address arrow cannot
/// read in place are copied once (see [`Buffer::to_arrow`]); device frames
/// are an error (bring them to the host, or use [`decode_columns`]).
pub fn decode_batch(header: &[u8], frames: &[Buffer]) -> Result<RecordBatch, KernelError> {
    let header: BatchHeader = decode_header(header, "record batch")?;
    if header.columns.len() != header.schema.fields().len() {
        return Err(bad(format!(
            "{} columns for {} fields",
            header.columns.len(),
            header.schema.fields().len()
        )));
    }
    let mut frames = frames.iter();
    let columns = header
        .columns
        .iter()
        .map(|h| decode_array(h, &mut frames).map(make_array))
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    if frames.next().is_some() {
        return Err(bad("more frames than the header names".into()));
    }
    let options = RecordBatchOptions::new().with_row_count(Some(header.rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(header.schema),
        columns,
        &options,
    )?)
}

/// Copies an array that uses less than half of the memory it references,
/// when that wastes more than 64 KiB.
fn compact(data: ArrayData) -> Result<ArrayData, KernelError> {
    let used = data.get_slice_memory_size()?;
    if data.get_buffer_memory_size().saturating_sub(used) <= used.max(64 << 10) {
        return Ok(data);
    }
    let mut copy = MutableArrayData::new(vec![&data], false, data.len());
    copy.try_extend(0, 0, data.len())?;
    Ok(copy.freeze())
}

fn encode_array(data: &ArrayData, frames: &mut Vec<Buffer>) -> ArrayHeader {
    let nulls = data.nulls().map(|n| {
        frames.push(Buffer::from(n.buffer().clone()));
        n.offset()
    });
    frames.extend(data.buffers().iter().cloned().map(Buffer::from));
    ArrayHeader {
        data_type: data.data_type().clone(),
        len: data.len(),
        offset: data.offset(),
        nulls,
        buffers: data.buffers().len(),
        children: data.child_data().iter().map(|c| encode_array(c, frames)).collect(),
    }
}

fn next_host<'a>(frames: &mut impl Iterator<Item = &'a Buffer>) -> Result<arrow_buffer::Buffer, KernelError> {
    let frame = frames
        .next()
        .ok_or_else(|| bad("fewer frames than the header names".into()))?;
    frame.to_arrow().ok_or(KernelError::WrongPlace {
        what: "decoding a record batch",
        device: frame.location(),
    })
}

fn decode_array<'a>(h: &ArrayHeader, frames: &mut impl Iterator<Item = &'a Buffer>) -> Result<ArrayData, KernelError> {
    let nulls = match h.nulls {
        Some(bit_offset) => {
            let bits = next_host(frames)?;
            if bits.len() * 8 < bit_offset + h.len {
                return Err(bad(format!("null bitmap of {} bytes for {} rows", bits.len(), h.len)));
            }
            Some(NullBuffer::new(BooleanBuffer::new(bits, bit_offset, h.len)))
        }
        None => None,
    };
    let buffers = (0..h.buffers)
        .map(|_| next_host(frames))
        .collect::<Result<Vec<_>, _>>()?;
    let children = h
        .children
        .iter()
        .map(|c| decode_array(c, frames))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ArrayDataBuilder::new(h.data_type.clone())
        .len(h.len)
        .offset(h.offset)
        .nulls(nulls)
        .buffers(buffers)
        .child_data(children)
        .build()?)
}

/// Kernel columns (host or device) as a header and their buffers as
/// frames: values, then validity and offsets where the column has them.
pub fn encode_columns(columns: &[Column]) -> Result<(Bytes, Vec<Buffer>), KernelError> {
    let mut frames = Vec::new();
    let headers: Vec<ColumnHeader> = columns
        .iter()
        .map(|c| {
            frames.push(c.values().clone());
            frames.extend(c.validity().cloned());
            frames.extend(c.offsets().cloned());
            ColumnHeader {
                dtype: c.dtype(),
                len: c.len(),
                validity: c.validity().is_some(),
                offsets: c.offsets().is_some(),
            }
        })
        .collect();
    Ok((encode_header(&headers)?, frames))
}

/// The columns [`encode_columns`] wrote, on whichever device their frames
/// are (sizes checked as [`Column::new`] checks them).
pub fn decode_columns(header: &[u8], frames: &[Buffer]) -> Result<Vec<Column>, KernelError> {
    let headers: Vec<ColumnHeader> = decode_header(header, "column")?;
    let mut frames = frames.iter().cloned();
    let mut next = || {
        frames
            .next()
            .ok_or_else(|| bad("fewer frames than the header names".into()))
    };
    let columns = headers
        .iter()
        .map(|h| {
            let values = next()?;
            let validity = h.validity.then(&mut next).transpose()?;
            let offsets = h.offsets.then(&mut next).transpose()?;
            Column::new(h.dtype, h.len, values, validity, offsets)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if frames.next().is_some() {
        return Err(bad("more frames than the header names".into()));
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use arrow_array::types::Int32Type;
    use arrow_array::{
        Array, Decimal128Array, Float64Array, Int32Array, Int64Array, ListArray, StringArray, StructArray,
    };
    use arrow_schema::Field;
    use weft_gpu::Gpu;

    use super::*;

    fn sample() -> RecordBatch {
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
            Some(vec![Some(4)]),
        ]);
        let inner = StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Float64, true)),
            Arc::new(Float64Array::from(vec![Some(0.5), None, Some(2.5), Some(-1.0)])) as ArrayRef,
        )]);
        RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), Some("bc"), None, Some("")])) as _,
            ),
            (
                "d",
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), Some(-1), None, Some(0)])
                        .with_precision_and_scale(15, 2)
                        .expect("valid precision"),
                ) as _,
            ),
            ("l", Arc::new(list) as _),
            ("st", Arc::new(inner) as _),
        ])
        .expect("a batch")
    }

    #[test]
    fn batches_round_trip_sharing_their_buffers() {
        let batch = sample();
        let (header, frames) = encode_batch(&batch).expect("encodes");
        let back = decode_batch(&header, &frames).expect("decodes");
        assert_eq!(back, batch);
        let k = back.column(0).to_data();
        let sent = batch.column(0).to_data();
        assert_eq!(k.buffers()[0].as_ptr(), sent.buffers()[0].as_ptr(), "no copy");
    }

    #[test]
    fn small_slices_are_compacted_and_offsets_kept_otherwise() {
        let big = Int64Array::from_iter_values(0..20_000);
        let strings = StringArray::from_iter_values((0..20_000).map(|i| format!("row {i}")));
        let batch = RecordBatch::try_from_iter([("k", Arc::new(big) as ArrayRef), ("s", Arc::new(strings) as _)])
            .expect("a batch");
        let head = batch.slice(5, 3);
        let (header, frames) = encode_batch(&head).expect("encodes");
        assert!(frames.iter().map(Buffer::len).sum::<usize>() < 100, "{frames:?}");
        assert_eq!(decode_batch(&header, &frames).expect("decodes"), head);
        let most = batch.slice(100, 19_000);
        let (header, frames) = encode_batch(&most).expect("encodes");
        let values = batch.column(1).to_data().buffers()[1].as_ptr();
        assert_eq!(
            frames[2].as_host().expect("host").as_ptr(),
            values,
            "shared, not copied"
        );
        assert_eq!(decode_batch(&header, &frames).expect("decodes"), most);
    }

    #[test]
    fn frames_at_odd_addresses_are_realigned() {
        let batch = sample();
        let (header, frames) = encode_batch(&batch).expect("encodes");
        let odd: Vec<Buffer> = frames
            .iter()
            .map(|f| {
                let mut v = vec![0u8; f.len() + 1];
                v[1..].copy_from_slice(f.as_host().expect("host"));
                Buffer::host(bytes::Bytes::from(v).slice(1..))
            })
            .collect();
        assert_eq!(decode_batch(&header, &odd).expect("decodes"), batch);
    }

    #[test]
    fn malformed_values_are_errors() {
        let batch = sample();
        let (header, frames) = encode_batch(&batch).expect("encodes");
        let err = decode_batch(&header, &frames[..frames.len() - 1]).expect_err("frames missing");
        assert!(err.to_string().contains("frames"), "{err}");
        let err = decode_batch(&header[..header.len() / 2], &frames).expect_err("header cut");
        assert!(err.to_string().contains("header"), "{err}");
        let mut short = frames.clone();
        short[1] = Buffer::from_vec(vec![0u8; 1]); // the values of `k`
        assert!(
            decode_batch(&header, &short).is_err(),
            "a buffer too short for its rows"
        );
        let int32 =
            RecordBatch::try_from_iter([("i", Arc::new(Int32Array::from(vec![1])) as ArrayRef)]).expect("a batch");
        let (h32, _) = encode_batch(&int32).expect("encodes");
        assert!(
            decode_columns(&h32, &frames).is_err(),
            "a batch header is not a column header"
        );
    }

    #[test]
    fn device_columns_stay_on_the_device() {
        let gpu = Gpu::emulated(0, 1 << 20, false);
        let host = Column::from_options(&[Some(1.5f64), None, Some(3.0)]);
        let strings = Column::from_arrow(&StringArray::from(vec!["x", "yz"])).expect("utf8");
        let cols = vec![host.to_device(&gpu).expect("upload"), strings];
        let (header, frames) = encode_columns(&cols).expect("encodes");
        assert_eq!(frames.len(), 4);
        assert!(frames[0].as_device().is_some() && frames[2].as_host().is_some());
        let back = decode_columns(&header, &frames).expect("decodes");
        assert_eq!(back[0].device(), gpu.device());
        let arrow = back[0].to_host().expect("download").to_arrow().expect("arrow");
        assert_eq!(
            arrow.as_ref(),
            &Float64Array::from(vec![Some(1.5), None, Some(3.0)]) as &dyn Array
        );
        assert_eq!(back[1].to_arrow().expect("arrow").len(), 2);
        assert!(decode_columns(&header, &frames[..3]).is_err());
    }
}
