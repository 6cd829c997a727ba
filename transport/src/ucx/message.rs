//! Messages over a link: the sending half writes a message as its head and
//! one datagram per part; the receiving half reads them back into pooled
//! buffers, checking every length against the limits before taking a
//! buffer for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::link::{Datagram, Handle, Keep, Op, Ops};
use crate::config::Config;
use crate::connection::Peer;
use crate::error::{Result, TransportError};
use crate::landing;
use crate::pool::{BufferPool, PooledBuf};
use crate::wire::{self, Limits, Part, WireError};
use crate::{Buffer, Message};
use weft_gpu::{Device, Gpu};

/// The sending half's writer.
pub(crate) struct UcxWriter {
    link: Arc<Handle>,
    io_timeout: Duration,
}

impl UcxWriter {
    pub(crate) fn new(link: Arc<Handle>, config: &Config) -> Self {
        UcxWriter {
            link,
            io_timeout: config.io_timeout,
        }
    }

    /// Sends the head, a large header and every non-empty frame, all in
    /// flight at once, and waits until UCX is done with them (for large
    /// parts: until the peer has fetched them).
    pub(crate) async fn send(&self, message: &Message, peer: &Peer) -> Result<()> {
        let header = &message.header;
        let head = wire::encode_head(header, message.frame_table());
        let large_header = (header.len() > wire::INLINE_HEADER_MAX).then(|| header.clone());
        let frames = parts(message, peer)?;
        let mut ops = Ops::new(&self.link, Vec::with_capacity(message.frames.len() + 2));
        let posted = {
            let mut state = self.link.lock();
            let (ptr, len) = (head.as_ptr(), head.len());
            state
                .send(ptr, len, Keep::Vec(head))
                .map(|op| ops.push(op))
                .and_then(|()| {
                    let header = large_header.map(|b| (b.as_ptr(), b.len(), Keep::Bytes(b)));
                    for (ptr, len, keep) in header.into_iter().chain(frames) {
                        ops.push(state.send(ptr, len, keep)?);
                    }
                    Ok(())
                })
        };
        let peer = peer.to_string();
        posted.map_err(|source| TransportError::Io {
            peer: peer.clone(),
            source,
        })?;
        ops.finish(self.io_timeout, &peer, "message").await
    }

    /// Sends the empty datagram that ends the connection's messages.
    pub(crate) async fn close(&self, peer: &Peer) -> Result<()> {
        let _ = peer;
        self.link.send_datagram(Vec::new(), self.io_timeout, "shutdown").await
    }
}

/// The non-empty frames of `message` as (address, length, owner): host
/// frames straight from where they lie; CUDA device frames likewise when
/// this process's UCX reads CUDA memory (it finds their memory type
/// itself), else staged through host memory, as device frames of other
/// kinds (emulated GPUs) always are.
fn parts(message: &Message, peer: &Peer) -> Result<Vec<(*const u8, usize, Keep)>> {
    let cuda = super::context::context(&peer.to_string())?.cuda();
    let mut parts = Vec::with_capacity(message.frames.len());
    for frame in message.frames.iter().filter(|f| !f.is_empty()) {
        match frame.as_device() {
            Some(buffer) if cuda && matches!(buffer.device(), weft_gpu::Device::Cuda(_)) => {
                parts.push((
                    buffer.device_ptr() as *const u8,
                    buffer.len(),
                    Keep::Device(buffer.clone()),
                ));
            }
            _ => {
                let bytes = frame.to_host().map_err(|source| TransportError::Device {
                    peer: peer.to_string(),
                    source,
                })?;
                parts.push((bytes.as_ptr(), bytes.len(), Keep::Bytes(bytes)));
            }
        }
    }
    Ok(parts)
}

/// The receiving half's state: what has arrived of the message in
/// progress, kept here so that `recv` is cancel-safe.
pub(crate) struct UcxReceiver {
    link: Arc<Handle>,
    limits: Limits,
    pool: BufferPool,
    /// Where frames the sender held on a GPU go (see [`Config::gpu`]).
    gpu: Option<Arc<Gpu>>,
    io_timeout: Duration,
    /// The datagram being received.
    op: Option<Op>,
    /// The message in progress, `None` between messages.
    message: Option<Partial>,
    /// The peer closed; every later `recv` returns `Ok(None)`.
    ended: bool,
}

struct Partial {
    header_len: usize,
    frame_lens: Vec<usize>,
    frame_devices: Vec<Device>,
    header: Option<Bytes>,
    frames: Vec<Buffer>,
    /// When waiting for the next part fails with a timeout.
    deadline: Instant,
}

impl Partial {
    /// The next part to receive as a datagram and its length; empty
    /// frames, which are never sent, are filled in on the way.
    fn next_part(&mut self) -> Option<(Part, usize)> {
        if self.header.is_none() {
            return Some((Part::Header, self.header_len));
        }
        while let Some(&len) = self.frame_lens.get(self.frames.len()) {
            if len > 0 {
                return Some((Part::Frame(self.frames.len()), len));
            }
            self.frames.push(Buffer::host(Bytes::new()));
        }
        None
    }

    fn finish(self) -> Message {
        Message::new(self.header.unwrap_or_default(), self.frames)
    }
}

impl UcxReceiver {
    pub(crate) fn new(link: Arc<Handle>, config: &Config) -> Self {
        UcxReceiver {
            link,
            limits: config.limits,
            pool: config.pool.clone(),
            gpu: config.gpu.clone(),
            io_timeout: config.io_timeout,
            op: None,
            message: None,
            ended: false,
        }
    }

    /// The next message, `Ok(None)` once the peer closed (with a close
    /// datagram, or by going away between messages).
    pub(crate) async fn recv(&mut self, peer: &Peer) -> Result<Option<Message>> {
        if self.ended {
            return Ok(None);
        }
        loop {
            let (part, max) = match &mut self.message {
                None => (
                    Part::Head,
                    usize::try_from(wire::max_head_len(&self.limits)).unwrap_or(usize::MAX),
                ),
                Some(partial) => match partial.next_part() {
                    Some(next) => next,
                    None => return Ok(self.message.take().map(Partial::finish)),
                },
            };
            let deadline = self.message.as_ref().map(|partial| partial.deadline);
            let device = self.device_for(part, peer)?;
            let (link, op, pool) = (&self.link, &mut self.op, &self.pool);
            let datagram = link
                .wait(deadline, |state| {
                    state.next_datagram(op, max, pool, device.as_ref(), link.failure().is_some())
                })
                .await
                .map_err(|_| TransportError::Timeout {
                    peer: peer.to_string(),
                    after: self.io_timeout,
                    during: "message",
                })?;
            match datagram {
                Datagram::Got(buf) => {
                    if part == Part::Head && buf.as_ref().is_empty() {
                        self.ended = true;
                        return Ok(None);
                    }
                    self.accept(part, buf).map_err(|source| TransportError::Malformed {
                        peer: peer.to_string(),
                        source,
                    })?;
                }
                Datagram::GotDevice(buffer) => {
                    self.accept_device(part, buffer)
                        .map_err(|source| TransportError::Malformed {
                            peer: peer.to_string(),
                            source,
                        })?;
                }
                Datagram::TooLong(len) => {
                    let min = if part == Part::Head { wire::PRELUDE_LEN } else { max };
                    return Err(TransportError::Malformed {
                        peer: peer.to_string(),
                        source: WireError::PartLength {
                            part,
                            found: len as u64,
                            min: min as u64,
                            max: max as u64,
                        },
                    });
                }
                Datagram::Gone => {
                    let started = self.message.is_some() || self.op.is_some();
                    if let Some(op) = self.op.take() {
                        self.link.park(op, true);
                    }
                    if started {
                        return Err(TransportError::Truncated {
                            peer: peer.to_string(),
                            during: "message",
                        });
                    }
                    self.ended = true;
                    return Ok(None);
                }
            }
        }
    }

    /// The GPU to post the receive of `part` on: this receiver's, for a
    /// frame the sender held on a GPU, when it is a CUDA GPU and UCX here
    /// handles CUDA memory (no host hop); else none (host memory, copied
    /// up after, see `accept`).
    fn device_for(&self, part: Part, peer: &Peer) -> Result<Option<Arc<Gpu>>> {
        let (Part::Frame(index), Some(gpu), Some(partial)) = (part, &self.gpu, &self.message) else {
            return Ok(None);
        };
        let cuda = matches!(gpu.device(), Device::Cuda(_)) && partial.frame_devices[index].is_gpu();
        Ok((cuda && super::context::context(&peer.to_string())?.cuda()).then(|| gpu.clone()))
    }

    /// Takes in a frame received straight into device memory.
    fn accept_device(&mut self, part: Part, buffer: weft_gpu::DeviceBuffer) -> Result<(), WireError> {
        let (Part::Frame(index), Some(partial)) = (part, &mut self.message) else {
            return Err(WireError::PartLength {
                part,
                found: buffer.len() as u64,
                min: 0,
                max: 0,
            });
        };
        wire::check_part(part, buffer.len(), partial.frame_lens[index])?;
        partial.frames.push(Buffer::device(buffer));
        partial.deadline = Instant::now() + self.io_timeout;
        Ok(())
    }

    /// Takes in one received part: decodes a head, or checks a part's length.
    fn accept(&mut self, part: Part, buf: PooledBuf) -> Result<(), WireError> {
        let bytes = buf.freeze();
        let deadline = Instant::now() + self.io_timeout;
        match &mut self.message {
            None => {
                let head = wire::decode_head(&bytes, &self.limits)?;
                self.message = Some(Partial {
                    header_len: head.layout.header_len,
                    frames: Vec::with_capacity(head.layout.frame_lens.len()),
                    frame_lens: head.layout.frame_lens,
                    frame_devices: head.layout.frame_devices,
                    header: head.inline_header.map(|range| bytes.slice(range)),
                    deadline,
                });
            }
            Some(partial) => {
                let expected = match part {
                    Part::Header => partial.header_len,
                    Part::Frame(index) => partial.frame_lens[index],
                    _ => 0,
                };
                wire::check_part(part, bytes.len(), expected)?;
                match part {
                    Part::Header => partial.header = Some(bytes),
                    // Received into host memory; a device frame then moves
                    // up to this receiver's GPU, if it has one.
                    Part::Frame(index) => {
                        let from = partial.frame_devices[index];
                        partial.frames.push(landing::upload(bytes, from, self.gpu.as_ref()));
                    }
                    _ => {}
                }
                partial.deadline = deadline;
            }
        }
        Ok(())
    }
}

impl Drop for UcxReceiver {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            self.link.park(op, true);
        }
    }
}
