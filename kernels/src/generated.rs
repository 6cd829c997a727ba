//! Kernels whose CUDA C source is generated at run time (the array's fused
//! elementwise chains): compiled by NVRTC once per device and source text
//! (PTX cached on disk as for the built-in sources), launched on the
//! calling thread's stream. Every parameter is a 64-bit slot (a device
//! pointer or an integer). An emulated device cannot run text it did not
//! see at build time, so a caller that generates source also emulates what
//! it generated there; [`launch_generated`] refuses emulated devices.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaModule, LaunchConfig, PushKernelArg};
use weft_gpu::{Device, Gpu, GpuBackend};

use crate::KernelError;

/// Loaded modules by (device ordinal, source text).
type Modules = Mutex<HashMap<(u32, String), Arc<CudaModule>>>;

fn modules() -> &'static Modules {
    static MODULES: OnceLock<Modules> = OnceLock::new();
    MODULES.get_or_init(Mutex::default)
}

/// Launches `kernel` of the generated `source` (named `name` in messages
/// and cache files) on `gpu`'s thread stream over `grid` blocks of `block`
/// threads, with `args` as its 64-bit parameters; returns once queued.
pub fn launch_generated(
    gpu: &Arc<Gpu>,
    name: &str,
    source: &str,
    kernel: &str,
    grid: u32,
    block: u32,
    args: &[u64],
) -> Result<(), KernelError> {
    let GpuBackend::Cuda(cuda) = gpu.backend() else {
        return Err(KernelError::InvalidArgument {
            kernel: "generated",
            reason: format!(
                "{name}: generated source runs on CUDA devices only, not on {}",
                gpu.device()
            ),
        });
    };
    let device = gpu.device();
    let ordinal = match device {
        Device::Cuda(o) => o,
        _ => 0,
    };
    let drv = |op: &'static str| {
        let kernel = kernel.to_string();
        move |source| KernelError::Driver {
            kernel,
            device,
            op,
            source,
        }
    };
    let ctx = cuda.context();
    let module = {
        let mut map = modules().lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&(ordinal, source.to_string())) {
            Some(m) => m.clone(),
            None => {
                let (major, minor) = ctx.compute_capability().map_err(drv("query arch"))?;
                let ptx = crate::nvrtc::compile_text(name, source, (major * 10 + minor) as u32)?;
                let m = ctx
                    .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                    .map_err(drv("load module"))?;
                map.insert((ordinal, source.to_string()), m.clone());
                m
            }
        }
    };
    let func = module.load_function(kernel).map_err(drv("load function"))?;
    let stream = gpu.thread_stream()?;
    let cuda_stream = stream
        .cuda_stream()
        .ok_or_else(|| KernelError::NoSuchKernel(kernel.into()))?;
    let mut builder = cuda_stream.launch_builder(&func);
    for a in args {
        builder.arg(a);
    }
    let cfg = LaunchConfig {
        grid_dim: (grid.max(1), 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the caller generated `source` and passes one 64-bit slot per
    // parameter of `kernel`, in order; the buffers the pointers name are
    // kept alive by the caller until it has synchronised the stream.
    unsafe { builder.launch(cfg) }.map_err(drv("launch"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulated_devices_are_refused_with_the_reason() {
        let gpu = Gpu::emulated(0, 1 << 20, true);
        let err = launch_generated(&gpu, "k", "extern \"C\" __global__ void k() {}", "k", 1, 1, &[]).unwrap_err();
        assert!(err.to_string().contains("CUDA devices only"), "{err}");
    }
}
