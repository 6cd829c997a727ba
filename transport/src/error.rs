//! Errors of the transport, each naming the peer or address involved.

use std::time::Duration;

use thiserror::Error;

use crate::wire::WireError;

/// Everything that can go wrong in `weft-transport`.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The address is not a URL this crate understands.
    #[error("invalid address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scheme is known but not built into this binary.
    #[error("{scheme}:// is not available: {reason}")]
    Unsupported {
        /// The URL scheme.
        scheme: &'static str,
        /// Why, and what to do about it.
        reason: &'static str,
    },
    /// Another listener already holds the address.
    #[error("cannot listen on {addr}: address already in use")]
    AddrInUse {
        /// The address.
        addr: String,
    },
    /// Binding or accepting on a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The system's reason.
        source: std::io::Error,
    },
    /// Every attempt to connect failed until the deadline.
    #[error("cannot connect to {addr}: gave up after {attempts} attempts in {waited:?}: {last}")]
    Connect {
        /// The address.
        addr: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        waited: Duration,
        /// The last attempt's error.
        last: Box<TransportError>,
    },
    /// The TLS certificates or keys could not be loaded or used.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The handshake with a peer failed on our side.
    #[error("handshake with {peer} failed: {source}")]
    Handshake {
        /// The peer's address.
        peer: String,
        /// What was wrong with its bytes.
        source: WireError,
    },
    /// The TLS handshake failed: an untrusted or missing certificate, a
    /// name mismatch, or a peer that does not speak TLS.
    #[error("TLS handshake with {peer} failed: {source}")]
    Tls {
        /// The peer's address.
        peer: String,
        /// rustls' reason.
        source: std::io::Error,
    },
    /// The peer refused our handshake.
    #[error("{peer} refused the connection: {reason}")]
    Rejected {
        /// The peer's address.
        peer: String,
        /// Its reason, as it sent it.
        reason: String,
        /// Whether retrying later may succeed (the peer was busy).
        retryable: bool,
    },
    /// The peer sent a message that breaks the wire format or our limits;
    /// the connection is closed.
    #[error("malformed message from {peer}: {source}")]
    Malformed {
        /// The peer.
        peer: String,
        /// What was wrong.
        source: WireError,
    },
    /// The connection ended in the middle of a handshake or message.
    #[error("connection to {peer} closed in the middle of a {during}")]
    Truncated {
        /// The peer.
        peer: String,
        /// What was being read.
        during: &'static str,
    },
    /// No progress for the configured I/O timeout in the middle of a
    /// handshake or message.
    #[error("connection to {peer} stalled: no progress for {after:?} during a {during}")]
    Timeout {
        /// The peer.
        peer: String,
        /// The timeout that expired.
        after: Duration,
        /// What was in progress.
        during: &'static str,
    },
    /// The operating system reported an error on the connection.
    #[error("I/O error with {peer}: {source}")]
    Io {
        /// The peer.
        peer: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The connection was closed (by us, by the peer, or after an error);
    /// nothing more can be sent.
    #[error("connection to {peer} is closed")]
    Closed {
        /// The peer.
        peer: String,
    },
    /// A send waiting its turn was failed because the connection was
    /// aborted.
    #[error("send to {peer} aborted: the connection was shut down")]
    Aborted {
        /// The peer.
        peer: String,
    },
    /// A device frame could not be staged through host memory for a
    /// transport that writes host bytes only.
    #[error("cannot stage a device frame for {peer}: {source}")]
    Device {
        /// The peer.
        peer: String,
        /// The device's error.
        source: weft_gpu::GpuError,
    },
    /// The listener was closed.
    #[error("listener {addr} is closed")]
    ListenerClosed {
        /// Its address.
        addr: String,
    },
}

impl TransportError {
    /// Whether a new connection attempt may succeed where this one failed:
    /// the peer was not (yet) there or was busy, as opposed to a peer that
    /// refused us for good (wrong token, wrong version) or a bad address.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::Rejected { retryable, .. } => *retryable,
            TransportError::Io { .. }
            | TransportError::Truncated { .. }
            | TransportError::Timeout { .. }
            | TransportError::Closed { .. }
            | TransportError::ListenerClosed { .. } => true,
            _ => false,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = TransportError> = std::result::Result<T, E>;
