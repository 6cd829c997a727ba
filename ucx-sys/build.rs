//! Links UCX (libucp, libuct, libucs) as pkg-config's `ucx` module finds
//! it. The bindings themselves are pre-generated (`regenerate.sh`), so the
//! build needs neither bindgen nor libclang.

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=UCX_SYS_DEFINE_PREFIX");
    let mut config = pkg_config::Config::new();
    config.atleast_version("1.12");
    // A relocated UCX, such as the libucx-cu12 wheel's, keeps the prefix it
    // was built under in its .pc files; `--define-prefix` takes the prefix
    // from where the .pc file lies instead.
    if std::env::var_os("UCX_SYS_DEFINE_PREFIX").is_some() {
        config.arg("--define-prefix");
    }
    match config.probe("ucx") {
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
                 CUDA-enabled UCX of the libucx-cu12 wheel: `pip install libucx-cu12`, then\n\
                 PKG_CONFIG_PATH=$(python3 -c 'import libucx, os; print(os.path.dirname(libucx.__file__))')/lib/pkgconfig\n\
                 and UCX_SYS_DEFINE_PREFIX=1 (see the README's UCX section)\n"
            );
            std::process::exit(1);
        }
    }
}
