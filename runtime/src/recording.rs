//! A client's recording of the scheduler's task stream over a block of
//! work, for performance reports (`weft-dashboard` renders them).
//!
//! [`Client::record`] asks the scheduler for its task stream
//! ([`FromClient::Observe`](crate::protocol::FromClient::Observe)): the
//! scheduler's reactor streams events and samples of its state, four times
//! a second, over the client's own connection, for as long as the block
//! lasts. [`Recording::finish`] stops it and waits for the last batch,
//! which holds everything the scheduler heard before the stop. What the
//! client keeps is bounded: past `max_events` events, more are counted
//! as dropped, not kept.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::{Result, RuntimeError};
use crate::observe::{ObsEvent, ObservedBatch, ReportSample};
use crate::protocol::ToClient;

/// Events a recording keeps by default (about 100 MB at most).
pub const DEFAULT_MAX_EVENTS: usize = 1 << 20;

/// What a recording holds once finished.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    /// The events of the block, in order.
    pub events: Vec<ObsEvent>,
    /// Names and memory per worker, one sample per batch.
    pub samples: Vec<ReportSample>,
    /// Events of the block not kept: past the recording's bound, or
    /// dropped by the scheduler for a full buffer.
    pub dropped_events: u64,
    /// Batches of events the scheduler's stream to this client fell
    /// behind by and lost (their events are not counted above).
    pub lost_batches: u64,
}

/// A recording under way; see the module docs.
pub struct Recording {
    client: Client,
    task: JoinHandle<std::result::Result<Recorded, String>>,
}

impl Client {
    /// Starts recording the scheduler's task stream, keeping at most
    /// `max_events` events (see [`DEFAULT_MAX_EVENTS`]). Work submitted
    /// after this call is in the recording; work the scheduler finished
    /// before it is not.
    pub async fn record(&self, max_events: usize) -> Result<Recording> {
        let stream = self.observe()?;
        let task = tokio::spawn(collect(stream, max_events));
        Ok(Recording {
            client: self.clone(),
            task,
        })
    }
}

impl Recording {
    /// Stops recording and returns what was recorded, once the scheduler's
    /// last batch is in.
    pub async fn finish(mut self) -> Result<Recorded> {
        self.client.stop_observing()?;
        let scheduler = self.client.scheduler_address().to_string();
        match (&mut self.task).await {
            Ok(Ok(recorded)) => Ok(recorded),
            Ok(Err(reason)) => Err(RuntimeError::protocol(&scheduler, reason)),
            Err(error) => Err(RuntimeError::protocol(
                &scheduler,
                format!("the recording stopped: {error}"),
            )),
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if !self.task.is_finished() {
            // Abandoned: the scheduler need not stream any longer.
            let _ = self.client.stop_observing();
            self.task.abort();
        }
    }
}

/// Keeps what the stream brings until its last batch.
async fn collect(
    mut stream: mpsc::UnboundedReceiver<ToClient>,
    max_events: usize,
) -> std::result::Result<Recorded, String> {
    let mut recorded = Recorded::default();
    // The scheduler's drop count when the recording began.
    let mut dropped_before: Option<u64> = None;
    loop {
        let message = stream
            .recv()
            .await
            .ok_or("the connection to the scheduler ended before the recording did")?;
        let (json, last) = match message {
            ToClient::Observed { json, last } => (json, last),
            ToClient::ObserveRefused { reason } => return Err(format!("cannot record the task stream: {reason}")),
            other => return Err(format!("unexpected message in the task stream: {other:?}")),
        };
        let batch: ObservedBatch =
            serde_json::from_str(&json).map_err(|e| format!("malformed task-stream batch: {e}"))?;
        let room = max_events.saturating_sub(recorded.events.len());
        let n = batch.events.len();
        recorded.events.extend(batch.events.into_iter().take(room));
        recorded.dropped_events += n.saturating_sub(room) as u64;
        recorded.samples.push(batch.sample);
        recorded.lost_batches = batch.lost_batches;
        let before = *dropped_before.get_or_insert(batch.events_dropped);
        if last {
            recorded.dropped_events += batch.events_dropped.saturating_sub(before);
            return Ok(recorded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkerId;

    fn batch(events: usize, events_dropped: u64, last: bool) -> ToClient {
        let events = (0..events)
            .map(|i| ObsEvent::Task {
                worker: WorkerId::new(0),
                op: 0,
                start_ms: i as f64,
                end_ms: i as f64 + 1.0,
                nbytes: 8,
            })
            .collect();
        let batch = ObservedBatch {
            events,
            events_dropped,
            ..ObservedBatch::default()
        };
        let json = serde_json::to_string(&batch).expect("JSON");
        ToClient::Observed { json, last }
    }

    #[tokio::test]
    async fn events_past_the_bound_and_those_the_scheduler_dropped_are_counted() {
        let (tx, rx) = mpsc::unbounded_channel();
        for message in [batch(6, 100, false), batch(6, 103, false), batch(1, 104, true)] {
            tx.send(message).expect("open");
        }
        let recorded = collect(rx, 10).await.expect("recorded");
        assert_eq!(recorded.events.len(), 10);
        assert_eq!(recorded.samples.len(), 3);
        // 3 past the bound, 4 dropped by the scheduler meanwhile.
        assert_eq!(recorded.dropped_events, 3 + 4);
    }

    #[tokio::test]
    async fn a_refusal_or_a_lost_connection_is_an_error_that_says_so() {
        let (tx, rx) = mpsc::unbounded_channel();
        let reason = "no dashboard".to_string();
        tx.send(ToClient::ObserveRefused { reason }).expect("open");
        let error = collect(rx, 10).await.expect_err("refused");
        assert!(error.contains("no dashboard"), "{error}");
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(batch(2, 0, false)).expect("open");
        drop(tx);
        let error = collect(rx, 10).await.expect_err("cut short");
        assert!(error.contains("ended before the recording did"), "{error}");
    }
}
