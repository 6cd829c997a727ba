//! Compiling the CUDA sources with NVRTC, cached on disk.
//!
//! The cache key is a hash of the source text (with the shared header), the
//! compile options and the NVRTC version, so an edited kernel or a different
//! compiler never reuses stale PTX. The cache lives in `WEFT_KERNEL_CACHE`,
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

/// Compiles `stem.cu` to PTX for `compute_<arch>`, using the disk cache.
pub fn compile_ptx(stem: &str, arch: u32) -> Result<String, KernelError> {
    let src = full_source(stem).ok_or_else(|| KernelError::Nvrtc {
        file: stem.to_string(),
        arch,
        log: "no such kernel source".into(),
    })?;
    compile_text(stem, &src, arch)
}

/// Compiles the CUDA C text `src` (called `name` in messages and cache
/// file names) to PTX for `compute_<arch>`, using the disk cache: the
/// entry point for sources generated at run time (see [`crate::generated`]).
pub fn compile_text(name: &str, src: &str, arch: u32) -> Result<String, KernelError> {
    let err = |log: String| KernelError::Nvrtc {
        file: name.to_string(),
        arch,
        log,
    };
    let lib = crate::cudalibs::nvrtc().map_err(err)?;
    let (major, minor) = lib.version().map_err(err)?;
    let arch_opt = format!("--gpu-architecture=compute_{arch}");
    let version = format!("{major}.{minor}");
    let mut key_parts: Vec<&[u8]> = vec![src.as_bytes(), arch_opt.as_bytes(), version.as_bytes()];
    key_parts.extend(OPTIONS.iter().map(|o| o.as_bytes()));
    let key = fnv1a(&key_parts);
    let path = cache_dir().map(|d| d.join(format!("{name}-{key:016x}-compute_{arch}.ptx")));
    if let Some(ptx) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        return Ok(ptx);
    }
    let mut options: Vec<String> = OPTIONS.iter().map(|o| o.to_string()).collect();
    options.push(arch_opt);
    let text = lib.compile(src, &format!("{name}.cu"), &options).map_err(err)?;
    if let Some(path) = path {
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = path
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .and_then(|_| std::fs::write(&tmp, &text))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(text)
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
}
