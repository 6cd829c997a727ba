//! Criterion micro-benchmarks of the transport: one-way throughput of
//! large frames over TCP and in process, and small-message round trips
//! next to a raw tokio ping-pong. `transport-report` prints the same
//! workloads next to iperf3 in one run.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weft_benches::transport::{one_way, pair, ping_pong, raw_ping_pong};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("transport/one_way");
    for (addr, size) in [
        ("tcp://127.0.0.1:0", 64 << 20),
        ("inproc://bench-1m", 1 << 20),
        ("inproc://bench-64m", 64 << 20),
    ] {
        let (client, server) = rt.block_on(pair(addr)).unwrap();
        let mut server = Some(server);
        let frame = Bytes::from(vec![1u8; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{}_{}MiB", &addr[..addr.find(':').unwrap()], size >> 20), |b| {
            b.iter_custom(|iters| {
                let rx = server.take().unwrap();
                let (elapsed, rx) = rt.block_on(one_way(&client, rx, &frame, iters as usize)).unwrap();
                server = Some(rx);
                elapsed
            })
        });
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("transport/round_trip_64B");
    let (mut client, mut server) = rt.block_on(pair("tcp://127.0.0.1:0")).unwrap();
    group.bench_function("weft_tcp", |b| {
        b.iter_custom(|iters| {
            rt.block_on(ping_pong(&mut client, &mut server, 64, iters as usize))
                .unwrap()
                * iters as u32
        })
    });
    group.bench_function("raw_tokio_tcp", |b| {
        b.iter_custom(|iters| rt.block_on(raw_ping_pong(64, iters as usize)).unwrap() * iters as u32)
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = throughput, round_trip
}
criterion_main!(benches);
