//! Finding NVRTC where CUDA 12 and 13 install it.
//!
//! cudarc's loader tries `libnvrtc.so`, `.so.12` and older names on the
//! loader's path only, so a node whose CUDA 13 comes from the PyPI wheels
//! (`libnvrtc.so.13`, no unversioned link, in site-packages) has no NVRTC for
//! it. This module opens the library itself, from the first of:
//! `$WEFT_CUDA_LIBS`, the loader's own path (`LD_LIBRARY_PATH`, ld.so's
//! cache), the toolkit (`$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda*`), and
//! the NVIDIA wheels of the Python environments it can see; each under the
//! names `libnvrtc.so`, `libnvrtc.so.13` and `libnvrtc.so.12`. Which one
//! was loaded is logged once and reported by [`nvrtc_library`].
//! (cuBLAS is still loaded by cudarc.)

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

type Prog = *mut c_void;

type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;
type CreateFn = unsafe extern "C" fn(
    *mut Prog,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileFn = unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(Prog, *mut usize) -> c_int;
type TextFn = unsafe extern "C" fn(Prog, *mut c_char) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut Prog) -> c_int;

/// The NVRTC entry points Weft uses, from one loaded library.
pub(crate) struct Nvrtc {
    path: String,
    version: VersionFn,
    create: CreateFn,
    compile: CompileFn,
    ptx_size: SizeFn,
    ptx: TextFn,
    log_size: SizeFn,
    log: TextFn,
    destroy: DestroyFn,
}

// SAFETY: the library handle is never closed and NVRTC's entry points are
// thread-safe (each program is used by one thread).
unsafe impl Send for Nvrtc {}
// SAFETY: as above.
unsafe impl Sync for Nvrtc {}

const NAMES: [&str; 3] = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"];

/// Directories of the Python environments' NVIDIA wheels: `nvidia/cu13/lib`
/// (CUDA 13 wheels) and `nvidia/cuda_nvrtc/lib` (CUDA 12 wheels).
fn wheel_dirs() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut lib_dirs = |base: PathBuf| {
        // <base>/lib/python3.X/{site,dist}-packages
        if let Ok(entries) = std::fs::read_dir(base.join("lib")) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("python3") {
                    roots.push(e.path().join("site-packages"));
                    roots.push(e.path().join("dist-packages"));
                }
            }
        }
    };
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(v) = std::env::var_os(var) {
            lib_dirs(PathBuf::from(v));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        lib_dirs(PathBuf::from(&home).join(".local"));
        lib_dirs(PathBuf::from(home).join(".cache/weft/cuda-venv"));
    }
    lib_dirs(PathBuf::from("/usr/local"));
    lib_dirs(PathBuf::from("/usr"));
    // Images that keep their Python in /opt/<name>/.venv.
    if let Ok(entries) = std::fs::read_dir("/opt") {
        for e in entries.flatten() {
            lib_dirs(e.path().join(".venv"));
        }
    }
    roots.push(PathBuf::from("/usr/lib/python3/dist-packages"));
    roots
        .into_iter()
        .flat_map(|r| [r.join("nvidia/cu13/lib"), r.join("nvidia/cuda_nvrtc/lib")])
        .filter(|d| d.is_dir())
        .collect()
}

/// Toolkit library directories, newest first among `/usr/local/cuda-*`.
fn toolkit_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(v) = std::env::var_os(var) {
            dirs.push(PathBuf::from(&v).join("lib64"));
            dirs.push(PathBuf::from(v).join("lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/local")
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("cuda-")))
                .collect()
        })
        .unwrap_or_default();
    versioned.sort();
    dirs.extend(versioned.into_iter().rev().map(|p| p.join("lib64")));
    dirs
}

/// Every place tried, in order: (a path, or a bare name for the loader's search).
fn candidates() -> Vec<String> {
    let mut out = Vec::new();
    let in_dir = |out: &mut Vec<String>, dir: &Path| {
        for n in NAMES {
            let p = dir.join(n);
            if p.exists() {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    };
    if let Some(d) = std::env::var_os("WEFT_CUDA_LIBS") {
        in_dir(&mut out, Path::new(&d));
    }
    out.extend(NAMES.iter().map(|n| n.to_string()));
    for d in toolkit_dirs().iter().chain(wheel_dirs().iter()) {
        in_dir(&mut out, d);
    }
    out
}

/// dlopen + dlsym of every entry point; None when any is missing.
fn open(name: &str) -> Option<Nvrtc> {
    let c = CString::new(name).ok()?;
    // SAFETY: dlopen of a library by name or path; NVRTC's initialisers
    // have no preconditions. The handle is kept for the process's life.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return None;
    }
    let sym = |s: &CStr| {
        // SAFETY: `handle` is a live library handle; a missing symbol is null.
        let p = unsafe { libc::dlsym(handle, s.as_ptr()) };
        (!p.is_null()).then_some(p)
    };
    // SAFETY (each transmute): the symbols are NVRTC's C functions with the
    // signatures of nvrtc.h, which these function pointer types spell out.
    unsafe {
        Some(Nvrtc {
            path: name.to_string(),
            version: std::mem::transmute::<*mut c_void, VersionFn>(sym(c"nvrtcVersion")?),
            create: std::mem::transmute::<*mut c_void, CreateFn>(sym(c"nvrtcCreateProgram")?),
            compile: std::mem::transmute::<*mut c_void, CompileFn>(sym(c"nvrtcCompileProgram")?),
            ptx_size: std::mem::transmute::<*mut c_void, SizeFn>(sym(c"nvrtcGetPTXSize")?),
            ptx: std::mem::transmute::<*mut c_void, TextFn>(sym(c"nvrtcGetPTX")?),
            log_size: std::mem::transmute::<*mut c_void, SizeFn>(sym(c"nvrtcGetProgramLogSize")?),
            log: std::mem::transmute::<*mut c_void, TextFn>(sym(c"nvrtcGetProgramLog")?),
            destroy: std::mem::transmute::<*mut c_void, DestroyFn>(sym(c"nvrtcDestroyProgram")?),
        })
    }
}

/// NVRTC, opened once; Err lists where it was looked for.
pub(crate) fn nvrtc() -> Result<&'static Nvrtc, String> {
    static LIB: OnceLock<Result<Nvrtc, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        let tried = candidates();
        match tried.iter().find_map(|c| open(c)) {
            Some(lib) => {
                let (major, minor) = lib.version().unwrap_or((0, 0));
                tracing::info!(path = %lib.path, major, minor, "NVRTC loaded");
                Ok(lib)
            }
            None => Err(format!("NVRTC not found (tried {})", tried.join(", "))),
        }
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Which NVRTC library kernels are compiled with (a path, or the name the
/// loader found), or why there is none.
pub fn nvrtc_library() -> Result<String, String> {
    nvrtc().map(|l| l.path.clone())
}

impl Nvrtc {
    /// NVRTC's (major, minor) version.
    pub(crate) fn version(&self) -> Result<(i32, i32), String> {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: plain out-parameters.
        let r = unsafe { (self.version)(&mut major, &mut minor) };
        if r == 0 {
            Ok((major, minor))
        } else {
            Err(format!("nvrtcVersion failed ({r})"))
        }
    }

    /// Compiles `src` (named `name` in messages) with `options` to PTX; Err
    /// carries NVRTC's log.
    pub(crate) fn compile(&self, src: &str, name: &str, options: &[String]) -> Result<String, String> {
        let src = CString::new(src).map_err(|e| e.to_string())?;
        let name = CString::new(name).map_err(|e| e.to_string())?;
        let opts: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        let mut prog: Prog = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated strings that outlive the call; no headers.
        let r = unsafe {
            (self.create)(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(format!("nvrtcCreateProgram failed ({r})"));
        }
        let result = self.compile_program(prog, &opt_ptrs);
        // SAFETY: `prog` came from nvrtcCreateProgram and is destroyed once.
        unsafe { (self.destroy)(&mut prog) };
        result
    }

    fn compile_program(&self, prog: Prog, opts: &[*const c_char]) -> Result<String, String> {
        let text = |size: SizeFn, get: TextFn| -> String {
            let mut len = 0usize;
            // SAFETY: `prog` is live; the buffer holds the `len` bytes NVRTC
            // reports (NUL included).
            unsafe {
                if size(prog, &mut len) != 0 || len == 0 {
                    return String::new();
                }
                let mut buf = vec![0u8; len];
                if get(prog, buf.as_mut_ptr().cast()) != 0 {
                    return String::new();
                }
                buf.truncate(len - 1);
                String::from_utf8_lossy(&buf).into_owned()
            }
        };
        // SAFETY: `prog` is live and `opts` points at NUL-terminated strings
        // that outlive the call.
        let r = unsafe { (self.compile)(prog, opts.len() as c_int, opts.as_ptr()) };
        if r != 0 {
            return Err(text(self.log_size, self.log));
        }
        Ok(text(self.ptx_size, self.ptx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_names_every_place_once_asked() {
        let c = candidates();
        for n in NAMES {
            assert!(c.iter().any(|x| x == n), "bare name {n} is tried");
        }
        // A missing library is an error naming the places tried, not a panic.
        assert!(open("/nonexistent/libnvrtc.so.13").is_none());
    }
}
