"""Error against the exact flow vs sequential rounds of every ODE solver, on GMMs with exact score (float64).

Testbeds: 4 equal-weight isotropic components, means on a sphere of radius R = 2, component std = R / ratio, in
d dimensions; and a well-separated one, 8 components with R/std = 6 in d = 64. EDM sigmas 80 -> 0.002. The error is
the relative pathwise distance max_b ||x_b - ref_b|| / ||ref_b|| to a diffrax Dopri8 solve (rtol = atol = 1e-12) of
the PF-ODE from the same initial noise, then the final denoise. Series (a line per solver in each testbed's PNG):
- classic solvers euler, heun, dpmpp-2m, dpmpp-3m, unipc over step counts (rounds = denoiser calls);
- collocation with its defaults over --colloc-tol (with whether the tolerance held), and its variants: 8 and 16
  nodes, the plain form, cold starts, and equal windows with fixed rounds.
The frontier: for each error level 1e-2 .. 1e-8, the rounds each family needs (classic solvers interpolated in
log-log between measured points, collocation as measured).
Run: python -m benchmarks.bench_solvers [--quick] [--resume] [--testbeds 16:2:4,64:6:8] [--out NAME]
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
CLASSIC = ("euler", "heun", "dpmpp-2m", "dpmpp-3m", "unipc")
LEVELS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
GOAL_LEVEL, GOAL_ROUNDS = 1e-3, 50  # collocation goal: 1e-3 within 50 rounds
MACHINE = "2-core AMD EPYC, CPU JAX, float64"
TESTBEDS = ((64, 6.0, 8), (16, 2.0, 4), (16, 5.0, 4), (256, 5.0, 4))  # the hardest first


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


def available(name):
    try:
        get_solver(name)
    except Exception:  # a solver not in this checkout is left out of the table
        return False
    return True


def classic_steps(quick):
    return (8, 16, 32, 64, 128, 256) if quick else \
        (6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 1024, 2048)


def collocation_series(quick):
    """(series name, list of option dicts) for the collocation defaults and its variants."""
    tols = (1e-2, 1e-4, 1e-6) if quick else (3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9)
    short = (1e-2, 1e-4, 1e-6) if quick else (1e-2, 1e-3, 1e-4, 1e-6, 1e-8)
    series = [("collocation", [dict(colloc_tol=t) for t in tols])]
    if quick:
        return series
    series += [("collocation-n8", [dict(colloc_tol=t, colloc_nodes=8) for t in short]),
               ("collocation-n16", [dict(colloc_tol=t, colloc_nodes=16) for t in short]),
               ("collocation-plain", [dict(colloc_tol=t, colloc_form="plain") for t in short]),
               ("collocation-cold", [dict(colloc_tol=t, colloc_warm=False) for t in short]),
               ("collocation-equal", [dict(colloc_windows=w, colloc_nodes=8, colloc_tol=t)
                                      for w, t in ((3, 1e-2), (4, 1e-3), (6, 1e-3), (6, 1e-5), (8, 1e-6))]),
               ("collocation-fixed", [dict(colloc_windows=w, colloc_nodes=8, colloc_iters=k)
                                      for w, k in ((6, 3), (6, 4), (8, 5), (20, 8))])]
    return series


def setting_name(opts):
    return ",".join(f"{k.removeprefix('colloc_')}={v:g}" if isinstance(v, float) else
                    f"{k.removeprefix('colloc_')}={v}" for k, v in opts.items()) or "defaults"


FIXED_SERIES = CLASSIC + ("collocation-equal", "collocation-fixed")  # series the window controller does not touch


def bench_testbed(dim, ratio, quick, components=4, reuse=(), only=None):
    """Rows and summary of one testbed; `reuse`: rows measured before for it (of FIXED_SERIES) that are kept;
    `only`: the collocation series to run (default all)."""
    den, x_t, keys = testbed(dim, ratio, components)
    rows = [dict(r) for r in reuse if r["solver"] in FIXED_SERIES]
    kept = {r["solver"] for r in rows}
    ref, ref_steps = reference_sample(den, x_t, karras(8), rtol=1e-12, atol=1e-12)
    for name in (s for s in CLASSIC if available(s) and s not in kept):
        for steps in classic_steps(quick):
            out, sec = run_solver(name, den, x_t, karras(steps), keys)
            rows.append(dict(solver=name, setting=f"steps={steps}", rounds=int(out.rounds), nfe=int(out.nfe),
                             error=rel_error(out.x0, ref), seconds=sec))
    for name, settings in collocation_series(quick):
        if name in kept or (only is not None and name not in only):
            continue
        for opts in settings:
            out, sec = run_solver("collocation", den, x_t, karras(8), keys, **opts)
            err = rel_error(out.x0, ref)
            row = dict(solver=name, setting=setting_name(opts), rounds=int(out.rounds), nfe=int(out.nfe), error=err,
                       seconds=sec, windows=int(out.aux["windows"]), rejected=int(out.aux["rejected"]))
            if "colloc_tol" in opts and "colloc_windows" not in opts:
                row["within"] = bool(err <= opts["colloc_tol"])
            rows.append(row)
    frontier = frontier_table(rows)
    summary = dict(dim=dim, ratio=ratio, components=components, reference_steps=int(ref_steps),
                   tolerances_held=all(r["within"] for r in rows if r["solver"] == "collocation" and "within" in r),
                   frontier=frontier,
                   goal_1e3_rounds=frontier[str(GOAL_LEVEL)]["collocation"],
                   goal_1e3_met=bool(frontier[str(GOAL_LEVEL)]["collocation"] <= GOAL_ROUNDS))
    return rows, summary


def rounds_measured(rows, level):
    """Fewest measured rounds at which a series is within `level` (inf if none)."""
    return float(min([r["rounds"] for r in rows if r["error"] <= level], default=float("inf")))


def rounds_interpolated(rows, level):
    """Rounds a classic series needs for `level`: log-log interpolation between its bracketing points (the most
    favourable reading), or past its last point the last local order's extrapolation (marked by the caller)."""
    rows = sorted(rows, key=lambda r: r["rounds"])
    for a, b in zip(rows, rows[1:], strict=False):
        if a["error"] > level >= b["error"]:
            t = np.log(a["error"] / level) / np.log(a["error"] / b["error"])
            return float(np.exp(np.log(a["rounds"]) + t * np.log(b["rounds"] / a["rounds"]))), False
    if rows and rows[0]["error"] <= level:
        return float(rows[0]["rounds"]), False
    a, b = rows[-2], rows[-1]
    order = np.log(a["error"] / b["error"]) / np.log(b["rounds"] / a["rounds"])
    if not order > 0.2:  # stalled (round-off or a floor): the level is out of reach
        return float("inf"), True
    return float(b["rounds"] * (b["error"] / level) ** (1 / order)), True


def frontier_table(rows):
    """{level: {series: rounds, ...}} with the best classic solver and the best collocation series named."""
    out = {}
    names = sorted({r["solver"] for r in rows}, key=[r["solver"] for r in rows].index)
    for level in LEVELS:
        entry = {}
        for s in names:
            mine = [r for r in rows if r["solver"] == s]
            if s in CLASSIC:
                entry[s], extrapolated = rounds_interpolated(mine, level)
                if extrapolated:
                    entry[s + "_extrapolated"] = True
            else:
                entry[s] = rounds_measured(mine, level)
        classic = [s for s in names if s in CLASSIC]
        colloc = [s for s in names if s.startswith("collocation")]
        best_c = min(classic, key=lambda s: entry[s])
        best_k = min(colloc, key=lambda s: entry[s])
        entry.update(best_classic=best_c, best_classic_rounds=entry[best_c], best_collocation=best_k,
                     best_collocation_rounds=entry[best_k],
                     defaults_beat_classic=bool(entry["collocation"] < entry[best_c]))
        out[str(level)] = entry
    return out


def finite(v):
    return v if np.isfinite(v) else None


def plot(rows, dim, ratio, components, out_dir):
    """Error vs sequential rounds (log-log), a line per solver."""
    from diffcli.io.plot import save_line_plot

    names = sorted({r["solver"] for r in rows}, key=[r["solver"] for r in rows].index)
    series = {}
    for s in names:
        pts = sorted((r["rounds"], r["error"]) for r in rows if r["solver"] == s)
        series[s] = ([p[0] for p in pts], [p[1] for p in pts])
    path = os.path.join(out_dir, f"solvers_d{dim}_r{ratio:g}_k{components}.png")
    save_line_plot(path, series,
                   title=f"ODE solvers on a {components}-component GMM with exact score, d = {dim}, R/std = {ratio:g}"
                         f"\nerror vs a float64 Dopri8 solve ({MACHINE})",
                   xlabel="sequential rounds (batched denoiser calls)",
                   ylabel="relative pathwise error (max over batch)",
                   hlines={f"goal {GOAL_LEVEL:g} in {GOAL_ROUNDS} rounds": GOAL_LEVEL})
    return path


def print_testbed(rows, summary):
    print(f"\nd={summary['dim']} R/std={summary['ratio']:g} components={summary['components']}  "
          f"(reference: Dopri8, {summary['reference_steps']} steps)")
    print(f"{'solver':20s} {'setting':36s} {'rounds':>7s} {'nfe':>7s} {'error':>10s}")
    for r in rows:
        extra = f"  within={r['within']}" if "within" in r else ""
        print(f"{r['solver']:20s} {r['setting']:36s} {r['rounds']:7d} {r['nfe']:7d} {r['error']:10.3e}{extra}")
    print("\nrounds to reach each error level (classic: interpolated; '~' extrapolated past the last point)")
    print(f"{'level':>7s} {'best classic':>22s} {'collocation':>12s} {'best collocation':>28s}")
    for level, e in summary["frontier"].items():
        mark = "~" if e.get(e["best_classic"] + "_extrapolated") else ""
        print(f"{float(level):7.0e} {e['best_classic']:>12s} {mark}{e['best_classic_rounds']:8.0f} "
              f"{e['collocation']:12.0f} {e['best_collocation']:>20s} {e['best_collocation_rounds']:7.0f}")


def clean(obj):
    """JSON without inf/NaN (null instead)."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clean(v) for v in obj]
    if isinstance(obj, float):
        return finite(obj)
    return obj


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="d=16 only and fewer settings")
    p.add_argument("--testbeds", help="comma list of dim:ratio:components (default 64:6:8,16:2:4,16:5:4,256:5:4)")
    p.add_argument("--out", help="result file name under benchmarks/results (default solvers.json)")
    p.add_argument("--resume", action="store_true", help="keep the testbeds already in the JSON and run the rest")
    p.add_argument("--reuse", help="a former result JSON: its rows of the classic solvers and of collocation with "
                                   "equal windows are kept (they do not depend on the window controller)")
    p.add_argument("--colloc-series", help="comma list of the collocation series to run (default all)")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    beds = [(16, 2.0, 4)] if args.quick else list(TESTBEDS)
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
    former = []
    if args.reuse:
        with open(args.reuse) as f:
            former = json.load(f)["rows"]
    for dim, ratio, components in beds:
        if any(s["dim"] == dim and s["ratio"] == ratio and s.get("components", 4) == components
               for s in summaries):
            continue
        reuse = [r for r in former if (r["dim"], r["ratio"], r["components"]) == (dim, ratio, components)]
        only = None if args.colloc_series is None else args.colloc_series.split(",")
        rows, summary = bench_testbed(dim, ratio, args.quick, components, reuse, only)
        jax.clear_caches()  # every setting compiles anew: a long run otherwise exhausts the process's memory maps
        for r in rows:
            r.update(dim=dim, ratio=ratio, components=components)
        all_rows += rows
        summaries.append(summary)
        plots.append(plot(rows, dim, ratio, components, out_dir))
        print_testbed(rows, summary)
        print(json.dumps(clean(summary)), flush=True)
        # written after every testbed, so a run cut short keeps what it measured
        result = dict(benchmark="solvers", quick=args.quick, dtype="float64", batch=BATCH, radius=RADIUS,
                      sigma_max=SIGMA_MAX, sigma_min=SIGMA_MIN, machine=MACHINE, platform=platform.machine(),
                      backend=jax.default_backend(), rows=all_rows, summary=summaries,
                      plots=[os.path.relpath(p, HERE) for p in plots])
        with open(path + ".part", "w") as f:
            json.dump(clean(result), f, indent=1)
        os.replace(path + ".part", path)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
