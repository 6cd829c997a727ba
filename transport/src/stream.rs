//! Moving the wire format over a byte stream (TCP or TLS): the handshake,
//! vectored writes, and a cancel-safe reader that fills pooled buffers.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::time::timeout;
use weft_gpu::{Buffer, Device, DeviceBuffer, Gpu};

use crate::config::Config;
use crate::connection::Peer;
use crate::error::{Result, TransportError};
use crate::landing::{CHUNK, Target};
use crate::message::Message;
use crate::pool::BufferPool;
use crate::wire::{self, Ack, Hello, Limits, Status, WireError};

/// A boxed read half of a stream.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Sync + Unpin>;
/// A boxed write half of a stream.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// Large enough to take a small message in one system call; larger reads
/// bypass it and land straight in the frame buffers.
const READ_BUFFER: usize = 64 << 10;

/// Client side of the handshake: says hello, reads the ack, and returns
/// the server's name.
pub(crate) async fn client_handshake<S>(stream: &mut S, config: &Config, addr: &str) -> Result<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = config.hello();
    let handshake = async {
        let mut out = Vec::new();
        wire::encode_hello(&hello, &mut out).map_err(|source| handshake_error(addr, source))?;
        stream.write_all(&out).await.map_err(|e| io_error(addr, e))?;
        stream.flush().await.map_err(|e| io_error(addr, e))?;
        let mut fixed = [0u8; wire::ACK_FIXED_LEN];
        read_exact(stream, &mut fixed, addr, "handshake").await?;
        let text_len = wire::ack_text_len(&fixed).map_err(|source| handshake_error(addr, source))?;
        let mut text = vec![0u8; text_len];
        read_exact(stream, &mut text, addr, "handshake").await?;
        wire::decode_ack(&fixed, &text).map_err(|source| handshake_error(addr, source))
    };
    let ack = with_timeout(config.handshake_timeout, addr, "handshake", handshake).await?;
    ack_verdict(ack, addr)
}

/// What a client makes of the server's ack: the server's name, or why it
/// refused us. Shared by every backend whose handshake travels as bytes.
pub(crate) fn ack_verdict(ack: Ack, addr: &str) -> Result<String> {
    match ack.status {
        Status::Accepted if ack.version == wire::PROTOCOL_VERSION => Ok(ack.text),
        Status::Accepted => Err(handshake_error(
            addr,
            WireError::VersionMismatch {
                ours: wire::PROTOCOL_VERSION,
                theirs: ack.version,
            },
        )),
        status => Err(TransportError::Rejected {
            peer: addr.to_string(),
            reason: ack.text,
            retryable: status == Status::Busy,
        }),
    }
}

/// Server side of the handshake: reads the hello, checks version and
/// token, and answers. Returns the client's name. A client we refuse is
/// told why before the connection closes.
pub(crate) async fn server_handshake<S>(stream: &mut S, config: &Config, addr: &str) -> Result<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = async {
        let verdict = match read_hello(stream, addr).await {
            Ok(hello) => check_hello(&hello, config.token_bytes())
                .map(|()| hello.name)
                .map_err(|source| handshake_error(addr, source)),
            Err(e) => Err(e),
        };
        if let Some(ack) = answer(&verdict, config) {
            let mut out = Vec::new();
            wire::encode_ack(&ack, &mut out);
            stream.write_all(&out).await.map_err(|e| io_error(addr, e))?;
            stream.flush().await.map_err(|e| io_error(addr, e))?;
        }
        verdict
    };
    let result = with_timeout(config.handshake_timeout, addr, "handshake", handshake).await;
    if result.is_err() {
        // Best effort: the peer learns of the rejection from the ack.
        let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
    result
}

/// The ack a server sends after checking a hello: acceptance, the reason
/// of a refusal a client can be told, or nothing (the client broke the
/// format or vanished).
pub(crate) fn answer(verdict: &Result<String>, config: &Config) -> Option<Ack> {
    match verdict {
        Ok(_) => Some(accept_ack(config)),
        Err(TransportError::Handshake { source, .. }) => reject_ack(source),
        Err(_) => None,
    }
}

/// The ack that refuses a client because the listener is full.
pub(crate) fn busy_ack(max_connections: usize) -> Ack {
    Ack {
        version: wire::PROTOCOL_VERSION,
        status: Status::Busy,
        text: format!("busy: at the limit of {max_connections} connections"),
    }
}

/// Refuses a client while the listener is at its connection limit.
pub(crate) async fn refuse_busy<S>(stream: &mut S, addr: &str, max_connections: usize)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let refuse = async {
        // Read the hello first: closing with unread bytes would reset the
        // connection before the client reads our answer.
        read_hello(stream, addr).await?;
        let mut out = Vec::new();
        wire::encode_ack(&busy_ack(max_connections), &mut out);
        stream.write_all(&out).await.map_err(|e| io_error(addr, e))?;
        stream.shutdown().await.map_err(|e| io_error(addr, e))
    };
    let _ = with_timeout(Duration::from_secs(1), addr, "handshake", refuse).await;
}

async fn read_hello<S: AsyncRead + Unpin>(stream: &mut S, addr: &str) -> Result<Hello> {
    let mut fixed = [0u8; wire::HELLO_FIXED_LEN];
    read_exact(stream, &mut fixed, addr, "handshake").await?;
    let rest_len = wire::hello_rest_len(&fixed).map_err(|source| handshake_error(addr, source))?;
    let mut rest = vec![0u8; rest_len];
    read_exact(stream, &mut rest, addr, "handshake").await?;
    wire::decode_hello(&fixed, &rest).map_err(|source| handshake_error(addr, source))
}

/// Checks a client's hello against our version and token; shared with
/// `inproc://`, whose hellos never touch bytes.
pub(crate) fn check_hello(hello: &Hello, token: &[u8]) -> Result<(), WireError> {
    if hello.version != wire::PROTOCOL_VERSION {
        return Err(WireError::VersionMismatch {
            ours: wire::PROTOCOL_VERSION,
            theirs: hello.version,
        });
    }
    if !constant_time_eq(&hello.token, token) {
        return Err(WireError::BadToken);
    }
    Ok(())
}

/// The ack that accepts a client.
pub(crate) fn accept_ack(config: &Config) -> Ack {
    Ack {
        version: wire::PROTOCOL_VERSION,
        status: Status::Accepted,
        text: config.name.clone(),
    }
}

/// The ack that tells a client why it is refused, if the reason is one a
/// client can be told.
pub(crate) fn reject_ack(error: &WireError) -> Option<Ack> {
    let status = match error {
        WireError::VersionMismatch { .. } => Status::VersionMismatch,
        WireError::BadToken => Status::BadToken,
        _ => return None,
    };
    Some(Ack {
        version: wire::PROTOCOL_VERSION,
        status,
        text: error.to_string(),
    })
}

/// Compares tokens in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Writes one message: the prelude and frame table, the header and every
/// frame. Host bytes go out with vectored I/O straight from where they lie;
/// a device frame of more than [`CHUNK`] bytes is copied down in chunks
/// through the device's pinned staging pool by a blocking thread while the
/// chunk before it is written, so host memory holds a few chunks of it, not
/// all of it, and the event loop never waits on the device.
pub(crate) async fn write_message(
    writer: &mut BoxWrite,
    message: &Message,
    io_timeout: Duration,
    peer: &Peer,
) -> Result<()> {
    let layout = wire::encode_layout(message.header.len(), message.frame_table());
    // Host bytes not yet written, in order.
    let mut pending: Vec<Bytes> = vec![layout.into(), message.header.clone()];
    for frame in &message.frames {
        match frame.as_device() {
            Some(device) if device.len() > CHUNK => {
                write_vectored_all(writer, &pending, io_timeout, peer).await?;
                pending.clear();
                write_device_frame(writer, device, io_timeout, peer).await?;
            }
            _ => pending.push(frame.to_host().map_err(device_error(peer))?),
        }
    }
    write_vectored_all(writer, &pending, io_timeout, peer).await?;
    with_timeout(io_timeout, peer, "message", async {
        writer.flush().await.map_err(|e| io_error(&peer.to_string(), e))
    })
    .await
}

/// A device copy's failure, sending to `peer`.
fn device_error(peer: &Peer) -> impl Fn(weft_gpu::GpuError) -> TransportError + '_ {
    move |source| TransportError::Device {
        peer: peer.to_string(),
        source,
    }
}

/// Writes every byte of `parts` with vectored I/O.
async fn write_vectored_all(writer: &mut BoxWrite, parts: &[Bytes], io_timeout: Duration, peer: &Peer) -> Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| IoSlice::new(b))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let written = with_timeout(io_timeout, peer, "message", async {
            writer
                .write_vectored(slices)
                .await
                .map_err(|e| io_error(&peer.to_string(), e))
        })
        .await?;
        if written == 0 {
            return Err(TransportError::Closed { peer: peer.to_string() });
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// Writes a device frame chunk by chunk: a blocking thread copies each
/// [`CHUNK`] into a pinned staging buffer, at most two ahead of the one
/// being written. A failed write stops the copies; a failed copy fails the
/// write.
async fn write_device_frame(
    writer: &mut BoxWrite,
    device: &DeviceBuffer,
    io_timeout: Duration,
    peer: &Peer,
) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let src = device.clone();
    let copier = tokio::task::spawn_blocking(move || {
        let gpu = src.gpu().clone();
        let copy = |offset: usize| -> weft_gpu::Result<(weft_gpu::StagingBuffer, usize)> {
            let len = CHUNK.min(src.len() - offset);
            // Every chunk of one class, so the pool reuses them.
            let mut stage = gpu.staging(CHUNK)?;
            gpu.thread_stream()?
                .copy_d2h_at(&src, offset, &mut stage.as_mut_slice()[..len])?;
            Ok((stage, len))
        };
        for offset in (0..src.len()).step_by(CHUNK) {
            let chunk = copy(offset);
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    while let Some(chunk) = rx.recv().await {
        let (stage, len) = chunk.map_err(device_error(peer))?;
        let bytes = &stage.as_slice()[..len];
        with_timeout(io_timeout, peer, "message", async {
            writer
                .write_all(bytes)
                .await
                .map_err(|e| io_error(&peer.to_string(), e))
        })
        .await?;
    }
    // Every chunk was written: the copier has returned, or panicked (a bug,
    // passed on rather than sending a short frame).
    if let Err(e) = copier.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
    Ok(())
}

/// Flushes and shuts down the write side: the peer reads end-of-stream.
pub(crate) async fn shutdown(writer: &mut BoxWrite, io_timeout: Duration, peer: &Peer) -> Result<()> {
    with_timeout(io_timeout, peer, "shutdown", async {
        writer.shutdown().await.map_err(|e| io_error(&peer.to_string(), e))
    })
    .await
}

/// Reads messages from a stream into buffers from a pool, and frames the
/// sender held in device memory into [`Config::gpu`] where there is one
/// (see [`crate::landing`]).
///
/// `recv` is cancel-safe: what has been read of a message is kept here,
/// and a new call goes on where the dropped one stopped.
pub(crate) struct StreamReceiver {
    reader: BufReader<BoxRead>,
    limits: Limits,
    pool: BufferPool,
    gpu: Option<Arc<Gpu>>,
    io_timeout: Duration,
    partial: Partial,
    /// Bytes read of the prelude or the frame table.
    filled: usize,
}

/// What has been read of the message in progress.
enum Partial {
    Prelude([u8; wire::PRELUDE_LEN]),
    Table {
        header_len: usize,
        table: Vec<u8>,
    },
    /// The header and then each frame, in order.
    Parts {
        layout: wire::Layout,
        header: Option<Bytes>,
        done: Vec<Buffer>,
        current: Target,
    },
}

impl StreamReceiver {
    pub(crate) fn new(reader: BoxRead, config: &Config) -> Self {
        StreamReceiver {
            reader: BufReader::with_capacity(READ_BUFFER, reader),
            limits: config.limits,
            pool: config.pool.clone(),
            gpu: config.gpu.clone(),
            io_timeout: config.io_timeout,
            partial: Partial::Prelude([0; wire::PRELUDE_LEN]),
            filled: 0,
        }
    }

    /// The next message, `Ok(None)` at a clean end of stream. Any error
    /// leaves the stream unusable.
    pub(crate) async fn recv(&mut self, peer: &Peer) -> Result<Option<Message>> {
        loop {
            let started = self.filled > 0 || !matches!(self.partial, Partial::Prelude(_));
            let target = match &mut self.partial {
                Partial::Prelude(prelude) => &mut prelude[self.filled..],
                Partial::Table { table, .. } => &mut table[self.filled..],
                Partial::Parts { current, .. } => current.unfilled(),
            };
            if target.is_empty() {
                if let Some(message) = self.advance().map_err(|source| TransportError::Malformed {
                    peer: peer.to_string(),
                    source,
                })? {
                    return Ok(Some(message));
                }
                continue;
            }
            let reader = &mut self.reader;
            let read = if started {
                with_timeout(self.io_timeout, peer, "message", async {
                    reader.read(target).await.map_err(|e| io_error(&peer.to_string(), e))
                })
                .await?
            } else {
                match reader.read(target).await {
                    Ok(read) => read,
                    // TLS peers that close without a close_notify: harmless
                    // between messages, since our framing marks their ends.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                    Err(e) => return Err(io_error(&peer.to_string(), e)),
                }
            };
            if read == 0 {
                return if started {
                    Err(TransportError::Truncated {
                        peer: peer.to_string(),
                        during: "message",
                    })
                } else {
                    Ok(None)
                };
            }
            match &mut self.partial {
                Partial::Parts { current, .. } => current.filled(read).map_err(|source| TransportError::Device {
                    peer: peer.to_string(),
                    source,
                })?,
                _ => self.filled += read,
            }
        }
    }

    /// Moves past a filled buffer: checks lengths against the limits and
    /// allocates the next buffer only once they pass.
    fn advance(&mut self) -> Result<Option<Message>, WireError> {
        self.filled = 0;
        match &mut self.partial {
            Partial::Prelude(prelude) => {
                let (header_len, frame_count) = wire::decode_prelude(prelude, &self.limits)?;
                self.partial = Partial::Table {
                    header_len,
                    table: vec![0; wire::frame_table_len(frame_count)],
                };
            }
            Partial::Table { header_len, table } => {
                let layout = wire::decode_frame_table(*header_len, table, &self.limits)?;
                let current = Target::new(layout.header_len, Device::Cpu, None, &self.pool);
                self.partial = Partial::Parts {
                    done: Vec::with_capacity(layout.frame_lens.len()),
                    header: None,
                    layout,
                    current,
                };
            }
            Partial::Parts {
                layout,
                header,
                done,
                current,
            } => {
                let index = if header.is_none() { 0 } else { done.len() + 1 };
                let next = match (layout.frame_lens.get(index), layout.frame_devices.get(index)) {
                    (Some(&len), Some(&device)) => Target::new(len, device, self.gpu.as_ref(), &self.pool),
                    _ => Target::new(0, Device::Cpu, None, &self.pool),
                };
                let filled = std::mem::replace(current, next).finish();
                match header {
                    None => *header = filled.as_host().cloned(),
                    Some(_) => done.push(filled),
                }
                if done.len() == layout.frame_lens.len() {
                    let header = header.take().unwrap_or_default();
                    let frames = std::mem::take(done);
                    self.partial = Partial::Prelude([0; wire::PRELUDE_LEN]);
                    return Ok(Some(Message::new(header, frames)));
                }
            }
        }
        Ok(None)
    }
}

async fn read_exact<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
    addr: &str,
    during: &'static str,
) -> Result<()> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(TransportError::Truncated {
            peer: addr.to_string(),
            during,
        }),
        Err(e) => Err(io_error(addr, e)),
    }
}

/// Runs `work` with a deadline; `peer` is only formatted if it passes.
pub(crate) async fn with_timeout<T>(
    limit: Duration,
    peer: &(impl std::fmt::Display + ?Sized),
    during: &'static str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    timeout(limit, work).await.unwrap_or_else(|_| {
        Err(TransportError::Timeout {
            peer: peer.to_string(),
            after: limit,
            during,
        })
    })
}

fn io_error(peer: &str, source: std::io::Error) -> TransportError {
    TransportError::Io {
        peer: peer.to_string(),
        source,
    }
}

pub(crate) fn handshake_error(peer: &str, source: WireError) -> TransportError {
    TransportError::Handshake {
        peer: peer.to_string(),
        source,
    }
}
