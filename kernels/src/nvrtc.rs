//! Compiling the CUDA sources with NVRTC, cached on disk.
//!
//! At run time kernels are compiled straight to machine code (a cubin for
//! the device's `sm_XY`), which any driver of NVRTC's major version loads;
//! PTX would need the driver to JIT it, which fails when NVRTC is newer
//! than the driver (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`). PTX is still
//! made for `ci/cuda-check.sh`, whose `ptxas` builds the shipped cubins.
//!
//! The cache key is a hash of the source text (with the shared header), the
//! compile options and the NVRTC version, so an edited kernel or a different
//! compiler never reuses a stale build. The cache lives in `WEFT_KERNEL_CACHE`,
//! else `$XDG_CACHE_HOME/weft/kernels`, else `~/.cache/weft/kernels`; a cache
//! that cannot be written is skipped, not an error.

use std::path::PathBuf;

use crate::KernelError;
use crate::sources::{COMMON, SOURCES};

/// Options every kernel is compiled with, besides the architecture.
const OPTIONS: &[&str] = &["--std=c++17", "--fmad=false"];

/// The full text NVRTC compiles for `stem`: the shared header, then the file.
pub fn full_source(stem: &str) -> Option<String> {
    SOURCES
        .iter()
        .find(|(s, _)| *s == stem)
        .map(|(_, src)| format!("{COMMON}\n#line 1 \"{stem}.cu\"\n{src}"))
}

/// FNV-1a, 64-bit: stable across runs and platforms, enough to key a cache.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The directory of the on-disk PTX cache.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WEFT_KERNEL_CACHE") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("weft").join("kernels"))
}

/// What NVRTC is asked to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// PTX for `compute_<arch>` (for `ptxas`, or a driver's JIT).
    Ptx,
    /// Machine code for `sm_<arch>`: loads without JIT.
    Cubin,
}

impl Output {
    fn arch_option(self, arch: u32) -> String {
        match self {
            Output::Ptx => format!("--gpu-architecture=compute_{arch}"),
            Output::Cubin => format!("--gpu-architecture=sm_{arch}"),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Output::Ptx => "ptx",
            Output::Cubin => "cubin",
        }
    }
}

/// `<stem>-<hash of its full source>`: the name of `stem`'s prebuilt
/// cubins (`<key>.sm_<arch>.cubin`), so a cubin built from an older
/// source, whose parameters may differ, is never loaded.
pub fn source_key(stem: &str) -> Option<String> {
    full_source(stem).map(|src| format!("{stem}-{:016x}", fnv1a(&[src.as_bytes()])))
}

/// Compiles `stem.cu` for `arch` (e.g. 90), using the disk cache.
pub fn compile_source(stem: &str, arch: u32, output: Output) -> Result<Vec<u8>, KernelError> {
    let src = full_source(stem).ok_or_else(|| KernelError::Nvrtc {
        file: stem.to_string(),
        arch,
        log: "no such kernel source".into(),
    })?;
    compile(stem, &src, arch, output)
}

/// Compiles the CUDA C text `src` (called `name` in messages and cache
/// file names) for `arch`, using the disk cache: also the entry point for
/// sources generated at run time (see [`crate::generated`]).
pub fn compile(name: &str, src: &str, arch: u32, output: Output) -> Result<Vec<u8>, KernelError> {
    let err = |log: String| KernelError::Nvrtc {
        file: name.to_string(),
        arch,
        log,
    };
    let lib = crate::cudalibs::nvrtc().map_err(err)?;
    let (major, minor) = lib.version().map_err(err)?;
    let arch_opt = output.arch_option(arch);
    let version = format!("{major}.{minor}");
    let mut key_parts: Vec<&[u8]> = vec![src.as_bytes(), arch_opt.as_bytes(), version.as_bytes()];
    key_parts.extend(OPTIONS.iter().map(|o| o.as_bytes()));
    let key = fnv1a(&key_parts);
    let path = cache_dir().map(|d| d.join(format!("{name}-{key:016x}-{arch}.{}", output.extension())));
    if let Some(built) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        return Ok(built);
    }
    let mut options: Vec<String> = OPTIONS.iter().map(|o| o.to_string()).collect();
    options.push(arch_opt);
    let built = lib.compile(src, &format!("{name}.cu"), &options, output).map_err(err)?;
    if let Some(path) = path {
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = path
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .and_then(|_| std::fs::write(&tmp, &built))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_is_listed_with_the_header() {
        assert!(SOURCES.len() >= 8);
        for (stem, _) in SOURCES {
            let full = full_source(stem).unwrap();
            assert!(full.starts_with(COMMON));
            assert!(full.contains("WEFT_KERNEL("));
        }
        assert!(full_source("nope").is_none());
    }

    #[test]
    fn cache_key_changes_with_any_part() {
        let a = fnv1a(&[b"src", b"compute_80"]);
        assert_ne!(a, fnv1a(&[b"src", b"compute_90"]));
        assert_ne!(a, fnv1a(&[b"src ", b"compute_80"]));
        assert_ne!(a, fnv1a(&[b"srccompute_80"]));
    }

    #[test]
    fn prebuilt_cubins_are_named_by_their_source() {
        let key = source_key("sort").unwrap();
        assert!(key.starts_with("sort-") && key.len() == "sort-".len() + 16, "{key}");
        assert_eq!(source_key("sort"), Some(key));
        assert_ne!(source_key("sort"), source_key("scan"));
        assert!(source_key("nope").is_none());
    }
}
