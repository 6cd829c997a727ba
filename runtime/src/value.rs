//! Task results: a small serde header plus data frames that are never
//! copied into it, so a result moves between workers as transport frames.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use weft_transport::Buffer;

use crate::protocol::Tier;

/// A task's result (or an op's input).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Value {
    /// Serialized small part (postcard).
    pub header: Bytes,
    /// Large buffers, moved without copying.
    pub frames: Vec<Buffer>,
}

impl Value {
    /// A value that is only a serialized header.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, String> {
        let header = postcard::to_stdvec(value).map_err(|e| format!("cannot serialize the result: {e}"))?;
        Ok(Value {
            header: header.into(),
            frames: Vec::new(),
        })
    }

    /// Reads the header back as a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, String> {
        postcard::from_bytes(&self.header).map_err(|e| {
            format!(
                "cannot read a {} from a {}-byte value: {e}",
                std::any::type_name::<T>(),
                self.header.len()
            )
        })
    }

    /// Where the value lives: on a device when any of its frames is.
    pub fn tier(&self) -> Tier {
        if self.frames.iter().any(|f| f.as_device().is_some()) {
            Tier::Device
        } else {
            Tier::Host
        }
    }

    /// Bytes held: header plus frames.
    pub fn nbytes(&self) -> u64 {
        (self.header.len() + self.frames.iter().map(Buffer::len).sum::<usize>()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_the_type_on_error() {
        let value = Value::encode(&(3u64, "x".to_string())).unwrap();
        assert_eq!(value.decode::<(u64, String)>().unwrap(), (3, "x".into()));
        let err = value.decode::<Vec<f64>>().unwrap_err();
        assert!(err.contains("Vec<f64>"), "{err}");
    }
}
