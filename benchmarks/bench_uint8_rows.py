"""Device rows kept uint8 (converted a chunk at a time in the kernel) against a float32 [N, D] copy: memory and speed.

For the empirical and nearest full scans over an image index, each mode runs in its own process (so peak resident
memory is its own): open the index, build the denoiser from the stored rows (uint8) or from `train_data()` (float32,
what every full scan held before), call it on 16 queries. Reported: the rows' device bytes, the process's peak RSS
after the build and after the calls, and seconds per call (median of REPEATS, after a compile call), side by side.
Run: python -m benchmarks.bench_uint8_rows [--dataset shapes:res=32,n=20000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPEATS = 5


def child(index_path: str, name: str, mode: str) -> dict:
    import dataclasses

    import jax
    import numpy as np

    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import StreamOptions
    from diffcli.index import open_index
    from diffcli.index.store import to_data_space
    from diffcli.sample.memory import process_peak_rss

    index = open_index(index_path)
    if mode == "float32":  # the old form: a float32 data-space copy of every row
        index = dataclasses.replace(index, images=to_data_space(index.images).reshape(index.images.shape))
    den = build_denoiser(name, index, StreamOptions())
    rows_bytes = int(den.chunks.nbytes)
    built = process_peak_rss()
    x = np.random.default_rng(0).standard_normal((16, *index.shape)).astype(np.float32)
    f = jax.jit(lambda d, v: d(v, 1.0))
    jax.block_until_ready(f(den, x))
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        jax.block_until_ready(f(den, x))
        times.append(time.perf_counter() - t)
    return {"denoiser": name, "rows": mode, "n": index.n, "dim": index.dim, "device_rows_bytes": rows_bytes,
            "peak_rss_after_build": built, "peak_rss": process_peak_rss(),
            "seconds_per_call_16_queries": float(np.median(times))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="shapes:res=32,n=20000")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "uint8_rows.json"))
    ap.add_argument("--child", nargs=3, metavar=("INDEX", "DENOISER", "MODE"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    from diffcli.data import load_dataset
    from diffcli.index.build import build_index

    with tempfile.TemporaryDirectory() as tmp:
        path = build_index(load_dataset(args.dataset), os.path.join(tmp, "index.h5"))
        rows = []
        for name in ("empirical", "nearest"):
            for mode in ("uint8", "float32"):
                out = subprocess.run([sys.executable, "-m", "benchmarks.bench_uint8_rows", "--child", str(path), name,
                                      mode], capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    mib = 1 << 20
    print(f"{'denoiser':>10} {'rows':>8} {'device rows MiB':>16} {'peak RSS MiB':>13} {'s / call (16 q)':>16}")
    for r in rows:
        print(f"{r['denoiser']:>10} {r['rows']:>8} {r['device_rows_bytes'] / mib:>16.1f} {r['peak_rss'] / mib:>13.0f} "
              f"{r['seconds_per_call_16_queries']:>16.4f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": f"{platform.machine()}, 2-core AMD EPYC, CPU JAX (shared, loaded)",
                   "dataset": args.dataset, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
