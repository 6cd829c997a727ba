//! Results on disk: one file per spilled result in a worker's own spill
//! directory, written and read with large sequential I/O.
//!
//! File layout (little-endian): header length `u64`, frame count `u32`,
//! each frame's length `u64`, then the header bytes and each frame's
//! bytes. A file is removed when its [`SpillFile`] is dropped, and the
//! directory when its [`SpillDir`] is.

use std::fs::{self, File};
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tracing::warn;
use weft_transport::{Buffer, BufferPool};

use crate::value::Value;

/// Frames that reach the disk at most this many per system call.
const MAX_IOVECS: usize = 64;

/// Most frames a spill file may claim to hold (a corrupt count is an
/// error, not an allocation).
const MAX_FRAMES: u32 = 1 << 20;

/// A worker's spill directory, made on first use.
#[derive(Debug)]
pub struct SpillDir {
    path: PathBuf,
    next: AtomicU64,
    created: std::sync::OnceLock<Result<(), String>>,
}

impl SpillDir {
    /// A directory at `path` (created when the first result is spilled).
    pub fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(SpillDir {
            path,
            next: AtomicU64::new(0),
            created: std::sync::OnceLock::new(),
        })
    }

    /// Where the files go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ensure(&self) -> io::Result<()> {
        self.created
            .get_or_init(|| fs::create_dir_all(&self.path).map_err(|e| e.to_string()))
            .clone()
            .map_err(|reason| io::Error::other(format!("cannot create the spill directory: {reason}")))
    }

    /// Writes `value` to a new file; on failure nothing is left behind.
    pub fn write(self: &Arc<Self>, value: &Value) -> io::Result<SpillFile> {
        self.ensure()?;
        let path = self
            .path
            .join(format!("{}.spill", self.next.fetch_add(1, Ordering::Relaxed)));
        let file = SpillFile {
            dir: self.clone(),
            path,
            len: value.nbytes(),
        };
        // `file` removes a partial write when dropped on the error path.
        write_value(&file.path, value)?;
        Ok(file)
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        if matches!(self.created.get(), Some(Ok(()))) {
            // Files still in it belong to nobody now.
            if let Err(error) = fs::remove_dir_all(&self.path) {
                warn!(path = %self.path.display(), %error, "cannot remove the spill directory");
            }
        }
    }
}

/// One spilled result; the file goes when this does.
#[derive(Debug)]
pub struct SpillFile {
    /// Keeps the directory until its last file is gone.
    dir: Arc<SpillDir>,
    path: PathBuf,
    len: u64,
}

impl SpillFile {
    /// Bytes of the result (header plus frames).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the result had no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the result back; each frame lands in its own buffer from
    /// `pool`, so frames stay 64-byte aligned.
    pub fn read(&self, pool: &BufferPool) -> io::Result<Value> {
        read_value(&self.path, pool)
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            warn!(path = %self.path.display(), dir = %self.dir.path.display(), %error, "cannot remove a spill file");
        }
    }
}

fn write_value(path: &Path, value: &Value) -> io::Result<()> {
    let mut prefix = Vec::with_capacity(12 + 8 * value.frames.len());
    prefix.extend_from_slice(&(value.header.len() as u64).to_le_bytes());
    prefix.extend_from_slice(&(value.frames.len() as u32).to_le_bytes());
    let mut frames = Vec::with_capacity(value.frames.len());
    for frame in &value.frames {
        let bytes = frame
            .as_host()
            .ok_or_else(|| io::Error::other("a frame outside host memory cannot be written to disk"))?;
        prefix.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        frames.push(bytes);
    }
    let mut file = File::create(path)?;
    let mut parts: Vec<&[u8]> = Vec::with_capacity(2 + frames.len());
    parts.push(&prefix);
    parts.push(&value.header);
    parts.extend(frames.iter().map(|b| &b[..]));
    for chunk in parts.chunks(MAX_IOVECS) {
        write_all_vectored(&mut file, chunk)?;
    }
    Ok(())
}

fn write_all_vectored(file: &mut File, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_value(path: &Path, pool: &BufferPool) -> io::Result<Value> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let corrupt = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("corrupt spill file: {what}"));
    let mut fixed = [0u8; 12];
    file.read_exact(&mut fixed)?;
    let header_len = u64::from_le_bytes(fixed[..8].try_into().map_err(|_| corrupt("prefix"))?);
    let count = u32::from_le_bytes(fixed[8..].try_into().map_err(|_| corrupt("prefix"))?);
    if count > MAX_FRAMES {
        return Err(corrupt("frame count"));
    }
    let mut lengths = vec![0u8; 8 * count as usize];
    file.read_exact(&mut lengths)?;
    let lengths: Vec<u64> = lengths
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let total = lengths.iter().try_fold(header_len, |a, b| a.checked_add(*b));
    if total.and_then(|t| t.checked_add(12 + 8 * u64::from(count))) != Some(size) {
        return Err(corrupt("lengths do not add up to the file size"));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)?;
    let mut frames = Vec::with_capacity(lengths.len());
    for len in lengths {
        let mut buf = pool.take(len as usize);
        file.read_exact(buf.as_mut_slice())?;
        frames.push(Buffer::host(buf.freeze()));
    }
    Ok(Value {
        header: Bytes::from(header),
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let dir = SpillDir::new(root.path().join("w"));
        let value = Value {
            header: Bytes::from_static(b"head"),
            frames: vec![
                Buffer::host(vec![7u8; 100_000]),
                Buffer::host(Vec::new()),
                Buffer::host(vec![1u8; 3]),
            ],
        };
        let file = dir.write(&value).unwrap();
        assert_eq!(file.len(), value.nbytes());
        let back = file.read(&BufferPool::new(1 << 20)).unwrap();
        assert_eq!(back, value);
        let path = file.path.clone();
        drop(file);
        assert!(!path.exists());
        drop(dir);
        assert!(!root.path().join("w").exists());
    }

    #[test]
    fn unwritable_directory_is_an_error_that_names_it() {
        let root = tempfile::tempdir().unwrap();
        let blocker = root.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let dir = SpillDir::new(blocker.join("spill"));
        let err = dir.write(&Value::encode(&1u8).unwrap()).unwrap_err();
        assert!(err.to_string().contains("spill directory"), "{err}");
    }

    #[test]
    fn corrupt_files_are_errors() {
        let root = tempfile::tempdir().unwrap();
        let dir = SpillDir::new(root.path().to_path_buf());
        let file = dir.write(&Value::encode(&123u64).unwrap()).unwrap();
        let mut bytes = fs::read(&file.path).unwrap();
        bytes.push(0);
        fs::write(&file.path, &bytes).unwrap();
        assert!(file.read(&BufferPool::new(0)).is_err());
        fs::write(&file.path, [0xffu8; 12]).unwrap();
        assert!(file.read(&BufferPool::new(0)).is_err());
    }
}
