//! A worker's own figures, for its status page and `/metrics`.
//!
//! The runtime serves no HTTP: a [`StatusPage`] (`weft-dashboard`'s) is
//! handed a listener the worker bound and a [`WorkerProbe`], and reads the
//! probe when a page is asked for. Nothing here is paid per task: memory
//! comes from the store's [`MemoryStats`], task counts are asked of the
//! worker's event loop on each read (an O(tasks) count there), CPU time
//! and resident memory are read from `/proc` then, and transfer bytes are
//! added once per fetch and per data request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::Vitals;
use crate::store::{MemorySnapshot, MemoryStats, process_memory};

pub use super::state::TaskCounts;

/// How long a read waits for the event loop's task counts (it answers
/// between two events; none while the worker is between schedulers).
const COUNTS_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves a worker's status page and metrics; `weft-dashboard` has one.
pub trait StatusPage: Send + Sync {
    /// Serves `probe` on `listener` until the returned future is dropped
    /// (the worker stops).
    fn serve(&self, listener: TcpListener, probe: WorkerProbe) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A worker's own dashboard: where, and what serves it.
#[derive(Clone)]
pub struct WorkerDashboard {
    /// `HOST:PORT`, or `:PORT` on every interface; `None`: a free port on
    /// the host the worker's data server listens on.
    pub address: Option<String>,
    /// What serves it.
    pub server: Arc<dyn StatusPage>,
}

impl std::fmt::Debug for WorkerDashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerDashboard")
            .field("address", &self.address)
            .finish()
    }
}

/// What a worker is, as its page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerDescription {
    /// Its unique name.
    pub name: String,
    /// Its data address.
    pub address: String,
    /// Its scheduler's address.
    pub scheduler: String,
    /// Compute threads.
    pub nthreads: usize,
    /// Host memory limit for results, bytes (0: none).
    pub memory_limit: u64,
    /// Device memory limit for results, bytes (0: no GPU, or none).
    pub device_limit: u64,
    /// Fractions of `memory_limit`: spill from, pause at.
    pub spill: f64,
    /// See `spill`.
    pub pause: f64,
}

/// What a worker's page reads, at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerFigures {
    /// Tasks by state; `None` while the worker is not registered (or its
    /// event loop did not answer within a second).
    pub tasks: Option<TaskCounts>,
    /// Its results' memory by tier, and what was spilled and read back.
    pub memory: MemorySnapshot,
    /// Bytes fetched from peers.
    pub bytes_in: u64,
    /// Bytes served to peers and clients.
    pub bytes_out: u64,
    /// Results fetched from peers.
    pub fetched: u64,
    /// Results served to peers and clients.
    pub served: u64,
    /// CPU time of the process so far, seconds (user and system).
    pub cpu_seconds: f64,
    /// CPU use over the last heartbeat interval, percent of one core.
    pub cpu_percent: f32,
    /// Resident memory of the process, bytes.
    pub rss_bytes: u64,
    /// Seconds since the worker started.
    pub uptime_s: f64,
}

/// Transfer counters, added to once per fetch and per data request.
#[derive(Debug, Default)]
pub(crate) struct TransferCounters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    fetched: AtomicU64,
    served: AtomicU64,
}

impl TransferCounters {
    /// `results` fetched from a peer, `bytes` in all.
    pub(crate) fn fetched(&self, results: usize, bytes: u64) {
        self.fetched.fetch_add(results as u64, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `results` served to a peer or client, `bytes` in all.
    pub(crate) fn served(&self, results: usize, bytes: u64) {
        self.served.fetch_add(results as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The reading end of a worker's figures. Cheap to clone.
#[derive(Clone)]
pub struct WorkerProbe {
    inner: Arc<ProbeInner>,
}

struct ProbeInner {
    description: WorkerDescription,
    memory: Arc<MemoryStats>,
    transfers: Arc<TransferCounters>,
    /// Asks the event loop for its task counts.
    counts: mpsc::Sender<oneshot::Sender<TaskCounts>>,
    /// The last heartbeat's CPU percent (`f32` bits).
    cpu_percent: AtomicU32,
    started: Instant,
}

/// Requests for task counts waiting for the event loop, at most.
const PENDING_COUNTS: usize = 16;

impl WorkerProbe {
    /// A probe, with the receiving end of its task-count requests (for
    /// the event loop) and the transfer counters (for the data plane).
    pub(crate) fn new(
        description: WorkerDescription,
        memory: Arc<MemoryStats>,
    ) -> (
        WorkerProbe,
        mpsc::Receiver<oneshot::Sender<TaskCounts>>,
        Arc<TransferCounters>,
    ) {
        let (counts, requests) = mpsc::channel(PENDING_COUNTS);
        let transfers = Arc::new(TransferCounters::default());
        let probe = WorkerProbe {
            inner: Arc::new(ProbeInner {
                description,
                memory,
                transfers: transfers.clone(),
                counts,
                cpu_percent: AtomicU32::new(0),
                started: Instant::now(),
            }),
        };
        (probe, requests, transfers)
    }

    /// What the worker is.
    pub fn description(&self) -> &WorkerDescription {
        &self.inner.description
    }

    /// Notes the CPU use a heartbeat reported.
    pub(crate) fn set_vitals(&self, vitals: Vitals) {
        self.inner
            .cpu_percent
            .store(vitals.cpu_percent.to_bits(), Ordering::Relaxed);
    }

    /// Reads every figure now.
    pub async fn read(&self) -> WorkerFigures {
        let inner = &self.inner;
        let tasks = async {
            let (reply, answer) = oneshot::channel();
            inner.counts.try_send(reply).ok()?;
            tokio::time::timeout(COUNTS_TIMEOUT, answer).await.ok()?.ok()
        };
        let t = &inner.transfers;
        WorkerFigures {
            tasks: tasks.await,
            memory: inner.memory.snapshot(),
            bytes_in: t.bytes_in.load(Ordering::Relaxed),
            bytes_out: t.bytes_out.load(Ordering::Relaxed),
            fetched: t.fetched.load(Ordering::Relaxed),
            served: t.served.load(Ordering::Relaxed),
            cpu_seconds: process_cpu_seconds().unwrap_or(0.0),
            cpu_percent: f32::from_bits(inner.cpu_percent.load(Ordering::Relaxed)),
            rss_bytes: process_memory(),
            uptime_s: inner.started.elapsed().as_secs_f64(),
        }
    }
}

/// CPU time this process used so far (user and system), seconds, from
/// `/proc/self/stat`; `None` where there is no such file.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// utime + stime of a `/proc/PID/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from its end.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Fields 3 (state) to 13 come first; 14 is utime, 15 stime.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf(3) reads a constant of the system; no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Measures the process's CPU use between two heartbeats.
#[derive(Debug, Default)]
pub(crate) struct CpuMeter {
    last: Option<(Instant, f64)>,
}

impl CpuMeter {
    /// CPU use since the previous call (0 on the first) and resident memory.
    pub(crate) fn sample(&mut self) -> Vitals {
        let now = Instant::now();
        let cpu = process_cpu_seconds().unwrap_or(0.0);
        let cpu_percent = match self.last {
            Some((then, before)) => {
                let wall = now.duration_since(then).as_secs_f64();
                if wall > 0.0 {
                    ((cpu - before) / wall * 100.0) as f32
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, cpu));
        Vitals {
            cpu_percent: cpu_percent.max(0.0),
            rss_bytes: process_memory(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (weft (worker) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1234 0 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn the_meter_sees_this_process_working() {
        let mut meter = CpuMeter::default();
        assert_eq!(meter.sample().cpu_percent, 0.0, "no interval yet");
        // Work until the process has used 50 ms of CPU more (however
        // busy the machine), then look.
        let start = process_cpu_seconds().expect("/proc/self/stat");
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while process_cpu_seconds().is_some_and(|s| s < start + 0.05) && Instant::now() < give_up {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let vitals = meter.sample();
        assert!(vitals.cpu_percent > 0.0, "50 ms of CPU show: {vitals:?}");
        assert!(vitals.rss_bytes > 0);
    }
}
