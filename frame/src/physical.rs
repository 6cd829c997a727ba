//! Lowering an optimised logical plan to one task graph. Per-partition
//! operators fuse into the task that makes the partition (a scan, its
//! filter, projection and partial aggregation are one task); exchanges
//! between partitions are patterns of tasks: a tree of merges, a gather
//! into one partition, a broadcast of a small side, or a hash shuffle
//! ([`Lowering::exchange`]). A hash shuffle goes through the runtime's P2P
//! shuffle service ([`weft_runtime::shuffle`]: `n + m + 2` tasks, pieces
//! pushed worker to worker), except a small one, below
//! [`PlanOptions::p2p_min_pieces`] pieces, which stays Dask's task shuffle
//! (split tasks, one `frame.piece` task per (split, output) pair, concat
//! tasks): a few tasks cost less than the P2P shuffle's barrier and
//! pushes. Sorts and repartitions route their pieces as tasks.

use std::fmt::Write as _;

use weft_runtime::shuffle::{Call, ShuffleSpec};
use weft_runtime::{Graph, Key, SharedStr, TaskSpec};

use crate::error::{FrameError, Result};
use crate::expr::{Expr, col};
use crate::groupby::{AggSpec, two_phase};
use crate::join::{JoinSpec, JoinType};
use crate::ops::{Input, PIECE_OP, Step, TASK_OP, TaskArgs, task_op};
use crate::plan::{LogicalPlan, Source};

/// A broadcast side of at most this many partitions reaches every probe
/// task as it is: each worker fetches the partitions it lacks once and
/// concatenates them where it probes ([`crate::broadcast`]), in parallel
/// with the other workers. More partitions are first concatenated by one
/// task (whose worker fetches them all, then every other worker fetches
/// its result), so that a probe task does not wait on each of them.
pub const BROADCAST_INPUTS: usize = 32;

/// Choices the planner makes.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// A join side with at most this many rows (estimated from file
    /// metadata, an upper bound, or counted when the run computes a loose
    /// side first: see [`crate::adaptive`]) is broadcast to every partition
    /// of the other.
    pub broadcast_rows: u64,
    /// Partial results merged per task in a tree reduction.
    pub fan_in: usize,
    /// A group-by without `split_out` merges its partial results in a tree
    /// when they hold at most this many rows in all, else shuffles them
    /// on the keys into partitions of about this many rows (see
    /// [`crate::adaptive`]). A tree merges every row once per level, its
    /// last levels on one worker: TPC-H q10's 420K partial rows at SF10
    /// took 3.6-4.0 s through a tree (1M here), 2.7-2.8 s shuffled; its
    /// 160K at SF1 took 5 ms in the last merge, on one worker while the
    /// other waited (250K here; at 100K q10 is 3% faster at SF1 and 9% at
    /// SF10, q3 4-5%).
    pub group_rows: u64,
    /// A join that shuffles both sides does so into partitions of about
    /// this many rows (both sides, estimated), at most one per input
    /// partition: 528 lineitem row groups are not 528 joins of a few
    /// thousand rows each.
    pub join_rows: u64,
    /// A hash shuffle of at least this many pieces (inputs times outputs)
    /// uses the P2P shuffle service; a smaller one is a task shuffle
    /// (1024, or `WEFT_P2P_MIN_PIECES`: on two local workers a 16 x 16
    /// task shuffle ran as fast or faster, a 64 x 64 one 1.3x slower).
    pub p2p_min_pieces: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            broadcast_rows: 2_000_000,
            fan_in: 8,
            group_rows: 100_000,
            join_rows: 2_000_000,
            p2p_min_pieces: std::env::var("WEFT_P2P_MIN_PIECES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1024),
        }
    }
}

/// Where a lowering's P2P shuffles run: one run of them over these
/// workers (see [`weft_runtime::shuffle::compute`]).
#[derive(Debug, Clone, Default)]
pub struct ShuffleRun {
    /// Data addresses of the workers owning the outputs (none in a plan
    /// lowered only to be shown).
    pub workers: Vec<SharedStr>,
    /// The run: 0, then one more at each restart.
    pub run: u64,
    /// Identifies the lowered plan across its runs; each shuffle's id is
    /// made from it and the shuffle's stage.
    pub plan: u64,
}

impl ShuffleRun {
    /// Run `run` over `workers` of the plan whose keys all runs share
    /// `base`.
    pub fn new(workers: &[SharedStr], run: u64, base: &str) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        base.hash(&mut hasher);
        ShuffleRun {
            workers: workers.to_vec(),
            run,
            plan: hasher.finish(),
        }
    }
}

/// A task being built: more steps can still fuse into it.
#[derive(Debug, Clone)]
struct Pending {
    args: TaskArgs,
    deps: Vec<Key>,
}

/// One partition of an operator's output.
#[derive(Debug, Clone)]
enum Part {
    /// A task already in the graph (or a persisted partition).
    Done(Key),
    /// A task still open for fusion.
    Pending(Pending),
}

impl Part {
    fn with_step(self, step: Step) -> Part {
        match self {
            Part::Done(key) => Part::Pending(Pending {
                args: TaskArgs {
                    input: Input::Deps,
                    steps: vec![step],
                },
                deps: vec![key],
            }),
            Part::Pending(mut p) => {
                p.args.steps.push(step);
                Part::Pending(p)
            }
        }
    }

    fn into_pending(self) -> Pending {
        match self {
            Part::Pending(p) => p,
            Part::Done(key) => Pending {
                args: TaskArgs {
                    input: Input::Deps,
                    steps: Vec::new(),
                },
                deps: vec![key],
            },
        }
    }
}

/// A plan lowered to tasks.
#[derive(Debug, Default)]
pub struct Lowering {
    prefix: String,
    options: PlanOptions,
    shuffles: ShuffleRun,
    tasks: Vec<TaskSpec>,
    stages: Vec<String>,
}

/// A lowered plan: the graph and a description of its stages.
#[derive(Debug)]
pub struct Lowered {
    /// The tasks; `outputs` names the final partitions.
    pub graph: Graph,
    /// One line per stage of tasks, for `explain`.
    pub stages: Vec<String>,
}

/// What to do with the final partitions.
#[derive(Debug, Clone)]
pub enum Action {
    /// Gather into one partition.
    Collect,
    /// Keep every partition (persist).
    Partitions,
    /// Count the rows into one partition holding `count`.
    Count,
    /// Write each partition to `dir/part-NNNNN.parquet`; one partition holds the rows written.
    WriteParquet(String),
}

impl Lowering {
    /// Lowers `plan` (optimised) with keys starting `prefix`, its P2P
    /// shuffles owned by no worker (to be shown, not run).
    pub fn lower(plan: &LogicalPlan, prefix: &str, options: PlanOptions, action: Action) -> Result<Lowered> {
        Self::lower_run(plan, prefix, options, action, ShuffleRun::default())
    }

    /// Lowers `plan` (optimised) with keys starting `prefix`, as run
    /// `shuffles` of its P2P shuffles.
    pub fn lower_run(
        plan: &LogicalPlan,
        prefix: &str,
        options: PlanOptions,
        action: Action,
        shuffles: ShuffleRun,
    ) -> Result<Lowered> {
        let mut l = Lowering {
            prefix: prefix.to_string(),
            options,
            shuffles,
            ..Default::default()
        };
        let parts = l.plan(plan)?;
        let parts = match action {
            Action::Collect => vec![l.gather(parts, "collect")?],
            Action::Partitions => parts,
            Action::Count => l.count(parts)?,
            Action::WriteParquet(dir) => {
                let written: Vec<Part> = parts
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| p.with_step(Step::WriteParquet(format!("{dir}/part-{i:05}.parquet"))))
                    .collect();
                let sum = [AggSpec {
                    func: crate::expr::AggFunc::Sum,
                    input: col("rows"),
                    name: "rows".into(),
                }];
                l.aggregate(written, &[], &sum, None, false)?
            }
        };
        l.finish(parts)
    }

    /// A stage computed ahead of the rest of its plan, so the rest is
    /// chosen from its size: each partition of `input` with `steps` run on
    /// it, every one an output, then as many outputs more, each counting
    /// the rows of one (the client sums them: no tree of tasks between
    /// the last partition and the size); `input`'s P2P shuffles as run
    /// `shuffles`.
    pub fn lower_counted(
        input: &LogicalPlan,
        steps: &[Step],
        prefix: &str,
        options: PlanOptions,
        shuffles: ShuffleRun,
    ) -> Result<Lowered> {
        let mut l = Lowering {
            prefix: prefix.to_string(),
            options,
            shuffles,
            ..Default::default()
        };
        let parts: Vec<Part> = l
            .plan(input)?
            .into_iter()
            .map(|p| steps.iter().fold(p, |p, s| p.with_step(s.clone())))
            .collect();
        let computed = l.emit(parts, "counted")?;
        let len = Step::Aggregate {
            keys: Vec::new(),
            aggs: vec![Self::len("count")],
        };
        let counts: Vec<Part> = computed
            .iter()
            .map(|k| Part::Done(k.clone()).with_step(len.clone()))
            .collect();
        let mut outputs: Vec<Part> = computed.into_iter().map(Part::Done).collect();
        outputs.extend(counts);
        l.finish(outputs)
    }

    /// The row count `name`.
    fn len(name: &str) -> AggSpec {
        AggSpec {
            func: crate::expr::AggFunc::Len,
            input: Expr::Literal(crate::expr::Scalar::Null),
            name: name.into(),
        }
    }

    /// One partition holding `count`, the rows of `parts`.
    fn count(&mut self, parts: Vec<Part>) -> Result<Vec<Part>> {
        self.aggregate(parts, &[], &[Self::len("count")], None, false)
    }

    fn finish(mut self, parts: Vec<Part>) -> Result<Lowered> {
        let outputs = self.emit(parts, "output")?;
        Ok(Lowered {
            graph: Graph {
                tasks: self.tasks,
                outputs,
            },
            stages: self.stages,
        })
    }

    fn describe(p: &Pending) -> String {
        let mut s = match &p.args.input {
            Input::Deps => format!("concat({} inputs)", p.deps.len()),
            Input::Parquet { path, .. } => format!("parquet({path})"),
            Input::Csv { path, .. } => format!("csv({path})"),
            Input::Random { .. } => "random".into(),
            Input::Join {
                probe,
                probe_deps,
                spec,
                ..
            } => format!(
                "hash join {:?} of [{}] with {} build inputs",
                spec.how,
                Self::describe(&Pending {
                    args: (**probe).clone(),
                    deps: p.deps[..*probe_deps].to_vec(),
                }),
                p.deps.len() - probe_deps
            ),
        };
        for step in &p.args.steps {
            let _ = write!(
                s,
                " | {}",
                match step {
                    Step::Filter(e) => format!("filter {e}"),
                    Step::Select(e) => format!("select {} columns", e.len()),
                    Step::WithColumns(e) => format!("with {} columns", e.len()),
                    Step::Aggregate { keys, aggs } =>
                        format!("aggregate {} keys, {} aggregates", keys.len(), aggs.len()),
                    Step::Sort { limit, .. } => format!("sort (limit {limit:?})"),
                    Step::Limit(n) => format!("limit {n}"),
                    Step::HashSplit { n, .. } => format!("hash split {n}"),
                    Step::SliceSplit(n) => format!("slice split {n}"),
                    Step::SortSample { rows, .. } => format!("sample {rows} sort keys"),
                    Step::SortBoundaries { n, .. } => format!("boundaries of {n} ranges"),
                    Step::RangeSplit { n, .. } => format!("range split {n} (the last input the boundaries)"),
                    Step::WriteParquet(_) => "write parquet".into(),
                }
            );
        }
        s
    }

    /// Puts the pending parts into the graph; returns every part's key.
    fn emit(&mut self, parts: Vec<Part>, name: &str) -> Result<Vec<Key>> {
        let stage = self.stages.len();
        let mut keys = Vec::with_capacity(parts.len());
        let mut described = None;
        let mut op: Option<SharedStr> = None;
        let mut count = 0;
        for (i, part) in parts.into_iter().enumerate() {
            match part {
                Part::Done(key) => keys.push(key),
                Part::Pending(p) => {
                    if described.is_none() {
                        described = Some(Self::describe(&p));
                    }
                    // One label per stage: its tasks do the same work.
                    let op = op.get_or_insert_with(|| task_op(&p.args).into()).clone();
                    count += 1;
                    let key: Key = format!("{}-{stage}-{name}-{i}", self.prefix).into();
                    let args = weft_runtime::ops::args(&p.args).map_err(FrameError::Plan)?;
                    self.tasks.push(TaskSpec::new(key.clone(), op, args, p.deps));
                    keys.push(key);
                }
            }
        }
        if let Some(d) = described {
            self.stages.push(format!("stage {stage} {name}: {count} tasks: {d}"));
        }
        Ok(keys)
    }

    /// One partition holding all of `parts`.
    fn gather(&mut self, parts: Vec<Part>, name: &str) -> Result<Part> {
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        let deps = self.emit(parts, name)?;
        Ok(Part::Pending(Pending {
            args: TaskArgs {
                input: Input::Deps,
                steps: Vec::new(),
            },
            deps,
        }))
    }

    /// Splits every part with `split` (n pieces each) and routes piece j of
    /// every part to output j: through the P2P shuffle service, or as a
    /// task shuffle when it has few pieces.
    fn exchange(&mut self, parts: Vec<Part>, split: Step, n: usize, name: &str) -> Result<Vec<Part>> {
        let parts: Vec<Part> = parts.into_iter().map(|p| p.with_step(split.clone())).collect();
        if parts.len() * n < self.options.p2p_min_pieces {
            return self.route(parts, n, name);
        }
        self.p2p(parts, n, name)
    }

    /// Routes piece j of every split to output j through the P2P shuffle
    /// service: each split is a transfer task (running the split, pushing
    /// its pieces), each output an unpack task concatenating its pieces.
    fn p2p(&mut self, splits: Vec<Part>, n: usize, name: &str) -> Result<Vec<Part>> {
        let stage = self.stages.len();
        let plan = |e: String| FrameError::Plan(e);
        let mut inputs = Vec::with_capacity(splits.len());
        let mut described = None;
        for part in splits {
            let p = part.into_pending();
            described.get_or_insert_with(|| Self::describe(&p));
            let args = weft_runtime::ops::args(&p.args).map_err(plan)?;
            inputs.push((
                Call {
                    op: TASK_OP.into(),
                    args,
                },
                p.deps,
            ));
        }
        let spec = ShuffleSpec {
            id: shuffle_id(self.shuffles.plan, stage),
            run: self.shuffles.run,
            inputs: inputs.len() as u32,
            outputs: n as u32,
            workers: self.shuffles.workers.clone(),
        };
        let concat = weft_runtime::ops::args(&TaskArgs {
            input: Input::Deps,
            steps: Vec::new(),
        })
        .map_err(plan)?;
        let prefix = format!("{}-{stage}-{name}", self.prefix);
        let combine = |_: u32| Call {
            op: TASK_OP.into(),
            args: concat.clone(),
        };
        let tasks = weft_runtime::shuffle::tasks(&prefix, &spec, inputs, PIECE_OP, combine).map_err(plan)?;
        self.tasks.extend(tasks.tasks);
        self.stages.push(format!(
            "stage {stage} {name}-pieces: p2p shuffle of {} inputs ({}) into {n} outputs: \
             {} transfers push piece j to the worker owning output j, a barrier, {n} unpacks concatenate",
            spec.inputs,
            described.unwrap_or_default(),
            spec.inputs
        ));
        Ok(tasks.outputs.into_iter().map(Part::Done).collect())
    }

    /// Routes piece j of every split (parts ending in a split step of `n`
    /// pieces) to output j.
    fn route(&mut self, splits: Vec<Part>, n: usize, name: &str) -> Result<Vec<Part>> {
        let splits = self.emit(splits, &format!("{name}-split"))?;
        let stage = self.stages.len();
        let mut outputs = vec![Vec::with_capacity(splits.len()); n];
        for (i, s) in splits.iter().enumerate() {
            for (j, out) in outputs.iter_mut().enumerate() {
                let key: Key = format!("{}-{stage}-{name}-piece-{i}-{j}", self.prefix).into();
                let args = weft_runtime::ops::args(&(j as u32)).map_err(FrameError::Plan)?;
                self.tasks
                    .push(TaskSpec::new(key.clone(), PIECE_OP, args, vec![s.clone()]));
                out.push(key);
            }
        }
        self.stages.push(format!(
            "stage {stage} {name}-pieces: {} tasks: piece j of each split goes to output j",
            splits.len() * n
        ));
        Ok(outputs
            .into_iter()
            .map(|deps| {
                Part::Pending(Pending {
                    args: TaskArgs {
                        input: Input::Deps,
                        steps: Vec::new(),
                    },
                    deps,
                })
            })
            .collect())
    }

    fn plan(&mut self, plan: &LogicalPlan) -> Result<Vec<Part>> {
        match plan {
            LogicalPlan::Scan {
                source,
                schema,
                projection,
                filters,
            } => self.scan(source, schema, projection, filters),
            LogicalPlan::Filter { input, predicate } => Ok(self
                .plan(input)?
                .into_iter()
                .map(|p| p.with_step(Step::Filter(predicate.clone())))
                .collect()),
            LogicalPlan::Select { input, exprs } => Ok(self
                .plan(input)?
                .into_iter()
                .map(|p| p.with_step(Step::Select(exprs.clone())))
                .collect()),
            LogicalPlan::WithColumns { input, exprs } => Ok(self
                .plan(input)?
                .into_iter()
                .map(|p| p.with_step(Step::WithColumns(exprs.clone())))
                .collect()),
            LogicalPlan::Aggregate {
                input,
                keys,
                aggs,
                split_out,
                partial_input,
            } => {
                let parts = self.plan(input)?;
                self.aggregate(parts, keys, aggs, *split_out, *partial_input)
            }
            LogicalPlan::Distinct { input } => {
                let schema = input.schema()?;
                let keys: Vec<Expr> = schema.fields().iter().map(|f| col(f.name())).collect();
                let parts = self.plan(input)?;
                self.aggregate(parts, &keys, &[], None, false)
            }
            LogicalPlan::Join { left, right, spec } => self.join(plan, left, right, spec),
            LogicalPlan::Sort { input, by, descending } => {
                let parts = self.plan(input)?;
                let local = Step::Sort {
                    by: by.clone(),
                    descending: descending.clone(),
                    limit: None,
                };
                let parts = match parts.len() {
                    1 => parts,
                    _ => self.range_partition(parts, by, descending)?,
                };
                Ok(parts.into_iter().map(|p| p.with_step(local.clone())).collect())
            }
            LogicalPlan::Limit { input, n } => {
                // Top-k: a limited sort per partition, then of their union.
                let (inner, sort) = match input.as_ref() {
                    LogicalPlan::Sort { input, by, descending } => (
                        input,
                        Some(Step::Sort {
                            by: by.clone(),
                            descending: descending.clone(),
                            limit: Some(*n),
                        }),
                    ),
                    _ => (input, None),
                };
                let step = sort.unwrap_or(Step::Limit(*n));
                let parts: Vec<Part> = self
                    .plan(inner)?
                    .into_iter()
                    .map(|p| p.with_step(step.clone()))
                    .collect();
                let one = self.gather(parts, "limit-gather")?;
                Ok(vec![one.with_step(step)])
            }
            LogicalPlan::Concat { inputs } => {
                let mut parts = Vec::new();
                for i in inputs {
                    parts.extend(self.plan(i)?);
                }
                Ok(parts)
            }
            LogicalPlan::Repartition { input, n } => {
                let parts = self.plan(input)?;
                self.repartition(parts, (*n).max(1))
            }
            LogicalPlan::Shuffle { input, keys, n } => {
                let parts = self.plan(input)?;
                let split = Step::HashSplit {
                    keys: keys.clone(),
                    n: *n,
                };
                self.exchange(parts, split, *n, "shuffle")
            }
        }
    }

    fn scan(
        &mut self,
        source: &Source,
        schema: &arrow_schema::SchemaRef,
        projection: &Option<Vec<String>>,
        filters: &[Expr],
    ) -> Result<Vec<Part>> {
        let predicate = Expr::conjunction(filters.iter().cloned());
        let after = |part: Part, with_filter: bool| {
            let mut part = part;
            if with_filter && let Some(p) = &predicate {
                part = part.with_step(Step::Filter(p.clone()));
            }
            if let Some(cols) = projection {
                part = part.with_step(Step::Select(cols.iter().map(col).collect()));
            }
            part
        };
        let pending = |input| {
            Part::Pending(Pending {
                args: TaskArgs {
                    input,
                    steps: Vec::new(),
                },
                deps: Vec::new(),
            })
        };
        Ok(match source {
            Source::Parquet { dataset, per_file } => {
                let mut parts = Vec::new();
                for file in &dataset.files {
                    let groups = crate::io::prune_row_groups(file, schema, filters);
                    let read = |row_groups: Vec<usize>| {
                        pending(Input::Parquet {
                            path: file.path.clone(),
                            row_groups,
                            columns: projection.clone(),
                            predicate: predicate.clone(),
                        })
                    };
                    if *per_file {
                        if !groups.is_empty() {
                            parts.push(read(groups));
                        }
                    } else {
                        parts.extend(groups.into_iter().map(|g| read(vec![g])));
                    }
                }
                if parts.is_empty() {
                    // Every row group pruned: one empty partition keeps the schema.
                    let file = dataset
                        .files
                        .first()
                        .ok_or_else(|| FrameError::Plan("a dataset of no files".into()))?;
                    parts.push(pending(Input::Parquet {
                        path: file.path.clone(),
                        row_groups: Vec::new(),
                        columns: projection.clone(),
                        predicate: predicate.clone(),
                    }));
                }
                parts
            }
            Source::Csv { files } => files
                .iter()
                .map(|f| {
                    after(
                        pending(Input::Csv {
                            path: f.clone(),
                            schema: schema.as_ref().clone(),
                        }),
                        true,
                    )
                })
                .collect(),
            Source::Partitions { keys, .. } => {
                let narrow = predicate.is_some() || projection.is_some();
                keys.iter()
                    .map(|k| {
                        let part = Part::Done(k.clone());
                        if narrow { after(part, true) } else { part }
                    })
                    .collect()
            }
            Source::Random { rows, parts, keys } => (0..*parts)
                .map(|i| {
                    let n = *parts as u64;
                    let rows = rows / n + u64::from((i as u64) < rows % n);
                    let narrow = predicate.is_some() || projection.is_some();
                    let part = pending(Input::Random {
                        rows,
                        keys: *keys,
                        seed: i as u64,
                    });
                    if narrow { after(part, true) } else { part }
                })
                .collect(),
        })
    }

    /// `group_by(keys).agg(aggs)` of `parts` into `split_out` partitions
    /// (a tree when 1); `partial_input`: the parts are partial results.
    fn aggregate(
        &mut self,
        parts: Vec<Part>,
        keys: &[Expr],
        aggs: &[AggSpec],
        split_out: Option<usize>,
        partial_input: bool,
    ) -> Result<Vec<Part>> {
        let key_names: Vec<String> = keys.iter().map(Expr::output_name).collect();
        let key_cols: Vec<Expr> = key_names.iter().map(col).collect();
        let split_out = split_out.unwrap_or(1).max(1);
        let Some(phases) = two_phase(&key_names, aggs) else {
            // Not decomposable: all rows of a group in one partition first.
            let full = Step::Aggregate {
                keys: keys.to_vec(),
                aggs: aggs.to_vec(),
            };
            if split_out == 1 {
                return Ok(vec![self.gather(parts, "agg-gather")?.with_step(full)]);
            }
            let split = Step::HashSplit {
                keys: keys.to_vec(),
                n: split_out,
            };
            let outs = self.exchange(parts, split, split_out, "agg-shuffle")?;
            return Ok(outs.into_iter().map(|p| p.with_step(full.clone())).collect());
        };
        let partial = Step::Aggregate {
            keys: keys.to_vec(),
            aggs: phases.partial.clone(),
        };
        let merge = Step::Aggregate {
            keys: key_cols.clone(),
            aggs: phases.merge.clone(),
        };
        let finals = Step::Select(phases.finals.clone());
        let mut parts: Vec<Part> = if partial_input {
            parts
        } else {
            parts.into_iter().map(|p| p.with_step(partial.clone())).collect()
        };
        if split_out > 1 {
            let split = Step::HashSplit {
                keys: key_cols,
                n: split_out,
            };
            let outs = self.exchange(parts, split, split_out, "agg-shuffle")?;
            return Ok(outs
                .into_iter()
                .map(|p| p.with_step(merge.clone()).with_step(finals.clone()))
                .collect());
        }
        // A tree: fan_in partial results per merge task.
        let fan_in = self.options.fan_in.max(2);
        let mut level = 0;
        while parts.len() > fan_in {
            let keys = self.emit(parts, &format!("agg-level{level}"))?;
            parts = keys
                .chunks(fan_in)
                .map(|group| {
                    Part::Pending(Pending {
                        args: TaskArgs {
                            input: Input::Deps,
                            steps: vec![merge.clone()],
                        },
                        deps: group.to_vec(),
                    })
                })
                .collect();
            level += 1;
        }
        let one = self.gather(parts, "agg-final")?;
        Ok(vec![one.with_step(merge).with_step(finals)])
    }

    fn join(
        &mut self,
        plan: &LogicalPlan,
        left: &LogicalPlan,
        right: &LogicalPlan,
        spec: &JoinSpec,
    ) -> Result<Vec<Part>> {
        let schema = plan.schema()?.as_ref().clone();
        let (l_rows, r_rows) = (left.estimate_rows(), right.estimate_rows());
        let limit = self.options.broadcast_rows;
        let lparts = self.plan(left)?;
        let rparts = self.plan(right)?;
        let probe = |p: Part, build: &[Key], probe_is_left: bool, spec: &JoinSpec| {
            let p = p.into_pending();
            let probe_deps = p.deps.len();
            let mut deps = p.deps;
            deps.extend_from_slice(build);
            Part::Pending(Pending {
                args: TaskArgs {
                    input: Input::Join {
                        probe: Box::new(p.args),
                        probe_deps,
                        probe_is_left,
                        spec: spec.clone(),
                        schema: schema.clone(),
                    },
                    steps: Vec::new(),
                },
                deps,
            })
        };
        // Broadcast the right side, or the left one of an inner join.
        let broadcast_left = spec.how == JoinType::Inner && l_rows < r_rows && l_rows <= limit;
        if broadcast_left || r_rows <= limit || rparts.len() == 1 {
            let (build_parts, probe_parts, probe_is_left) = if broadcast_left {
                (lparts, rparts, false)
            } else {
                (rparts, lparts, true)
            };
            let mut spec = spec.clone();
            spec.build_left = !probe_is_left;
            let built = if build_parts.len() <= BROADCAST_INPUTS {
                self.emit(build_parts, "join-build")?
            } else {
                let built = self.gather(build_parts, "join-build")?;
                self.emit(vec![built], "join-build")?
            };
            return Ok(probe_parts
                .into_iter()
                .map(|p| probe(p, &built, probe_is_left, &spec))
                .collect());
        }
        // Shuffle both sides on the keys; join partition j with partition j.
        let most = lparts.len().max(rparts.len());
        let n = usize::try_from(l_rows.saturating_add(r_rows).div_ceil(self.options.join_rows.max(1)))
            .unwrap_or(most)
            .clamp(1, most);
        let lkeys: Vec<Expr> = spec.left_on.iter().map(col).collect();
        let rkeys: Vec<Expr> = spec.right_on.iter().map(col).collect();
        let louts = self.exchange(lparts, Step::HashSplit { keys: lkeys, n }, n, "join-left")?;
        let routs = self.exchange(rparts, Step::HashSplit { keys: rkeys, n }, n, "join-right")?;
        let mut out = Vec::with_capacity(n);
        for (l, r) in louts.into_iter().zip(routs) {
            let r = self.emit(vec![r], "join-right-concat")?.remove(0);
            out.push(probe(l, &[r], true, spec));
        }
        Ok(out)
    }

    /// As many partitions as `parts`, partition j holding the j-th range
    /// of the sort keys (see [`crate::range`]): each part is sampled, one
    /// task picks the boundaries, each part splits by them.
    fn range_partition(&mut self, parts: Vec<Part>, by: &[Expr], descending: &[bool]) -> Result<Vec<Part>> {
        let n = parts.len();
        let inputs = self.emit(parts, "sort-input")?;
        let deps = |deps: Vec<Key>, step: Step| {
            Part::Pending(Pending {
                args: TaskArgs {
                    input: Input::Deps,
                    steps: vec![step],
                },
                deps,
            })
        };
        let sample = Step::SortSample {
            by: by.to_vec(),
            rows: crate::range::SAMPLE_ROWS,
        };
        let samples: Vec<Part> = inputs.iter().map(|k| deps(vec![k.clone()], sample.clone())).collect();
        let samples = self.emit(samples, "sort-sample")?;
        let bounds = Step::SortBoundaries {
            descending: descending.to_vec(),
            n,
        };
        let bounds = self.emit(vec![deps(samples, bounds)], "sort-boundaries")?.remove(0);
        let split = Step::RangeSplit {
            by: by.to_vec(),
            descending: descending.to_vec(),
            n,
        };
        let splits = inputs
            .into_iter()
            .map(|k| deps(vec![k, bounds.clone()], split.clone()))
            .collect();
        self.route(splits, n, "sort")
    }

    fn repartition(&mut self, parts: Vec<Part>, n: usize) -> Result<Vec<Part>> {
        let p = parts.len();
        if n == p {
            return Ok(parts);
        }
        if n < p {
            let keys = self.emit(parts, "repartition")?;
            return Ok((0..n)
                .map(|j| {
                    Part::Pending(Pending {
                        args: TaskArgs {
                            input: Input::Deps,
                            steps: Vec::new(),
                        },
                        deps: keys[j * p / n..(j + 1) * p / n].to_vec(),
                    })
                })
                .collect());
        }
        // More partitions: slice each input in about n / p pieces.
        let counts: Vec<usize> = (0..p).map(|i| n / p + usize::from(i < n % p)).collect();
        let parts: Vec<Part> = parts
            .into_iter()
            .zip(&counts)
            .map(|(part, &k)| part.with_step(Step::SliceSplit(k)))
            .collect();
        let splits = self.emit(parts, "repartition-split")?;
        let stage = self.stages.len();
        let mut out = Vec::with_capacity(n);
        for (i, (s, &k)) in splits.iter().zip(&counts).enumerate() {
            for j in 0..k {
                let key: Key = format!("{}-{stage}-repartition-piece-{i}-{j}", self.prefix).into();
                let args = weft_runtime::ops::args(&(j as u32)).map_err(FrameError::Plan)?;
                self.tasks
                    .push(TaskSpec::new(key.clone(), PIECE_OP, args, vec![s.clone()]));
                out.push(Part::Done(key));
            }
        }
        self.stages.push(format!("stage {stage} repartition-pieces: {n} tasks"));
        Ok(out)
    }
}

/// The id of the shuffle at `stage` of the plan `plan`: the same in every
/// run of the plan.
fn shuffle_id(plan: u64, stage: usize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (plan, stage).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::lit;
    use std::sync::Arc;
    use std::time::Instant;

    fn random(parts: usize) -> Arc<LogicalPlan> {
        Arc::new(LogicalPlan::Scan {
            source: Source::Random {
                rows: parts as u64 * 100,
                parts,
                keys: 10,
            },
            schema: crate::ops::random_batch(0, 1, 0).schema(),
            projection: None,
            filters: Vec::new(),
        })
    }

    #[test]
    fn ten_thousand_partitions_lower_in_milliseconds() {
        let plan = LogicalPlan::Aggregate {
            input: Arc::new(LogicalPlan::Filter {
                input: random(10_000),
                predicate: col("value").gt(lit(0.5)),
            }),
            keys: vec![col("key")],
            aggs: vec![AggSpec::from_expr(&col("value").sum().alias("s")).unwrap()],
            split_out: None,
            partial_input: false,
        };
        let t = Instant::now();
        let lowered = Lowering::lower(&plan, "p", PlanOptions::default(), Action::Collect).unwrap();
        let took = t.elapsed();
        // 10^4 fused scan+filter+partial tasks, then a tree of 8-way merges.
        assert_eq!(lowered.graph.tasks.len(), 10_000 + 1250 + 157 + 20 + 3 + 1);
        assert_eq!(lowered.graph.outputs.len(), 1);
        println!(
            "lowered 10^4 partitions into {} tasks in {took:?}",
            lowered.graph.tasks.len()
        );
        assert!(took.as_millis() < 2000, "{took:?}");
    }

    #[test]
    fn sorts_range_partition_and_keep_the_partition_count() {
        let plan = LogicalPlan::Sort {
            input: random(6),
            by: vec![col("key"), col("value")],
            descending: vec![true, false],
        };
        let lowered = Lowering::lower(&plan, "p", PlanOptions::default(), Action::Partitions).unwrap();
        assert_eq!(lowered.graph.outputs.len(), 6);
        for stage in ["sort-sample", "sort-boundaries", "sort-pieces"] {
            assert!(
                lowered.stages.iter().any(|s| s.contains(stage)),
                "{stage}: {:?}",
                lowered.stages
            );
        }
        // Inputs, samples, one boundaries task, splits, 6 x 6 pieces, sorted outputs.
        assert_eq!(lowered.graph.tasks.len(), 6 + 6 + 1 + 6 + 36 + 6);
        let one = LogicalPlan::Sort {
            input: random(1),
            by: vec![col("key")],
            descending: vec![false],
        };
        let lowered = Lowering::lower(&one, "p", PlanOptions::default(), Action::Partitions).unwrap();
        assert_eq!(lowered.graph.tasks.len(), 1);
    }

    #[test]
    fn joins_broadcast_the_small_side_and_shuffle_otherwise() {
        let spec = JoinSpec {
            left_on: vec!["key".into()],
            right_on: vec!["key".into()],
            how: JoinType::Inner,
            build_left: false,
        };
        let join = |l, r| LogicalPlan::Join {
            left: random(l),
            right: random(r),
            spec: spec.clone(),
        };
        let options = PlanOptions {
            broadcast_rows: 1000,
            ..PlanOptions::default()
        };
        let small = Lowering::lower(&join(20, 4), "p", options.clone(), Action::Partitions).unwrap();
        assert!(
            small.stages.iter().any(|s| s.contains("join-build")),
            "{:?}",
            small.stages
        );
        assert_eq!(small.graph.outputs.len(), 20);
        let big = Lowering::lower(&join(20, 30), "p", options.clone(), Action::Partitions).unwrap();
        assert!(
            big.stages.iter().any(|s| s.contains("join-left-pieces")),
            "{:?}",
            big.stages
        );
        // 5000 rows in partitions of about 2000 rows: 3 of them.
        let sized = |join_rows| PlanOptions {
            join_rows,
            ..options.clone()
        };
        assert_eq!(big.graph.outputs.len(), 1, "5000 rows fit one partition by default");
        let three = Lowering::lower(&join(20, 30), "p", sized(2000), Action::Partitions).unwrap();
        assert_eq!(three.graph.outputs.len(), 3);
        let most = Lowering::lower(&join(20, 30), "p", sized(1), Action::Partitions).unwrap();
        assert_eq!(most.graph.outputs.len(), 30, "at most one per input partition");
    }
}
