//! The README's main command, `weft demo`, run as a user runs it: it
//! exits 0 with every workload's answer checked. (A check that fails
//! makes it exit 1 naming the workload.)
#![allow(clippy::unwrap_used)]

mod common;

/// The workloads the demo checks, one "(correct)" line each.
const CHECKS: [&str; 6] = [
    "map: sum of results",
    "tree: root",
    "scatter: sum",
    "dataframe: 1000 groups",
    "dataframe: filter then group by",
    "array: (x + x.T).sum()",
];

#[test]
fn weft_demo_runs_every_workload_and_checks_its_answer() {
    let out = common::weft(&["demo", "--workers", "2", "--no-dashboard"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "weft demo failed:\n{stdout}\n{stderr}");
    for check in CHECKS {
        assert!(
            stdout.lines().any(|l| l.starts_with(check) && l.contains("(correct)")),
            "no correct `{check}` line:\n{stdout}"
        );
    }
}
