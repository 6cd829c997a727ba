//! The scheduler's reactor: accepts workers and clients, feeds their
//! messages to the sans-IO [`Scheduler`] as events, and routes what it
//! says back to them, batched per peer.
//!
//! One task owns the scheduler; each connection has a reader task that
//! forwards decoded batches to it and a writer task that drains that
//! peer's outbox. Workers that stay silent longer than the heartbeat
//! timeout are declared lost, as are those whose connection drops.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use weft_transport::{Config as TransportConfig, Connection, Listener, Sender, TransportError, listen};

use crate::codec::{self, ClientUp, Hello, WorkerDown, WorkerUp};
use crate::error::Result;
use crate::ids::{ClientId, WorkerId};
use crate::observe::{ObserveConfig, Observer, Recorder, stream_to_client};
use crate::protocol::{FromClient, PROTOCOL_VERSION, ToClient, ToWorker, Vitals};
use crate::scheduler::{self, Comm, Event, Scheduler};

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where to listen, such as `tcp://0.0.0.0:8786`.
    pub listen: String,
    /// Transport settings (token, TLS, limits).
    pub transport: TransportConfig,
    /// The scheduling policy.
    pub scheduler: scheduler::Config,
    /// A worker silent for this long is lost.
    pub heartbeat_timeout: Duration,
    /// Interval of work-stealing rounds.
    pub balance_interval: Duration,
    /// Publish snapshots and events for a dashboard (see
    /// [`SchedulerHandle::observer`]); `None` (the default) records nothing.
    pub observe: Option<ObserveConfig>,
    /// Messages waiting to be written to one peer, at most: a worker or
    /// client that stops reading until this many pile up is taken for
    /// stalled and disconnected (a worker's tasks go elsewhere), so no peer
    /// can make the scheduler's memory grow without bound.
    pub max_queued_messages: usize,
}

impl SchedulerOptions {
    /// Defaults for a scheduler listening on `listen`.
    pub fn new(listen: impl Into<String>) -> Self {
        SchedulerOptions {
            listen: listen.into(),
            transport: TransportConfig::default(),
            scheduler: scheduler::Config::default(),
            heartbeat_timeout: Duration::from_secs(10),
            balance_interval: Duration::from_millis(100),
            observe: None,
            max_queued_messages: MAX_QUEUED_MESSAGES,
        }
    }
}

/// The default of [`SchedulerOptions::max_queued_messages`]: some hundreds
/// of megabytes of messages, far more than a reading peer ever has queued.
pub const MAX_QUEUED_MESSAGES: usize = 1 << 21;

/// A running scheduler.
pub struct SchedulerHandle {
    address: String,
    workers: Arc<WorkerCounts>,
    observer: Option<Observer>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl SchedulerHandle {
    /// The address workers and clients connect to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Workers registered right now.
    pub fn workers_registered(&self) -> usize {
        self.workers.registered.load(Ordering::Relaxed)
    }

    /// Workers whose registration was accepted since the start, those
    /// gone since included.
    pub fn workers_joined(&self) -> usize {
        self.workers.joined.load(Ordering::Relaxed)
    }

    /// What a dashboard reads, when [`SchedulerOptions::observe`] is set.
    pub fn observer(&self) -> Option<Observer> {
        self.observer.clone()
    }

    /// Stops the scheduler and waits for it; its connections close.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for SchedulerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Worker counts the reactor publishes to its handle.
#[derive(Default)]
struct WorkerCounts {
    registered: AtomicUsize,
    joined: AtomicUsize,
}

/// Starts a scheduler on the current tokio runtime.
pub async fn start_scheduler(options: SchedulerOptions) -> Result<SchedulerHandle> {
    let listener = listen(&options.listen, &options.transport).await?;
    let address = listener.local_addr().to_string();
    info!(%address, "scheduler listening");
    let (stop, stopped) = oneshot::channel();
    let workers = Arc::new(WorkerCounts::default());
    let (recorder, observer) = options.observe.clone().map(Recorder::new).unzip();
    let task = tokio::spawn(run(
        listener,
        options,
        stopped,
        workers.clone(),
        recorder,
        observer.clone(),
    ));
    Ok(SchedulerHandle {
        address,
        workers,
        observer,
        stop: Some(stop),
        task,
    })
}

/// What connection tasks tell the scheduler's task.
enum Inbound {
    WorkerJoined {
        worker: WorkerId,
        info: crate::protocol::WorkerInfo,
        outbox: Outbox<ToWorker>,
    },
    Worker(WorkerId, WorkerUp),
    WorkerGone(WorkerId),
    ClientJoined {
        client: ClientId,
        outbox: Outbox<ToClient>,
    },
    Client(ClientId, ClientUp),
    ClientGone(ClientId),
}

/// Batches on their way to one peer's writer task, and how many messages
/// they hold: the writer subtracts what it has written.
struct Outbox<T> {
    batches: mpsc::UnboundedSender<Vec<T>>,
    queued: Arc<AtomicUsize>,
}

impl<T> Outbox<T> {
    /// An outbox and the end its writer drains.
    fn new() -> (Self, mpsc::UnboundedReceiver<Vec<T>>, Arc<AtomicUsize>) {
        let (batches, queue) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (
            Outbox {
                batches,
                queued: queued.clone(),
            },
            queue,
            queued,
        )
    }

    /// Sends single messages beside the reactor's batches (from another
    /// task), counted against the peer's queue alike; `false` once the
    /// connection is gone.
    fn sender(&self) -> impl Fn(T) -> bool + Send + 'static
    where
        T: Send + 'static,
    {
        let (batches, queued) = (self.batches.clone(), self.queued.clone());
        move |message| {
            queued.fetch_add(1, Ordering::Relaxed);
            batches.send(vec![message]).is_ok()
        }
    }
}

/// Routes the scheduler's output into per-peer batches.
struct Router {
    workers: HashMap<WorkerId, Peer<ToWorker>>,
    clients: HashMap<ClientId, Peer<ToClient>>,
    /// Messages queued for one peer, at most.
    max_queued: usize,
    /// Clients streaming the task stream, each with its stream's stop.
    observing: HashMap<ClientId, oneshot::Sender<()>>,
}

struct Peer<T> {
    outbox: Outbox<T>,
    pending: Vec<T>,
    last_seen: Instant,
    /// What a worker's last heartbeat said.
    vitals: Option<Vitals>,
}

impl<T> Peer<T> {
    fn new(outbox: Outbox<T>) -> Self {
        Peer {
            outbox,
            pending: Vec::new(),
            last_seen: Instant::now(),
            vitals: None,
        }
    }

    /// Hands what is pending to the writer; `false` when the peer has
    /// more than `max_queued` messages unwritten: it has stopped reading.
    fn flush(&mut self, max_queued: usize) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let queued = self.outbox.queued.fetch_add(self.pending.len(), Ordering::Relaxed) + self.pending.len();
        // A closed outbox means the connection is going; its reader
        // reports the loss.
        let _ = self.outbox.batches.send(std::mem::take(&mut self.pending));
        queued <= max_queued
    }
}

/// A peer that stopped reading its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stalled {
    Worker(WorkerId),
    Client(ClientId),
}

impl Comm for Router {
    fn to_worker(&mut self, worker: WorkerId, msg: ToWorker) {
        match self.workers.get_mut(&worker) {
            Some(peer) => peer.pending.push(msg),
            None => debug!(%worker, "message for a worker that is gone; dropped"),
        }
    }

    fn to_client(&mut self, client: ClientId, msg: ToClient) {
        match self.clients.get_mut(&client) {
            Some(peer) => peer.pending.push(msg),
            None => debug!(%client, "message for a client that is gone; dropped"),
        }
    }
}

impl Router {
    fn new(max_queued: usize) -> Self {
        Router {
            workers: HashMap::new(),
            clients: HashMap::new(),
            max_queued,
            observing: HashMap::new(),
        }
    }

    /// Hands every peer's pending messages to its writer; returns the
    /// peers that have stopped reading.
    fn flush(&mut self) -> Vec<Stalled> {
        let max = self.max_queued;
        let workers = self.workers.iter_mut();
        let mut stalled: Vec<Stalled> = workers
            .filter_map(|(w, p)| (!p.flush(max)).then_some(Stalled::Worker(*w)))
            .collect();
        let clients = self.clients.iter_mut();
        stalled.extend(clients.filter_map(|(c, p)| (!p.flush(max)).then_some(Stalled::Client(*c))));
        stalled
    }

    /// Flushes, disconnecting peers that stopped reading (their outboxes
    /// dropped, so their writers end once the socket gives way) and
    /// telling the scheduler, until nothing more is stalled.
    fn flush_all(&mut self, scheduler: &mut Scheduler) {
        loop {
            let stalled = self.flush();
            if stalled.is_empty() {
                return;
            }
            for peer in stalled {
                warn!(
                    ?peer,
                    max = self.max_queued,
                    "peer stopped reading its messages; disconnected"
                );
                match peer {
                    Stalled::Worker(worker) => {
                        self.workers.remove(&worker);
                        scheduler.handle(Event::WorkerLost { worker }, self);
                    }
                    Stalled::Client(client) => {
                        self.clients.remove(&client);
                        scheduler.handle(Event::ClientDisconnected { client }, self);
                    }
                }
            }
        }
    }
}

/// Messages from peers waiting for the scheduler, at most.
const INBOUND_CAPACITY: usize = 4096;

async fn run(
    listener: Listener,
    options: SchedulerOptions,
    mut stopped: oneshot::Receiver<()>,
    counts: Arc<WorkerCounts>,
    mut recorder: Option<Recorder>,
    observer: Option<Observer>,
) {
    // Bounded: a peer that sends faster than the scheduler handles waits
    // (its connection stops being read) instead of growing this queue.
    let (inbound_tx, mut inbound) = mpsc::channel(INBOUND_CAPACITY);
    let acceptor = tokio::spawn(accept(listener, inbound_tx));
    let mut scheduler = Scheduler::new(options.scheduler.clone());
    let mut router = Router::new(options.max_queued_messages);
    let mut balance = tokio::time::interval(options.balance_interval);
    let mut liveness = tokio::time::interval(options.heartbeat_timeout / 4);
    let mut observe = tokio::time::interval(
        recorder
            .as_ref()
            .map_or(Duration::from_secs(3600), Recorder::tick_interval),
    );
    observe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(message) = inbound.recv() => {
                let observer = observer.as_ref();
                handle(&mut scheduler, &mut router, &counts, &mut recorder, observer, message);
                // Drain what else has arrived, so replies go out in batches.
                while let Ok(message) = inbound.try_recv() {
                    handle(&mut scheduler, &mut router, &counts, &mut recorder, observer, message);
                }
            }
            due = observe.tick(), if recorder.is_some() => {
                if let Some(recorder) = &mut recorder {
                    let workers = router.workers.iter().map(|(w, peer)| (*w, peer.last_seen, peer.vitals));
                    recorder.tick(&scheduler, due.into_std(), workers);
                }
            }
            _ = balance.tick() => scheduler.handle(Event::Balance, &mut router),
            _ = liveness.tick() => {
                let silent: Vec<WorkerId> = router
                    .workers
                    .iter()
                    .filter(|(_, peer)| peer.last_seen.elapsed() > options.heartbeat_timeout)
                    .map(|(id, _)| *id)
                    .collect();
                for worker in silent {
                    warn!(%worker, timeout = ?options.heartbeat_timeout, "no heartbeat; worker lost");
                    router.workers.remove(&worker);
                    scheduler.handle(Event::WorkerLost { worker }, &mut router);
                }
            }
        }
        router.flush_all(&mut scheduler);
        counts.registered.store(scheduler.n_workers(), Ordering::Relaxed);
    }
    acceptor.abort();
}

fn handle(
    scheduler: &mut Scheduler,
    router: &mut Router,
    counts: &WorkerCounts,
    recorder: &mut Option<Recorder>,
    observer: Option<&Observer>,
    message: Inbound,
) {
    match message {
        Inbound::WorkerJoined { worker, info, outbox } => {
            info!(%worker, name = %info.name, address = %info.address, nthreads = info.nthreads, "worker joined");
            router.workers.insert(worker, Peer::new(outbox));
            let before = scheduler.n_workers();
            scheduler.handle(Event::WorkerJoined { worker, info }, router);
            if scheduler.n_workers() > before {
                counts.joined.fetch_add(1, Ordering::Relaxed);
            }
        }
        Inbound::Worker(worker, up) => {
            let Some(peer) = router.workers.get_mut(&worker) else {
                return; // declared lost already; its late messages are void
            };
            peer.last_seen = Instant::now();
            match up {
                WorkerUp::Batch(batch) => {
                    for msg in batch {
                        if let Some(recorder) = recorder {
                            recorder.before(scheduler, worker, &msg);
                        }
                        scheduler.handle(Event::Worker { worker, msg }, router);
                    }
                }
                WorkerUp::Heartbeat(vitals) => peer.vitals = Some(vitals),
            }
        }
        Inbound::WorkerGone(worker) => {
            if router.workers.remove(&worker).is_some() {
                info!(%worker, "worker left");
                scheduler.handle(Event::WorkerLost { worker }, router);
            }
        }
        Inbound::ClientJoined { client, outbox } => {
            router.clients.insert(client, Peer::new(outbox));
            scheduler.handle(Event::ClientConnected { client }, router);
        }
        Inbound::Client(client, batch) => {
            for msg in batch {
                match msg {
                    // The reactor's business: the scheduler knows nothing of it.
                    FromClient::Observe { on } => observe(router, observer, client, on),
                    msg => scheduler.handle(Event::Client { client, msg }, router),
                }
            }
        }
        Inbound::ClientGone(client) => {
            router.observing.remove(&client);
            if router.clients.remove(&client).is_some() {
                scheduler.handle(Event::ClientDisconnected { client }, router);
            }
        }
    }
}

/// Starts or stops streaming the task stream to `client`, beside the
/// reactor (see [`stream_to_client`]).
fn observe(router: &mut Router, observer: Option<&Observer>, client: ClientId, on: bool) {
    if !on {
        if let Some(stop) = router.observing.remove(&client) {
            let _ = stop.send(());
        }
        return;
    }
    let Some(send) = router.clients.get(&client).map(|peer| peer.outbox.sender()) else {
        return;
    };
    let Some(observer) = observer else {
        let reason = "this scheduler records no task stream: it runs without a dashboard \
                          (--no-dashboard, or SchedulerOptions::observe unset)"
            .to_string();
        router.to_client(client, ToClient::ObserveRefused { reason });
        return;
    };
    if router.observing.contains_key(&client) {
        return;
    }
    let (stop, stopped) = oneshot::channel();
    router.observing.insert(client, stop);
    tokio::spawn(stream_to_client(observer.clone(), stopped, send));
}

async fn accept(mut listener: Listener, inbound: mpsc::Sender<Inbound>) {
    let mut next_worker = 0u32;
    let mut next_client = 0u32;
    loop {
        let connection = match listener.accept().await {
            Ok(connection) => connection,
            Err(TransportError::ListenerClosed { .. }) => return,
            Err(error) => {
                warn!(%error, "refused a connection");
                continue;
            }
        };
        let inbound = inbound.clone();
        let (worker, client) = (WorkerId::new(next_worker), ClientId::new(next_client));
        // Numbers are never reused; one of the two goes unused per peer.
        next_worker += 1;
        next_client += 1;
        tokio::spawn(async move {
            if let Err(reason) = serve_peer(connection, worker, client, inbound).await {
                warn!(reason, "peer dropped");
            }
        });
    }
}

/// Reads a peer's hello, then forwards its messages until it goes.
async fn serve_peer(
    mut connection: Connection,
    worker: WorkerId,
    client: ClientId,
    inbound: mpsc::Sender<Inbound>,
) -> std::result::Result<(), String> {
    let peer = connection.peer().to_string();
    let first = connection
        .recv()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed before saying hello")?;
    let hello: Hello = codec::decode(&first)?;
    if hello.version() != PROTOCOL_VERSION {
        let reason = format!(
            "runtime protocol version mismatch: the scheduler speaks {PROTOCOL_VERSION}, this peer {}",
            hello.version()
        );
        // A worker is told why; a client learns from the closed connection.
        if matches!(hello, Hello::Worker { .. }) {
            let refusal: WorkerDown = vec![ToWorker::Rejected { reason: reason.clone() }];
            if let Ok(message) = codec::encode(&refusal) {
                let _ = connection.send(message).await;
            }
        }
        return Err(format!("{peer}: {reason}"));
    }
    let (sender, mut receiver) = connection.split();
    match hello {
        Hello::Worker { info, .. } => {
            let (outbox, queue, queued) = Outbox::new();
            let writer = tokio::spawn(write_batches(sender, queue, queued));
            let joined = Inbound::WorkerJoined { worker, info, outbox };
            inbound.send(joined).await.map_err(|_| "scheduler stopped")?;
            let result = forward(&mut receiver, |up: WorkerUp| Inbound::Worker(worker, up), &inbound).await;
            let _ = inbound.send(Inbound::WorkerGone(worker)).await;
            writer.abort();
            result
        }
        Hello::Client { name, .. } => {
            debug!(%client, name, "client connected");
            let (outbox, queue, queued) = Outbox::new();
            let writer = tokio::spawn(write_batches(sender, queue, queued));
            inbound
                .send(Inbound::ClientJoined { client, outbox })
                .await
                .map_err(|_| "scheduler stopped")?;
            let result = forward(&mut receiver, |up: ClientUp| Inbound::Client(client, up), &inbound).await;
            let _ = inbound.send(Inbound::ClientGone(client)).await;
            writer.abort();
            result
        }
    }
}

/// Decodes each message of a peer and hands it to the scheduler's task.
async fn forward<T: serde::de::DeserializeOwned>(
    receiver: &mut weft_transport::Receiver,
    wrap: impl Fn(T) -> Inbound,
    inbound: &mpsc::Sender<Inbound>,
) -> std::result::Result<(), String> {
    let peer = receiver.peer().to_string();
    loop {
        match receiver.recv().await {
            Ok(Some(message)) => {
                let decoded = codec::decode::<T>(&message).map_err(|reason| format!("{peer}: {reason}"))?;
                inbound.send(wrap(decoded)).await.map_err(|_| "scheduler stopped")?;
            }
            Ok(None) => return Ok(()),
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// Sends a peer's batches, merging those that queued up meanwhile.
/// Counts down `queued` by what it has written.
async fn write_batches<T: serde::Serialize>(
    sender: Sender,
    mut queue: mpsc::UnboundedReceiver<Vec<T>>,
    queued: Arc<AtomicUsize>,
) {
    while let Some(mut batch) = queue.recv().await {
        while let Ok(more) = queue.try_recv() {
            batch.extend(more);
        }
        let message = match codec::encode(&batch) {
            Ok(message) => message,
            Err(reason) => {
                warn!(reason, "cannot encode a batch");
                return;
            }
        };
        if sender.send(message).await.is_err() {
            return;
        }
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
    }
    let _ = sender.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted() -> ToClient {
        ToClient::GraphAccepted {
            new_tasks: 1,
            culled: 0,
        }
    }

    #[test]
    fn a_client_that_stops_reading_is_disconnected_at_the_bound() {
        let mut scheduler = Scheduler::new(scheduler::Config::default());
        let mut router = Router::new(3);
        let client = ClientId::new(7);
        let (outbox, mut queue, queued) = Outbox::new();
        router.clients.insert(client, Peer::new(outbox));
        scheduler.handle(Event::ClientConnected { client }, &mut router);

        // Three messages unwritten: at the bound, still connected.
        for _ in 0..3 {
            router.to_client(client, accepted());
        }
        router.flush_all(&mut scheduler);
        assert!(router.clients.contains_key(&client));
        assert_eq!(queued.load(Ordering::Relaxed), 3);

        // Its writer writes them: room again for three.
        let mut written = 0;
        while let Ok(batch) = queue.try_recv() {
            written += batch.len();
        }
        queued.fetch_sub(written, Ordering::Relaxed);
        for _ in 0..3 {
            router.to_client(client, accepted());
        }
        router.flush_all(&mut scheduler);
        assert!(router.clients.contains_key(&client), "a reading peer stays");

        // A fourth unwritten message: it has stopped reading.
        router.to_client(client, accepted());
        router.flush_all(&mut scheduler);
        assert!(!router.clients.contains_key(&client), "a stalled peer is dropped");
        // Its outbox is closed: its writer ends after what is queued.
        while queue.try_recv().is_ok() {}
        assert!(queue.is_closed());
    }
}
