//! Moving buffers onto a worker's GPU. Ops reach their GPU through
//! [`OpContext`](crate::ops::OpContext); a full device spills results
//! through the callback the worker sets on its GPU
//! ([`Gpu::on_out_of_memory`]).

use std::sync::Arc;

use weft_gpu::{Buffer, Gpu, GpuError};

/// `frame` in the memory of `gpu`: shared when it is there already, copied
/// from a peer device (directly where peers have access) or uploaded from
/// the host otherwise.
pub fn to_gpu(frame: &Buffer, gpu: &Arc<Gpu>) -> Result<Buffer, GpuError> {
    let copy = match frame.as_device() {
        Some(src) if src.device() == gpu.device() => return Ok(frame.clone()),
        Some(src) => {
            let dst = gpu.alloc(src.len())?;
            src.gpu().thread_stream()?.copy_peer(src, &dst)?.synchronize()?;
            dst
        }
        None => {
            // Done on return: the upload waits for its copy.
            gpu.thread_stream()?.upload(&frame.to_host()?)?
        }
    };
    Ok(Buffer::device(copy))
}
