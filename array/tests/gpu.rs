//! Chunks on GPUs: every operator and dtype through the generated kernel
//! (on the grid emulation, and on a CUDA GPU when present) against the CPU
//! path, including the values where C++ and Rust differ (integer overflow
//! and division by zero, NaN, out-of-range float-to-int casts); device
//! chunks stay on the device between fused tasks; and the generated
//! sources compile with NVRTC where it is installed.
#![allow(clippy::unwrap_used)]

mod common;

use weft_array::cuda::source;
use weft_array::grid::GridPlan;
use weft_array::{Array, BinaryOp, DType, ReduceOp, UnaryOp, from_slice, random, registry};
use weft_gpu::{Gpu, GpuBackend};
use weft_kernels::nvrtc::Output;
use weft_runtime::ops::Site;

/// Awkward values of every type, 12 of each, as a 3 x 4 array in 2 x 3 chunks.
fn awkward(dtype: DType) -> Array {
    let f: Vec<f64> = vec![
        0.0,
        -1.0,
        2.5,
        f64::NAN,
        1e300,
        -7.25,
        3.0,
        f64::INFINITY,
        -0.0,
        64.0,
        1e-3,
        -2.0,
    ];
    let i: Vec<i64> = vec![0, -1, 2, i64::MIN, i64::MAX, -7, 3, 1 << 40, 5, 64, 31, -2];
    let shape = [3, 4];
    let chunk = [2, 3];
    match dtype {
        DType::F64 => from_slice(&f, &shape, &chunk),
        DType::F32 => from_slice(&f.iter().map(|&x| x as f32).collect::<Vec<_>>(), &shape, &chunk),
        DType::I64 => from_slice(&i, &shape, &chunk),
        DType::I32 => from_slice(&i.iter().map(|&x| x as i32).collect::<Vec<_>>(), &shape, &chunk),
        DType::Bool => from_slice(&i.iter().map(|&x| u8::from(x > 0)).collect::<Vec<_>>(), &shape, &chunk),
    }
    .unwrap()
}

const DTYPES: [DType; 5] = [DType::F32, DType::F64, DType::I32, DType::I64, DType::Bool];

#[test]
fn every_operator_and_type_agrees_with_the_cpu() {
    use BinaryOp::*;
    for a in DTYPES {
        let x = awkward(a);
        for op in [
            UnaryOp::Neg,
            UnaryOp::Abs,
            UnaryOp::Exp,
            UnaryOp::Log,
            UnaryOp::Sqrt,
            UnaryOp::Not,
        ] {
            if let Ok(y) = x.unary(op) {
                common::compute(&y);
            }
        }
        for b in DTYPES {
            // The second operand transposed and reversed in value order.
            let y = awkward(b).t().t();
            for op in [
                Add, Sub, Mul, Div, Pow, Maximum, Minimum, Eq, Ne, Lt, Le, Gt, Ge, And, Or,
            ] {
                if let Ok(z) = x.binary(&y, op) {
                    common::compute(&z);
                }
            }
            common::compute(&x.astype(b));
        }
        let cond = x.binary_scalar(0i64, Gt, false).unwrap();
        common::compute(&Array::where_(&cond, &x, &awkward(DType::F32)).unwrap());
    }
}

#[test]
fn every_reduction_agrees_with_the_cpu_on_every_type() {
    let ops = [
        ReduceOp::Sum,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::Mean,
        ReduceOp::Std(1),
        ReduceOp::ArgMin,
        ReduceOp::ArgMax,
    ];
    for dtype in DTYPES {
        // Without the NaN and infinities, so sums and moments are finite.
        let x = awkward(dtype);
        let x = Array::where_(&x.binary(&x, BinaryOp::Eq).unwrap(), &x, &awkward(DType::I32))
            .unwrap()
            .binary_scalar(1000i64, BinaryOp::Minimum, false)
            .unwrap();
        for op in ops {
            for axes in [None, Some(&[0isize][..]), Some(&[1isize][..])] {
                common::compute(&x.reduce(op, axes, 2).unwrap());
            }
        }
    }
    // Large enough that a reduction splits into slices of many threads.
    let big = random::normal(5, &[300, 700], &[300, 350], 1.0, 2.0).unwrap();
    for op in ops {
        common::compute(&big.reduce(op, None, 2).unwrap());
        common::compute(&big.reduce(op, Some(&[0]), 2).unwrap());
    }
    common::compute(&big.t().reduce(ReduceOp::Std(0), Some(&[1]), 2).unwrap());
}

#[test]
fn chunks_stay_on_the_device_between_fused_tasks() {
    let gpu = Gpu::emulated(0, 256 << 20, true);
    let site = Site {
        gpu: Some(gpu.clone()),
        ..Site::default()
    };
    let counters = || match gpu.backend() {
        GpuBackend::Emulated(e) => e.copies(),
        GpuBackend::Cuda(_) => unreachable!("an emulated GPU"),
    };
    let values: Vec<f64> = (0..400).map(f64::from).collect();
    // 2 host chunks; a matmul of the fused result leaves device chunks that
    // the next fused chain reads in place.
    let x = from_slice(&values, &[20, 20], &[10, 20]).unwrap();
    let y = (&x * 2.0).unwrap();
    let z = (&y.matmul(&y.t()).unwrap() + 1.0).unwrap();
    let before = counters();
    let host = z.compute_on(&registry(), &site).unwrap();
    let after = counters();
    assert_eq!(host.to_f64(), z.compute_local(&registry()).unwrap().to_f64());
    let z_chunks = z.chunks().nblocks() as u64;
    // Uploads: one per fused task reading a host chunk (y and the
    // transposed operand each read both); the matmul and the chain after
    // it read device chunks in place.
    let graph = z.graph();
    let host_chunks: std::collections::HashSet<_> = graph
        .tasks
        .iter()
        .filter(|t| &*t.op == "array.from_bytes")
        .map(|t| t.key.clone())
        .collect();
    let uploads = graph
        .tasks
        .iter()
        .filter(|t| &*t.op == "array.fused")
        .flat_map(|t| t.deps.iter())
        .filter(|d| host_chunks.contains(*d))
        .count() as u64;
    assert_eq!(after.h2d - before.h2d, uploads, "{before:?} -> {after:?}");
    assert_eq!(
        after.d2d + after.peer + after.staged,
        before.d2d + before.peer + before.staged
    );
    // Downloads: only the final chunks, once each.
    assert_eq!(after.d2h - before.d2h, z_chunks, "{before:?} -> {after:?}");
}

#[test]
fn a_fused_chain_is_one_generated_kernel_per_chunk() {
    let site = Site {
        gpu: Some(Gpu::emulated(0, 256 << 20, true)),
        ..Site::default()
    };
    let n = 40;
    let values: Vec<f64> = (0..n * n).map(|i| i as f64).collect();
    let x = from_slice(&values, &[n, n], &[10, 10]).unwrap();
    // (x + x.T).sum(): 16 fused tasks, one kernel each (the tree's
    // combines merge small partials on the host).
    let s = (&x + &x.t()).unwrap().sum(None).unwrap();
    let (host, launches) = weft_array::emulate::count_launches(|| s.compute_on(&registry(), &site).unwrap());
    assert_eq!(host.to_f64(), vec![2.0 * values.iter().sum::<f64>()]);
    assert_eq!(launches, 16);
    // A 5-op chain with a broadcast row: one kernel per chunk.
    let row = from_slice(&values[..n], &[n], &[10]).unwrap();
    let chain = (&(&(&(&x * 2.0).unwrap() + &row).unwrap().exp().unwrap() - 1.0).unwrap() / &x.t())
        .unwrap()
        .sqrt()
        .unwrap();
    let (_, launches) = weft_array::emulate::count_launches(|| common::compute(&chain));
    let emulated = common::gpu_sites()
        .iter()
        .filter(|(_, site)| {
            site.gpu
                .as_ref()
                .is_some_and(|g| matches!(g.backend(), GpuBackend::Emulated(_)))
        })
        .count();
    assert_eq!(launches, 16 * emulated, "one kernel per chunk on each emulated GPU");
}

#[test]
fn generated_sources_compile_with_nvrtc() {
    let nvrtc = match weft_kernels::cudalibs::nvrtc_library() {
        Ok(path) => path,
        Err(why) => return weft_gpu::testing::skip_without_cuda("generated_sources_compile_with_nvrtc", &why),
    };
    println!("compiling with {nvrtc}");
    // Every operator, type, generator and reduction, as the plans lower them.
    let x = awkward(DType::F64);
    let mut arrays = vec![
        (&random::random(1, &[9, 9], &[4, 4]).unwrap() + &random::normal(2, &[9, 9], &[4, 4], 0.0, 1.0).unwrap())
            .unwrap(),
        weft_array::arange(0i64, 10i64, 3i64, 4).unwrap(),
        // Transposed generators read the generated position through strides.
        (&random::random(3, &[9, 9], &[4, 4]).unwrap().t() + &random::normal(4, &[9, 9], &[4, 4], 0.0, 1.0).unwrap())
            .unwrap()
            .sum(None)
            .unwrap(),
    ];
    for dtype in DTYPES {
        let y = awkward(dtype);
        for op in [
            BinaryOp::Add,
            BinaryOp::Div,
            BinaryOp::Pow,
            BinaryOp::Maximum,
            BinaryOp::Lt,
            BinaryOp::And,
        ] {
            arrays.extend(x.binary(&y, op).ok());
            arrays.extend(y.binary(&y.t().t(), op).ok());
        }
        for op in [UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Exp, UnaryOp::Not] {
            arrays.extend(y.unary(op).ok());
        }
        for op in [ReduceOp::Sum, ReduceOp::Min, ReduceOp::Std(1), ReduceOp::ArgMax] {
            arrays.push(y.reduce(op, None, 2).unwrap());
        }
        arrays.push(y.reduce(ReduceOp::Max, Some(&[1]), 2).unwrap());
    }
    let mut compiled = 0;
    for a in &arrays {
        for plan in plans(a) {
            let src = source(&plan);
            for arch in [80, 90] {
                let cubin = weft_kernels::nvrtc::compile("array_fused_test", &src, arch, Output::Cubin)
                    .unwrap_or_else(|e| panic!("{e}\n{src}"));
                assert!(cubin.starts_with(b"\x7fELF"), "not a cubin");
                compiled += 1;
            }
        }
    }
    assert!(compiled > 80, "{compiled}");
}

/// The grid plans of an array's fused tasks (inputs as the graph makes them).
fn plans(a: &Array) -> Vec<GridPlan> {
    let graph = a.graph();
    let shapes: std::collections::HashMap<_, _> = graph
        .tasks
        .iter()
        .filter(|t| &*t.op == "array.from_bytes")
        .map(|t| {
            let args: weft_array::create::FromBytes = weft_runtime::ops::decode_args(&t.args).unwrap();
            (t.key.clone(), (args.dtype, args.shape))
        })
        .collect();
    graph
        .tasks
        .iter()
        .filter(|t| &*t.op == "array.fused")
        .filter_map(|t| {
            let args: weft_array::fuse::FusedArgs = weft_runtime::ops::decode_args(&t.args).unwrap();
            let inputs: Option<Vec<_>> = t.deps.iter().map(|d| shapes.get(d).cloned()).collect();
            Some(GridPlan::new(&args, &inputs?, 4).unwrap().0)
        })
        .collect()
}
