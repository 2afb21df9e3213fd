"""A sampling run as a library call: settings -> index, denoiser, schedule, solver -> samples.h5 (+ grid.png)."""

from __future__ import annotations

import dataclasses
import os

import jax

from diffcli import __version__
from diffcli.errors import UsageError
from diffcli.sample.settings import DEFAULT_STEPS, SampleSettings

CLUSTER_DENOISERS = ("empirical", "empirical-sharded")


def sigmas_for(settings: SampleSettings):
    """The run's sigma grid (a schedule file brings its own number of steps)."""
    from diffcli.schedules import get_schedule

    steps = settings.run.steps
    if steps is None and settings.schedule_kind != "file":
        steps = DEFAULT_STEPS
    return get_schedule(settings.run.schedule, steps, **settings.schedule.flag_values())


def open_or_build_index(dataset: str | None, *, index_path, root, report):
    """The index named by --index, or the default index of --dataset (built on first use)."""
    from diffcli.index import open_index
    from diffcli.index.build import ensure_index

    if index_path is None:
        index_path = ensure_index(dataset, root=root, report=report)
    return open_index(index_path), index_path


def check_cluster_denoiser(name: str) -> None:
    if name not in CLUSTER_DENOISERS:
        raise UsageError(f"multi-host runs shard the index for the empirical denoiser only (not '{name}'); "
                         "spread other denoisers over hosts with --shard I/N.")


def cluster_denoiser(settings: SampleSettings, *, index_path, root, report):
    """Multi-process: the exact empirical denoiser over the whole cluster, each host reading only its own rows.

    Returns (denoiser, index path, index metadata). Other denoisers would need the whole index on every host;
    seed sharding (--shard I/N) spreads those over a cluster instead.
    """
    from diffcli.index.build import ensure_index
    from diffcli.index.store import index_attrs
    from diffcli.parallel.distributed import host_sharded_denoiser

    check_cluster_denoiser(settings.run.denoiser)
    if index_path is None:
        index_path = ensure_index(settings.run.dataset, root=root, report=report)
    attrs = index_attrs(index_path)
    return host_sharded_denoiser(index_path, chunk=int(settings.denoiser.chunk_size)), index_path, attrs


def make_denoiser(settings: SampleSettings, sigmas, *, index_path, root, report):
    """(denoiser, index path, index metadata) for this process: one host, or the whole cluster."""
    from diffcli.denoisers import build_denoiser

    if jax.process_count() > 1:
        return cluster_denoiser(settings, index_path=index_path, root=root, report=report)
    dataset = None if index_path is not None else settings.run.dataset
    index, index_path = open_or_build_index(dataset, index_path=index_path, root=root, report=report)
    opts = dataclasses.replace(settings.denoiser, sigmas=sigmas, seed=settings.run.seed)
    return build_denoiser(settings.run.denoiser, index, opts), index_path, index.attrs


def run_sample(settings: SampleSettings, *, index_path=None, root=None, shard=None, out_dir: str,
               report=lambda m: None, progress_cls=None) -> dict:
    """Sample as `settings` say, write out_dir/samples.h5 (+ grid.png for images) and return a summary."""
    from diffcli.io.images import save_grid
    from diffcli.io.samples import write_samples
    from diffcli.sample.batches import generate, shard_ids
    from diffcli.solvers import get_solver

    run = settings.run
    solver = get_solver(run.solver)
    sigmas = sigmas_for(settings)
    denoiser, index_path, attrs = make_denoiser(settings, sigmas, index_path=index_path, root=root, report=report)
    shape, kind = tuple(int(v) for v in attrs["shape"]), attrs["kind"]
    ids = shard_ids(run.num_samples, shard)
    batches = dict(denoiser=denoiser, solver=solver, sigmas=sigmas, shape=shape, ids=ids, seed=run.seed,
                   batch_size=run.batch_size, solver_options=settings.solver.flag_values(), run_size=run.num_samples)
    if progress_cls is None:
        result = generate(**batches)
    else:
        with progress_cls("sampling", len(ids)) as bar:
            result = generate(**batches, progress=bar.advance)
    recorded = settings.recorded()
    recorded.update(steps=len(sigmas) - 1, index=os.path.abspath(index_path), dataset=attrs.get("dataset"),
                    diffcli_version=__version__, shard=None if shard is None else "{}/{}".format(*shard),
                    nfe=result.nfe, rounds=result.rounds)
    samples_path = os.path.join(out_dir, "samples.h5")
    grid = os.path.join(out_dir, "grid.png") if kind == "image" else None
    if jax.process_index() == 0:  # every process holds the same samples; one writes them
        images = result.samples.reshape(len(ids), *shape)
        write_samples(samples_path, samples=images, noise=result.noise, ids=result.ids, settings=recorded,
                      sigmas=sigmas)
        if grid is not None:
            save_grid(grid, images, ncol=run.grid_cols)
    steps = max(len(sigmas) - 1, 1)
    return {"n": len(ids), "nfe": result.nfe, "rounds": result.rounds, "seconds": round(result.seconds, 4),
            "seconds_per_step": round(result.seconds / steps, 6), "out": os.path.abspath(samples_path),
            "grid": None if grid is None else os.path.abspath(grid), "index": os.path.abspath(index_path)}
