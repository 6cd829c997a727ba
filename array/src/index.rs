//! Basic indexing: slices with positive steps and integer indices per
//! axis (NumPy's basic indexing), `squeeze` and `expand_dims`. A slice
//! keeps the source's chunk boundaries, so each output chunk is cut from
//! one input chunk; an integer index is a slice of one then a squeeze, a
//! view of no cost.

use crate::array::{Array, Leaf};
use crate::chunks::Chunks;
use crate::error::{ArrayError, Result};
use crate::fuse::DROPPED;
use crate::rechunk::{DEFAULT_MAX_FANIN, axis_pieces, remap};

/// One axis of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ix {
    /// The whole axis (`:`).
    All,
    /// One position (negative counts from the end); the axis goes away.
    At(isize),
    /// `start:stop:step` (negative bounds count from the end, as in NumPy;
    /// bounds out of range are clipped; the step is at least 1).
    Range {
        /// First position (`None`: 0).
        start: Option<isize>,
        /// End, excluded (`None`: the length).
        stop: Option<isize>,
        /// Step.
        step: usize,
    },
}

impl Ix {
    /// `start..stop` with step 1.
    pub fn range(start: isize, stop: isize) -> Ix {
        Ix::Range {
            start: Some(start),
            stop: Some(stop),
            step: 1,
        }
    }
}

fn clip(i: Option<isize>, default: usize, n: usize) -> usize {
    match i {
        None => default,
        Some(i) if i < 0 => (i + n as isize).max(0) as usize,
        Some(i) => (i as usize).min(n),
    }
}

impl Array {
    /// Basic indexing: one [`Ix`] per leading axis (the rest whole).
    pub fn index(&self, ix: &[Ix]) -> Result<Array> {
        if ix.len() > self.ndim() {
            return Err(ArrayError::Invalid(format!(
                "index: {} indices for an array of shape {:?}",
                ix.len(),
                self.shape
            )));
        }
        let mut map = Vec::with_capacity(self.ndim());
        let mut shape = Vec::with_capacity(self.ndim());
        let mut chunks = Vec::with_capacity(self.ndim());
        let mut drop = Vec::new();
        for a in 0..self.ndim() {
            let n = self.shape[a];
            let (start, len, step) = match ix.get(a).copied().unwrap_or(Ix::All) {
                Ix::All => (0, n, 1),
                Ix::At(i) => {
                    let j = if i < 0 { i + n as isize } else { i };
                    if j < 0 || j >= n as isize {
                        return Err(ArrayError::Index {
                            op: "index",
                            index: i,
                            axis: a,
                            len: n,
                        });
                    }
                    drop.push(a);
                    (j as usize, 1, 1)
                }
                Ix::Range { start, stop, step } => {
                    if step == 0 {
                        return Err(ArrayError::Invalid(format!("index: a step of 0 on axis {a}")));
                    }
                    let (s, e) = (clip(start, 0, n), clip(stop, n, n));
                    (s, e.saturating_sub(s).div_ceil(step), step)
                }
            };
            let lens: Vec<usize> = axis_pieces(self.chunks.axis(a), start, step, 0, len)
                .iter()
                .map(|p| p.3)
                .collect();
            chunks.push(if lens.is_empty() { vec![0] } else { lens });
            map.push((start, step));
            shape.push(len);
        }
        let whole = map
            .iter()
            .zip(&self.shape)
            .zip(&shape)
            .all(|((&(s, st), &n), &l)| s == 0 && st == 1 && l == n);
        let sliced = if whole {
            self.clone()
        } else {
            remap(self, &map, shape, Chunks(chunks), DEFAULT_MAX_FANIN, "slice")
        };
        if drop.is_empty() {
            return Ok(sliced);
        }
        sliced.squeeze(&drop.iter().map(|&a| a as isize).collect::<Vec<_>>())
    }

    /// The array without the given axes, each of length 1 (a view).
    pub fn squeeze(&self, axes: &[isize]) -> Result<Array> {
        let axes: Vec<usize> = axes.iter().map(|&a| self.axis(a, "squeeze")).collect::<Result<_>>()?;
        if let Some(&a) = axes.iter().find(|&&a| self.shape[a] != 1) {
            return Err(ArrayError::Invalid(format!(
                "squeeze: axis {a} of shape {:?} is not of length 1",
                self.shape
            )));
        }
        let kept: Vec<usize> = (0..self.ndim()).filter(|a| !axes.contains(a)).collect();
        // New number of each kept axis.
        let mut new = vec![DROPPED; self.ndim()];
        for (i, &a) in kept.iter().enumerate() {
            new[a] = i;
        }
        let (program, mut leaves) = self.view_expr();
        for leaf in &mut leaves {
            if let Leaf::Input { axes, .. } = leaf {
                for x in axes.iter_mut() {
                    if *x != DROPPED {
                        *x = new[*x];
                    }
                }
            }
        }
        let shape = kept.iter().map(|&a| self.shape[a]).collect();
        let chunks = Chunks(kept.iter().map(|&a| self.chunks.axis(a).to_vec()).collect());
        Ok(Array::from_fused(program, leaves, shape, chunks))
    }

    /// The array with a new axis of length 1 at `axis` (a view).
    pub fn expand_dims(&self, axis: isize) -> Result<Array> {
        let nd = self.ndim() as isize + 1;
        let at = if axis < 0 { axis + nd } else { axis };
        if at < 0 || at >= nd {
            return Err(ArrayError::Axis {
                op: "expand_dims",
                axis,
                ndim: self.ndim(),
            });
        }
        let at = at as usize;
        let (program, mut leaves) = self.view_expr();
        for leaf in &mut leaves {
            if let Leaf::Input { axes, .. } = leaf {
                for x in axes.iter_mut() {
                    if *x != DROPPED && *x >= at {
                        *x += 1;
                    }
                }
            }
        }
        let mut shape = self.shape.clone();
        shape.insert(at, 1);
        let mut chunks = self.chunks.0.clone();
        chunks.insert(at, vec![1]);
        Ok(Array::from_fused(program, leaves, shape, Chunks(chunks)))
    }
}
