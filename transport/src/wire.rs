//! The wire format, as plain functions over byte slices (sans-IO).
//!
//! Every stream backend (TCP, TLS) speaks it; the socket loops in
//! [`crate::stream`] only move bytes, so everything here is tested and
//! fuzzed on bytes alone. All integers are little-endian and fixed-width:
//! the order of fields below is the order on the wire, so change neither
//! without bumping [`PROTOCOL_VERSION`].
//!
//! ```text
//! hello (client -> server)     ack (server -> client)       message (both ways)
//! magic      [u8; 4] "WEFT"    magic   [u8; 4] "WEFT"       header_len   u64
//! version    u16               version u16                  frame_count  u32
//! flags      u16 (zero)        status  u8 (Status)          frame_entry  u64 x frame_count
//! token_len  u16               zero    u8                   header       [u8; header_len]
//! name_len   u16               text_len u16                 frames       [u8; frame_len] each
//! token      [u8; token_len]   text    [u8; text_len]
//! name       [u8; name_len]      (server name, or the
//!                                 reason of a rejection)
//! ```
//!
//! A frame entry is the frame's length in its low 48 bits, and where the
//! sender held the frame in its top 16: bits 56..63 the device kind
//! ([`FRAME_HOST`], [`FRAME_CUDA`], [`FRAME_EMULATED`]), bits 48..55 the
//! device's ordinal (saturated at 255). A host frame's entry is its plain
//! length, so messages without device frames are laid out as before this
//! field existed; a receiver that has a GPU allocates device frames there
//! (see [`crate::Config::gpu`]), any other receiver in host memory.
//!
//! Lengths are checked against [`Limits`] before anything of the announced
//! size is allocated.
//!
//! # Message-oriented transports
//!
//! UCX carries datagrams (tagged messages) rather than a byte stream, so a
//! message travels there as its *head* — the prelude and frame table above,
//! followed by the header when it is at most [`INLINE_HEADER_MAX`] bytes —
//! and then one datagram per part that is not inline and not empty: a
//! larger header, then each non-empty frame in order. A datagram of zero
//! bytes where a head would start closes the connection gracefully. The
//! hello and the ack are one datagram each, with the layout above. The
//! receiver learns each datagram's length before receiving it, and
//! [`decode_head`], [`decode_hello_datagram`], [`decode_ack_datagram`] and
//! [`check_part`] refuse any length that differs from the announced one.

use thiserror::Error;
use weft_gpu::Device;

/// Four bytes that open every handshake.
pub const MAGIC: [u8; 4] = *b"WEFT";
/// Version of this wire format; peers must match exactly.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes of a hello before its token and name.
pub const HELLO_FIXED_LEN: usize = 12;
/// Bytes of an ack before its text.
pub const ACK_FIXED_LEN: usize = 10;
/// Bytes of a message before its frame lengths.
pub const PRELUDE_LEN: usize = 12;
/// Longest token or peer name a handshake may carry.
pub const MAX_HANDSHAKE_FIELD: usize = 4096;

/// Frame kind of host memory (the top byte of a frame entry).
pub const FRAME_HOST: u8 = 0;
/// Frame kind of a CUDA GPU's memory.
pub const FRAME_CUDA: u8 = 1;
/// Frame kind of an emulated GPU's memory.
pub const FRAME_EMULATED: u8 = 2;
/// Bits of a frame entry that hold its length.
const FRAME_LEN_BITS: u32 = 48;

/// Largest header carried inside a message-oriented transport's head;
/// larger headers travel as a datagram of their own, so they land aligned
/// and without a copy.
pub const INLINE_HEADER_MAX: usize = 64 << 10;
/// Longest hello datagram: the fixed part and the longest token and name.
pub const MAX_HELLO_LEN: usize = HELLO_FIXED_LEN + 2 * MAX_HANDSHAKE_FIELD;
/// Longest ack datagram.
pub const MAX_ACK_LEN: usize = ACK_FIXED_LEN + MAX_HANDSHAKE_FIELD;

/// Sizes a receiver accepts; anything larger closes the connection before
/// a byte of it is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest control header, in bytes.
    pub max_header_bytes: u64,
    /// Most data frames in one message.
    pub max_frames: u32,
    /// Largest single data frame, in bytes.
    pub max_frame_bytes: u64,
    /// Largest message (header plus all frames), in bytes.
    pub max_message_bytes: u64,
}

impl Default for Limits {
    /// Room for a graph of a few million tasks in one header and for
    /// multi-GiB partitions, far below anything that could exhaust memory
    /// by a lie in a length field.
    fn default() -> Self {
        Limits {
            max_header_bytes: 512 << 20,
            max_frames: 65_536,
            max_frame_bytes: 8 << 30,
            max_message_bytes: 16 << 30,
        }
    }
}

/// Why bytes on the wire were refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The stream does not start with [`MAGIC`]: not a Weft peer.
    #[error("bad magic {found:02x?}: not a Weft peer")]
    BadMagic {
        /// The four bytes received instead.
        found: [u8; 4],
    },
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// [`PROTOCOL_VERSION`].
        ours: u16,
        /// The version the peer announced.
        theirs: u16,
    },
    /// The shared-secret token is missing or wrong.
    #[error("wrong or missing authentication token")]
    BadToken,
    /// Reserved handshake bits or bytes are not zero.
    #[error("reserved handshake field is {0:#x}, expected 0")]
    Reserved(u16),
    /// A token or name longer than [`MAX_HANDSHAKE_FIELD`].
    #[error("handshake field of {len} bytes exceeds {MAX_HANDSHAKE_FIELD}")]
    FieldTooLong {
        /// Announced length.
        len: usize,
    },
    /// An ack with a status code this version does not know.
    #[error("unknown handshake status {0}")]
    UnknownStatus(u8),
    /// A header above [`Limits::max_header_bytes`].
    #[error("header of {len} bytes exceeds the limit of {max}")]
    HeaderTooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// More frames than [`Limits::max_frames`].
    #[error("{count} frames exceed the limit of {max}")]
    TooManyFrames {
        /// Announced count.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// A frame above [`Limits::max_frame_bytes`].
    #[error("frame {index} of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Position of the frame in its message.
        index: usize,
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A datagram whose length is not what the handshake format or the
    /// message's head announced (message-oriented transports only).
    #[error("{part} of {found} bytes, expected {}", expected_len(*.min, *.max))]
    PartLength {
        /// Which datagram.
        part: Part,
        /// Its length.
        found: u64,
        /// Shortest length allowed.
        min: u64,
        /// Longest length allowed.
        max: u64,
    },
    /// A frame entry names a device kind this version does not know.
    #[error("frame {index} is of unknown device kind {kind}")]
    UnknownFrameKind {
        /// Position of the frame in its message.
        index: usize,
        /// The kind byte.
        kind: u8,
    },
    /// Header plus frames above [`Limits::max_message_bytes`].
    #[error("message of {total} bytes or more exceeds the limit of {max}")]
    MessageTooLarge {
        /// Total announced so far (saturating).
        total: u64,
        /// The limit.
        max: u64,
    },
}

/// Which datagram of a message-oriented transport an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The client's hello.
    Hello,
    /// The server's ack.
    Ack,
    /// A message's head: prelude, frame table and inline header.
    Head,
    /// A header too large to be inline.
    Header,
    /// The data frame at this position of its message.
    Frame(usize),
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Hello => f.write_str("hello"),
            Part::Ack => f.write_str("ack"),
            Part::Head => f.write_str("message head"),
            Part::Header => f.write_str("header"),
            Part::Frame(index) => write!(f, "frame {index}"),
        }
    }
}

fn expected_len(min: u64, max: u64) -> String {
    if min == max {
        min.to_string()
    } else {
        format!("{min} to {max}")
    }
}

/// What a client says first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version of the client.
    pub version: u16,
    /// Shared-secret token (empty for none).
    pub token: Vec<u8>,
    /// Name of the client, for logs and errors.
    pub name: String,
}

/// How a server answers a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Accepted; the ack's text is the server's name.
    Accepted = 0,
    /// Rejected: protocol versions differ.
    VersionMismatch = 1,
    /// Rejected: wrong or missing token.
    BadToken = 2,
    /// Rejected: the listener is at its connection limit; retry later.
    Busy = 3,
}

impl Status {
    fn from_u8(code: u8) -> Result<Status, WireError> {
        Ok(match code {
            0 => Status::Accepted,
            1 => Status::VersionMismatch,
            2 => Status::BadToken,
            3 => Status::Busy,
            other => return Err(WireError::UnknownStatus(other)),
        })
    }
}

/// A server's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Protocol version of the server.
    pub version: u16,
    /// Whether the connection is accepted.
    pub status: Status,
    /// The server's name if accepted, else the reason of the rejection.
    pub text: String,
}

/// Lengths of one message, read from its prelude and frame table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of the control header.
    pub header_len: usize,
    /// Bytes of each data frame, in order.
    pub frame_lens: Vec<usize>,
    /// Where the sender held each frame ([`Device::Cpu`] for host memory).
    pub frame_devices: Vec<Device>,
}

/// The frame-table entry of a frame of `len` bytes held on `device`.
pub fn frame_entry(len: usize, device: Device) -> u64 {
    let (kind, ordinal) = match device {
        Device::Cpu => (FRAME_HOST, 0),
        Device::Cuda(i) => (FRAME_CUDA, i),
        Device::Emulated(i) => (FRAME_EMULATED, i),
    };
    let tag = (u64::from(kind) << 8) | u64::from(ordinal.min(255));
    (tag << FRAME_LEN_BITS) | len as u64
}

/// Splits a frame-table entry into the frame's length and device.
pub fn decode_frame_entry(index: usize, entry: u64) -> Result<(u64, Device), WireError> {
    let len = entry & ((1 << FRAME_LEN_BITS) - 1);
    let ordinal = ((entry >> FRAME_LEN_BITS) & 0xff) as u32;
    let device = match (entry >> (FRAME_LEN_BITS + 8)) as u8 {
        FRAME_HOST => Device::Cpu,
        FRAME_CUDA => Device::Cuda(ordinal),
        FRAME_EMULATED => Device::Emulated(ordinal),
        kind => return Err(WireError::UnknownFrameKind { index, kind }),
    };
    Ok((len, device))
}

/// Bytes the frame-length table of `frame_count` frames takes.
pub fn frame_table_len(frame_count: u32) -> usize {
    frame_count as usize * 8
}

/// Appends a hello to `out`.
pub fn encode_hello(hello: &Hello, out: &mut Vec<u8>) -> Result<(), WireError> {
    check_field(hello.token.len())?;
    check_field(hello.name.len())?;
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&hello.version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(hello.token.len() as u16).to_le_bytes());
    out.extend_from_slice(&(hello.name.len() as u16).to_le_bytes());
    out.extend_from_slice(&hello.token);
    out.extend_from_slice(hello.name.as_bytes());
    Ok(())
}

/// Checks the fixed part of a hello and returns how many more bytes
/// (token and name) follow it.
pub fn hello_rest_len(fixed: &[u8; HELLO_FIXED_LEN]) -> Result<usize, WireError> {
    check_magic(fixed)?;
    let version = u16_at(fixed, 4);
    if version != PROTOCOL_VERSION {
        return Err(WireError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    let flags = u16_at(fixed, 6);
    if flags != 0 {
        return Err(WireError::Reserved(flags));
    }
    let token_len = check_field(u16_at(fixed, 8) as usize)?;
    let name_len = check_field(u16_at(fixed, 10) as usize)?;
    Ok(token_len + name_len)
}

/// Decodes a whole hello from its fixed part and the `rest` that
/// [`hello_rest_len`] announced. Names that are not UTF-8 are kept lossily:
/// they only appear in logs.
pub fn decode_hello(fixed: &[u8; HELLO_FIXED_LEN], rest: &[u8]) -> Result<Hello, WireError> {
    let rest_len = hello_rest_len(fixed)?;
    let token_len = u16_at(fixed, 8) as usize;
    debug_assert_eq!(rest.len(), rest_len);
    let (token, name) = rest.split_at(token_len.min(rest.len()));
    Ok(Hello {
        version: u16_at(fixed, 4),
        token: token.to_vec(),
        name: String::from_utf8_lossy(name).into_owned(),
    })
}

/// Appends an ack to `out`. Over-long text is cut, never refused.
pub fn encode_ack(ack: &Ack, out: &mut Vec<u8>) {
    let mut text = ack.text.as_str();
    while text.len() > MAX_HANDSHAKE_FIELD {
        let mut cut = MAX_HANDSHAKE_FIELD;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text = &text[..cut];
    }
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&ack.version.to_le_bytes());
    out.push(ack.status as u8);
    out.push(0);
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Checks the fixed part of an ack and returns the length of its text.
/// The version is not checked here: a server that rejects our version
/// answers with its own, and the caller reports both.
pub fn ack_text_len(fixed: &[u8; ACK_FIXED_LEN]) -> Result<usize, WireError> {
    check_magic(fixed)?;
    Status::from_u8(fixed[6])?;
    if fixed[7] != 0 {
        return Err(WireError::Reserved(fixed[7].into()));
    }
    check_field(u16_at(fixed, 8) as usize)
}

/// Decodes an ack from its fixed part and its text.
pub fn decode_ack(fixed: &[u8; ACK_FIXED_LEN], text: &[u8]) -> Result<Ack, WireError> {
    ack_text_len(fixed)?;
    Ok(Ack {
        version: u16_at(fixed, 4),
        status: Status::from_u8(fixed[6])?,
        text: String::from_utf8_lossy(text).into_owned(),
    })
}

/// Encodes a message's prelude and frame table for a header of
/// `header_len` bytes and `frames` of (length, device where the sender
/// holds it).
pub fn encode_layout(header_len: usize, frames: impl ExactSizeIterator<Item = (usize, Device)>) -> Vec<u8> {
    let count = frames.len();
    let mut out = Vec::with_capacity(PRELUDE_LEN + count * 8);
    out.extend_from_slice(&(header_len as u64).to_le_bytes());
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (len, device) in frames {
        out.extend_from_slice(&frame_entry(len, device).to_le_bytes());
    }
    out
}

/// Reads a prelude: returns the header length and the frame count, both
/// checked against `limits`.
pub fn decode_prelude(prelude: &[u8; PRELUDE_LEN], limits: &Limits) -> Result<(usize, u32), WireError> {
    let header_len = u64::from_le_bytes(array_at(prelude, 0));
    let frame_count = u32::from_le_bytes(array_at(prelude, 8));
    if header_len > limits.max_header_bytes {
        return Err(WireError::HeaderTooLarge {
            len: header_len,
            max: limits.max_header_bytes,
        });
    }
    if frame_count > limits.max_frames {
        return Err(WireError::TooManyFrames {
            count: frame_count,
            max: limits.max_frames,
        });
    }
    check_total(header_len, limits)?;
    Ok((usize_from(header_len), frame_count))
}

/// Reads a frame table (`8 * frame_count` bytes) after a prelude that
/// announced `header_len`, checking every frame and the running total.
pub fn decode_frame_table(header_len: usize, table: &[u8], limits: &Limits) -> Result<Layout, WireError> {
    let mut total = header_len as u64;
    let mut frame_lens = Vec::with_capacity(table.len() / 8);
    let mut frame_devices = Vec::with_capacity(table.len() / 8);
    for (index, chunk) in table.chunks_exact(8).enumerate() {
        let (len, device) = decode_frame_entry(index, u64::from_le_bytes(array_at(chunk, 0)))?;
        if len > limits.max_frame_bytes {
            return Err(WireError::FrameTooLarge {
                index,
                len,
                max: limits.max_frame_bytes,
            });
        }
        total = total.saturating_add(len);
        check_total(total, limits)?;
        frame_lens.push(usize_from(len));
        frame_devices.push(device);
    }
    Ok(Layout {
        header_len,
        frame_lens,
        frame_devices,
    })
}

/// Decodes one whole message from the front of `buf`, for transports that
/// deliver messages as one contiguous buffer. Returns `Ok(None)` when
/// `buf` holds only part of a message, else the layout and the byte
/// ranges of the header and each frame, plus the bytes consumed.
pub fn decode_message(buf: &[u8], limits: &Limits) -> Result<Option<Decoded>, WireError> {
    let Some(prelude) = buf.first_chunk::<PRELUDE_LEN>() else {
        return Ok(None);
    };
    let (header_len, frame_count) = decode_prelude(prelude, limits)?;
    let table_end = PRELUDE_LEN + frame_table_len(frame_count);
    let Some(table) = buf.get(PRELUDE_LEN..table_end) else {
        return Ok(None);
    };
    let layout = decode_frame_table(header_len, table, limits)?;
    let mut ranges = Vec::with_capacity(layout.frame_lens.len() + 1);
    let mut at = table_end;
    for len in std::iter::once(layout.header_len).chain(layout.frame_lens.iter().copied()) {
        ranges.push(at..at + len);
        at += len;
    }
    if buf.len() < at {
        return Ok(None);
    }
    Ok(Some(Decoded {
        header: ranges.remove(0),
        frames: ranges,
        consumed: at,
    }))
}

/// Where the parts of a message lie in a buffer given to [`decode_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Byte range of the header.
    pub header: std::ops::Range<usize>,
    /// Byte range of each frame.
    pub frames: Vec<std::ops::Range<usize>>,
    /// Bytes the message took.
    pub consumed: usize,
}

/// Encodes a message's head for a message-oriented transport: the
/// prelude and frame table, and the header itself when it is at most
/// [`INLINE_HEADER_MAX`] bytes.
pub fn encode_head(header: &[u8], frames: impl ExactSizeIterator<Item = (usize, Device)>) -> Vec<u8> {
    let mut head = encode_layout(header.len(), frames);
    if header.len() <= INLINE_HEADER_MAX {
        head.extend_from_slice(header);
    }
    head
}

/// Longest head [`decode_head`] accepts under `limits`: check a datagram's
/// length against it before allocating room for it.
pub fn max_head_len(limits: &Limits) -> u64 {
    let inline = limits.max_header_bytes.min(INLINE_HEADER_MAX as u64);
    (PRELUDE_LEN + frame_table_len(limits.max_frames)) as u64 + inline
}

/// A decoded head: the message's layout, and where its header lies in the
/// head if it is inline (else it follows as a datagram of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Lengths of the header and of each frame.
    pub layout: Layout,
    /// Byte range of the header within the head, if it is inline.
    pub inline_header: Option<std::ops::Range<usize>>,
}

/// Decodes a whole head datagram, checking the limits and that its length
/// is exactly what its prelude announces.
pub fn decode_head(head: &[u8], limits: &Limits) -> Result<Head, WireError> {
    let too_short = || WireError::PartLength {
        part: Part::Head,
        found: head.len() as u64,
        min: PRELUDE_LEN as u64,
        max: max_head_len(limits),
    };
    let prelude = head.first_chunk::<PRELUDE_LEN>().ok_or_else(too_short)?;
    let (header_len, frame_count) = decode_prelude(prelude, limits)?;
    let table_end = PRELUDE_LEN + frame_table_len(frame_count);
    let inline = header_len <= INLINE_HEADER_MAX;
    let expected = table_end + if inline { header_len } else { 0 };
    let wrong_length = || WireError::PartLength {
        part: Part::Head,
        found: head.len() as u64,
        min: expected as u64,
        max: expected as u64,
    };
    // The limits first, as a stream reader meets them, then the length.
    let table = head.get(PRELUDE_LEN..table_end).ok_or_else(wrong_length)?;
    let layout = decode_frame_table(header_len, table, limits)?;
    if head.len() != expected {
        return Err(wrong_length());
    }
    Ok(Head {
        layout,
        inline_header: inline.then_some(table_end..expected),
    })
}

/// Checks that a datagram carrying `part` is exactly `expected` bytes long.
pub fn check_part(part: Part, found: usize, expected: usize) -> Result<(), WireError> {
    if found == expected {
        Ok(())
    } else {
        Err(WireError::PartLength {
            part,
            found: found as u64,
            min: expected as u64,
            max: expected as u64,
        })
    }
}

/// Decodes a hello that arrived as one datagram.
pub fn decode_hello_datagram(bytes: &[u8]) -> Result<Hello, WireError> {
    decode_datagram(bytes, Part::Hello, MAX_HELLO_LEN, hello_rest_len, decode_hello)
}

/// Decodes an ack that arrived as one datagram.
pub fn decode_ack_datagram(bytes: &[u8]) -> Result<Ack, WireError> {
    decode_datagram(bytes, Part::Ack, MAX_ACK_LEN, ack_text_len, decode_ack)
}

/// Decodes a handshake part sent as one datagram: its fixed-size start,
/// which gives the length of the rest, then exactly that rest.
fn decode_datagram<const FIXED: usize, T>(
    bytes: &[u8],
    part: Part,
    max: usize,
    rest_len: fn(&[u8; FIXED]) -> Result<usize, WireError>,
    decode: fn(&[u8; FIXED], &[u8]) -> Result<T, WireError>,
) -> Result<T, WireError> {
    let length_error = |min: usize, max: usize| WireError::PartLength {
        part,
        found: bytes.len() as u64,
        min: min as u64,
        max: max as u64,
    };
    let fixed = bytes.first_chunk::<FIXED>().ok_or_else(|| length_error(FIXED, max))?;
    let rest = rest_len(fixed)?;
    if bytes.len() != FIXED + rest {
        return Err(length_error(FIXED + rest, FIXED + rest));
    }
    decode(fixed, &bytes[FIXED..])
}

fn check_magic(fixed: &[u8]) -> Result<(), WireError> {
    let found: [u8; 4] = array_at(fixed, 0);
    if found == MAGIC {
        Ok(())
    } else {
        Err(WireError::BadMagic { found })
    }
}

fn check_field(len: usize) -> Result<usize, WireError> {
    if len > MAX_HANDSHAKE_FIELD {
        Err(WireError::FieldTooLong { len })
    } else {
        Ok(len)
    }
}

fn check_total(total: u64, limits: &Limits) -> Result<(), WireError> {
    if total > limits.max_message_bytes {
        Err(WireError::MessageTooLarge {
            total,
            max: limits.max_message_bytes,
        })
    } else {
        Ok(())
    }
}

/// Lengths already checked against limits that fit in memory; on a 32-bit
/// target a limit above `usize::MAX` saturates, and allocation then fails
/// cleanly at the limit check of the caller.
fn usize_from(len: u64) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array_at(buf, at))
}

/// The `N` bytes at `at`; callers pass slices whose length they checked.
fn array_at<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host frames of these lengths, for the frame table.
    fn host(lens: &[usize]) -> impl ExactSizeIterator<Item = (usize, Device)> + '_ {
        lens.iter().map(|&len| (len, Device::Cpu))
    }

    #[test]
    fn frame_entries_carry_the_senders_device_and_host_entries_are_plain_lengths() {
        assert_eq!(frame_entry(12345, Device::Cpu), 12345);
        for device in [Device::Cpu, Device::Cuda(0), Device::Cuda(7), Device::Emulated(3)] {
            let entry = frame_entry(1 << 40, device);
            assert_eq!(decode_frame_entry(0, entry), Ok((1 << 40, device)));
        }
        assert_eq!(
            decode_frame_entry(0, frame_entry(9, Device::Cuda(1000))),
            Ok((9, Device::Cuda(255))),
            "ordinals saturate"
        );
        assert_eq!(
            decode_frame_entry(4, (9u64 << 56) | 5),
            Err(WireError::UnknownFrameKind { index: 4, kind: 9 })
        );
        let table = encode_layout(3, [(10, Device::Cpu), (20, Device::Emulated(1))].into_iter());
        let layout = decode_frame_table(3, &table[PRELUDE_LEN..], &Limits::default()).unwrap();
        assert_eq!(layout.frame_lens, vec![10, 20]);
        assert_eq!(layout.frame_devices, vec![Device::Cpu, Device::Emulated(1)]);
    }
    use proptest::prelude::*;

    fn hello(token: &[u8], name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_hello(
            &Hello {
                version: PROTOCOL_VERSION,
                token: token.to_vec(),
                name: name.into(),
            },
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn hello_round_trip() {
        let bytes = hello(b"secret", "worker-1");
        let fixed = bytes.first_chunk::<HELLO_FIXED_LEN>().unwrap();
        let rest_len = hello_rest_len(fixed).unwrap();
        assert_eq!(rest_len, 6 + 8);
        let decoded = decode_hello(fixed, &bytes[HELLO_FIXED_LEN..]).unwrap();
        assert_eq!(decoded.token, b"secret");
        assert_eq!(decoded.name, "worker-1");
    }

    #[test]
    fn hello_rejects_magic_version_and_reserved() {
        let mut bytes = hello(b"", "x");
        bytes[0] = b'X';
        let fixed = *bytes.first_chunk::<HELLO_FIXED_LEN>().unwrap();
        assert_eq!(hello_rest_len(&fixed), Err(WireError::BadMagic { found: *b"XEFT" }));

        let mut bytes = hello(b"", "x");
        bytes[4] = 9;
        let fixed = *bytes.first_chunk::<HELLO_FIXED_LEN>().unwrap();
        assert_eq!(
            hello_rest_len(&fixed),
            Err(WireError::VersionMismatch { ours: 1, theirs: 9 })
        );

        let mut bytes = hello(b"", "x");
        bytes[6] = 1;
        let fixed = *bytes.first_chunk::<HELLO_FIXED_LEN>().unwrap();
        assert_eq!(hello_rest_len(&fixed), Err(WireError::Reserved(1)));
    }

    #[test]
    fn ack_round_trip_and_long_text_is_cut() {
        let mut out = Vec::new();
        let text = "é".repeat(MAX_HANDSHAKE_FIELD);
        encode_ack(
            &Ack {
                version: PROTOCOL_VERSION,
                status: Status::BadToken,
                text,
            },
            &mut out,
        );
        let fixed = out.first_chunk::<ACK_FIXED_LEN>().unwrap();
        let len = ack_text_len(fixed).unwrap();
        assert!(len <= MAX_HANDSHAKE_FIELD);
        let ack = decode_ack(fixed, &out[ACK_FIXED_LEN..]).unwrap();
        assert_eq!(ack.status, Status::BadToken);
        assert!(ack.text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn limits_are_checked_before_anything_else() {
        let limits = Limits {
            max_header_bytes: 100,
            max_frames: 4,
            max_frame_bytes: 1000,
            max_message_bytes: 1500,
        };
        let prelude = |h: u64, n: u32| {
            let mut p = [0u8; PRELUDE_LEN];
            p[..8].copy_from_slice(&h.to_le_bytes());
            p[8..].copy_from_slice(&n.to_le_bytes());
            p
        };
        assert_eq!(
            decode_prelude(&prelude(1 << 62, 0), &limits),
            Err(WireError::HeaderTooLarge { len: 1 << 62, max: 100 })
        );
        assert_eq!(
            decode_prelude(&prelude(0, 5), &limits),
            Err(WireError::TooManyFrames { count: 5, max: 4 })
        );
        let table = encode_layout(0, host(&[1000, 1000]));
        assert_eq!(
            decode_frame_table(10, &table[PRELUDE_LEN..], &limits),
            Err(WireError::MessageTooLarge { total: 2010, max: 1500 })
        );
        let table = encode_layout(0, host(&[1001]));
        assert_eq!(
            decode_frame_table(10, &table[PRELUDE_LEN..], &limits),
            Err(WireError::FrameTooLarge {
                index: 0,
                len: 1001,
                max: 1000
            })
        );
    }

    fn encode_message(header: &[u8], frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = encode_layout(header.len(), frames.iter().map(|f| (f.len(), Device::Cpu)));
        out.extend_from_slice(header);
        for frame in frames {
            out.extend_from_slice(frame);
        }
        out
    }

    #[test]
    fn heads_carry_small_headers_inline_and_check_their_length() {
        let limits = Limits::default();
        let head = encode_head(b"header", host(&[5, 0]));
        let decoded = decode_head(&head, &limits).unwrap();
        assert_eq!(decoded.layout.frame_lens, vec![5, 0]);
        assert_eq!(&head[decoded.inline_header.unwrap()], b"header");

        let big = vec![1u8; INLINE_HEADER_MAX + 1];
        let head = encode_head(&big, host(&[]));
        assert_eq!(head.len(), PRELUDE_LEN);
        let decoded = decode_head(&head, &limits).unwrap();
        assert_eq!((decoded.layout.header_len, decoded.inline_header), (big.len(), None));

        let mut long = encode_head(b"header", host(&[5]));
        long.push(0);
        assert!(matches!(
            decode_head(&long, &limits),
            Err(WireError::PartLength {
                part: Part::Head,
                found: 27,
                min: 26,
                max: 26
            })
        ));
        assert!(matches!(
            decode_head(&[0; 3], &limits),
            Err(WireError::PartLength {
                part: Part::Head,
                found: 3,
                ..
            })
        ));
        assert!(
            decode_head(&long, &limits)
                .unwrap_err()
                .to_string()
                .contains("expected 26")
        );
        assert_eq!(check_part(Part::Frame(2), 4, 4), Ok(()));
        assert!(
            check_part(Part::Frame(2), 3, 4)
                .unwrap_err()
                .to_string()
                .contains("frame 2 of 3 bytes")
        );
    }

    #[test]
    fn handshake_datagrams_must_be_whole() {
        let bytes = hello(b"tok", "name");
        assert_eq!(decode_hello_datagram(&bytes).unwrap().name, "name");
        assert!(matches!(
            decode_hello_datagram(&bytes[..bytes.len() - 1]),
            Err(WireError::PartLength { part: Part::Hello, .. })
        ));
        let mut ack = Vec::new();
        encode_ack(
            &Ack {
                version: PROTOCOL_VERSION,
                status: Status::Busy,
                text: "busy".into(),
            },
            &mut ack,
        );
        assert_eq!(decode_ack_datagram(&ack).unwrap().status, Status::Busy);
        ack.push(b'!');
        assert!(matches!(
            decode_ack_datagram(&ack),
            Err(WireError::PartLength { part: Part::Ack, .. })
        ));
        assert!(max_head_len(&Limits::default()) > INLINE_HEADER_MAX as u64);
    }

    proptest! {
        /// Random datagrams never panic the head and handshake decoders, and
        /// a head that decodes announces only what the limits allow.
        #[test]
        fn garbage_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let limits = Limits { max_header_bytes: 64, max_frames: 8, max_frame_bytes: 64, max_message_bytes: 256 };
            if let Ok(head) = decode_head(&bytes, &limits) {
                prop_assert!(head.layout.frame_lens.len() <= 8);
                prop_assert!(bytes.len() as u64 <= max_head_len(&limits));
            }
            let _ = decode_hello_datagram(&bytes);
            let _ = decode_ack_datagram(&bytes);
        }

        #[test]
        fn message_round_trip(
            header in proptest::collection::vec(any::<u8>(), 0..64),
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
        ) {
            let bytes = encode_message(&header, &frames);
            let decoded = decode_message(&bytes, &Limits::default()).unwrap().unwrap();
            prop_assert_eq!(decoded.consumed, bytes.len());
            prop_assert_eq!(&bytes[decoded.header.clone()], &header[..]);
            for (range, frame) in decoded.frames.iter().zip(&frames) {
                prop_assert_eq!(&bytes[range.clone()], &frame[..]);
            }
            // Every strict prefix is incomplete, never an error.
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode_message(&bytes[..cut], &Limits::default()), Ok(None));
            }
        }

        /// Random bytes never panic the parsers, and whatever they announce
        /// stays within the limits.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let limits = Limits { max_header_bytes: 64, max_frames: 8, max_frame_bytes: 64, max_message_bytes: 256 };
            if let Ok(Some(decoded)) = decode_message(&bytes, &limits) {
                prop_assert!(decoded.consumed <= bytes.len());
                prop_assert!(decoded.frames.len() <= 8);
            }
            if let Some(fixed) = bytes.first_chunk::<HELLO_FIXED_LEN>()
                && let Ok(rest) = hello_rest_len(fixed)
            {
                prop_assert!(rest <= 2 * MAX_HANDSHAKE_FIELD);
                if let Some(tail) = bytes.get(HELLO_FIXED_LEN..HELLO_FIXED_LEN + rest) {
                    prop_assert!(decode_hello(fixed, tail).is_ok());
                }
            }
            if let Some(fixed) = bytes.first_chunk::<ACK_FIXED_LEN>()
                && let Ok(len) = ack_text_len(fixed)
                && let Some(text) = bytes.get(ACK_FIXED_LEN..ACK_FIXED_LEN + len)
            {
                prop_assert!(decode_ack(fixed, text).is_ok());
            }
        }

        /// Garbage after a valid magic and version exercises the length
        /// checks rather than stopping at the magic.
        #[test]
        fn garbage_after_valid_prefix(tail in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = hello(b"", "");
            bytes.truncate(6);
            bytes.extend_from_slice(&tail);
            if let Some(fixed) = bytes.first_chunk::<HELLO_FIXED_LEN>() {
                let _ = hello_rest_len(fixed);
            }
            let _ = decode_message(&tail, &Limits::default());
        }
    }
}
