//! Shared-memory host buffers: large results live in memory another process
//! on this host can map, so a same-host fetch moves a few dozen bytes of
//! description instead of the data.
//!
//! An op allocates its output with [`alloc`]; from [`MIN_SHARED`] bytes up
//! the buffer is a region of a Linux `memfd` (one region per buffer, four
//! size classes per power of two), below that or where memfds fail it is an
//! ordinary pooled buffer. Either way [`HostBuffer::freeze`] makes it a plain
//! [`Bytes`], an ordinary frame.
//!
//! Serving a same-host peer, the data server [`export`]s each frame that
//! lies in a region as a [`ShmRef`] (pid, fd, inode, generation, offset,
//! length); the peer [`import`]s it by opening `/proc/PID/fd/FD` and mapping
//! it read-only, without a copy. Anything that fails there (another pid
//! namespace, permissions, the producer gone) is an error the caller answers
//! by asking for the bytes over the socket.
//!
//! Regions are pooled so producers write into pages already faulted in,
//! which a consumer may still be reading. Each region therefore starts with
//! a header page holding one atomic word that every process mapping it
//! shares: the count of views handed to peers, a generation and a retired
//! bit. Exporting a frame takes a view on the peer's behalf (the server
//! need not keep anything alive after replying); the peer's import takes it
//! over and its drop gives it back. A producer reuses a freed region only
//! by moving it, atomically, from (generation g, no views) to (g + 1, no
//! views), and an import checks the generation it was told. Consumers keep
//! their mappings of a producer's regions (dropping those retired), so
//! fetching from a region seen before costs no system call at all.
//!
//! Device frames have a same-host path of their own, device IPC
//! ([`weft_gpu::IpcHandle`]: CUDA IPC handles, or the memfd blocks of
//! emulated GPUs): the consumer copies them device to device at once and
//! the producer holds them only until told so, instead of the view counts
//! here (the runtime's data plane runs that protocol).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::{BufferPool, PooledBuf};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::debug;

/// Buffers from this size up are allocated in shared memory.
pub const MIN_SHARED: usize = 1 << 20;

/// Idle regions a process keeps for reuse, in bytes.
const MAX_IDLE_BYTES: usize = 1 << 30;

/// Regions freed while a peer may still map them, kept for reuse once it
/// lets go, in bytes. Past this the oldest is closed: its memory lives on
/// while a peer maps it and goes back to the system after.
const MAX_LENT_BYTES: usize = 1 << 30;

/// Mappings of other processes' regions a process keeps while it does not
/// use them, in bytes. A region its producer has since closed stays in
/// memory while mapped here, until the next import drops it; this bounds
/// that too.
const MAX_CACHED_BYTES: usize = 2 << 30;

/// The header page before a region's data: one shared state word.
const HEADER: usize = 4096;

/// The environment variable that turns same-host shared memory off (`0`),
/// so that fetches between workers on one host go over the socket.
pub const ENV_SAME_HOST_SHM: &str = "WEFT_SAME_HOST_SHM";

// The shared state word: imported views in the low 32 bits, the generation
// in bits 32..63, and the retired bit on top.
const REFS: u64 = 0xffff_ffff;
const RETIRED: u64 = 1 << 63;
const GEN_SHIFT: u32 = 32;
const GEN_MASK: u64 = 0x7fff_ffff;

fn generation(state: u64) -> u32 {
    ((state >> GEN_SHIFT) & GEN_MASK) as u32
}

/// Whether this process's environment allows same-host shared memory:
/// yes unless `WEFT_SAME_HOST_SHM` says `0`, `false`, `no` or `off` (a
/// malformed value is logged and leaves it on). Read once where a process
/// starts, into [`Config::shared_memory`](crate::Config::shared_memory);
/// nothing deeper reads the environment.
pub fn allowed_by_env() -> bool {
    match std::env::var(ENV_SAME_HOST_SHM) {
        Err(_) => true,
        Ok(v) => weft_gpu::units::parse_bool(&v).unwrap_or_else(|e| {
            tracing::warn!("{ENV_SAME_HOST_SHM}: {e}; shared memory stays on");
            true
        }),
    }
}

/// Which host and pid namespace a process runs in: two processes with equal
/// ids can name each other's file descriptors through `/proc`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostId {
    /// The kernel's boot id.
    pub boot: String,
    /// Inode of the pid namespace.
    pub pid_ns: u64,
}

/// This process's host identity, or `None` where the system has no shared
/// memory to offer.
pub fn host_id() -> Option<HostId> {
    static HOST: OnceLock<Option<HostId>> = OnceLock::new();
    HOST.get_or_init(|| if sys::SUPPORTED { sys::host_id() } else { None })
        .clone()
}

/// The host identity to offer peers under `config`: [`host_id`] where
/// shared memory is wanted, else `None`.
pub fn offered(config: &crate::Config) -> Option<HostId> {
    config.shared_memory.then(host_id).flatten()
}

/// A frame in a region of another process, as a data server describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmRef {
    /// The process holding the region open.
    pub pid: u32,
    /// Its file descriptor there.
    pub fd: i32,
    /// The memfd's inode, checked after opening (fd numbers are reused).
    pub ino: u64,
    /// The region's generation while the frame is valid.
    pub generation: u32,
    /// Data bytes of the region (after its header page).
    pub capacity: u64,
    /// Where the frame starts in the region's data.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

/// A host buffer to fill, then [`freeze`](HostBuffer::freeze) into bytes.
pub struct HostBuffer {
    kind: Kind,
    len: usize,
}

enum Kind {
    Shared(Region),
    Plain(PooledBuf),
}

/// A buffer of `len` bytes, in shared memory from [`MIN_SHARED`] up (where
/// the system allows), else from a pool of aligned buffers. The contents are
/// unspecified (a reused buffer keeps old bytes) until written. Its start is
/// 64-byte aligned.
pub fn alloc(len: usize) -> HostBuffer {
    let kind = if len >= MIN_SHARED && sys::SUPPORTED {
        match Pool::global().take(len) {
            Ok(region) => Kind::Shared(region),
            Err(error) => {
                log_once(
                    &FALLBACK_LOGGED,
                    || debug!(%error, "shared memory unavailable; large buffers are private"),
                );
                Kind::Plain(plain_pool().take(len))
            }
        }
    } else {
        Kind::Plain(plain_pool().take(len))
    };
    HostBuffer { kind, len }
}

static FALLBACK_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn log_once(flag: &std::sync::atomic::AtomicBool, log: impl FnOnce()) {
    if !flag.swap(true, Ordering::Relaxed) {
        log();
    }
}

fn plain_pool() -> &'static BufferPool {
    static POOL: OnceLock<BufferPool> = OnceLock::new();
    POOL.get_or_init(|| BufferPool::new(MAX_IDLE_BYTES))
}

impl HostBuffer {
    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it lies in shared memory.
    pub fn is_shared(&self) -> bool {
        matches!(self.kind, Kind::Shared(_))
    }

    /// The bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.kind {
            Kind::Shared(region) => &mut region.data_mut()[..self.len],
            Kind::Plain(buf) => buf.as_mut_slice(),
        }
    }

    /// Turns the filled buffer into shared bytes without copying; a region
    /// goes back to its pool when the last clone is dropped.
    pub fn freeze(self) -> Bytes {
        match self.kind {
            Kind::Shared(region) => Bytes::from_owner(Frozen {
                region: Some(region),
                len: self.len,
            }),
            Kind::Plain(buf) => buf.freeze(),
        }
    }
}

/// A memory mapping, unmapped on drop.
struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is plain memory owned by this value; sharing its address
// across threads is as safe as sharing a `Box<[u8]>`.
unsafe impl Send for Mapping {}
// SAFETY: as above; mutation goes through `&mut` or through atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping covers `len` readable bytes while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn state(&self) -> &AtomicU64 {
        // SAFETY: only header mappings (at least `HEADER` bytes, page aligned
        // and so aligned for u64, mapped read-write) are asked for their
        // state; the word is only ever accessed atomically by every process.
        unsafe { &*self.ptr.as_ptr().cast::<AtomicU64>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        sys::unmap(self.ptr, self.len);
    }
}

/// A region this process created: its memfd and a read-write mapping of
/// header and data.
struct Region {
    file: File,
    map: Mapping,
    /// Data bytes after the header.
    capacity: usize,
}

impl Region {
    fn create(capacity: usize) -> std::io::Result<Region> {
        let file = sys::memfd(HEADER + capacity)?;
        let ino = sys::inode(&file)?;
        let map = sys::map(&file, 0, HEADER + capacity, true, false)?;
        let region = Region { file, map, capacity };
        Registry::global().insert(
            region.data_start(),
            capacity,
            Export {
                fd: sys::raw_fd(&region.file),
                ino,
                header: region.map.ptr.as_ptr() as usize,
            },
        );
        Ok(region)
    }

    fn data_start(&self) -> usize {
        self.map.ptr.as_ptr() as usize + HEADER
    }

    fn data(&self) -> &[u8] {
        &self.map.bytes()[HEADER..]
    }

    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: `&mut self` owns the region's data while it is being filled
        // (before `freeze`, no view of it exists in this process, and peers
        // only map regions whose frames were exported after freezing).
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.as_ptr().add(HEADER), self.capacity) }
    }

    /// Makes the region this process's alone again: (g, no views) to
    /// (g + 1, no views). Fails while a peer holds a view.
    fn reclaim(&self) -> bool {
        let state = self.map.state();
        let current = state.load(Ordering::Acquire);
        if current & (REFS | RETIRED) != 0 {
            return false;
        }
        let next = (u64::from(generation(current).wrapping_add(1)) & GEN_MASK) << GEN_SHIFT;
        state
            .compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Peers' cached mappings of a retired region are dropped, so its
        // memory goes back to the system once their views are gone.
        self.map.state().fetch_or(RETIRED, Ordering::AcqRel);
        Registry::global().remove(self.data_start());
        LIVE_REGIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The owner behind frozen bytes of a region.
struct Frozen {
    region: Option<Region>,
    len: usize,
}

impl AsRef<[u8]> for Frozen {
    fn as_ref(&self) -> &[u8] {
        self.region.as_ref().map_or(&[], |r| &r.data()[..self.len])
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(region) = self.region.take() {
            Pool::global().give_back(region);
        }
    }
}

/// Regions by address, so a frame's bytes can be told to lie in one.
#[derive(Default)]
struct Registry {
    regions: Mutex<BTreeMap<usize, (usize, Export)>>,
}

/// What a data server needs to describe a frame in a region.
#[derive(Debug, Clone, Copy)]
struct Export {
    fd: i32,
    ino: u64,
    /// Address of the region's header mapping in this process.
    header: usize,
}

impl Registry {
    fn global() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(Registry::default)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, (usize, Export)>> {
        // A map updated by single inserts and removes: valid after a panic.
        self.regions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, start: usize, capacity: usize, export: Export) {
        self.lock().insert(start, (capacity, export));
    }

    fn remove(&self, start: usize) {
        self.lock().remove(&start);
    }

    /// The region holding `len` bytes at `ptr`: its export, data start and
    /// capacity.
    fn find(&self, ptr: usize, len: usize) -> Option<(Export, usize, usize)> {
        let regions = self.lock();
        let (&start, &(capacity, export)) = regions.range(..=ptr).next_back()?;
        (ptr + len <= start + capacity).then_some((export, start, capacity))
    }
}

/// Describes `bytes` for a peer on this host, if they lie in a shared
/// region (whether created here or mapped from another process), and hands
/// the peer one view of them: from here on the region is not reused until
/// the peer's [`import`] of this description has been dropped. A
/// description never imported (the peer failed or died first) keeps its
/// region from being reused, never from being freed.
pub fn export(bytes: &Bytes) -> Option<ShmRef> {
    if bytes.len() < MIN_SHARED || !sys::SUPPORTED {
        return None;
    }
    let ptr = bytes.as_ptr() as usize;
    let (export, start, capacity) = Registry::global().find(ptr, bytes.len())?;
    // SAFETY: the registry holds only live header mappings, and `bytes`
    // keeps the region (and so its header mapping) alive.
    let state = unsafe { &*(export.header as *const AtomicU64) };
    // `bytes` keeps the region from being reclaimed, so its generation is
    // the current one.
    let generation = generation(state.load(Ordering::Acquire));
    acquire(state, generation).then_some(ShmRef {
        pid: std::process::id(),
        fd: export.fd,
        ino: export.ino,
        generation,
        capacity: capacity as u64,
        offset: (ptr - start) as u64,
        len: bytes.len() as u64,
    })
}

/// Takes one view of a region while it is at generation `want`.
fn acquire(state: &AtomicU64, want: u32) -> bool {
    let mut current = state.load(Ordering::Acquire);
    loop {
        if current & RETIRED != 0 || generation(current) != want || current & REFS == REFS {
            return false;
        }
        match state.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => current = now,
        }
    }
}

/// Maps a frame a same-host peer [`export`]ed, without copying it, taking
/// over the view the export handed out (so each description is imported
/// at most once). Fails, and the caller asks for the bytes instead, when
/// the region cannot be opened or is not the one described.
pub fn import(frame: &ShmRef) -> Result<Bytes, String> {
    let end = frame.offset.checked_add(frame.len);
    if end.is_none_or(|end| end > frame.capacity) {
        return Err(format!("a shared frame of {} bytes overruns its region", frame.len));
    }
    let remote = Cache::global().get_or_map(frame)?;
    let state = remote.header.state().load(Ordering::Acquire);
    if generation(state) != frame.generation || state & REFS == 0 {
        return Err("the shared region is not the one described".into());
    }
    Ok(Bytes::from_owner(View {
        remote,
        offset: frame.offset as usize,
        len: frame.len as usize,
    }))
}

/// Another process's region, mapped here: its header read-write (for the
/// shared state word), its data read-only.
struct Remote {
    file: File,
    header: Mapping,
    data: Mapping,
}

impl Remote {
    fn open(frame: &ShmRef) -> Result<Remote, String> {
        let path = format!("/proc/{}/fd/{}", frame.pid, frame.fd);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {path}: {e}"))?;
        let ino = sys::inode(&file).map_err(|e| format!("cannot stat {path}: {e}"))?;
        let size = file.metadata().map_err(|e| format!("cannot stat {path}: {e}"))?.len();
        let capacity = usize::try_from(frame.capacity).map_err(|e| e.to_string())?;
        if ino != frame.ino || size != (HEADER + capacity) as u64 {
            return Err(format!("{path} is no longer the region described"));
        }
        let header = sys::map(&file, 0, HEADER, true, false).map_err(|e| format!("cannot map {path}: {e}"))?;
        let data = sys::map(&file, HEADER, capacity, false, true).map_err(|e| format!("cannot map {path}: {e}"))?;
        Ok(Remote { file, header, data })
    }

    fn retired(&self) -> bool {
        self.header.state().load(Ordering::Acquire) & RETIRED != 0
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        Registry::global().remove(self.data.ptr.as_ptr() as usize);
    }
}

/// The owner behind imported bytes: one view of a mapped region.
struct View {
    remote: Arc<Remote>,
    offset: usize,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        &self.remote.data.bytes()[self.offset..self.offset + self.len]
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.remote.header.state().fetch_sub(1, Ordering::AcqRel);
    }
}

/// Mappings of other processes' regions, by (pid, inode), kept so that a
/// region reused by its producer maps here at no cost.
#[derive(Default)]
struct Cache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    remotes: HashMap<(u32, u64), Arc<Remote>>,
    bytes: usize,
}

impl Cache {
    fn global() -> &'static Cache {
        static CACHE: OnceLock<Cache> = OnceLock::new();
        CACHE.get_or_init(Cache::default)
    }

    fn get_or_map(&self, frame: &ShmRef) -> Result<Arc<Remote>, String> {
        let key = (frame.pid, frame.ino);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(remote) = inner.remotes.get(&key)
            && !remote.retired()
        {
            return Ok(remote.clone());
        }
        // Drop what producers retired (their memory is freed once views go)
        // and, past the cap, everything not in use.
        inner.remotes.retain(|_, r| !r.retired());
        if inner.bytes > MAX_CACHED_BYTES {
            inner.remotes.retain(|_, r| Arc::strong_count(r) > 1);
        }
        let remote = Arc::new(Remote::open(frame)?);
        debug!(
            pid = frame.pid,
            fd = frame.fd,
            bytes = frame.capacity,
            "mapped a peer's shared region"
        );
        let data = &remote.data;
        Registry::global().insert(
            data.ptr.as_ptr() as usize,
            data.len,
            Export {
                fd: sys::raw_fd(&remote.file),
                ino: frame.ino,
                header: remote.header.ptr.as_ptr() as usize,
            },
        );
        inner.remotes.insert(key, remote.clone());
        inner.bytes = inner.remotes.values().map(|r| r.data.len).sum();
        Ok(remote)
    }
}

/// Live regions created here, each holding a file descriptor.
static LIVE_REGIONS: AtomicUsize = AtomicUsize::new(0);

/// Idle regions by size class, and freed ones a peer still maps.
#[derive(Default)]
struct Pool {
    inner: Mutex<PoolInner>,
}

#[derive(Default)]
struct PoolInner {
    idle: HashMap<usize, Vec<Region>>,
    idle_bytes: usize,
    lent: Vec<Region>,
}

impl Pool {
    fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(Pool::default)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolInner> {
        // Lists of regions, each update a single push or pop.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, len: usize) -> std::io::Result<Region> {
        let class = size_class(len);
        let reused = {
            let mut inner = self.lock();
            inner.collect_returned();
            let region = inner.idle.get_mut(&class).and_then(Vec::pop);
            if region.is_some() {
                inner.idle_bytes -= class;
            }
            region
        };
        if let Some(region) = reused {
            return Ok(region);
        }
        // Half the descriptors a process may open, for sockets and files.
        if LIVE_REGIONS.fetch_add(1, Ordering::Relaxed) >= sys::max_regions() {
            LIVE_REGIONS.fetch_sub(1, Ordering::Relaxed);
            return Err(std::io::Error::other("too many shared regions open"));
        }
        debug!(bytes = class, "new shared region");
        Region::create(class).inspect_err(|_| {
            LIVE_REGIONS.fetch_sub(1, Ordering::Relaxed);
        })
    }

    fn give_back(&self, region: Region) {
        let mut inner = self.lock();
        if region.reclaim() {
            inner.keep(region);
        } else {
            inner.lent.push(region);
            while inner.lent.iter().map(|r| r.capacity).sum::<usize>() > MAX_LENT_BYTES {
                inner.lent.remove(0);
            }
        }
    }
}

impl PoolInner {
    fn keep(&mut self, region: Region) {
        if self.idle_bytes + region.capacity <= MAX_IDLE_BYTES {
            self.idle_bytes += region.capacity;
            self.idle.entry(region.capacity).or_default().push(region);
        }
    }

    /// Moves lent regions that peers no longer map back to the idle lists.
    fn collect_returned(&mut self) {
        let lent = std::mem::take(&mut self.lent);
        for region in lent {
            if region.reclaim() {
                self.keep(region);
            } else {
                self.lent.push(region);
            }
        }
    }
}

/// The capacity a request of `len` bytes is served from: four classes per
/// power of two, in whole pages.
fn size_class(len: usize) -> usize {
    let k = usize::BITS - 1 - len.max(HEADER).leading_zeros();
    let step = (1usize << (k - 2)).max(HEADER);
    len.div_ceil(step) * step
}

/// Raises this process's soft limit on open files to its hard limit, so that
/// shared regions (a descriptor each) and connections have room. Returns the
/// new soft limit.
pub fn raise_fd_limit() -> Option<u64> {
    sys::raise_fd_limit()
}

#[cfg(target_os = "linux")]
mod sys {
    //! The system calls behind shared regions, on Linux.

    use std::fs::File;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::MetadataExt;
    use std::ptr::NonNull;
    use std::sync::OnceLock;

    use super::{HostId, Mapping};

    pub(super) const SUPPORTED: bool = true;

    pub(super) fn host_id() -> Option<HostId> {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let pid_ns = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
        Some(HostId {
            boot: boot.trim().to_string(),
            pid_ns,
        })
    }

    pub(super) fn memfd(len: usize) -> std::io::Result<File> {
        // SAFETY: the name is a NUL-terminated string; the flags are valid.
        let fd = unsafe { libc::memfd_create(c"weft-shm".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by no one else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64)?;
        Ok(file)
    }

    pub(super) fn inode(file: &File) -> std::io::Result<u64> {
        Ok(file.metadata()?.ino())
    }

    pub(super) fn raw_fd(file: &File) -> i32 {
        file.as_raw_fd()
    }

    /// Maps `len` bytes of `file` from `offset`, shared, read-write or
    /// read-only, populating the page tables at once if asked.
    pub(super) fn map(file: &File, offset: usize, len: usize, write: bool, populate: bool) -> std::io::Result<Mapping> {
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        let offset = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
        // SAFETY: a fresh mapping at an address the kernel picks; it aliases
        // no Rust object, and `Mapping` unmaps it exactly once.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, file.as_raw_fd(), offset) };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    pub(super) fn unmap(ptr: NonNull<u8>, len: usize) {
        // SAFETY: `ptr` and `len` describe a mapping made by `map` that no
        // reference outlives (its owner is being dropped).
        unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    }

    fn nofile() -> Option<libc::rlimit> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into the struct we own.
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
    }

    pub(super) fn raise_fd_limit() -> Option<u64> {
        let mut limit = nofile()?;
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            // SAFETY: setrlimit reads one rlimit from the struct we own.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        }
        nofile().map(|l| l.rlim_cur)
    }

    pub(super) fn max_regions() -> usize {
        static MAX: OnceLock<usize> = OnceLock::new();
        *MAX.get_or_init(|| nofile().map_or(512, |l| usize::try_from(l.rlim_cur / 2).unwrap_or(usize::MAX)))
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! Elsewhere there are no shared regions: large buffers are private and
    //! same-host fetches go over the socket.

    use std::fs::File;
    use std::ptr::NonNull;

    use super::{HostId, Mapping};

    pub(super) const SUPPORTED: bool = false;

    fn unsupported() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::Unsupported, "no shared regions on this system")
    }

    pub(super) fn host_id() -> Option<HostId> {
        None
    }

    pub(super) fn memfd(_: usize) -> std::io::Result<File> {
        Err(unsupported())
    }

    pub(super) fn inode(_: &File) -> std::io::Result<u64> {
        Err(unsupported())
    }

    pub(super) fn raw_fd(_: &File) -> i32 {
        -1
    }

    pub(super) fn map(_: &File, _: usize, _: usize, _: bool, _: bool) -> std::io::Result<Mapping> {
        Err(unsupported())
    }

    pub(super) fn unmap(_: NonNull<u8>, _: usize) {}

    pub(super) fn raise_fd_limit() -> Option<u64> {
        None
    }

    pub(super) fn max_regions() -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(len: usize, byte: u8) -> Bytes {
        let mut buf = alloc(len);
        buf.as_mut_slice().fill(byte);
        buf.freeze()
    }

    #[test]
    fn classes_round_up_by_at_most_a_quarter_in_pages() {
        for len in [MIN_SHARED, MIN_SHARED + 1, 3_000_001, 256 << 20] {
            let class = size_class(len);
            assert!(class >= len && class <= len + len / 4, "{len} -> {class}");
            assert_eq!(class % HEADER, 0);
        }
    }

    #[test]
    fn small_buffers_are_private_and_large_ones_shared() {
        let small = filled(1000, 1);
        assert!(export(&small).is_none());
        assert_eq!(&small[..], &[1u8; 1000][..]);
        let buf = alloc(MIN_SHARED);
        assert_eq!(buf.is_shared(), sys::SUPPORTED);
        assert_eq!(buf.len(), MIN_SHARED);
    }

    #[test]
    fn an_exported_frame_imports_as_the_same_bytes_and_blocks_reuse() {
        if !sys::SUPPORTED {
            return;
        }
        let len = 3 * MIN_SHARED + 5;
        let bytes = filled(len, 7);
        assert_eq!(bytes.as_ptr() as usize % 64, 0);
        let slice = bytes.slice(100..len);
        let frame = export(&slice).expect("a shared frame");
        assert_eq!((frame.offset, frame.len), (100, (len - 100) as u64));
        // Mapping our own region through /proc is what a peer does.
        let imported = import(&frame).expect("imports");
        assert_eq!(imported.len(), len - 100);
        assert!(imported.iter().all(|&b| b == 7));
        assert_ne!(imported.as_ptr(), slice.as_ptr(), "a second mapping, not the same one");
        // The producer frees its bytes while the view lives: the region is
        // lent, not reused, so a new buffer of the class is another region.
        let first = bytes.as_ptr();
        drop((bytes, slice));
        let other = filled(len, 9);
        assert_ne!(other.as_ptr(), first);
        assert!(imported.iter().all(|&b| b == 7), "the view is untouched");
        // Once the view is gone, the region is reclaimed (a new generation):
        // the old description no longer imports.
        drop(imported);
        drop(other);
        let again = filled(len, 3);
        assert!(import(&frame).is_err(), "a stale generation is refused");
        drop(again);
    }

    #[test]
    fn an_export_never_imported_blocks_reuse_but_not_freeing() {
        if !sys::SUPPORTED {
            return;
        }
        let len = 5 * MIN_SHARED + 3;
        let bytes = filled(len, 1);
        let first = bytes.as_ptr();
        let _lost = export(&bytes).expect("shared");
        drop(bytes);
        let next = filled(len, 2);
        assert_ne!(next.as_ptr(), first, "the region a peer may still map is not reused");
    }

    #[test]
    fn the_view_of_a_region_already_mapped_costs_no_new_mapping() {
        if !sys::SUPPORTED {
            return;
        }
        let bytes = filled(2 * MIN_SHARED, 4);
        let frame = export(&bytes).expect("shared");
        let a = import(&frame).expect("imports");
        let b = import(&export(&bytes).expect("shared again")).expect("imports again");
        assert_eq!(a.as_ptr(), b.as_ptr(), "one cached mapping");
        // An imported frame can be exported on, naming this process.
        let on = export(&a).expect("re-exported");
        assert_eq!(on.pid, std::process::id());
        assert_eq!(on.generation, frame.generation);
    }

    #[test]
    fn bad_descriptions_are_errors() {
        if !sys::SUPPORTED {
            return;
        }
        let bytes = filled(MIN_SHARED, 1);
        let good = export(&bytes).expect("shared");
        let overrun = ShmRef {
            len: good.capacity + 1,
            ..good
        };
        assert!(import(&overrun).is_err());
        let wrong_inode = ShmRef { ino: 1, ..good };
        assert!(import(&wrong_inode).is_err());
        let no_process = ShmRef {
            pid: u32::MAX - 1,
            ino: 2,
            ..good
        };
        assert!(import(&no_process).unwrap_err().contains("cannot open"));
    }

    #[test]
    fn the_host_is_identified_and_offered_only_when_wanted() {
        if sys::SUPPORTED {
            let host = host_id().expect("linux has a boot id");
            assert!(!host.boot.is_empty());
            assert_eq!(offered(&crate::Config::default()), Some(host));
        }
        let off = crate::Config {
            shared_memory: false,
            ..Default::default()
        };
        assert_eq!(offered(&off), None);
    }
}
