//! Ops short enough to run on the worker's event loop. Handing a task to a
//! compute thread and its result back wakes two threads, several
//! microseconds of system time on a busy machine: more than a no-op, an
//! addition or a small concatenation takes.
//!
//! An op runs inline once it has run [`MIN_RUNS`] times here and the moving
//! average of its run times is at most [`MAX_INLINE_US`]. An average, not
//! the longest run: a thread preempted in the middle of an op measures the
//! wait too. A run that turns slow pushes the average up, and the op goes
//! back to the compute threads until its runs there bring it down; the
//! worst it does is hold up this worker's messages for that one run.

use crate::ids::{FxHashMap, SharedStr};

/// Runs an op must have behind it before it may run inline.
pub const MIN_RUNS: u32 = 3;

/// Longest average run, in microseconds, of an op that runs inline.
pub const MAX_INLINE_US: f64 = 50.0;

/// Weight of the latest run in the moving average.
const WEIGHT: f64 = 0.125;

/// What the worker has seen of each op's run time.
#[derive(Debug, Default)]
pub struct QuickOps {
    ops: FxHashMap<SharedStr, Runs>,
}

#[derive(Debug, Default)]
struct Runs {
    count: u32,
    average_us: f64,
}

impl QuickOps {
    /// Records one run of `op`.
    pub fn record(&mut self, op: &SharedStr, compute_us: u64) {
        let runs = match self.ops.get_mut(op.as_str()) {
            Some(runs) => runs,
            None => self.ops.entry(op.clone()).or_default(),
        };
        let us = compute_us as f64;
        runs.average_us = if runs.count == 0 {
            us
        } else {
            runs.average_us + WEIGHT * (us - runs.average_us)
        };
        runs.count = runs.count.saturating_add(1);
    }

    /// The average run, in microseconds, of `op` where it may run inline.
    pub fn inline_us(&self, op: &str) -> Option<f64> {
        // Shuffle ops wait on peers and the disk from a compute thread.
        if op.starts_with(crate::shuffle::OP_PREFIX) {
            return None;
        }
        self.ops
            .get(op)
            .filter(|runs| runs.count >= MIN_RUNS && runs.average_us <= MAX_INLINE_US)
            .map(|runs| runs.average_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ops_run_inline_after_a_few_runs_and_stop_while_slow() {
        let mut quick = QuickOps::default();
        let op = SharedStr::from("add");
        let is_quick = |quick: &QuickOps, op: &str| quick.inline_us(op).is_some();
        assert!(!is_quick(&quick, "add"), "never seen");
        for _ in 0..MIN_RUNS - 1 {
            quick.record(&op, 3);
        }
        assert!(!is_quick(&quick, "add"), "too few runs");
        quick.record(&op, 3);
        assert_eq!(quick.inline_us("add"), Some(3.0));
        // A preempted run: a blip, not a verdict.
        quick.record(&op, 200);
        assert!(is_quick(&quick, "add"));
        // A run that turned slow sends it to the compute threads ...
        quick.record(&op, 20_000);
        assert!(!is_quick(&quick, "add"));
        // ... until fast runs there bring the average back down.
        let mut runs = 0;
        while !is_quick(&quick, "add") {
            quick.record(&op, 3);
            runs += 1;
        }
        assert!((20..60).contains(&runs), "{runs} runs");
        assert!(!is_quick(&quick, "sum"), "other ops are their own");
    }
}
