//! Tree reductions of arrays: the reduction's first step fuses into the
//! elementwise tasks (one per chunk, each writing a partial), then combine
//! tasks merge at most `split_every` partials each, level by level, until
//! one per output chunk is left; that last combine finalises.

use serde::{Deserialize, Serialize};
use weft_runtime::{Key, TaskSpec, ops::args};

use crate::array::{Array, Layer, chunk_key, lower, unique_name};
use crate::chunks::{Chunks, ravel, unravel};
use crate::dtype::DType;
use crate::error::{ArrayError, Result};
use crate::reduce::{ReduceArgs, ReduceOp};

/// Partials merged per combine task unless told otherwise.
pub const DEFAULT_SPLIT_EVERY: usize = 8;

/// The arguments of `array.combine`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CombineArgs {
    /// The reduction.
    pub op: ReduceOp,
    /// The type of the reduced array.
    pub dtype: DType,
    /// Whether this is the last step (finalise).
    pub last: bool,
}

impl Array {
    /// Reduces over `axes` (all when `None`; negative axes count from the
    /// end) with at most `split_every` (at least 2) partials per combine
    /// task. Argmin and argmax take one axis or all; over all axes they
    /// give the flat index.
    pub fn reduce(&self, op: ReduceOp, axes: Option<&[isize]>, split_every: usize) -> Result<Array> {
        let name = op.name();
        let mut red: Vec<usize> = match axes {
            None => (0..self.ndim()).collect(),
            Some(list) => list.iter().map(|&a| self.axis(a, name)).collect::<Result<_>>()?,
        };
        red.sort_unstable();
        red.dedup();
        if matches!(op, ReduceOp::ArgMin | ReduceOp::ArgMax) && red.len() != 1 && red.len() != self.ndim() {
            return Err(ArrayError::Invalid(format!(
                "{name}: takes one axis or all, not {red:?}"
            )));
        }
        if matches!(op, ReduceOp::Min | ReduceOp::Max | ReduceOp::ArgMin | ReduceOp::ArgMax)
            && red.iter().any(|&a| self.shape[a] == 0)
        {
            return Err(ArrayError::Invalid(format!(
                "{name}: an empty axis of shape {:?} has no {name}",
                self.shape
            )));
        }
        let split_every = split_every.max(2);
        let (program, leaves) = self.expr();
        let (partials, keys) = lower(
            &program,
            &leaves,
            &self.shape,
            &self.chunks,
            Some(ReduceArgs { op, axes: red.clone() }),
            name,
        );
        let kept: Vec<usize> = (0..self.ndim()).filter(|a| !red.contains(a)).collect();
        let grid = self.chunks.grid();
        let kept_grid: Vec<usize> = kept.iter().map(|&a| grid[a]).collect();
        let red_grid: Vec<usize> = red.iter().map(|&a| grid[a]).collect();
        let outputs: usize = kept_grid.iter().product();
        let per_output: usize = red_grid.iter().product();
        let out_name = unique_name(&format!("{name}-tree"));
        let mut tasks: Vec<TaskSpec> = Vec::new();
        for o in 0..outputs {
            let ko = unravel(o, &kept_grid);
            let level: Vec<Key> = (0..per_output)
                .map(|r| {
                    let ro = unravel(r, &red_grid);
                    let mut b = vec![0; self.ndim()];
                    for (i, &a) in kept.iter().enumerate() {
                        b[a] = ko[i];
                    }
                    for (i, &a) in red.iter().enumerate() {
                        b[a] = ro[i];
                    }
                    keys[ravel(&b, &grid)].clone()
                })
                .collect();
            combine_tree(&mut tasks, &out_name, o, level, split_every, op, self.dtype);
        }
        let layer = Layer::new(out_name, tasks, vec![partials], outputs);
        let shape: Vec<usize> = kept.iter().map(|&a| self.shape[a]).collect();
        let chunks = Chunks(kept.iter().map(|&a| self.chunks.axis(a).to_vec()).collect());
        Ok(Array::from_layer(layer, op.out_dtype(self.dtype), shape, chunks))
    }

    /// Sum over `axes` (all when `None`).
    pub fn sum(&self, axes: Option<&[isize]>) -> Result<Array> {
        self.reduce(ReduceOp::Sum, axes, DEFAULT_SPLIT_EVERY)
    }

    /// Mean over `axes`.
    pub fn mean(&self, axes: Option<&[isize]>) -> Result<Array> {
        self.reduce(ReduceOp::Mean, axes, DEFAULT_SPLIT_EVERY)
    }

    /// Minimum over `axes`.
    pub fn min(&self, axes: Option<&[isize]>) -> Result<Array> {
        self.reduce(ReduceOp::Min, axes, DEFAULT_SPLIT_EVERY)
    }

    /// Maximum over `axes`.
    pub fn max(&self, axes: Option<&[isize]>) -> Result<Array> {
        self.reduce(ReduceOp::Max, axes, DEFAULT_SPLIT_EVERY)
    }

    /// Standard deviation over `axes` with `ddof` degrees of freedom removed.
    pub fn std(&self, axes: Option<&[isize]>, ddof: u32) -> Result<Array> {
        self.reduce(ReduceOp::Std(ddof), axes, DEFAULT_SPLIT_EVERY)
    }

    /// Variance over `axes` with `ddof` degrees of freedom removed.
    pub fn var(&self, axes: Option<&[isize]>, ddof: u32) -> Result<Array> {
        self.reduce(ReduceOp::Var(ddof), axes, DEFAULT_SPLIT_EVERY)
    }

    /// Index of the largest value along `axis` (flat index when `None`).
    pub fn argmax(&self, axis: Option<isize>) -> Result<Array> {
        self.reduce(
            ReduceOp::ArgMax,
            axis.as_ref().map(std::slice::from_ref),
            DEFAULT_SPLIT_EVERY,
        )
    }

    /// Index of the smallest value along `axis` (flat index when `None`).
    pub fn argmin(&self, axis: Option<isize>) -> Result<Array> {
        self.reduce(
            ReduceOp::ArgMin,
            axis.as_ref().map(std::slice::from_ref),
            DEFAULT_SPLIT_EVERY,
        )
    }
}

/// Combines `level` (the partial results of output chunk `o`) in a tree of
/// `array.combine` tasks of at most `split_every` inputs each, appended to
/// `tasks`; the root is output chunk `o` of `name`.
pub(crate) fn combine_tree(
    tasks: &mut Vec<TaskSpec>,
    name: &str,
    o: usize,
    mut level: Vec<Key>,
    split_every: usize,
    op: ReduceOp,
    dtype: DType,
) {
    let mut depth = 0;
    loop {
        let last = level.len() <= split_every;
        let bytes = args(&CombineArgs { op, dtype, last }).unwrap_or_default();
        if last {
            tasks.push(TaskSpec::new(chunk_key(name, o), "array.combine", bytes, level));
            return;
        }
        depth += 1;
        level = level
            .chunks(split_every)
            .enumerate()
            .map(|(g, group)| {
                let key = Key::from(format!("{name}-c{depth}-{o}-{g}"));
                tasks.push(TaskSpec::new(
                    key.clone(),
                    "array.combine",
                    bytes.clone(),
                    group.to_vec(),
                ));
                key
            })
            .collect();
    }
}
