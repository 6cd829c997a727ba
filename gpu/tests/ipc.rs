//! Device IPC between two processes: a producer (this test binary run
//! again as a child) shares a device buffer, the consumer copies it with
//! `Gpu::ipc_copy`; on an emulated GPU, and on a CUDA GPU where present.

// Helpers outside `#[test]` functions unwrap too; clippy.toml only covers the tests themselves.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;

use weft_gpu::testing::test_gpus;
use weft_gpu::{Gpu, GpuBackend, GpuError, IPC_MIN, IpcHandle, IpcMemory};

/// Set in the child: which GPU it produces on (`emulated` or `cuda`).
const CHILD: &str = "WEFT_TEST_IPC_PRODUCER";

const LEN: usize = IPC_MIN + 4096;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(13).wrapping_add(5)).collect()
}

/// The producer's side, run only in the child: shares a buffer, prints its
/// handle, frees it when told, then waits to be killed or closed.
#[test]
fn ipc_producer_child() {
    let Ok(kind) = std::env::var(CHILD) else {
        return;
    };
    let gpu = gpu_of(&kind);
    let buffer = gpu.stream().unwrap().upload(&pattern(LEN)).unwrap();
    let handle = buffer.ipc_handle().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "HANDLE {}", serde_json::to_string(&handle).unwrap()).unwrap();
    out.flush().unwrap();
    let mut lines = std::io::stdin().lock().lines();
    assert_eq!(lines.next().unwrap().unwrap(), "free");
    drop(buffer);
    gpu.trim();
    writeln!(out, "FREED").unwrap();
    out.flush().unwrap();
    // Until the parent closes stdin (or kills us).
    for _ in lines {}
}

fn gpu_of(kind: &str) -> Arc<Gpu> {
    if kind == "cuda" {
        test_gpus("ipc producer").pop().unwrap().1
    } else {
        Gpu::emulated(0, 1 << 30, true)
    }
}

struct Producer {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Producer {
    fn start(kind: &str) -> Producer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "ipc_producer_child", "--nocapture", "--test-threads=1"])
            .env(CHILD, kind)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Producer { child, out }
    }

    /// The next line the child prints that starts with `tag`, without it.
    fn expect(&mut self, tag: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.out.read_line(&mut line).unwrap() > 0,
                "the producer ended before {tag}"
            );
            // The harness may print "test NAME ... " before the tag.
            if let Some(at) = line.find(tag) {
                return line[at + tag.len()..].trim().to_string();
            }
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{line}").unwrap();
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_device_buffer_is_copied_from_another_process_and_refusals_are_errors() {
    for (name, gpu) in test_gpus("device IPC between processes") {
        let kind = if matches!(gpu.backend(), GpuBackend::Cuda(_)) {
            "cuda"
        } else {
            "emulated"
        };
        let mut producer = Producer::start(kind);
        let handle: IpcHandle = serde_json::from_str(&producer.expect("HANDLE")).unwrap();
        assert_eq!(handle.len, LEN as u64, "{name}");

        let before = copies(&gpu);
        let copied = gpu.ipc_copy(&handle).unwrap();
        assert_eq!(copied.device(), gpu.device(), "{name}: lands on the consumer's GPU");
        assert_eq!(gpu.stream().unwrap().download(&copied).unwrap(), pattern(LEN), "{name}");
        if let (Some(before), Some(after)) = (before, copies(&gpu)) {
            assert_eq!(
                (after.ipc - before.ipc, after.h2d - before.h2d),
                (1, 0),
                "{name}: one IPC copy, no upload"
            );
        }

        // Refusals: a handle of this process, a stale inode, another backend.
        let own = Gpu::emulated(1, 1 << 30, true);
        let mine = own.alloc(LEN).unwrap().ipc_handle().unwrap();
        assert!(matches!(own.ipc_copy(&mine), Err(GpuError::Ipc { .. })), "{name}");
        if let IpcMemory::Emulated { fd, size, .. } = handle.memory {
            let stale = IpcHandle {
                memory: IpcMemory::Emulated { fd, ino: 1, size },
                ..handle.clone()
            };
            let error = gpu.ipc_copy(&stale).unwrap_err().to_string();
            assert!(error.contains("no longer the block"), "{name}: {error}");
        }
        let other = IpcHandle {
            memory: IpcMemory::Cuda(vec![0; 64]),
            ..handle.clone()
        };
        if kind == "emulated" {
            assert!(matches!(gpu.ipc_copy(&other), Err(GpuError::Ipc { .. })), "{name}");
        }

        // The producer frees its block: the handle no longer opens.
        producer.say("free");
        producer.expect("FREED");
        if kind == "emulated" {
            assert!(gpu.ipc_copy(&handle).is_err(), "{name}: a freed block is refused");
        }
        // A producer gone: refused, never a wrong answer.
        drop(producer);
        assert!(
            gpu.ipc_copy(&handle).is_err(),
            "{name}: a dead producer's handle is refused"
        );
    }
}

#[test]
fn small_emulated_blocks_are_not_shareable() {
    let gpu = Gpu::emulated(0, 1 << 30, true);
    let small = gpu.alloc(IPC_MIN / 2).unwrap();
    assert!(matches!(small.ipc_handle(), Err(GpuError::Ipc { .. })));
    let large = gpu.alloc(IPC_MIN).unwrap();
    let handle = large.ipc_handle().unwrap();
    assert_eq!((handle.offset, handle.len), (0, IPC_MIN as u64));
    // Memfd blocks count against capacity and free like any other.
    let used = match gpu.backend() {
        GpuBackend::Emulated(e) => e.used(),
        GpuBackend::Cuda(_) => unreachable!(),
    };
    assert!(used >= IPC_MIN);
}

fn copies(gpu: &Gpu) -> Option<weft_gpu::CopyCounters> {
    match gpu.backend() {
        GpuBackend::Emulated(e) => Some(e.copies()),
        GpuBackend::Cuda(_) => None,
    }
}
