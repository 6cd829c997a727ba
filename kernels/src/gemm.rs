//! GEMM: `C = A * B` for row-major f32/f64 matrices without nulls. CPU:
//! the `gemm` crate (threaded, AVX-512 where the CPU has it). CUDA: cuBLAS. Emulated GPUs: the tiled
//! kernel in `gemm.cu`.

use std::cell::RefCell;
use std::sync::Arc;

use cudarc::driver::CudaContext;
use weft_gpu::Buffer;
use weft_gpu::{DeviceBuffer, GpuBackend};

use crate::column::{Native, Place};
use crate::cudalibs::{self, Cublas, GemmFn, blas};
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

/// A cuBLAS handle of this thread for one CUDA context, destroyed (with its
/// context current) when the thread exits.
struct Handle {
    ctx: Arc<CudaContext>,
    handle: blas::Handle,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Ok(lib) = cudalibs::cublas()
            && self.ctx.bind_to_thread().is_ok()
        {
            // SAFETY: made by cublasCreate_v2 in this context, destroyed once.
            unsafe { (lib.destroy)(self.handle) };
        }
    }
}

thread_local! {
    /// This thread's cuBLAS handles, one per context: creating one costs
    /// far more than a small GEMM, and a handle is not for two threads at once.
    static HANDLES: RefCell<Vec<Handle>> = const { RefCell::new(Vec::new()) };
}

/// This thread's handle for `ctx` (current on this thread), made on first use.
fn thread_handle(lib: &Cublas, ctx: &Arc<CudaContext>) -> Result<blas::Handle, String> {
    HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        if let Some(h) = handles.iter().find(|h| Arc::ptr_eq(&h.ctx, ctx)) {
            return Ok(h.handle);
        }
        let mut handle = std::ptr::null_mut();
        // SAFETY: a plain out-parameter; the context is current.
        let status = unsafe { (lib.create)(&mut handle) };
        if status != 0 {
            return Err(format!("cublasCreate_v2 failed (status {status})"));
        }
        handles.push(Handle {
            ctx: ctx.clone(),
            handle,
        });
        Ok(handle)
    })
}

/// Row-major `c = a * b` (`m x k` by `k x n`) as cuBLAS's column-major
/// `c^T = b^T a^T`: the operands swap, nothing is transposed.
///
/// # Safety
/// `handle`'s context is current; `a`, `b` and `c` hold `m*k`, `k*n` and
/// `m*n` elements of `T` and stay allocated until the GEMM has run.
unsafe fn column_major_gemm<T>(
    gemm: GemmFn<T>,
    handle: blas::Handle,
    (m, k, n): (i32, i32, i32),
    (one, zero): (T, T),
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    c: &DeviceBuffer,
) -> blas::Status {
    let op = blas::OP_N;
    // SAFETY: as the caller promises.
    unsafe {
        gemm(
            handle,
            op,
            op,
            n,
            m,
            k,
            &one,
            b.device_ptr() as *const T,
            n,
            a.device_ptr() as *const T,
            k,
            &zero,
            c.device_ptr() as *mut T,
            n,
        )
    }
}

/// `c = a * b` queued on the call's stream with this thread's handle (no
/// synchronisation: the worker synchronises when the op ends).
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
    let lib = cudalibs::cublas().map_err(fail)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        // An empty sum; cuBLAS would refuse the leading dimension 0.
        exec.stream.memset_zero(c, c.len())?;
        return Ok(());
    }
    let dim = |v: usize| i32::try_from(v).map_err(|_| fail(format!("dimension {v} too large")));
    let (mi, ki, ni) = (dim(m)?, dim(k)?, dim(n)?);
    let stream = exec
        .stream
        .cuda_stream()
        .ok_or_else(|| fail("not a CUDA stream".into()))?;
    let ctx = stream.context();
    ctx.bind_to_thread().map_err(|e| fail(format!("bind context: {e}")))?;
    let handle = thread_handle(lib, ctx).map_err(fail)?;
    // SAFETY: the handle is this thread's for the current context; the
    // stream belongs to it; a, b and c are device buffers of m*k, k*n and
    // m*n elements that stay allocated until the queued GEMM has run
    // (dropped on this thread, they wait for the stream).
    let status = unsafe {
        match (lib.set_stream)(handle, stream.cu_stream() as blas::Stream) {
            0 if f64s => column_major_gemm(lib.dgemm, handle, (mi, ki, ni), (1.0, 0.0), a, b, c),
            0 => column_major_gemm(lib.sgemm, handle, (mi, ki, ni), (1.0, 0.0), a, b, c),
            failed => failed,
        }
    };
    if status != 0 {
        return Err(fail(format!("gemm failed (cuBLAS status {status})")));
    }
    exec.stream.mark_pending();
    Ok(())
}
