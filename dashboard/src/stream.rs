//! The live feed behind the pages: recent task-stream events and one
//! message per observation for each open event stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;
use weft_runtime::observe::{ObsEvent, Observer, Watch};

/// Seconds of events kept for pages that open later.
const HISTORY_MS: f64 = 60_000.0;

/// Events kept at most, whatever their age.
const HISTORY_MAX: usize = 50_000;

/// Task bars sent in one message at most; more are thinned evenly (the
/// message says by how much). Other events (failures, transfers, spills)
/// are capped separately.
const MAX_TASKS_PER_MESSAGE: usize = 2_000;
const MAX_OTHER_PER_MESSAGE: usize = 2_000;

/// Batches of events as the scheduler published them.
type Batch = Arc<Vec<ObsEvent>>;

/// The last minute of events, shared by the feeds. Batches are kept as
/// published (shared, never copied event by event).
#[derive(Clone, Default)]
pub struct History {
    batches: Arc<Mutex<VecDeque<Batch>>>,
}

impl History {
    /// Starts collecting from `observer`.
    pub fn start(observer: &Observer) -> (History, JoinHandle<()>) {
        let history = History::default();
        let mut rx = observer.events();
        let batches = history.batches.clone();
        let task = tokio::spawn(async move {
            let mut kept = 0usize;
            loop {
                let batch = match rx.recv().await {
                    Ok(batch) => batch,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let Ok(mut batches) = batches.lock() else {
                    return;
                };
                let newest = batch.last().map_or(0.0, ObsEvent::at_ms);
                kept += batch.len();
                batches.push_back(batch);
                while let Some(oldest) = batches.front() {
                    let old = oldest.last().is_none_or(|e| e.at_ms() < newest - HISTORY_MS);
                    if !(old || kept > HISTORY_MAX) || batches.len() == 1 {
                        break;
                    }
                    kept -= oldest.len();
                    batches.pop_front();
                }
            }
        });
        (history, task)
    }

    /// The batches kept.
    pub(crate) fn recent(&self) -> Vec<Batch> {
        self.batches
            .lock()
            .map(|b| b.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Events kept.
    pub fn len(&self) -> usize {
        self.batches.lock().map_or(0, |b| b.iter().map(|b| b.len()).sum())
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One page's event stream.
pub(crate) struct Feed {
    watch: Watch,
    events: Receiver<Batch>,
    history: Option<Vec<Batch>>,
}

impl Feed {
    pub(crate) fn new(observer: &Observer, history: &History) -> Feed {
        // Subscribe first, so nothing falls between the history and the feed.
        let events = observer.events();
        Feed {
            watch: observer.watch(),
            events,
            history: Some(history.recent()),
        }
    }

    /// The next message (JSON text); `None` when the scheduler stopped.
    pub(crate) async fn next(&mut self) -> Option<String> {
        let (observation, mut batches) = match self.history.take() {
            Some(history) => {
                let latest = self.watch.latest();
                let observation = if latest.seq == 0 {
                    self.watch.next().await?
                } else {
                    latest
                };
                (observation, history)
            }
            None => (self.watch.next().await?, Vec::new()),
        };
        let mut lost = 0u64;
        loop {
            match self.events.try_recv() {
                Ok(batch) => batches.push(batch),
                Err(TryRecvError::Lagged(n)) => lost += n,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        let (events, thinned) = thin(&batches);
        let message = Message {
            state: crate::state::to_json(&observation),
            events,
            thinned,
            lost_batches: lost,
        };
        // Written straight to text: the events (up to a few thousand)
        // never become a JSON tree.
        Some(serde_json::to_string(&message).unwrap_or_else(|error| {
            serde_json::json!({ "error": format!("cannot encode the update: {error}") }).to_string()
        }))
    }
}

/// One event-stream message.
#[derive(serde::Serialize)]
struct Message<'a> {
    /// `/api/state` of the observation.
    state: serde_json::Value,
    /// The task stream since the previous message, thinned.
    events: Vec<&'a ObsEvent>,
    /// One task bar in `thinned` is sent.
    thinned: usize,
    /// Event batches this stream fell behind by and lost.
    lost_batches: u64,
}

/// Keeps at most [`MAX_TASKS_PER_MESSAGE`] task bars (every k-th) and
/// [`MAX_OTHER_PER_MESSAGE`] other events (the latest); returns k.
fn thin(batches: &[Batch]) -> (Vec<&ObsEvent>, usize) {
    let all = || batches.iter().flat_map(|b| b.iter());
    let tasks = all().filter(|e| matches!(e, ObsEvent::Task { .. })).count();
    let others = all().count() - tasks;
    let k = tasks.div_ceil(MAX_TASKS_PER_MESSAGE).max(1);
    let skip_others = others.saturating_sub(MAX_OTHER_PER_MESSAGE);
    let (mut t, mut o) = (0usize, 0usize);
    let kept = all()
        .filter(|e| {
            if matches!(e, ObsEvent::Task { .. }) {
                t += 1;
                (t - 1).is_multiple_of(k)
            } else {
                o += 1;
                o > skip_others
            }
        })
        .collect();
    (kept, k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_runtime::WorkerId;

    fn task(i: usize) -> ObsEvent {
        ObsEvent::Task {
            worker: WorkerId::new(0),
            op: 0,
            start_ms: i as f64,
            end_ms: i as f64 + 1.0,
            nbytes: 0,
        }
    }

    #[test]
    fn thinning_keeps_every_kth_task_and_all_few_others() {
        let mut events: Vec<ObsEvent> = (0..5000).map(task).collect();
        events.push(ObsEvent::Transfer {
            from: None,
            to: WorkerId::new(1),
            key: "x".into(),
            nbytes: 10,
            at_ms: 1.0,
        });
        let batches = vec![Arc::new(events)];
        let (kept, k) = thin(&batches);
        assert_eq!(k, 3);
        assert_eq!(kept.len(), 5000usize.div_ceil(3) + 1);
        assert!(matches!(kept.last(), Some(ObsEvent::Transfer { .. })));
        let few = [Arc::new((0..10).map(task).collect())];
        let (kept, k) = thin(&few);
        assert_eq!((kept.len(), k), (10, 1));
    }
}
