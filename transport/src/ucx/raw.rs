//! A bare UCX endpoint for tests: it sends and receives datagrams as
//! they are, without handshake or framing, as a raw socket does for
//! `tcp://`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::link::{Datagram, Handle};
use crate::addr::{Address, Scheme};
use crate::error::{Result, TransportError};
use crate::pool::BufferPool;

/// An endpoint connected to a `ucx://` listener that exchanges raw
/// datagrams (UCP tagged messages under the transport's tag): what a
/// malformed or hostile peer would send. For tests.
pub struct RawPeer {
    link: Arc<Handle>,
    pool: BufferPool,
}

impl RawPeer {
    /// Connects to a `ucx://HOST:PORT` listener, without a handshake.
    pub async fn connect(addr: &str) -> Result<RawPeer> {
        let addr: Address = addr.parse()?;
        if addr.scheme() != Scheme::Ucx {
            return Err(TransportError::InvalidAddress {
                addr: addr.to_string(),
                reason: "a raw UCX peer needs a ucx:// address".into(),
            });
        }
        let link = super::listener::dial(&addr).await?;
        link.wired_up(Duration::from_secs(10), "handshake").await?;
        Ok(RawPeer {
            link,
            pool: BufferPool::new(0),
        })
    }

    /// Sends `bytes` as one datagram and waits until it is out.
    pub async fn send(&self, bytes: &[u8]) -> Result<()> {
        self.link
            .send_datagram(bytes.to_vec(), Duration::from_secs(10), "message")
            .await
    }

    /// The next datagram, or `None` once the peer has closed the
    /// connection; fails after `timeout` without either.
    pub async fn recv(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let datagram = self
            .link
            .recv_datagram(usize::MAX, &self.pool, Some(deadline))
            .await
            .map_err(|_| TransportError::Timeout {
                peer: self.link.addr.clone(),
                after: timeout,
                during: "message",
            })?;
        Ok(match datagram {
            Datagram::Got(buf) => Some(buf.as_ref().to_vec()),
            Datagram::TooLong(_) | Datagram::Gone | Datagram::GotDevice(_) => None,
        })
    }
}
