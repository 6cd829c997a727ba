//! How a partition travels as a task result: a [`Value`] whose header
//! lists its pieces (rows, the codec's batch header, how many frames),
//! and whose frames are the pieces' Arrow buffers one after the other
//! (`weft_kernels::codec`: every Arrow buffer is a frame, nothing is
//! serialised). A shuffle's split result has one piece per output
//! partition; [`piece`] picks one without copying.

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};
use weft_runtime::Value;

use crate::error::{FrameError, Result};

/// One piece of a partition value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Its rows.
    pub rows: u64,
    /// The codec's header of the batch.
    pub batch: Vec<u8>,
    /// How many of the value's frames are its buffers.
    pub frames: u32,
    /// How the frames hold the columns.
    pub layout: Layout,
}

/// How a piece's frames hold its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Arrow arrays (`weft_kernels::codec::encode_batch`), on the host.
    Arrow,
    /// Kernel columns ([`crate::device::DeviceBatch`]), as a GPU worker
    /// keeps them: device buffers there, host buffers once fetched.
    Columns,
}

/// The header of a partition value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The pieces, in order.
    pub pieces: Vec<Piece>,
}

impl Header {
    /// Rows of each piece.
    pub fn rows(&self) -> Vec<u64> {
        self.pieces.iter().map(|p| p.rows).collect()
    }
}

fn codec(e: weft_kernels::KernelError) -> FrameError {
    FrameError::Partition(e.to_string())
}

/// A value holding `pieces`.
pub fn encode(pieces: &[RecordBatch]) -> Result<Value> {
    let mut header = Header { pieces: Vec::new() };
    let mut frames = Vec::new();
    for batch in pieces {
        let (h, f) = weft_kernels::codec::encode_batch(batch).map_err(codec)?;
        header.pieces.push(Piece {
            rows: batch.num_rows() as u64,
            batch: h.to_vec(),
            frames: f.len() as u32,
            layout: Layout::Arrow,
        });
        frames.extend(f);
    }
    let mut value = Value::encode(&header).map_err(FrameError::Partition)?;
    value.frames = frames;
    Ok(value)
}

/// The header of a partition value.
pub fn header(value: &Value) -> Result<Header> {
    value.decode::<Header>().map_err(FrameError::Partition)
}

/// Every piece of a partition value, in order.
pub fn decode(value: &Value) -> Result<Vec<RecordBatch>> {
    let h = header(value)?;
    let mut at = 0usize;
    let mut out = Vec::with_capacity(h.pieces.len());
    for p in &h.pieces {
        let end = at + p.frames as usize;
        let frames = value.frames.get(at..end).ok_or_else(|| {
            FrameError::Partition(format!("{} frames, a piece needs {at}..{end}", value.frames.len()))
        })?;
        out.push(match p.layout {
            Layout::Arrow => weft_kernels::codec::decode_batch(&p.batch, frames).map_err(codec)?,
            Layout::Columns => crate::device::DeviceBatch::decode(&p.batch, frames)?.download()?,
        });
        at = end;
    }
    Ok(out)
}

/// Piece `i` of a split value, as a value of its own (no copy).
pub fn piece(value: &Value, i: usize) -> Result<Value> {
    let h = header(value)?;
    let Some(p) = h.pieces.get(i) else {
        return Err(FrameError::Partition(format!(
            "piece {i} of a value with {} pieces",
            h.pieces.len()
        )));
    };
    let at: usize = h.pieces[..i].iter().map(|p| p.frames as usize).sum();
    let frames = value
        .frames
        .get(at..at + p.frames as usize)
        .ok_or_else(|| FrameError::Partition(format!("a value of {} frames", value.frames.len())))?;
    let mut out = Value::encode(&Header {
        pieces: vec![p.clone()],
    })
    .map_err(FrameError::Partition)?;
    out.frames = frames.to_vec();
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
        assert_eq!(header(&value).unwrap().rows(), [2, 0]);
        assert_eq!(decode(&value).unwrap(), [a.clone(), empty.clone()]);
        assert_eq!(decode(&piece(&value, 1).unwrap()).unwrap(), [empty]);
        assert!(piece(&value, 2).unwrap_err().to_string().contains("2 pieces"));
    }
}
