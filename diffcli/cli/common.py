"""Shared CLI plumbing: error handling, progress reporting, recipe merging, output folders."""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import typer

from diffcli.errors import DiffcliError


def command(app: typer.Typer, name: str, **kwargs):
    """Register a command whose user-caused errors become one sentence on stderr and an exit code."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            try:
                return fn(*args, **kw)
            except DiffcliError as exc:
                fail(str(exc), exc.exit_code)
            except KeyboardInterrupt:
                fail("interrupted; no half-written file was left behind.", 130)

        return app.command(name, **kwargs)(wrapper)

    return decorate


def fail(message: str, code: int = 1):
    """Print one sentence on stderr and exit."""
    typer.echo(f"diffcli: error: {message}", err=True)
    raise typer.Exit(code)


def info(message: str) -> None:
    """A status line on stderr (stdout stays clean for --json)."""
    typer.echo(message, err=True)


def emit_json(obj) -> None:
    """Exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


class Progress:
    """A rich bar on a terminal, plain heartbeat lines otherwise (CI, pipes); both on stderr."""

    def __init__(self, description: str, total: int, *, heartbeat_s: float = 5.0):
        self.description, self.total, self.done = description, total, 0
        self.heartbeat_s, self._last = heartbeat_s, 0.0
        self._bar = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), transient=True,
            )

    def __enter__(self):
        self._t0 = time.perf_counter()
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def advance(self, k: int = 1) -> None:
        self.done += k
        if self._bar is not None:
            self._bar.update(self._task, advance=k)
            return
        now = time.perf_counter()
        if now - self._last >= self.heartbeat_s or self.done >= self.total:
            self._last = now
            info(f"{self.description}: {self.done}/{self.total} ({now - self._t0:.1f}s)")

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


def prepare_out_dir(out: str, overwrite: bool) -> str:
    """Refuse an existing non-empty output folder unless --overwrite; create it otherwise."""
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise DiffcliError(f"output folder '{out}' is not empty; pass --overwrite or choose another --out.")
    if os.path.exists(out) and not os.path.isdir(out):
        raise DiffcliError(f"output path '{out}' exists and is not a folder.")
    os.makedirs(out, exist_ok=True)
    return out


def merge_settings(explicit: dict, recipe: dict, defaults: dict) -> dict:
    """Explicit flag > recipe > default, key by key (keys are option names with underscores)."""
    merged = dict(defaults)
    merged.update({k: v for k, v in recipe.items() if v is not None})
    merged.update({k: v for k, v in explicit.items() if v is not None})
    return merged
