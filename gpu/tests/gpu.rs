//! Pools, copies and detection on emulated GPUs (and on CUDA where present).

// Helpers outside `#[test]` functions unwrap too; clippy.toml only covers the tests themselves.
#![allow(clippy::unwrap_used)]

use weft_gpu::{Device, DeviceConfig, Devices, Gpu, GpuError, probe_cuda};

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn no_cuda_driver_reports_zero_gpus_with_a_reason() {
    let config = DeviceConfig {
        use_cuda: false,
        ..DeviceConfig::default()
    };
    let devices = Devices::open(&config).unwrap();
    assert_eq!(devices.cuda().count, 0);
    assert!(devices.cuda().reason.as_deref().unwrap().contains("disabled"));
    assert_eq!(devices.devices(), vec![Device::Cpu]);
    // The real probe must not panic whatever the machine has, and must give
    // a reason exactly when it finds nothing.
    let probe = probe_cuda();
    assert_eq!(probe.count == 0, probe.reason.is_some(), "{probe:?}");
    if let Some(reason) = &probe.reason {
        println!("CUDA probe: {reason}");
    }
}

#[test]
fn one_gpu_opens_alone_counting_cuda_gpus_first() {
    let config = DeviceConfig {
        emulated_gpus: 2,
        emulated_async: true,
        ..DeviceConfig::default()
    };
    let cuda = probe_cuda().count;
    let last = Devices::open_one(&config, cuda + 1).unwrap();
    assert_eq!(last.device(), Device::Emulated(1));
    // The configuration reaches the one GPU opened.
    assert!(matches!(last.backend(), weft_gpu::GpuBackend::Emulated(e) if e.asynchronous()));
    let err = Devices::open_one(&config, cuda + 2).unwrap_err();
    assert!(
        matches!(err, GpuError::NoSuchGpu { found, .. } if found == cuda + 2),
        "{err}"
    );
    let none = DeviceConfig {
        use_cuda: false,
        ..DeviceConfig::default()
    };
    let message = Devices::open_one(&none, 0).unwrap_err().to_string();
    assert!(
        message.starts_with("there is no GPU 0: 0 found (CUDA: CUDA disabled"),
        "{message}"
    );
}

#[test]
fn config_reads_the_environment_variables() {
    let config = DeviceConfig::from_lookup(|k| match k {
        "WEFT_EMULATED_GPUS" => Some("3".into()),
        "WEFT_EMULATED_GPU_MEMORY" => Some("64MiB".into()),
        "WEFT_EMULATED_PEER_ACCESS" => Some("0".into()),
        "WEFT_DISABLE_CUDA" => Some("1".into()),
        "WEFT_EMULATED_ASYNC" => Some("yes".into()),
        _ => None,
    })
    .unwrap();
    assert!(config.emulated_async);
    assert_eq!(config.emulated_gpus, 3);
    assert_eq!(config.emulated_memory, 64 << 20);
    assert!(!config.emulated_peer_access);
    assert!(!config.use_cuda);
    let devices = Devices::open(&config).unwrap();
    assert_eq!(
        devices.devices(),
        vec![
            Device::Cpu,
            Device::Emulated(0),
            Device::Emulated(1),
            Device::Emulated(2)
        ]
    );
    let bad = DeviceConfig::from_lookup(|k| (k == "WEFT_EMULATED_GPUS").then(|| "many".into()));
    assert!(matches!(bad, Err(GpuError::Config { .. })));
}

#[test]
fn pool_reuses_blocks_and_keeps_statistics() {
    let gpu = Gpu::emulated(0, 1 << 20, true);
    let a = gpu.alloc(1000).unwrap();
    let a_ptr = a.device_ptr();
    let b = gpu.alloc(5000).unwrap();
    let s = gpu.pool_stats();
    assert_eq!(s.in_use, 1024 + 5120);
    assert_eq!(s.requested, 6000);
    assert_eq!(s.reserved, s.in_use);
    assert_eq!(s.device_allocs, 2);
    drop(a);
    let s = gpu.pool_stats();
    assert_eq!(s.in_use, 5120);
    assert_eq!(s.free, 1024);
    assert_eq!(s.peak_in_use, 1024 + 5120);
    // Same class: served from the free list, same address.
    let c = gpu.alloc(900).unwrap();
    assert_eq!(c.device_ptr(), a_ptr);
    let s = gpu.pool_stats();
    assert_eq!((s.reused, s.device_allocs, s.free), (1, 2, 0));
    drop(b);
    drop(c);
    let s = gpu.pool_stats();
    assert_eq!((s.in_use, s.free, s.largest_free), (0, 1024 + 5120, 5120));
    assert!((s.fragmentation - (1.0 - 5120.0 / 6144.0)).abs() < 1e-12);
    gpu.trim();
    let s = gpu.pool_stats();
    assert_eq!((s.reserved, s.free, s.device_frees), (0, 0, 2));
}

#[test]
fn out_of_memory_is_a_typed_error_and_the_cache_is_given_back() {
    let gpu = Gpu::emulated(0, 64 << 10, true);
    let a = gpu.alloc(40 << 10).unwrap();
    match gpu.alloc(40 << 10) {
        Err(GpuError::OutOfMemory {
            device,
            requested,
            in_use,
            capacity,
        }) => {
            assert_eq!(device, Device::Emulated(0));
            assert_eq!(requested, 40 << 10);
            assert_eq!(in_use, 40 << 10);
            assert_eq!(capacity, 64 << 10);
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    drop(a);
    // 48 KiB class differs from the cached 40 KiB one: the pool must give the
    // cached block back to the device to make room.
    let b = gpu.alloc(48 << 10).unwrap();
    assert_eq!(b.len(), 48 << 10);
    let s = gpu.pool_stats();
    assert_eq!((s.device_frees, s.free), (1, 0));
}

#[test]
fn host_device_round_trip_and_device_copies() {
    let gpu = Gpu::emulated(0, 1 << 20, true);
    let stream = gpu.stream().unwrap();
    let data = pattern(3000, 7);
    let d = stream.upload(&data).unwrap();
    assert_eq!(d.device(), Device::Emulated(0));
    let e = gpu.alloc(3000).unwrap();
    let ev = stream.copy_d2d(&d, &e).unwrap();
    stream.wait(&ev).unwrap();
    ev.synchronize().unwrap();
    assert!(ev.is_complete());
    assert_eq!(stream.download(&e).unwrap(), data);
    let mut prefix = vec![0u8; 100];
    stream.copy_d2h(&e, &mut prefix).unwrap();
    assert_eq!(prefix, data[..100]);
    stream.memset_zero(&e, 10).unwrap();
    assert_eq!(stream.download(&e).unwrap()[..10], [0; 10]);
    let GpuBackendCounters { h2d, d2h, d2d } = counters(&gpu);
    assert_eq!((h2d, d2h, d2d), (1, 3, 1));
    // Too long a copy is an error, not a write past the end.
    let small = gpu.alloc(10).unwrap();
    assert!(matches!(
        stream.copy_h2d(&data, &small),
        Err(GpuError::LengthMismatch { src: 3000, dst: 10 })
    ));
}

struct GpuBackendCounters {
    h2d: u64,
    d2h: u64,
    d2d: u64,
}

fn counters(gpu: &Gpu) -> GpuBackendCounters {
    match gpu.backend() {
        weft_gpu::GpuBackend::Emulated(e) => {
            let c = e.copies();
            GpuBackendCounters {
                h2d: c.h2d,
                d2h: c.d2h,
                d2d: c.d2d,
            }
        }
        weft_gpu::GpuBackend::Cuda(_) => panic!("not emulated"),
    }
}

fn peer_copy(peer_access: bool) {
    let config = DeviceConfig {
        emulated_gpus: 2,
        emulated_memory: 1 << 20,
        emulated_peer_access: peer_access,
        use_cuda: false,
        ..DeviceConfig::default()
    };
    let devices = Devices::open(&config).unwrap();
    let g0 = devices.get(Device::Emulated(0)).unwrap();
    let g1 = devices.get(Device::Emulated(1)).unwrap();
    assert_eq!(g0.can_access_peer(&g1), peer_access);
    let s0 = g0.stream().unwrap();
    let data = pattern(4097, 3);
    let src = s0.upload(&data).unwrap();
    let dst = g1.alloc(data.len()).unwrap();
    // Buffers are tied to their device.
    assert!(matches!(s0.copy_h2d(&data, &dst), Err(GpuError::WrongDevice { .. })));
    let ev = s0.copy_peer(&src, &dst).unwrap();
    ev.synchronize().unwrap();
    let s1 = g1.stream().unwrap();
    assert_eq!(s1.download(&dst).unwrap(), data);
    let (weft_gpu::GpuBackend::Emulated(e0), weft_gpu::GpuBackend::Emulated(e1)) = (g0.backend(), g1.backend()) else {
        panic!("emulated devices expected");
    };
    let (c0, c1) = (e0.copies(), e1.copies());
    if peer_access {
        assert_eq!((c0.peer, c0.staged, c0.d2h, c1.h2d), (1, 0, 0, 0));
    } else {
        assert_eq!((c0.peer, c0.staged, c0.d2h, c1.h2d), (0, 1, 1, 1));
        // Through a buffer of the staging pool, returned when done.
        let staging = g0.staging_stats();
        assert_eq!((staging.allocated, staging.in_use), (1, 0));
    }
    // Separate address spaces: each device accounts for its own memory only.
    assert_eq!(e0.used(), g0.pool_stats().reserved);
    assert_eq!(e1.used(), g1.pool_stats().reserved);
}

#[test]
fn peer_copy_direct() {
    peer_copy(true);
}

#[test]
fn peer_copy_staged_through_pinned_host_memory() {
    peer_copy(false);
}

#[test]
fn pinned_buffers_hold_bytes() {
    let gpu = Gpu::emulated(0, 1 << 20, true);
    let mut p = gpu.alloc_pinned(100).unwrap();
    assert!(!p.is_pinned());
    p.as_mut_slice().copy_from_slice(&pattern(100, 1));
    assert_eq!(p.as_slice(), pattern(100, 1));
}

#[test]
fn staging_buffers_come_back_to_their_pool_and_are_reused() {
    let gpu = Gpu::emulated(0, 1 << 20, true);
    let mut first = gpu.staging(3000).unwrap();
    assert_eq!(first.len(), 3000);
    first.as_mut_slice().copy_from_slice(&pattern(3000, 4));
    assert_eq!(first.as_ref(), pattern(3000, 4));
    let stats = gpu.staging_stats();
    assert_eq!((stats.allocated, stats.reused, stats.cached), (1, 0, 0));
    assert!(stats.in_use >= 3000);
    drop(first);
    assert_eq!(gpu.staging_stats().in_use, 0);
    // Same size class: the same buffer, not a new allocation.
    let second = gpu.staging(2900).unwrap();
    assert_eq!(second.len(), 2900);
    let stats = gpu.staging_stats();
    assert_eq!((stats.allocated, stats.reused, stats.cached), (1, 1, 0));
    // Two at once need two buffers; both are kept once returned.
    let third = gpu.staging(2900).unwrap();
    drop((second, third));
    let stats = gpu.staging_stats();
    assert_eq!(stats.allocated, 2);
    assert_eq!(stats.cached, 2 * weft_gpu::pool::size_class(3000));
}

#[test]
fn the_staging_pool_frees_what_it_cannot_keep() {
    let gpu = Gpu::emulated(0, 1 << 20, true);
    // Three of 128 MiB: the pool keeps 256 MiB and frees the third.
    let buffers: Vec<_> = (0..3).map(|_| gpu.staging(128 << 20).unwrap()).collect();
    drop(buffers);
    let stats = gpu.staging_stats();
    assert_eq!((stats.allocated, stats.in_use, stats.cached), (3, 0, 256 << 20));
}

#[test]
fn cuda_round_trip_when_a_gpu_is_present() {
    let devices = Devices::open(&DeviceConfig::default()).unwrap();
    let Some(gpu) = devices.gpus().iter().find(|g| matches!(g.device(), Device::Cuda(_))) else {
        let reason = devices.cuda().reason.as_deref().unwrap_or("no CUDA GPU");
        weft_gpu::testing::skip_without_cuda("cuda_round_trip_when_a_gpu_is_present", reason);
        return;
    };
    let stream = gpu.stream().unwrap();
    let data = pattern(1 << 16, 9);
    let d = stream.upload(&data).unwrap();
    let e = gpu.alloc(data.len()).unwrap();
    stream.copy_d2d(&d, &e).unwrap().synchronize().unwrap();
    assert_eq!(stream.download(&e).unwrap(), data);
    // Past 8 MiB, copies go through two pinned staging buffers in 16 MiB
    // chunks; an odd length leaves a short last chunk.
    // (Bytes of a hash of the index: a chunk out of place would show.)
    let big: Vec<u8> = (0..(40usize << 20) + 12_345)
        .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    let d = stream.upload(&big).unwrap();
    assert_eq!(stream.download(&d).unwrap(), big);
}

#[test]
fn a_full_device_asks_its_reclaim_callback_and_tries_again() {
    use std::sync::{Arc, Mutex};
    let gpu = Gpu::emulated(0, 64 << 10, false);
    // What the callback may free: one block another owner (a result store) holds.
    let held = Arc::new(Mutex::new(Some(gpu.alloc(48 << 10).unwrap())));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (h, a) = (held.clone(), asked.clone());
    gpu.on_out_of_memory(move |bytes| {
        a.lock().unwrap().push(bytes);
        h.lock().unwrap().take().is_some()
    });
    let b = gpu.alloc(40 << 10).expect("room made by the callback");
    assert_eq!(*asked.lock().unwrap(), vec![40 << 10]);
    // Nothing left to free: the callback says so and the error stands.
    assert!(matches!(gpu.alloc(40 << 10), Err(GpuError::OutOfMemory { .. })));
    assert_eq!(asked.lock().unwrap().len(), 2);
    drop(b);
}

#[test]
fn each_thread_has_a_stream_per_device() {
    let (g0, g1) = (Gpu::emulated(0, 1 << 20, true), Gpu::emulated(1, 1 << 20, true));
    for _ in 0..2 {
        assert_eq!(g0.thread_stream().unwrap().device(), Device::Emulated(0));
        assert_eq!(g1.thread_stream().unwrap().device(), Device::Emulated(1));
    }
    let b = std::thread::scope(|s| {
        s.spawn(|| g1.thread_stream().unwrap().upload(&[1, 2, 3]).unwrap())
            .join()
            .unwrap()
    });
    assert_eq!(g1.thread_stream().unwrap().download(&b).unwrap(), vec![1, 2, 3]);
}
