"""`diffcli sample`: draw samples with any denoiser, solver and schedule; writes samples.h5 and grid.png."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from diffcli.cli import app
from diffcli.cli.common import Progress, command, emit_json, info, merge_settings, prepare_out_dir
from diffcli.errors import UsageError

DEFAULTS = {
    "dataset": "digits",
    "denoiser": "empirical",
    "solver": "heun",
    "schedule": "edm",
    "num_samples": 64,
    "seed": 0,
    "batch_size": 64,
    "sigma_min": 0.002,
    "sigma_max": 80.0,
    "rho": 7.0,
    "chunk_size": 2048,
    "base": "pca-local",
    "golden_coarse": False,
}

Opt = typer.Option


@command(app, "sample")
def sample(
    dataset: Annotated[str | None, Opt("--dataset", "-d", help="Dataset spec NAME[:key=value,...]; default digits.")] = None,
    index: Annotated[str | None, Opt("--index", help="An index file from index-build (instead of --dataset).")] = None,
    root: Annotated[str | None, Opt("--root", help="Where a real dataset's files are.")] = None,
    denoiser: Annotated[str | None, Opt("--denoiser", help="empirical|gmm|wiener|pca-local|golden|els|ls|nearest|neural.")] = None,
    solver: Annotated[str | None, Opt("--solver", help="euler|heun|ddpm|dpmpp-2m|picard|collocation.")] = None,
    schedule: Annotated[str | None, Opt("--schedule", help="edm|log-snr|vp-leading|cosine, or a schedule JSON file.")] = None,
    steps: Annotated[int | None, Opt("--steps", help="Number of solver steps.")] = None,
    num_samples: Annotated[int | None, Opt("--num-samples", "-n", help="How many samples.")] = None,
    seed: Annotated[int | None, Opt("--seed", help="Sample i's noise depends on (seed, i) alone.")] = None,
    batch_size: Annotated[int | None, Opt("--batch-size", help="Samples per jitted batch.")] = None,
    out: Annotated[str | None, Opt("--out", "-o", help="Output folder (default out/<dataset>).")] = None,
    overwrite: Annotated[bool, Opt("--overwrite", help="Replace the contents of a non-empty --out.")] = False,
    json_out: Annotated[bool, Opt("--json", help="Print one JSON object on stdout.")] = False,
    recipe: Annotated[str | None, Opt("--recipe", help="TOML recipe filling options not given.")] = None,
    shard: Annotated[str | None, Opt("--shard", help="I/N: only samples i with i mod N == I.")] = None,
    sigma_min: Annotated[float | None, Opt("--sigma-min")] = None,
    sigma_max: Annotated[float | None, Opt("--sigma-max")] = None,
    rho: Annotated[float | None, Opt("--rho", help="EDM schedule exponent.")] = None,
    chunk_size: Annotated[int | None, Opt("--chunk-size", help="Index rows per streamed chunk.")] = None,
    base: Annotated[str | None, Opt("--base", help="golden: base denoiser, empirical|pca-local.")] = None,
    mask_threshold: Annotated[float | None, Opt("--mask-threshold", help="pca-local mask threshold.")] = None,
    golden_k_min: Annotated[int | None, Opt("--golden-k-min")] = None,
    golden_k_max: Annotated[int | None, Opt("--golden-k-max")] = None,
    golden_tol: Annotated[float | None, Opt("--golden-tol", help="Certified tail-mass tolerance; sizes the subset.")] = None,
    golden_coarse: Annotated[bool | None, Opt("--golden-coarse/--no-golden-coarse", help="Clustered coarse stage.")] = None,
    golden_nprobe: Annotated[int | None, Opt("--golden-nprobe", help="Clusters scanned by the coarse stage.")] = None,
    els_patch_sizes: Annotated[str | None, Opt("--els-patch-sizes", help="Comma list, low to high noise.")] = None,
    model: Annotated[str | None, Opt("--model", help="neural: a model file from diffcli train.")] = None,
    eta: Annotated[float | None, Opt("--eta", help="ddpm: 1 = ancestral DDPM, 0 = DDIM.")] = None,
    picard_mode: Annotated[str | None, Opt("--picard-mode", help="sde|ode.")] = None,
    picard_blocks: Annotated[int | None, Opt("--picard-blocks")] = None,
    picard_iters: Annotated[int | None, Opt("--picard-iters")] = None,
    picard_tol: Annotated[float | None, Opt("--picard-tol")] = None,
    picard_window: Annotated[int | None, Opt("--picard-window")] = None,
    picard_anderson: Annotated[int | None, Opt("--picard-anderson",
                                               help="Anderson memory M (0 = off); --picard-newton needs fewer rounds.")] = None,
    picard_newton: Annotated[bool | None, Opt("--picard-newton/--no-picard-newton",
                                               help="Quasi-Newton rounds (secant slope of D); fewest rounds.")] = None,
    colloc_nodes: Annotated[int | None, Opt("--colloc-nodes")] = None,
    colloc_iters: Annotated[int | None, Opt("--colloc-iters")] = None,
    colloc_tol: Annotated[float | None, Opt("--colloc-tol")] = None,
    colloc_windows: Annotated[int | None, Opt("--colloc-windows")] = None,
    coordinator: Annotated[str | None, Opt("--coordinator", help="Multi-host: HOST:PORT of process 0.")] = None,
    num_processes: Annotated[int | None, Opt("--num-processes", help="Multi-host: how many processes.")] = None,
    process_id: Annotated[int | None, Opt("--process-id", help="Multi-host: this process, 0..N-1.")] = None,
    join_timeout: Annotated[float, Opt("--join-timeout", help="Multi-host: seconds to wait for every peer.")] = 120.0,
):
    """Draw samples and write OUT/samples.h5 (and OUT/grid.png for images).

    Multi-host (--coordinator/--num-processes/--process-id, or a multi-task SLURM step): the empirical denoiser's
    index is sharded over every device of every host, each host reading only its rows; process 0 writes the output.
    """
    from diffcli.data import parse_spec
    from diffcli.parallel.distributed import resolve_config, start
    from diffcli.sampling import SAMPLE_OPTIONS, check_cluster_denoiser, run_sample

    explicit = {k: v for k, v in locals().items() if k in SAMPLE_OPTIONS}
    recipe_opts = {}
    if recipe is not None:
        from diffcli.recipes import load_recipe

        name = parse_spec(dataset or recipe_dataset(recipe) or DEFAULTS["dataset"])[0] if index is None else None
        recipe_opts = load_recipe(recipe, dataset_name=name, allowed=SAMPLE_OPTIONS)
    settings = merge_settings(explicit, recipe_opts, DEFAULTS)
    if index is not None:
        settings.pop("dataset", None)
    settings["shard"] = parse_shard(shard)
    out_dir = out or os.path.join("out", _slug(settings.get("dataset") or os.path.basename(index)))
    cluster = resolve_config(coordinator, num_processes, process_id)
    lead = cluster is None or cluster.process_id == 0
    if cluster is not None and cluster.num_processes > 1:
        check_cluster_denoiser(settings["denoiser"])
    if lead:  # checked before joining, so a refused folder ends the run before any peer waits on this process
        prepare_out_dir(out_dir, overwrite)
    start(cluster, timeout_s=join_timeout)
    result = run_sample(settings, index_path=index, root=root, out_dir=out_dir, report=info if lead else _quiet,
                        progress_cls=Progress if lead else None)
    if not lead:
        return
    if json_out:
        emit_json(result)
    else:
        info(f"{result['n']} samples in {result['seconds']:.2f}s (nfe {result['nfe']}, rounds {result['rounds']}) -> {result['out']}")
        if result.get("grid"):
            info(f"grid: {result['grid']}")


def _quiet(_message: str) -> None:
    pass


def recipe_dataset(path: str) -> str | None:
    """The dataset a recipe names, if any (so its per-dataset table applies when --dataset is not given)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f).get("dataset")
    except (OSError, tomllib.TOMLDecodeError):
        return None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard '{text}' is not of the form I/N.") from None
    if not (n >= 1 and 0 <= i < n):
        raise UsageError(f"--shard {text} needs N >= 1 and 0 <= I < N.")
    return i, n


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_=" else "_" for c in text.split(":")[0])[:60] or "samples"

