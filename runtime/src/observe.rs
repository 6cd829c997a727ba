//! Watching a running scheduler: what the dashboard and `/metrics` read.
//!
//! The scheduler's reactor owns a [`Recorder`]. For each worker report it
//! updates a few exact counters (tasks finished per op with a duration
//! histogram, bytes transferred, spilled and unspilled) and, while someone
//! subscribed, appends one [`ObsEvent`] to a bounded buffer: O(1), no lock,
//! no allocation beyond the buffer's. On a timer it publishes the buffered
//! events as one batch (a broadcast channel: a slow reader loses batches,
//! the reactor never waits) and, while someone looks, an [`Observation`]
//! (a [`Snapshot`] plus the counters) through a `watch` channel, at most
//! every [`ObserveConfig::interval`] and never more often than keeps the
//! snapshots under about 3% of the reactor's time.
//!
//! The other end is an [`Observer`]: cheap to clone, it never blocks the
//! reactor. The runtime knows nothing of HTTP; `weft-dashboard` serves
//! these. A client may also ask for the event stream over its own
//! connection (`stream_to_client`, for performance reports): a task beside
//! the reactor forwards it as [`ObservedBatch`]es with a
//! [`ReportSample`] each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, oneshot, watch};

use crate::ids::{FxHashMap, Key, SharedStr, WorkerId};
use crate::protocol::{FromWorker, Tier, ToClient, Vitals};
use crate::scheduler::{Scheduler, Snapshot, SnapshotCache, TaskState, TierBytes};

/// Upper bounds of the task-duration histogram buckets, in seconds
/// (a last, infinite bucket is implied).
pub const DURATION_BUCKETS_S: [f64; 12] = [1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0];

/// A snapshot taken in time T waits at least this many times T before the
/// next one: snapshots cost at most about 3% of the reactor's time while
/// someone looks (10^5 tasks take about 10 ms: 2-3 updates a second).
const SNAPSHOT_COST_FACTOR: u32 = 30;

/// How the reactor publishes what it sees.
#[derive(Clone, Debug)]
pub struct ObserveConfig {
    /// Shortest time between two snapshots (250 ms: four updates a
    /// second while someone looks; a saturated reactor reaches its timer
    /// late, and `weft bench noop --dashboard` sees 2-3 a second).
    pub interval: Duration,
    /// Events buffered between two publications, at most; more are
    /// dropped (and counted).
    pub max_events: usize,
    /// Event batches a slow reader may fall behind by before it loses the
    /// oldest.
    pub event_batches: usize,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            interval: Duration::from_millis(250),
            max_events: 1 << 16,
            event_batches: 64,
        }
    }
}

/// Something that happened on a worker, for task streams and reports.
/// Times are milliseconds since the Unix epoch, as the scheduler saw them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObsEvent {
    /// A task finished; it started its compute time earlier (as the
    /// worker measured it). The most frequent event, so it is small: its
    /// op by index (the op's name is `Snapshot::ops[op]`), no key.
    Task {
        /// Where it ran.
        worker: WorkerId,
        /// Its op's index in [`Snapshot::ops`].
        op: u32,
        /// When it started (its end less its compute time).
        start_ms: f64,
        /// When the scheduler heard it finished.
        end_ms: f64,
        /// Its result's size.
        nbytes: u64,
    },
    /// A task's op failed (it may be retried).
    Failed {
        /// Where it ran.
        worker: WorkerId,
        /// Its key.
        key: Key,
        /// Its op.
        op: SharedStr,
        /// When the scheduler heard it.
        at_ms: f64,
        /// The op's message.
        message: String,
    },
    /// A worker fetched a result from a peer.
    Transfer {
        /// A worker that held it (the one the fetch most likely used).
        from: Option<WorkerId>,
        /// The worker that fetched it.
        to: WorkerId,
        /// The result's key.
        key: Key,
        /// Its size.
        nbytes: u64,
        /// When the scheduler heard of it.
        at_ms: f64,
    },
    /// A result moved between memory tiers on its worker.
    Moved {
        /// The worker.
        worker: WorkerId,
        /// The result's key.
        key: Key,
        /// Its size.
        nbytes: u64,
        /// Where it was.
        from: Tier,
        /// Where it is now.
        to: Tier,
        /// When the scheduler heard of it.
        at_ms: f64,
    },
}

impl ObsEvent {
    /// When it happened (its end, for a task), milliseconds since the
    /// Unix epoch.
    pub fn at_ms(&self) -> f64 {
        match self {
            ObsEvent::Task { end_ms, .. } => *end_ms,
            ObsEvent::Failed { at_ms, .. } | ObsEvent::Transfer { at_ms, .. } | ObsEvent::Moved { at_ms, .. } => *at_ms,
        }
    }
}

/// Exact counters of one op since the scheduler started.
#[derive(Clone, Debug, Serialize)]
pub struct OpTotals {
    /// The op.
    pub name: SharedStr,
    /// Tasks of it that finished.
    pub finished: u64,
    /// Runs of it that failed (retries included).
    pub failed: u64,
    /// Finished tasks per duration bucket ([`DURATION_BUCKETS_S`], then
    /// the infinite one); not cumulative.
    pub buckets: [u64; DURATION_BUCKETS_S.len() + 1],
    /// Sum of the durations, seconds.
    pub duration_sum_s: f64,
}

/// Exact counters of one worker's transfers.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct WorkerTotals {
    /// Bytes it fetched from peers.
    pub bytes_in: u64,
    /// Bytes peers fetched from it (as far as the scheduler can tell: the
    /// first other holder of each fetched result).
    pub bytes_out: u64,
    /// Results it fetched.
    pub fetches: u64,
}

/// Exact counters since the scheduler started.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Per op, by the op's index.
    pub ops: Vec<OpTotals>,
    /// Results fetched between workers.
    pub transfers: u64,
    /// Their bytes.
    pub transfer_bytes: u64,
    /// Bytes moved to a slower tier, by the tier they moved to.
    pub spilled: TierBytes,
    /// Bytes moved to a faster tier, by the tier they moved to.
    pub unspilled: TierBytes,
    /// Per worker, by id.
    pub workers: Vec<(WorkerId, WorkerTotals)>,
    /// Events not published because the buffer was full.
    pub events_dropped: u64,
}

/// What a dashboard reads: the scheduler's state and the counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observation {
    /// Increases with each publication.
    pub seq: u64,
    /// When it was taken, milliseconds since the Unix epoch.
    pub unix_ms: f64,
    /// The scheduler's state.
    pub snapshot: Snapshot,
    /// The counters.
    pub totals: Totals,
    /// Seconds since each live worker was last heard from, by id.
    pub last_seen_s: Vec<(WorkerId, f64)>,
    /// What each live worker's last heartbeat said (CPU, resident memory),
    /// by id; missing for one that sent none yet.
    pub vitals: Vec<(WorkerId, Vitals)>,
    /// Event-loop lag: how late the reactor's timer fired last, seconds.
    pub loop_lag_s: f64,
    /// The largest such lag since the previous observation, seconds.
    pub loop_lag_max_s: f64,
    /// How long the snapshot took, seconds.
    pub snapshot_s: f64,
}

/// State shared by the two ends.
struct Shared {
    /// Someone asked for a fresh observation.
    wanted: AtomicBool,
    /// Open [`Watch`]es: while any, observations flow continuously.
    watchers: AtomicUsize,
    /// Someone subscribed to events since the recorder last looked: it
    /// starts collecting at once, not at its next tick.
    subscribed: AtomicBool,
}

/// The reading end: latest observations and event batches. Cheap to clone.
#[derive(Clone)]
pub struct Observer {
    observations: watch::Receiver<Arc<Observation>>,
    events: broadcast::Sender<Arc<Vec<ObsEvent>>>,
    shared: Arc<Shared>,
    interval: Duration,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").field("interval", &self.interval).finish()
    }
}

impl Observer {
    /// The latest observation (possibly old when nobody watched).
    pub fn latest(&self) -> Arc<Observation> {
        self.observations.borrow().clone()
    }

    /// An observation taken after this call, or the latest one when none
    /// comes within `timeout` (the scheduler stopped).
    pub async fn fresh(&self, timeout: Duration) -> Arc<Observation> {
        let mut rx = self.observations.clone();
        let seq = rx.borrow_and_update().seq;
        self.shared.wanted.store(true, Ordering::Relaxed);
        let newer = async {
            loop {
                if rx.changed().await.is_err() {
                    return;
                }
                if rx.borrow_and_update().seq > seq {
                    return;
                }
                // Taken before we asked: ask again.
                self.shared.wanted.store(true, Ordering::Relaxed);
            }
        };
        let _ = tokio::time::timeout(timeout, newer).await;
        self.latest()
    }

    /// A continuous feed of observations, one per interval, for as long as
    /// the [`Watch`] lives.
    pub fn watch(&self) -> Watch {
        self.shared.watchers.fetch_add(1, Ordering::Relaxed);
        Watch {
            rx: self.observations.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Batches of events from now on. A reader that falls behind by more
    /// than [`ObserveConfig::event_batches`] batches loses the oldest.
    pub fn events(&self) -> broadcast::Receiver<Arc<Vec<ObsEvent>>> {
        let rx = self.events.subscribe();
        self.shared.subscribed.store(true, Ordering::Relaxed);
        rx
    }

    /// The shortest time between two observations.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// A subscription to observations; see [`Observer::watch`].
pub struct Watch {
    rx: watch::Receiver<Arc<Observation>>,
    shared: Arc<Shared>,
}

impl Watch {
    /// The next observation; `None` once the scheduler stopped.
    pub async fn next(&mut self) -> Option<Arc<Observation>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }

    /// The latest observation, without waiting.
    pub fn latest(&mut self) -> Arc<Observation> {
        self.rx.borrow_and_update().clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.shared.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn rank(tier: Tier) -> u8 {
    match tier {
        Tier::Device => 0,
        Tier::Host => 1,
        Tier::Disk => 2,
    }
}

/// The reactor's end; see the module docs.
pub struct Recorder {
    config: ObserveConfig,
    observations: watch::Sender<Arc<Observation>>,
    events: broadcast::Sender<Arc<Vec<ObsEvent>>>,
    shared: Arc<Shared>,
    /// Whether anyone subscribed to events (checked on each tick).
    collecting: bool,
    pending: Vec<ObsEvent>,
    totals: Totals,
    workers: FxHashMap<WorkerId, WorkerTotals>,
    cache: SnapshotCache,
    /// The scheduler's event count at the last snapshot.
    snapshot_events: u64,
    seq: u64,
    last_publish: Option<Instant>,
    gap: Duration,
    lag: f64,
    lag_max: f64,
}

impl Recorder {
    /// A recorder and the observer that reads it.
    pub fn new(config: ObserveConfig) -> (Recorder, Observer) {
        let (observations, rx) = watch::channel(Arc::new(Observation::default()));
        let (events, _) = broadcast::channel(config.event_batches.max(1));
        let shared = Arc::new(Shared {
            wanted: AtomicBool::new(false),
            watchers: AtomicUsize::new(0),
            subscribed: AtomicBool::new(false),
        });
        let observer = Observer {
            observations: rx,
            events: events.clone(),
            shared: shared.clone(),
            interval: config.interval,
        };
        let recorder = Recorder {
            gap: config.interval,
            config,
            observations,
            events,
            shared,
            collecting: false,
            pending: Vec::new(),
            totals: Totals::default(),
            workers: FxHashMap::default(),
            cache: SnapshotCache::default(),
            snapshot_events: 0,
            seq: 0,
            last_publish: None,
            lag: 0.0,
            lag_max: 0.0,
        };
        (recorder, observer)
    }

    /// How often the reactor should call [`Recorder::tick`].
    pub fn tick_interval(&self) -> Duration {
        (self.config.interval / 5).max(Duration::from_millis(1))
    }

    fn push(&mut self, event: impl FnOnce() -> ObsEvent) {
        if !self.collecting {
            if !self.shared.subscribed.load(Ordering::Relaxed) {
                return;
            }
            self.shared.subscribed.store(false, Ordering::Relaxed);
            self.collecting = true;
        }
        if self.pending.len() < self.config.max_events {
            self.pending.push(event());
        } else {
            self.totals.events_dropped += 1;
        }
    }

    /// Notes a worker's report before the scheduler handles it. O(1).
    /// Counts only what the scheduler will accept (a finished report for
    /// a task processing on that worker, and so on), so the counters match
    /// its books.
    pub fn before(&mut self, scheduler: &Scheduler, worker: WorkerId, msg: &FromWorker) {
        match msg {
            FromWorker::Finished {
                task,
                nbytes,
                compute_us,
                ..
            } => {
                let Some(t) = scheduler.task_view(*task) else {
                    return;
                };
                if t.state != TaskState::Processing(worker) {
                    return;
                }
                let op = self.op(t.op_index, t.op);
                let secs = *compute_us as f64 * 1e-6;
                let bucket = DURATION_BUCKETS_S.partition_point(|&b| b < secs);
                op.buckets[bucket] += 1;
                op.finished += 1;
                op.duration_sum_s += secs;
                let (op, nbytes) = (t.op_index as u32, *nbytes);
                self.push(|| {
                    let end_ms = unix_ms();
                    ObsEvent::Task {
                        worker,
                        op,
                        start_ms: end_ms - secs * 1e3,
                        end_ms,
                        nbytes,
                    }
                });
            }
            FromWorker::Failed { task, error } => {
                let Some(t) = scheduler.task_view(*task) else {
                    return;
                };
                if t.state != TaskState::Processing(worker) {
                    return;
                }
                self.op(t.op_index, t.op).failed += 1;
                let (key, op) = (t.key, t.op);
                self.push(|| ObsEvent::Failed {
                    worker,
                    key: key.clone(),
                    op: op.clone(),
                    at_ms: unix_ms(),
                    message: error.to_string(),
                });
            }
            FromWorker::Acquired { task, nbytes, .. } => {
                let Some(t) = scheduler.task_view(*task) else {
                    return;
                };
                if t.state != TaskState::Memory || t.who_has.contains(&worker) {
                    return;
                }
                let from = t.who_has.first().copied();
                self.totals.transfers += 1;
                self.totals.transfer_bytes += nbytes;
                let to = self.workers.entry(worker).or_default();
                to.bytes_in += nbytes;
                to.fetches += 1;
                if let Some(from) = from {
                    self.workers.entry(from).or_default().bytes_out += nbytes;
                }
                let (key, nbytes) = (t.key, *nbytes);
                self.push(|| ObsEvent::Transfer {
                    from,
                    to: worker,
                    key: key.clone(),
                    nbytes,
                    at_ms: unix_ms(),
                });
            }
            FromWorker::Moved { task, tier } => {
                let Some(t) = scheduler.task_view(*task) else {
                    return;
                };
                if t.state != TaskState::Memory || !t.who_has.contains(&worker) || t.tier == *tier {
                    return;
                }
                if rank(*tier) > rank(t.tier) {
                    self.totals.spilled.add(*tier, t.nbytes);
                } else {
                    self.totals.unspilled.add(*tier, t.nbytes);
                }
                let (key, nbytes, from, to) = (t.key, t.nbytes, t.tier, *tier);
                self.push(|| ObsEvent::Moved {
                    worker,
                    key: key.clone(),
                    nbytes,
                    from,
                    to,
                    at_ms: unix_ms(),
                });
            }
            FromWorker::StealResponse { .. } | FromWorker::MissingData { .. } | FromWorker::Paused { .. } => {}
        }
    }

    fn op(&mut self, index: usize, name: &SharedStr) -> &mut OpTotals {
        let ops = &mut self.totals.ops;
        while ops.len() <= index {
            ops.push(OpTotals {
                name: SharedStr::from(""),
                finished: 0,
                failed: 0,
                buckets: [0; DURATION_BUCKETS_S.len() + 1],
                duration_sum_s: 0.0,
            });
        }
        let op = &mut ops[index];
        if op.name.is_empty() {
            op.name = name.clone();
        }
        op
    }

    /// Called on the reactor's timer, which was due at `due`: measures the
    /// loop's lag, publishes buffered events, and an observation when one
    /// is wanted and due. `workers` lists the live workers with when each
    /// was last heard from and what its last heartbeat said.
    pub fn tick(
        &mut self,
        scheduler: &Scheduler,
        due: Instant,
        workers: impl Iterator<Item = (WorkerId, Instant, Option<Vitals>)>,
    ) {
        let now = Instant::now();
        self.lag = now.saturating_duration_since(due).as_secs_f64();
        self.lag_max = self.lag_max.max(self.lag);

        if !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            // No subscriber: the batch is dropped, which is fine.
            let _ = self.events.send(Arc::new(batch));
        }
        self.collecting = self.events.receiver_count() > 0 || self.shared.subscribed.swap(false, Ordering::Relaxed);

        let looked_at = self.shared.watchers.load(Ordering::Relaxed) > 0 || self.shared.wanted.load(Ordering::Relaxed);
        let due = self
            .last_publish
            .is_none_or(|last| now.duration_since(last) >= self.gap);
        if looked_at && due {
            self.shared.wanted.store(false, Ordering::Relaxed);
            self.publish(scheduler, now, workers);
        }
    }

    fn publish(
        &mut self,
        scheduler: &Scheduler,
        now: Instant,
        live: impl Iterator<Item = (WorkerId, Instant, Option<Vitals>)>,
    ) {
        let started = Instant::now();
        // The scheduler changes only by handling events: with none since
        // the last snapshot, that one still holds (an idle cluster with a
        // page open costs no walks of the task table).
        let events = scheduler.stats().events;
        let previous = self.observations.borrow().clone();
        let snapshot = if previous.seq > 0 && events == self.snapshot_events {
            previous.snapshot.clone()
        } else {
            scheduler.snapshot_with(&mut self.cache)
        };
        self.snapshot_events = events;
        let mut workers: Vec<(WorkerId, WorkerTotals)> = self.workers.iter().map(|(w, t)| (*w, *t)).collect();
        workers.sort_unstable_by_key(|(w, _)| *w);
        let (mut last_seen, mut vitals) = (Vec::new(), Vec::new());
        for (w, at, v) in live {
            last_seen.push((w, now.saturating_duration_since(at).as_secs_f64()));
            vitals.extend(v.map(|v| (w, v)));
        }
        last_seen.sort_unstable_by_key(|(w, _)| *w);
        vitals.sort_unstable_by_key(|(w, _)| *w);
        self.seq += 1;
        let cost = started.elapsed();
        let observation = Observation {
            seq: self.seq,
            unix_ms: unix_ms(),
            snapshot,
            totals: Totals {
                workers,
                ..self.totals.clone()
            },
            last_seen_s: last_seen,
            vitals,
            loop_lag_s: self.lag,
            loop_lag_max_s: self.lag_max,
            snapshot_s: cost.as_secs_f64(),
        };
        self.lag_max = 0.0;
        self.observations.send_replace(Arc::new(observation));
        self.gap = self.config.interval.max(cost * SNAPSHOT_COST_FACTOR);
        self.last_publish = Some(now);
    }
}

/// One live worker in a [`ReportSample`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleWorker {
    /// The scheduler's id for it.
    pub id: WorkerId,
    /// Its name.
    pub name: SharedStr,
    /// Its results' bytes by tier.
    pub memory: TierBytes,
}

/// What a performance report keeps of an observation: names of workers
/// and ops (events refer to them by id and index) and memory per worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportSample {
    /// When it was taken, milliseconds since the Unix epoch.
    pub unix_ms: f64,
    /// The live workers.
    pub workers: Vec<SampleWorker>,
    /// Op names by index ([`ObsEvent::Task::op`]).
    pub ops: Vec<SharedStr>,
}

impl Observation {
    /// What a performance report keeps of it.
    pub fn report_sample(&self) -> ReportSample {
        ReportSample {
            unix_ms: self.unix_ms,
            workers: self
                .snapshot
                .workers
                .iter()
                .map(|w| SampleWorker {
                    id: w.id,
                    name: w.name.clone(),
                    memory: w.memory,
                })
                .collect(),
            ops: self.snapshot.ops.iter().map(|op| op.name.clone()).collect(),
        }
    }
}

/// A batch of the task stream as a client receives it
/// ([`ToClient::Observed`]): the events since the previous batch and the
/// observation that closed it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservedBatch {
    /// The events, in order.
    pub events: Vec<ObsEvent>,
    /// Names and memory as of this batch.
    pub sample: ReportSample,
    /// Event batches the client's stream fell behind by and lost, so far.
    pub lost_batches: u64,
    /// Events the scheduler dropped for a full buffer since it started
    /// (all subscribers' loss; compare two batches).
    pub events_dropped: u64,
}

/// How long the last batch after a stop waits for the scheduler's next
/// observation (which publishes the events before it).
const LAST_BATCH_WAIT: Duration = Duration::from_secs(2);

/// Streams `observer`'s events to a client through `send`, one
/// [`ToClient::Observed`] per observation, until `stop` fires (then one
/// last batch with what the scheduler heard before) or `send` fails.
/// Subscribes now, so the stream starts with the reactor's next message;
/// the returned future runs beside the reactor, never in it. Events
/// heard before now or after the stop are left out (they may share the
/// recorder's buffer with those of the block).
pub(crate) fn stream_to_client(
    observer: Observer,
    stop: oneshot::Receiver<()>,
    send: impl Fn(ToClient) -> bool + Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let events = observer.events();
    let watch = observer.watch();
    let since = unix_ms();
    stream(observer, events, watch, since, stop, send)
}

async fn stream(
    observer: Observer,
    mut events: broadcast::Receiver<Arc<Vec<ObsEvent>>>,
    mut watch: Watch,
    since: f64,
    mut stop: oneshot::Receiver<()>,
    send: impl Fn(ToClient) -> bool,
) {
    let mut pending: Vec<ObsEvent> = Vec::new();
    let mut lost = 0u64;
    let mut until = f64::INFINITY;
    let batch = |mut events: Vec<ObsEvent>, o: &Observation, lost: u64, last: bool, until: f64| {
        events.retain(|e| (since..=until).contains(&e.at_ms()));
        let batch = ObservedBatch {
            events,
            sample: o.report_sample(),
            lost_batches: lost,
            events_dropped: o.totals.events_dropped,
        };
        match serde_json::to_string(&batch) {
            Ok(json) => ToClient::Observed { json, last },
            Err(error) => ToClient::ObserveRefused {
                reason: format!("cannot encode the task stream: {error}"),
            },
        }
    };
    loop {
        tokio::select! {
            _ = &mut stop => {
                until = unix_ms();
                break;
            }
            received = events.recv() => match received {
                Ok(b) => pending.extend(b.iter().cloned()),
                Err(RecvError::Lagged(n)) => lost += n,
                Err(RecvError::Closed) => break,
            },
            observation = watch.next() => {
                let Some(o) = observation else { break };
                drain(&mut events, &mut pending, &mut lost);
                if !send(batch(std::mem::take(&mut pending), &o, lost, false, until)) {
                    return;
                }
            }
        }
    }
    let last = observer.fresh(LAST_BATCH_WAIT).await;
    drain(&mut events, &mut pending, &mut lost);
    send(batch(pending, &last, lost, true, until));
}

/// Moves what `events` holds into `pending`, counting lost batches.
fn drain(events: &mut broadcast::Receiver<Arc<Vec<ObsEvent>>>, pending: &mut Vec<ObsEvent>, lost: &mut u64) {
    loop {
        match events.try_recv() {
            Ok(batch) => pending.extend(batch.iter().cloned()),
            Err(TryRecvError::Lagged(n)) => *lost += n,
            Err(TryRecvError::Empty | TryRecvError::Closed) => return,
        }
    }
}
