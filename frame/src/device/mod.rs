//! Partitions on a GPU worker: a task's batch lives in device memory as
//! `weft-kernels` columns ([`DeviceBatch`]) and its steps run there
//! ([`steps`], group-by in [`aggregate`], expressions in [`eval`]); its
//! result stays on the device as a value of device frames
//! ([`crate::partition::Layout::Columns`]), which `collect()` (and any CPU
//! worker) decodes to a host batch.
//!
//! What runs on the host instead, explicitly, and why (each is reported as
//! a [`Placement::Host`] with its reason, and the batch goes back to the
//! device after it where its types allow):
//! - inputs: Parquet, CSV and random partitions are made on the host and
//!   uploaded once; input pieces are concatenated on the device, unless one
//!   has a type the kernels lack or their schemas differ; a join runs on the
//!   device when both sides are device batches joined on integer, date or
//!   same-scale decimal keys ([`steps::join`]; several keys whose value
//!   ranges do not fit one int64 together, and a left join's utf8 or
//!   boolean columns from an empty right side, aside), otherwise on the
//!   host;
//! - steps: range splits and their samples and boundaries, slice splits
//!   and Parquet writes (small or host-bound work); and any filter, select,
//!   sort, limit, aggregation or hash split whose expression, key or
//!   aggregate the kernels lack (see [`eval`], [`steps`], [`aggregate`]):
//!   comparisons of two utf8 columns, utf8 results of
//!   `when/then/otherwise`, casts other than to int64 or float64, an
//!   integer division by a zero divisor (the host reports the error);
//!   boolean, unsigned or float32 sort and group keys; aggregates of
//!   booleans, unsigned or float32 values; a decimal sum that could pass
//!   18 digits;
//! - a partition with a type the kernels lack (decimals over 18 digits,
//!   timestamps, nested types; [`storage_type`]) stays on the host for the
//!   task.

pub mod aggregate;
mod batch;
pub mod eval;
mod order;
pub mod steps;

use std::sync::Arc;

use arrow_array::RecordBatch;
use weft_gpu::Gpu;
use weft_runtime::Value;

pub use batch::{DeviceBatch, storage_type};
use eval::Outcome;

use crate::error::{FrameError, Result};
use crate::ops::{Input, Step, TaskArgs};
use crate::partition::{Header, Layout, Piece};

/// Where one stage of a task ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the device.
    Device,
    /// On the host, for this reason.
    Host(String),
}

/// A task's batch between steps.
enum Part {
    Host(RecordBatch),
    Device(DeviceBatch),
}

impl Part {
    fn host(&self) -> Result<RecordBatch> {
        match self {
            Part::Host(b) => Ok(b.clone()),
            Part::Device(d) => d.download(),
        }
    }
}

/// `batch` on the device where its types allow (the reason otherwise).
fn upload(batch: RecordBatch, gpu: &Arc<Gpu>) -> Result<(Part, Option<String>)> {
    let schema = batch.schema();
    for f in schema.fields() {
        if let Err(e) = storage_type(f.data_type()) {
            return Ok((Part::Host(batch), Some(format!("column {:?}: {e}", f.name()))));
        }
    }
    Ok((Part::Device(DeviceBatch::upload(&batch, gpu)?), None))
}

/// Runs a task on `gpu`: its result value (device pieces where they ran on
/// the device) and where the input and each step ran.
pub fn run(gpu: &Arc<Gpu>, args: &TaskArgs, inputs: &[Arc<Value>]) -> Result<(Value, Vec<Placement>)> {
    let mut placements = Vec::with_capacity(args.steps.len() + 1);
    let parts = run_parts(gpu, args, inputs, &mut placements)?;
    Ok((encode(parts)?, placements))
}

/// [`run`] before encoding: the task's pieces.
fn run_parts(
    gpu: &Arc<Gpu>,
    args: &TaskArgs,
    inputs: &[Arc<Value>],
    placements: &mut Vec<Placement>,
) -> Result<Vec<Part>> {
    let (data, boundaries) = crate::ops::split_boundaries(args, inputs)?;
    let mut part = start(gpu, &args.input, data, placements)?;
    for (i, step) in args.steps.iter().enumerate() {
        let last = i + 1 == args.steps.len();
        if matches!(
            step,
            Step::HashSplit { .. } | Step::RangeSplit { .. } | Step::SliceSplit(_)
        ) {
            crate::ops::check_last(i, args)?;
            let why = match (&part, step) {
                (Part::Device(d), Step::HashSplit { keys, n }) => match steps::hash_split(d, keys, *n) {
                    Ok(pieces) => {
                        placements.push(Placement::Device);
                        return Ok(pieces.into_iter().map(Part::Device).collect());
                    }
                    Err(Outcome::Host(why)) => why,
                    Err(Outcome::Failed(e)) => return Err(e),
                },
                (Part::Device(_), _) => "range and slice splits run on the host".into(),
                (Part::Host(_), _) => "a split of a host batch".into(),
            };
            placements.push(Placement::Host(why));
            let pieces = crate::ops::split(step, &part.host()?, boundaries)?;
            return Ok(pieces.into_iter().map(Part::Host).collect());
        }
        let on_device = match &part {
            Part::Device(d) => device_step(step, d, gpu),
            Part::Host(_) => Err(Outcome::Host("the batch is on the host".into())),
        };
        part = match on_device {
            Ok(d) => {
                placements.push(Placement::Device);
                Part::Device(d)
            }
            Err(Outcome::Failed(e)) => return Err(e),
            Err(Outcome::Host(why)) => {
                let out = crate::ops::apply(step, part.host()?)?;
                placements.push(Placement::Host(why));
                if last && matches!(step, Step::WriteParquet(_)) {
                    Part::Host(out)
                } else {
                    upload(out, gpu)?.0
                }
            }
        };
    }
    Ok(vec![part])
}

/// The task's first batch: a device input piece as it is; a join of two
/// device batches on the device where the kernels allow; anything else
/// made on the host and uploaded.
fn start(gpu: &Arc<Gpu>, input: &Input, data: &[Arc<Value>], placements: &mut Vec<Placement>) -> Result<Part> {
    match (input, data) {
        (Input::Deps, data) if !data.is_empty() => match device_pieces(data, gpu)? {
            Some((batch, uploaded)) => {
                placements.push(match uploaded {
                    true => Placement::Host("input pieces from the host, uploaded".into()),
                    false => Placement::Device,
                });
                Ok(Part::Device(batch))
            }
            None => {
                let (part, unsupported) = upload(crate::ops::start(input, data)?, gpu)?;
                let why = "input pieces of types the kernels lack or of different schemas, concatenated on the host";
                placements.push(Placement::Host(unsupported.unwrap_or_else(|| why.into())));
                Ok(part)
            }
        },
        (
            Input::Join {
                probe,
                probe_deps,
                probe_is_left,
                spec,
                schema,
            },
            data,
        ) if *probe_deps < data.len() => {
            // The two sides' own placements are not the task's stages.
            let mut sides = Vec::new();
            let mut probed = run_parts(gpu, probe, &data[..*probe_deps], &mut sides)?;
            let probed = match (probed.pop(), probed.is_empty()) {
                (Some(p), true) => p,
                _ => return Err(FrameError::Plan("a join's probe side is split".into())),
            };
            let built = start(gpu, &Input::Deps, &data[*probe_deps..], &mut sides)?;
            let (left, right) = if *probe_is_left {
                (probed, built)
            } else {
                (built, probed)
            };
            let why = match (&left, &right) {
                (Part::Device(l), Part::Device(r)) => match steps::join(l, r, spec, schema) {
                    Ok(d) => {
                        placements.push(Placement::Device);
                        return Ok(Part::Device(d));
                    }
                    Err(Outcome::Host(why)) => why,
                    Err(Outcome::Failed(e)) => return Err(e),
                },
                _ => "a join of a host batch".into(),
            };
            let joined = crate::join::hash_join(&left.host()?, &right.host()?, spec, Arc::new(schema.clone()), None)?;
            let (part, unsupported) = upload(joined, gpu)?;
            placements.push(Placement::Host(unsupported.unwrap_or(why)));
            Ok(part)
        }
        (input, data) => {
            let why = match input {
                Input::Deps => "host or several input pieces, concatenated on the host",
                _ => "input read on the host",
            };
            let (part, unsupported) = upload(crate::ops::start(input, data)?, gpu)?;
            placements.push(Placement::Host(unsupported.unwrap_or_else(|| why.to_string())));
            Ok(part)
        }
    }
}

/// A step on the device, or why it must run on the host.
fn device_step(step: &Step, d: &DeviceBatch, gpu: &Arc<Gpu>) -> eval::Eval<DeviceBatch> {
    match step {
        Step::Filter(p) => steps::filter_rows(d, p),
        Step::Select(exprs) => steps::select(d, exprs),
        Step::WithColumns(exprs) => steps::with_columns(d, exprs),
        Step::Limit(n) => steps::limit(d, *n),
        Step::Sort { by, descending, limit } => steps::sort_rows(d, by, descending, *limit),
        Step::Aggregate { keys, aggs } => aggregate::aggregate(d, keys, aggs, gpu),
        Step::SortSample { .. } | Step::SortBoundaries { .. } => {
            Err(Outcome::Host("sort sampling works on small host batches".into()))
        }
        Step::WriteParquet(_) => Err(Outcome::Host("Parquet is written from host memory".into())),
        Step::HashSplit { .. } | Step::RangeSplit { .. } | Step::SliceSplit(_) => Err(Outcome::Failed(
            FrameError::Plan("a split must be a task's last step".into()),
        )),
    }
}

/// Every piece of `inputs` on `gpu`, concatenated there, and whether any
/// was a host piece (uploaded); none where a piece has a type the kernels
/// lack or the pieces' schemas differ.
fn device_pieces(inputs: &[Arc<Value>], gpu: &Arc<Gpu>) -> Result<Option<(DeviceBatch, bool)>> {
    let mut pieces = Vec::new();
    let mut uploaded = false;
    for value in inputs {
        let h = crate::partition::header(value)?;
        let mut at = 0usize;
        for p in &h.pieces {
            let end = at + p.frames as usize;
            let frames = value.frames.get(at..end).ok_or_else(|| {
                FrameError::Partition(format!("{} frames, a piece needs {at}..{end}", value.frames.len()))
            })?;
            at = end;
            pieces.push(match p.layout {
                Layout::Columns => DeviceBatch::decode(&p.batch, frames)?.to_device(gpu)?,
                Layout::Arrow => {
                    let batch = weft_kernels::codec::decode_batch(&p.batch, frames)
                        .map_err(|e| FrameError::Partition(e.to_string()))?;
                    match upload(batch, gpu)?.0 {
                        Part::Device(d) => {
                            uploaded = true;
                            d
                        }
                        Part::Host(_) => return Ok(None),
                    }
                }
            });
        }
    }
    let Some(first) = pieces.first() else {
        return Ok(None);
    };
    let schema = first.schema().clone();
    if pieces.len() == 1 {
        return Ok(pieces.pop().map(|p| (p, uploaded)));
    }
    if pieces.iter().any(|p| p.schema().fields() != schema.fields()) {
        return Ok(None);
    }
    let columns = (0..schema.fields().len())
        .map(|i| {
            let parts: Vec<&weft_kernels::Column> = pieces.iter().map(|p| &p.columns()[i]).collect();
            weft_kernels::concat::concat(&parts).map_err(batch::kernel_error)
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = pieces.iter().map(DeviceBatch::num_rows).sum();
    Ok(Some((DeviceBatch::new(schema, columns, rows)?, uploaded)))
}

/// A partition value of `parts`: device pieces in the column layout, host
/// pieces as Arrow arrays.
fn encode(parts: Vec<Part>) -> Result<Value> {
    let mut header = Header { pieces: Vec::new() };
    let mut frames = Vec::new();
    for part in parts {
        let (rows, batch, f, layout) = match part {
            Part::Device(d) => {
                let (h, f) = d.encode()?;
                (d.num_rows(), h, f, Layout::Columns)
            }
            Part::Host(b) => {
                let (h, f) = weft_kernels::codec::encode_batch(&b).map_err(|e| FrameError::Partition(e.to_string()))?;
                (b.num_rows(), h.to_vec(), f, Layout::Arrow)
            }
        };
        header.pieces.push(Piece {
            rows: rows as u64,
            batch,
            frames: f.len() as u32,
            layout,
        });
        frames.extend(f);
    }
    let mut value = Value::encode(&header).map_err(FrameError::Partition)?;
    value.frames = frames;
    Ok(value)
}
