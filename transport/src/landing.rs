//! Where a received frame lands: host memory from the receive pool, or,
//! for a frame the sender held in device memory and a receiver with a GPU
//! ([`crate::Config::gpu`]), that GPU's memory.
//!
//! A byte stream fills a device frame through the GPU's pinned staging
//! pool, [`CHUNK`] bytes at a time (socket -> pinned chunk -> device), so
//! receiving a frame of any size holds one chunk of host memory. Where the
//! device has no free room for the frame it lands in host memory instead:
//! slower to use, never lost. The receive never spills other results to
//! make room (`Gpu::alloc_if_free`): it runs on an I/O thread, which a
//! spill's copies would block; an op that needs the frame on its GPU moves
//! it there later, spilling as any allocation does.

use std::sync::Arc;

use tracing::debug;
use weft_gpu::{Buffer, Device, DeviceBuffer, Gpu, GpuError, StagingBuffer, Stream};

use crate::pool::{BufferPool, PooledBuf};

/// Bytes of pinned staging memory a device frame is received through.
pub(crate) const CHUNK: usize = 4 << 20;

/// A frame being received.
pub(crate) enum Target {
    /// Into host memory, `filled` bytes so far.
    Host { buf: PooledBuf, filled: usize },
    /// Into device memory, through a staging chunk.
    Device(Box<DeviceFill>),
}

/// A device frame filled chunk by chunk.
pub(crate) struct DeviceFill {
    buffer: DeviceBuffer,
    stage: StagingBuffer,
    stream: Stream,
    /// Bytes in `stage` not yet copied to the device.
    staged: usize,
    /// Bytes copied to the device.
    written: usize,
}

impl Target {
    /// Where a frame of `len` bytes that the sender held on `sent_from`
    /// is received: on `gpu` when both are GPUs and the device has room,
    /// else in host memory from `pool`.
    pub(crate) fn new(len: usize, sent_from: Device, gpu: Option<&Arc<Gpu>>, pool: &BufferPool) -> Target {
        if let Some(gpu) = gpu.filter(|_| sent_from.is_gpu() && len > 0) {
            match DeviceFill::new(gpu, len) {
                Ok(fill) => return Target::Device(Box::new(fill)),
                Err(error) => debug!(%error, len, "a device frame lands in host memory"),
            }
        }
        Target::Host {
            buf: pool.take(len),
            filled: 0,
        }
    }

    /// The bytes still to fill, or as many of them as fit the next chunk.
    pub(crate) fn unfilled(&mut self) -> &mut [u8] {
        match self {
            Target::Host { buf, filled } => &mut buf.as_mut_slice()[*filled..],
            Target::Device(fill) => {
                let left = fill.buffer.len() - fill.written;
                let room = fill.stage.len().min(left);
                &mut fill.stage.as_mut_slice()[fill.staged..room]
            }
        }
    }

    /// Takes note of `n` more bytes written into [`Target::unfilled`];
    /// a full chunk goes to the device.
    pub(crate) fn filled(&mut self, n: usize) -> Result<(), GpuError> {
        match self {
            Target::Host { filled, .. } => *filled += n,
            Target::Device(fill) => {
                fill.staged += n;
                let left = fill.buffer.len() - fill.written;
                if fill.staged == fill.stage.len().min(left) {
                    let chunk = &fill.stage.as_slice()[..fill.staged];
                    fill.stream.copy_h2d_at(chunk, &fill.buffer, fill.written)?;
                    fill.written += fill.staged;
                    fill.staged = 0;
                }
            }
        }
        Ok(())
    }

    /// The received frame.
    pub(crate) fn finish(self) -> Buffer {
        match self {
            Target::Host { buf, .. } => Buffer::host(buf.freeze()),
            Target::Device(fill) => Buffer::device(fill.buffer),
        }
    }
}

impl DeviceFill {
    fn new(gpu: &Arc<Gpu>, len: usize) -> Result<DeviceFill, GpuError> {
        let buffer = gpu.alloc_if_free(len)?;
        let stage = gpu.staging(len.min(CHUNK))?;
        Ok(DeviceFill {
            buffer,
            stage,
            stream: gpu.thread_stream()?,
            staged: 0,
            written: 0,
        })
    }
}

/// A frame received whole into host memory (`bytes`), moved to `gpu` when
/// the sender held it on a GPU and the device has room; else as it is.
#[cfg_attr(not(feature = "ucx"), allow(dead_code))]
pub(crate) fn upload(bytes: bytes::Bytes, sent_from: Device, gpu: Option<&Arc<Gpu>>) -> Buffer {
    if let Some(gpu) = gpu.filter(|_| sent_from.is_gpu() && !bytes.is_empty()) {
        let moved = gpu
            .alloc_if_free(bytes.len())
            .and_then(|dst| gpu.thread_stream()?.copy_h2d(&bytes, &dst).map(|()| dst));
        match moved {
            Ok(dst) => return Buffer::device(dst),
            Err(error) => debug!(%error, len = bytes.len(), "a device frame stays in host memory"),
        }
    }
    Buffer::host(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// Feeds `data` in pieces of `step` bytes, as reads from a socket would.
    fn feed(target: &mut Target, data: &[u8], step: usize) {
        let mut at = 0;
        while at < data.len() {
            let space = target.unfilled();
            let n = space.len().min(step).min(data.len() - at);
            assert!(n > 0, "room left while bytes remain");
            space[..n].copy_from_slice(&data[at..at + n]);
            target.filled(n).unwrap();
            at += n;
        }
        assert!(target.unfilled().is_empty());
    }

    #[test]
    fn a_device_frame_fills_the_gpu_chunk_by_chunk() {
        let gpu = Gpu::emulated(0, 1 << 30, true);
        let pool = BufferPool::new(0);
        let data = pattern(2 * CHUNK + 12345);
        let mut target = Target::new(data.len(), Device::Cuda(0), Some(&gpu), &pool);
        feed(&mut target, &data, 100_000);
        let frame = target.finish();
        assert_eq!(frame.location(), gpu.device());
        assert_eq!(
            gpu.stream().unwrap().download(frame.as_device().unwrap()).unwrap(),
            data
        );
        let weft_gpu::GpuBackend::Emulated(e) = gpu.backend() else {
            unreachable!()
        };
        assert_eq!(e.copies().h2d, 3, "one copy per chunk");
        assert_eq!(gpu.staging_stats().in_use, 0, "the chunk is back in the pool");
    }

    #[test]
    fn host_frames_and_receivers_without_a_gpu_get_host_memory() {
        let gpu = Gpu::emulated(0, 1 << 30, true);
        let pool = BufferPool::new(0);
        for (from, gpu) in [(Device::Cpu, Some(&gpu)), (Device::Emulated(0), None)] {
            let mut target = Target::new(10, from, gpu, &pool);
            feed(&mut target, &pattern(10), 3);
            assert_eq!(target.finish(), Buffer::host(pattern(10)));
        }
    }

    #[test]
    fn a_full_device_takes_the_frame_in_host_memory() {
        let gpu = Gpu::emulated(0, 1 << 20, true);
        // A receive never spills others (it runs on an I/O thread).
        let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = asked.clone();
        gpu.on_out_of_memory(move |_| {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
            false
        });
        let pool = BufferPool::new(0);
        let mut target = Target::new(2 << 20, Device::Emulated(0), Some(&gpu), &pool);
        feed(&mut target, &pattern(2 << 20), 1 << 20);
        assert_eq!(target.finish(), Buffer::host(pattern(2 << 20)));
        let landed = upload(bytes::Bytes::from(pattern(2 << 20)), Device::Emulated(0), Some(&gpu));
        assert_eq!(landed.location(), Device::Cpu);
        let small = upload(bytes::Bytes::from(pattern(100)), Device::Emulated(0), Some(&gpu));
        assert_eq!(small.location(), gpu.device());
        assert!(
            !asked.load(std::sync::atomic::Ordering::Relaxed),
            "the receive asked to spill"
        );
    }
}
