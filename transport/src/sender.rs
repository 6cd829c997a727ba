//! The sending half of a connection, shared by every backend.
//!
//! Sends on one connection are serialised by a fair (FIFO) lock, so a
//! message is written whole before the next starts and at most one
//! message per connection is in flight inside the transport; callers
//! waiting their turn hold their own messages. [`Sender::close`] queues
//! behind the pending sends and so drains them; [`Sender::abort`] fails
//! them at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit};

use crate::connection::Peer;
use crate::error::{Result, TransportError};
use crate::inproc::InprocTx;
use crate::message::Message;
use crate::stream::{self, BoxWrite};
use crate::ucx::UcxWriter;

/// Sends messages to one peer. Cloning shares the connection.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) peer: Arc<Peer>,
    writer: Mutex<WriteState>,
    aborted: AtomicBool,
    abort_notify: Notify,
    /// Held while either half lives: a slot of the listener's connection
    /// limit.
    _permit: Option<OwnedSemaphorePermit>,
}

struct WriteState {
    writer: Writer,
    /// Set before each write and cleared after it completes, so a send
    /// that fails or is cancelled half-way leaves the connection closed
    /// rather than mid-message.
    closed: bool,
}

/// Where a backend puts whole messages.
pub(crate) enum Writer {
    /// A byte stream (TCP, TLS) and its I/O timeout.
    Stream(BoxWrite, std::time::Duration),
    /// A same-process channel; `None` once closed.
    Inproc(Option<InprocTx>),
    /// A UCX endpoint (only UCX builds make one).
    #[cfg_attr(not(feature = "ucx"), allow(dead_code))]
    Ucx(UcxWriter),
}

impl Sender {
    pub(crate) fn new(peer: Arc<Peer>, writer: Writer, permit: Option<OwnedSemaphorePermit>) -> Self {
        Sender {
            shared: Arc::new(Shared {
                peer,
                writer: Mutex::new(WriteState { writer, closed: false }),
                aborted: AtomicBool::new(false),
                abort_notify: Notify::new(),
                _permit: permit,
            }),
        }
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The peer this sends to.
    pub fn peer(&self) -> &Peer {
        &self.shared.peer
    }

    /// Sends one message, waiting for earlier sends on this connection
    /// and for room at the peer. Returns once the message is handed to
    /// the operating system (in process, to the peer's queue; over UCX,
    /// once UCX is done with its buffers, which for large frames means the
    /// peer has received them).
    ///
    /// Cancelling this future half-way through a write closes the
    /// connection, since the peer would otherwise see half a message.
    pub async fn send(&self, message: Message) -> Result<()> {
        let shared = &*self.shared;
        let mut state = tokio::select! {
            biased;
            () = shared.aborted() => return Err(shared.aborted_error()),
            state = shared.writer.lock() => state,
        };
        if state.closed {
            return Err(shared.closed_error());
        }
        state.closed = true;
        let result = tokio::select! {
            biased;
            () = shared.aborted() => Err(shared.aborted_error()),
            result = write(&mut state.writer, &shared.peer, message) => result,
        };
        state.closed = result.is_err();
        result
    }

    /// Closes the connection gracefully: sends already waiting are written
    /// first, then the stream is shut down (the peer's `recv` returns
    /// `Ok(None)`). Later sends fail with [`TransportError::Closed`].
    pub async fn close(&self) -> Result<()> {
        let shared = &*self.shared;
        let mut state = shared.writer.lock().await;
        if state.closed {
            return Ok(());
        }
        state.closed = true;
        match &mut state.writer {
            Writer::Stream(writer, io_timeout) => stream::shutdown(writer, *io_timeout, &shared.peer).await,
            Writer::Inproc(tx) => {
                tx.take();
                Ok(())
            }
            Writer::Ucx(writer) => writer.close(&shared.peer).await,
        }
    }

    /// Fails every pending and future send with
    /// [`TransportError::Aborted`], including one being written.
    pub fn abort(&self) {
        self.shared.abort();
    }
}

impl Shared {
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.abort_notify.notify_waiters();
    }

    async fn aborted(&self) {
        loop {
            let notified = self.abort_notify.notified();
            if self.aborted.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn aborted_error(&self) -> TransportError {
        TransportError::Aborted {
            peer: self.peer.to_string(),
        }
    }

    fn closed_error(&self) -> TransportError {
        TransportError::Closed {
            peer: self.peer.to_string(),
        }
    }
}

async fn write(writer: &mut Writer, peer: &Peer, message: Message) -> Result<()> {
    match writer {
        Writer::Stream(writer, io_timeout) => stream::write_message(writer, &message, *io_timeout, peer).await,
        Writer::Inproc(Some(tx)) => tx.send(message, peer).await,
        Writer::Inproc(None) => Err(TransportError::Closed { peer: peer.to_string() }),
        Writer::Ucx(writer) => writer.send(&message, peer).await,
    }
}
