//! The GPU a worker is pinned to, as its ops see it.
//!
//! A worker's compute threads are bound to its GPU the way CUDA binds a
//! thread to a current device: an op calls [`current_gpu`] to launch on it
//! and [`alloc`] for output memory, which spills other results off the
//! device and tries once more when the device is full.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use weft_gpu::{DeviceBuffer, Gpu, GpuError};
use weft_transport::Buffer;

use crate::store::Store;

struct Binding {
    gpu: Arc<Gpu>,
    store: Weak<Store>,
}

thread_local! {
    static CURRENT: RefCell<Option<Binding>> = const { RefCell::new(None) };
}

/// Binds the calling thread to `gpu`, whose results live in `store`.
pub(crate) fn bind(gpu: Arc<Gpu>, store: Weak<Store>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(Binding { gpu, store }));
}

/// The GPU of the worker running this op; `None` on a CPU worker.
pub fn current_gpu() -> Option<Arc<Gpu>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|b| b.gpu.clone()))
}

/// Device memory for an op's output on the worker's GPU. When the device
/// is full, the worker's least recently used device results move to host
/// memory and the allocation is tried once more before it fails.
pub fn alloc(len: usize) -> Result<DeviceBuffer, String> {
    let (gpu, store) = CURRENT
        .with(|c| c.borrow().as_ref().map(|b| (b.gpu.clone(), b.store.clone())))
        .ok_or("device memory asked for on a worker without a GPU")?;
    match gpu.alloc(len) {
        Err(GpuError::OutOfMemory { .. }) => {
            if let Some(store) = store.upgrade() {
                store.free_device(len as u64);
            }
            gpu.alloc(len).map_err(|e| e.to_string())
        }
        other => other.map_err(|e| e.to_string()),
    }
}

/// `frame` in the memory of `gpu`: shared when it is there already, copied
/// from a peer device (directly where peers have access) or uploaded from
/// the host otherwise.
pub fn to_gpu(frame: &Buffer, gpu: &Arc<Gpu>) -> Result<Buffer, GpuError> {
    let copy = match frame.as_device() {
        Some(src) if src.device() == gpu.device() => return Ok(frame.clone()),
        Some(src) => {
            let dst = gpu.alloc(src.len())?;
            src.gpu().stream()?.copy_peer(src, &dst)?.synchronize()?;
            dst
        }
        None => {
            let stream = gpu.stream()?;
            let dst = stream.upload(&frame.to_host()?)?;
            stream.synchronize()?;
            dst
        }
    };
    Ok(Buffer::device(copy))
}

/// `frame` on the device of the current op's worker (see [`to_gpu`]), for
/// ops that take input from anywhere.
pub fn to_current(frame: &Buffer) -> Result<DeviceBuffer, String> {
    let gpu = current_gpu().ok_or("device input asked for on a worker without a GPU")?;
    let frame = to_gpu(frame, &gpu).map_err(|e| e.to_string())?;
    frame
        .as_device()
        .cloned()
        .ok_or_else(|| "a frame did not reach the device".into())
}
