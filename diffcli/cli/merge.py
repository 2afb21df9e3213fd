"""`diffcli merge`: join the outputs of `sample --shard I/N` runs into the file a one-shot run would write."""

from __future__ import annotations

from typing import Annotated

import typer

from diffcli.cli import app
from diffcli.cli.common import command, emit_json, info, output_folder


@command(app, "merge")
def merge(
    inputs: Annotated[list[str], typer.Argument(help="Shard output folders (or their samples.h5).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder for the merged samples.h5 (and grid.png).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the contents of a non-empty --out.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
):
    """Merge seed shards, ordered by sample id; refuses mismatched settings and overlapping or missing ids."""
    from diffcli.io.shards import merge_shards

    with output_folder(out, overwrite) as folder:
        result = merge_shards(inputs, folder)
    if json_out:
        emit_json(result)
    else:
        info(f"merged {result['shards']} shards, {result['n']} samples -> {result['out']}")
