//! Running a kernel on a GPU: the CPU emulation for emulated devices, NVRTC
//! modules (compiled once per device and source file) for CUDA devices.

use std::collections::HashMap;
use std::ffi::{CString, c_char, c_int, c_void};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaModule, LaunchConfig, PushKernelArg};
use weft_gpu::{Device, DeviceBuffer, Gpu, GpuBackend, Stream};

use crate::KernelError;
use crate::column::Place;
use crate::nvrtc::Output;
use weft_gpu::Buffer;

// SAFETY: the declaration matches `weft_emu_launch` in cuda/emu_runtime.cpp,
// which build.rs compiles and links into this crate.
unsafe extern "C" {
    /// In `cuda/emu_runtime.cpp`: runs kernel `name` over the grid with
    /// `cuLaunchKernel`-style arguments; 0 on success, 1 for an unknown name.
    fn weft_emu_launch(
        name: *const c_char,
        gx: u32,
        gy: u32,
        gz: u32,
        bx: u32,
        by: u32,
        bz: u32,
        args: *mut *mut c_void,
        bytes: *mut u64,
    ) -> c_int;
}

/// One kernel launch, as recorded by [`record_launches`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRecord {
    /// The kernel's name.
    pub kernel: String,
    /// Blocks in the grid.
    pub blocks: u64,
    /// Threads per block.
    pub threads_per_block: u32,
    /// Bytes of global memory the launch read, counted by the CPU emulation
    /// (None on a real GPU, where nothing counts them).
    pub bytes_read: Option<u64>,
    /// Bytes of global memory the launch wrote (likewise).
    pub bytes_written: Option<u64>,
}

thread_local! {
    static LAUNCHES: std::cell::RefCell<Option<Vec<LaunchRecord>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` and returns what it returned with every kernel it launched from
/// this thread, in order: the proof, without a GPU, of how many passes a
/// kernel makes and how many bytes it moves per row. Launches on a
/// synchronous emulated device run at once, so the counts are complete
/// when `f` returns (an asynchronous one records them where its stream is
/// synchronised).
pub fn record_launches<R>(f: impl FnOnce() -> R) -> (R, Vec<LaunchRecord>) {
    let outer = LAUNCHES.with(|l| l.borrow_mut().replace(Vec::new()));
    let r = f();
    let got = LAUNCHES.with(|l| std::mem::replace(&mut *l.borrow_mut(), outer));
    (r, got.unwrap_or_default())
}

fn note_launch(kernel: &str, grid: (u32, u32), block: (u32, u32), bytes: Option<[u64; 2]>) {
    // `try_with`: queued emulated work may run while the thread exits (its
    // stream drained as it drops), after this record is gone.
    let _ = LAUNCHES.try_with(|l| {
        if let Some(log) = l.borrow_mut().as_mut() {
            log.push(LaunchRecord {
                kernel: kernel.to_string(),
                blocks: u64::from(grid.0) * u64::from(grid.1),
                threads_per_block: block.0 * block.1,
                bytes_read: bytes.map(|b| b[0]),
                bytes_written: bytes.map(|b| b[1]),
            });
        }
    });
}

/// Threads per block of every kernel (`WEFT_BLOCK` in common.cuh).
pub(crate) const BLOCK: u32 = 256;

/// A kernel argument. Pointers and integers travel as 64-bit slots; a 32-bit
/// parameter reads the low half, which on little-endian hosts and GPUs is
/// the value itself.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    /// A device pointer (0 for null).
    Ptr(u64),
    /// A 64-bit integer.
    U64(u64),
    /// A 32-bit integer.
    U32(u32),
}

impl Arg {
    fn slot(self) -> u64 {
        match self {
            Arg::Ptr(p) | Arg::U64(p) => p,
            Arg::U32(v) => u64::from(v),
        }
    }
}

/// Pointer argument for a buffer.
pub(crate) fn ptr(b: &DeviceBuffer) -> Arg {
    Arg::Ptr(b.device_ptr())
}

/// Pointer argument for an optional device-side column buffer (null when absent).
pub(crate) fn opt_ptr(d: Option<&Buffer>) -> Result<Arg, KernelError> {
    Ok(Arg::Ptr(match d {
        Some(d) => d.dev()?.device_ptr(),
        None => 0,
    }))
}

/// The arguments of a kernel over two columns that writes `out` (and its
/// validity words, when there are any) for `n` rows: each input's values
/// and validity, the outputs, `n`.
pub(crate) fn binary_args(
    a: &crate::Column,
    b: &crate::Column,
    out: &DeviceBuffer,
    out_valid: Option<&DeviceBuffer>,
    n: usize,
) -> Result<[Arg; 7], KernelError> {
    Ok([
        opt_ptr(Some(a.values()))?,
        opt_ptr(a.validity())?,
        opt_ptr(Some(b.values()))?,
        opt_ptr(b.validity())?,
        ptr(out),
        Arg::Ptr(out_valid.map_or(0, |v| v.device_ptr())),
        Arg::U64(n as u64),
    ])
}

/// Loaded CUDA modules by (device ordinal, what they were built from).
pub(crate) type Modules<K> = Mutex<HashMap<(u32, K), Arc<CudaModule>>>;

/// `$WEFT_CUBIN_DIR/<stem>-<source hash>.sm_<major><minor>.cubin`, as
/// `ci/cuda-check.sh` builds them, when that file exists: SASS for the
/// device's architecture, built from this very source (the hash,
/// [`crate::nvrtc::source_key`]), loads without NVRTC and without JIT.
fn prebuilt_cubin(stem: &str, major: i32, minor: i32) -> Option<Vec<u8>> {
    let dir = std::env::var_os("WEFT_CUBIN_DIR")?;
    let key = crate::nvrtc::source_key(stem)?;
    std::fs::read(std::path::Path::new(&dir).join(format!("{key}.sm_{major}{minor}.cubin"))).ok()
}

fn modules() -> &'static Modules<&'static str> {
    static MODULES: OnceLock<Modules<&'static str>> = OnceLock::new();
    MODULES.get_or_init(Mutex::default)
}

/// One kernel launch on a CUDA device: loads its module once per device
/// and launches it; every driver error names the kernel, the device and
/// the step.
pub(crate) struct CudaLaunch<'a> {
    pub(crate) kernel: &'a str,
    pub(crate) device: Device,
}

impl CudaLaunch<'_> {
    /// The driver error of step `op`.
    fn error(&self, op: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> KernelError + '_ {
        move |source| KernelError::Driver {
            kernel: self.kernel.to_string(),
            device: self.device,
            op,
            source,
        }
    }

    /// The kernel's function from the module `key` names in `cache`,
    /// which `build` makes (given the device's compute capability) the
    /// first time on this device.
    pub(crate) fn function<K: Eq + std::hash::Hash>(
        &self,
        ctx: &Arc<cudarc::driver::CudaContext>,
        cache: &Modules<K>,
        key: K,
        build: impl FnOnce(i32, i32) -> Result<cudarc::nvrtc::Ptx, KernelError>,
    ) -> Result<cudarc::driver::CudaFunction, KernelError> {
        let ordinal = match self.device {
            Device::Cuda(o) => o,
            _ => 0,
        };
        let module = {
            let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
            let key = (ordinal, key);
            match map.get(&key) {
                Some(m) => m.clone(),
                None => {
                    let (major, minor) = ctx.compute_capability().map_err(self.error("query arch"))?;
                    let m = ctx
                        .load_module(build(major, minor)?)
                        .map_err(self.error("load module"))?;
                    map.insert(key, m.clone());
                    m
                }
            }
        };
        module.load_function(self.kernel).map_err(self.error("load function"))
    }

    /// Queues `func` on `stream` over `grid` blocks of `block` threads,
    /// with one 64-bit slot per parameter.
    ///
    /// # Safety
    /// `slots` must match the kernel's parameters, and every buffer they
    /// point to must outlive the launch (until the stream is synchronised).
    pub(crate) unsafe fn launch(
        &self,
        stream: &Arc<cudarc::driver::CudaStream>,
        func: &cudarc::driver::CudaFunction,
        grid: (u32, u32),
        block: (u32, u32),
        slots: &[u64],
    ) -> Result<(), KernelError> {
        let mut builder = stream.launch_builder(func);
        for s in slots {
            builder.arg(s);
        }
        let cfg = LaunchConfig {
            grid_dim: (grid.0, grid.1, 1),
            block_dim: (block.0, block.1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as the caller promises.
        unsafe { builder.launch(cfg) }.map_err(self.error("launch"))?;
        Ok(())
    }
}

/// A device, a stream on it, and the kernels' launch rules.
pub(crate) struct Exec {
    pub(crate) gpu: Arc<Gpu>,
    pub(crate) stream: Stream,
}

impl Exec {
    pub(crate) fn new(gpu: &Arc<Gpu>) -> Result<Self, KernelError> {
        Ok(Exec {
            gpu: gpu.clone(),
            stream: gpu.thread_stream()?,
        })
    }

    pub(crate) fn device(&self) -> Device {
        self.gpu.device()
    }

    /// Device memory for this call's work (see [`weft_gpu::Stream::alloc`]).
    pub(crate) fn alloc(&self, bytes: usize) -> Result<DeviceBuffer, KernelError> {
        Ok(self.stream.alloc(bytes)?)
    }

    pub(crate) fn zeroed(&self, bytes: usize) -> Result<DeviceBuffer, KernelError> {
        let b = self.stream.alloc(bytes)?;
        self.stream.memset_zero(&b, bytes)?;
        Ok(b)
    }

    pub(crate) fn download<T: arrow_buffer::ArrowNativeType>(
        &self,
        b: &DeviceBuffer,
        len: usize,
    ) -> Result<Vec<T>, KernelError> {
        self.download_at(b, 0, len)
    }

    /// Values `first..first + len` of `b` (done when this returns): a
    /// count or an offset read without copying the whole column.
    pub(crate) fn download_at<T: arrow_buffer::ArrowNativeType>(
        &self,
        b: &DeviceBuffer,
        first: usize,
        len: usize,
    ) -> Result<Vec<T>, KernelError> {
        let mut out = vec![T::default(); len];
        let size = std::mem::size_of::<T>();
        // SAFETY: `out` holds `len` plain-old-data values, `len * size` bytes in all.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), len * size) };
        self.stream.copy_d2h_at(b, first * size, dst)?;
        Ok(out)
    }

    /// A device copy of `values` (done when this returns).
    pub(crate) fn upload<T: arrow_buffer::ArrowNativeType>(&self, values: &[T]) -> Result<DeviceBuffer, KernelError> {
        let bytes = std::mem::size_of_val(values);
        // SAFETY: plain-old-data values, `bytes` long in all.
        let src = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), bytes) };
        let b = self.stream.alloc(bytes)?;
        self.stream.copy_h2d(src, &b)?;
        Ok(b)
    }

    /// Blocks for a grid-stride kernel over `items` work items: enough to
    /// cover them, at most what the device holds at once (from its
    /// multiprocessor count and threads per multiprocessor; an emulated
    /// device reports 2 x 512 threads, so 4 blocks, which still exercises
    /// the cross-block paths while keeping CI fast).
    pub(crate) fn grid(&self, items: u64) -> u32 {
        let resident = self.gpu.geometry().resident_blocks(BLOCK);
        items.div_ceil(u64::from(BLOCK)).clamp(1, u64::from(resident)) as u32
    }

    pub(crate) fn launch(
        &self,
        file: &'static str,
        kernel: &str,
        grid: (u32, u32),
        block: (u32, u32),
        args: &[Arg],
    ) -> Result<(), KernelError> {
        let mut slots: Vec<u64> = args.iter().map(|a| a.slot()).collect();
        match self.gpu.backend() {
            GpuBackend::Emulated(_) => {
                let name = CString::new(kernel).map_err(|_| KernelError::NoSuchKernel(kernel.into()))?;
                // In stream order: at once, or when the stream is
                // synchronised on an asynchronous emulated device.
                Ok(self.stream.emulate(move || {
                    let mut ptrs: Vec<*mut c_void> =
                        slots.iter_mut().map(|s| (s as *mut u64).cast::<c_void>()).collect();
                    let mut bytes = [0u64; 2];
                    // SAFETY: every pointer argument is a live allocation of
                    // this emulated device (host memory) sized by the caller
                    // for the kernel, kept until the stream has run this
                    // (stream-ordered frees); `ptrs` points at `slots` and
                    // `bytes` at two u64s, all of which outlive the call,
                    // which runs the whole grid before it returns.
                    let r = unsafe {
                        weft_emu_launch(
                            name.as_ptr(),
                            grid.0,
                            grid.1,
                            1,
                            block.0,
                            block.1,
                            1,
                            ptrs.as_mut_ptr(),
                            bytes.as_mut_ptr(),
                        )
                    };
                    if r != 0 {
                        return Err(format!("no emulated kernel {:?}", name));
                    }
                    note_launch(&name.to_string_lossy(), grid, block, Some(bytes));
                    Ok(())
                })?)
            }
            GpuBackend::Cuda(cuda) => {
                let cuda_launch = CudaLaunch {
                    kernel,
                    device: self.device(),
                };
                let func = cuda_launch.function(cuda.context(), modules(), file, |major, minor| {
                    let cubin = match prebuilt_cubin(file, major, minor) {
                        Some(cubin) => cubin,
                        None => crate::nvrtc::compile_source(file, (major * 10 + minor) as u32, Output::Cubin)?,
                    };
                    Ok(cudarc::nvrtc::Ptx::from_binary(cubin))
                })?;
                let stream = self
                    .stream
                    .cuda_stream()
                    .ok_or(KernelError::NoSuchKernel(kernel.into()))?;
                // SAFETY: the arguments match the kernel's parameters (each
                // caller passes them in the order of the .cu signature), and
                // every buffer they point to stays allocated until the launch
                // has run: the caller drops them on this thread, where the
                // stream keeps them until it is synchronised.
                unsafe { cuda_launch.launch(stream, &func, grid, block, &slots) }?;
                self.stream.mark_pending();
                note_launch(kernel, grid, block, None);
                Ok(())
            }
        }
    }

    /// One-dimensional launch of `kernel` with `grid` blocks.
    pub(crate) fn launch1(&self, file: &'static str, kernel: &str, grid: u32, args: &[Arg]) -> Result<(), KernelError> {
        self.launch(file, kernel, (grid, 1), (BLOCK, 1), args)
    }
}
