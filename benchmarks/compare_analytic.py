"""The analytical-diffusion comparison table: each method vs a trained reference network from the same noise.

For every dataset of the recipe: train (or reuse) the reference (`diffcli.train`), sample it, then sample every
analytical denoiser from the same noise with the same solver and schedule, each in its own process (so peak memory
is its own), and report MSE ([0,1] clamped) / r2 / seconds per step (a batch_size batch, after a compile warm-up)
/ peak RSS, in the form of GoldDiff's Table 1. The machine's roofline is measured in the same run.
Usage: python benchmarks/compare_analytic.py [--quick] [--recipe recipes/compare-analytic.toml] [--model FILE]
       [--datasets 'digits;shapes:res=16,n=1800'] [--num-samples N] [--methods a,b] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import tomllib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
# variants any recipe may name in its methods (a recipe's own [denoiser."name@variant"] table takes precedence):
# golden's two estimators over both bases, at the recipe's golden sizes
GOLDEN_VARIANTS = {f"golden@{base}-{est}": {"golden_base": base, "golden_estimator": est}
                   for base in ("pca-local", "empirical") for est in ("paper", "stratified")}


def run_one(args) -> None:
    """Child process: sample one method and write its samples and cost to args.one_out (npz)."""
    import jax

    from diffcli.denoisers import denoiser_factory
    from diffcli.denoisers.options import denoiser_options
    from diffcli.index import open_index
    from diffcli.sample.batches import generate
    from diffcli.schedules import get_schedule
    from diffcli.solvers import get_solver

    cfg = json.loads(args.settings)
    index = open_index(args.index)
    sigmas = get_schedule(cfg["schedule"], cfg["steps"])
    settings = {"model": args.model, **cfg.get("denoiser_options", {})}
    opts = denoiser_options(args.one, settings, sigmas=sigmas, seed=cfg["seed"])
    den = denoiser_factory(args.one)(index, opts)
    extra = {}
    if args.one in ("els", "ls"):  # the patch size each step used (scaled calibration or user list, capped)
        from diffcli.denoisers.els_scales import sizes_at

        extra["patch_sizes"] = np.array([k for k, _ in sizes_at(
            sigmas[:-1], scales=opts.els_scales, patch_sizes=opts.els_patch_sizes, shape=index.shape,
            equivariant=args.one == "els", boundary=opts.els_boundary)])
    solver = get_solver(cfg["solver"])
    ids = np.arange(cfg["num_samples"])
    kw = dict(denoiser=den, solver=solver, sigmas=sigmas, shape=index.shape, seed=cfg["seed"],
              batch_size=cfg["batch_size"])
    generate(ids=ids[: cfg["batch_size"]], **kw)  # compile and warm up on the first batch
    run = generate(ids=ids, **kw)
    batches = -(-len(ids) // cfg["batch_size"])
    np.savez(args.one_out, samples=run.samples, ids=run.ids, seconds=run.seconds,
             seconds_per_step=run.seconds / (batches * (len(sigmas) - 1)), nfe=run.nfe,
             peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
             device=str(jax.devices()[0].device_kind), **extra)


def sample_method(method: str, index_path: str, model: str | None, cfg: dict) -> dict:
    """Run one method in a child process; {'status', samples, cost} or the one line it failed with."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run.npz")
        cmd = [sys.executable, os.path.abspath(__file__), "--one", method, "--index", index_path,
               "--settings", json.dumps(cfg), "--one-out", out] + (["--model", model] if model else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0 or not os.path.exists(out):
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            return {"status": "failed", "error": lines[-1] if lines else f"exit {proc.returncode}"}
        with np.load(out) as z:
            return {"status": "ok", **{k: z[k] for k in z.files}}


def reference_model(spec: str, index_path: str, train_cfg: dict, steps: int, given: str | None) -> tuple[str, dict]:
    """The reference model file: --model, or benchmarks/results/reference-<dataset>.eqx (trained when missing)."""
    from diffcli.index import open_index
    from diffcli.models.file import read_header
    from diffcli.train.loop import TrainSettings, train

    if given:
        return given, {"reused": True}
    slug = re.sub(r"[^A-Za-z0-9=,.-]+", "_", spec)
    path = os.path.join(RESULTS, f"reference-{slug}-{steps}.eqx")
    if os.path.exists(path):
        return path, {"reused": True, **read_header(path, "model")[0]["info"]}
    idx = open_index(index_path)
    x = idx.train_data().reshape(-1, *idx.shape)
    settings = TrainSettings(steps=steps, batch_size=min(train_cfg.get("batch_size", 128), len(x)),
                             lr=train_cfg.get("lr", 2e-3), seed=0, save_every=max(steps // 4, 1))
    res = train(x, idx.heldout_data().reshape(-1, *idx.shape), settings, out=path, dataset=spec,
                log=lambda m: print(m, file=sys.stderr), log_every=max(steps // 10, 1))
    return path, {"reused": False, "train_seconds": res["seconds"], "final_loss": res["final_loss"]}


def compare_dataset(spec: str, recipe: dict, quick: bool, given_model: str | None) -> dict:
    from diffcli.index.build import ensure_index
    from diffcli.metrics.fidelity import fidelity

    q = recipe.get("quick", {}) if quick else {}
    cfg = {k: recipe[k] for k in ("solver", "schedule", "steps", "batch_size", "seed")}
    cfg["num_samples"] = q.get("num_samples", recipe["num_samples"])
    train_steps = q.get("train_steps", recipe["train"]["steps"])
    index_path = ensure_index(spec, report=lambda m: print(m, file=sys.stderr))
    model, model_info = reference_model(spec, index_path, recipe["train"], train_steps, given_model)
    print(f"[{spec}] reference model {model}", file=sys.stderr)
    ref = sample_method("neural", index_path, model, cfg)
    if ref["status"] != "ok":
        raise SystemExit(f"the reference network failed to sample: {ref['error']}")
    rows = [{"method": "reference (neural)", "mse": 0.0, "r2": 1.0, **_cost(ref)}]
    for method in recipe["methods"]:  # "name" or "name@variant": the denoiser, with [denoiser."name@variant"]
        opts = recipe.get("denoiser", {}).get(method) or variant_options(method, recipe)
        t0 = time.perf_counter()
        res = sample_method(method.split("@")[0], index_path, None, {**cfg, "denoiser_options": opts})
        print(f"[{spec}] {method}: {res['status']} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
        if res["status"] != "ok":
            rows.append({"method": method, "status": res["status"], "error": res["error"]})
            continue
        order = np.argsort(res["ids"])
        fid = fidelity(res["samples"][order], ref["samples"][np.argsort(ref["ids"])], images=True)
        rows.append({"method": method, "mse": fid["mse"], "r2": fid["r2"], **_cost(res), **_settings(opts, res)})
    return {"dataset": spec, "index": index_path, "model": model, "model_info": model_info, "settings": cfg,
            "rows": rows}


def variant_options(method: str, recipe: dict) -> dict:
    """A built-in variant's options over the recipe's own for its denoiser (golden@empirical-paper: the recipe's
    [denoiser.golden] sizes with the empirical base and the paper's estimator); {} for a plain name."""
    if method not in GOLDEN_VARIANTS:
        return {}
    return {**recipe.get("denoiser", {}).get(method.split("@")[0], {}), **GOLDEN_VARIANTS[method]}


def _cost(res: dict) -> dict:
    return {"status": "ok", "seconds_per_step": float(res["seconds_per_step"]), "seconds": float(res["seconds"]),
            "nfe": int(res["nfe"]), "peak_rss_mb": float(res["peak_rss_mb"])}


def _settings(opts: dict, res: dict) -> dict:
    """The recipe's options of a method, and for ELS/LS the patch size of each step (high noise first)."""
    out = {"options": opts} if opts else {}
    if "patch_sizes" in res:
        out["patch_sizes"] = [int(k) for k in res["patch_sizes"]]
    return out


def print_table(result: dict) -> None:
    s = result["settings"]
    print(f"\n{result['dataset']}: {s['num_samples']} samples, {s['solver']} on {s['schedule']} x {s['steps']} steps, "
          f"batch {s['batch_size']}; MSE on [0,1] clamped, r2 per sample averaged")
    print(f"{'method':<22}{'MSE':>9}{'r2':>9}{'s/step':>10}{'peak MB':>10}")
    for r in result["rows"]:
        if r.get("status") != "ok":
            print(f"{r['method']:<22}  {r['status']}: {r.get('error', '')[:70]}")
            continue
        print(f"{r['method']:<22}{r['mse']:>9.4f}{r['r2']:>9.3f}{r['seconds_per_step']:>10.4f}{r['peak_rss_mb']:>10.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=os.path.join(ROOT, "recipes", "compare-analytic.toml"))
    p.add_argument("--quick", action="store_true", help="a small run (fewer samples, a shorter reference training)")
    p.add_argument("--model", help="reuse this reference model file (skips training)")
    p.add_argument("--datasets", help="';'-separated list: run only these of the recipe's datasets")
    p.add_argument("--num-samples", type=int, help="override the recipe's sample count (a cheaper run)")
    p.add_argument("--methods", help="comma list overriding the recipe's methods")
    p.add_argument("--out", default=os.path.join(RESULTS, "compare_analytic.json"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--index", help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    p.add_argument("--one-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return run_one(args)
    with open(args.recipe, "rb") as f:
        recipe = tomllib.load(f)
    sys.path.insert(0, HERE)
    from roofline import measure

    os.makedirs(RESULTS, exist_ok=True)
    wanted = args.datasets.split(";") if args.datasets else None
    specs = recipe["datasets"] if not args.datasets else [d for d in recipe["datasets"] if d in wanted]
    if not specs:
        raise SystemExit(f"none of {args.datasets!r} is in the recipe's datasets {recipe['datasets']}")
    if args.num_samples:
        recipe["num_samples"] = args.num_samples
    if args.methods:
        recipe["methods"] = args.methods.split(",")
    results = [compare_dataset(spec, recipe, args.quick, args.model) for spec in specs]
    roof = measure(quick=True)
    for r in results:
        print_table(r)
    print(f"\nroofline (same run): {roof['matmul_gflops']:.0f} GFLOP/s float32 matmul, {roof['memory_gbs']:.1f} GB/s")
    doc = {"benchmark": "compare_analytic", "quick": args.quick, "recipe": os.path.relpath(args.recipe, ROOT),
           "machine": platform.platform(), "cpu_count": os.cpu_count(), "roofline": roof, "results": results}
    with open(args.out + ".part", "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(args.out + ".part", args.out)
    print(f"wrote {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
