//! Transport benchmarks (placeholder until the transport issue lands them).
fn main() {}
