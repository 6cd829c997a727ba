//! The user-facing API: [`Frames`] opens data on a cluster, a
//! [`LazyFrame`] builds a plan, and its actions (`collect`, `count`,
//! `write_parquet`, `persist`) optimise it, lower it to one graph and
//! submit it in one message.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use weft_runtime::{Client, TaskFuture, Value};

use crate::error::{FrameError, Result};
use crate::expr::Expr;
use crate::groupby::AggSpec;
use crate::join::{JoinSpec, JoinType};
use crate::optimize::optimize;
use crate::partition;
use crate::physical::{Action, Lowering, PlanOptions, ShuffleRun};
use crate::plan::{LogicalPlan, Source};

/// Dataframes on one cluster: where frames start.
#[derive(Clone)]
pub struct Frames {
    client: Client,
    options: PlanOptions,
    per_file: bool,
}

impl Frames {
    /// Frames over the cluster `client` is connected to (its workers must
    /// have the ops of [`crate::register`]).
    pub fn new(client: Client) -> Self {
        Frames {
            client,
            options: PlanOptions::default(),
            per_file: false,
        }
    }

    /// The planner's choices (broadcast threshold, tree fan-in).
    pub fn with_options(mut self, options: PlanOptions) -> Self {
        self.options = options;
        self
    }

    /// Parquet scans make one partition per file instead of per row group.
    pub fn partition_per_file(mut self, on: bool) -> Self {
        self.per_file = on;
        self
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The planner's choices.
    pub fn options(&self) -> &PlanOptions {
        &self.options
    }

    fn frame(&self, plan: LogicalPlan) -> LazyFrame {
        LazyFrame {
            frames: self.clone(),
            plan: Arc::new(plan),
            error: None,
        }
    }

    fn scan(&self, source: Source, schema: SchemaRef) -> LazyFrame {
        self.frame(LogicalPlan::Scan {
            source,
            schema,
            projection: None,
            filters: Vec::new(),
        })
    }

    /// Parquet files: a file, a directory of `.parquet` files, or a `*`
    /// pattern in the last path component. Reads the footers now (errors
    /// name the file); the data is read by the workers.
    pub fn read_parquet(&self, path: &str) -> Result<LazyFrame> {
        let dataset = crate::io::open_parquet(path)?;
        let schema = dataset.schema.clone();
        Ok(self.scan(
            Source::Parquet {
                dataset: Arc::new(dataset),
                per_file: self.per_file,
            },
            schema,
        ))
    }

    /// CSV files with a header row, one partition each; the schema is
    /// inferred from the first file.
    pub fn read_csv(&self, path: &str) -> Result<LazyFrame> {
        let files = crate::io::list_files(path, ".csv")?;
        let schema = Arc::new(crate::io::infer_csv_schema(&files[0])?);
        Ok(self.scan(Source::Csv { files }, schema))
    }

    /// A frame of `batches` (one schema), cut into `partitions` partitions
    /// of about equal rows and scattered to the workers.
    pub async fn from_batches(&self, batches: Vec<RecordBatch>, partitions: usize) -> Result<LazyFrame> {
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| FrameError::Plan("from_batches of no batches".into()))?;
        let all = arrow_select::concat::concat_batches(&schema, &batches)?;
        let n = partitions.max(1);
        let rows = all.num_rows();
        let values = (0..n)
            .map(|i| partition::encode(&[all.slice(i * rows / n, (i + 1) * rows / n - i * rows / n)]))
            .collect::<Result<Vec<Value>>>()?;
        let futures = self.client.scatter(values).await?;
        Ok(self.persisted(futures, schema, rows as u64))
    }

    fn persisted(&self, futures: Vec<TaskFuture>, schema: SchemaRef, rows: u64) -> LazyFrame {
        let keys = futures.iter().map(|f| f.key().clone()).collect();
        self.scan(
            Source::Partitions {
                keys,
                rows,
                hold: Arc::new(futures),
            },
            schema,
        )
    }

    /// The benchmarks' frame, made on the workers: `rows` rows in `parts`
    /// partitions, `key` int64 uniform in `[0, keys)`, `value` float64 in
    /// `[0, 1)`, partition `i` from seed `i` (see [`crate::ops::random_batch`]).
    pub fn random(&self, rows: u64, parts: usize, keys: i64) -> LazyFrame {
        let schema = crate::ops::random_batch(0, 1, 0).schema();
        self.scan(
            Source::Random {
                rows,
                parts: parts.max(1),
                keys,
            },
            schema,
        )
    }
}

/// A lazy dataframe: a plan, run by its actions.
#[derive(Clone)]
pub struct LazyFrame {
    frames: Frames,
    plan: Arc<LogicalPlan>,
    /// An error found while building (an aggregate that is not one).
    error: Option<Arc<str>>,
}

/// A `group_by` waiting for its aggregates.
pub struct GroupBy {
    frame: LazyFrame,
    keys: Vec<Expr>,
    split_out: Option<usize>,
}

impl GroupBy {
    /// Output partitions: 1 (the default) merges partial results in a
    /// tree; more shuffles them on the keys (for many groups).
    pub fn split_out(mut self, n: usize) -> Self {
        self.split_out = Some(n);
        self
    }

    /// The aggregates, such as `col("x").sum().alias("total")`.
    pub fn agg(self, aggs: impl IntoIterator<Item = Expr>) -> LazyFrame {
        let specs: Result<Vec<AggSpec>> = aggs.into_iter().map(|a| AggSpec::from_expr(&a)).collect();
        self.frame.then_try(|input| {
            Ok(LogicalPlan::Aggregate {
                input,
                keys: self.keys,
                aggs: specs?,
                split_out: self.split_out,
                partial_input: false,
            })
        })
    }
}

impl LazyFrame {
    fn then(&self, plan: LogicalPlan) -> LazyFrame {
        LazyFrame {
            frames: self.frames.clone(),
            plan: Arc::new(plan),
            error: self.error.clone(),
        }
    }

    fn then_try(&self, f: impl FnOnce(Arc<LogicalPlan>) -> Result<LogicalPlan>) -> LazyFrame {
        match f(self.plan.clone()) {
            Ok(p) => self.then(p),
            Err(e) => LazyFrame {
                frames: self.frames.clone(),
                plan: self.plan.clone(),
                error: Some(self.error.clone().unwrap_or_else(|| e.to_string().into())),
            },
        }
    }

    fn check(&self) -> Result<SchemaRef> {
        if let Some(e) = &self.error {
            return Err(FrameError::Plan(e.to_string()));
        }
        self.plan.schema()
    }

    /// The logical plan.
    pub fn plan(&self) -> &Arc<LogicalPlan> {
        &self.plan
    }

    /// The output schema; an error names a missing column or mismatched types.
    pub fn schema(&self) -> Result<SchemaRef> {
        self.check()
    }

    /// Rows where `predicate` holds.
    pub fn filter(&self, predicate: Expr) -> LazyFrame {
        self.then(LogicalPlan::Filter {
            input: self.plan.clone(),
            predicate,
        })
    }

    /// Exactly these columns; if they are all aggregates, one row of them
    /// over the whole frame.
    pub fn select(&self, exprs: impl IntoIterator<Item = Expr>) -> LazyFrame {
        let exprs: Vec<Expr> = exprs.into_iter().collect();
        if !exprs.is_empty() && exprs.iter().all(Expr::has_agg) {
            return GroupBy {
                frame: self.clone(),
                keys: Vec::new(),
                split_out: None,
            }
            .agg(exprs);
        }
        self.then(LogicalPlan::Select {
            input: self.plan.clone(),
            exprs,
        })
    }

    /// The columns, replaced or extended by `exprs`.
    pub fn with_columns(&self, exprs: impl IntoIterator<Item = Expr>) -> LazyFrame {
        self.then(LogicalPlan::WithColumns {
            input: self.plan.clone(),
            exprs: exprs.into_iter().collect(),
        })
    }

    /// Groups by `keys` (column expressions), for `agg`.
    pub fn group_by(&self, keys: impl IntoIterator<Item = Expr>) -> GroupBy {
        GroupBy {
            frame: self.clone(),
            keys: keys.into_iter().collect(),
            split_out: None,
        }
    }

    /// Joins with `other` where `left_on` equals `right_on`, pairwise.
    pub fn join(&self, other: &LazyFrame, left_on: &[&str], right_on: &[&str], how: JoinType) -> LazyFrame {
        self.then(LogicalPlan::Join {
            left: self.plan.clone(),
            right: other.plan.clone(),
            spec: JoinSpec {
                left_on: left_on.iter().map(|s| s.to_string()).collect(),
                right_on: right_on.iter().map(|s| s.to_string()).collect(),
                how,
                build_left: false,
            },
        })
    }

    /// Sorted by `by`, each ascending or (`descending[i]`) descending; nulls last.
    pub fn sort(&self, by: impl IntoIterator<Item = Expr>, descending: &[bool]) -> LazyFrame {
        self.then(LogicalPlan::Sort {
            input: self.plan.clone(),
            by: by.into_iter().collect(),
            descending: descending.to_vec(),
        })
    }

    /// The first `n` rows (after a sort: the top `n`).
    pub fn head(&self, n: usize) -> LazyFrame {
        self.then(LogicalPlan::Limit {
            input: self.plan.clone(),
            n,
        })
    }

    /// Distinct rows.
    pub fn distinct(&self) -> LazyFrame {
        self.then(LogicalPlan::Distinct {
            input: self.plan.clone(),
        })
    }

    /// This frame's partitions followed by `others`' (one schema).
    pub fn concat(&self, others: &[LazyFrame]) -> LazyFrame {
        let mut inputs = vec![self.plan.clone()];
        inputs.extend(others.iter().map(|o| o.plan.clone()));
        self.then(LogicalPlan::Concat { inputs })
    }

    /// `n` partitions: adjacent ones merged, or each sliced.
    pub fn repartition(&self, n: usize) -> LazyFrame {
        self.then(LogicalPlan::Repartition {
            input: self.plan.clone(),
            n,
        })
    }

    /// `n` partitions by the hash of `keys` (equal keys in one partition).
    pub fn shuffle(&self, keys: impl IntoIterator<Item = Expr>, n: usize) -> LazyFrame {
        self.then(LogicalPlan::Shuffle {
            input: self.plan.clone(),
            keys: keys.into_iter().collect(),
            n,
        })
    }

    /// Runs the plan: optimised, each group-by's strategy chosen (its
    /// partial results computed), lowered to one graph and computed, as a
    /// new run of its shuffles over the workers still there whenever one
    /// owning a shuffle's outputs is lost. Returns the outputs' futures,
    /// all done, and the plan, which holds the partial results: keep it
    /// while the futures are used.
    async fn compute(&self, action: Action) -> Result<(Vec<TaskFuture>, Arc<LogicalPlan>)> {
        self.check()?;
        let optimized = optimize(&self.plan)?;
        let resolved = crate::adaptive::resolve(&self.frames, &optimized).await?;
        let client = &self.frames.client;
        let base = client.unique_key("frame");
        let futures = weft_runtime::shuffle::compute(client, |workers, run| {
            let prefix = format!("{base}-r{run}");
            let shuffles = ShuffleRun::new(workers, run, base.as_str());
            let options = self.frames.options.clone();
            Ok::<_, FrameError>(Lowering::lower_run(&resolved, &prefix, options, action.clone(), shuffles)?.graph)
        })
        .await?;
        Ok((futures, resolved))
    }

    /// The logical plan, the optimised plan and the physical stages (a
    /// group-by without `split_out` shows as a tree and a join as its row
    /// estimates choose: the run chooses from sizes it computes first, see
    /// [`crate::adaptive`]).
    pub fn explain(&self) -> Result<String> {
        self.check()?;
        let optimized = optimize(&self.plan)?;
        let lowered = Lowering::lower(&optimized, "explain", self.frames.options.clone(), Action::Collect)?;
        Ok(format!(
            "logical plan:\n{}\noptimized plan:\n{}\nphysical plan ({} tasks):\n{}\n",
            self.plan.display_tree(),
            optimized.display_tree(),
            lowered.graph.tasks.len(),
            lowered.stages.join("\n")
        ))
    }

    async fn run_one(&self, action: Action) -> Result<RecordBatch> {
        let (futures, _inputs) = self.compute(action).await?;
        single_batch(&self.frames.client.gather(&futures).await?)
    }

    /// Runs the plan and brings the result to this process as one batch.
    pub async fn collect(&self) -> Result<RecordBatch> {
        let batch = self.run_one(Action::Collect).await?;
        // The plan's schema names the columns; the batch holds them.
        let schema = self.schema()?;
        if batch.schema().fields().len() == schema.fields().len() {
            let schema = Arc::new(arrow_schema::Schema::new(
                schema
                    .fields()
                    .iter()
                    .zip(batch.schema().fields())
                    .map(|(f, g)| arrow_schema::Field::new(f.name(), g.data_type().clone(), g.is_nullable()))
                    .collect::<Vec<_>>(),
            ));
            return Ok(RecordBatch::try_new(schema, batch.columns().to_vec())?);
        }
        Ok(batch)
    }

    /// The number of rows.
    pub async fn count(&self) -> Result<u64> {
        let batch = self.run_one(Action::Count).await?;
        first_int(&batch, "count")
    }

    /// Writes one Parquet file per partition into `dir`
    /// (`part-00000.parquet`, ...); returns the rows written.
    pub async fn write_parquet(&self, dir: &str) -> Result<u64> {
        let batch = self
            .run_one(Action::WriteParquet(dir.trim_end_matches('/').to_string()))
            .await?;
        first_int(&batch, "rows")
    }

    /// Computes the partitions and keeps them on the workers; the frame
    /// returned reads them (the plan before is not run again).
    pub async fn persist(&self) -> Result<LazyFrame> {
        let schema = self.schema()?;
        let rows = self.plan.estimate_rows();
        let (futures, _inputs) = self.compute(Action::Partitions).await?;
        Ok(self.frames.persisted(futures, schema, rows))
    }
}

/// The one batch of the first of `values` (a gathered result).
pub(crate) fn single_batch(values: &[Value]) -> Result<RecordBatch> {
    let value = values
        .first()
        .ok_or_else(|| FrameError::Partition("no result partition".into()))?;
    let mut batches = partition::decode(value)?;
    match batches.len() {
        1 => Ok(batches.remove(0)),
        _ => Err(FrameError::Partition(format!("{} pieces in a result", batches.len()))),
    }
}

/// The integer in the first row of column `name` (0 when null or empty).
pub(crate) fn first_int(batch: &RecordBatch, name: &str) -> Result<u64> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| FrameError::Partition(format!("no {name} column in the result")))?;
    let c = arrow_cast::cast(c, &arrow_schema::DataType::Int64)?;
    let c = c.as_primitive::<arrow_array::types::Int64Type>();
    Ok(if c.is_empty() || c.is_null(0) {
        0
    } else {
        c.value(0) as u64
    })
}
