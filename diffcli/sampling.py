"""`sample` as a library call: settings -> index, denoiser, schedule, solver -> samples.h5 (+ grid.png)."""

from __future__ import annotations

import os

import jax
import numpy as np

from diffcli import __version__
from diffcli.errors import UsageError

SAMPLE_OPTIONS = (
    "dataset", "denoiser", "solver", "schedule", "steps", "num_samples", "seed", "batch_size", "sigma_min",
    "sigma_max", "rho", "chunk_size", "base", "mask_threshold", "golden_k_min", "golden_k_max", "golden_tol",
    "golden_coarse", "golden_nprobe", "els_patch_sizes", "model", "eta", "picard_mode", "picard_blocks",
    "picard_iters", "picard_tol", "picard_window", "picard_anderson", "picard_newton", "colloc_nodes", "colloc_iters",
    "colloc_tol", "colloc_windows",
)
DEFAULT_STEPS = 18
SOLVER_OPTIONS = (
    "eta", "picard_mode", "picard_blocks", "picard_iters", "picard_tol", "picard_window", "picard_anderson",
    "picard_newton", "colloc_nodes", "colloc_iters", "colloc_tol", "colloc_windows",
)


def check_settings(s: dict) -> None:
    """Usage errors for numbers out of range (unknown names are caught by the registries)."""
    for key in ("steps", "num_samples", "batch_size", "chunk_size"):
        if s.get(key) is not None and int(s[key]) < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be at least 1 (got {s[key]}).")
    if s.get("sigma_min") is not None and s.get("sigma_max") is not None and not 0 < s["sigma_min"] < s["sigma_max"]:
        raise UsageError("--sigma-min must be positive and below --sigma-max.")


def parse_patch_sizes(text) -> tuple[int, ...] | None:
    if text is None or isinstance(text, (list, tuple)):
        return None if text is None else tuple(int(v) for v in text)
    try:
        return tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise UsageError(f"--els-patch-sizes '{text}' is not a comma-separated list of whole numbers.") from None


def open_or_build_index(settings: dict, *, index_path, root, report):
    """The index named by --index, or the default index of --dataset (built on first use)."""
    from diffcli.index import open_index
    from diffcli.index.build import ensure_index

    if index_path is None:
        index_path = ensure_index(settings["dataset"], root=root, report=report)
    return open_index(index_path), index_path


def denoiser_options(settings: dict, sigmas) -> object:
    from diffcli.denoisers.options import DenoiserOptions

    return DenoiserOptions(
        sigmas=np.asarray(sigmas),
        chunk_size=int(settings["chunk_size"]),
        seed=int(settings["seed"]),
        base=settings["base"],
        mask_threshold=settings.get("mask_threshold"),
        golden_k_min=settings.get("golden_k_min"),
        golden_k_max=settings.get("golden_k_max"),
        golden_tol=settings.get("golden_tol"),
        golden_coarse=bool(settings.get("golden_coarse")),
        golden_nprobe=settings.get("golden_nprobe"),
        els_patch_sizes=parse_patch_sizes(settings.get("els_patch_sizes")),
        model_path=settings.get("model"),
    )


def check_cluster_denoiser(name: str) -> None:
    if name not in ("empirical", "empirical-sharded"):
        raise UsageError(f"multi-host runs shard the index for the empirical denoiser only (not '{name}'); "
                         "spread other denoisers over hosts with --shard I/N.")


def cluster_denoiser(settings: dict, *, index_path, root, report):
    """Multi-process: the exact empirical denoiser over the whole cluster, each host reading only its own rows.

    Returns (denoiser, index path, index metadata). Other denoisers would need the whole index on every host;
    seed sharding (--shard I/N) spreads those over a cluster instead.
    """
    from diffcli.index.build import ensure_index
    from diffcli.index.store import index_attrs
    from diffcli.parallel.distributed import host_sharded_denoiser

    check_cluster_denoiser(settings["denoiser"])
    if index_path is None:
        index_path = ensure_index(settings["dataset"], root=root, report=report)
    attrs = index_attrs(index_path)
    return host_sharded_denoiser(index_path, chunk=int(settings["chunk_size"])), index_path, attrs


def run_sample(settings: dict, *, index_path=None, root=None, out_dir: str, report=lambda m: None,
               progress_cls=None) -> dict:
    """Sample as `settings` say, write out_dir/samples.h5 (+ grid.png for images) and return a summary."""
    from diffcli.denoisers import denoiser_factory
    from diffcli.io.images import save_grid
    from diffcli.io.samples import write_samples
    from diffcli.pipeline import generate, shard_ids
    from diffcli.schedules import get_schedule, looks_like_path
    from diffcli.solvers import get_solver

    check_settings(settings)
    solver = get_solver(settings["solver"])
    make_denoiser = denoiser_factory(settings["denoiser"])  # unknown names fail before any index work
    steps = settings.get("steps")
    if steps is None and not looks_like_path(settings["schedule"]):
        steps = DEFAULT_STEPS  # a schedule file brings its own number of steps
    sigmas = get_schedule(settings["schedule"], steps, sigma_min=float(settings["sigma_min"]),
                          sigma_max=float(settings["sigma_max"]), rho=float(settings["rho"]))
    if jax.process_count() > 1:
        denoiser, index_path, attrs = cluster_denoiser(settings, index_path=index_path, root=root, report=report)
    else:
        index, index_path = open_or_build_index(settings, index_path=index_path, root=root, report=report)
        denoiser, attrs = make_denoiser(index, denoiser_options(settings, sigmas)), index.attrs
    shape, kind = tuple(int(v) for v in attrs["shape"]), attrs["kind"]
    ids = shard_ids(int(settings["num_samples"]), settings.get("shard"))
    solver_options = {k: settings.get(k) for k in SOLVER_OPTIONS}
    if progress_cls is None:
        run = generate(denoiser=denoiser, solver=solver, sigmas=sigmas, shape=shape, ids=ids,
                       seed=int(settings["seed"]), batch_size=int(settings["batch_size"]), solver_options=solver_options)
    else:
        with progress_cls("sampling", len(ids)) as bar:
            run = generate(denoiser=denoiser, solver=solver, sigmas=sigmas, shape=shape, ids=ids,
                           seed=int(settings["seed"]), batch_size=int(settings["batch_size"]),
                           solver_options=solver_options, progress=bar.advance)
    recorded = {k: v for k, v in settings.items() if k != "shard"}
    recorded.update(index=os.path.abspath(index_path), dataset=attrs.get("dataset"), diffcli_version=__version__,
                    shard=None if settings.get("shard") is None else "{}/{}".format(*settings["shard"]),
                    nfe=run.nfe, rounds=run.rounds)
    samples_path = os.path.join(out_dir, "samples.h5")
    grid = os.path.join(out_dir, "grid.png") if kind == "image" else None
    if jax.process_index() == 0:  # every process holds the same samples; one writes them
        write_samples(samples_path, samples=run.samples.reshape(len(ids), *shape), noise=run.noise, ids=run.ids,
                      settings=recorded, sigmas=sigmas)
        if grid is not None:
            save_grid(grid, run.samples.reshape(len(ids), *shape)[:256])
    steps = max(len(sigmas) - 1, 1)
    return {"n": len(ids), "nfe": run.nfe, "rounds": run.rounds, "seconds": round(run.seconds, 4),
            "seconds_per_step": round(run.seconds / steps, 6), "out": os.path.abspath(samples_path),
            "grid": None if grid is None else os.path.abspath(grid), "index": os.path.abspath(index_path)}
