//! Shared pieces of Weft's benchmarks: each workload is written once here
//! and driven both by the criterion benches and by the report binaries
//! that print Weft next to a peer measured in the same run.

pub mod baseline;
pub mod transport;

/// The median of some measurements (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
