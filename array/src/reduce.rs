//! Reductions on the workers: a fused task reduces its chunk to a partial
//! result (one frame per component: a sum; a count, mean and sum of
//! squared deviations; a value and an index), combine tasks merge partials
//! in a tree, and the last one finalises (`mean = sum / n`, `std =
//! sqrt(m2 / (n - ddof))`). Partials of floats are kept in float64.

use serde::{Deserialize, Serialize};

use crate::block::{Buf, IntoBuf, View, encode};
use crate::chunks::{ravel, strides, unravel};
use crate::dtype::{DType, Element};
use crate::error::{ArrayError, Result};
use crate::expr::Arith;
use crate::with_typed;

/// A reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReduceOp {
    /// Sum (ints and bools sum to int64).
    Sum,
    /// Smallest value (NaN wins).
    Min,
    /// Largest value (NaN wins).
    Max,
    /// Mean (float64, or float32 for float32 input).
    Mean,
    /// Variance with `ddof` degrees of freedom removed.
    Var(u32),
    /// Standard deviation with `ddof` degrees of freedom removed.
    Std(u32),
    /// Index of the smallest value (first of ties; first NaN).
    ArgMin,
    /// Index of the largest value (first of ties; first NaN).
    ArgMax,
}

impl ReduceOp {
    /// The name of the operation (for errors and keys).
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Mean => "mean",
            ReduceOp::Var(_) => "var",
            ReduceOp::Std(_) => "std",
            ReduceOp::ArgMin => "argmin",
            ReduceOp::ArgMax => "argmax",
        }
    }

    /// The result's type for input of type `dtype`.
    pub fn out_dtype(self, dtype: DType) -> DType {
        match self {
            ReduceOp::Sum if dtype.is_float() => dtype,
            ReduceOp::Sum => DType::I64,
            ReduceOp::Min | ReduceOp::Max => dtype,
            ReduceOp::Mean | ReduceOp::Var(_) | ReduceOp::Std(_) => dtype.to_float(),
            ReduceOp::ArgMin | ReduceOp::ArgMax => DType::I64,
        }
    }

    fn is_arg(self) -> bool {
        matches!(self, ReduceOp::ArgMin | ReduceOp::ArgMax)
    }
}

/// What a fused task reduces, beside its program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceArgs {
    /// The reduction.
    pub op: ReduceOp,
    /// The chunk's axes reduced (sorted); the partial has the others.
    pub axes: Vec<usize>,
}

/// A partial result being built: one accumulator per kept position.
enum Acc {
    SumF(Vec<f64>),
    SumI(Vec<i64>),
    Extreme(Buf),
    Moments { n: Vec<f64>, mean: Vec<f64>, m2: Vec<f64> },
    ArgF { val: Vec<f64>, idx: Vec<i64> },
    ArgI { val: Vec<i64>, idx: Vec<i64> },
}

impl Acc {
    fn into_parts(self, shape: &[usize]) -> Vec<(Vec<usize>, Buf)> {
        let s = shape.to_vec();
        match self {
            Acc::SumF(v) => vec![(s, Buf::F64(v))],
            Acc::SumI(v) => vec![(s, Buf::I64(v))],
            Acc::Extreme(b) => vec![(s, b)],
            Acc::Moments { n, mean, m2 } => {
                vec![(s.clone(), Buf::F64(n)), (s.clone(), Buf::F64(mean)), (s, Buf::F64(m2))]
            }
            Acc::ArgF { val, idx } => vec![(s.clone(), Buf::F64(val)), (s, Buf::I64(idx))],
            Acc::ArgI { val, idx } => vec![(s.clone(), Buf::I64(val)), (s, Buf::I64(idx))],
        }
    }
}

/// Where a chunk sits in the whole array (for argmin/argmax indices).
pub struct Place<'a> {
    /// The chunk's shape.
    pub shape: &'a [usize],
    /// Where it starts.
    pub offset: &'a [usize],
    /// The whole array's shape.
    pub global: &'a [usize],
}

/// Reduces a whole chunk (C order, `data` of `place.shape`) over `axes` to
/// the partial value.
pub fn partial(op: ReduceOp, data: &Buf, place: &Place<'_>, axes: &[usize]) -> Result<weft_runtime::Value> {
    let shape = place.shape;
    let kept: Vec<usize> = (0..shape.len()).filter(|a| !axes.contains(a)).collect();
    let kept_shape: Vec<usize> = kept.iter().map(|&a| shape[a]).collect();
    let red_shape: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
    let st = strides(shape);
    let offsets = |dims: &[usize], sub: &[usize]| -> Vec<usize> {
        let n: usize = sub.iter().product();
        (0..n)
            .map(|i| unravel(i, sub).iter().zip(dims).map(|(&x, &a)| x * st[a]).sum())
            .collect()
    };
    let kept_off = offsets(&kept, &kept_shape);
    let red_off = offsets(axes, &red_shape);
    // The global flat index (over the reduced axes) of each reduced position.
    let global_red: Vec<usize> = axes.iter().map(|&a| place.global[a]).collect();
    let red_index = |r: usize| -> i64 {
        let local = unravel(r, &red_shape);
        let g: Vec<usize> = local.iter().zip(axes).map(|(&x, &a)| x + place.offset[a]).collect();
        ravel(&g, &global_red) as i64
    };
    let acc = with_typed!(Buf, data, v => reduce_groups(op, v, &kept_off, &red_off, red_index));
    encode(acc.into_parts(&kept_shape))
}

fn reduce_groups<T: Arith>(
    op: ReduceOp,
    v: &[T],
    kept: &[usize],
    red: &[usize],
    red_index: impl Fn(usize) -> i64,
) -> Acc {
    let contiguous = kept.len() == 1 && red.iter().enumerate().all(|(i, &o)| o == i);
    let group = |k: usize| -> Box<dyn Iterator<Item = T> + '_> {
        if contiguous {
            Box::new(v.iter().copied())
        } else {
            let base = kept[k];
            Box::new(red.iter().map(move |&o| v[base + o]))
        }
    };
    match op {
        ReduceOp::Sum if T::DTYPE.is_float() => Acc::SumF(
            (0..kept.len())
                .map(|k| {
                    if contiguous {
                        sum_f64(v)
                    } else {
                        group(k).map(T::to_f64).sum()
                    }
                })
                .collect(),
        ),
        ReduceOp::Sum => Acc::SumI(
            (0..kept.len())
                .map(|k| group(k).fold(0i64, |a, x| a.wrapping_add(x.to_i64())))
                .collect(),
        ),
        ReduceOp::Min | ReduceOp::Max => {
            let f = if op == ReduceOp::Min { T::minimum } else { T::maximum };
            let out: Vec<T> = (0..kept.len())
                .map(|k| {
                    let mut it = group(k);
                    let first = it.next().unwrap_or_default();
                    it.fold(first, f)
                })
                .collect();
            Acc::Extreme(bytemuck_vec(out))
        }
        ReduceOp::Mean | ReduceOp::Var(_) | ReduceOp::Std(_) => {
            let (mut n, mut mean, mut m2) = (vec![], vec![], vec![]);
            for k in 0..kept.len() {
                let values: Vec<T> = group(k).collect();
                let (a, b, c) = moments(values.iter().copied());
                n.push(a);
                mean.push(b);
                m2.push(c);
            }
            Acc::Moments { n, mean, m2 }
        }
        ReduceOp::ArgMin | ReduceOp::ArgMax => {
            let max = op == ReduceOp::ArgMax;
            let mut idx = Vec::with_capacity(kept.len());
            if T::DTYPE.is_float() {
                let mut val = Vec::with_capacity(kept.len());
                for k in 0..kept.len() {
                    let (mut bv, mut bi) = (f64::NAN, -1i64);
                    for (r, x) in group(k).enumerate() {
                        let x = x.to_f64();
                        if bi < 0 || better_f(max, x, bv) {
                            bv = x;
                            bi = r as i64;
                        }
                    }
                    val.push(bv);
                    idx.push(if bi < 0 { -1 } else { red_index(bi as usize) });
                }
                Acc::ArgF { val, idx }
            } else {
                let mut val = Vec::with_capacity(kept.len());
                for k in 0..kept.len() {
                    let (mut bv, mut bi) = (0i64, -1i64);
                    for (r, x) in group(k).enumerate() {
                        let x = x.to_i64();
                        if bi < 0 || (max && x > bv) || (!max && x < bv) {
                            bv = x;
                            bi = r as i64;
                        }
                    }
                    val.push(bv);
                    idx.push(if bi < 0 { -1 } else { red_index(bi as usize) });
                }
                Acc::ArgI { val, idx }
            }
        }
    }
}

fn bytemuck_vec<T: Element>(v: Vec<T>) -> Buf {
    // T is one of the element types; go through the enum by dtype.
    crate::with_dtype!(T::DTYPE, U => {
        let out: Vec<U> = bytemuck::cast_slice::<T, U>(&v).to_vec();
        out.into_buf()
    })
}

/// Whether float `x` beats `best` (NaN beats everything but an earlier NaN).
pub(crate) fn better_f(max: bool, x: f64, best: f64) -> bool {
    if best.is_nan() {
        return false;
    }
    if x.is_nan() {
        return true;
    }
    if max { x > best } else { x < best }
}

/// Sum in eight lanes, so the additions pipeline and vectorise.
pub fn sum_f64<T: Element>(v: &[T]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut blocks = v.chunks_exact(8);
    for b in &mut blocks {
        for (a, x) in acc.iter_mut().zip(b) {
            *a += x.to_f64();
        }
    }
    blocks.remainder().iter().map(|x| x.to_f64()).sum::<f64>() + acc.iter().sum::<f64>()
}

/// Count, mean and sum of squared deviations, in two passes.
fn moments<T: Element>(values: impl Iterator<Item = T> + Clone) -> (f64, f64, f64) {
    let (mut n, mut s) = (0.0, 0.0);
    for x in values.clone() {
        n += 1.0;
        s += x.to_f64();
    }
    if n == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let mean = s / n;
    let m2 = values.map(|x| (x.to_f64() - mean).powi(2)).sum();
    (n, mean, m2)
}

/// Chan's merge of two (count, mean, m2) triples.
pub(crate) fn merge_moments(a: (f64, f64, f64), b: (f64, f64, f64)) -> (f64, f64, f64) {
    let n = a.0 + b.0;
    if n == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let delta = b.1 - a.1;
    (n, a.1 + delta * b.0 / n, a.2 + b.2 + delta * delta * a.0 * b.0 / n)
}

/// A running all-axes reduction fed tile by tile (no full temporary):
/// sum, min, max and the moments.
pub struct Running {
    op: ReduceOp,
    sum: f64,
    isum: i64,
    extreme: Option<Buf>,
    moments: (f64, f64, f64),
}

impl Running {
    /// Whether `op` over all axes can run tile by tile.
    pub fn supports(op: ReduceOp) -> bool {
        !op.is_arg()
    }

    /// An empty accumulator.
    pub fn new(op: ReduceOp) -> Running {
        Running {
            op,
            sum: 0.0,
            isum: 0,
            extreme: None,
            moments: (0.0, 0.0, 0.0),
        }
    }

    /// Adds a tile.
    pub fn add(&mut self, tile: &Buf) {
        let op = self.op;
        with_typed!(Buf, tile, v => {
            match op {
                ReduceOp::Sum if tile.dtype().is_float() => self.sum += sum_f64(v),
                ReduceOp::Sum => self.isum = v.iter().fold(self.isum, |a, x| a.wrapping_add(x.to_i64())),
                ReduceOp::Min | ReduceOp::Max => {
                    let f = if op == ReduceOp::Min { Arith::minimum } else { Arith::maximum };
                    if let Some(first) = v.first() {
                        let mut m = v.iter().copied().fold(*first, f);
                        if let Some(prev) = self.extreme.as_ref().and_then(|b| b.as_slice()).and_then(|s| s.first()) {
                            m = f(*prev, m);
                        }
                        self.extreme = Some(bytemuck_vec(vec![m]));
                    }
                }
                _ => self.moments = merge_moments(self.moments, moments(v.iter().copied())),
            }
        })
    }

    /// The partial value (shape `[]`), for input of type `dtype`.
    pub fn finish(self, dtype: DType) -> Result<weft_runtime::Value> {
        let acc = match self.op {
            ReduceOp::Sum if dtype.is_float() => Acc::SumF(vec![self.sum]),
            ReduceOp::Sum => Acc::SumI(vec![self.isum]),
            ReduceOp::Min | ReduceOp::Max => match self.extreme {
                Some(b) => Acc::Extreme(b),
                None => {
                    return Err(ArrayError::Invalid(format!(
                        "{}: a zero-size array has no {0}",
                        self.op.name()
                    )));
                }
            },
            _ => Acc::Moments {
                n: vec![self.moments.0],
                mean: vec![self.moments.1],
                m2: vec![self.moments.2],
            },
        };
        encode(acc.into_parts(&[]))
    }
}

/// Merges partials of one shape; with `last`, finalises into the result
/// chunk of type `op.out_dtype(dtype)`.
pub fn combine(op: ReduceOp, dtype: DType, parts: &[Vec<View<'_>>], last: bool) -> Result<weft_runtime::Value> {
    let bad = |what: &str| ArrayError::Data(format!("{}: malformed partial results ({what})", op.name()));
    let first = parts.first().ok_or_else(|| bad("none"))?;
    let shape = first.first().ok_or_else(|| bad("no frames"))?.shape.clone();
    let n: usize = shape.iter().product();
    let frame = |p: &[View<'_>], i: usize| -> Result<Buf> {
        let v = p.get(i).ok_or_else(|| bad("missing frame"))?;
        if v.shape != shape {
            return Err(bad("shapes differ"));
        }
        Ok(v.data.to_buf())
    };
    let mut acc = match op {
        ReduceOp::Sum if dtype.is_float() => Acc::SumF(vec![0.0; n]),
        ReduceOp::Sum => Acc::SumI(vec![0; n]),
        ReduceOp::Min | ReduceOp::Max => Acc::Extreme(frame(first, 0)?),
        ReduceOp::Mean | ReduceOp::Var(_) | ReduceOp::Std(_) => Acc::Moments {
            n: vec![0.0; n],
            mean: vec![0.0; n],
            m2: vec![0.0; n],
        },
        ReduceOp::ArgMin | ReduceOp::ArgMax if dtype.is_float() => Acc::ArgF {
            val: vec![f64::NAN; n],
            idx: vec![-1; n],
        },
        ReduceOp::ArgMin | ReduceOp::ArgMax => Acc::ArgI {
            val: vec![0; n],
            idx: vec![-1; n],
        },
    };
    let max = op == ReduceOp::ArgMax;
    for p in parts {
        match &mut acc {
            Acc::SumF(s) => {
                for (a, x) in s.iter_mut().zip(frame(p, 0)?.to_vec::<f64>()) {
                    *a += x;
                }
            }
            Acc::SumI(s) => {
                for (a, x) in s.iter_mut().zip(frame(p, 0)?.to_vec::<i64>()) {
                    *a = a.wrapping_add(x);
                }
            }
            Acc::Extreme(e) => {
                let b = frame(p, 0)?;
                match (e, &b) {
                    (Buf::F32(e), Buf::F32(b)) => extreme(op, e, b),
                    (Buf::F64(e), Buf::F64(b)) => extreme(op, e, b),
                    (Buf::I32(e), Buf::I32(b)) => extreme(op, e, b),
                    (Buf::I64(e), Buf::I64(b)) => extreme(op, e, b),
                    (Buf::Bool(e), Buf::Bool(b)) => extreme(op, e, b),
                    _ => return Err(bad("types differ")),
                }
            }
            Acc::Moments { n: cn, mean, m2 } => {
                let (bn, bm, b2) = (
                    frame(p, 0)?.to_vec::<f64>(),
                    frame(p, 1)?.to_vec::<f64>(),
                    frame(p, 2)?.to_vec::<f64>(),
                );
                for i in 0..cn.len() {
                    let (a, b, c) = merge_moments((cn[i], mean[i], m2[i]), (bn[i], bm[i], b2[i]));
                    (cn[i], mean[i], m2[i]) = (a, b, c);
                }
            }
            Acc::ArgF { val, idx } => {
                let (bv, bi) = (frame(p, 0)?.to_vec::<f64>(), frame(p, 1)?.to_vec::<i64>());
                for i in 0..val.len() {
                    if bi[i] < 0 {
                        continue;
                    }
                    let take = idx[i] < 0
                        || better_f(max, bv[i], val[i])
                        || ((bv[i] == val[i] || bv[i].is_nan() && val[i].is_nan()) && bi[i] < idx[i]);
                    if take {
                        (val[i], idx[i]) = (bv[i], bi[i]);
                    }
                }
            }
            Acc::ArgI { val, idx } => {
                let (bv, bi) = (frame(p, 0)?.to_vec::<i64>(), frame(p, 1)?.to_vec::<i64>());
                for i in 0..val.len() {
                    if bi[i] < 0 {
                        continue;
                    }
                    let beats = if max { bv[i] > val[i] } else { bv[i] < val[i] };
                    if idx[i] < 0 || beats || (bv[i] == val[i] && bi[i] < idx[i]) {
                        (val[i], idx[i]) = (bv[i], bi[i]);
                    }
                }
            }
        }
    }
    if !last {
        return encode(acc.into_parts(&shape));
    }
    let out = op.out_dtype(dtype);
    let result = match acc {
        Acc::SumF(s) => Buf::F64(s),
        Acc::SumI(s) => Buf::I64(s),
        Acc::Extreme(e) => e,
        Acc::Moments { n, mean, m2 } => Buf::F64(match op {
            ReduceOp::Mean => mean,
            ReduceOp::Var(ddof) | ReduceOp::Std(ddof) => {
                let var = n.iter().zip(&m2).map(|(&n, &m2)| m2 / (n - f64::from(ddof)).max(0.0));
                if matches!(op, ReduceOp::Std(_)) {
                    var.map(f64::sqrt).collect()
                } else {
                    var.collect()
                }
            }
            _ => return Err(bad("moments of a non-moment reduction")),
        }),
        Acc::ArgF { idx, .. } | Acc::ArgI { idx, .. } => Buf::I64(idx),
    };
    let result = if result.dtype() == out {
        result
    } else {
        crate::with_dtype!(out, U => result.to_vec::<U>().into_buf())
    };
    encode(vec![(shape, result)])
}

fn extreme<T: Arith>(op: ReduceOp, acc: &mut [T], b: &[T]) {
    let f = if op == ReduceOp::Min { T::minimum } else { T::maximum };
    for (a, &x) in acc.iter_mut().zip(b) {
        *a = f(*a, x);
    }
}
