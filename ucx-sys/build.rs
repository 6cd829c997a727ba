//! Links UCX (libucp, libuct, libucs) as pkg-config's `ucx` module finds
//! it. The bindings themselves are pre-generated (`regenerate.sh`), so the
//! build needs neither bindgen nor libclang.

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    match pkg_config::Config::new().atleast_version("1.12").probe("ucx") {
        Ok(library) => {
            for path in &library.include_paths {
                println!("cargo:include={}", path.display());
            }
        }
        Err(error) => {
            eprintln!(
                "\nucx-sys: pkg-config cannot find UCX (module `ucx`, 1.12 or newer): {error}\n\
                 Run `bash ci/setup.sh` (installs Debian's libucx-dev), or `apt-get install libucx-dev`,\n\
                 or point PKG_CONFIG_PATH at another UCX's lib/pkgconfig — on a GPU node, the\n\
                 CUDA-enabled UCX of the libucx-cu12 wheel: `pip install libucx-cu12` and\n\
                 PKG_CONFIG_PATH=$(python -c 'import libucx, os; print(os.path.dirname(libucx.__file__))')/lib/pkgconfig\n"
            );
            std::process::exit(1);
        }
    }
}
