//! Creating arrays: constants, ranges, seeded random values and host data.
//! Constants and generators are fused leaves: `random(..).sum()` generates
//! and sums each chunk in one task without storing it.

use serde::{Deserialize, Serialize};
use weft_runtime::{TaskSpec, ops::args};

use crate::array::{Array, GenLeaf, Layer, Leaf, chunk_key, unique_name};
use crate::chunks::{Chunks, strides, unravel};
use crate::dtype::{DType, Element, Scalar};
use crate::error::{ArrayError, Result};
use crate::expr::Program;
use crate::fuse::Gen;

/// An array of `shape` in chunks of `chunk` holding `value` as `dtype`.
pub fn full(shape: &[usize], chunk: &[usize], value: impl Into<Scalar>, dtype: DType) -> Result<Array> {
    let chunks = Chunks::regular(shape, chunk)?;
    Ok(Array::from_fused(
        Program::constant(value.into(), dtype),
        Vec::new(),
        shape.to_vec(),
        chunks,
    ))
}

/// Zeros.
pub fn zeros(shape: &[usize], chunk: &[usize], dtype: DType) -> Result<Array> {
    full(shape, chunk, 0i64, dtype)
}

/// Ones.
pub fn ones(shape: &[usize], chunk: &[usize], dtype: DType) -> Result<Array> {
    full(shape, chunk, 1i64, dtype)
}

fn generated(generator: Gen, shape: &[usize], chunk: &[usize]) -> Result<Array> {
    let chunks = Chunks::regular(shape, chunk)?;
    Ok(Array::from_fused(
        Program::leaf(generator.dtype()),
        vec![Leaf::Gen(GenLeaf::new(generator, chunks.clone()))],
        shape.to_vec(),
        chunks,
    ))
}

/// `start, start + step, ..` below `stop` (above, for a negative step), 1-d
/// in chunks of `chunk`: int64 when all three are integers, else float64.
pub fn arange(
    start: impl Into<Scalar>,
    stop: impl Into<Scalar>,
    step: impl Into<Scalar>,
    chunk: usize,
) -> Result<Array> {
    let (start, stop, step) = (start.into(), stop.into(), step.into());
    if step.as_f64() == 0.0 {
        return Err(ArrayError::Invalid("arange: a step of 0".into()));
    }
    let n = ((stop.as_f64() - start.as_f64()) / step.as_f64()).ceil().max(0.0) as usize;
    let generator = match (start, step) {
        (Scalar::Int(a), Scalar::Int(s)) if matches!(stop, Scalar::Int(_)) => Gen::RangeI64 { start: a, step: s },
        _ => Gen::RangeF64 {
            start: start.as_f64(),
            step: step.as_f64(),
        },
    };
    generated(generator, &[n], &[chunk])
}

/// `num` evenly spaced float64s from `start` to `stop` inclusive, 1-d.
pub fn linspace(start: f64, stop: f64, num: usize, chunk: usize) -> Result<Array> {
    let step = if num > 1 {
        (stop - start) / (num - 1) as f64
    } else {
        0.0
    };
    generated(Gen::RangeF64 { start, step }, &[num], &[chunk])
}

/// Seeded random arrays. Each chunk has its own seed, mixed from the
/// array's seed and the chunk's number in the grid, and element `k` of a
/// chunk is a counter-based draw (SplitMix64) from that seed and `k`; so the
/// same seed, shape and chunks give the same array on any cluster, in any
/// order. The values depend on the chunking: a different chunking gives
/// different (equally random) values.
pub mod random {
    use super::*;

    /// Uniform float64s in `[low, high)`.
    pub fn uniform(seed: u64, shape: &[usize], chunk: &[usize], low: f64, high: f64) -> Result<Array> {
        generated(Gen::Uniform { seed, low, high }, shape, chunk)
    }

    /// Uniform float64s in `[0, 1)` (NumPy's `random`).
    pub fn random(seed: u64, shape: &[usize], chunk: &[usize]) -> Result<Array> {
        uniform(seed, shape, chunk, 0.0, 1.0)
    }

    /// Normal float64s.
    pub fn normal(seed: u64, shape: &[usize], chunk: &[usize], mean: f64, std: f64) -> Result<Array> {
        generated(Gen::Normal { seed, mean, std }, shape, chunk)
    }
}

/// The arguments of `array.from_bytes`: one chunk's elements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FromBytes {
    /// Element type.
    pub dtype: DType,
    /// Chunk shape.
    pub shape: Vec<usize>,
    /// The elements, little-endian, C order.
    pub bytes: bytes::Bytes,
}

/// An array of host data (C order) of `shape`, in chunks of `chunk`; each
/// chunk's elements travel in its task's arguments.
pub fn from_slice<T: Element>(data: &[T], shape: &[usize], chunk: &[usize]) -> Result<Array> {
    let n: usize = shape.iter().product();
    if data.len() != n {
        return Err(ArrayError::Shape {
            op: "from_slice",
            left: vec![data.len()],
            right: shape.to_vec(),
        });
    }
    let chunks = Chunks::regular(shape, chunk)?;
    Ok(from_chunks_of(data, shape, chunks))
}

/// Like [`from_slice`] with a given chunk grid.
pub(crate) fn from_chunks_of<T: Element>(data: &[T], shape: &[usize], chunks: Chunks) -> Array {
    let name = unique_name("from-slice");
    let full = strides(shape);
    let tasks = (0..chunks.nblocks())
        .map(|i| {
            let b = chunks.unravel(i);
            let bshape = chunks.block_shape(&b);
            let offset = chunks.block_offset(&b);
            let block = copy_block(data, &full, &bshape, &offset);
            let fb = FromBytes {
                dtype: T::DTYPE,
                shape: bshape,
                bytes: bytes::Bytes::copy_from_slice(bytemuck::cast_slice(&block)),
            };
            TaskSpec::new(
                chunk_key(&name, i),
                "array.from_bytes",
                args(&fb).unwrap_or_default(),
                Vec::new(),
            )
        })
        .collect();
    let layer = Layer::new(name, tasks, Vec::new(), chunks.nblocks());
    Array::from_layer(layer, T::DTYPE, shape.to_vec(), chunks)
}

/// The elements of the block at `offset` of `bshape` out of a C-order array
/// with strides `full`.
pub(crate) fn copy_block<T: Copy>(data: &[T], full: &[usize], bshape: &[usize], offset: &[usize]) -> Vec<T> {
    let n: usize = bshape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    if bshape.is_empty() {
        out.push(data[0]);
        return out;
    }
    let row = bshape[bshape.len() - 1];
    let rows_shape = &bshape[..bshape.len() - 1];
    for r in 0..n / row {
        let idx = unravel(r, rows_shape);
        let start: usize = idx
            .iter()
            .zip(offset)
            .zip(full)
            .map(|((i, o), s)| (i + o) * s)
            .sum::<usize>()
            + offset[offset.len() - 1] * full[full.len() - 1];
        out.extend_from_slice(&data[start..start + row]);
    }
    out
}
