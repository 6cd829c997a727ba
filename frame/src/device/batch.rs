//! A partition in device memory: the schema and one `weft-kernels` column
//! per field, and its `Value` form (the codec's column frames, which stay
//! device buffers). Arrow types map to kernel columns one to one, except
//! Date32, held as its int32 days, and Decimal128 of up to 18 digits, held
//! as its unscaled int64 values, each with the arrow type kept in the
//! schema; any other type (wider decimals, timestamps, nested types) is an
//! [`FrameError::Unsupported`] error, which [`super::run`] answers by
//! keeping that partition on the host.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int64Type};
use arrow_array::{ArrayRef, Decimal128Array, Int64Array, RecordBatch, RecordBatchOptions, make_array};
use arrow_schema::ArrowError;
use arrow_schema::{DataType, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use weft_kernels::{Buffer, Column};

use crate::error::{FrameError, Result};

/// A partition whose columns live on one GPU.
#[derive(Clone, Debug)]
pub struct DeviceBatch {
    schema: SchemaRef,
    columns: Vec<Column>,
    rows: usize,
}

/// The header of a device piece (the codec's column header follows as frames).
#[derive(Serialize, Deserialize)]
struct Header {
    schema: Schema,
    rows: usize,
    columns: Vec<u8>,
}

pub(crate) fn kernel_error(e: weft_kernels::KernelError) -> FrameError {
    FrameError::Partition(format!("on the GPU: {e}"))
}

/// The arrow type a column of `t` is stored as on the device, or an error
/// for types the kernels lack.
pub fn storage_type(t: &DataType) -> Result<DataType> {
    match t {
        DataType::Boolean
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8 => Ok(t.clone()),
        DataType::Date32 => Ok(DataType::Int32),
        DataType::Decimal128(p, _) if *p <= 18 => Ok(DataType::Int64),
        other => Err(FrameError::Unsupported {
            op: "a partition in GPU memory".into(),
            data_type: other.clone(),
        }),
    }
}

/// `array` as type `to`: a decimal and its unscaled int64 values convert
/// (every decimal of up to 18 digits fits); other types are relabelled
/// (same layout, no copy).
fn relabel(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    match (array.data_type(), to) {
        (DataType::Decimal128(..), DataType::Int64) => {
            let d = array.as_primitive::<Decimal128Type>();
            let ints: Int64Array = d.try_unary(|v| {
                i64::try_from(v).map_err(|_| ArrowError::InvalidArgumentError(format!("decimal {v} out of range")))
            })?;
            Ok(Arc::new(ints))
        }
        (DataType::Int64, DataType::Decimal128(p, s)) => {
            let ints = array.as_primitive::<Int64Type>();
            let d: Decimal128Array = ints.unary(i128::from);
            Ok(Arc::new(d.with_precision_and_scale(*p, *s)?))
        }
        _ => {
            let data = array.to_data().into_builder().data_type(to.clone()).build()?;
            Ok(make_array(data))
        }
    }
}

impl DeviceBatch {
    /// A device batch from columns already on the device, checked against the schema.
    pub fn new(schema: SchemaRef, columns: Vec<Column>, rows: usize) -> Result<Self> {
        if columns.len() != schema.fields().len() || columns.iter().any(|c| c.len() != rows) {
            return Err(FrameError::Partition(format!(
                "{} device columns of lengths {:?} for {} fields of {rows} rows",
                columns.len(),
                columns.iter().map(Column::len).collect::<Vec<_>>(),
                schema.fields().len()
            )));
        }
        Ok(DeviceBatch { schema, columns, rows })
    }

    /// Copies a host batch to `gpu` (an error for column types the kernels lack).
    pub fn upload(batch: &RecordBatch, gpu: &Arc<weft_gpu::Gpu>) -> Result<Self> {
        let columns = batch
            .columns()
            .iter()
            .map(|a| {
                let stored = relabel(a, &storage_type(a.data_type())?)?;
                Column::from_arrow(stored.as_ref())
                    .and_then(|c| c.to_device(gpu))
                    .map_err(kernel_error)
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(batch.schema(), columns, batch.num_rows())
    }

    /// Copies the batch to the host.
    pub fn download(&self) -> Result<RecordBatch> {
        let columns = self
            .columns
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                let host = c.to_host().and_then(|h| h.to_arrow()).map_err(kernel_error)?;
                relabel(&host, f.data_type())
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }

    /// The schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The columns, in schema order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Rows.
    pub fn num_rows(&self) -> usize {
        self.rows
    }

    /// The header and frames of this batch as a partition piece.
    pub fn encode(&self) -> Result<(Vec<u8>, Vec<Buffer>)> {
        let (columns, frames) = weft_kernels::codec::encode_columns(&self.columns).map_err(kernel_error)?;
        let header = Header {
            schema: self.schema.as_ref().clone(),
            rows: self.rows,
            columns: columns.to_vec(),
        };
        let bytes =
            postcard::to_stdvec(&header).map_err(|e| FrameError::Partition(format!("device piece header: {e}")))?;
        Ok((bytes, frames))
    }

    /// The batch [`DeviceBatch::encode`] wrote, on whichever device its
    /// frames are (host frames, as a CPU worker receives them, give host
    /// columns).
    pub fn decode(header: &[u8], frames: &[Buffer]) -> Result<Self> {
        let h: Header = postcard::from_bytes(header)
            .map_err(|e| FrameError::Partition(format!("not a device piece header ({} bytes): {e}", header.len())))?;
        let columns = weft_kernels::codec::decode_columns(&h.columns, frames).map_err(kernel_error)?;
        Self::new(Arc::new(h.schema), columns, h.rows)
    }

    /// The batch with every column on `gpu` (copies only host columns).
    pub fn to_device(self, gpu: &Arc<weft_gpu::Gpu>) -> Result<Self> {
        let columns = self
            .columns
            .iter()
            .map(|c| match c.device() {
                weft_gpu::Device::Cpu => c.to_device(gpu).map_err(kernel_error),
                _ => Ok(c.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(self.schema, columns, self.rows)
    }
}
