//! The data plane: a worker's store of results, the server that hands them
//! to peers and clients, and the pool of connections used to fetch them.
//!
//! Results never pass through the scheduler: a worker fetches its inputs
//! straight from the workers that hold them, and a client gathers from the
//! workers the scheduler names. Clients scattering data push it here too:
//! it waits aside, by key, until the scheduler has the worker adopt it as a
//! task's result (or the client discards it, or it expires).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use weft_transport::{Config, Connection, Listener, Message, TransportError, connect};

use crate::codec::{self, DataAck, DataRequest};
use crate::error::{Result, RuntimeError};
use crate::ids::{Key, TaskId};
use crate::value::Value;

/// A worker's results, by task and by key.
#[derive(Default)]
pub struct Store {
    inner: Mutex<StoreInner>,
}

#[derive(Default)]
struct StoreInner {
    values: HashMap<TaskId, (Option<Key>, Arc<Value>)>,
    by_key: HashMap<Key, TaskId>,
    /// Values clients pushed (scatter) that the scheduler has not yet
    /// named a task for, with when they came.
    staged: HashMap<Key, (Instant, Arc<Value>)>,
    bytes: u64,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        // Maps of shared values stay consistent across a panic elsewhere:
        // every update below is a single insert or remove pair.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a result; `key` indexes it for clients (replicas fetched
    /// from peers come without one).
    pub fn insert(&self, task: TaskId, key: Option<Key>, value: Arc<Value>) {
        let mut inner = self.lock();
        inner.bytes += value.nbytes();
        if let Some(key) = &key {
            inner.by_key.insert(key.clone(), task);
        }
        if let Some((_, old)) = inner.values.insert(task, (key, value)) {
            inner.bytes -= old.nbytes();
            debug!(%task, "result replaced");
        }
    }

    /// Drops a result.
    pub fn remove(&self, task: TaskId) {
        let mut inner = self.lock();
        if let Some((key, value)) = inner.values.remove(&task) {
            inner.bytes -= value.nbytes();
            if let Some(key) = key
                && inner.by_key.get(&key) == Some(&task)
            {
                inner.by_key.remove(&key);
            }
        }
    }

    /// Keeps a value a client pushed under `key` until it is adopted or
    /// discarded.
    pub fn stage(&self, key: Key, value: Arc<Value>, now: Instant) {
        let mut inner = self.lock();
        inner.bytes += value.nbytes();
        if let Some((_, old)) = inner.staged.insert(key, (now, value)) {
            inner.bytes -= old.nbytes();
        }
    }

    /// Makes the value staged under `key` the result of `task`; false when
    /// nothing is staged under it.
    pub fn adopt(&self, key: &Key, task: TaskId) -> bool {
        let value = {
            let mut inner = self.lock();
            let Some((_, value)) = inner.staged.remove(key) else {
                return false;
            };
            inner.bytes -= value.nbytes();
            value
        };
        self.insert(task, Some(key.clone()), value);
        true
    }

    /// Drops staged values; returns how many there were.
    pub fn discard(&self, keys: &[Key]) -> usize {
        let mut inner = self.lock();
        let mut dropped = 0;
        for key in keys {
            if let Some((_, value)) = inner.staged.remove(key) {
                inner.bytes -= value.nbytes();
                dropped += 1;
            }
        }
        dropped
    }

    /// Drops values staged before `now - ttl`: their scatter never
    /// completed (the client died between pushing and registering them).
    /// Returns how many.
    pub fn expire_staged(&self, now: Instant, ttl: Duration) -> usize {
        let mut inner = self.lock();
        let before = inner.staged.len();
        let mut freed = 0;
        inner.staged.retain(|_, (at, value)| {
            let keep = now.saturating_duration_since(*at) < ttl;
            if !keep {
                freed += value.nbytes();
            }
            keep
        });
        inner.bytes -= freed;
        before - inner.staged.len()
    }

    /// A result by task.
    pub fn get(&self, task: TaskId) -> Option<Arc<Value>> {
        self.lock().values.get(&task).map(|(_, v)| v.clone())
    }

    /// A result by key.
    pub fn get_key(&self, key: &str) -> Option<Arc<Value>> {
        let inner = self.lock();
        let task = inner.by_key.get(key)?;
        inner.values.get(task).map(|(_, v)| v.clone())
    }

    /// Drops everything (the scheduler that knew of it is gone).
    pub fn clear(&self) {
        *self.lock() = StoreInner::default();
    }

    /// Results held (staged values included) and their total size.
    pub fn usage(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.values.len() + inner.staged.len(), inner.bytes)
    }
}

/// Serves results from `store` to every peer that connects to `listener`,
/// until the listener is dropped with the task.
pub async fn serve(mut listener: Listener, store: Arc<Store>) {
    loop {
        match listener.accept().await {
            Ok(connection) => {
                tokio::spawn(serve_connection(connection, store.clone()));
            }
            Err(TransportError::ListenerClosed { .. }) => return,
            Err(error) => debug!(%error, "data connection refused"),
        }
    }
}

async fn serve_connection(mut connection: Connection, store: Arc<Store>) {
    loop {
        let message = match connection.recv().await {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(error) => {
                debug!(%error, "data connection closed");
                return;
            }
        };
        let reply = match answer(message, &store) {
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

/// The reply to one request, or why the request is refused.
fn answer(message: Message, store: &Store) -> std::result::Result<Message, String> {
    match codec::decode::<DataRequest>(&message)? {
        DataRequest::Tasks(tasks) => codec::encode_reply(&tasks.into_iter().map(|t| store.get(t)).collect::<Vec<_>>()),
        DataRequest::Keys(keys) => codec::encode_reply(&keys.iter().map(|k| store.get_key(k)).collect::<Vec<_>>()),
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
    }
}

/// How long a fetch keeps trying to reach a peer.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a value pushed by a client waits to be adopted before it is
/// dropped. A scatter registers its values right after pushing them, so
/// only a client that died in between leaves any to expire.
pub const STAGED_TTL: Duration = Duration::from_secs(300);

/// Connections to data servers, one per address, reused across requests.
#[derive(Clone)]
pub struct PeerPool {
    config: Config,
    connections: Arc<Mutex<HashMap<String, Slot>>>,
}

/// One address's connection, once made; requests over it take turns.
type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

impl PeerPool {
    /// A pool that connects with these settings, except that it gives up
    /// on a peer after [`PEER_CONNECT_TIMEOUT`]: a peer named as a holder
    /// is up, or dead and then better asked of another holder at once.
    pub fn new(config: Config) -> Self {
        PeerPool {
            config: Config {
                connect_timeout: config.connect_timeout.min(PEER_CONNECT_TIMEOUT),
                ..config
            },
            connections: Arc::default(),
        }
    }

    /// Asks the data server at `address`; `None` for each item it lacks.
    /// Requests to one address go one at a time over one connection; a
    /// failed connection is dropped and the next request reconnects.
    pub async fn request(&self, address: &str, request: &DataRequest) -> Result<Vec<Option<Value>>> {
        let message = codec::encode(request).map_err(|reason| RuntimeError::protocol(address, reason))?;
        let reply = self.round_trip(address, message).await?;
        let values = codec::decode_reply(reply).map_err(|reason| RuntimeError::protocol(address, reason))?;
        if values.len() != request.len() {
            return Err(RuntimeError::protocol(
                address,
                format!("answered {} items for {}", values.len(), request.len()),
            ));
        }
        Ok(values)
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

    /// Drops values put aside by [`PeerPool::put`] and never adopted.
    pub async fn discard(&self, address: &str, keys: Vec<Key>) -> Result<()> {
        let message =
            codec::encode(&DataRequest::Discard(keys)).map_err(|reason| RuntimeError::protocol(address, reason))?;
        let ack = self.round_trip(address, message).await?;
        codec::decode::<DataAck>(&ack).map_err(|reason| RuntimeError::protocol(address, reason))?;
        Ok(())
    }

    /// Sends one message to `address` and returns its reply.
    async fn round_trip(&self, address: &str, message: Message) -> Result<Message> {
        let slot = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(address.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        let result = self.exchange(&mut slot, address, message).await;
        if result.is_err() {
            *slot = None;
        }
        result
    }

    async fn exchange(&self, slot: &mut Option<Connection>, address: &str, message: Message) -> Result<Message> {
        let connection = match slot {
            Some(connection) => connection,
            None => slot.insert(connect(address, &self.config).await?),
        };
        connection.send(message).await?;
        connection
            .recv()
            .await?
            .ok_or_else(|| RuntimeError::protocol(address, "closed the connection before replying"))
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
    use super::*;

    #[test]
    fn staged_values_are_adopted_discarded_or_expire() {
        let store = Store::default();
        let t0 = Instant::now();
        let value = |i: u64| Arc::new(Value::encode(&i).unwrap());
        let size = value(1).nbytes();
        store.stage("a".into(), value(1), t0);
        store.stage("b".into(), value(2), t0);
        store.stage("c".into(), value(3), t0 + Duration::from_secs(10));
        assert_eq!(store.usage(), (3, 3 * size));
        // Staged values are not results yet.
        assert!(store.get_key("a").is_none());
        assert!(store.adopt(&"a".into(), TaskId::new(1)));
        assert_eq!(store.get(TaskId::new(1)), Some(value(1)));
        assert_eq!(store.get_key("a"), Some(value(1)));
        assert!(!store.adopt(&"a".into(), TaskId::new(2)), "adopted once");
        assert_eq!(store.discard(&["b".into(), "zz".into()]), 1);
        assert_eq!(store.usage(), (2, 2 * size));
        // Only what waited longer than the TTL expires.
        assert_eq!(
            store.expire_staged(t0 + STAGED_TTL + Duration::from_secs(1), STAGED_TTL),
            0
        );
        assert_eq!(
            store.expire_staged(t0 + STAGED_TTL + Duration::from_secs(10), STAGED_TTL),
            1
        );
        assert!(!store.adopt(&"c".into(), TaskId::new(3)));
        assert_eq!(store.usage(), (1, size));
        store.remove(TaskId::new(1));
        assert_eq!(store.usage(), (0, 0));
    }

    #[test]
    fn the_server_answers_puts_and_refuses_bad_ones() {
        use weft_transport::Frame;
        let store = Store::default();
        let framed = Value {
            header: bytes::Bytes::from_static(b"h"),
            frames: vec![Frame::host(vec![7u8; 16])],
        };
        let put = codec::encode_put(&[("k".into(), framed.clone())]).unwrap();
        let ack: DataAck = codec::decode(&answer(put.clone(), &store).unwrap()).unwrap();
        assert_eq!(ack, DataAck { items: 1 });
        // Put aside: not served by key until adopted.
        let keys = codec::encode(&DataRequest::Keys(vec!["k".into()])).unwrap();
        assert_eq!(
            codec::decode_reply(answer(keys.clone(), &store).unwrap()).unwrap(),
            vec![None]
        );
        assert!(store.adopt(&"k".into(), TaskId::new(4)));
        assert_eq!(
            codec::decode_reply(answer(keys, &store).unwrap()).unwrap(),
            vec![Some(framed)]
        );
        // Frames that do not add up, unknown requests, garbage: refused.
        let mut short = put;
        short.frames.clear();
        assert!(answer(short, &store).is_err());
        assert!(answer(Message::new(vec![42u8, 0], Vec::new()), &store).is_err());
        assert!(answer(Message::new(Vec::<u8>::new(), Vec::new()), &store).is_err());
        let discard = codec::encode(&DataRequest::Discard(vec!["k".into()])).unwrap();
        let ack: DataAck = codec::decode(&answer(discard, &store).unwrap()).unwrap();
        assert_eq!(ack, DataAck { items: 0 }, "adopted values are not discarded");
    }
}
