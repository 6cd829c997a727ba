//! Indexing: slices with steps of either sign and integer indices per axis
//! (NumPy's basic indexing), integer arrays along one axis ([`Array::take`],
//! NumPy's `take`), `squeeze` and `expand_dims`. A slice keeps the
//! source's chunk boundaries, so each output chunk is cut from one input
//! chunk; an integer index is a slice of one then a squeeze, a view of no
//! cost. An integer array gathers runs of its positions from the chunks
//! that hold them, through the same assemble tasks as rechunking.

use crate::array::{Array, Leaf};
use crate::chunks::Chunks;
use crate::chunks::split;
use crate::error::{ArrayError, Result};
use crate::fuse::DROPPED;
use crate::rechunk::{AxisMap, DEFAULT_MAX_FANIN, axis_runs, remap};

/// One axis of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ix {
    /// The whole axis (`:`).
    All,
    /// One position (negative counts from the end); the axis goes away.
    At(isize),
    /// `start:stop:step` (negative bounds count from the end, as in NumPy;
    /// bounds out of range are clipped; a negative step walks backwards,
    /// from the end by default; the step is not 0).
    Range {
        /// First position (`None`: 0).
        start: Option<isize>,
        /// End, excluded (`None`: the length).
        stop: Option<isize>,
        /// Step.
        step: isize,
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

/// NumPy's `slice.indices`: the first position, the step and the count.
fn slice_of(start: Option<isize>, stop: Option<isize>, step: isize, n: usize) -> (usize, isize, usize) {
    let n = n as isize;
    // Bounds from the end, then clipped to [lo, hi].
    let bound = |i: Option<isize>, default: isize, lo: isize, hi: isize| match i {
        None => default,
        Some(i) if i < 0 => (i + n).max(lo),
        Some(i) => i.min(hi),
    };
    if step > 0 {
        let (s, e) = (bound(start, 0, 0, n), bound(stop, n, 0, n));
        (s as usize, step, ((e - s).max(0) as usize).div_ceil(step as usize))
    } else {
        let (s, e) = (bound(start, n - 1, -1, n - 1), bound(stop, -1, -1, n - 1));
        let len = if s > e { (s - e - 1) / -step + 1 } else { 0 };
        (s.max(0) as usize, step, len as usize)
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
            let (start, step, len) = match ix.get(a).copied().unwrap_or(Ix::All) {
                Ix::All => (0, 1, n),
                Ix::At(i) => {
                    drop.push(a);
                    (self.position(i, a, "index")?, 1, 1)
                }
                Ix::Range { start, stop, step } => {
                    if step == 0 {
                        return Err(ArrayError::Invalid(format!(
                            "index: a step of 0 on axis {a} of shape {:?}",
                            self.shape
                        )));
                    }
                    slice_of(start, stop, step, n)
                }
            };
            let axis = AxisMap::Step { start, step };
            let lens: Vec<usize> = axis_runs(self.chunks.axis(a), &axis, 0, len)
                .iter()
                .map(|r| r.len)
                .collect();
            chunks.push(if lens.is_empty() { vec![0] } else { lens });
            map.push(axis);
            shape.push(len);
        }
        let whole = map
            .iter()
            .zip(&self.shape)
            .zip(&shape)
            .all(|((m, &n), &l)| *m == AxisMap::ALL && l == n);
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

    /// Position `i` of axis `a` (negative counts from the end), or an error
    /// naming the array's shape.
    fn position(&self, i: isize, a: usize, op: &'static str) -> Result<usize> {
        let n = self.shape[a];
        let j = if i < 0 { i + n as isize } else { i };
        if j < 0 || j >= n as isize {
            return Err(ArrayError::Index {
                op,
                index: i,
                axis: a,
                shape: self.shape.clone(),
            });
        }
        Ok(j as usize)
    }

    /// The elements at `indices` along `axis` (NumPy's `take`; negative
    /// indices count from the end, repeats and any order allowed). The
    /// axis is cut into chunks as long as the source's longest along it.
    pub fn take(&self, indices: &[isize], axis: isize) -> Result<Array> {
        let ax = self.axis(axis, "take")?;
        let positions = indices
            .iter()
            .map(|&i| self.position(i, ax, "take"))
            .collect::<Result<Vec<_>>>()?;
        let longest = self.chunks.axis(ax).iter().copied().max().unwrap_or(1).max(1);
        let mut shape = self.shape.clone();
        shape[ax] = positions.len();
        let mut chunks = self.chunks.0.clone();
        chunks[ax] = split(positions.len(), longest);
        let mut map = vec![AxisMap::ALL; self.ndim()];
        map[ax] = AxisMap::Take(std::sync::Arc::new(positions));
        Ok(remap(self, &map, shape, Chunks(chunks), DEFAULT_MAX_FANIN, "take"))
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
