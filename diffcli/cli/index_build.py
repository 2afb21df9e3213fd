"""`diffcli index-build`: write the HDF5 index of a dataset (atomically)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from diffcli.cli import app
from diffcli.cli.common import command, emit_json, info
from diffcli.errors import DiffcliError


@command(app, "index-build")
def index_build(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset spec NAME[:key=value,...].")] = "digits",
    root: Annotated[str | None, typer.Option("--root",
                                             help="Where the dataset's files are (real datasets, folder).")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o",
                                            help="Index file (default under $DIFFCLI_HOME/indexes).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N images.")] = None,
    coarse: Annotated[bool, typer.Option("--coarse/--no-coarse",
                                         help="Cluster the proxies for the sublinear coarse stage.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing index file at --out.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
):
    """Build the index of a dataset: images, held-out split, proxies, PCA statistics, coarse clusters."""
    from diffcli.cli.common import Progress
    from diffcli.data import stream_dataset
    from diffcli.index.build import build_index, default_index_path
    from diffcli.index.store import index_attrs
    from diffcli.io.atomic import check_writable

    path = out or default_index_path(dataset, limit, root)
    check_writable(path, what="index file")  # before any data is read
    reuse = os.path.exists(path) and not overwrite
    if reuse and out is not None:
        raise DiffcliError(f"index file '{path}' exists; pass --overwrite to replace it or choose another --out.")
    if reuse:  # the default index of this dataset is already built (as `sample` would reuse it)
        info(f"the index of {dataset} is already at {path}; pass --overwrite to rebuild it")
    else:
        with Progress(f"index {dataset}", 2) as bar:
            data = stream_dataset(dataset, root=root, limit=limit)
            bar.advance()
            build_index(data, path, report=info, coarse=coarse)
            bar.advance()
    attrs = index_attrs(path)  # the metadata alone: an index of a million images is not read back whole
    summary = {"out": path, "dataset": attrs["dataset"], "n": int(attrs["n"]), "n_heldout": int(attrs["n_heldout"]),
               "shape": [int(s) for s in attrs["shape"]], "content_sha256": attrs["content_sha256"]}
    if json_out:
        emit_json(summary)
    else:
        info(f"index of {summary['n']} samples ({summary['n_heldout']} held out) "
             f"{'at' if reuse else 'written to'} {path}")
