//! Simulation tests: the scheduler driven by virtual workers, with faults.

use weft_runtime::scheduler::Config;
use weft_sim::{CheckMode, GenConfig, Sim, SimConfig, WorkerSpec, random_graph};

fn workers(sim: &mut Sim, n: u32, seed: u64) {
    let mut rng = weft_sim::Rng::new(seed);
    for i in 0..n {
        sim.add_worker(WorkerSpec {
            nthreads: rng.range(1, 4) as u32,
            gpus: u32::from(i % 10 == 0),
        })
        .expect("worker joins");
    }
}

fn names(n: u32) -> Vec<weft_runtime::SharedStr> {
    (0..n).map(|i| format!("w{i}").into()).collect()
}

#[test]
fn small_graph_no_faults() {
    let mut sim = Sim::new(
        Config::default(),
        SimConfig {
            check: CheckMode {
                incremental: true,
                full_every: 50,
            },
            ..SimConfig::default()
        },
    );
    workers(&mut sim, 20, 3);
    let mut gen_cfg = GenConfig::new(3_000, 7);
    gen_cfg.worker_names = names(20);
    let g = random_graph(&gen_cfg);
    let outputs = g.expected.len() as u64;
    sim.submit(g).unwrap();
    sim.run().unwrap();
    let s = &sim.stats;
    assert_eq!(s.outputs_ok + s.outputs_erred + s.outputs_killed, outputs);
    assert_eq!(s.outputs_killed, 0);
    assert!(s.outputs_ok > 0);
}

#[test]
fn random_faults_medium() {
    let mut sim = Sim::new(
        Config::default(),
        SimConfig {
            seed: 11,
            check: CheckMode {
                incremental: true,
                full_every: 2_000,
            },
            ..SimConfig::default()
        },
    );
    workers(&mut sim, 200, 5);
    let mut gen_cfg = GenConfig::new(30_000, 9);
    gen_cfg.worker_names = names(200);
    let g = random_graph(&gen_cfg);
    let outputs = g.expected.len() as u64;
    sim.submit(g).unwrap();
    let mut rng = weft_sim::Rng::new(99);
    for _ in 0..60 {
        let at = rng.range(0, 400_000);
        sim.kill_random_at(at);
        let at = rng.range(0, 400_000);
        sim.add_at(at, WorkerSpec { nthreads: 2, gpus: 1 });
    }
    sim.run().unwrap();
    let s = &sim.stats;
    eprintln!("{s:?}\n{:?}", sim.sched.stats());
    assert_eq!(s.outputs_ok + s.outputs_erred + s.outputs_killed, outputs);
    assert!(s.kills >= 50, "{s:?}");
    assert!(sim.sched.stats().recomputed > 0);
}

/// The scale test of issue 3: one scheduler, 10,000 virtual workers, a
/// random DAG of at least 1,000,000 tasks, workers killed and added at
/// random moments, invariants checked after every event (incrementally; a
/// full sweep every `full_every` events and at the end).
///
/// `WEFT_SIM_TASKS` overrides the size (for quick local runs).
#[test]
fn million_tasks_ten_thousand_workers_with_faults() {
    let target: usize = std::env::var("WEFT_SIM_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let n_workers = 10_000;
    let t0 = std::time::Instant::now();
    let mut sim = Sim::new(
        Config::default(),
        SimConfig {
            seed: 2026,
            check: CheckMode {
                incremental: true,
                full_every: 500_000,
            },
            ..SimConfig::default()
        },
    );
    workers(&mut sim, n_workers, 17);
    let mut gen_cfg = GenConfig::new(target, 4242);
    gen_cfg.worker_names = names(n_workers);
    let g = random_graph(&gen_cfg);
    let n_tasks = g.graph.tasks.len();
    assert!(n_tasks >= target);
    let outputs = g.expected.len() as u64;
    let t_gen = t0.elapsed();
    sim.submit(g).unwrap();
    let mut rng = weft_sim::Rng::new(7);
    for _ in 0..300 {
        sim.kill_random_at(rng.range(0, 300_000));
        sim.add_at(
            rng.range(0, 300_000),
            WorkerSpec {
                nthreads: rng.range(1, 4) as u32,
                gpus: u32::from(rng.chance(0.1)),
            },
        );
    }
    for _ in 0..100 {
        sim.pause_random_at(rng.range(0, 300_000));
    }
    sim.run().unwrap();
    let s = &sim.stats;
    eprintln!(
        "{n_tasks} tasks, {outputs} outputs, {n_workers} workers: generated in {t_gen:?}, \
         total {:?}, logical makespan {} ms\n{s:?}\n{:?}",
        t0.elapsed(),
        sim.now() / 1000,
        sim.sched.stats()
    );
    assert_eq!(s.outputs_ok + s.outputs_erred + s.outputs_killed, outputs);
    assert!(s.outputs_ok > outputs / 2);
    assert_eq!(s.kills, 300);
    assert!(sim.sched.stats().recomputed > 0);
}

#[test]
fn task_that_crashes_its_workers_errs_with_killed_workers() {
    use weft_runtime::graph::Annotations;
    use weft_sim::GraphBuilder;
    let mut sim = Sim::new(
        Config::default(),
        SimConfig {
            check: CheckMode {
                incremental: true,
                full_every: 1,
            },
            ..SimConfig::default()
        },
    );
    workers(&mut sim, 8, 1);
    let mut b = GraphBuilder::new();
    let ok = b.task("ok", "f", 1, 100, 8, &[], Annotations::default());
    b.output(ok);
    let boom = b.task("boom", "crash", 2, 100, 8, &[], Annotations::default());
    b.output(boom);
    let mut g = b.finish();
    // The reference cannot know about crashes: the sim accepts a
    // KilledWorkers error for any output and counts it.
    g.expected.insert("boom".into(), weft_sim::Expected::Error);
    sim.submit(g).unwrap();
    sim.run().unwrap();
    assert_eq!(sim.stats.outputs_killed, 1);
    assert_eq!(sim.stats.outputs_ok, 1);
    assert_eq!(sim.stats.kills, 3);
    let err = sim.outcomes()["boom"].clone().unwrap_err();
    assert!(err.to_string().contains("3 workers that died"), "{err}");
}

/// Many small runs with heavy fault rates and varied settings, full sweeps
/// every few events: where rare interleavings show up.
#[test]
fn many_seeds_small_clusters_heavy_faults() {
    let seeds: u64 = std::env::var("WEFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    for seed in 0..seeds {
        let sched_cfg = Config {
            worker_saturation: if seed % 3 == 0 { None } else { Some(1.1) },
            steal_ratio: if seed % 2 == 0 { 2.0 } else { 100.0 },
            unknown_duration: 0.001,
            ..Config::default()
        };
        let mut sim = Sim::new(
            sched_cfg,
            SimConfig {
                seed,
                latency_us: 10 + seed * 37 % 300,
                balance_every_us: 5_000,
                check: CheckMode {
                    incremental: true,
                    full_every: 20,
                },
                release_on_receipt: seed % 4 != 1,
                deliver_from_dead: seed % 5 != 2,
                detect_loss_us: if seed % 3 == 1 { 2_000 } else { 0 },
                ..SimConfig::default()
            },
        );
        let n = 6 + (seed % 10) as u32;
        workers(&mut sim, n, seed);
        let mut gen_cfg = GenConfig::new(1_500, seed * 7 + 1);
        gen_cfg.worker_names = names(n);
        gen_cfg.fail_fraction = 0.01;
        gen_cfg.flaky_fraction = 0.05;
        gen_cfg.gpu_fraction = 0.05;
        gen_cfg.restrict_fraction = 0.05;
        if seed % 4 == 3 {
            // Crashing tasks may kill every gpu worker at any time, leaving
            // gpu tasks unrunnable for good: no gpu tasks in these runs.
            gen_cfg.crash_fraction = 0.001;
            gen_cfg.gpu_fraction = 0.0;
        }
        let g = random_graph(&gen_cfg);
        let outputs = g.expected.len() as u64;
        sim.submit(g).unwrap();
        let mut rng = weft_sim::Rng::new(seed);
        for _ in 0..(n / 2 + 3) {
            sim.kill_random_at(rng.range(0, 150_000));
            sim.add_at(
                rng.range(0, 150_000),
                WorkerSpec {
                    nthreads: rng.range(1, 3) as u32,
                    gpus: u32::from(rng.chance(0.5)),
                },
            );
        }
        for _ in 0..4 {
            sim.pause_random_at(rng.range(0, 150_000));
        }
        // Random kills may take every gpu worker; tasks that need one wait
        // (queued as unrunnable) until this one joins.
        sim.add_at(200_000, WorkerSpec { nthreads: 1, gpus: 1 });
        if gen_cfg.crash_fraction > 0.0 {
            // Each crashing task kills up to allowed_failures + 1 workers:
            // keep some coming so that the cluster never runs dry.
            for i in 1..=40 {
                sim.add_at(i * 100_000, WorkerSpec { nthreads: 1, gpus: 0 });
            }
        }
        if let Err(e) = sim.run() {
            panic!("seed {seed}: {e}\n{:?}", sim.stats);
        }
        // Outputs kept in memory may be lost, recomputed and reported again:
        // count keys, not reports.
        assert_eq!(sim.outcomes().len() as u64, outputs, "seed {seed}: {:?}", sim.stats);
    }
}

/// Outputs the client keeps (never released) while workers die at random
/// moments, during the run and after it, each death learned by the
/// scheduler only later: the client and the workers find results missing
/// first and say so. Every output must end in memory on a live worker with
/// its reference value, however often it was lost and recomputed.
#[test]
fn held_outputs_are_recomputed_whenever_their_holders_die() {
    let seeds: u64 = std::env::var("WEFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let (mut lost, mut missing) = (0, 0);
    for seed in 0..seeds {
        // Every kill here is an accident to recover from, not a sign of a
        // task that kills its workers: a task queued on three workers that
        // die must not err.
        let sched_cfg = Config {
            allowed_failures: 1_000,
            ..Config::default()
        };
        let mut sim = Sim::new(
            sched_cfg,
            SimConfig {
                seed,
                latency_us: 20 + seed * 13 % 200,
                balance_every_us: 5_000,
                check: CheckMode {
                    incremental: true,
                    full_every: 50,
                },
                release_on_receipt: false,
                detect_loss_us: [0, 300, 5_000][(seed % 3) as usize],
                ..SimConfig::default()
            },
        );
        let n = 4 + (seed % 5) as u32;
        workers(&mut sim, n, seed);
        let mut gen_cfg = GenConfig::new(1_000, seed * 3 + 2);
        gen_cfg.worker_names = names(n);
        // Only results that can be lost: no failing ops, no GPU tasks that
        // the kills could leave without a worker.
        (gen_cfg.fail_fraction, gen_cfg.gpu_fraction) = (0.0, 0.0);
        let g = random_graph(&gen_cfg);
        let outputs = g.expected.len();
        sim.submit(g).unwrap();
        let mut rng = weft_sim::Rng::new(seed);
        // Kills spread over the run and well after it (the run takes
        // roughly 50-150 ms of logical time), each followed by a new worker.
        for _ in 0..n {
            let at = rng.range(0, 400_000);
            sim.kill_random_at(at);
            sim.add_at(at + rng.range(0, 20_000), WorkerSpec { nthreads: 2, gpus: 0 });
        }
        if let Err(e) = sim.run() {
            panic!("seed {seed}: {e}\n{:?}", sim.stats);
        }
        assert_eq!(sim.outcomes().len(), outputs, "seed {seed}: {:?}", sim.stats);
        let erred: Vec<_> = sim.outcomes().iter().filter(|(_, o)| o.is_err()).take(3).collect();
        assert!(erred.is_empty(), "seed {seed}: no op fails here, yet {erred:?}");
        lost += sim.stats.outputs_lost;
        missing += sim.stats.outputs_missing;
    }
    // The faults did hit held outputs, both ways.
    assert!(lost > 0 && missing > 0, "lost {lost}, reported missing {missing}");
}

/// When `short` arrives after `long` (10 ms on one worker of `nthreads`)
/// was released while running: the real worker cannot stop an op, so a
/// cancelled task keeps its thread until its op returns.
fn short_after_cancelled_long(nthreads: u32) -> u64 {
    use weft_runtime::graph::Annotations;
    use weft_sim::GraphBuilder;
    let mut sim = Sim::new(Config::default(), SimConfig::default());
    sim.add_worker(WorkerSpec { nthreads, gpus: 0 }).expect("worker joins");
    let mut b = GraphBuilder::new();
    let long = b.task("long", "f", 1, 10_000, 8, &[], Annotations::default());
    b.output(long);
    sim.submit(b.finish()).expect("sim checks pass");
    sim.run_until(2_000).expect("sim checks pass");
    sim.release(vec!["long".into()]).expect("sim checks pass");
    sim.run_until(3_000).expect("sim checks pass");
    let mut b = GraphBuilder::new();
    let short = b.task("short", "f", 2, 100, 8, &[], Annotations::default());
    b.output(short);
    sim.submit(b.finish()).expect("sim checks pass");
    sim.run().expect("sim checks pass");
    assert_eq!(sim.outcomes().len(), 1, "only short is gathered");
    sim.arrived_at("short").expect("short gathered")
}

#[test]
fn a_cancelled_task_holds_its_thread_until_its_op_returns() {
    let one = short_after_cancelled_long(1);
    assert!(one > 10_000, "short ran beside the cancelled op, at {one} us");
    let two = short_after_cancelled_long(2);
    assert!(two < 4_000, "with a second thread short runs at once, not at {two} us");
}

/// Issue 15 item 4 in the simulator: the scheduler crashes at random
/// moments of a 10^5-task run and restarts; workers register again with
/// what they kept, the client resubmits, every output is right, and no
/// result a worker kept (and brought back before the resubmission) is
/// computed again. Outputs are held by the client (not released on
/// receipt), so results in memory at each crash are what is kept.
#[test]
fn scheduler_crashes_lose_nothing_and_recompute_nothing_kept() {
    for seed in 1..=3u64 {
        let mut sim = Sim::new(
            Config::default(),
            SimConfig {
                seed,
                release_on_receipt: false,
                check: CheckMode {
                    incremental: true,
                    full_every: 20_000,
                },
                ..SimConfig::default()
            },
        );
        let n = 50;
        workers(&mut sim, n, seed);
        let mut gen_cfg = GenConfig::new(100_000, seed * 7 + 1);
        gen_cfg.worker_names = names(n);
        gen_cfg.fail_fraction = 0.0;
        let g = random_graph(&gen_cfg);
        let outputs = g.expected.len();
        sim.submit(g).unwrap();
        let mut rng = weft_sim::Rng::new(seed + 100);
        for _ in 0..3 {
            sim.crash_scheduler_at(rng.range(1_000, 150_000), 0);
        }
        if let Err(e) = sim.run() {
            panic!("seed {seed}: {e}\n{:?}", sim.stats);
        }
        let s = &sim.stats;
        eprintln!("seed {seed}: {s:?}, reclaimed {}", sim.reclaimed());
        assert_eq!(s.scheduler_crashes, 3);
        assert_eq!(sim.outcomes().len(), outputs, "seed {seed}: {s:?}");
        assert!(sim.outcomes().values().all(Result::is_ok), "seed {seed}");
        assert!(sim.reclaimed() > 0, "seed {seed}: nothing was kept across the crashes");
        assert_eq!(s.kept_recomputed, 0, "seed {seed}: kept results were computed again");
    }
}

/// Scheduler crashes mixed with worker kills and workers that come back
/// only after the client resubmitted (their results are then computed
/// elsewhere, or claimed late): every output still right.
#[test]
fn scheduler_crashes_with_late_workers_and_kills() {
    for seed in 1..=4u64 {
        let mut sim = Sim::new(
            Config::default(),
            SimConfig {
                seed,
                release_on_receipt: seed % 2 == 0,
                detect_loss_us: 2_000 * (seed % 3),
                check: CheckMode {
                    incremental: true,
                    full_every: 5_000,
                },
                ..SimConfig::default()
            },
        );
        let n = 8;
        workers(&mut sim, n, seed);
        let mut gen_cfg = GenConfig::new(5_000, seed * 13 + 5);
        gen_cfg.worker_names = names(n);
        (gen_cfg.fail_fraction, gen_cfg.gpu_fraction) = (0.0, 0.0);
        let g = random_graph(&gen_cfg);
        let outputs = g.expected.len();
        sim.submit(g).unwrap();
        let mut rng = weft_sim::Rng::new(seed + 7);
        for _ in 0..4 {
            sim.crash_scheduler_at(rng.range(1_000, 100_000), rng.range(0, 3) as u32);
            let at = rng.range(0, 100_000);
            sim.kill_random_at(at);
            sim.add_at(at + rng.range(0, 20_000), WorkerSpec { nthreads: 2, gpus: 0 });
        }
        if let Err(e) = sim.run() {
            panic!("seed {seed}: {e}\n{:?}", sim.stats);
        }
        assert_eq!(sim.outcomes().len(), outputs, "seed {seed}: {:?}", sim.stats);
        assert!(
            sim.outcomes().values().all(Result::is_ok),
            "seed {seed}: {:?}",
            sim.stats
        );
    }
}
