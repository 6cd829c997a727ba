//! Messages: a small control header plus data frames that are never copied
//! into it. A frame is a [`Buffer`]: host bytes, pinned host memory or
//! device memory.

use bytes::Bytes;
use weft_gpu::Buffer;

/// What endpoints exchange: a control header (the runtime puts a
/// serde-encoded message there) and zero or more data frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The control header.
    pub header: Bytes,
    /// Data frames, sent after the header without being copied into it.
    pub frames: Vec<Buffer>,
}

impl Message {
    /// A message with a header and frames.
    pub fn new(header: impl Into<Bytes>, frames: Vec<Buffer>) -> Self {
        Message {
            header: header.into(),
            frames,
        }
    }

    /// Header plus frame bytes.
    pub fn payload_len(&self) -> usize {
        self.header.len() + self.frames.iter().map(Buffer::len).sum::<usize>()
    }

    /// Each frame's length and where it is held, for the frame table.
    pub(crate) fn frame_table(&self) -> impl ExactSizeIterator<Item = (usize, weft_gpu::Device)> + '_ {
        self.frames.iter().map(|f| (f.len(), f.location()))
    }
}
