//! Group-by strategies chosen when the plan runs, from the sizes of the
//! partial results (as Dask's `split_out`). A group-by (or `distinct`)
//! without an explicit `split_out` first computes its partial aggregates,
//! one per partition, and keeps them on the workers; the same graph
//! counts their rows. Few rows in all: a tree merges them. Many: they are
//! shuffled on the keys into partitions of about
//! [`PlanOptions::group_rows`] rows, merged in parallel.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{FrameError, Result};
use crate::expr::{Expr, col};
use crate::frame::Frames;
use crate::groupby::two_phase;
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
    let client = frames.client();
    let base = client.unique_key("frame-partial");
    let lower = |workers: &[weft_runtime::SharedStr], run| {
        let prefix = format!("{base}-r{run}");
        let shuffles = ShuffleRun::new(workers, run, base.as_str());
        Lowering::lower_partials(
            input,
            keys,
            &phases.partial,
            &prefix,
            frames.options().clone(),
            shuffles,
        )
    };
    let partitions = lower(&[], 0)?.graph.outputs.len() - 1;
    if partitions <= 1 {
        return Ok(None);
    }
    let mut futures =
        weft_runtime::shuffle::compute(client, |workers, run| Ok::<_, FrameError>(lower(workers, run)?.graph)).await?;
    let count = futures.pop().expect("the count follows the partials");
    let counted = client.gather(std::slice::from_ref(&count)).await?;
    let rows = crate::frame::first_int(&crate::frame::single_batch(&counted)?, "count")?;
    let partial_schema = LogicalPlan::Aggregate {
        input: input.clone(),
        keys: keys.to_vec(),
        aggs: phases.partial.clone(),
        split_out: None,
        partial_input: false,
    }
    .schema()?;
    let partials = LogicalPlan::Scan {
        source: Source::Partitions {
            keys: futures.iter().map(|f| f.key().clone()).collect(),
            rows,
            hold: Arc::new(futures),
        },
        schema: partial_schema,
        projection: None,
        filters: Vec::new(),
    };
    let merged = LogicalPlan::Aggregate {
        input: Arc::new(partials),
        keys: key_names.iter().map(col).collect(),
        aggs: phases.merge,
        split_out: Some(split_out_for(rows, partitions, frames.options())),
        partial_input: true,
    };
    Ok(Some(Arc::new(LogicalPlan::Select {
        input: Arc::new(merged),
        exprs: phases.finals,
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
    }
}
