//! `/metrics`: one observation in Prometheus' text format (0.0.4).
//!
//! Every family has `# HELP` and `# TYPE`; names carry the `weft_`
//! prefix and their unit (`_bytes`, `_seconds`), counters end in `_total`;
//! label values are escaped. The list is in [`FAMILIES`].

use std::fmt::Write;

use weft_runtime::observe::{DURATION_BUCKETS_S, Observation};

/// Each family served: name, type, help.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    ("weft_tasks", "gauge", "Tasks the scheduler knows, by state."),
    (
        "weft_task_transitions_total",
        "counter",
        "Task state transitions so far.",
    ),
    (
        "weft_scheduler_events_total",
        "counter",
        "Events the scheduler handled.",
    ),
    (
        "weft_scheduler_ignored_messages_total",
        "counter",
        "Messages ignored as stale or malformed.",
    ),
    ("weft_tasks_finished_total", "counter", "Tasks finished, by op."),
    (
        "weft_task_failures_total",
        "counter",
        "Task runs that failed (retries included), by op.",
    ),
    (
        "weft_task_duration_seconds",
        "histogram",
        "Compute time of finished tasks as their workers measured it, by op.",
    ),
    ("weft_transfers_total", "counter", "Results fetched between workers."),
    (
        "weft_transfer_bytes_total",
        "counter",
        "Bytes of results fetched between workers.",
    ),
    (
        "weft_worker_transfer_bytes_total",
        "counter",
        "Bytes fetched by (in) and from (out) each worker.",
    ),
    (
        "weft_spilled_bytes_total",
        "counter",
        "Bytes moved to a slower memory tier, by the tier they moved to.",
    ),
    (
        "weft_unspilled_bytes_total",
        "counter",
        "Bytes moved back to a faster memory tier, by the tier they moved to.",
    ),
    (
        "weft_worker_memory_bytes",
        "gauge",
        "Bytes of results a worker holds, by tier (device, host, disk).",
    ),
    (
        "weft_worker_memory_limit_bytes",
        "gauge",
        "A worker's memory limit (0: none).",
    ),
    (
        "weft_worker_tasks",
        "gauge",
        "Tasks on a worker: processing, or held in memory.",
    ),
    ("weft_worker_threads", "gauge", "A worker's compute threads."),
    (
        "weft_worker_last_seen_seconds",
        "gauge",
        "Seconds since the scheduler last heard from a worker.",
    ),
    (
        "weft_worker_cpu_ratio",
        "gauge",
        "A worker process's CPU use at its last heartbeat (1: one core busy).",
    ),
    (
        "weft_worker_resident_bytes",
        "gauge",
        "A worker process's resident memory at its last heartbeat.",
    ),
    ("weft_workers", "gauge", "Live workers, by status (running, paused)."),
    ("weft_clients", "gauge", "Connected clients."),
    (
        "weft_scheduler_event_loop_lag_seconds",
        "gauge",
        "How late the scheduler's timer fired last.",
    ),
    (
        "weft_scheduler_event_loop_lag_max_seconds",
        "gauge",
        "The largest such lag since the previous observation.",
    ),
    (
        "weft_dashboard_events_dropped_total",
        "counter",
        "Task-stream events dropped because the buffer was full.",
    ),
];

/// Escapes a label value (backslash, double quote, newline).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A float as Prometheus writes it.
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A Prometheus text being written, over a list of families.
pub(crate) struct Out {
    text: String,
    families: &'static [(&'static str, &'static str, &'static str)],
}

impl Out {
    /// An empty text whose families are described in `families`.
    pub(crate) fn new(families: &'static [(&'static str, &'static str, &'static str)]) -> Out {
        Out {
            text: String::new(),
            families,
        }
    }

    /// The text.
    pub(crate) fn finish(self) -> String {
        self.text
    }

    /// Starts family `name`: its `# HELP` and `# TYPE`.
    pub(crate) fn family(&mut self, name: &str) {
        let (_, kind, help) = self
            .families
            .iter()
            .find(|(n, _, _)| *n == name)
            .copied()
            .unwrap_or((name, "untyped", ""));
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", num(value));
    }

    /// A family of one unlabelled sample.
    pub(crate) fn one(&mut self, name: &str, value: f64) {
        self.family(name);
        self.sample(name, &[], value);
    }
}

/// The text of `/metrics`.
pub fn encode(o: &Observation) -> String {
    let s = &o.snapshot;
    let t = &o.totals;
    let mut out = Out::new(FAMILIES);

    out.family("weft_tasks");
    for (state, n) in s.tasks.pairs() {
        out.sample("weft_tasks", &[("state", state)], n as f64);
    }
    out.one("weft_task_transitions_total", s.stats.transitions as f64);
    out.one("weft_scheduler_events_total", s.stats.events as f64);
    out.one("weft_scheduler_ignored_messages_total", s.stats.ignored as f64);

    let ops: Vec<_> = t.ops.iter().filter(|op| !op.name.is_empty()).collect();
    out.family("weft_tasks_finished_total");
    for op in &ops {
        out.sample("weft_tasks_finished_total", &[("op", &op.name)], op.finished as f64);
    }
    out.family("weft_task_failures_total");
    for op in &ops {
        out.sample("weft_task_failures_total", &[("op", &op.name)], op.failed as f64);
    }
    out.family("weft_task_duration_seconds");
    for op in &ops {
        let mut cumulative = 0u64;
        for (i, count) in op.buckets.iter().enumerate() {
            cumulative += count;
            let le = DURATION_BUCKETS_S.get(i).map_or("+Inf".to_string(), |b| num(*b));
            out.sample(
                "weft_task_duration_seconds_bucket",
                &[("op", &op.name), ("le", &le)],
                cumulative as f64,
            );
        }
        out.sample("weft_task_duration_seconds_sum", &[("op", &op.name)], op.duration_sum_s);
        out.sample(
            "weft_task_duration_seconds_count",
            &[("op", &op.name)],
            cumulative as f64,
        );
    }

    out.one("weft_transfers_total", t.transfers as f64);
    out.one("weft_transfer_bytes_total", t.transfer_bytes as f64);
    let name_of = |id| {
        s.workers
            .iter()
            .find(|w| w.id == id)
            .map_or_else(|| format!("gone-{id}"), |w| w.name.to_string())
    };
    out.family("weft_worker_transfer_bytes_total");
    for (id, w) in &t.workers {
        let name = name_of(*id);
        out.sample(
            "weft_worker_transfer_bytes_total",
            &[("worker", &name), ("direction", "in")],
            w.bytes_in as f64,
        );
        out.sample(
            "weft_worker_transfer_bytes_total",
            &[("worker", &name), ("direction", "out")],
            w.bytes_out as f64,
        );
    }
    for (family, bytes) in [
        ("weft_spilled_bytes_total", &t.spilled),
        ("weft_unspilled_bytes_total", &t.unspilled),
    ] {
        out.family(family);
        for (tier, n) in [("device", bytes.device), ("host", bytes.host), ("disk", bytes.disk)] {
            out.sample(family, &[("tier", tier)], n as f64);
        }
    }

    out.family("weft_worker_memory_bytes");
    for w in &s.workers {
        for (tier, n) in [
            ("device", w.memory.device),
            ("host", w.memory.host),
            ("disk", w.memory.disk),
        ] {
            out.sample(
                "weft_worker_memory_bytes",
                &[("worker", &w.name), ("tier", tier)],
                n as f64,
            );
        }
    }
    out.family("weft_worker_memory_limit_bytes");
    for w in &s.workers {
        out.sample(
            "weft_worker_memory_limit_bytes",
            &[("worker", &w.name)],
            w.memory_limit as f64,
        );
    }
    out.family("weft_worker_tasks");
    for w in &s.workers {
        out.sample(
            "weft_worker_tasks",
            &[("worker", &w.name), ("state", "processing")],
            w.processing as f64,
        );
        out.sample(
            "weft_worker_tasks",
            &[("worker", &w.name), ("state", "memory")],
            w.held as f64,
        );
    }
    out.family("weft_worker_threads");
    for w in &s.workers {
        out.sample("weft_worker_threads", &[("worker", &w.name)], w.nthreads as f64);
    }
    out.family("weft_worker_last_seen_seconds");
    for (id, secs) in &o.last_seen_s {
        out.sample("weft_worker_last_seen_seconds", &[("worker", &name_of(*id))], *secs);
    }
    out.family("weft_worker_cpu_ratio");
    for (id, vitals) in &o.vitals {
        let ratio = f64::from(vitals.cpu_percent) / 100.0;
        out.sample("weft_worker_cpu_ratio", &[("worker", &name_of(*id))], ratio);
    }
    out.family("weft_worker_resident_bytes");
    for (id, vitals) in &o.vitals {
        let rss = vitals.rss_bytes as f64;
        out.sample("weft_worker_resident_bytes", &[("worker", &name_of(*id))], rss);
    }
    let paused = s.workers.iter().filter(|w| w.paused).count();
    out.family("weft_workers");
    out.sample(
        "weft_workers",
        &[("status", "running")],
        (s.workers.len() - paused) as f64,
    );
    out.sample("weft_workers", &[("status", "paused")], paused as f64);
    out.one("weft_clients", s.clients as f64);
    out.one("weft_scheduler_event_loop_lag_seconds", o.loop_lag_s);
    out.one("weft_scheduler_event_loop_lag_max_seconds", o.loop_lag_max_s);
    out.one("weft_dashboard_events_dropped_total", t.events_dropped as f64);
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }

    #[test]
    fn an_empty_observation_encodes_every_scalar_family() {
        let text = encode(&Observation::default());
        for (name, kind, _) in FAMILIES {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name} missing");
        }
        assert!(text.contains("weft_tasks{state=\"erred\"} 0\n"));
        assert!(text.contains("weft_workers{status=\"running\"} 0\n"));
    }
}
