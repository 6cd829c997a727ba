//! The client's side of a restart: a shuffle whose owner left the cluster
//! cannot finish (its pieces went with the worker, and its outputs are
//! pinned there), so the graph is made again, as a new run over the
//! workers still there, and submitted again.

use std::time::Duration;

use tracing::warn;

use crate::client::{Client, TaskFuture};
use crate::error::RuntimeError;
use crate::graph::Graph;
use crate::ids::SharedStr;
use crate::protocol::TaskError;

use super::ops::{OP_PREFIX, UNPACK_OP};

/// How often the workers are looked at while a shuffle runs.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);

/// How long a shuffle op's failure waits for its cause (a worker lost) to
/// reach the scheduler before it is taken for the answer.
pub const LOSS_GRACE: Duration = Duration::from_secs(3);

/// Runs of one graph before giving up.
pub const MAX_RUNS: u64 = 4;

/// Resolves with the first of `workers` (data addresses) that the
/// scheduler no longer lists, looking every `every`.
pub async fn owner_lost(client: &Client, workers: &[SharedStr], every: Duration) -> Result<SharedStr, RuntimeError> {
    loop {
        let live = client.workers().await?;
        if let Some(lost) = workers.iter().find(|w| !live.iter().any(|l| l.address == **w)) {
            return Ok(lost.clone());
        }
        tokio::time::sleep(every).await;
    }
}

/// Submits `graph_for(workers, run)` (the live workers' data addresses,
/// run 0 first) and waits for its outputs; when the graph has shuffles
/// and one of those workers is lost before the outputs are all done,
/// cancels them and submits a new run, up to [`MAX_RUNS`]. Returns the
/// outputs' futures, all done.
pub async fn compute<E: From<RuntimeError>>(
    client: &Client,
    mut graph_for: impl FnMut(&[SharedStr], u64) -> Result<Graph, E>,
) -> Result<Vec<TaskFuture>, E> {
    let mut last = None;
    for run in 0..MAX_RUNS {
        let workers: Vec<SharedStr> = client.workers().await?.into_iter().map(|w| w.address).collect();
        let graph = graph_for(&workers, run)?;
        let shuffles = graph.tasks.iter().any(|t| t.op.as_str() == UNPACK_OP);
        let futures = client.compute(graph).await?;
        let done = async {
            for future in &futures {
                future.wait().await?;
            }
            Ok::<(), RuntimeError>(())
        };
        if !shuffles {
            // Lost workers are the scheduler's business: it recomputes.
            done.await?;
            return Ok(futures);
        }
        // Ok: the outputs are done (or failed); Err: an owner was lost.
        let outcome = tokio::select! {
            result = done => Ok(result),
            lost = owner_lost(client, &workers, WATCH_EVERY) => Err(lost),
        };
        let lost = match outcome {
            Ok(Ok(())) => return Ok(futures),
            Ok(Err(error)) if !from_shuffle(&error) => return Err(error.into()),
            Ok(Err(error)) => match tokio::time::timeout(LOSS_GRACE, owner_lost(client, &workers, WATCH_EVERY)).await {
                Ok(lost) => (lost?, error.to_string()),
                Err(_) => return Err(error.into()),
            },
            Err(lost) => (lost?, "its outputs cannot finish".to_string()),
        };
        warn!(run, lost = %lost.0, reason = %lost.1, "a shuffle's worker was lost; restarting it");
        client.cancel(&futures);
        last = Some(lost);
    }
    let (worker, reason) = last.map(|(w, r)| (w.to_string(), r)).unwrap_or_default();
    Err(RuntimeError::Shuffle(format!(
        "a shuffle restarted {MAX_RUNS} times and still lost a worker (last {worker}: {reason})"
    ))
    .into())
}

/// Whether `error` is a shuffle op's failure (which a lost worker causes).
fn from_shuffle(error: &RuntimeError) -> bool {
    match error {
        RuntimeError::Task(error) => {
            matches!(error.root_cause(), TaskError::OpFailed { op, .. } if op.as_str().starts_with(OP_PREFIX))
        }
        _ => false,
    }
}
