//! Compact graphs for collections. A [`Layer`] is `n` tasks of one op made
//! by a pattern: keys `name-0 .. name-{n-1}` ([`Key::indexed`]), arguments
//! shared by all or packed in one buffer, and inputs that follow a
//! dependency [`Pattern`] over an earlier layer or a list of keys. The
//! client sends layers as they are; the scheduler expands them into its
//! task table with one key buffer and one argument buffer per layer, not a
//! string and a spec per task.
//!
//! ```
//! use weft_runtime::layer::{Layer, LayerArgs, LayerGraph, Pattern};
//! // 1,000 loads, a blockwise map over them, a tree of sums with fan-in 8.
//! let load = Layer::new("load", "load", 1_000).args(LayerArgs::with_index(b"", 1_000));
//! let map = Layer::new("inc", "inc", 1_000).input("load", Pattern::Blockwise);
//! let mut graph = LayerGraph::default();
//! graph.layers.extend([load, map]);
//! let root = graph.tree("sum", "sum", bytes::Bytes::new(), "inc", 8);
//! graph.outputs.push(root);
//! assert_eq!(graph.n_tasks(), 2_000 + 125 + 16 + 2 + 1);
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::graph::{Annotations, Graph, TaskSpec};
use crate::ids::{Key, SharedStr};

/// How each task of a layer takes the tasks of one input (`m` of them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pattern {
    /// Task `i` takes input `i` (`m == n`).
    Blockwise,
    /// Every task takes every input, in order (a shuffle's exchange).
    AllToAll,
    /// Task `i` takes inputs `k*i .. min(k*i + k, m)`: one level of a tree
    /// with fan-in `k` (`n == ceil(m / k)`).
    FanIn(u32),
    /// Task `i` takes the inputs listed at `i`, in order (`n` lists).
    Explicit(Vec<Vec<u32>>),
}

impl Pattern {
    /// Checks that a layer of `n` tasks can take `m` inputs this way.
    pub fn check(&self, n: u32, m: u32) -> Result<(), String> {
        match self {
            Pattern::Blockwise if m != n => Err(format!("blockwise over {m} tasks, but the layer has {n}")),
            Pattern::FanIn(0) => Err("fan-in 0".into()),
            Pattern::FanIn(k) if m.div_ceil(*k) != n => Err(format!(
                "fan-in {k} over {m} tasks makes {} tasks, but the layer has {n}",
                m.div_ceil(*k)
            )),
            Pattern::Explicit(lists) if lists.len() != n as usize => {
                Err(format!("{} explicit lists for {n} tasks", lists.len()))
            }
            Pattern::Explicit(lists) => match lists.iter().flatten().find(|&&j| j >= m) {
                Some(j) => Err(format!("index {j} out of range of {m} tasks")),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Appends the inputs (indices below `m`) of task `i` to `out`; the
    /// pattern was [checked](Pattern::check).
    pub fn deps(&self, i: u32, m: u32, out: &mut Vec<u32>) {
        match self {
            Pattern::Blockwise => out.push(i),
            Pattern::AllToAll => out.extend(0..m),
            Pattern::FanIn(k) => out.extend(k * i..(k * i + k).min(m)),
            Pattern::Explicit(lists) => out.extend_from_slice(&lists[i as usize]),
        }
    }
}

/// Where one input of a layer comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// An earlier layer of the same graph, by name.
    Layer(SharedStr),
    /// These keys, in order: tasks of the same graph or known to the
    /// scheduler.
    Keys(Vec<Key>),
}

impl From<&str> for Source {
    fn from(name: &str) -> Self {
        Source::Layer(name.into())
    }
}

/// One input of a layer: a source and how the layer's tasks take it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInput {
    /// Where the input tasks are.
    pub source: Source,
    /// Which of them each task takes.
    pub pattern: Pattern,
}

/// The arguments of a layer's tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerArgs {
    /// The same arguments for every task.
    Shared(Bytes),
    /// Task `i`'s arguments are `data[ends[i-1]..ends[i]]` (from 0 for the
    /// first): one buffer for the whole layer.
    Packed {
        /// Every task's arguments, one after the other.
        data: Bytes,
        /// Where each task's arguments end.
        ends: Vec<u32>,
    },
}

impl LayerArgs {
    /// Packs per-task arguments into one buffer.
    pub fn per_task<A: AsRef<[u8]>>(args: impl IntoIterator<Item = A>) -> Self {
        let mut data = BytesMut::new();
        let mut ends = Vec::new();
        for a in args {
            data.put_slice(a.as_ref());
            ends.push(data.len() as u32);
        }
        LayerArgs::Packed {
            data: data.freeze(),
            ends,
        }
    }

    /// `shared` followed by the task's index (`u32`, little-endian), for
    /// each of `n` tasks: ops that find their block from their index.
    pub fn with_index(shared: &[u8], n: u32) -> Self {
        let mut data = BytesMut::with_capacity((shared.len() + 4) * n as usize);
        let ends = (0..n)
            .map(|i| {
                data.put_slice(shared);
                data.put_u32_le(i);
                data.len() as u32
            })
            .collect();
        LayerArgs::Packed {
            data: data.freeze(),
            ends,
        }
    }

    /// Checks that there are arguments for `n` tasks, within the buffer.
    pub fn check(&self, n: u32) -> Result<(), String> {
        let LayerArgs::Packed { data, ends } = self else {
            return Ok(());
        };
        if ends.len() != n as usize {
            return Err(format!("arguments for {} tasks, but the layer has {n}", ends.len()));
        }
        let ordered = ends.windows(2).all(|w| w[0] <= w[1]);
        if !ordered || ends.last().is_some_and(|&e| e as usize > data.len()) {
            return Err("packed arguments out of order or past their buffer".into());
        }
        Ok(())
    }

    /// Task `i`'s arguments (a view of the shared buffer); the arguments
    /// were [checked](LayerArgs::check).
    pub fn get(&self, i: u32) -> Bytes {
        match self {
            LayerArgs::Shared(args) => args.clone(),
            LayerArgs::Packed { data, ends } => {
                let start = if i == 0 { 0 } else { ends[i as usize - 1] };
                data.slice(start as usize..ends[i as usize] as usize)
            }
        }
    }
}

/// `n` tasks of one op, keyed `name-0 .. name-{n-1}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The keys' common name.
    pub name: SharedStr,
    /// Op name in the workers' registry.
    pub op: SharedStr,
    /// Number of tasks.
    pub n: u32,
    /// Their arguments.
    pub args: LayerArgs,
    /// Inputs; task `i` receives, in order, what each input's pattern
    /// gives it.
    pub inputs: Vec<LayerInput>,
    /// Hints and constraints, the same for every task.
    pub annotations: Annotations,
}

impl Layer {
    /// `n` tasks of `op` with empty arguments and no inputs.
    pub fn new(name: impl Into<SharedStr>, op: impl Into<SharedStr>, n: u32) -> Self {
        Layer {
            name: name.into(),
            op: op.into(),
            n,
            args: LayerArgs::Shared(Bytes::new()),
            inputs: Vec::new(),
            annotations: Annotations::default(),
        }
    }

    /// With these arguments.
    pub fn args(mut self, args: LayerArgs) -> Self {
        self.args = args;
        self
    }

    /// With one more input.
    pub fn input(mut self, source: impl Into<Source>, pattern: Pattern) -> Self {
        self.inputs.push(LayerInput {
            source: source.into(),
            pattern,
        });
        self
    }

    /// The key of task `i`.
    pub fn key(&self, i: u32) -> Key {
        format!("{}-{i}", self.name).into()
    }

    /// The keys of all its tasks, sharing one buffer.
    pub fn keys(&self) -> Vec<Key> {
        Key::indexed(&self.name, self.n)
    }
}

/// A graph of per-task specs and layers, submitted in one message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerGraph {
    /// Tasks described one by one (as in [`crate::Graph`]).
    pub tasks: Vec<TaskSpec>,
    /// Layers; a layer's inputs come from layers before it or from keys.
    pub layers: Vec<Layer>,
    /// Keys the client wants futures on.
    pub outputs: Vec<Key>,
    /// Layers whose every task the client wants a future on.
    pub output_layers: Vec<SharedStr>,
}

impl From<Graph> for LayerGraph {
    fn from(graph: Graph) -> Self {
        LayerGraph {
            tasks: graph.tasks,
            outputs: graph.outputs,
            ..LayerGraph::default()
        }
    }
}

impl LayerGraph {
    /// Tasks in the graph.
    pub fn n_tasks(&self) -> usize {
        self.tasks.len() + self.layers.iter().map(|l| l.n as usize).sum::<usize>()
    }

    /// Adds a tree reduction of layer `input` with fan-in `k`: layers
    /// `name.0`, `name.1`, ... of `op` with `args`, down to one task, whose
    /// key it returns.
    pub fn tree(&mut self, name: &str, op: &str, args: Bytes, input: &str, k: u32) -> Key {
        let k = k.max(2);
        let mut m = self.layers.iter().rev().find(|l| *l.name == *input).map_or(1, |l| l.n);
        let mut source = SharedStr::from(input);
        let mut level = 0;
        loop {
            let layer = Layer::new(format!("{name}.{level}"), op, m.div_ceil(k))
                .args(LayerArgs::Shared(args.clone()))
                .input(Source::Layer(source), Pattern::FanIn(k));
            (m, source) = (layer.n, layer.name.clone());
            self.layers.push(layer);
            level += 1;
            if m <= 1 {
                return format!("{source}-0").into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(p: &Pattern, i: u32, m: u32) -> Vec<u32> {
        let mut out = Vec::new();
        p.deps(i, m, &mut out);
        out
    }

    #[test]
    fn patterns_give_each_task_its_inputs() {
        assert_eq!(deps(&Pattern::Blockwise, 3, 5), [3]);
        assert_eq!(deps(&Pattern::AllToAll, 0, 3), [0, 1, 2]);
        assert_eq!(deps(&Pattern::FanIn(4), 1, 10), [4, 5, 6, 7]);
        assert_eq!(deps(&Pattern::FanIn(4), 2, 10), [8, 9]);
        assert_eq!(deps(&Pattern::Explicit(vec![vec![], vec![2, 0]]), 1, 3), [2, 0]);
        assert!(Pattern::FanIn(4).check(3, 10).is_ok());
        assert!(Pattern::FanIn(4).check(2, 10).is_err());
        assert!(Pattern::FanIn(0).check(0, 0).is_err());
        assert!(Pattern::Blockwise.check(2, 3).is_err());
        assert!(Pattern::Explicit(vec![vec![3]]).check(1, 3).is_err());
    }

    #[test]
    fn packed_arguments_are_views_of_one_buffer() {
        let args = LayerArgs::per_task(["a", "", "bcd"]);
        assert!(args.check(3).is_ok() && args.check(2).is_err());
        assert_eq!(
            (0..3).map(|i| args.get(i)).collect::<Vec<_>>(),
            [&b"a"[..], b"", b"bcd"]
        );
        let indexed = LayerArgs::with_index(b"s", 2);
        assert_eq!(indexed.get(1), Bytes::from_static(b"s\x01\0\0\0"));
        let bad = LayerArgs::Packed {
            data: Bytes::from_static(b"ab"),
            ends: vec![3],
        };
        assert!(bad.check(1).is_err(), "past the buffer");
    }

    #[test]
    fn a_tree_reduces_to_one_task() {
        let mut graph = LayerGraph::default();
        graph.layers.push(Layer::new("x", "const", 100));
        let root = graph.tree("t", "sum", Bytes::new(), "x", 10);
        assert_eq!(root.as_str(), "t.1-0");
        assert_eq!(graph.layers.iter().map(|l| l.n).collect::<Vec<_>>(), [100, 10, 1]);
        assert_eq!(graph.layers[1].key(3).as_str(), "t.0-3");
    }
}
