//! The logical plan: what a [`crate::LazyFrame`] describes, as data. Each
//! node knows its output schema (checked when the plan is built, so a
//! missing column or a type mismatch is an error before anything runs).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};
use weft_runtime::Key;

use crate::error::{FrameError, Result};
use crate::expr::Expr;
use crate::groupby::AggSpec;
use crate::io::ParquetDataset;
use crate::join::{JoinSpec, join_schema};

/// Where a scan's partitions come from.
#[derive(Clone)]
pub enum Source {
    /// Parquet files: one partition per row group, or per file.
    Parquet {
        /// The files and their footers.
        dataset: Arc<ParquetDataset>,
        /// One partition per file instead of per row group.
        per_file: bool,
    },
    /// CSV files, one partition each.
    Csv {
        /// The files.
        files: Vec<String>,
    },
    /// Partitions already in the workers' memory (`persist`, `from_batches`).
    Partitions {
        /// Their keys.
        keys: Vec<Key>,
        /// Rows in all (an estimate where unknown).
        rows: u64,
        /// Keeps the results alive on the workers while the frame lives.
        hold: Arc<dyn std::any::Any + Send + Sync>,
    },
    /// Synthetic data made on the workers: `key` int64 uniform in
    /// `[0, keys)`, `value` float64 in `[0, 1)`; partition `i` from seed `i`.
    Random {
        /// Rows in all.
        rows: u64,
        /// Partitions.
        parts: usize,
        /// Distinct keys.
        keys: i64,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Parquet { dataset, per_file } => write!(
                f,
                "parquet {} ({} files{})",
                dataset.pattern,
                dataset.files.len(),
                if *per_file { ", a partition per file" } else { "" }
            ),
            Source::Csv { files } => write!(f, "csv ({} files)", files.len()),
            Source::Partitions { keys, .. } => write!(f, "{} persisted partitions", keys.len()),
            Source::Random { rows, parts, keys } => write!(f, "random {rows} rows, {parts} partitions, {keys} keys"),
        }
    }
}

/// A logical plan node.
#[derive(Clone, Debug)]
pub enum LogicalPlan {
    /// Read a source: only `projection` (all columns when `None`), only
    /// rows where every one of `filters` holds.
    Scan {
        /// What is read.
        source: Source,
        /// The source's full schema.
        schema: SchemaRef,
        /// Columns read, in the source's order.
        projection: Option<Vec<String>>,
        /// Conjuncts pushed into the scan.
        filters: Vec<Expr>,
    },
    /// Rows where the predicate holds.
    Filter {
        /// Input.
        input: Arc<LogicalPlan>,
        /// A boolean expression.
        predicate: Expr,
    },
    /// Exactly these columns.
    Select {
        /// Input.
        input: Arc<LogicalPlan>,
        /// Output columns.
        exprs: Vec<Expr>,
    },
    /// The input's columns, replaced or extended by these.
    WithColumns {
        /// Input.
        input: Arc<LogicalPlan>,
        /// New or replaced columns.
        exprs: Vec<Expr>,
    },
    /// Group by keys (none: the whole frame) and aggregate.
    Aggregate {
        /// Input.
        input: Arc<LogicalPlan>,
        /// Key expressions.
        keys: Vec<Expr>,
        /// Aggregates.
        aggs: Vec<AggSpec>,
        /// Output partitions (None: chosen when the plan runs, see
        /// [`crate::adaptive`]).
        split_out: Option<usize>,
        /// The input rows are partial results already (of the merge
        /// aggregates `aggs`): no partial step runs on them.
        partial_input: bool,
    },
    /// A hash join.
    Join {
        /// Left side.
        left: Arc<LogicalPlan>,
        /// Right side.
        right: Arc<LogicalPlan>,
        /// Keys and kind.
        spec: JoinSpec,
    },
    /// Sorted by these keys.
    Sort {
        /// Input.
        input: Arc<LogicalPlan>,
        /// Sort keys.
        by: Vec<Expr>,
        /// Descending, per key.
        descending: Vec<bool>,
    },
    /// The first `n` rows.
    Limit {
        /// Input.
        input: Arc<LogicalPlan>,
        /// Rows.
        n: usize,
    },
    /// Distinct rows.
    Distinct {
        /// Input.
        input: Arc<LogicalPlan>,
    },
    /// The partitions of all inputs, one after the other.
    Concat {
        /// Inputs, of one schema.
        inputs: Vec<Arc<LogicalPlan>>,
    },
    /// `n` partitions: adjacent ones merged, or each split in slices.
    Repartition {
        /// Input.
        input: Arc<LogicalPlan>,
        /// Partitions.
        n: usize,
    },
    /// `n` partitions by the hash of `keys`.
    Shuffle {
        /// Input.
        input: Arc<LogicalPlan>,
        /// Keys.
        keys: Vec<Expr>,
        /// Partitions.
        n: usize,
    },
}

fn fields_of(exprs: &[Expr], input: &Schema) -> Result<Vec<Field>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in exprs {
        let f = e.to_field(input)?;
        if !seen.insert(f.name().clone()) {
            return Err(FrameError::Plan(format!(
                "the column name {:?} appears twice",
                f.name()
            )));
        }
        out.push(f);
    }
    Ok(out)
}

/// The schema of `with_columns(exprs)` over `input`.
pub fn with_columns_schema(input: &Schema, exprs: &[Expr]) -> Result<Schema> {
    let new = fields_of(exprs, input)?;
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    for f in new {
        match fields.iter_mut().find(|g| g.name() == f.name()) {
            Some(g) => *g = f,
            None => fields.push(f),
        }
    }
    Ok(Schema::new(fields))
}

impl LogicalPlan {
    /// The output schema; an error names what does not fit.
    pub fn schema(&self) -> Result<SchemaRef> {
        Ok(match self {
            LogicalPlan::Scan { schema, projection, .. } => match projection {
                None => schema.clone(),
                Some(cols) => {
                    let mut fields = Vec::new();
                    for c in cols {
                        let f = schema.field_with_name(c).map_err(|_| FrameError::ColumnNotFound {
                            name: c.clone(),
                            schema: schema.as_ref().clone(),
                        })?;
                        fields.push(f.clone());
                    }
                    Arc::new(Schema::new(fields))
                }
            },
            LogicalPlan::Filter { input, predicate } => {
                let s = input.schema()?;
                let t = predicate.data_type(&s)?;
                if t != arrow_schema::DataType::Boolean {
                    return Err(FrameError::TypeMismatch {
                        op: format!("filter {predicate}"),
                        left: t,
                        right: arrow_schema::DataType::Boolean,
                    });
                }
                s
            }
            LogicalPlan::Select { input, exprs } => Arc::new(Schema::new(fields_of(exprs, input.schema()?.as_ref())?)),
            LogicalPlan::WithColumns { input, exprs } => {
                Arc::new(with_columns_schema(input.schema()?.as_ref(), exprs)?)
            }
            LogicalPlan::Aggregate { input, keys, aggs, .. } => {
                let s = input.schema()?;
                let mut fields = fields_of(keys, &s)?;
                for a in aggs {
                    let t = crate::groupby::agg_type(a.func, &a.input.data_type(&s)?)
                        .map_err(|e| e.in_expr(&crate::expr::Expr::Agg(a.func, Box::new(a.input.clone()))))?;
                    if fields.iter().any(|f| f.name() == &a.name) {
                        return Err(FrameError::Plan(format!("the column name {:?} appears twice", a.name)));
                    }
                    fields.push(Field::new(a.name.clone(), t, true));
                }
                Arc::new(Schema::new(fields))
            }
            LogicalPlan::Join { left, right, spec } => {
                Arc::new(join_schema(left.schema()?.as_ref(), right.schema()?.as_ref(), spec)?)
            }
            LogicalPlan::Sort { input, by, .. } => {
                let s = input.schema()?;
                for b in by {
                    b.data_type(&s)?;
                }
                s
            }
            LogicalPlan::Limit { input, .. }
            | LogicalPlan::Distinct { input }
            | LogicalPlan::Repartition { input, .. } => input.schema()?,
            LogicalPlan::Shuffle { input, keys, .. } => {
                let s = input.schema()?;
                for k in keys {
                    k.data_type(&s)?;
                }
                s
            }
            LogicalPlan::Concat { inputs } => {
                let first = inputs
                    .first()
                    .ok_or_else(|| FrameError::Plan("concat of no frames".into()))?
                    .schema()?;
                for i in &inputs[1..] {
                    let s = i.schema()?;
                    let types = |s: &Schema| {
                        s.fields()
                            .iter()
                            .map(|f| (f.name().clone(), f.data_type().clone()))
                            .collect::<Vec<_>>()
                    };
                    if types(&s) != types(&first) {
                        return Err(FrameError::Plan(format!(
                            "concat of frames with different schemas: {first:?} and {s:?}"
                        )));
                    }
                }
                first
            }
        })
    }

    /// The node's inputs.
    pub fn inputs(&self) -> Vec<&Arc<LogicalPlan>> {
        match self {
            LogicalPlan::Scan { .. } => Vec::new(),
            LogicalPlan::Filter { input, .. }
            | LogicalPlan::Select { input, .. }
            | LogicalPlan::WithColumns { input, .. }
            | LogicalPlan::Aggregate { input, .. }
            | LogicalPlan::Sort { input, .. }
            | LogicalPlan::Limit { input, .. }
            | LogicalPlan::Distinct { input }
            | LogicalPlan::Repartition { input, .. }
            | LogicalPlan::Shuffle { input, .. } => vec![input],
            LogicalPlan::Join { left, right, .. } => vec![left, right],
            LogicalPlan::Concat { inputs } => inputs.iter().collect(),
        }
    }

    fn describe(&self) -> String {
        let list = |e: &[Expr]| e.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        match self {
            LogicalPlan::Scan {
                source,
                projection,
                filters,
                ..
            } => {
                let mut s = format!("Scan {source:?}");
                if let Some(p) = projection {
                    let _ = write!(s, " columns [{}]", p.join(", "));
                }
                if !filters.is_empty() {
                    let _ = write!(s, " filters [{}]", list(filters));
                }
                s
            }
            LogicalPlan::Filter { predicate, .. } => format!("Filter {predicate}"),
            LogicalPlan::Select { exprs, .. } => format!("Select [{}]", list(exprs)),
            LogicalPlan::WithColumns { exprs, .. } => format!("WithColumns [{}]", list(exprs)),
            LogicalPlan::Aggregate {
                keys,
                aggs,
                partial_input,
                ..
            } => format!(
                "Aggregate{} by [{}]: [{}]",
                if *partial_input { " of partial results" } else { "" },
                list(keys),
                aggs.iter()
                    .map(|a| format!("{:?}({}) as {}", a.func, a.input, a.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            LogicalPlan::Join { spec, .. } => {
                format!("Join {:?} on {:?} = {:?}", spec.how, spec.left_on, spec.right_on)
            }
            LogicalPlan::Sort { by, descending, .. } => format!("Sort by [{}] descending {descending:?}", list(by)),
            LogicalPlan::Limit { n, .. } => format!("Limit {n}"),
            LogicalPlan::Distinct { .. } => "Distinct".into(),
            LogicalPlan::Concat { inputs } => format!("Concat {} frames", inputs.len()),
            LogicalPlan::Repartition { n, .. } => format!("Repartition {n}"),
            LogicalPlan::Shuffle { keys, n, .. } => format!("Shuffle by [{}] into {n}", list(keys)),
        }
    }

    /// The plan as an indented tree, one node a line.
    pub fn display_tree(&self) -> String {
        let mut out = String::new();
        self.write_tree(&mut out, 0);
        out
    }

    fn write_tree(&self, out: &mut String, depth: usize) {
        let _ = writeln!(out, "{}{}", "  ".repeat(depth), self.describe());
        for i in self.inputs() {
            i.write_tree(out, depth + 1);
        }
    }

    /// Whether [`LogicalPlan::estimate_rows`] is the exact row count: no
    /// filter, join, aggregate or CSV source below.
    pub fn estimate_is_exact(&self) -> bool {
        match self {
            LogicalPlan::Scan { source, filters, .. } => filters.is_empty() && !matches!(source, Source::Csv { .. }),
            LogicalPlan::Filter { .. }
            | LogicalPlan::Join { .. }
            | LogicalPlan::Aggregate { .. }
            | LogicalPlan::Distinct { .. } => false,
            other => other.inputs().iter().all(|i| i.estimate_is_exact()),
        }
    }

    /// An upper bound on the rows, where known (for choosing broadcast
    /// joins); `u64::MAX` when unknown.
    pub fn estimate_rows(&self) -> u64 {
        match self {
            LogicalPlan::Scan { source, .. } => match source {
                Source::Parquet { dataset, .. } => dataset
                    .files
                    .iter()
                    .map(|f| f.metadata.file_metadata().num_rows().max(0) as u64)
                    .sum(),
                Source::Csv { .. } => u64::MAX,
                Source::Partitions { rows, .. } => *rows,
                Source::Random { rows, .. } => *rows,
            },
            LogicalPlan::Join { left, right, spec } => {
                let (l, r) = (left.estimate_rows(), right.estimate_rows());
                if spec.how == crate::join::JoinType::Inner {
                    l.max(r)
                } else {
                    l
                }
            }
            LogicalPlan::Limit { input, n } => input.estimate_rows().min(*n as u64),
            LogicalPlan::Concat { inputs } => inputs.iter().map(|i| i.estimate_rows()).fold(0, u64::saturating_add),
            other => other.inputs().first().map_or(u64::MAX, |i| i.estimate_rows()),
        }
    }
}
