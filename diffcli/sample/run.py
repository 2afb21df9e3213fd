"""A sampling run as a library call: settings -> index, denoiser, schedule, solver -> samples.h5 (+ grid.png)."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from diffcli import __version__
from diffcli.errors import UsageError
from diffcli.models.wrappers import model_record
from diffcli.sample.settings import DEFAULT_STEPS, SampleSettings, uses_covariance

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


def class_denoisers(settings: SampleSettings, sigmas, *, index_path, root, report, ids):
    """A conditional run (--class): (index path, index metadata, the class of each of `ids`, one (denoiser, its ids,
    its run size) per class, each denoiser over its class's rows alone (`class_rows`), and {class: the covariance
    shrinkage used} for a denoiser that reads the class covariance, else None)."""
    from diffcli.denoisers import build_denoiser
    from diffcli.index.store import class_rows
    from diffcli.sample.classes import sample_labels

    run = settings.run
    if jax.process_count() > 1:
        raise UsageError("--class runs on one host; spread a conditional run over hosts with --shard I/N.")
    dataset = None if index_path is not None else run.dataset
    index, index_path = open_or_build_index(dataset, index_path=index_path, root=root, report=report)
    every = sample_labels(run.class_, index, run.num_samples)  # refused here, before any sample is written
    labels = every[ids]
    opts = dataclasses.replace(settings.denoiser, sigmas=sigmas, seed=run.seed)
    parts, shrinkage = [], {}
    for label in np.unique(labels):
        sub = class_rows(index, int(label), shrinkage=run.class_shrinkage)
        denoiser = build_denoiser(run.denoiser, sub, opts)
        parts.append((denoiser, ids[labels == label], int(np.sum(every == label))))
        shrinkage[str(int(label))] = round(float(sub.attrs["class_shrinkage"]), 6)
    return index_path, index.attrs, labels, parts, shrinkage if uses_covariance(run.denoiser, opts) else None


def run_sample(settings: SampleSettings, *, index_path=None, root=None, shard=None, out_dir: str,
               report=lambda m: None, progress_cls=None) -> dict:
    """Sample as `settings` say, write out_dir/samples.h5 (+ grid.png for images) and return a summary.

    With --class, the sampler runs once per class over that class's sample ids, each denoiser over an index of the
    class's rows only; each sample's noise is still a function of (seed, i) alone."""
    from diffcli.index.store import class_names
    from diffcli.io.images import save_grid
    from diffcli.io.samples import write_samples
    from diffcli.sample.batches import SampleRun, generate, shard_ids
    from diffcli.solvers import get_solver

    run = settings.run
    solver = get_solver(run.solver)
    sigmas = sigmas_for(settings)
    ids = shard_ids(run.num_samples, shard)
    labels = names = shrinkage = None
    if run.class_ is None:
        denoiser, index_path, attrs = make_denoiser(settings, sigmas, index_path=index_path, root=root,
                                                    report=report)
        parts = [(denoiser, ids, run.num_samples)]
    else:
        index_path, attrs, labels, parts, shrinkage = class_denoisers(settings, sigmas, index_path=index_path,
                                                                      root=root, report=report, ids=ids)
        names = class_names(attrs)
    shape, kind = tuple(int(v) for v in attrs["shape"]), attrs["kind"]
    common = dict(solver=solver, sigmas=sigmas, shape=shape, seed=run.seed, batch_size=run.batch_size,
                  solver_options=settings.solver.flag_values())

    def draw(progress=None):
        runs = [generate(denoiser=d, ids=part_ids, run_size=size, progress=progress, **common)
                for d, part_ids, size in parts]
        if len(runs) == 1:
            return runs[0]
        got = np.concatenate([r.ids for r in runs])
        order = np.argsort(got, kind="stable")  # back to the ids' order (ids are increasing)
        return SampleRun(samples=np.concatenate([r.samples for r in runs])[order],
                         noise=np.concatenate([r.noise for r in runs])[order], ids=got[order],
                         nfe=max(r.nfe for r in runs), rounds=max(r.rounds for r in runs),
                         seconds=sum(r.seconds for r in runs))

    if progress_cls is None:
        result = draw()
    else:
        with progress_cls("sampling", len(ids)) as bar:
            result = draw(bar.advance)
    recorded = settings.recorded()
    recorded.update(model_record(parts[0][0]))  # a wrapped network's parameterisation, as its declaration resolved it
    recorded.update(steps=len(sigmas) - 1, index=os.path.abspath(index_path), dataset=attrs.get("dataset"),
                    diffcli_version=__version__, shard=None if shard is None else "{}/{}".format(*shard),
                    nfe=result.nfe, rounds=result.rounds)
    if names is not None:
        recorded["class_names"] = names
    if shrinkage is not None:  # the intensity each class's covariance was shrunk by (the default is per class)
        recorded["class_shrinkage_used"] = shrinkage
    samples_path = os.path.join(out_dir, "samples.h5")
    grid = os.path.join(out_dir, "grid.png") if kind == "image" else None
    if jax.process_index() == 0:  # every process holds the same samples; one writes them
        images = result.samples.reshape(len(ids), *shape)
        write_samples(samples_path, samples=images, noise=result.noise, ids=result.ids, settings=recorded,
                      sigmas=sigmas, labels=labels)
        if grid is not None:
            save_grid(grid, images, ncol=run.grid_cols, labels=labels, label_names=names)
    from diffcli.sample.memory import peak_memory

    steps = max(len(sigmas) - 1, 1)
    extra = {} if shrinkage is None else {"class_shrinkage_used": shrinkage}
    return {**extra, "n": len(ids), "nfe": result.nfe, "rounds": result.rounds, "seconds": round(result.seconds, 4),
            "seconds_per_step": round(result.seconds / steps, 6), "out": os.path.abspath(samples_path),
            "grid": None if grid is None else os.path.abspath(grid), "index": os.path.abspath(index_path),
            "peak_memory": peak_memory()}
