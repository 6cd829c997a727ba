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
    /// Generated values over the output chunk.
    Gen(Gen),
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
    /// The output chunk's flat number in the grid (random streams).
    pub block: u64,
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
/// converting types as `as` does. Allocation-free: the position of each
/// row's first element is found by division.
fn gather<S: crate::Element, T: crate::Element>(d: &[S], shape: &[usize], st: &[usize], start: usize, out: &mut [T]) {
    let nd = shape.len();
    if nd == 0 {
        let n = out.len().min(1);
        convert(&d[..n], &mut out[..n]);
        return;
    }
    let last = nd - 1;
    let row = shape[last].max(1);
    let (s_last, mut done, mut pos) = (st[last], 0, start);
    while done < out.len() {
        let col = pos % row;
        let seg = (row - col).min(out.len() - done);
        // Offset of (row of `pos`, col), from the digits of `pos / row`.
        let mut rest = pos / row;
        let mut base = col * s_last;
        for a in (0..last).rev() {
            base += (rest % shape[a]) * st[a];
            rest /= shape[a];
        }
        let dst = &mut out[done..done + seg];
        match s_last {
            1 => convert(&d[base..base + seg], dst),
            0 => dst.fill(cast_one(d[base])),
            s => {
                let src = &d[base..base + (seg - 1) * s + 1];
                for (o, x) in dst.iter_mut().zip(src.iter().step_by(s)) {
                    *o = cast_one(*x);
                }
            }
        }
        done += seg;
        pos += seg;
    }
}

/// Generated values over the output chunk. Random values are
/// counter-based: element `k` of a chunk is a function of the chunk's seed
/// and `k` alone (SplitMix64 of `seed + (k + 1) * GAMMA`), so any tile can be
/// generated in any order, and the loop vectorises.
struct Generated {
    generator: Gen,
    seed: u64,
    offset: usize,
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

#[inline(always)]
fn fill_uniform(out: &mut [f64], seed: u64, start: usize, low: f64, high: f64) {
    let scale = high - low;
    for (i, o) in out.iter_mut().enumerate() {
        *o = low + scale * unit(seed, start + i);
    }
}

/// [`fill_uniform`] compiled for AVX-512 (64-bit vector multiplies).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn fill_uniform_avx512(out: &mut [f64], seed: u64, start: usize, low: f64, high: f64) {
    fill_uniform(out, seed, start, low, high);
}

/// [`fill_uniform`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fill_uniform_avx2(out: &mut [f64], seed: u64, start: usize, low: f64, high: f64) {
    fill_uniform(out, seed, start, low, high);
}

fn uniform_into(out: &mut [f64], seed: u64, start: usize, low: f64, high: f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512dq") && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor supports AVX-512F and DQ, checked just above.
            return unsafe { fill_uniform_avx512(out, seed, start, low, high) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2, checked just above.
            return unsafe { fill_uniform_avx2(out, seed, start, low, high) };
        }
    }
    fill_uniform(out, seed, start, low, high);
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

impl Source for Generated {
    fn load(&mut self, tile: &Tile, out: &mut Buf) {
        for (start, at) in tile.runs() {
            let len = tile.cols;
            match (self.generator, &mut *out) {
                (Gen::Uniform { low, high, .. }, Buf::F64(o)) => {
                    uniform_into(&mut o[at..at + len], self.seed, start, low, high)
                }
                (Gen::Normal { mean, std, .. }, Buf::F64(o)) => {
                    for (i, x) in o[at..at + len].iter_mut().enumerate() {
                        *x = mean + std * normal(self.seed, start + i);
                    }
                }
                (Gen::RangeF64 { start: a, step }, Buf::F64(o)) => {
                    for (k, x) in o[at..at + len].iter_mut().enumerate() {
                        *x = a + step * (self.offset + start + k) as f64;
                    }
                }
                (Gen::RangeI64 { start: a, step }, Buf::I64(o)) => {
                    for (k, x) in o[at..at + len].iter_mut().enumerate() {
                        *x = a.wrapping_add(step.wrapping_mul((self.offset + start + k) as i64));
                    }
                }
                // The program types a generator's register by `Gen::dtype`.
                _ => {}
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
                if axes.len() != view.shape.len() {
                    return Err(ArrayError::Data(format!(
                        "an input chunk of shape {:?} read along {} axes",
                        view.shape,
                        axes.len()
                    )));
                }
                let cs = strides(&view.shape);
                let mut st = vec![0; args.shape.len()];
                for (a, &k) in axes.iter().enumerate() {
                    let len = view.shape[a];
                    if len != 1 {
                        if args.shape.get(k) != Some(&len) {
                            return Err(ArrayError::Data(format!(
                                "an input chunk of shape {:?} does not fit the output chunk {:?}",
                                view.shape, args.shape
                            )));
                        }
                        st[k] = cs[a];
                    }
                }
                leaves.push(Box::new(Strided {
                    data: &view.data,
                    shape: args.shape.clone(),
                    strides: st,
                }));
            }
            LeafArg::Gen(generator) => {
                let seed = match *generator {
                    Gen::Uniform { seed, .. } | Gen::Normal { seed, .. } => chunk_seed(seed, args.block),
                    _ => 0,
                };
                leaves.push(Box::new(Generated {
                    generator: *generator,
                    seed,
                    offset: args.offset.first().copied().unwrap_or(0),
                }));
            }
        }
    }
    let dtype = args.program.dtype();
    // Square tiles when a leaf is read across its rows (a transpose).
    let square = args.shape.len() >= 2
        && args.leaves.iter().any(|l| match l {
            LeafArg::Input { axes, .. } => axes.last().is_some_and(|&k| k + 1 != args.shape.len()),
            LeafArg::Gen(_) => false,
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
