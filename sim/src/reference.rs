//! Sim tasks and their reference outcome: the arguments a sim task carries
//! (seed, duration, size), the value it computes from its inputs, and a
//! builder that evaluates a graph's outputs as it is built.

use bytes::Bytes;
use weft_runtime::graph::{Annotations, Graph, TaskSpec};
use weft_runtime::ids::{FxHashMap, Key};

use crate::rng::mix;

/// The value a sim task computes from its seed and its inputs' values.
pub fn value_of(seed: u64, inputs: impl IntoIterator<Item = u64>) -> u64 {
    let mut acc = seed;
    for (i, v) in inputs.into_iter().enumerate() {
        acc = mix(acc ^ v.wrapping_add(i as u64));
    }
    mix(acc)
}

/// Sim task arguments.
pub fn sim_args(seed: u64, duration_us: u32, nbytes: u32) -> Bytes {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&seed.to_le_bytes());
    b.extend_from_slice(&duration_us.to_le_bytes());
    b.extend_from_slice(&nbytes.to_le_bytes());
    Bytes::from(b)
}

/// Seed, duration and size from sim task arguments.
pub(crate) fn parse_args(args: &[u8]) -> Option<(u64, u32, u32)> {
    let seed = u64::from_le_bytes(args.get(0..8)?.try_into().ok()?);
    let dur = u32::from_le_bytes(args.get(8..12)?.try_into().ok()?);
    let nbytes = u32::from_le_bytes(args.get(12..16)?.try_into().ok()?);
    Some((seed, dur, nbytes))
}

/// What an output should end as, from a reference evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// In memory with this value.
    Value(u64),
    /// Erred, because a `fail` task is in its lineage.
    Error,
}

/// A graph plus the reference outcome of each output.
#[derive(Clone, Debug, Default)]
pub struct SimGraph {
    /// The graph to submit.
    pub graph: Graph,
    /// Reference outcome per output key.
    pub expected: FxHashMap<Key, Expected>,
}

/// A task added to a [`GraphBuilder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node(u32);

/// Incrementally builds a [`SimGraph`] in topological order, evaluating the
/// reference as it goes.
#[derive(Default)]
pub struct GraphBuilder {
    g: SimGraph,
    /// Reference outcome per node (`None` = erred).
    values: Vec<Option<u64>>,
}

impl GraphBuilder {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    // The arguments are the sim's task fields one for one; a struct would
    // only rename them.
    #[allow(clippy::too_many_arguments)]
    /// Adds a task whose inputs were added before.
    pub fn task(
        &mut self,
        key: impl Into<Key>,
        op: &str,
        seed: u64,
        duration_us: u32,
        nbytes: u32,
        deps: &[Node],
        annotations: Annotations,
    ) -> Node {
        let mut inputs = Vec::with_capacity(deps.len());
        let mut ok = true;
        for d in deps {
            match self.values[d.0 as usize] {
                Some(v) => inputs.push(v),
                None => ok = false,
            }
        }
        let value = (ok && op != "fail").then(|| value_of(seed, inputs));
        self.values.push(value);
        let tasks = &self.g.graph.tasks;
        let deps = deps.iter().map(|d| tasks[d.0 as usize].key.clone()).collect();
        self.g.graph.tasks.push(TaskSpec {
            key: key.into(),
            op: op.into(),
            args: sim_args(seed, duration_us, nbytes),
            deps,
            annotations,
        });
        Node((self.values.len() - 1) as u32)
    }

    /// Marks a node as an output.
    pub fn output(&mut self, node: Node) {
        let v = self.values[node.0 as usize];
        let key = self.g.graph.tasks[node.0 as usize].key.clone();
        self.g.graph.outputs.push(key.clone());
        self.g.expected.insert(key, v.map_or(Expected::Error, Expected::Value));
    }

    /// True when the reference says the node computes (no failing task in
    /// its lineage).
    pub fn computes(&self, node: Node) -> bool {
        self.values[node.0 as usize].is_some()
    }

    /// Tasks added so far.
    pub fn len(&self) -> usize {
        self.g.graph.tasks.len()
    }

    /// True when no task was added.
    pub fn is_empty(&self) -> bool {
        self.g.graph.tasks.is_empty()
    }

    /// The graph.
    pub fn finish(self) -> SimGraph {
        self.g
    }
}
