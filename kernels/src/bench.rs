//! `weft bench kernels`: the kernels (the dataframe's group-by, join and
//! shuffle hash among them) at sizes given on the command line, on
//! one device, one JSON line each in the schema of the peers kit
//! (`shared/peers/README.md`), `check` against the CPU result. On a CUDA
//! device the same operations also run through CuPy, when `python3` can
//! import it, so the ratio comes from one run on one device.

use std::sync::Arc;
use std::time::Instant;

use weft_gpu::{DeviceConfig, Devices, Gpu};

use crate::segment::{SegmentOp, segment_reduce, segments};
use crate::{Column, KernelError, frame_hash, hash, join, reduce, sort, take};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// "cpu", "emulated" or "cuda".
    pub device: String,
    /// Rows of the sum, argsort and partition inputs.
    pub rows: usize,
    /// Partitions of the hash partition.
    pub parts: u32,
    /// Bytes of the host<->device copies (0: none).
    pub copy_bytes: usize,
    /// Side of the square f64 matrices of the GEMM (0: none).
    pub gemm: usize,
    /// Timed repetitions of each (after one untimed warm-up).
    pub reps: usize,
    /// Also run the CuPy equivalents when the device is CUDA.
    pub cupy: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions::for_device("cuda")
    }
}

impl BenchOptions {
    /// The defaults on `device`: a GEMM of 4096^2 matrices on CUDA, of
    /// 128^2 elsewhere (the CPU emulation of a GPU is slow at it).
    pub fn for_device(device: &str) -> Self {
        BenchOptions {
            device: device.into(),
            rows: 1 << 25,
            parts: 64,
            copy_bytes: 1 << 30,
            gemm: if device == "cuda" { 4096 } else { 128 },
            reps: 10,
            cupy: true,
        }
    }
}

/// One timed operation, printed as one JSON line.
struct Line<'a> {
    opts: &'a BenchOptions,
    workload: &'static str,
    work: f64,
    unit: &'static str,
    times: Vec<f64>,
    check: String,
}

impl Line<'_> {
    fn json(&self) -> String {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        let median = t.get(t.len() / 2).copied();
        let num = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.9}"));
        let all: Vec<String> = self.times.iter().map(|v| format!("{v:.9}")).collect();
        format!(
            concat!(
                "{{\"system\": \"weft\", \"workload\": \"{}\", \"params\": {{\"rows\": {}, \"parts\": {}, ",
                "\"copy_bytes\": {}, \"gemm\": {}, \"device\": \"{}\"}}, \"reps\": {}, \"median_s\": {}, \"min_s\": {}, ",
                "\"max_s\": {}, \"all_s\": [{}], \"work\": {}, \"unit\": \"{}\", \"rate\": {}, ",
                "\"startup_s\": null, \"check\": \"{}\", \"foreign_cpu_s\": null, ",
                "\"versions\": {{\"weft\": \"{}\", \"machine\": \"{}\", \"nvrtc\": \"{}\"}}}}"
            ),
            self.workload,
            self.opts.rows,
            self.opts.parts,
            self.opts.copy_bytes,
            self.opts.gemm,
            self.opts.device,
            self.opts.reps,
            num(median),
            num(t.first().copied()),
            num(t.last().copied()),
            all.join(", "),
            self.work,
            self.unit,
            num(median.map(|m| self.work / m)),
            self.check.replace('"', "'"),
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH,
            if self.opts.device == "cuda" {
                crate::cudalibs::nvrtc_library().unwrap_or_else(|e| e.replace('"', "'"))
            } else {
                String::new()
            },
        )
    }
}

/// Times `reps` runs of `f` after one warm-up, each until the device work
/// it queued is done (kernels return while their launches are queued).
fn time<R>(reps: usize, mut f: impl FnMut() -> Result<R, KernelError>) -> Result<(Vec<f64>, R), KernelError> {
    let mut run = || -> Result<R, KernelError> {
        let r = f()?;
        weft_gpu::sync_thread_streams()?;
        Ok(r)
    };
    let mut last = run()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        last = run()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok((times, last))
}

fn open(device: &str) -> Result<Option<Arc<Gpu>>, String> {
    match device {
        "cpu" => Ok(None),
        "emulated" => Ok(Some(Gpu::emulated(0, 8 << 30, true))),
        "cuda" => {
            let devices = Devices::open(&DeviceConfig::default()).map_err(|e| e.to_string())?;
            devices
                .gpus()
                .iter()
                .find(|g| matches!(g.device(), weft_gpu::Device::Cuda(_)))
                .cloned()
                .map(Some)
                .ok_or_else(|| devices.cuda().reason.clone().unwrap_or_else(|| "no CUDA GPU".into()))
        }
        other => Err(format!("unknown device {other:?} (cpu, emulated or cuda)")),
    }
}

/// Full-range random i64 from a xorshift of `seed` (the CuPy side draws its
/// own; both are uniform over all 64 bits).
fn random_i64(n: usize, seed: u64) -> Vec<i64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as i64
        })
        .collect()
}

/// Runs every kernel benchmark and returns the JSON lines (Weft's, then
/// CuPy's when asked for and available).
pub fn run(opts: &BenchOptions) -> Result<Vec<String>, String> {
    let gpu = open(&opts.device)?;
    let e = |e: KernelError| e.to_string();
    let put = |c: Column| -> Result<Column, String> {
        match &gpu {
            Some(g) => c.to_device(g).map_err(e),
            None => Ok(c),
        }
    };
    let n = opts.rows;
    let reps = opts.reps.max(1);
    let mut lines = Vec::new();

    // sum of n f64.
    let values: Vec<f64> = (0..n).map(|i| (i % 1000) as f64 * 0.5).collect();
    let want: f64 = values.iter().sum();
    let x = put(Column::from_vec(values))?;
    let (times, got) = time(reps, || reduce::sum(&x)).map_err(e)?;
    let got = got.as_f64();
    let check = if (got - want).abs() <= 1e-9 * want.abs().max(1.0) {
        "ok".to_string()
    } else {
        format!("mismatch: {got} vs {want}")
    };
    lines.push(
        Line {
            opts,
            workload: "kernel_sum_f64",
            work: (n * 8) as f64,
            unit: "bytes",
            times,
            check,
        }
        .json(),
    );
    drop(x);

    // argsort of n full-range i64.
    let keys = Column::from_vec(random_i64(n, 0x5eed));
    let want = sort::argsort(&keys).map_err(e)?;
    let want = want.host_values::<u32>().map_err(e)?.to_vec();
    let x = put(keys.clone())?;
    let (times, got) = time(reps, || sort::argsort(&x)).map_err(e)?;
    let got = got.to_host().map_err(e)?;
    let check = if got.host_values::<u32>().map_err(e)? == want.as_slice() {
        "ok".to_string()
    } else {
        "mismatch: permutation differs from the CPU's".to_string()
    };
    lines.push(
        Line {
            opts,
            workload: "kernel_argsort_i64",
            work: n as f64,
            unit: "rows",
            times,
            check,
        }
        .json(),
    );

    // hash partition of the same keys.
    let want = hash::hash_partition(&keys, opts.parts, 7).map_err(e)?;
    let (times, got) = time(reps, || hash::hash_partition(&x, opts.parts, 7)).map_err(e)?;
    let same = |a: &Column, b: &Column| -> Result<bool, String> {
        let a = a.to_host().map_err(e)?;
        let b = b.to_host().map_err(e)?;
        Ok(a.host_values::<u32>().map_err(e)? == b.host_values::<u32>().map_err(e)?)
    };
    let ok = same(&got.rows, &want.rows)? && same(&got.offsets, &want.offsets)? && same(&got.ids, &want.ids)?;
    lines.push(
        Line {
            opts,
            workload: "kernel_hash_partition_i64",
            work: n as f64,
            unit: "rows",
            times,
            check: if ok {
                "ok".into()
            } else {
                "mismatch: partition differs from the CPU's".into()
            },
        }
        .json(),
    );
    drop((x, got));

    if let (Some(g), true) = (&gpu, opts.copy_bytes > 0) {
        let words = opts.copy_bytes / 8;
        let host = Column::from_vec((0..words as u64).collect::<Vec<u64>>());
        let (times, dev) = time(reps, || host.to_device(g)).map_err(e)?;
        lines.push(
            Line {
                opts,
                workload: "copy_h2d",
                work: (words * 8) as f64,
                unit: "bytes",
                times,
                check: "ok".into(),
            }
            .json(),
        );
        let (times, back) = time(reps, || dev.to_host()).map_err(e)?;
        let ok = back.host_values::<u64>().map_err(e)? == host.host_values::<u64>().map_err(e)?;
        lines.push(
            Line {
                opts,
                workload: "copy_d2h",
                work: (words * 8) as f64,
                unit: "bytes",
                times,
                check: if ok {
                    "ok".into()
                } else {
                    "mismatch: bytes differ".into()
                },
            }
            .json(),
        );
        // The device's own copy bandwidth, the ceiling of the kernels above
        // (bytes read plus bytes written).
        let stream = g.stream().map_err(|e| e.to_string())?;
        let src = dev.values().as_device().ok_or("copy source not on the device")?;
        let dst = g.alloc(src.len()).map_err(|e| e.to_string())?;
        let (times, ()) = time(reps, || {
            stream.copy_d2d(src, &dst)?.synchronize()?;
            Ok(())
        })
        .map_err(e)?;
        lines.push(
            Line {
                opts,
                workload: "copy_d2d",
                work: (words * 16) as f64,
                unit: "bytes",
                times,
                check: "ok".into(),
            }
            .json(),
        );
    }

    if opts.gemm > 0 {
        lines.push(gemm_line(opts, &put)?);
    }

    lines.extend(frame_lines(opts, &put)?);

    if opts.cupy && opts.device == "cuda" {
        lines.extend(cupy_lines(opts));
    }
    Ok(lines)
}

/// `a * b` of two `gemm x gemm` f64 matrices of small integers, so that
/// every product and sum is exact and the device's result must equal the
/// CPU's bit for bit.
fn gemm_line(opts: &BenchOptions, put: &dyn Fn(Column) -> Result<Column, String>) -> Result<String, String> {
    let e = |e: KernelError| e.to_string();
    let n = opts.gemm;
    let a = Column::from_vec((0..n * n).map(|i| (i % 7) as f64 - 3.0).collect::<Vec<f64>>());
    let b = Column::from_vec((0..n * n).map(|i| (i % 5) as f64 - 2.0).collect::<Vec<f64>>());
    let want = crate::gemm::gemm(&a, &b, n, n, n).map_err(e)?;
    let (da, db) = (put(a)?, put(b)?);
    let (times, got) = time(opts.reps.max(1), || crate::gemm::gemm(&da, &db, n, n, n)).map_err(e)?;
    let same = got.to_host().map_err(e)?.host_values::<f64>().map_err(e)? == want.host_values::<f64>().map_err(e)?;
    Ok(Line {
        opts,
        workload: "kernel_gemm_f64",
        work: 2.0 * (n as f64).powi(3),
        unit: "flop",
        times,
        check: if same {
            "ok".into()
        } else {
            "mismatch: product differs from the CPU's".into()
        },
    }
    .json())
}

/// Sum of f64 values per int64 key, sort-based (the dataframe's device
/// group-by): the per-group sums and their keys.
fn group_sum(keys: &Column, values: &Column) -> Result<(Column, Column), KernelError> {
    let perm = sort::argsort(keys)?;
    let sorted = take::take(keys, &perm)?;
    let starts = segments(&[&sorted])?;
    let sums = segment_reduce(&take::take(values, &perm)?, &starts, SegmentOp::Sum)?;
    Ok((take::take(&sorted, &starts)?, sums))
}

/// The dataframe's kernels: group-by sum over `parts` keys, an int64 join
/// of n probe rows against n/8 build rows, and the shuffle's row hash and
/// buckets; each checked against the CPU.
fn frame_lines(opts: &BenchOptions, put: &dyn Fn(Column) -> Result<Column, String>) -> Result<Vec<String>, String> {
    let e = |e: KernelError| e.to_string();
    let n = opts.rows;
    let reps = opts.reps.max(1);
    let parts = i64::from(opts.parts.max(1));
    let mut lines = Vec::new();
    let host = |c: &Column| c.to_host().map_err(e);
    let line = |workload, times, ok: bool| {
        Line {
            opts,
            workload,
            work: n as f64,
            unit: "rows",
            times,
            check: if ok {
                "ok".into()
            } else {
                "mismatch: differs from the CPU's".into()
            },
        }
        .json()
    };

    let keys = Column::from_vec(
        random_i64(n, 0xfeed)
            .iter()
            .map(|k| k.rem_euclid(parts))
            .collect::<Vec<_>>(),
    );
    let values = Column::from_vec((0..n).map(|i| (i % 1000) as f64 * 0.25).collect::<Vec<f64>>());
    let (want_keys, want_sums) = group_sum(&keys, &values).map_err(e)?;
    let (k, v) = (put(keys.clone())?, put(values)?);
    let (times, (got_keys, got_sums)) = time(reps, || group_sum(&k, &v)).map_err(e)?;
    let ok = host(&got_keys)?.host_values::<i64>().map_err(e)? == want_keys.host_values::<i64>().map_err(e)?
        && host(&got_sums)?.host_values::<f64>().map_err(e)? == want_sums.host_values::<f64>().map_err(e)?;
    lines.push(line("kernel_groupby_sum_i64", times, ok));
    drop((k, v));

    let build = Column::from_vec(
        random_i64(n / 8, 0xbeef)
            .iter()
            .map(|k| k.rem_euclid(n as i64))
            .collect::<Vec<_>>(),
    );
    let probe = Column::from_vec(
        random_i64(n, 0xcafe)
            .iter()
            .map(|k| k.rem_euclid(n as i64))
            .collect::<Vec<_>>(),
    );
    let want = join::pairs(&build, &probe, false).map_err(e)?;
    let (b, p) = (put(build)?, put(probe)?);
    let (times, got) = time(reps, || join::pairs(&b, &p, false)).map_err(e)?;
    let ok = host(&got.0)?.host_values::<u32>().map_err(e)? == want.0.host_values::<u32>().map_err(e)?
        && host(&got.1)?.host_values::<u32>().map_err(e)? == want.1.host_values::<u32>().map_err(e)?;
    lines.push(line("kernel_join_i64", times, ok));
    drop((b, p));

    let split = |k: &Column| frame_hash::buckets(&frame_hash::row_hash(&[k])?, opts.parts);
    let want = split(&keys).map_err(e)?;
    let k = put(keys)?;
    let (times, got) = time(reps, || split(&k)).map_err(e)?;
    let ok = host(&got)?.host_values::<u32>().map_err(e)? == want.host_values::<u32>().map_err(e)?;
    lines.push(line("kernel_frame_hash_buckets_i64", times, ok));
    Ok(lines)
}

/// The CuPy script: the same operations on the same device, same sizes.
const CUPY: &str = r#"
import json, sys, time, platform
import numpy as np, cupy as cp
rows, parts, copy_bytes, reps, gemm = (int(a) for a in sys.argv[1:6])
def line(workload, work, unit, times, check="ok"):
    t = sorted(times); med = t[len(t) // 2]
    print(json.dumps({"system": "cupy", "workload": workload,
        "params": {"rows": rows, "parts": parts, "copy_bytes": copy_bytes, "gemm": gemm, "device": "cuda"},
        "reps": reps, "median_s": med, "min_s": t[0], "max_s": t[-1], "all_s": times,
        "work": work, "unit": unit, "rate": work / med, "startup_s": None, "check": check,
        "foreign_cpu_s": None, "versions": {"cupy": cp.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "machine": platform.machine()}}), flush=True)
def timed(f):
    f(); cp.cuda.runtime.deviceSynchronize()
    out = []
    for _ in range(reps):
        t = time.perf_counter(); r = f(); cp.cuda.runtime.deviceSynchronize()
        out.append(time.perf_counter() - t)
    return out
x = cp.asarray((np.arange(rows) % 1000) * 0.5)
# float(): Weft's sum returns the value on the host, so CuPy's fetches it too.
line("kernel_sum_f64", rows * 8, "bytes", timed(lambda: float(x.sum())))
del x
rng = np.random.default_rng(1)
k = cp.asarray(rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, rows, dtype=np.int64))
line("kernel_argsort_i64", rows, "rows", timed(lambda: cp.argsort(k)))
fmix = cp.ElementwiseKernel("int64 v, uint64 seed, uint32 parts", "uint32 id", """
unsigned long long h = ((unsigned long long)v) ^ (seed * 0x9E3779B97F4A7C15ULL);
h ^= h >> 33; h *= 0xff51afd7ed558ccdULL; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ULL; h ^= h >> 33;
id = (unsigned int)__umul64hi(h, (unsigned long long)parts);
""", "weft_bucket")
def partition():
    ids = fmix(k, cp.uint64(7), cp.uint32(parts))
    return ids, cp.argsort(ids), cp.bincount(ids, minlength=parts)
line("kernel_hash_partition_i64", rows, "rows", timed(partition))
del k
g = cp.asarray(rng.integers(0, max(parts, 1), rows, dtype=np.int64))
v = cp.asarray((np.arange(rows) % 1000) * 0.25)
def group_sum():
    order = cp.argsort(g, kind="stable"); sk = g[order]
    starts = cp.flatnonzero(cp.concatenate((cp.ones(1, dtype=cp.bool_), sk[1:] != sk[:-1])))
    return sk[starts], cp.add.reduceat(v[order], starts)
line("kernel_groupby_sum_i64", rows, "rows", timed(group_sum))
del g, v
b = cp.asarray(rng.integers(0, rows, rows // 8, dtype=np.int64))
p = cp.asarray(rng.integers(0, rows, rows, dtype=np.int64))
def join():
    order = cp.argsort(b, kind="stable"); sb = b[order]
    lo = cp.searchsorted(sb, p, "left"); hi = cp.searchsorted(sb, p, "right")
    counts = hi - lo; ends = cp.cumsum(counts); total = int(ends[-1])
    out = cp.arange(total)
    probe_rows = cp.searchsorted(ends, out, "right")
    within = out - (ends - counts)[probe_rows]
    return probe_rows, order[lo[probe_rows] + within]
line("kernel_join_i64", rows, "rows", timed(join))
del b, p
if gemm > 0:
    i = np.arange(gemm * gemm).reshape(gemm, gemm)
    a = cp.asarray(i % 7 - 3.0); b = cp.asarray(i % 5 - 2.0)
    line("kernel_gemm_f64", 2 * gemm ** 3, "flop", timed(lambda: a @ b))
    del a, b
if copy_bytes > 0:
    h = np.arange(copy_bytes // 8, dtype=np.uint64)
    line("copy_h2d", h.nbytes, "bytes", timed(lambda: cp.asarray(h)))
    d = cp.asarray(h)
    line("copy_d2h", h.nbytes, "bytes", timed(lambda: cp.asnumpy(d)))
    e = cp.empty_like(d)
    line("copy_d2d", 2 * h.nbytes, "bytes", timed(lambda: e.__setitem__(Ellipsis, d)))
"#;

/// CuPy's lines, or one line saying why there are none.
fn cupy_lines(opts: &BenchOptions) -> Vec<String> {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(CUPY)
        .arg(opts.rows.to_string())
        .arg(opts.parts.to_string())
        .arg(opts.copy_bytes.to_string())
        .arg(opts.reps.max(1).to_string())
        .arg(opts.gemm.to_string())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect(),
        Ok(o) => vec![format!(
            "{{\"system\": \"cupy\", \"check\": \"error: {}\"}}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .replace(['"', '\\'], "'")
        )],
        Err(err) => vec![format!(
            "{{\"system\": \"cupy\", \"check\": \"not applicable: {err}\"}}"
        )],
    }
}
