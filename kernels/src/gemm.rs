//! GEMM: `C = A * B` for row-major f32/f64 matrices without nulls. CPU:
//! the `gemm` crate (threaded, AVX-512 where the CPU has it). CUDA: cuBLAS. Emulated GPUs: the tiled
//! kernel in `gemm.cu`.

use cudarc::cublas::{result as blas, sys as blas_sys};
use weft_gpu::Buffer;
use weft_gpu::{DeviceBuffer, GpuBackend};

use crate::column::{Native, Place};
use crate::dispatch::{Target, target};
use crate::launch::{Arg, Exec, ptr};
use crate::{Column, DType, KernelError};

/// Multiplies `a` (`m x k`) by `b` (`k x n`), both row-major, into an
/// `m x n` row-major column of the same type.
pub fn gemm(a: &Column, b: &Column, m: usize, k: usize, n: usize) -> Result<Column, KernelError> {
    let bad = |reason: String| KernelError::InvalidArgument { kernel: "gemm", reason };
    if a.dtype() != b.dtype() || !matches!(a.dtype(), DType::F32 | DType::F64) {
        return Err(KernelError::UnsupportedType {
            kernel: "gemm",
            dtype: b.dtype(),
        });
    }
    if a.len() != m * k || b.len() != k * n {
        return Err(bad(format!("{} and {} values for {m}x{k} * {k}x{n}", a.len(), b.len())));
    }
    if a.validity().is_some() || b.validity().is_some() {
        return Err(bad("matrices have no nulls".into()));
    }
    let f64s = a.dtype() == DType::F64;
    match target("gemm", &[a, b])? {
        Target::Cpu => {
            let values = if f64s {
                cpu_gemm(a, b, m, k, n, 1.0f64)?
            } else {
                cpu_gemm(a, b, m, k, n, 1.0f32)?
            };
            Column::new(a.dtype(), m * n, values, None, None)
        }
        Target::Gpu(exec) => {
            let width = if f64s { 8 } else { 4 };
            let c = exec.alloc(m * n * width)?;
            let (da, db) = (a.values().dev()?, b.values().dev()?);
            match exec.gpu.backend() {
                GpuBackend::Emulated(_) => {
                    exec.launch(
                        "gemm",
                        if f64s { "gemm_f64" } else { "gemm_f32" },
                        ((n.div_ceil(16)).max(1) as u32, (m.div_ceil(16)).max(1) as u32),
                        (16, 16),
                        &[
                            ptr(da),
                            ptr(db),
                            ptr(&c),
                            Arg::U64(m as u64),
                            Arg::U64(n as u64),
                            Arg::U64(k as u64),
                        ],
                    )?;
                }
                GpuBackend::Cuda(_) => cublas_gemm(&exec, f64s, da, db, &c, m, k, n)?,
            }
            Column::new(a.dtype(), m * n, Buffer::device(c), None, None)
        }
    }
}

/// `a * b` on the CPU, into a new buffer, on all cores (`one` is 1 of `T`).
fn cpu_gemm<T: Native + Default>(
    a: &Column,
    b: &Column,
    m: usize,
    k: usize,
    n: usize,
    one: T,
) -> Result<Buffer, KernelError> {
    let mut c = vec![T::default(); m * n];
    let (x, y) = (a.host_values::<T>()?, b.host_values::<T>()?);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let (k_, n_) = (k as isize, n as isize);
    // SAFETY: the length checks in `gemm` make x m*k and y k*n, row-major
    // (row stride k and n, column stride 1); c is m*n and freshly
    // allocated, so it aliases neither. With `read_dst` false, c is only
    // written: c = 1 * x * y.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n_,
            false,
            x.as_ptr(),
            1,
            k_,
            y.as_ptr(),
            1,
            n_,
            T::default(),
            one,
            false,
            false,
            false,
            ::gemm::Parallelism::Rayon(threads),
        )
    };
    Ok(Buffer::from_vec(c))
}

#[allow(clippy::too_many_arguments)]
fn cublas_gemm(
    exec: &Exec,
    f64s: bool,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    c: &DeviceBuffer,
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), KernelError> {
    let device = exec.device();
    let fail = |reason: String| KernelError::Cublas { device, reason };
    // SAFETY: only tries to dlopen libcublas by its usual names.
    if !unsafe { blas_sys::is_culib_present() } {
        return Err(fail("cuBLAS library (libcublas.so) not found".into()));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let dim = |v: usize| i32::try_from(v).map_err(|_| fail(format!("dimension {v} too large")));
    let (mi, ki, ni) = (dim(m)?, dim(k)?, dim(n)?);
    let stream = exec
        .stream
        .cuda_stream()
        .ok_or_else(|| fail("not a CUDA stream".into()))?;
    stream
        .context()
        .bind_to_thread()
        .map_err(|e| fail(format!("bind context: {e}")))?;
    let handle = blas::create_handle().map_err(|e| fail(format!("create handle: {e:?}")))?;
    // Row-major C = A B is column-major C^T = B^T A^T: swap the operands.
    let op = blas_sys::cublasOperation_t::CUBLAS_OP_N;
    // SAFETY: the handle is fresh; the stream belongs to the current
    // context; a, b and c are device buffers of k*n, m*k and m*n elements
    // that outlive the call (the caller synchronises before dropping them).
    let r = unsafe {
        blas::set_stream(handle, stream.cu_stream() as blas_sys::cudaStream_t).and_then(|_| {
            if f64s {
                let (one, zero) = (1.0f64, 0.0f64);
                blas::dgemm(
                    handle,
                    op,
                    op,
                    ni,
                    mi,
                    ki,
                    &one,
                    b.device_ptr() as *const f64,
                    ni,
                    a.device_ptr() as *const f64,
                    ki,
                    &zero,
                    c.device_ptr() as *mut f64,
                    ni,
                )
            } else {
                let (one, zero) = (1.0f32, 0.0f32);
                blas::sgemm(
                    handle,
                    op,
                    op,
                    ni,
                    mi,
                    ki,
                    &one,
                    b.device_ptr() as *const f32,
                    ni,
                    a.device_ptr() as *const f32,
                    ki,
                    &zero,
                    c.device_ptr() as *mut f32,
                    ni,
                )
            }
        })
    };
    // The launch is queued; wait before the handle goes.
    let synced = stream.synchronize();
    // SAFETY: created above and destroyed once.
    let destroyed = unsafe { blas::destroy_handle(handle) };
    r.map_err(|e| fail(format!("gemm: {e:?}")))?;
    synced.map_err(|e| fail(format!("synchronize: {e}")))?;
    destroyed.map_err(|e| fail(format!("destroy handle: {e:?}")))
}
