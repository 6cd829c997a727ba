//! Random graphs of the shapes collections make (maps, tree reductions,
//! all-to-all shuffles, chains) with failing, flaky, crashing, GPU and
//! restricted tasks mixed in.

use weft_runtime::graph::Annotations;
use weft_runtime::ids::SharedStr;
use weft_runtime::protocol::ResourceAmount;

use crate::reference::{GraphBuilder, Node, SimGraph};
use crate::rng::Rng;

/// Mix of shapes and annotations for [`random_graph`].
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Stop adding shapes once this many tasks exist.
    pub target_tasks: usize,
    /// Seed.
    pub seed: u64,
    /// Fraction of tasks that always fail.
    pub fail_fraction: f64,
    /// Fraction of tasks that fail once and have one retry.
    pub flaky_fraction: f64,
    /// Fraction of tasks whose op kills the worker that runs it (they end
    /// in a KilledWorkers error, and take some bystanders with them).
    pub crash_fraction: f64,
    /// Fraction of tasks that need `gpu = 1`.
    pub gpu_fraction: f64,
    /// Fraction of tasks restricted to a named worker (with
    /// allow_other_workers, since named workers may die).
    pub restrict_fraction: f64,
    /// Names usable in restrictions.
    pub worker_names: Vec<SharedStr>,
}

impl GenConfig {
    /// A mix with a little of everything.
    pub fn new(target_tasks: usize, seed: u64) -> Self {
        Self {
            target_tasks,
            seed,
            fail_fraction: 0.0005,
            flaky_fraction: 0.002,
            crash_fraction: 0.0,
            gpu_fraction: 0.002,
            restrict_fraction: 0.001,
            worker_names: Vec::new(),
        }
    }
}

/// A random DAG of maps, tree reductions, all-to-all shuffles and chains;
/// some shapes start from outputs of earlier ones.
pub fn random_graph(cfg: &GenConfig) -> SimGraph {
    let mut rng = Rng::new(cfg.seed);
    let mut b = GraphBuilder::new();
    // Keys a later shape may take as inputs.
    let mut pool: Vec<Node> = Vec::new();
    let mut comp = 0u64;
    while b.len() < cfg.target_tasks {
        comp += 1;
        let left = cfg.target_tasks - b.len();
        let ann = |rng: &mut Rng| {
            let mut a = Annotations::default();
            let op = if rng.chance(cfg.fail_fraction) {
                "fail"
            } else if rng.chance(cfg.crash_fraction) {
                "crash"
            } else if rng.chance(cfg.flaky_fraction) {
                a.retries = 1;
                "flaky"
            } else {
                "f"
            };
            if rng.chance(cfg.gpu_fraction) {
                a.resources.push(ResourceAmount {
                    name: "gpu".into(),
                    amount: 1,
                });
            }
            if !cfg.worker_names.is_empty() && rng.chance(cfg.restrict_fraction) {
                let n = cfg.worker_names[rng.below(cfg.worker_names.len() as u64) as usize].clone();
                a.workers.push(n);
                a.allow_other_workers = true;
            }
            if rng.chance(0.01) {
                a.priority = rng.range(0, 3) as i32;
            }
            (op, a)
        };
        let source = |rng: &mut Rng, pool: &Vec<Node>| -> Vec<Node> {
            if !pool.is_empty() && rng.chance(0.3) {
                vec![pool[rng.below(pool.len() as u64) as usize]]
            } else {
                Vec::new()
            }
        };
        let dur = |rng: &mut Rng| rng.range(200, 5_000) as u32;
        let size = |rng: &mut Rng| rng.range(8, 1 << 20) as u32;
        match rng.below(4) {
            0 => {
                // map
                let n = rng.range(10, 2_000).min(left.div_ceil(2) as u64 + 1);
                for i in 0..n {
                    let deps = source(&mut rng, &pool);
                    let (d, s) = (dur(&mut rng), size(&mut rng));
                    let x = b.task(
                        format!("src{comp}-{i}"),
                        "f",
                        rng.next_u64(),
                        d,
                        s,
                        &deps,
                        Annotations::default(),
                    );
                    let (op, a) = ann(&mut rng);
                    let (d, s) = (dur(&mut rng), size(&mut rng));
                    let y = b.task(format!("map{comp}-{i}"), op, rng.next_u64(), d, s, &[x], a);
                    b.output(y);
                    if rng.chance(0.05) && b.computes(y) {
                        pool.push(y);
                    }
                }
            }
            1 => {
                // tree reduction
                let leaves = rng.range(2, 4_096).min(left as u64 / 2 + 2);
                let fanin = rng.range(2, 8) as usize;
                let mut level: Vec<Node> = Vec::new();
                for i in 0..leaves {
                    let deps = source(&mut rng, &pool);
                    let (d, s) = (dur(&mut rng), size(&mut rng));
                    level.push(b.task(
                        format!("leaf{comp}-{i}"),
                        "f",
                        rng.next_u64(),
                        d,
                        s,
                        &deps,
                        Annotations::default(),
                    ));
                }
                let mut depth = 0;
                while level.len() > 1 {
                    depth += 1;
                    let mut next = Vec::new();
                    for (i, group) in level.chunks(fanin).enumerate() {
                        let (op, a) = ann(&mut rng);
                        let (d, s) = (dur(&mut rng), size(&mut rng));
                        next.push(b.task(format!("red{comp}-{depth}-{i}"), op, rng.next_u64(), d, s, group, a));
                    }
                    level = next;
                }
                b.output(level[0]);
                if b.computes(level[0]) {
                    pool.push(level[0]);
                }
            }
            2 => {
                // shuffle-like all-to-all
                let n = rng.range(2, 48);
                let inputs: Vec<Node> = (0..n)
                    .map(|i| {
                        let deps = source(&mut rng, &pool);
                        let (d, s) = (dur(&mut rng), size(&mut rng));
                        b.task(
                            format!("sin{comp}-{i}"),
                            "f",
                            rng.next_u64(),
                            d,
                            s,
                            &deps,
                            Annotations::default(),
                        )
                    })
                    .collect();
                for j in 0..n {
                    let (op, a) = ann(&mut rng);
                    let (d, s) = (dur(&mut rng), size(&mut rng) / 16 + 8);
                    let y = b.task(format!("sout{comp}-{j}"), op, rng.next_u64(), d, s, &inputs, a);
                    b.output(y);
                    if rng.chance(0.1) && b.computes(y) {
                        pool.push(y);
                    }
                }
            }
            _ => {
                // chains
                let chains = rng.range(1, 50);
                let len = rng.range(2, 200);
                for c in 0..chains {
                    let mut prev = source(&mut rng, &pool);
                    let mut last = None;
                    for i in 0..len {
                        let (op, a) = ann(&mut rng);
                        let (d, s) = (dur(&mut rng), size(&mut rng));
                        let k = b.task(format!("chain{comp}-{c}-{i}"), op, rng.next_u64(), d, s, &prev, a);
                        prev = vec![k];
                        last = Some(k);
                    }
                    if let Some(k) = last {
                        b.output(k);
                        if b.computes(k) {
                            pool.push(k);
                        }
                    }
                }
            }
        }
        if pool.len() > 1_000 {
            pool.drain(..500);
        }
    }
    b.finish()
}
