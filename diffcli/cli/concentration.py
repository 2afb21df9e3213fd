"""`diffcli evaluate concentration`: effective posterior support along sampling trajectories (JSON + PNG plot).

A plain function; `diffcli/cli/evaluate.py` registers it as a subcommand of `evaluate`.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from diffcli.cli.common import emit_json, info, prepare_out_dir
from diffcli.errors import UsageError

Opt = typer.Option


def concentration(
    dataset: Annotated[str | None, Opt("--dataset", "-d", help="Dataset spec whose default index to use.")] = None,
    index: Annotated[str | None, Opt("--index", help="An index file from index-build (instead of --dataset).")] = None,
    root: Annotated[str | None, Opt("--root", help="Where a real dataset's files are.")] = None,
    denoiser: Annotated[str, Opt("--denoiser", help="Denoiser that drives the trajectories.")] = "golden",
    golden_base: Annotated[str, Opt("--golden-base",
                                    help="The golden subset's base: pca-local or empirical.")] = "pca-local",
    schedule: Annotated[str, Opt("--schedule", help="Schedule name or JSON file.")] = "vp-leading",
    steps: Annotated[int, Opt("--steps", help="Sampling steps.")] = 10,
    num_samples: Annotated[int, Opt("--num-samples", "-n", help="Trajectories.")] = 16,
    seed: Annotated[int, Opt("--seed")] = 0,
    golden_k_min: Annotated[int | None, Opt("--golden-k-min")] = None,
    golden_k_max: Annotated[int | None, Opt("--golden-k-max")] = None,
    golden_tol: Annotated[float | None, Opt("--golden-tol", help="Per-query k from the certified bound.")] = None,
    golden_nprobe: Annotated[int | None, Opt("--golden-nprobe", help="Lists the coarse screen probes.")] = None,
    mask_threshold: Annotated[float | None, Opt("--mask-threshold", help="pca-local mask threshold.")] = None,
    out: Annotated[str, Opt("--out", "-o",
                            help="Output folder for concentration.json and support.png.")] = "out/concentration",
    overwrite: Annotated[bool, Opt("--overwrite", help="Reuse a non-empty output folder.")] = False,
    json_out: Annotated[bool, Opt("--json", help="Print one JSON object (the per-step summary) on stdout.")] = False,
    figure_format: Annotated[str, Opt("--figure-format", help="png|pdf|svg: also write support.png in this format "
                                                               "beside it.")] = "png",
):
    """Effective support of the posterior, golden bound and tail mass, and screen recall at every step."""
    from diffcli.index import open_index
    from diffcli.index.build import ensure_index
    from diffcli.io.atomic import write_json
    from diffcli.io.plot import figure_formats
    from diffcli.metrics.concentration import run_concentration, save_support_plot

    if index is not None and dataset is not None:
        raise UsageError("give --index or --dataset, not both.")
    if steps < 1 or num_samples < 1:
        raise UsageError("--steps and --num-samples must be at least 1.")
    formats = figure_formats(figure_format)
    path = index if index is not None else ensure_index(dataset or "digits", root=root, report=info)
    idx = open_index(path)
    prepare_out_dir(out, overwrite)
    result = run_concentration(idx, denoiser=denoiser, base=golden_base, schedule=schedule, steps=steps,
                               num_samples=num_samples, seed=seed, golden_k_min=golden_k_min,
                               golden_k_max=golden_k_max, golden_tol=golden_tol, golden_nprobe=golden_nprobe,
                               mask_threshold=mask_threshold)
    result["index"] = os.path.abspath(path)
    json_path, png_path = os.path.join(out, "concentration.json"), os.path.join(out, "support.png")
    write_json(json_path, result)
    plots = save_support_plot(png_path, result, formats=formats)
    if json_out:
        emit_json({"summary": result["summary"], "json": os.path.abspath(json_path), "plot": os.path.abspath(png_path),
                   "plots": [os.path.abspath(p) for p in plots]})
        return
    info(f"{'sigma':>9} {'support':>9} {'particip':>9} {'golden k':>9} {'bound':>9} {'tail':>9} {'coarse rec':>10}")
    for r in result["summary"]:
        info(f"{r['sigma']:9.4g} {r['support_mean']:9.1f} {r['participation_mean']:9.1f} {r['golden_k_mean']:9.1f} "
             f"{r['bound_max']:9.2g} {r['tail_mass_max']:9.2g} {r.get('coarse_recall_mean', float('nan')):10.3f}")
    info(f"wrote {json_path} and {', '.join(plots)}")
