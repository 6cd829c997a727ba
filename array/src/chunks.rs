//! The chunk grid: per axis, the lengths of the chunks along it (Dask's
//! `chunks`), regular with a ragged last chunk or any lengths summing to
//! the axis. Blocks are numbered in C order over the grid.

use serde::{Deserialize, Serialize};

use crate::error::{ArrayError, Result};

/// Chunk lengths per axis. A zero-length axis has one empty chunk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chunks(pub Vec<Vec<usize>>);

impl Chunks {
    /// Regular chunks of at most `chunk[a]` along each axis `a`, the last
    /// one ragged. `chunk` has one entry per axis, each at least 1.
    pub fn regular(shape: &[usize], chunk: &[usize]) -> Result<Chunks> {
        if shape.len() != chunk.len() {
            return Err(ArrayError::Shape {
                op: "chunks",
                left: shape.to_vec(),
                right: chunk.to_vec(),
            });
        }
        let mut axes = Vec::with_capacity(shape.len());
        for (&n, &c) in shape.iter().zip(chunk) {
            if c == 0 {
                return Err(ArrayError::Invalid(format!("a chunk length of 0 for shape {shape:?}")));
            }
            axes.push(split(n, c));
        }
        Ok(Chunks(axes))
    }

    /// Given lengths per axis; each axis's lengths must sum to `shape`.
    pub fn explicit(shape: &[usize], lengths: Vec<Vec<usize>>) -> Result<Chunks> {
        let sums: Vec<usize> = lengths.iter().map(|l| l.iter().sum()).collect();
        if sums != shape || lengths.iter().any(Vec::is_empty) {
            return Err(ArrayError::Shape {
                op: "chunks",
                left: shape.to_vec(),
                right: sums,
            });
        }
        Ok(Chunks(lengths))
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.0.len()
    }

    /// Blocks per axis.
    pub fn grid(&self) -> Vec<usize> {
        self.0.iter().map(Vec::len).collect()
    }

    /// The number of blocks.
    pub fn nblocks(&self) -> usize {
        self.0.iter().map(Vec::len).product()
    }

    /// The chunk lengths along `axis`.
    pub fn axis(&self, axis: usize) -> &[usize] {
        &self.0[axis]
    }

    /// The grid index of flat block `i` (C order).
    pub fn unravel(&self, i: usize) -> Vec<usize> {
        unravel(i, &self.grid())
    }

    /// The flat number of the block at grid index `b`.
    pub fn ravel(&self, b: &[usize]) -> usize {
        ravel(b, &self.grid())
    }

    /// The shape of the block at grid index `b`.
    pub fn block_shape(&self, b: &[usize]) -> Vec<usize> {
        b.iter().zip(&self.0).map(|(&i, lens)| lens[i]).collect()
    }

    /// Where the block at grid index `b` starts.
    pub fn block_offset(&self, b: &[usize]) -> Vec<usize> {
        b.iter().zip(&self.0).map(|(&i, lens)| lens[..i].iter().sum()).collect()
    }

    /// The chunks with axes in the order `perm`.
    pub fn permute(&self, perm: &[usize]) -> Chunks {
        Chunks(perm.iter().map(|&a| self.0[a].clone()).collect())
    }

    /// The shape the chunks cover.
    pub fn shape(&self) -> Vec<usize> {
        self.0.iter().map(|l| l.iter().sum()).collect()
    }

    /// The largest block's element count.
    pub fn max_block_len(&self) -> usize {
        self.0.iter().map(|l| l.iter().copied().max().unwrap_or(0)).product()
    }
}

/// `n` split into pieces of `c`, the last ragged; `[0]` for `n == 0`.
pub fn split(n: usize, c: usize) -> Vec<usize> {
    if n == 0 {
        return vec![0];
    }
    let mut out = vec![c; n / c];
    if !n.is_multiple_of(c) {
        out.push(n % c);
    }
    out
}

/// C-order strides (in elements) of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}

/// The index of flat position `i` in `shape` (C order).
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        let n = shape[a].max(1);
        idx[a] = i % n;
        i /= n;
    }
    idx
}

/// The flat position of index `idx` in `shape` (C order).
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_chunks_are_ragged_at_the_end() {
        let c = Chunks::regular(&[10, 4], &[3, 4]).unwrap();
        assert_eq!(c.0, vec![vec![3, 3, 3, 1], vec![4]]);
        assert_eq!(c.nblocks(), 4);
        assert_eq!(c.block_offset(&[3, 0]), vec![9, 0]);
        assert_eq!(c.block_shape(&[3, 0]), vec![1, 4]);
        assert_eq!(c.unravel(3), vec![3, 0]);
        assert_eq!(c.ravel(&[2, 0]), 2);
        assert!(Chunks::regular(&[10], &[0]).is_err());
        assert!(Chunks::explicit(&[10], vec![vec![5, 4]]).is_err());
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(unravel(23, &[2, 3, 4]), vec![1, 2, 3]);
        assert_eq!(ravel(&[1, 2, 3], &[2, 3, 4]), 23);
    }
}
