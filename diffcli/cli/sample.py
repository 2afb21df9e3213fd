"""`diffcli sample`: draw samples with any denoiser, solver and schedule; writes samples.h5 and grid.png.

The component flags are generated from the options classes (diffcli/options.py), one help panel per component.
"""

from __future__ import annotations

import inspect
import os
from typing import Annotated

import typer

from diffcli.cli import app
from diffcli.cli.common import Progress, command, emit_json, field_help, field_kind, field_parameter, info
from diffcli.errors import DiffcliError, UsageError

Opt = typer.Option


def sample(
    index: Annotated[str | None, Opt("--index", help="An index file from index-build (instead of --dataset).")] = None,
    root: Annotated[str | None, Opt("--root", help="Where a real dataset's files are.")] = None,
    out: Annotated[str | None, Opt("--out", "-o", help="Output folder (default out/<dataset>).")] = None,
    overwrite: Annotated[bool, Opt("--overwrite", help="Replace the contents of a non-empty --out.")] = False,
    json_out: Annotated[bool, Opt("--json", help="Print one JSON object on stdout.")] = False,
    recipe: Annotated[str | None, Opt("--recipe", help="TOML recipe filling options not given.")] = None,
    shard: Annotated[str | None, Opt("--shard", help="I/N: only samples i with i mod N == I.")] = None,
    coordinator: Annotated[str | None, Opt("--coordinator", help="Multi-host: HOST:PORT of process 0.",
                                           rich_help_panel="Multi-host")] = None,
    num_processes: Annotated[int | None, Opt("--num-processes", help="Multi-host: how many processes.",
                                             rich_help_panel="Multi-host")] = None,
    process_id: Annotated[int | None, Opt("--process-id", help="Multi-host: this process, 0..N-1.",
                                          rich_help_panel="Multi-host")] = None,
    join_timeout: Annotated[float, Opt("--join-timeout", help="Multi-host: seconds to wait for every peer.",
                                       rich_help_panel="Multi-host")] = 120.0,
    **options,
):
    """Draw samples and write OUT/samples.h5 (and OUT/grid.png for images).

    Multi-host runs (--coordinator or a SLURM step) shard the empirical index over every host; process 0 writes.
    """
    from diffcli.parallel.distributed import resolve_config, start
    from diffcli.sample.run import check_cluster_denoiser, run_sample
    from diffcli.sample.settings import resolve_settings

    if index is not None and options.get("dataset") is not None:
        raise UsageError("give --dataset or --index, not both.")
    recipe_opts = read_recipe(recipe, options.get("dataset"), index)
    if index is not None:
        recipe_opts.pop("dataset", None)
    settings = resolve_settings(options, recipe_opts, notice=info, recipe_name=f"recipe '{recipe}'")
    check_index_and_dataset(settings.run.dataset if index is None else None, index)
    shard_ids = parse_shard(shard)
    out_dir = out or os.path.join("out", _slug(settings.run.dataset if index is None else os.path.basename(index)))
    cluster = resolve_config(coordinator, num_processes, process_id)
    lead = cluster is None or cluster.process_id == 0
    if cluster is not None and cluster.num_processes > 1:
        check_cluster_denoiser(settings.run.denoiser)
    if not lead:
        start(cluster, timeout_s=join_timeout)
        run_sample(settings, index_path=index, root=root, shard=shard_ids, out_dir=out_dir, report=_quiet)
        return
    from diffcli.cli.common import output_folder

    # the folder is checked and locked before joining, so a refused folder ends the run before any peer waits on it
    with output_folder(out_dir, overwrite):
        start(cluster, timeout_s=join_timeout)
        result = run_sample(settings, index_path=index, root=root, shard=shard_ids, out_dir=out_dir, report=info,
                            progress_cls=Progress)
    if json_out:
        emit_json({**result, "settings": settings.recorded()})
    else:
        info(f"{result['n']} samples in {result['seconds']:.2f}s (nfe {result['nfe']}, rounds {result['rounds']}) "
             f"-> {result['out']}")
        if result.get("grid"):
            info(f"grid: {result['grid']}")


def _quiet(_message: str) -> None:
    pass


def read_recipe(path: str | None, dataset: str | None, index: str | None) -> dict:
    """The recipe's options for this run's dataset (its [datasets.NAME] table over its top level)."""
    if path is None:
        return {}
    from diffcli.data import parse_spec
    from diffcli.recipes import load_recipe
    from diffcli.sample.settings import RunOptions, all_option_fields

    kinds = {name: f.metadata["kind"] for name, f in all_option_fields().items()}
    name = None if index is not None else parse_spec(dataset or recipe_dataset(path) or RunOptions.dataset)[0]
    return load_recipe(path, dataset_name=name, allowed=kinds)


def check_index_and_dataset(dataset: str | None, index: str | None) -> None:
    """Fail on an unknown dataset or a missing index file before any output folder is made."""
    if index is not None:
        if not os.path.isfile(index):
            raise DiffcliError(f"index file '{index}' does not exist.")
        return
    from diffcli.data import DATASETS, parse_spec
    from diffcli.registry import resolve

    resolve("dataset", DATASETS, parse_spec(dataset)[0])


def recipe_dataset(path: str) -> str | None:
    """The dataset a recipe names, if any (so its per-dataset table applies when --dataset is not given)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            value = tomllib.load(f).get("dataset")
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) else None


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


def option_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per option field, typed and helped from the field, in a panel per component."""
    from diffcli.sample.settings import all_option_fields, owners

    params = []
    for name, f in all_option_fields().items():
        kind = field_kind(f)
        who = owners(name)
        panel = "Run" if not who else who.split(" or ")[0].split(" ")[0][2:].capitalize() + " options"
        default = "" if f.default is None or kind is bool else f" (default: {f.default})"
        text = field_help(f)
        text = text[:-1] + default + "." if default and text.endswith(".") else text
        params.append(field_parameter(name, f, help_text=text + (f" For {who}." if who else ""), panel=panel,
                                      short=True))
    return params


def _register():
    fixed = [p for p in inspect.signature(sample, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
    fixed = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fixed]

    def sample_command(**kwargs):
        names = {p.name for p in fixed}
        return sample(**{k: v for k, v in kwargs.items() if k in names},
                      **{k: v for k, v in kwargs.items() if k not in names})

    sample_command.__signature__ = inspect.Signature(fixed + option_parameters())
    sample_command.__doc__ = sample.__doc__
    sample_command.__name__ = "sample"
    command(app, "sample")(sample_command)


_register()
