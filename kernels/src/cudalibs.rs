//! Finding NVRTC and cuBLAS where CUDA 12 and 13 install them.
//!
//! cudarc's loader tries `libnvrtc.so`, `.so.12` and older names on the
//! loader's path only, so a node whose CUDA 13 comes from the PyPI wheels
//! (`libnvrtc.so.13`, no unversioned link, in site-packages) has no NVRTC for
//! it, and likewise no cuBLAS. This module opens both libraries itself, each
//! from the first of: `$WEFT_CUDA_LIBS`, the loader's own path
//! (`LD_LIBRARY_PATH`, ld.so's cache), the toolkit (`$CUDA_HOME`,
//! `$CUDA_PATH`, `/usr/local/cuda*`), and the NVIDIA wheels of the Python
//! environments it can see; under the names `lib<name>.so`, `.so.13` and
//! `.so.12`. Which one was loaded is logged once and reported by
//! [`nvrtc_library`] and [`cublas_library`].

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::nvrtc::Output;

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
    cubin_size: SizeFn,
    cubin: TextFn,
    log_size: SizeFn,
    log: TextFn,
    destroy: DestroyFn,
}

// SAFETY: the library handle is never closed and NVRTC's entry points are
// thread-safe (each program is used by one thread).
unsafe impl Send for Nvrtc {}
// SAFETY: as above.
unsafe impl Sync for Nvrtc {}

/// A CUDA library: its file names, newest CUDA last but unversioned first,
/// and the folder of its CUDA 12 wheel (`nvidia/<wheel>/lib`; CUDA 13
/// wheels put every library in `nvidia/cu13/lib`).
struct Library {
    names: [&'static str; 3],
    wheel: &'static str,
}

const NVRTC: Library = Library {
    names: ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"],
    wheel: "cuda_nvrtc",
};

const CUBLAS: Library = Library {
    names: ["libcublas.so", "libcublas.so.13", "libcublas.so.12"],
    wheel: "cublas",
};

/// `lib`'s folders in one `site-packages`: `nvidia/cu13/lib` (CUDA 13
/// wheels) and `nvidia/<lib.wheel>/lib` (CUDA 12), those that exist.
fn nvidia_dirs(site: &Path, lib: &Library) -> Vec<PathBuf> {
    [
        site.join("nvidia/cu13/lib"),
        site.join("nvidia").join(lib.wheel).join("lib"),
    ]
    .into_iter()
    .filter(|d| d.is_dir())
    .collect()
}

/// `lib`'s wheel folders in the Python environment at `base`
/// (`<base>/lib/python3.X/{site,dist}-packages`).
fn wheel_dirs_under(base: &Path, lib: &Library) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base.join("lib")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .flat_map(|e| ["site-packages", "dist-packages"].map(|s| e.path().join(s)))
        .flat_map(|site| nvidia_dirs(&site, lib))
        .collect()
}

/// `lib`'s wheel folders in the Python environments this process can see.
fn wheel_dirs(lib: &Library) -> Vec<PathBuf> {
    let mut bases: Vec<PathBuf> = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .collect();
    if let Some(home) = std::env::var_os("HOME") {
        bases.push(PathBuf::from(&home).join(".local"));
        bases.push(PathBuf::from(home).join(".cache/weft/cuda-venv"));
    }
    bases.extend(["/usr/local", "/usr"].map(PathBuf::from));
    // Images that keep their Python in /opt/<name>/.venv.
    if let Ok(entries) = std::fs::read_dir("/opt") {
        bases.extend(entries.flatten().map(|e| e.path().join(".venv")));
    }
    let mut dirs: Vec<PathBuf> = bases.iter().flat_map(|b| wheel_dirs_under(b, lib)).collect();
    dirs.extend(nvidia_dirs(Path::new("/usr/lib/python3/dist-packages"), lib));
    dirs
}

/// The (major, minor) of a `cuda-X.Y` folder, (0, 0) when unreadable.
fn toolkit_version(dir: &Path) -> (u32, u32) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = name
        .trim_start_matches("cuda-")
        .split('.')
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
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
    // By version, not by text: cuda-12.10 is newer than cuda-12.9.
    versioned.sort_by_key(|p| toolkit_version(p));
    dirs.extend(versioned.into_iter().rev().map(|p| p.join("lib64")));
    dirs
}

/// Every place tried for `lib`, in order: a path, or a bare name for the
/// loader's search.
fn candidates(lib: &Library) -> Vec<String> {
    let mut out = Vec::new();
    let in_dir = |out: &mut Vec<String>, dir: &Path| {
        for n in lib.names {
            let p = dir.join(n);
            if p.exists() {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    };
    if let Some(d) = std::env::var_os("WEFT_CUDA_LIBS") {
        in_dir(&mut out, Path::new(&d));
    }
    out.extend(lib.names.iter().map(|n| n.to_string()));
    for d in toolkit_dirs().iter().chain(wheel_dirs(lib).iter()) {
        in_dir(&mut out, d);
    }
    out
}

/// The library at `name` (a path or a bare name), opened for good, and a
/// lookup of its symbols (null-free). None when it does not open.
fn dlopen(name: &str) -> Option<impl Fn(&CStr) -> Option<*mut c_void>> {
    let c = CString::new(name).ok()?;
    // SAFETY: dlopen of a library by name or path; NVRTC's and cuBLAS's
    // initialisers have no preconditions. The handle is kept for the
    // process's life.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    (!handle.is_null()).then_some(move |s: &CStr| {
        // SAFETY: `handle` is a live library handle; a missing symbol is null.
        let p = unsafe { libc::dlsym(handle, s.as_ptr()) };
        (!p.is_null()).then_some(p)
    })
}

/// The CUDA major version the installed driver supports (12 for a 12.x
/// driver); None without a driver.
fn driver_major() -> Option<i32> {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return None;
    }
    let mut version = 0;
    // SAFETY: a plain out-parameter; cuDriverGetVersion needs no cuInit.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS && version > 0).then_some(version / 1000)
}

/// Whether a library of CUDA `major` works with a driver of
/// `driver` (unknown: yes): a newer major version needs a newer driver
/// (cuBLAS 13 fails to create a handle on a 12.x driver, NVRTC 13's code
/// does not load there).
fn usable(major: Option<i32>, driver: Option<i32>) -> bool {
    match (major, driver) {
        (Some(lib), Some(driver)) => lib <= driver,
        _ => true,
    }
}

/// The first of `lib`'s candidates that `open` accepts and whose CUDA
/// major version (`major`) the driver supports, opened once and logged;
/// Err lists where it was looked for.
fn load<T>(
    lib: &Library,
    what: &str,
    open: impl Fn(&str) -> Option<T>,
    major: impl Fn(&T) -> Option<i32>,
) -> Result<T, String> {
    let tried = candidates(lib);
    let driver = driver_major();
    let mut too_new = Vec::new();
    for candidate in &tried {
        let Some(t) = open(candidate) else { continue };
        if !usable(major(&t), driver) {
            too_new.push(format!("{candidate} (CUDA {})", major(&t).unwrap_or(0)));
            continue;
        }
        tracing::info!(path = %candidate, "{what} loaded");
        return Ok(t);
    }
    let skipped = match (too_new.is_empty(), driver) {
        (false, Some(driver)) => format!("; skipped, newer than the CUDA {driver} driver: {}", too_new.join(", ")),
        _ => String::new(),
    };
    Err(format!("{what} not found (tried {}){skipped}", tried.join(", ")))
}

/// Loads `libnvrtc-builtins.so.<major>.<minor>` from NVRTC's own folder:
/// NVRTC opens it by name when it compiles, and a library opened by path
/// from a folder outside the loader's search (a CUDA 13 wheel, whose NVRTC
/// has no `$ORIGIN` search path) would not find it otherwise.
fn preload_builtins(nvrtc: &str, (major, minor): (i32, i32)) {
    let Some(dir) = Path::new(nvrtc).parent().filter(|d| !d.as_os_str().is_empty()) else {
        return;
    };
    let builtins = dir.join(format!("libnvrtc-builtins.so.{major}.{minor}"));
    if builtins.exists() && dlopen(&builtins.to_string_lossy()).is_none() {
        tracing::warn!(path = %builtins.display(), "cannot load NVRTC's builtins");
    }
}

/// NVRTC's entry points from the library at `name`; None when any is missing.
fn open_nvrtc(name: &str) -> Option<Nvrtc> {
    let sym = dlopen(name)?;
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
            cubin_size: std::mem::transmute::<*mut c_void, SizeFn>(sym(c"nvrtcGetCUBINSize")?),
            cubin: std::mem::transmute::<*mut c_void, TextFn>(sym(c"nvrtcGetCUBIN")?),
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
        load(&NVRTC, "NVRTC", open_nvrtc, |lib| lib.version().ok().map(|v| v.0)).inspect(|lib| {
            let version = lib.version().unwrap_or((0, 0));
            tracing::info!(major = version.0, minor = version.1, "NVRTC version");
            preload_builtins(&lib.path, version);
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// cuBLAS's C types, as `cublas_api.h` declares them: opaque handles and
/// streams, and enums (`int`-sized).
pub(crate) mod blas {
    /// `cublasHandle_t`.
    pub(crate) type Handle = *mut std::ffi::c_void;
    /// `cudaStream_t` (the driver's `CUstream`).
    pub(crate) type Stream = *mut std::ffi::c_void;
    /// `cublasStatus_t`: 0 is `CUBLAS_STATUS_SUCCESS`.
    pub(crate) type Status = std::ffi::c_int;
    /// `cublasOperation_t`.
    pub(crate) type Op = std::ffi::c_int;
    /// `CUBLAS_OP_N`: no transpose.
    pub(crate) const OP_N: Op = 0;
}

/// The cuBLAS entry points GEMM uses (the `_v2` API of `cublas_api.h`),
/// from one loaded library.
pub(crate) struct Cublas {
    path: String,
    /// The library's CUDA major version (`cublasGetProperty`), if it says.
    major: Option<i32>,
    pub(crate) create: CreateHandleFn,
    pub(crate) destroy: HandleFn,
    pub(crate) set_stream: SetStreamFn,
    pub(crate) dgemm: GemmFn<f64>,
    pub(crate) sgemm: GemmFn<f32>,
}

/// `cublasGetProperty(libraryPropertyType, int*)`.
type GetPropertyFn = unsafe extern "C" fn(c_int, *mut c_int) -> blas::Status;
/// `MAJOR_VERSION` of `libraryPropertyType`.
const MAJOR_VERSION: c_int = 0;

/// `cublasCreate_v2`.
pub(crate) type CreateHandleFn = unsafe extern "C" fn(*mut blas::Handle) -> blas::Status;
/// `cublasDestroy_v2`.
pub(crate) type HandleFn = unsafe extern "C" fn(blas::Handle) -> blas::Status;
/// `cublasSetStream_v2`.
pub(crate) type SetStreamFn = unsafe extern "C" fn(blas::Handle, blas::Stream) -> blas::Status;

/// `cublas{D,S}gemm_v2`: handle, transa, transb, m, n, k, alpha, A, lda, B,
/// ldb, beta, C, ldc.
pub(crate) type GemmFn<T> = unsafe extern "C" fn(
    blas::Handle,
    blas::Op,
    blas::Op,
    c_int,
    c_int,
    c_int,
    *const T,
    *const T,
    c_int,
    *const T,
    c_int,
    *const T,
    *mut T,
    c_int,
) -> blas::Status;

// SAFETY: the library handle is never closed; cuBLAS's entry points are
// thread-safe for distinct handles, and each thread uses its own.
unsafe impl Send for Cublas {}
// SAFETY: as above.
unsafe impl Sync for Cublas {}

/// cuBLAS's entry points from the library at `name`; None when any is missing.
fn open_cublas(name: &str) -> Option<Cublas> {
    let sym = dlopen(name)?;
    // SAFETY (each transmute): the symbols are cuBLAS's C functions with
    // the signatures of cublas_api.h, which these function pointer types
    // spell out.
    unsafe {
        let major = sym(c"cublasGetProperty").and_then(|f| {
            let get = std::mem::transmute::<*mut c_void, GetPropertyFn>(f);
            let mut value = 0;
            (get(MAJOR_VERSION, &mut value) == 0).then_some(value)
        });
        Some(Cublas {
            path: name.to_string(),
            major,
            create: std::mem::transmute::<*mut c_void, CreateHandleFn>(sym(c"cublasCreate_v2")?),
            destroy: std::mem::transmute::<*mut c_void, HandleFn>(sym(c"cublasDestroy_v2")?),
            set_stream: std::mem::transmute::<*mut c_void, SetStreamFn>(sym(c"cublasSetStream_v2")?),
            dgemm: std::mem::transmute::<*mut c_void, GemmFn<f64>>(sym(c"cublasDgemm_v2")?),
            sgemm: std::mem::transmute::<*mut c_void, GemmFn<f32>>(sym(c"cublasSgemm_v2")?),
        })
    }
}

/// cuBLAS, opened once; Err lists where it was looked for.
pub(crate) fn cublas() -> Result<&'static Cublas, String> {
    static LIB: OnceLock<Result<Cublas, String>> = OnceLock::new();
    LIB.get_or_init(|| load(&CUBLAS, "cuBLAS", open_cublas, |lib| lib.major))
        .as_ref()
        .map_err(Clone::clone)
}

/// Which cuBLAS library GEMM uses (a path, or the name the loader found),
/// or why there is none.
pub fn cublas_library() -> Result<String, String> {
    cublas().map(|l| l.path.clone())
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

    /// Compiles `src` (named `name` in messages) with `options` to
    /// `output`; Err carries NVRTC's log.
    pub(crate) fn compile(&self, src: &str, name: &str, options: &[String], output: Output) -> Result<Vec<u8>, String> {
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
        let result = self.compile_program(prog, &opt_ptrs, output);
        // SAFETY: `prog` came from nvrtcCreateProgram and is destroyed once.
        unsafe { (self.destroy)(&mut prog) };
        result
    }

    fn compile_program(&self, prog: Prog, opts: &[*const c_char], output: Output) -> Result<Vec<u8>, String> {
        let bytes = |size: SizeFn, get: TextFn| -> Vec<u8> {
            let mut len = 0usize;
            // SAFETY: `prog` is live; the buffer holds the `len` bytes NVRTC reports.
            unsafe {
                if size(prog, &mut len) != 0 || len == 0 {
                    return Vec::new();
                }
                let mut buf = vec![0u8; len];
                if get(prog, buf.as_mut_ptr().cast()) != 0 {
                    return Vec::new();
                }
                buf
            }
        };
        // NVRTC's text (the log, PTX) ends with a NUL.
        let text = |mut t: Vec<u8>| {
            t.pop_if(|b| *b == 0);
            t
        };
        // SAFETY: `prog` is live and `opts` points at NUL-terminated strings
        // that outlive the call.
        let r = unsafe { (self.compile)(prog, opts.len() as c_int, opts.as_ptr()) };
        if r != 0 {
            return Err(String::from_utf8_lossy(&text(bytes(self.log_size, self.log))).into_owned());
        }
        let built = match output {
            Output::Ptx => text(bytes(self.ptx_size, self.ptx)),
            Output::Cubin => bytes(self.cubin_size, self.cubin),
        };
        if built.is_empty() {
            return Err(format!("NVRTC compiled but returned no {output:?}"));
        }
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_names_every_place_once_asked() {
        for lib in [&NVRTC, &CUBLAS] {
            let c = candidates(lib);
            for n in lib.names {
                assert!(c.iter().any(|x| x == n), "bare name {n} is tried");
            }
        }
        // A missing library is an error naming the places tried, not a panic.
        assert!(open_nvrtc("/nonexistent/libnvrtc.so.13").is_none());
        assert!(open_cublas("/nonexistent/libcublas.so.13").is_none());
    }

    #[test]
    fn libraries_newer_than_the_driver_are_skipped() {
        assert!(usable(Some(12), Some(12)));
        assert!(usable(Some(12), Some(13)));
        assert!(!usable(Some(13), Some(12)));
        // Unknown either way: try it.
        assert!(usable(None, Some(12)));
        assert!(usable(Some(13), None));
    }

    #[test]
    fn toolkits_sort_by_version() {
        let mut dirs: Vec<PathBuf> = ["cuda-12.9", "cuda-12.10", "cuda-13.0", "cuda-x"]
            .iter()
            .map(|n| Path::new("/usr/local").join(n))
            .collect();
        dirs.sort_by_key(|p| toolkit_version(p));
        let names: Vec<_> = dirs
            .iter()
            .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["cuda-x", "cuda-12.9", "cuda-12.10", "cuda-13.0"]);
    }

    #[test]
    fn wheels_are_searched_in_each_librarys_own_folder() {
        let venv = std::env::temp_dir().join(format!("weft-cudalibs-{}", std::process::id()));
        let site = venv.join("lib/python3.12/site-packages/nvidia");
        for dir in ["cu13/lib", "cublas/lib", "cuda_nvrtc/lib"] {
            std::fs::create_dir_all(site.join(dir)).unwrap();
        }
        std::fs::write(site.join("cu13/lib/libcublas.so.13"), b"").unwrap();
        std::fs::write(site.join("cublas/lib/libcublas.so.12"), b"").unwrap();
        std::fs::write(site.join("cuda_nvrtc/lib/libnvrtc.so.12"), b"").unwrap();
        let found = |lib: &Library| {
            let dirs = wheel_dirs_under(&venv, lib);
            let mut names: Vec<String> = dirs
                .iter()
                .flat_map(|d| lib.names.iter().map(move |n| d.join(n)))
                .filter(|p| p.exists())
                .map(|p| p.strip_prefix(&site).unwrap().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            found(&CUBLAS),
            ["cu13/lib/libcublas.so.13", "cublas/lib/libcublas.so.12"]
        );
        assert_eq!(found(&NVRTC), ["cuda_nvrtc/lib/libnvrtc.so.12"]);
        std::fs::remove_dir_all(&venv).unwrap();
    }
}
