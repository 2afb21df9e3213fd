"""Achieved GFLOP/s and GB/s of the exact empirical denoiser beside this machine's measured roofline.

Work per call: two matmuls per chunk (distances and the weighted sum), 4*B*N*D FLOPs; the index is read once,
N*D*4 bytes. Roofline bound = min(peak FLOP/s, arithmetic intensity * peak bandwidth).
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.roofline import best_time, measure
from diffcli.denoisers.empirical import EmpiricalDenoiser

HERE = os.path.dirname(os.path.abspath(__file__))


def run(quick: bool) -> dict:
    roof = measure(quick)
    rows = []
    batch = 64
    for n in (2000, 20000):
        for dim in (64, 3072):
            rng = np.random.default_rng(0)
            data = rng.uniform(-1, 1, (n, dim)).astype(np.float32)
            x = jnp.asarray(data[:batch] + 0.5 * rng.standard_normal((batch, dim)).astype(np.float32))
            for chunk in (2048, 4096) if not quick else (2048,):
                den = EmpiricalDenoiser.from_data(data, chunk=chunk)
                f = jax.jit(lambda d, x: d(x, 0.5))
                t = best_time(f, den, x, repeats=3 if quick else 7)
                flops, nbytes = 4.0 * batch * n * dim, 4.0 * n * dim
                bound = min(roof["matmul_gflops"], flops / nbytes * roof["memory_gbs"])
                rows.append({"n": n, "dim": dim, "batch": batch, "chunk": chunk, "seconds": t,
                             "gflops": flops / t / 1e9, "gbs": nbytes / t / 1e9, "roofline_gflops": bound,
                             "fraction_of_roofline": flops / t / 1e9 / bound})
    return {"benchmark": "empirical", "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "roofline": roof, "rows": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    args = ap.parse_args()
    res = run(args.quick)
    r = res["roofline"]
    print(f"roofline: {r['matmul_gflops']:.1f} GFLOP/s matmul, {r['memory_gbs']:.1f} GB/s read ({r['backend']})")
    print(f"{'N':>6} {'D':>5} {'chunk':>5} {'ms/call':>8} {'GFLOP/s':>8} {'GB/s':>6} {'bound':>6} {'of roof':>7}")
    for row in res["rows"]:
        print(f"{row['n']:>6} {row['dim']:>5} {row['chunk']:>5} {1e3 * row['seconds']:>8.2f} {row['gflops']:>8.1f} "
              f"{row['gbs']:>6.1f} {row['roofline_gflops']:>6.1f} {100 * row['fraction_of_roofline']:>6.0f}%")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "empirical.json"), "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
