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
