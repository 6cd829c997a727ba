//! Graph shapes built from the built-in ops, for benchmarks, the demo and
//! tests: a map of independent tasks, a binary tree reduction and a chain.
//! Every key starts with `prefix`, so repeated runs use fresh keys.

use crate::graph::{Graph, TaskSpec};
use crate::ids::Key;
use crate::ops::args;

fn task(key: String, op: &str, arg: i64, deps: Vec<Key>) -> TaskSpec {
    // An i64 always serializes.
    TaskSpec::new(key, op, args(&arg).unwrap_or_default(), deps)
}

/// `n` independent tasks returning `0..n`; every task is an output.
pub fn map(prefix: &str, n: usize) -> Graph {
    let tasks: Vec<TaskSpec> = (0..n)
        .map(|i| task(format!("{prefix}-{i}"), "const", i as i64, Vec::new()))
        .collect();
    let outputs = tasks.iter().map(|t| t.key.clone()).collect();
    Graph { tasks, outputs }
}

/// A binary tree reduction summing the leaf ids `0..leaves`: pairs are
/// summed level by level, an odd one out moves up as it is. The one output
/// is `leaves * (leaves - 1) / 2`; `2 * leaves - 1` tasks in all.
pub fn tree(prefix: &str, leaves: usize) -> Graph {
    let mut tasks: Vec<TaskSpec> = (0..leaves)
        .map(|i| task(format!("{prefix}-leaf-{i}"), "const", i as i64, Vec::new()))
        .collect();
    let mut level: Vec<Key> = tasks.iter().map(|t| t.key.clone()).collect();
    let mut depth = 0;
    while level.len() > 1 {
        depth += 1;
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for (i, pair) in level.chunks(2).enumerate() {
            if let [a, b] = pair {
                let sum = task(
                    format!("{prefix}-sum-{depth}-{i}"),
                    "sum",
                    0,
                    vec![a.clone(), b.clone()],
                );
                next.push(sum.key.clone());
                tasks.push(sum);
            } else {
                next.extend(pair.iter().cloned());
            }
        }
        level = next;
    }
    Graph { tasks, outputs: level }
}

/// `n` dependent tasks, each adding 1 to the one before; the one output
/// is `n`.
pub fn chain(prefix: &str, n: usize) -> Graph {
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let deps = tasks.last().map(|t: &TaskSpec| vec![t.key.clone()]).unwrap_or_default();
        tasks.push(task(format!("{prefix}-{i}"), "sum", 1, deps));
    }
    let outputs = tasks.last().map(|t| vec![t.key.clone()]).unwrap_or_default();
    Graph { tasks, outputs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_documented_sizes() {
        assert_eq!(map("m", 10).outputs.len(), 10);
        for leaves in [1, 2, 3, 7, 16] {
            let graph = tree("t", leaves);
            assert_eq!(graph.tasks.len(), 2 * leaves - 1, "{leaves} leaves");
            assert_eq!(graph.outputs.len(), 1);
        }
        let graph = chain("c", 5);
        assert_eq!(graph.tasks.len(), 5);
        assert_eq!(graph.tasks[4].deps, vec![Key::from("c-3")]);
    }
}
