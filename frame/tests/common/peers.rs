//! The peers' Python venv (`../shared/peers/setup.sh` makes it), for the
//! tests that check answers or files against pyarrow, Polars and DuckDB.
//! Each test binary uses a part of this module.
#![allow(dead_code)]

use std::path::PathBuf;

/// The venv: `$WEFT_PEERS_VENV`, else `~/.cache/weft-peers/venv`; `None`
/// when it has no python.
pub fn venv() -> Option<PathBuf> {
    let venv = std::env::var("WEFT_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/weft-peers/venv"));
    venv.join("bin/python").exists().then_some(venv)
}

/// The peers' kit: `$WEFT_PEERS_DIR`, else `../shared/peers` beside the
/// workspace; `None` without its `tpch.py`.
pub fn kit() -> Option<PathBuf> {
    let peers = std::env::var("WEFT_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers"));
    peers.join("tpch.py").exists().then_some(peers)
}
