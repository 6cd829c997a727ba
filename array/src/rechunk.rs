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
    /// The step between the elements taken, per axis: negative reads
    /// backwards from `src`, 0 repeats one element.
    pub step: Vec<isize>,
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
    assemble(args, &views)
}

/// The chunk `args` makes of the pieces of `views`.
pub(crate) fn assemble(args: &AssembleArgs, views: &[View<'_>]) -> Result<Value> {
    let mut out = Out::new(args.dtype, &args.shape);
    let ost = strides(&args.shape);
    let nd = args.shape.len();
    crate::with_dtype!(args.dtype, T => {
        let dst = out.as_mut::<T>()?;
        for p in &args.pieces {
            let view = views.get(p.dep as usize).ok_or_else(|| ArrayError::Data("assemble: a missing input".into()))?;
            let src = view.data.as_slice::<T>().ok_or_else(|| ArrayError::Data(format!("assemble: a {} input for a {} chunk", view.dtype(), args.dtype)))?;
            let ist = strides(&view.shape);
            // The last element a piece reads along axis `a` (the first, for
            // a negative step) must be inside the input chunk.
            let fits = p.size.iter().enumerate().all(|(a, &n)| {
                let last = p.src.get(a).map(|&s| s as isize + (n as isize - 1) * p.step.get(a).copied().unwrap_or(1));
                n == 0
                    || (last.is_some_and(|l| (l as usize) < view.shape[a] && l >= 0)
                        && p.src[a] < view.shape[a]
                        && p.dst[a] + n <= args.shape[a])
            });
            if p.src.len() != nd || p.step.len() != nd || view.shape.len() != nd || !fits {
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
                // Signed: a negative step walks back from `src`.
                let mut so = (p.src[nd - 1] * ist[nd - 1]) as isize;
                let mut d = p.dst[nd - 1];
                for a in 0..nd - 1 {
                    so += (p.src[a] as isize + idx[a] as isize * p.step[a]) * ist[a] as isize;
                    d += (p.dst[a] + idx[a]) * ost[a];
                }
                let s = p.step[nd - 1] * ist[nd - 1] as isize;
                if s == 1 {
                    let so = so as usize;
                    dst[d..d + row].copy_from_slice(&src[so..so + row]);
                } else {
                    for (k, x) in dst[d..d + row].iter_mut().enumerate() {
                        *x = src[(so + k as isize * s) as usize];
                    }
                }
            }
        }
    });
    out.finish()
}

/// Which source position each output position of one axis reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AxisMap {
    /// Output position `j` reads `start + j * step` (`step` of any sign).
    Step {
        /// The source position of output position 0.
        start: usize,
        /// The distance between the positions read.
        step: isize,
    },
    /// Output position `j` reads `positions[j]`.
    Take(Arc<Vec<usize>>),
}

impl AxisMap {
    /// The whole axis, in order.
    pub(crate) const ALL: AxisMap = AxisMap::Step { start: 0, step: 1 };

    fn at(&self, j: usize) -> usize {
        match self {
            AxisMap::Step { start, step } => (*start as isize + j as isize * step) as usize,
            AxisMap::Take(positions) => positions[j],
        }
    }
}

/// One run of an axis: output positions `dst..dst + len` (relative to the
/// region) read positions `src, src + step, ...` of source chunk `chunk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) chunk: usize,
    pub(crate) src: usize,
    pub(crate) dst: usize,
    pub(crate) len: usize,
    pub(crate) step: isize,
}

/// The runs of output positions `a..b` of one axis over the source chunks
/// `src` (lengths): maximal stretches within one source chunk at a
/// constant step.
pub(crate) fn axis_runs(src: &[usize], map: &AxisMap, a: usize, b: usize) -> Vec<Run> {
    let bounds: Vec<usize> = src
        .iter()
        .scan(0, |end, &len| {
            *end += len;
            Some(*end)
        })
        .collect();
    let locate = |p: usize| bounds.partition_point(|&end| end <= p);
    let mut runs: Vec<Run> = Vec::new();
    for j in a..b {
        let p = map.at(j);
        let chunk = locate(p);
        let local = p - (bounds[chunk] - src[chunk]);
        if let Some(last) = runs.last_mut()
            && last.chunk == chunk
        {
            let step = local as isize - last.src as isize;
            if last.len == 1 || last.src as isize + last.len as isize * last.step == local as isize {
                if last.len == 1 {
                    last.step = step;
                }
                last.len += 1;
                continue;
            }
        }
        runs.push(Run {
            chunk,
            src: local,
            dst: j - a,
            len: 1,
            step: 1,
        });
    }
    runs
}

/// Builds output chunks from regions of `source`: output position `j` of
/// axis `ax` reads source position `map[ax]` of `j`.
pub(crate) fn remap(
    source: &Array,
    map: &[AxisMap],
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
    map: &'a [AxisMap],
    tasks: &'a mut Vec<TaskSpec>,
    max_fanin: usize,
}

/// Adds the task computing output region `start`/`size` under `key`,
/// splitting it while it needs more than `max_fanin` pieces.
fn region(cx: &mut Ctx<'_>, key: Key, start: &[usize], size: &[usize]) {
    let nd = size.len();
    let per_axis: Vec<Vec<Run>> = (0..nd)
        .map(|a| axis_runs(cx.source.chunks.axis(a), &cx.map[a], start[a], start[a] + size[a]))
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
        let cut = pieces[pieces.len() / 2].dst;
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
        let parts: Vec<&Run> = idx.iter().enumerate().map(|(a, &i)| &per_axis[a][i]).collect();
        let block: Vec<usize> = parts.iter().map(|p| p.chunk).collect();
        deps.push(cx.src.key(cx.source.chunks.ravel(&block)));
        pieces.push(Piece {
            dep: c as u32,
            src: parts.iter().map(|p| p.src).collect(),
            step: parts.iter().map(|p| p.step).collect(),
            dst: parts.iter().map(|p| p.dst).collect(),
            size: parts.iter().map(|p| p.len).collect(),
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

/// How a rechunk moves its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RechunkOptions {
    /// Pieces per assemble task: an output chunk needing more is assembled
    /// from intermediate chunks.
    pub max_fanin: usize,
    /// A rechunk moving at least this many pieces (per output chunk, the
    /// input chunks it overlaps) goes through the P2P shuffle
    /// ([`crate::p2p`]); a smaller one is assemble tasks. Default
    /// [`DEFAULT_P2P_MIN_PIECES`], or `WEFT_ARRAY_P2P_MIN_PIECES`.
    pub p2p_min_pieces: usize,
}

/// Pieces from which a rechunk goes through the P2P shuffle, unless told
/// otherwise: on two local workers, rechunking 8000 x 8000 float64s from
/// row to column blocks, assemble tasks were as fast or faster up to 50 x
/// 50 blocks (2500 pieces), the P2P shuffle 1.3-1.6x faster from 80 x 80
/// (6400).
pub const DEFAULT_P2P_MIN_PIECES: usize = 4096;

impl Default for RechunkOptions {
    fn default() -> Self {
        RechunkOptions {
            max_fanin: DEFAULT_MAX_FANIN,
            p2p_min_pieces: std::env::var("WEFT_ARRAY_P2P_MIN_PIECES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_P2P_MIN_PIECES),
        }
    }
}

impl Array {
    /// The same array in chunks of at most `chunk[a]` along each axis.
    pub fn rechunk(&self, chunk: &[usize]) -> Result<Array> {
        let chunks = Chunks::regular(&self.shape, chunk)?;
        self.rechunk_to(chunks, &RechunkOptions::default())
    }

    /// The same array in the given chunks: through the P2P shuffle when it
    /// moves at least `options.p2p_min_pieces` pieces, else as assemble
    /// tasks of at most `options.max_fanin` pieces each.
    pub fn rechunk_to(&self, chunks: Chunks, options: &RechunkOptions) -> Result<Array> {
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
        if crate::p2p::piece_count(&self.chunks, &chunks) >= options.p2p_min_pieces {
            return crate::p2p::rechunk(self, chunks);
        }
        let map = vec![AxisMap::ALL; self.ndim()];
        Ok(remap(
            self,
            &map,
            self.shape.clone(),
            chunks,
            options.max_fanin,
            "rechunk-assemble",
        ))
    }
}
