//! The array's ops on a GPU worker: chunks live in device memory. A fused
//! task is one generated kernel per chunk ([`crate::grid`] lowers it,
//! [`crate::cuda`] prints it, NVRTC compiles it once per source text; an
//! emulated device runs the same plan through [`crate::emulate`]); a
//! reduction's kernel leaves one partial per block slice, merged here into
//! the task's small host partial. Matmul multiplies device blocks with
//! `weft_kernels::gemm` (cuBLAS; the `gemm.cu` emulation on emulated
//! devices) and sums the products with a generated kernel. Other ops read
//! device chunks through [`crate::block::decode`], which copies them to the
//! host.

use std::sync::Arc;

use weft_gpu::{Buffer, DeviceBuffer, GpuBackend};
use weft_kernels::Column;
use weft_runtime::Value;
use weft_runtime::ops::{OpContext, OpError};

use crate::block::{Buf, Meta};
use crate::dtype::DType;
use crate::emulate::{self, Slot};
use crate::error::ArrayError;
use crate::expr::{BinaryOp, Program};
use crate::fuse::{FusedArgs, run_fused};
use crate::grid::{BLOCK, GridPlan, LeafPlan, Params};
use crate::matmul::{MatmulArgs, run_matmul};
use crate::reduce::combine;

/// The one frame's type and shape of a chunk value (without reading it).
fn meta(value: &Value) -> Result<(DType, Vec<usize>), OpError> {
    let metas: Vec<Meta> = value.decode().map_err(ArrayError::Data)?;
    match (metas.as_slice(), value.frames.len()) {
        ([m], 1) => Ok((m.dtype, m.shape.clone())),
        (m, f) => Err(ArrayError::Data(format!("a chunk with {} frames listed and {f} held, not 1", m.len())).into()),
    }
}

fn kernel_failed(op: &str) -> impl Fn(weft_kernels::KernelError) -> OpError + '_ {
    move |e| OpError::Failed(format!("{op}: {e}"))
}

/// The most blocks a kernel launches at once on this worker's device.
fn max_blocks(ctx: &OpContext<'_>) -> Result<usize, OpError> {
    Ok(ctx.stream()?.gpu().geometry().resident_blocks(BLOCK as u32) as usize)
}

/// The bytes of emulated device memory (its stream synchronised first).
fn emulated(buffer: &DeviceBuffer) -> &[u8] {
    // SAFETY: on an emulated device a device pointer is the address of a
    // host allocation of at least `len` bytes (its pool's block), live as
    // long as `buffer`, which this borrow cannot outlive; `launch` drained
    // the thread's stream first, and nothing else queues work on it while
    // this borrow lives.
    unsafe { std::slice::from_raw_parts(buffer.device_ptr() as *const u8, buffer.len()) }
}

/// Launches the kernel of `plan` with `leaves` (per leaf: its device
/// buffer, or none for a generator) writing `outs`, on the op's stream:
/// done on return on an emulated device, queued on a CUDA one.
fn launch(
    ctx: &OpContext<'_>,
    plan: &GridPlan,
    params: &Params,
    leaves: &[Option<DeviceBuffer>],
    outs: &[DeviceBuffer],
) -> Result<(), OpError> {
    let stream = ctx.stream()?;
    let gpu = stream.gpu().clone();
    let blocks = plan.blocks(max_blocks(ctx)?);
    match gpu.backend() {
        GpuBackend::Emulated(_) => {
            // The emulation reads and writes device memory from the host:
            // the work queued before it runs first.
            stream.synchronize()?;
            let slots: Vec<Slot<'_>> = leaves
                .iter()
                .zip(&params.seeds)
                .map(|(b, &seed)| b.as_ref().map_or(Slot::Seed(seed), |b| Slot::Input(emulated(b))))
                .collect();
            let mut out: Vec<&mut [u8]> = outs
                .iter()
                .map(|b| {
                    // SAFETY: as in `emulated`; each output was allocated
                    // for this launch, so nothing else reads or writes it
                    // while this borrow lives, and no two outputs overlap.
                    unsafe { std::slice::from_raw_parts_mut(b.device_ptr() as *mut u8, b.len()) }
                })
                .collect();
            emulate::run(plan, params, blocks, &slots, &mut out)?;
        }
        GpuBackend::Cuda(_) => {
            let source = crate::cuda::source(plan);
            let mut args: Vec<u64> = outs.iter().map(DeviceBuffer::device_ptr).collect();
            args.extend(
                leaves
                    .iter()
                    .zip(&params.seeds)
                    .map(|(b, &seed)| b.as_ref().map_or(seed, DeviceBuffer::device_ptr)),
            );
            args.push(params.offset);
            args.push(params.arg_base as u64);
            weft_kernels::generated::launch_generated(
                &gpu,
                "array_fused",
                &source,
                crate::cuda::KERNEL,
                blocks as u32,
                BLOCK as u32,
                &args,
            )
            .map_err(kernel_failed("array.fused"))?;
        }
    }
    Ok(())
}

/// Runs an elementwise plan (no reduction) into a new device buffer.
fn elementwise(
    ctx: &OpContext<'_>,
    plan: &GridPlan,
    params: &Params,
    leaves: &[Option<DeviceBuffer>],
) -> Result<DeviceBuffer, OpError> {
    let out = ctx.alloc(plan.len() * plan.program.dtype().size())?;
    launch(ctx, plan, params, leaves, std::slice::from_ref(&out))?;
    Ok(out)
}

/// A chunk value whose frame is device memory.
fn device_chunk(dtype: DType, shape: Vec<usize>, buffer: DeviceBuffer) -> Result<Value, OpError> {
    let mut value = Value::encode(&vec![Meta { dtype, shape }]).map_err(ArrayError::Data)?;
    value.frames.push(Buffer::device(buffer));
    Ok(value)
}

/// Runs an `array.fused` task on the worker's GPU.
pub(crate) fn fused(ctx: &OpContext<'_>, args: &FusedArgs, inputs: &[Arc<Value>]) -> Result<Value, OpError> {
    let metas = inputs.iter().map(|v| meta(v)).collect::<Result<Vec<_>, _>>()?;
    let (plan, params) = GridPlan::new(args, &metas, max_blocks(ctx)?)?;
    if plan.is_empty() {
        // Nothing to launch: the CPU path gives the empty chunk, or the
        // empty reduction's partial (or its error).
        return Ok(run_fused(args, inputs)?);
    }
    let leaves = plan
        .leaves
        .iter()
        .map(|leaf| match leaf {
            LeafPlan::Input { dep, .. } => Ok(Some(ctx.to_device(&inputs[*dep].frames[0])?)),
            LeafPlan::Gen { .. } => Ok(None),
        })
        .collect::<Result<Vec<_>, OpError>>()?;
    let dtype = plan.program.dtype();
    let Some(reduce) = &plan.reduce else {
        let out = elementwise(ctx, &plan, &params, &leaves)?;
        return device_chunk(dtype, plan.shape.clone(), out);
    };
    let outs = plan
        .outputs()
        .iter()
        .map(|&(d, n)| ctx.alloc(n * d.size()))
        .collect::<Result<Vec<_>, _>>()?;
    launch(ctx, &plan, &params, &leaves, &outs)?;
    // One partial per slice: [slices, kept] per component, merged here.
    let stream = ctx.stream()?;
    let components = outs
        .iter()
        .zip(plan.outputs())
        .map(|(b, (d, _))| Ok(Buf::from_bytes(d, &stream.download(b)?)))
        .collect::<Result<Vec<_>, OpError>>()?;
    let (kept, shape) = (reduce.kept_len(), reduce.kept_shape());
    let parts: Vec<Vec<_>> = (0..reduce.slices)
        .map(|s| {
            components
                .iter()
                .map(|c| c.view(s * kept..(s + 1) * kept, &shape))
                .collect()
        })
        .collect();
    Ok(combine(reduce.op, dtype, &parts, false)?)
}

/// A matmul operand on the device as stored row-major `rows x cols`:
/// transposed by a generated kernel when the task reads it transposed.
fn operand(ctx: &OpContext<'_>, value: &Value, trans: bool) -> Result<(DeviceBuffer, usize, usize), OpError> {
    let (dtype, shape) = meta(value)?;
    let [r, c] = shape[..] else {
        return Err(ArrayError::Data(format!("matmul: a block of shape {shape:?}")).into());
    };
    let stored = ctx.to_device(&value.frames[0])?;
    if !trans {
        return Ok((stored, r, c));
    }
    let plan = GridPlan {
        program: Program::leaf(dtype),
        leaves: vec![LeafPlan::Input {
            dep: 0,
            dtype,
            strides: vec![1, c],
        }],
        shape: vec![c, r],
        reduce: None,
    };
    let params = Params {
        seeds: vec![0],
        offset: 0,
        arg_base: 0,
    };
    Ok((elementwise(ctx, &plan, &params, &[Some(stored)])?, c, r))
}

/// Runs an `array.matmul` task on the worker's GPU.
pub(crate) fn matmul(ctx: &OpContext<'_>, args: &MatmulArgs, inputs: &[Arc<Value>]) -> Result<Value, OpError> {
    let metas = inputs.iter().map(|v| meta(v)).collect::<Result<Vec<_>, _>>()?;
    let dtype = metas.first().map_or(DType::F64, |m| m.0);
    let kd = match dtype {
        DType::F32 => weft_kernels::DType::F32,
        DType::F64 => weft_kernels::DType::F64,
        other => {
            return Err(ArrayError::DType {
                op: "matmul",
                dtype: other,
            }
            .into());
        }
    };
    let degenerate = metas.iter().any(|(_, s)| s.contains(&0));
    if inputs.len() != 2 * args.pairs || args.pairs == 0 || degenerate {
        // Malformed tasks get the CPU path's error; empty blocks its zeros.
        return Ok(run_matmul(args, inputs)?);
    }
    let mut products = Vec::with_capacity(args.pairs);
    let mut out_shape = None;
    for p in 0..args.pairs {
        let (a, m, k) = operand(ctx, &inputs[p], args.trans_a)?;
        let (b, kb, n) = operand(ctx, &inputs[args.pairs + p], args.trans_b)?;
        let mismatch = metas[p].0 != dtype || metas[args.pairs + p].0 != dtype;
        if k != kb || mismatch || out_shape.is_some_and(|s| s != (m, n)) {
            return Err(ArrayError::Shape {
                op: "matmul",
                left: metas[p].1.clone(),
                right: metas[args.pairs + p].1.clone(),
            }
            .into());
        }
        out_shape = Some((m, n));
        let column = |b: DeviceBuffer, len: usize| Column::new(kd, len, Buffer::device(b), None, None);
        let c = weft_kernels::gemm::gemm(
            &column(a, m * k).map_err(kernel_failed("matmul"))?,
            &column(b, k * n).map_err(kernel_failed("matmul"))?,
            m,
            k,
            n,
        )
        .map_err(kernel_failed("matmul"))?;
        let c = c
            .values()
            .as_device()
            .cloned()
            .ok_or_else(|| OpError::Failed("matmul: a device product came back on the host".into()))?;
        products.push(c);
    }
    let (m, n) = out_shape.unwrap_or((0, 0));
    if products.len() == 1 {
        return device_chunk(dtype, vec![m, n], products.remove(0));
    }
    // The products' sum: one generated kernel over all of them.
    let mut program = Program::leaf(dtype);
    for k in 1..products.len() {
        program = program.binary(BinaryOp::Add, &Program::leaf(dtype), &[k as u32], "matmul", None)?;
    }
    let plan = GridPlan {
        program,
        leaves: (0..products.len())
            .map(|dep| LeafPlan::Input {
                dep,
                dtype,
                strides: vec![n, 1],
            })
            .collect(),
        shape: vec![m, n],
        reduce: None,
    };
    let params = Params {
        seeds: vec![0; products.len()],
        offset: 0,
        arg_base: 0,
    };
    let leaves: Vec<Option<DeviceBuffer>> = products.into_iter().map(Some).collect();
    let sum = elementwise(ctx, &plan, &params, &leaves)?;
    device_chunk(dtype, vec![m, n], sum)
}
