"""`diffcli schedule-fit`: fit a step schedule (LAS, AYS) from a loss curve, or tabulate a peer, into a JSON file."""

from __future__ import annotations

import inspect
import os
from typing import Annotated

import typer

from diffcli.cli import app
from diffcli.cli.common import Progress, command, emit_json, field_help, field_parameter, info
from diffcli.errors import UsageError
from diffcli.options import flag_fields, flag_name

Opt = typer.Option

HELP = """Fit a sigma schedule and write it as JSON (plus a PNG of the loss curve beside it).

LAS (derived rule; the paper's exact rule could not be read) places the steps from the x0-prediction loss curve l
(isotonic in gamma = 1/sigma^2) by exact dynamic programming. The default --las-rule lambda minimises
J_lambda = 1/2 sum_k int (l(lambda_k) - l(lambda)) dlambda with lambda = log(gamma): the denoiser's mismatch over each
step counted in data units. --las-rule dp minimises J = 1/2 sum_k int (l(gamma_k) - l(gamma)) dgamma, the first-order
stochastic sampler's path-space KL (it crowds the steps at low noise); --las-rule weighted is J with each step
discounted by the loss still unresolved where it starts; --las-rule quantile places the steps at the quantiles of
int sqrt|l'| dgamma (J's continuum optimum). AYS minimises its KL
upper bound by coordinate search. The loss curve is measured with --denoiser on the index's held-out split
(--dataset/--index) - any denoiser of `diffcli sample`, a network from outside included (--denoiser jax|torch|
diffusers|neural --model ..., with its --model-* flags) - or read from a training log (--loss-file, --loss-kind
x0|eps|v|edm; a timestep column maps to sigma through --model-noise, --model-timesteps and --model-beta-*, by
default the linear-beta 1000-step DDPM). Use the result with `diffcli sample --schedule FILE.json --steps K`.
"""


def schedule_fit(
    dataset: Annotated[str | None, Opt("--dataset", "-d", help="Dataset spec NAME[:key=value,...].")] = None,
    index: Annotated[str | None, Opt("--index", help="An index file (instead of --dataset).")] = None,
    root: Annotated[str | None, Opt("--root", help="Where a real dataset's files are.")] = None,
    denoiser: Annotated[str | None, Opt("--denoiser", help="Denoiser whose loss curve is measured (default "
                                                            "empirical).")] = None,
    loss_file: Annotated[str | None, Opt("--loss-file",
                                         help="CSV/JSON training log: sigma or timestep, loss (a timestep column "
                                              "reads through --model-noise/--model-timesteps/--model-beta-*).")
                         ] = None,
    loss_kind: Annotated[str, Opt("--loss-kind", help="x0|eps|v|edm: what the logged loss predicts.")] = "x0",
    method: Annotated[str, Opt("--method", help="las|ays|edm|log-snr|vp-leading|cosine.")] = "las",
    las_rule: Annotated[str, Opt("--las-rule",
                                 help="lambda (mismatch per unit log-SNR) | weighted | dp (exact minimum of "
                                      "J, the path KL) | quantile.")] = "lambda",
    steps: Annotated[int, Opt("--steps", help="Number of solver steps K.")] = 10,
    sigma_min: Annotated[float, Opt("--sigma-min")] = 0.002,
    sigma_max: Annotated[float, Opt("--sigma-max")] = 80.0,
    rho: Annotated[float, Opt("--rho", help="EDM exponent (--method edm).")] = 7.0,
    split: Annotated[str, Opt("--split", help="heldout|train: where the loss is measured.")] = "heldout",
    examples: Annotated[int, Opt("--examples", help="How many examples of the split to measure on.")] = 256,
    n_noise: Annotated[int, Opt("--n-noise", help="Noise draws per example.")] = 1,
    grid_points: Annotated[int, Opt("--grid-points", help="Sigmas at which the loss is measured.")] = 40,
    batch_size: Annotated[int, Opt("--batch-size")] = 64,
    seed: Annotated[int, Opt("--seed")] = 0,
    out: Annotated[str, Opt("--out", "-o", help="Schedule JSON file to write.")] = "schedule.json",
    plot: Annotated[bool, Opt("--plot/--no-plot",
                              help="Also write OUT with .png: loss curve and chosen sigmas.")] = True,
    overwrite: Annotated[bool, Opt("--overwrite", help="Replace an existing schedule file (and its plot).")] = False,
    json_out: Annotated[bool, Opt("--json", help="Print one JSON object on stdout.")] = False,
    **denoiser_flags,
):
    from diffcli import __version__
    from diffcli.io.atomic import write_json
    from diffcli.schedules.fit import METHODS, fit_schedule, to_json_ready
    from diffcli.schedules.grid import check_range, check_steps

    if method not in METHODS:
        raise UsageError(f"unknown method '{method}'; choose from: {', '.join(METHODS)}.")
    check_steps(steps)
    check_range(sigma_min, sigma_max)
    if method == "las":
        from diffcli.schedules.las import check_fit_memory

        check_fit_memory(steps, las_rule)  # before the loss curve is measured
    sources = sum(x is not None for x in (dataset, index, loss_file))
    if sources > 1:
        raise UsageError("give only one of --dataset, --index and --loss-file.")
    given = {k: v for k, v in denoiser_flags.items() if v is not None}
    if loss_file is not None:
        measured_only = [k for k in given if k not in LOG_FLAGS]
        if denoiser is not None or measured_only:
            used = "--denoiser" if denoiser is not None else flag_name(measured_only[0])
            raise UsageError(f"{used} applies when the loss curve is measured (--dataset/--index), not with "
                             "--loss-file.")
    denoiser = denoiser or "empirical"
    if loss_file is None:
        check_denoiser_flags(denoiser, given)
    _check_out(out, plot and sources > 0, overwrite)  # before the loss curve is measured
    curve, source = None, {}
    if loss_file is not None:
        curve = _read_log(loss_file, loss_kind, given)
        source = {"loss_file": os.path.abspath(loss_file), "loss_kind": loss_kind, **given}
    elif dataset is not None or index is not None:
        curve, source = _measure(dataset, index, root, denoiser, given, split, examples, n_noise, grid_points,
                                 batch_size, seed, sigma_min, sigma_max)
    record = fit_schedule(curve, method=method, steps=steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
                          las_rule=las_rule)
    doc = {"sigmas": record.pop("sigmas"), **record, "steps": steps, "sigma_min": sigma_min, "sigma_max": sigma_max,
           "source": source, "diffcli_version": __version__}
    doc = to_json_ready(doc)
    write_json(out, doc)
    png = None
    if plot and curve is not None:
        from diffcli.io.plot import save_loss_plot
        from diffcli.schedules import get_schedule

        png = os.path.splitext(out)[0] + ".png"
        peers = {p: get_schedule(p, steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
                 for p in ("edm", "log-snr", "vp-leading") if p != method}
        what = f"{method} (rule {las_rule})" if method == "las" else method
        made = (f"{source.get('dataset') or 'index'}, {source['denoiser']} denoiser, {source['split']} split"
                if "denoiser" in source else f"training log {os.path.basename(loss_file)} ({loss_kind} loss)")
        save_loss_plot(png, curve.sigma, curve.loss, doc["sigmas"], smoothed=record["loss_curve"]["smoothed"],
                       stderr=curve.stderr, peers=peers, name=method,
                       title=f"{what} schedule, {steps} steps, fitted to the loss curve of\n{made}")
    summary = {"out": out, "plot": png, "method": method, "steps": steps, "sigmas": doc["sigmas"],
               "objective": doc.get("objective")}
    if json_out:
        emit_json(summary)
    else:
        obj = "" if doc.get("objective") is None else f" (J = {doc['objective']:.4g})"
        info(f"{method} schedule of {steps} steps{obj} -> {out}" + (f"; plot {png}" if png else ""))


def _check_out(out: str, plot: bool, overwrite: bool) -> None:
    """Refuse an --out (or its plot) that exists, unless --overwrite, or that cannot be written."""
    from diffcli.errors import DiffcliError
    from diffcli.io.atomic import check_writable

    check_writable(out, what="schedule file")
    targets = [out] + ([os.path.splitext(out)[0] + ".png"] if plot else [])
    for path in targets:
        if os.path.exists(path) and not overwrite:
            raise DiffcliError(f"'{path}' exists; pass --overwrite to replace it or choose another --out.")


# With --loss-file, the model flags that say how the log's columns read: its timestep table and EDM's sigma_data.
LOG_FLAGS = ("model_noise", "model_timesteps", "model_beta_start", "model_beta_end", "model_sigma_data")


def _read_log(loss_file: str, loss_kind: str, given: dict):
    """The loss curve of a training log; a timestep column maps to sigma through the model's timestep table."""
    from diffcli.models.wrappers import Parameterisation, vp_sigmas
    from diffcli.schedules.loss import read_loss_log

    if "model_sigma_data" in given and loss_kind != "edm":
        raise UsageError(f"--model-sigma-data applies to --loss-kind edm, not {loss_kind}.")
    table_flags = {k: v for k, v in given.items() if k != "model_sigma_data"}
    p = Parameterisation(**table_flags)
    if not p.discrete:
        raise UsageError("with --loss-file, --model-noise says how a timestep column maps to sigma: vp-linear or "
                         "vp-cosine (a log of a sigma-conditioned model has a sigma column).")
    if p.model_noise != "vp-linear" and {"model_beta_start", "model_beta_end"} & set(given):
        raise UsageError(f"--model-beta-start and --model-beta-end apply to --model-noise vp-linear, not "
                         f"{p.model_noise}.")
    table = vp_sigmas(p) if table_flags else None
    return read_loss_log(loss_file, loss_kind, sigma_data=given.get("model_sigma_data", 0.5), timestep_sigmas=table)


def _measure(dataset, index, root, denoiser, given, split, examples, n_noise, grid_points, batch_size, seed, lo, hi):
    """Measure the loss curve (and AYS pairs) of a denoiser on a split of an index."""
    import jax
    import numpy as np

    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import denoiser_options
    from diffcli.errors import DiffcliError
    from diffcli.index import open_index
    from diffcli.models.wrappers import model_record
    from diffcli.schedules.fit import curve_grid
    from diffcli.schedules.loss import measure_curves

    if split not in ("heldout", "train"):
        raise UsageError(f"--split must be heldout or train (got '{split}').")
    if examples < 2 or n_noise < 1 or batch_size < 1:
        raise UsageError("--examples must be at least 2, and --n-noise and --batch-size at least 1.")
    if index is None:
        from diffcli.index.build import ensure_index

        index = ensure_index(dataset, root=root, report=info)
    idx = open_index(index)
    data = idx.heldout_data() if split == "heldout" else idx.train_data()
    if data.shape[0] < 2:
        raise DiffcliError(f"the index has {data.shape[0]} {split} examples; use --split train or another index.")
    rows = np.random.default_rng(seed).permutation(data.shape[0])[: min(examples, data.shape[0])]
    grid = curve_grid(lo, hi, grid_points)
    den = build_denoiser(denoiser, idx, denoiser_options(denoiser, given, sigmas=np.append(grid, 0.0), seed=seed))
    m = len(rows)
    total = n_noise * -(-m // min(batch_size, m))
    with Progress("loss curve", total) as bar:
        curve = measure_curves(den, data[np.sort(rows)].reshape((m,) + tuple(idx.shape)), grid,
                               key=jax.random.PRNGKey(seed), n_noise=n_noise, batch_size=batch_size,
                               progress=bar.advance)
    source = {"index": os.path.abspath(index), "dataset": idx.attrs.get("dataset"), "denoiser": denoiser,
              **given, **model_record(den), "split": split, "examples": m, "n_noise": n_noise}
    return curve, source


# --- the denoiser flags, generated from the denoisers' options classes (as `diffcli sample` does) ---------------

def denoiser_fields() -> dict:
    """{field name: the first field of that name} over every denoiser's options class."""
    from diffcli.denoisers.options import DENOISER_OPTIONS

    fields = {}
    for cls in DENOISER_OPTIONS.values():
        for f in flag_fields(cls):
            fields.setdefault(f.name, f)
    return fields


def flag_owners(name: str) -> list[str]:
    """The denoisers whose options class has the flag `name`."""
    from diffcli.denoisers.options import DENOISER_OPTIONS

    return [k for k, cls in DENOISER_OPTIONS.items() if any(f.name == name for f in flag_fields(cls))]


def check_denoiser_flags(denoiser: str, given: dict) -> None:
    """Refuse a denoiser flag the chosen denoiser does not have (an unknown denoiser is refused when it is built)."""
    from diffcli.denoisers.options import DENOISER_OPTIONS

    if denoiser not in DENOISER_OPTIONS:
        return
    mine = {f.name for f in flag_fields(DENOISER_OPTIONS[denoiser])}
    for name in given:
        if name not in mine:
            raise UsageError(f"{flag_name(name)} applies to --denoiser {', '.join(flag_owners(name))} only; this "
                             f"run uses --denoiser {denoiser}.")


def denoiser_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per denoiser option field, typed and helped from the field, in one help panel."""
    params = []
    for name, f in denoiser_fields().items():
        help_text = f"{field_help(f)} For --denoiser {', '.join(flag_owners(name))}"
        help_text += ", and for a --loss-file's columns." if name in LOG_FLAGS else "."
        params.append(field_parameter(name, f, help_text=help_text, panel="Denoiser options"))
    return params


def _register():
    fixed = [p for p in inspect.signature(schedule_fit, eval_str=True).parameters.values()
             if p.kind is not p.VAR_KEYWORD]
    fixed = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fixed]
    names = {p.name for p in fixed}

    def schedule_fit_command(**kwargs):
        return schedule_fit(**{k: v for k, v in kwargs.items() if k in names},
                            **{k: v for k, v in kwargs.items() if k not in names})

    schedule_fit_command.__signature__ = inspect.Signature(fixed + denoiser_parameters())
    schedule_fit_command.__doc__ = schedule_fit.__doc__
    schedule_fit_command.__name__ = "schedule_fit"
    command(app, "schedule-fit", help=HELP)(schedule_fit_command)


_register()
