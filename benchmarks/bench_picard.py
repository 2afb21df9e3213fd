"""Picard rules like for like: rounds and evaluations each rule needs for a final error of 1e-2, 1e-3 and 1e-5.

Every run starts from the same x_T and draws the same step noise as the sequential sampler (1000-step DDPM for sde,
Euler/DDIM for ode); its final error is max over the batch of ||x - x_seq|| / ||x_seq||. Each rule sweeps its own
knob and, per target, the run with the fewest rounds that reaches the target is reported:
- diffcli (the default: window rule, quasi-Newton rounds), diffcli-plain (no quasi-Newton), diffcli-anderson
  (plain rounds, Anderson memory 2): the per-point tolerance p of the acceptance test swept (set directly, so values
  above POINT_TOL_MAX, which no --picard-tol reaches, are measured too);
- paradigms (--picard-rule paradigms, ParaDiGMS's iteration): its tolerance swept;
- piadm (fixed rounds per block, PIADM): --picard-iters swept.
The window rules use the default window ceil(steps / 2); piadm its default blocks of 32 steps. "diffcli@eps" is
the default run at --picard-tol eps (per-point tolerance point_tolerance(eps)), the setting a user writes: its
error must be within eps (the tolerance is a bound) and it must end in the sequential sample's mode. The goal's
check compares it with paradigms' best run: at most half the rounds and no more evaluations. The "bound" section
checks the tolerance for each safety factor S of SAFETIES (with the cap POINT_TOL_MAX): a run with per-point
tolerance p <= the cap is the run at --picard-tol S p, so it must end within S p and in the sequential sample's
mode for S to hold; runs above the cap are listed apart ("beyond_cap"). nfe counts every row evaluated (spare rows
of the last, shorter windows included); "points" counts real window points (ParaDiGMS's own count).
Testbeds: bench_solvers' Gaussian mixtures (TESTBEDS) with the exact denoiser (float64) and the empirical denoiser
over sklearn's digits (the exact score of the training set; its samples end on a training point, so its error is
0 in the sequential sample's mode and O(1) out of it).
Run: nice -n 5 python -m benchmarks.bench_picard [--quick] [--testbeds 16:2:4 --rules diffcli --out NAME]
     python -m benchmarks.bench_picard --merge a.json,b.json   (later files replace earlier rows of the same
     testbed, mode and rule)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.bench_solvers import TESTBEDS, karras, testbed
from diffcli.solvers import get_solver
from diffcli.solvers.options import PicardOptions
from diffcli.solvers.picard import POINT_TOL_MAX, TOL_SAFETY, make_plan, point_tolerance, run_plan

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = (1e-2, 1e-3, 1e-5)
SEQUENTIAL = {"sde": "ddpm", "ode": "euler"}
SAFETIES = (10.0, 5.0, 3.0)  # safety factors whose bound is checked (picard.TOL_SAFETY is one)
# per-point tolerances of the window rules: eps / S for every target and safety factor, and a decade either side
POINT_SWEEP = tuple(sorted({t / s for t in TARGETS for s in SAFETIES} | {1e-1, 3e-2, 1e-2, 3e-5, 1e-5, 1e-7},
                           reverse=True))
PLAIN_SWEEP = (3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)  # the slower plain rounds: fewer points
PARADIGMS_SWEEP = (10.0, 3.0, 1.0, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
ITERS_SWEEP = (2, 3, 4, 6, 8, 12, 16, 32)
RULES = {  # name -> (options, swept field, sweep)
    "diffcli": (dict(), "point_tol", POINT_SWEEP),
    "diffcli-plain": (dict(picard_newton=False), "point_tol", PLAIN_SWEEP),
    "diffcli-anderson": (dict(picard_newton=False, picard_anderson=2), "point_tol", PLAIN_SWEEP),
    "paradigms": (dict(picard_rule="paradigms"), "picard_tol", PARADIGMS_SWEEP),
    "piadm": (dict(picard_rule="blocks"), "picard_iters", ITERS_SWEEP),
}


def digits_testbed(batch=4, rows=500, seed=0):
    """The empirical (training-set) denoiser over `rows` sklearn digits in [-1, 1], 64-d, and x_T, keys."""
    from sklearn.datasets import load_digits

    from diffcli.denoisers.empirical import EmpiricalDenoiser

    data = load_digits().data[:rows].astype(np.float32) / 8.0 - 1.0
    den = EmpiricalDenoiser.from_data(data)
    x_t = 80.0 * jax.random.normal(jax.random.PRNGKey(seed), (batch, 64), jnp.float64)
    return den, x_t, jax.random.split(jax.random.PRNGKey(seed + 1), batch), data


def errors(x, ref):
    x, ref = np.asarray(x), np.asarray(ref)
    return np.linalg.norm(x - ref, axis=1) / np.linalg.norm(ref, axis=1)


def nearest(x, centres):
    x = np.asarray(x)
    return np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)


def sweep(den, x_t, keys, sig, mode, rule):
    """One compiled program per rule and mode; the swept value is a traced argument. Rows per sweep value."""
    opts, field, values = RULES[rule]
    k, dim = sig.shape[0] - 1, math.prod(x_t.shape[1:])
    sig_j = jnp.asarray(sig)

    def plan_for(value):
        if field == "point_tol":  # the acceptance test's tolerance itself
            return make_plan(PicardOptions(picard_mode=mode, **opts), k, dim)._replace(point_tol=value)
        return make_plan(PicardOptions(picard_mode=mode, **opts, **{field: value}), k, dim)

    base = plan_for(values[0])
    run = jax.jit(lambda tol, iters: run_plan(den, x_t, sig_j, keys, base._replace(point_tol=tol, iters=iters)))
    rows = []
    for v in values:
        p = plan_for(v)
        t0 = time.perf_counter()
        state = jax.block_until_ready(run(jnp.asarray(p.point_tol, x_t.dtype), jnp.asarray(p.iters, jnp.int32)))
        knob = dict(point_tol=p.point_tol) if field == "point_tol" else {field[7:]: v}
        rows.append(dict(rule=rule, mode=mode, **knob, rounds=int(state.rounds), nfe=int(state.evals),
                         points=int(state.points), x=np.asarray(state.xs[0]), seconds=time.perf_counter() - t0))
    return rows


def best_at(rows, target):
    ok = [r for r in rows if r["error"] <= target]
    return min(ok, key=lambda r: (r["rounds"], r["nfe"])) if ok else None


ORDER = [(m, r) for r in ("diffcli", "paradigms") for m in ("sde", "ode")] + \
    [(m, r) for r in ("piadm", "diffcli-plain", "diffcli-anderson") for m in ("sde", "ode")]


def bench_bed(name, den, x_t, keys, centres, steps, save=lambda rows: None, order=ORDER):
    """Every rule and mode on one testbed, the goal's pair (diffcli, paradigms) first; `save` gets the rows so far
    after each, so a run cut short keeps what it measured."""
    sig = karras(steps)
    out, seqs = [], {}
    for mode, rule in order:
        if mode not in seqs:
            seq = get_solver(SEQUENTIAL[mode])(den, x_t, jnp.asarray(sig), key=keys).x0
            seqs[mode] = seq, nearest(seq, centres)
        seq, seq_mode = seqs[mode]
        t0 = time.perf_counter()
        for r in sweep(den, x_t, keys, sig, mode, rule):
            x = r.pop("x")
            r.update(testbed=name, error=float(errors(x, seq).max()),
                     same_mode=bool(np.all(nearest(x, centres) == seq_mode)))
            out.append(r)
        print(f"  {name} {mode} {rule}: {time.perf_counter() - t0:.0f} s", flush=True)
        save(out)
    return out


def point_tol(row):
    """A window-rule row's per-point tolerance (rows written before it was recorded ran --picard-tol at factor 10)."""
    return row["point_tol"] if "point_tol" in row else row["tol"] / 10.0


def at_point_tol(rows, value):
    return next((r for r in rows if math.isclose(point_tol(r), value, rel_tol=1e-6)), None)


def default_at(rows, eps, safety=None):
    """The default rule's run at --picard-tol eps (with safety factor `safety` in place of TOL_SAFETY), if measured."""
    return at_point_tol(rows, point_tolerance(eps) if safety is None else min(eps / safety, POINT_TOL_MAX))


def summarise(rows, beds):
    """Per testbed, mode and target: each rule's fewest rounds (and its nfe), diffcli@eps (the default run at
    --picard-tol eps), the goal's check, and diffcli@eps's rounds at each safety factor of SAFETIES."""
    table = []
    for bed in beds:
        for mode in ("sde", "ode"):
            sub = [r for r in rows if r["testbed"] == bed and r["mode"] == mode]
            own = [r for r in sub if r["rule"] == "diffcli"]
            for target in TARGETS:
                line = dict(testbed=bed, mode=mode, target=target)
                for rule in RULES:
                    b = best_at([r for r in sub if r["rule"] == rule], target)
                    line[rule] = None if b is None else dict(rounds=b["rounds"], nfe=b["nfe"], error=b["error"])
                a = default_at(own, target)
                if a is not None:
                    line["diffcli@eps"] = dict(rounds=a["rounds"], nfe=a["nfe"], error=a["error"],
                                               within=a["error"] <= target, same_mode=a["same_mode"])
                    p = line["paradigms"]
                    if p is not None:
                        line["round_ratio"] = a["rounds"] / p["rounds"]
                        line["nfe_ratio"] = a["nfe"] / p["nfe"]
                        line["goal_met"] = bool(a["error"] <= target and 2 * a["rounds"] <= p["rounds"]
                                                and a["nfe"] <= p["nfe"])
                by_safety = {f"{s:g}": default_at(own, target, s) for s in SAFETIES}
                line["diffcli@eps_by_safety"] = {s: dict(rounds=r["rounds"], nfe=r["nfe"], error=r["error"])
                                                 for s, r in by_safety.items() if r is not None}
                table.append(line)
    return table


def bound_check(rows, beds):
    """Per safety factor S, testbed and mode: the worst error / (S p) over the default rule's runs with p <= the
    cap (S p is the --picard-tol each stands for), and whether all of them ended in the sequential sample's mode;
    S holds where the worst is <= 1 and no run changed mode. Runs above the cap (no --picard-tol reaches them) are
    listed under beyond_cap."""
    out = []
    for bed in beds:
        for mode in ("sde", "ode"):
            sub = [r for r in rows if r["testbed"] == bed and r["mode"] == mode and r["rule"] == "diffcli"]
            capped = [r for r in sub if point_tol(r) <= POINT_TOL_MAX * (1 + 1e-9)]
            if not capped:
                continue
            beyond = [dict(point_tol=point_tol(r), error=r["error"], same_mode=r["same_mode"])
                      for r in sub if r not in capped]
            for s in SAFETIES:
                worst = max(capped, key=lambda r: r["error"] / (s * point_tol(r)))
                ratio = worst["error"] / (s * point_tol(worst))
                same = all(r["same_mode"] for r in capped)
                out.append(dict(safety=s, testbed=bed, mode=mode, worst_ratio=ratio, at_tol=s * point_tol(worst),
                                same_mode=same, holds=bool(ratio <= 1 and same), beyond_cap=beyond))
    return sorted(out, key=lambda b: -b["safety"])


def print_table(table):
    cols = list(RULES) + ["diffcli@eps"]
    head = " ".join(f"{c:>17s}" for c in cols)
    print(f"{'testbed':14s} {'mode':4s} {'target':>7s} {head}  rounds/pdgm  nfe/pdgm")
    for line in table:
        cells = []
        for c in cols:
            v = line.get(c)
            cells.append(f"{'-':>17s}" if v is None else f"{v['rounds']:5d} r {v['nfe']:8d} e")
        extra = ""
        if "round_ratio" in line:
            extra = f"  {line['round_ratio']:10.2f}  {line['nfe_ratio']:8.2f}"
            extra += "" if line["diffcli@eps"]["within"] else "  (error over eps)"
        print(f"{line['testbed']:14s} {line['mode']:4s} {line['target']:7.0e} " + " ".join(cells) + extra)


def merge_rows(files):
    """Rows of several result files; a later file's rows replace earlier rows of the same testbed, mode and rule."""
    merged = {}
    for f in files:
        with open(f) as fh:
            rows = json.load(fh)["rows"]
        for key in dict.fromkeys((r["testbed"], r["mode"], r["rule"]) for r in rows):
            merged[key] = [r for r in rows if (r["testbed"], r["mode"], r["rule"]) == key]
    return [r for rows in merged.values() for r in rows]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="200 steps, the separated mixture only, diffcli and paradigms only, no digits")
    p.add_argument("--steps", type=int, help="grid steps (default 1000; quick 200)")
    p.add_argument("--testbeds", help="comma list of dim:ratio:components (default bench_solvers' TESTBEDS)")
    p.add_argument("--rules", help=f"comma list of rules to run (default all: {','.join(RULES)})")
    p.add_argument("--seed", type=int, default=0, help="the mixtures' noise seed (x_T and step noise; default 0)")
    p.add_argument("--no-digits", action="store_true", help="skip the empirical denoiser over digits")
    p.add_argument("--only-digits", action="store_true", help="the empirical denoiser over digits only")
    p.add_argument("--out", help="result file name under benchmarks/results")
    p.add_argument("--merge", help="comma list of result files to summarise into one table (runs nothing)")
    p.add_argument("--cut", help="what a full run would have measured and this one did not (recorded in the JSON)")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    steps = args.steps or (200 if args.quick else 1000)
    spec = args.testbeds or ("64:6:8" if args.quick else ",".join(f"{d}:{r:g}:{k}" for d, r, k in TESTBEDS))
    beds = [(int(d), float(r), int(k)) for d, r, k in (t.split(":") for t in spec.split(","))]
    beds = [] if args.only_digits else beds
    rules = args.rules.split(",") if args.rules else list(RULES)
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        p.error(f"unknown rule {unknown[0]}; choose from {', '.join(RULES)}")
    order = [(m, r) for m, r in (ORDER[:4] if args.quick else ORDER) if r in rules]
    if args.merge:  # summarise row files written by earlier runs (run side by side or rule by rule)
        rows = merge_rows(args.merge.split(","))
        write(rows, list(dict.fromkeys(r["testbed"] for r in rows)), steps, args.quick, args.out, args.cut)
        return
    rows, names = [], []
    path = os.path.join(HERE, "results", args.out or ("picard_quick.json" if args.quick else "picard.json"))

    def save(done):
        with open(path + ".part", "w") as f:
            json.dump(dict(benchmark="picard", steps=steps, rows=done), f)
        os.replace(path + ".part", path)

    for dim, ratio, comps in beds:
        den, x_t, keys = testbed(dim, ratio, comps, seed=args.seed)
        name = f"gmm{dim}-r{ratio:g}-k{comps}" + (f"-seed{args.seed}" if args.seed else "")
        rows += bench_bed(name, den, x_t, keys, np.asarray(den.means), steps, lambda r, done=list(rows): save(done + r),
                          order=order)
        names.append(name)
        jax.clear_caches()
        print(f"done {name}", flush=True)
    if not (args.quick or args.no_digits):
        den, x_t, keys, data = digits_testbed()
        rows += bench_bed("digits-500", den, x_t, keys, data, steps, lambda r, done=list(rows): save(done + r),
                          order=order)
        names.append("digits-500")
    write(rows, names, steps, args.quick, args.out, args.cut)


def missing_runs(rows, names):
    """(testbed, mode, rule) of the full protocol that the rows lack."""
    have = {(r["testbed"], r["mode"], r["rule"]) for r in rows}
    return [f"{b} {m} {r}" for b in names for m, r in ORDER if (b, m, r) not in have]


def write(rows, names, steps, quick, out=None, cut=None):
    table = summarise(rows, names)
    print(f"\nPicard rules at equal final error ({steps} steps, window {-(-steps // 2)}, batch 4, float64; cells: "
          f"fewest rounds r, evaluations e; diffcli@eps: the default at --picard-tol eps (TOL_SAFETY {TOL_SAFETY:g}, "
          f"per-point tolerance at most {POINT_TOL_MAX:g}); machine: 2-core AMD EPYC, CPU JAX)")
    print_table(table)
    bound = bound_check(rows, names)
    print(f"\n--picard-tol as a bound: worst final error / tolerance over the default rule's runs with per-point "
          f"tolerance <= {POINT_TOL_MAX:g}, per safety factor S; beyond the cap: per-point tolerance, error, same mode")
    for b in bound:
        beyond = "  ".join(f"{c['point_tol']:g}: {c['error']:.2g} {c['same_mode']}" for c in b["beyond_cap"])
        print(f"  S {b['safety']:4g}  {b['testbed']:14s} {b['mode']}  worst {b['worst_ratio']:.3f} "
              f"(at tol {b['at_tol']:.2g})  same mode {b['same_mode']}  holds {b['holds']}"
              + (f"  | beyond: {beyond}" if b["safety"] == SAFETIES[0] and beyond else ""))
    print("\ndiffcli@eps rounds per safety factor " + ", ".join(f"S {s:g}" for s in SAFETIES) + ":")
    for line in table:
        cells = [line["diffcli@eps_by_safety"].get(f"{s:g}") for s in SAFETIES]
        print(f"  {line['testbed']:14s} {line['mode']} {line['target']:7.0e}  "
              + "  ".join("-" if c is None else f"{c['rounds']:3d} r {c['nfe']:6d} e {c['error']:.1e}" for c in cells))
    path = os.path.join(HERE, "results", out or ("picard_quick.json" if quick else "picard.json"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    missing = missing_runs(rows, names)
    with open(path, "w") as f:
        json.dump(dict(benchmark="picard", quick=quick, steps=steps, targets=TARGETS,
                       tol_safety=TOL_SAFETY, point_tol_max=POINT_TOL_MAX,
                       machine="2-core AMD EPYC, CPU JAX " + platform.machine(),
                       backend=jax.default_backend(), cut=cut, missing=missing, bound=bound, table=table, rows=rows),
                  f, indent=1)
    print(f"\nwrote {path}" + (f" (missing: {', '.join(missing)})" if missing else ""))


if __name__ == "__main__":
    main()
