"""Error vs sequential rounds and NFE of every solver on a GMM with exact score (float64, so errors are the method's).

Testbeds: 4 equal-weight isotropic components, means on a sphere of radius R = 2, component std = R / ratio, in
d dimensions (ratio 2 and 5); and a well-separated one, 8 components with R/std = 6 in d = 64. EDM sigmas
80 -> 0.002. Errors are relative pathwise distances max_b ||x_b - ref_b|| / ||ref_b|| from
the same initial noise (and the same per-step noise for the SDE):
- ODE solvers (euler, heun, dpmpp-2m, collocation) vs a diffrax Dopri8 solve (rtol = atol = 1e-12) + final denoise;
- picard-ode vs sequential 1000-step DDIM (= euler), picard-sde vs sequential 1000-step DDPM with the same noise;
  plain, Anderson-accelerated and quasi-Newton (secant slope) rounds, PIADM blocks, and the defaults with
  --picard-tol 1e-2 / 1e-3 / 1e-4 (the tolerance is the promised final relative distance; "within" says if it held);
- collocation's defaults with --colloc-tol 1e-2 / 1e-4 / 1e-6 against the same promise.
Run: python -m benchmarks.bench_solvers [--quick] [--resume] [--dims 16,64] [--testbeds 16:2:4,64:6:8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers.gmm import GMMDenoiser
from diffcli.solvers import get_solver
from diffcli.solvers.reference import reference_sample

HERE = os.path.dirname(os.path.abspath(__file__))
RADIUS, BATCH, SIGMA_MAX, SIGMA_MIN = 2.0, 4, 80.0, 0.002
TARGET = 1e-6  # collocation goal: this pathwise error with <= 1/10 of the best classic solver's rounds
PICARD_TARGET = 1e-3  # picard goal: this distance to 1000-step sequential in <= 25 rounds
PICARD_SERIES = tuple(f"picard-{m}{a}" for m in ("ode", "sde") for a in ("", "-anderson", "-newton", "-default"))
TOLS = (1e-2, 1e-3, 1e-4)  # promised final relative distances checked for the defaults


def karras(steps, rho=7.0):
    ramp = np.linspace(0.0, 1.0, steps)
    s = (SIGMA_MAX ** (1 / rho) + ramp * (SIGMA_MIN ** (1 / rho) - SIGMA_MAX ** (1 / rho))) ** rho
    return np.concatenate([s, [0.0]])


def testbed(dim, ratio, components=4, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((components, dim))
    means *= RADIUS / np.linalg.norm(means, axis=1, keepdims=True)
    den = GMMDenoiser.from_arrays(means, np.full(components, RADIUS / ratio), np.full(components, 1.0 / components),
                                  dtype=np.float64)
    x_t = SIGMA_MAX * jax.random.normal(jax.random.PRNGKey(seed), (BATCH, dim), jnp.float64)
    return den, x_t, jax.random.split(jax.random.PRNGKey(seed + 1), BATCH)


def rel_error(x, ref):
    x, ref = np.asarray(x), np.asarray(ref)
    return float(np.max(np.linalg.norm(x - ref, axis=1) / np.linalg.norm(ref, axis=1)))


def run_solver(name, den, x_t, sig, keys, **opts):
    f = eqx.filter_jit(lambda d, x, s, k: get_solver(name)(d, x, s, key=k, **opts))
    t0 = time.perf_counter()
    out = jax.block_until_ready(f(den, x_t, jnp.asarray(sig), keys))
    return out, time.perf_counter() - t0


def rounds_to_target(rows, target):
    """Fewest rounds at which a series reaches `target`; past its last point, extrapolated with its last local order."""
    rows = sorted(rows, key=lambda r: r["rounds"])
    hit = [r["rounds"] for r in rows if r["error"] <= target]
    if hit:
        return float(min(hit)), False
    a, b = rows[-2], rows[-1]
    order = np.log(a["error"] / b["error"]) / np.log(b["rounds"] / a["rounds"])
    if not order > 0:
        return float("inf"), True
    return float(b["rounds"] * (b["error"] / target) ** (1 / order)), True


def bench_testbed(dim, ratio, quick, components=4):
    den, x_t, keys = testbed(dim, ratio, components)
    rows = []
    ref, ref_steps = reference_sample(den, x_t, karras(8), rtol=1e-12, atol=1e-12)
    steps_list = [16, 64, 256] if quick else [16, 64, 256, 1024]
    for name in ("euler", "heun", "dpmpp-2m"):
        for steps in steps_list:
            out, sec = run_solver(name, den, x_t, karras(steps), keys)
            rows.append(dict(solver=name, setting=f"steps={steps}", rounds=int(out.rounds), nfe=int(out.nfe),
                             error=rel_error(out.x0, ref), seconds=sec))
    colloc = [(10, 8, 8), (20, 8, 8), (20, 12, 12)] if quick else \
        [(10, 8, 8), (20, 8, 8), (10, 12, 12), (20, 12, 12)]
    for w, n, it in colloc:
        out, sec = run_solver("collocation", den, x_t, karras(8), keys, colloc_windows=w, colloc_nodes=n,
                              colloc_iters=it)
        rows.append(dict(solver="collocation", setting=f"windows={w},nodes={n},iters={it}", rounds=int(out.rounds),
                         nfe=int(out.nfe), error=rel_error(out.x0, ref), seconds=sec))
    for tol in (1e-2, None, 1e-6):  # None: the defaults (tolerance 1e-4)
        out, sec = run_solver("collocation", den, x_t, karras(8), keys, **({} if tol is None else dict(colloc_tol=tol)))
        err = rel_error(out.x0, ref)
        rows.append(dict(solver="collocation-default", setting="defaults" if tol is None else f"tol={tol:g}",
                         rounds=int(out.rounds), nfe=int(out.nfe), error=err, seconds=sec,
                         within=bool(err <= (tol or 1e-4))))
    sig = karras(1000)
    for mode, seq_name in (("ode", "euler"), ("sde", "ddpm")):
        seq, _ = run_solver(seq_name, den, x_t, sig, keys)
        tols = (1e-2, 3e-3) if quick else (1e-2, 3e-3, 2e-3, 1e-3)
        plain = dict(picard_newton=False)
        settings = [dict(picard_tol=t, picard_window=w, **plain) for w in ((256,) if quick else (128, 256))
                    for t in tols] + \
            [dict(picard_tol=t, picard_window=w, picard_anderson=2, **plain) for w in ((256,) if quick else (256, 512))
             for t in tols] + \
            [dict(picard_tol=t, picard_window=w, picard_newton=True) for w in ((125, 500, 1000) if not quick else ())
             for t in (1e-3,)] + \
            [dict(picard_tol=t) for t in TOLS] + [{}]  # the defaults: window 250, newton
        if not quick:
            settings += [dict(picard_blocks=b, picard_iters=k, **plain) for b, k in ((4, 6), (8, 3))] + \
                [dict(picard_blocks=4, picard_iters=k, picard_newton=True) for k in (3, 5)] + \
                [dict(picard_rule="blocks", **plain)]  # PIADM as the paper runs it (the former default)
        for opts in settings:
            out, sec = run_solver("picard", den, x_t, sig, keys, picard_mode=mode, **opts)
            default = set(opts) <= {"picard_tol"}
            name = f"picard-{mode}" + ("-anderson" if opts.get("picard_anderson") else "") + \
                ("-newton" if opts.get("picard_newton") else "") + ("-default" if default else "")
            err = rel_error(out.x0, seq.x0)
            rows.append(dict(solver=name, setting=",".join(f"{k[7:]}={v}" for k, v in opts.items()) or "defaults",
                             rounds=int(out.rounds), nfe=int(out.nfe), error=err, seconds=sec,
                             versus=f"sequential {seq_name} 1000 steps",
                             **(dict(within=bool(err <= opts.get("picard_tol", 1e-3))) if default else {})))
    best_classic = min((rounds_to_target([r for r in rows if r["solver"] == s], TARGET) for s in
                        ("euler", "heun", "dpmpp-2m")), key=lambda t: t[0])
    coll = rounds_to_target([r for r in rows if r["solver"] == "collocation"], TARGET)
    picard_ok = {m: min([r["rounds"] for r in rows if r["solver"] == m and r["error"] <= PICARD_TARGET], default=None)
                 for m in PICARD_SERIES}
    summary = dict(dim=dim, ratio=ratio, components=components, reference_steps=int(ref_steps),
                   tolerances_held=all(r["within"] for r in rows if "within" in r),
                   classic_rounds_to_target=best_classic[0], classic_extrapolated=best_classic[1],
                   collocation_rounds_to_target=coll[0], collocation_extrapolated=coll[1],
                   collocation_round_ratio=coll[0] / best_classic[0],
                   **{f"{m.replace('-', '_')}_rounds_within_target": v for m, v in picard_ok.items()})
    return rows, summary


def plot(rows, dim, ratio, components, out_dir):
    """Error vs sequential rounds (log-log), one line per solver, with the two targets as dotted levels."""
    from diffcli.io.plot import save_line_plot

    series = {s: ([r["rounds"] for r in rows if r["solver"] == s], [r["error"] for r in rows if r["solver"] == s])
              for s in ("euler", "heun", "dpmpp-2m", "collocation") + PICARD_SERIES}
    path = os.path.join(out_dir, f"solvers_d{dim}_r{ratio:g}.png")
    save_line_plot(path, {k: v for k, v in series.items() if v[0]},
                   title=f"solvers on a 4-component GMM with exact score, d = {dim}, R/std = {ratio:g} (float64)\n"
                         "ODE solvers vs Dopri8; Picard vs sequential 1000-step DDIM (ode) / DDPM (sde)",
                   xlabel="sequential rounds (batched denoiser calls)",
                   ylabel="relative pathwise error (max over batch)",
                   hlines={f"collocation target {TARGET:g}": TARGET, f"Picard target {PICARD_TARGET:g}": PICARD_TARGET})
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="d=16 only and fewer settings")
    p.add_argument("--dims", help="comma list of dimensions (default 16,256,1024; quick 16)")
    p.add_argument("--testbeds", help="comma list of dim:ratio:components (overrides --dims)")
    p.add_argument("--out", help="result file name under benchmarks/results (default solvers.json)")
    p.add_argument("--resume", action="store_true", help="keep the testbeds already in the JSON and run the rest")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    dims = (16,) if args.quick else (16, 256, 1024)
    if args.dims:
        dims = tuple(int(v) for v in args.dims.split(","))
    beds = [(d, r, 4) for d in dims for r in (2.0, 5.0)] + ([] if args.quick else [(64, 6.0, 8)])
    if args.testbeds:
        beds = [(int(d), float(r), int(k)) for d, r, k in (t.split(":") for t in args.testbeds.split(","))]
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    all_rows, summaries, plots = [], [], []
    path = os.path.join(out_dir, args.out or ("solvers_quick.json" if args.quick else "solvers.json"))
    if args.resume and os.path.exists(path):
        with open(path) as f:
            done = json.load(f)
        all_rows, summaries = done["rows"], done["summary"]
        plots = [os.path.join(HERE, p) for p in done["plots"]]
    for dim, ratio, components in beds:
        if any(s["dim"] == dim and s["ratio"] == ratio and s.get("components", 4) == components
               for s in summaries):
            continue
        rows, summary = bench_testbed(dim, ratio, args.quick, components)
        jax.clear_caches()  # every setting compiles anew: a long run otherwise exhausts the process's memory maps
        for r in rows:
            r.update(dim=dim, ratio=ratio, components=components)
        all_rows += rows
        summaries.append(summary)
        plots.append(plot(rows, dim, ratio, components, out_dir))
        print(f"\nd={dim} R/std={ratio:g} components={components}  "
              f"(reference: Dopri8, {summary['reference_steps']} steps)")
        print(f"{'solver':20s} {'setting':44s} {'rounds':>7s} {'nfe':>7s} {'error':>10s}")
        for r in rows:
            print(f"{r['solver']:20s} {r['setting']:44s} {r['rounds']:7d} {r['nfe']:7d} {r['error']:10.3e}")
        print(json.dumps(summary), flush=True)
        # written after every testbed, so a run cut short keeps what it measured
        result = dict(benchmark="solvers", quick=args.quick, dtype="float64", batch=BATCH, radius=RADIUS,
                      sigma_max=SIGMA_MAX, sigma_min=SIGMA_MIN, machine=platform.machine(),
                      backend=jax.default_backend(), rows=all_rows, summary=summaries,
                      plots=[os.path.relpath(p, HERE) for p in plots])
        with open(path + ".part", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(path + ".part", path)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
