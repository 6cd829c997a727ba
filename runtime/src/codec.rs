//! How the protocol's messages ride on transport messages: each header is
//! one postcard-encoded envelope, and values travel as frames beside it.
//!
//! Messages are batched: one transport message carries every protocol
//! message a side had queued, so a burst of ten thousand task assignments
//! costs a handful of system calls.

use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weft_transport::{Buffer, Message};

use crate::ids::{Key, TaskId};
use crate::protocol::{FromClient, FromWorker, PROTOCOL_VERSION, ToClient, ToWorker, Vitals, WorkerInfo};
use crate::value::Value;
use weft_gpu::{Device, IpcHandle};
use weft_transport::shm::{HostId, ShmRef};

/// The first message on a connection to the scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Hello {
    /// A worker joins.
    Worker {
        /// [`PROTOCOL_VERSION`] of the worker.
        version: u32,
        /// What it offers.
        info: WorkerInfo,
    },
    /// A client connects.
    Client {
        /// [`PROTOCOL_VERSION`] of the client.
        version: u32,
        /// Its name, for logs.
        name: String,
    },
}

impl Hello {
    /// The version the peer speaks.
    pub fn version(&self) -> u32 {
        match self {
            Hello::Worker { version, .. } | Hello::Client { version, .. } => *version,
        }
    }

    /// A worker's hello at our version.
    pub fn worker(info: WorkerInfo) -> Self {
        Hello::Worker {
            version: PROTOCOL_VERSION,
            info,
        }
    }
}

/// Worker to scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerUp {
    /// Protocol messages, in order.
    Batch(Vec<FromWorker>),
    /// Still alive, and how busy; sent every heartbeat interval.
    Heartbeat(Vitals),
}

/// Scheduler to worker: protocol messages in order.
pub type WorkerDown = Vec<ToWorker>;
/// Client to scheduler: protocol messages in order.
pub type ClientUp = Vec<FromClient>;
/// Scheduler to client: protocol messages in order.
pub type ClientDown = Vec<ToClient>;

/// A request to a worker's data server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRequest {
    /// Results by task id (peers fetching inputs, clients gathering).
    Tasks(Vec<TaskId>),
    /// Values a client scatters: per key, the value's header and frame
    /// count, the frames following the envelope. The server keeps them
    /// aside until the scheduler says which task each is
    /// ([`crate::protocol::ToWorker::Adopt`]); answered with a [`DataAck`].
    Put(Vec<(Key, Bytes, u32)>),
    /// Drop values put aside by [`DataRequest::Put`] and never adopted (a
    /// scatter that failed); answered with a [`DataAck`].
    Discard(Vec<Key>),
    /// Pieces of a shuffle for this worker, their frames following the
    /// envelope; answered with a [`crate::shuffle::PushReply`].
    Push(crate::shuffle::Push),
    /// The asker has copied the device frames of the last reply on this
    /// connection (see [`Shared::Device`]): the server may let them go.
    /// Answered with a [`DataAck`] of how many it held.
    Release,
}

impl DataRequest {
    /// Items asked, for checking the answer.
    pub fn len(&self) -> usize {
        match self {
            DataRequest::Tasks(tasks) => tasks.len(),
            DataRequest::Discard(keys) => keys.len(),
            DataRequest::Put(items) => items.len(),
            DataRequest::Push(push) => push.pieces.len(),
            DataRequest::Release => 0,
        }
    }

    /// True when it asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The answer to [`DataRequest::Put`] and [`DataRequest::Discard`]: how
/// many items the server took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataAck {
    /// Items stored or dropped.
    pub items: u32,
}

/// What a data server is sent: a request, and where the asker runs. An
/// asker on the server's own host (equal [`HostId`]s) gets frames that lie
/// in shared memory as descriptions to map instead of bytes, and, if it
/// names a GPU of the same kind as the server's, device frames as IPC
/// handles to copy from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataAsk {
    /// What is asked for.
    pub request: DataRequest,
    /// The asker's host, if it can map this host's shared memory.
    pub host: Option<HostId>,
    /// The asker's GPU, if it can copy device frames of this host by IPC.
    pub gpu: Option<Device>,
}

/// A frame described instead of sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shared {
    /// Host memory in a shared region, mapped by the asker.
    Host(ShmRef),
    /// Device memory, copied by the asker device to device; the server
    /// holds the frame until the asker's next request on the connection
    /// ([`DataRequest::Release`] or any other) or until it closes.
    Device(IpcHandle),
}

/// The answer of a data server, item by item in the order asked: `None`
/// when it does not hold it, else the value's header inline and the count
/// of its frames. Frames listed in `shared` (by their index among all the
/// reply's frames) are described there; the others follow the envelope as
/// transport frames, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataReply {
    /// Per item: the value's header and frame count, or `None`.
    pub items: Vec<Option<(Bytes, u32)>>,
    /// Frames passed as shared memory or device IPC handles, by index, in
    /// increasing order.
    pub shared: Vec<(u32, Shared)>,
}

/// Encodes an envelope as a transport message without frames.
pub fn encode<T: Serialize>(envelope: &T) -> Result<Message, String> {
    let header = postcard::to_stdvec(envelope).map_err(|e| format!("cannot encode a message: {e}"))?;
    Ok(Message::new(header, Vec::new()))
}

/// Decodes the envelope in a transport message's header.
pub fn decode<T: DeserializeOwned>(message: &Message) -> Result<T, String> {
    postcard::from_bytes(&message.header).map_err(|e| {
        format!(
            "malformed {} ({} bytes): {e}",
            std::any::type_name::<T>(),
            message.header.len()
        )
    })
}

/// A data reply carrying `values` (a missing one as `None`); each frame
/// that `share` describes goes as that description instead of its bytes.
pub fn encode_reply(
    values: &[Option<Arc<Value>>],
    mut share: impl FnMut(&Buffer) -> Option<Shared>,
) -> Result<Message, String> {
    let items = values
        .iter()
        .map(|v| v.as_ref().map(|v| (v.header.clone(), v.frames.len() as u32)))
        .collect();
    let (mut shared, mut frames) = (Vec::new(), Vec::new());
    for (i, frame) in values.iter().flatten().flat_map(|v| v.frames.iter()).enumerate() {
        match share(frame) {
            Some(description) => shared.push((i as u32, description)),
            None => frames.push(frame.clone()),
        }
    }
    let mut message = encode(&DataReply { items, shared })?;
    message.frames = frames;
    Ok(message)
}

/// Splits a data reply back into values, turning shared frames into
/// buffers with `import`; checks that the frames add up.
pub fn decode_reply(
    message: Message,
    mut import: impl FnMut(&Shared) -> Result<Buffer, String>,
) -> Result<Vec<Option<Value>>, ReplyError> {
    let reply: DataReply = decode(&message).map_err(ReplyError::Malformed)?;
    let mut inline = message.frames.into_iter();
    let mut shared = reply.shared.iter().peekable();
    let mut index = 0u32;
    let mut values = Vec::with_capacity(reply.items.len());
    for item in reply.items {
        let Some((header, count)) = item else {
            values.push(None);
            continue;
        };
        let mut frames = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let frame = match shared.next_if(|(at, _)| *at == index) {
                Some((_, description)) => import(description).map_err(ReplyError::Unmapped)?,
                None => inline
                    .next()
                    .ok_or_else(|| ReplyError::Malformed("data reply has fewer frames than it announces".into()))?,
            };
            frames.push(frame);
            index += 1;
        }
        values.push(Some(Value { header, frames }));
    }
    if inline.next().is_some() || shared.next().is_some() {
        return Err(ReplyError::Malformed(
            "data reply has more frames than it announces".into(),
        ));
    }
    Ok(values)
}

/// Why a data reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// It breaks the format: the server is at fault.
    Malformed(String),
    /// A shared frame could not be mapped here: ask for the bytes instead.
    Unmapped(String),
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::Malformed(reason) => f.write_str(reason),
            ReplyError::Unmapped(reason) => write!(f, "cannot map a shared frame: {reason}"),
        }
    }
}

/// A [`DataRequest::Put`] of `values` under their keys, ready to send.
pub fn encode_put(values: &[(Key, Value)]) -> Result<Message, String> {
    let items = values
        .iter()
        .map(|(key, v)| (key.clone(), v.header.clone(), v.frames.len() as u32))
        .collect();
    let mut message = encode(&DataAsk {
        request: DataRequest::Put(items),
        host: None,
        gpu: None,
    })?;
    message.frames = values.iter().flat_map(|(_, v)| v.frames.iter().cloned()).collect();
    Ok(message)
}

/// The values of a [`DataRequest::Put`] whose envelope was decoded already
/// (its items) and whose frames are `frames`; checks that they add up.
pub fn split_put(items: Vec<(Key, Bytes, u32)>, frames: Vec<Buffer>) -> Result<Vec<(Key, Value)>, String> {
    let mut frames = frames.into_iter();
    let values = items
        .into_iter()
        .map(|(key, header, count)| Ok((key, take_value(header, count, &mut frames)?)))
        .collect::<Result<Vec<_>, String>>()?;
    no_frames_left(frames)?;
    Ok(values)
}

/// The next value of a message: its header and its `count` frames.
fn take_value(header: Bytes, count: u32, frames: &mut std::vec::IntoIter<Buffer>) -> Result<Value, String> {
    let own: Vec<Buffer> = frames.by_ref().take(count as usize).collect();
    if own.len() != count as usize {
        return Err("message has fewer frames than it announces".into());
    }
    Ok(Value { header, frames: own })
}

fn no_frames_left(mut frames: std::vec::IntoIter<Buffer>) -> Result<(), String> {
    match frames.next() {
        Some(_) => Err("message has more frames than it announces".into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_import(_: &Shared) -> Result<Buffer, String> {
        Err("no shared frames expected".into())
    }

    #[test]
    fn heartbeats_observe_requests_and_task_stream_batches_round_trip() {
        use crate::observe::{ObsEvent, ObservedBatch};
        use crate::protocol::Vitals;

        let up = WorkerUp::Heartbeat(Vitals {
            cpu_percent: 187.5,
            rss_bytes: 3 << 30,
        });
        assert_eq!(decode::<WorkerUp>(&encode(&up).unwrap()).unwrap(), up);
        let ask: ClientUp = vec![FromClient::Observe { on: true }, FromClient::Observe { on: false }];
        assert_eq!(decode::<ClientUp>(&encode(&ask).unwrap()).unwrap(), ask);
        // The batch itself is JSON inside the message: its events are
        // tagged by kind, which postcard could not read back.
        let batch = ObservedBatch {
            events: vec![ObsEvent::Failed {
                worker: crate::ids::WorkerId::new(3),
                key: "boom-1".into(),
                op: "fail".into(),
                at_ms: 1.5,
                message: "boom".into(),
            }],
            events_dropped: 7,
            ..ObservedBatch::default()
        };
        let down: ClientDown = vec![
            ToClient::Observed {
                json: serde_json::to_string(&batch).unwrap(),
                last: true,
            },
            ToClient::ObserveRefused { reason: "none".into() },
        ];
        let decoded = decode::<ClientDown>(&encode(&down).unwrap()).unwrap();
        assert_eq!(decoded, down);
        let ToClient::Observed { json, .. } = &decoded[0] else {
            panic!("{decoded:?}")
        };
        assert_eq!(serde_json::from_str::<ObservedBatch>(json).unwrap(), batch);
        let info = WorkerInfo {
            name: "w".into(),
            address: "tcp://10.0.0.1:4000".into(),
            nthreads: 2,
            memory_limit: 0,
            resources: Vec::new(),
            dashboard: Some("http://10.0.0.1:41234".into()),
            held: Vec::new(),
        };
        let hello = Hello::worker(info);
        assert_eq!(decode::<Hello>(&encode(&hello).unwrap()).unwrap(), hello);
    }

    #[test]
    fn replies_round_trip_with_missing_items() {
        let a = Arc::new(Value {
            header: Bytes::from_static(b"a"),
            frames: vec![Buffer::host(vec![1u8; 10]), Buffer::host(vec![2u8; 3])],
        });
        let b = Arc::new(Value::encode(&5u32).unwrap());
        let message = encode_reply(&[Some(a.clone()), None, Some(b.clone())], |_| None).unwrap();
        let values = decode_reply(message, no_import).unwrap();
        assert_eq!(values, vec![Some((*a).clone()), None, Some((*b).clone())]);
    }

    #[test]
    fn shared_frames_travel_as_descriptions_in_place() {
        let frames = [vec![1u8; 10], vec![2u8; 20], vec![3u8; 30]];
        let a = Arc::new(Value {
            header: Bytes::from_static(b"a"),
            frames: frames.iter().cloned().map(Buffer::host).collect(),
        });
        // The second frame is "shared": described by its length.
        let describe = |frame: &Buffer| {
            (frame.len() == 20).then_some(Shared::Host(ShmRef {
                pid: 1,
                fd: 3,
                ino: 4,
                generation: 0,
                capacity: 20,
                offset: 0,
                len: 20,
            }))
        };
        let message = encode_reply(&[None, Some(a.clone())], describe).unwrap();
        assert_eq!(message.frames.len(), 2, "only the other frames go inline");
        let values = decode_reply(message.clone(), |d| match d {
            Shared::Host(d) => Ok(Buffer::host(vec![2u8; d.len as usize])),
            Shared::Device(_) => Err("no device frames here".into()),
        })
        .unwrap();
        assert_eq!(values, vec![None, Some((*a).clone())]);
        let failed = decode_reply(message, |_| Err("gone".into())).unwrap_err();
        assert_eq!(failed, ReplyError::Unmapped("gone".into()));
    }

    #[test]
    fn inconsistent_replies_are_errors() {
        let mut message = encode(&DataReply {
            items: vec![Some((Bytes::new(), 2))],
            shared: Vec::new(),
        })
        .unwrap();
        message.frames.push(Buffer::host(vec![0u8]));
        let malformed = |result| matches!(result, Err(ReplyError::Malformed(_)));
        assert!(malformed(decode_reply(message.clone(), no_import)), "too few frames");
        message
            .frames
            .extend([Buffer::host(vec![1u8]), Buffer::host(vec![2u8])]);
        assert!(malformed(decode_reply(message, no_import)), "too many frames");
        assert!(decode::<DataReply>(&Message::new(vec![0xffu8; 3], Vec::new())).is_err());
    }

    #[test]
    fn puts_round_trip_and_inconsistent_puts_are_errors() {
        let a = Value {
            header: Bytes::from_static(b"a"),
            frames: vec![Buffer::host(vec![1u8; 10])],
        };
        let b = Value::encode(&5u32).unwrap();
        let values = vec![(Key::from("ka"), a), (Key::from("kb"), b)];
        let message = encode_put(&values).unwrap();
        let Ok(DataAsk {
            request: DataRequest::Put(items),
            ..
        }) = decode::<DataAsk>(&message)
        else {
            panic!("not a put")
        };
        assert_eq!(split_put(items.clone(), message.frames.clone()).unwrap(), values);
        assert!(split_put(items.clone(), Vec::new()).is_err(), "too few frames");
        let mut extra = message.frames.clone();
        extra.push(Buffer::host(vec![0u8]));
        assert!(split_put(items, extra).is_err(), "too many frames");
    }

    #[test]
    fn unknown_data_requests_are_refused() {
        // A variant index past the last one, as a newer peer might send.
        assert!(decode::<DataRequest>(&Message::new(vec![9u8, 0], Vec::new())).is_err());
        let ack = encode(&DataAck { items: 3 }).unwrap();
        assert_eq!(decode::<DataAck>(&ack).unwrap(), DataAck { items: 3 });
    }
}
