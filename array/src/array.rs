//! The lazy [`Array`]: dtype, shape, chunk grid and how its chunks come
//! about: a layer of tasks (materialized), or a fused elementwise
//! expression over other layers' chunks and generators, lowered to one
//! task per chunk only when something needs its chunks as inputs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use weft_runtime::{Client, Graph, Key, SharedStr, TaskFuture, TaskSpec, ops::args};

use crate::block::{Buf, decode_one};
use crate::chunks::{Chunks, strides, unravel};
use crate::dtype::{DType, Element, Scalar};
use crate::error::{ArrayError, Result};
use crate::expr::{BinaryOp, Program, UnaryOp};
use crate::fuse::{FusedArgs, Gen, LeafArg};
use crate::p2p::Shuffle;
use crate::with_typed;

/// A layer of tasks: the keys of an array's chunks (flat chunk order;
/// usually `{name}-{i}`, but a concatenation names its inputs' chunks), the
/// tasks that compute them and any intermediate ones, and the layers read.
#[derive(Debug)]
pub struct Layer {
    /// The key prefix, unique per layer.
    pub name: String,
    /// The tasks.
    pub tasks: Vec<TaskSpec>,
    /// The layers whose chunks these tasks read (or whose chunks this is).
    pub deps: Vec<Arc<Layer>>,
    /// The key of each chunk, in flat chunk order.
    pub keys: Vec<Key>,
    /// Chunks put into the workers' memory by [`crate::scatter()`], kept
    /// there while this layer lives.
    pub held: Held,
    /// A P2P rechunk's plan, lowered again for each run over the cluster's
    /// workers; its `tasks` are the plan as shown, naming no workers.
    pub shuffle: Option<Arc<Shuffle>>,
}

/// Futures on scattered chunks: the workers keep a scattered value while a
/// future on it lives.
#[derive(Default)]
pub struct Held(pub Vec<weft_runtime::TaskFuture>);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} scattered chunks", self.0.len())
    }
}

impl Layer {
    /// A layer whose chunk `i` is `{name}-{i}`, for `n` chunks.
    pub fn new(name: String, tasks: Vec<TaskSpec>, deps: Vec<Arc<Layer>>, n: usize) -> Arc<Layer> {
        let keys = (0..n).map(|i| chunk_key(&name, i)).collect();
        Arc::new(Layer {
            name,
            tasks,
            deps,
            keys,
            held: Held::default(),
            shuffle: None,
        })
    }

    /// A P2P rechunk's layer over `src`: its chunks are `keys`, `tasks`
    /// the shuffle as shown.
    pub(crate) fn shuffled(
        name: String,
        tasks: Vec<TaskSpec>,
        src: Arc<Layer>,
        keys: Vec<Key>,
        shuffle: Arc<Shuffle>,
    ) -> Arc<Layer> {
        Arc::new(Layer {
            name,
            tasks,
            deps: vec![src],
            keys,
            held: Held::default(),
            shuffle: Some(shuffle),
        })
    }

    /// The key of flat chunk `i`.
    pub fn key(&self, i: usize) -> Key {
        self.keys[i].clone()
    }
}

/// The key of flat chunk `i` of the layer `name`.
pub fn chunk_key(name: &str, i: usize) -> Key {
    Key::from(format!("{name}-{i}"))
}

/// A fresh layer name: `prefix`, a per-process random token and a counter.
pub fn unique_name(prefix: &str) -> String {
    static TOKEN: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let token = TOKEN.get_or_init(|| fastrand::u32(..));
    format!("{prefix}-{token:08x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A leaf of a fused expression.
#[derive(Debug, Clone)]
pub(crate) enum Leaf {
    /// Chunks of a layer; axis `a` of that array runs along axis `axes[a]`
    /// of the expression (length-1 axes broadcast).
    Input {
        layer: Arc<Layer>,
        shape: Vec<usize>,
        chunks: Chunks,
        axes: Vec<usize>,
    },
    /// Generated values.
    Gen(GenLeaf),
}

impl Leaf {
    fn same(&self, other: &Leaf) -> bool {
        match (self, other) {
            (Leaf::Input { layer: a, axes: x, .. }, Leaf::Input { layer: b, axes: y, .. }) => {
                a.name == b.name && x == y
            }
            (Leaf::Gen(a), Leaf::Gen(b)) => a.generator == b.generator && a.chunks == b.chunks && a.axes == b.axes,
            _ => false,
        }
    }
}

/// Generated values (random, ranges) with the generated array's chunk
/// grid, its axis `a` running along the expression's axis `axes[a]`: a
/// transpose generates the transposed chunk's values where they are read,
/// without storing the array. Copies of the leaf share one lowering to a
/// layer of the generated array's chunks, for readers that need chunks
/// (matmul, broadcasts).
#[derive(Debug, Clone)]
pub(crate) struct GenLeaf {
    pub(crate) generator: Gen,
    chunks: Chunks,
    pub(crate) axes: Vec<usize>,
    lowered: Arc<OnceLock<Arc<Layer>>>,
}

impl GenLeaf {
    /// A generator over `chunks`, aligned with them.
    pub(crate) fn new(generator: Gen, chunks: Chunks) -> GenLeaf {
        GenLeaf {
            generator,
            axes: (0..chunks.ndim()).collect(),
            chunks,
            lowered: Arc::default(),
        }
    }

    fn aligned(&self) -> bool {
        self.axes.iter().enumerate().all(|(a, &k)| a == k)
    }

    /// The layer of the generated array's chunks in its own axis order,
    /// lowered once for all copies of this leaf.
    fn layer(&self) -> Arc<Layer> {
        self.lowered
            .get_or_init(|| {
                let own = GenLeaf::new(self.generator, self.chunks.clone());
                let shape = self.chunks.shape();
                let program = Program::leaf(self.generator.dtype());
                lower(&program, &[Leaf::Gen(own)], &shape, &self.chunks, None, "fused").0
            })
            .clone()
    }
}

/// A fused elementwise expression, lowered to a layer at most once.
#[derive(Debug)]
pub(crate) struct Fused {
    pub(crate) program: Program,
    pub(crate) leaves: Vec<Leaf>,
    memo: OnceLock<Arc<Layer>>,
}

#[derive(Debug)]
pub(crate) enum Node {
    Layer(Arc<Layer>),
    Fused(Fused),
}

/// A lazy, chunked n-dimensional array. Operations build a plan; nothing
/// runs until [`Array::to_host`] (or a graph from [`Array::graph`]) is
/// computed. Elementwise operations and the reduction after them fuse into
/// one task per chunk.
#[derive(Debug, Clone)]
pub struct Array {
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
    pub(crate) chunks: Chunks,
    pub(crate) node: Arc<Node>,
}

/// An array gathered into one contiguous buffer (C order).
#[derive(Debug, Clone, PartialEq)]
pub struct HostArray {
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: Buf,
}

impl HostArray {
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The elements as `T`, which must be the array's type (`u8` for bool).
    pub fn into_vec<T: Element>(self) -> Result<Vec<T>> {
        match self.data.as_slice::<T>() {
            Some(s) => Ok(s.to_vec()),
            None => Err(ArrayError::DType {
                op: "into_vec",
                dtype: self.data.dtype(),
            }),
        }
    }

    /// The elements converted to float64.
    pub fn to_f64(&self) -> Vec<f64> {
        self.data.to_vec()
    }
}

impl Array {
    pub(crate) fn from_layer(layer: Arc<Layer>, dtype: DType, shape: Vec<usize>, chunks: Chunks) -> Array {
        Array {
            dtype,
            shape,
            chunks,
            node: Arc::new(Node::Layer(layer)),
        }
    }

    pub(crate) fn from_fused(program: Program, leaves: Vec<Leaf>, shape: Vec<usize>, chunks: Chunks) -> Array {
        Array {
            dtype: program.dtype(),
            shape,
            chunks,
            node: Arc::new(Node::Fused(Fused {
                program,
                leaves,
                memo: OnceLock::new(),
            })),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunk grid.
    pub fn chunks(&self) -> &Chunks {
        &self.chunks
    }

    /// The expression computing this array's chunks: its own if it is
    /// fused and not yet lowered, else a load of its layer's chunks.
    pub(crate) fn expr(&self) -> (Program, Vec<Leaf>) {
        match &*self.node {
            Node::Fused(f) if f.memo.get().is_none() => (f.program.clone(), f.leaves.clone()),
            _ => (
                Program::leaf(self.dtype),
                vec![Leaf::Input {
                    layer: self.layer(),
                    shape: self.shape.clone(),
                    chunks: self.chunks.clone(),
                    axes: (0..self.ndim()).collect(),
                }],
            ),
        }
    }

    /// Whether the plan generates values from positions (random, arange),
    /// which only line up with this array's own chunks or their transpose.
    fn has_gen(&self) -> bool {
        match &*self.node {
            Node::Fused(f) => f.memo.get().is_none() && f.leaves.iter().any(|l| matches!(l, Leaf::Gen(_))),
            Node::Layer(_) => false,
        }
    }

    /// The expression, safe to read through a view that broadcasts or
    /// drops axes: generators are lowered to a layer first.
    pub(crate) fn view_expr(&self) -> (Program, Vec<Leaf>) {
        if self.has_gen() {
            self.layer();
        }
        self.expr()
    }

    /// The layer holding this array's chunks, lowering a fused plan once.
    pub fn layer(&self) -> Arc<Layer> {
        match &*self.node {
            Node::Layer(layer) => layer.clone(),
            Node::Fused(f) => f
                .memo
                .get_or_init(|| match (f.program.is_plain_leaf(), f.leaves.as_slice()) {
                    // A generated array shares its views' lowering.
                    (true, [Leaf::Gen(g)]) if g.aligned() => g.layer(),
                    _ => lower(&f.program, &f.leaves, &self.shape, &self.chunks, None, "fused").0,
                })
                .clone(),
        }
    }

    /// Whether this array is a plain (possibly transposed) view of a
    /// layer: `Some((layer, axes))` where axis `a` of the layer's array is
    /// axis `axes[a]` of this one. A (transposed) generated array is a view
    /// of its generator's layer, lowered here.
    pub(crate) fn as_view(&self) -> Option<(Arc<Layer>, Vec<usize>)> {
        let (program, leaves) = self.expr();
        match (program.is_plain_leaf(), leaves.as_slice()) {
            (true, [Leaf::Input { layer, shape, axes, .. }]) if shape.len() == self.ndim() => {
                Some((layer.clone(), axes.clone()))
            }
            (true, [Leaf::Gen(g)]) => Some((g.layer(), g.axes.clone())),
            _ => None,
        }
    }

    /// The task graph computing this array, its chunks as outputs (flat
    /// chunk order), with P2P rechunks as shown, naming no workers: a
    /// cluster runs [`Array::graph_on`].
    pub fn graph(&self) -> Graph {
        match self.graph_with(|l| Ok::<_, std::convert::Infallible>(l.tasks.clone())) {
            Ok(graph) => graph,
            Err(never) => match never {},
        }
    }

    /// The graph of run `run` over `workers` (their data addresses) of the
    /// P2P rechunks in the plan (see [`weft_runtime::shuffle::compute`]).
    pub fn graph_on(&self, workers: &[SharedStr], run: u64) -> Result<Graph> {
        self.graph_with(|l| match &l.shuffle {
            Some(s) => s.tasks(&l.name, workers, run),
            None => Ok(l.tasks.clone()),
        })
    }

    /// The graph computed in this process: P2P rechunks as plain tasks.
    pub(crate) fn local_graph(&self) -> Result<Graph> {
        self.graph_with(|l| match &l.shuffle {
            Some(s) => s.local_tasks(&l.name),
            None => Ok(l.tasks.clone()),
        })
    }

    /// The tasks of every layer the array reads, each lowered by `tasks`.
    fn graph_with<E>(
        &self,
        mut tasks: impl FnMut(&Layer) -> std::result::Result<Vec<TaskSpec>, E>,
    ) -> std::result::Result<Graph, E> {
        let layer = self.layer();
        let mut all = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![layer.clone()];
        while let Some(l) = stack.pop() {
            if !seen.insert(l.name.clone()) {
                continue;
            }
            all.extend(tasks(&l)?);
            stack.extend(l.deps.iter().cloned());
        }
        let outputs = (0..self.chunks.nblocks()).map(|i| layer.key(i)).collect();
        Ok(Graph { tasks: all, outputs })
    }

    /// Computes the array's chunks on the cluster (a P2P rechunk whose
    /// worker is lost runs again over the workers left); their futures,
    /// done.
    pub async fn compute(&self, client: &Client) -> Result<Vec<TaskFuture>> {
        weft_runtime::shuffle::compute(client, |workers, run| self.graph_on(workers, run)).await
    }

    /// Computes the array on the cluster and gathers it into one buffer.
    pub async fn to_host(&self, client: &Client) -> Result<HostArray> {
        let futures = self.compute(client).await?;
        let values = client.gather(&futures).await?;
        self.assemble(&values)
    }

    /// Joins gathered chunk values (flat chunk order) into one buffer.
    pub fn assemble(&self, values: &[weft_runtime::Value]) -> Result<HostArray> {
        let mut data = Buf::zeros(self.dtype, self.len());
        let full = strides(&self.shape);
        for (i, value) in values.iter().enumerate() {
            let view = decode_one(value)?;
            let b = self.chunks.unravel(i);
            let shape = self.chunks.block_shape(&b);
            let offset = self.chunks.block_offset(&b);
            if view.shape != shape || view.dtype() != self.dtype {
                return Err(ArrayError::Data(format!(
                    "chunk {i} came back as {} {:?}, expected {} {:?}",
                    view.dtype(),
                    view.shape,
                    self.dtype,
                    shape
                )));
            }
            let n: usize = shape.iter().product();
            if n == 0 {
                continue;
            }
            let row = shape.last().copied().unwrap_or(1);
            let rows = n / row;
            let rows_shape: Vec<usize> = shape[..shape.len().saturating_sub(1)].to_vec();
            with_typed!(Buf, &mut data, dst => {
                let src = view.data.as_slice().ok_or_else(|| ArrayError::Data("chunk type".into()))?;
                for r in 0..rows {
                    let idx = unravel(r, &rows_shape);
                    let start: usize = idx.iter().zip(&offset).zip(&full).map(|((i, o), s)| (i + o) * s).sum::<usize>()
                        + offset.last().copied().unwrap_or(0) * full.last().copied().unwrap_or(1);
                    dst[start..start + row].copy_from_slice(&src[r * row..(r + 1) * row]);
                }
            });
        }
        Ok(HostArray {
            shape: self.shape.clone(),
            data,
        })
    }

    /// The plan as text: the fused program and its leaves, or the layer.
    pub fn explain(&self) -> String {
        match &*self.node {
            Node::Fused(f) if f.memo.get().is_none() => {
                let mut s = format!("fused {} {:?} chunks {:?}\n", self.dtype, self.shape, self.chunks.0);
                s += &f.program.text();
                for (i, leaf) in f.leaves.iter().enumerate() {
                    match leaf {
                        Leaf::Input { layer, axes, .. } => s += &format!("leaf {i}: {} axes {axes:?}\n", layer.name),
                        Leaf::Gen(g) => s += &format!("leaf {i}: {:?} axes {:?}\n", g.generator, g.axes),
                    }
                }
                s
            }
            _ => {
                let layer = self.layer();
                let mut s = format!(
                    "layer {} of {} tasks, {} {:?}\n",
                    layer.name,
                    layer.tasks.len(),
                    self.dtype,
                    self.shape
                );
                if let Some(shuffle) = &layer.shuffle {
                    let (n, m, pieces) = shuffle.size();
                    s += &format!(
                        "p2p rechunk: {n} transfers push {pieces} pieces of {n} chunks worker to worker, \
                         a barrier, {m} unpacks assemble the output chunks\n"
                    );
                }
                s
            }
        }
    }

    // ---- elementwise -------------------------------------------------

    /// Applies `build` to the expressions of `arrays`, broadcast together
    /// (NumPy's rules); `build` gets each operand's program and its leaf
    /// numbering into the merged leaves.
    pub(crate) fn broadcast_map(
        arrays: &[&Array],
        op: &'static str,
        build: impl FnOnce(&[(Program, Vec<u32>)]) -> Result<Program>,
    ) -> Result<Array> {
        let ndim = arrays.iter().map(|a| a.ndim()).max().unwrap_or(0);
        let mut shape = vec![1usize; ndim];
        for a in arrays {
            let pad = ndim - a.ndim();
            for (k, &n) in a.shape.iter().enumerate() {
                let s = &mut shape[pad + k];
                if *s == 1 {
                    *s = n;
                } else if n != 1 && n != *s {
                    return Err(ArrayError::Shape {
                        op,
                        left: arrays[0].shape.clone(),
                        right: a.shape.clone(),
                    });
                }
            }
        }
        // Chunks per axis: the first operand's that spans it; operands
        // chunked otherwise are rechunked to them (Dask's unify_chunks).
        let mut chunks: Vec<Option<Vec<usize>>> = vec![None; ndim];
        for a in arrays {
            let pad = ndim - a.ndim();
            for (k, &n) in a.shape.iter().enumerate() {
                if n == shape[pad + k] && n != 1 && chunks[pad + k].is_none() {
                    chunks[pad + k] = Some(a.chunks.axis(k).to_vec());
                }
            }
        }
        let mut aligned = Vec::with_capacity(arrays.len());
        for a in arrays {
            let pad = ndim - a.ndim();
            let want: Vec<Vec<usize>> = a
                .shape
                .iter()
                .enumerate()
                .map(|(k, &n)| match &chunks[pad + k] {
                    Some(c) if n == shape[pad + k] && n != 1 => c.clone(),
                    _ => a.chunks.axis(k).to_vec(),
                })
                .collect();
            aligned.push(if want == a.chunks.0 {
                (*a).clone()
            } else {
                a.rechunk_to(Chunks(want), &crate::rechunk::RechunkOptions::default())?
            });
        }
        let mut leaves: Vec<Leaf> = Vec::new();
        let mut parts = Vec::with_capacity(arrays.len());
        for a in &aligned {
            let pad = ndim - a.ndim();
            let (program, mut own) = if a.shape != shape { a.view_expr() } else { a.expr() };
            for leaf in &mut own {
                if let Leaf::Input { axes, .. } = leaf {
                    for x in axes.iter_mut().filter(|x| **x != crate::fuse::DROPPED) {
                        *x += pad;
                    }
                }
            }
            let map: Vec<u32> = own
                .into_iter()
                .map(|leaf| match leaves.iter().position(|l| l.same(&leaf)) {
                    Some(i) => i as u32,
                    None => {
                        leaves.push(leaf);
                        (leaves.len() - 1) as u32
                    }
                })
                .collect();
            parts.push((program, map));
        }
        let chunks = Chunks(
            chunks
                .into_iter()
                .zip(&shape)
                .map(|(c, &n)| c.unwrap_or_else(|| vec![n]))
                .collect(),
        );
        let program = build(&parts)?;
        Ok(Array::from_fused(program, leaves, shape, chunks))
    }

    /// `self op other`, elementwise with broadcasting.
    pub fn binary(&self, other: &Array, op: BinaryOp) -> Result<Array> {
        let name = binary_name(op);
        Array::broadcast_map(&[self, other], name, |parts| {
            // The first operand's leaves are numbered first, in order.
            let a = renumber(&parts[0].0, &parts[0].1);
            a.binary(op, &parts[1].0, &parts[1].1, name, None)
        })
    }

    /// `self op value` (or `value op self` with `reversed`).
    pub fn binary_scalar(&self, value: impl Into<Scalar>, op: BinaryOp, reversed: bool) -> Result<Array> {
        let value = value.into();
        let name = binary_name(op);
        let (program, leaves) = self.expr();
        let constant = Program::constant(value, value.dtype());
        let program = if reversed {
            let identity: Vec<u32> = (0..leaves.len() as u32).collect();
            constant.binary(op, &program, &identity, name, Some(value))?
        } else {
            program.binary(op, &constant, &[], name, Some(value))?
        };
        Ok(Array::from_fused(
            program,
            leaves,
            self.shape.clone(),
            self.chunks.clone(),
        ))
    }

    /// `f(self)`, elementwise.
    pub fn unary(&self, op: UnaryOp) -> Result<Array> {
        let name = match op {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Not => "logical_not",
        };
        let (program, leaves) = self.expr();
        Ok(Array::from_fused(
            program.unary(op, name)?,
            leaves,
            self.shape.clone(),
            self.chunks.clone(),
        ))
    }

    /// The array converted to `dtype` (as `as` converts; bool: nonzero).
    pub fn astype(&self, dtype: DType) -> Array {
        let (program, leaves) = self.expr();
        Array::from_fused(program.astype(dtype), leaves, self.shape.clone(), self.chunks.clone())
    }

    /// `cond ? a : b` elementwise, broadcasting all three.
    pub fn where_(cond: &Array, a: &Array, b: &Array) -> Result<Array> {
        Array::broadcast_map(&[cond, a, b], "where", |parts| {
            let c = renumber(&parts[0].0, &parts[0].1);
            Ok(Program::select(&c, &parts[1].0, &parts[1].1, &parts[2].0, &parts[2].1))
        })
    }

    // ---- axes ----------------------------------------------------------

    /// Normalises a possibly negative axis.
    pub(crate) fn axis(&self, axis: isize, op: &'static str) -> Result<usize> {
        let nd = self.ndim() as isize;
        let a = if axis < 0 { axis + nd } else { axis };
        if a < 0 || a >= nd.max(0) {
            return Err(ArrayError::Axis {
                op,
                axis,
                ndim: self.ndim(),
            });
        }
        Ok(a as usize)
    }

    /// The axes in the order `perm` (axis `i` of the result is axis
    /// `perm[i]` of this array). A view: no task, no copy until used.
    pub fn permute(&self, perm: &[usize]) -> Result<Array> {
        let mut seen = vec![false; self.ndim()];
        if perm.len() != self.ndim()
            || perm
                .iter()
                .any(|&p| p >= self.ndim() || std::mem::replace(&mut seen[p], true))
        {
            return Err(ArrayError::Invalid(format!(
                "transpose: {perm:?} is not a permutation of the {} axes of an array of shape {:?}",
                self.ndim(),
                self.shape
            )));
        }
        let mut inv = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        // Generators stay fused: a transposed one generates in place.
        let (program, mut leaves) = self.expr();
        for leaf in &mut leaves {
            let axes = match leaf {
                Leaf::Input { axes, .. } => axes,
                Leaf::Gen(g) => &mut g.axes,
            };
            for x in axes.iter_mut().filter(|x| **x != crate::fuse::DROPPED) {
                *x = inv[*x];
            }
        }
        let shape = perm.iter().map(|&p| self.shape[p]).collect();
        Ok(Array::from_fused(program, leaves, shape, self.chunks.permute(perm)))
    }

    /// The axes reversed (`x.T`).
    pub fn t(&self) -> Array {
        let perm: Vec<usize> = (0..self.ndim()).rev().collect();
        // A reversal is always a permutation.
        self.permute(&perm).unwrap_or_else(|_| self.clone())
    }

    /// Axes `a` and `b` swapped.
    pub fn swapaxes(&self, a: isize, b: isize) -> Result<Array> {
        let (a, b) = (self.axis(a, "swapaxes")?, self.axis(b, "swapaxes")?);
        let mut perm: Vec<usize> = (0..self.ndim()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }
}

/// The program with its leaves renumbered (for the first operand).
fn renumber(program: &Program, map: &[u32]) -> Program {
    let mut p = program.clone();
    for instr in &mut p.instrs {
        if let crate::expr::Instr::Leaf(l) = instr {
            *l = map[*l as usize];
        }
    }
    p
}

fn binary_name(op: BinaryOp) -> &'static str {
    use BinaryOp::*;
    match op {
        Add => "add",
        Sub => "subtract",
        Mul => "multiply",
        Div => "divide",
        Pow => "power",
        Maximum => "maximum",
        Minimum => "minimum",
        Eq => "equal",
        Ne => "not_equal",
        Lt => "less",
        Le => "less_equal",
        Gt => "greater",
        Ge => "greater_equal",
        And => "logical_and",
        Or => "logical_or",
    }
}

/// Lowers a fused expression to a layer of `array.fused` tasks, one per
/// chunk of `chunks` (with `reduce`: each task's partial, keys
/// `{name}-p-{i}`). Returns the layer and the keys of its chunk tasks.
pub(crate) fn lower(
    program: &Program,
    leaves: &[Leaf],
    shape: &[usize],
    chunks: &Chunks,
    reduce: Option<crate::reduce::ReduceArgs>,
    prefix: &str,
) -> (Arc<Layer>, Vec<Key>) {
    let name = unique_name(prefix);
    let mut deps: Vec<Arc<Layer>> = Vec::new();
    for leaf in leaves {
        if let Leaf::Input { layer, .. } = leaf
            && !deps.iter().any(|d| d.name == layer.name)
        {
            deps.push(layer.clone());
        }
    }
    let n = chunks.nblocks();
    let mut tasks = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let b = chunks.unravel(i);
        let mut dep_keys: Vec<Key> = Vec::new();
        let mut dep_index: HashMap<Key, u32> = HashMap::new();
        let args_leaves = leaves
            .iter()
            .map(|leaf| match leaf {
                Leaf::Input {
                    layer,
                    shape: src,
                    chunks: src_chunks,
                    axes,
                } => {
                    let sb: Vec<usize> = src
                        .iter()
                        .zip(axes)
                        .map(|(&len, &k)| if len == 1 { 0 } else { b[k] })
                        .collect();
                    let key = layer.key(src_chunks.ravel(&sb));
                    let dep = *dep_index.entry(key.clone()).or_insert_with(|| {
                        dep_keys.push(key);
                        (dep_keys.len() - 1) as u32
                    });
                    LeafArg::Input {
                        dep,
                        axes: axes.clone(),
                    }
                }
                Leaf::Gen(g) => {
                    let sb: Vec<usize> = g.axes.iter().map(|&k| b[k]).collect();
                    LeafArg::Gen {
                        generator: g.generator,
                        block: g.chunks.ravel(&sb) as u64,
                        axes: g.axes.clone(),
                    }
                }
            })
            .collect();
        let fused = FusedArgs {
            program: program.clone(),
            leaves: args_leaves,
            shape: chunks.block_shape(&b),
            offset: chunks.block_offset(&b),
            global: shape.to_vec(),
            reduce: reduce.clone(),
        };
        let key = if reduce.is_some() {
            Key::from(format!("{name}-p-{i}"))
        } else {
            chunk_key(&name, i)
        };
        // Plain data always serializes.
        tasks.push(TaskSpec::new(
            key.clone(),
            "array.fused",
            args(&fused).unwrap_or_default(),
            dep_keys,
        ));
        keys.push(key);
    }
    let n_keys = if reduce.is_some() { 0 } else { n };
    (Layer::new(name, tasks, deps, n_keys), keys)
}
