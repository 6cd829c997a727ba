//! The data plane: the server that hands a worker's results to peers and
//! clients, and the pool of connections used to fetch them.
//!
//! Results never pass through the scheduler: a worker fetches its inputs
//! straight from the workers that hold them, and a client gathers from the
//! workers the scheduler names. Clients scattering data push it here too:
//! it waits aside, by key, until the scheduler has the worker adopt it as a
//! task's result (or the client discards it, or it expires).
//!
//! Between processes on one host, frames that lie in shared memory (see
//! [`weft_transport::shm`]) are not sent at all: every request carries the
//! asker's host identity, and a server on the same host describes such
//! frames so that the asker maps them. Where mapping fails the pool asks
//! again for the bytes, once per address, so the choice is automatic and
//! invisible.
//!
//! Device frames go the same way between GPU workers of one host: an asker
//! with a GPU names it, and a server on the same host whose frame lies on a
//! GPU of the same kind (CUDA and CUDA, emulated and emulated) describes it
//! as an IPC handle ([`weft_gpu::IpcHandle`]). The asker copies it device
//! to device into its own GPU's pool at once, while still holding the
//! connection, then sends [`DataRequest::Release`]; the server holds each
//! such frame (a clone: its memory is neither freed nor reused) until the
//! asker's next request on that connection or until the connection ends.
//! Where the copy is refused (another node or pid namespace, a producer
//! gone) the pool asks again for the bytes, as for shared memory; they then
//! arrive over the socket as device frames and land on the asker's GPU
//! (see [`weft_transport::Config::gpu`]). A worker's own data connections
//! (its listener and its [`PeerPool`]) receive into its GPU: the worker
//! sets `gpu` on the transport configuration it is given.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use weft_transport::{Buffer, Config, Connection, Listener, Message, TransportError, connect};

use crate::codec::{self, DataAck, DataAsk, DataRequest, ReplyError, Shared};
use crate::error::{Result, RuntimeError};
use crate::ids::Key;
use crate::shuffle::{Push, PushReply, Service};
use crate::store::Store;
use crate::value::Value;
use crate::worker::probe::TransferCounters;
use weft_gpu::{Device, GpuError};
use weft_transport::shm::{self, HostId};

/// Serves results from `store` to every peer that connects to `listener`,
/// until the listener is dropped with the task. Peers that say they run on
/// `host` (this one's, or `None` where shared memory is off) get host
/// frames in shared memory. Connections are served by tasks this future
/// owns: dropping it (a worker that stops, or is aborted as if killed)
/// ends them too. What it serves is counted in `served`.
pub(crate) async fn serve(
    mut listener: Listener,
    store: Arc<Store>,
    host: Option<HostId>,
    served: Arc<TransferCounters>,
    shuffle: Arc<Service>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => {
                    let (store, host, served, shuffle) = (store.clone(), host.clone(), served.clone(), shuffle.clone());
                    connections.spawn(serve_connection(connection, store, host, served, shuffle));
                }
                Err(TransportError::ListenerClosed { .. }) => return,
                Err(error) => debug!(%error, "data connection refused"),
            },
            // Finished connections are reaped as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    mut connection: Connection,
    store: Arc<Store>,
    host: Option<HostId>,
    served: Arc<TransferCounters>,
    shuffle: Arc<Service>,
) {
    // Device frames of the last reply that the asker copies by IPC: held
    // until its next request (it copies before sending anything else).
    let mut lent: Vec<Buffer> = Vec::new();
    loop {
        let message = match connection.recv().await {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(error) => {
                debug!(%error, "data connection closed");
                return;
            }
        };
        let released = std::mem::take(&mut lent);
        let reply = match answer(message, &store, &host, &served, &shuffle, released, &mut lent).await {
            Ok(reply) => reply,
            Err(reason) => {
                warn!(peer = %connection.peer(), reason, "bad data request; closing");
                return;
            }
        };
        if connection.send(reply).await.is_err() {
            return;
        }
    }
}

/// The reply to one request, or why the request is refused. Results on
/// disk are read back first; an asker on this host gets frames in shared
/// memory as descriptions to map, and device frames on a GPU of its kind
/// as IPC handles, each added to `lent` to be held until its next request.
/// `released` are the frames the previous reply lent.
async fn answer(
    message: Message,
    store: &Arc<Store>,
    host: &Option<HostId>,
    served: &TransferCounters,
    shuffle: &Service,
    released: Vec<Buffer>,
    lent: &mut Vec<Buffer>,
) -> std::result::Result<Message, String> {
    let ask: DataAsk = codec::decode(&message)?;
    let same_host = ask.host.is_some() && ask.host == *host;
    let ipc_to = ask.gpu.filter(|_| same_host);
    let share = |frame: &Buffer| -> Option<Shared> {
        if !same_host {
            return None;
        }
        match frame.as_device() {
            Some(device) if ipc_to.is_some_and(|to| same_kind(to, device.device())) => {
                let handle = device
                    .ipc_handle()
                    .inspect_err(|error| debug!(%error, "a device frame goes over the socket"))
                    .ok()?;
                lent.push(frame.clone());
                Some(Shared::Device(handle))
            }
            Some(_) => None,
            None => frame.as_host().and_then(shm::export).map(Shared::Host),
        }
    };
    match ask.request {
        DataRequest::Tasks(tasks) => {
            let values = store.load_all_adopting(tasks, ADOPT_PATIENCE).await;
            let found = values.iter().flatten();
            served.served(found.clone().count(), found.map(|v| v.nbytes()).sum());
            codec::encode_reply(&values, share)
        }
        DataRequest::Put(items) => {
            let values = codec::split_put(items, message.frames)?;
            let items = values.len() as u32;
            let now = Instant::now();
            for (key, value) in values {
                store.stage(key, Arc::new(value), now);
            }
            codec::encode(&DataAck { items })
        }
        DataRequest::Discard(keys) => codec::encode(&DataAck {
            items: store.discard(&keys) as u32,
        }),
        DataRequest::Push(push) => codec::encode(&shuffle.receive(push, message.frames).await),
        DataRequest::Release => codec::encode(&DataAck {
            items: released.len() as u32,
        }),
    }
}

/// Whether a device IPC handle of `from` opens on `to`: CUDA on CUDA,
/// emulated on emulated.
fn same_kind(to: Device, from: Device) -> bool {
    matches!(
        (to, from),
        (Device::Cuda(_), Device::Cuda(_)) | (Device::Emulated(_), Device::Emulated(_))
    )
}

/// How long a request for results waits for scattered values on their way
/// to adoption (see [`Store::load_all_adopting`]).
pub const ADOPT_PATIENCE: Duration = Duration::from_secs(2);

/// How long a fetch keeps trying to reach a peer.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a value pushed by a client waits to be adopted before it is
/// dropped. A scatter registers its values right after pushing them, so
/// only a client that died in between leaves any to expire.
pub const STAGED_TTL: Duration = Duration::from_secs(300);

/// How long a data server that could not be connected to is taken for
/// dead: requests to it fail at once meanwhile, so that reading many
/// results of a dead worker pays one connect timeout, not one per key.
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(5);

/// Connections to data servers, one per address, reused across requests.
#[derive(Clone)]
pub struct PeerPool {
    config: Config,
    connections: Arc<Mutex<HashMap<String, Slot>>>,
    /// Addresses a connection to failed lately: when, and why.
    unreachable: Arc<Mutex<HashMap<String, (Instant, String)>>>,
    /// Our host, sent with requests so a same-host server shares memory.
    host: Option<HostId>,
    /// Addresses whose shared memory we could not map: asked for bytes.
    unmappable: Arc<Mutex<HashSet<String>>>,
}

/// One address's connection, once made; requests over it take turns.
type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// Values read from a data reply, or why they could not be.
type ReplyResult = std::result::Result<Vec<Option<Value>>, ReplyError>;

impl PeerPool {
    /// A pool that connects with these settings, except that it gives up
    /// on a peer after [`PEER_CONNECT_TIMEOUT`]: a peer named as a holder
    /// is up, or dead and then better asked of another holder at once.
    pub fn new(config: Config) -> Self {
        let host = shm::offered(&config);
        PeerPool {
            config: Config {
                connect_timeout: config.connect_timeout.min(PEER_CONNECT_TIMEOUT),
                ..config
            },
            connections: Arc::default(),
            unreachable: Arc::default(),
            host,
            unmappable: Arc::default(),
        }
    }

    /// Asks the data server at `address`; `None` for each item it lacks.
    /// Requests to one address go one at a time over one connection; a
    /// failed connection is dropped and the next request reconnects.
    pub async fn request(&self, address: &str, request: &DataRequest) -> Result<Vec<Option<Value>>> {
        let mappable = self.host.is_some() && !self.lock_unmappable().contains(address);
        let host = if mappable { self.host.clone() } else { None };
        let mut ask = DataAsk {
            request: request.clone(),
            gpu: host.as_ref().and(self.config.gpu.as_ref()).map(|g| g.device()),
            host,
        };
        let values = match self.fetch(address, &ask).await? {
            (Ok(values), _) => values,
            (Err(ReplyError::Unmapped(reason)), full) => {
                // A full GPU is asked around once; anything else for good.
                if !full && self.lock_unmappable().insert(address.to_string()) {
                    debug!(
                        address,
                        reason, "cannot map a same-host peer's memory; its data comes over the socket"
                    );
                }
                (ask.host, ask.gpu) = (None, None);
                self.fetch(address, &ask)
                    .await?
                    .0
                    .map_err(|error| RuntimeError::protocol(address, error.to_string()))?
            }
            (Err(error), _) => return Err(RuntimeError::protocol(address, error.to_string())),
        };
        if values.len() != request.len() {
            return Err(RuntimeError::protocol(
                address,
                format!("answered {} items for {}", values.len(), request.len()),
            ));
        }
        Ok(values)
    }

    /// Sends `ask` and reads the reply into values, mapping shared host
    /// frames and copying device frames by IPC while the connection is
    /// still held (no other request may release them on the server
    /// before), then tells the server it may let go of them.
    /// Also says whether a device frame was refused only because this
    /// GPU was full (a passing condition, unlike a handle that cannot be
    /// opened here).
    async fn fetch(&self, address: &str, ask: &DataAsk) -> Result<(ReplyResult, bool)> {
        let message = codec::encode(ask).map_err(|reason| RuntimeError::protocol(address, reason))?;
        let gpu = self.config.gpu.clone();
        let (mut copied, mut full) = (false, false);
        let mut import = |shared: &Shared| match shared {
            Shared::Host(frame) => shm::import(frame).map(Buffer::host),
            Shared::Device(handle) => {
                copied = true;
                let gpu = gpu
                    .as_ref()
                    .ok_or("a device IPC handle, and no GPU here to copy it to")?;
                gpu.ipc_copy(handle).map(Buffer::device).map_err(|error| {
                    full |= matches!(error, GpuError::OutOfMemory { .. });
                    error.to_string()
                })
            }
        };
        let mut slot = self.slot(address).await;
        let reply = self.exchange(&mut slot, address, message).await?;
        let values = codec::decode_reply(reply, &mut import);
        if copied {
            let release = codec::encode(&DataAsk {
                request: DataRequest::Release,
                host: None,
                gpu: None,
            })
            .map_err(|reason| RuntimeError::protocol(address, reason))?;
            let ack = self.exchange(&mut slot, address, release).await?;
            codec::decode::<DataAck>(&ack).map_err(|reason| RuntimeError::protocol(address, reason))?;
        }
        Ok((values, full))
    }

    /// Pushes values to the data server at `address`, which keeps them
    /// aside under their keys until the scheduler names their tasks.
    pub async fn put(&self, address: &str, values: &[(Key, Value)]) -> Result<()> {
        let message = codec::encode_put(values).map_err(|reason| RuntimeError::protocol(address, reason))?;
        let ack = self.round_trip(address, message).await?;
        let ack: DataAck = codec::decode(&ack).map_err(|reason| RuntimeError::protocol(address, reason))?;
        if ack.items as usize != values.len() {
            return Err(RuntimeError::protocol(
                address,
                format!("stored {} of {} values", ack.items, values.len()),
            ));
        }
        Ok(())
    }

    /// Pushes shuffle pieces (the frames of `push`'s pieces, in order) to
    /// the data server at `address`; its reply says whether it kept them.
    pub async fn push(&self, address: &str, push: Push, frames: Vec<Buffer>) -> Result<PushReply> {
        let mut message = codec::encode(&DataAsk {
            request: DataRequest::Push(push),
            host: None,
            gpu: None,
        })
        .map_err(|reason| RuntimeError::protocol(address, reason))?;
        message.frames = frames;
        let reply = self.round_trip(address, message).await?;
        codec::decode(&reply).map_err(|reason| RuntimeError::protocol(address, reason))
    }

    /// Drops values put aside by [`PeerPool::put`] and never adopted.
    pub async fn discard(&self, address: &str, keys: Vec<Key>) -> Result<()> {
        let ask = DataAsk {
            request: DataRequest::Discard(keys),
            host: None,
            gpu: None,
        };
        let ack = self.ask(address, &ask).await?;
        codec::decode::<DataAck>(&ack).map_err(|reason| RuntimeError::protocol(address, reason))?;
        Ok(())
    }

    /// Sends `ask` to `address` and returns the reply.
    async fn ask(&self, address: &str, ask: &DataAsk) -> Result<Message> {
        let message = codec::encode(ask).map_err(|reason| RuntimeError::protocol(address, reason))?;
        self.round_trip(address, message).await
    }

    /// Sends one message to `address` and returns its reply. An address
    /// without a connection that could not be connected to within
    /// [`UNREACHABLE_FOR`] fails at once (see `exchange`).
    async fn round_trip(&self, address: &str, message: Message) -> Result<Message> {
        let mut slot = self.slot(address).await;
        self.exchange(&mut slot, address, message).await
    }

    /// The connection slot of `address`, held: requests to it take turns.
    async fn slot(&self, address: &str) -> tokio::sync::OwnedMutexGuard<Option<Connection>> {
        let slot = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(address.to_string())
            .or_default()
            .clone();
        slot.lock_owned().await
    }

    /// Sends one message over the held slot's connection (made first if
    /// there is none) and returns the reply.
    async fn exchange(&self, slot: &mut Option<Connection>, address: &str, message: Message) -> Result<Message> {
        // Out of the slot while in use: a request given up halfway (its
        // future dropped after sending) takes the connection with it, so
        // the next request never reads the answer meant for this one.
        let mut connection = match slot.take() {
            Some(connection) => connection,
            None => self.open(address).await?,
        };
        connection.send(message).await?;
        let reply = connection
            .recv()
            .await?
            .ok_or_else(|| RuntimeError::protocol(address, "closed the connection before replying"))?;
        *slot = Some(connection);
        Ok(reply)
    }

    /// Connects to the data server at `address`, unless it was found dead
    /// lately (perhaps by a request queued before this one).
    async fn open(&self, address: &str) -> Result<Connection> {
        self.check_reachable(address)?;
        connect(address, &self.config).await.map_err(|error| {
            warn!(address, %error, "cannot reach a worker's data server; taken for dead for {UNREACHABLE_FOR:?}");
            self.lock_unreachable()
                .insert(address.to_string(), (Instant::now(), error.to_string()));
            error.into()
        })
    }

    /// Tries `address` again at the next request, even if connecting to
    /// it failed lately (it was seen alive since).
    pub fn retry(&self, address: &str) {
        self.lock_unreachable().remove(address);
    }

    /// Fails with [`RuntimeError::Unreachable`] when connecting to
    /// `address` failed less than [`UNREACHABLE_FOR`] ago.
    fn check_reachable(&self, address: &str) -> Result<()> {
        let mut unreachable = self.lock_unreachable();
        let Some((at, reason)) = unreachable.get(address) else {
            return Ok(());
        };
        let ago = at.elapsed();
        if ago >= UNREACHABLE_FOR {
            unreachable.remove(address);
            return Ok(());
        }
        Err(RuntimeError::Unreachable {
            peer: address.to_string(),
            ago,
            reason: reason.clone(),
        })
    }

    fn lock_unreachable(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, String)>> {
        // A map updated by single inserts and removals: valid after a panic
        // elsewhere.
        self.unreachable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_unmappable(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A set updated by single inserts: valid after a panic elsewhere.
        self.unmappable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the connection to `address` (its worker is gone).
    pub fn forget(&self, address: &str) {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(address);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use bytes::Bytes;
    use weft_gpu::Gpu;
    use weft_transport::{Buffer, listen};

    use super::*;
    use crate::codec::DataReply;
    use crate::ids::TaskId;
    use weft_transport::shm::ShmRef;

    #[tokio::test]
    async fn an_unmappable_shared_frame_is_fetched_as_bytes_instead() {
        if shm::host_id().is_none() {
            return; // no shared memory here: nothing to fall back from
        }
        let config = Config::default();
        let mut listener = listen("tcp://127.0.0.1:0", &config).await.unwrap();
        let address = listener.local_addr().to_string();
        // A server on "this host" whose shared frames cannot be mapped (a
        // process that does not exist), but whose bytes can be sent.
        let server = tokio::spawn(async move {
            let mut connection = listener.accept().await.unwrap();
            let mut asked_with_host = Vec::new();
            while let Ok(Some(message)) = connection.recv().await {
                let ask: DataAsk = codec::decode(&message).unwrap();
                asked_with_host.push(ask.host.is_some());
                let header = Bytes::from_static(b"h");
                let reply = if ask.host.is_some() {
                    let unreachable = ShmRef {
                        pid: u32::MAX - 1,
                        fd: 3,
                        ino: 1,
                        generation: 0,
                        capacity: 8,
                        offset: 0,
                        len: 8,
                    };
                    codec::encode(&DataReply {
                        items: vec![Some((header, 1))],
                        shared: vec![(0, Shared::Host(unreachable))],
                    })
                    .unwrap()
                } else {
                    let value = Value {
                        header,
                        frames: vec![Buffer::host(vec![7u8; 8])],
                    };
                    codec::encode_reply(&[Some(Arc::new(value))], |_| None).unwrap()
                };
                connection.send(reply).await.unwrap();
            }
            asked_with_host
        });
        let pool = PeerPool::new(config);
        for _ in 0..2 {
            let values = pool
                .request(&address, &DataRequest::Tasks(vec![TaskId::new(1)]))
                .await
                .unwrap();
            let value = values[0].as_ref().expect("delivered");
            assert_eq!(value.frames[0].as_host().unwrap()[..], [7u8; 8]);
        }
        drop(pool);
        assert_eq!(
            server.await.unwrap(),
            vec![true, false, false],
            "asks for the bytes once mapping failed, and from then on"
        );
    }

    #[tokio::test]
    async fn a_request_given_up_halfway_never_hands_its_answer_to_the_next() {
        let config = Config::default();
        let mut listener = listen("tcp://127.0.0.1:0", &config).await.unwrap();
        let address = listener.local_addr().to_string();
        // Echoes each message's header, 100 ms later, on every connection.
        let server = tokio::spawn(async move {
            while let Ok(mut connection) = listener.accept().await {
                tokio::spawn(async move {
                    while let Ok(Some(message)) = connection.recv().await {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if connection.send(Message::new(message.header, Vec::new())).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let pool = PeerPool::new(config);
        let first = pool.round_trip(&address, Message::new(&b"first"[..], Vec::new()));
        assert!(tokio::time::timeout(Duration::from_millis(20), first).await.is_err());
        let reply = pool
            .round_trip(&address, Message::new(&b"second"[..], Vec::new()))
            .await
            .unwrap();
        assert_eq!(&reply.header[..], b"second");
        server.abort();
    }

    #[tokio::test]
    async fn a_dead_peer_costs_one_connect_timeout_not_one_per_request() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("tcp://127.0.0.1:{port}");
        let config = Config {
            connect_timeout: Duration::from_millis(300),
            ..Config::default()
        };
        let pool = PeerPool::new(config);
        let request = DataRequest::Tasks(vec![TaskId::new(1)]);
        let started = Instant::now();
        let first = pool.request(&address, &request).await.unwrap_err();
        assert!(matches!(first, RuntimeError::Transport(_)), "{first}");
        let paid = started.elapsed();
        // Every request after it fails at once, saying why.
        let started = Instant::now();
        for _ in 0..20 {
            let error = pool.request(&address, &request).await.unwrap_err();
            assert!(matches!(error, RuntimeError::Unreachable { .. }), "{error}");
        }
        assert!(
            started.elapsed() < paid,
            "{:?} for 20 requests, {paid:?} for the first",
            started.elapsed()
        );
        // Once seen alive elsewhere, it is tried again.
        pool.retry(&address);
        let again = pool.request(&address, &request).await.unwrap_err();
        assert!(matches!(again, RuntimeError::Transport(_)), "{again}");
    }

    /// Set in the child process of the device IPC test: it runs a data
    /// server holding one device result.
    const IPC_PRODUCER: &str = "WEFT_TEST_DATA_IPC_PRODUCER";

    /// Bytes of the device result: large enough for a memfd block.
    const IPC_LEN: usize = weft_gpu::IPC_MIN + 4096;

    fn ipc_pattern() -> Vec<u8> {
        (0..IPC_LEN).map(|i| (i % 249) as u8).collect()
    }

    /// The producer, run only as the child: serves task 1, a value with
    /// one frame on its GPU (`emulated` or `cuda`, as the variable says),
    /// prints its address, and on `drop` removes the value and prints how
    /// much of its GPU's pool is in use.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ipc_producer_child() {
        let Ok(kind) = std::env::var(IPC_PRODUCER) else {
            return;
        };
        let gpu = match kind.as_str() {
            "cuda" => weft_gpu::testing::test_gpus("ipc producer").pop().unwrap().1,
            _ => Gpu::emulated(0, 1 << 30, true),
        };
        let frame = gpu.stream().unwrap().upload(&ipc_pattern()).unwrap();
        let store = Store::unlimited();
        let value = Value {
            header: bytes::Bytes::from_static(b"device"),
            frames: vec![Buffer::device(frame)],
        };
        store.stage("k".into(), Arc::new(value), Instant::now());
        assert!(store.adopt(&"k".into(), TaskId::new(1)));
        let listener = listen("tcp://127.0.0.1:0", &Config::default()).await.unwrap();
        println!("\nADDR {}", listener.local_addr());
        let shuffle = crate::shuffle::Service::new(
            "tcp://here:1".into(),
            store.clone(),
            PeerPool::new(Config::default()),
            tokio::runtime::Handle::current(),
            Arc::new(crate::ops::Registry::builtin()),
        );
        let served = Arc::new(TransferCounters::default());
        tokio::spawn(serve(
            listener,
            store.clone(),
            shm::host_id(),
            served,
            Arc::new(shuffle),
        ));
        tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                if line.unwrap() == "drop" {
                    store.remove(TaskId::new(1));
                    println!("\nIN_USE {}", gpu.pool_stats().in_use);
                }
            }
        })
        .await
        .unwrap();
    }

    struct Producer {
        child: std::process::Child,
        out: std::io::BufReader<std::process::ChildStdout>,
        address: String,
    }

    impl Producer {
        fn start(kind: &str) -> Producer {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "data::tests::ipc_producer_child", "--nocapture"])
                .env(IPC_PRODUCER, kind)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let out = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut producer = Producer {
                child,
                out,
                address: String::new(),
            };
            producer.address = producer.expect("ADDR");
            producer
        }

        fn expect(&mut self, tag: &str) -> String {
            use std::io::BufRead;
            let mut line = String::new();
            loop {
                line.clear();
                assert!(
                    self.out.read_line(&mut line).unwrap() > 0,
                    "the producer ended before {tag}"
                );
                if let Some(rest) = line.trim().strip_prefix(tag) {
                    return rest.trim().to_string();
                }
            }
        }
    }

    impl Drop for Producer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn emulated(gpu: &Gpu) -> Option<&weft_gpu::EmulatedGpu> {
        match gpu.backend() {
            weft_gpu::GpuBackend::Emulated(e) => Some(e),
            weft_gpu::GpuBackend::Cuda(_) => None,
        }
    }

    /// A device result on a same-host worker process is copied by IPC into
    /// the asker's GPU (no bytes over the socket, no upload) and released
    /// at once, so the producer frees it when it drops it; an asker whose
    /// copy is refused gets the bytes over the socket; a producer killed
    /// fails the request, never answers wrongly. The IPC part runs on an
    /// emulated GPU and on a CUDA GPU where present.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn device_results_move_between_processes_by_ipc_and_fall_back_to_the_socket() {
        if shm::host_id().is_none() {
            return; // no same-host sharing here: nothing to test
        }
        let request = DataRequest::Tasks(vec![TaskId::new(1)]);
        for (name, gpu) in weft_gpu::testing::test_gpus("device results move by IPC") {
            let kind = if emulated(&gpu).is_some() { "emulated" } else { "cuda" };
            let mut producer = Producer::start(kind);
            let value = fetch_into(&gpu, &producer.address, &request).await.unwrap();
            let frame = value.frames[0].as_device().expect("device-resident");
            assert!(Arc::ptr_eq(frame.gpu(), &gpu), "{name}: on the asker's own GPU");
            assert_eq!(gpu.stream().unwrap().download(frame).unwrap(), ipc_pattern(), "{name}");
            assert_eq!(gpu.ipc_copies(), 1, "{name}: copied by IPC");
            if let Some(e) = emulated(&gpu) {
                assert_eq!(
                    (e.copies().ipc, e.copies().h2d),
                    (1, 0),
                    "device to device, nothing uploaded"
                );
            }
            // Released: once the producer drops its result, its memory is free.
            writeln!(producer.child.stdin.as_mut().unwrap(), "drop").unwrap();
            assert_eq!(
                producer.expect("IN_USE"),
                "0",
                "{name}: the producer holds nothing after the release"
            );
        }

        // A copy refused (here: no room on the asker's GPU) falls back to the
        // socket; the device frame then lands in host memory, bytes intact.
        let producer = Producer::start("emulated");
        let small = Gpu::emulated(0, 1 << 20, true);
        let value = fetch_into(&small, &producer.address, &request).await.unwrap();
        assert_eq!(value.frames[0].as_host().expect("host memory")[..], ipc_pattern()[..]);
        assert_eq!(small.ipc_copies(), 0);

        // A producer killed: the request fails; nothing wrong is delivered.
        let address = producer.address.clone();
        drop(producer);
        assert!(
            fetch_into(&Gpu::emulated(0, 1 << 30, true), &address, &request)
                .await
                .is_err()
        );
    }

    /// The one result `request` asks of the worker at `address`, fetched by
    /// a peer pool whose GPU is `gpu`.
    async fn fetch_into(gpu: &Arc<Gpu>, address: &str, request: &DataRequest) -> Result<Value> {
        let pool = PeerPool::new(Config {
            gpu: Some(gpu.clone()),
            ..Config::default()
        });
        Ok(pool.request(address, request).await?.remove(0).expect("held"))
    }

    /// [`answer`] to `message`, with no frames released or lent.
    async fn answer_one(
        message: Message,
        store: &Arc<Store>,
        host: &Option<HostId>,
        served: &TransferCounters,
        shuffle: &Service,
    ) -> std::result::Result<Message, String> {
        answer(message, store, host, served, shuffle, Vec::new(), &mut Vec::new()).await
    }

    fn import_host(shared: &Shared) -> std::result::Result<Buffer, String> {
        match shared {
            Shared::Host(frame) => shm::import(frame).map(Buffer::host),
            Shared::Device(_) => Err("no device frames expected".into()),
        }
    }

    fn ask(request: DataRequest) -> DataAsk {
        DataAsk {
            request,
            host: None,
            gpu: None,
        }
    }

    #[tokio::test]
    async fn the_server_answers_puts_and_refuses_bad_ones() {
        let store = Store::unlimited();
        let served = TransferCounters::default();
        let shuffle = crate::shuffle::Service::new(
            "tcp://here:1".into(),
            store.clone(),
            PeerPool::new(Config::default()),
            tokio::runtime::Handle::current(),
            Arc::new(crate::ops::Registry::builtin()),
        );
        let framed = Value {
            header: bytes::Bytes::from_static(b"h"),
            frames: vec![Buffer::host(vec![7u8; 16])],
        };
        let put = codec::encode_put(&[("k".into(), framed.clone())]).unwrap();
        let ack: DataAck = codec::decode(
            &answer_one(put.clone(), &store, &shm::host_id(), &served, &shuffle)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(ack, DataAck { items: 1 });
        // Put aside: not served until adopted as a task's result.
        let keys = codec::encode(&ask(DataRequest::Tasks(vec![TaskId::new(4)]))).unwrap();
        assert_eq!(
            codec::decode_reply(
                answer_one(keys.clone(), &store, &shm::host_id(), &served, &shuffle)
                    .await
                    .unwrap(),
                import_host
            )
            .unwrap(),
            vec![None]
        );
        assert!(store.adopt(&"k".into(), TaskId::new(4)));
        assert_eq!(
            codec::decode_reply(
                answer_one(keys, &store, &shm::host_id(), &served, &shuffle)
                    .await
                    .unwrap(),
                import_host
            )
            .unwrap(),
            vec![Some(framed)]
        );
        // Frames that do not add up, unknown requests, garbage: refused.
        let mut short = put;
        short.frames.clear();
        assert!(
            answer_one(short, &store, &shm::host_id(), &served, &shuffle)
                .await
                .is_err()
        );
        for garbage in [vec![42u8, 0], Vec::new()] {
            let message = Message::new(garbage, Vec::new());
            assert!(answer_one(message, &store, &None, &served, &shuffle).await.is_err());
        }
        let discard = codec::encode(&ask(DataRequest::Discard(vec!["k".into()]))).unwrap();
        let ack: DataAck = codec::decode(
            &answer_one(discard, &store, &shm::host_id(), &served, &shuffle)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(ack, DataAck { items: 0 }, "adopted values are not discarded");
        // Shuffle pieces for another worker are refused, saying why; the
        // connection stays up.
        let push = crate::shuffle::Push {
            id: 3,
            run: 0,
            inputs: 1,
            outputs: 1,
            input: 0,
            to: "tcp://elsewhere:9".into(),
            pieces: vec![(0, bytes::Bytes::from_static(b"h"), 1)],
        };
        let mut message = codec::encode(&ask(DataRequest::Push(push))).unwrap();
        message.frames = vec![Buffer::host(vec![1u8; 4])];
        let reply: PushReply =
            codec::decode(&answer_one(message, &store, &None, &served, &shuffle).await.unwrap()).unwrap();
        let refused = reply.0.unwrap_err();
        assert!(
            refused.contains("meant for tcp://elsewhere:9 reached tcp://here:1"),
            "{refused}"
        );
    }
}
