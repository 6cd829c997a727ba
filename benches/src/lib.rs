//! Shared helpers for Weft benchmarks.
