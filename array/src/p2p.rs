//! Rechunking through the runtime's P2P shuffle
//! ([`weft_runtime::shuffle`]), as Dask's P2P rechunk: each input chunk is
//! one `transfer` task, which cuts it into the regions the output chunks
//! need ([`SPLIT_OP`]) and pushes each region to the worker owning its
//! output chunk; each output chunk is one `unpack` task assembling the
//! regions that arrived there (`array.assemble`). `n + m + 2` tasks for `n`
//! input and `m` output chunks, whatever the number of pieces; the pieces
//! wait in the receivers' stores, so they count against their memory and
//! spill. The shuffle service takes one piece per (input, output) pair: an
//! input chunk sends an empty chunk to the outputs it does not overlap.
//!
//! The plan is kept as data ([`Shuffle`]) and lowered when computed: over
//! the cluster's workers ([`Shuffle::tasks`]), or as plain tasks of the
//! same ops in this process ([`Shuffle::local_tasks`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weft_runtime::shuffle::{Call, ShuffleSpec};
use weft_runtime::{Key, SharedStr, TaskSpec, Value, ops::args};

use crate::array::{Array, Layer, unique_name};
use crate::block::{Meta, Out, decode_one};
use crate::chunks::{Chunks, unravel};
use crate::dtype::DType;
use crate::error::{ArrayError, Result};
use crate::rechunk::{AssembleArgs, AxisMap, Piece, assemble, axis_runs};

/// Cuts one input chunk into the regions of the output chunks it overlaps:
/// args [`SplitArgs`], input the chunk; a value with one frame per region.
pub const SPLIT_OP: &str = "array.rechunk_split";
/// One output chunk's region of a split: args the output's index (a
/// `u32`), input the split; a chunk, empty where the input does not
/// overlap that output.
pub const PIECE_OP: &str = "array.rechunk_piece";

/// A region of an input chunk that one output chunk needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// The output chunk (flat index).
    pub output: u32,
    /// Where the region starts in the input chunk.
    pub src: Vec<usize>,
    /// Its shape.
    pub size: Vec<usize>,
}

/// The arguments of [`SPLIT_OP`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitArgs {
    /// The element type.
    pub dtype: DType,
    /// The regions, by increasing output.
    pub cuts: Vec<Cut>,
}

/// A split's header: the element type, the number of axes and, per frame,
/// its output and shape.
#[derive(Debug, Serialize, Deserialize)]
struct SplitHeader {
    dtype: DType,
    ndim: usize,
    regions: Vec<(u32, Vec<usize>)>,
}

/// Runs [`SPLIT_OP`]: every region is copied once out of the chunk (a
/// device chunk is read through the host).
pub fn run_split(args: &SplitArgs, input: &Value) -> Result<Value> {
    let view = decode_one(input)?;
    let ndim = view.shape.len();
    let views = [view];
    let mut header = SplitHeader {
        dtype: args.dtype,
        ndim,
        regions: Vec::with_capacity(args.cuts.len()),
    };
    let mut frames = Vec::with_capacity(args.cuts.len());
    for cut in &args.cuts {
        let region = AssembleArgs {
            dtype: args.dtype,
            shape: cut.size.clone(),
            pieces: vec![Piece {
                dep: 0,
                src: cut.src.clone(),
                step: vec![1; ndim],
                dst: vec![0; ndim],
                size: cut.size.clone(),
            }],
        };
        frames.extend(assemble(&region, &views)?.frames);
        header.regions.push((cut.output, cut.size.clone()));
    }
    let mut value = Value::encode(&header).map_err(ArrayError::Data)?;
    value.frames = frames;
    Ok(value)
}

/// Runs [`PIECE_OP`]: the region of `output` in `split`, sharing its frame.
pub fn run_piece(output: u32, split: &Value) -> Result<Value> {
    let header: SplitHeader = split
        .decode()
        .map_err(|e| ArrayError::Data(format!("{PIECE_OP} reads a split, not this value: {e}")))?;
    if header.regions.len() != split.frames.len() {
        return Err(ArrayError::Data(format!(
            "a split lists {} regions and has {} frames",
            header.regions.len(),
            split.frames.len()
        )));
    }
    match header.regions.binary_search_by_key(&output, |(o, _)| *o) {
        Ok(k) => {
            let meta = Meta {
                dtype: header.dtype,
                shape: header.regions[k].1.clone(),
            };
            let mut value = Value::encode(&vec![meta]).map_err(ArrayError::Data)?;
            value.frames.push(split.frames[k].clone());
            Ok(value)
        }
        Err(_) => Out::new(header.dtype, &vec![0; header.ndim]).finish(),
    }
}

/// A P2P rechunk's plan: per input chunk its key and regions, per output
/// chunk how its pieces (one per input, in input order) make it up.
#[derive(Debug)]
pub struct Shuffle {
    splits: Vec<(Key, SplitArgs)>,
    outputs: Vec<AssembleArgs>,
    pieces: usize,
}

impl Shuffle {
    /// Input chunks, output chunks and the pieces moving between them.
    pub fn size(&self) -> (usize, usize, usize) {
        (self.splits.len(), self.outputs.len(), self.pieces)
    }

    /// The shuffle's tasks for run `run` over `workers` (data addresses;
    /// none for a plan only shown), under the key prefix `name`: output
    /// chunk `j` is `{name}-unpack-{j}`.
    pub fn tasks(&self, name: &str, workers: &[SharedStr], run: u64) -> Result<Vec<TaskSpec>> {
        let spec = ShuffleSpec {
            id: shuffle_id(name),
            run,
            inputs: self.splits.len() as u32,
            outputs: self.outputs.len() as u32,
            workers: workers.to_vec(),
        };
        let inputs = self
            .splits
            .iter()
            .map(|(key, split)| {
                let call = Call {
                    op: SPLIT_OP.into(),
                    args: args(split)?,
                };
                Ok((call, vec![key.clone()]))
            })
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(ArrayError::Data)?;
        let combine = self
            .outputs
            .iter()
            .map(|a| {
                args(a).map(|args| Call {
                    op: "array.assemble".into(),
                    args,
                })
            })
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(ArrayError::Data)?;
        let shuffle = weft_runtime::shuffle::tasks(name, &spec, inputs, PIECE_OP, |j| combine[j as usize].clone())
            .map_err(ArrayError::Data)?;
        Ok(shuffle.tasks)
    }

    /// The same ops as plain tasks, for computing in this process (which
    /// has no data plane): a split task per input chunk, a piece task per
    /// (input, output) pair that overlap, an assemble task per output.
    pub fn local_tasks(&self, name: &str) -> Result<Vec<TaskSpec>> {
        let split_key = |i: usize| Key::from(format!("{name}-split-{i}"));
        let mut tasks = Vec::with_capacity(self.splits.len() + self.pieces + self.outputs.len());
        for (i, (key, split)) in self.splits.iter().enumerate() {
            let a = args(split).map_err(ArrayError::Data)?;
            tasks.push(TaskSpec::new(split_key(i), SPLIT_OP, a, vec![key.clone()]));
        }
        for (j, out) in self.outputs.iter().enumerate() {
            let mut deps = Vec::with_capacity(out.pieces.len());
            let mut assemble = out.clone();
            for (d, piece) in assemble.pieces.iter_mut().enumerate() {
                let key = Key::from(format!("{name}-piece-{}-{j}", piece.dep));
                let a = args(&(j as u32)).map_err(ArrayError::Data)?;
                tasks.push(TaskSpec::new(
                    key.clone(),
                    PIECE_OP,
                    a,
                    vec![split_key(piece.dep as usize)],
                ));
                deps.push(key);
                piece.dep = d as u32;
            }
            let a = args(&assemble).map_err(ArrayError::Data)?;
            tasks.push(TaskSpec::new(output_key(name, j), "array.assemble", a, deps));
        }
        Ok(tasks)
    }
}

/// The key of output chunk `j` of the shuffle `name`.
fn output_key(name: &str, j: usize) -> Key {
    Key::from(format!("{name}-unpack-{j}"))
}

/// The shuffle's id: the same in every run of the plan.
fn shuffle_id(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

/// The pieces a rechunk of `source` into `chunks` moves: per output chunk,
/// the input chunks it overlaps.
pub(crate) fn piece_count(source: &Chunks, chunks: &Chunks) -> usize {
    (0..chunks.nblocks())
        .map(|i| {
            let b = chunks.unravel(i);
            let (start, size) = (chunks.block_offset(&b), chunks.block_shape(&b));
            (0..chunks.ndim())
                .map(|a| axis_runs(source.axis(a), &AxisMap::ALL, start[a], start[a] + size[a]).len())
                .product::<usize>()
        })
        .sum()
}

/// `source` in `chunks` through the P2P shuffle.
pub(crate) fn rechunk(source: &Array, chunks: Chunks) -> Result<Array> {
    let src = source.layer();
    let nd = source.ndim();
    let mut splits: Vec<(Key, SplitArgs)> = (0..source.chunks.nblocks())
        .map(|i| {
            let split = SplitArgs {
                dtype: source.dtype,
                cuts: Vec::new(),
            };
            (src.key(i), split)
        })
        .collect();
    let mut outputs = Vec::with_capacity(chunks.nblocks());
    let mut pieces = 0;
    for j in 0..chunks.nblocks() {
        let b = chunks.unravel(j);
        let (start, size) = (chunks.block_offset(&b), chunks.block_shape(&b));
        let per_axis: Vec<_> = (0..nd)
            .map(|a| axis_runs(source.chunks.axis(a), &AxisMap::ALL, start[a], start[a] + size[a]))
            .collect();
        let grid: Vec<usize> = per_axis.iter().map(Vec::len).collect();
        let count: usize = grid.iter().product();
        let mut out = AssembleArgs {
            dtype: source.dtype,
            shape: size,
            pieces: Vec::with_capacity(count),
        };
        for c in 0..count {
            let idx = unravel(c, &grid);
            let runs: Vec<_> = idx.iter().enumerate().map(|(a, &r)| per_axis[a][r]).collect();
            let block: Vec<usize> = runs.iter().map(|r| r.chunk).collect();
            let input = source.chunks.ravel(&block);
            let region: Vec<usize> = runs.iter().map(|r| r.len).collect();
            splits[input].1.cuts.push(Cut {
                output: j as u32,
                src: runs.iter().map(|r| r.src).collect(),
                size: region.clone(),
            });
            out.pieces.push(Piece {
                dep: input as u32,
                src: vec![0; nd],
                step: vec![1; nd],
                dst: runs.iter().map(|r| r.dst).collect(),
                size: region,
            });
        }
        pieces += count;
        outputs.push(out);
    }
    let shuffle = Shuffle {
        splits,
        outputs,
        pieces,
    };
    let name = unique_name("rechunk-p2p");
    let tasks = shuffle.tasks(&name, &[], 0)?;
    let keys = (0..chunks.nblocks()).map(|j| output_key(&name, j)).collect();
    let layer = Layer::shuffled(name, tasks, src, keys, Arc::new(shuffle));
    Ok(Array::from_layer(layer, source.dtype, source.shape.clone(), chunks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Buf, decode_one, encode};

    #[test]
    fn a_split_hands_each_output_its_region_and_the_others_an_empty_chunk() {
        let values: Vec<f64> = (0..4 * 5).map(f64::from).collect();
        let chunk = encode(vec![(vec![4, 5], Buf::F64(values))]).unwrap();
        let args = SplitArgs {
            dtype: DType::F64,
            cuts: vec![
                Cut {
                    output: 1,
                    src: vec![1, 2],
                    size: vec![2, 3],
                },
                Cut {
                    output: 3,
                    src: vec![0, 0],
                    size: vec![4, 1],
                },
            ],
        };
        let split = run_split(&args, &chunk).unwrap();
        let piece = |j: u32| run_piece(j, &split).unwrap();
        let one = piece(1);
        let one = decode_one(&one).unwrap();
        assert_eq!(one.shape, [2, 3]);
        assert_eq!(one.data.as_slice::<f64>().unwrap(), [7., 8., 9., 12., 13., 14.]);
        let three = piece(3);
        assert_eq!(
            decode_one(&three).unwrap().data.as_slice::<f64>().unwrap(),
            [0., 5., 10., 15.]
        );
        let none = piece(2);
        let none = decode_one(&none).unwrap();
        assert_eq!((none.shape.as_slice(), none.data.len()), ([0, 0].as_slice(), 0));
        let err = run_piece(0, &chunk).unwrap_err();
        assert!(err.to_string().contains("reads a split"), "{err}");
    }
}
