"""`diffcli datasets list|info|verify`: which real datasets are prepared, where they go, and whether they are intact."""

from __future__ import annotations

from typing import Annotated

import typer

from diffcli.cli import app
from diffcli.cli.common import command, emit_json, info

datasets_app = typer.Typer(help="Real datasets: list, show how to prepare, verify layout / counts / checksums.",
                           no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

Opt = typer.Option


def dataset_rows() -> list[dict]:
    """One row per registered dataset: built-in ones, and manifest-described ones with their preparation state."""
    from diffcli.data import DATASETS
    from diffcli.data.importers.common import dataset_root
    from diffcli.data.manifests import load_manifest, manifest_names, prepared_layout

    described = set(manifest_names())
    rows = []
    for name in sorted(set(DATASETS) | described):
        if name not in described:
            rows.append({"name": name, "title": "built in" if name != "folder" else "any image folder (--root)",
                         "resolution": None, "train": None, "prepared": name != "folder", "layout": None, "root": None})
            continue
        m = load_manifest(name)
        layout = prepared_layout(m)
        rows.append({"name": name, "title": m.title, "resolution": m.resolution, "train": m.train,
                     "prepared": layout is not None, "layout": None if layout is None else layout.name,
                     "root": dataset_root(name, None)})
    return rows


@command(datasets_app, "list")
def list_datasets(json_out: Annotated[bool, Opt("--json", help="Print one JSON object on stdout.")] = False):
    """Every dataset name, and for real datasets whether their files are in $DIFFCLI_DATA/<name>."""
    from diffcli.data.importers.common import data_home

    rows = dataset_rows()
    if json_out:
        emit_json({"data_home": data_home(), "datasets": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"datasets (real ones live in {data_home()}/<name>)")
    for col in ("name", "prepared", "res", "train", "description"):
        table.add_column(col)
    for r in rows:
        state = "built in" if r["root"] is None else (f"yes ({r['layout']})" if r["prepared"] else "no")
        table.add_row(r["name"], state, str(r["resolution"] or "-"), str(r["train"] or "-"), r["title"])
    Console().print(table)


@command(datasets_app, "info")
def info_dataset(name: Annotated[str, typer.Argument(help="Dataset name, e.g. afhq.")],
                 json_out: Annotated[bool, Opt("--json", help="Print one JSON object on stdout.")] = False):
    """Where a dataset comes from, its licence, the expected layout and where to put it."""
    from dataclasses import asdict

    from diffcli.data.importers.common import dataset_root
    from diffcli.data.manifests import load_manifest

    m = load_manifest(name)
    if json_out:
        emit_json({**asdict(m), "root": dataset_root(name, None)})
        return
    lines = [f"{m.title} ({m.name}): {m.train} train / {m.heldout} held-out, "
             f"{m.channels}x{m.resolution}x{m.resolution}",
             f"licence: {m.licence}", f"homepage: {m.homepage}",
             f"put it in: {dataset_root(name, None)} (or --root PATH)",
             f"manifest: {m.path}", "how to get it:" + m.how_to_get.rstrip(), f"checksums: {m.checksums}", "layouts:"]
    for lay in m.layouts:
        lines.append(f"  {lay.name}: " + ", ".join(e.path for e in lay.entries)
                     + (f"  ({lay.note})" if lay.note else ""))
    typer.echo("\n".join(lines))


@command(datasets_app, "verify")
def verify_dataset(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. mnist.")],
    root: Annotated[str | None, Opt("--root", help="Where its files are (default $DIFFCLI_DATA/NAME).")] = None,
    checksums: Annotated[bool, Opt("--checksums/--no-checksums",
                                   help="Hash fixed archives (slow on big files).")] = True,
    json_out: Annotated[bool, Opt("--json", help="Print one JSON object on stdout.")] = False,
):
    """Check the layout, record counts and published checksums of a prepared dataset."""
    from dataclasses import asdict

    from diffcli.data.manifests import describe_missing, verify
    from diffcli.errors import DiffcliError

    v = verify(name, root, checksums=checksums)
    if json_out:
        emit_json({"name": v.name, "root": v.root, "layout": v.layout, "ok": v.ok,
                   "checks": [asdict(c) for c in v.checks], "error": None if v.ok else describe_missing(v)})
        if not v.ok:
            raise typer.Exit(1)
        return
    for c in v.checks:
        info(f"{'ok  ' if c.ok else 'FAIL'} {c.what:8s} {c.entry}" + ("" if c.ok else f": {c.detail}"))
    if not v.ok:
        raise DiffcliError(describe_missing(v))
    info(f"{name}: layout '{v.layout}' under {v.root} is complete.")
