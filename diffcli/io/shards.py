"""Seed shards: join the samples files of `sample --shard I/N` runs into the file a one-shot run would write.

Sample i's noise is a function of (seed, i) alone, so shards only need ordering by id, a check that they were made
with the same settings, and a check that the ids cover 0..n-1 exactly once.
"""

from __future__ import annotations

import json
import os

import numpy as np

from diffcli.errors import DiffcliError
from diffcli.io.samples import read_samples, write_samples

# Recorded per run but allowed to differ between shards (nfe/rounds are maxima over each shard's batches).
PER_SHARD = ("shard", "nfe", "rounds")


def samples_path(path: str) -> str:
    """A shard given as its output folder or as its samples.h5."""
    return os.path.join(path, "samples.h5") if os.path.isdir(path) else path


def _comparable(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in PER_SHARD}


def check_compatible(shards: list[dict], names: list[str]) -> None:
    """Refuse shards whose settings or schedules differ, naming the first differing setting."""
    ref = _comparable(shards[0]["settings"])
    for shard, name in zip(shards[1:], names[1:], strict=True):
        other = _comparable(shard["settings"])
        for key in sorted(set(ref) | set(other)):
            if ref.get(key) != other.get(key):
                raise DiffcliError(f"'{name}' was made with {key}={other.get(key)!r} but '{names[0]}' with "
                                   f"{key}={ref.get(key)!r}; only shards of one run can be merged.")
        if (not np.array_equal(shard["sigmas"], shards[0]["sigmas"])
                or shard["samples"].shape[1:] != shards[0]["samples"].shape[1:]):
            raise DiffcliError(f"'{name}' has a different schedule or sample shape than '{names[0]}'.")


def check_ids(ids: np.ndarray, owners: np.ndarray, names: list[str], total: int | None) -> None:
    """Ids must cover 0..n-1 exactly once (n = the run's num_samples when recorded)."""
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    dup = np.nonzero(s[1:] == s[:-1])[0]
    if dup.size:
        i = dup[0]
        a, b = names[owners[order[i]]], names[owners[order[i + 1]]]
        raise DiffcliError(f"sample id {s[i]} is in both '{a}' and '{b}'; shards must not overlap.")
    n = int(total) if total is not None else int(s[-1]) + 1
    if s[0] < 0 or s[-1] >= n:
        raise DiffcliError(f"sample id {s[-1] if s[-1] >= n else s[0]} is outside 0..{n - 1} of a {n}-sample run.")
    if len(s) != n:
        missing = np.setdiff1d(np.arange(n), s)
        raise DiffcliError(f"{len(missing)} of {n} sample ids are missing (first: {missing[0]}); "
                           "merge every shard of the run.")


def merge_shards(inputs: list[str], out_dir: str, *, grid: bool = True) -> dict:
    """Write out_dir/samples.h5 (+ grid.png for image data) from shard outputs; returns a summary."""
    if not inputs:
        raise DiffcliError("no shard outputs were given.")
    names = [samples_path(p) for p in inputs]
    shards = [read_samples(p) for p in names]
    check_compatible(shards, names)
    ids = np.concatenate([s["ids"] for s in shards]).astype(np.int64)
    owners = np.concatenate([np.full(len(s["ids"]), k) for k, s in enumerate(shards)])
    total = shards[0]["settings"].get("num_samples")
    check_ids(ids, owners, names, total)
    order = np.argsort(ids, kind="stable")
    samples = np.concatenate([s["samples"] for s in shards])[order]
    noise = None
    if all(s["noise"] is not None for s in shards):
        noise = np.concatenate([s["noise"] for s in shards])[order]
    labels = None
    if any(s["labels"] is not None for s in shards):
        if not all(s["labels"] is not None for s in shards):
            raise DiffcliError("some shards record each sample's class (--class) and others do not; "
                               "only shards of one run can be merged.")
        labels = np.concatenate([s["labels"] for s in shards])[order]
    settings = dict(shards[0]["settings"])
    settings["shard"] = None
    for key in ("nfe", "rounds"):
        values = [s["settings"].get(key) for s in shards if s["settings"].get(key) is not None]
        if values:
            settings[key] = max(values)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "samples.h5")
    write_samples(path, samples=samples, noise=noise if noise is not None else np.zeros_like(samples),
                  ids=ids[order], settings=settings, sigmas=shards[0]["sigmas"], labels=labels)
    grid_path = None
    if grid and samples.ndim == 4:
        from diffcli.io.images import save_grid

        grid_path = os.path.join(out_dir, "grid.png")
        if labels is None:
            save_grid(grid_path, samples[:256])  # the one-shot run's grid: its first 256 samples
        else:  # one class per row, as the one-shot run draws it
            save_grid(grid_path, samples, labels=labels, label_names=settings.get("class_names"))
    return {"n": int(len(ids)), "shards": len(inputs), "out": os.path.abspath(path),
            "grid": None if grid_path is None else os.path.abspath(grid_path),
            "settings": json.loads(json.dumps(settings, default=str))}
