//! The data plane: the server that hands a worker's results to peers and
//! clients, and the pool of connections used to fetch them.
//!
//! Results never pass through the scheduler: a worker fetches its inputs
//! straight from the workers that hold them, and a client gathers from the
//! workers the scheduler names.
//!
//! Between processes on one host, frames that lie in shared memory (see
//! [`crate::shm`]) are not sent at all: every request carries the asker's
//! host identity, and a server on the same host describes such frames so
//! that the asker maps them. Where mapping fails the pool asks again for
//! the bytes, once per address, so the choice is automatic and invisible.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::{debug, warn};
use weft_transport::{Config, Connection, Listener, TransportError, connect};

use crate::codec::{self, DataAsk, DataRequest, ReplyError};
use crate::error::{Result, RuntimeError};
use crate::shm::{self, HostId};
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
        let ask = match codec::decode::<DataAsk>(&message) {
            Ok(ask) => ask,
            Err(reason) => {
                warn!(peer = %connection.peer(), reason, "malformed data request; closing");
                return;
            }
        };
        let values: Vec<Option<Arc<Value>>> = match ask.request {
            DataRequest::Tasks(tasks) => store.load_all(tasks.into_iter().map(Lookup::Task)).await,
            DataRequest::Keys(keys) => store.load_all(keys.into_iter().map(Lookup::Key)).await,
        };
        let same_host = ask.host.is_some() && ask.host == shm::host_id();
        let share = |frame: &weft_transport::Frame| frame.as_host().filter(|_| same_host).and_then(shm::export);
        let reply = match codec::encode_reply(&values, share) {
            Ok(reply) => reply,
            Err(reason) => {
                warn!(reason, "cannot encode a data reply");
                return;
            }
        };
        if connection.send(reply).await.is_err() {
            return;
        }
    }
}

/// How long a fetch keeps trying to reach a peer.
pub const PEER_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Connections to data servers, one per address, reused across requests.
#[derive(Clone)]
pub struct PeerPool {
    config: Config,
    connections: Arc<Mutex<HashMap<String, Slot>>>,
    /// Our host, sent with requests so a same-host server shares memory.
    host: Option<HostId>,
    /// Addresses whose shared memory we could not map: asked for bytes.
    unmappable: Arc<Mutex<HashSet<String>>>,
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
            host: shm::host_id(),
            unmappable: Arc::default(),
        }
    }

    /// Asks the data server at `address`; `None` for each item it lacks.
    /// Requests to one address go one at a time over one connection; a
    /// failed connection is dropped and the next request reconnects.
    pub async fn request(&self, address: &str, request: &DataRequest) -> Result<Vec<Option<Value>>> {
        let slot = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(address.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        let result = self.exchange(&mut slot, address, request).await;
        if result.is_err() {
            *slot = None;
        }
        result
    }

    async fn exchange(
        &self,
        slot: &mut Option<Connection>,
        address: &str,
        request: &DataRequest,
    ) -> Result<Vec<Option<Value>>> {
        let connection = match slot {
            Some(connection) => connection,
            None => slot.insert(connect(address, &self.config).await?),
        };
        let mappable = self.host.is_some() && !self.lock_unmappable().contains(address);
        let mut ask = DataAsk {
            request: request.clone(),
            host: if mappable { self.host.clone() } else { None },
        };
        let values = match codec::decode_reply(round_trip(connection, address, &ask).await?, shm::import) {
            Ok(values) => values,
            Err(ReplyError::Unmapped(reason)) => {
                if self.lock_unmappable().insert(address.to_string()) {
                    debug!(
                        address,
                        reason, "cannot map a same-host peer's memory; its data comes over the socket"
                    );
                }
                ask.host = None;
                codec::decode_reply(round_trip(connection, address, &ask).await?, shm::import)
                    .map_err(|error| RuntimeError::protocol(address, error.to_string()))?
            }
            Err(error) => return Err(RuntimeError::protocol(address, error.to_string())),
        };
        let asked = match request {
            DataRequest::Tasks(tasks) => tasks.len(),
            DataRequest::Keys(keys) => keys.len(),
        };
        if values.len() != asked {
            return Err(RuntimeError::protocol(
                address,
                format!("answered {} items for {asked}", values.len()),
            ));
        }
        Ok(values)
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

/// Sends one request and waits for its reply.
async fn round_trip(connection: &mut Connection, address: &str, ask: &DataAsk) -> Result<weft_transport::Message> {
    let message = codec::encode(ask).map_err(|reason| RuntimeError::protocol(address, reason))?;
    connection.send(message).await?;
    connection
        .recv()
        .await?
        .ok_or_else(|| RuntimeError::protocol(address, "closed the connection before replying"))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use weft_transport::{Frame, listen};

    use super::*;
    use crate::codec::DataReply;
    use crate::ids::TaskId;
    use crate::shm::ShmRef;

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
                        shared: vec![(0, unreachable)],
                    })
                    .unwrap()
                } else {
                    let value = Value {
                        header,
                        frames: vec![Frame::host(vec![7u8; 8])],
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
}
