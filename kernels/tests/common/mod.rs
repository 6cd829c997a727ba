//! Shared by the kernel tests: the device under test, the macro that runs one
//! test on every device, random inputs, and row-wise comparison of columns.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use weft_gpu::{Device, DeviceConfig, Devices, Gpu};
use weft_kernels::{Column, DType, Native};

/// Where a test runs its kernel.
pub enum Dut {
    /// Host columns, CPU implementations.
    Cpu,
    /// Columns moved to this GPU first.
    Gpu(Arc<Gpu>),
}

impl Dut {
    /// `c` moved to the device under test.
    pub fn put(&self, c: &Column) -> Column {
        match self {
            Dut::Cpu => c.clone(),
            Dut::Gpu(g) => {
                let d = c.to_device(g).unwrap();
                assert_eq!(d.device(), g.device());
                d
            }
        }
    }
}

/// The emulated GPU the tests share.
pub fn emulated() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| Gpu::emulated(0, 512 << 20, true)).clone()
}

/// An emulated GPU whose streams queue kernels until they are synchronised,
/// as a real GPU runs them later: a kernel that reads a result without
/// waiting for it, or reuses memory its queued work still reads, fails here.
pub fn emulated_async() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| Gpu::emulated_asynchronous(1, 512 << 20)).clone()
}

/// The first CUDA GPU, or why there is none.
pub fn cuda() -> Result<Arc<Gpu>, String> {
    let devices = Devices::open(&DeviceConfig::default()).map_err(|e| e.to_string())?;
    devices
        .gpus()
        .iter()
        .find(|g| matches!(g.device(), Device::Cuda(_)))
        .cloned()
        .ok_or_else(|| devices.cuda().reason.clone().unwrap_or_else(|| "no CUDA GPU".into()))
}

/// Generates `cpu`, `emulated`, `emulated_async` and `cuda` tests from
/// `fn name(&Dut)`; the CUDA one prints why it skips when there is no GPU.
#[macro_export]
macro_rules! test_device {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::common::Dut;
            #[test]
            fn cpu() {
                super::$name(&Dut::Cpu)
            }
            #[test]
            fn emulated() {
                super::$name(&Dut::Gpu(super::common::emulated()))
            }
            #[test]
            fn emulated_async() {
                super::$name(&Dut::Gpu(super::common::emulated_async()))
            }
            #[test]
            fn cuda() {
                match super::common::cuda() {
                    Ok(g) => super::$name(&Dut::Gpu(g)),
                    Err(reason) => weft_gpu::testing::skip_without_cuda(concat!(stringify!($name), "::cuda"), &reason),
                }
            }
        }
    )*};
}

/// Sizes around the block size (256) and the emulated grid (4 blocks).
pub const SIZES: &[usize] = &[0, 1, 31, 33, 255, 257, 1000, 2049];

/// How many rows are null.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nulls {
    None,
    Some,
    All,
}
pub const NULLS: &[Nulls] = &[Nulls::None, Nulls::Some, Nulls::All];

/// Random values of a type.
pub trait Random: Native + Copy {
    fn random(rng: &mut fastrand::Rng) -> Self;
}
impl Random for i32 {
    fn random(rng: &mut fastrand::Rng) -> Self {
        // Small values often (equal pairs, zero divisors), extremes sometimes.
        match rng.u8(0..10) {
            0 => rng.i32(..),
            1 => [i32::MIN, i32::MAX, -1, 0][rng.usize(0..4)],
            _ => rng.i32(-20..20),
        }
    }
}
impl Random for i64 {
    fn random(rng: &mut fastrand::Rng) -> Self {
        match rng.u8(0..10) {
            0..=3 => rng.i64(..),
            4 => [i64::MIN, i64::MAX, -1, 0][rng.usize(0..4)],
            _ => rng.i64(-20..20),
        }
    }
}
impl Random for f32 {
    fn random(rng: &mut fastrand::Rng) -> Self {
        (rng.f32() - 0.5) * 200.0
    }
}
impl Random for f64 {
    fn random(rng: &mut fastrand::Rng) -> Self {
        (rng.f64() - 0.5) * 2000.0
    }
}

pub fn random_options<T: Random>(rng: &mut fastrand::Rng, n: usize, nulls: Nulls) -> Vec<Option<T>> {
    (0..n)
        .map(|_| match nulls {
            Nulls::None => Some(T::random(rng)),
            Nulls::Some if rng.u8(0..10) < 3 => None,
            Nulls::Some => Some(T::random(rng)),
            Nulls::All => None,
        })
        .collect()
}

/// A host column; with `Nulls::None` it has no validity bitmap at all.
pub fn column<T: Native>(v: &[Option<T>]) -> Column {
    if v.iter().all(Option::is_some) {
        Column::from_vec(v.iter().map(|x| x.unwrap()).collect())
    } else {
        Column::from_options(v)
    }
}

/// A value of a row, for comparisons across types.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum V {
    I(i64),
    U(u64),
    F(f64),
    B(bool),
}

/// The rows of a column (moved to the host), None for nulls.
pub fn rows(c: &Column) -> Vec<Option<V>> {
    let c = c.to_host().unwrap();
    (0..c.len())
        .map(|i| {
            if !c.is_valid(i).unwrap() {
                return None;
            }
            Some(match c.dtype() {
                DType::I32 => V::I(i64::from(c.host_values::<i32>().unwrap()[i])),
                DType::I64 => V::I(c.host_values::<i64>().unwrap()[i]),
                DType::U32 => V::U(u64::from(c.host_values::<u32>().unwrap()[i])),
                DType::U64 => V::U(c.host_values::<u64>().unwrap()[i]),
                DType::F32 => V::F(f64::from(c.host_values::<f32>().unwrap()[i])),
                DType::F64 => V::F(c.host_values::<f64>().unwrap()[i]),
                DType::Bool => V::B(arrow_buffer::bit_util::get_bit(host_bytes(&c), i)),
                DType::Utf8 => panic!("utf8 rows are not compared"),
            })
        })
        .collect()
}

fn host_bytes(c: &Column) -> &[u8] {
    c.values().as_host().expect("a host column")
}

/// Row-wise equality; floats within `rel` relative error (0: bit-exact, NaN equal).
pub fn assert_rows(what: &str, got: &[Option<V>], want: &[Option<V>], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = match (g, w) {
            (Some(V::F(a)), Some(V::F(b))) => {
                (a.is_nan() && b.is_nan())
                    || a == b
                    || (rel > 0.0 && (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0))
            }
            _ => g == w,
        };
        assert!(ok, "{what}: row {i}: got {g:?}, want {w:?}");
    }
}
