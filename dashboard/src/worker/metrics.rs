//! A worker's own `/metrics`: its figures in Prometheus' text format.
//!
//! Names carry the `weft_worker_` prefix and their unit; every sample has
//! a `worker` label (its name), so that series join those the scheduler
//! serves about the same worker. The names differ from the scheduler's
//! (`weft_worker_memory_bytes` there is the scheduler's view; here
//! `weft_worker_stored_bytes` is the worker's own), so that sums over
//! both scrape jobs count nothing twice. The list is in [`FAMILIES`].

use weft_runtime::worker::{WorkerDescription, WorkerFigures};

use crate::metrics::Out;

/// Each family served: name, type, help.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "weft_worker_info",
        "gauge",
        "Always 1; the worker's data address and scheduler as labels.",
    ),
    (
        "weft_worker_task_states",
        "gauge",
        "Tasks on this worker by state (waiting, ready, running, fetching, memory).",
    ),
    (
        "weft_worker_tasks_executed_total",
        "counter",
        "Ops run since the worker registered, by outcome (finished, failed).",
    ),
    (
        "weft_worker_paused",
        "gauge",
        "1 while the worker starts no new ops for lack of memory.",
    ),
    (
        "weft_worker_stored_bytes",
        "gauge",
        "Bytes of results this worker holds, by tier (device, host, disk).",
    ),
    (
        "weft_worker_stored_limit_bytes",
        "gauge",
        "Limit on results' bytes, by tier (device, host; 0: none).",
    ),
    (
        "weft_worker_spilled_bytes_total",
        "counter",
        "Bytes of results moved to a slower tier, by the tier they moved to.",
    ),
    (
        "weft_worker_unspilled_bytes_total",
        "counter",
        "Bytes of results read back from disk into host memory.",
    ),
    ("weft_worker_pauses_total", "counter", "Times the worker paused."),
    (
        "weft_worker_received_bytes_total",
        "counter",
        "Bytes of results fetched from peers.",
    ),
    (
        "weft_worker_sent_bytes_total",
        "counter",
        "Bytes of results served to peers and clients.",
    ),
    (
        "weft_worker_received_results_total",
        "counter",
        "Results fetched from peers.",
    ),
    (
        "weft_worker_sent_results_total",
        "counter",
        "Results served to peers and clients.",
    ),
    (
        "weft_worker_cpu_seconds_total",
        "counter",
        "CPU time of the worker's process (user and system).",
    ),
    (
        "weft_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of the worker's process.",
    ),
    ("weft_worker_compute_threads", "gauge", "The worker's compute threads."),
    (
        "weft_worker_uptime_seconds",
        "gauge",
        "Seconds since the worker started.",
    ),
];

/// The text of a worker's `/metrics`.
pub fn encode(d: &WorkerDescription, f: &WorkerFigures) -> String {
    let mut out = Out::new(FAMILIES);
    let w = ("worker", d.name.as_str());
    out.family("weft_worker_info");
    out.sample(
        "weft_worker_info",
        &[w, ("address", &d.address), ("scheduler", &d.scheduler)],
        1.0,
    );
    // Absent while the worker is between schedulers: no sample, rather
    // than zeros that would read as an idle worker.
    out.family("weft_worker_task_states");
    out.family("weft_worker_tasks_executed_total");
    out.family("weft_worker_paused");
    if let Some(t) = &f.tasks {
        for (state, n) in [
            ("waiting", t.waiting),
            ("ready", t.ready),
            ("running", t.running),
            ("fetching", t.fetching),
            ("memory", t.memory),
        ] {
            out.sample("weft_worker_task_states", &[w, ("state", state)], n as f64);
        }
        for (outcome, n) in [("finished", t.finished), ("failed", t.failed)] {
            out.sample("weft_worker_tasks_executed_total", &[w, ("outcome", outcome)], n as f64);
        }
        out.sample("weft_worker_paused", &[w], f64::from(u8::from(t.paused)));
    }
    let m = &f.memory;
    out.family("weft_worker_stored_bytes");
    for (tier, n) in [("device", m.on_device), ("host", m.in_memory), ("disk", m.on_disk)] {
        out.sample("weft_worker_stored_bytes", &[w, ("tier", tier)], n as f64);
    }
    out.family("weft_worker_stored_limit_bytes");
    for (tier, n) in [("device", d.device_limit), ("host", d.memory_limit)] {
        out.sample("weft_worker_stored_limit_bytes", &[w, ("tier", tier)], n as f64);
    }
    out.family("weft_worker_spilled_bytes_total");
    for (tier, n) in [("host", m.device_spilled_bytes), ("disk", m.spilled_bytes)] {
        out.sample("weft_worker_spilled_bytes_total", &[w, ("tier", tier)], n as f64);
    }
    let scalars = [
        ("weft_worker_unspilled_bytes_total", m.unspilled_bytes as f64),
        ("weft_worker_pauses_total", m.pauses as f64),
        ("weft_worker_received_bytes_total", f.bytes_in as f64),
        ("weft_worker_sent_bytes_total", f.bytes_out as f64),
        ("weft_worker_received_results_total", f.fetched as f64),
        ("weft_worker_sent_results_total", f.served as f64),
        ("weft_worker_cpu_seconds_total", f.cpu_seconds),
        ("weft_worker_resident_memory_bytes", f.rss_bytes as f64),
        ("weft_worker_compute_threads", d.nthreads as f64),
        ("weft_worker_uptime_seconds", f.uptime_s),
    ];
    for (name, value) in scalars {
        out.family(name);
        out.sample(name, &[w], value);
    }
    out.finish()
}
