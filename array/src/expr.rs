//! Elementwise expressions as a program: a list of instructions in SSA form
//! (instruction `i` writes register `i`), typed when built with NumPy's
//! promotion rules. A fused task runs the program over its chunk in tiles
//! of [`TILE`] elements: every register holds one tile, so a chain of
//! operations is one pass over the chunk with cache-resident temporaries,
//! not one full-size temporary per operation and not one tree walk per
//! element.

use serde::{Deserialize, Serialize};

use crate::dtype::{DType, Element, Scalar};
use crate::error::{ArrayError, Result};
use crate::with_typed;

/// Elements per tile: registers of a few instructions stay in L1/L2.
pub const TILE: usize = 1024;

/// A one-operand function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Not,
}

/// A two-operand function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinaryOp {
    fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge)
    }
}

/// One instruction; operands are earlier registers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Instr {
    /// The task's input or generator number `n`.
    Leaf(u32),
    /// A constant of the given type.
    Const(Scalar, DType),
    /// A register converted to a type.
    Cast(u32, DType),
    /// A function of one register.
    Unary(UnaryOp, u32),
    /// A function of two registers of one type.
    Binary(BinaryOp, u32, u32),
    /// `cond ? a : b` with a bool condition and `a`, `b` of one type.
    Where(u32, u32, u32),
}

/// A typed program; its result is the last register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    /// The instructions.
    pub instrs: Vec<Instr>,
    /// The type of each register.
    pub dtypes: Vec<DType>,
}

impl Program {
    /// A program that loads leaf 0 of type `dtype`.
    pub fn leaf(dtype: DType) -> Program {
        Program {
            instrs: vec![Instr::Leaf(0)],
            dtypes: vec![dtype],
        }
    }

    /// A program that is a constant.
    pub fn constant(value: Scalar, dtype: DType) -> Program {
        Program {
            instrs: vec![Instr::Const(value, dtype)],
            dtypes: vec![dtype],
        }
    }

    /// The result's type.
    pub fn dtype(&self) -> DType {
        self.dtypes.last().copied().unwrap_or(DType::F64)
    }

    fn result(&self) -> u32 {
        (self.instrs.len() - 1) as u32
    }

    fn push(&mut self, instr: Instr, dtype: DType) -> u32 {
        self.instrs.push(instr);
        self.dtypes.push(dtype);
        self.result()
    }

    /// Casts register `r` to `dtype` unless it has it already.
    fn cast(&mut self, r: u32, dtype: DType) -> u32 {
        if self.dtypes[r as usize] == dtype {
            r
        } else {
            self.push(Instr::Cast(r, dtype), dtype)
        }
    }

    /// Appends `other` (its leaves renumbered by `leaf_map`); returns the
    /// register of its result.
    fn append(&mut self, other: &Program, leaf_map: &[u32]) -> u32 {
        let base = self.instrs.len() as u32;
        for (instr, &dtype) in other.instrs.iter().zip(&other.dtypes) {
            let instr = match *instr {
                Instr::Leaf(l) => Instr::Leaf(leaf_map[l as usize]),
                Instr::Const(s, d) => Instr::Const(s, d),
                Instr::Cast(r, d) => Instr::Cast(r + base, d),
                Instr::Unary(op, r) => Instr::Unary(op, r + base),
                Instr::Binary(op, a, b) => Instr::Binary(op, a + base, b + base),
                Instr::Where(c, a, b) => Instr::Where(c + base, a + base, b + base),
            };
            self.push(instr, dtype);
        }
        self.result()
    }

    /// `f(self)`, typed: float functions of ints give float64; `not` takes bools.
    pub fn unary(mut self, op: UnaryOp, name: &'static str) -> Result<Program> {
        let r = self.result();
        let dtype = self.dtype();
        let (operand, out) = match op {
            UnaryOp::Exp | UnaryOp::Log | UnaryOp::Sqrt => (dtype.to_float(), dtype.to_float()),
            UnaryOp::Not if dtype == DType::Bool => (dtype, dtype),
            UnaryOp::Neg | UnaryOp::Abs if dtype != DType::Bool => (dtype, dtype),
            _ => return Err(ArrayError::DType { op: name, dtype }),
        };
        let r = self.cast(r, operand);
        self.push(Instr::Unary(op, r), out);
        Ok(self)
    }

    /// `self op other`, where `other`'s leaves are numbered by `leaf_map`
    /// into this program's. With `scalar`, one side is that Python-like
    /// scalar, which does not widen the other side's type.
    pub fn binary(
        mut self,
        op: BinaryOp,
        other: &Program,
        leaf_map: &[u32],
        name: &'static str,
        scalar: Option<Scalar>,
    ) -> Result<Program> {
        let a = self.result();
        let b = self.append(other, leaf_map);
        let (da, db) = (self.dtypes[a as usize], self.dtypes[b as usize]);
        let common = match scalar {
            Some(s) if s.dtype() == da => s.promote_with(db),
            Some(s) => s.promote_with(da),
            None => da.promote(db),
        };
        let (operand, out) = match op {
            BinaryOp::And | BinaryOp::Or => {
                if da != DType::Bool || db != DType::Bool {
                    let dtype = if da != DType::Bool { da } else { db };
                    return Err(ArrayError::DType { op: name, dtype });
                }
                (DType::Bool, DType::Bool)
            }
            _ if op.is_comparison() => (common, DType::Bool),
            BinaryOp::Div => (common.to_float(), common.to_float()),
            BinaryOp::Maximum | BinaryOp::Minimum => (common, common),
            _ if common == DType::Bool => (DType::I64, DType::I64),
            _ => (common, common),
        };
        let a = self.cast(a, operand);
        let b = self.cast(b, operand);
        self.push(Instr::Binary(op, a, b), out);
        Ok(self)
    }

    /// `cond ? self : other` (all three already merged into this program
    /// by the caller through `append` order: cond, then self, then other).
    pub fn select(cond: &Program, a: &Program, a_map: &[u32], b: &Program, b_map: &[u32]) -> Program {
        let mut p = cond.clone();
        let c = p.result();
        let c = p.cast(c, DType::Bool);
        let ra = p.append(a, a_map);
        let rb = p.append(b, b_map);
        let common = p.dtypes[ra as usize].promote(p.dtypes[rb as usize]);
        let ra = p.cast(ra, common);
        let rb = p.cast(rb, common);
        p.push(Instr::Where(c, ra, rb), common);
        p
    }

    /// The program followed by a cast of its result.
    pub fn astype(mut self, dtype: DType) -> Program {
        let r = self.result();
        self.cast(r, dtype);
        self
    }

    /// Whether the program only loads leaf 0 (a view of one input).
    pub fn is_plain_leaf(&self) -> bool {
        self.instrs == [Instr::Leaf(0)]
    }

    /// The text of the program, one instruction a line (for `explain`).
    pub fn text(&self) -> String {
        self.instrs
            .iter()
            .zip(&self.dtypes)
            .enumerate()
            .map(|(i, (instr, d))| format!("r{i}: {d} = {instr:?}\n"))
            .collect()
    }
}

/// Arithmetic every element type has (bool as `u8`); integer division by
/// zero gives 0, integer powers wrap and negative exponents give 0.
pub trait Arith: Element {
    /// a + b
    fn add(a: Self, b: Self) -> Self;
    /// a - b
    fn sub(a: Self, b: Self) -> Self;
    /// a * b
    fn mul(a: Self, b: Self) -> Self;
    /// a / b
    fn div(a: Self, b: Self) -> Self;
    /// a ** b
    fn pow(a: Self, b: Self) -> Self;
    /// -a
    fn neg(a: Self) -> Self;
    /// |a|
    fn abs(a: Self) -> Self;
    /// e^a (floats only; identity otherwise)
    fn exp(a: Self) -> Self;
    /// ln a (floats only)
    fn ln(a: Self) -> Self;
    /// sqrt a (floats only)
    fn sqrt(a: Self) -> Self;
    /// NumPy's `maximum`: NaN wins.
    fn maximum(a: Self, b: Self) -> Self {
        if a.partial_cmp(&a).is_none() || a >= b { a } else { b }
    }
    /// NumPy's `minimum`: NaN wins.
    fn minimum(a: Self, b: Self) -> Self {
        if a.partial_cmp(&a).is_none() || a <= b { a } else { b }
    }
}

macro_rules! arith_float {
    ($t:ty) => {
        impl Arith for $t {
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self {
                a + b
            }
            #[inline(always)]
            fn sub(a: Self, b: Self) -> Self {
                a - b
            }
            #[inline(always)]
            fn mul(a: Self, b: Self) -> Self {
                a * b
            }
            #[inline(always)]
            fn div(a: Self, b: Self) -> Self {
                a / b
            }
            #[inline(always)]
            fn pow(a: Self, b: Self) -> Self {
                a.powf(b)
            }
            #[inline(always)]
            fn neg(a: Self) -> Self {
                -a
            }
            #[inline(always)]
            fn abs(a: Self) -> Self {
                a.abs()
            }
            #[inline(always)]
            fn exp(a: Self) -> Self {
                a.exp()
            }
            #[inline(always)]
            fn ln(a: Self) -> Self {
                a.ln()
            }
            #[inline(always)]
            fn sqrt(a: Self) -> Self {
                a.sqrt()
            }
        }
    };
}
arith_float!(f32);
arith_float!(f64);

macro_rules! arith_int {
    ($t:ty, $abs:expr) => {
        impl Arith for $t {
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self {
                a.wrapping_add(b)
            }
            #[inline(always)]
            fn sub(a: Self, b: Self) -> Self {
                a.wrapping_sub(b)
            }
            #[inline(always)]
            fn mul(a: Self, b: Self) -> Self {
                a.wrapping_mul(b)
            }
            #[inline(always)]
            fn div(a: Self, b: Self) -> Self {
                if b == 0 { 0 } else { a.wrapping_div(b) }
            }
            #[inline(always)]
            fn pow(a: Self, b: Self) -> Self {
                match u32::try_from(b) {
                    Ok(e) => a.wrapping_pow(e),
                    Err(_) => 0,
                }
            }
            #[inline(always)]
            fn neg(a: Self) -> Self {
                a.wrapping_neg()
            }
            #[inline(always)]
            fn abs(a: Self) -> Self {
                $abs(a)
            }
            #[inline(always)]
            fn exp(a: Self) -> Self {
                a
            }
            #[inline(always)]
            fn ln(a: Self) -> Self {
                a
            }
            #[inline(always)]
            fn sqrt(a: Self) -> Self {
                a
            }
        }
    };
}
arith_int!(i32, i32::wrapping_abs);
arith_int!(i64, i64::wrapping_abs);
arith_int!(u8, |a: u8| a);

/// A tile of a chunk: `rows` runs of `cols` elements, run `r` starting at
/// flat position `start + r * row_stride` (C order). A flat tile is one
/// run, which may cross rows of the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Flat position of the first element.
    pub start: usize,
    /// Runs.
    pub rows: usize,
    /// Elements per run.
    pub cols: usize,
    /// Flat distance between runs.
    pub row_stride: usize,
}

impl Tile {
    /// Elements in the tile.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each run's flat start and its offset in the tile.
    pub fn runs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.rows).map(|r| (self.start + r * self.row_stride, r * self.cols))
    }
}

/// Side of the square tiles used when a leaf is read across its rows (a
/// transpose): 32 x 32 elements touch 128 cache lines of each input, which
/// stay in L1 while the tile is read.
pub const SQUARE: usize = 32;

/// The tiles covering a chunk of `shape`: flat runs of [`TILE`] elements, or
/// with `square`, [`SQUARE`]-sided squares over the last two axes.
pub fn tiles(shape: &[usize], square: bool) -> Vec<Tile> {
    let n: usize = shape.iter().product();
    let nd = shape.len();
    if !square || nd < 2 {
        return (0..n)
            .step_by(TILE)
            .map(|start| Tile {
                start,
                rows: 1,
                cols: TILE.min(n - start),
                row_stride: 0,
            })
            .collect();
    }
    let (rows, cols) = (shape[nd - 2], shape[nd - 1]);
    let plane = rows * cols;
    let mut out = Vec::new();
    for lead in 0..n.checked_div(plane).unwrap_or(0) {
        for r0 in (0..rows).step_by(SQUARE) {
            for c0 in (0..cols).step_by(SQUARE) {
                out.push(Tile {
                    start: lead * plane + r0 * cols + c0,
                    rows: SQUARE.min(rows - r0),
                    cols: SQUARE.min(cols - c0),
                    row_stride: cols,
                });
            }
        }
    }
    out
}

/// Where a leaf's elements come from, one tile at a time.
pub trait Source {
    /// Writes the tile's elements (runs one after another) into `out`,
    /// whose type is the leaf's.
    fn load(&mut self, tile: &Tile, out: &mut crate::block::Buf);
}

/// Runs a program over the tiles of a chunk, calling `sink(tile, result)`
/// for each, in the order given.
pub fn run(
    program: &Program,
    leaves: &mut [Box<dyn Source + '_>],
    tiles: &[Tile],
    mut sink: impl FnMut(&Tile, &crate::block::Buf) -> Result<()>,
) -> Result<()> {
    use crate::block::Buf;
    let tile = tiles.iter().map(Tile::len).max().unwrap_or(0).max(1);
    let mut regs: Vec<Buf> = program.dtypes.iter().map(|&d| Buf::zeros(d, tile)).collect();
    let mut filled = vec![false; regs.len()];
    for t in tiles {
        let len = t.len();
        for (i, instr) in program.instrs.iter().enumerate() {
            let (before, after) = regs.split_at_mut(i);
            let out = &mut after[0];
            match *instr {
                Instr::Leaf(l) => {
                    let count = leaves.len();
                    let leaf = leaves
                        .get_mut(l as usize)
                        .ok_or_else(|| ArrayError::Data(format!("the program reads leaf {l}, the task has {count}")))?;
                    leaf.load(t, out);
                }
                Instr::Const(value, _) => {
                    // Constants are the same in every tile.
                    if !filled[i] {
                        fill(out, value);
                        filled[i] = true;
                    }
                }
                Instr::Cast(r, _) => cast_into(&before[r as usize], out, len),
                Instr::Unary(op, r) => unary(op, &before[r as usize], out, len)?,
                Instr::Binary(op, a, b) => binary(op, &before[a as usize], &before[b as usize], out, len)?,
                Instr::Where(c, a, b) => {
                    select(&before[c as usize], &before[a as usize], &before[b as usize], out, len)?
                }
            }
        }
        let result = regs.last().ok_or_else(|| ArrayError::Data("an empty program".into()))?;
        sink(t, &truncated(result, len))?;
    }
    Ok(())
}

/// A tile's first `len` elements; borrowed when it is full.
fn truncated(buf: &crate::block::Buf, len: usize) -> std::borrow::Cow<'_, crate::block::Buf> {
    if buf.len() == len {
        std::borrow::Cow::Borrowed(buf)
    } else {
        std::borrow::Cow::Owned(with_typed!(Buf, buf, v => crate::block::IntoBuf::into_buf(v[..len].to_vec())))
    }
}

use crate::block::Buf;

fn fill(out: &mut Buf, value: Scalar) {
    with_typed!(Buf, out, v => {
        let x = if v.is_empty() { return } else { elem_of(value, &v[0]) };
        v.fill(x);
    })
}

fn elem_of<T: Element>(value: Scalar, _: &T) -> T {
    if T::DTYPE.is_float() {
        T::from_f64(value.as_f64())
    } else {
        T::from_i64(value.as_i64())
    }
}

fn cast_into(src: &Buf, out: &mut Buf, len: usize) {
    with_typed!(Buf, out, o => with_typed!(Buf, src, s => convert(&s[..len], &mut o[..len])))
}

/// One element converted as `as` converts (bool: nonzero is true).
#[inline(always)]
pub fn cast_one<S: Element, T: Element>(x: S) -> T {
    if T::DTYPE.is_float() || S::DTYPE.is_float() && T::DTYPE == crate::DType::Bool {
        T::from_f64(x.to_f64())
    } else {
        T::from_i64(x.to_i64())
    }
}

/// Converts as `as` does (bool: nonzero is true).
#[inline]
pub fn convert<S: Element, T: Element>(src: &[S], out: &mut [T]) {
    if T::DTYPE.is_float() || S::DTYPE.is_float() && T::DTYPE == crate::DType::Bool {
        for (o, &x) in out.iter_mut().zip(src) {
            *o = T::from_f64(x.to_f64());
        }
    } else {
        for (o, &x) in out.iter_mut().zip(src) {
            *o = T::from_i64(x.to_i64());
        }
    }
}

fn mismatch(what: &str) -> ArrayError {
    ArrayError::Data(format!("{what}: registers of mismatched types (a malformed program)"))
}

fn unary(op: UnaryOp, src: &Buf, out: &mut Buf, len: usize) -> Result<()> {
    fn go<T: Arith>(op: UnaryOp, s: &[T], o: &mut [T]) {
        macro_rules! each {
            ($f:expr) => {
                for (o, &x) in o.iter_mut().zip(s) {
                    *o = $f(x);
                }
            };
        }
        match op {
            UnaryOp::Neg => each!(T::neg),
            UnaryOp::Abs => each!(T::abs),
            UnaryOp::Exp => each!(T::exp),
            UnaryOp::Log => each!(T::ln),
            UnaryOp::Sqrt => each!(T::sqrt),
            UnaryOp::Not => each!(|x: T| T::from_i64(i64::from(x.to_i64() == 0))),
        }
    }
    match (src, out) {
        (Buf::F32(s), Buf::F32(o)) => go(op, &s[..len], &mut o[..len]),
        (Buf::F64(s), Buf::F64(o)) => go(op, &s[..len], &mut o[..len]),
        (Buf::I32(s), Buf::I32(o)) => go(op, &s[..len], &mut o[..len]),
        (Buf::I64(s), Buf::I64(o)) => go(op, &s[..len], &mut o[..len]),
        (Buf::Bool(s), Buf::Bool(o)) => go(op, &s[..len], &mut o[..len]),
        _ => return Err(mismatch("unary")),
    }
    Ok(())
}

fn binary(op: BinaryOp, a: &Buf, b: &Buf, out: &mut Buf, len: usize) -> Result<()> {
    fn arith<T: Arith>(op: BinaryOp, a: &[T], b: &[T], o: &mut [T]) {
        macro_rules! each {
            ($f:expr) => {
                for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                    *o = $f(x, y);
                }
            };
        }
        match op {
            BinaryOp::Add => each!(T::add),
            BinaryOp::Sub => each!(T::sub),
            BinaryOp::Mul => each!(T::mul),
            BinaryOp::Div => each!(T::div),
            BinaryOp::Pow => each!(T::pow),
            BinaryOp::Maximum => each!(T::maximum),
            BinaryOp::Minimum => each!(T::minimum),
            BinaryOp::And => each!(|x: T, y: T| T::from_i64(i64::from(x.to_i64() != 0 && y.to_i64() != 0))),
            BinaryOp::Or => each!(|x: T, y: T| T::from_i64(i64::from(x.to_i64() != 0 || y.to_i64() != 0))),
            _ => {}
        }
    }
    fn compare<T: Element>(op: BinaryOp, a: &[T], b: &[T], o: &mut [u8]) {
        macro_rules! each {
            ($f:expr) => {
                for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                    *o = u8::from($f(x, y));
                }
            };
        }
        match op {
            BinaryOp::Eq => each!(|x, y| x == y),
            BinaryOp::Ne => each!(|x, y| x != y),
            BinaryOp::Lt => each!(|x, y| x < y),
            BinaryOp::Le => each!(|x, y| x <= y),
            BinaryOp::Gt => each!(|x, y| x > y),
            BinaryOp::Ge => each!(|x, y| x >= y),
            _ => {}
        }
    }
    if op.is_comparison() {
        let Buf::Bool(o) = out else {
            return Err(mismatch("comparison"));
        };
        let o = &mut o[..len];
        match (a, b) {
            (Buf::F32(a), Buf::F32(b)) => compare(op, &a[..len], &b[..len], o),
            (Buf::F64(a), Buf::F64(b)) => compare(op, &a[..len], &b[..len], o),
            (Buf::I32(a), Buf::I32(b)) => compare(op, &a[..len], &b[..len], o),
            (Buf::I64(a), Buf::I64(b)) => compare(op, &a[..len], &b[..len], o),
            (Buf::Bool(a), Buf::Bool(b)) => compare(op, &a[..len], &b[..len], o),
            _ => return Err(mismatch("comparison")),
        }
        return Ok(());
    }
    match (a, b, out) {
        (Buf::F32(a), Buf::F32(b), Buf::F32(o)) => arith(op, &a[..len], &b[..len], &mut o[..len]),
        (Buf::F64(a), Buf::F64(b), Buf::F64(o)) => arith(op, &a[..len], &b[..len], &mut o[..len]),
        (Buf::I32(a), Buf::I32(b), Buf::I32(o)) => arith(op, &a[..len], &b[..len], &mut o[..len]),
        (Buf::I64(a), Buf::I64(b), Buf::I64(o)) => arith(op, &a[..len], &b[..len], &mut o[..len]),
        (Buf::Bool(a), Buf::Bool(b), Buf::Bool(o)) => arith(op, &a[..len], &b[..len], &mut o[..len]),
        _ => return Err(mismatch("binary")),
    }
    Ok(())
}

fn select(c: &Buf, a: &Buf, b: &Buf, out: &mut Buf, len: usize) -> Result<()> {
    fn go<T: Copy>(c: &[u8], a: &[T], b: &[T], o: &mut [T]) {
        for (((o, &c), &x), &y) in o.iter_mut().zip(c).zip(a).zip(b) {
            *o = if c != 0 { x } else { y };
        }
    }
    let Buf::Bool(c) = c else { return Err(mismatch("where")) };
    let c = &c[..len];
    match (a, b, out) {
        (Buf::F32(a), Buf::F32(b), Buf::F32(o)) => go(c, &a[..len], &b[..len], &mut o[..len]),
        (Buf::F64(a), Buf::F64(b), Buf::F64(o)) => go(c, &a[..len], &b[..len], &mut o[..len]),
        (Buf::I32(a), Buf::I32(b), Buf::I32(o)) => go(c, &a[..len], &b[..len], &mut o[..len]),
        (Buf::I64(a), Buf::I64(b), Buf::I64(o)) => go(c, &a[..len], &b[..len], &mut o[..len]),
        (Buf::Bool(a), Buf::Bool(b), Buf::Bool(o)) => go(c, &a[..len], &b[..len], &mut o[..len]),
        _ => return Err(mismatch("where")),
    }
    Ok(())
}
