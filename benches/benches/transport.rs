//! Transport benchmarks (filled in by the transport work).
fn main() {}
