//! `reshape` where the chunks allow it, and `map_blocks`. A reshape that
//! keeps every chunk whole (Dask's rule: within each group of axes merged
//! or split, only the first axis is chunked, and its chunks split evenly)
//! relabels each chunk's header: one task per chunk, no copy of the data.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weft_runtime::{TaskSpec, Value, ops::args};

use crate::array::{Array, Layer, chunk_key, unique_name};
use crate::block::{Meta, decode};
use crate::chunks::Chunks;
use crate::dtype::DType;
use crate::error::{ArrayError, Result};

/// The arguments of `array.reshape`: the chunk's new shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshapeArgs {
    /// The new shape (same number of elements).
    pub shape: Vec<usize>,
}

/// Runs an `array.reshape` task: the same frame under a new header.
pub fn run_reshape(args: &ReshapeArgs, input: &Value) -> Result<Value> {
    let views = decode(input)?;
    let [view] = views.as_slice() else {
        return Err(ArrayError::Data("reshape: a chunk of more than one frame".into()));
    };
    if view.shape.iter().product::<usize>() != args.shape.iter().product::<usize>() {
        return Err(ArrayError::Shape {
            op: "reshape",
            left: view.shape.clone(),
            right: args.shape.clone(),
        });
    }
    let meta = vec![Meta {
        dtype: view.dtype(),
        shape: args.shape.clone(),
    }];
    let mut value = Value::encode(&meta).map_err(ArrayError::Data)?;
    value.frames = input.frames.clone();
    Ok(value)
}

impl Array {
    /// The same elements (C order) in a new shape, where each chunk stays
    /// whole; otherwise an error naming the chunks to change (rechunk first).
    pub fn reshape(&self, shape: &[usize]) -> Result<Array> {
        let bad = || ArrayError::Shape {
            op: "reshape",
            left: self.shape.clone(),
            right: shape.to_vec(),
        };
        if self.shape.iter().product::<usize>() != shape.iter().product::<usize>() {
            return Err(bad());
        }
        if shape == self.shape.as_slice() {
            return Ok(self.clone());
        }
        if self.is_empty() {
            let chunk: Vec<usize> = shape.iter().map(|&n| n.max(1)).collect();
            return crate::create::full(shape, &chunk, 0i64, self.dtype);
        }
        // Axes of length 1 take no part in the grouping.
        let ins: Vec<usize> = (0..self.ndim()).filter(|&a| self.shape[a] != 1).collect();
        let outs: Vec<usize> = (0..shape.len()).filter(|&a| shape[a] != 1).collect();
        let mut out_chunks: Vec<Vec<usize>> = shape.iter().map(|&n| vec![n]).collect();
        let (mut i, mut j) = (0, 0);
        while i < ins.len() {
            let (i0, j0) = (i, j);
            let (mut pi, mut po) = (self.shape[ins[i]], shape[outs[j]]);
            i += 1;
            j += 1;
            while pi != po {
                if pi < po {
                    pi *= self.shape[ins[i]];
                    i += 1;
                } else {
                    po *= shape[outs[j]];
                    j += 1;
                }
            }
            let group_in = &ins[i0..i];
            let group_out = &outs[j0..j];
            if let Some(&a) = group_in[1..].iter().find(|&&a| self.chunks.axis(a).len() != 1) {
                return Err(ArrayError::Invalid(format!(
                    "reshape {:?} to {shape:?}: axis {a} is chunked {:?}; rechunk it to one chunk first",
                    self.shape,
                    self.chunks.axis(a)
                )));
            }
            let inner_in: usize = group_in[1..].iter().map(|&a| self.shape[a]).product();
            let inner_out: usize = group_out[1..].iter().map(|&a| shape[a]).product();
            let mut first = Vec::new();
            for &c in self.chunks.axis(group_in[0]) {
                if !(c * inner_in).is_multiple_of(inner_out) {
                    return Err(ArrayError::Invalid(format!(
                        "reshape {:?} to {shape:?}: chunks {:?} of axis {} do not split into whole rows of {inner_out}; rechunk first",
                        self.shape,
                        self.chunks.axis(group_in[0]),
                        group_in[0]
                    )));
                }
                first.push(c * inner_in / inner_out);
            }
            out_chunks[group_out[0]] = first;
        }
        let chunks = Chunks(out_chunks);
        let src = self.layer();
        let name = unique_name("reshape");
        let tasks = (0..chunks.nblocks())
            .map(|k| {
                let b = chunks.unravel(k);
                let r = ReshapeArgs {
                    shape: chunks.block_shape(&b),
                };
                TaskSpec::new(
                    chunk_key(&name, k),
                    "array.reshape",
                    args(&r).unwrap_or_default(),
                    vec![src.key(k)],
                )
            })
            .collect();
        let n = chunks.nblocks();
        Ok(Array::from_layer(
            Layer::new(name, tasks, vec![src], n),
            self.dtype,
            shape.to_vec(),
            chunks,
        ))
    }

    /// Applies the user op `op` (registered on the workers) to every chunk:
    /// it gets `op_args` and the chunk (read it with
    /// [`crate::block::decode_one`], write with [`crate::block::Out`]) and
    /// returns a chunk of the same shape and of type `dtype`.
    pub fn map_blocks(&self, op: &str, op_args: Bytes, dtype: DType) -> Array {
        let src = self.layer();
        let name = unique_name(&format!("map-{op}"));
        let n = self.chunks.nblocks();
        let tasks = (0..n)
            .map(|k| TaskSpec::new(chunk_key(&name, k), op.to_string(), op_args.clone(), vec![src.key(k)]))
            .collect();
        Array::from_layer(
            Layer::new(name, tasks, vec![src], n),
            dtype,
            self.shape.clone(),
            self.chunks.clone(),
        )
    }
}
