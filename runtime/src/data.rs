//! The data plane: the server that hands a worker's results to peers and
//! clients, and the pool of connections used to fetch them.
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
use crate::ids::Key;
use crate::store::{Lookup, Store};
use crate::value::Value;

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
        let reply = match answer(message, &store).await {
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
/// disk are read back first.
async fn answer(message: Message, store: &Arc<Store>) -> std::result::Result<Message, String> {
    match codec::decode::<DataRequest>(&message)? {
        DataRequest::Tasks(tasks) => codec::encode_reply(&store.load_all(tasks.into_iter().map(Lookup::Task)).await),
        DataRequest::Keys(keys) => codec::encode_reply(&store.load_all(keys.into_iter().map(Lookup::Key)).await),
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
    use crate::ids::TaskId;

    #[tokio::test]
    async fn the_server_answers_puts_and_refuses_bad_ones() {
        use weft_transport::Frame;
        let store = Store::unlimited();
        let framed = Value {
            header: bytes::Bytes::from_static(b"h"),
            frames: vec![Frame::host(vec![7u8; 16])],
        };
        let put = codec::encode_put(&[("k".into(), framed.clone())]).unwrap();
        let ack: DataAck = codec::decode(&answer(put.clone(), &store).await.unwrap()).unwrap();
        assert_eq!(ack, DataAck { items: 1 });
        // Put aside: not served by key until adopted.
        let keys = codec::encode(&DataRequest::Keys(vec!["k".into()])).unwrap();
        assert_eq!(
            codec::decode_reply(answer(keys.clone(), &store).await.unwrap()).unwrap(),
            vec![None]
        );
        assert!(store.adopt(&"k".into(), TaskId::new(4)));
        assert_eq!(
            codec::decode_reply(answer(keys, &store).await.unwrap()).unwrap(),
            vec![Some(framed)]
        );
        // Frames that do not add up, unknown requests, garbage: refused.
        let mut short = put;
        short.frames.clear();
        assert!(answer(short, &store).await.is_err());
        assert!(answer(Message::new(vec![42u8, 0], Vec::new()), &store).await.is_err());
        assert!(
            answer(Message::new(Vec::<u8>::new(), Vec::new()), &store)
                .await
                .is_err()
        );
        let discard = codec::encode(&DataRequest::Discard(vec!["k".into()])).unwrap();
        let ack: DataAck = codec::decode(&answer(discard, &store).await.unwrap()).unwrap();
        assert_eq!(ack, DataAck { items: 0 }, "adopted values are not discarded");
    }
}
