//! The fused blockwise task on a worker: one program (see [`crate::expr`])
//! over one output chunk, reading strided views of its input chunks
//! (transposes and broadcasts cost no copy) and generators (random, arange)
//! in place of inputs, optionally followed by the chunk's part of a
//! reduction. One task per chunk, one pass over it.

use serde::{Deserialize, Serialize};
use weft_runtime::Value;

use crate::block::{Buf, Data, Out, View, decode_one};
use crate::chunks::strides;
use crate::dtype::DType;
use crate::error::{ArrayError, Result};
use crate::expr::{Program, Source, Tile, cast_one, convert, run, tiles};
use crate::reduce::{Place, ReduceArgs, Running, partial};
use crate::with_typed;

/// Values computed from the position alone, in place of an input chunk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Gen {
    /// Uniform float64s in `[low, high)` from the chunk's stream.
    Uniform {
        /// The array's seed.
        seed: u64,
        /// Lower bound.
        low: f64,
        /// Upper bound (excluded).
        high: f64,
    },
    /// Normal float64s from the chunk's stream.
    Normal {
        /// The array's seed.
        seed: u64,
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// `start + step * i` at position `i` of a 1-d array, as float64.
    RangeF64 {
        /// First value.
        start: f64,
        /// Increment.
        step: f64,
    },
    /// `start + step * i` at position `i` of a 1-d array, as int64.
    RangeI64 {
        /// First value.
        start: i64,
        /// Increment.
        step: i64,
    },
}

impl Gen {
    /// The type of what it generates.
    pub fn dtype(self) -> DType {
        match self {
            Gen::RangeI64 { .. } => DType::I64,
            _ => DType::F64,
        }
    }

    /// The seed of the generated array's chunk `block` (0 for ranges).
    pub fn chunk_seed(self, block: u64) -> u64 {
        match self {
            Gen::Uniform { seed, .. } | Gen::Normal { seed, .. } => chunk_seed(seed, block),
            Gen::RangeF64 { .. } | Gen::RangeI64 { .. } => 0,
        }
    }
}

/// The seed of chunk `block`'s stream: a SplitMix64 mix of the array's
/// seed and the chunk's number, so a chunk's values depend on the seed and
/// its place in the chunk grid only (not on the worker or the order).
pub fn chunk_seed(seed: u64, block: u64) -> u64 {
    splitmix(seed ^ splitmix(block.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// In [`LeafArg::Input`]'s `axes`: an input axis of length 1 that the
/// output does not have (squeezed away).
pub const DROPPED: usize = usize::MAX;

/// A leaf of a fused task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LeafArg {
    /// Input chunk `dep`; its axis `a` runs along output axis `axes[a]`
    /// (an axis of length 1 broadcasts).
    Input {
        /// Index among the task's inputs.
        dep: u32,
        /// Output axis of each input axis.
        axes: Vec<usize>,
    },
    /// Generated values: chunk `block` of the generated array, its axis
    /// `a` running along output axis `axes[a]` (a permutation: a transpose
    /// generates the values of the transposed chunk, not a copy).
    Gen {
        /// What is generated.
        generator: Gen,
        /// The generated array's flat chunk number (its random stream).
        block: u64,
        /// Output axis of each generated axis.
        axes: Vec<usize>,
    },
}

/// The arguments of `array.fused`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusedArgs {
    /// What to compute per element.
    pub program: Program,
    /// Its leaves.
    pub leaves: Vec<LeafArg>,
    /// The output chunk's shape.
    pub shape: Vec<usize>,
    /// Where the chunk starts in the array.
    pub offset: Vec<usize>,
    /// The whole array's shape.
    pub global: Vec<usize>,
    /// A reduction of the result, if any.
    pub reduce: Option<ReduceArgs>,
}

/// A strided view of an input chunk over the output chunk.
struct Strided<'a> {
    data: &'a Data<'a>,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

impl Source for Strided<'_> {
    fn load(&mut self, tile: &Tile, out: &mut Buf) {
        with_typed!(Buf, out, o => with_typed!(Data, self.data, d => {
            for (start, at) in tile.runs() {
                gather(d, &self.shape, &self.strides, start, &mut o[at..at + tile.cols]);
            }
        }))
    }
}

/// Copies elements `start..start + out.len()` of a strided view into `out`,
/// converting types as `as` does.
fn gather<S: crate::Element, T: crate::Element>(d: &[S], shape: &[usize], st: &[usize], start: usize, out: &mut [T]) {
    segments(shape, st, start, out.len(), |base, step, done, seg| {
        let dst = &mut out[done..done + seg];
        match step {
            1 => convert(&d[base..base + seg], dst),
            0 => dst.fill(cast_one(d[base])),
            s => {
                let src = &d[base..base + (seg - 1) * s + 1];
                for (o, x) in dst.iter_mut().zip(src.iter().step_by(s)) {
                    *o = cast_one(*x);
                }
            }
        }
    })
}

/// Walks output positions `start..start + len` (C order over `shape`) in
/// runs along the last axis: `f(base, step, done, seg)` for each, where the
/// run's `seg` elements are at `base + j * step` of a view with strides
/// `st` and at `done + j` of the output. Allocation-free: the offset of
/// each run's first element is found by division.
fn segments(shape: &[usize], st: &[usize], start: usize, len: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let Some(last) = shape.len().checked_sub(1) else {
        if len > 0 {
            f(0, 0, 0, 1);
        }
        return;
    };
    let row = shape[last].max(1);
    let (s_last, mut done, mut pos) = (st[last], 0, start);
    while done < len {
        let col = pos % row;
        let seg = (row - col).min(len - done);
        // Offset of (row of `pos`, col), from the digits of `pos / row`.
        let mut rest = pos / row;
        let mut base = col * s_last;
        for a in (0..last).rev() {
            base += (rest % shape[a]) * st[a];
            rest /= shape[a];
        }
        f(base, s_last, done, seg);
        done += seg;
        pos += seg;
    }
}

/// The strides, along each output axis, of a chunk of `src` read with
/// its axis `a` along output axis `axes[a]` (0 where it broadcasts or does
/// not reach); an error when it does not fit the output chunk `out`.
pub(crate) fn view_strides(src: &[usize], axes: &[usize], out: &[usize]) -> Result<Vec<usize>> {
    if axes.len() != src.len() {
        return Err(ArrayError::Data(format!(
            "an input chunk of shape {src:?} read along {} axes",
            axes.len()
        )));
    }
    let own = strides(src);
    let mut st = vec![0; out.len()];
    for (a, &k) in axes.iter().enumerate() {
        if src[a] != 1 {
            if out.get(k) != Some(&src[a]) {
                return Err(ArrayError::Data(format!(
                    "an input chunk of shape {src:?} does not fit the output chunk {out:?}"
                )));
            }
            st[k] = own[a];
        }
    }
    Ok(st)
}

/// The strides, along each output axis, of the positions in a generated
/// chunk whose axis `a` runs along output axis `axes[a]` (a permutation).
pub(crate) fn gen_strides(axes: &[usize], out: &[usize]) -> Result<Vec<usize>> {
    let mut seen = vec![false; out.len()];
    if axes.len() != out.len()
        || axes
            .iter()
            .any(|&k| k >= out.len() || std::mem::replace(&mut seen[k], true))
    {
        return Err(ArrayError::Data(format!(
            "a generated chunk read along axes {axes:?} of an output chunk of shape {out:?}"
        )));
    }
    let src: Vec<usize> = axes.iter().map(|&k| out[k]).collect();
    view_strides(&src, axes, out)
}

/// Generated values over the output chunk. Random values are
/// counter-based: element `k` of a chunk is a function of the chunk's seed
/// and `k` alone (SplitMix64 of `seed + (k + 1) * GAMMA`), so any tile can be
/// generated in any order, and the loop vectorises. A transposed generator
/// reads position `k` of the generated chunk through `strides`.
struct Generated {
    generator: Gen,
    seed: u64,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
    /// Whether the generated chunk is laid out as the output (untransposed).
    aligned: bool,
}

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in `[0, 1)`: 52 random mantissa bits.
#[inline(always)]
pub(crate) fn unit(seed: u64, k: usize) -> f64 {
    let x = mix(seed.wrapping_add((k as u64).wrapping_add(1).wrapping_mul(GAMMA)));
    f64::from_bits(0x3ff0_0000_0000_0000 | (x >> 12)) - 1.0
}

/// Uniforms at positions `start, start + step, ..` into `out`.
#[inline(always)]
fn fill_uniform(out: &mut [f64], seed: u64, (start, step): (usize, usize), low: f64, high: f64) {
    let scale = high - low;
    if step == 1 {
        // The common, aligned case: consecutive counters, no multiply.
        for (i, o) in out.iter_mut().enumerate() {
            *o = low + scale * unit(seed, start + i);
        }
    } else {
        for (i, o) in out.iter_mut().enumerate() {
            *o = low + scale * unit(seed, start + i * step);
        }
    }
}

/// [`fill_uniform`] compiled for AVX-512 (64-bit vector multiplies).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn fill_uniform_avx512(out: &mut [f64], seed: u64, at: (usize, usize), low: f64, high: f64) {
    fill_uniform(out, seed, at, low, high);
}

/// [`fill_uniform`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fill_uniform_avx2(out: &mut [f64], seed: u64, at: (usize, usize), low: f64, high: f64) {
    fill_uniform(out, seed, at, low, high);
}

fn uniform_into(out: &mut [f64], seed: u64, at: (usize, usize), low: f64, high: f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512dq") && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor supports AVX-512F and DQ, checked just above.
            return unsafe { fill_uniform_avx512(out, seed, at, low, high) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2, checked just above.
            return unsafe { fill_uniform_avx2(out, seed, at, low, high) };
        }
    }
    fill_uniform(out, seed, at, low, high);
}

/// Standard normal at position `k`: Box-Muller on the pair of uniforms
/// of `k`'s pair, the cosine for even `k`, the sine for odd.
#[inline(always)]
pub(crate) fn normal(seed: u64, k: usize) -> f64 {
    let pair = k & !1;
    let u1 = 1.0 - unit(seed, pair);
    let u2 = unit(seed, pair + 1);
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * u2;
    if k & 1 == 0 { r * t.cos() } else { r * t.sin() }
}

impl Generated {
    /// The values at generated positions `start, start + step, ..` into
    /// `out[at..at + len]`.
    fn fill(&self, out: &mut Buf, (at, len): (usize, usize), (start, step): (usize, usize)) {
        let k = |i: usize| self.offset + start + i * step;
        match (self.generator, out) {
            (Gen::Uniform { low, high, .. }, Buf::F64(o)) => {
                uniform_into(&mut o[at..at + len], self.seed, (start, step), low, high)
            }
            (Gen::Normal { mean, std, .. }, Buf::F64(o)) => {
                for (i, x) in o[at..at + len].iter_mut().enumerate() {
                    *x = mean + std * normal(self.seed, start + i * step);
                }
            }
            (Gen::RangeF64 { start: a, step: d }, Buf::F64(o)) => {
                for (i, x) in o[at..at + len].iter_mut().enumerate() {
                    *x = a + d * k(i) as f64;
                }
            }
            (Gen::RangeI64 { start: a, step: d }, Buf::I64(o)) => {
                for (i, x) in o[at..at + len].iter_mut().enumerate() {
                    *x = a.wrapping_add(d.wrapping_mul(k(i) as i64));
                }
            }
            // The program types a generator's register by `Gen::dtype`.
            _ => {}
        }
    }
}

impl Source for Generated {
    fn load(&mut self, tile: &Tile, out: &mut Buf) {
        for (start, at) in tile.runs() {
            if self.aligned {
                self.fill(out, (at, tile.cols), (start, 1));
            } else {
                segments(&self.shape, &self.strides, start, tile.cols, |base, step, done, seg| {
                    self.fill(out, (at + done, seg), (base, step))
                });
            }
        }
    }
}

/// Runs a fused task: the chunk (or its partial reduction) as a value.
pub fn run_fused(args: &FusedArgs, inputs: &[std::sync::Arc<Value>]) -> Result<Value> {
    let views: Vec<View<'_>> = inputs.iter().map(|v| decode_one(v)).collect::<Result<_>>()?;
    let n: usize = args.shape.iter().product();
    let mut leaves: Vec<Box<dyn Source + '_>> = Vec::with_capacity(args.leaves.len());
    for leaf in &args.leaves {
        match leaf {
            LeafArg::Input { dep, axes } => {
                let view = views
                    .get(*dep as usize)
                    .ok_or_else(|| ArrayError::Data(format!("a fused task reads input {dep} of {}", views.len())))?;
                leaves.push(Box::new(Strided {
                    data: &view.data,
                    shape: args.shape.clone(),
                    strides: view_strides(&view.shape, axes, &args.shape)?,
                }));
            }
            LeafArg::Gen { generator, block, axes } => {
                let st = gen_strides(axes, &args.shape)?;
                leaves.push(Box::new(Generated {
                    generator: *generator,
                    seed: generator.chunk_seed(*block),
                    offset: args.offset.first().copied().unwrap_or(0),
                    aligned: st == strides(&args.shape),
                    shape: args.shape.clone(),
                    strides: st,
                }));
            }
        }
    }
    let dtype = args.program.dtype();
    // Square tiles when a leaf is read across its rows (a transpose).
    let square = args.shape.len() >= 2
        && args.leaves.iter().any(|l| match l {
            LeafArg::Input { axes, .. } => axes.last().is_some_and(|&k| k + 1 != args.shape.len()),
            LeafArg::Gen { .. } => false,
        });
    let tiles = tiles(&args.shape, square);
    let write = |dst: &mut Buf, tile: &Tile, src: &Buf| {
        with_typed!(Buf, dst, d => with_typed!(Buf, src, s => {
            for (start, at) in tile.runs() {
                convert(&s[at..at + tile.cols], &mut d[start..start + tile.cols]);
            }
        }))
    };
    match &args.reduce {
        None => {
            let mut out = Out::new(dtype, &args.shape);
            crate::with_dtype!(dtype, T => {
                let dst = out.as_mut::<T>()?;
                run(&args.program, &mut leaves, &tiles, |tile, result| {
                    let src = result.as_slice::<T>().ok_or_else(|| ArrayError::Data("a tile of the wrong type".into()))?;
                    for (start, at) in tile.runs() {
                        dst[start..start + tile.cols].copy_from_slice(&src[at..at + tile.cols]);
                    }
                    Ok(())
                })?;
            });
            out.finish()
        }
        Some(reduce) if reduce.axes.len() == args.shape.len() && Running::supports(reduce.op) => {
            let mut acc = Running::new(reduce.op);
            run(&args.program, &mut leaves, &tiles, |_, result| {
                acc.add(result);
                Ok(())
            })?;
            acc.finish(dtype)
        }
        Some(reduce) => {
            let mut buf = Buf::zeros(dtype, n);
            run(&args.program, &mut leaves, &tiles, |tile, result| {
                write(&mut buf, tile, result);
                Ok(())
            })?;
            let place = Place {
                shape: &args.shape,
                offset: &args.offset,
                global: &args.global,
            };
            partial(reduce.op, &buf, &place, &reduce.axes)
        }
    }
}

/// A chunk from host data carried in the task's arguments (`from_slice`).
pub fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Value> {
    let n: usize = shape.iter().product();
    if bytes.len() != n * dtype.size() {
        return Err(ArrayError::Data(format!(
            "{} bytes for a {dtype} chunk of shape {shape:?}",
            bytes.len()
        )));
    }
    let mut out = Out::new(dtype, shape);
    crate::with_dtype!(dtype, T => {
        let dst = out.as_mut::<T>()?;
        bytemuck::cast_slice_mut::<T, u8>(dst).copy_from_slice(bytes);
    });
    out.finish()
}
