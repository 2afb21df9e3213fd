"""`diffcli train`: train the reference network (EDM-preconditioned U-Net / MLP) on a dataset or index."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from diffcli.cli import app
from diffcli.cli.common import Progress, command, emit_json, info
from diffcli.errors import DiffcliError, UsageError

Opt = typer.Option


@command(app, "train")
def train(
    dataset: Annotated[str | None, Opt("--dataset", "-d",
                                       help="Dataset spec NAME[:key=value,...]; default digits.")] = None,
    index: Annotated[str | None, Opt("--index", help="An index file from index-build (instead of --dataset).")] = None,
    root: Annotated[str | None, Opt("--root", help="Where a real dataset's files are.")] = None,
    steps: Annotated[int, Opt("--steps", help="Optimiser steps in total (a resumed run continues to this).")] = 3000,
    batch_size: Annotated[int, Opt("--batch-size", help="Training rows per step.")] = 128,
    lr: Annotated[float, Opt("--lr", help="AdamW learning rate after warm-up.")] = 2e-3,
    warmup: Annotated[int, Opt("--warmup", help="Linear warm-up steps.")] = 200,
    ema: Annotated[float, Opt("--ema", help="EMA decay of the saved weights.")] = 0.999,
    width: Annotated[int | None, Opt("--width", help="Base channels (U-Net) or hidden width (MLP).")] = None,
    seed: Annotated[int, Opt("--seed", help="Initialisation, data order and noise depend on (seed, step) alone.")] = 0,
    out: Annotated[str, Opt("--out", "-o",
                            help="The model file to write (a checkpoint goes to OUT.ckpt).")] = "model.eqx",
    save_every: Annotated[int, Opt("--save-every", help="Steps between checkpoints.")] = 500,
    resume: Annotated[bool, Opt("--resume", help="Continue from OUT.ckpt if it exists (bit-for-bit on CPU).")] = False,
    overwrite: Annotated[bool, Opt("--overwrite", help="Start afresh over an existing OUT (and OUT.ckpt).")] = False,
    json_out: Annotated[bool, Opt("--json", help="Print one JSON object on stdout.")] = False,
):
    """Train the reference denoiser; writes OUT, OUT.ckpt and the per-sigma loss log (STEM.loss.csv/.json)."""
    from diffcli.train.loop import TrainSettings
    from diffcli.train.loop import train as run_train

    if dataset is not None and index is not None:
        raise UsageError("give --dataset or --index, not both.")
    check_out(out, resume=resume, overwrite=overwrite)  # before the data is read and the network trained
    train_x, heldout_x, name = training_data(dataset, index, root)
    settings = TrainSettings(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, ema=ema, seed=seed,
                             save_every=save_every, width=width)
    with Progress("train", steps) as bar:
        result = run_train(train_x, heldout_x, settings, out=out, resume=resume, dataset=name,
                           progress=bar.advance, log=None if json_out else info)
    if json_out:
        emit_json(result)
    else:
        info(f"trained {result['steps']} steps in {result['seconds']:.1f}s "
             f"(final loss {result['final_loss']:.4f}) -> {out}")
        info(f"per-sigma x0 loss: {result['loss_csv']}")


def check_out(out: str, *, resume: bool, overwrite: bool) -> None:
    """Every file a run writes must be writable, and an earlier run's model is replaced only when asked."""
    from diffcli.io.atomic import check_writable
    from diffcli.train.checkpoint import checkpoint_path

    stem = out[:-4] if out.endswith(".eqx") else out
    ckpt = checkpoint_path(out)
    for path in (out, ckpt, stem + ".loss.csv", stem + ".loss.json"):
        check_writable(path, what="model file" if path == out else "output file")
    if resume or overwrite:
        return
    for path, what in ((out, "model file"), (ckpt, "checkpoint")):
        if os.path.exists(path):
            raise DiffcliError(f"{what} '{path}' exists; pass --resume to continue its run, --overwrite to start "
                               "afresh, or choose another --out.")


def training_data(dataset: str | None, index_path: str | None, root: str | None):
    """(train [N, *shape], heldout [M, *shape], name) in data space, from an index or a dataset's default index."""
    from diffcli.index import open_index
    from diffcli.index.build import ensure_index

    if index_path is None:
        index_path = ensure_index(dataset or "digits", root=root, report=info)
    idx = open_index(index_path)
    shape = tuple(idx.shape)
    name = str(idx.attrs.get("dataset", os.path.basename(index_path)))
    return idx.train_data().reshape(-1, *shape), idx.heldout_data().reshape(-1, *shape), name
