//! Graph submission: per-task specs and layers ([`crate::layer`]) become
//! one table of nodes; what is known is culled, what the outputs need is
//! ordered and entered into the task table. A layer's tasks are expanded
//! here from its pattern: keys share the layer's one buffer, arguments are
//! views of its one buffer, and edges are computed from indices, never
//! looked up by key.

use hashbrown::HashTable;

use crate::graph::{self, TaskSpec};
use crate::ids::{ClientId, FxHashMap, Key, OpId, TaskId};
use crate::layer::{Layer, LayerGraph, Source};
use crate::protocol::{Priority, Tier, ToClient};

use super::task::{QueueKind, Restrictions, Task, key_hash};
use super::worker::NOT_LISTED;
use super::{Comm, Scheduler, TaskState};

/// An input of a node: a task already known, or a node of this graph.
type Edge = Result<TaskId, u32>;

/// The nodes of a submitted graph: specs first, then each layer's tasks.
struct Nodes {
    specs: Vec<Option<TaskSpec>>,
    layers: Vec<Layer>,
    /// First node of each layer.
    bases: Vec<u32>,
    /// Each layer's keys, in one buffer per layer.
    keys: Vec<Vec<Key>>,
    /// Per layer and input: its first node (for a layer source) and its
    /// length.
    sources: Vec<Vec<(Option<u32>, u32)>>,
}

impl Nodes {
    /// Validates the layers and lays out the nodes.
    fn new(specs: Vec<TaskSpec>, layers: Vec<Layer>) -> Result<Nodes, String> {
        let mut next = specs.len() as u64;
        let mut bases = Vec::with_capacity(layers.len());
        let mut sources = Vec::with_capacity(layers.len());
        let mut by_name: FxHashMap<&str, usize> = FxHashMap::default();
        for (l, layer) in layers.iter().enumerate() {
            let name = &layer.name;
            layer.args.check(layer.n).map_err(|e| format!("layer {name}: {e}"))?;
            let mut of_layer = Vec::with_capacity(layer.inputs.len());
            for input in &layer.inputs {
                let (base, m) = match &input.source {
                    Source::Layer(src) => match by_name.get(src.as_str()) {
                        Some(&s) => (Some(bases[s]), layers[s].n),
                        None => {
                            return Err(format!(
                                "layer {name}: input {src} is not an earlier layer of the graph"
                            ));
                        }
                    },
                    Source::Keys(keys) => (None, keys.len().min(u32::MAX as usize) as u32),
                };
                input
                    .pattern
                    .check(layer.n, m)
                    .map_err(|e| format!("layer {name}: {e}"))?;
                of_layer.push((base, m));
            }
            if by_name.insert(name.as_str(), l).is_some() {
                return Err(format!("layer {name} appears twice"));
            }
            sources.push(of_layer);
            bases.push(next as u32);
            next += u64::from(layer.n);
            if next >= u64::from(u32::MAX) {
                return Err(format!("more than {} tasks in one graph", u32::MAX - 1));
            }
        }
        let keys = layers.iter().map(Layer::keys).collect();
        Ok(Nodes {
            specs: specs.into_iter().map(Some).collect(),
            layers,
            bases,
            keys,
            sources,
        })
    }

    fn len(&self) -> usize {
        self.specs.len() + self.layers.iter().map(|l| l.n as usize).sum::<usize>()
    }

    /// The layer and index of a node past the specs.
    fn locate(&self, node: u32) -> (usize, u32) {
        let l = self.bases.partition_point(|&b| b <= node) - 1;
        (l, node - self.bases[l])
    }

    fn key(&self, node: u32) -> &Key {
        match self.specs.get(node as usize) {
            Some(spec) => &spec.as_ref().expect("internal error: a spec read after use").key,
            None => {
                let (l, i) = self.locate(node);
                &self.keys[l][i as usize]
            }
        }
    }

    /// The nodes of the layer called `name`.
    fn layer_nodes(&self, name: &str) -> Option<std::ops::Range<u32>> {
        let l = self.layers.iter().position(|l| *l.name == *name)?;
        Some(self.bases[l]..self.bases[l] + self.layers[l].n)
    }
}

impl Scheduler {
    /// Accepts a graph: culls what is known or not needed, orders the rest,
    /// and starts computing the outputs the client asked for. A graph with
    /// a duplicate key, an unknown input, a bad layer or a cycle is
    /// rejected whole, with the reason.
    pub(super) fn submit(&mut self, client: ClientId, graph: LayerGraph, comm: &mut impl Comm) {
        if let Err(reason) = self.try_submit(client, graph, comm) {
            Self::reject_graph(client, comm, reason);
        }
    }

    fn try_submit(&mut self, client: ClientId, graph: LayerGraph, comm: &mut impl Comm) -> Result<(), String> {
        let LayerGraph {
            tasks,
            layers,
            outputs,
            output_layers,
        } = graph;
        let mut nodes = Nodes::new(tasks, layers)?;
        let n = nodes.len();
        // Each key is hashed once: the same hash finds it in the graph and
        // among the known tasks, and files the new task under it.
        let hashes: Vec<u64> = (0..n as u32).map(|i| key_hash(nodes.key(i))).collect();
        let mut local: HashTable<u32> = HashTable::with_capacity(n);
        for i in 0..n as u32 {
            let h = hashes[i as usize];
            match local.entry(h, |&j| nodes.key(j) == nodes.key(i), |&j| hashes[j as usize]) {
                hashbrown::hash_table::Entry::Occupied(_) => {
                    return Err(format!("duplicate key {} in graph", nodes.key(i)));
                }
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(i);
                }
            }
        }
        // Known keys are culled: the graph's definition is ignored.
        let known: Vec<Option<TaskId>> = if self.tasks.len() == 0 {
            vec![None; n]
        } else {
            (0..n as u32)
                .map(|i| self.tasks.find_hashed(nodes.key(i), hashes[i as usize]))
                .collect()
        };
        let resolve = |key: &str| -> Option<Edge> {
            let h = key_hash(key);
            match local.find(h, |&j| nodes.key(j).as_str() == key) {
                Some(&j) => Some(known[j as usize].ok_or(j)),
                None => self.tasks.find_hashed(key, h).map(Ok),
            }
        };
        // The outputs, as nodes or known tasks.
        let mut wanted: Vec<Edge> = Vec::with_capacity(outputs.len());
        for key in &outputs {
            wanted.push(resolve(key).ok_or_else(|| format!("output {key} is neither in the graph nor known"))?);
        }
        for name in &output_layers {
            let range = nodes
                .layer_nodes(name)
                .ok_or_else(|| format!("output layer {name} is not in the graph"))?;
            wanted.extend(range.map(|i| known[i as usize].ok_or(i)));
        }
        // Which new tasks the outputs need, and their inputs, resolved once
        // per edge for the included tasks only.
        let mut edges: Vec<Edge> = Vec::new();
        let mut span = vec![(0u32, 0u32); n];
        let mut include = vec![false; n];
        let mut stack: Vec<u32> = Vec::new();
        let mut scratch = Vec::new();
        for &e in &wanted {
            if let Err(i) = e
                && !include[i as usize]
            {
                include[i as usize] = true;
                stack.push(i);
            }
        }
        while let Some(i) = stack.pop() {
            let start = edges.len();
            if let Some(Some(spec)) = nodes.specs.get(i as usize) {
                for dk in &spec.deps {
                    let r = resolve(dk).ok_or_else(|| format!("task {} depends on unknown key {dk}", spec.key))?;
                    edges.push(r);
                }
            } else {
                let (l, index) = nodes.locate(i);
                let layer = &nodes.layers[l];
                for (input, &(base, m)) in layer.inputs.iter().zip(&nodes.sources[l]) {
                    scratch.clear();
                    input.pattern.deps(index, m, &mut scratch);
                    for &d in &scratch {
                        let r = match (base, &input.source) {
                            (Some(base), _) => known[(base + d) as usize].ok_or(base + d),
                            (None, Source::Keys(keys)) => {
                                let key = &keys[d as usize];
                                resolve(key)
                                    .ok_or_else(|| format!("layer {} depends on unknown key {key}", layer.name))?
                            }
                            (None, Source::Layer(src)) => {
                                return Err(format!("internal error: layer {src} unresolved"));
                            }
                        };
                        edges.push(r);
                    }
                }
            }
            for &r in &edges[start..] {
                if let Err(j) = r
                    && !include[j as usize]
                {
                    include[j as usize] = true;
                    stack.push(j);
                }
            }
            span[i as usize] = (start as u32, edges.len() as u32);
        }
        let included: Vec<u32> = (0..n as u32).filter(|&i| include[i as usize]).collect();
        let m = included.len();
        let mut new_of = vec![u32::MAX; n];
        for (j, &i) in included.iter().enumerate() {
            new_of[i as usize] = j as u32;
        }
        // Exact dependents capacity for the new tasks (one entry per edge).
        let mut n_dependents = vec![0u32; m];
        for &i in &included {
            let (a, b) = span[i as usize];
            for e in &edges[a as usize..b as usize] {
                if let Err(l) = e {
                    n_dependents[new_of[*l as usize] as usize] += 1;
                }
            }
        }
        // The walk starts at the outputs nothing here depends on, so that
        // an output another one reads (a partition and its row count) is
        // ordered right before its user, depth first.
        let sinks: Vec<u32> = wanted
            .iter()
            .filter_map(|e| e.err().map(|i| new_of[i as usize]))
            .filter(|&j| n_dependents[j as usize] == 0)
            .collect();
        let pos = graph::order(m, sinks, |j, out| {
            let (a, b) = span[included[j as usize] as usize];
            for e in &edges[a as usize..b as usize] {
                if let Err(i) = e {
                    out.push(new_of[*i as usize]);
                }
            }
        })
        .map_err(|graph::Cycle(j)| format!("graph has a cycle through {}", nodes.key(included[j as usize])))?;
        // Valid: from here on nothing is rejected.
        drop(local);
        let ids = self.enter(
            &mut nodes,
            &included,
            &edges,
            &span,
            &new_of,
            &pos,
            &hashes,
            &n_dependents,
        );
        self.claim_staged(&ids, comm);
        let wanted: Vec<TaskId> = wanted
            .iter()
            .map(|e| match *e {
                Ok(id) => id,
                Err(i) => ids[new_of[i as usize] as usize],
            })
            .collect();
        self.want(client, wanted, m, n - m, comm);
        Ok(())
    }

    /// Enters the included nodes into the task table, in `dask.order`
    /// positions `pos`, and links their dependents (`n_dependents` each
    /// among them); returns their ids.
    // The tables of one submission, passed apart to keep them borrowed.
    #[allow(clippy::too_many_arguments)]
    fn enter(
        &mut self,
        nodes: &mut Nodes,
        included: &[u32],
        edges: &[Edge],
        span: &[(u32, u32)],
        new_of: &[u32],
        pos: &[u32],
        hashes: &[u64],
        n_dependents: &[u32],
    ) -> Vec<TaskId> {
        let m = included.len();
        self.tasks.reserve_capacity(m);
        let ids: Vec<TaskId> = (0..m).map(|_| self.tasks.reserve()).collect();
        let seq0 = self.next_seq;
        self.next_seq += m as u64;
        // A layer's op and resources are interned once.
        let per_layer: Vec<(OpId, u32)> = (0..nodes.layers.len())
            .map(|l| {
                let layer = &nodes.layers[l];
                (
                    self.intern_op(&layer.op),
                    self.intern_request(&layer.annotations.resources),
                )
            })
            .collect();
        for (j, &i) in included.iter().enumerate() {
            let (a, b) = span[i as usize];
            let deps: Box<[TaskId]> = edges[a as usize..b as usize]
                .iter()
                .map(|e| match *e {
                    Ok(id) => id,
                    Err(l) => ids[new_of[l as usize] as usize],
                })
                .collect();
            let spec = nodes.specs.get_mut(i as usize).and_then(Option::take);
            let (key, args, op, request, annotations) = match &spec {
                Some(spec) => (
                    spec.key.clone(),
                    spec.args.clone(),
                    self.intern_op(&spec.op),
                    self.intern_request(&spec.annotations.resources),
                    &spec.annotations,
                ),
                None => {
                    let (l, index) = nodes.locate(i);
                    let layer = &nodes.layers[l];
                    let (op, request) = per_layer[l];
                    let key = nodes.keys[l][index as usize].clone();
                    (key, layer.args.get(index), op, request, &layer.annotations)
                }
            };
            let restrictions = (!annotations.workers.is_empty()).then(|| {
                Box::new(Restrictions {
                    workers: annotations.workers.clone(),
                    allow_other: annotations.allow_other_workers,
                })
            });
            let id = ids[j];
            self.tasks.insert(Task {
                id,
                key_hash: hashes[i as usize],
                key,
                args,
                deps,
                dependents: Vec::with_capacity(n_dependents[j] as usize),
                who_has: Vec::new(),
                who_wants: Vec::new(),
                restrictions,
                priority: Priority {
                    user: annotations.priority,
                    seq: seq0 + pos[j] as u64,
                },
                nbytes: 0,
                state: TaskState::Released,
                op,
                request,
                waiting_on: 0,
                waiters: 0,
                live_dependents: 0,
                proc_idx: NOT_LISTED,
                est: 0.0,
                retries_left: annotations.retries,
                deaths: 0,
                queue: QueueKind::None,
                scattered: false,
                ahead: false,
                tier: Tier::Host,
            });
            self.touch(id);
        }
        // Dependents edges, now that every new task is in the table.
        for &id in &ids {
            let deps = std::mem::take(&mut self.tasks[id].deps);
            for &d in deps.iter() {
                let dt = &mut self.tasks[d];
                dt.dependents.push(id);
                dt.live_dependents += 1;
            }
            self.tasks[id].deps = deps;
        }
        ids
    }

    /// Gives `client` futures on `outputs` and starts computing them.
    fn want(&mut self, client: ClientId, outputs: Vec<TaskId>, new_tasks: usize, culled: usize, comm: &mut impl Comm) {
        comm.to_client(
            client,
            ToClient::GraphAccepted {
                new_tasks: new_tasks as u64,
                culled: culled as u64,
            },
        );
        for id in outputs {
            self.add_want(client, id, comm);
        }
        let tasks = &self.tasks;
        self.ready.sort_by_cached_key(|&id| tasks.get(id).map(|t| t.priority));
    }
}
