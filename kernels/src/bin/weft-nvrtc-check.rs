//! Compiles every kernel source with NVRTC for the given architectures:
//! writes `<stem>-<source hash>.compute_<arch>.ptx` files (for ptxas in
//! ci/cuda-check.sh) and checks that each also compiles to a cubin.
//! Exits non-zero if any source fails to compile.

use std::path::PathBuf;
use std::process::ExitCode;

use weft_kernels::nvrtc::{Output, compile_source};

fn main() -> ExitCode {
    let mut out = PathBuf::from("target/cuda-check");
    let mut archs: Vec<u32> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--out", Some(v)) => out = PathBuf::from(v),
            ("--arch", Some(v)) => match v.parse() {
                Ok(n) => archs.push(n),
                Err(_) => {
                    eprintln!("bad --arch {v}");
                    return ExitCode::FAILURE;
                }
            },
            _ => {
                eprintln!("usage: weft-nvrtc-check [--out DIR] --arch 80 [--arch 90 ...]");
                return ExitCode::FAILURE;
            }
        }
    }
    if archs.is_empty() {
        archs = vec![80, 90];
    }
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    // Compile afresh, not from the run-time cache: this is the check.
    let cache = tempdir_for_cache();
    // SAFETY: single-threaded at this point; nothing else reads the environment.
    unsafe { std::env::set_var("WEFT_KERNEL_CACHE", &cache) };
    let mut failed = 0;
    for (stem, _) in weft_kernels::sources::SOURCES {
        let key = weft_kernels::nvrtc::source_key(stem).expect("a listed source");
        for &arch in &archs {
            // PTX for ptxas, named as the cubins it becomes are looked up.
            match compile_source(stem, arch, Output::Ptx) {
                Ok(ptx) => {
                    let path = out.join(format!("{key}.compute_{arch}.ptx"));
                    if let Err(e) = std::fs::write(&path, ptx) {
                        eprintln!("cannot write {}: {e}", path.display());
                        failed += 1;
                    } else {
                        println!("nvrtc ok    compute_{arch} {stem}.cu");
                    }
                }
                Err(e) => {
                    eprintln!("nvrtc FAIL  compute_{arch} {stem}.cu\n{e}");
                    failed += 1;
                }
            }
            // Machine code, as a GPU node without prebuilt cubins compiles it.
            match compile_source(stem, arch, Output::Cubin) {
                Ok(cubin) if cubin.starts_with(b"\x7fELF") => println!("nvrtc ok    sm_{arch} {stem}.cu (cubin)"),
                Ok(_) => {
                    eprintln!("nvrtc FAIL  sm_{arch} {stem}.cu: the cubin is not an ELF image");
                    failed += 1;
                }
                Err(e) => {
                    eprintln!("nvrtc FAIL  sm_{arch} {stem}.cu\n{e}");
                    failed += 1;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&cache);
    if failed > 0 {
        eprintln!("{failed} compile(s) failed");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn tempdir_for_cache() -> PathBuf {
    std::env::temp_dir().join(format!("weft-nvrtc-check-{}", std::process::id()))
}
