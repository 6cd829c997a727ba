//! Elementwise kernels: unary and binary arithmetic, and comparisons.
//!
//! Nulls propagate (a result is null where any input is). Integer
//! arithmetic wraps; integer division by zero gives null. Float min/max
//! prefer a number to a NaN.

use arrow_buffer::bit_util::{set_bit, unset_bit};
use weft_gpu::Buffer;

use crate::column::bitmap_bytes;
use crate::dispatch::{Target, and_validity, same_len, target, with_numeric};
use crate::launch::{Arg, Exec, binary_args, opt_ptr, ptr};
use crate::{Column, DType, KernelError, Native};

/// Unary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-x` (wrapping for integers).
    Neg,
    /// `|x|` (wrapping for integers: `|MIN| = MIN`).
    Abs,
    /// Square root (floats only).
    Sqrt,
}

/// Binary arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b` (null where an integer divisor is 0).
    Div,
    /// The remainder of `a / b`, with `a`'s sign (null where an integer
    /// divisor is 0; fmod for floats).
    Rem,
    /// The smaller.
    Min,
    /// The larger.
    Max,
}

/// Comparisons, giving a boolean column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

impl UnaryOp {
    fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Sqrt => "sqrt",
        }
    }
}

impl BinaryOp {
    fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Rem => "rem",
            BinaryOp::Min => "min",
            BinaryOp::Max => "max",
        }
    }
}

impl CmpOp {
    fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
        }
    }

    /// Applies the comparison.
    pub fn apply<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

/// Arithmetic with the kernels' semantics, shared by the CPU implementation.
pub trait Arith: Native {
    /// Applies a unary op; `None` if the type does not support it.
    fn unary(self, op: UnaryOp) -> Option<Self>;
    /// Applies a binary op; the flag is false where the result is null.
    fn binary(self, b: Self, op: BinaryOp) -> (Self, bool);
}

macro_rules! int_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn unary(self, op: UnaryOp) -> Option<Self> {
                match op {
                    UnaryOp::Neg => Some(self.wrapping_neg()),
                    UnaryOp::Abs => Some(self.wrapping_abs()),
                    UnaryOp::Sqrt => None,
                }
            }
            fn binary(self, b: Self, op: BinaryOp) -> (Self, bool) {
                match op {
                    BinaryOp::Add => (self.wrapping_add(b), true),
                    BinaryOp::Sub => (self.wrapping_sub(b), true),
                    BinaryOp::Mul => (self.wrapping_mul(b), true),
                    BinaryOp::Div if b == 0 => (0, false),
                    BinaryOp::Div => (self.wrapping_div(b), true),
                    BinaryOp::Rem if b == 0 => (0, false),
                    BinaryOp::Rem => (self.wrapping_rem(b), true),
                    BinaryOp::Min => (self.min(b), true),
                    BinaryOp::Max => (self.max(b), true),
                }
            }
        }
    )*};
}
int_arith!(i32, i64);

macro_rules! float_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn unary(self, op: UnaryOp) -> Option<Self> {
                Some(match op {
                    UnaryOp::Neg => -self,
                    UnaryOp::Abs => if self < 0.0 { -self } else { self },
                    UnaryOp::Sqrt => self.sqrt(),
                })
            }
            fn binary(self, b: Self, op: BinaryOp) -> (Self, bool) {
                let v = match op {
                    BinaryOp::Add => self + b,
                    BinaryOp::Sub => self - b,
                    BinaryOp::Mul => self * b,
                    BinaryOp::Div => self / b,
                    BinaryOp::Rem => self % b,
                    // As the CUDA source: b wins if smaller, or if a is NaN.
                    BinaryOp::Min => if b < self || self.is_nan() { b } else { self },
                    BinaryOp::Max => if b > self || self.is_nan() { b } else { self },
                };
                (v, true)
            }
        }
    )*};
}
float_arith!(f32, f64);

fn unsupported(kernel: &'static str, dtype: DType) -> KernelError {
    KernelError::UnsupportedType { kernel, dtype }
}

/// Applies `op` to every row of `x`.
pub fn unary(x: &Column, op: UnaryOp) -> Result<Column, KernelError> {
    let is_float = matches!(x.dtype(), DType::F32 | DType::F64);
    if op == UnaryOp::Sqrt && !is_float {
        return Err(unsupported("unary sqrt", x.dtype()));
    }
    match target("unary", &[x])? {
        Target::Cpu => with_numeric!("unary", x.dtype(), |T| {
            let vals: Vec<T> = x
                .host_values::<T>()?
                .iter()
                .map(|v| v.unary(op).unwrap_or_default())
                .collect();
            Column::new(x.dtype(), x.len(), Buffer::from_vec(vals), x.validity().cloned(), None)
        }),
        Target::Gpu(exec) => with_numeric!("unary", x.dtype(), |T| {
            let n = x.len();
            let out = exec.alloc(n * std::mem::size_of::<T>())?;
            let kernel = format!("unary_{}_{}", op.name(), T::SUFFIX);
            exec.launch1(
                "elementwise",
                &kernel,
                exec.grid(n as u64),
                &[opt_ptr(Some(x.values()))?, ptr(&out), Arg::U64(n as u64)],
            )?;
            Column::new(x.dtype(), n, Buffer::device(out), x.validity().cloned(), None)
        }),
    }
}

fn check_pair(kernel: &'static str, a: &Column, b: &Column) -> Result<(), KernelError> {
    if a.dtype() != b.dtype() {
        return Err(unsupported(kernel, b.dtype()));
    }
    same_len(kernel, a.len(), b.len())
}

/// Applies `op` row by row to `a` and `b` (same type and length).
pub fn binary(a: &Column, b: &Column, op: BinaryOp) -> Result<Column, KernelError> {
    check_pair("binary", a, b)?;
    let n = a.len();
    let int_div = matches!(op, BinaryOp::Div | BinaryOp::Rem) && matches!(a.dtype(), DType::I32 | DType::I64);
    match target("binary", &[a, b])? {
        Target::Cpu => with_numeric!("binary", a.dtype(), |T| {
            let (xs, ys) = (a.host_values::<T>()?, b.host_values::<T>()?);
            let mut valid = and_validity(a.host_validity()?, b.host_validity()?, n);
            let mut vals = Vec::with_capacity(n);
            for (i, (x, y)) in xs.iter().zip(ys).enumerate() {
                let (v, ok) = x.binary(*y, op);
                vals.push(v);
                if !ok {
                    let bits = valid.get_or_insert_with(|| vec![0xff; bitmap_bytes(n)]);
                    unset_bit(bits, i);
                }
            }
            Column::new(a.dtype(), n, Buffer::from_vec(vals), valid.map(Buffer::from_vec), None)
        }),
        Target::Gpu(exec) => with_numeric!("binary", a.dtype(), |T| {
            let out = exec.alloc(n * std::mem::size_of::<T>())?;
            let want_valid = int_div || a.validity().is_some() || b.validity().is_some();
            let out_valid = want_valid.then(|| exec.alloc(n.div_ceil(32) * 4)).transpose()?;
            let kernel = format!("binary_{}_{}", op.name(), T::SUFFIX);
            exec.launch1(
                "elementwise",
                &kernel,
                exec.grid(n.div_ceil(32) as u64),
                &binary_args(a, b, &out, out_valid.as_ref(), n)?,
            )?;
            Column::new(a.dtype(), n, Buffer::device(out), out_valid.map(Buffer::device), None)
        }),
    }
}

/// Compares `a` and `b` row by row, giving a boolean column.
pub fn compare(a: &Column, b: &Column, op: CmpOp) -> Result<Column, KernelError> {
    check_pair("compare", a, b)?;
    let n = a.len();
    match target("compare", &[a, b])? {
        Target::Cpu => with_numeric!("compare", a.dtype(), |T| {
            let (xs, ys) = (a.host_values::<T>()?, b.host_values::<T>()?);
            let mut bits = vec![0u8; bitmap_bytes(n)];
            for (i, (x, y)) in xs.iter().zip(ys).enumerate() {
                if op.apply(*x, *y) {
                    set_bit(&mut bits, i);
                }
            }
            let valid = and_validity(a.host_validity()?, b.host_validity()?, n);
            Column::new(
                DType::Bool,
                n,
                Buffer::from_vec(bits),
                valid.map(Buffer::from_vec),
                None,
            )
        }),
        Target::Gpu(exec) => with_numeric!("compare", a.dtype(), |T| {
            let words = n.div_ceil(32);
            let out = exec.alloc(words * 4)?;
            let want_valid = a.validity().is_some() || b.validity().is_some();
            let out_valid = want_valid.then(|| exec.alloc(words * 4)).transpose()?;
            let kernel = format!("cmp_{}_{}", op.name(), T::SUFFIX);
            launch_cmp(&exec, &kernel, a, b, &out, out_valid.as_ref(), n)?;
            Column::new(DType::Bool, n, Buffer::device(out), out_valid.map(Buffer::device), None)
        }),
    }
}

fn launch_cmp(
    exec: &Exec,
    kernel: &str,
    a: &Column,
    b: &Column,
    out: &weft_gpu::DeviceBuffer,
    out_valid: Option<&weft_gpu::DeviceBuffer>,
    n: usize,
) -> Result<(), KernelError> {
    exec.launch1(
        "elementwise",
        kernel,
        exec.grid(n.div_ceil(32) as u64),
        &binary_args(a, b, out, out_valid, n)?,
    )?;
    Ok(())
}
