//! NumPy's `.npy` format (version 1.0, little-endian, C order): one file
//! for a whole array, or a directory of one file per chunk named by its
//! grid index (`0.3.npy`), written and read by the workers. A chunk read
//! from one big file is read row by row at its offsets, on the worker.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weft_runtime::{Client, TaskSpec, Value, ops::args};

use crate::array::{Array, HostArray, Layer, chunk_key, unique_name};
use crate::block::{Out, decode_one};
use crate::chunks::{Chunks, strides, unravel};
use crate::dtype::DType;
use crate::error::{ArrayError, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::Bool => "|b1",
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArrayError + '_ {
    move |source| ArrayError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The header of a `.npy` file of `dtype` and `shape`, padded so the data
/// starts 64-byte aligned.
pub fn header(dtype: DType, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {tuple}, }}",
        descr(dtype)
    );
    let total = MAGIC.len() + 4 + dict.len() + 1;
    dict.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    dict.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// A file's type, shape and where its data starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyInfo {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Offset of the first element.
    pub data_start: u64,
}

/// Reads the header of the `.npy` file at `path`.
pub fn info(path: &Path) -> Result<NpyInfo> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut head = [0u8; 12];
    f.read_exact(&mut head[..10]).map_err(io(path))?;
    let bad = |why: String| ArrayError::Data(format!("{}: not a .npy file we read ({why})", path.display()));
    if &head[..6] != MAGIC {
        return Err(bad("no magic".into()));
    }
    let (len, start) = match head[6] {
        1 => (usize::from(u16::from_le_bytes([head[8], head[9]])), 10),
        2 | 3 => {
            f.read_exact(&mut head[10..12]).map_err(io(path))?;
            (u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize, 12)
        }
        v => return Err(bad(format!("version {v}"))),
    };
    if len > 1 << 20 {
        return Err(bad(format!("a header of {len} bytes")));
    }
    let mut dict = vec![0u8; len];
    f.read_exact(&mut dict).map_err(io(path))?;
    let dict = String::from_utf8_lossy(&dict);
    let field = |name: &str| -> Option<&str> {
        let at = dict.find(&format!("'{name}'"))? + name.len() + 2;
        Some(dict[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let d = field("descr")
        .and_then(|s| s.strip_prefix('\''))
        .and_then(|s| s.split('\'').next())
        .unwrap_or("");
    let dtype = match d {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        "|b1" => DType::Bool,
        other => return Err(bad(format!("dtype {other:?}"))),
    };
    if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
        return Err(bad("Fortran order".into()));
    }
    let tuple = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape".into()))?;
    let shape = tuple
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|e| bad(format!("shape {tuple:?}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(NpyInfo {
        dtype,
        shape,
        data_start: (start + len) as u64,
    })
}

/// Writes `dtype` elements of `shape` (`bytes`, C order) as a `.npy` file.
pub fn write_bytes(path: &Path, dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<()> {
    let mut f = std::io::BufWriter::new(File::create(path).map_err(io(path))?);
    f.write_all(&header(dtype, shape)).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.flush().map_err(io(path))
}

/// Writes a host array as one `.npy` file.
pub fn write(path: &Path, array: &HostArray) -> Result<()> {
    write_bytes(path, array.dtype(), &array.shape, array.data.as_bytes())
}

/// The arguments of `array.write_npy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteNpy {
    /// Where to write the chunk.
    pub path: PathBuf,
}

impl WriteNpy {
    /// Writes the chunk; returns its byte count.
    pub fn run(&self, chunk: &Value) -> Result<Value> {
        let view = decode_one(chunk)?;
        let bytes = view.data.to_buf().as_bytes().to_vec();
        write_bytes(&self.path, view.dtype(), &view.shape, &bytes)?;
        Value::encode(&(bytes.len() as u64)).map_err(ArrayError::Data)
    }
}

/// The arguments of `array.read_npy`: a block of a `.npy` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadNpy {
    /// The file.
    pub path: PathBuf,
    /// Its type.
    pub dtype: DType,
    /// Its shape.
    pub global: Vec<usize>,
    /// Where its data starts.
    pub data_start: u64,
    /// Where the block starts.
    pub offset: Vec<usize>,
    /// The block's shape.
    pub shape: Vec<usize>,
}

impl ReadNpy {
    /// Reads the block, one row (last axis) at a time.
    pub fn run(&self) -> Result<Value> {
        let path = &self.path;
        let found = info(path)?;
        if found.dtype != self.dtype || found.shape != self.global {
            return Err(ArrayError::Data(format!(
                "{}: now {} {:?}, was {} {:?}",
                path.display(),
                found.dtype,
                found.shape,
                self.dtype,
                self.global
            )));
        }
        let mut f = File::open(path).map_err(io(path))?;
        let mut out = Out::new(self.dtype, &self.shape);
        let size = self.dtype.size();
        let n: usize = self.shape.iter().product();
        crate::with_dtype!(self.dtype, T => {
            let dst = bytemuck::cast_slice_mut::<T, u8>(out.as_mut::<T>()?);
            if n > 0 {
                let nd = self.shape.len();
                let row = if nd == 0 { 1 } else { self.shape[nd - 1] };
                let st = strides(&self.global);
                let rows_shape = &self.shape[..nd.saturating_sub(1)];
                for r in 0..n / row {
                    let idx = unravel(r, rows_shape);
                    let mut flat = if nd == 0 { 0 } else { self.offset[nd - 1] };
                    for a in 0..nd.saturating_sub(1) {
                        flat += (self.offset[a] + idx[a]) * st[a];
                    }
                    f.seek(SeekFrom::Start(self.data_start + (flat * size) as u64)).map_err(io(path))?;
                    f.read_exact(&mut dst[r * row * size..(r + 1) * row * size]).map_err(io(path))?;
                }
            }
        });
        out.finish()
    }
}

fn read_layer(name: String, reads: Vec<ReadNpy>) -> std::sync::Arc<Layer> {
    let n = reads.len();
    let tasks = reads
        .iter()
        .enumerate()
        .map(|(i, r)| {
            TaskSpec::new(
                chunk_key(&name, i),
                "array.read_npy",
                args(r).unwrap_or_default(),
                Vec::new(),
            )
        })
        .collect();
    Layer::new(name, tasks, Vec::new(), n)
}

/// An array read from one `.npy` file by the workers, in chunks of `chunk`.
pub fn from_npy(path: &Path, chunk: &[usize]) -> Result<Array> {
    let info = info(path)?;
    let chunks = Chunks::regular(&info.shape, chunk)?;
    let reads = (0..chunks.nblocks())
        .map(|i| {
            let b = chunks.unravel(i);
            ReadNpy {
                path: path.to_path_buf(),
                dtype: info.dtype,
                global: info.shape.clone(),
                data_start: info.data_start,
                offset: chunks.block_offset(&b),
                shape: chunks.block_shape(&b),
            }
        })
        .collect();
    let layer = read_layer(unique_name("read-npy"), reads);
    Ok(Array::from_layer(layer, info.dtype, info.shape, chunks))
}

/// An array read from a directory of chunk files (`i.j.npy` for chunk
/// `(i, j)`, as [`Array::to_npy_dir`] writes them).
pub fn from_npy_dir(dir: &Path) -> Result<Array> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".npy"))
        else {
            continue;
        };
        let idx: Vec<usize> = stem
            .split('.')
            .map(|s| s.parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| ArrayError::Data(format!("{}: not a chunk file name", path.display())))?;
        files.push((idx, path));
    }
    files.sort();
    let first = files
        .first()
        .ok_or_else(|| ArrayError::Data(format!("{}: no chunk files", dir.display())))?;
    let nd = first.0.len();
    let grid: Vec<usize> = (0..nd)
        .map(|a| files.iter().map(|f| f.0[a] + 1).max().unwrap_or(1))
        .collect();
    if files.len() != grid.iter().product::<usize>() || files.iter().any(|f| f.0.len() != nd) {
        return Err(ArrayError::Data(format!(
            "{}: chunk files do not fill a grid {grid:?}",
            dir.display()
        )));
    }
    let infos: Vec<NpyInfo> = files.iter().map(|(_, p)| info(p)).collect::<Result<_>>()?;
    let dtype = infos[0].dtype;
    // Chunk lengths along each axis, from the files on that axis's edge.
    let mut lens: Vec<Vec<usize>> = grid.iter().map(|&g| vec![0; g]).collect();
    for ((idx, _), inf) in files.iter().zip(&infos) {
        for a in 0..nd {
            lens[a][idx[a]] = inf.shape.get(a).copied().unwrap_or(0);
        }
    }
    for ((idx, p), inf) in files.iter().zip(&infos) {
        let want: Vec<usize> = (0..nd).map(|a| lens[a][idx[a]]).collect();
        if inf.dtype != dtype || inf.shape != want {
            return Err(ArrayError::Data(format!(
                "{}: {} {:?} does not fit the grid (expected {dtype} {want:?})",
                p.display(),
                inf.dtype,
                inf.shape
            )));
        }
    }
    let chunks = Chunks(lens);
    let shape = chunks.shape();
    let reads = files
        .into_iter()
        .zip(infos)
        .map(|((_, path), inf)| ReadNpy {
            path,
            dtype,
            offset: vec![0; nd],
            shape: inf.shape.clone(),
            global: inf.shape,
            data_start: inf.data_start,
        })
        .collect();
    Ok(Array::from_layer(
        read_layer(unique_name("read-npy-dir"), reads),
        dtype,
        shape,
        chunks,
    ))
}

impl Array {
    /// Computes the array and writes it as one `.npy` file here.
    pub async fn to_npy(&self, client: &Client, path: &Path) -> Result<()> {
        write(path, &self.to_host(client).await?)
    }

    /// The tasks writing every chunk as `dir/i.j.npy` (on the workers),
    /// P2P rechunks shown naming no workers; [`Array::to_npy_dir`] computes
    /// them over the cluster's.
    pub fn npy_dir_graph(&self, dir: &Path) -> weft_runtime::Graph {
        self.with_npy_writes(self.graph(), dir)
    }

    /// `graph` (this array's) with its outputs replaced by tasks writing
    /// every chunk as `dir/i.j.npy`.
    fn with_npy_writes(&self, mut graph: weft_runtime::Graph, dir: &Path) -> weft_runtime::Graph {
        let src = self.layer();
        let name = unique_name("write-npy");
        graph.outputs.clear();
        for i in 0..self.chunks.nblocks() {
            let b = self.chunks.unravel(i);
            let file: Vec<String> = b.iter().map(usize::to_string).collect();
            let w = WriteNpy {
                path: dir.join(format!("{}.npy", file.join("."))),
            };
            let key = chunk_key(&name, i);
            graph.tasks.push(TaskSpec::new(
                key.clone(),
                "array.write_npy",
                args(&w).unwrap_or_default(),
                vec![src.key(i)],
            ));
            graph.outputs.push(key);
        }
        graph
    }

    /// Writes every chunk as `dir/i.j.npy` from the worker holding it.
    pub async fn to_npy_dir(&self, client: &Client, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let futures = weft_runtime::shuffle::compute(client, |workers, run| {
            Ok::<_, ArrayError>(self.with_npy_writes(self.graph_on(workers, run)?, dir))
        })
        .await?;
        client.gather(&futures).await?;
        Ok(())
    }
}
