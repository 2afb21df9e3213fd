"""ImageNet-sized analytical diffusion on the `shapes` stand-in: streamed index build, golden and the full scan.

CPU (default): shapes with 1000 background-colour classes at 3x32x32 (ImageNet-32 sized at N = 1,281,167), built
at a ladder of N by `diffcli index-build` in a child process (wall time and peak RSS from os.wait4); then, in a
second child per N whose estimated memory fits the machine, 16 queries along a 10-step DDIM path (vp-leading):
golden (empirical base, k_min 10,000 / k_max 20,000 or N/20 and N/10 where N is smaller, clustered coarse stage)
and the full-scan empirical denoiser at golden's own states, seconds per step side by side, r2 of golden against
the full scan, and the same for one ~1,280-row class (`class_rows`, golden's class-sized default k).
--gpu: the res-64 variant, pca-local as golden's base against the in-memory pca-local full scan, with the device's
peak memory (jax memory_stats); sized to finish in under 8 minutes on one H200.
--quick: small N, for a check that everything runs.

    nice -n 5 .venv/bin/python benchmarks/bench_scale.py            # full CPU run -> benchmarks/results/scale.json
    .venv/bin/python benchmarks/bench_scale.py --quick --out benchmarks/results/scale_quick.json
    python benchmarks/bench_scale.py --gpu --out benchmarks/results/scale_gpu.json
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

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IMAGENET_N = 1281167
QUERIES = 16
STEPS = 10


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()}-core {cpu}, {platform.system()}"


def mem_available() -> int:
    """Bytes of memory the kernel says are available now."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_child(cmd: list[str]) -> dict:
    """Run cmd to the end; {'rc', 'wall_s', 'peak_rss_bytes', 'stdout', 'stderr'} (peak RSS of that child)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return {"rc": proc.returncode, "wall_s": wall, "peak_rss_bytes": int(usage.ru_maxrss) * 1024,
                "stdout": out.read(), "stderr": err.read()}


def golden_k(n: int, k_min: int, k_max: int) -> tuple[int, int]:
    """The paper's unconditional k (10,000 / 20,000), or N/20 and N/10 when N is too small for them."""
    return (k_min, k_max) if n >= 2 * k_max else (max(1, n // 20), max(2, n // 10))


def sample_memory_estimate(n: int, dim: int, proxy_dim: int) -> int:
    """Bytes a sampling child is expected to hold beyond the index file's pages (its rows and proxies are mapped,
    and on the CPU the device arrays share them where no padding is needed): golden's padded uint8 rows and its
    proxies ordered by coarse piece, or later the full scan's padded chunks (the two are never held at once), and
    1 GB of working memory."""
    return n * dim + 4 * n * proxy_dim + (1 << 30)


# -- the sampling child -----------------------------------------------------------------------------------------
def sample_part(args) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import GoldenOptions, PcaLocalOptions, StreamOptions
    from diffcli.index import open_index
    from diffcli.index.store import class_rows
    from diffcli.sample.batches import initial_noise, solver_keys
    from diffcli.schedules import get_schedule

    call = eqx.filter_jit(lambda den, x, s, k: den(x, s, key=k))
    t0 = time.perf_counter()
    idx = open_index(args.index)
    out = {"n": idx.n, "dim": idx.dim, "open_s": time.perf_counter() - t0,
           "sample_load_average_1min": os.getloadavg()[0]}
    sigmas = get_schedule("vp-leading", STEPS)

    def path(index, golden_opts, full):
        """golden along its own DDIM path, then (golden freed, so the two never hold their rows at once) the full
        scan at golden's states; seconds per step and r2 of golden against the full scan."""
        import gc

        from diffcli.metrics.fidelity import per_sample_r2

        t = time.perf_counter()
        den = build_denoiser("golden", index, golden_opts)
        setup = time.perf_counter() - t
        ids = np.arange(QUERIES)
        x = float(sigmas[0]) * initial_noise(0, ids, index.shape)
        keys = solver_keys(0, ids)
        visited, rows = [], []
        for i in range(len(sigmas) - 1):
            s, s_next = jnp.float32(sigmas[i]), float(sigmas[i + 1])
            kk = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)
            jax.block_until_ready(call(den, x, s, kk))  # compile (first step) or warm
            t = time.perf_counter()
            out = jax.block_until_ready(call(den, x, s, kk))
            rows.append({"sigma": float(s), "golden_s": time.perf_counter() - t})
            visited.append((x, s, kk, np.asarray(out)))
            x = out + (s_next / s) * (x - out)
        plan = den.plan
        del den
        gc.collect()
        t = time.perf_counter()
        full_den = full()
        setup_full = time.perf_counter() - t
        for row, (x, s, kk, golden_out) in zip(rows, visited, strict=True):
            jax.block_until_ready(call(full_den, x, s, kk))
            t = time.perf_counter()
            out = np.asarray(jax.block_until_ready(call(full_den, x, s, kk)))
            row["full_s"] = time.perf_counter() - t
            g, f = golden_out.reshape(QUERIES, -1).astype(np.float64), out.reshape(QUERIES, -1).astype(np.float64)
            row["r2_min"] = float(per_sample_r2(g, f).min())
            # r2 divides by the spread of the full scan's output over pixels, which is small where the posterior
            # mean is a blur; the relative distance divides by its norm
            row["rel_err_max"] = float((np.linalg.norm(g - f, axis=1) / np.linalg.norm(f, axis=1)).max())
            print(f"    sigma {row['sigma']:8.4g} golden {row['golden_s']:.4f}s full {row['full_s']:.4f}s "
                  f"r2 min {row['r2_min']:.4f} rel err max {row['rel_err_max']:.3g}", file=sys.stderr, flush=True)
        del full_den
        gc.collect()
        return {"setup_s": setup, "full_setup_s": setup_full, "k_min": int(plan.k_min), "k_max": int(plan.k_max),
                "steps": rows, "golden_s_per_step": float(np.mean([r["golden_s"] for r in rows])),
                "full_s_per_step": float(np.mean([r["full_s"] for r in rows])),
                "r2_min": float(min(r["r2_min"] for r in rows)),
                "rel_err_max": float(max(r["rel_err_max"] for r in rows))}

    def full_for(index):
        if args.base == "empirical":
            return lambda: build_denoiser("empirical", index, StreamOptions())
        return lambda: build_denoiser("pca-local", index, PcaLocalOptions())

    k_min, k_max = golden_k(idx.n, args.k_min, args.k_max)
    opts = GoldenOptions(sigmas=sigmas, golden_base=args.base, golden_k_min=k_min, golden_k_max=k_max,
                         golden_coarse=True)
    out["unconditional"] = path(idx, opts, full_for(idx))
    if idx.labels is not None:
        counts = np.bincount(idx.labels)
        label = int(np.argmin(np.abs(counts - np.median(counts[counts > 0]))))  # a class of median size
        t = time.perf_counter()
        sub = class_rows(idx, label)
        out["conditional"] = {"class": label, "n_class": sub.n, "class_rows_s": time.perf_counter() - t,
                              **path(sub, GoldenOptions(sigmas=sigmas, golden_base=args.base, golden_coarse=True),
                                     full_for(sub))}
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    out["device"] = str(jax.devices()[0].platform)
    out["device_peak_bytes"] = None if not stats else stats.get("peak_bytes_in_use")
    return out


# -- the parent ---------------------------------------------------------------------------------------------------
def build(spec: str, path: str, reuse: bool = False) -> dict:
    """Build the index at `path` in a child process; its figures are also kept beside it (`path`.build.json), so
    `reuse` can take an index built by an earlier run, with that run's figures, instead of building it again."""
    sidecar = path + ".build.json"
    if reuse and os.path.exists(path) and os.path.exists(sidecar):
        with open(sidecar) as f:
            figures = json.load(f)
        if figures.get("spec") == spec:
            return {k: v for k, v in figures.items() if k != "spec"}
    r = run_child([sys.executable, "-m", "diffcli", "index-build", "-d", spec, "-o", path, "--overwrite", "--json"])
    if r["rc"] != 0:
        raise SystemExit(f"index-build {spec} failed: {r['stderr'][-2000:]}")
    figures = {"build_s": r["wall_s"], "build_peak_rss_bytes": r["peak_rss_bytes"],
               "index_bytes": os.path.getsize(path), "build_load_average_1min": os.getloadavg()[0]}
    with open(sidecar, "w") as f:
        json.dump({"spec": spec, **figures}, f)
    return figures


def sample(path: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--part", "sample", "--index", path, "--base", args.base,
           "--k-min", str(args.k_min), "--k-max", str(args.k_max)]
    r = run_child(cmd)
    sys.stderr.write(r["stderr"][-4000:])
    if r["rc"] != 0:
        return {"sample_error": r["stderr"].strip().splitlines()[-1] if r["stderr"].strip() else f"exit {r['rc']}",
                "sample_peak_rss_bytes": r["peak_rss_bytes"]}
    return {**json.loads(r["stdout"].strip().splitlines()[-1]), "sample_peak_rss_bytes": r["peak_rss_bytes"],
            "sample_wall_s": r["wall_s"]}


def strict(x):
    """NaN and infinities as null, so the file is strict JSON."""
    if isinstance(x, dict):
        return {k: strict(v) for k, v in x.items()}
    if isinstance(x, list):
        return [strict(v) for v in x]
    return None if isinstance(x, float) and not np.isfinite(x) else x


def save(result: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(strict(result), f, indent=1)


def gb(x) -> str:
    return "-" if x is None else f"{x / 2**30:.2f}"


def print_table(rows: list[dict]) -> None:
    print(f"{'N':>9} {'build s':>8} {'build GB':>8} {'goal GB':>7} {'sample GB':>9} {'golden s/step':>13} "
          f"{'full s/step':>11} {'ratio':>6} {'r2 min':>7} {'class N':>7} {'cls golden':>10} {'cls full':>8}")
    for r in rows:
        u, c = r.get("unconditional", {}), r.get("conditional", {})
        g, f = u.get("golden_s_per_step"), u.get("full_s_per_step")
        print(f"{r['n']:>9} {r['build_s']:>8.1f} {gb(r['build_peak_rss_bytes']):>8} {gb(r['memory_goal_bytes']):>7} "
              f"{gb(r.get('sample_peak_rss_bytes')):>9} {'-' if g is None else f'{g:.4f}':>13} "
              f"{'-' if f is None else f'{f:.4f}':>11} {'-' if g is None else f'{f / g:.1f}x':>6} "
              f"{'-' if not u else format(u['r2_min'], '.4f'):>7} {c.get('n_class', '-'):>7} "
              f"{'-' if not c else format(c['golden_s_per_step'], '.4f'):>10} "
              f"{'-' if not c else format(c['full_s_per_step'], '.4f'):>8}"
              + (f"  ({r['sample_skipped']})" if r.get("sample_skipped") else "")
              + (f"  ({r['sample_error']})" if r.get("sample_error") else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small N (a check that everything runs)")
    ap.add_argument("--gpu", action="store_true", help="the res-64 variant with pca-local as golden's base")
    ap.add_argument("--ns", type=str, default=None, help="comma-separated N ladder (default by mode)")
    ap.add_argument("--res", type=int, default=None)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--k-min", type=int, default=10000)
    ap.add_argument("--k-max", type=int, default=20000)
    ap.add_argument("--base", default=None, choices=("empirical", "pca-local"))
    ap.add_argument("--workdir", default=None, help="where the index files go (default a temporary folder)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--reuse", action="store_true", help="take indexes an earlier run left in --workdir")
    ap.add_argument("--build-only", action="store_true", help="build the indexes (in --workdir) and stop")
    ap.add_argument("--part", default=None, choices=("sample",), help=argparse.SUPPRESS)
    ap.add_argument("--index", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part == "sample":
        print(json.dumps(sample_part(args)))
        return
    args.base = args.base or ("pca-local" if args.gpu else "empirical")
    res = args.res or (64 if args.gpu else (16 if args.quick else 32))
    if args.ns:
        ns = [int(s) for s in args.ns.split(",")]
    elif args.quick:
        ns = [4000, 12000]
    elif args.gpu:
        ns = [131072]
    else:
        ns = [20000, 80000, 320000, IMAGENET_N]
    classes = 8 if args.quick else args.classes
    out_path = args.out or os.path.join(HERE, "results", "scale_gpu.json" if args.gpu else
                                        ("scale_quick.json" if args.quick else "scale.json"))
    from diffcli.index.build import proxy_dim

    work = args.workdir or tempfile.mkdtemp(prefix="bench_scale-")
    result = {"machine": machine(), "mode": "gpu" if args.gpu else ("quick" if args.quick else "cpu"),
              "res": res, "classes": classes, "base": args.base, "queries": QUERIES, "steps": STEPS,
              "schedule": "vp-leading", "k_min": args.k_min, "k_max": args.k_max, "rows": []}
    for n in ns:
        spec = f"shapes:res={res},n={n},classes={classes}"
        path = os.path.join(work, f"shapes{res}-{n}.h5")
        print(f"N={n}: building {spec}", file=sys.stderr, flush=True)
        row = {"n_total": n, "spec": spec, **build(spec, path, args.reuse and bool(args.workdir))}
        import h5py

        with h5py.File(path, "r") as f:
            row["n"] = int(f.attrs["n"])
        dim, pdim = 3 * res * res, proxy_dim("image", (3, res, res))
        row["memory_goal_bytes"] = (2 << 30) + 4 * row["n"] * pdim
        result["rows"].append(row)
        save(result, out_path)  # the build's figures, before a sampling run that may be stopped
        if args.build_only:
            continue
        need, avail = sample_memory_estimate(row["n"], dim, pdim), mem_available()
        if need > 0.8 * avail:
            row["sample_skipped"] = (f"sampling needs about {need / 2**30:.1f} GB, {avail / 2**30:.1f} GB "
                                     "available")
        else:
            print(f"N={n}: sampling", file=sys.stderr, flush=True)
            row.update(sample(path, args))
        save(result, out_path)  # after every N, so a long run that is stopped keeps what it measured
        print_table(result["rows"])
        if not args.workdir:
            os.remove(path)
    print(f"wrote {out_path} ({result['machine']})")


if __name__ == "__main__":
    main()
