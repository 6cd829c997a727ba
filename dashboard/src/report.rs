//! Performance reports: what happened during a block of work, as one
//! standalone HTML file (no network needed to open it): a summary, time
//! and counts per op, failures, transfers between workers, spilling,
//! memory per worker over the block, and the task stream.
//!
//! ```text
//! let report = PerformanceReport::start(&observer); // observer: cluster.observer()
//! // ... work ...
//! report.finish().await.write("report.html")?;
//! ```
//!
//! The dashboard serves the same for its recent history at `/report`, and
//! a client records one over its own connection with
//! [`crate::PerformanceReports::performance_report`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_runtime::observe::{ObsEvent, Observation, Observer, ReportSample};

/// Task bars drawn at most (thinned evenly beyond).
const MAX_BARS: usize = 20_000;

/// Recording of a block of work; see the module docs.
pub struct PerformanceReport {
    observer: Observer,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Recorded>,
}

#[derive(Default)]
struct Recorded {
    batches: Vec<Arc<Vec<ObsEvent>>>,
    samples: Vec<Arc<Observation>>,
}

impl PerformanceReport {
    /// Starts recording: events from now on, and an observation per
    /// interval (the scheduler takes them while this records).
    pub fn start(observer: &Observer) -> PerformanceReport {
        let mut events = observer.events();
        let mut watch = observer.watch();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut recorded = Recorded::default();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    batch = events.recv() => match batch {
                        Ok(batch) => recorded.batches.push(batch),
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => break,
                    },
                    observation = watch.next() => match observation {
                        Some(o) => recorded.samples.push(o),
                        None => break,
                    },
                }
            }
            // What was published before the stop.
            while let Ok(batch) = events.try_recv() {
                recorded.batches.push(batch);
            }
            recorded
        });
        PerformanceReport {
            observer: observer.clone(),
            stop: Some(stop),
            task,
        }
    }

    /// Stops recording, after one more observation so the last events of
    /// the block are in.
    pub async fn finish(mut self) -> Report {
        let last = self.observer.fresh(std::time::Duration::from_secs(2)).await;
        // The events of the last tick reach the channel with that observation.
        tokio::time::sleep(self.observer.interval() / 4).await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let mut recorded = (&mut self.task).await.unwrap_or_default();
        recorded.samples.push(last);
        let events: Vec<ObsEvent> = recorded.batches.iter().flat_map(|b| b.iter().cloned()).collect();
        Report::new(events, recorded.samples.iter().map(|o| o.report_sample()).collect())
    }
}

impl Drop for PerformanceReport {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Per-op figures of a report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpFigures {
    /// Tasks finished.
    pub finished: u64,
    /// Runs failed.
    pub failed: u64,
    /// Compute seconds, summed.
    pub compute_s: f64,
    /// Bytes of results.
    pub nbytes: u64,
}

/// A finished report.
pub struct Report {
    events: Vec<ObsEvent>,
    samples: Vec<ReportSample>,
    /// Figures per op, by name.
    pub ops: BTreeMap<String, OpFigures>,
    /// Bytes moved between workers: (from, to) names to bytes and count.
    pub transfers: BTreeMap<(String, String), (u64, u64)>,
    /// Bytes moved to a slower tier, and back.
    pub spilled: (u64, u64),
    /// Failures: key, op, worker, message.
    pub failures: Vec<(String, String, String, String)>,
    /// First and last event, milliseconds since the epoch.
    pub span_ms: (f64, f64),
    /// Events of the block left out (a recording's bound, or the
    /// scheduler's buffer), and batches of them lost on the way.
    pub dropped: (u64, u64),
}

impl Report {
    /// A report of what a client recorded
    /// ([`weft_runtime::Client::record`]), with what it could not keep.
    pub fn recorded(recorded: weft_runtime::recording::Recorded) -> Report {
        let mut report = Report::new(recorded.events, recorded.samples);
        report.dropped = (recorded.dropped_events, recorded.lost_batches);
        report
    }

    /// A report of `events`, with `samples` for names and memory over time.
    pub fn new(events: Vec<ObsEvent>, samples: Vec<ReportSample>) -> Report {
        let names: BTreeMap<u32, String> = samples
            .iter()
            .flat_map(|o| o.workers.iter())
            .map(|w| (w.id.as_num(), w.name.to_string()))
            .collect();
        let name = |id: u32| names.get(&id).cloned().unwrap_or_else(|| format!("worker {id}"));
        let op_names = op_names_of(&samples);
        let op_name = |i: u32| op_names.get(i as usize).cloned().unwrap_or_else(|| format!("op {i}"));
        let mut report = Report {
            events: Vec::new(),
            samples: Vec::new(),
            ops: BTreeMap::new(),
            transfers: BTreeMap::new(),
            spilled: (0, 0),
            failures: Vec::new(),
            span_ms: (f64::INFINITY, f64::NEG_INFINITY),
            dropped: (0, 0),
        };
        for e in &events {
            let (start, end) = match e {
                ObsEvent::Task {
                    op,
                    start_ms,
                    end_ms,
                    nbytes,
                    ..
                } => {
                    let f = report.ops.entry(op_name(*op)).or_default();
                    f.finished += 1;
                    f.compute_s += (end_ms - start_ms) / 1e3;
                    f.nbytes += nbytes;
                    (*start_ms, *end_ms)
                }
                ObsEvent::Failed {
                    worker,
                    key,
                    op,
                    at_ms,
                    message,
                } => {
                    report.ops.entry(op.to_string()).or_default().failed += 1;
                    report
                        .failures
                        .push((key.to_string(), op.to_string(), name(worker.as_num()), message.clone()));
                    (*at_ms, *at_ms)
                }
                ObsEvent::Transfer {
                    from,
                    to,
                    nbytes,
                    at_ms,
                    ..
                } => {
                    let from = from.map_or_else(|| "?".to_string(), |f| name(f.as_num()));
                    let t = report.transfers.entry((from, name(to.as_num()))).or_default();
                    t.0 += nbytes;
                    t.1 += 1;
                    (*at_ms, *at_ms)
                }
                ObsEvent::Moved {
                    nbytes,
                    from,
                    to,
                    at_ms,
                    ..
                } => {
                    let slower = matches!(
                        (from, to),
                        (weft_runtime::Tier::Device, _) | (weft_runtime::Tier::Host, weft_runtime::Tier::Disk)
                    );
                    if slower {
                        report.spilled.0 += nbytes;
                    } else {
                        report.spilled.1 += nbytes;
                    }
                    (*at_ms, *at_ms)
                }
            };
            report.span_ms.0 = report.span_ms.0.min(start);
            report.span_ms.1 = report.span_ms.1.max(end);
        }
        report.events = events;
        report.samples = samples;
        report
    }

    /// The report as one HTML file.
    pub fn to_html(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let seconds = if self.span_ms.1 > self.span_ms.0 {
            (self.span_ms.1 - self.span_ms.0) / 1e3
        } else {
            0.0
        };
        let finished: u64 = self.ops.values().map(|o| o.finished).sum();
        let moved: u64 = self.transfers.values().map(|t| t.0).sum();
        let mut html = String::new();
        let _ = write!(
            html,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Weft performance report</title>\
             <style>{STYLE}</style></head><body><h1>Weft performance report</h1>\
             <p id=\"summary\">{finished} tasks finished in {seconds:.3} s; {} failed; {} moved between workers; \
             {} spilled, {} read back.</p>",
            self.failures.len(),
            bytes(moved),
            bytes(self.spilled.0),
            bytes(self.spilled.1),
        );
        if self.dropped != (0, 0) {
            let _ = write!(
                html,
                "<p id=\"dropped\"><strong>{} events dropped</strong> (past the recording's bound or the \
                 scheduler's buffer) and {} batches of events lost: the figures below miss them.</p>",
                self.dropped.0, self.dropped.1
            );
        }
        html.push_str("<h2>Task stream</h2><canvas id=\"stream\" width=\"1200\" height=\"200\"></canvas>");
        html.push_str("<h2>Per op</h2><table id=\"ops\"><tr><th>op</th><th>finished</th><th>failed</th><th>compute</th><th>mean</th><th>result bytes</th></tr>");
        for (op, f) in &self.ops {
            let mean = if f.finished > 0 {
                f.compute_s / f.finished as f64
            } else {
                0.0
            };
            let _ = write!(
                html,
                "<tr data-op=\"{0}\"><td>{0}</td><td class=\"n\">{1}</td><td class=\"n\">{2}</td><td class=\"n\">{3:.3} s</td><td class=\"n\">{4:.3} ms</td><td class=\"n\">{5}</td></tr>",
                esc(op),
                f.finished,
                f.failed,
                f.compute_s,
                mean * 1e3,
                bytes(f.nbytes)
            );
        }
        html.push_str("</table><h2>Transfers</h2><table id=\"transfers\"><tr><th>from</th><th>to</th><th>bytes</th><th>results</th></tr>");
        for ((from, to), (n, count)) in &self.transfers {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{count}</td></tr>",
                esc(from),
                esc(to),
                bytes(*n)
            );
        }
        html.push_str("</table><h2>Failures</h2><ul id=\"failures\">");
        for (key, op, worker, message) in &self.failures {
            let _ = write!(
                html,
                "<li><code>{}</code> ({}) on {}: {}</li>",
                esc(key),
                esc(op),
                esc(worker),
                esc(message)
            );
        }
        html.push_str("</ul><h2>Memory per worker</h2><canvas id=\"memory\" width=\"1200\" height=\"160\"></canvas>");
        // The data for the drawings, inline.
        let step = self
            .events
            .iter()
            .filter(|e| matches!(e, ObsEvent::Task { .. }))
            .count()
            .div_ceil(MAX_BARS)
            .max(1);
        let mut n = 0usize;
        let bars: Vec<&ObsEvent> = self
            .events
            .iter()
            .filter(|e| {
                if matches!(e, ObsEvent::Task { .. }) {
                    n += 1;
                    (n - 1).is_multiple_of(step)
                } else {
                    true
                }
            })
            .collect();
        let memory: Vec<serde_json::Value> = self
            .samples
            .iter()
            .map(|o| {
                let workers: BTreeMap<String, u64> = o
                    .workers
                    .iter()
                    .map(|w| (w.name.to_string(), w.memory.total()))
                    .collect();
                json!({"t": o.unix_ms, "workers": workers})
            })
            .collect();
        let data = json!({"events": bars, "memory": memory, "span": [self.span_ms.0, self.span_ms.1], "ops": op_names_of(&self.samples)});
        // `</` cannot end the script early.
        let data = data.to_string().replace("</", "<\\/");
        let _ = write!(html, "<script>const DATA = {data};\n{SCRIPT}</script></body></html>");
        html
    }

    /// Writes [`Report::to_html`] to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_html())
    }
}

/// Op names by index, as the last sample has them.
fn op_names_of(samples: &[ReportSample]) -> Vec<String> {
    samples
        .last()
        .map(|o| o.ops.iter().map(|op| op.to_string()).collect())
        .unwrap_or_default()
}

fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

const STYLE: &str = "body{font:13px system-ui,sans-serif;margin:20px;color:#1d1f24}table{border-collapse:collapse}\
th,td{padding:3px 10px;border-bottom:1px solid #dde0e6;text-align:left}td.n{text-align:right}\
canvas{border:1px solid #dde0e6;max-width:100%}h2{font-size:15px;margin-top:22px}code{background:#f3f3f5}";

const SCRIPT: &str = include_str!("../assets/report.js");

#[cfg(test)]
mod tests {
    use super::*;
    use weft_runtime::recording::Recorded;

    #[test]
    fn a_recording_that_lost_events_says_how_many() {
        let recorded = Recorded {
            dropped_events: 42,
            lost_batches: 2,
            ..Recorded::default()
        };
        let html = Report::recorded(recorded).to_html();
        assert!(html.contains("<strong>42 events dropped</strong>"), "{html}");
        assert!(html.contains("2 batches of events lost"));
        let whole = Report::recorded(Recorded::default()).to_html();
        assert!(!whole.contains("id=\"dropped\""));
    }
}
