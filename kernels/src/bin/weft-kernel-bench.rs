//! `weft-kernel-bench [--device cpu|emulated|cuda] [--rows N] [--parts P]
//! [--copy-mib M] [--gemm N] [--reps R] [--no-cupy]`: the kernel benchmarks of
//! `weft bench kernels`, without the rest of Weft (one JSON line each).

use weft_kernels::bench::{BenchOptions, run};

fn main() {
    let mut opts = BenchOptions::default();
    let mut gemm = None;
    let mut args = std::env::args().skip(1);
    let usage = "usage: weft-kernel-bench [--json] [--device cpu|emulated|cuda] [--rows N] [--parts P] [--copy-mib M] [--gemm N] [--reps R] [--no-cupy]";
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> String {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value\n{usage}");
                std::process::exit(2)
            })
        };
        let num = |v: String| -> usize {
            v.parse().unwrap_or_else(|_| {
                eprintln!("not a number: {v}\n{usage}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--json" => {}
            "--device" => opts.device = value("--device"),
            "--rows" => opts.rows = num(value("--rows")),
            "--parts" => opts.parts = num(value("--parts")) as u32,
            "--copy-mib" => opts.copy_bytes = num(value("--copy-mib")) << 20,
            "--gemm" => gemm = Some(num(value("--gemm"))),
            "--reps" => opts.reps = num(value("--reps")),
            "--no-cupy" => opts.cupy = false,
            _ => {
                eprintln!("{usage}");
                std::process::exit(2)
            }
        }
    }
    opts.gemm = gemm.unwrap_or(BenchOptions::for_device(&opts.device).gemm);
    match run(&opts) {
        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
        Err(e) => {
            eprintln!("weft-kernel-bench: {e}");
            std::process::exit(1)
        }
    }
}
