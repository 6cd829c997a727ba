//! The grid emulation of a generated kernel: what [`crate::cuda::source`]
//! prints, run on the CPU over an emulated device's memory. Blocks and
//! threads run one after another, each thread walking the positions the
//! kernel's loops give it (grid-stride for elementwise kernels; a slice of
//! reduced positions per block for reductions, then the block's tree merge
//! in the shared-memory order), evaluating the program per element with
//! the CPU path's scalar semantics. So the index math, the work split and
//! the merge order of the generated kernel are what CI tests.

use crate::dtype::{DType, Element, Scalar};
use crate::error::{ArrayError, Result};
use crate::expr::{Arith, BinaryOp, Instr, UnaryOp, cast_one};
use crate::fuse::{Gen, normal, unit};
use crate::grid::{BLOCK, GridPlan, LeafPlan, Params, ReducePlan};
use crate::reduce::{ReduceOp, better_f, merge_moments};

/// One element of any type (bool as `u8`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(missing_docs)]
pub enum Val {
    F32(f32),
    F64(f64),
    I32(i32),
    I64(i64),
    Bool(u8),
}

macro_rules! each_val {
    ($v:expr, $x:ident => $body:expr) => {
        match $v {
            Val::F32($x) => $body,
            Val::F64($x) => $body,
            Val::I32($x) => $body,
            Val::I64($x) => $body,
            Val::Bool($x) => $body,
        }
    };
}

/// The `Val` variant of a Rust element type.
trait IntoVal: Arith {
    fn val(self) -> Val;
}
macro_rules! into_val {
    ($($t:ty => $v:ident),*) => {$(impl IntoVal for $t { fn val(self) -> Val { Val::$v(self) } })*};
}
into_val!(f32 => F32, f64 => F64, i32 => I32, i64 => I64, u8 => Bool);

impl Val {
    fn to<T: Element>(self) -> T {
        each_val!(self, x => cast_one(x))
    }

    /// The value converted to `dtype` as the CPU path converts.
    fn cast(self, dtype: DType) -> Val {
        match dtype {
            DType::F32 => Val::F32(self.to()),
            DType::F64 => Val::F64(self.to()),
            DType::I32 => Val::I32(self.to()),
            DType::I64 => Val::I64(self.to()),
            DType::Bool => Val::Bool(self.to()),
        }
    }

    fn constant(value: Scalar, dtype: DType) -> Val {
        match value {
            Scalar::Float(x) => Val::F64(x).cast(dtype),
            Scalar::Int(x) => Val::I64(x).cast(dtype),
            Scalar::Bool(b) => Val::Bool(u8::from(b)).cast(dtype),
        }
    }

    fn to_f64(self) -> f64 {
        each_val!(self, x => x.to_f64())
    }

    fn to_i64(self) -> i64 {
        each_val!(self, x => x.to_i64())
    }

    fn read(bytes: &[u8], dtype: DType, at: usize) -> Result<Val> {
        let size = dtype.size();
        let b = bytes.get(at * size..(at + 1) * size).ok_or_else(|| {
            ArrayError::Data(format!(
                "emulated kernel: element {at} is outside a {dtype} buffer of {} bytes",
                bytes.len()
            ))
        })?;
        let word = |n: usize| -> [u8; 8] {
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(&b[..n]);
            w
        };
        Ok(match dtype {
            DType::F32 => Val::F32(f32::from_bits(u64::from_le_bytes(word(4)) as u32)),
            DType::F64 => Val::F64(f64::from_bits(u64::from_le_bytes(word(8)))),
            DType::I32 => Val::I32(u64::from_le_bytes(word(4)) as u32 as i32),
            DType::I64 => Val::I64(i64::from_le_bytes(word(8))),
            DType::Bool => Val::Bool(b[0]),
        })
    }

    fn write(self, bytes: &mut [u8], at: usize) -> Result<()> {
        fn put<const N: usize>(bytes: &mut [u8], at: usize, le: [u8; N]) -> Result<()> {
            let len = bytes.len();
            bytes
                .get_mut(at * N..(at + 1) * N)
                .ok_or_else(|| {
                    ArrayError::Data(format!("emulated kernel: writes element {at} of a {len}-byte buffer"))
                })?
                .copy_from_slice(&le);
            Ok(())
        }
        match self {
            Val::F32(x) => put(bytes, at, x.to_le_bytes()),
            Val::F64(x) => put(bytes, at, x.to_le_bytes()),
            Val::I32(x) => put(bytes, at, x.to_le_bytes()),
            Val::I64(x) => put(bytes, at, x.to_le_bytes()),
            Val::Bool(x) => put(bytes, at, [x]),
        }
    }
}

fn unary(op: UnaryOp, x: Val) -> Val {
    fn go<T: IntoVal>(op: UnaryOp, x: T) -> Val {
        match op {
            UnaryOp::Neg => T::neg(x),
            UnaryOp::Abs => T::abs(x),
            UnaryOp::Exp => T::exp(x),
            UnaryOp::Log => T::ln(x),
            UnaryOp::Sqrt => T::sqrt(x),
            UnaryOp::Not => T::from_i64(i64::from(x.to_i64() == 0)),
        }
        .val()
    }
    each_val!(x, v => go(op, v))
}

fn binary(op: BinaryOp, a: Val, b: Val) -> Result<Val> {
    fn go<T: IntoVal>(op: BinaryOp, a: T, b: T) -> Val {
        let flag = |c: bool| Val::Bool(u8::from(c));
        match op {
            BinaryOp::Add => T::add(a, b).val(),
            BinaryOp::Sub => T::sub(a, b).val(),
            BinaryOp::Mul => T::mul(a, b).val(),
            BinaryOp::Div => T::div(a, b).val(),
            BinaryOp::Pow => T::pow(a, b).val(),
            BinaryOp::Maximum => T::maximum(a, b).val(),
            BinaryOp::Minimum => T::minimum(a, b).val(),
            BinaryOp::Eq => flag(a == b),
            BinaryOp::Ne => flag(a != b),
            BinaryOp::Lt => flag(a < b),
            BinaryOp::Le => flag(a <= b),
            BinaryOp::Gt => flag(a > b),
            BinaryOp::Ge => flag(a >= b),
            BinaryOp::And => T::from_i64(i64::from(a.to_i64() != 0 && b.to_i64() != 0)).val(),
            BinaryOp::Or => T::from_i64(i64::from(a.to_i64() != 0 || b.to_i64() != 0)).val(),
        }
    }
    Ok(match (a, b) {
        (Val::F32(a), Val::F32(b)) => go(op, a, b),
        (Val::F64(a), Val::F64(b)) => go(op, a, b),
        (Val::I32(a), Val::I32(b)) => go(op, a, b),
        (Val::I64(a), Val::I64(b)) => go(op, a, b),
        (Val::Bool(a), Val::Bool(b)) => go(op, a, b),
        _ => {
            return Err(ArrayError::Data(format!(
                "emulated kernel: {op:?} of {a:?} and {b:?} (a malformed program)"
            )));
        }
    })
}

/// What a leaf slot holds in the emulation: an input's device bytes, or a
/// generator's chunk seed.
pub enum Slot<'a> {
    /// An input buffer (emulated device memory).
    Input(&'a [u8]),
    /// A random generator's chunk seed (0 for ranges).
    Seed(u64),
}

/// One thread's evaluation of the program at flat output position `i`.
struct Eval<'a> {
    plan: &'a GridPlan,
    params: &'a Params,
    slots: &'a [Slot<'a>],
    regs: Vec<Val>,
}

impl Eval<'_> {
    fn at(&mut self, i: usize) -> Result<Val> {
        let p = &self.plan.program;
        self.regs.clear();
        for instr in &p.instrs {
            let v = match *instr {
                Instr::Leaf(l) => self.leaf(l as usize, i)?,
                Instr::Const(v, d) => Val::constant(v, d),
                Instr::Cast(r, d) => self.regs[r as usize].cast(d),
                Instr::Unary(op, r) => unary(op, self.regs[r as usize]),
                Instr::Binary(op, a, b) => binary(op, self.regs[a as usize], self.regs[b as usize])?,
                Instr::Where(c, a, b) => {
                    if self.regs[c as usize].to_i64() != 0 {
                        self.regs[a as usize]
                    } else {
                        self.regs[b as usize]
                    }
                }
            };
            self.regs.push(v);
        }
        self.regs
            .last()
            .copied()
            .ok_or_else(|| ArrayError::Data("an empty program".into()))
    }

    fn leaf(&self, l: usize, i: usize) -> Result<Val> {
        let missing = || ArrayError::Data(format!("emulated kernel: no slot for leaf {l}"));
        match (
            self.plan.leaves.get(l).ok_or_else(missing)?,
            self.slots.get(l).ok_or_else(missing)?,
        ) {
            (LeafPlan::Input { dtype, strides, .. }, Slot::Input(bytes)) => {
                Val::read(bytes, *dtype, self.plan.leaf_offset(strides, i))
            }
            (LeafPlan::Gen { generator, strides }, Slot::Seed(seed)) => {
                let k = self.plan.leaf_offset(strides, i);
                let at = self.params.offset as usize + k;
                Ok(match *generator {
                    Gen::Uniform { low, high, .. } => Val::F64(low + (high - low) * unit(*seed, k)),
                    Gen::Normal { mean, std, .. } => Val::F64(mean + std * normal(*seed, k)),
                    Gen::RangeF64 { start, step } => Val::F64(start + step * at as f64),
                    Gen::RangeI64 { start, step } => Val::I64(start.wrapping_add(step.wrapping_mul(at as i64))),
                })
            }
            _ => Err(ArrayError::Data(format!(
                "emulated kernel: leaf {l} has the wrong kind of slot"
            ))),
        }
    }
}

/// A thread's accumulator, as the generated `struct Acc` keeps it.
#[derive(Debug, Clone, Copy)]
enum Acc {
    SumF(f64),
    SumI(i64),
    Extreme { max: bool, v: Option<Val> },
    Moments(f64, f64, f64),
    ArgF { max: bool, v: f64, i: i64 },
    ArgI { max: bool, v: i64, i: i64 },
}

impl Acc {
    fn new(op: ReduceOp, dtype: DType) -> Acc {
        let max = matches!(op, ReduceOp::Max | ReduceOp::ArgMax);
        match op {
            ReduceOp::Sum if dtype.is_float() => Acc::SumF(0.0),
            ReduceOp::Sum => Acc::SumI(0),
            ReduceOp::Min | ReduceOp::Max => Acc::Extreme { max, v: None },
            ReduceOp::Mean | ReduceOp::Var(_) | ReduceOp::Std(_) => Acc::Moments(0.0, 0.0, 0.0),
            ReduceOp::ArgMin | ReduceOp::ArgMax if dtype.is_float() => Acc::ArgF { max, v: 0.0, i: -1 },
            ReduceOp::ArgMin | ReduceOp::ArgMax => Acc::ArgI { max, v: 0, i: -1 },
        }
    }

    fn add(&mut self, x: Val, g: i64) -> Result<()> {
        match self {
            Acc::SumF(s) => *s += x.to_f64(),
            Acc::SumI(s) => *s = s.wrapping_add(x.to_i64()),
            Acc::Extreme { max, v } => {
                *v = Some(match *v {
                    Some(prev) => binary(if *max { BinaryOp::Maximum } else { BinaryOp::Minimum }, prev, x)?,
                    None => x,
                })
            }
            Acc::Moments(n, mean, m2) => {
                let x = x.to_f64();
                *n += 1.0;
                let d = x - *mean;
                *mean += d / *n;
                *m2 += d * (x - *mean);
            }
            Acc::ArgF { max, v, i } => {
                let x = x.to_f64();
                if *i < 0 || better_f(*max, x, *v) {
                    (*v, *i) = (x, g);
                }
            }
            Acc::ArgI { max, v, i } => {
                let x = x.to_i64();
                if *i < 0 || if *max { x > *v } else { x < *v } {
                    (*v, *i) = (x, g);
                }
            }
        }
        Ok(())
    }

    fn merge(&mut self, o: &Acc) -> Result<()> {
        match (self, o) {
            (Acc::SumF(s), Acc::SumF(t)) => *s += t,
            (Acc::SumI(s), Acc::SumI(t)) => *s = s.wrapping_add(*t),
            (Acc::Extreme { .. }, Acc::Extreme { v: None, .. }) => {}
            (a @ Acc::Extreme { .. }, Acc::Extreme { v: Some(x), .. }) => a.add(*x, 0)?,
            (Acc::Moments(n, mean, m2), Acc::Moments(on, om, o2)) => {
                if *n + on != 0.0 {
                    (*n, *mean, *m2) = merge_moments((*n, *mean, *m2), (*on, *om, *o2));
                }
            }
            (Acc::ArgF { max, v, i }, Acc::ArgF { v: ov, i: oi, .. }) => {
                let same = *ov == *v || ov.is_nan() && v.is_nan();
                if *oi >= 0 && (*i < 0 || better_f(*max, *ov, *v) || same && oi < i) {
                    (*v, *i) = (*ov, *oi);
                }
            }
            (Acc::ArgI { max, v, i }, Acc::ArgI { v: ov, i: oi, .. }) => {
                let beats = if *max { ov > v } else { ov < v };
                if *oi >= 0 && (*i < 0 || beats || ov == v && oi < i) {
                    (*v, *i) = (*ov, *oi);
                }
            }
            _ => {
                return Err(ArrayError::Data(
                    "emulated kernel: accumulators of different kinds".into(),
                ));
            }
        }
        Ok(())
    }

    /// Writes the components at position `at` of the output buffers.
    fn write(&self, outs: &mut [&mut [u8]], at: usize) -> Result<()> {
        let vals: Vec<Val> = match *self {
            Acc::SumF(s) => vec![Val::F64(s)],
            Acc::SumI(s) => vec![Val::I64(s)],
            // A block's slice is never empty (see `ReducePlan::slices`).
            Acc::Extreme { v, .. } => {
                vec![v.ok_or_else(|| ArrayError::Data("emulated kernel: an empty slice".into()))?]
            }
            Acc::Moments(n, mean, m2) => vec![Val::F64(n), Val::F64(mean), Val::F64(m2)],
            Acc::ArgF { v, i, .. } => vec![Val::F64(v), Val::I64(i)],
            Acc::ArgI { v, i, .. } => vec![Val::I64(v), Val::I64(i)],
        };
        if vals.len() != outs.len() {
            return Err(ArrayError::Data(format!(
                "emulated kernel: {} outputs for {} components",
                outs.len(),
                vals.len()
            )));
        }
        for (v, out) in vals.into_iter().zip(outs.iter_mut()) {
            v.write(out, at)?;
        }
        Ok(())
    }
}

thread_local! {
    static LAUNCHES: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` and returns what it returned with the number of emulated
/// kernels launched from this thread meanwhile: the proof, without a GPU,
/// that a fused chain is one kernel per chunk.
pub fn count_launches<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let outer = LAUNCHES.with(|l| l.replace(Some(0)));
    let r = f();
    let counted = LAUNCHES.with(|l| l.replace(outer)).unwrap_or(0);
    if let Some(n) = outer {
        LAUNCHES.with(|l| l.set(Some(n + counted)));
    }
    (r, counted)
}

/// Runs the kernel of `plan` over `blocks` blocks of [`BLOCK`] threads:
/// `slots` per leaf, `outs` the output buffers of [`GridPlan::outputs`].
pub fn run(plan: &GridPlan, params: &Params, blocks: usize, slots: &[Slot<'_>], outs: &mut [&mut [u8]]) -> Result<()> {
    LAUNCHES.with(|l| l.set(l.get().map(|n| n + 1)));
    let mut eval = Eval {
        plan,
        params,
        slots,
        regs: Vec::with_capacity(plan.program.instrs.len()),
    };
    match &plan.reduce {
        None => {
            let (n, stride) = (plan.len(), blocks * BLOCK);
            let out = outs
                .first_mut()
                .ok_or_else(|| ArrayError::Data("emulated kernel: no output buffer".into()))?;
            for b in 0..blocks {
                for t in 0..BLOCK {
                    let mut i = b * BLOCK + t;
                    while i < n {
                        eval.at(i)?.write(out, i)?;
                        i += stride;
                    }
                }
            }
            Ok(())
        }
        Some(r) => reduce(&mut eval, r, blocks, outs),
    }
}

fn reduce(eval: &mut Eval<'_>, r: &ReducePlan, blocks: usize, outs: &mut [&mut [u8]]) -> Result<()> {
    let dtype = eval.plan.program.dtype();
    let (kept, slices, n) = (r.kept_len(), r.slices, r.reduced_len());
    let total = kept.max(1) * slices;
    let mut sh = vec![Acc::new(r.op, dtype); BLOCK];
    // Block `b0` runs blocks b0, b0 + blocks, ... as the kernel's loop does.
    for b0 in 0..blocks {
        for b in (b0..total).step_by(blocks.max(1)) {
            let (k, slice) = (b / slices, b % slices);
            for (t, acc) in sh.iter_mut().enumerate() {
                *acc = Acc::new(r.op, dtype);
                let mut pos = slice * BLOCK + t;
                while pos < n {
                    let (i, g) = GridPlan::reduced_position(r, k, pos);
                    acc.add(eval.at(i)?, eval.params.arg_base + g as i64)?;
                    pos += slices * BLOCK;
                }
            }
            let mut s = BLOCK / 2;
            while s > 0 {
                for t in 0..s {
                    let other = sh[t + s];
                    sh[t].merge(&other)?;
                }
                s /= 2;
            }
            sh[0].write(outs, slice * kept + k)?;
        }
    }
    Ok(())
}
