//! Arrays computed in this process (`compute_local`, the workers' ops
//! without a cluster; on the CPU and on GPUs, see `common`) against plain-loop references: creation, elementwise
//! with broadcasting, reductions over axis subsets, transposes, matmul,
//! fusion's task counts, and the errors of bad input.
#![allow(clippy::unwrap_used)]

mod common;

use weft_array::chunks::{ravel, strides, unravel};
use weft_array::{
    Array, ArrayError, BinaryOp, DType, RechunkOptions, ReduceOp, arange, from_slice, full, linspace, random, registry,
};

/// Computed on the CPU and on GPUs (emulated, and CUDA when present),
/// which must agree.
fn host(a: &Array) -> Vec<f64> {
    common::compute(a).to_f64()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = 1e-9 * (1.0 + x.abs().max(y.abs()));
        assert!(
            (x - y).abs() <= tol || (x.is_nan() && y.is_nan()),
            "element {i}: {x} vs {y}"
        );
    }
}

/// Random data of `shape` from `rng`, in [-5, 5).
fn data(rng: &mut fastrand::Rng, shape: &[usize]) -> Vec<f64> {
    (0..shape.iter().product::<usize>())
        .map(|_| rng.f64() * 10.0 - 5.0)
        .collect()
}

/// A random chunk length per axis.
fn chunking(rng: &mut fastrand::Rng, shape: &[usize]) -> Vec<usize> {
    shape.iter().map(|&n| rng.usize(1..=n.max(1))).collect()
}

#[test]
fn creation_matches_numpy() {
    assert_eq!(host(&full(&[2, 3], &[1, 2], 2.5, DType::F64).unwrap()), vec![2.5; 6]);
    let a = arange(3i64, 20i64, 4i64, 2).unwrap();
    assert_eq!(a.dtype(), DType::I64);
    assert_eq!(common::compute(&a).into_vec::<i64>().unwrap(), vec![3, 7, 11, 15, 19]);
    close(&host(&arange(0.5, 2.0, 0.5, 2).unwrap()), &[0.5, 1.0, 1.5]);
    close(&host(&linspace(0.0, 1.0, 5, 2).unwrap()), &[0.0, 0.25, 0.5, 0.75, 1.0]);
    let z = weft_array::zeros(&[3], &[2], DType::I32).unwrap();
    assert_eq!(common::compute(&z).into_vec::<i32>().unwrap(), vec![0; 3]);
}

#[test]
fn random_depends_on_seed_and_chunk_only() {
    let a = host(&random::random(7, &[50, 40], &[16, 16]).unwrap());
    let b = host(&random::random(7, &[50, 40], &[16, 16]).unwrap());
    assert_eq!(a, b);
    assert!(a.iter().all(|x| (0.0..1.0).contains(x)));
    let mean = a.iter().sum::<f64>() / a.len() as f64;
    assert!((mean - 0.5).abs() < 0.05, "{mean}");
    // The same array computed through a reduction agrees with its values.
    let total = host(&random::random(7, &[50, 40], &[16, 16]).unwrap().sum(None).unwrap())[0];
    assert!((total - a.iter().sum::<f64>()).abs() < 1e-9);
    let c = host(&random::random(8, &[50, 40], &[16, 16]).unwrap());
    assert_ne!(a, c);
    let n = host(&random::normal(1, &[20000], &[5000], 3.0, 2.0).unwrap());
    let mean = n.iter().sum::<f64>() / n.len() as f64;
    let sd = (n.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n.len() as f64).sqrt();
    assert!((mean - 3.0).abs() < 0.1 && (sd - 2.0).abs() < 0.1, "{mean} {sd}");
}

#[test]
fn from_slice_round_trips_in_any_chunking() {
    let mut rng = fastrand::Rng::with_seed(1);
    for nd in 1..=3 {
        for _ in 0..5 {
            let shape: Vec<usize> = (0..nd).map(|_| rng.usize(1..7)).collect();
            let values = data(&mut rng, &shape);
            let a = from_slice(&values, &shape, &chunking(&mut rng, &shape)).unwrap();
            assert_eq!(host(&a), values, "{shape:?}");
        }
    }
    let ints: Vec<i32> = (0..12).collect();
    let a = from_slice(&ints, &[3, 4], &[2, 3]).unwrap();
    assert_eq!(common::compute(&a).into_vec::<i32>().unwrap(), ints);
}

/// Reference broadcasting: the flat index into an operand of `shape` of
/// output index `idx`.
fn bindex(idx: &[usize], shape: &[usize]) -> usize {
    let pad = idx.len() - shape.len();
    let own: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(k, &n)| if n == 1 { 0 } else { idx[pad + k] })
        .collect();
    ravel(&own, shape)
}

#[test]
fn random_elementwise_chains_with_broadcasting_match_loops() {
    let mut rng = fastrand::Rng::with_seed(2);
    for case in 0..30 {
        let nd = rng.usize(1..=3);
        let shape: Vec<usize> = (0..nd).map(|_| rng.usize(1..6)).collect();
        let chunk = chunking(&mut rng, &shape);
        // b broadcasts: some axes 1, maybe fewer axes.
        let drop = rng.usize(0..nd);
        let bshape: Vec<usize> = shape[drop..].iter().map(|&n| if rng.bool() { 1 } else { n }).collect();
        let bchunk: Vec<usize> = bshape
            .iter()
            .zip(&chunk[drop..])
            .map(|(&n, &c)| if n == 1 { 1 } else { c })
            .collect();
        let (xa, xb) = (data(&mut rng, &shape), data(&mut rng, &bshape));
        let a = from_slice(&xa, &shape, &chunk).unwrap();
        let b = from_slice(&xb, &bshape, &bchunk).unwrap();
        // ((a + b) * 2 - |b|) / (1 + a^2), then where(a > b, exp(-|r|), sqrt(|r|))
        let r = (&(&(&(&a + &b).unwrap() * 2.0).unwrap() - &b.abs().unwrap()).unwrap()
            / &(&a.powf(2.0).unwrap() + 1.0).unwrap())
            .unwrap();
        let rabs = r.abs().unwrap();
        let out = Array::where_(
            &a.binary(&b, BinaryOp::Gt).unwrap(),
            &(-&rabs).unwrap().exp().unwrap(),
            &rabs.sqrt().unwrap(),
        )
        .unwrap();
        let n: usize = shape.iter().product();
        let expected: Vec<f64> = (0..n)
            .map(|i| {
                let idx = unravel(i, &shape);
                let (x, y) = (xa[i], xb[bindex(&idx, &bshape)]);
                let r = (((x + y) * 2.0 - y.abs()) / (1.0 + x.powf(2.0))).abs();
                if x > y { (-r).exp() } else { r.sqrt() }
            })
            .collect();
        close(&host(&out), &expected);
        assert_eq!(out.shape(), shape.as_slice(), "case {case}");
    }
}

/// A reference reduction of one group.
type Reference<'a> = Box<dyn Fn(&[f64]) -> f64 + 'a>;

/// Reference reduction of `values` of `shape` over `axes` with `f` over
/// each group (in C order).
fn reduce_ref(values: &[f64], shape: &[usize], axes: &[usize], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let kept: Vec<usize> = (0..shape.len()).filter(|a| !axes.contains(a)).collect();
    let kshape: Vec<usize> = kept.iter().map(|&a| shape[a]).collect();
    let mut groups = vec![Vec::new(); kshape.iter().product::<usize>().max(1)];
    for (i, &x) in values.iter().enumerate() {
        let idx = unravel(i, shape);
        let k: Vec<usize> = kept.iter().map(|&a| idx[a]).collect();
        groups[ravel(&k, &kshape)].push(x);
    }
    groups.iter().map(|g| f(g)).collect()
}

#[test]
fn reductions_over_random_axis_subsets_match_loops() {
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..25 {
        let nd = rng.usize(1..=3);
        let shape: Vec<usize> = (0..nd).map(|_| rng.usize(1..7)).collect();
        let values = data(&mut rng, &shape);
        let a = from_slice(&values, &shape, &chunking(&mut rng, &shape)).unwrap();
        let axes: Vec<usize> = (0..nd).filter(|_| rng.bool()).collect();
        let axes = if axes.is_empty() { (0..nd).collect() } else { axes };
        let iaxes: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        let split = rng.usize(2..5);
        let mean = |g: &[f64]| g.iter().sum::<f64>() / g.len() as f64;
        let std = |g: &[f64]| {
            let m = mean(g);
            (g.iter().map(|x| (x - m).powi(2)).sum::<f64>() / g.len() as f64).sqrt()
        };
        let cases: Vec<(ReduceOp, Reference<'_>)> = vec![
            (ReduceOp::Sum, Box::new(|g: &[f64]| g.iter().sum())),
            (
                ReduceOp::Min,
                Box::new(|g: &[f64]| g.iter().copied().fold(f64::INFINITY, f64::min)),
            ),
            (
                ReduceOp::Max,
                Box::new(|g: &[f64]| g.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            ),
            (ReduceOp::Mean, Box::new(mean)),
            (ReduceOp::Std(0), Box::new(std)),
        ];
        for (op, f) in cases {
            let r = a.reduce(op, Some(&iaxes), split).unwrap();
            close(&host(&r), &reduce_ref(&values, &shape, &axes, f));
        }
        // argmax along one axis, and over all.
        let axis = rng.usize(0..nd);
        let r = a.argmax(Some(axis as isize)).unwrap();
        let st = strides(&shape);
        let expected: Vec<f64> = {
            let kept: Vec<usize> = (0..nd).filter(|&x| x != axis).collect();
            let kshape: Vec<usize> = kept.iter().map(|&x| shape[x]).collect();
            (0..kshape.iter().product::<usize>())
                .map(|k| {
                    let kidx = unravel(k, &kshape);
                    let mut best = (f64::NEG_INFINITY, 0);
                    for j in 0..shape[axis] {
                        let mut idx = vec![0; nd];
                        for (p, &x) in kept.iter().enumerate() {
                            idx[x] = kidx[p];
                        }
                        idx[axis] = j;
                        let v = values[idx.iter().zip(&st).map(|(i, s)| i * s).sum::<usize>()];
                        if v > best.0 {
                            best = (v, j);
                        }
                    }
                    best.1 as f64
                })
                .collect()
        };
        assert_eq!(host(&r), expected);
        let flat = values
            .iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        assert_eq!(host(&a.argmin(None).unwrap()).len(), 1);
        assert_eq!(host(&a.argmax(None).unwrap()), vec![flat.0 as f64]);
    }
}

#[test]
fn transposes_fuse_with_arithmetic_and_reductions() {
    let mut rng = fastrand::Rng::with_seed(4);
    let (m, c) = (9, 4);
    let values = data(&mut rng, &[m, m]);
    let x = from_slice(&values, &[m, m], &[c, c]).unwrap();
    let y = (&x + &x.t()).unwrap();
    let expected: Vec<f64> = (0..m * m).map(|i| values[i] + values[(i % m) * m + i / m]).collect();
    close(&host(&y), &expected);
    let s = y.sum(None).unwrap();
    close(&host(&s), &[2.0 * values.iter().sum::<f64>()]);
    // 3-d swapaxes.
    let v3 = data(&mut rng, &[2, 3, 4]);
    let z = from_slice(&v3, &[2, 3, 4], &[1, 2, 3])
        .unwrap()
        .swapaxes(0, -1)
        .unwrap();
    assert_eq!(z.shape(), &[4, 3, 2]);
    let expected: Vec<f64> = (0..24)
        .map(|i| {
            let idx = unravel(i, &[4, 3, 2]);
            v3[ravel(&[idx[2], idx[1], idx[0]], &[2, 3, 4])]
        })
        .collect();
    assert_eq!(host(&z), expected);
    // Random arrays transposed generate the transposed chunks' values.
    let r = random::random(3, &[10, 10], &[4, 4]).unwrap();
    let rv = host(&r);
    let sum_t = host(&(&r + &r.t()).unwrap().sum(None).unwrap())[0];
    assert!((sum_t - 2.0 * rv.iter().sum::<f64>()).abs() < 1e-9);
}

#[test]
fn transposed_generators_give_the_generated_values_transposed() {
    // Ragged chunks, 2-d and 3-d, uniform and normal: a permuted generator
    // reads exactly the values of the stored array, permuted.
    let cases: [(Array, &[usize]); 4] = [
        (random::random(7, &[10, 10], &[4, 3]).unwrap(), &[1, 0]),
        (random::normal(8, &[9, 6], &[4, 4], 1.0, 2.0).unwrap(), &[1, 0]),
        (
            random::uniform(9, &[3, 4, 5], &[2, 3, 2], -1.0, 1.0).unwrap(),
            &[2, 0, 1],
        ),
        (random::random(10, &[1, 7], &[1, 3]).unwrap(), &[1, 0]),
    ];
    for (r, perm) in cases {
        let stored = host(&r);
        let view = r.permute(perm).unwrap();
        let shape = view.shape().to_vec();
        let expected: Vec<f64> = (0..stored.len())
            .map(|i| {
                let idx = unravel(i, &shape);
                let mut src = vec![0; perm.len()];
                for (k, &p) in perm.iter().enumerate() {
                    src[p] = idx[k];
                }
                stored[ravel(&src, r.shape())]
            })
            .collect();
        assert_eq!(host(&view), expected, "permute {perm:?} of {}", r.explain());
        // Fused with the untransposed values: no task stores the array.
        let both = (&(&view * 2.0).unwrap() + &view).unwrap();
        assert!(both.graph().tasks.iter().all(|t| &*t.op == "array.fused"));
        close(&host(&both), &expected.iter().map(|x| 3.0 * x).collect::<Vec<_>>());
    }
    // A transposed generator as a matmul operand shares its generator's
    // chunks with the untransposed one: one layer of generated chunks.
    let y = random::random(11, &[6, 5], &[4, 2]).unwrap();
    let g = y.matmul(&y.t()).unwrap();
    let graph = g.graph();
    let generated = graph.tasks.iter().filter(|t| t.deps.is_empty()).count();
    assert_eq!(generated, y.chunks().nblocks());
    let v = host(&y);
    let expected: Vec<f64> = (0..36)
        .map(|i| (0..5).map(|l| v[(i / 6) * 5 + l] * v[(i % 6) * 5 + l]).sum())
        .collect();
    close(&host(&g), &expected);
}

#[test]
fn matmul_of_ragged_non_square_blocks_matches_loops() {
    let mut rng = fastrand::Rng::with_seed(5);
    for (m, k, n, split) in [(7, 9, 5, 2), (12, 4, 10, 8), (1, 13, 3, 3)] {
        let (va, vb) = (data(&mut rng, &[m, k]), data(&mut rng, &[k, n]));
        let a = from_slice(&va, &[m, k], &[3, 2]).unwrap();
        let b = from_slice(&vb, &[k, n], &[2, 4]).unwrap();
        let c = a.matmul_with(&b, split).unwrap();
        let expected: Vec<f64> = (0..m * n)
            .map(|i| (0..k).map(|l| va[(i / n) * k + l] * vb[l * n + i % n]).sum())
            .collect();
        close(&host(&c), &expected);
        // A transposed operand is read through strides: a @ a.T.
        let g = a.matmul(&a.t()).unwrap();
        let expected: Vec<f64> = (0..m * m)
            .map(|i| (0..k).map(|l| va[(i / m) * k + l] * va[(i % m) * k + l]).sum())
            .collect();
        close(&host(&g), &expected);
    }
    // float32 stays float32.
    let a = from_slice(&[1f32, 2., 3., 4.], &[2, 2], &[1, 1]).unwrap();
    let p = a.matmul(&a).unwrap();
    assert_eq!(p.dtype(), DType::F32);
    assert_eq!(common::compute(&p).into_vec::<f32>().unwrap(), vec![7., 10., 15., 22.]);
}

#[test]
fn a_product_with_its_own_transpose_multiplies_the_upper_blocks_only() {
    let mut rng = fastrand::Rng::with_seed(6);
    let (m, k) = (7, 5);
    let v = data(&mut rng, &[m, k]);
    let x = from_slice(&v, &[m, k], &[3, 2]).unwrap();
    let count = |a: &Array, op: &str| a.graph().tasks.iter().filter(|t| &*t.op == op).count();
    // 3 x 3 output blocks: 6 on and above the diagonal multiplied, the 3
    // below mirrored; with split_every 2, each of the 6 sums its 3 products
    // in a tree.
    for split in [8, 2] {
        let g = x.matmul_with(&x.t(), split).unwrap();
        let groups = if split == 8 { 1 } else { 2 };
        assert_eq!(count(&g, "array.matmul"), 6 * groups);
        let got = host(&g);
        let expected: Vec<f64> = (0..m * m)
            .map(|i| (0..k).map(|l| v[(i / m) * k + l] * v[(i % m) * k + l]).sum())
            .collect();
        close(&got, &expected);
        // Exactly symmetric, as syrk's result.
        for i in 0..m * m {
            assert_eq!(got[i], got[(i % m) * m + i / m]);
        }
    }
    // A diagonal block larger than a strip of its upper triangle (128
    // rows), summing two products.
    let (m, k) = (160, 3);
    let v = data(&mut rng, &[m, k]);
    let x = from_slice(&v, &[m, k], &[m, 2]).unwrap();
    let got = host(&x.matmul(&x.t()).unwrap());
    let expected: Vec<f64> = (0..m * m)
        .map(|i| (0..k).map(|l| v[(i / m) * k + l] * v[(i % m) * k + l]).sum())
        .collect();
    close(&got, &expected);
    assert!((0..m * m).all(|i| got[i] == got[(i % m) * m + i / m]));
    let (m, k) = (7, 5);
    let v = data(&mut rng, &[m, k]);
    let x = from_slice(&v, &[m, k], &[3, 2]).unwrap();
    // X.T @ X too (2 x 2 + ragged: 3 x 3 blocks of 5 x 5).
    let h = x.t().matmul(&x).unwrap();
    assert_eq!(count(&h, "array.matmul"), 6);
    let expected: Vec<f64> = (0..k * k)
        .map(|i| (0..m).map(|l| v[l * k + i / k] * v[l * k + i % k]).sum())
        .collect();
    close(&host(&h), &expected);
    // Another array's transpose is no mirror.
    let y = from_slice(&data(&mut rng, &[m, k]), &[m, k], &[3, 2]).unwrap();
    assert_eq!(count(&x.matmul(&y.t()).unwrap(), "array.matmul"), 9);
}

#[test]
fn fusion_makes_one_task_per_chunk_plus_the_tree() {
    // 4 x 4 chunks.
    let x = from_slice(&vec![1.0f64; 64], &[8, 8], &[2, 2]).unwrap();
    let sum = (&x + &x.t()).unwrap().sum(None).unwrap();
    // 16 inputs + 16 fused add/transpose/partial-sum tasks + a tree of
    // 8-way combines (16 -> 2 -> 1).
    assert_eq!(sum.graph().tasks.len(), 16 + 16 + 2 + 1);
    assert_eq!(host(&sum), vec![128.0]);
    // A five-op chain is one task per chunk.
    let chain = (&(&(&x + 1.0).unwrap() * 2.0).unwrap() - &x)
        .unwrap()
        .exp()
        .unwrap()
        .sqrt()
        .unwrap();
    assert_eq!(chain.graph().tasks.len(), 16 + 16);
    close(&host(&chain), &vec![(3.0f64).exp().sqrt(); 64]);
    // Generated inputs fuse too: random(..).sum() never stores the array,
    // nor does (r + r.T).sum(), whose tasks generate both their chunk and
    // the transposed one (the generation is cheaper than storing and
    // reading back the array).
    let r = random::random(1, &[8, 8], &[2, 2]).unwrap();
    assert_eq!(r.sum(None).unwrap().graph().tasks.len(), 16 + 2 + 1);
    let rt = (&r + &r.t()).unwrap().sum(None).unwrap();
    assert_eq!(rt.graph().tasks.len(), 16 + 2 + 1);
    close(&host(&rt), &[2.0 * host(&r.sum(None).unwrap())[0]]);
}

#[test]
fn bad_input_is_a_clear_error_at_build_time() {
    let a = full(&[3, 4], &[2, 2], 1.0, DType::F64).unwrap();
    let b = full(&[3, 5], &[2, 2], 1.0, DType::F64).unwrap();
    let err = (&a + &b).unwrap_err().to_string();
    assert!(
        err.contains("[3, 4]") && err.contains("[3, 5]") && err.contains("add"),
        "{err}"
    );
    let err = a.sum(Some(&[2])).unwrap_err();
    assert!(matches!(err, ArrayError::Axis { axis: 2, ndim: 2, .. }), "{err}");
    // Operands chunked differently are rechunked to the first's chunks.
    let c = full(&[3, 4], &[3, 4], 1.0, DType::F64).unwrap();
    let sum = (&a + &c).unwrap();
    assert_eq!(sum.chunks(), a.chunks());
    assert_eq!(host(&sum), vec![2.0; 12]);
    // Concatenation does not rechunk: an error names both chunkings.
    let err = weft_array::concatenate(&[&a, &c], 0).unwrap_err().to_string();
    assert!(
        err.contains("chunks") && err.contains("[2, 2]") && err.contains("[4]"),
        "{err}"
    );
    let bools = a.cmp_scalar(BinaryOp::Gt, 0.0).unwrap();
    let err = (-&bools).unwrap_err().to_string();
    assert!(err.contains("neg") && err.contains("bool"), "{err}");
    let err = a.matmul(&a).unwrap_err().to_string();
    assert!(err.contains("matmul") && err.contains("[3, 4]"), "{err}");
    assert!(from_slice(&[1.0f64; 5], &[2, 3], &[1, 1]).is_err());
    assert!(a.permute(&[0, 0]).is_err());
}

#[test]
fn slices_and_integer_indices_match_loops() {
    use weft_array::Ix;
    let mut rng = fastrand::Rng::with_seed(6);
    let shape = [7, 6, 5];
    let values = data(&mut rng, &shape);
    let x = from_slice(&values, &shape, &[3, 4, 2]).unwrap();
    let y = x
        .index(&[
            Ix::Range {
                start: Some(1),
                stop: Some(-1),
                step: 2,
            },
            Ix::At(-2),
            Ix::range(1, 5),
        ])
        .unwrap();
    assert_eq!(y.shape(), &[3, 4]);
    let mut expected = Vec::new();
    for i in (1..6).step_by(2) {
        for k in 1..5 {
            expected.push(values[ravel(&[i, 4, k], &shape)]);
        }
    }
    assert_eq!(host(&y), expected);
    // Each output chunk is cut from one input chunk.
    assert!(y.graph().tasks.iter().all(|t| t.deps.len() <= 1));
    // Indexing composes with arithmetic and reductions.
    let s = (&y * 2.0).unwrap().sum(Some(&[1])).unwrap();
    close(
        &host(&s),
        &expected
            .chunks(4)
            .map(|r| 2.0 * r.iter().sum::<f64>())
            .collect::<Vec<_>>(),
    );
    let err = x.index(&[Ix::At(7)]).unwrap_err().to_string();
    assert!(
        err.contains("index 7") && err.contains("axis 0") && err.contains("shape [7, 6, 5]"),
        "{err}"
    );
    assert!(x.index(&[Ix::All, Ix::All, Ix::All, Ix::All]).is_err());
    // An empty slice.
    assert_eq!(host(&x.index(&[Ix::range(3, 3)]).unwrap()).len(), 0);
}

#[test]
fn negative_steps_and_integer_arrays_match_loops() {
    use weft_array::Ix;
    let mut rng = fastrand::Rng::with_seed(16);
    let shape = [9, 7];
    let values = data(&mut rng, &shape);
    let x = from_slice(&values, &shape, &[4, 3]).unwrap();
    let at = |i: usize, j: usize| values[ravel(&[i, j], &shape)];
    // NumPy's x[::-1, 5:0:-2] and x[-2::-3, ::-1].
    let cases: [([Ix; 2], Vec<usize>, Vec<usize>); 3] = [
        (
            [
                Ix::Range {
                    start: None,
                    stop: None,
                    step: -1,
                },
                Ix::Range {
                    start: Some(5),
                    stop: Some(0),
                    step: -2,
                },
            ],
            (0..9).rev().collect(),
            vec![5, 3, 1],
        ),
        (
            [
                Ix::Range {
                    start: Some(-2),
                    stop: None,
                    step: -3,
                },
                Ix::Range {
                    start: None,
                    stop: None,
                    step: -1,
                },
            ],
            vec![7, 4, 1],
            (0..7).rev().collect(),
        ),
        (
            [
                Ix::Range {
                    start: Some(100),
                    stop: Some(-100),
                    step: -4,
                },
                Ix::All,
            ],
            vec![8, 4, 0],
            (0..7).collect(),
        ),
    ];
    for (ix, rows, cols) in cases {
        let y = x.index(&ix).unwrap();
        assert_eq!(y.shape(), &[rows.len(), cols.len()], "{ix:?}");
        let want: Vec<f64> = rows.iter().flat_map(|&i| cols.iter().map(move |&j| at(i, j))).collect();
        assert_eq!(host(&y), want, "{ix:?}");
    }
    // An empty backwards slice.
    assert_eq!(
        host(
            &x.index(&[Ix::Range {
                start: Some(2),
                stop: Some(5),
                step: -1
            }])
            .unwrap()
        )
        .len(),
        0
    );
    // Integer arrays: any order, repeats, negative positions, both axes.
    let rows: Vec<isize> = vec![3, -1, 0, 0, 8, 2, 7, 6, 5, 4, 1];
    let y = x.take(&rows, 0).unwrap();
    assert_eq!(y.shape(), &[11, 7]);
    assert_eq!(y.chunks().axis(0), &[4, 4, 3]);
    let r = |i: isize| if i < 0 { (i + 9) as usize } else { i as usize };
    let want: Vec<f64> = rows.iter().flat_map(|&i| (0..7).map(move |j| at(r(i), j))).collect();
    assert_eq!(host(&y), want);
    let cols: Vec<isize> = (0..40).map(|k| (k * 5 % 7) as isize).collect();
    let z = x.take(&cols, -1).unwrap();
    let want: Vec<f64> = (0..9)
        .flat_map(|i| cols.iter().map(move |&j| at(i, j as usize)))
        .collect();
    assert_eq!(host(&z), want);
    // Fan-in stays bounded however scattered the positions are.
    assert!(z.graph().tasks.iter().all(|t| t.deps.len() <= 32));
    // Composes with arithmetic and reductions.
    close(
        &host(&(&y * 2.0).unwrap().sum(None).unwrap()),
        &[2.0 * want_sum(&x, &rows)],
    );
    // Out of bounds: the index, the axis and the shape.
    let err = x.take(&[0, 9], 0).unwrap_err().to_string();
    assert!(
        err.contains("take: index 9") && err.contains("axis 0") && err.contains("[9, 7]"),
        "{err}"
    );
    let err = x.take(&[-8], 1).unwrap_err().to_string();
    assert!(
        err.contains("index -8") && err.contains("axis 1") && err.contains("[9, 7]"),
        "{err}"
    );
    assert!(x.take(&[0], 2).unwrap_err().to_string().contains("axis 2"));
}

/// The sum of rows `rows` of `x`.
fn want_sum(x: &Array, rows: &[isize]) -> f64 {
    let all = host(x);
    rows.iter()
        .map(|&i| {
            let i = if i < 0 { i + 9 } else { i } as usize;
            all[i * 7..(i + 1) * 7].iter().sum::<f64>()
        })
        .sum()
}

#[test]
fn a_p2p_rechunk_is_linear_in_the_chunks_and_gives_the_assemble_paths_values() {
    let p2p = RechunkOptions {
        p2p_min_pieces: 0,
        ..RechunkOptions::default()
    };
    let mut rng = fastrand::Rng::with_seed(11);
    // 40 row blocks to 40 column blocks: 1600 pieces.
    let n = 40;
    let values = data(&mut rng, &[n, n]);
    let x = from_slice(&values, &[n, n], &[1, n]).unwrap();
    let to = weft_array::Chunks::regular(&[n, n], &[n, 1]).unwrap();
    let y = x.rechunk_to(to.clone(), &p2p).unwrap();
    let graph = y.graph();
    let deps: usize = graph.tasks.iter().map(|t| t.deps.len()).sum();
    // 40 input chunks; 40 transfers, a plan, a barrier and 40 unpacks.
    assert_eq!(graph.tasks.len(), n + (n + n + 2));
    // Per transfer the plan and its chunk, the barrier every transfer, per
    // unpack the barrier.
    assert_eq!(deps, 2 * n + n + n);
    assert!(
        y.explain().contains("p2p rechunk: 40 transfers push 1600 pieces"),
        "{}",
        y.explain()
    );
    assert_eq!(host(&y), values);
    // The assemble path reads every piece as a task input: n * m edges.
    let assembled = x
        .rechunk_to(
            to,
            &RechunkOptions {
                p2p_min_pieces: usize::MAX,
                ..RechunkOptions::default()
            },
        )
        .unwrap();
    let deps: usize = assembled.graph().tasks.iter().map(|t| t.deps.len()).sum();
    assert!(deps >= n * n, "{deps}");
    let by_default = x.rechunk(&[n, 1]).unwrap().explain();
    assert_eq!(
        by_default.contains("p2p rechunk"),
        n * n >= RechunkOptions::default().p2p_min_pieces,
        "{by_default}"
    );
    assert!(x.rechunk(&[n, n / 2]).unwrap().explain().contains("rechunk-assemble"));
    // Random shapes and chunkings, 1 to 3 axes, ragged edges.
    for case in 0..12 {
        let nd = 1 + case % 3;
        let shape: Vec<usize> = (0..nd).map(|_| rng.usize(1..=(30 / nd))).collect();
        let values = data(&mut rng, &shape);
        let x = from_slice(&values, &shape, &chunking(&mut rng, &shape)).unwrap();
        let to = chunking(&mut rng, &shape);
        let y = x
            .rechunk_to(weft_array::Chunks::regular(&shape, &to).unwrap(), &p2p)
            .unwrap();
        assert_eq!(host(&y), values, "{shape:?} in {:?} to {to:?}", x.chunks().0);
    }
}

#[test]
fn rechunk_moves_pieces_with_bounded_fan_in() {
    let mut rng = fastrand::Rng::with_seed(7);
    let shape = [23, 17];
    let values = data(&mut rng, &shape);
    let x = from_slice(&values, &shape, &[2, 17]).unwrap();
    // Row blocks to column blocks: each output chunk reads 12 row blocks.
    let y = x.rechunk(&[23, 3]).unwrap();
    assert_eq!(y.chunks().0, vec![vec![23], vec![3, 3, 3, 3, 3, 2]]);
    assert_eq!(host(&y), values);
    let bounded = x
        .rechunk_to(
            weft_array::Chunks::regular(&shape, &[23, 3]).unwrap(),
            &RechunkOptions {
                max_fanin: 4,
                p2p_min_pieces: usize::MAX,
            },
        )
        .unwrap();
    assert!(bounded.graph().tasks.iter().all(|t| t.deps.len() <= 4));
    assert_eq!(host(&bounded), values);
    // Ragged to ragged, and the result feeds fused arithmetic.
    let z = x.rechunk(&[5, 4]).unwrap();
    close(
        &host(&(&z + &z).unwrap()),
        &values.iter().map(|v| 2.0 * v).collect::<Vec<_>>(),
    );
    assert!(x.rechunk(&[5]).is_err());
}

#[test]
fn concatenate_and_stack_relabel_chunks() {
    use weft_array::{concatenate, stack};
    let a = from_slice(&[1.0f64, 2., 3., 4., 5., 6.], &[2, 3], &[1, 2]).unwrap();
    let b = from_slice(&[7i64, 8, 9], &[1, 3], &[1, 2]).unwrap();
    let c = concatenate(&[&a, &b], 0).unwrap();
    assert_eq!(c.shape(), &[3, 3]);
    assert_eq!(c.dtype(), DType::F64);
    assert_eq!(host(&c), vec![1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let s = stack(&[&a, &a], -1).unwrap();
    assert_eq!(s.shape(), &[2, 3, 2]);
    assert_eq!(host(&s), vec![1., 1., 2., 2., 3., 3., 4., 4., 5., 5., 6., 6.]);
    let err = concatenate(&[&a, &b.t()], 0).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[3, 1]"), "{err}");
    let sq = b.squeeze(&[0]).unwrap();
    assert_eq!(sq.shape(), &[3]);
    assert_eq!(host(&(&sq + &a).unwrap()), vec![8., 10., 12., 11., 13., 15.]);
}

#[test]
fn reshape_keeps_whole_chunks_or_says_what_to_rechunk() {
    let values: Vec<f64> = (0..120).map(f64::from).collect();
    let x = from_slice(&values, &[4, 5, 6], &[2, 5, 6]).unwrap();
    let y = x.reshape(&[20, 6]).unwrap();
    assert_eq!(y.chunks().0, vec![vec![10, 10], vec![6]]);
    assert_eq!(host(&y), values);
    let z = x.reshape(&[2, 2, 30]).unwrap();
    assert_eq!(host(&z), values);
    assert_eq!(host(&x.reshape(&[120]).unwrap()), values);
    assert_eq!(host(&x.reshape(&[1, 4, 30, 1]).unwrap()), values);
    let err = from_slice(&values, &[4, 5, 6], &[2, 2, 6])
        .unwrap()
        .reshape(&[20, 6])
        .unwrap_err()
        .to_string();
    assert!(err.contains("axis 1") && err.contains("rechunk"), "{err}");
    let err = x.reshape(&[7, 7]).unwrap_err().to_string();
    assert!(err.contains("[4, 5, 6]") && err.contains("[7, 7]"), "{err}");
}

#[test]
fn map_blocks_runs_a_user_op_per_chunk() {
    use weft_array::block::{Out, decode_one};
    let mut reg = registry();
    reg.raw_op("negate", |_, _, inputs| {
        let view = decode_one(&inputs[0]).map_err(|e| e.to_string())?;
        let mut out = Out::new(DType::F64, &view.shape);
        let dst = out.as_mut::<f64>().map_err(|e| e.to_string())?;
        for (d, s) in dst.iter_mut().zip(view.data.as_slice::<f64>().unwrap()) {
            *d = -s;
        }
        Ok(out.finish().map_err(|e| e.to_string())?)
    });
    let x = from_slice(&[1.0f64, 2.0, 3.0], &[3], &[2]).unwrap();
    let y = x.map_blocks("negate", bytes::Bytes::new(), DType::F64);
    let s = (&y * 2.0).unwrap();
    assert_eq!(s.compute_local(&reg).unwrap().to_f64(), vec![-2.0, -4.0, -6.0]);
}

#[test]
fn npy_files_round_trip_whole_and_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<i32> = (0..35).collect();
    let x = from_slice(&values, &[5, 7], &[2, 3]).unwrap();
    let host_x = x.compute_local(&registry()).unwrap();
    let file = dir.path().join("x.npy");
    weft_array::npy::write(&file, &host_x).unwrap();
    let head = std::fs::read(&file).unwrap();
    assert_eq!(&head[..6], b"\x93NUMPY");
    assert_eq!((head.len() - 35 * 4) % 64, 0);
    // Read back by chunks other than the written ones.
    let back = weft_array::from_npy(&file, &[3, 4]).unwrap();
    assert_eq!(
        back.compute_local(&registry()).unwrap().into_vec::<i32>().unwrap(),
        values
    );
    // A directory of chunk files, written by the ops the workers run.
    let chunks = dir.path().join("chunks");
    std::fs::create_dir(&chunks).unwrap();
    let graph = x.npy_dir_graph(&chunks);
    let reg = registry();
    let mut done = std::collections::HashMap::new();
    for t in &graph.tasks {
        let inputs: Vec<_> = t.deps.iter().map(|d| std::sync::Arc::clone(&done[d])).collect();
        let site = weft_runtime::ops::Site::default();
        let ctx = weft_runtime::ops::OpContext::new(&site, &t.key);
        let v = reg.get(&t.op).unwrap()(&ctx, &t.args, &inputs).unwrap();
        done.insert(t.key.clone(), std::sync::Arc::new(v));
    }
    assert!(chunks.join("2.2.npy").exists());
    let back = weft_array::from_npy_dir(&chunks).unwrap();
    assert_eq!(back.chunks(), x.chunks());
    assert_eq!(
        back.compute_local(&registry()).unwrap().into_vec::<i32>().unwrap(),
        values
    );
    let err = weft_array::from_npy(&dir.path().join("missing.npy"), &[1])
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.npy"), "{err}");
}

#[test]
fn transposed_reads_in_square_tiles_match_loops() {
    let mut rng = fastrand::Rng::with_seed(8);
    let (m, n) = (70, 45);
    let va = data(&mut rng, &[m, n]);
    let vb = data(&mut rng, &[n, m]);
    // Chunks larger than a 32 x 32 tile, with ragged edges.
    let a = from_slice(&va, &[m, n], &[50, 40]).unwrap();
    let b = from_slice(&vb, &[n, m], &[40, 50]).unwrap();
    let y = (&(&a * 3.0).unwrap() - &b.t()).unwrap();
    let expected: Vec<f64> = (0..m * n).map(|i| 3.0 * va[i] - vb[(i % n) * m + i / n]).collect();
    close(&host(&y), &expected);
    close(&host(&y.sum(None).unwrap()), &[expected.iter().sum()]);
    let cols = y.max(Some(&[0])).unwrap();
    let want: Vec<f64> = (0..n)
        .map(|j| (0..m).map(|i| expected[i * n + j]).fold(f64::NEG_INFINITY, f64::max))
        .collect();
    close(&host(&cols), &want);
}
