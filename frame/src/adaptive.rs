//! Strategies chosen when the plan runs, from the sizes of results
//! computed first.
//!
//! Group-bys, from their partial results (as Dask's `split_out`): a
//! group-by (or `distinct`) without an explicit `split_out` first computes
//! its partial aggregates, one per partition, and keeps them on the
//! workers; the same graph counts their rows. Few rows in all: one task
//! merges them (up to a quarter of [`PlanOptions::group_rows`]), else a
//! tree. Many: they are shuffled on the keys into partitions of about
//! [`PlanOptions::group_rows`] rows, merged in parallel.
//!
//! Joins likewise: a join the lowering would shuffle because a side's row
//! estimate (an upper bound from file metadata) is above
//! [`PlanOptions::broadcast_rows`], where that side is filtered, joined or
//! aggregated so the bound is loose, first computes that side and counts
//! its rows. Small enough: it is broadcast; else it is shuffled from the
//! computed partitions. (TPC-H q5 at SF10: one year's orders of Asia's
//! customers, bounded by the 15M rows of `orders`, are broadcast, so the
//! 60M `lineitem` rows are probed where they are read, not shuffled.) An
//! inner join that would broadcast a large exact side first computes a
//! loose other side, and the smaller of the two is broadcast.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{FrameError, Result};
use crate::expr::{Expr, col};
use crate::frame::Frames;
use crate::groupby::two_phase;
use crate::join::{JoinSpec, JoinType};
use crate::ops::Step;
use crate::optimize::with_inputs;
use crate::physical::{Lowering, PlanOptions, ShuffleRun};
use crate::plan::{LogicalPlan, Source};

/// Output partitions of a group-by whose partial results hold
/// `partial_rows` rows over `partitions` partitions: 1 (a tree) up to
/// `group_rows`, else enough for about `group_rows` each, at most one per
/// partition.
pub fn split_out_for(partial_rows: u64, partitions: usize, options: &PlanOptions) -> usize {
    if partial_rows <= options.group_rows || partitions <= 1 {
        return 1;
    }
    let wanted = partial_rows.div_ceil(options.group_rows.max(1));
    (wanted.min(partitions as u64) as usize).max(2)
}

type Resolved<'a> = Pin<Box<dyn Future<Output = Result<Arc<LogicalPlan>>> + Send + 'a>>;

/// `plan` (optimised) with every group-by and distinct that has no
/// `split_out` replaced by a merge of its partial results, computed now,
/// with the strategy their sizes call for.
pub fn resolve<'a>(frames: &'a Frames, plan: &'a Arc<LogicalPlan>) -> Resolved<'a> {
    Box::pin(async move {
        let mut inputs = Vec::new();
        for i in plan.inputs() {
            inputs.push(resolve(frames, i).await?);
        }
        let plan = Arc::new(with_inputs(plan, inputs));
        match plan.as_ref() {
            LogicalPlan::Aggregate {
                input,
                keys,
                aggs,
                split_out: None,
                partial_input: false,
            } if !keys.is_empty() => Ok(choose(frames, input, keys, aggs).await?.unwrap_or(plan)),
            LogicalPlan::Join { left, right, spec } => {
                Ok(measured_join(frames, left, right, spec).await?.unwrap_or(plan))
            }
            LogicalPlan::Distinct { input } => {
                let keys: Vec<Expr> = input.schema()?.fields().iter().map(|f| col(f.name())).collect();
                Ok(choose(frames, input, &keys, &[]).await?.unwrap_or(plan))
            }
            _ => Ok(plan),
        }
    })
}

/// The group-by of `input` as a merge of its partial results, computed
/// now; `None` where it gains nothing (one partition) or does not
/// decompose (`n_unique`).
async fn choose(
    frames: &Frames,
    input: &Arc<LogicalPlan>,
    keys: &[Expr],
    aggs: &[crate::groupby::AggSpec],
) -> Result<Option<Arc<LogicalPlan>>> {
    let key_names: Vec<String> = keys.iter().map(Expr::output_name).collect();
    let Some(phases) = two_phase(&key_names, aggs) else {
        return Ok(None);
    };
    let step = Step::Aggregate {
        keys: keys.to_vec(),
        aggs: phases.partial.clone(),
    };
    let partial_schema = LogicalPlan::Aggregate {
        input: input.clone(),
        keys: keys.to_vec(),
        aggs: phases.partial.clone(),
        split_out: None,
        partial_input: false,
    }
    .schema()?;
    let Some((partials, rows, partitions)) = computed(frames, input, &[step], partial_schema, "frame-partial").await?
    else {
        return Ok(None);
    };
    let split_out = split_out_for(rows, partitions, frames.options());
    let partials = if split_out > 1 {
        coalesced(frames, partials).await?
    } else if rows <= merge_rows(frames.options()) {
        // Few rows in all: one task merges every partial, a round of
        // fetches and a task less than a tree (TPC-H q3 at SF1: 11,620
        // rows over 56 partials).
        Arc::new(LogicalPlan::Repartition { input: partials, n: 1 })
    } else {
        partials
    };
    let merged = LogicalPlan::Aggregate {
        input: partials,
        keys: key_names.iter().map(col).collect(),
        aggs: phases.merge,
        split_out: Some(split_out),
        partial_input: true,
    };
    Ok(Some(Arc::new(LogicalPlan::Select {
        input: Arc::new(merged),
        exprs: phases.finals,
    })))
}

/// Partial results `partials` (a scan of computed partitions) about to be
/// shuffled, concatenated where they lie into
/// partitions of about a quarter of [`PlanOptions::group_rows`] rows each,
/// so that a few tasks split and send them rather than one per partial
/// (TPC-H q3 at SF10: 528 partials of a few hundred rows, sent by 528
/// tasks, 8% of the query). Partials are ordered by the worker holding
/// them, so each concatenation reads its inputs where it runs.
async fn coalesced(frames: &Frames, partials: Arc<LogicalPlan>) -> Result<Arc<LogicalPlan>> {
    let LogicalPlan::Scan {
        source: Source::Partitions { keys, rows, hold },
        schema,
        ..
    } = partials.as_ref()
    else {
        return Ok(partials);
    };
    let Some(n) = coalesce_to(*rows, keys.len(), frames.options()) else {
        return Ok(partials);
    };
    let holders = frames.client().who_has(keys).await?;
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| holders[i].first().map(|p| p.worker));
    let scan = LogicalPlan::Scan {
        source: Source::Partitions {
            keys: order.iter().map(|&i| keys[i].clone()).collect(),
            rows: *rows,
            hold: hold.clone(),
        },
        schema: schema.clone(),
        projection: None,
        filters: Vec::new(),
    };
    Ok(Arc::new(LogicalPlan::Repartition {
        input: Arc::new(scan),
        n,
    }))
}

/// Partial results' rows one task is given to concatenate or merge: a
/// quarter of [`PlanOptions::group_rows`].
fn merge_rows(options: &PlanOptions) -> u64 {
    (options.group_rows / 4).max(1)
}

/// How many partitions `partitions` partial results of `rows` rows in all
/// are concatenated into before a shuffle: about a quarter of
/// `group_rows` rows each; `None` where that would not divide the tasks
/// by at least four.
pub fn coalesce_to(rows: u64, partitions: usize, options: &PlanOptions) -> Option<usize> {
    let n = usize::try_from(rows.div_ceil(merge_rows(options)))
        .unwrap_or(usize::MAX)
        .max(1);
    (n.saturating_mul(4) <= partitions).then_some(n)
}

/// `input` with `steps` run on each partition, computed now and kept on
/// the workers: a scan of those partitions (of `schema`), their rows in
/// all, and how many there are; `None` for one partition or none, where
/// computing ahead gains nothing.
async fn computed(
    frames: &Frames,
    input: &LogicalPlan,
    steps: &[Step],
    schema: arrow_schema::SchemaRef,
    name: &str,
) -> Result<Option<(Arc<LogicalPlan>, u64, usize)>> {
    let client = frames.client();
    let base = client.unique_key(name);
    let lower = |workers: &[weft_runtime::SharedStr], run| {
        let prefix = format!("{base}-r{run}");
        let shuffles = ShuffleRun::new(workers, run, base.as_str());
        Lowering::lower_counted(input, steps, &prefix, frames.options().clone(), shuffles)
    };
    let partitions = lower(&[], 0)?.graph.outputs.len() / 2;
    if partitions <= 1 {
        return Ok(None);
    }
    let mut futures =
        weft_runtime::shuffle::compute(client, |workers, run| Ok::<_, FrameError>(lower(workers, run)?.graph)).await?;
    let counts = futures.split_off(partitions);
    let mut rows = 0;
    for count in client.gather(&counts).await? {
        rows += crate::frame::first_int(&crate::frame::single_batch(std::slice::from_ref(&count))?, "count")?;
    }
    let scan = LogicalPlan::Scan {
        source: Source::Partitions {
            keys: futures.iter().map(|f| f.key().clone()).collect(),
            rows,
            hold: Arc::new(futures),
        },
        schema,
        projection: None,
        filters: Vec::new(),
    };
    Ok(Some((Arc::new(scan), rows, partitions)))
}

/// Which side of a join to compute ahead, if any, so that its true size
/// decides: row estimates are upper bounds, which filters, joins and
/// aggregates below a side leave loose.
/// - A join the lowering would shuffle: the side that could be broadcast
///   if it were small (broadcast when it is, else shuffled from the
///   computed partitions). For inner joins the loose side with the
///   smaller estimate; otherwise only the right side, the one a broadcast
///   builds.
/// - An inner join that would broadcast an exact side of more than a
///   sixteenth of the limit: the other side when it is loose, so that the
///   smaller of the two is broadcast (TPC-H q10: three months of orders,
///   bounded by all of them, hold fewer rows than the customers).
fn side_to_measure(left: &LogicalPlan, right: &LogicalPlan, spec: &JoinSpec, options: &PlanOptions) -> Option<Side> {
    let limit = options.broadcast_rows;
    let (l, r) = (left.estimate_rows(), right.estimate_rows());
    let inner = spec.how == JoinType::Inner;
    let (loose_left, loose_right) = (!left.estimate_is_exact(), !right.estimate_is_exact());
    let broadcast_left = inner && l < r && l <= limit;
    if broadcast_left || r <= limit {
        let (rows, exact, other, other_loose) = if broadcast_left {
            (l, !loose_left, Side::Right, loose_right)
        } else {
            (r, !loose_right, Side::Left, loose_left)
        };
        return (inner && exact && other_loose && rows > limit / 16).then_some(other);
    }
    match (inner && loose_left, loose_right) {
        (true, true) if l < r => Some(Side::Left),
        (_, true) => Some(Side::Right),
        (true, false) => Some(Side::Left),
        (false, false) => None,
    }
}

/// A side of a join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The left input.
    Left,
    /// The right input.
    Right,
}

/// The join with the side [`side_to_measure`] names computed now; `None`
/// where no side is, or where it has one partition.
async fn measured_join(
    frames: &Frames,
    left: &Arc<LogicalPlan>,
    right: &Arc<LogicalPlan>,
    spec: &JoinSpec,
) -> Result<Option<Arc<LogicalPlan>>> {
    let Some(side) = side_to_measure(left, right, spec, frames.options()) else {
        return Ok(None);
    };
    let input = if side == Side::Left { left } else { right };
    let Some((scan, _, _)) = computed(frames, input, &[], input.schema()?, "frame-join-side").await? else {
        return Ok(None);
    };
    let (left, right) = if side == Side::Left {
        (scan, right.clone())
    } else {
        (left.clone(), scan)
    };
    Ok(Some(Arc::new(LogicalPlan::Join {
        left,
        right,
        spec: spec.clone(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_partial_rows_merge_in_a_tree_and_many_spread() {
        let options = PlanOptions {
            group_rows: 1000,
            ..PlanOptions::default()
        };
        assert_eq!(split_out_for(0, 16, &options), 1);
        assert_eq!(split_out_for(1000, 16, &options), 1);
        assert_eq!(split_out_for(1001, 16, &options), 2);
        assert_eq!(split_out_for(7500, 16, &options), 8);
        assert_eq!(split_out_for(1_000_000, 16, &options), 16);
        assert_eq!(split_out_for(1_000_000, 1, &options), 1);
        // Partials of a shuffle: concatenated 250 rows at a time where that
        // divides the tasks by four at least (TPC-H q3 at SF10: 528
        // partials of 114K rows go as 5 partitions).
        assert_eq!(coalesce_to(2000, 64, &options), Some(8));
        assert_eq!(coalesce_to(2000, 31, &options), None);
        assert_eq!(coalesce_to(114_000, 528, &PlanOptions::default()), Some(5));
        assert_eq!(coalesce_to(1_000_000, 16, &options), None);
    }

    fn random(rows: u64) -> Arc<LogicalPlan> {
        Arc::new(LogicalPlan::Scan {
            source: Source::Random {
                rows,
                parts: 4,
                keys: 10,
            },
            schema: crate::ops::random_batch(0, 1, 0).schema(),
            projection: None,
            filters: Vec::new(),
        })
    }

    fn filtered(rows: u64) -> Arc<LogicalPlan> {
        Arc::new(LogicalPlan::Filter {
            input: random(rows),
            predicate: col("key").lt(crate::expr::lit(1i64)),
        })
    }

    #[test]
    fn a_join_measures_the_loose_side_that_could_be_broadcast() {
        let options = PlanOptions {
            broadcast_rows: 100,
            ..PlanOptions::default()
        };
        let spec = |how| JoinSpec {
            left_on: vec!["key".into()],
            right_on: vec!["key".into()],
            how,
            build_left: false,
        };
        let side = |l: Arc<LogicalPlan>, r: Arc<LogicalPlan>, how| side_to_measure(&l, &r, &spec(how), &options);
        // Known small: broadcast as planned.
        assert_eq!(side(filtered(1000), random(5), JoinType::Inner), None);
        assert_eq!(side(random(5), filtered(1000), JoinType::Inner), None);
        // An exact side of more than a sixteenth of the limit, to be
        // broadcast: the loose other side may be smaller.
        assert_eq!(side(filtered(1000), random(100), JoinType::Inner), Some(Side::Left));
        assert_eq!(side(random(50), filtered(1000), JoinType::Inner), Some(Side::Right));
        assert_eq!(side(random(50), random(1000), JoinType::Inner), None);
        assert_eq!(side(filtered(50), filtered(1000), JoinType::Inner), None);
        assert_eq!(side(filtered(1000), random(100), JoinType::Left), None);
        // Exact estimates above the limit: nothing to learn.
        assert_eq!(side(random(1000), random(1000), JoinType::Inner), None);
        // The loose side, the smaller of two loose ones.
        assert_eq!(side(filtered(1000), random(500), JoinType::Inner), Some(Side::Left));
        assert_eq!(side(random(500), filtered(1000), JoinType::Inner), Some(Side::Right));
        assert_eq!(side(filtered(500), filtered(1000), JoinType::Inner), Some(Side::Left));
        assert_eq!(side(filtered(1000), filtered(500), JoinType::Inner), Some(Side::Right));
        // Only the right side of other joins is ever broadcast.
        assert_eq!(side(filtered(500), random(1000), JoinType::Left), None);
        assert_eq!(side(random(500), filtered(1000), JoinType::Semi), Some(Side::Right));
    }
}
