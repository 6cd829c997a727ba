//! The devices every computing test runs on: the CPU, an emulated GPU (the
//! generated kernels through the grid emulation), and the first CUDA GPU
//! when this machine has one (otherwise skipped with a printed reason).
//! [`compute`] runs an array on each and checks they agree with the CPU.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::OnceLock;

use weft_array::{Array, HostArray, registry};
use weft_runtime::ops::Site;

/// The GPU sites: an emulated GPU, and a CUDA GPU if there is one.
pub fn gpu_sites() -> &'static [(String, Site)] {
    static SITES: OnceLock<Vec<(String, Site)>> = OnceLock::new();
    SITES.get_or_init(|| {
        weft_gpu::testing::test_gpus("the array tests")
            .into_iter()
            .map(|(name, gpu)| (name, Site::with_gpu(gpu)))
            .collect()
    })
}

/// Whether `x` and `y` agree to 1e-9 relative (NaN with NaN).
pub fn agree(x: f64, y: f64) -> bool {
    x == y || (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())) || (x.is_nan() && y.is_nan())
}

/// The array computed on the CPU, after checking that every GPU site gives
/// the same shape, type and values.
pub fn compute(a: &Array) -> HostArray {
    let registry = registry();
    let cpu = a.compute_local(&registry).unwrap();
    let want = cpu.to_f64();
    for (name, site) in gpu_sites() {
        let got = a
            .compute_on(&registry, site)
            .unwrap_or_else(|e| panic!("on the {name}: {e}"));
        assert_eq!((got.dtype(), &got.shape), (cpu.dtype(), &cpu.shape), "on the {name}");
        for (i, (x, y)) in got.to_f64().iter().zip(&want).enumerate() {
            assert!(
                agree(*x, *y),
                "on the {name}, element {i}: {x} vs {y} on the CPU\n{}",
                a.explain()
            );
        }
    }
    cpu
}
