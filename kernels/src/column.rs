//! Columns in the Arrow memory layout, on the host or on a device.
//!
//! A column is a type, a length and up to three buffers, exactly as Arrow
//! lays them out: values (bit-packed for booleans, bytes for utf8), an
//! optional validity bitmap (LSB first, 1 = valid), and i32 offsets for utf8.
//! Every buffer is a [`Buffer`] (host memory shared with arrow without
//! copying, or pooled device memory on one device), the same type a
//! task's `Value` frames hold.

use std::sync::Arc;

use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, PrimitiveArray, StringArray};
use arrow_buffer::{ArrowNativeType, BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use weft_gpu::{Buffer, Device, DeviceBuffer, Gpu};

use crate::KernelError;

/// The element types kernels handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    /// Booleans, bit-packed.
    Bool,
    /// 32-bit signed integers.
    I32,
    /// 64-bit signed integers.
    I64,
    /// 32-bit floats.
    F32,
    /// 64-bit floats.
    F64,
    /// 32-bit unsigned integers (indices, partition ids).
    U32,
    /// 64-bit unsigned integers (hashes).
    U64,
    /// UTF-8 strings with i32 offsets.
    Utf8,
}

impl DType {
    /// Bytes per value for fixed-width types.
    pub fn width(self) -> Option<usize> {
        match self {
            DType::I32 | DType::F32 | DType::U32 => Some(4),
            DType::I64 | DType::F64 | DType::U64 => Some(8),
            DType::Bool | DType::Utf8 => None,
        }
    }
}

/// A fixed-width Rust type with a column type.
pub trait Native: ArrowNativeType + bytemuck::Pod + PartialOrd + Send + Sync + 'static {
    /// The column type.
    const DTYPE: DType;
    /// Suffix of the CUDA kernels for this type (`add_f64`).
    const SUFFIX: &'static str;
}

macro_rules! native {
    ($($t:ty => $d:ident, $s:literal;)*) => {$(
        impl Native for $t {
            const DTYPE: DType = DType::$d;
            const SUFFIX: &'static str = $s;
        }
    )*};
}
native! {
    i32 => I32, "i32";
    i64 => I64, "i64";
    f32 => F32, "f32";
    f64 => F64, "f64";
    u32 => U32, "u32";
    u64 => U64, "u64";
}

/// Where a column buffer must be for a kernel: on the host or on a device.
pub(crate) trait Place {
    /// The host bytes, or an error naming the device they are on.
    fn host(&self) -> Result<&[u8], KernelError>;
    /// The host bytes as values of `T` (aligned, as buffers from an
    /// allocator or from [`Buffer::to_arrow`] are).
    fn typed<T: bytemuck::Pod>(&self) -> Result<&[T], KernelError>;
    /// The device memory, or an error saying the bytes are on the host.
    fn dev(&self) -> Result<&DeviceBuffer, KernelError>;
    /// The host bytes as an arrow buffer (no copy when aligned).
    fn arrow(&self) -> Result<arrow_buffer::Buffer, KernelError>;
}

impl Place for Buffer {
    fn host(&self) -> Result<&[u8], KernelError> {
        self.as_host().map(|b| &b[..]).ok_or(KernelError::WrongPlace {
            what: "host access",
            device: self.location(),
        })
    }

    fn typed<T: bytemuck::Pod>(&self) -> Result<&[T], KernelError> {
        let bytes = self.host()?;
        let whole = &bytes[..bytes.len() / size_of::<T>() * size_of::<T>()];
        bytemuck::try_cast_slice(whole).map_err(|e| KernelError::InvalidArgument {
            kernel: "column",
            reason: format!(
                "host buffer of {} bytes cannot be read as {}: {e}",
                bytes.len(),
                std::any::type_name::<T>()
            ),
        })
    }

    fn dev(&self) -> Result<&DeviceBuffer, KernelError> {
        self.as_device().ok_or(KernelError::WrongPlace {
            what: "device access",
            device: Device::Cpu,
        })
    }

    fn arrow(&self) -> Result<arrow_buffer::Buffer, KernelError> {
        self.to_arrow().ok_or(KernelError::WrongPlace {
            what: "host access",
            device: self.location(),
        })
    }
}

/// A column in the Arrow layout.
#[derive(Clone, Debug)]
pub struct Column {
    dtype: DType,
    len: usize,
    values: Buffer,
    validity: Option<Buffer>,
    offsets: Option<Buffer>,
}

/// Bytes of a validity bitmap (or boolean values) for `len` rows.
pub fn bitmap_bytes(len: usize) -> usize {
    len.div_ceil(8)
}

impl Column {
    /// Assembles a column from its buffers; checks the sizes.
    pub fn new(
        dtype: DType,
        len: usize,
        values: Buffer,
        validity: Option<Buffer>,
        offsets: Option<Buffer>,
    ) -> Result<Self, KernelError> {
        let bad = |reason: String| KernelError::InvalidArgument {
            kernel: "column",
            reason,
        };
        let need = match dtype.width() {
            Some(w) => len * w,
            None if dtype == DType::Bool => bitmap_bytes(len),
            None => 0,
        };
        if values.len() < need {
            return Err(bad(format!(
                "{dtype:?} values of {} bytes for {len} rows",
                values.len()
            )));
        }
        if let Some(v) = &validity
            && v.len() < bitmap_bytes(len)
        {
            return Err(bad(format!("validity of {} bytes for {len} rows", v.len())));
        }
        match (&offsets, dtype) {
            (Some(o), DType::Utf8) if o.len() >= (len + 1) * 4 => {}
            (None, DType::Utf8) | (Some(_), DType::Utf8) => {
                return Err(bad(format!("utf8 needs {} offsets", len + 1)));
            }
            (Some(_), _) => return Err(bad("offsets on a fixed-width column".into())),
            (None, _) => {}
        }
        let device = values.location();
        for b in validity.iter().chain(offsets.iter()) {
            if b.location() != device {
                return Err(KernelError::DeviceMismatch {
                    kernel: "column",
                    a: device,
                    b: b.location(),
                });
            }
        }
        Ok(Column {
            dtype,
            len,
            values,
            validity,
            offsets,
        })
    }

    /// A host column of `values` without nulls (no copy).
    pub fn from_vec<T: Native>(values: Vec<T>) -> Self {
        let len = values.len();
        Column {
            dtype: T::DTYPE,
            len,
            values: Buffer::from_vec(values),
            validity: None,
            offsets: None,
        }
    }

    /// A host column from optional values (`None` is null).
    pub fn from_options<T: Native>(values: &[Option<T>]) -> Self {
        let nulls = NullBuffer::from_iter(values.iter().map(Option::is_some));
        let vals: Vec<T> = values.iter().map(|v| v.unwrap_or_default()).collect();
        let mut c = Self::from_vec(vals);
        c.validity = Some(Buffer::from(nulls.into_inner().into_inner()));
        c
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the column lives.
    pub fn device(&self) -> Device {
        self.values.location()
    }

    /// The values buffer.
    pub fn values(&self) -> &Buffer {
        &self.values
    }

    /// The validity bitmap, if the column may have nulls.
    pub fn validity(&self) -> Option<&Buffer> {
        self.validity.as_ref()
    }

    /// The utf8 offsets.
    pub fn offsets(&self) -> Option<&Buffer> {
        self.offsets.as_ref()
    }

    /// Typed host values.
    pub fn host_values<T: Native>(&self) -> Result<&[T], KernelError> {
        if T::DTYPE != self.dtype {
            return Err(KernelError::UnsupportedType {
                kernel: "host_values",
                dtype: self.dtype,
            });
        }
        Ok(&self.values.typed::<T>()?[..self.len])
    }

    /// Host validity bytes, if any.
    pub fn host_validity(&self) -> Result<Option<&[u8]>, KernelError> {
        self.validity.as_ref().map(|v| v.host()).transpose()
    }

    /// Whether row `i` is valid (host columns).
    pub fn is_valid(&self, i: usize) -> Result<bool, KernelError> {
        Ok(self
            .host_validity()?
            .is_none_or(|v| arrow_buffer::bit_util::get_bit(v, i)))
    }

    /// Number of null rows (host columns).
    pub fn null_count(&self) -> Result<usize, KernelError> {
        Ok(match self.host_validity()? {
            None => 0,
            Some(v) => (0..self.len)
                .filter(|i| !arrow_buffer::bit_util::get_bit(v, *i))
                .count(),
        })
    }

    /// Copies the column to `gpu`.
    pub fn to_device(&self, gpu: &Arc<Gpu>) -> Result<Column, KernelError> {
        let stream = gpu.thread_stream()?;
        let up = |d: &Buffer| -> Result<Buffer, KernelError> {
            match d.as_host() {
                Some(b) => Ok(Buffer::device(stream.upload(b)?)),
                None => Err(KernelError::WrongPlace {
                    what: "to_device",
                    device: d.location(),
                }),
            }
        };
        Ok(Column {
            dtype: self.dtype,
            len: self.len,
            values: up(&self.values)?,
            validity: self.validity.as_ref().map(up).transpose()?,
            offsets: self.offsets.as_ref().map(up).transpose()?,
        })
    }

    /// Copies the column to the host (a no-op clone for host columns).
    pub fn to_host(&self) -> Result<Column, KernelError> {
        if self.values.as_device().is_none() {
            return Ok(self.clone());
        }
        let down =
            |d: &Buffer, bytes: usize| -> Result<Buffer, KernelError> { Ok(Buffer::host(d.dev()?.download(bytes)?)) };
        let value_bytes = match (self.dtype.width(), &self.offsets) {
            (Some(w), _) => self.len * w,
            (None, Some(_)) => self.values.len(),
            (None, None) => bitmap_bytes(self.len),
        };
        Ok(Column {
            dtype: self.dtype,
            len: self.len,
            values: down(&self.values, value_bytes)?,
            validity: self
                .validity
                .as_ref()
                .map(|v| down(v, bitmap_bytes(self.len)))
                .transpose()?,
            offsets: self.offsets.as_ref().map(|o| down(o, (self.len + 1) * 4)).transpose()?,
        })
    }

    /// Wraps an arrow array without copying its buffers (except a validity
    /// bitmap that starts mid-byte, which is realigned).
    pub fn from_arrow(array: &dyn Array) -> Result<Self, KernelError> {
        let data = array.to_data();
        let len = data.len();
        let dtype = match data.data_type() {
            arrow_schema::DataType::Boolean => DType::Bool,
            arrow_schema::DataType::Int32 => DType::I32,
            arrow_schema::DataType::Int64 => DType::I64,
            arrow_schema::DataType::Float32 => DType::F32,
            arrow_schema::DataType::Float64 => DType::F64,
            arrow_schema::DataType::UInt32 => DType::U32,
            arrow_schema::DataType::UInt64 => DType::U64,
            arrow_schema::DataType::Utf8 => DType::Utf8,
            other => {
                return Err(KernelError::InvalidArgument {
                    kernel: "from_arrow",
                    reason: format!("unsupported arrow type {other}"),
                });
            }
        };
        let validity = data.nulls().filter(|n| n.null_count() > 0).map(|n| {
            let bits = n.inner();
            if bits.offset().is_multiple_of(8) {
                Buffer::from(bits.inner().slice_with_length(bits.offset() / 8, bitmap_bytes(len)))
            } else {
                Buffer::from(bits.sliced())
            }
        });
        let (values, offsets) = match dtype {
            DType::Bool => {
                let bits = BooleanBuffer::new(data.buffers()[0].clone(), data.offset(), len);
                let buf = if data.offset().is_multiple_of(8) {
                    bits.inner().slice_with_length(data.offset() / 8, bitmap_bytes(len))
                } else {
                    bits.sliced()
                };
                (Buffer::from(buf), None)
            }
            DType::Utf8 => {
                let strings = array
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or(KernelError::InvalidArgument {
                        kernel: "from_arrow",
                        reason: "utf8 array is not a StringArray".into(),
                    })?;
                (
                    Buffer::from(strings.values().clone()),
                    Some(Buffer::from(strings.offsets().inner().inner().clone())),
                )
            }
            _ => {
                let w = dtype.width().unwrap_or(1);
                let buf = data.buffers()[0].slice_with_length(data.offset() * w, len * w);
                (Buffer::from(buf), None)
            }
        };
        Column::new(dtype, len, values, validity, offsets)
    }

    /// Views a host column as an arrow array, without copying.
    pub fn to_arrow(&self) -> Result<ArrayRef, KernelError> {
        let nulls = match &self.validity {
            None => None,
            Some(v) => Some(NullBuffer::new(BooleanBuffer::new(v.arrow()?, 0, self.len))),
        };
        let values = self.values.arrow()?;
        fn prim<T: arrow_array::ArrowPrimitiveType>(
            values: arrow_buffer::Buffer,
            len: usize,
            nulls: Option<NullBuffer>,
        ) -> Result<ArrayRef, KernelError> {
            let vals = ScalarBuffer::<T::Native>::new(values, 0, len);
            Ok(Arc::new(PrimitiveArray::<T>::try_new(vals, nulls)?))
        }
        match self.dtype {
            DType::Bool => Ok(Arc::new(BooleanArray::new(
                BooleanBuffer::new(values, 0, self.len),
                nulls,
            ))),
            DType::I32 => prim::<Int32Type>(values, self.len, nulls),
            DType::I64 => prim::<Int64Type>(values, self.len, nulls),
            DType::F32 => prim::<Float32Type>(values, self.len, nulls),
            DType::F64 => prim::<Float64Type>(values, self.len, nulls),
            DType::U32 => prim::<UInt32Type>(values, self.len, nulls),
            DType::U64 => prim::<UInt64Type>(values, self.len, nulls),
            DType::Utf8 => {
                let offsets = self
                    .offsets
                    .as_ref()
                    .ok_or(KernelError::InvalidArgument {
                        kernel: "to_arrow",
                        reason: "utf8 column without offsets".into(),
                    })?
                    .arrow()?;
                let offsets = OffsetBuffer::new(ScalarBuffer::<i32>::new(offsets, 0, self.len + 1));
                Ok(Arc::new(StringArray::try_new(offsets, values, nulls)?))
            }
        }
    }
}
