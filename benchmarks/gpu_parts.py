"""The measurements of benchmarks/gpu_suite.py, one function per part: `part(ctx, out, budget)` fills the dict `out`
as it goes (so a part stopped by its budget keeps what it measured) and records what it skipped, and why, in
out["skipped"]. Timings block on the result; compile time is measured apart (ahead-of-time lower + compile).
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.bench_golden import call as denoiser_call
from benchmarks.bench_golden import full_scan_like


class Budget:
    """A part's time budget on the wall clock: `allows(estimate)` before each measurement, `left()` seconds."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.start = time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.used()

    def allows(self, estimate: float) -> bool:
        return self.left() >= estimate


def import_all() -> None:
    """Import every diffcli module the parts use (imports stay out of the parts' clocks)."""
    import diffcli.data  # noqa: F401
    import diffcli.denoisers.empirical  # noqa: F401
    import diffcli.denoisers.golden  # noqa: F401
    import diffcli.denoisers.neural  # noqa: F401
    import diffcli.denoisers.pca_local  # noqa: F401
    import diffcli.index.build  # noqa: F401
    import diffcli.metrics.fidelity  # noqa: F401
    import diffcli.models.saved  # noqa: F401
    import diffcli.parallel.denoiser  # noqa: F401
    import diffcli.parallel.golden  # noqa: F401
    import diffcli.sample.batches  # noqa: F401
    import diffcli.schedules  # noqa: F401
    import diffcli.solvers  # noqa: F401
    import diffcli.train.loop  # noqa: F401


def skip(out: dict, what: str, why: str) -> None:
    """Record that `what` was not measured, and why (the part goes on)."""
    out.setdefault("skipped", []).append(f"{what}: {why}")


def skip_part(out: dict, why: str) -> None:
    """Record that the whole part was not measured, and why."""
    out["status"] = "skipped"
    out["note"] = why


def over_budget(budget: Budget, estimate: float) -> str:
    return f"not run, {budget.left():.0f} s of the part's budget left and about {estimate:.0f} s needed"


def block(x):
    return jax.block_until_ready(x)


def run_times(fn, runs: int):
    """(last result, [seconds of each of `runs` calls])."""
    times, out = [], None
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        out = block(fn())
        times.append(time.perf_counter() - t0)
    return out, times


def median(v) -> float:
    return float(np.median(np.asarray(v)))


# -- 1. roofline ------------------------------------------------------------------------------------------------
def part_roofline(ctx, out: dict, budget: Budget) -> None:
    """float32 matmul at HIGHEST and DEFAULT precision, bfloat16 matmul, and memory bandwidth (copy and read)."""
    p = ctx.preset
    n = p.roofline_n
    key = jax.random.PRNGKey(0)
    a32 = jax.random.normal(key, (n, n), jnp.float32)
    b32 = jax.random.normal(jax.random.fold_in(key, 1), (n, n), jnp.float32)
    cases = {
        "f32_highest": (lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST), a32, b32),
        "f32_default": (lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.DEFAULT), a32, b32),
        "bf16": (lambda a, b: jnp.matmul(a, b), a32.astype(jnp.bfloat16), b32.astype(jnp.bfloat16)),
    }
    out["matmul_n"] = n
    ref = np.asarray(a32[:64], np.float64) @ np.asarray(b32, np.float64)
    for name, (fn, a, b) in cases.items():
        if not budget.allows(2.0):
            skip(out, f"matmul {name}", over_budget(budget, 2.0))
            continue
        f = jax.jit(fn)
        block(f(a, b))  # compile and warm up
        res, times = run_times(lambda f=f, a=a, b=b: f(a, b), p.roofline_repeats)
        err = float(np.linalg.norm(np.asarray(res[:64], np.float64) - ref) / np.linalg.norm(ref))
        out[f"matmul_{name}_tflops"] = 2 * n**3 / median(times) / 1e12
        out[f"matmul_{name}_rel_error"] = err
        ctx.save()
    words = p.bandwidth_mb * 2**20 // 4
    v = jax.random.normal(key, (words,), jnp.float32)
    if budget.allows(2.0):
        copy = jax.jit(lambda v: v * 1.0001 + 0.5)  # reads and writes every element once
        read = jax.jit(lambda v: jnp.sum(v))
        block(copy(v))
        block(read(v))
        _, tc = run_times(lambda: copy(v), p.roofline_repeats)
        _, tr = run_times(lambda: read(v), p.roofline_repeats)
        out["bandwidth_bytes"] = words * 4
        out["copy_gbs"] = 2 * words * 4 / median(tc) / 1e9  # bytes read + bytes written
        out["read_gbs"] = words * 4 / median(tr) / 1e9
        out["bandwidth_gbs"] = max(out["copy_gbs"], out["read_gbs"])  # the ceiling the shares are taken of
    else:
        skip(out, "bandwidth", over_budget(budget, 2.0))
    ctx.roofline = out


# -- 2. exact empirical full scan -------------------------------------------------------------------------------
def part_fullscan(ctx, out: dict, budget: Budget) -> None:
    """The exact empirical denoiser over N random image rows: achieved FLOP/s and bytes/s against the roofline."""
    from diffcli.denoisers.empirical import EmpiricalDenoiser

    p = ctx.preset
    n, dim, batch, chunk = p.fullscan_n, int(np.prod(p.fullscan_shape)), p.fullscan_batch, p.fullscan_chunk
    k = -(-n // chunk)
    out.update(n=n, shape=list(p.fullscan_shape), dim=dim, batch=batch, chunk=chunk, sigma=0.5)

    @jax.jit
    def make_rows(key):  # 8-bit levels in [-1, 1], as images are stored; padding rows weigh 0 (half norm +inf)
        u = jax.random.randint(key, (k, chunk, dim), 0, 256).astype(jnp.float32) / 127.5 - 1.0
        ok = (jnp.arange(k * chunk) < n).reshape(k, chunk)
        u = jnp.where(ok[..., None], u, 0.0)
        return u, jnp.where(ok, 0.5 * jnp.sum(u * u, axis=-1), jnp.inf)

    chunks, half = make_rows(jax.random.PRNGKey(0))
    den = EmpiricalDenoiser(chunks, half)
    x = chunks[0, :batch].reshape(batch, dim) + 0.5 * jax.random.normal(jax.random.PRNGKey(1), (batch, dim))
    flops, nbytes = 4.0 * batch * n * dim, 4.0 * n * dim
    f = jax.jit(lambda d, x: d(x, 0.5))
    t0 = time.perf_counter()
    block(f(den, x))
    out["first_call_s"] = time.perf_counter() - t0
    est = out["first_call_s"]
    times = []
    for _ in range(p.fullscan_repeats):
        if times and not budget.allows(times[-1] * 1.2):
            break
        times.extend(run_times(lambda: f(den, x), 1)[1])
    out.update(seconds=min(times), runs=len(times), flops=flops, bytes=nbytes)
    out["tflops"] = flops / min(times) / 1e12
    out["gbs"] = nbytes / min(times) / 1e9
    roof = ctx.roofline or {}
    if "matmul_f32_highest_tflops" in roof:
        out["share_of_f32_highest_matmul"] = out["tflops"] / roof["matmul_f32_highest_tflops"]
    if "bandwidth_gbs" in roof:
        out["share_of_bandwidth"] = out["gbs"] / roof["bandwidth_gbs"]
        bound = min(roof.get("matmul_f32_highest_tflops", np.inf) * 1e12, flops / nbytes * roof["bandwidth_gbs"] * 1e9)
        out["roofline_bound_s"] = flops / bound
    ctx.save()
    if not budget.allows(est * 2):
        skip(out, "distance matmul alone", over_budget(budget, est * 2))
        return

    @jax.jit
    def distances(chunks, x):  # the distance matmul of the scan alone (x @ rows^T per chunk), full float32

        def body(m, xs):
            return jnp.maximum(m, jnp.max(jnp.matmul(x, xs.T, precision=jax.lax.Precision.HIGHEST), axis=1)), None

        return jax.lax.scan(body, jnp.full((x.shape[0],), -jnp.inf), chunks)[0]

    block(distances(chunks, x))
    _, td = run_times(lambda: distances(chunks, x), max(1, len(times)))
    dflops = 2.0 * batch * n * dim
    out["distance_seconds"] = min(td)
    out["distance_tflops"] = dflops / min(td) / 1e12
    if "matmul_f32_highest_tflops" in roof:
        out["distance_share_of_f32_highest_matmul"] = out["distance_tflops"] / roof["matmul_f32_highest_tflops"]
    if "bandwidth_gbs" in roof:
        out["distance_share_of_bandwidth"] = nbytes / min(td) / 1e9 / roof["bandwidth_gbs"]


# -- 3. GoldDiff at AFHQ size -----------------------------------------------------------------------------------
def prepare_golden(spec: str, index_path: str | None, k_min, k_max, steps: int, report) -> dict:
    """Index (built if missing), golden, the full-scan PCA-locality with golden's masks, and empirical: built once,
    possibly in a background thread while other parts run; returns them with the seconds each build took."""
    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import GoldenOptions, StreamOptions
    from diffcli.index import open_index
    from diffcli.index.build import ensure_index
    from diffcli.schedules import get_schedule

    t0 = time.perf_counter()
    path = index_path or ensure_index(spec, report=report)
    idx = open_index(path)
    t1 = time.perf_counter()
    sigmas = get_schedule("vp-leading", steps)
    golden = build_denoiser("golden", idx, GoldenOptions(sigmas=sigmas, golden_base="pca-local", golden_k_min=k_min,
                                                         golden_k_max=k_max))
    t2 = time.perf_counter()
    full = full_scan_like(golden, idx)
    emp = build_denoiser("empirical", idx, StreamOptions())
    return {"index": idx, "index_path": str(path), "sigmas": sigmas, "golden": golden, "full": full, "empirical": emp,
            "index_s": t1 - t0, "golden_build_s": t2 - t1, "full_build_s": time.perf_counter() - t2}


def timed_call(den, x, s, keys, repeats: int):
    """(result, best seconds of `repeats` calls) after one untimed call (compiled on first use)."""
    out = block(denoiser_call(den, x, s, keys))
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = block(denoiser_call(den, x, s, keys))
        best = min(best, time.perf_counter() - t0)
    return out, best


def part_golden(ctx, out: dict, budget: Budget) -> None:
    """bench_golden's protocol (vp-leading DDIM steps, the golden trajectory): per step golden, the full-scan
    PCA-locality (on `full_queries` queries, scaled to the batch) and empirical times, and r2 of golden vs the scan."""
    from diffcli.metrics.fidelity import per_sample_r2
    from diffcli.sample.batches import initial_noise, solver_keys

    p = ctx.preset
    out.update(dataset=p.golden_spec, batch=p.golden_batch, steps_planned=p.golden_steps, schedule="vp-leading",
               full_scan_timed_queries=p.golden_full_queries)
    prep = ctx.golden_prepared(budget, out)
    if prep is None:
        return
    idx, golden, full, emp, sigmas = (prep[k] for k in ("index", "golden", "full", "empirical", "sigmas"))
    out.update(n=idx.n, dim=idx.dim, k_min=int(golden.plan.k_min), k_max=int(golden.plan.k_max),
               index_path=prep["index_path"],
               index_s=prep["index_s"], golden_build_s=prep["golden_build_s"], full_build_s=prep["full_build_s"],
               mask_widths=[int(w) for w in golden.plan.masks.widths], steps=[])
    batch, fq = p.golden_batch, min(p.golden_full_queries, p.golden_batch)
    ids = np.arange(batch)
    x = float(sigmas[0]) * initial_noise(0, ids, idx.shape)
    keys = solver_keys(0, ids)
    last = 0.0
    for i in range(len(sigmas) - 1):
        if not budget.allows(last * 1.2):
            skip(out, f"steps {i}..{len(sigmas) - 2}", over_budget(budget, last * 1.2))
            break
        t_step = time.perf_counter()
        s, s_next = jnp.float32(sigmas[i]), float(sigmas[i + 1])
        kk = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)
        d_gold, t_gold = timed_call(golden, x, s, kk, p.golden_repeats)
        _, t_emp = timed_call(emp, x, s, kk, p.golden_repeats)
        d_full, t_full = timed_call(full, x[:fq], s, kk[:fq], 1)
        g = np.asarray(d_gold[:fq]).reshape(fq, -1)
        f = np.asarray(d_full).reshape(fq, -1)
        r2 = per_sample_r2(g, f)
        out["steps"].append({"step": i, "sigma": float(s), "golden_s": t_gold, "pca_local_full_s": t_full * batch / fq,
                             "empirical_s": t_emp, "r2_mean": float(np.nanmean(r2)), "r2_min": float(np.nanmin(r2)),
                             "max_abs_dev": float(np.abs(g - f).max())})
        x = d_gold + (s_next / float(s)) * (x - d_gold)
        last = time.perf_counter() - t_step
        ctx.save()
    rows = out["steps"]
    if rows:
        out["golden_total_s"] = sum(r["golden_s"] for r in rows)
        out["pca_local_full_total_s"] = sum(r["pca_local_full_s"] for r in rows)
        out["speedup_vs_pca_local"] = out["pca_local_full_total_s"] / out["golden_total_s"]
        out["r2_min_over_steps"] = min(r["r2_min"] for r in rows)


# -- 4 and 5. the trained network -------------------------------------------------------------------------------
def train_network(ctx, out: dict) -> tuple:
    """(denoiser, shape, info): the network of --model, else one trained here with diffcli's train loop."""
    import os
    import tempfile

    from diffcli.denoisers.neural import load_neural

    p = ctx.preset
    if ctx.args.model:
        from diffcli.models.saved import load_model

        _, config, saved = load_model(ctx.args.model)
        info = {"model": ctx.args.model, "trained_here": False, "shape": list(config.shape),
                "config": config.to_json(), "how_trained": saved}
        return load_neural(ctx.args.model), tuple(config.shape), info
    from diffcli.data import load_dataset
    from diffcli.index.store import to_data_space
    from diffcli.train.loop import TrainSettings, train

    t0 = time.perf_counter()
    ds = load_dataset(p.net_dataset)
    shape = tuple(int(s) for s in ds.train.shape[1:])
    train_x = to_data_space(ds.train).reshape(len(ds.train), *shape)
    held = to_data_space(ds.heldout[: p.net_heldout]).reshape(-1, *shape)
    folder = ctx.args.model_dir or tempfile.mkdtemp(prefix="diffcli-gpu-suite-")
    os.makedirs(folder, exist_ok=True)
    settings = TrainSettings(steps=p.net_steps, batch_size=p.net_batch, warmup=max(1, p.net_steps // 10),
                             save_every=10**9, width=p.net_width, seed=0)
    res = train(train_x, held, settings, out=os.path.join(folder, "network.eqx"), dataset=p.net_dataset,
                log_every=max(1, p.net_steps // 4))
    info = {"model": res["model"], "trained_here": True, "dataset": p.net_dataset, "shape": list(shape),
            "steps": p.net_steps, "batch_size": p.net_batch, "final_loss": res["final_loss"],
            "config": res["config"], "train_s": res["seconds"], "train_total_s": time.perf_counter() - t0}
    return load_neural(res["model"]), shape, info


class Solve:
    """One solver on one denoiser and batch, compiled ahead of time (compile_s), then called."""

    def __init__(self, name: str, denoiser, x_t, sigmas, keys, **options):
        from diffcli.solvers import get_solver

        solver = get_solver(name)
        params, static = eqx.partition(denoiser, eqx.is_array)
        fn = jax.jit(lambda p, x, s, k: solver(eqx.combine(p, static), x, s, key=k, **options))
        self.args = (params, x_t, jnp.asarray(sigmas, jnp.float32), keys)
        t0 = time.perf_counter()
        self.exe = fn.lower(*self.args).compile()
        self.compile_s = time.perf_counter() - t0

    def run(self, runs: int):
        """(SampleResult, [seconds per run])."""
        return run_times(lambda: self.exe(*self.args), runs)


def rel_distance(x, ref) -> np.ndarray:
    """||x_b - ref_b|| / ||ref_b|| per sample."""
    a = np.asarray(x, np.float64).reshape(len(x), -1)
    b = np.asarray(ref, np.float64).reshape(len(ref), -1)
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def start_noise(sigmas, shape, batch: int, seed: int = 0):
    from diffcli.sample.batches import initial_noise, solver_keys

    ids = np.arange(batch)
    return float(sigmas[0]) * initial_noise(seed, ids, shape), solver_keys(seed, ids)


def measure_solver(name, den, x_t, sigmas, keys, runs: int, **options) -> tuple:
    """(SampleResult, row dict with compile_s, seconds (best run), runs, rounds, nfe)."""
    s = Solve(name, den, x_t, sigmas, keys, **options)
    res, times = s.run(runs)
    row = {"compile_s": s.compile_s, "seconds": min(times), "run_s": times, "rounds": int(np.max(res.rounds)),
           "nfe": int(np.max(res.nfe))}
    return res, row


def timing_note(runs: int) -> str:
    return (f"compile: ahead of time (lower + compile), reported apart; then {runs} run(s) from the same compiled "
            "program, the best reported" + (" (the first is the warm-up)" if runs > 1 else ""))


PICARD_TOL = 1e-3
PICARD_GOAL = 4.0  # speed-up of Picard over the sequential sampler at batch 1 (a GPU goal)


def part_picard(ctx, out: dict, budget: Budget) -> None:
    """Sequential ddpm (sde) and euler (ode) against picard (its defaults, picard_tol 1e-3) from the same noise and
    keys: wall-clock, rounds, nfe, the measured distance, speed-up and evaluations per round."""
    from diffcli.schedules import get_schedule

    p = ctx.preset
    den, shape, info = ctx.network(out)
    if den is None:
        return
    steps = p.picard_steps
    sigmas = get_schedule("edm", steps)
    out.update(schedule="edm", steps=steps, picard_options={"picard_tol": PICARD_TOL, "others": "defaults"},
               timing=timing_note(p.solver_runs), rows=[])
    seen = {}  # (kind, mode) -> (compile seconds, seconds per run) at the last batch size measured
    runs = p.solver_runs

    def need(kind, mode, scale=1.0):
        c, r = seen.get((kind, mode), (0.0, 0.0))
        return c + runs * r * scale

    for batch in p.picard_batches:
        x_t, keys = start_noise(sigmas, shape, batch)
        for mode, seq_name in (("sde", "ddpm"), ("ode", "euler")):
            if not budget.allows(need("seq", mode) + need("picard", mode)):
                skip(out, f"batch {batch} {mode}", over_budget(budget, need("seq", mode) + need("picard", mode)))
                continue
            row = {"batch": batch, "mode": mode, "sequential": seq_name}
            seq, srow = measure_solver(seq_name, den, x_t, sigmas, keys, runs)
            # picard's run time at this batch, from how the sequential sampler's time grew with the batch
            grow = srow["seconds"] / seen[("seq", mode)][1] if ("seq", mode) in seen else 1.0
            seen[("seq", mode)] = (srow["compile_s"], srow["seconds"])
            row["seq"] = srow
            if not budget.allows(need("picard", mode, grow)):
                row["picard"] = None
                skip(out, f"batch {batch} {mode} picard", over_budget(budget, need("picard", mode, grow)))
                out["rows"].append(row)
                continue
            pic, prow = measure_solver("picard", den, x_t, sigmas, keys, runs, picard_mode=mode,
                                       picard_tol=PICARD_TOL)
            seen[("picard", mode)] = (prow["compile_s"], prow["seconds"])
            dist = rel_distance(pic.x0, seq.x0)
            prow.update(distance_max=float(dist.max()), distance_mean=float(dist.mean()),
                        within_tol=bool(dist.max() <= PICARD_TOL),
                        seconds_per_round=prow["seconds"] / max(prow["rounds"], 1),
                        evals_per_round=prow["nfe"] * batch / max(prow["rounds"], 1),
                        evals_per_s=prow["nfe"] * batch / prow["seconds"])
            srow.update(seconds_per_round=srow["seconds"] / max(srow["rounds"], 1),
                        evals_per_s=srow["nfe"] * batch / srow["seconds"])
            row.update(picard=prow, speedup=srow["seconds"] / prow["seconds"])
            out["rows"].append(row)
            ctx.save()
    one = [r for r in out["rows"] if r["batch"] == 1 and r.get("picard")]
    out["goal"] = {"speedup_at_batch_1": PICARD_GOAL, "measured": {r["mode"]: r["speedup"] for r in one},
                   "met": {r["mode"]: r["speedup"] >= PICARD_GOAL for r in one}, "device": ctx.device_label,
                   "note": "a GPU goal" + ("" if ctx.backend == "gpu" else
                                           "; measured on CPU, where parallel rounds cannot help")}


def part_collocation(ctx, out: dict, budget: Budget) -> None:
    """Collocation (its defaults) against heun and dpmpp-2m at growing step counts, all measured against a 1000-step
    heun reference from the same noise; the classic solver's wall-clock at collocation's error."""
    from diffcli.schedules import get_schedule

    p = ctx.preset
    den, shape, info = ctx.network(out)
    if den is None:
        return
    batch = p.colloc_batch
    ref_sig = get_schedule("edm", p.colloc_ref_steps)
    x_t, keys = start_noise(ref_sig, shape, batch)
    out.update(batch=batch, schedule="edm", reference=f"heun {p.colloc_ref_steps} steps",
               collocation_options=p.colloc_options or "defaults", timing=timing_note(p.solver_runs))
    t0 = time.perf_counter()
    ref, rrow = measure_solver("heun", den, x_t, ref_sig, keys, 1)
    out["reference_row"] = rrow
    unit = time.perf_counter() - t0
    ctx.save()
    if not budget.allows(unit):
        skip(out, "collocation", over_budget(budget, unit))
        return
    col, crow = measure_solver("collocation", den, x_t, get_schedule("edm", 16), keys, p.solver_runs,
                               **p.colloc_options)
    crow["error"] = float(rel_distance(col.x0, ref.x0).max())
    out["collocation"] = crow
    target = crow["error"]
    ctx.save()
    for name in ("heun", "dpmpp-2m"):
        rows = out.setdefault("classic", {}).setdefault(name, [])
        for steps in ladder(rows, p.colloc_ladder, p.colloc_max_steps, target):
            need = (rows[-1]["compile_s"] + rows[-1]["seconds"] * steps / rows[-1]["steps"] * (p.solver_runs + 1)) \
                if rows else 1.0
            if not budget.allows(need):
                skip(out, f"{name} at {steps} steps", over_budget(budget, need))
                break
            res, row = measure_solver(name, den, x_t, get_schedule("edm", steps), keys, p.solver_runs)
            row.update(steps=steps, error=float(rel_distance(res.x0, ref.x0).max()))
            rows.append(row)
            ctx.save()
        out.setdefault("match", {})[name] = match_error(rows, target, crow["seconds"])


def ladder(rows: list[dict], start: tuple, max_steps: int, target: float):
    """Step counts to measure (each compiles anew, so few): the `start` counts, then the count where the last two
    points' log-log line meets `target` (10% over), until one measured point reaches the target or max_steps."""
    for steps in start:
        if rows and rows[-1]["error"] <= target:
            return
        yield steps
    while rows and rows[-1]["error"] > target and rows[-1]["steps"] < max_steps:
        guess = loglog_steps(rows[-2], rows[-1], target) if len(rows) >= 2 else 2 * rows[-1]["steps"]
        nxt = int(min(max_steps, max(rows[-1]["steps"] + 1, np.ceil(1.1 * guess)))) if np.isfinite(guess) else max_steps
        yield nxt


def match_error(rows: list[dict], target: float, colloc_seconds: float) -> dict:
    """Steps and seconds at which a classic solver reaches `target`: the first measured step count, else the last
    two points extrapolated in log-log (marked); seconds scale with steps from the nearest measurement."""
    if not rows:
        return {"reached": False, "note": "no step count was measured"}
    rows = sorted(rows, key=lambda r: r["steps"])
    hit = [r for r in rows if r["error"] <= target]
    if hit:
        r = hit[0]
        steps, seconds, extrapolated = float(r["steps"]), r["seconds"], False
        if rows.index(r) > 0:  # interpolate between the bracketing points
            a = rows[rows.index(r) - 1]
            steps = float(min(r["steps"], loglog_steps(a, r, target)))
            seconds = r["seconds"] * steps / r["steps"]
    elif len(rows) >= 2:
        steps, extrapolated = float(loglog_steps(rows[-2], rows[-1], target)), True
        seconds = rows[-1]["seconds"] * steps / rows[-1]["steps"]
    else:
        return {"reached": False, "note": "one step count measured, target not reached"}
    if not np.isfinite(steps):
        return {"reached": False, "note": "the error did not fall between the last two step counts"}
    return {"reached": bool(hit), "extrapolated": extrapolated, "steps_at_target": steps, "seconds_at_target": seconds,
            "collocation_speedup": seconds / colloc_seconds}


def loglog_steps(a: dict, b: dict, target: float) -> float:
    """Step count where the line through (log steps, log error) of a and b meets log target (inf if not falling)."""
    ea, eb = max(a["error"], 1e-30), max(b["error"], 1e-30)
    if not eb < ea:
        return float("inf")
    order = np.log(ea / eb) / np.log(b["steps"] / a["steps"])
    return float(b["steps"] * (eb / target) ** (1 / order))


# -- 6. sharding ------------------------------------------------------------------------------------------------
def part_sharding(ctx, out: dict, budget: Budget) -> None:
    """empirical-sharded and golden-sharded over the local devices beside their one-device forms (one call each at a
    middle step of the golden protocol's schedule)."""
    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import GoldenOptions, StreamOptions
    from diffcli.sample.batches import initial_noise, solver_keys

    devices = jax.local_devices()
    out["devices"] = len(devices)
    if len(devices) < 2 and not ctx.preset.sharding_on_one_device:
        skip_part(out, f"one local device ({devices[0].device_kind}): nothing to shard over")
        return
    if len(devices) < 2:
        out["note"] = "one device: this checks the code path only (--quick)"
    prep = ctx.golden_prepared(budget, out)
    if prep is None:
        return
    p = ctx.preset
    idx, sigmas = prep["index"], prep["sigmas"]
    batch = p.golden_batch
    ids = np.arange(batch)
    i = (len(sigmas) - 1) // 2
    s = jnp.float32(sigmas[i])
    x = s * initial_noise(0, ids, idx.shape)
    keys = solver_keys(0, ids)
    out.update(n=idx.n, dim=idx.dim, batch=batch, sigma=float(s))
    _, out["empirical_s"] = timed_call(prep["empirical"], x, s, keys, p.golden_repeats)
    t0 = time.perf_counter()
    sharded = build_denoiser("empirical-sharded", idx, StreamOptions())
    out["empirical_sharded_build_s"] = time.perf_counter() - t0
    _, out["empirical_sharded_s"] = timed_call(sharded, x, s, keys, p.golden_repeats)
    ctx.save()
    need = prep["golden_build_s"] * 1.5
    if not budget.allows(need):
        skip(out, "golden-sharded", over_budget(budget, need))
        return
    golden = prep["golden"]
    _, out["golden_s"] = timed_call(golden, x, s, keys, p.golden_repeats)
    t0 = time.perf_counter()
    gs = build_denoiser("golden-sharded", idx, GoldenOptions(sigmas=sigmas, golden_base="pca-local",
                                                            golden_k_min=int(golden.plan.k_min),
                                                            golden_k_max=int(golden.plan.k_max)))
    out["golden_sharded_build_s"] = time.perf_counter() - t0
    _, out["golden_sharded_s"] = timed_call(gs, x, s, keys, p.golden_repeats)
    out["empirical_speedup"] = out["empirical_s"] / out["empirical_sharded_s"]
    out["golden_speedup"] = out["golden_s"] / out["golden_sharded_s"]
