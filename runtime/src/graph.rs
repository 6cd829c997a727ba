//! The graph model: what a client submits, and the memory-friendly ordering
//! the scheduler gives it.
//!
//! A task is a key, an op name, serialized arguments, the keys it depends on
//! and annotations. A [`Graph`] is submitted in one message together with the
//! keys the client wants futures on; everything not needed for those is
//! culled by the scheduler.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::{Key, SharedStr};
use crate::protocol::ResourceAmount;

/// Optional per-task hints and constraints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotations {
    /// Larger runs earlier (ties broken by submission order).
    pub priority: i32,
    /// Resources the task needs while running, such as `gpu = 1`. Only
    /// workers that provide at least this much are eligible.
    pub resources: Vec<ResourceAmount>,
    /// How many times a failing op is re-run before the task errs.
    pub retries: u8,
    /// Worker names or addresses the task may run on (empty: any).
    pub workers: Vec<SharedStr>,
    /// With `workers` set: fall back to any worker when none of them can run
    /// the task.
    pub allow_other_workers: bool,
}

/// One task as the client describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// User-visible, unique name.
    pub key: Key,
    /// Op name in the workers' registry.
    pub op: SharedStr,
    /// Serialized arguments for the op.
    pub args: Bytes,
    /// Keys of the inputs, in the order the op receives them. Each is in the
    /// same graph or already known to the scheduler.
    pub deps: Vec<Key>,
    /// Hints and constraints.
    pub annotations: Annotations,
}

impl TaskSpec {
    /// A task with default annotations.
    pub fn new(key: impl Into<Key>, op: impl Into<SharedStr>, args: Bytes, deps: Vec<Key>) -> Self {
        Self {
            key: key.into(),
            op: op.into(),
            args,
            deps,
            annotations: Annotations::default(),
        }
    }
}

/// A graph submitted in one message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    /// The tasks, in any order.
    pub tasks: Vec<TaskSpec>,
    /// Keys the client wants futures on.
    pub outputs: Vec<Key>,
}

/// The graph contains a cycle through the given node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle(pub u32);

/// Orders the nodes `0..n` for execution, depth first and memory friendly, in
/// the spirit of `dask.order`: a post-order walk from the sinks (in the order
/// given), so that a node comes right after the last of its inputs and one
/// branch of a reduction is finished before the next is started. Inputs of a
/// node are visited in their given order. Returns each node's position.
///
/// `deps(i, out)` writes node `i`'s inputs (indices below `n`) into `out`, a
/// scratch buffer cleared before each call. Every node is
/// reached: nodes not reachable from `sinks` are walked afterwards in index
/// order. O(nodes + edges), no recursion.
pub fn order(
    n: usize,
    sinks: impl IntoIterator<Item = u32>,
    mut deps: impl FnMut(u32, &mut Vec<u32>),
) -> Result<Vec<u32>, Cycle> {
    const UNSEEN: u32 = u32::MAX;
    const ON_STACK: u32 = u32::MAX - 1;
    let mut pos = vec![UNSEEN; n];
    let mut next = 0u32;
    // The stack holds (node, offset into `edges` where its inputs start,
    // index of the next input to visit).
    let mut stack: Vec<(u32, usize, usize)> = Vec::new();
    let mut edges: Vec<u32> = Vec::new();
    let mut scratch = Vec::new();
    let mut visit = |root: u32,
                     pos: &mut Vec<u32>,
                     stack: &mut Vec<(u32, usize, usize)>,
                     edges: &mut Vec<u32>|
     -> Result<(), Cycle> {
        if pos[root as usize] != UNSEEN {
            return Ok(());
        }
        pos[root as usize] = ON_STACK;
        scratch.clear();
        deps(root, &mut scratch);
        let start = edges.len();
        edges.extend_from_slice(&scratch);
        stack.push((root, start, start));
        while let Some(top) = stack.last_mut() {
            let (node, start, cursor) = *top;
            // The top frame's inputs are the tail of `edges` from `start`:
            // frames above it truncated theirs away when they were popped.
            let end = edges.len();
            if cursor < end {
                top.2 += 1;
                let d = edges[cursor];
                match pos[d as usize] {
                    UNSEEN => {
                        pos[d as usize] = ON_STACK;
                        scratch.clear();
                        deps(d, &mut scratch);
                        let s = edges.len();
                        edges.extend_from_slice(&scratch);
                        stack.push((d, s, s));
                    }
                    ON_STACK => return Err(Cycle(d)),
                    _ => {}
                }
            } else {
                pos[node as usize] = next;
                next += 1;
                edges.truncate(start);
                stack.pop();
            }
        }
        Ok(())
    };
    for s in sinks {
        visit(s, &mut pos, &mut stack, &mut edges)?;
    }
    for i in 0..n as u32 {
        visit(i, &mut pos, &mut stack, &mut edges)?;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize, sinks: &[u32], deps: &[Vec<u32>]) -> Result<Vec<u32>, Cycle> {
        order(n, sinks.iter().copied(), |i, out| {
            out.extend_from_slice(&deps[i as usize])
        })
    }

    #[test]
    fn inputs_come_before_their_users() {
        // 0,1 -> 4; 2,3 -> 5; 4,5 -> 6
        let deps = vec![vec![], vec![], vec![], vec![], vec![0, 1], vec![2, 3], vec![4, 5]];
        let pos = run(7, &[6], &deps).unwrap();
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                assert!(pos[d as usize] < pos[i], "{d} before {i}");
            }
        }
        // Depth first: the left reduction finishes before the right leaves.
        assert!(pos[4] < pos[2], "{pos:?}");
        assert_eq!(pos[6], 6);
    }

    #[test]
    fn cycles_are_reported() {
        let deps = vec![vec![2], vec![0], vec![1]];
        assert!(run(3, &[2], &deps).is_err());
    }

    #[test]
    fn unreached_nodes_are_still_ordered() {
        let deps = vec![vec![], vec![], vec![0]];
        let mut pos = run(3, &[2], &deps).unwrap();
        pos.sort();
        assert_eq!(pos, vec![0, 1, 2]);
    }
}
