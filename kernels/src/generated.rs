//! Kernels whose CUDA C source is generated at run time (the array's fused
//! elementwise chains): compiled by NVRTC once per device and source text
//! (cubins cached on disk as for the built-in sources), launched on the
//! calling thread's stream. Every parameter is a 64-bit slot (a device
//! pointer or an integer). An emulated device cannot run text it did not
//! see at build time, so a caller that generates source also emulates what
//! it generated there; [`launch_generated`] refuses emulated devices.

use std::sync::{Arc, Mutex, OnceLock};

use weft_gpu::{Gpu, GpuBackend};

use crate::KernelError;
use crate::launch::{CudaLaunch, Modules};
use crate::nvrtc::Output;

/// Loaded modules by (device ordinal, source text).
fn modules() -> &'static Modules<String> {
    static MODULES: OnceLock<Modules<String>> = OnceLock::new();
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
    let cuda_launch = CudaLaunch {
        kernel,
        device: gpu.device(),
    };
    let func = cuda_launch.function(cuda.context(), modules(), source.to_string(), |major, minor| {
        let cubin = crate::nvrtc::compile(name, source, (major * 10 + minor) as u32, Output::Cubin)?;
        Ok(cudarc::nvrtc::Ptx::from_binary(cubin))
    })?;
    let stream = gpu.thread_stream()?;
    let cuda_stream = stream
        .cuda_stream()
        .ok_or_else(|| KernelError::NoSuchKernel(kernel.into()))?;
    // SAFETY: the caller generated `source` and passes one 64-bit slot per
    // parameter of `kernel`, in order; the buffers the pointers name are
    // kept alive by the caller: dropped on this thread (stream-ordered
    // frees) or after the stream is synchronised.
    unsafe { cuda_launch.launch(cuda_stream, &func, (grid.max(1), 1), (block, 1), args) }?;
    stream.mark_pending();
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
