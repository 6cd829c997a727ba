//! The shuffle's task pattern: `n + m + 2` tasks for `n` inputs and `m`
//! outputs.

use crate::graph::{Annotations, TaskSpec};
use crate::ids::Key;
use crate::ops::args;

use super::ops::{BARRIER_OP, PLAN_OP, TRANSFER_OP, TransferArgs, UNPACK_OP, UnpackArgs};
use super::{Call, ShuffleSpec};

/// The tasks of one shuffle run and the keys of its outputs, in order.
#[derive(Debug)]
pub struct ShuffleTasks {
    /// Plan, transfers, barrier and unpacks.
    pub tasks: Vec<TaskSpec>,
    /// The unpack tasks' keys: output `j` is `outputs[j]`.
    pub outputs: Vec<Key>,
}

/// The tasks of `spec` under keys starting `prefix`: input `i` is
/// `inputs[i]`, a split op and the keys it reads, and `piece` picks one
/// output's piece of a split (its argument is the output index as a
/// `u32`); output `j` combines its pieces with `combine(j)`. Outputs are
/// pinned to their owners (unpinned when `spec` names no workers, a plan
/// only shown, never run).
pub fn tasks(
    prefix: &str,
    spec: &ShuffleSpec,
    inputs: Vec<(Call, Vec<Key>)>,
    piece: &str,
    combine: impl Fn(u32) -> Call,
) -> Result<ShuffleTasks, String> {
    if inputs.len() != spec.inputs as usize {
        return Err(format!(
            "shuffle {} has {} inputs, its spec says {}",
            spec.id,
            inputs.len(),
            spec.inputs
        ));
    }
    let mut tasks = Vec::with_capacity(inputs.len() + spec.outputs as usize + 2);
    let plan: Key = format!("{prefix}-plan").into();
    tasks.push(TaskSpec::new(plan.clone(), PLAN_OP, args(spec)?, Vec::new()));
    let mut transfers = Vec::with_capacity(inputs.len());
    for (input, (split, keys)) in (0u32..).zip(inputs) {
        let key: Key = format!("{prefix}-transfer-{input}").into();
        let mut deps = Vec::with_capacity(keys.len() + 1);
        deps.push(plan.clone());
        deps.extend(keys);
        let task_args = TransferArgs {
            input,
            split,
            piece: piece.to_string(),
        };
        tasks.push(TaskSpec::new(key.clone(), TRANSFER_OP, args(&task_args)?, deps));
        transfers.push(key);
    }
    let barrier: Key = format!("{prefix}-barrier").into();
    tasks.push(TaskSpec::new(barrier.clone(), BARRIER_OP, args(&spec.id)?, transfers));
    let mut outputs = Vec::with_capacity(spec.outputs as usize);
    for output in 0..spec.outputs {
        let key: Key = format!("{prefix}-unpack-{output}").into();
        let task_args = UnpackArgs {
            id: spec.id,
            run: spec.run,
            inputs: spec.inputs,
            output,
            combine: combine(output),
        };
        let mut task = TaskSpec::new(key.clone(), UNPACK_OP, args(&task_args)?, vec![barrier.clone()]);
        if let Some(owner) = spec.owner(output) {
            task.annotations = Annotations {
                workers: vec![owner.clone()],
                ..Annotations::default()
            };
        }
        tasks.push(task);
        outputs.push(key);
    }
    Ok(ShuffleTasks { tasks, outputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(inputs: u32, outputs: u32, workers: &[&str]) -> ShuffleSpec {
        ShuffleSpec {
            id: 7,
            run: 0,
            inputs,
            outputs,
            workers: workers.iter().map(|w| (*w).into()).collect(),
        }
    }

    fn split(i: u32) -> (Call, Vec<Key>) {
        let call = Call {
            op: "split".into(),
            args: args(&i).unwrap(),
        };
        (call, vec![format!("in-{i}").into()])
    }

    fn combine(_: u32) -> Call {
        Call {
            op: "concat".into(),
            args: bytes::Bytes::new(),
        }
    }

    #[test]
    fn a_shuffle_is_linear_in_its_partitions_and_pins_outputs_round_robin() {
        let spec = spec(3, 5, &["tcp://a:1", "tcp://b:2"]);
        let shuffle = tasks("s", &spec, (0..3).map(split).collect(), "piece", combine).unwrap();
        assert_eq!(shuffle.tasks.len(), 3 + 5 + 2);
        assert_eq!(shuffle.outputs.len(), 5);
        let owners: Vec<&str> = shuffle.tasks[5..]
            .iter()
            .map(|t| t.annotations.workers[0].as_str())
            .collect();
        assert_eq!(
            owners,
            ["tcp://a:1", "tcp://b:2", "tcp://a:1", "tcp://b:2", "tcp://a:1"]
        );
        assert!(shuffle.tasks[5..].iter().all(|t| !t.annotations.allow_other_workers));
        let barrier = &shuffle.tasks[4];
        assert_eq!(barrier.op.as_str(), BARRIER_OP);
        assert_eq!(barrier.deps.len(), 3);
        assert_eq!(shuffle.tasks[1].deps, [Key::from("s-plan"), Key::from("in-0")]);
        let wrong = tasks("s", &spec, (0..2).map(split).collect(), "piece", combine).unwrap_err();
        assert!(wrong.contains("2 inputs"), "{wrong}");
    }

    #[test]
    fn ten_thousand_partitions_make_a_graph_in_milliseconds() {
        let n = 10_000;
        let spec = spec(n, n, &["tcp://a:1", "tcp://b:2", "tcp://c:3"]);
        let started = std::time::Instant::now();
        let shuffle = tasks("big", &spec, (0..n).map(split).collect(), "piece", combine).unwrap();
        assert_eq!(shuffle.tasks.len(), 2 * n as usize + 2);
        // Generous for a loaded debug build; a release build takes a few ms.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
