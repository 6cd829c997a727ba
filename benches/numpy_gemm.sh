#!/usr/bin/env bash
# numpy's BLAS on a 2048 x 2048 f64 GEMM, for comparison with the
# gemm_f64_2048 criterion bench. numpy goes into a venv under the user's
# cache dir (created once). OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset
# for this command only: the machine sets them for old OpenBLAS builds and
# they slow a current one; threadpoolctl prints which kernel then runs.
set -euo pipefail
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/weft/numpy-venv"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import numpy, threadpoolctl' 2>/dev/null \
    || "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check numpy threadpoolctl
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$VENV/bin/python" - <<'PY'
import json, time
import numpy as np
from threadpoolctl import threadpool_info

n = 2048
rng = np.random.default_rng(3)
a = rng.random((n, n))
b = rng.random((n, n))
a @ b  # warm up
times = []
for _ in range(10):
    t = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - t)
best = min(times)
median = sorted(times)[len(times) // 2]
blas = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for i in threadpool_info()]
print(json.dumps({"bench": "gemm_f64_2048", "impl": "numpy", "best_s": best, "median_s": median,
                  "gflops_best": 2 * n**3 / best / 1e9, "blas": blas}))
PY
