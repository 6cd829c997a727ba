//! Every kernel on every device: the CPU implementation against a plain
//! reference, and the device result (emulated or real GPU) against the CPU
//! implementation, on random inputs of awkward sizes, without nulls, with
//! some nulls and with only nulls.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Dut, NULLS, Nulls, Random, SIZES, V, assert_rows, column, random_options, rows};
use weft_kernels::elementwise::{BinaryOp, CmpOp, UnaryOp, binary, compare, unary};
use weft_kernels::reduce::{AxisOp, Scalar, reduce, reduce_axis};
use weft_kernels::{Column, DType, filter, gemm, hash, sort, take};

fn rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(0x5eed)
}

fn wrap<T: Into<Wide>>(v: T) -> V {
    match v.into() {
        Wide::I(x) => V::I(x),
        Wide::F(x) => V::F(x),
    }
}

enum Wide {
    I(i64),
    F(f64),
}
impl From<i32> for Wide {
    fn from(v: i32) -> Self {
        Wide::I(i64::from(v))
    }
}
impl From<i64> for Wide {
    fn from(v: i64) -> Self {
        Wide::I(v)
    }
}
impl From<f32> for Wide {
    fn from(v: f32) -> Self {
        Wide::F(f64::from(v))
    }
}
impl From<f64> for Wide {
    fn from(v: f64) -> Self {
        Wide::F(v)
    }
}

/// Runs `kernel` on the CPU and on `d`; checks CPU against `want` and the
/// device against the CPU.
fn check(d: &Dut, what: &str, inputs: &[&Column], kernel: impl Fn(&[Column]) -> Column, want: &[Option<V>], rel: f64) {
    let host: Vec<Column> = inputs.iter().map(|c| (*c).clone()).collect();
    let cpu = rows(&kernel(&host));
    assert_rows(&format!("{what} cpu vs reference"), &cpu, want, rel);
    let dev_in: Vec<Column> = inputs.iter().map(|c| d.put(c)).collect();
    let out = kernel(&dev_in);
    if let Dut::Gpu(g) = d {
        assert_eq!(out.device(), g.device(), "{what}: result stays on the device");
    }
    assert_rows(&format!("{what} device vs cpu"), &rows(&out), &cpu, rel);
}

trait Num: Random + Into<Wide> + PartialOrd {
    fn ref_binary(a: Self, b: Self, op: BinaryOp) -> Option<Self>;
    fn ref_unary(a: Self, op: UnaryOp) -> Option<Self>;
}
macro_rules! int_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            fn ref_binary(a: Self, b: Self, op: BinaryOp) -> Option<Self> {
                match op {
                    BinaryOp::Add => Some(a.wrapping_add(b)),
                    BinaryOp::Sub => Some(a.wrapping_sub(b)),
                    BinaryOp::Mul => Some(a.wrapping_mul(b)),
                    BinaryOp::Div => a.checked_div(b).or_else(|| (b == -1).then(|| a.wrapping_neg())),
                    BinaryOp::Rem => a.checked_rem(b).or_else(|| (b == -1).then_some(0)),
                    BinaryOp::Min => Some(if b < a { b } else { a }),
                    BinaryOp::Max => Some(if b > a { b } else { a }),
                }
            }
            fn ref_unary(a: Self, op: UnaryOp) -> Option<Self> {
                match op {
                    UnaryOp::Neg => Some(a.wrapping_neg()),
                    UnaryOp::Abs => Some(if a < 0 { a.wrapping_neg() } else { a }),
                    UnaryOp::Sqrt => None,
                }
            }
        }
    )*};
}
int_num!(i32, i64);
macro_rules! float_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            fn ref_binary(a: Self, b: Self, op: BinaryOp) -> Option<Self> {
                Some(match op {
                    BinaryOp::Add => a + b,
                    BinaryOp::Sub => a - b,
                    BinaryOp::Mul => a * b,
                    BinaryOp::Div => a / b,
                    BinaryOp::Rem => a % b,
                    BinaryOp::Min => a.min(b),
                    BinaryOp::Max => a.max(b),
                })
            }
            fn ref_unary(a: Self, op: UnaryOp) -> Option<Self> {
                Some(match op {
                    UnaryOp::Neg => -a,
                    UnaryOp::Abs => a.abs(),
                    UnaryOp::Sqrt => a.sqrt(),
                })
            }
        }
    )*};
}
float_num!(f32, f64);

const BINARY: [BinaryOp; 7] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Rem,
    BinaryOp::Min,
    BinaryOp::Max,
];
const CMP: [CmpOp; 6] = [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge];

fn elementwise_case<T: Num>(d: &Dut, a: &[Option<T>], b: &[Option<T>]) {
    let n = a.len();
    let (ca, cb) = (column(a), column(b));
    for op in BINARY {
        let want: Vec<Option<V>> = a
            .iter()
            .zip(b)
            .map(|(x, y)| x.zip(*y).and_then(|(x, y)| T::ref_binary(x, y, op)).map(wrap))
            .collect();
        check(
            d,
            &format!("{op:?} {:?} n={n}", T::DTYPE),
            &[&ca, &cb],
            |c| binary(&c[0], &c[1], op).unwrap(),
            &want,
            0.0,
        );
    }
    for op in CMP {
        let want: Vec<Option<V>> = a
            .iter()
            .zip(b)
            .map(|(x, y)| x.zip(*y).map(|(x, y)| V::B(op.apply(x, y))))
            .collect();
        check(
            d,
            &format!("{op:?} {:?} n={n}", T::DTYPE),
            &[&ca, &cb],
            |c| compare(&c[0], &c[1], op).unwrap(),
            &want,
            0.0,
        );
    }
    for op in [UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Sqrt] {
        if T::ref_unary(T::default(), op).is_none() {
            assert!(unary(&d.put(&ca), op).is_err(), "{op:?} on {:?} is refused", T::DTYPE);
            continue;
        }
        let want: Vec<Option<V>> = a
            .iter()
            .map(|x| x.and_then(|x| T::ref_unary(x, op)).map(wrap))
            .collect();
        check(
            d,
            &format!("{op:?} {:?} n={n}", T::DTYPE),
            &[&ca],
            |c| unary(&c[0], op).unwrap(),
            &want,
            0.0,
        );
    }
}

fn elementwise_for<T: Num>(d: &Dut) {
    let mut rng = rng();
    for &n in SIZES {
        for &nulls in NULLS {
            let a = random_options::<T>(&mut rng, n, nulls);
            let b = random_options::<T>(&mut rng, n, Nulls::Some);
            elementwise_case(d, &a, &b);
        }
    }
}

fn elementwise(d: &Dut) {
    elementwise_for::<i32>(d);
    elementwise_for::<i64>(d);
    elementwise_for::<f32>(d);
    elementwise_for::<f64>(d);
}

fn reductions_case<T: Num>(d: &Dut, a: &[Option<T>]) {
    let n = a.len();
    let c = column(a);
    let valid: Vec<V> = a.iter().flatten().map(|v| wrap(*v)).collect();
    let (count, sum, min, max) = valid
        .iter()
        .fold((0u64, None::<V>, None::<V>, None::<V>), |(c, s, lo, hi), v| {
            let add = |x: Option<V>| match (x, v) {
                (None, v) => *v,
                (Some(V::I(a)), V::I(b)) => V::I(a.wrapping_add(*b)),
                (Some(V::F(a)), V::F(b)) => V::F(a + b),
                _ => unreachable!(),
            };
            let pick = |x: Option<V>, less: bool| match (x, v) {
                (None, v) => *v,
                (Some(V::I(a)), V::I(b)) => V::I(if less { a.min(*b) } else { a.max(*b) }),
                (Some(V::F(a)), V::F(b)) => V::F(if less { a.min(*b) } else { a.max(*b) }),
                _ => unreachable!(),
            };
            (c + 1, Some(add(s)), Some(pick(lo, true)), Some(pick(hi, false)))
        });
    let what = format!("reduce {:?} n={n}", T::DTYPE);
    let to_v = |s: Scalar| match s {
        Scalar::Int(v) => V::I(v),
        Scalar::Float(v) => V::F(v),
    };
    let zero = wrap(T::default());
    let want = vec![Some(V::U(count)), Some(sum.unwrap_or(zero)), min, max];
    let summary = |c: &Column| {
        let s = reduce(c).unwrap();
        let mean_ok = match s.mean() {
            None => s.count == 0,
            Some(m) => (m - s.sum.as_f64() / s.count as f64).abs() < 1e-9 * m.abs().max(1.0),
        };
        assert!(mean_ok, "{what}: mean");
        vec![Some(V::U(s.count)), Some(to_v(s.sum)), s.min.map(to_v), s.max.map(to_v)]
    };
    let cpu = summary(&c);
    assert_rows(&format!("{what} cpu vs reference"), &cpu, &want, 1e-9);
    assert_rows(&format!("{what} device vs cpu"), &summary(&d.put(&c)), &cpu, 1e-9);
    if c.validity().is_none() {
        let s = weft_kernels::reduce::sum(&d.put(&c)).unwrap();
        assert_rows(&format!("{what} sum"), &[Some(to_v(s))], &want[1..2], 1e-9);
    }
}

fn reductions_for<T: Num>(d: &Dut) {
    let mut rng = rng();
    for &n in SIZES {
        for &nulls in NULLS {
            reductions_case(d, &random_options::<T>(&mut rng, n, nulls));
        }
    }
}

fn reductions(d: &Dut) {
    reductions_for::<i32>(d);
    reductions_for::<i64>(d);
    reductions_for::<f32>(d);
    reductions_for::<f64>(d);
}

fn axis_for<T: Num>(d: &Dut) {
    let mut rng = rng();
    for (rows_n, cols_n) in [(0, 3), (1, 1), (7, 300), (300, 7), (33, 65)] {
        let a: Vec<T> = (0..rows_n * cols_n).map(|_| T::random(&mut rng)).collect();
        axis_case(d, rows_n, cols_n, &a);
    }
}

fn axis_case<T: Num>(d: &Dut, rows_n: usize, cols_n: usize, a: &[T]) {
    {
        let c = Column::from_vec(a.to_vec());
        for axis in [0, 1] {
            for op in [AxisOp::Sum, AxisOp::Min, AxisOp::Max, AxisOp::Mean] {
                let (outputs, len) = if axis == 0 { (cols_n, rows_n) } else { (rows_n, cols_n) };
                let want: Vec<Option<V>> = (0..outputs)
                    .map(|j| {
                        let line = (0..len).map(|i| {
                            if axis == 0 {
                                a[i * cols_n + j]
                            } else {
                                a[j * cols_n + i]
                            }
                        });
                        let vals: Vec<V> = line.map(wrap).collect();
                        let r = match (op, T::DTYPE) {
                            (AxisOp::Mean, _) | (_, DType::F32 | DType::F64) => {
                                let f = vals.iter().map(|v| {
                                    if let V::F(x) = v {
                                        *x
                                    } else if let V::I(x) = v {
                                        *x as f64
                                    } else {
                                        0.0
                                    }
                                });
                                let folded = match op {
                                    AxisOp::Min => f.fold(f64::INFINITY, f64::min),
                                    AxisOp::Max => f.fold(f64::NEG_INFINITY, f64::max),
                                    _ => f.sum::<f64>(),
                                };
                                if op == AxisOp::Mean && matches!(T::DTYPE, DType::I32 | DType::I64) {
                                    let s = vals
                                        .iter()
                                        .fold(0i64, |s, v| if let V::I(x) = v { s.wrapping_add(*x) } else { s });
                                    V::F(s as f64 / len as f64)
                                } else if op == AxisOp::Mean {
                                    V::F(folded / len as f64)
                                } else {
                                    V::F(folded)
                                }
                            }
                            _ => {
                                let i = vals.iter().map(|v| if let V::I(x) = v { *x } else { 0 });
                                V::I(match op {
                                    AxisOp::Min => i.fold(i64::MAX, i64::min),
                                    AxisOp::Max => i.fold(i64::MIN, i64::max),
                                    _ => i.fold(0i64, i64::wrapping_add),
                                })
                            }
                        };
                        Some(r)
                    })
                    .collect();
                let what = format!("reduce_axis {:?} {rows_n}x{cols_n} axis {axis} {op:?}", T::DTYPE);
                // Lines are summed in order on both sides; the reference's
                // float sum may associate differently, hence the tolerance
                // against it but bit equality between devices.
                let cpu = rows(&reduce_axis(&c, rows_n, cols_n, axis, op).unwrap());
                assert_rows(&format!("{what} cpu vs reference"), &cpu, &want, 1e-9);
                let dev = rows(&reduce_axis(&d.put(&c), rows_n, cols_n, axis, op).unwrap());
                assert_rows(&format!("{what} device vs cpu"), &dev, &cpu, 0.0);
            }
        }
    }
}

fn reduce_along_axis(d: &Dut) {
    axis_for::<i32>(d);
    axis_for::<i64>(d);
    axis_for::<f32>(d);
    axis_for::<f64>(d);
}

/// An independent byte-wise rendering of the hash in common.cuh.
fn reference_hash_bytes(p: &[u8], seed: u64) -> u64 {
    const G: u64 = 0x9E37_79B9_7F4A_7C15;
    let len = p.len() as u64;
    let mut h = seed.wrapping_mul(G) ^ len.wrapping_mul(0xff51_afd7_ed55_8ccd);
    let mut i = 0;
    while i < p.len() {
        let mut chunk = 0u64;
        for b in (i..(i + 8).min(p.len())).rev() {
            chunk = (chunk << 8) | u64::from(p[b]);
        }
        h = (h ^ hash::fmix64(chunk)).wrapping_mul(G);
        h ^= h >> 29;
        i += 8;
    }
    hash::fmix64(h ^ len)
}

fn random_strings(rng: &mut fastrand::Rng, n: usize, nulls: Nulls) -> Vec<Option<String>> {
    random_options::<i32>(rng, n, nulls)
        .into_iter()
        .map(|v| v.map(|_| (0..rng.usize(0..20)).map(|_| rng.alphanumeric()).collect()))
        .collect()
}

fn hash_case(d: &Dut, ints: &[Option<i64>], strings: &[Option<String>], seed: u64) {
    let n = ints.len();
    let want: Vec<Option<V>> = ints
        .iter()
        .map(|v| Some(V::U(v.map_or(hash::hash_null(seed), |x| hash::hash_i64(x, seed)))))
        .collect();
    check(
        d,
        &format!("hash i64 n={n}"),
        &[&column(ints)],
        |c| hash::hash(&c[0], seed).unwrap(),
        &want,
        0.0,
    );
    let arr = arrow_array::StringArray::from(strings.to_vec());
    let col = Column::from_arrow(&arr).unwrap();
    let want: Vec<Option<V>> = strings
        .iter()
        .map(|s| {
            Some(V::U(s.as_ref().map_or(hash::hash_null(seed), |s| {
                reference_hash_bytes(s.as_bytes(), seed)
            })))
        })
        .collect();
    check(
        d,
        &format!("hash utf8 n={}", strings.len()),
        &[&col],
        |c| hash::hash(&c[0], seed).unwrap(),
        &want,
        0.0,
    );
}

fn hashing(d: &Dut) {
    let mut rng = rng();
    for &n in SIZES {
        for &nulls in NULLS {
            for seed in [0u64, 42] {
                let ints = random_options::<i64>(&mut rng, n, nulls);
                let strings = random_strings(&mut rng, n, nulls);
                hash_case(d, &ints, &strings, seed);
            }
        }
    }
}

fn partition_case(d: &Dut, ints: &[Option<i64>], parts: u32) {
    let n = ints.len();
    let col = column(ints);
    let hashes: Vec<u64> = ints
        .iter()
        .map(|v| v.map_or(hash::hash_null(9), |x| hash::hash_i64(x, 9)))
        .collect();
    let ids: Vec<u32> = hashes.iter().map(|h| hash::bucket(*h, parts)).collect();
    let mut rows_want: Vec<u32> = (0..n as u32).collect();
    rows_want.sort_by_key(|r| ids[*r as usize]);
    let offsets: Vec<u32> = (0..=parts)
        .map(|p| ids.iter().filter(|i| **i < p).count() as u32)
        .collect();
    let u = |v: &[u32]| v.iter().map(|x| Some(V::U(u64::from(*x)))).collect::<Vec<_>>();
    let what = format!("hash_partition n={n} parts={parts}");
    let run = |c: &Column| {
        let p = hash::hash_partition(c, parts, 9).unwrap();
        (rows(&p.ids), rows(&p.offsets), rows(&p.rows))
    };
    let cpu = run(&col);
    assert_eq!(cpu, (u(&ids), u(&offsets), u(&rows_want)), "{what} cpu vs reference");
    assert_eq!(run(&d.put(&col)), cpu, "{what} device vs cpu");
}

fn partitioning(d: &Dut) {
    let mut rng = rng();
    for &n in SIZES {
        for &nulls in NULLS {
            // 1000 parts take two passes (low byte, high byte of the id).
            for parts in [1u32, 7, 64, 1000] {
                partition_case(d, &random_options::<i64>(&mut rng, n, nulls), parts);
            }
        }
    }
    assert!(hash::hash_partition(&Column::from_vec(vec![1i64]), 0, 0).is_err());
}

fn take_case<T: Num>(d: &Dut, vals: &[Option<T>], idx: &[u32]) {
    let want: Vec<Option<V>> = idx.iter().map(|i| vals[*i as usize].map(wrap)).collect();
    let (cv, ci) = (column(vals), Column::from_vec(idx.to_vec()));
    check(
        d,
        &format!("take {:?} n={}", T::DTYPE, vals.len()),
        &[&cv, &ci],
        |c| take::take(&c[0], &c[1]).unwrap(),
        &want,
        0.0,
    );
}

fn gather(d: &Dut) {
    let mut rng = rng();
    for &n in SIZES {
        for &nulls in NULLS {
            let m = if n == 0 { 0 } else { n + 5 };
            let idx: Vec<u32> = (0..m).map(|_| rng.u32(0..n.max(1) as u32)).collect();
            take_case(d, &random_options::<f64>(&mut rng, n, nulls), &idx);
            take_case(d, &random_options::<i32>(&mut rng, n, nulls), &idx);
            take_case(d, &random_options::<i64>(&mut rng, n, nulls), &idx);
            take_case(d, &random_options::<f32>(&mut rng, n, nulls), &idx);
        }
    }
    let x = d.put(&Column::from_vec(vec![1i64, 2, 3]));
    let bad = d.put(&Column::from_vec(vec![0u32, 3]));
    assert!(matches!(
        take::take(&x, &bad),
        Err(weft_kernels::KernelError::IndexOutOfBounds { len: 3 })
    ));
}

fn filter_case<T: Num>(d: &Dut, vals: &[Option<T>], mask: &[Option<bool>]) {
    let want: Vec<Option<V>> = vals
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m == Some(true))
        .map(|(v, _)| v.map(wrap))
        .collect();
    let cm = Column::from_arrow(&arrow_array::BooleanArray::from(mask.to_vec())).unwrap();
    check(
        d,
        &format!("filter {:?} n={}", T::DTYPE, vals.len()),
        &[&column(vals), &cm],
        |c| filter::filter(&c[0], &c[1]).unwrap(),
        &want,
        0.0,
    );
}

fn filtering(d: &Dut) {
    let mut rng = rng();
    for &n in SIZES {
        for &nulls in NULLS {
            for density in [0u8, 3, 10] {
                let mask: Vec<Option<bool>> = (0..n)
                    .map(|_| {
                        if rng.u8(0..10) == 0 {
                            None
                        } else {
                            Some(rng.u8(0..10) < density)
                        }
                    })
                    .collect();
                filter_case(d, &random_options::<i64>(&mut rng, n, nulls), &mask);
                if density == 3 {
                    filter_case(d, &random_options::<i32>(&mut rng, n, nulls), &mask);
                    filter_case(d, &random_options::<f32>(&mut rng, n, nulls), &mask);
                    filter_case(d, &random_options::<f64>(&mut rng, n, nulls), &mask);
                }
            }
        }
    }
    // Past 4 blocks x 256 words x 32 rows, each block walks several tiles.
    let n = 33_000;
    let mask: Vec<Option<bool>> = (0..n).map(|_| (rng.u8(0..10) != 0).then(|| rng.bool())).collect();
    filter_case(d, &random_options::<i64>(&mut rng, n, Nulls::Some), &mask);
}

fn sort_i64_case(d: &Dut, ints: &[Option<i64>]) {
    let n = ints.len();
    let mut want: Vec<u32> = (0..n as u32).collect();
    want.sort_by(|a, b| match (ints[*a as usize], ints[*b as usize]) {
        (Some(x), Some(y)) => x.cmp(&y),
        (x, y) => x.is_none().cmp(&y.is_none()),
    });
    let want_v: Vec<Option<V>> = want.iter().map(|i| Some(V::U(u64::from(*i)))).collect();
    check(
        d,
        &format!("argsort i64 n={n}"),
        &[&column(ints)],
        |c| sort::argsort(&c[0]).unwrap(),
        &want_v,
        0.0,
    );
}

fn sort_f64_case(d: &Dut, floats: &[Option<f64>]) {
    let n = floats.len();
    let mut want: Vec<u32> = (0..n as u32).collect();
    want.sort_by(|a, b| match (floats[*a as usize], floats[*b as usize]) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (x, y) => x.is_none().cmp(&y.is_none()),
    });
    let want_v: Vec<Option<V>> = want.iter().map(|i| Some(V::U(u64::from(*i)))).collect();
    check(
        d,
        &format!("argsort f64 n={n}"),
        &[&column(floats)],
        |c| sort::argsort(&c[0]).unwrap(),
        &want_v,
        0.0,
    );
}

fn sorting(d: &Dut) {
    let mut rng = rng();
    for &n in SIZES {
        for &nulls in NULLS {
            sort_i64_case(d, &random_options::<i64>(&mut rng, n, nulls));
            let mut floats = random_options::<f64>(&mut rng, n, nulls);
            for (i, f) in floats.iter_mut().enumerate() {
                // Ties, signed zeros, infinities and NaNs.
                if let Some(v) = f {
                    *v = match i % 9 {
                        0 => 1.5,
                        1 => -0.0,
                        2 => 0.0,
                        3 => f64::NEG_INFINITY,
                        4 if i % 2 == 0 => f64::NAN,
                        5 if i % 2 == 1 => -f64::NAN,
                        _ => *v,
                    };
                }
            }
            sort_f64_case(d, &floats);
        }
    }
    // Past 8192 rows the emulation runs the GPU's tile of 4096 rows too.
    sort_i64_case(d, &random_options::<i64>(&mut rng, 20_000, Nulls::Some));
    let mut floats = random_options::<f64>(&mut rng, 9000, Nulls::None);
    floats[17] = Some(f64::NAN);
    floats[4000] = Some(-0.0);
    sort_f64_case(d, &floats);
    // Keys in [0, 1000): six of eight digit positions are skipped.
    let narrow: Vec<Option<i64>> = (0..3000).map(|i| Some(i * 7919 % 1000)).collect();
    sort_i64_case(d, &narrow);
    // One key everywhere: no digit pass at all; with nulls, only theirs.
    sort_i64_case(d, &vec![Some(42); 1000]);
    sort_i64_case(d, &(0..1000).map(|i| (i % 3 != 0).then_some(-7)).collect::<Vec<_>>());
}

fn matmul(d: &Dut) {
    let mut rng = rng();
    // k = 0 is an empty sum: zeros (cuBLAS itself refuses its leading dimension).
    for (m, k, n) in [(1, 1, 1), (17, 33, 5), (40, 1, 70), (0, 4, 3), (5, 0, 3), (64, 64, 64)] {
        let a: Vec<f64> = (0..m * k).map(|_| rng.f64() - 0.5).collect();
        let b: Vec<f64> = (0..k * n).map(|_| rng.f64() - 0.5).collect();
        gemm_case(d, m, k, n, &a, &b);
    }
}

fn gemm_case(d: &Dut, m: usize, k: usize, n: usize, a: &[f64], b: &[f64]) {
    {
        let want: Vec<Option<V>> = (0..m * n)
            .map(|ij| Some(V::F((0..k).map(|p| a[(ij / n) * k + p] * b[p * n + ij % n]).sum())))
            .collect();
        let (ca, cb) = (Column::from_vec(a.to_vec()), Column::from_vec(b.to_vec()));
        check(
            d,
            &format!("gemm f64 {m}x{k}x{n}"),
            &[&ca, &cb],
            |c| gemm::gemm(&c[0], &c[1], m, k, n).unwrap(),
            &want,
            1e-12,
        );
        let af: Vec<f32> = a.iter().map(|x| *x as f32).collect();
        let bf: Vec<f32> = b.iter().map(|x| *x as f32).collect();
        let want: Vec<Option<V>> = (0..m * n)
            .map(|ij| {
                Some(V::F(f64::from(
                    (0..k).map(|p| af[(ij / n) * k + p] * bf[p * n + ij % n]).sum::<f32>(),
                )))
            })
            .collect();
        let (ca, cb) = (Column::from_vec(af), Column::from_vec(bf));
        check(
            d,
            &format!("gemm f32 {m}x{k}x{n}"),
            &[&ca, &cb],
            |c| gemm::gemm(&c[0], &c[1], m, k, n).unwrap(),
            &want,
            1e-4,
        );
    }
}

test_device!(
    elementwise,
    reductions,
    reduce_along_axis,
    hashing,
    partitioning,
    gather,
    filtering,
    sorting,
    matmul
);

/// Property tests: every CPU kernel against the plain references above.
mod props {
    use super::*;
    use proptest::collection::vec;
    use proptest::option::of;
    use proptest::prelude::*;

    fn cfg() -> ProptestConfig {
        ProptestConfig {
            cases: 48,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(cfg())]

        #[test]
        fn elementwise_i64(a in vec(of(any::<i64>()), 0..80), b in vec(of(-3i64..3), 80)) {
            elementwise_case(&Dut::Cpu, &a, &b[..a.len()]);
        }

        #[test]
        fn elementwise_i32(a in vec(of(any::<i32>()), 0..80), b in vec(of(-3i32..3), 80)) {
            elementwise_case(&Dut::Cpu, &a, &b[..a.len()]);
        }

        #[test]
        fn elementwise_f64(a in vec(of(-1e6f64..1e6), 0..80), b in vec(of(-1e6f64..1e6), 80)) {
            elementwise_case(&Dut::Cpu, &a, &b[..a.len()]);
        }

        #[test]
        fn elementwise_f32(a in vec(of(-1e3f32..1e3), 0..80), b in vec(of(-1e3f32..1e3), 80)) {
            elementwise_case(&Dut::Cpu, &a, &b[..a.len()]);
        }

        #[test]
        fn reductions_all_types(a in vec(of(any::<i64>()), 0..200), f in vec(of(-1e9f64..1e9), 0..200),
                                i in vec(of(any::<i32>()), 0..200), g in vec(of(-1e3f32..1e3), 0..200)) {
            reductions_case(&Dut::Cpu, &a);
            reductions_case(&Dut::Cpu, &f);
            reductions_case(&Dut::Cpu, &i);
            reductions_case(&Dut::Cpu, &g);
        }

        #[test]
        fn hashes(ints in vec(of(any::<i64>()), 0..100), strings in vec(of("\\PC{0,24}"), 0..100), seed in any::<u64>()) {
            hash_case(&Dut::Cpu, &ints, &strings, seed);
        }

        #[test]
        fn partitions(ints in vec(of(any::<i64>()), 0..200), parts in 1u32..100) {
            partition_case(&Dut::Cpu, &ints, parts);
        }

        #[test]
        fn takes(vals in vec(of(any::<i64>()), 1..100), picks in vec(any::<prop::sample::Index>(), 0..150)) {
            let idx: Vec<u32> = picks.iter().map(|p| p.index(vals.len()) as u32).collect();
            take_case(&Dut::Cpu, &vals, &idx);
        }

        #[test]
        fn filters(vals in vec(of(any::<i32>()), 0..200), mask in vec(of(any::<bool>()), 200)) {
            filter_case(&Dut::Cpu, &vals, &mask[..vals.len()]);
        }

        #[test]
        fn axis_reductions((rows, cols, a) in (0usize..20, 0usize..20).prop_flat_map(|(r, c)| (Just(r), Just(c), vec(-1e6f64..1e6, r * c))),
                           ints in vec(any::<i32>(), 0..60)) {
            axis_case(&Dut::Cpu, rows, cols, &a);
            axis_case(&Dut::Cpu, ints.len() / 6, 6, &ints[..ints.len() / 6 * 6]);
        }

        #[test]
        fn matrix_products((m, k, n, a, b) in (0usize..12, 0usize..12, 0usize..12).prop_flat_map(|(m, k, n)| {
            (Just(m), Just(k), Just(n), vec(-10f64..10.0, m * k), vec(-10f64..10.0, k * n))
        })) {
            gemm_case(&Dut::Cpu, m, k, n, &a, &b);
        }

        #[test]
        fn sorts_i64(ints in vec(of(any::<i64>()), 0..300)) {
            sort_i64_case(&Dut::Cpu, &ints);
        }

        #[test]
        fn sorts_f64(bits in vec(of(any::<u64>()), 0..300)) {
            // Raw bit patterns: every NaN, infinity, subnormal and zero.
            let floats: Vec<Option<f64>> = bits.iter().map(|b| b.map(f64::from_bits)).collect();
            sort_f64_case(&Dut::Cpu, &floats);
        }
    }
}
