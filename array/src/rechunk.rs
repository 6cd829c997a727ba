//! Moving pieces of chunks into new chunks: `array.assemble` tasks copy
//! (strided) regions of their input chunks into one output chunk. Rechunking
//! and slicing lower to them. Fan-in is bounded: an output chunk needing
//! more than `max_fanin` pieces is assembled from intermediate chunks,
//! each half of the region split at an input boundary, recursively.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weft_runtime::{Key, TaskSpec, Value, ops::args};

use crate::array::{Array, Layer, chunk_key, unique_name};
use crate::block::{Out, View, decode_one};
use crate::chunks::{Chunks, strides, unravel};
use crate::dtype::DType;
use crate::error::{ArrayError, Result};

/// Pieces per assemble task unless told otherwise.
pub const DEFAULT_MAX_FANIN: usize = 32;

/// A region of input chunk `dep` copied into the output chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Index among the task's inputs.
    pub dep: u32,
    /// Where the region starts in the input chunk.
    pub src: Vec<usize>,
    /// The step between the elements taken, per axis (at least 1).
    pub step: Vec<usize>,
    /// Where it goes in the output chunk.
    pub dst: Vec<usize>,
    /// Its shape.
    pub size: Vec<usize>,
}

/// The arguments of `array.assemble`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssembleArgs {
    /// The element type.
    pub dtype: DType,
    /// The output chunk's shape.
    pub shape: Vec<usize>,
    /// The pieces, which cover the output exactly.
    pub pieces: Vec<Piece>,
}

/// Runs an `array.assemble` task.
pub fn run_assemble(args: &AssembleArgs, inputs: &[Arc<Value>]) -> Result<Value> {
    let views: Vec<View<'_>> = inputs.iter().map(|v| decode_one(v)).collect::<Result<_>>()?;
    let mut out = Out::new(args.dtype, &args.shape);
    let ost = strides(&args.shape);
    let nd = args.shape.len();
    crate::with_dtype!(args.dtype, T => {
        let dst = out.as_mut::<T>()?;
        for p in &args.pieces {
            let view = views.get(p.dep as usize).ok_or_else(|| ArrayError::Data("assemble: a missing input".into()))?;
            let src = view.data.as_slice::<T>().ok_or_else(|| ArrayError::Data(format!("assemble: a {} input for a {} chunk", view.dtype(), args.dtype)))?;
            let ist = strides(&view.shape);
            let fits = p.size.iter().enumerate().all(|(a, &n)| {
                n == 0 || (p.src[a] + (n - 1) * p.step[a] < view.shape[a] && p.dst[a] + n <= args.shape[a])
            });
            if p.src.len() != nd || view.shape.len() != nd || !fits {
                return Err(ArrayError::Data(format!("assemble: a piece {p:?} outside {:?} or {:?}", view.shape, args.shape)));
            }
            let n: usize = p.size.iter().product();
            if n == 0 {
                continue;
            }
            if nd == 0 {
                dst[0] = src[0];
                continue;
            }
            let row = p.size[nd - 1];
            let rows = &p.size[..nd - 1];
            for r in 0..n / row {
                let idx = unravel(r, rows);
                let mut so = (p.src[nd - 1]) * ist[nd - 1];
                let mut d = p.dst[nd - 1];
                for a in 0..nd - 1 {
                    so += (p.src[a] + idx[a] * p.step[a]) * ist[a];
                    d += (p.dst[a] + idx[a]) * ost[a];
                }
                let s = p.step[nd - 1];
                if s == 1 {
                    dst[d..d + row].copy_from_slice(&src[so..so + row]);
                } else {
                    for (k, x) in dst[d..d + row].iter_mut().enumerate() {
                        *x = src[so + k * s];
                    }
                }
            }
        }
    });
    out.finish()
}

/// The pieces of one axis: output positions `a..b` read source positions
/// `start + j * step`; per source chunk that holds some, `(chunk, local
/// start in it, output offset from a, count)`.
pub(crate) fn axis_pieces(
    src: &[usize],
    start: usize,
    step: usize,
    a: usize,
    b: usize,
) -> Vec<(usize, usize, usize, usize)> {
    let mut out = Vec::new();
    let mut lo = 0;
    for (k, &len) in src.iter().enumerate() {
        let hi = lo + len;
        let first = if lo > start { (lo - start).div_ceil(step) } else { 0 };
        let end = if hi > start { (hi - start).div_ceil(step) } else { 0 };
        let (j0, j1) = (first.max(a), end.min(b));
        if j0 < j1 {
            out.push((k, start + j0 * step - lo, j0 - a, j1 - j0));
        }
        lo = hi;
    }
    out
}

/// Builds output chunks from regions of `source`: output position `j` of
/// axis `ax` reads source position `map[ax].0 + j * map[ax].1`.
pub(crate) fn remap(
    source: &Array,
    map: &[(usize, usize)],
    shape: Vec<usize>,
    chunks: Chunks,
    max_fanin: usize,
    prefix: &str,
) -> Array {
    let src = source.layer();
    let name = unique_name(prefix);
    let mut tasks = Vec::new();
    let max_fanin = max_fanin.max(2);
    for i in 0..chunks.nblocks() {
        let b = chunks.unravel(i);
        let start = chunks.block_offset(&b);
        let size = chunks.block_shape(&b);
        let key = chunk_key(&name, i);
        region(
            &mut Ctx {
                source,
                src: &src,
                map,
                tasks: &mut tasks,
                max_fanin,
            },
            key,
            &start,
            &size,
        );
    }
    let layer = Layer::new(name, tasks, vec![src], chunks.nblocks());
    Array::from_layer(layer, source.dtype, shape, chunks)
}

struct Ctx<'a> {
    source: &'a Array,
    src: &'a Arc<Layer>,
    map: &'a [(usize, usize)],
    tasks: &'a mut Vec<TaskSpec>,
    max_fanin: usize,
}

/// Adds the task computing output region `start`/`size` under `key`,
/// splitting it while it needs more than `max_fanin` pieces.
fn region(cx: &mut Ctx<'_>, key: Key, start: &[usize], size: &[usize]) {
    let nd = size.len();
    let per_axis: Vec<Vec<(usize, usize, usize, usize)>> = (0..nd)
        .map(|a| {
            let (s, step) = cx.map[a];
            axis_pieces(cx.source.chunks.axis(a), s, step, start[a], start[a] + size[a])
        })
        .collect();
    let count: usize = per_axis.iter().map(Vec::len).product();
    if count > cx.max_fanin {
        // Split along the axis with the most pieces, at a piece boundary.
        let (axis, pieces) = per_axis
            .iter()
            .enumerate()
            .max_by_key(|(_, p)| p.len())
            .map(|(a, p)| (a, p.clone()))
            .unwrap_or_default();
        let cut = pieces[pieces.len() / 2].2;
        let mut halves = Vec::new();
        for (h, (s, n)) in [(0, cut), (cut, size[axis] - cut)].into_iter().enumerate() {
            let mut hs = start.to_vec();
            hs[axis] += s;
            let mut hz = size.to_vec();
            hz[axis] = n;
            let hkey = Key::from(format!("{key}-h{h}"));
            region(cx, hkey.clone(), &hs, &hz);
            halves.push((hkey, s, hz));
        }
        let pieces = halves
            .iter()
            .enumerate()
            .map(|(d, (_, s, hz))| {
                let mut dst = vec![0; nd];
                dst[axis] = *s;
                Piece {
                    dep: d as u32,
                    src: vec![0; nd],
                    step: vec![1; nd],
                    dst,
                    size: hz.clone(),
                }
            })
            .collect();
        let a = AssembleArgs {
            dtype: cx.source.dtype,
            shape: size.to_vec(),
            pieces,
        };
        let deps = halves.into_iter().map(|(k, _, _)| k).collect();
        cx.tasks
            .push(TaskSpec::new(key, "array.assemble", args(&a).unwrap_or_default(), deps));
        return;
    }
    let grid: Vec<usize> = per_axis.iter().map(Vec::len).collect();
    let mut deps = Vec::with_capacity(count);
    let mut pieces = Vec::with_capacity(count);
    for c in 0..count {
        let idx = unravel(c, &grid);
        let parts: Vec<&(usize, usize, usize, usize)> = idx.iter().enumerate().map(|(a, &i)| &per_axis[a][i]).collect();
        let block: Vec<usize> = parts.iter().map(|p| p.0).collect();
        deps.push(cx.src.key(cx.source.chunks.ravel(&block)));
        pieces.push(Piece {
            dep: c as u32,
            src: parts.iter().map(|p| p.1).collect(),
            step: (0..nd).map(|a| cx.map[a].1).collect(),
            dst: parts.iter().map(|p| p.2).collect(),
            size: parts.iter().map(|p| p.3).collect(),
        });
    }
    let a = AssembleArgs {
        dtype: cx.source.dtype,
        shape: size.to_vec(),
        pieces,
    };
    cx.tasks
        .push(TaskSpec::new(key, "array.assemble", args(&a).unwrap_or_default(), deps));
}

impl Array {
    /// The same array in chunks of at most `chunk[a]` along each axis.
    pub fn rechunk(&self, chunk: &[usize]) -> Result<Array> {
        let chunks = Chunks::regular(&self.shape, chunk)?;
        self.rechunk_to(chunks, DEFAULT_MAX_FANIN)
    }

    /// The same array in the given chunks, each assembled from at most
    /// `max_fanin` pieces per task (more go through intermediate chunks).
    pub fn rechunk_to(&self, chunks: Chunks, max_fanin: usize) -> Result<Array> {
        if chunks.shape() != self.shape {
            return Err(ArrayError::Shape {
                op: "rechunk",
                left: self.shape.clone(),
                right: chunks.shape(),
            });
        }
        if chunks == self.chunks {
            return Ok(self.clone());
        }
        let map = vec![(0, 1); self.ndim()];
        Ok(remap(self, &map, self.shape.clone(), chunks, max_fanin, "rechunk"))
    }
}
