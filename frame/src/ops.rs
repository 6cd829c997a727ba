//! The ops the frame's graphs call, and what a partition task does: get
//! its starting batch (from its inputs, a file, a join or a generator),
//! run its fused per-partition steps, and return one partition value (or
//! the pieces of a split).
//!
//! | op | args | inputs | result |
//! |---|---|---|---|
//! | `frame.task` | [`TaskArgs`] | partition values | a partition value |
//! | `frame.piece` | `u32` i | one split value | its piece `i` |
//!
//! Graphs name `frame.task` with a label of what the task does
//! ([`task_op`]), so that each kind has its own duration statistics.

use std::fmt::Write;
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_ord::sort::{SortColumn, SortOptions, lexsort_to_indices};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use weft_runtime::ops::OpError;
use weft_runtime::{Registry, Value};

use crate::error::{FrameError, Result};
use crate::eval::{Evaluator, evaluate};
use crate::expr::Expr;
use crate::groupby::{AggSpec, aggregate};
use crate::join::{JoinSpec, JoinType, hash_join};
use crate::partition;

/// The op that runs a partition task.
pub const TASK_OP: &str = "frame.task";
/// The op that picks one piece of a split.
pub const PIECE_OP: &str = "frame.piece";

/// Registers the frame's ops.
pub fn register(registry: &mut Registry) -> &mut Registry {
    registry
        .raw_op(TASK_OP, |ctx, args, inputs| {
            let args: TaskArgs = weft_runtime::ops::decode_args(args)?;
            match ctx.gpu() {
                Some(gpu) => Ok(crate::device::run(gpu, &args, inputs).map_err(op_error)?.0),
                None => partition::encode(&run(&args, inputs).map_err(op_error)?).map_err(op_error),
            }
        })
        .raw_op(PIECE_OP, |_, args, inputs| {
            let i: u32 = weft_runtime::ops::decode_args(args)?;
            let input = inputs
                .first()
                .ok_or_else(|| OpError::BadInput("frame.piece takes one input".into()))?;
            partition::piece(input, i as usize).map_err(op_error)
        })
}

/// A frame error as the runtime reports it: plan and input errors are
/// bad input, the rest failures.
fn op_error(e: FrameError) -> OpError {
    match e {
        FrameError::ColumnNotFound { .. }
        | FrameError::TypeMismatch { .. }
        | FrameError::Unsupported { .. }
        | FrameError::Plan(_)
        | FrameError::Partition(_) => OpError::BadInput(e.to_string()),
        other => OpError::Failed(other.to_string()),
    }
}

/// Where a task's first batch comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// The concatenation of every piece of every input.
    Deps,
    /// Row groups of a Parquet file.
    Parquet {
        /// The file.
        path: String,
        /// Row groups read.
        row_groups: Vec<usize>,
        /// Columns kept (all when `None`).
        columns: Option<Vec<String>>,
        /// Rows kept.
        predicate: Option<Expr>,
    },
    /// A CSV file with a header row.
    Csv {
        /// The file.
        path: String,
        /// Its schema.
        schema: Schema,
    },
    /// Synthetic rows: `key` int64 in `[0, keys)`, `value` float64 in `[0, 1)`.
    Random {
        /// Rows.
        rows: u64,
        /// Distinct keys.
        keys: i64,
        /// Generator seed.
        seed: u64,
    },
    /// A hash join: the probe side is `probe` run on the first
    /// `probe_deps` inputs; the build side is the rest, concatenated.
    Join {
        /// The probe side's task.
        probe: Box<TaskArgs>,
        /// Inputs of the probe side.
        probe_deps: usize,
        /// The probe side is the join's left side.
        probe_is_left: bool,
        /// Keys and kind.
        spec: JoinSpec,
        /// The output schema.
        schema: Schema,
    },
}

/// One per-partition operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// Rows where the predicate holds.
    Filter(Expr),
    /// Exactly these columns.
    Select(Vec<Expr>),
    /// The columns, replaced or extended by these.
    WithColumns(Vec<Expr>),
    /// Group-by aggregation of this partition.
    Aggregate {
        /// Keys.
        keys: Vec<Expr>,
        /// Aggregates.
        aggs: Vec<AggSpec>,
    },
    /// Sort (and keep the first `limit` rows).
    Sort {
        /// Keys.
        by: Vec<Expr>,
        /// Descending, per key.
        descending: Vec<bool>,
        /// Rows kept.
        limit: Option<usize>,
    },
    /// The first `n` rows.
    Limit(usize),
    /// Splits into `n` pieces by the hash of the keys (the last step).
    HashSplit {
        /// Keys.
        keys: Vec<Expr>,
        /// Pieces.
        n: usize,
    },
    /// Splits into `n` contiguous slices (the last step).
    SliceSplit(usize),
    /// The sort keys of a few evenly spaced rows ([`crate::range::sample`]).
    SortSample {
        /// Sort keys.
        by: Vec<Expr>,
        /// Rows sampled.
        rows: usize,
    },
    /// Boundaries of `n` key ranges chosen among concatenated samples
    /// ([`crate::range::boundaries`]).
    SortBoundaries {
        /// Descending, per key.
        descending: Vec<bool>,
        /// Ranges.
        n: usize,
    },
    /// Splits into `n` key ranges by the boundaries in the task's last
    /// input (the others are its data); the last step.
    RangeSplit {
        /// Sort keys.
        by: Vec<Expr>,
        /// Descending, per key.
        descending: Vec<bool>,
        /// Ranges.
        n: usize,
    },
    /// Writes the partition as a Parquet file; the result is its row count.
    WriteParquet(String),
}

/// What a `frame.task` does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskArgs {
    /// The starting batch.
    pub input: Input,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// The op name of a task running `args`: [`TASK_OP`] labelled with what it
/// does (`frame.task#join(scan lineitem)|agg`), so that the scheduler
/// estimates, and the worker decides whether to run inline, each kind of
/// task from its own durations (see `weft_runtime::Registry`).
pub fn task_op(args: &TaskArgs) -> String {
    let mut op = format!("{TASK_OP}#");
    label(args, &mut op);
    op
}

/// Appends what a task does: its input (the table a file is in), then its
/// steps that cost more than a pass over the batch.
fn label(args: &TaskArgs, out: &mut String) {
    let table = |path: &str| {
        let path = std::path::Path::new(path);
        let dir = path.parent().and_then(|d| d.file_name());
        dir.or_else(|| path.file_stem())
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match &args.input {
        Input::Deps => out.push_str("concat"),
        Input::Parquet { path, .. } => {
            let _ = write!(out, "scan {}", table(path));
        }
        Input::Csv { path, .. } => {
            let _ = write!(out, "csv {}", table(path));
        }
        Input::Random { .. } => out.push_str("random"),
        Input::Join { probe, .. } => {
            out.push_str("join(");
            label(probe, out);
            out.push(')');
        }
    }
    for step in &args.steps {
        let name = match step {
            Step::Filter(_) => "filter",
            Step::Aggregate { .. } => "agg",
            Step::Sort { .. } => "sort",
            Step::HashSplit { .. } | Step::SliceSplit(_) | Step::RangeSplit { .. } => "split",
            Step::SortSample { .. } => "sample",
            Step::SortBoundaries { .. } => "bounds",
            Step::WriteParquet(_) => "write",
            Step::Select(_) | Step::WithColumns(_) | Step::Limit(_) => continue,
        };
        out.push('|');
        out.push_str(name);
    }
}

/// Runs a task on its inputs; returns its pieces (one unless split).
pub fn run(args: &TaskArgs, inputs: &[Arc<Value>]) -> Result<Vec<RecordBatch>> {
    let (inputs, boundaries) = split_boundaries(args, inputs)?;
    let mut steps = args.steps.iter().enumerate();
    let mut batch = match (&args.input, args.steps.first()) {
        // A scan, then an aggregate: the aggregate applies the scan's
        // filter (see `aggregate_where`), and its string keys are read as
        // dictionaries.
        (
            Input::Parquet {
                path,
                row_groups,
                columns,
                predicate,
            },
            Some(Step::Aggregate { keys, aggs }),
        ) => {
            steps.next();
            crate::broadcast::forget_released();
            let inputs: Vec<String> = aggs.iter().flat_map(|a| a.input.columns()).collect();
            let dictionaries: Vec<String> = keys
                .iter()
                .filter_map(|k| match k {
                    Expr::Column(name) if !inputs.contains(name) => Some(name.clone()),
                    _ => None,
                })
                .collect();
            let (batch, filter) = crate::io::read_parquet_unfiltered(
                path,
                row_groups,
                columns.as_deref(),
                predicate.as_ref(),
                &dictionaries,
            )?;
            match filter {
                Some(p) => crate::groupby::aggregate_where(&batch, &p, keys, aggs)?,
                None => aggregate(&batch, keys, aggs)?,
            }
        }
        (input, _) => start(input, inputs)?,
    };
    for (i, step) in steps {
        match step {
            Step::RangeSplit { .. } | Step::HashSplit { .. } | Step::SliceSplit(_) => {
                check_last(i, args)?;
                return split(step, &batch, boundaries);
            }
            step => batch = apply(step, batch)?,
        }
    }
    Ok(vec![batch])
}

/// A task's data inputs, and the boundaries input of a range split.
pub(crate) type Inputs<'a> = (&'a [Arc<Value>], Option<&'a Arc<Value>>);

/// The task's data inputs, and the boundaries input of a range split (its last).
pub(crate) fn split_boundaries<'a>(args: &TaskArgs, inputs: &'a [Arc<Value>]) -> Result<Inputs<'a>> {
    match (args.steps.last(), inputs.split_last()) {
        (Some(Step::RangeSplit { .. }), Some((last, data))) => Ok((data, Some(last))),
        (Some(Step::RangeSplit { .. }), None) => {
            Err(FrameError::Partition("a range split without its boundaries".into()))
        }
        _ => Ok((inputs, None)),
    }
}

/// The pieces of a splitting step (the task's last).
pub(crate) fn split(step: &Step, batch: &RecordBatch, boundaries: Option<&Arc<Value>>) -> Result<Vec<RecordBatch>> {
    match step {
        Step::RangeSplit { by, descending, n } => {
            let boundaries = concat_inputs(boundaries.map(std::slice::from_ref).unwrap_or_default())?;
            crate::range::range_split(batch, by, descending, &boundaries, *n)
        }
        Step::HashSplit { keys, n } => crate::shuffle::hash_split(batch, keys, *n),
        Step::SliceSplit(n) => {
            let n = (*n).max(1);
            let rows = batch.num_rows();
            Ok((0..n)
                .map(|j| {
                    let (lo, hi) = (j * rows / n, (j + 1) * rows / n);
                    batch.slice(lo, hi - lo)
                })
                .collect())
        }
        _ => Err(FrameError::Plan("not a split step".into())),
    }
}

pub(crate) fn check_last(i: usize, args: &TaskArgs) -> Result<()> {
    if i + 1 == args.steps.len() {
        Ok(())
    } else {
        Err(FrameError::Plan("a split must be a task's last step".into()))
    }
}

fn concat_inputs(inputs: &[Arc<Value>]) -> Result<RecordBatch> {
    let mut batches = Vec::new();
    for v in inputs {
        batches.extend(partition::decode(v)?);
    }
    match batches.len() {
        0 => Err(FrameError::Partition("a task over no partitions".into())),
        1 => Ok(batches.pop().expect("one batch")),
        _ => {
            let schema = batches[0].schema();
            Ok(arrow_select::concat::concat_batches(&schema, &batches)?)
        }
    }
}

pub(crate) fn start(input: &Input, inputs: &[Arc<Value>]) -> Result<RecordBatch> {
    crate::broadcast::forget_released();
    match input {
        Input::Deps => concat_inputs(inputs),
        Input::Parquet {
            path,
            row_groups,
            columns,
            predicate,
        } => crate::io::read_parquet(path, row_groups, columns.as_deref(), predicate.as_ref(), None),
        Input::Csv { path, schema } => crate::io::read_csv(path, Arc::new(schema.clone())),
        Input::Random { rows, keys, seed } => Ok(random_batch(*rows, *keys, *seed)),
        Input::Join {
            probe,
            probe_deps,
            probe_is_left,
            spec,
            schema,
        } => {
            if *probe_deps >= inputs.len() {
                return Err(FrameError::Partition(format!(
                    "a join task with {} inputs, {probe_deps} of them the probe side",
                    inputs.len()
                )));
            }
            // The table goes on the built side when the spec says so (as
            // the planner does for broadcasts); only then is it kept.
            let build_left = spec.build_left && spec.how == JoinType::Inner;
            let table_on_built = build_left != *probe_is_left;
            let (key, probe_key) = match probe_is_left {
                true => (&spec.right_on, &spec.left_on),
                false => (&spec.left_on, &spec.right_on),
            };
            let built = crate::broadcast::build_side(&inputs[*probe_deps..], key, concat_inputs)?;
            let index = built.index.as_ref().filter(|_| table_on_built);
            let probed = match &probe.input {
                // A scan whose rows without a match the join drops skips
                // them while reading.
                Input::Parquet {
                    path,
                    row_groups,
                    columns,
                    predicate,
                } if probe.steps.is_empty()
                    && (spec.how == JoinType::Inner || (spec.how == JoinType::Semi && *probe_is_left)) =>
                {
                    let keys = crate::broadcast::KeyFilter::new(&built, probe_key);
                    crate::io::read_parquet(path, row_groups, columns.as_deref(), predicate.as_ref(), keys.as_ref())?
                }
                _ => run(probe, &inputs[..*probe_deps])?
                    .pop()
                    .ok_or_else(|| FrameError::Plan("a join's probe side is split".into()))?,
            };
            let schema = Arc::new(schema.clone());
            if *probe_is_left {
                hash_join(&probed, &built.batch, spec, schema, index)
            } else {
                hash_join(&built.batch, &probed, spec, schema, index)
            }
        }
    }
}

/// The benchmark frames' partition: `rows` rows from generator `seed`.
pub fn random_batch(rows: u64, keys: i64, seed: u64) -> RecordBatch {
    let mut rng = fastrand::Rng::with_seed(seed);
    let n = rows as usize;
    let key: Vec<i64> = (0..n).map(|_| rng.i64(0..keys.max(1))).collect();
    let value: Vec<f64> = (0..n).map(|_| rng.f64()).collect();
    let schema = Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(Int64Array::from(key)), Arc::new(Float64Array::from(value))],
    )
    .expect("two columns of the schema's types and one length")
}

/// Applies one non-splitting step.
pub fn apply(step: &Step, batch: RecordBatch) -> Result<RecordBatch> {
    Ok(match step {
        Step::Filter(p) => crate::eval::filter(&batch, p)?,
        Step::Select(exprs) => select(&batch, exprs)?,
        Step::WithColumns(exprs) => {
            let schema = crate::plan::with_columns_schema(batch.schema_ref(), exprs)?;
            let mut columns = batch.columns().to_vec();
            let mut evaluator = Evaluator::new(&batch);
            for e in exprs {
                let a = evaluator.evaluate(e)?;
                let name = e.output_name();
                match batch.schema_ref().index_of(&name) {
                    Ok(i) => columns[i] = a,
                    Err(_) => columns.push(a),
                }
            }
            RecordBatch::try_new(Arc::new(schema), columns)?
        }
        Step::Aggregate { keys, aggs } => aggregate(&batch, keys, aggs)?,
        Step::Sort { by, descending, limit } => sort(&batch, by, descending, *limit)?,
        Step::Limit(n) => batch.slice(0, (*n).min(batch.num_rows())),
        Step::WriteParquet(path) => {
            let rows = crate::io::write_parquet(&batch, path)?;
            let schema = Schema::new(vec![Field::new("rows", DataType::Int64, false)]);
            RecordBatch::try_new(Arc::new(schema), vec![Arc::new(Int64Array::from(vec![rows as i64]))])?
        }
        Step::SortSample { by, rows } => crate::range::sample(&batch, by, *rows)?,
        Step::SortBoundaries { descending, n } => crate::range::boundaries(&batch, descending, *n)?,
        Step::HashSplit { .. } | Step::SliceSplit(_) | Step::RangeSplit { .. } => {
            return Err(FrameError::Plan("a split must be a task's last step".into()));
        }
    })
}

/// The batch's columns computed by `exprs`.
pub fn select(batch: &RecordBatch, exprs: &[Expr]) -> Result<RecordBatch> {
    let mut fields = Vec::with_capacity(exprs.len());
    let mut columns = Vec::with_capacity(exprs.len());
    let mut evaluator = Evaluator::new(batch);
    for e in exprs {
        let a = evaluator.evaluate(e)?;
        let nullable = match e.unaliased() {
            Expr::Column(c) => batch
                .schema_ref()
                .field_with_name(c)
                .map(|f| f.is_nullable())
                .unwrap_or(true),
            _ => true,
        };
        fields.push(Field::new(e.output_name(), a.data_type().clone(), nullable));
        columns.push(a);
    }
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &options,
    )?)
}

/// The batch sorted by `by` (nulls last), cut to `limit` rows.
pub fn sort(batch: &RecordBatch, by: &[Expr], descending: &[bool], limit: Option<usize>) -> Result<RecordBatch> {
    let columns = by
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Ok(SortColumn {
                values: evaluate(e, batch)?,
                options: Some(SortOptions {
                    descending: descending.get(i).copied().unwrap_or(false),
                    nulls_first: false,
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let indices = lexsort_to_indices(&columns, limit)?;
    Ok(arrow_select::take::take_record_batch(batch, &indices)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{col, lit};
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;

    #[test]
    fn a_task_is_labelled_by_its_input_and_costly_steps() {
        let scan = TaskArgs {
            input: Input::Parquet {
                path: "/data/lineitem/lineitem.1.parquet".into(),
                row_groups: vec![0],
                columns: None,
                predicate: None,
            },
            steps: vec![Step::Filter(lit(true)), Step::Limit(3)],
        };
        assert_eq!(task_op(&scan), "frame.task#scan lineitem|filter");
        let join = TaskArgs {
            input: Input::Join {
                probe: Box::new(scan),
                probe_deps: 0,
                probe_is_left: true,
                spec: JoinSpec {
                    left_on: vec!["k".into()],
                    right_on: vec!["k".into()],
                    how: JoinType::Inner,
                    build_left: false,
                },
                schema: Schema::empty(),
            },
            steps: vec![Step::HashSplit { keys: vec![], n: 4 }],
        };
        assert_eq!(task_op(&join), "frame.task#join(scan lineitem|filter)|split");
        let concat = TaskArgs {
            input: Input::Deps,
            steps: vec![],
        };
        assert_eq!(task_op(&concat), "frame.task#concat");
    }

    #[test]
    fn steps_fuse_in_one_task() {
        let args = TaskArgs {
            input: Input::Random {
                rows: 1000,
                keys: 10,
                seed: 3,
            },
            steps: vec![
                Step::Filter(col("key").lt(lit(5))),
                Step::WithColumns(vec![(col("value") * lit(2)).alias("twice")]),
                Step::Sort {
                    by: vec![col("key"), col("twice")],
                    descending: vec![true, false],
                    limit: Some(10),
                },
            ],
        };
        let out = run(&args, &[]).unwrap();
        assert_eq!(out.len(), 1);
        let b = &out[0];
        assert_eq!(b.num_rows(), 10);
        assert_eq!(b.schema().fields().len(), 3);
        let keys = b.column(0).as_primitive::<Int64Type>();
        assert!(keys.iter().all(|k| k == Some(4)));
        let twice = b.column(2).as_primitive::<arrow_array::types::Float64Type>().values();
        assert!(twice.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn splits_make_pieces_and_a_registry_runs_them() {
        let mut registry = Registry::empty();
        register(&mut registry);
        let args = TaskArgs {
            input: Input::Random {
                rows: 100,
                keys: 7,
                seed: 1,
            },
            steps: vec![Step::HashSplit {
                keys: vec![col("key")],
                n: 4,
            }],
        };
        let site = weft_runtime::ops::Site::default();
        let key = weft_runtime::Key::from("t");
        let ctx = weft_runtime::ops::OpContext::new(&site, &key);
        let op = registry.get(TASK_OP).unwrap();
        let split = Arc::new(op(&ctx, &weft_runtime::ops::args(&args).unwrap(), &[]).unwrap());
        assert_eq!(partition::header(&split).unwrap().rows().iter().sum::<u64>(), 100);
        let piece = registry.get(PIECE_OP).unwrap();
        let p0 = Arc::new(
            piece(
                &ctx,
                &weft_runtime::ops::args(&0u32).unwrap(),
                std::slice::from_ref(&split),
            )
            .unwrap(),
        );
        let p1 = Arc::new(piece(&ctx, &weft_runtime::ops::args(&1u32).unwrap(), &[split]).unwrap());
        let concat = TaskArgs {
            input: Input::Deps,
            steps: vec![],
        };
        let both = op(
            &ctx,
            &weft_runtime::ops::args(&concat).unwrap(),
            &[p0.clone(), p1.clone()],
        )
        .unwrap();
        let rows = |v: &Value| partition::header(v).unwrap().rows().iter().sum::<u64>();
        assert_eq!(rows(&both), rows(&p0) + rows(&p1));
        let bad = op(&ctx, &weft_runtime::ops::args(&concat).unwrap(), &[]).unwrap_err();
        assert!(bad.to_string().contains("no partitions"), "{bad}");
    }
}
