"""diffcli's device suite: every GPU measurement in one run of under 8 minutes, one JSON and a printed table.

Parts (each with a time budget; a part, or the rest of a part, whose budget is spent is skipped with a note):
1. roofline: float32 matmul at HIGHEST and DEFAULT (TF32 on GPU) precision, bfloat16 matmul, memory bandwidth;
2. fullscan: the exact empirical denoiser (N = 100k, 3x64x64, batch 64): achieved share of that roofline;
3. golden: GoldDiff at AFHQ size (shapes:res=64,n=15000, k 1000/2000, 10 vp-leading steps, batch 16), golden and
   the full-scan PCA-locality per step, r2 per step (the index is built in the background while parts 1-2 run, or
   read from --golden-index);
4. picard: 1000-step ddpm (sde) and euler (ode) against picard (defaults, picard_tol 1e-3) on a trained U-Net
   (trained here on shapes at 32 px, or --model), batch 1 and 16: wall-clock, rounds, nfe, measured distance;
5. collocation: against heun and dpmpp-2m at the same error of a 1000-step heun reference, same network;
6. sharding: empirical-sharded and golden-sharded over the local devices (skipped on one device).
The JSON (benchmarks/results/gpu_suite_<device>.json) is rewritten after every part, atomically.

    python -m benchmarks.gpu_suite            # on a GPU (refused on CPU)
    python -m benchmarks.gpu_suite --cpu      # reduced sizes on a CPU (gpu_suite_cpu.json)
    python -m benchmarks.gpu_suite --quick    # tiny sizes, well under a minute (the test's run)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("roofline", "fullscan", "golden", "picard", "collocation", "sharding")
TOTAL_S = 470.0  # the whole run, start-up included, stays under 8 minutes


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    budgets: dict  # part -> seconds
    roofline_n: int
    roofline_repeats: int
    bandwidth_mb: int
    fullscan_n: int
    fullscan_shape: tuple
    fullscan_batch: int
    fullscan_chunk: int
    fullscan_repeats: int
    golden_spec: str
    golden_k_min: int | None
    golden_k_max: int | None
    golden_steps: int
    golden_batch: int
    golden_full_queries: int
    golden_repeats: int
    net_dataset: str
    net_steps: int
    net_batch: int
    net_width: int | None
    net_heldout: int
    picard_steps: int
    picard_batches: tuple
    colloc_batch: int
    colloc_ref_steps: int
    colloc_ladder: tuple  # the first step counts of heun / dpmpp-2m; then aimed at collocation's error
    colloc_max_steps: int
    colloc_options: dict
    solver_runs: int  # timed runs of each solver after its ahead-of-time compile (the best is reported)
    sharding_on_one_device: bool = False
    total_s: float = TOTAL_S


PRESETS = {
    "gpu": Preset(
        name="gpu", budgets=dict(roofline=20, fullscan=55, golden=100, picard=180, collocation=90, sharding=45),
        roofline_n=8192, roofline_repeats=5, bandwidth_mb=2048,
        fullscan_n=100_000, fullscan_shape=(3, 64, 64), fullscan_batch=64, fullscan_chunk=2048, fullscan_repeats=2,
        golden_spec="shapes:res=64,n=15000", golden_k_min=1000, golden_k_max=2000, golden_steps=10, golden_batch=16,
        golden_full_queries=16, golden_repeats=1,
        net_dataset="shapes:res=32,n=6000", net_steps=600, net_batch=64, net_width=None, net_heldout=64,
        picard_steps=1000, picard_batches=(1, 16), colloc_batch=4, colloc_ref_steps=1000,
        colloc_ladder=(16, 64), colloc_max_steps=1024, colloc_options={}, solver_runs=2),
    "cpu": Preset(
        name="cpu", budgets=dict(roofline=30, fullscan=60, golden=240, picard=600, collocation=300, sharding=30),
        roofline_n=1024, roofline_repeats=3, bandwidth_mb=256,
        fullscan_n=20_000, fullscan_shape=(3, 32, 32), fullscan_batch=64, fullscan_chunk=2048, fullscan_repeats=2,
        golden_spec="shapes:res=16,n=2000", golden_k_min=100, golden_k_max=200, golden_steps=10, golden_batch=16,
        golden_full_queries=2, golden_repeats=1,
        net_dataset="digits", net_steps=400, net_batch=64, net_width=8, net_heldout=32,
        picard_steps=1000, picard_batches=(1, 16), colloc_batch=4, colloc_ref_steps=1000,
        colloc_ladder=(16, 64), colloc_max_steps=512, colloc_options={}, solver_runs=1, total_s=1500.0),
    "quick": Preset(
        name="quick", budgets=dict(roofline=60, fullscan=60, golden=120, picard=120, collocation=120, sharding=60),
        roofline_n=128, roofline_repeats=2, bandwidth_mb=4,
        fullscan_n=1000, fullscan_shape=(3, 8, 8), fullscan_batch=8, fullscan_chunk=256, fullscan_repeats=1,
        golden_spec="digits", golden_k_min=None, golden_k_max=None, golden_steps=3, golden_batch=4,
        golden_full_queries=2, golden_repeats=1,
        net_dataset="gmm:dim=8,n=256", net_steps=4, net_batch=32, net_width=16, net_heldout=8,
        picard_steps=16, picard_batches=(1,), colloc_batch=2, colloc_ref_steps=32, colloc_ladder=(4, 8),
        colloc_max_steps=8, colloc_options=dict(colloc_windows=6, colloc_nodes=4), solver_runs=1,
        sharding_on_one_device=True, total_s=900.0),
}
PRESET_NOTES = {
    "quick": "tiny sizes: the code paths, not figures (digits index; a vector MLP stands in for the U-Net)",
    "cpu": "reduced sizes for a CPU (digits U-Net, 16 px GoldDiff, N = 20k full scan at 32 px)",
    "gpu": "the issue's sizes",
}


def device_slug(kind: str, backend: str) -> str:
    if backend == "cpu":
        return "cpu"
    slug = re.sub(r"[^a-z0-9]+", "_", kind.lower().replace("nvidia", "")).strip("_")
    return slug or backend


def nvidia_smi() -> dict:
    """name, memory and driver from nvidia-smi, or 'n/a' where there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"name": "n/a", "memory": "n/a", "driver": "n/a"}
    try:
        text = subprocess.run([exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return {"name": "n/a", "memory": "n/a", "driver": "n/a", "error": str(e)}
    gpus = [[v.strip() for v in line.split(",")] for line in text.splitlines() if line.strip()]
    if not gpus or len(gpus[0]) < 3:
        return {"name": "n/a", "memory": "n/a", "driver": "n/a", "raw": text}
    return {"name": gpus[0][0], "memory": gpus[0][1], "driver": gpus[0][2], "count": len(gpus)}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def load_average():
    """The host's 1-minute load average (other work on a shared machine slows every timing), or None."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def machine_record(argv) -> dict:
    import jax
    import jaxlib

    dev = jax.devices()[0]
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # noqa: BLE001 - some backends do not report memory
        stats = {}
    return {
        "backend": jax.default_backend(), "device_kind": dev.device_kind, "devices": jax.device_count(),
        "local_devices": jax.local_device_count(), "device_memory_bytes": stats.get("bytes_limit"),
        "nvidia_smi": nvidia_smi(), "host_cpu": cpu_name(), "host_cpus": os.cpu_count(),
        "host_memory_bytes": host_memory_bytes(), "load_average_at_start": load_average(),
        "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "diffcli": os.path.dirname(os.path.abspath(__import__("diffcli").__file__)),
        "command": " ".join(shlex.quote(a) for a in getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "suite_arguments": list(argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


class Context:
    """What the parts share: the preset, the arguments, the JSON writer, the roofline, the golden preparation (in a
    background thread on a GPU) and the trained network."""

    def __init__(self, preset: Preset, args, result: dict, path: str):
        import jax

        self.preset, self.args, self.result, self.path = preset, args, result, path
        self.backend = jax.default_backend()
        self.device_label = f"{jax.devices()[0].device_kind} ({self.backend})"
        self.roofline = None
        self._golden = None
        self._golden_log: list[str] = []
        self._net = None

    # -- output
    def save(self) -> None:
        """Write the JSON to a temporary name and rename it (and to --mirror, likewise)."""
        text = json.dumps(finite(self.result), indent=1, default=jsonable, allow_nan=False)
        mirror = [os.path.join(self.args.mirror, os.path.basename(self.path))] if self.args.mirror else []
        for path in [self.path] + mirror:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.part"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)

    # -- the golden preparation (index, golden, full scan, empirical)
    def start_golden(self, background: bool) -> None:
        from benchmarks.gpu_parts import prepare_golden

        p = self.preset

        def work():
            return prepare_golden(p.golden_spec, self.args.golden_index, p.golden_k_min, p.golden_k_max, p.golden_steps,
                                  report=lambda m: self._golden_log.append(f"{time.perf_counter() - t0:6.1f}s {m}"))

        t0 = time.perf_counter()
        self._golden_start, self._golden_background = t0, background
        if background:  # a daemon thread: a build still running when the suite ends does not hold the exit
            fut = self._golden = concurrent.futures.Future()

            def target():
                try:
                    fut.set_result(work())
                except BaseException as e:  # noqa: BLE001 - handed to the part that waits for it
                    fut.set_exception(e)

            threading.Thread(target=target, name="golden-prep", daemon=True).start()
        else:
            self._golden = work

    def golden_running(self) -> bool:
        return isinstance(self._golden, concurrent.futures.Future) and not self._golden.done()

    def golden_prepared(self, budget, out: dict):
        """The prepared golden pieces, waiting at most what the budget leaves (minus time to measure); None after
        a skip note."""
        from benchmarks.gpu_parts import skip_part

        if self._golden is None:
            self.start_golden(background=False)
        if callable(self._golden):  # synchronous: build now, inside this part's budget
            fn, self._golden = self._golden, concurrent.futures.Future()
            try:
                self._golden.set_result(fn())
            except Exception as e:  # noqa: BLE001
                self._golden.set_exception(e)
        waited = time.perf_counter()
        try:
            prep = self._golden.result(timeout=max(0.0, budget.left() - 0.35 * budget.seconds))
        except concurrent.futures.TimeoutError:
            out["preparation_log"] = list(self._golden_log)
            skip_part(out, f"the index / golden build had not finished {time.perf_counter() - self._golden_start:.0f}"
                                " s after it started (background); pass --golden-index PATH built beforehand with "
                                f"`diffcli index-build --dataset {self.preset.golden_spec}`")
            return None
        out["preparation_wait_s"] = time.perf_counter() - waited
        out["preparation_log"] = list(self._golden_log)
        out["preparation"] = ("in a background thread from the start of the run" if self._golden_background
                              else "inside this part's budget")
        return prep

    # -- the trained network of parts 4 and 5
    def network(self, out: dict):
        from benchmarks.gpu_parts import train_network

        if self._net is None:
            t0 = time.perf_counter()
            den, shape, info = train_network(self, out)
            info["seconds_in_part"] = time.perf_counter() - t0
            self._net = (den, shape, info)
            out["network"] = info
        else:
            out["network"] = {**self._net[2], "reused": True}
        return self._net


def finite(v):
    """The result with NaN and infinities as null (strict JSON)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [finite(x) for x in v]
    return v


def jsonable(v):
    import numpy as np

    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def run_part(ctx: Context, name: str, fn, budget_s: float) -> dict:
    from benchmarks.gpu_parts import Budget

    out: dict = {"status": "running", "budget_s": budget_s}
    ctx.result["parts"][name] = out
    if budget_s <= 1:
        out.update(status="skipped", note="no time left in the run's total budget")
        ctx.save()
        return out
    if ctx.golden_running() and name != "golden":
        out["concurrent"] = "the golden index build ran in a background thread during this part"
    budget = Budget(budget_s)
    cpu0 = time.process_time()
    print(f"== {name} (budget {budget_s:.0f} s)", flush=True)
    try:
        fn(ctx, out, budget)
        if out["status"] == "running":
            out["status"] = "partial" if out.get("skipped") else "done"
    except Exception as e:  # noqa: BLE001 - one part's failure must not lose the others
        out.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
        print(out["traceback"], file=sys.stderr, flush=True)
    out["elapsed_s"] = budget.used()
    out["process_cpu_s"] = time.process_time() - cpu0  # this process's CPU time (a shared machine's wall time varies)
    out["load_average_after"] = load_average()
    ctx.save()
    print(f"   {name}: {out['status']} in {out['elapsed_s']:.1f} s ({out['process_cpu_s']:.1f} s CPU)", flush=True)
    return out


def fmt(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def summary_line(name: str, out: dict) -> str:
    """The part's headline figures, one line."""
    g = out.get
    if name == "roofline":
        return (f"f32 HIGHEST {fmt(g('matmul_f32_highest_tflops'))} TF/s, "
                f"f32 DEFAULT {fmt(g('matmul_f32_default_tflops'))}, bf16 {fmt(g('matmul_bf16_tflops'))} TF/s; "
                f"copy {fmt(g('copy_gbs'))} GB/s, read {fmt(g('read_gbs'))} GB/s")
    if name == "fullscan":
        return (f"N={g('n')} D={g('dim')} B={g('batch')}: {fmt(g('seconds'))} s/call, {fmt(g('tflops'))} TF/s "
                f"= {fmt(100 * g('share_of_f32_highest_matmul', 0), '.0f')}% of f32 HIGHEST, "
                f"{fmt(g('gbs'))} GB/s = {fmt(100 * g('share_of_bandwidth', 0), '.1f')}% of bandwidth; "
                f"distance matmul {fmt(100 * g('distance_share_of_f32_highest_matmul', 0), '.0f')}%")
    if name == "golden":
        return (f"{g('dataset')}: golden {fmt(g('golden_total_s'))} s vs full-scan pca-local "
                f"{fmt(g('pca_local_full_total_s'))} s over {len(g('steps') or [])} steps "
                f"({fmt(g('speedup_vs_pca_local'), '.1f')}x), min r2 {fmt(g('r2_min_over_steps'), '.4f')}")
    if name == "picard":
        parts = [f"b{r['batch']} {r['mode']}: seq {r['seq']['seconds']:.2f}s, picard "
                 + (f"{r['picard']['seconds']:.2f}s ({r['picard']['rounds']} rounds, {r['speedup']:.2f}x, "
                    f"dist {r['picard']['distance_max']:.1e})" if r.get("picard") else "-")
                 for r in g("rows") or []]
        return "; ".join(parts) or "-"
    if name == "collocation":
        c = g("collocation") or {}
        m = g("match") or {}
        bits = [f"collocation {fmt(c.get('seconds'))} s at error {fmt(c.get('error'), '.2e')} "
                f"({c.get('rounds')} rounds)"]
        for k, v in m.items():
            if v.get("steps_at_target") is not None:
                bits.append(f"{k} {v['steps_at_target']:.0f} steps {fmt(v['seconds_at_target'])} s"
                            f"{' (extrapolated)' if v.get('extrapolated') else ''}")
        return "; ".join(bits)
    if name == "sharding":
        return (f"{g('devices')} devices: empirical {fmt(g('empirical_s'))} -> {fmt(g('empirical_sharded_s'))} s, "
                f"golden {fmt(g('golden_s'))} -> {fmt(g('golden_sharded_s'))} s")
    return ""


def print_tables(result: dict) -> None:
    m = result["machine"]
    print(f"\ndiffcli device suite on {m['device_kind']} ({m['backend']}, {m['local_devices']} local device(s)), "
          f"preset {result['preset']}, jax {m['jax']}, {m['date']}")
    print(f"{'part':12s} {'status':8s} {'s':>6s} {'budget':>6s}  figures")
    for name in PARTS:
        out = result["parts"].get(name)
        if out is None:
            continue
        line = summary_line(name, out) if out["status"] in ("done", "partial") else \
            (out.get("note") or out.get("error") or "; ".join(out.get("skipped", [])))
        print(f"{name:12s} {out['status']:8s} {out.get('elapsed_s', 0):6.1f} {out['budget_s']:6.0f}  {line}")
    pic = result["parts"].get("picard", {})
    if pic.get("rows"):
        print("\npicard vs sequential (same noise and keys)")
        print(f"{'batch':>5s} {'mode':4s} {'seq s':>8s} {'seq comp':>8s} {'pic s':>8s} {'pic comp':>8s} "
              f"{'rounds':>6s} {'nfe':>6s} {'dist':>8s} {'speedup':>7s} {'evals/round':>11s} {'evals/s pic':>11s} "
              f"{'evals/s seq':>11s}")
        for r in pic["rows"]:
            s, q = r["seq"], r.get("picard")
            if q is None:
                continue
            print(f"{r['batch']:>5d} {r['mode']:4s} {s['seconds']:8.3f} {s['compile_s']:8.2f} {q['seconds']:8.3f} "
                  f"{q['compile_s']:8.2f} {q['rounds']:6d} {q['nfe']:6d} {q['distance_max']:8.1e} {r['speedup']:7.2f} "
                  f"{q['evals_per_round']:11.0f} {q['evals_per_s']:11.0f} {s['evals_per_s']:11.0f}")
        goal = pic.get("goal", {})
        print(f"goal: {goal.get('speedup_at_batch_1')}x at batch 1 ({goal.get('note')}); "
              f"measured {goal.get('measured')}")
    col = result["parts"].get("collocation", {})
    if col.get("collocation"):
        c = col["collocation"]
        print(f"\ncollocation vs classic solvers (error vs {col['reference']}, batch {col['batch']})")
        print(f"{'solver':12s} {'steps':>6s} {'rounds':>6s} {'nfe':>6s} {'error':>9s} {'seconds':>8s} {'compile':>8s}")
        print(f"{'collocation':12s} {'-':>6s} {c['rounds']:6d} {c['nfe']:6d} {c['error']:9.2e} {c['seconds']:8.3f} "
              f"{c['compile_s']:8.2f}")
        for name, rows in col.get("classic", {}).items():
            for r in rows:
                print(f"{name:12s} {r['steps']:6d} {r['rounds']:6d} {r['nfe']:6d} {r['error']:9.2e} "
                      f"{r['seconds']:8.3f} {r['compile_s']:8.2f}")
        for name, mt in col.get("match", {}).items():
            print(f"  {name} at collocation's error: {mt}")
    gold = result["parts"].get("golden", {})
    if gold.get("steps"):
        print(f"\ngolden per step ({gold['dataset']}, batch {gold['batch']}, k {gold['k_min']}..{gold['k_max']})")
        print(f"{'step':>4s} {'sigma':>9s} {'golden_s':>9s} {'pca_full_s':>10s} {'empirical_s':>11s} {'r2_min':>8s}")
        for r in gold["steps"]:
            print(f"{r['step']:>4d} {r['sigma']:9.4g} {r['golden_s']:9.4f} {r['pca_local_full_s']:10.3f} "
                  f"{r['empirical_s']:11.4f} {r['r2_min']:8.4f}")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny sizes, any device (well under a minute)")
    size.add_argument("--cpu", action="store_true", help="reduced sizes for a CPU (a few minutes per part)")
    ap.add_argument("--parts", help=f"comma list of parts to run (default all: {','.join(PARTS)})")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/gpu_suite_<device>[_<preset>].json)")
    ap.add_argument("--mirror", help="also write the JSON into this folder after every part (e.g. $OUT)")
    ap.add_argument("--model", help="a network file from `diffcli train` for parts 4-5 (default: train one here)")
    ap.add_argument("--model-dir", help="keep the network trained here in this folder (default: a temporary one)")
    ap.add_argument("--golden-index", help="a prebuilt index for part 3 (default: build or reuse the spec's default)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the parts already in the JSON that --parts does not select (a run in pieces)")
    ap.add_argument("--total", type=float, help="seconds for the whole run (default: the preset's)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every part's budget")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    t_start = time.perf_counter()
    args = parse_args(argv)
    import jax

    from benchmarks import gpu_parts

    gpu_parts.import_all()  # every module a part uses, before any clock starts

    backend = jax.default_backend()
    devs = jax.devices()
    print(f"running on {len(devs)} x {devs[0].device_kind} ({backend}); jax {jax.__version__}", flush=True)
    preset_name = "quick" if args.quick else "cpu" if args.cpu else "gpu"
    if preset_name == "gpu" and backend != "gpu":
        print(f"no GPU here (jax.devices() = {devs}); pass --cpu for the CPU sizes or --quick.", file=sys.stderr)
        raise SystemExit(2)
    preset = PRESETS[preset_name]
    parts = PARTS if not args.parts else tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}.", file=sys.stderr)
        raise SystemExit(2)
    slug = device_slug(devs[0].device_kind, backend)
    natural = "gpu" if backend == "gpu" else "cpu"
    suffix = "" if preset_name == natural else f"_{preset_name}"
    path = args.out or os.path.join(HERE, "results", f"gpu_suite_{slug}{suffix}.json")
    result = {"benchmark": "gpu_suite", "device": devs[0].device_kind if backend != "cpu" else "cpu",
              "backend": backend, "preset": preset_name, "preset_note": PRESET_NOTES[preset_name],
              "preset_sizes": {k: v for k, v in dataclasses.asdict(preset).items()},
              "machine": machine_record(argv), "parts": {}}
    if args.resume and os.path.exists(path):
        with open(path) as f:
            earlier = json.load(f)
        if earlier.get("preset") != preset_name or earlier.get("device") != result["device"]:
            print(f"{path} holds another preset or device; not resuming it.", file=sys.stderr)
            raise SystemExit(2)
        result["parts"] = {k: v for k, v in earlier.get("parts", {}).items()
                           if k not in parts and v.get("status") in ("done", "partial")}
        result["earlier_runs"] = earlier.get("earlier_runs", []) + [
            {**earlier["machine"], "parts": sorted(result["parts"])}]
    ctx = Context(preset, args, result, path)
    ctx.save()
    total = args.total or preset.total_s
    fns = {name: getattr(gpu_parts, f"part_{name}") for name in PARTS}
    # on a GPU the golden index is built by the host's cores while parts 1-2 keep the device busy (a part that ran
    # beside it says so); on a CPU that would share the cores being measured, so it is built inside part 3's budget
    order = [p for p in ("roofline", "fullscan", "golden", "picard", "collocation", "sharding") if p in parts]
    if backend != "cpu" and ("golden" in parts or "sharding" in parts):
        ctx.start_golden(background=True)
    try:
        for name in order:
            left = total - (time.perf_counter() - t_start)
            run_part(ctx, name, fns[name], min(preset.budgets[name] * args.scale, left))
        for name in PARTS:
            if name not in parts and name not in result["parts"]:
                result["parts"][name] = {"status": "skipped", "note": "not selected (--parts)", "budget_s": 0}
        result["parts"] = {name: result["parts"][name] for name in PARTS}
    finally:
        result["total_s"] = time.perf_counter() - t_start
        ctx.save()
    print_tables(result)
    print(f"\nwrote {path} ({result['total_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
