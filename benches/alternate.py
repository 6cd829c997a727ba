#!/usr/bin/env python3
"""Weft against one peer, in alternating rounds.

`alternate.py WEFT PEER WORKLOAD [--rounds R] [--PARAM VALUE ...]` runs
`WEFT bench WORKLOAD --json` and the peer kit's `peers.py PEER WORKLOAD`
(../shared/peers, with its venv) one after the other, R times (5), swapping
which goes first each round, with the same parameters (`--sf 1 --reps 10`,
say). It prints each round's two medians and their ratio, then the ratio of
the medians over all rounds and the range of the per-round ratios (ratio =
peer / weft: above 1, Weft is faster).

This is for gaps smaller than the machine's drift: one `compare.sh` run
times each system once, minutes apart, and on this 2-core machine a
system's median moves 10-25% within an hour (TPC-H q5 at SF1: 0.077 to
0.10 s for one binary), so a 5% difference can come out either way. Taken
in alternating rounds, both systems see the same drift. The peers' venv is
`$WEFT_PEERS_VENV` or ~/.cache/weft-peers/venv (made by the kit's setup.sh).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PEERS = Path(__file__).resolve().parent.parent.parent / "shared" / "peers"


def median_of(cmd, cwd):
    """The `median_s` of the last JSON line `cmd` prints."""
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    result = json.loads(lines[-1])
    if "median_s" not in result:
        sys.exit(f"{' '.join(cmd)} printed no median: {lines[-1]}")
    return result["median_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weft", help="the weft binary")
    parser.add_argument("peer", help="a system of the peer kit (polars, duckdb, ...)")
    parser.add_argument("workload", help="tpch_q3, groupby, ...")
    parser.add_argument("--rounds", type=int, default=5)
    args, params = parser.parse_known_args()
    venv = Path(os.environ.get("WEFT_PEERS_VENV", Path.home() / ".cache/weft-peers/venv"))
    commands = {
        "weft": [str(Path(args.weft).resolve()), "bench", args.workload, "--json", *params],
        args.peer: [str(venv / "bin/python"), "peers.py", args.peer, args.workload, *params],
    }
    times = {name: [] for name in commands}
    ratios = []
    for r in range(args.rounds):
        order = list(commands) if r % 2 == 0 else list(reversed(commands))
        for name in order:
            times[name].append(median_of(commands[name], PEERS))
        weft, peer = times["weft"][-1], times[args.peer][-1]
        ratios.append(peer / weft)
        print(f"round {r + 1}: weft {weft:.4f} s, {args.peer} {peer:.4f} s, ratio {ratios[-1]:.3f}", flush=True)
    weft, peer = statistics.median(times["weft"]), statistics.median(times[args.peer])
    print(
        f"{args.workload} {' '.join(params)}: weft {weft:.4f} s, {args.peer} {peer:.4f} s (medians of "
        f"{args.rounds} rounds), ratio {peer / weft:.3f}, per round {min(ratios):.3f}-{max(ratios):.3f}"
    )


if __name__ == "__main__":
    main()
