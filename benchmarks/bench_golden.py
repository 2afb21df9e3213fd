"""GoldDiff side by side: golden vs full-scan PCA-locality vs empirical, and time per call against N (with/without
the coarse stage). Prints tables and writes benchmarks/results/golden.json (golden_scaling.json with --scaling-only).

(a) GoldDiff protocol (VP linear-beta DDIM, 10 steps, batch 16) on shapes, per base (empirical, pca-local): the
    paper's and the stratified estimator side by side from the same noise; at each step every trajectory's output is
    compared (r2, worst and mean query) with the exact full scan at the same state, and timed against the full scan;
    the final images are compared with the full scan's own trajectory.
(b) Proxy-only vectors (N from 10k to 1M): time per call of golden (empirical base) with the exact proxy scan and
    with the coarse stage, plus the coarse screen's recall of the exact proxy top-k_max.
Usage: python benchmarks/bench_golden.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

call = eqx.filter_jit(lambda den, x, s, k: den(x, s, key=k))


def timed(fn, args, repeats: int):
    """(result, best seconds of `repeats` runs of fn(*args)) after one untimed warm-up (compilation)."""
    out = jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return out, best


def roofline() -> dict:
    """Measured float32 matmul GFLOP/s and memory bandwidth (GB/s) of this machine, in this run."""
    a = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    _, t = timed(mm, (a,), 5)
    big = jnp.ones((64 * 1024 * 1024 // 4 * 4,), jnp.float32)  # 256 MiB
    red = jax.jit(lambda v: jnp.sum(v))
    _, tb = timed(red, (big,), 5)
    return {"matmul_gflops": 2 * 2048**3 / t / 1e9, "bandwidth_gbs": big.size * 4 / tb / 1e9}


# -- (a) the GoldDiff protocol ---------------------------------------------------------------------------------
# the estimators side by side: the paper's, the stratified default and variants of its far stratum (plan fields)
VARIANTS = {"paper": ("paper", {}), "stratified": ("stratified", {}),
            "strat-uniform": ("stratified", {"far_design": "uniform", "far_regression": True}),
            "strat-proxy-ht": ("stratified", {"far_design": "proxy", "far_regression": False}),
            "strat-proxy-greg": ("stratified", {"far_design": "proxy", "far_regression": True}),
            "strat-share-0.8": ("stratified", {"far_share": 0.8})}
ESTIMATORS = ("paper", "stratified")


def ddim_step(d, x, s, s_next):
    """Euler in sigma-space (= deterministic DDIM on the vp-leading schedule)."""
    return d + (s_next / s) * (x - d)


def r2_rows(a, b) -> np.ndarray:
    from diffcli.metrics.fidelity import per_sample_r2

    return per_sample_r2(np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1))


def variant(den, fields: dict):
    """The denoiser with its plan's fields replaced (the far slots follow a new far share)."""
    from diffcli.denoisers.golden.plan import far_slots

    if "far_share" in fields:
        fields = fields | {"far_slots": far_slots(den.plan.k_max, den.plan.n, fields["far_share"])}
    return dataclasses.replace(den, plan=dataclasses.replace(den.plan, **fields))


def protocol_base(idx, base: str, sigmas, batch: int, k_min, k_max, repeats: int, names=ESTIMATORS) -> dict:
    """Both estimators and the full scan of one base along 10 DDIM steps from the same noise: per step r2 of each
    estimator's output against the full scan at the estimator's own state, seconds per step, final r2."""
    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import GoldenOptions, StreamOptions
    from diffcli.sample.batches import initial_noise, solver_keys

    built = {e: build_denoiser("golden", idx, GoldenOptions(sigmas=sigmas, golden_base=base, golden_k_min=k_min,
                                                             golden_k_max=k_max, golden_estimator=e))
             for e in ESTIMATORS}
    dens = {name: variant(built[VARIANTS[name][0]], VARIANTS[name][1]) for name in names}
    plan = built["paper"].plan
    full = full_scan_like(built["paper"], idx) if base == "pca-local" else build_denoiser("empirical", idx,
                                                                                         StreamOptions())
    ids = np.arange(batch)
    x0 = float(sigmas[0]) * initial_noise(0, ids, idx.shape)
    keys = solver_keys(0, ids)
    states = {e: x0 for e in names} | {"full": x0}
    steps = []
    for i in range(len(sigmas) - 1):
        s, s_next = jnp.float32(sigmas[i]), float(sigmas[i + 1])
        kk = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)
        d_full, t_full = timed(call, (full, states["full"], s, kk), repeats)
        row = {"step": i, "sigma": float(s), "full_s": t_full}
        for e in names:
            d, t = timed(call, (dens[e], states[e], s, kk), repeats)
            ref = call(full, states[e], s, kk)
            r2 = r2_rows(d, ref)
            row[e] = {"s": t, "r2_min": float(r2.min()), "r2_mean": float(r2.mean())}
            states[e] = ddim_step(d, states[e], s, s_next)
        states["full"] = ddim_step(d_full, states["full"], s, s_next)
        steps.append(row)
        print(f"  {base} step {i}: sigma {float(s):8.4g} full {t_full:.4f}s  " + "  ".join(
            f"{e} {row[e]['s']:.4f}s r2 min {row[e]['r2_min']:.4f} mean {row[e]['r2_mean']:.4f}" for e in names),
            flush=True)
    tf = sum(r["full_s"] for r in steps)
    out = {"base": base, "k_min": plan.k_min, "k_max": plan.k_max, "far_slots": built["stratified"].plan.far_slots,
           "estimators": list(names), "steps": steps, "full_s_total": tf}
    for e in names:
        fin = r2_rows(states[e], states["full"])
        out[e] = {"time_ratio": sum(r[e]["s"] for r in steps) / tf, "r2_min_over_steps":
                  min(r[e]["r2_min"] for r in steps), "final_r2_min": float(fin.min()),
                  "final_r2_mean": float(fin.mean())}
    return out


def protocol(spec: str, batch: int, k_min: int | None, k_max: int | None, repeats: int, bases,
             names=ESTIMATORS) -> dict:
    from diffcli.index import open_index
    from diffcli.index.build import ensure_index
    from diffcli.schedules import get_schedule

    idx = open_index(ensure_index(spec, report=lambda m: print("  " + m, flush=True)))
    sigmas = get_schedule("vp-leading", 10)
    return {"dataset": spec, "n": idx.n, "dim": idx.dim, "batch": batch,
            "bases": [protocol_base(idx, b, sigmas, batch, k_min, k_max, repeats, names) for b in bases]}


def full_scan_like(golden, idx):
    """The full-scan PCA-locality denoiser with golden's masks (as pca_local.build would make it)."""
    from diffcli.denoisers.options import PcaLocalOptions
    from diffcli.denoisers.pca_local import PcaLocalDenoiser, class_chunks, pad_rows

    data = idx.train_data()
    chunks = class_chunks(data.shape[1], golden.plan.masks, min(PcaLocalOptions().chunk_size, len(data)))
    rows, ok = pad_rows(data, max(chunks))
    return PcaLocalDenoiser(jnp.asarray(rows), jnp.asarray(ok), golden.plan.masks, chunks)


# -- (b) scaling with N ----------------------------------------------------------------------------------------
def vector_index(n: int, dim: int, seed: int = 0):
    """Proxy-only vectors: a mixture of 200 clusters (an index whose data are its proxies, identity proxy map)."""
    from diffcli.index.coarse import build_coarse
    from diffcli.index.store import Index

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, dim)).astype(np.float32) * 2
    data = centres[rng.integers(0, 200, n)] + rng.standard_normal((n, dim)).astype(np.float32)
    t0 = time.perf_counter()
    coarse = build_coarse(data, seed=0)
    built = time.perf_counter() - t0
    z = np.zeros(dim, np.float32)
    return Index(kind="vector", shape=(dim,), images=data, heldout=data[:2], proxy=data, mean=z,
                 pca_components=np.eye(dim, dtype=np.float32), pca_variances=np.ones(dim, np.float32),
                 residual_variance=0.0, attrs={"dataset": "vectors"}, coarse=coarse,
                 proxy_basis=np.eye(dim, dtype=np.float32)), built


def scaling(ns, dim: int, batch: int, k_min: int, k_max: int, repeats: int) -> list[dict]:
    from diffcli.denoisers.golden import build
    from diffcli.denoisers.options import GoldenOptions
    from diffcli.index.coarse import coarse_topk, exact_topk, recall

    out = []
    for n in ns:
        idx, t_build = vector_index(n, dim)
        data = jnp.asarray(idx.images)
        x0 = data[:batch]
        keys = jax.random.split(jax.random.PRNGKey(0), batch)
        row = {"n": n, "coarse_build_s": t_build, "lists": int(len(idx.coarse["centroids"]))}
        for sigma in (0.05, 2.0):
            x = x0 + sigma * jax.random.normal(jax.random.PRNGKey(1), x0.shape)
            for coarse in (False, True):
                den = build(idx, GoldenOptions(golden_base="empirical", golden_k_min=k_min, golden_k_max=k_max,
                                               golden_coarse=coarse))
                _, t = timed(call, (den, x, jnp.float32(sigma), keys), repeats)
                row[f"{'coarse' if coarse else 'exact'}_s_sigma{sigma}"] = t
            if sigma == 0.05:
                truth, _ = exact_topk(den.rows.proxy, x, k_max)
                found, _ = coarse_topk(den.plan.coarse.search, den.rows.proxy, x, k_max)
                row["coarse_recall"] = recall(found, truth)
                row["nprobe_pieces"] = den.plan.coarse.search.nprobe
        print(f"  N={n:>8}: exact {row['exact_s_sigma0.05']:.4f}s coarse {row['coarse_s_sigma0.05']:.4f}s "
              f"(low noise) recall {row['coarse_recall']:.3f}", flush=True)
        out.append(row)
    return out


def plot_scaling(rows: list[dict], path: str, *, device: str = "", batch: int = 16, dim: int = 64) -> str:
    """Time per denoiser call against N (log-log): exact proxy scan vs coarse stage, at low and high noise."""
    from diffcli.io.plot import save_line_plot

    ns = [r["n"] for r in rows]
    series = {f"{stage} screen, sigma = {s}": (ns, [1e3 * r[f"{key}_s_sigma{s}"] for r in rows])
              for s in ("0.05", "2.0") for stage, key in (("exact proxy", "exact"), ("coarse (clusters)", "coarse"))}
    save_line_plot(path, series, xlabel="training rows N", ylabel="time per call (ms, best of repeats)",
                   title=f"GoldDiff time per call vs N: golden (empirical base), proxy-only vectors d={dim}, "
                         f"batch {batch}" + (f"\non {device}" if device else ""))
    return path


def print_protocol(a: dict) -> None:
    for b in a["bases"]:
        print(f"\nbase {b['base']} (k {b['k_min']}-{b['k_max']}, far draws up to {b['far_slots']}), "
              f"per step r2 against the full scan at the same state")
        names = b["estimators"]
        print("step    sigma   full_s  " + "  ".join(f"{e:>16}_s r2_min r2_mean" for e in names))
        for r in b["steps"]:
            print(f"{r['step']:>4} {r['sigma']:8.4g} {r['full_s']:8.4f}  " + "  ".join(
                f"{r[e]['s']:18.4f} {r[e]['r2_min']:6.3f} {r[e]['r2_mean']:7.4f}" for e in names))
        for e in names:
            v = b[e]
            print(f"  {e:>16}: time {v['time_ratio']:.3f} of the full scan (summed), worst step r2_min "
                  f"{v['r2_min_over_steps']:.4f}, final r2 min {v['final_r2_min']:.4f} mean {v['final_r2_mean']:.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a minute or two)")
    ap.add_argument("--dataset", help="dataset spec of part (a) (default: shapes:res=64,n=15000; quick res=16)")
    ap.add_argument("--bases", default="empirical,pca-local", help="comma list of golden bases of part (a)")
    ap.add_argument("--estimators", default=",".join(ESTIMATORS),
                    help=f"comma list of part (a)'s estimators, from: {', '.join(VARIANTS)}")
    ap.add_argument("--skip-scaling", action="store_true", help="run part (a) only")
    ap.add_argument("--scaling-only", action="store_true", help="run part (b) only (N = 10k, 100k, 1M unless --quick)")
    ap.add_argument("--out",
                    help="JSON path (default results/golden.json; --scaling-only: results/golden_scaling.json)")
    args = ap.parse_args()
    name = "golden_scaling.json" if args.scaling_only else "golden.json"  # a part-(b) run keeps part (a)'s results
    args.out = args.out or os.path.join(os.path.dirname(__file__), "results", name)
    if args.quick:
        spec, kmin, kmax, ns, rep = "shapes:res=16,n=2000", 120, 240, [10_000, 100_000], 1
    else:
        spec, kmin, kmax, ns, rep = "shapes:res=64,n=15000", 1000, 2000, [10_000, 100_000, 1_000_000], 3
    spec = args.dataset or spec
    print(f"roofline ({platform.processor() or platform.machine()}, {jax.devices()[0].platform})", flush=True)
    roof = roofline()
    print(f"  matmul {roof['matmul_gflops']:.1f} GFLOP/s, bandwidth {roof['bandwidth_gbs']:.1f} GB/s", flush=True)
    if not args.scaling_only:
        print(f"(a) GoldDiff protocol on {spec}, batch 16", flush=True)
    a = None if args.scaling_only else protocol(spec, 16, kmin, kmax, rep, args.bases.split(","),
                                                      args.estimators.split(","))
    print("(b) time per call vs N (proxy-only vectors, d=64, batch 16)", flush=True)
    b = [] if args.skip_scaling else scaling(ns, 64, 16, 50, 100, rep)
    grow = {k: b[-1][k] / b[0][k] for k in ("exact_s_sigma0.05", "coarse_s_sigma0.05")} if b else {}
    result = {"roofline": roof, "device": jax.devices()[0].device_kind, "quick": args.quick, "protocol": a,
              "scaling": b, "time_growth_first_to_last_n": grow}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    if b:
        print(f"plot {plot_scaling(b, os.path.splitext(args.out)[0] + '_time_vs_n.png', device=result['device'])}")
    if a is not None:
        print_protocol(a)
    print("\n       N   exact(s)  coarse(s)  exact@hi  coarse@hi  recall")
    for r in b:
        print(f"{r['n']:>8} {r['exact_s_sigma0.05']:10.4f} {r['coarse_s_sigma0.05']:10.4f} "
              f"{r['exact_s_sigma2.0']:9.4f} {r['coarse_s_sigma2.0']:10.4f} {r['coarse_recall']:7.3f}")
    if b:
        print(f"time growth {ns[0]} -> {ns[-1]}: exact {grow['exact_s_sigma0.05']:.1f}x, "
              f"coarse {grow['coarse_s_sigma0.05']:.1f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
