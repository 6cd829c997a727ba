//! Stream order on an asynchronous emulated GPU, where queued work runs
//! only when its stream is synchronised: what a real GPU does later, made
//! visible in CI. Blocks dropped under pending work wait for their stream
//! (checked on a CUDA GPU too, where there is one).
#![allow(clippy::unwrap_used)]

use weft_gpu::pool::size_class;
use weft_gpu::{Gpu, GpuError};

#[test]
fn queued_work_runs_when_its_own_stream_is_synchronised() {
    let gpu = Gpu::emulated_asynchronous(0, 1 << 20);
    let s = gpu.thread_stream().unwrap();
    let b = s.upload(&[7u8; 4096]).unwrap();
    s.memset_zero(&b, 1024).unwrap();
    // Another stream does not wait for this one: the memset has not run.
    let other = gpu.stream().unwrap();
    assert_eq!(other.download(&b).unwrap(), vec![7u8; 4096]);
    // This stream's own copy runs after what it queued.
    let got = s.download(&b).unwrap();
    assert_eq!((&got[..1024], &got[1024..]), (&[0u8; 1024][..], &[7u8; 3072][..]));
}

#[test]
fn a_block_dropped_under_pending_work_waits_for_its_stream() {
    let gpu = Gpu::emulated_asynchronous(0, 1 << 20);
    let s = gpu.thread_stream().unwrap();
    let class = size_class(4096);
    let temp = s.alloc(4096).unwrap();
    let ptr = temp.device_ptr();
    s.memset_zero(&temp, 4096).unwrap();
    drop(temp);
    assert_eq!(gpu.pool_stats().deferred, class, "kept for the queued memset");
    // Another thread's allocation cannot get it while the memset is queued.
    let elsewhere = std::thread::scope(|t| t.spawn(|| gpu.alloc(4096).unwrap().device_ptr()).join().unwrap());
    assert_ne!(elsewhere, ptr);
    // The same stream may: its next work runs after the memset.
    let again = s.alloc(4096).unwrap();
    assert_eq!(again.device_ptr(), ptr);
    assert_eq!(gpu.pool_stats().deferred, 0);
    s.copy_h2d(&[9u8; 4096], &again).unwrap();
    assert_eq!(s.download(&again).unwrap(), vec![9u8; 4096], "the memset ran first");
    s.memset_zero(&again, 16).unwrap();
    drop(again);
    // Synchronising gives the block to the pool, for anyone.
    gpu.sync_thread_stream().unwrap();
    let stats = gpu.pool_stats();
    assert_eq!((stats.deferred, stats.in_use), (0, 0));
    let mut ptrs = std::thread::scope(|t| {
        t.spawn(|| [gpu.alloc(4096).unwrap(), gpu.alloc(4096).unwrap()].map(|b| b.device_ptr()))
            .join()
            .unwrap()
    });
    ptrs.sort_unstable();
    assert!(ptrs.contains(&ptr), "{ptrs:?} reuse {ptr:#x}");
}

#[test]
fn a_full_device_synchronises_the_callers_stream_before_failing() {
    let gpu = Gpu::emulated_asynchronous(0, 1 << 20);
    let s = gpu.thread_stream().unwrap();
    let temp = s.alloc(768 << 10).unwrap();
    s.memset_zero(&temp, 768 << 10).unwrap();
    drop(temp);
    // The only room is the dropped block: the pool waits for the stream.
    let b = gpu.alloc(768 << 10).expect("room once the stream is done");
    assert_eq!(gpu.pool_stats().deferred, 0);
    drop(b);
}

#[test]
fn a_failure_in_queued_work_is_reported_by_the_next_synchronisation() {
    let gpu = Gpu::emulated_asynchronous(0, 1 << 20);
    let s = gpu.thread_stream().unwrap();
    s.emulate(|| Err("bad launch".into())).unwrap();
    let err = s.synchronize().unwrap_err();
    assert!(
        matches!(&err, GpuError::Queued { message, .. } if message == "bad launch"),
        "{err}"
    );
    s.synchronize().unwrap();
    // A synchronous device reports it at once.
    let sync = Gpu::emulated(1, 1 << 20, true).thread_stream().unwrap();
    assert!(sync.emulate(|| Err("bad launch".into())).is_err());
}

#[test]
fn an_event_waits_for_the_work_before_it() {
    let gpu = Gpu::emulated_asynchronous(0, 1 << 20);
    let s = gpu.stream().unwrap();
    let src = s.upload(&[3u8; 512]).unwrap();
    let dst = s.upload(&[0u8; 512]).unwrap();
    let done = s.copy_d2d(&src, &dst).unwrap();
    assert!(!done.is_complete());
    done.synchronize().unwrap();
    assert!(done.is_complete());
    assert_eq!(gpu.stream().unwrap().download(&dst).unwrap(), vec![3u8; 512]);
}

#[test]
fn stream_ordered_frees_on_every_gpu_that_queues() {
    // Every test GPU but the synchronous emulated one (its work never waits).
    for (name, gpu) in weft_gpu::testing::test_gpus("stream-ordered frees").into_iter().skip(1) {
        let s = gpu.thread_stream().unwrap();
        let class = size_class(1 << 20);
        let temp = s.upload(&vec![5u8; 1 << 20]).unwrap();
        let ptr = temp.device_ptr();
        s.memset_zero(&temp, 1 << 20).unwrap();
        drop(temp);
        assert_eq!(gpu.pool_stats().deferred, class, "{name}");
        let again = s.alloc(1 << 20).unwrap();
        assert_eq!(again.device_ptr(), ptr, "{name}: reused by its own stream");
        s.memset_zero(&again, 1 << 19).unwrap();
        let got = s.download(&again).unwrap();
        assert!(got[..1 << 19].iter().all(|&b| b == 0), "{name}");
        drop(again);
        gpu.sync_thread_stream().unwrap();
        let stats = gpu.pool_stats();
        assert_eq!((stats.deferred, stats.in_use), (0, 0), "{name}: {stats:?}");
    }
}
