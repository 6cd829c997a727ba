//! A fused task lowered for a GPU grid: every number the generated kernel's
//! index math uses (the output chunk's extents, each leaf's strides over
//! it, how a reduction splits into kept positions and slices of reduced
//! ones). The CUDA source ([`crate::cuda`]) prints this plan and the grid
//! emulation ([`crate::emulate`]) walks it with the same arithmetic, so CI
//! tests the index math the GPU runs.
//!
//! Shapes are baked into the source (a chunk grid has few distinct chunk
//! shapes, so few distinct kernels); what differs between chunks of one
//! array (random seeds, positions) is passed as parameters ([`Params`]).

use crate::chunks::strides;
use crate::dtype::DType;
use crate::error::{ArrayError, Result};
use crate::expr::Program;
use crate::fuse::{FusedArgs, Gen, LeafArg, gen_strides, view_strides};
use crate::reduce::ReduceOp;

/// Threads per block of every generated kernel.
pub const BLOCK: usize = 256;

/// Where a leaf's elements come from on the device.
#[derive(Debug, Clone, PartialEq)]
pub enum LeafPlan {
    /// A device buffer of `dtype`; element `i` of the output reads offset
    /// `sum(coord[a] * strides[a])` (0 strides broadcast).
    Input {
        /// The task input it reads.
        dep: usize,
        /// Its element type.
        dtype: DType,
        /// Its stride along each output axis, in elements.
        strides: Vec<usize>,
    },
    /// Values generated at position `sum(coord[a] * strides[a])` of the
    /// generated chunk (the flat output position unless transposed).
    Gen {
        /// What is generated.
        generator: Gen,
        /// The generated position's stride along each output axis.
        strides: Vec<usize>,
    },
}

/// How a reduction maps onto blocks: block `b` reduces kept position
/// `b / slices` over its share of the reduced positions (every
/// `slices * BLOCK`-th from `(b % slices) * BLOCK + thread`), and writes its
/// partial at `(b % slices) * kept + b / slices`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReducePlan {
    /// The reduction.
    pub op: ReduceOp,
    /// Extents of the kept axes, and their strides in the chunk.
    pub kept: Vec<(usize, usize)>,
    /// Extents of the reduced axes, their strides in the chunk, and their
    /// strides in the whole array's reduced axes (for arg indices).
    pub reduced: Vec<(usize, usize, usize)>,
    /// Slices each kept position's reduced positions are split into.
    pub slices: usize,
}

impl ReducePlan {
    /// Kept positions.
    pub fn kept_len(&self) -> usize {
        self.kept.iter().map(|k| k.0).product()
    }

    /// Reduced positions per kept one.
    pub fn reduced_len(&self) -> usize {
        self.reduced.iter().map(|r| r.0).product()
    }

    /// The kept axes' extents (the partial's shape).
    pub fn kept_shape(&self) -> Vec<usize> {
        self.kept.iter().map(|k| k.0).collect()
    }

    /// The partial's components: (dtype, name) of each output buffer.
    pub fn components(&self, dtype: DType) -> Vec<DType> {
        match self.op {
            ReduceOp::Sum if dtype.is_float() => vec![DType::F64],
            ReduceOp::Sum => vec![DType::I64],
            ReduceOp::Min | ReduceOp::Max => vec![dtype],
            ReduceOp::Mean | ReduceOp::Var(_) | ReduceOp::Std(_) => vec![DType::F64; 3],
            ReduceOp::ArgMin | ReduceOp::ArgMax if dtype.is_float() => vec![DType::F64, DType::I64],
            ReduceOp::ArgMin | ReduceOp::ArgMax => vec![DType::I64, DType::I64],
        }
    }
}

/// A fused task's kernel: the program, its leaves and the output's extents.
#[derive(Debug, Clone, PartialEq)]
pub struct GridPlan {
    /// What each element computes.
    pub program: Program,
    /// The program's leaves.
    pub leaves: Vec<LeafPlan>,
    /// The output chunk's shape.
    pub shape: Vec<usize>,
    /// The reduction that follows, if any.
    pub reduce: Option<ReducePlan>,
}

/// What differs between chunks of one array: one slot per leaf (its
/// chunk seed for a random generator, else 0), the chunk's first position
/// along axis 0 (ranges), and the flat index in the array's reduced axes
/// of the chunk's first reduced position (arg reductions).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Per leaf: the chunk seed of a random generator, 0 otherwise.
    pub seeds: Vec<u64>,
    /// The chunk's offset along axis 0.
    pub offset: u64,
    /// The base of arg-reduction indices.
    pub arg_base: i64,
}

impl GridPlan {
    /// Lowers a fused task whose inputs have the given (dtype, shape) each.
    /// With `max_blocks`, a reduction splits into at most that many blocks'
    /// worth of slices (the device's resident blocks).
    pub fn new(args: &FusedArgs, inputs: &[(DType, Vec<usize>)], max_blocks: usize) -> Result<(GridPlan, Params)> {
        let nd = args.shape.len();
        let mut leaves = Vec::with_capacity(args.leaves.len());
        let mut seeds = Vec::with_capacity(args.leaves.len());
        for leaf in &args.leaves {
            match leaf {
                LeafArg::Input { dep, axes } => {
                    let (dtype, shape) = inputs.get(*dep as usize).ok_or_else(|| {
                        ArrayError::Data(format!("a fused task reads input {dep} of {}", inputs.len()))
                    })?;
                    leaves.push(LeafPlan::Input {
                        dep: *dep as usize,
                        dtype: *dtype,
                        strides: view_strides(shape, axes, &args.shape)?,
                    });
                    seeds.push(0);
                }
                LeafArg::Gen { generator, block, axes } => {
                    leaves.push(LeafPlan::Gen {
                        generator: *generator,
                        strides: gen_strides(axes, &args.shape)?,
                    });
                    seeds.push(generator.chunk_seed(*block));
                }
            }
        }
        let chunk = strides(&args.shape);
        let mut arg_base = 0i64;
        let reduce = match &args.reduce {
            None => None,
            Some(r) => {
                let global_red: Vec<usize> = r.axes.iter().map(|&a| args.global[a]).collect();
                let gst = strides(&global_red);
                let kept = (0..nd)
                    .filter(|a| !r.axes.contains(a))
                    .map(|a| (args.shape[a], chunk[a]))
                    .collect();
                let reduced: Vec<(usize, usize, usize)> = r
                    .axes
                    .iter()
                    .zip(&gst)
                    .map(|(&a, &g)| (args.shape[a], chunk[a], g))
                    .collect();
                arg_base = r
                    .axes
                    .iter()
                    .zip(&gst)
                    .map(|(&a, &g)| (args.offset[a] * g) as i64)
                    .sum();
                let mut plan = ReducePlan {
                    op: r.op,
                    kept,
                    reduced,
                    slices: 1,
                };
                let (k, n) = (plan.kept_len().max(1), plan.reduced_len());
                plan.slices = n.div_ceil(BLOCK).clamp(1, (max_blocks / k).max(1));
                Some(plan)
            }
        };
        let plan = GridPlan {
            program: args.program.clone(),
            leaves,
            shape: args.shape.clone(),
            reduce,
        };
        let params = Params {
            seeds,
            offset: args.offset.first().copied().unwrap_or(0) as u64,
            arg_base,
        };
        Ok((plan, params))
    }

    /// Elements of the output chunk.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the output chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks to launch: a grid-stride loop over the elements with at most
    /// `max_blocks`, or one block per (kept position, slice).
    pub fn blocks(&self, max_blocks: usize) -> usize {
        match &self.reduce {
            None => self.len().div_ceil(BLOCK).clamp(1, max_blocks.max(1)),
            Some(r) => (r.kept_len() * r.slices).max(1),
        }
    }

    /// Output buffers: (dtype, elements) of each.
    pub fn outputs(&self) -> Vec<(DType, usize)> {
        let dtype = self.program.dtype();
        match &self.reduce {
            None => vec![(dtype, self.len())],
            Some(r) => {
                let n = r.kept_len() * r.slices;
                r.components(dtype).into_iter().map(|d| (d, n)).collect()
            }
        }
    }

    /// The flat output position of reduced position `r` of kept position
    /// `k`, and `r`'s flat index in the array's reduced axes less the
    /// chunk's base: the decomposition the kernel prints.
    pub fn reduced_position(plan: &ReducePlan, k: usize, r: usize) -> (usize, usize) {
        let mut i = 0;
        let mut rest = k;
        for &(len, st) in plan.kept.iter().rev() {
            i += (rest % len) * st;
            rest /= len;
        }
        let (mut g, mut rest) = (0, r);
        for &(len, st, gst) in plan.reduced.iter().rev() {
            let c = rest % len;
            i += c * st;
            g += c * gst;
            rest /= len;
        }
        (i, g)
    }

    /// The offset, for flat output position `i`, of a leaf read with
    /// `strides` (an input's element index, a generator's position).
    pub fn leaf_offset(&self, strides: &[usize], i: usize) -> usize {
        let mut rest = i;
        let mut off = 0;
        for (&len, &st) in self.shape.iter().zip(strides).rev() {
            off += (rest % len) * st;
            rest /= len;
        }
        off
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduce::ReduceArgs;

    fn args(shape: &[usize], reduce: Option<ReduceArgs>) -> FusedArgs {
        FusedArgs {
            program: Program::leaf(DType::F64),
            leaves: vec![LeafArg::Input {
                dep: 0,
                axes: vec![1, 0],
            }],
            shape: shape.to_vec(),
            offset: vec![10, 20],
            global: vec![40, 50],
            reduce,
        }
    }

    #[test]
    fn a_transposed_leaf_reads_across_rows() {
        let (plan, params) = GridPlan::new(&args(&[4, 3], None), &[(DType::F64, vec![3, 4])], 4).unwrap();
        assert_eq!(
            plan.leaves[0],
            LeafPlan::Input {
                dep: 0,
                dtype: DType::F64,
                strides: vec![1, 4]
            }
        );
        // Output (2, 1) is input (1, 2).
        assert_eq!(plan.leaf_offset(&[1, 4], 2 * 3 + 1), 4 + 2);
        assert_eq!(params.offset, 10);
        assert_eq!(plan.blocks(4), 1);
        // An input that does not fit names both shapes.
        let err = GridPlan::new(&args(&[4, 3], None), &[(DType::F64, vec![3, 5])], 4).unwrap_err();
        assert!(
            err.to_string().contains("[3, 5]") && err.to_string().contains("[4, 3]"),
            "{err}"
        );
    }

    #[test]
    fn a_reduction_splits_into_kept_positions_and_slices() {
        let reduce = ReduceArgs {
            op: ReduceOp::ArgMax,
            axes: vec![0],
        };
        let (plan, params) = GridPlan::new(&args(&[600, 3], Some(reduce)), &[(DType::F64, vec![3, 600])], 8).unwrap();
        let r = plan.reduce.as_ref().unwrap();
        assert_eq!((r.kept_len(), r.reduced_len(), r.slices), (3, 600, 2));
        assert_eq!(plan.blocks(8), 6);
        // Reduced position 5 of kept column 2: row 5, column 2; global row 15.
        assert_eq!(GridPlan::reduced_position(r, 2, 5), (5 * 3 + 2, 5));
        assert_eq!(params.arg_base, 10);
        assert_eq!(plan.outputs(), vec![(DType::F64, 6), (DType::I64, 6)]);
    }
}
