//! `/api/state`: one observation as JSON, arranged for pages and scripts.
//!
//! ```text
//! { "seq", "unix_ms", "clients", "loop_lag_s",
//!   "tasks": {released, waiting, queued, processing, memory, erred, total},
//!   "workers": [{id, name, address, nthreads, memory_limit, resources,
//!                processing, held, memory: {device, host, disk}, paused,
//!                last_seen_s, bytes_in, bytes_out, cpu_percent, rss_bytes,
//!                dashboard}],   // dashboard: the worker's own page, or null
//!   "thresholds": {target, spill, pause, terminate},   // fractions of memory_limit
//!   "groups": [{name, op, states: {...}, nbytes}], "group_edges": [[from, to]],
//!   "ops": [{name, finished, failed, avg_duration_s, duration_sum_s}],
//!   "erred": [{key, op, message}], "n_erred",
//!   "transfers": {count, bytes}, "spilled": {device, host, disk}, "unspilled": {...},
//!   "stats": {transitions, events, ignored, steals, recomputed} }
//! ```

use serde_json::{Value, json};
use weft_runtime::observe::Observation;
use weft_runtime::store::MemoryConfig;

/// The JSON of `/api/state` (also the `state` of each event-stream message).
pub fn to_json(o: &Observation) -> Value {
    let s = &o.snapshot;
    let workers: Vec<Value> = s
        .workers
        .iter()
        .map(|w| {
            let last_seen = o.last_seen_s.iter().find(|(id, _)| *id == w.id).map(|(_, s)| *s);
            let vitals = o.vitals.iter().find(|(id, _)| *id == w.id).map(|(_, v)| *v);
            let io = o
                .totals
                .workers
                .iter()
                .find(|(id, _)| *id == w.id)
                .map(|(_, t)| *t)
                .unwrap_or_default();
            json!({
                "id": w.id,
                "name": w.name,
                "address": w.address,
                "nthreads": w.nthreads,
                "memory_limit": w.memory_limit,
                "resources": w.resources,
                "processing": w.processing,
                "held": w.held,
                "memory": w.memory,
                "paused": w.paused,
                "last_seen_s": last_seen,
                "bytes_in": io.bytes_in,
                "bytes_out": io.bytes_out,
                "cpu_percent": vitals.map(|v| v.cpu_percent),
                "rss_bytes": vitals.map(|v| v.rss_bytes),
                "dashboard": w.dashboard,
            })
        })
        .collect();
    let ops: Vec<Value> = s
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let totals = o.totals.ops.get(i);
            json!({
                "name": op.name,
                "finished": op.finished,
                "failed": totals.map_or(0, |t| t.failed),
                "avg_duration_s": op.avg_duration_s,
                "duration_sum_s": totals.map_or(0.0, |t| t.duration_sum_s),
            })
        })
        .collect();
    let memory = MemoryConfig::default();
    let mut tasks = serde_json::to_value(s.tasks).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut tasks {
        map.insert("total".into(), s.tasks.total().into());
    }
    json!({
        "seq": o.seq,
        "unix_ms": o.unix_ms,
        "clients": s.clients,
        "loop_lag_s": o.loop_lag_s,
        "loop_lag_max_s": o.loop_lag_max_s,
        "snapshot_s": o.snapshot_s,
        "tasks": tasks,
        "workers": workers,
        "thresholds": {
            "target": memory.target,
            "spill": memory.spill,
            "pause": memory.pause,
            "terminate": memory.terminate,
        },
        "groups": s.groups,
        "group_edges": s.group_edges,
        "ops": ops,
        "erred": s.erred,
        "n_erred": s.tasks.erred,
        "transfers": {"count": o.totals.transfers, "bytes": o.totals.transfer_bytes},
        "spilled": o.totals.spilled,
        "unspilled": o.totals.unspilled,
        "events_dropped": o.totals.events_dropped,
        "stats": s.stats,
    })
}
