//! The `ucx://` backend of a build without the `ucx` feature: the types
//! exist so that the rest of the crate is the same in every build, and
//! using them reports [`TransportError::Unsupported`].

use std::convert::Infallible;
use std::time::Duration;

use crate::addr::Address;
use crate::config::Config;
use crate::connection::{Connection, Peer};
use crate::error::{Result, TransportError};
use crate::message::Message;
use crate::tcp::AcceptQueue;

fn unsupported() -> TransportError {
    TransportError::Unsupported {
        scheme: "ucx",
        reason: "this build has no UCX backend; rebuild weft-transport with `--features ucx` \
                 (needs UCX: libucx-dev, see ci/setup.sh), or use tcp:// or tls://",
    }
}

/// Listening on `ucx://` is not supported in this build.
pub(crate) async fn bind(_addr: &Address, _config: &Config) -> Result<AcceptQueue> {
    Err(unsupported())
}

/// Never exists in this build.
pub(crate) struct UcxWriter(Infallible);

impl UcxWriter {
    pub(crate) async fn send(&self, _message: &Message, _peer: &Peer) -> Result<()> {
        match self.0 {}
    }

    pub(crate) async fn close(&self, _peer: &Peer) -> Result<()> {
        match self.0 {}
    }
}

/// Never exists in this build.
pub(crate) struct UcxReceiver(Infallible);

impl UcxReceiver {
    pub(crate) async fn recv(&mut self, _peer: &Peer) -> Result<Option<Message>> {
        match self.0 {}
    }
}

pub(crate) async fn connect(_addr: &Address, _config: &Config) -> Result<Connection> {
    Err(unsupported())
}

/// A raw UCX peer for tests; this build has none, so connecting fails
/// with [`TransportError::Unsupported`].
pub struct RawPeer(Infallible);

impl RawPeer {
    /// Fails: this build has no UCX backend.
    pub async fn connect(_addr: &str) -> Result<RawPeer> {
        Err(unsupported())
    }

    /// Never called: no `RawPeer` exists in this build.
    pub async fn send(&self, _bytes: &[u8]) -> Result<()> {
        match self.0 {}
    }

    /// Never called: no `RawPeer` exists in this build.
    pub async fn recv(&self, _timeout: Duration) -> Result<Option<Vec<u8>>> {
        match self.0 {}
    }
}
