"""Picard rules like for like: rounds and evaluations each rule needs for a final error of 1e-2, 1e-3 and 1e-5.

Every run starts from the same x_T and draws the same step noise as the sequential sampler (1000-step DDPM for sde,
Euler/DDIM for ode); its final error is max over the batch of ||x - x_seq|| / ||x_seq||. Each rule sweeps its own
knob and, per target, the run with the fewest rounds that reaches the target is reported:
- diffcli (the default: window rule, quasi-Newton rounds), diffcli-plain (no quasi-Newton), diffcli-anderson
  (plain rounds, Anderson memory 2): --picard-tol swept;
- paradigms (--picard-rule paradigms, ParaDiGMS's iteration): its tolerance swept;
- piadm (fixed rounds per block, PIADM): --picard-iters swept.
The window rules use the default window ceil(steps / 2); piadm its default blocks of 32 steps. "diffcli@eps" is
the default run at --picard-tol eps, the setting a user writes: its error must be within eps (the tolerance is a
bound) and it must end in the sequential sample's mode. The goal's check compares it with paradigms' best run:
at most half the rounds and no more evaluations. nfe counts every row evaluated (spare rows of the last, shorter
windows included); "points" counts real window points (ParaDiGMS's own count).
Testbeds: bench_solvers' Gaussian mixtures with the exact denoiser (float64) and the empirical denoiser over
sklearn's digits (the exact score of the training set).
Run: nice -n 5 python -m benchmarks.bench_picard [--quick]
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

from benchmarks.bench_solvers import karras, testbed
from diffcli.solvers import get_solver
from diffcli.solvers.options import PicardOptions
from diffcli.solvers.picard import make_plan, run_plan

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = (1e-2, 1e-3, 1e-5)
SEQUENTIAL = {"sde": "ddpm", "ode": "euler"}
TOL_SWEEP = (3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
PARADIGMS_SWEEP = (1.0, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
ITERS_SWEEP = (2, 3, 4, 6, 8, 12, 16, 32)
RULES = {  # name -> (options, swept field, sweep)
    "diffcli": (dict(), "picard_tol", TOL_SWEEP),
    "diffcli-plain": (dict(picard_newton=False), "picard_tol", TOL_SWEEP),
    "diffcli-anderson": (dict(picard_newton=False, picard_anderson=2), "picard_tol", TOL_SWEEP),
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
        return make_plan(PicardOptions(picard_mode=mode, **opts, **{field: value}), k, dim)

    base = plan_for(values[0])
    run = jax.jit(lambda tol, iters: run_plan(den, x_t, sig_j, keys, base._replace(point_tol=tol, iters=iters)))
    rows = []
    for v in values:
        p = plan_for(v)
        t0 = time.perf_counter()
        state = jax.block_until_ready(run(jnp.asarray(p.point_tol, x_t.dtype), jnp.asarray(p.iters, jnp.int32)))
        rows.append(dict(rule=rule, mode=mode, **{field[7:]: v}, rounds=int(state.rounds), nfe=int(state.evals),
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


def summarise(rows, beds):
    """Per testbed, mode and target: each rule's fewest rounds (and its nfe), diffcli@eps, and the goal's check."""
    table = []
    for bed in beds:
        for mode in ("sde", "ode"):
            sub = [r for r in rows if r["testbed"] == bed and r["mode"] == mode]
            for target in TARGETS:
                line = dict(testbed=bed, mode=mode, target=target)
                for rule in RULES:
                    b = best_at([r for r in sub if r["rule"] == rule], target)
                    line[rule] = None if b is None else dict(rounds=b["rounds"], nfe=b["nfe"], error=b["error"])
                at = [r for r in sub if r["rule"] == "diffcli" and math.isclose(r["tol"], target)]
                if at:
                    a = at[0]
                    line["diffcli@eps"] = dict(rounds=a["rounds"], nfe=a["nfe"], error=a["error"],
                                               within=a["error"] <= target, same_mode=a["same_mode"])
                    p = line["paradigms"]
                    if p is not None:
                        line["round_ratio"] = a["rounds"] / p["rounds"]
                        line["nfe_ratio"] = a["nfe"] / p["nfe"]
                        line["goal_met"] = bool(a["error"] <= target and 2 * a["rounds"] <= p["rounds"]
                                                and a["nfe"] <= p["nfe"])
                table.append(line)
    return table


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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="200 steps, the separated mixture only, diffcli and paradigms only, no digits")
    p.add_argument("--steps", type=int, help="grid steps (default 1000; quick 200)")
    p.add_argument("--testbeds", help="comma list of dim:ratio:components (default 16:2:4,16:5:4,64:6:8)")
    p.add_argument("--no-digits", action="store_true", help="skip the empirical denoiser over digits")
    p.add_argument("--only-digits", action="store_true", help="the empirical denoiser over digits only")
    p.add_argument("--out", help="result file name under benchmarks/results")
    p.add_argument("--merge", help="comma list of result files to summarise into one table (runs nothing)")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    steps = args.steps or (200 if args.quick else 1000)
    spec = args.testbeds or ("64:6:8" if args.quick else "16:2:4,16:5:4,64:6:8")
    beds = [(int(d), float(r), int(k)) for d, r, k in (t.split(":") for t in spec.split(","))]
    beds = [] if args.only_digits else beds
    if args.merge:  # summarise row files written by earlier runs (one testbed each, run side by side)
        rows = []
        for f in args.merge.split(","):
            with open(f) as fh:
                rows += json.load(fh)["rows"]
        write(rows, list(dict.fromkeys(r["testbed"] for r in rows)), steps, args.quick, args.out)
        return
    rows, names = [], []
    path = os.path.join(HERE, "results", args.out or ("picard_quick.json" if args.quick else "picard.json"))

    def save(done):
        with open(path + ".part", "w") as f:
            json.dump(dict(benchmark="picard", steps=steps, rows=done), f)
        os.replace(path + ".part", path)

    for dim, ratio, comps in beds:
        den, x_t, keys = testbed(dim, ratio, comps)
        name = f"gmm{dim}-r{ratio:g}-k{comps}"
        rows += bench_bed(name, den, x_t, keys, np.asarray(den.means), steps, lambda r, done=list(rows): save(done + r),
                          order=ORDER[:4] if args.quick else ORDER)
        names.append(name)
        jax.clear_caches()
        print(f"done {name}", flush=True)
    if not (args.quick or args.no_digits):
        den, x_t, keys, data = digits_testbed()
        rows += bench_bed("digits-500", den, x_t, keys, data, steps, lambda r, done=list(rows): save(done + r),
                          order=ORDER[:4] if args.quick else ORDER)
        names.append("digits-500")
    write(rows, names, steps, args.quick, args.out)


def write(rows, names, steps, quick, out=None):
    table = summarise(rows, names)
    print(f"\nPicard rules at equal final error ({steps} steps, window {-(-steps // 2)}, batch 4, float64; cells: "
          f"fewest rounds r, evaluations e; machine: 2-core AMD EPYC, CPU JAX)")
    print_table(table)
    path = os.path.join(HERE, "results", out or ("picard_quick.json" if quick else "picard.json"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(dict(benchmark="picard", quick=quick, steps=steps, targets=TARGETS,
                       machine="2-core AMD EPYC, CPU JAX " + platform.machine(), backend=jax.default_backend(),
                       table=table, rows=rows), f, indent=1)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
