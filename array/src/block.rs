//! Chunks as values: a chunk is a [`Value`] whose header lists each
//! frame's dtype and shape and whose frames hold the elements in C order.
//! A regular chunk has one frame; a reduction's partial result has one
//! per component (count, mean, ...). Frames are read in place through a
//! bytemuck cast; a frame at an address not aligned for its type is copied
//! once into an aligned buffer, never misread.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weft_gpu::Buffer;
use weft_runtime::Value;
use weft_transport::shm;

use crate::dtype::{DType, Element};
use crate::error::{ArrayError, Result};

/// A frame's type and shape, as the value's header lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Element type.
    pub dtype: DType,
    /// Shape (C order).
    pub shape: Vec<usize>,
}

/// An owned typed buffer (bool as `u8`).
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Buf {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<u8>),
}

/// Runs `$body` with `$v` bound to the typed vector or slice inside a
/// [`Buf`]- or [`Data`]-like enum, whatever its variant.
#[macro_export]
#[doc(hidden)]
macro_rules! with_typed {
    ($ty:ident, $e:expr, $v:ident => $body:expr) => {
        match $e {
            $ty::F32($v) => $body,
            $ty::F64($v) => $body,
            $ty::I32($v) => $body,
            $ty::I64($v) => $body,
            $ty::Bool($v) => $body,
        }
    };
}

/// Runs `$body` with the type alias `$t` set to the Rust type of a dtype.
#[macro_export]
#[doc(hidden)]
macro_rules! with_dtype {
    ($d:expr, $t:ident => $body:expr) => {
        match $d {
            $crate::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::DType::F64 => {
                type $t = f64;
                $body
            }
            $crate::DType::I32 => {
                type $t = i32;
                $body
            }
            $crate::DType::I64 => {
                type $t = i64;
                $body
            }
            $crate::DType::Bool => {
                type $t = u8;
                $body
            }
        }
    };
}

/// Builds a [`Buf`] from a vector of any element type.
pub trait IntoBuf {
    /// The buffer.
    fn into_buf(self) -> Buf;
}

macro_rules! into_buf {
    ($t:ty, $v:ident) => {
        impl IntoBuf for Vec<$t> {
            fn into_buf(self) -> Buf {
                Buf::$v(self)
            }
        }
    };
}
into_buf!(f32, F32);
into_buf!(f64, F64);
into_buf!(i32, I32);
into_buf!(i64, I64);
into_buf!(u8, Bool);

impl Buf {
    /// `n` zeros of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> Buf {
        with_dtype!(dtype, T => vec![T::default(); n].into_buf())
    }

    /// Its element type.
    pub fn dtype(&self) -> DType {
        match self {
            Buf::F32(_) => DType::F32,
            Buf::F64(_) => DType::F64,
            Buf::I32(_) => DType::I32,
            Buf::I64(_) => DType::I64,
            Buf::Bool(_) => DType::Bool,
        }
    }

    /// Its length in elements.
    pub fn len(&self) -> usize {
        with_typed!(Buf, self, v => v.len())
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as `T`, if `T` is its type.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        with_typed!(Buf, self, v => bytemuck::try_cast_slice(v.as_slice()).ok().filter(|_| T::DTYPE == self.dtype()))
    }

    /// The elements as bytes (little-endian, as frames carry them).
    pub fn as_bytes(&self) -> &[u8] {
        with_typed!(Buf, self, v => bytemuck::cast_slice(v.as_slice()))
    }

    /// The elements converted to `T` (as `as` converts).
    pub fn to_vec<T: Element>(&self) -> Vec<T> {
        with_typed!(Buf, self, v => v.iter().map(|x| {
            if T::DTYPE.is_float() { T::from_f64(x.to_f64()) } else { T::from_i64(x.to_i64()) }
        }).collect())
    }

    /// Elements of `dtype` from little-endian bytes (a trailing partial
    /// element is ignored).
    pub fn from_bytes(dtype: DType, bytes: &[u8]) -> Buf {
        crate::with_dtype!(dtype, T => cast::<T>(&bytes[..bytes.len() / dtype.size() * dtype.size()]).into_owned().into_buf())
    }

    /// Elements `range`, borrowed as a frame of `shape`.
    pub fn view(&self, range: std::ops::Range<usize>, shape: &[usize]) -> View<'_> {
        let data = match self {
            Buf::F32(v) => Data::F32(Cow::Borrowed(&v[range])),
            Buf::F64(v) => Data::F64(Cow::Borrowed(&v[range])),
            Buf::I32(v) => Data::I32(Cow::Borrowed(&v[range])),
            Buf::I64(v) => Data::I64(Cow::Borrowed(&v[range])),
            Buf::Bool(v) => Data::Bool(Cow::Borrowed(&v[range])),
        };
        View {
            shape: shape.to_vec(),
            data,
        }
    }

    /// A frame holding these elements, without copying them.
    pub fn into_frame(self) -> Buffer {
        Buffer::host(Bytes::from_owner(Owned(self)))
    }
}

/// Lends a [`Buf`]'s bytes to a `Bytes`.
struct Owned(Buf);

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Typed elements borrowed from a frame, or copied when the frame was not
/// aligned for the type.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Data<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
    I32(Cow<'a, [i32]>),
    I64(Cow<'a, [i64]>),
    Bool(Cow<'a, [u8]>),
}

impl Data<'_> {
    /// Its element type.
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::Bool(_) => DType::Bool,
        }
    }

    /// Its length in elements.
    pub fn len(&self) -> usize {
        with_typed!(Data, self, v => v.len())
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as `T`, if `T` is its type.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        if T::DTYPE != self.dtype() {
            return None;
        }
        with_typed!(Data, self, v => bytemuck::try_cast_slice(v.as_ref()).ok())
    }

    /// Typed elements over `bytes` (copied only when misaligned).
    fn borrowed(dtype: DType, bytes: &[u8]) -> Data<'_> {
        match dtype {
            DType::F32 => Data::F32(cast(bytes)),
            DType::F64 => Data::F64(cast(bytes)),
            DType::I32 => Data::I32(cast(bytes)),
            DType::I64 => Data::I64(cast(bytes)),
            DType::Bool => Data::Bool(cast(bytes)),
        }
    }

    /// The same elements, owned (no longer borrowing a frame).
    fn into_owned(self) -> Data<'static> {
        match self {
            Data::F32(v) => Data::F32(Cow::Owned(v.into_owned())),
            Data::F64(v) => Data::F64(Cow::Owned(v.into_owned())),
            Data::I32(v) => Data::I32(Cow::Owned(v.into_owned())),
            Data::I64(v) => Data::I64(Cow::Owned(v.into_owned())),
            Data::Bool(v) => Data::Bool(Cow::Owned(v.into_owned())),
        }
    }

    /// An owned copy.
    pub fn to_buf(&self) -> Buf {
        with_typed!(Data, self, v => v.to_vec().into_buf())
    }
}

/// One frame of a chunk value, typed.
#[derive(Debug, Clone)]
pub struct View<'a> {
    /// Shape (C order).
    pub shape: Vec<usize>,
    /// The elements.
    pub data: Data<'a>,
}

impl View<'_> {
    /// Its element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }
}

fn cast<'a, T: Element>(bytes: &'a [u8]) -> Cow<'a, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(values) => Cow::Borrowed(values),
        // Misaligned (the length was checked): one copy into aligned memory.
        Err(_) => {
            let mut owned = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
            bytemuck::cast_slice_mut::<T, u8>(&mut owned).copy_from_slice(bytes);
            Cow::Owned(owned)
        }
    }
}

/// The frames of a chunk value, typed, checked against its header.
pub fn decode(value: &Value) -> Result<Vec<View<'_>>> {
    let metas: Vec<Meta> = value.decode().map_err(ArrayError::Data)?;
    if metas.len() != value.frames.len() {
        return Err(ArrayError::Data(format!(
            "a chunk header lists {} frames, the value has {}",
            metas.len(),
            value.frames.len()
        )));
    }
    metas
        .into_iter()
        .zip(&value.frames)
        .map(|(meta, frame)| {
            // A device chunk reaching a CPU op is copied to the host once.
            let copied = match frame.as_host() {
                Some(_) => None,
                None => Some(
                    frame
                        .to_host()
                        .map_err(|e| ArrayError::Data(format!("copying a chunk off {}: {e}", frame.location())))?,
                ),
            };
            let got = copied.as_ref().map_or(frame.len(), |c| c.len());
            let len: usize = meta.shape.iter().product();
            if got != len * meta.dtype.size() {
                return Err(ArrayError::Data(format!(
                    "a {} chunk of shape {:?} needs {} bytes, its frame has {got}",
                    meta.dtype,
                    meta.shape,
                    len * meta.dtype.size(),
                )));
            }
            let data = match (frame.as_host(), &copied) {
                (Some(bytes), _) => Data::borrowed(meta.dtype, bytes),
                (None, Some(bytes)) => Data::borrowed(meta.dtype, bytes).into_owned(),
                (None, None) => return Err(ArrayError::Data("a frame neither on the host nor copied".into())),
            };
            Ok(View {
                shape: meta.shape,
                data,
            })
        })
        .collect()
}

/// The one frame of a regular chunk.
pub fn decode_one(value: &Value) -> Result<View<'_>> {
    let mut views = decode(value)?;
    match views.len() {
        1 => Ok(views.remove(0)),
        n => Err(ArrayError::Data(format!("a chunk has {n} frames, not 1"))),
    }
}

/// A value of frames, each with its shape.
pub fn encode(parts: Vec<(Vec<usize>, Buf)>) -> Result<Value> {
    let metas: Vec<Meta> = parts
        .iter()
        .map(|(shape, buf)| Meta {
            dtype: buf.dtype(),
            shape: shape.clone(),
        })
        .collect();
    let mut value = Value::encode(&metas).map_err(ArrayError::Data)?;
    value.frames = parts.into_iter().map(|(_, buf)| buf.into_frame()).collect();
    Ok(value)
}

/// An output chunk being written: host memory from the runtime's pool
/// (shared memory when large, so a worker on the same host maps it
/// instead of copying), 64-byte aligned.
pub struct Out {
    meta: Meta,
    buf: shm::HostBuffer,
}

impl Out {
    /// Room for a chunk of `dtype` and `shape`; contents unspecified until written.
    pub fn new(dtype: DType, shape: &[usize]) -> Out {
        let len: usize = shape.iter().product();
        Out {
            meta: Meta {
                dtype,
                shape: shape.to_vec(),
            },
            buf: shm::alloc(len * dtype.size()),
        }
    }

    /// The elements, to fill.
    pub fn as_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        if T::DTYPE != self.meta.dtype {
            return Err(ArrayError::Data(format!(
                "a {} chunk written as {}",
                self.meta.dtype,
                T::DTYPE
            )));
        }
        bytemuck::try_cast_slice_mut(self.buf.as_mut_slice()).map_err(|e| ArrayError::Data(e.to_string()))
    }

    /// The finished chunk value.
    pub fn finish(self) -> Result<Value> {
        let mut value = Value::encode(&vec![self.meta]).map_err(ArrayError::Data)?;
        value.frames.push(Buffer::host(self.buf.freeze()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_misaligned_frames_are_copied() {
        let value = encode(vec![(vec![2, 3], Buf::F64(vec![1., 2., 3., 4., 5., 6.]))]).unwrap();
        let view = decode_one(&value).unwrap();
        assert_eq!(view.shape, vec![2, 3]);
        assert!(matches!(view.data, Data::F64(Cow::Borrowed(_))));
        // The same bytes one byte off alignment.
        let bytes = value.frames[0].as_host().unwrap();
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(bytes);
        let shifted = Bytes::from(shifted).slice(1..);
        let moved = Value {
            header: value.header.clone(),
            frames: vec![Buffer::host(shifted)],
        };
        let view = decode_one(&moved).unwrap();
        assert_eq!(view.data.as_slice::<f64>().unwrap(), &[1., 2., 3., 4., 5., 6.]);
        // A frame of the wrong length is an error naming the shape.
        let bad = Value {
            header: value.header.clone(),
            frames: vec![Buffer::host(Bytes::from(vec![0u8; 8]))],
        };
        let err = decode_one(&bad).unwrap_err().to_string();
        assert!(err.contains("[2, 3]"), "{err}");
    }

    #[test]
    fn out_chunks_are_typed() {
        let mut out = Out::new(DType::I32, &[4]);
        out.as_mut::<i32>().unwrap().copy_from_slice(&[1, 2, 3, 4]);
        assert!(out.as_mut::<f32>().is_err());
        let value = out.finish().unwrap();
        assert_eq!(
            decode_one(&value).unwrap().data.as_slice::<i32>().unwrap(),
            &[1, 2, 3, 4]
        );
    }
}
