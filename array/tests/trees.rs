//! Random expression trees (elementwise chains with broadcasting, scalars,
//! transposes and slices of larger arrays, then reductions over random
//! axis subsets) on random shapes and chunkings, against a dense
//! evaluation in plain loops, on the CPU and on GPUs (see `common`).
#![allow(clippy::unwrap_used)]

mod common;

use weft_array::chunks::{ravel, unravel};
use weft_array::{Array, Ix, ReduceOp, from_slice};

/// A dense array for the reference.
#[derive(Clone, Debug)]
struct Dense {
    shape: Vec<usize>,
    v: Vec<f64>,
}

fn broadcast(a: &Dense, b: &Dense, f: impl Fn(f64, f64) -> f64) -> Dense {
    let nd = a.shape.len().max(b.shape.len());
    let pad = |s: &[usize]| [vec![1; nd - s.len()], s.to_vec()].concat();
    let (sa, sb) = (pad(&a.shape), pad(&b.shape));
    let shape: Vec<usize> = sa.iter().zip(&sb).map(|(&x, &y)| x.max(y)).collect();
    let n: usize = shape.iter().product();
    let at = |s: &[usize], idx: &[usize]| {
        ravel(
            &idx.iter()
                .zip(s)
                .map(|(&i, &m)| if m == 1 { 0 } else { i })
                .collect::<Vec<_>>(),
            s,
        )
    };
    let v = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            f(a.v[at(&sa, &idx)], b.v[at(&sb, &idx)])
        })
        .collect();
    Dense { shape, v }
}

fn permute(a: &Dense, perm: &[usize]) -> Dense {
    let shape: Vec<usize> = perm.iter().map(|&p| a.shape[p]).collect();
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            let mut src = vec![0; perm.len()];
            for (k, &p) in perm.iter().enumerate() {
                src[p] = idx[k];
            }
            a.v[ravel(&src, &a.shape)]
        })
        .collect();
    Dense { shape, v }
}

struct Gen {
    rng: fastrand::Rng,
    d: usize,
    nd: usize,
}

impl Gen {
    /// A leaf broadcastable to `[d; nd]`: maybe fewer axes, some of length
    /// 1, cut by a slice out of a larger array.
    fn leaf(&mut self) -> (Array, Dense) {
        let nd = self.rng.usize(1..=self.nd);
        let shape: Vec<usize> = (0..nd)
            .map(|_| if self.rng.u8(0..4) == 0 { 1 } else { self.d })
            .collect();
        let big: Vec<usize> = shape.iter().map(|&n| n + self.rng.usize(0..3)).collect();
        let offs: Vec<usize> = shape
            .iter()
            .zip(&big)
            .map(|(&n, &b)| self.rng.usize(0..=b - n))
            .collect();
        let vb: Vec<f64> = (0..big.iter().product::<usize>())
            .map(|_| self.rng.f64() * 4.0 - 2.0)
            .collect();
        let chunk: Vec<usize> = big.iter().map(|&b| self.rng.usize(1..=b)).collect();
        let x = from_slice(&vb, &big, &chunk).unwrap();
        let ix: Vec<Ix> = shape
            .iter()
            .zip(&offs)
            .map(|(&n, &o)| Ix::range(o as isize, (o + n) as isize))
            .collect();
        let a = x.index(&ix).unwrap();
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|i| {
                let idx = unravel(i, &shape);
                vb[ravel(&idx.iter().zip(&offs).map(|(i, o)| i + o).collect::<Vec<_>>(), &big)]
            })
            .collect();
        (a, Dense { shape, v })
    }

    fn tree(&mut self, depth: usize) -> (Array, Dense) {
        if depth == 0 || self.rng.u8(0..10) < 2 {
            return self.leaf();
        }
        match self.rng.u8(0..6) {
            0 | 1 => {
                let (a, da) = self.tree(depth - 1);
                let (b, db) = self.tree(depth - 1);
                match self.rng.u8(0..4) {
                    0 => ((&a + &b).unwrap(), broadcast(&da, &db, |x, y| x + y)),
                    1 => ((&a - &b).unwrap(), broadcast(&da, &db, |x, y| x - y)),
                    2 => ((&a * &b).unwrap(), broadcast(&da, &db, |x, y| x * y)),
                    _ => (a.maximum(&b).unwrap(), broadcast(&da, &db, f64::max)),
                }
            }
            2 => {
                let (a, da) = self.tree(depth - 1);
                let s = Dense {
                    shape: vec![],
                    v: vec![0.5],
                };
                (
                    (&a * 0.5).unwrap().abs().unwrap(),
                    broadcast(&da, &s, |x, y| (x * y).abs()),
                )
            }
            3 => {
                let (a, da) = self.tree(depth - 1);
                let s = Dense {
                    shape: vec![],
                    v: vec![0.1],
                };
                (
                    (&a * 0.1).unwrap().exp().unwrap(),
                    broadcast(&da, &s, |x, y| (x * y).exp()),
                )
            }
            _ => {
                let (a, da) = self.tree(depth - 1);
                let mut perm: Vec<usize> = (0..a.ndim()).collect();
                self.rng.shuffle(&mut perm);
                (a.permute(&perm).unwrap(), permute(&da, &perm))
            }
        }
    }
}

fn reduce_ref(d: &Dense, axes: &[usize], op: ReduceOp) -> Vec<f64> {
    let kept: Vec<usize> = (0..d.shape.len()).filter(|a| !axes.contains(a)).collect();
    let kshape: Vec<usize> = kept.iter().map(|&a| d.shape[a]).collect();
    let mut groups = vec![Vec::new(); kshape.iter().product::<usize>().max(1)];
    for (i, &x) in d.v.iter().enumerate() {
        let idx = unravel(i, &d.shape);
        groups[ravel(&kept.iter().map(|&a| idx[a]).collect::<Vec<_>>(), &kshape)].push(x);
    }
    groups
        .iter()
        .map(|g| match op {
            ReduceOp::Sum => g.iter().sum(),
            ReduceOp::Max => g.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            _ => g.iter().sum::<f64>() / g.len() as f64,
        })
        .collect()
}

#[test]
fn random_expression_trees_match_a_dense_evaluation() {
    for seed in 0..60 {
        let mut g = Gen {
            rng: fastrand::Rng::with_seed(seed),
            d: 0,
            nd: 0,
        };
        g.d = g.rng.usize(1..7);
        g.nd = g.rng.usize(1..=3);
        let (a, dense) = g.tree(4);
        assert_eq!(a.shape(), dense.shape.as_slice(), "seed {seed}");
        let (result, want) = if g.rng.bool() {
            (a.clone(), dense.v.clone())
        } else {
            let axes: Vec<usize> = (0..a.ndim()).filter(|_| g.rng.bool()).collect();
            let op = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Mean][g.rng.usize(0..3)];
            let iaxes: Vec<isize> = axes.iter().map(|&x| x as isize).collect();
            let split = g.rng.usize(2..5);
            let r = a
                .reduce(op, if axes.is_empty() { None } else { Some(&iaxes) }, split)
                .unwrap();
            let all: Vec<usize> = (0..a.ndim()).collect();
            (r, reduce_ref(&dense, if axes.is_empty() { &all } else { &axes }, op))
        };
        let got = common::compute(&result).to_f64();
        assert_eq!(got.len(), want.len(), "seed {seed}");
        for (i, (x, y)) in got.iter().zip(&want).enumerate() {
            assert!(
                (x - y).abs() <= 1e-9 * (1.0 + y.abs()),
                "seed {seed}, element {i}: {x} vs {y}\n{}",
                a.explain()
            );
        }
    }
}
