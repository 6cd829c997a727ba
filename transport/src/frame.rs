//! Messages: a small control header plus data frames that are never copied
//! into it.

use bytes::Bytes;
use weft_gpu::{Device, DeviceBuffer};

/// Where a frame's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// Ordinary (host) memory.
    Host,
    /// Memory of a GPU (real or emulated).
    Device(Device),
}

/// One data buffer of a message, reference-counted: cloning or sending it
/// over `inproc://` shares the buffer, and stream transports write it with
/// vectored I/O straight from where it lies.
///
/// A frame is host bytes or a device buffer. In-process, a device frame
/// passes by reference; a transport that writes host bytes only (TCP,
/// TLS) stages it through host memory.
#[derive(Clone)]
pub struct Frame {
    data: FrameData,
}

#[derive(Clone)]
enum FrameData {
    Host(Bytes),
    Device(DeviceBuffer),
}

impl PartialEq for Frame {
    /// Host frames compare by content, device frames by identity (the same
    /// device memory).
    fn eq(&self, other: &Self) -> bool {
        match (&self.data, &other.data) {
            (FrameData::Host(a), FrameData::Host(b)) => a == b,
            (FrameData::Device(a), FrameData::Device(b)) => {
                a.device() == b.device() && a.device_ptr() == b.device_ptr() && a.len() == b.len()
            }
            _ => false,
        }
    }
}

impl Eq for Frame {}

impl Frame {
    /// A frame over host bytes.
    pub fn host(bytes: impl Into<Bytes>) -> Self {
        Frame {
            data: FrameData::Host(bytes.into()),
        }
    }

    /// A frame over device memory.
    pub fn device(buffer: DeviceBuffer) -> Self {
        Frame {
            data: FrameData::Device(buffer),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        match &self.data {
            FrameData::Host(bytes) => bytes.len(),
            FrameData::Device(buffer) => buffer.len(),
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
            FrameData::Device(buffer) => Location::Device(buffer.device()),
        }
    }

    /// The bytes, if they are in host memory.
    pub fn as_host(&self) -> Option<&Bytes> {
        match &self.data {
            FrameData::Host(bytes) => Some(bytes),
            FrameData::Device(_) => None,
        }
    }

    /// The device buffer, if the frame is in device memory.
    pub fn as_device(&self) -> Option<&DeviceBuffer> {
        match &self.data {
            FrameData::Host(_) => None,
            FrameData::Device(buffer) => Some(buffer),
        }
    }

    /// The bytes in host memory: shared for a host frame, copied from the
    /// device (synchronously, on a stream of its own) into a pinned buffer
    /// of the device's staging pool for a device frame.
    pub fn to_host(&self) -> Result<Bytes, weft_gpu::GpuError> {
        match &self.data {
            FrameData::Host(bytes) => Ok(bytes.clone()),
            FrameData::Device(buffer) => {
                // Pinned memory from the device's staging pool, back there
                // when the last `Bytes` over it drops.
                let mut staged = buffer.gpu().staging(buffer.len())?;
                buffer.gpu().stream()?.copy_d2h(buffer, staged.as_mut_slice())?;
                Ok(Bytes::from_owner(staged))
            }
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

    /// Every frame in host memory, device frames staged through a copy, for
    /// a transport that writes host bytes only.
    pub(crate) fn host_frames(&self, peer: &str) -> crate::Result<Vec<Bytes>> {
        self.frames
            .iter()
            .map(|f| {
                f.to_host().map_err(|source| crate::TransportError::Device {
                    peer: peer.to_string(),
                    source,
                })
            })
            .collect()
    }
}
