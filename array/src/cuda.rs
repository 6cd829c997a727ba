//! CUDA C source of a [`GridPlan`]: one `extern "C"` kernel, `weft_fused`,
//! whose parameters are 64-bit slots: the output buffers, one slot per
//! leaf (an input's device pointer, or a generator's chunk seed), the
//! chunk's offset along axis 0 and the base of arg indices. The helpers
//! reproduce the CPU semantics exactly where C++ differs from Rust
//! (wrapping integers, integer division by zero, saturating float-to-int
//! casts, NumPy's NaN-propagating maximum). Sources are compiled with
//! NVRTC and cached by their text (`weft_kernels::generated`).

use std::fmt::Write as _;

use crate::dtype::{DType, Scalar};
use crate::expr::{BinaryOp, Instr, UnaryOp};
use crate::fuse::Gen;
use crate::grid::{BLOCK, GridPlan, LeafPlan, ReducePlan};
use crate::reduce::ReduceOp;

/// The kernel's name in every generated source.
pub const KERNEL: &str = "weft_fused";

/// Helpers every generated kernel starts with.
const PRELUDE: &str = r#"typedef unsigned long long u64;
typedef long long i64;
typedef unsigned char u8;
__device__ __forceinline__ i64 w_f2i(double x) {
  return x != x ? 0 : x >= 9223372036854775807.0 ? 0x7fffffffffffffffLL
       : x <= -9223372036854775808.0 ? (-0x7fffffffffffffffLL - 1) : (i64)x;
}
#define W_FLOAT(T, POW, ABS, EXP, LOG, SQRT) \
  __device__ __forceinline__ T w_add(T a, T b) { return a + b; } \
  __device__ __forceinline__ T w_sub(T a, T b) { return a - b; } \
  __device__ __forceinline__ T w_mul(T a, T b) { return a * b; } \
  __device__ __forceinline__ T w_div(T a, T b) { return a / b; } \
  __device__ __forceinline__ T w_pow(T a, T b) { return POW(a, b); } \
  __device__ __forceinline__ T w_neg(T a) { return -a; } \
  __device__ __forceinline__ T w_abs(T a) { return ABS(a); } \
  __device__ __forceinline__ T w_exp(T a) { return EXP(a); } \
  __device__ __forceinline__ T w_log(T a) { return LOG(a); } \
  __device__ __forceinline__ T w_sqrt(T a) { return SQRT(a); }
W_FLOAT(float, powf, fabsf, expf, logf, sqrtf)
W_FLOAT(double, pow, fabs, exp, log, sqrt)
#define W_INT(T, U) \
  __device__ __forceinline__ T w_add(T a, T b) { return (T)((U)a + (U)b); } \
  __device__ __forceinline__ T w_sub(T a, T b) { return (T)((U)a - (U)b); } \
  __device__ __forceinline__ T w_mul(T a, T b) { return (T)((U)a * (U)b); } \
  __device__ __forceinline__ T w_neg(T a) { return (T)((U)0 - (U)a); } \
  __device__ __forceinline__ T w_div(T a, T b) { \
    return b == 0 ? (T)0 : ((i64)b == -1 ? w_neg(a) : (T)(a / b)); } \
  __device__ __forceinline__ T w_pow(T a, T b) { \
    if ((i64)b < 0 || (i64)b > 4294967295LL) return (T)0; \
    U r = 1, x = (U)a; u64 e = (u64)b; \
    while (e) { if (e & 1) r = (U)(r * x); x = (U)(x * x); e >>= 1; } \
    return (T)r; } \
  __device__ __forceinline__ T w_abs(T a) { return (i64)a < 0 ? w_neg(a) : a; } \
  __device__ __forceinline__ T w_exp(T a) { return a; } \
  __device__ __forceinline__ T w_log(T a) { return a; } \
  __device__ __forceinline__ T w_sqrt(T a) { return a; }
W_INT(int, unsigned int)
W_INT(i64, u64)
W_INT(u8, u8)
template <typename T> __device__ __forceinline__ T w_max(T a, T b) { return (a != a || a >= b) ? a : b; }
template <typename T> __device__ __forceinline__ T w_min(T a, T b) { return (a != a || a <= b) ? a : b; }
__device__ __forceinline__ u64 w_mix(u64 z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
__device__ __forceinline__ double w_unit(u64 seed, u64 k) {
  u64 x = w_mix(seed + (k + 1) * 0x9e3779b97f4a7c15ULL);
  return __longlong_as_double((i64)(0x3ff0000000000000ULL | (x >> 12))) - 1.0;
}
__device__ __forceinline__ double w_normal(u64 seed, u64 k) {
  u64 pair = k & ~1ULL;
  double u1 = 1.0 - w_unit(seed, pair);
  double u2 = w_unit(seed, pair + 1);
  double r = sqrt(-2.0 * log(u1));
  double t = __longlong_as_double(0x401921fb54442d18LL) * u2;
  return (k & 1) == 0 ? r * cos(t) : r * sin(t);
}
__device__ __forceinline__ int w_better_f(bool max, double x, double best) {
  if (best != best) return 0;
  if (x != x) return 1;
  return max ? x > best : x < best;
}
"#;

/// The C type of a dtype.
pub fn ctype(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float",
        DType::F64 => "double",
        DType::I32 => "int",
        DType::I64 => "i64",
        DType::Bool => "u8",
    }
}

/// A constant of `dtype`, bit-exact (NaN and infinities included).
fn constant(value: Scalar, dtype: DType) -> String {
    match dtype {
        DType::F64 => format!("__longlong_as_double({:#x}LL)", value.as_f64().to_bits()),
        DType::F32 => format!("__int_as_float({:#x})", (value.as_f64() as f32).to_bits()),
        DType::I32 => format!("((int){})", value.as_i64() as i32),
        DType::I64 => format!("((i64){:#x}ULL)", value.as_i64() as u64),
        DType::Bool => format!("((u8){})", u8::from(value.as_i64() != 0 || value.as_f64() != 0.0)),
    }
}

/// `x` of type `from` converted to `to` as the CPU path's `as` casts do.
fn cast(x: &str, from: DType, to: DType) -> String {
    match to {
        DType::F64 => format!("((double){x})"),
        DType::F32 => format!("((float)(double){x})"),
        DType::Bool => format!("((u8)({x} != 0))"),
        DType::I64 | DType::I32 if from.is_float() => format!("(({})w_f2i((double){x}))", ctype(to)),
        DType::I64 | DType::I32 => format!("(({})(i64){x})", ctype(to)),
    }
}

fn unary(op: UnaryOp, x: &str) -> String {
    match op {
        UnaryOp::Neg => format!("w_neg({x})"),
        UnaryOp::Abs => format!("w_abs({x})"),
        UnaryOp::Exp => format!("w_exp({x})"),
        UnaryOp::Log => format!("w_log({x})"),
        UnaryOp::Sqrt => format!("w_sqrt({x})"),
        UnaryOp::Not => format!("((u8)({x} == 0))"),
    }
}

fn binary(op: BinaryOp, a: &str, b: &str) -> String {
    let call = |f: &str| format!("{f}({a}, {b})");
    let infix = |o: &str| format!("((u8)({a} {o} {b}))");
    match op {
        BinaryOp::Add => call("w_add"),
        BinaryOp::Sub => call("w_sub"),
        BinaryOp::Mul => call("w_mul"),
        BinaryOp::Div => call("w_div"),
        BinaryOp::Pow => call("w_pow"),
        BinaryOp::Maximum => call("w_max"),
        BinaryOp::Minimum => call("w_min"),
        BinaryOp::Eq => infix("=="),
        BinaryOp::Ne => infix("!="),
        BinaryOp::Lt => infix("<"),
        BinaryOp::Le => infix("<="),
        BinaryOp::Gt => infix(">"),
        BinaryOp::Ge => infix(">="),
        BinaryOp::And => format!("((u8)({a} != 0 && {b} != 0))"),
        BinaryOp::Or => format!("((u8)({a} != 0 || {b} != 0))"),
    }
}

/// Statements computing the program at flat output position `i` into
/// registers `r0..`, indented by `pad`.
fn element(plan: &GridPlan, pad: &str) -> String {
    let mut s = String::new();
    let p = &plan.program;
    for (k, (instr, &dtype)) in p.instrs.iter().zip(&p.dtypes).enumerate() {
        let reg = |r: u32| format!("r{r}");
        let value = match *instr {
            Instr::Leaf(l) => leaf(plan, l as usize),
            Instr::Const(v, d) => constant(v, d),
            Instr::Cast(r, d) => cast(&reg(r), p.dtypes[r as usize], d),
            Instr::Unary(op, r) => unary(op, &reg(r)),
            Instr::Binary(op, a, b) => binary(op, &reg(a), &reg(b)),
            Instr::Where(c, a, b) => format!("({} != 0 ? {} : {})", reg(c), reg(a), reg(b)),
        };
        let _ = writeln!(s, "{pad}const {} r{k} = {value};", ctype(dtype));
    }
    s
}

/// The expression loading leaf `l` at flat output position `i`.
fn leaf(plan: &GridPlan, l: usize) -> String {
    match &plan.leaves[l] {
        LeafPlan::Input { strides, .. } => format!("in{l}[{}]", position(plan, strides)),
        LeafPlan::Gen { generator, strides } => {
            let k = position(plan, strides);
            match *generator {
                Gen::Uniform { low, high, .. } => format!(
                    "({} + ({} - {}) * w_unit(in{l}, {k}))",
                    constant(Scalar::Float(low), DType::F64),
                    constant(Scalar::Float(high), DType::F64),
                    constant(Scalar::Float(low), DType::F64)
                ),
                Gen::Normal { mean, std, .. } => format!(
                    "({} + {} * w_normal(in{l}, {k}))",
                    constant(Scalar::Float(mean), DType::F64),
                    constant(Scalar::Float(std), DType::F64)
                ),
                Gen::RangeF64 { start, step } => format!(
                    "({} + {} * (double)(offset + {k}))",
                    constant(Scalar::Float(start), DType::F64),
                    constant(Scalar::Float(step), DType::F64)
                ),
                Gen::RangeI64 { start, step } => {
                    format!(
                        "w_add((i64){:#x}ULL, w_mul((i64){:#x}ULL, (i64)(offset + {k})))",
                        start as u64, step as u64
                    )
                }
            }
        }
    }
}

/// The offset of a leaf read with `strides` at flat output position `i`:
/// `i` itself where the leaf is laid out as the output.
fn position(plan: &GridPlan, strides: &[usize]) -> String {
    if strides == crate::chunks::strides(&plan.shape) {
        return "i".into();
    }
    let mut terms = Vec::new();
    let mut div = 1usize;
    for (&len, &st) in plan.shape.iter().zip(strides).rev() {
        if st != 0 && len > 1 {
            terms.push(format!("((i / {div}ULL) % {len}ULL) * {st}ULL"));
        }
        div *= len;
    }
    if terms.is_empty() {
        "0".into()
    } else {
        format!("({})", terms.join(" + "))
    }
}

/// The accumulator struct `Acc` of a reduction of `dtype` values.
fn accumulator(op: ReduceOp, dtype: DType) -> String {
    let t = ctype(dtype);
    match op {
        ReduceOp::Sum if dtype.is_float() => "struct Acc { double s;\n  __device__ void init() { s = 0.0; }\n  __device__ void add(double x, i64) { s += x; }\n  __device__ void merge(const Acc& o) { s += o.s; }\n  __device__ void write(double* o0, u64 at) { o0[at] = s; } };\n".into(),
        ReduceOp::Sum => "struct Acc { i64 s;\n  __device__ void init() { s = 0; }\n  __device__ void add(i64 x, i64) { s = w_add(s, x); }\n  __device__ void merge(const Acc& o) { s = w_add(s, o.s); }\n  __device__ void write(i64* o0, u64 at) { o0[at] = s; } };\n".into(),
        ReduceOp::Min | ReduceOp::Max => {
            let f = if op == ReduceOp::Min { "w_min" } else { "w_max" };
            format!(
                "struct Acc {{ u8 has; {t} v;\n  __device__ void init() {{ has = 0; v = 0; }}\n  __device__ void add({t} x, i64) {{ v = has ? {f}(v, x) : x; has = 1; }}\n  __device__ void merge(const Acc& o) {{ if (o.has) {{ v = has ? {f}(v, o.v) : o.v; has = 1; }} }}\n  __device__ void write({t}* o0, u64 at) {{ o0[at] = v; }} }};\n"
            )
        }
        ReduceOp::Mean | ReduceOp::Var(_) | ReduceOp::Std(_) => "struct Acc { double n, mean, m2;\n  __device__ void init() { n = 0.0; mean = 0.0; m2 = 0.0; }\n  __device__ void add(double x, i64) { n += 1.0; double d = x - mean; mean += d / n; m2 += d * (x - mean); }\n  __device__ void merge(const Acc& o) {\n    double t = n + o.n; if (t == 0.0) return;\n    double d = o.mean - mean;\n    double m = mean + d * o.n / t; m2 = m2 + o.m2 + d * d * n * o.n / t; mean = m; n = t; }\n  __device__ void write(double* o0, double* o1, double* o2, u64 at) { o0[at] = n; o1[at] = mean; o2[at] = m2; } };\n".into(),
        ReduceOp::ArgMin | ReduceOp::ArgMax => {
            let max = op == ReduceOp::ArgMax;
            let float = dtype.is_float();
            let beats = |x: &str| {
                if float {
                    format!("w_better_f({max}, {x}, v)")
                } else {
                    format!("({x} {} v)", if max { ">" } else { "<" })
                }
            };
            let (v, same) = if float {
                ("double", "(o.v == v || (o.v != o.v && v != v))")
            } else {
                ("i64", "o.v == v")
            };
            let (beats, beats_o) = (beats("x"), beats("o.v"));
            format!(
                "struct Acc {{ {v} v; i64 i;\n  __device__ void init() {{ v = 0; i = -1; }}\n  __device__ void add({v} x, i64 g) {{ if (i < 0 || {beats}) {{ v = x; i = g; }} }}\n  __device__ void merge(const Acc& o) {{ if (o.i >= 0 && (i < 0 || {beats_o} || ({same} && o.i < i))) {{ v = o.v; i = o.i; }} }}\n  __device__ void write({v}* o0, i64* o1, u64 at) {{ o0[at] = v; o1[at] = i; }} }};\n"
            )
        }
    }
}

/// The kernel's source text.
pub fn source(plan: &GridPlan) -> String {
    let dtype = plan.program.dtype();
    let mut s = String::from(PRELUDE);
    let mut params: Vec<String> = Vec::new();
    match &plan.reduce {
        None => params.push(format!("{}* __restrict__ out0", ctype(dtype))),
        Some(r) => {
            for (k, d) in r.components(dtype).into_iter().enumerate() {
                params.push(format!("{}* __restrict__ out{k}", ctype(d)));
            }
        }
    }
    for (l, leaf) in plan.leaves.iter().enumerate() {
        params.push(match leaf {
            LeafPlan::Input { dtype, .. } => format!("const {}* __restrict__ in{l}", ctype(*dtype)),
            LeafPlan::Gen { .. } => format!("u64 in{l}"),
        });
    }
    params.push("u64 offset".into());
    params.push("i64 arg_base".into());
    let result = format!("r{}", plan.program.instrs.len().saturating_sub(1));
    match &plan.reduce {
        None => {
            let _ = write!(
                s,
                "extern \"C\" __global__ void {KERNEL}({}) {{\n  (void)offset; (void)arg_base;\n  for (u64 i = (u64)blockIdx.x * {BLOCK}ULL + threadIdx.x; i < {n}ULL; i += (u64)gridDim.x * {BLOCK}ULL) {{\n{body}    out0[i] = {result};\n  }}\n}}\n",
                params.join(", "),
                n = plan.len(),
                body = element(plan, "    "),
            );
        }
        Some(r) => s.push_str(&reduction(plan, r, &params, &result)),
    }
    s
}

fn reduction(plan: &GridPlan, r: &ReducePlan, params: &[String], result: &str) -> String {
    let dtype = plan.program.dtype();
    let (kept, slices, n) = (r.kept_len(), r.slices, r.reduced_len());
    let mut kbase = vec!["0ULL".to_string()];
    let mut div = 1usize;
    for &(len, st) in r.kept.iter().rev() {
        kbase.push(format!("((kept / {div}ULL) % {len}ULL) * {st}ULL"));
        div *= len;
    }
    let (mut rpos, mut gpos) = (vec!["kbase".to_string()], vec!["arg_base".to_string()]);
    let mut div = 1usize;
    for &(len, st, gst) in r.reduced.iter().rev() {
        rpos.push(format!("((r / {div}ULL) % {len}ULL) * {st}ULL"));
        gpos.push(format!("(i64)(((r / {div}ULL) % {len}ULL) * {gst}ULL)"));
        div *= len;
    }
    let value = match r.op {
        ReduceOp::Sum if dtype.is_float() => format!("(double){result}"),
        ReduceOp::Sum => format!("(i64){result}"),
        ReduceOp::Min | ReduceOp::Max => result.to_string(),
        ReduceOp::ArgMin | ReduceOp::ArgMax if !dtype.is_float() => format!("(i64){result}"),
        _ => format!("(double){result}"),
    };
    let outs: Vec<String> = (0..r.components(dtype).len()).map(|k| format!("out{k}")).collect();
    format!(
        "{acc}extern \"C\" __global__ void {KERNEL}({params}) {{\n  (void)offset;\n  __shared__ Acc sh[{BLOCK}];\n  for (u64 b = blockIdx.x; b < {blocks}ULL; b += gridDim.x) {{\n    const u64 kept = b / {slices}ULL, slice = b % {slices}ULL;\n    const u64 kbase = {kbase};\n    Acc acc; acc.init();\n    for (u64 r = slice * {BLOCK}ULL + threadIdx.x; r < {n}ULL; r += {stride}ULL) {{\n      const u64 i = {rpos};\n      const i64 g = {gpos};\n      (void)g;\n{body}      acc.add({value}, g);\n    }}\n    sh[threadIdx.x] = acc;\n    __syncthreads();\n    for (unsigned s = {half}; s > 0; s >>= 1) {{\n      if (threadIdx.x < s) sh[threadIdx.x].merge(sh[threadIdx.x + s]);\n      __syncthreads();\n    }}\n    if (threadIdx.x == 0) sh[0].write({outs}, slice * {kept}ULL + kept);\n    __syncthreads();\n  }}\n}}\n",
        acc = accumulator(r.op, dtype),
        params = params.join(", "),
        blocks = kept.max(1) * slices,
        kbase = kbase.join(" + "),
        stride = slices * BLOCK,
        rpos = rpos.join(" + "),
        gpos = gpos.join(" + "),
        body = element(plan, "      "),
        half = BLOCK / 2,
        outs = outs.join(", "),
    )
}
