//! For tests that need a CUDA GPU.

/// Called by a test that needs a CUDA GPU and found none: prints why it is
/// skipped, or fails it when `WEFT_REQUIRE_CUDA=1` says this machine must
/// run it (a GPU machine, where a skip would hide a broken driver set-up).
pub fn skip_without_cuda(test: &str, reason: &str) {
    if std::env::var("WEFT_REQUIRE_CUDA").is_ok_and(|v| crate::units::parse_bool(&v) == Ok(true)) {
        panic!("{test} needs a CUDA GPU (WEFT_REQUIRE_CUDA=1) but found none: {reason}");
    }
    println!("skipping {test}: {reason}");
}

/// The GPUs a test of device code runs on, by name: an emulated GPU with
/// 1 GiB, an asynchronous one (its streams run queued work only when
/// synchronised, as a real GPU runs it later), and last the first CUDA GPU
/// when this machine has one (otherwise [`skip_without_cuda`] says why
/// `test` skips it).
pub fn test_gpus(test: &str) -> Vec<(String, std::sync::Arc<crate::Gpu>)> {
    let mut gpus = vec![
        ("emulated GPU".to_string(), crate::Gpu::emulated(0, 1 << 30, true)),
        (
            "asynchronous emulated GPU".to_string(),
            crate::Gpu::emulated_asynchronous(1, 1 << 30),
        ),
    ];
    let probe = crate::probe_cuda();
    if probe.count > 0 {
        match crate::Devices::open(&crate::DeviceConfig::default()) {
            Ok(devices) => gpus.push(("CUDA GPU".to_string(), devices.gpus()[0].clone())),
            Err(e) => panic!("{test}: CUDA reports {} devices but they do not open: {e}", probe.count),
        }
    } else {
        let why = probe.reason.unwrap_or_else(|| "no CUDA device".into());
        skip_without_cuda(&format!("{test} on a CUDA GPU"), &why);
    }
    gpus
}
