"""Sharded empirical and golden denoisers: memory per device and time per call against device count (fake CPU
devices), plus a written projection for ImageNet-1K unconditional (1.28M images at 64 px) on 1 and 8 GPUs.

Each device count runs in its own interpreter (XLA_FLAGS must be set before jax is imported). Fake CPU devices
share this machine's cores, so time per call shows the overhead of sharding (collectives, padding), not a speed-up;
memory per device is what a real multi-device run would hold.

    python benchmarks/bench_sharded.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

WORKER = r"""
import json, sys, time
import equinox as eqx, jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, sys.argv[2])
from diffcli.parallel.denoiser import ShardedEmpiricalDenoiser
a = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
data = rng.uniform(-1, 1, (a["n"], a["d"])).astype(np.float32)
x = jnp.asarray(data[: a["b"]] + 0.5 * rng.standard_normal((a["b"], a["d"])).astype(np.float32))
den = ShardedEmpiricalDenoiser.from_data(data, chunk=a["chunk"])
call = eqx.filter_jit(lambda d, x: d(x, 0.5))
t0 = time.perf_counter(); jax.block_until_ready(call(den, x)); compile_s = time.perf_counter() - t0
times = []
for _ in range(a["repeats"]):
    t0 = time.perf_counter(); jax.block_until_ready(call(den, x)); times.append(time.perf_counter() - t0)
per_dev = {}
for arr in (den.chunks, den.half_sqn):
    for s in arr.addressable_shards:
        per_dev[s.device.id] = per_dev.get(s.device.id, 0) + s.data.nbytes
out = {"devices": jax.device_count(), "seconds": min(times), "compile_s": compile_s,
       "bytes_per_device": max(per_dev.values()), "bytes_real": data.nbytes}
if a["index"]:  # golden (empirical base, sigma 2: a pool of about half the rows) on a real index
    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import GoldenOptions
    from diffcli.index import open_index
    idx = open_index(a["index"])
    gold = build_denoiser("golden-sharded", idx, GoldenOptions(golden_base="empirical", golden_k_min=a["k_min"],
                                                               golden_k_max=a["k_max"]))
    xg = jnp.asarray(idx.train_data()[: a["b"]].reshape(a["b"], *idx.shape))
    xg = xg + 2.0 * jax.random.normal(jax.random.PRNGKey(0), xg.shape)
    keys = jax.random.split(jax.random.PRNGKey(1), a["b"])
    gcall = eqx.filter_jit(lambda d, x, k: d(x, 2.0, key=k))
    jax.block_until_ready(gcall(gold, xg, keys))
    gtimes = []
    for _ in range(a["repeats"]):
        t0 = time.perf_counter(); jax.block_until_ready(gcall(gold, xg, keys)); gtimes.append(time.perf_counter() - t0)
    gdev = {}
    for arr in jax.tree.leaves(gold.rows):
        for s in arr.addressable_shards:
            gdev[s.device.id] = gdev.get(s.device.id, 0) + s.data.nbytes
    out["golden"] = {"seconds": min(gtimes), "bytes_per_device": max(gdev.values()), "n": idx.n, "dim": idx.dim}
if a["roofline"]:
    sys.path.insert(0, sys.argv[3])
    from roofline import measure
    out["roofline"] = measure(quick=a["quick"])
print(json.dumps(out))
"""


def run(devices: int, cfg: dict) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg), ROOT, HERE], env=env, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def projection(cpu_gflops: float, cpu_gbs: float) -> dict:
    """ImageNet-1K at 64 px: index size, memory and time per denoiser call on 1 and 8 H100-class GPUs (formulas)."""
    n, d, b = 1_281_167, 3 * 64 * 64, 16
    gpu = {"name": "H100 SXM", "hbm_gbs": 3350.0, "fp32_tflops": 67.0, "hbm_gb": 80.0, "nvlink_gbs": 450.0}
    flops = 4.0 * b * n * d  # two matmuls per chunk: logits x @ X^T and the weighted sum w @ X
    rows = {}
    for dtype, bpe in (("uint8 (stored index)", 1), ("float32 (current sharded denoiser)", 4)):
        total = n * d * bpe
        for gpus in (1, 8):
            per_gpu = total / gpus + n / gpus * 4  # rows + half norms
            t_mem = per_gpu / (gpu["hbm_gbs"] * 1e9)
            t_flop = flops / gpus / (gpu["fp32_tflops"] * 1e12)
            t_merge = 2 * b * (d + 2) * 4 * (gpus - 1) / gpus / (gpu["nvlink_gbs"] * 1e9) if gpus > 1 else 0.0
            rows[f"{dtype}, {gpus} GPU"] = {
                "index_gb": total / 1e9, "memory_per_gpu_gb": per_gpu / 1e9,
                "fits": per_gpu / 1e9 < 0.9 * gpu["hbm_gb"],
                "ms_per_step_b16": 1e3 * (max(t_mem, t_flop) + t_merge),
                "bound": "memory" if t_mem > t_flop else "compute",
            }
    return {
        "n": n, "dim": d, "batch": b, "gpu": gpu, "flops_per_step": flops, "rows": rows,
        "this_cpu_ms_per_step_b16": 1e3 * max(n * d * 4 / (cpu_gbs * 1e9), flops / (cpu_gflops * 1e9)),
        "reasoning": (
            "One empirical-denoiser call reads every index row once and does 4*B*N*D FLOP (two matmuls). At B=16 "
            "that is 16 FLOP per float32 byte, below an H100's ridge point (~20 FLOP/B for FP32 non-tensor), so a "
            "step is bound by HBM bandwidth: index bytes per GPU / 3.35 TB/s. Sharding along N divides both memory "
            "and time by the GPU count; the exact log-sum-exp merge moves only B*(D+2) floats per step "
            "(~0.8 MB), negligible over NVLink. The float32 index (63 GB) barely fits one 80 GB H100 beside the "
            "activations; stored as uint8 and converted per chunk it is 15.7 GB (4x fewer bytes; not implemented yet), "
            "and the step becomes bound by FP32 FLOPs (~15 ms) unless TF32/bf16 tensor cores are used. "
            "On 8 GPUs the float32 index is 7.9 GB per GPU. Larger batches raise arithmetic "
            "intensity: at B >= 32 the float32 step is compute-bound too, so time grows with B."
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Small sizes (about a minute).")
    args = ap.parse_args()
    cfg = dict(n=4096 if args.quick else 32768, d=256 if args.quick else 768, b=16, chunk=1024,
               repeats=3 if args.quick else 5, quick=args.quick)
    counts = (1, 2, 8) if args.quick else (1, 2, 4, 8)
    from diffcli.index.build import ensure_index

    spec = f"shapes:res=16,n={cfg['n'] + cfg['n'] // 9 + 1}"  # about cfg n training rows after the held-out split
    cfg.update(index=str(ensure_index(spec, report=lambda m: print("  " + m, flush=True))), dataset=spec,
               k_min=cfg["n"] // 64, k_max=cfg["n"] // 32)
    results = []
    for k, devices in enumerate(counts):
        r = run(devices, dict(cfg, roofline=k == 0))
        results.append(r)
    roof = results[0].pop("roofline")
    flops = 4.0 * cfg["b"] * cfg["n"] * cfg["d"]
    print(f"sharded empirical denoiser, N={cfg['n']} D={cfg['d']} B={cfg['b']} chunk={cfg['chunk']} "
          f"(roofline this run: {roof['matmul_gflops']:.0f} GFLOP/s matmul, {roof['memory_gbs']:.1f} GB/s)")
    print(f"{'devices':>7} {'MB/device':>10} {'ms/call':>9} {'GFLOP/s':>8} {'% matmul roof':>13}")
    for r in results:
        gfs = flops / r["seconds"] / 1e9
        r.update(gflops=gfs, roof_fraction=gfs / roof["matmul_gflops"])
        print(f"{r['devices']:>7} {r['bytes_per_device'] / 2**20:>10.2f} {1e3 * r['seconds']:>9.2f} {gfs:>8.1f} "
              f"{100 * r['roof_fraction']:>12.1f}%")
    g0 = results[0]["golden"]
    print(f"\nsharded golden (empirical base, k {cfg['k_min']}..{cfg['k_max']}, sigma 2), {cfg['dataset']}: "
          f"N={g0['n']} D={g0['dim']} B={cfg['b']}")
    print(f"{'devices':>7} {'MB/device':>10} {'ms/call':>9} {'vs 1 device':>11}")
    for r in results:
        g = r["golden"]
        print(f"{r['devices']:>7} {g['bytes_per_device'] / 2**20:>10.2f} {1e3 * g['seconds']:>9.2f} "
              f"{g['seconds'] / g0['seconds']:>10.2f}x")
    proj = projection(roof["matmul_gflops"], roof["memory_gbs"])
    print("\nprojection: ImageNet-1K unconditional, 1,281,167 x 3x64x64, batch 16, exact empirical denoiser")
    for name, row in proj["rows"].items():
        print(f"  {name:40s} index {row['index_gb']:6.1f} GB, {row['memory_per_gpu_gb']:6.1f} GB/GPU "
              f"({'fits' if row['fits'] else 'does not fit'}), "
              f"{row['ms_per_step_b16']:7.2f} ms/step ({row['bound']}-bound)")
    print(f"  this CPU, 1 device (roofline estimate): {proj['this_cpu_ms_per_step_b16'] / 1e3:.1f} s/step")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = os.path.join(HERE, "results", "sharded_quick.json" if args.quick else "sharded.json")
    with open(out, "w") as f:
        json.dump({"config": cfg, "roofline": roof, "results": results, "projection": proj}, f, indent=2)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
