//! The sans-IO scheduler alone: task transitions per second on one core, and
//! scheduler memory per task for a 1,000,000-task graph.
//!
//! Transitions: a simulated run (10,000 virtual workers, random DAG, worker
//! kills and additions) is recorded once; the timed part replays its events
//! into a fresh scheduler with a comm that drops the messages, so only the
//! scheduler's own work is timed (messages are still built). The scheduler
//! is deterministic, so a replay repeats the run exactly.
//!
//! Memory: a counting global allocator reports the bytes still allocated
//! after a 1,000,000-task graph is submitted (keys, args and all scheduler
//! books included), divided by the number of tasks.
//!
//! `cargo bench -p weft-benches --bench scheduler` prints both figures as
//! JSON lines first, then runs the criterion group.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use weft_runtime::ids::{ClientId, WorkerId};
use weft_runtime::protocol::{ToClient, ToWorker, WorkerInfo};
use weft_runtime::scheduler::{Comm, Config, Event, Scheduler};
use weft_runtime::{FromClient, graph::Graph};
use weft_sim::{CheckMode, GenConfig, Rng, Sim, SimConfig, WorkerSpec, random_graph};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counter is only arithmetic on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours, forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours, forwarded.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours, forwarded.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Drops every message (after the scheduler built it).
struct Sink(u64);

impl Comm for Sink {
    fn to_worker(&mut self, _: WorkerId, msg: ToWorker) {
        self.0 += 1;
        black_box(msg);
    }
    fn to_client(&mut self, _: ClientId, msg: ToClient) {
        self.0 += 1;
        black_box(msg);
    }
}

const WORKERS: u32 = 10_000;

fn record(tasks: usize) -> Vec<Event> {
    let mut sim = Sim::new(
        Config::default(),
        SimConfig {
            seed: 5,
            check: CheckMode {
                incremental: false,
                full_every: 0,
            },
            record_events: true,
            ..SimConfig::default()
        },
    );
    let mut rng = Rng::new(3);
    for i in 0..WORKERS {
        sim.add_worker(WorkerSpec {
            nthreads: rng.range(1, 4) as u32,
            gpus: u32::from(i % 10 == 0),
        })
        .expect("worker joins");
    }
    let mut gen_cfg = GenConfig::new(tasks, 11);
    gen_cfg.worker_names = (0..WORKERS).map(|i| format!("w{i}").into()).collect();
    sim.submit(random_graph(&gen_cfg)).expect("graph accepted");
    for _ in 0..100 {
        sim.kill_random_at(rng.range(0, 300_000));
        sim.add_at(rng.range(0, 300_000), WorkerSpec { nthreads: 2, gpus: 0 });
    }
    sim.run().expect("simulation checks pass");
    sim.take_recorded()
}

fn replay(events: Vec<Event>) -> Scheduler {
    let mut s = Scheduler::new(Config::default());
    let mut sink = Sink(0);
    for e in events {
        s.handle(e, &mut sink);
    }
    s
}

/// CPU time of this thread in seconds (Linux `schedstat`), so that a busy
/// machine does not count other processes' time against us.
fn thread_cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 * 1e-9)
}

fn report_throughput() {
    let events = record(1_000_000);
    let n_events = events.len();
    let mut best = f64::MAX;
    let mut best_cpu = f64::MAX;
    let mut transitions = 0;
    for _ in 0..3 {
        let batch = events.clone();
        let cpu0 = thread_cpu_secs();
        let t = Instant::now();
        let s = replay(batch);
        let secs = t.elapsed().as_secs_f64();
        if let (Some(a), Some(b)) = (cpu0, thread_cpu_secs()) {
            best_cpu = best_cpu.min(b - a);
        }
        transitions = s.stats().transitions;
        best = best.min(secs);
        drop(s);
    }
    println!(
        "{{\"bench\":\"scheduler_transitions\",\"tasks\":1000000,\"workers\":{WORKERS},\
         \"events\":{n_events},\"transitions\":{transitions},\"wall_seconds\":{best:.3},\
         \"cpu_seconds\":{best_cpu:.3},\"transitions_per_sec_wall\":{:.0},\
         \"transitions_per_cpu_sec\":{:.0},\"events_per_cpu_sec\":{:.0}}}",
        transitions as f64 / best,
        transitions as f64 / best_cpu,
        n_events as f64 / best_cpu
    );
}

fn report_memory() {
    let n = 1_000_000;
    let mut gen_cfg = GenConfig::new(n, 21);
    gen_cfg.worker_names = (0..WORKERS).map(|i| format!("w{i}").into()).collect();
    let mut s = Scheduler::new(Config::default());
    let mut sink = Sink(0);
    for i in 0..WORKERS {
        s.handle(
            Event::WorkerJoined {
                worker: WorkerId::new(i),
                info: WorkerInfo {
                    name: format!("w{i}").into(),
                    address: format!("tcp://10.0.0.1:{i}").into(),
                    nthreads: 2,
                    memory_limit: 0,
                    resources: Vec::new(),
                    dashboard: None,
                    held: Vec::new(),
                },
            },
            &mut sink,
        );
    }
    s.handle(
        Event::ClientConnected {
            client: ClientId::new(0),
        },
        &mut sink,
    );
    let before = LIVE.load(Ordering::Relaxed);
    let g: Graph = random_graph(&gen_cfg).graph;
    let tasks = g.tasks.len();
    let edges: usize = g.tasks.iter().map(|t| t.deps.len()).sum();
    s.handle(
        Event::Client {
            client: ClientId::new(0),
            msg: FromClient::SubmitGraph(g),
        },
        &mut sink,
    );
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(s.n_tasks(), tasks);
    let per_task = (after - before) as f64 / tasks as f64;
    println!(
        "{{\"bench\":\"scheduler_memory\",\"tasks\":{tasks},\"edges\":{edges},\
         \"bytes\":{},\"bytes_per_task\":{per_task:.0}}}",
        after - before
    );
    black_box(&s);
}

fn bench(c: &mut Criterion) {
    report_memory();
    report_throughput();
    let events = record(100_000);
    let transitions = replay(events.clone()).stats().transitions;
    let mut g = c.benchmark_group("scheduler");
    g.sample_size(10);
    g.throughput(Throughput::Elements(transitions));
    g.bench_function("replay_100k_tasks_10k_workers", |b| {
        b.iter_batched(|| events.clone(), replay, BatchSize::LargeInput)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
