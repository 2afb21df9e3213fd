"""`diffcli evaluate`: a command group whose default (first argument not a subcommand) evaluates a samples file."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from typer.core import TyperGroup

from diffcli.cli import app
from diffcli.cli.common import command, emit_json, info
from diffcli.errors import DiffcliError, UsageError

DEFAULT_SUBCOMMAND = "samples"


class DefaultGroup(TyperGroup):
    """A group that runs DEFAULT_SUBCOMMAND when the first argument names no subcommand (e.g. a file path)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [DEFAULT_SUBCOMMAND, *args]
        return super().parse_args(ctx, args)


evaluate_app = typer.Typer(
    cls=DefaultGroup, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Evaluate a samples file (diffcli evaluate OUT/samples.h5 ...), or run an evaluation subcommand.",
)
app.add_typer(evaluate_app, name="evaluate")

Opt = typer.Option


@command(evaluate_app, DEFAULT_SUBCOMMAND)
def evaluate_samples(
    samples: Annotated[str, typer.Argument(help="A samples file (OUT/samples.h5) from diffcli sample.")],
    reference: Annotated[str | None, Opt("--reference",
                                         help="Samples of the reference model from the same noise.")] = None,
    index: Annotated[str | None, Opt("--index", help="The training index (memorisation, Frechet/KID, ...).")] = None,
    dataset: Annotated[str | None, Opt("--dataset", "-d", help="Dataset spec whose default index to use.")] = None,
    root: Annotated[str | None, Opt("--root", help="Where a real dataset's files are.")] = None,
    model: Annotated[str | None, Opt("--model", help="Reference network: its bottleneck is the feature space.")] = None,
    features: Annotated[str | None, Opt("--features",
                                        help="User features: .npz with arrays 'samples' and 'train'.")] = None,
    max_reference: Annotated[int, Opt("--max-reference", help="Training rows compared against, at most.")] = 5000,
    seed: Annotated[int, Opt("--seed", help="Seed of the reference subset and random projections.")] = 0,
    json_out: Annotated[bool, Opt("--json", help="Print one JSON object on stdout.")] = False,
    report: Annotated[str | None, Opt("--report", help="Write a PNG report here: samples beside their nearest "
                                                         "training images, and the metric table.")] = None,
    report_html: Annotated[str | None, Opt("--report-html", help="Write the report as one self-contained HTML "
                                                                  "page here.")] = None,
    figure_format: Annotated[str, Opt("--figure-format", help="png|pdf|svg: also write the --report figure in "
                                                               "this format beside the PNG.")] = "png",
):
    """Evaluate OUT/samples.h5 against a reference run and/or the training set."""
    from diffcli.index import open_index
    from diffcli.io.plot import figure_formats
    from diffcli.metrics.evaluate import evaluate, scalar_results

    if index is not None and dataset is not None:
        raise UsageError("give --index or --dataset, not both.")
    formats = figure_formats(figure_format)
    if max_reference < 2:
        raise UsageError("--max-reference must be at least 2.")
    s = _read_checked(samples, "samples", need_seed=reference is not None)
    ref = _read_checked(reference, "reference", need_seed=True) if reference is not None else None
    idx = None
    index_path = index or (_default_index(dataset, root) if dataset is not None else None)
    if index_path is not None:
        idx = open_index(index_path)
    if ref is None and idx is None:
        raise UsageError("nothing to compare against: pass --reference FILE and/or --index FILE / --dataset SPEC.")
    result = evaluate(s, reference=ref, index=idx, model=model, features=features, max_reference=max_reference,
                      seed=seed)
    inputs = {"samples": samples, "reference": reference, "index": index_path}
    scalars = {**{k: v for k, v in inputs.items() if v is not None}, **scalar_results(result)}
    if report is not None or report_html is not None:
        from diffcli.metrics.report import distance_ratios, write_report

        pairs, arrays = None, result["arrays"]
        if idx is not None and idx.kind == "image":
            pairs = idx.train_data()[arrays["nearest"]].reshape(-1, *idx.shape)
        ratios = distance_ratios(arrays["d1"], arrays["d2"]) if "d1" in arrays else None
        against = " and ".join(f"{k} {os.path.basename(v)}" for k, v in inputs.items() if k != "samples" and v)
        write_report(report, scalars, samples=s["samples"] if pairs is not None else None, nearest=pairs,
                     ratios=ratios, html_path=report_html, formats=formats,
                     title=f"diffcli evaluate: {os.path.basename(samples)} against {against}")
        scalars.update({k: v for k, v in (("report", report), ("report_html", report_html)) if v is not None})
    if json_out:
        emit_json(scalars)
    else:
        print_table(scalars)


def _read_checked(path: str, role: str, *, need_seed: bool) -> dict:
    """A samples file read and checked for what metrics need; a broken settings attribute is one sentence."""
    from diffcli.io.samples import read_samples
    from diffcli.metrics.evaluate import check_samples

    try:
        s = read_samples(path)  # damaged settings are its own sentence
    except (KeyError, ValueError):
        raise DiffcliError(f"{role} file '{path}' is damaged: its arrays or attributes could not be read.") from None
    check_samples(s, f"{role} file '{path}'", need_seed=need_seed)
    return s


def _default_index(dataset: str, root: str | None) -> str:
    from diffcli.index.build import ensure_index

    return ensure_index(dataset, root=root, report=info)


def print_table(scalars: dict) -> None:
    """A two-column human table on stdout."""
    from rich.console import Console
    from rich.table import Table

    from diffcli.metrics.report import metric_rows

    table = Table("metric", "value", title="diffcli evaluate")
    for name, value, _ in metric_rows(scalars):
        table.add_row(name, value)
    Console().print(table)


# `diffcli evaluate concentration` (the GoldDiff posterior-concentration diagnostics) lives in its own module.
from diffcli.cli.concentration import concentration  # noqa: E402

command(evaluate_app, "concentration")(concentration)
