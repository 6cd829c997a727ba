#!/usr/bin/env python3
"""Peak memory of a command's whole process tree.

`peak_rss.py CMD [ARG ...]` runs CMD and samples, every 20 ms, the summed
proportional set size (PSS: shared pages split among the processes that map
them, so a cluster's shared memory counts once) of CMD and all its
descendants, from /proc/PID/smaps_rollup. CMD's stdout passes through; the
peak is printed last on stderr as `peak_pss_mib=N`, and the exit status is
CMD's. Used to compare a query's peak memory on a Weft cluster with DuckDB's
(issue 11): run both under this script, same data, same repetitions.
"""
import os
import subprocess
import sys
import time


def children(pid):
    """Children of every thread of `pid` (a child belongs to the thread that
    spawned it)."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_kib(root):
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += pss_kib(pid)
        todo.extend(children(pid))
    return total


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: peak_rss.py CMD [ARG ...]")
    proc = subprocess.Popen(sys.argv[1:])
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss_kib(proc.pid))
        time.sleep(0.02)
    print(f"peak_pss_mib={peak / 1024:.1f}", file=sys.stderr)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
