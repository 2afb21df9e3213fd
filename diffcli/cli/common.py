"""Shared CLI plumbing: error handling, progress reporting, recipe merging, output folders."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import time

import typer

from diffcli.errors import DiffcliError, write_error
from diffcli.io import signals


def command(app: typer.Typer, name: str, **kwargs):
    """Register a command whose user-caused errors become one sentence on stderr and an exit code."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            with signals.interrupts_raise():  # SIGTERM ends a run as Ctrl-C does: exit 130, earlier files kept
                try:
                    result = fn(*args, **kw)
                except DiffcliError as exc:
                    if signals.interrupted():
                        fail(INTERRUPTED, 130)
                    fail(str(exc), exc.exit_code)
                except KeyboardInterrupt:
                    fail(INTERRUPTED, 130)
                if signals.interrupted():  # an interrupt a library swallowed
                    fail(INTERRUPTED, 130)
                return result

        return app.command(name, **kwargs)(wrapper)

    return decorate


INTERRUPTED = "interrupted; no half-written file was left behind."


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
    """Refuse an existing non-empty output folder unless --overwrite, or one that cannot be written; create it.

    Prefer `output_folder`, which also locks the folder and never leaves two runs' files mixed."""
    _check_out_folder(out)
    if os.path.isdir(out) and _contents(out) and not overwrite:
        raise DiffcliError(f"output folder '{out}' is not empty; pass --overwrite or choose another --out.")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, out) from None
    return out


LOCK = ".diffcli.lock"
PREVIOUS = ".diffcli-previous"  # the replaced run's outputs while an --overwrite run is under way
# What runs write into their --out folder (sample and merge; concentration), moved aside and restored as one set.
RUN_OUTPUTS = ("samples.h5", "grid.png", "concentration.json", "support.png", "support.pdf", "support.svg")


@contextlib.contextmanager
def output_folder(out: str, overwrite: bool):
    """The --out folder of a run, for the whole run: `with output_folder(out, overwrite) as folder:`.

    - refuses (one sentence, exit 1) a file where the folder should be, a folder that cannot be written
      (read-only, /proc, permission), and a non-empty folder unless `overwrite`;
    - takes an exclusive lock (OUT/.diffcli.lock, flock): a second run on the same folder is refused at once;
    - with `overwrite`, moves the previous run's outputs (RUN_OUTPUTS: samples.h5, grid.png, ...) aside; they are
      deleted when this run succeeds and put back when it fails or is interrupted, so the folder never mixes two
      runs (a failed run's own outputs are removed: a run is all or nothing); other files are left alone;
    - on exit releases the lock and removes the folder if this run created it and left it empty.
    Yields `out` itself.
    """
    _check_out_folder(out)
    created = _missing_folders(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, out) from None
    lock = None
    try:
        lock = _lock(out)
        # a run killed while replacing: its outputs go, the earlier come back
        if os.path.isdir(os.path.join(out, PREVIOUS)):
            _restore_previous(out)
        if _contents(out) and not overwrite:
            raise DiffcliError(f"output folder '{out}' is not empty; pass --overwrite or choose another --out.")
        moved = _move_previous(out) if overwrite else False
        try:
            yield out
        except BaseException:
            _restore_previous(out)  # all or nothing: this run's outputs go, the replaced run's come back
            raise
        if moved:
            shutil.rmtree(os.path.join(out, PREVIOUS), ignore_errors=True)
    finally:
        if lock is not None:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(out, LOCK))
            os.close(lock)
        for folder in created:  # innermost first; only folders this run made, and only if left empty
            try:
                os.rmdir(folder)
            except OSError:
                break


def _missing_folders(out: str) -> list[str]:
    """The folders that creating `out` makes, innermost first."""
    missing, folder = [], os.path.abspath(out)
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _check_out_folder(out: str) -> None:
    from diffcli.io.atomic import probe_folder

    if os.path.exists(out) and not os.path.isdir(out):
        raise DiffcliError(f"output path '{out}' exists and is not a folder.")
    probe_folder(out)


def _contents(out: str) -> list[str]:
    return [n for n in os.listdir(out) if n != LOCK]


def _lock(out: str) -> int:
    import fcntl

    path = os.path.join(out, LOCK)
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise write_error(exc, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DiffcliError(f"another diffcli run is writing to '{out}'; "
                               "wait for it or choose another --out.") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a lock file that the previous holder removed after we opened it
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise DiffcliError(f"another diffcli run is writing to '{out}'; wait for it or choose another --out.")


def _move_previous(out: str) -> bool:
    names = [n for n in RUN_OUTPUTS if os.path.lexists(os.path.join(out, n))]
    if not names:
        return False
    keep = os.path.join(out, PREVIOUS)
    try:
        os.makedirs(keep, exist_ok=True)
        for n in names:
            os.replace(os.path.join(out, n), os.path.join(keep, n))
    except OSError as exc:
        raise write_error(exc, out) from None
    return True


def _restore_previous(out: str) -> None:
    """Remove the outputs of an unfinished run and put back those it was replacing (if any)."""
    keep = os.path.join(out, PREVIOUS)
    for n in RUN_OUTPUTS:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out, n))
    if not os.path.isdir(keep):
        return
    for n in os.listdir(keep):
        os.replace(os.path.join(keep, n), os.path.join(out, n))
    os.rmdir(keep)


def merge_settings(explicit: dict, recipe: dict, defaults: dict) -> dict:
    """Explicit flag > recipe > default, key by key (keys are option names with underscores)."""
    merged = dict(defaults)
    merged.update({k: v for k, v in recipe.items() if v is not None})
    merged.update({k: v for k, v in explicit.items() if v is not None})
    return merged


def field_kind(f) -> type:
    """The Python type a command-line option field takes (tuple-valued kinds are read as text)."""
    kind = f.metadata["kind"][0] if isinstance(f.metadata["kind"], tuple) else f.metadata["kind"]
    return str if kind is tuple else kind


def field_help(f) -> str:
    """An option field's help, capitalised as a sentence."""
    text = f.metadata["help"]
    return text[:1].upper() + text[1:]


def field_parameter(name: str, f, *, help_text: str, panel: str, short: bool = False):
    """The keyword parameter (flag, --no- form for booleans, optional short name) a generated command takes for
    option field `name`; None means the flag was not given."""
    import inspect
    from typing import Annotated

    from diffcli.options import flag_name

    kind, flag = field_kind(f), flag_name(name)
    decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else \
        [flag] + ([f.metadata["short"]] if short and f.metadata.get("short") else [])
    opt = typer.Option(*decls, help=help_text, rich_help_panel=panel, show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, opt])
