//! How a partition travels as a task result: a [`Value`] whose header
//! counts the pieces and their rows, and one frame per piece holding an
//! Arrow IPC stream of one batch. A shuffle's split result has one piece
//! per output partition; [`piece`] picks one without copying.
//!
//! This is the one place that knows the layout; it moves to the runtime's
//! zero-copy batch codec when that lands.

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use serde::{Deserialize, Serialize};
use weft_runtime::Value;
use weft_transport::Frame;

use crate::error::{FrameError, Result};

/// The header of a partition value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Rows of each piece.
    pub rows: Vec<u64>,
}

/// One batch as an IPC stream.
fn encode_batch(batch: &RecordBatch) -> Result<bytes::Bytes> {
    let mut out = Vec::with_capacity(batch.get_array_memory_size() + 1024);
    let mut writer = StreamWriter::try_new(&mut out, batch.schema_ref())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out.into())
}

fn decode_batch(bytes: &bytes::Bytes) -> Result<RecordBatch> {
    let mut decoder = StreamDecoder::new();
    let mut buffer = Buffer::from(bytes.clone());
    let mut batch = None;
    while !buffer.is_empty() {
        if let Some(b) = decoder.decode(&mut buffer)? {
            batch = Some(b);
        }
    }
    decoder.finish()?;
    batch.ok_or_else(|| FrameError::Partition("an IPC stream without a batch".into()))
}

/// A value holding `pieces`, one frame each.
pub fn encode(pieces: &[RecordBatch]) -> Result<Value> {
    let header = Header {
        rows: pieces.iter().map(|b| b.num_rows() as u64).collect(),
    };
    let mut value = Value::encode(&header).map_err(FrameError::Partition)?;
    for batch in pieces {
        value.frames.push(Frame::host(encode_batch(batch)?));
    }
    Ok(value)
}

/// The header of a partition value.
pub fn header(value: &Value) -> Result<Header> {
    value.decode::<Header>().map_err(FrameError::Partition)
}

/// Every piece of a partition value, in order.
pub fn decode(value: &Value) -> Result<Vec<RecordBatch>> {
    value
        .frames
        .iter()
        .map(|f| {
            let bytes = f
                .as_host()
                .ok_or_else(|| FrameError::Partition("a partition frame in device memory".into()))?;
            decode_batch(bytes)
        })
        .collect()
}

/// Piece `i` of a split value, as a value of its own (no copy).
pub fn piece(value: &Value, i: usize) -> Result<Value> {
    let h = header(value)?;
    let (Some(rows), Some(frame)) = (h.rows.get(i), value.frames.get(i)) else {
        return Err(FrameError::Partition(format!(
            "piece {i} of a value with {} pieces",
            h.rows.len()
        )));
    };
    let mut out = Value::encode(&Header { rows: vec![*rows] }).map_err(FrameError::Partition)?;
    out.frames.push(frame.clone());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn pieces_round_trip_and_pick() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let a = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec!["x", "y"])),
            ],
        )
        .unwrap();
        let empty = RecordBatch::new_empty(schema);
        let value = encode(&[a.clone(), empty.clone()]).unwrap();
        assert_eq!(header(&value).unwrap().rows, [2, 0]);
        assert_eq!(decode(&value).unwrap(), [a.clone(), empty.clone()]);
        assert_eq!(decode(&piece(&value, 1).unwrap()).unwrap(), [empty]);
        assert!(piece(&value, 2).unwrap_err().to_string().contains("2 pieces"));
    }
}
