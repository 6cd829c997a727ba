//! Scheduler unit tests: a few events each, full invariant sweep after every
//! event.

use bytes::Bytes;

use super::*;
use crate::graph::{Annotations, Graph, TaskSpec};
use crate::protocol::Peer;

const C: ClientId = ClientId(0);

fn w(i: u32) -> WorkerId {
    WorkerId::new(i)
}

fn info(name: &str, nthreads: u32) -> WorkerInfo {
    WorkerInfo {
        name: name.into(),
        address: format!("tcp://{name}:1").into(),
        nthreads,
        memory_limit: 0,
        resources: Vec::new(),
        dashboard: None,
        held: Vec::new(),
    }
}

fn spec(key: &str, deps: &[&str]) -> TaskSpec {
    TaskSpec::new(key, "op", Bytes::new(), deps.iter().map(|d| Key::from(*d)).collect())
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    let text = serde_json::to_string(v).expect("encodes");
    serde_json::from_str(&text).expect("decodes")
}

struct H {
    s: Scheduler,
}

impl H {
    fn new(config: Config) -> Self {
        let mut h = Self {
            s: Scheduler::new(config),
        };
        h.ev(Event::ClientConnected { client: C });
        h
    }

    /// Handles an event, round-tripping every wire message through a codec
    /// (JSON here) the way a reactor would, and sweeps the invariants.
    fn ev(&mut self, e: Event) -> Vec<Command> {
        let e = match e {
            Event::Worker { worker, msg } => Event::Worker {
                worker,
                msg: round_trip(&msg),
            },
            Event::Client { client, msg } => Event::Client {
                client,
                msg: round_trip(&msg),
            },
            Event::WorkerJoined { worker, info } => Event::WorkerJoined {
                worker,
                info: round_trip(&info),
            },
            e => e,
        };
        let out = self.s.handle_to_vec(e);
        for c in &out {
            match c {
                Command::ToWorker(_, m) => assert_eq!(&round_trip(m), m),
                Command::ToClient(_, m) => assert_eq!(&round_trip(m), m),
            }
        }
        if let Err(e) = self.s.check_all() {
            panic!("{e}");
        }
        out
    }

    /// One worker, w1 (one thread), holding `a` (10 bytes).
    fn a_on_w1() -> Self {
        let mut h = H::new(Config::default());
        h.join(1, 1);
        h.submit(vec![spec("a", &[])], &["a"]);
        h.finish(1, "a", 10);
        h
    }

    /// `a` computed on w1, then w2 (one thread) joined.
    fn a_on_w1_then_w2() -> Self {
        let mut h = H::a_on_w1();
        h.join(2, 1);
        h
    }

    fn join(&mut self, i: u32, nthreads: u32) -> Vec<Command> {
        self.ev(Event::WorkerJoined {
            worker: w(i),
            info: info(&format!("w{i}"), nthreads),
        })
    }

    fn submit(&mut self, tasks: Vec<TaskSpec>, outputs: &[&str]) -> Vec<Command> {
        self.ev(Event::Client {
            client: C,
            msg: FromClient::SubmitGraph(Graph {
                tasks,
                outputs: outputs.iter().map(|k| Key::from(*k)).collect(),
            }),
        })
    }

    fn id(&self, key: &str) -> TaskId {
        self.s.task_id(key).expect("known key")
    }

    fn worker_msg(&mut self, i: u32, msg: FromWorker) -> Vec<Command> {
        self.ev(Event::Worker { worker: w(i), msg })
    }

    fn finish(&mut self, i: u32, key: &str, nbytes: u64) -> Vec<Command> {
        let task = self.id(key);
        self.worker_msg(
            i,
            FromWorker::Finished {
                task,
                nbytes,
                compute_us: 1_000,
                tier: Tier::Host,
            },
        )
    }

    fn state(&self, key: &str) -> TaskState {
        self.s.state_of_key(key)
    }
}

/// (worker, key) of each Compute.
fn computes(cmds: &[Command]) -> Vec<(WorkerId, String)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::ToWorker(w, ToWorker::Compute(r)) => Some((*w, r.key.to_string())),
            _ => None,
        })
        .collect()
}

/// The tasks the scheduler asks `victim` to give up.
fn steals(cmds: &[Command], victim: u32) -> Vec<TaskId> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::ToWorker(x, ToWorker::Steal { task }) if *x == w(victim) => Some(*task),
            _ => None,
        })
        .collect()
}

/// `n` roots `{root}i`, each the only input of a link `{link}i`; and the
/// links' keys, the outputs.
fn roots_with_links(n: usize, root: &str, link: &str) -> (Vec<TaskSpec>, Vec<String>) {
    let links: Vec<String> = (0..n).map(|i| format!("{link}{i}")).collect();
    let tasks = (0..n)
        .flat_map(|i| {
            let r = format!("{root}{i}");
            [spec(&r, &[]), spec(&links[i], &[r.as_str()])]
        })
        .collect();
    (tasks, links)
}

/// A scheduler without root-task saturation, one 1-thread worker.
fn unsaturated() -> H {
    let mut h = H::new(Config {
        worker_saturation: None,
        ..Config::default()
    });
    h.join(1, 1);
    h
}

fn frees(cmds: &[Command]) -> Vec<(WorkerId, TaskId)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::ToWorker(w, ToWorker::Free { task }) => Some((*w, *task)),
            _ => None,
        })
        .collect()
}

fn client_msgs(cmds: &[Command]) -> Vec<&ToClient> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::ToClient(_, m) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn chain_runs_and_releases_intermediates() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    let out = h.submit(vec![spec("a", &[]), spec("b", &["a"]), spec("c", &["b"])], &["c"]);
    // The whole chain goes to the worker at once: each link starts there
    // when the one before it finishes.
    let chain: Vec<_> = ["a", "b", "c"].iter().map(|k| (w(1), k.to_string())).collect();
    assert_eq!(computes(&out), chain);
    assert_eq!(h.state("b"), TaskState::Processing(w(1)));
    assert_eq!(h.s.stats().pipelined, 2);
    let a = h.id("a");
    let out = h.finish(1, "a", 10);
    assert!(computes(&out).is_empty());
    let out = h.finish(1, "b", 10);
    assert!(computes(&out).is_empty());
    // `a` is no longer needed by anyone: freed and released (kept as
    // lineage of `c`).
    assert_eq!(frees(&out), vec![(w(1), a)]);
    assert_eq!(h.state("a"), TaskState::Released);
    let out = h.finish(1, "c", 10);
    assert!(matches!(client_msgs(&out)[..], [ToClient::InMemory { key, .. }] if key.as_str() == "c"));
    assert_eq!(h.state("b"), TaskState::Released);
    let out = h.ev(Event::Client {
        client: C,
        msg: FromClient::Release { keys: vec!["c".into()] },
    });
    assert_eq!(frees(&out).len(), 1);
    assert_eq!(h.s.n_tasks(), 0, "everything forgotten");
    assert_eq!(h.s.op_estimate("op"), Some(0.001));
}

#[test]
fn placement_follows_the_bytes() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    h.join(2, 1);
    let out = h.submit(vec![spec("x", &[]), spec("y", &[])], &["x", "y"]);
    let placed = computes(&out);
    assert_eq!(placed.len(), 2);
    let wx = placed.iter().find(|p| p.1 == "x").expect("x placed").0;
    let wy = placed.iter().find(|p| p.1 == "y").expect("y placed").0;
    assert_ne!(wx, wy);
    h.finish(wx.0, "x", 1 << 30);
    h.finish(wy.0, "y", 10);
    let out = h.submit(vec![spec("z", &["x", "y"])], &["z"]);
    assert_eq!(computes(&out), vec![(wx, "z".to_string())]);
    // The Compute tells where the inputs are.
    let Some(Command::ToWorker(_, ToWorker::Compute(req))) = out.last() else {
        panic!("{out:?}");
    };
    assert_eq!(req.deps.len(), 2);
    assert_eq!(req.deps[1].who_has[0].worker, wy);
    assert_eq!(req.deps[0].nbytes, 1 << 30);
}

#[test]
fn root_tasks_are_queued_past_saturation() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    let tasks: Vec<_> = (0..10).map(|i| spec(&format!("r{i}"), &[])).collect();
    let keys: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    let out = h.submit(tasks, &key_refs);
    // ceil(1 thread * 1.1) = 2 slots; submission order is priority order.
    assert_eq!(computes(&out), vec![(w(1), "r0".to_string()), (w(1), "r1".to_string())]);
    assert_eq!(h.state("r2"), TaskState::Queued);
    let out = h.finish(1, "r0", 1);
    assert_eq!(computes(&out), vec![(w(1), "r2".to_string())]);
    // A new worker takes from the queue at once.
    let out = h.join(2, 2);
    assert_eq!(computes(&out).len(), 3);
}

#[test]
fn links_sent_ahead_take_no_root_slot() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    // Four roots, each the input of one link (a partition and its count).
    let (tasks, outputs) = roots_with_links(4, "r", "l");
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let sent = |out: &[Command]| {
        let mut keys: Vec<String> = computes(out).into_iter().map(|(_, k)| k).collect();
        keys.sort();
        keys
    };
    // Two root slots: two roots go out, each with its link sent ahead.
    let out = h.submit(tasks, &outputs);
    assert_eq!(sent(&out), ["l0", "l1", "r0", "r1"]);
    assert_eq!(h.state("r2"), TaskState::Queued);
    // r0's link can start now: it takes the slot r0 had.
    let out = h.finish(1, "r0", 1);
    assert!(sent(&out).is_empty(), "{out:?}");
    // Done, it frees a slot: the next root goes out with its link.
    let out = h.finish(1, "l0", 1);
    assert_eq!(sent(&out), ["l2", "r2"]);
}

#[test]
fn links_behind_links_take_root_slots() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    // A chain r -> a -> b, and another root: the chain's second link holds
    // the second slot, so the other root waits.
    let out = h.submit(
        vec![spec("r", &[]), spec("a", &["r"]), spec("b", &["a"]), spec("other", &[])],
        &["b", "other"],
    );
    let mut keys: Vec<String> = computes(&out).into_iter().map(|(_, k)| k).collect();
    keys.sort();
    assert_eq!(keys, ["a", "b", "r"]);
    assert_eq!(h.state("other"), TaskState::Queued);
}

#[test]
fn short_root_tasks_go_out_in_runs_per_worker_long_ones_one_each() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    h.join(2, 1);
    let keys: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    let submit = |h: &mut H, tag: &str| {
        let keys: Vec<String> = keys.iter().map(|k| format!("{tag}{k}")).collect();
        let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        let out = h.submit(keys.iter().map(|k| spec(k, &[])).collect(), &refs);
        computes(&out).into_iter().map(|(w, _)| w.0).collect::<Vec<_>>()
    };
    // Durations unknown: two slots each, dealt out in turn.
    assert_eq!(submit(&mut h, "a"), vec![1, 2, 1, 2]);
    // Each worker finishes a task in 10 µs: 200 slots, and a run of the
    // leaves under one reduction stays on one worker.
    for (worker, key) in [(1, "ar0"), (2, "ar1")] {
        let task = h.id(key);
        h.worker_msg(
            worker,
            FromWorker::Finished {
                task,
                nbytes: 8,
                compute_us: 10,
                tier: Tier::Host,
            },
        );
    }
    assert_eq!(submit(&mut h, "b"), vec![2; 8], "the run goes on where it was");
}

#[test]
fn lost_results_are_recomputed_and_dependents_wait_again() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    h.submit(vec![spec("a", &[]), spec("b", &[])], &["a", "b"]);
    h.finish(1, "a", 10);
    h.finish(1, "b", 10);
    h.join(2, 1);
    let out = h.submit(vec![spec("c", &["a", "b"])], &["c"]);
    assert_eq!(computes(&out), vec![(w(1), "c".to_string())]);
    // Worker 1 dies with a, b and the running c.
    let out = h.ev(Event::WorkerLost { worker: w(1) });
    let mut placed = computes(&out);
    placed.sort();
    assert_eq!(placed, vec![(w(2), "a".to_string()), (w(2), "b".to_string())]);
    assert_eq!(h.state("c"), TaskState::Waiting);
    assert_eq!(h.s.stats().recomputed, 2);
    h.finish(2, "a", 10);
    let out = h.finish(2, "b", 10);
    assert_eq!(computes(&out), vec![(w(2), "c".to_string())]);
    // Messages from the dead worker are ignored.
    let c = h.id("c");
    let before = h.s.stats().ignored;
    let out = h.worker_msg(
        1,
        FromWorker::Finished {
            task: c,
            nbytes: 1,
            compute_us: 1,
            tier: Tier::Host,
        },
    );
    assert!(out.is_empty());
    assert_eq!(h.s.stats().ignored, before + 1);
    assert_eq!(h.state("c"), TaskState::Processing(w(2)));
}

#[test]
fn task_that_kills_three_workers_fails_saying_so() {
    let mut h = H::new(Config::default());
    for i in 1..=4 {
        h.join(i, 1);
    }
    h.submit(vec![spec("boom", &[])], &["boom"]);
    for _ in 0..3 {
        let TaskState::Processing(on) = h.state("boom") else {
            panic!("not processing: {:?}", h.state("boom"));
        };
        let out = h.ev(Event::WorkerLost { worker: on });
        if h.state("boom") == TaskState::Erred {
            let msgs = client_msgs(&out);
            let [ToClient::Erred { error, .. }] = msgs[..] else {
                panic!("{out:?}");
            };
            let text = error.to_string();
            assert!(text.contains("3 workers that died"), "{text}");
            assert!(text.contains("allowed_failures = 2"), "{text}");
            return;
        }
    }
    panic!("boom never erred: {:?}", h.state("boom"));
}

#[test]
fn retries_then_error_with_op_and_worker() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    let mut t = spec("t", &[]);
    t.annotations.retries = 1;
    h.submit(vec![t, spec("u", &["t"])], &["u"]);
    let id = h.id("t");
    let out = h.worker_msg(
        1,
        FromWorker::Failed {
            task: id,
            error: "bad input".into(),
        },
    );
    // Retried, with `u` (sent ahead behind it) recalled and sent again.
    let sent: Vec<_> = ["t", "u"].iter().map(|k| (w(1), k.to_string())).collect();
    assert_eq!(computes(&out), sent);
    let out = h.worker_msg(
        1,
        FromWorker::Failed {
            task: id,
            error: "bad input".into(),
        },
    );
    assert_eq!(h.state("t"), TaskState::Erred);
    assert_eq!(h.state("u"), TaskState::Erred);
    let msgs = client_msgs(&out);
    let [ToClient::Erred { key, error }] = msgs[..] else {
        panic!("{out:?}");
    };
    assert_eq!(key.as_str(), "u");
    let text = error.to_string();
    assert!(text.contains("task t (op op) failed on worker w1: bad input"), "{text}");
    // A later graph on an erred key errs at once.
    let out = h.submit(vec![spec("v", &["t"])], &["v"]);
    assert!(
        client_msgs(&out)
            .iter()
            .any(|m| matches!(m, ToClient::Erred { key, .. } if key.as_str() == "v"))
    );
}

#[test]
fn malformed_and_out_of_order_messages_are_ignored() {
    let mut h = H::new(Config {
        pipeline_chains: false,
        ..Config::default()
    });
    h.join(1, 1);
    h.join(2, 1);
    h.submit(vec![spec("a", &[]), spec("b", &["a"])], &["b"]);
    let TaskState::Processing(on) = h.state("a") else {
        panic!()
    };
    let other = if on == w(1) { 2 } else { 1 };
    let a = h.id("a");
    let ignored = h.s.stats().ignored;
    // Finished from the wrong worker: ignored, and that worker told to drop it.
    let out = h.worker_msg(
        other,
        FromWorker::Finished {
            task: a,
            nbytes: 1,
            compute_us: 1,
            tier: Tier::Host,
        },
    );
    assert_eq!(frees(&out), vec![(w(other), a)]);
    assert_eq!(h.state("a"), TaskState::Processing(on));
    // Unknown task ids, stale generations, failures and steal answers for
    // tasks not there.
    let bogus = TaskId::from_parts(999, 0);
    let stale = TaskId::from_parts(a.slot(), a.generation() + 1);
    for task in [bogus, stale] {
        h.worker_msg(
            on.0,
            FromWorker::Finished {
                task,
                nbytes: 1,
                compute_us: 1,
                tier: Tier::Host,
            },
        );
        h.worker_msg(
            on.0,
            FromWorker::Failed {
                task,
                error: String::new().into(),
            },
        );
        h.worker_msg(on.0, FromWorker::StealResponse { task, stolen: true });
        h.worker_msg(
            on.0,
            FromWorker::MissingData {
                task,
                dep: a,
                tried: vec![w(1)],
            },
        );
    }
    // Duplicate registrations: same id, and a new id with a taken name.
    h.join(1, 8);
    let out = h.ev(Event::WorkerJoined {
        worker: w(3),
        info: info("w1", 1),
    });
    assert!(matches!(out[..], [Command::ToWorker(x, ToWorker::Rejected { .. })] if x == w(3)));
    assert_eq!(h.s.n_workers(), 2);
    // Unknown senders and keys.
    h.ev(Event::Worker {
        worker: w(77),
        msg: FromWorker::Acquired {
            task: a,
            nbytes: 1,
            micros: 0,
        },
    });
    h.ev(Event::Client {
        client: ClientId(9),
        msg: FromClient::Release { keys: vec![] },
    });
    h.ev(Event::Client {
        client: C,
        msg: FromClient::Release {
            keys: vec!["nope".into(), "a".into()],
        },
    });
    h.ev(Event::WorkerLost { worker: w(55) });
    h.ev(Event::ClientConnected { client: C });
    assert!(h.s.stats().ignored >= ignored + 12, "{:?}", h.s.stats());
    assert_eq!(h.state("a"), TaskState::Processing(on));
    // The real report still works.
    let out = h.finish(on.0, "a", 1);
    assert_eq!(computes(&out).len(), 1);
}

#[test]
fn bad_graphs_are_rejected_whole() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    let cases = vec![
        (vec![spec("a", &[]), spec("a", &[])], vec!["a"], "duplicate key"),
        (vec![spec("a", &["zz"])], vec!["a"], "unknown key zz"),
        (vec![spec("a", &[])], vec!["q"], "output q"),
        (
            vec![spec("a", &["c"]), spec("b", &["a"]), spec("c", &["b"])],
            vec!["c"],
            "cycle",
        ),
    ];
    for (tasks, outputs, reason) in cases {
        let out = h.submit(tasks, &outputs);
        let msgs = client_msgs(&out);
        let [ToClient::GraphRejected { reason: r }] = msgs[..] else {
            panic!("{out:?}");
        };
        assert!(r.contains(reason), "{r}");
        assert_eq!(h.s.n_tasks(), 0);
    }
}

#[test]
fn known_keys_are_culled() {
    let mut h = H::a_on_w1();
    let out = h.submit(vec![spec("a", &[]), spec("b", &["a"]), spec("unused", &[])], &["b"]);
    assert!(client_msgs(&out).contains(&&ToClient::GraphAccepted {
        new_tasks: 1,
        culled: 2
    }));
    assert_eq!(computes(&out), vec![(w(1), "b".to_string())]);
}

#[test]
fn resources_and_restrictions_constrain_placement() {
    let mut h = H::new(Config::default());
    h.join(1, 4);
    let mut g = spec("g", &[]);
    g.annotations.resources.push(ResourceAmount {
        name: "gpu".into(),
        amount: 1,
    });
    let mut r = spec("r", &[]);
    r.annotations.workers.push("w3".into());
    let mut loose = spec("loose", &[]);
    loose.annotations.workers.push("w3".into());
    loose.annotations.allow_other_workers = true;
    let out = h.submit(vec![g, r, loose], &["g", "r", "loose"]);
    assert_eq!(computes(&out), vec![(w(1), "loose".to_string())]);
    assert_eq!(h.state("g"), TaskState::Queued);
    assert_eq!(h.state("r"), TaskState::Queued);
    let mut gi = info("gpu-box", 1);
    gi.resources.push(ResourceAmount {
        name: "gpu".into(),
        amount: 1,
    });
    let out = h.ev(Event::WorkerJoined { worker: w(2), info: gi });
    assert_eq!(computes(&out), vec![(w(2), "g".to_string())]);
    let out = h.join(3, 1);
    assert_eq!(computes(&out), vec![(w(3), "r".to_string())]);
}

#[test]
fn resources_in_use_are_counted_and_spread_the_tasks_that_need_them() {
    let mut h = H::new(Config::default());
    for i in 1..=2 {
        let mut wi = info(&format!("w{i}"), 8);
        wi.resources = vec![ResourceAmount {
            name: "gpu".into(),
            amount: 1,
        }];
        h.ev(Event::WorkerJoined { worker: w(i), info: wi });
    }
    let gpu_task = |key: &str| {
        let mut s = spec(key, &[]);
        s.annotations.resources = vec![ResourceAmount {
            name: "gpu".into(),
            amount: 1,
        }];
        s
    };
    let out = h.submit(
        (0..4).map(|i| gpu_task(&format!("g{i}"))).collect(),
        &["g0", "g1", "g2", "g3"],
    );
    let mut per_worker = [0, 0];
    for (wk, _) in computes(&out) {
        per_worker[wk.index() - 1] += 1;
    }
    // Eight threads each, but one GPU each: two tasks apiece, not four on one.
    assert_eq!(per_worker, [2, 2]);
    assert_eq!(h.s.workers[&w(1)].used, [2]);
    h.finish(1, "g0", 8);
    assert_eq!(h.s.workers[&w(1)].used, [1], "released when it finishes");
}

#[test]
fn idle_workers_steal_queued_work() {
    let mut h = unsaturated();
    let tasks: Vec<_> = (0..8).map(|i| spec(&format!("t{i}"), &[])).collect();
    let keys: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    let out = h.submit(tasks, &key_refs);
    assert_eq!(computes(&out).len(), 8);
    h.join(2, 1);
    let out = h.ev(Event::Balance);
    let steals = steals(&out, 1);
    // Tasks of 0.5 s (an op not seen yet): the thief takes three, then it
    // would finish no sooner than the victim.
    assert_eq!(steals.len(), 3, "until the loads balance: {out:?}");
    let out = h.worker_msg(
        1,
        FromWorker::StealResponse {
            task: steals[0],
            stolen: true,
        },
    );
    assert_eq!(computes(&out).len(), 1);
    assert_eq!(computes(&out)[0].0, w(2));
    assert_eq!(h.s.stats().steals, 1);
}

#[test]
fn a_task_moves_with_the_link_sent_ahead_behind_it() {
    let mut h = unsaturated();
    // Partitions, each with its row count sent ahead behind it.
    let (tasks, outputs) = roots_with_links(4, "p", "n");
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let out = h.submit(tasks, &outputs);
    assert_eq!(computes(&out).len(), 8);
    // A worker joins: the partitions are stolen, their counts are not.
    h.join(2, 1);
    let out = h.ev(Event::Balance);
    let steals = steals(&out, 1);
    assert!(!steals.is_empty(), "{out:?}");
    assert!(steals.iter().all(|t| h.s.tasks[*t].key.starts_with('p')), "{out:?}");
    // Stolen: its count is called back from the victim and goes ahead to
    // the thief with it.
    let (p, n) = (steals[0], h.s.tasks[steals[0]].dependents[0]);
    let out = h.worker_msg(1, FromWorker::StealResponse { task: p, stolen: true });
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::ToWorker(x, ToWorker::Cancel { task }) if *x == w(1) && *task == n)),
        "{out:?}"
    );
    let (p, n) = (h.s.tasks[p].key.to_string(), h.s.tasks[n].key.to_string());
    assert_eq!(computes(&out), [(w(2), p.clone()), (w(2), n.clone())]);
    assert_eq!(h.state(&n), TaskState::Processing(w(2)));
    // Its count then runs on the thief without the scheduler.
    let out = h.finish(2, &p, 1);
    assert!(computes(&out).is_empty(), "{out:?}");
    h.finish(2, &n, 1);
    assert_eq!(h.state(&n), TaskState::Memory);
}

#[test]
fn missing_data_drops_the_holder_and_recomputes() {
    let mut h = H::a_on_w1_then_w2();
    // Keep w1 busy so `b` is not forced onto it... it holds `a`, so it wins.
    let out = h.submit(vec![spec("b", &["a"])], &["b"]);
    let (on, _) = computes(&out)[0].clone();
    let (a, b) = (h.id("a"), h.id("b"));
    let out = h.worker_msg(
        on.0,
        FromWorker::MissingData {
            task: b,
            dep: a,
            tried: vec![w(1)],
        },
    );
    // `a` had no other holder: recomputed, with `b` sent along to wait
    // for it on the same worker.
    let sent = computes(&out);
    assert_eq!(sent.iter().map(|c| c.1.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(h.state("b"), TaskState::Processing(sent[0].0));
}

/// What a client is told about `key`, in order: "memory@w1,w2", "lost",
/// "erred".
fn told(cmds: &[Command], key: &str) -> Vec<String> {
    client_msgs(cmds)
        .into_iter()
        .filter_map(|m| match m {
            ToClient::InMemory { key: k, who_has, .. } if k.as_str() == key => {
                let holders: Vec<String> = who_has.iter().map(|p| p.worker.to_string()).collect();
                Some(format!("memory@{}", holders.join(",")))
            }
            ToClient::Lost { key: k } if k.as_str() == key => Some("lost".into()),
            ToClient::Erred { key: k, .. } if k.as_str() == key => Some("erred".into()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_client_that_cannot_gather_has_the_result_recomputed_or_told_where_else() {
    let mut h = H::a_on_w1_then_w2();
    // w2 fetched a replica of `a` (held by task id only).
    let a = h.id("a");
    h.worker_msg(
        2,
        FromWorker::Acquired {
            task: a,
            nbytes: 10,
            micros: 0,
        },
    );
    assert_eq!(h.s.who_has("a"), [w(1), w(2)]);
    let missing = |key: &str, tried: Vec<WorkerId>| Event::Client {
        client: C,
        msg: FromClient::MissingData {
            keys: vec![(Key::from(key), tried)],
        },
    };
    // One of two holders failed: the client is told the other at once.
    let out = h.ev(missing("a", vec![w(1)]));
    assert_eq!(told(&out, "a"), [format!("memory@{}", w(2))]);
    assert!(computes(&out).is_empty());
    // The last holder failed: recomputed; the client hears it is lost,
    // then in memory again.
    let out = h.ev(missing("a", vec![w(2)]));
    assert_eq!(told(&out, "a"), ["lost"]);
    let [(again, _)] = computes(&out)[..] else {
        panic!("recomputed once: {out:?}");
    };
    let out = h.finish(again.index() as u32, "a", 10);
    assert_eq!(told(&out, "a"), [format!("memory@{again}")]);
    // A report that crosses the new result (it names holders no longer
    // listed) is answered with where the result is now.
    let out = h.ev(missing("a", vec![w(1)]));
    assert_eq!(told(&out, "a"), [format!("memory@{again}")]);
    // Reports for keys the client does not hold change nothing.
    let ignored = h.s.stats().ignored;
    assert!(h.ev(missing("nope", vec![w(1)])).is_empty());
    assert_eq!(h.s.stats().ignored, ignored + 1);
}

#[test]
fn a_dead_workers_results_are_reported_lost_to_the_clients_holding_them() {
    let mut h = H::a_on_w1_then_w2();
    let out = h.ev(Event::WorkerLost { worker: w(1) });
    assert_eq!(told(&out, "a"), ["lost"]);
    assert_eq!(computes(&out), [(w(2), "a".to_string())]);
    let out = h.finish(2, "a", 10);
    assert_eq!(told(&out, "a"), [format!("memory@{}", w(2))]);
    // With a replica left, the client hears of the holders left.
    h.join(3, 1);
    let a = h.id("a");
    h.worker_msg(
        3,
        FromWorker::Acquired {
            task: a,
            nbytes: 10,
            micros: 0,
        },
    );
    let out = h.ev(Event::WorkerLost { worker: w(2) });
    assert_eq!(told(&out, "a"), [format!("memory@{}", w(3))]);
    assert!(computes(&out).is_empty());
}

#[test]
fn client_disconnect_releases_its_keys() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    h.submit(vec![spec("a", &[]), spec("b", &["a"])], &["a", "b"]);
    h.finish(1, "a", 1);
    let out = h.ev(Event::ClientDisconnected { client: C });
    // `b` was processing: cancelled; `a` freed; all forgotten.
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::ToWorker(_, ToWorker::Cancel { .. })))
    );
    assert_eq!(frees(&out).len(), 1);
    assert_eq!(h.s.n_tasks(), 0);
}

#[test]
fn hot_structs_stay_small() {
    assert_eq!(std::mem::size_of::<task::Task>(), 240);
    assert_eq!(std::mem::size_of::<TaskState>(), 8);
    assert_eq!(std::mem::size_of::<TaskId>(), 8);
}

#[test]
fn annotations_default_is_unconstrained() {
    let a = Annotations::default();
    assert!(a.workers.is_empty() && a.resources.is_empty() && a.retries == 0);
}

#[test]
fn scattered_data_is_used_in_place_and_errs_when_lost() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    h.join(2, 1);
    let out = h.ev(Event::Client {
        client: C,
        msg: FromClient::Scatter {
            worker: w(2),
            data: vec![("s".into(), 1 << 20)],
        },
    });
    assert_eq!(h.state("s"), TaskState::Memory);
    assert_eq!(h.s.who_has("s"), &[w(2)]);
    // The worker adopts the value under the new id; the client's future resolves.
    let id = h.id("s");
    assert_eq!(
        out,
        vec![
            Command::ToWorker(
                w(2),
                ToWorker::Adopt {
                    task: id,
                    key: "s".into(),
                    nbytes: 1 << 20
                }
            ),
            Command::ToClient(
                C,
                ToClient::InMemory {
                    key: "s".into(),
                    task: id,
                    nbytes: 1 << 20,
                    who_has: vec![Peer {
                        worker: w(2),
                        address: "tcp://w2:1".into()
                    }]
                }
            ),
        ]
    );
    let out = h.submit(vec![spec("b", &["s"])], &["b"]);
    assert_eq!(computes(&out), vec![(w(2), "b".to_string())]);
    // The only holder dies before `b` finishes: no lineage, so both err.
    let out = h.ev(Event::WorkerLost { worker: w(2) });
    assert_eq!(h.state("s"), TaskState::Erred);
    assert_eq!(h.state("b"), TaskState::Erred);
    let msgs = client_msgs(&out);
    assert_eq!(msgs.len(), 2, "{out:?}");
    for m in msgs {
        let ToClient::Erred { error, .. } = m else {
            panic!("{m:?}");
        };
        assert!(matches!(error.root_cause(), TaskError::DataLost { key } if key.as_str() == "s"));
    }
    // Scatter to an unknown worker, or of a known key, or of a key twice, is
    // refused as a whole: nothing is registered and the client is told.
    let before = h.s.stats().ignored;
    let cases: [(u32, &[&str], &str); 3] = [
        (9, &["t"], "not (or no longer) registered"),
        (1, &["t", "s"], "already known"),
        (1, &["t", "t"], "appears twice"),
    ];
    for (worker, keys, expected) in cases {
        let out = h.ev(Event::Client {
            client: C,
            msg: FromClient::Scatter {
                worker: w(worker),
                data: keys.iter().map(|k| (Key::from(*k), 1)).collect(),
            },
        });
        let [
            Command::ToClient(
                C,
                ToClient::ScatterRejected {
                    worker: named,
                    keys: refused,
                    reason,
                },
            ),
        ] = &out[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!(*named, w(worker));
        assert_eq!(refused.len(), keys.len());
        assert!(reason.contains(expected), "{reason}");
    }
    assert_eq!(h.s.stats().ignored, before + 3);
    assert_eq!(h.state("t"), TaskState::Forgotten);
}

#[test]
fn scattered_data_is_freed_on_release_and_queries_answer() {
    let mut h = H::new(Config::default());
    h.join(1, 2);
    h.join(2, 1);
    h.ev(Event::Client {
        client: C,
        msg: FromClient::Scatter {
            worker: w(1),
            data: vec![("a".into(), 10), ("b".into(), 20)],
        },
    });
    let out = h.ev(Event::Client {
        client: C,
        msg: FromClient::Workers { request: 7 },
    });
    let [Command::ToClient(C, ToClient::Workers { request: 7, workers })] = &out[..] else {
        panic!("{out:?}")
    };
    let summary: Vec<_> = workers
        .iter()
        .map(|s| (s.worker, s.name.as_str(), s.nthreads, s.n_held, s.nbytes_held))
        .collect();
    assert_eq!(summary, vec![(w(1), "w1", 2, 2, 30), (w(2), "w2", 1, 0, 0)]);
    let ask = |h: &mut H, request| {
        let out = h.ev(Event::Client {
            client: C,
            msg: FromClient::WhoHas {
                request,
                keys: vec!["a".into(), "nope".into()],
            },
        });
        let [Command::ToClient(C, ToClient::WhoHas { request: r, who_has })] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(*r, request);
        who_has
            .iter()
            .map(|peers| peers.iter().map(|p| p.worker).collect())
            .collect::<Vec<Vec<_>>>()
    };
    assert_eq!(ask(&mut h, 8), vec![vec![w(1)], vec![]]);
    // Released: the worker frees it and the scheduler forgets it.
    let a = h.id("a");
    let out = h.ev(Event::Client {
        client: C,
        msg: FromClient::Release { keys: vec!["a".into()] },
    });
    assert_eq!(out, vec![Command::ToWorker(w(1), ToWorker::Free { task: a })]);
    assert_eq!(h.state("a"), TaskState::Forgotten);
    assert_eq!(h.state("b"), TaskState::Memory);
    assert_eq!(ask(&mut h, 9), vec![vec![], vec![]]);
}

#[test]
fn paused_workers_get_no_new_tasks() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    h.join(2, 1);
    h.submit(vec![spec("a", &[])], &["a"]);
    let TaskState::Processing(on) = h.state("a") else {
        panic!()
    };
    h.finish(on.0, "a", 1 << 30);
    let other = if on == w(1) { 2 } else { 1 };
    h.worker_msg(on.0, FromWorker::Paused { paused: true });
    // Even with its big input there, `b` goes to the other worker.
    let tasks: Vec<_> = (0..4).map(|i| spec(&format!("r{i}"), &[])).collect();
    let out = h.submit(
        [vec![spec("b", &["a"])], tasks].concat(),
        &["b", "r0", "r1", "r2", "r3"],
    );
    let placed = computes(&out);
    assert!(placed.iter().all(|p| p.0 == w(other)), "{placed:?}");
    assert_eq!(h.state("r3"), TaskState::Queued);
    let out = h.worker_msg(on.0, FromWorker::Paused { paused: false });
    assert!(!computes(&out).is_empty());
    assert!(computes(&out).iter().all(|p| p.0 == on));
}

#[test]
fn order_is_depth_first_and_user_priority_wins() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    // Tree: (l0 l1) -> n0, (l2 l3) -> n1, (n0 n1) -> root.
    let mut urgent = spec("urgent", &[]);
    urgent.annotations.priority = 5;
    let out = h.submit(
        vec![
            spec("l0", &[]),
            spec("l1", &[]),
            spec("l2", &[]),
            spec("l3", &[]),
            spec("n0", &["l0", "l1"]),
            spec("n1", &["l2", "l3"]),
            spec("root", &["n0", "n1"]),
            urgent,
        ],
        &["root", "urgent"],
    );
    // Two slots: the urgent root task first, then the first leaf.
    let placed: Vec<String> = computes(&out).into_iter().map(|p| p.1).collect();
    assert_eq!(placed, vec!["urgent", "l0"]);
    let out = h.finish(1, "urgent", 1);
    assert_eq!(computes(&out)[0].1, "l1");
    let out = h.finish(1, "l0", 1);
    assert_eq!(computes(&out)[0].1, "l2");
    // The reduction of l0, l1 outranks the next leaves (depth first).
    let out = h.finish(1, "l1", 1);
    let prio = |cmds: &[Command], key: &str| {
        cmds.iter().find_map(|c| match c {
            Command::ToWorker(_, ToWorker::Compute(r)) if r.key.as_str() == key => Some(r.priority),
            _ => None,
        })
    };
    let n0 = prio(&out, "n0").expect("n0 sent when its inputs are done");
    let l2 = h.s.tasks[h.id("l2")].priority;
    assert!(n0 < l2, "{n0:?} vs {l2:?}");
}

#[test]
fn an_output_read_by_another_comes_right_before_it() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    // Partitions and their row counts, all outputs, partitions first.
    h.submit(
        vec![
            spec("p0", &[]),
            spec("p1", &[]),
            spec("n0", &["p0"]),
            spec("n1", &["p1"]),
        ],
        &["p0", "p1", "n0", "n1"],
    );
    let mut by_priority = ["p0", "p1", "n0", "n1"];
    by_priority.sort_by_key(|k| h.s.tasks[h.id(k)].priority);
    // Depth first from the outputs nothing reads: a count right after its
    // partition, not after every partition.
    assert_eq!(by_priority, ["p0", "n0", "p1", "n1"]);
}

/// Random, mostly nonsensical input: reports for random (live, stale or
/// made-up) tasks from random (live, dead or unknown) workers, joins,
/// losses, pauses, releases, graphs with unknown inputs, disconnects. The
/// scheduler must never panic and every invariant must hold after every
/// event.
#[test]
fn random_garbage_never_corrupts_state() {
    // fastrand's seeded generator: reproducible per seed.
    use fastrand::Rng;
    let seeds: u64 = std::env::var("WEFT_FUZZ_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    for seed in 0..seeds {
        let mut rng = Rng::with_seed(seed);
        let mut h = H::new(Config::default());
        let mut next_worker = 0u32;
        let mut ids: Vec<TaskId> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let mut sent: Vec<(WorkerId, TaskId)> = Vec::new();
        for step in 0..3_000u32 {
            let pick_worker = |rng: &mut Rng| w(rng.u64(..next_worker as u64 + 3) as u32);
            let pick_task = |rng: &mut Rng, ids: &Vec<TaskId>| {
                if ids.is_empty() || rng.f64() < 0.1 {
                    TaskId::from_parts(rng.u64(..50) as u32, rng.u64(..3) as u32)
                } else {
                    ids[rng.u64(..ids.len() as u64) as usize]
                }
            };
            let ev = match rng.u64(..14) {
                0 => {
                    next_worker += 1;
                    Event::WorkerJoined {
                        worker: w(next_worker),
                        // Now and then a name that is taken.
                        info: info(
                            &if rng.f64() < 0.1 {
                                format!("w{}", rng.u64(..next_worker as u64))
                            } else {
                                format!("w{next_worker}")
                            },
                            2,
                        ),
                    }
                }
                1 if rng.f64() < 0.3 => Event::WorkerLost {
                    worker: pick_worker(&mut rng),
                },
                2 => {
                    // A small graph, sometimes with an unknown input.
                    let n = rng.u64(1..=5);
                    let mut tasks = Vec::new();
                    let mut outs = Vec::new();
                    for i in 0..n {
                        let key = format!("k{step}-{i}");
                        let mut deps: Vec<Key> = Vec::new();
                        if !keys.is_empty() && rng.f64() < 0.5 {
                            // A recent key: likely still known.
                            let recent = rng.u64(..keys.len().min(8) as u64) as usize;
                            deps.push(keys[keys.len() - 1 - recent].as_str().into());
                        }
                        if i > 0 && rng.f64() < 0.5 {
                            deps.push(format!("k{step}-{}", i - 1).into());
                        }
                        if rng.f64() < 0.05 {
                            deps.push("nowhere".into());
                        }
                        let mut t = TaskSpec::new(key.as_str(), "op", Bytes::new(), deps);
                        t.annotations.retries = rng.u64(..2) as u8;
                        tasks.push(t);
                        outs.push(Key::from(key.as_str()));
                        keys.push(key);
                    }
                    Event::Client {
                        client: C,
                        msg: FromClient::SubmitGraph(Graph { tasks, outputs: outs }),
                    }
                }
                3 if !keys.is_empty() => Event::Client {
                    client: C,
                    msg: FromClient::Release {
                        keys: vec![keys[rng.u64(..keys.len() as u64) as usize].as_str().into()],
                    },
                },
                4 => Event::Balance,
                5 if rng.f64() < 0.1 => Event::ClientDisconnected {
                    client: ClientId(rng.u64(..2) as u32),
                },
                6 => Event::ClientConnected {
                    client: ClientId(rng.u64(..2) as u32),
                },
                7 => Event::Worker {
                    worker: pick_worker(&mut rng),
                    msg: FromWorker::Failed {
                        task: pick_task(&mut rng, &ids),
                        error: "x".into(),
                    },
                },
                8 => Event::Worker {
                    worker: pick_worker(&mut rng),
                    msg: FromWorker::StealResponse {
                        task: pick_task(&mut rng, &ids),
                        stolen: rng.f64() < 0.5,
                    },
                },
                9 => Event::Worker {
                    worker: pick_worker(&mut rng),
                    msg: FromWorker::MissingData {
                        task: pick_task(&mut rng, &ids),
                        dep: pick_task(&mut rng, &ids),
                        tried: vec![pick_worker(&mut rng)],
                    },
                },
                10 => Event::Worker {
                    worker: pick_worker(&mut rng),
                    msg: FromWorker::Acquired {
                        task: pick_task(&mut rng, &ids),
                        nbytes: 5,
                        micros: 1,
                    },
                },
                11 => Event::Worker {
                    worker: pick_worker(&mut rng),
                    msg: FromWorker::Paused {
                        paused: rng.f64() < 0.5,
                    },
                },
                _ if !sent.is_empty() && rng.f64() < 0.7 => {
                    // A genuine report (possibly stale by now).
                    let (worker, task) = sent.swap_remove(rng.u64(..sent.len() as u64) as usize);
                    Event::Worker {
                        worker,
                        msg: FromWorker::Finished {
                            task,
                            nbytes: rng.u64(..1000),
                            compute_us: rng.u64(..1000),
                            tier: Tier::Host,
                        },
                    }
                }
                _ => Event::Worker {
                    worker: pick_worker(&mut rng),
                    msg: FromWorker::Finished {
                        task: pick_task(&mut rng, &ids),
                        nbytes: rng.u64(..1000),
                        compute_us: rng.u64(..1000),
                        tier: Tier::Host,
                    },
                },
            };
            // Compute messages tell us the live ids to aim at.
            let out = h.ev(ev);
            for c in &out {
                if let Command::ToWorker(to, ToWorker::Compute(r)) = c {
                    ids.push(r.task);
                    sent.push((*to, r.task));
                }
            }
            if ids.len() > 200 {
                ids.drain(..100);
            }
        }
        let st = h.s.stats();
        assert!(st.ignored > 100, "{st:?}");
        assert!(st.transitions > 100, "{st:?}");
    }
}

#[test]
fn tiers_follow_the_holders_reports_and_weigh_in_placement() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    h.join(2, 1);
    let out = h.submit(vec![spec("x", &[]), spec("y", &[])], &["x", "y"]);
    let placed = computes(&out);
    let wx = placed.iter().find(|p| p.1 == "x").expect("x placed").0;
    let wy = placed.iter().find(|p| p.1 == "y").expect("y placed").0;
    h.finish(wx.0, "x", 1000);
    h.finish(wy.0, "y", 1500);
    let (x, y) = (h.id("x"), h.id("y"));
    // A worker that does not hold x cannot move it.
    h.worker_msg(
        wy.0,
        FromWorker::Moved {
            task: x,
            tier: Tier::Disk,
        },
    );
    assert_eq!(h.s.tier_of("x"), Some(Tier::Host));
    h.worker_msg(
        wx.0,
        FromWorker::Moved {
            task: x,
            tier: Tier::Disk,
        },
    );
    assert_eq!(h.s.tier_of("x"), Some(Tier::Disk));
    // 1000 bytes on disk weigh more than 1500 in memory: z goes to x's
    // holder; once y is on disk too, the larger input wins again.
    let out = h.submit(vec![spec("z", &["x", "y"])], &["z"]);
    assert_eq!(computes(&out), vec![(wx, "z".to_string())]);
    h.worker_msg(
        wy.0,
        FromWorker::Moved {
            task: y,
            tier: Tier::Disk,
        },
    );
    let out = h.submit(vec![spec("u", &["x", "y"])], &["u"]);
    assert_eq!(computes(&out), vec![(wy, "u".to_string())]);
}

#[test]
fn pipelined_links_follow_their_input_through_failure_and_worker_loss() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    let chain = |p: &str| {
        vec![
            spec(&format!("{p}a"), &[]),
            spec(&format!("{p}b"), &[&format!("{p}a")]),
            spec(&format!("{p}c"), &[&format!("{p}b")]),
        ]
    };
    // The head fails: the links sent ahead are cancelled and err.
    let out = h.submit(chain("x"), &["xc"]);
    assert_eq!(computes(&out).len(), 3);
    let xa = h.id("xa");
    let out = h.worker_msg(
        1,
        FromWorker::Failed {
            task: xa,
            error: "boom".into(),
        },
    );
    let cancelled = out
        .iter()
        .filter(|c| matches!(c, Command::ToWorker(_, ToWorker::Cancel { .. })))
        .count();
    assert_eq!(cancelled, 2, "{out:?}");
    assert_eq!(h.state("xc"), TaskState::Erred);
    // The worker dies mid-chain: the finished part is lost with it, the
    // head is ready again and the links wait for it.
    h.submit(chain("y"), &["yc"]);
    h.finish(1, "ya", 10);
    h.join(2, 1);
    h.ev(Event::WorkerLost { worker: w(1) });
    let sent: Vec<String> = computes(&h.ev(Event::Balance)).into_iter().map(|c| c.1).collect();
    assert!(sent.is_empty() || sent == ["ya", "yb", "yc"], "{sent:?}");
    assert!(matches!(h.state("ya"), TaskState::Processing(x) if x == w(2)));
    assert_eq!(h.state("yc"), TaskState::Processing(w(2)));
    h.s.check_all().unwrap();
    // A chain does not move to an idle worker: it would take all its
    // links' work there.
    h.join(3, 1);
    let out = h.ev(Event::Balance);
    assert!(
        !out.iter()
            .any(|c| matches!(c, Command::ToWorker(_, ToWorker::Steal { .. }))),
        "{out:?}"
    );
}

// ---- restart: results kept by workers from an earlier scheduler ----------

impl H {
    /// Worker `i` registers holding `held` (key, bytes) from an earlier
    /// scheduler.
    fn join_holding(&mut self, i: u32, held: &[(&str, u64)]) -> Vec<Command> {
        let mut info = info(&format!("w{i}"), 1);
        info.held = held
            .iter()
            .map(|&(key, nbytes)| crate::protocol::HeldResult {
                key: key.into(),
                nbytes,
                tier: Tier::Host,
            })
            .collect();
        self.ev(Event::WorkerJoined { worker: w(i), info })
    }
}

/// (worker, key) of each Adopt.
fn adopts(cmds: &[Command]) -> Vec<(WorkerId, String)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::ToWorker(w, ToWorker::Adopt { key, .. }) => Some((*w, key.to_string())),
            _ => None,
        })
        .collect()
}

fn discards(cmds: &[Command]) -> Vec<(WorkerId, Vec<Key>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::ToWorker(w, ToWorker::Discard { keys }) => Some((*w, keys.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn held_results_are_staged_until_a_graph_claims_them() {
    let mut h = H::new(Config::default());
    let out = h.join_holding(0, &[("a", 8), ("stray", 4)]);
    assert!(adopts(&out).is_empty(), "nothing to claim yet");
    assert_eq!(h.s.n_staged(), 2);
    h.join(1, 1);
    let out = h.submit(vec![spec("a", &[]), spec("b", &["a"])], &["b"]);
    assert_eq!(adopts(&out), vec![(w(0), "a".to_string())]);
    assert_eq!(h.state("a"), TaskState::Memory);
    assert_eq!(h.s.who_has("a"), &[w(0)]);
    // Only `b` runs, next to its input.
    assert_eq!(computes(&out), vec![(w(0), "b".to_string())]);
    assert_eq!(h.s.stats().reclaimed, 1);
    assert_eq!(h.s.n_staged(), 1);
    let out = h.finish(0, "b", 8);
    assert!(matches!(client_msgs(&out)[..], [ToClient::InMemory { key, .. }] if key.as_str() == "b"));
}

#[test]
fn a_held_result_fills_a_task_that_waits_for_it() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    h.submit(vec![spec("x", &[]), spec("a", &["x"]), spec("b", &["a"])], &["b"]);
    assert_eq!(h.state("x"), TaskState::Processing(w(1)));
    assert_eq!(h.state("a"), TaskState::Processing(w(1)), "a link sent ahead");
    // The worker that made `a` before comes back: `a` is running (a link
    // may wait on it there), so the copy is dropped.
    let out = h.join_holding(0, &[("a", 8)]);
    assert_eq!(discards(&out), vec![(w(0), vec![Key::from("a")])]);
    // One that holds `x`, waited on by `a`: claimed, and `b`'s chain goes on.
    h.finish(1, "x", 8);
    let mut h = H::new(Config {
        pipeline_chains: false,
        ..Config::default()
    });
    h.join(1, 1);
    h.submit(vec![spec("x", &[]), spec("a", &["x"]), spec("b", &["a"])], &["b"]);
    assert_eq!(h.state("a"), TaskState::Waiting);
    let out = h.join_holding(0, &[("a", 8)]);
    assert_eq!(adopts(&out), vec![(w(0), "a".to_string())]);
    assert_eq!(h.state("a"), TaskState::Memory);
    assert_eq!(computes(&out), vec![(w(0), "b".to_string())]);
    // `x` is needed by nobody now: cancelled on its worker.
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::ToWorker(w1, ToWorker::Cancel { .. }) if *w1 == w(1)))
    );
}

#[test]
fn unclaimed_held_results_are_dropped_after_the_configured_rounds() {
    let mut h = H::new(Config {
        unclaimed_rounds: 32,
        ..Config::default()
    });
    h.join_holding(0, &[("z", 8)]);
    let mut dropped = Vec::new();
    for _ in 0..48 {
        dropped.extend(discards(&h.ev(Event::Balance)));
    }
    assert_eq!(dropped, vec![(w(0), vec![Key::from("z")])]);
    assert_eq!(h.s.n_staged(), 0);
    // And a worker that goes takes its staged results with it.
    h.join_holding(1, &[("y", 8)]);
    h.ev(Event::WorkerLost { worker: w(1) });
    assert_eq!(h.s.n_staged(), 0);
}

#[test]
fn scattered_keys_are_reclaimed_or_reported_lost() {
    let mut h = H::new(Config::default());
    h.join_holding(0, &[("s", 8)]);
    let out = h.ev(Event::Client {
        client: C,
        msg: FromClient::Reclaim {
            keys: vec!["s".into(), "gone".into()],
        },
    });
    assert_eq!(adopts(&out), vec![(w(0), "s".to_string())]);
    let msgs = client_msgs(&out);
    assert!(matches!(msgs[0], ToClient::InMemory { key, .. } if key.as_str() == "s"));
    assert!(matches!(
        msgs[1],
        ToClient::Erred { key, error: TaskError::DataLost { .. } } if key.as_str() == "gone"
    ));
    assert_eq!(h.state("s"), TaskState::Memory);
    // A graph on it runs as on any scattered value.
    let out = h.submit(vec![spec("t", &["s"])], &["t"]);
    assert_eq!(computes(&out), vec![(w(0), "t".to_string())]);
}

/// How many of `n` tasks of `op` on one input of `nbytes`, held by one of
/// two workers, are placed on its holder.
fn burst_on_holder(nbytes: u64, n: usize, op: &str) -> usize {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    h.join(2, 1);
    // `big` runs op "op": tasks of that op are taken to last its 1 ms.
    h.submit(vec![spec("big", &[])], &["big"]);
    let TaskState::Processing(holder) = h.state("big") else {
        panic!("big not processing");
    };
    h.finish(holder.index() as u32, "big", nbytes);
    let keys: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    let tasks = keys
        .iter()
        .map(|k| TaskSpec::new(k.as_str(), op, Bytes::new(), vec![Key::from("big")]))
        .collect();
    let out = h.submit(tasks, &keys.iter().map(String::as_str).collect::<Vec<_>>());
    let sent = computes(&out);
    assert_eq!(sent.len(), n);
    sent.iter().filter(|(worker, _)| *worker == holder).count()
}

#[test]
fn a_burst_of_tasks_on_one_input_spreads_beyond_its_busy_holder() {
    // A task of an op not seen yet is taken to last 0.5 s, the input 0.1 s
    // to fetch: the other worker takes every other task from the second on.
    let on_holder = burst_on_holder(10_000_000, 40, "slow");
    assert!((20..=21).contains(&on_holder), "{on_holder} of 40 on the holder");
}

#[test]
fn a_broadcast_spreads_its_tasks_when_their_work_outweighs_moving_it() {
    // 10 MB (0.1 s at the assumed 100 MB/s) for 0.4 s of work: each
    // worker fetches it once, each task pays its share.
    let spread = burst_on_holder(10_000_000, 400, "op");
    assert!((195..=205).contains(&spread), "{spread} of 400 on the holder");
    // 100 MB (1 s) for the same 0.4 s: cheaper where it is.
    assert_eq!(burst_on_holder(100_000_000, 400, "op"), 400);
}

#[test]
fn a_worker_left_idle_steals_from_a_backlog_at_once() {
    // Four tasks on a's holder, the only worker when they were placed...
    let mut h = H::a_on_w1();
    let keys = ["p0", "p1", "p2", "p3"];
    let out = h.submit(keys.iter().map(|k| spec(k, &["a"])).collect(), &keys);
    assert!(computes(&out).iter().all(|(worker, _)| *worker == w(1)));
    // ...and one on a worker that joined since.
    h.join(2, 1);
    let out = h.submit(vec![spec("r", &[])], &["r"]);
    assert_eq!(computes(&out), [(w(2), "r".to_string())]);
    // Its finish leaves it idle beside a backlog: it steals now, not at
    // the next balance round.
    let out = h.finish(2, "r", 10);
    assert_eq!(steals(&out, 1).len(), 1, "{out:?}");
}

#[test]
fn fetches_of_a_mebibyte_or_more_measure_the_bandwidth() {
    let mut h = H::new(Config::default());
    h.join(1, 1);
    h.join(2, 1);
    h.submit(vec![spec("a", &[]), spec("b", &[])], &["a", "b"]);
    for key in ["a", "b"] {
        let TaskState::Processing(on) = h.state(key) else {
            panic!("{key} not processing");
        };
        h.finish(on.index() as u32, key, 4 << 20);
    }
    let (a, b) = (h.id("a"), h.id("b"));
    // A small fetch is mostly latency: it measures nothing.
    h.worker_msg(
        1,
        FromWorker::Acquired {
            task: b,
            nbytes: 1000,
            micros: 1000,
        },
    );
    assert_eq!(h.s.bandwidth, 100e6);
    // 4 MiB in 2 ms: about 2.1 GB/s, averaged with the assumed 100 MB/s.
    h.worker_msg(
        2,
        FromWorker::Acquired {
            task: a,
            nbytes: 4 << 20,
            micros: 2000,
        },
    );
    let measured = (4 << 20) as f64 / 2e-3;
    assert!(
        (h.s.bandwidth - (100e6 + measured) / 2.0).abs() < 1.0,
        "{}",
        h.s.bandwidth
    );
}

#[test]
fn a_replica_fetched_by_the_worker_now_recomputing_it_is_kept() {
    let mut h = H::a_on_w1_then_w2();
    // w2 fetched `a` from w1, which dies before the scheduler hears of it:
    // `a` is computed again, on w2.
    let out = h.ev(Event::WorkerLost { worker: w(1) });
    assert_eq!(computes(&out), [(w(2), "a".to_string())]);
    let a = h.id("a");
    let out = h.worker_msg(
        2,
        FromWorker::Acquired {
            task: a,
            nbytes: 10,
            micros: 0,
        },
    );
    assert!(frees(&out).is_empty(), "{out:?}");
    assert_eq!(h.state("a"), TaskState::Processing(w(2)));
    h.finish(2, "a", 10);
    assert_eq!(h.s.who_has("a"), [w(2)]);
}

#[test]
fn a_refused_steal_asks_at_once_for_another_task_and_never_again_for_it() {
    // Eight tasks on w1, then an idle w2 asks for three (as in
    // `idle_workers_steal_queued_work`).
    let mut h = unsaturated();
    let keys: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    h.submit(key_refs.iter().map(|k| spec(k, &[])).collect(), &key_refs);
    h.join(2, 1);
    let out = h.ev(Event::Balance);
    let asked = steals(&out, 1);
    assert!(asked.len() >= 2, "{out:?}");
    // The victim had started each task asked for: once the last answer is
    // in, the idle thief asks at once for others, never for those again.
    let mut refused = Vec::new();
    for &task in &asked {
        let out = h.worker_msg(1, FromWorker::StealResponse { task, stolen: false });
        refused.push(task);
        let again = steals(&out, 1);
        assert!(again.iter().all(|t| !refused.contains(t)), "asked again: {out:?}");
        if task == *asked.last().unwrap() {
            assert!(!again.is_empty(), "an idle thief waits for the next round: {out:?}");
        } else {
            assert!(again.is_empty(), "asked more while answers were pending: {out:?}");
        }
    }
}
