//! Messages: a small control header plus data frames that are never copied
//! into it.

use bytes::Bytes;

/// Where a frame's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// Ordinary (host) memory.
    Host,
}

/// One data buffer of a message, reference-counted: cloning or sending it
/// over `inproc://` shares the bytes, and stream transports write it with
/// vectored I/O straight from where it lies.
///
/// Frames are host memory today; device buffers join as another location
/// without changing this API.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    data: FrameData,
}

#[derive(Clone, PartialEq, Eq)]
enum FrameData {
    Host(Bytes),
}

impl Frame {
    /// A frame over host bytes.
    pub fn host(bytes: impl Into<Bytes>) -> Self {
        Frame {
            data: FrameData::Host(bytes.into()),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        match &self.data {
            FrameData::Host(bytes) => bytes.len(),
        }
    }

    /// Whether the frame holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the bytes live.
    pub fn location(&self) -> Location {
        match &self.data {
            FrameData::Host(_) => Location::Host,
        }
    }

    /// The host bytes a stream backend writes.
    pub(crate) fn bytes(&self) -> &Bytes {
        match &self.data {
            FrameData::Host(bytes) => bytes,
        }
    }

    /// The bytes, if they are in host memory.
    pub fn as_host(&self) -> Option<&Bytes> {
        match &self.data {
            FrameData::Host(bytes) => Some(bytes),
        }
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Self {
        Frame::host(bytes)
    }
}

impl From<Vec<u8>> for Frame {
    fn from(bytes: Vec<u8>) -> Self {
        Frame::host(bytes)
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({:?}, {} bytes)", self.location(), self.len())
    }
}

/// What endpoints exchange: a control header (the runtime puts a
/// serde-encoded message there) and zero or more data frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The control header.
    pub header: Bytes,
    /// Data frames, sent after the header without being copied into it.
    pub frames: Vec<Frame>,
}

impl Message {
    /// A message with a header and frames.
    pub fn new(header: impl Into<Bytes>, frames: Vec<Frame>) -> Self {
        Message {
            header: header.into(),
            frames,
        }
    }

    /// Header plus frame bytes.
    pub fn payload_len(&self) -> usize {
        self.header.len() + self.frames.iter().map(Frame::len).sum::<usize>()
    }
}
