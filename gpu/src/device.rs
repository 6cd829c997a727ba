//! Device names, configuration, and opened GPUs.
//!
//! [`Device`] is a plain value naming where data lives. [`Gpu`] is an opened
//! device: an enum over the backends ([`GpuBackend`]) plus the device's memory
//! pool. [`Devices`] opens every GPU the configuration asks for.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::buffer::{DeviceBuffer, PinnedBuffer};
use crate::cuda::{CudaGpu, CudaProbe, probe_cuda};
use crate::emulated::EmulatedGpu;
use crate::pool::{Pool, PoolStats};
use crate::staging::{StagingBuffer, StagingPool, StagingStats};
use crate::stream::Stream;
use crate::units::{parse_bool, parse_size};
use crate::{GpuError, Result};

/// Where data lives and where kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Device {
    /// Host memory and CPU kernels.
    Cpu,
    /// A CUDA GPU, by driver ordinal.
    Cuda(u32),
    /// An emulated GPU: host memory in its own address space, kernels run by
    /// the CPU emulation of the CUDA grid.
    Emulated(u32),
}

impl Device {
    /// True for devices whose memory the host cannot read directly.
    pub fn is_gpu(self) -> bool {
        !matches!(self, Device::Cpu)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::Emulated(i) => write!(f, "emulated:{i}"),
        }
    }
}

/// Which devices to open and how large emulated ones are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Number of emulated GPUs (`WEFT_EMULATED_GPUS`).
    pub emulated_gpus: u32,
    /// Memory of each emulated GPU in bytes (`WEFT_EMULATED_GPU_MEMORY`).
    pub emulated_memory: usize,
    /// Whether emulated GPUs can access each other's memory directly
    /// (`WEFT_EMULATED_PEER_ACCESS`); without it peer copies are staged
    /// through pinned host memory, as on GPUs without peer access.
    pub emulated_peer_access: bool,
    /// Whether emulated GPUs queue stream work until it is synchronised, as
    /// a real GPU runs it later (`WEFT_EMULATED_ASYNC`; see [`Stream`]).
    pub emulated_async: bool,
    /// Whether to look for CUDA GPUs at all (`WEFT_DISABLE_CUDA=1` turns it off).
    pub use_cuda: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            emulated_gpus: 0,
            emulated_memory: 1 << 30,
            emulated_peer_access: true,
            emulated_async: false,
            use_cuda: true,
        }
    }
}

impl DeviceConfig {
    /// Reads the `WEFT_*` variables over the defaults.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`DeviceConfig::from_env`] with an injected lookup, for tests.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = DeviceConfig::default();
        if let Some(v) = lookup("WEFT_EMULATED_GPUS") {
            config.emulated_gpus = v.trim().parse().map_err(|_| GpuError::Config {
                name: "WEFT_EMULATED_GPUS",
                value: v.clone(),
                reason: "expected a count",
            })?;
        }
        if let Some(v) = lookup("WEFT_EMULATED_GPU_MEMORY") {
            config.emulated_memory =
                parse_size(&v)
                    .ok()
                    .and_then(|b| usize::try_from(b).ok())
                    .ok_or(GpuError::Config {
                        name: "WEFT_EMULATED_GPU_MEMORY",
                        value: v.clone(),
                        reason: "expected a size such as 512MiB, 2GB or 4096",
                    })?;
        }
        let switch = |name: &'static str| -> Result<Option<bool>> {
            lookup(name)
                .map(|v| {
                    parse_bool(&v).map_err(|_| GpuError::Config {
                        name,
                        value: v.clone(),
                        reason: "expected 1/true/yes/on or 0/false/no/off",
                    })
                })
                .transpose()
        };
        if let Some(on) = switch("WEFT_EMULATED_PEER_ACCESS")? {
            config.emulated_peer_access = on;
        }
        if let Some(on) = switch("WEFT_EMULATED_ASYNC")? {
            config.emulated_async = on;
        }
        if let Some(off) = switch("WEFT_DISABLE_CUDA")? {
            config.use_cuda = !off;
        }
        Ok(config)
    }
}

/// The backend behind an opened GPU.
#[derive(Debug)]
pub enum GpuBackend {
    /// A CUDA device through the driver API.
    Cuda(CudaGpu),
    /// An emulated device in host memory.
    Emulated(EmulatedGpu),
}

impl GpuBackend {
    pub(crate) fn raw_alloc(&self, device: Device, bytes: usize) -> Result<u64> {
        match self {
            GpuBackend::Cuda(g) => g.raw_alloc(device, bytes),
            GpuBackend::Emulated(g) => g.raw_alloc(device, bytes),
        }
    }

    /// Frees a block from `raw_alloc`. Never panics: failures are recorded.
    pub(crate) fn raw_free(&self, ptr: u64) {
        match self {
            GpuBackend::Cuda(g) => g.raw_free(ptr),
            GpuBackend::Emulated(g) => g.raw_free(ptr),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        match self {
            GpuBackend::Cuda(g) => g.total_memory(),
            GpuBackend::Emulated(g) => g.capacity(),
        }
    }
}

/// What kernel launchers size their grids from: the device's
/// multiprocessors and how many threads each can hold at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Streaming multiprocessors (`CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT`).
    pub multiprocessors: u32,
    /// Resident threads per multiprocessor
    /// (`CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR`).
    pub max_threads_per_multiprocessor: u32,
}

impl Geometry {
    /// Emulated devices report a small fixed device (2 multiprocessors of
    /// 512 threads): enough blocks to exercise the cross-block paths, few
    /// enough OS threads to keep CI fast.
    pub const EMULATED: Geometry = Geometry {
        multiprocessors: 2,
        max_threads_per_multiprocessor: 512,
    };

    /// Blocks of `threads_per_block` threads resident on the whole device at once.
    pub fn resident_blocks(&self, threads_per_block: u32) -> u32 {
        self.multiprocessors * (self.max_threads_per_multiprocessor / threads_per_block.max(1)).max(1)
    }
}

/// What a device out of memory calls (see [`Gpu::on_out_of_memory`]).
pub type Reclaim = Arc<dyn Fn(usize) -> bool + Send + Sync>;

/// How many times one allocation asks the reclaim callback for memory.
const RECLAIM_TRIES: usize = 4;

thread_local! {
    /// Each thread's stream per device (see [`Gpu::thread_stream`]).
    static THREAD_STREAMS: RefCell<Vec<Stream>> = const { RefCell::new(Vec::new()) };
}

/// An opened GPU: its backend and its memory pool.
pub struct Gpu {
    device: Device,
    backend: GpuBackend,
    pool: Pool,
    staging: StagingPool,
    reclaim: RwLock<Option<Reclaim>>,
    /// Buffers copied in from other processes ([`Gpu::ipc_copy`]).
    ipc_copies: AtomicU64,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("device", &self.device)
            .field("backend", &self.backend)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Gpu {
    fn new(device: Device, backend: GpuBackend) -> Arc<Self> {
        Arc::new(Gpu {
            device,
            backend,
            pool: Pool::new(),
            staging: StagingPool::default(),
            reclaim: RwLock::new(None),
            ipc_copies: AtomicU64::new(0),
        })
    }

    /// Opens a lone emulated GPU, outside any [`Devices`] set.
    pub fn emulated(ordinal: u32, capacity: usize, peer_access: bool) -> Arc<Self> {
        Gpu::new(
            Device::Emulated(ordinal),
            GpuBackend::Emulated(EmulatedGpu::new(ordinal, capacity, peer_access, false)),
        )
    }

    /// Opens a lone emulated GPU whose streams queue their work until they
    /// are synchronised (see [`Stream`]), with peer access.
    pub fn emulated_asynchronous(ordinal: u32, capacity: usize) -> Arc<Self> {
        Gpu::new(
            Device::Emulated(ordinal),
            GpuBackend::Emulated(EmulatedGpu::new(ordinal, capacity, true, true)),
        )
    }

    /// Which device this is.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The backend, for code (kernel launchers) that must tell them apart.
    pub fn backend(&self) -> &GpuBackend {
        &self.backend
    }

    /// Multiprocessors and threads per multiprocessor, for launch geometry.
    pub fn geometry(&self) -> Geometry {
        match &self.backend {
            GpuBackend::Cuda(g) => g.geometry(),
            GpuBackend::Emulated(_) => Geometry::EMULATED,
        }
    }

    /// Bytes of device memory in all.
    pub fn capacity(&self) -> usize {
        self.backend.capacity()
    }

    /// Allocates `len` bytes from this device's pool. The contents are
    /// unspecified (reused blocks keep old data). When the device is full,
    /// the [`on_out_of_memory`](Self::on_out_of_memory) callback frees what
    /// it can and the allocation is tried again (a few times at most), as
    /// RMM's failure-callback adaptor does; every allocation (kernels',
    /// copies', ops') goes through here.
    ///
    /// Blocks dropped while their stream's work is pending are not handed
    /// out here (see [`Stream::alloc`]); when the device is full, the
    /// calling thread's stream is synchronised first, which gives its
    /// dropped blocks back.
    pub fn alloc(self: &Arc<Self>, len: usize) -> Result<DeviceBuffer> {
        let mut tries = 0;
        let mut synced = false;
        loop {
            match self.pool.alloc(&self.backend, self.device, len) {
                Ok((ptr, class)) => return Ok(DeviceBuffer::new(self.clone(), ptr, len, class)),
                Err(GpuError::OutOfMemory { .. }) if !synced && self.thread_stream_busy() => {
                    synced = true;
                    self.sync_thread_stream()?;
                }
                Err(GpuError::OutOfMemory { .. }) if tries < RECLAIM_TRIES && self.reclaim(len) => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Why this device can no longer be used, if it cannot (after a CUDA
    /// sticky error; see [`EmulatedGpu::lose`] for emulated devices). On
    /// CUDA this waits for all the work queued on the device: call it when
    /// something failed, not on every op.
    pub fn lost(&self) -> Option<String> {
        match &self.backend {
            GpuBackend::Cuda(g) => g.lost(),
            GpuBackend::Emulated(g) => g.lost(),
        }
    }

    /// `len` bytes of this device's memory only if they are free now:
    /// nothing is spilled and no stream is waited for (the transport's
    /// receives, on I/O threads that must not block, land in host memory
    /// instead).
    pub fn alloc_if_free(self: &Arc<Self>, len: usize) -> Result<DeviceBuffer> {
        let (ptr, class) = self.pool.alloc(&self.backend, self.device, len)?;
        Ok(DeviceBuffer::new(self.clone(), ptr, len, class))
    }

    /// Sets what to call when an allocation finds the device full: it gets
    /// the bytes wanted, frees what it can (a worker spills results to host
    /// memory) and returns whether it freed anything. Replaces an earlier
    /// callback.
    pub fn on_out_of_memory(&self, reclaim: impl Fn(usize) -> bool + Send + Sync + 'static) {
        *self.reclaim.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(reclaim));
    }

    fn reclaim(&self, len: usize) -> bool {
        // Cloned out, so the callback runs without the lock held.
        let reclaim = self.reclaim.read().unwrap_or_else(|e| e.into_inner()).clone();
        reclaim.is_some_and(|reclaim| reclaim(len))
    }

    /// Takes back a dropped block: onto the calling thread's stream's list
    /// while that stream has work pending (the work may still read it),
    /// else straight onto the pool's free list.
    pub(crate) fn release(&self, ptr: u64, class: usize, len: usize) {
        let deferred = self
            .with_thread_stream(|s| s.defer_free(ptr, class, len))
            .unwrap_or(false);
        if !deferred {
            self.pool.release(ptr, class, len);
        }
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `f` of the calling thread's stream on this device, if it has one
    /// (never during the thread's teardown or from inside `thread_stream`).
    fn with_thread_stream<R>(&self, f: impl FnOnce(&Stream) -> R) -> Option<R> {
        THREAD_STREAMS
            .try_with(|streams| {
                let streams = streams.try_borrow().ok()?;
                let s = streams.iter().find(|s| std::ptr::eq(Arc::as_ptr(s.gpu()), self))?;
                Some(f(s))
            })
            .ok()
            .flatten()
    }

    fn thread_stream_busy(&self) -> bool {
        self.with_thread_stream(Stream::is_busy).unwrap_or(false)
    }

    /// Waits for the work the calling thread queued on this device (an
    /// op's kernels, launched asynchronously on its thread stream) and
    /// gives the blocks it dropped meanwhile back to the pool. A worker
    /// calls it when an op ends, before its result leaves the thread;
    /// nothing to do on a thread that queued nothing.
    pub fn sync_thread_stream(&self) -> Result<()> {
        match self.with_thread_stream(|s| s.is_busy().then(|| s.clone())).flatten() {
            Some(s) => s.synchronize(),
            None => Ok(()),
        }
    }

    /// Pinned (page-locked) host memory for staging copies to and from this
    /// device. Emulated devices get ordinary host memory.
    pub fn alloc_pinned(&self, len: usize) -> Result<PinnedBuffer> {
        match &self.backend {
            GpuBackend::Cuda(g) => g.alloc_pinned(self.device, len),
            GpuBackend::Emulated(_) => Ok(PinnedBuffer::host(len)),
        }
    }

    /// A pinned host buffer of `len` bytes from this device's staging pool,
    /// for copies to and from the device; it goes back to the pool when
    /// dropped.
    pub fn staging(self: &Arc<Self>, len: usize) -> Result<StagingBuffer> {
        StagingPool::take(self, len)
    }

    /// How many buffers were copied into this device from other processes
    /// by [`Gpu::ipc_copy`].
    pub fn ipc_copies(&self) -> u64 {
        self.ipc_copies.load(Ordering::Relaxed)
    }

    pub(crate) fn count_ipc_copy(&self) {
        self.ipc_copies.fetch_add(1, Ordering::Relaxed);
    }

    /// Counters of this device's staging pool.
    pub fn staging_stats(&self) -> StagingStats {
        self.staging.stats()
    }

    pub(crate) fn staging_pool(&self) -> &StagingPool {
        &self.staging
    }

    /// Statistics of this device's pool.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Gives every cached free block back to the device.
    pub fn trim(&self) {
        self.pool.trim(&self.backend);
    }

    /// A new stream on this device.
    pub fn stream(self: &Arc<Self>) -> Result<Stream> {
        Stream::new(self.clone())
    }

    /// The calling thread's stream on this device, made on first use and
    /// the same queue after: an op's kernels and copies on one compute
    /// thread queue in order on it, without creating a stream per call.
    /// On a thread that is exiting (a destructor of its thread-locals),
    /// it is a new stream of its own.
    pub fn thread_stream(self: &Arc<Self>) -> Result<Stream> {
        THREAD_STREAMS
            .try_with(|streams| {
                let mut streams = streams.borrow_mut();
                if let Some(s) = streams.iter().find(|s| Arc::ptr_eq(s.gpu(), self)) {
                    return Ok(s.clone());
                }
                let stream = self.stream()?;
                streams.push(stream.clone());
                Ok(stream)
            })
            .unwrap_or_else(|_| self.stream())
    }

    /// Whether this device can read and write `other`'s memory directly.
    pub fn can_access_peer(&self, other: &Gpu) -> bool {
        match (&self.backend, &other.backend) {
            (GpuBackend::Cuda(a), GpuBackend::Cuda(b)) => a.can_access_peer(b),
            (GpuBackend::Emulated(a), GpuBackend::Emulated(b)) => a.peer_access() && b.peer_access(),
            _ => false,
        }
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // Every buffer holds an Arc to its Gpu, so only cached blocks remain.
        self.pool.trim(&self.backend);
    }
}

/// Waits for the work the calling thread queued on any device, as
/// [`Gpu::sync_thread_stream`] does for one (a benchmark's timed region
/// ends here, not when the launches return).
pub fn sync_thread_streams() -> Result<()> {
    let busy: Vec<Stream> = THREAD_STREAMS
        .try_with(|streams| streams.borrow().iter().filter(|s| s.is_busy()).cloned().collect())
        .unwrap_or_default();
    busy.iter().try_for_each(Stream::synchronize)
}

/// The CUDA probe, unless the configuration turns CUDA off.
fn probe(config: &DeviceConfig) -> CudaProbe {
    if config.use_cuda {
        probe_cuda()
    } else {
        CudaProbe::none("CUDA disabled by configuration (WEFT_DISABLE_CUDA)")
    }
}

/// Emulated GPU `ordinal` as `config` describes it.
fn emulated(config: &DeviceConfig, ordinal: u32) -> Arc<Gpu> {
    Gpu::new(
        Device::Emulated(ordinal),
        GpuBackend::Emulated(EmulatedGpu::new(
            ordinal,
            config.emulated_memory,
            config.emulated_peer_access,
            config.emulated_async,
        )),
    )
}

/// Every GPU opened under one configuration, plus what the CUDA probe said.
#[derive(Debug)]
pub struct Devices {
    gpus: Vec<Arc<Gpu>>,
    cuda: CudaProbe,
}

impl Devices {
    /// Opens the CUDA GPUs the driver reports (never panicking when there is
    /// no driver) followed by the configured emulated GPUs.
    pub fn open(config: &DeviceConfig) -> Result<Self> {
        let cuda = probe(config);
        // A device that fails to open (in use by an exclusive-process
        // context, fallen off the bus) costs only itself.
        let cuda_gpus: Vec<(u32, CudaGpu)> = (0..cuda.count)
            .filter_map(|ordinal| match CudaGpu::open(ordinal) {
                Ok(gpu) => Some((ordinal, gpu)),
                Err(error) => {
                    tracing::warn!(%error, "skipping CUDA GPU {ordinal}");
                    None
                }
            })
            .collect();
        // Peer access is turned on once, for every pair that supports it;
        // copy_peer then goes device to device, and stages through pinned
        // host memory between the others.
        for (_, a) in &cuda_gpus {
            for (_, b) in &cuda_gpus {
                if !std::ptr::eq(a, b) {
                    a.enable_peer_access(b);
                }
            }
        }
        let mut gpus: Vec<Arc<Gpu>> = cuda_gpus
            .into_iter()
            .map(|(ordinal, gpu)| Gpu::new(Device::Cuda(ordinal), GpuBackend::Cuda(gpu)))
            .collect();
        gpus.extend((0..config.emulated_gpus).map(|ordinal| emulated(config, ordinal)));
        Ok(Devices { gpus, cuda })
    }

    /// Opens only GPU `index` of this machine, counting CUDA GPUs first and
    /// the configured emulated ones after them: a worker pinned to one GPU
    /// makes no context on the others (each costs device memory, and an
    /// exclusive-process GPU refuses a second process).
    pub fn open_one(config: &DeviceConfig, index: u32) -> Result<Arc<Gpu>> {
        let cuda = probe(config);
        if index < cuda.count {
            let gpu = CudaGpu::open(index)?;
            return Ok(Gpu::new(Device::Cuda(index), GpuBackend::Cuda(gpu)));
        }
        match index - cuda.count {
            ordinal if ordinal < config.emulated_gpus => Ok(emulated(config, ordinal)),
            _ => Err(GpuError::NoSuchGpu {
                index,
                found: cuda.count + config.emulated_gpus,
                cuda: cuda.reason,
            }),
        }
    }

    /// Opens what the `WEFT_*` environment asks for.
    pub fn from_env() -> Result<Self> {
        Self::open(&DeviceConfig::from_env()?)
    }

    /// The opened GPUs, CUDA ones first.
    pub fn gpus(&self) -> &[Arc<Gpu>] {
        &self.gpus
    }

    /// The CUDA probe's result: how many GPUs, or why none.
    pub fn cuda(&self) -> &CudaProbe {
        &self.cuda
    }

    /// The opened GPU named `device`.
    pub fn get(&self, device: Device) -> Result<Arc<Gpu>> {
        self.gpus
            .iter()
            .find(|g| g.device() == device)
            .cloned()
            .ok_or(GpuError::NoSuchDevice(device))
    }

    /// Every device, the CPU first.
    pub fn devices(&self) -> Vec<Device> {
        std::iter::once(Device::Cpu)
            .chain(self.gpus.iter().map(|g| g.device()))
            .collect()
    }
}
