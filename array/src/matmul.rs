//! Blocked matrix products: block `(i, j)` of `A @ B` is the sum over `k`
//! of `A[i, k] @ B[k, j]`. A task multiplies up to `split_every` pairs into
//! one buffer (the `gemm` crate, accumulating in place); more pairs are
//! summed in a tree of combine tasks. Transposed operands (`y @ y.T`) are
//! read through strides, never copied. A product of an array and its own
//! transpose is symmetric: its blocks below the diagonal are the
//! transposes of those above (BLAS's `syrk`, which NumPy calls for
//! `y @ y.T`), so only `m (m + 1) / 2` blocks are multiplied, and of a
//! diagonal block only its upper triangle, then mirrored.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weft_runtime::{Key, TaskSpec, Value, ops::args};

use crate::array::{Array, Layer, chunk_key, unique_name};
use crate::block::{Out, decode_one};
use crate::chunks::Chunks;
use crate::dtype::DType;
use crate::error::{ArrayError, Result};
use crate::expr::Program;
use crate::fuse::{FusedArgs, LeafArg};
use crate::reduce::ReduceOp;
use crate::tree::{DEFAULT_SPLIT_EVERY, combine_tree};

/// The arguments of `array.matmul`: the inputs are `pairs` blocks of A,
/// then `pairs` blocks of B.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatmulArgs {
    /// Products summed.
    pub pairs: usize,
    /// A's blocks are stored transposed.
    pub trans_a: bool,
    /// B's blocks are stored transposed.
    pub trans_b: bool,
    /// Every product is symmetric (a diagonal block of `X @ X.T`): on the
    /// CPU only its upper triangle is multiplied, then mirrored (half the
    /// work, as BLAS's `syrk`); a GPU multiplies it whole.
    #[serde(default)]
    pub symmetric: bool,
}

/// Rows per strip of a symmetric product: strip `s` is multiplied from
/// its diagonal on, so the strips do `(1 + 1 / strips) / 2` of the work.
const SYMMETRIC_STRIP: usize = 128;

/// An operand: its layer and whether the layer holds it transposed.
fn operand(x: &Array, dtype: DType) -> (Arc<Layer>, bool, Chunks) {
    let x = if x.dtype == dtype { x.clone() } else { x.astype(dtype) };
    match x.as_view() {
        Some((layer, axes)) if axes == [1, 0] => (layer, true, x.chunks.clone()),
        Some((layer, _)) => (layer, false, x.chunks.clone()),
        None => (x.layer(), false, x.chunks.clone()),
    }
}

impl Array {
    /// The matrix product of two 2-d arrays (B is rechunked so its row
    /// chunks match A's column chunks). Integers are multiplied as float64.
    pub fn matmul(&self, other: &Array) -> Result<Array> {
        self.matmul_with(other, DEFAULT_SPLIT_EVERY)
    }

    /// Like [`Array::dot`] for 2-d arrays.
    pub fn dot(&self, other: &Array) -> Result<Array> {
        self.matmul(other)
    }

    /// [`Array::matmul`] summing at most `split_every` products per task.
    pub fn matmul_with(&self, other: &Array, split_every: usize) -> Result<Array> {
        if self.ndim() != 2 || other.ndim() != 2 || self.shape[1] != other.shape[0] {
            return Err(ArrayError::Shape {
                op: "matmul",
                left: self.shape.clone(),
                right: other.shape.clone(),
            });
        }
        // B's row chunks follow A's column chunks.
        let rechunked;
        let other = if self.chunks.axis(1) != other.chunks.axis(0) {
            let want = Chunks(vec![self.chunks.axis(1).to_vec(), other.chunks.axis(1).to_vec()]);
            rechunked = other.rechunk_to(want, &crate::rechunk::RechunkOptions::default())?;
            &rechunked
        } else {
            other
        };
        let dtype = self.dtype.promote(other.dtype).to_float();
        let (la, ta, ca) = operand(self, dtype);
        let (lb, tb, cb) = operand(other, dtype);
        // The stored grids: transposed operands index their layer's blocks swapped.
        let key = |layer: &Layer, stored: &Chunks, trans: bool, r: usize, c: usize| -> Key {
            let b = if trans { [c, r] } else { [r, c] };
            layer.key(stored.ravel(&b))
        };
        let stored_a = if ta { ca.permute(&[1, 0]) } else { ca.clone() };
        let stored_b = if tb { cb.permute(&[1, 0]) } else { cb.clone() };
        let (gm, gk, gn) = (ca.axis(0).len(), ca.axis(1).len(), cb.axis(1).len());
        let split_every = split_every.max(2);
        let name = unique_name("matmul");
        // `X @ X.T` or `X.T @ X`: one layer, read once each way.
        let symmetric = la.name == lb.name && ta != tb;
        let out_chunks = Chunks(vec![ca.axis(0).to_vec(), cb.axis(1).to_vec()]);
        let out_shape = vec![self.shape[0], other.shape[1]];
        let mut tasks = Vec::new();
        for i in 0..gm {
            for j in 0..gn {
                let o = i * gn + j;
                if symmetric && j < i {
                    tasks.push(mirror(&name, &out_chunks, &out_shape, (i, j), dtype));
                    continue;
                }
                let mut level: Vec<Key> = Vec::new();
                let ks: Vec<usize> = (0..gk).collect();
                let groups: Vec<&[usize]> = ks.chunks(split_every).collect();
                let single = groups.len() == 1;
                for (g, group) in groups.iter().enumerate() {
                    let mut deps: Vec<Key> = group.iter().map(|&k| key(&la, &stored_a, ta, i, k)).collect();
                    deps.extend(group.iter().map(|&k| key(&lb, &stored_b, tb, k, j)));
                    let margs = MatmulArgs {
                        pairs: group.len(),
                        trans_a: ta,
                        trans_b: tb,
                        symmetric: symmetric && i == j,
                    };
                    let k = if single {
                        chunk_key(&name, o)
                    } else {
                        Key::from(format!("{name}-g-{o}-{g}"))
                    };
                    tasks.push(TaskSpec::new(
                        k.clone(),
                        "array.matmul",
                        args(&margs).unwrap_or_default(),
                        deps,
                    ));
                    level.push(k);
                }
                if !single {
                    combine_tree(&mut tasks, &name, o, level, split_every, ReduceOp::Sum, dtype);
                }
            }
        }
        let mut deps = vec![la.clone()];
        if lb.name != la.name {
            deps.push(lb);
        }
        let layer = Layer::new(name, tasks, deps, gm * gn);
        Ok(Array::from_layer(layer, dtype, out_shape, out_chunks))
    }
}

/// The task making block `(i, j)` of a symmetric product in the layer
/// `name`: block `(j, i)` transposed (a fused task reading it across rows).
fn mirror(name: &str, chunks: &Chunks, global: &[usize], (i, j): (usize, usize), dtype: DType) -> TaskSpec {
    let fused = FusedArgs {
        program: Program::leaf(dtype),
        leaves: vec![LeafArg::Input {
            dep: 0,
            axes: vec![1, 0],
        }],
        shape: chunks.block_shape(&[i, j]),
        offset: chunks.block_offset(&[i, j]),
        global: global.to_vec(),
        reduce: None,
    };
    TaskSpec::new(
        chunk_key(name, chunks.ravel(&[i, j])),
        "array.fused",
        // Plain data always serializes.
        args(&fused).unwrap_or_default(),
        vec![chunk_key(name, chunks.ravel(&[j, i]))],
    )
}

/// Runs an `array.matmul` task.
pub fn run_matmul(args: &MatmulArgs, inputs: &[Arc<Value>]) -> Result<Value> {
    if inputs.len() != 2 * args.pairs || args.pairs == 0 {
        return Err(ArrayError::Data(format!(
            "matmul: {} inputs for {} products",
            inputs.len(),
            args.pairs
        )));
    }
    let views = inputs.iter().map(|v| decode_one(v)).collect::<Result<Vec<_>>>()?;
    let dims = |shape: &[usize], trans: bool| -> Result<(usize, usize)> {
        match *shape {
            [r, c] => Ok(if trans { (c, r) } else { (r, c) }),
            _ => Err(ArrayError::Data(format!("matmul: a block of shape {shape:?}"))),
        }
    };
    let (m, _) = dims(&views[0].shape, args.trans_a)?;
    let (_, n) = dims(&views[args.pairs].shape, args.trans_b)?;
    let dtype = views[0].dtype();
    if args.symmetric && m != n {
        return Err(ArrayError::Data(format!(
            "matmul: a symmetric product of shape [{m}, {n}]"
        )));
    }
    let mut out = Out::new(dtype, &[m, n]);
    for p in 0..args.pairs {
        let (a, b) = (&views[p], &views[args.pairs + p]);
        let (am, ak) = dims(&a.shape, args.trans_a)?;
        let (bk, bn) = dims(&b.shape, args.trans_b)?;
        if am != m || bn != n || ak != bk || a.dtype() != dtype || b.dtype() != dtype {
            return Err(ArrayError::Shape {
                op: "matmul",
                left: a.shape.clone(),
                right: b.shape.clone(),
            });
        }
        // Row and column strides of the logical (untransposed) operands.
        let (ars, acs) = if args.trans_a { (1, am) } else { (ak, 1) };
        let (brs, bcs) = if args.trans_b { (1, bk) } else { (bn, 1) };
        let read_dst = p > 0;
        match dtype {
            DType::F64 => {
                let (x, y) = (a.data.as_slice::<f64>(), b.data.as_slice::<f64>());
                let dst = out.as_mut::<f64>()?;
                if let (Some(x), Some(y)) = (x, y) {
                    let upper = args.symmetric;
                    product(dst, x, y, (m, ak, n), (ars, acs), (brs, bcs), read_dst, upper, 1.0f64);
                }
            }
            DType::F32 => {
                let (x, y) = (a.data.as_slice::<f32>(), b.data.as_slice::<f32>());
                let dst = out.as_mut::<f32>()?;
                if let (Some(x), Some(y)) = (x, y) {
                    let upper = args.symmetric;
                    product(dst, x, y, (m, ak, n), (ars, acs), (brs, bcs), read_dst, upper, 1.0f32);
                }
            }
            other => {
                return Err(ArrayError::DType {
                    op: "matmul",
                    dtype: other,
                });
            }
        }
    }
    if args.symmetric {
        match dtype {
            DType::F64 => mirror_upper(out.as_mut::<f64>()?, n),
            _ => mirror_upper(out.as_mut::<f32>()?, n),
        }
    }
    out.finish()
}

/// `dst (+)= a @ b` (`dst` row-major `m x n`); with `upper`, only the
/// upper triangle and the strips' corners below it, in row strips of
/// [`SYMMETRIC_STRIP`] from their diagonal on.
#[allow(clippy::too_many_arguments)]
fn product<T: 'static + Copy + Default>(
    dst: &mut [T],
    a: &[T],
    b: &[T],
    (m, k, n): (usize, usize, usize),
    (ars, acs): (usize, usize),
    (brs, bcs): (usize, usize),
    read_dst: bool,
    upper: bool,
    one: T,
) {
    if !upper {
        gemm_into(dst, n, a, b, (m, k, n), (ars, acs), (brs, bcs), read_dst, one);
        return;
    }
    for r in (0..m.min(n)).step_by(SYMMETRIC_STRIP) {
        let rows = SYMMETRIC_STRIP.min(m - r);
        gemm_into(
            &mut dst[r * n + r..],
            n,
            &a[r * ars..],
            &b[r * bcs..],
            (rows, k, n - r),
            (ars, acs),
            (brs, bcs),
            read_dst,
            one,
        );
    }
}

/// Copies the upper triangle of the square row-major `n x n` `dst` onto
/// its lower triangle, in tiles.
fn mirror_upper<T: Copy>(dst: &mut [T], n: usize) {
    const TILE: usize = 32;
    for i0 in (0..n).step_by(TILE) {
        for j0 in (0..=i0).step_by(TILE) {
            for i in i0..(i0 + TILE).min(n) {
                for j in j0..(j0 + TILE).min(i) {
                    dst[i * n + j] = dst[j * n + i];
                }
            }
        }
    }
}

/// `dst (+)= a @ b` through the `gemm` crate on this thread; `dst`'s rows
/// are `ldd` apart.
#[allow(clippy::too_many_arguments)]
fn gemm_into<T: 'static + Copy + Default>(
    dst: &mut [T],
    ldd: usize,
    a: &[T],
    b: &[T],
    (m, k, n): (usize, usize, usize),
    (ars, acs): (usize, usize),
    (brs, bcs): (usize, usize),
    read_dst: bool,
    one: T,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !read_dst {
            for row in dst.chunks_mut(ldd).take(m) {
                row[..n].fill(T::default());
            }
        }
        return;
    }
    // The last element each operand reads, by its strides.
    let end = |rows: usize, rs: usize, cols: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    assert!(
        ldd >= n && dst.len() >= end(m, ldd, n, 1) && a.len() >= end(m, ars, k, acs) && b.len() >= end(k, brs, n, bcs)
    );
    // SAFETY: the lengths were checked just above against the shapes and
    // strides (`dst`, `a` and `b` each read or written within their slices
    // at the strides given); `dst` is an output buffer aliasing neither
    // input, and its rows, `ldd >= n` apart, do not overlap. With
    // `read_dst` false, `dst` is only written: dst = 1 * a * b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ldd as isize,
            read_dst,
            a.as_ptr(),
            acs as isize,
            ars as isize,
            b.as_ptr(),
            bcs as isize,
            brs as isize,
            one,
            one,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
}
