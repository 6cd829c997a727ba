//! Builds the CPU emulation of the CUDA kernels: every `cuda/*.cu` file is
//! compiled as C++ after `emu.h`, all in one translation unit with the
//! launcher (so the kernels' registrations are linked whenever the launcher
//! is), and lists the sources for NVRTC.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cuda = manifest.join("cuda");
    println!("cargo:rerun-if-changed={}", cuda.display());

    let mut stems: Vec<String> = std::fs::read_dir(&cuda)
        .expect("kernels/cuda exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .map(|p| p.file_stem().expect("file name").to_string_lossy().into_owned())
        .collect();
    stems.sort();
    for stem in &stems {
        println!("cargo:rerun-if-changed={}", cuda.join(format!("{stem}.cu")).display());
    }

    // One translation unit: launcher, shared header, then each source in a
    // namespace of its own so file-local helpers cannot collide.
    let mut unit = String::new();
    writeln!(unit, "#include \"emu_runtime.cpp\"\n#include \"common.cuh\"").expect("write to String");
    for stem in &stems {
        writeln!(unit, "namespace weft_cu_{stem} {{\n#include \"{stem}.cu\"\n}}").expect("write to String");
    }
    let unit_path = out.join("weft_emu_all.cpp");
    std::fs::write(&unit_path, unit).expect("write emulation unit");
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .opt_level(2)
        .flag_if_supported("-pthread")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-unused-variable")
        .flag_if_supported("-Wno-unused-but-set-variable")
        .flag_if_supported("-Wno-unknown-pragmas")
        .include(&cuda)
        .file(&unit_path)
        .compile("weft_cuda_emu");

    // The sources, embedded for NVRTC.
    let mut list =
        String::from("/// Every kernel source: (file stem, CUDA C text).\npub const SOURCES: &[(&str, &str)] = &[\n");
    for stem in &stems {
        writeln!(
            list,
            "    ({stem:?}, include_str!({:?})),",
            path_str(&cuda.join(format!("{stem}.cu")))
        )
        .expect("write to String");
    }
    writeln!(
        list,
        "];\n/// The header prepended to every source.\npub const COMMON: &str = include_str!({:?});",
        path_str(&cuda.join("common.cuh"))
    )
    .expect("write to String");
    std::fs::write(out.join("sources.rs"), list).expect("write sources.rs");
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
